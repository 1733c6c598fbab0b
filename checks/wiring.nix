# The module's wiring without any guest (cheap; no nested virtualisation
# needed): ./qemu-stub.py stands in for QEMU, the rest is real — the
# package's units with the module's drop-ins, the build instance, the helper,
# the bridge, the TAP, the per-VM user, the nftables tables. Two hosts:
#   ipt   networking.nftables.enable = false (an iptables host, the default):
#         the tables come from mcp-unikernel-firewall.service;
#   nft   networking.nftables.enable = true: the tables are part of NixOS's
#         ruleset, and a reload or restart of nftables.service never leaves
#         a running VM without them.
common:
let
  vm = common.fileServerVM "10.99.0.2" "v1.txt";
in
{
  name = "mcp-unikernel-wiring";

  nodes.ipt =
    { ... }:
    {
      imports = [ common.host ];
      services.mcp.unikernels.web = vm;
    };

  nodes.nft =
    { ... }:
    {
      imports = [ common.host ];
      networking.nftables.enable = true;
      services.mcp.unikernels.web = vm;
    };

  testScript = common.pyHelpers + ''
    unit = "mcp-unikernel@web.service"

    def tables_loaded(m):
        m.succeed("nft list table bridge mcp-unikernel | grep -q mcp-web")
        m.succeed("nft list table inet mcp-unikernel-host")

    start_all()
    for m in (ipt, nft):
        m.wait_for_unit(unit)

    with subtest("units: the package's template, the module's drop-ins"):
        for m in (ipt, nft):
            m.succeed("test -L /etc/systemd/system/mcp-unikernel@.service")
            m.succeed("test -e /etc/systemd/system/mcp-unikernel@web.service.d/overrides.conf")
            m.succeed("test -e /etc/systemd/system/mcp-unikernel-build@web.service.d/overrides.conf")
            m.fail("systemctl cat mcp-unikernels-prune.service")
            assert prop(m, "mcp-unikernel-build@web.service", "Result") == "success"
            assert prop(m, unit, "Restart") == "on-failure", prop(m, unit, "Restart")
            assert prop(m, unit, "TimeoutStopUSec") == "1min 15s", prop(m, unit, "TimeoutStopUSec")
            assert prop(m, "mcp-unikernel-build@web.service", "TimeoutStartUSec") == "15min"
            assert "sys-subsystem-net-devices-mcp\\x2dbr0.device" in prop(m, unit, "BindsTo")
            assert "mcp-unikernel@web.service" in prop(m, "mcp-unikernels.target", "Wants")

    with subtest("the stub runs as the VM's user, on an isolated TAP"):
        for m in (ipt, nft):
            pid = main_pid(m, unit)
            assert m.succeed(f"stat -c %U /proc/{pid}").strip() == "mcp-vm-web"
            assert "qemu-stub" in m.succeed(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
            capeff = m.succeed(f"grep CapEff /proc/{pid}/status").split()[1]
            assert int(capeff, 16) == 0, f"CapEff {capeff}"
            m.succeed("bridge -d link show dev mcp-web | grep -q 'isolated on'")
            assert m.succeed("cat /sys/class/net/mcp-web/owner").strip() == m.succeed("id -u mcp-vm-web").strip()
            m.succeed("mcp-unikernel status web --json | grep -q 10.99.0.2")

    with subtest("iptables host: the firewall unit loads the tables, NixOS's firewall stays iptables"):
        ipt.succeed("systemctl is-active mcp-unikernel-firewall.service")
        ipt.fail("systemctl is-active nftables.service")
        ipt.succeed("iptables -S nixos-fw >/dev/null")
        tables_loaded(ipt)
        assert "mcp-unikernel-firewall.service" in prop(ipt, unit, "Requires")
        pid = main_pid(ipt, unit)
        ipt.succeed("systemctl reload mcp-unikernel-firewall.service")
        tables_loaded(ipt)
        assert main_pid(ipt, unit) == pid, "a reload of the rules restarted the VM"
        # Stopping the rules stops the VM first (Requires= + After=).
        ipt.succeed("systemctl stop mcp-unikernel-firewall.service")
        ipt.fail(f"systemctl is-active --quiet {unit}")
        ipt.fail("nft list table bridge mcp-unikernel")
        ipt.succeed(f"systemctl start {unit}")
        tables_loaded(ipt)
        ipt.succeed("systemctl is-active mcp-unikernel-firewall.service")

    with subtest("nftables host: the tables are in NixOS's ruleset, reload keeps them, restart restarts the VM"):
        nft.succeed("systemctl is-active nftables.service")
        nft.fail("systemctl is-active mcp-unikernel-firewall.service")
        nft.fail("test -e /etc/mcp-unikernel/firewall.nft")
        tables_loaded(nft)
        assert "nftables.service" in prop(nft, unit, "Requires")
        pid = main_pid(nft, unit)
        nft.succeed("systemctl reload nftables.service")
        tables_loaded(nft)
        assert main_pid(nft, unit) == pid, "a reload of nftables restarted the VM"
        nft.succeed("systemctl restart nftables.service")
        nft.wait_for_unit(unit)
        tables_loaded(nft)
        assert main_pid(nft, unit) != pid, "the VM kept running across the restart of nftables.service"

    with subtest("stop: system_powerdown over QMP, success, TAP removed"):
        for m in (ipt, nft):
            m.succeed(f"systemctl stop {unit}")
            assert prop(m, unit, "Result") == "success", prop(m, unit, "Result")
            m.succeed(f"journalctl -u {unit} -o cat | grep -q 'qemu-stub: QMP system_powerdown'")
            m.fail("ip link show mcp-web")

    with subtest("kill -9 of the stub: restarted"):
        ipt.succeed(f"systemctl start {unit}")
        old = main_pid(ipt, unit)
        ipt.succeed(f"kill -9 {old}")
        ipt.wait_until_succeeds(f"test $(systemctl show -p NRestarts --value {unit}) -ge 1", timeout=60)
        ipt.wait_for_unit(unit)
        assert main_pid(ipt, unit) not in (0, old)
  '';
}
