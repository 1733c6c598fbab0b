# A config change restarts only the changed instance; removing a unikernel from
# the configuration stops it (TAP and config gone) and leaves the others alone.
common:
let
  webV1 = common.fileServerVM "10.99.0.2" "v1.txt";
  webV2 = common.fileServerVM "10.99.0.2" "v2.txt";
  other = common.fileServerVM "10.99.0.3" "v1.txt";
in
{
  name = "mcp-unikernel-reconfigure";

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
      specialisation.removed.configuration = {
        services.mcp.unikernels = lib.mkForce { web = webV2; };
      };
    };

  testScript = common.pyHelpers + ''
    def switch(to):
        machine.succeed(f"/run/booted-system/specialisation/{to}/bin/switch-to-configuration test")

    machine.wait_for_unit("mcp-unikernels.target")
    wait_http(machine, "http://10.99.0.2:8080/", "served-v1")
    wait_http(machine, "http://10.99.0.3:8080/", "served-v1")
    web1 = main_pid(machine, "mcp-unikernel@web.service")
    other1 = main_pid(machine, "mcp-unikernel@other.service")

    with subtest("a config change restarts the changed instance only"):
        switch("changed")
        wait_http(machine, "http://10.99.0.2:8080/", "served-v2")
        web2 = main_pid(machine, "mcp-unikernel@web.service")
        assert web2 not in (0, web1), f"web not restarted: {web1} -> {web2}"
        assert main_pid(machine, "mcp-unikernel@other.service") == other1, "other was restarted"
        machine.succeed("grep -q v2.txt /etc/mcp-unikernel/web.json")

    with subtest("removing a unikernel stops it"):
        switch("removed")
        machine.wait_until_succeeds(
            "! systemctl is-active --quiet mcp-unikernel@other.service", timeout=60)
        machine.fail("test -e /etc/mcp-unikernel/other.json")
        machine.fail("ip link show mcp-other")
        machine.fail("pgrep -f 'mcp-unikernel/other/'")
        machine.fail("curl -sf --max-time 3 http://10.99.0.3:8080/")
        assert main_pid(machine, "mcp-unikernel@web.service") == web2, "web was restarted"
        wait_http(machine, "http://10.99.0.2:8080/", "served-v2")
  '';
}
