# One unikernel comes up after its build instance, the host fetches HTTP from
# its IP, QEMU runs as the VM's own unprivileged user, the isolation tables
# are loaded by the package's firewall unit (the host firewall stays
# iptables), then the unit stops cleanly (ACPI power-down) and leaves no TAP.
common: {
  name = "mcp-unikernel-basic-${common.flavour}";

  nodes.machine =
    { ... }:
    {
      imports = [ common.host ];
      services.mcp.unikernels.web = common.fileServerVM "10.99.0.2" "v1.txt";
    };

  testScript = common.pyHelpers + ''
    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("mcp-unikernel@web.service")
    machine.succeed("test -f /etc/mcp-unikernel/web.json")
    machine.succeed("mcp-unikernel check-config /etc/mcp-unikernel/web.json")

    with subtest("the image was built by the build instance, before the VM started"):
        assert prop(machine, "mcp-unikernel-build@web.service", "Result") == "success"
        machine.succeed("journalctl -u mcp-unikernel-build@web.service -o cat | grep -q .")

    wait_http(machine, "http://10.99.0.2:8080/", "served-v1")

    with subtest("the main PID is QEMU, as the VM's own user, with no capabilities"):
        pid = main_pid(machine, "mcp-unikernel@web.service")
        assert pid > 0, "no main PID"
        user = machine.succeed(f"stat -c %U /proc/{pid}").strip()
        assert user == "mcp-vm-web", f"QEMU runs as {user!r}"
        assert "qemu-system" in machine.succeed(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
        capeff = machine.succeed(f"grep CapEff /proc/{pid}/status").split()[1]
        assert int(capeff, 16) == 0, f"CapEff {capeff}"
        machine.succeed("id -nG mcp-vm-web | grep -qw kvm")

    with subtest("the TAP is an isolated port of the bridge, owned by the VM's uid"):
        machine.succeed("bridge -d link show dev mcp-web | grep -q 'isolated on'")
        machine.succeed("ip -o link show mcp-web | grep -q 'master mcp-br0'")
        machine.succeed("ip -4 -o addr show dev mcp-br0 | grep -q '10.99.0.1/24'")
        uid = machine.succeed("id -u mcp-vm-web").strip()
        assert machine.succeed("cat /sys/class/net/mcp-web/owner").strip() == uid
        # The bridge keeps the module's fixed MAC, not its TAP's.
        br_mac = machine.succeed("cat /sys/class/net/mcp-br0/address").strip()
        assert br_mac == "${(import ../nixos/lib/derive.nix).bridgeMac "mcp-br0"}", f"bridge MAC {br_mac}"

    with subtest("the rules are loaded by mcp-unikernel-firewall.service, not by nftables.service"):
        machine.succeed("systemctl is-active mcp-unikernel-firewall.service")
        machine.succeed("nft list table bridge mcp-unikernel")
        machine.succeed("nft list table inet mcp-unikernel-host")
        machine.fail("systemctl is-active nftables.service")
        assert "mcp-unikernel-firewall.service" in prop(machine, "mcp-unikernel@web.service", "Requires")

    status = machine.succeed("mcp-unikernel status web --json")
    assert "10.99.0.2" in status, status

    with subtest("stop powers the guest down and removes the TAP"):
        machine.succeed("systemctl stop mcp-unikernel@web.service")
        result = prop(machine, "mcp-unikernel@web.service", "Result")
        assert result == "success", f"stop result {result!r}"
        machine.succeed("journalctl -u mcp-unikernel@web.service -o cat | grep -q 'powered down'")
        machine.fail("ip link show mcp-web")
        machine.fail("curl -sf --max-time 3 http://10.99.0.2:8080/")
  '';
}
