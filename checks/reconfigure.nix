# nixos-rebuild switch, step by step (switch-to-configuration of
# specialisations, each from the previous one):
#   base      web (v1.txt) and other
#   changed   web serves v2.txt: only web restarts
#   added     a third unikernel: it starts; web and other keep running (the
#             new rules reload the firewall unit, they do not restart it)
#   removed   other and extra gone: both stop, the switch succeeds, the
#             instances end inactive (skipped by their ConditionPathExists),
#             not failed; web keeps running
#   upgraded  the helper under a new store path: web restarts under it
common:
let
  webV1 = common.fileServerVM "10.99.0.2" "v1.txt";
  webV2 = common.fileServerVM "10.99.0.2" "v2.txt";
  other = common.fileServerVM "10.99.0.3" "v1.txt";
  extra = common.fileServerVM "10.99.0.4" "v2.txt";
in
{
  name = "mcp-unikernel-reconfigure-${common.flavour}";

  nodes.machine =
    { lib, ... }:
    {
      imports = [ common.host ];
      services.mcp.unikernels = {
        web = webV1;
        inherit other;
      };
      specialisation.changed.configuration = {
        services.mcp.unikernels = lib.mkForce {
          web = webV2;
          inherit other;
        };
      };
      specialisation.added.configuration = {
        services.mcp.unikernels = lib.mkForce {
          web = webV2;
          inherit other extra;
        };
      };
      specialisation.removed.configuration = {
        services.mcp.unikernels = lib.mkForce { web = webV2; };
      };
      specialisation.upgraded.configuration = {
        services.mcp.unikernels = lib.mkForce { web = webV2; };
        services.mcp.package = lib.mkForce common.upgradedHelper;
      };
    };

  testScript = common.pyHelpers + ''
    def switch(to):
        # succeed(): the switch itself must not fail
        machine.succeed(f"/run/booted-system/specialisation/{to}/bin/switch-to-configuration test >&2")

    machine.wait_for_unit("mcp-unikernels.target")
    wait_http(machine, "http://10.99.0.2:8080/", "served-v1")
    wait_http(machine, "http://10.99.0.3:8080/", "served-v1")
    web1 = main_pid(machine, "mcp-unikernel@web.service")
    other1 = main_pid(machine, "mcp-unikernel@other.service")

    with subtest("change: only the changed instance restarts"):
        switch("changed")
        wait_http(machine, "http://10.99.0.2:8080/", "served-v2")
        web2 = main_pid(machine, "mcp-unikernel@web.service")
        assert web2 not in (0, web1), f"web not restarted: {web1} -> {web2}"
        assert main_pid(machine, "mcp-unikernel@other.service") == other1, "other was restarted"
        machine.succeed("grep -q v2.txt /etc/mcp-unikernel/web.json")

    with subtest("add: the new instance starts, the others keep running"):
        switch("added")
        machine.wait_for_unit("mcp-unikernel@extra.service")
        wait_http(machine, "http://10.99.0.4:8080/", "served-v2")
        assert main_pid(machine, "mcp-unikernel@web.service") == web2, "web was restarted"
        assert main_pid(machine, "mcp-unikernel@other.service") == other1, "other was restarted"
        # its rules are loaded (the firewall unit was reloaded, not restarted)
        machine.succeed("nft list table bridge mcp-unikernel | grep -q mcp-extra")

    with subtest("remove: the removed instances stop, the switch succeeds"):
        switch("removed")
        for name in ("other", "extra"):
            unit = f"mcp-unikernel@{name}.service"
            machine.fail(f"systemctl is-active --quiet {unit}")
            machine.fail(f"systemctl is-failed --quiet {unit}")
            # stopped with the old config, then its start skipped
            assert prop(machine, unit, "ConditionResult") == "no", prop(machine, unit, "ConditionResult")
            machine.fail(f"test -e /etc/mcp-unikernel/{name}.json")
            machine.fail(f"ip link show mcp-{name}")
            machine.fail(f"pgrep -f 'mcp-unikernel/{name}/'")
        machine.fail("curl -sf --max-time 3 http://10.99.0.3:8080/")
        machine.fail("nft list table bridge mcp-unikernel | grep -q mcp-other")
        assert main_pid(machine, "mcp-unikernel@web.service") == web2, "web was restarted"
        wait_http(machine, "http://10.99.0.2:8080/", "served-v2")

    with subtest("helper upgrade: the instance restarts under the new helper"):
        old_exec = prop(machine, "mcp-unikernel@web.service", "ExecStart")
        switch("upgraded")
        machine.wait_for_unit("mcp-unikernel@web.service")
        wait_http(machine, "http://10.99.0.2:8080/", "served-v2")
        web3 = main_pid(machine, "mcp-unikernel@web.service")
        assert web3 not in (0, web2), f"web not restarted by the upgrade: {web2} -> {web3}"
        new_exec = prop(machine, "mcp-unikernel@web.service", "ExecStart")
        assert "mcp-unikernel-upgraded" in new_exec and new_exec != old_exec, new_exec
        machine.succeed("mcp-unikernel status web --json | grep -q 10.99.0.2")
  '';
}
