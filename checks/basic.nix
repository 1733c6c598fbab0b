# One unikernel comes up, the host fetches HTTP from its IP, QEMU runs as the
# unprivileged QEMU user, then the unit stops cleanly (ACPI power-down) and
# leaves no TAP behind.
common: {
  name = "mcp-unikernel-basic";

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

    wait_http(machine, "http://10.99.0.2:8080/", "served-v1")

    # The main PID is QEMU, running as mcp-qemu, not root.
    pid = main_pid(machine, "mcp-unikernel@web.service")
    assert pid > 0, "no main PID"
    user = machine.succeed(f"stat -c %U /proc/{pid}").strip()
    assert user == "mcp-qemu", f"QEMU runs as {user!r}"
    assert "qemu-system" in machine.succeed(f"tr '\\0' ' ' < /proc/{pid}/cmdline")

    # The TAP is an isolated port of the bridge, with the derived MAC.
    machine.succeed("bridge -d link show dev mcp-web | grep -q 'isolated on'")
    machine.succeed("ip -o link show mcp-web | grep -q 'master mcp-br0'")
    machine.succeed("ip -4 -o addr show dev mcp-br0 | grep -q '10.99.0.1/24'")
    # The bridge keeps the module's fixed MAC, not its TAP's.
    br_mac = machine.succeed("cat /sys/class/net/mcp-br0/address").strip()
    assert br_mac == "${(import ../nixos/lib/derive.nix).bridgeMac "mcp-br0"}", f"bridge MAC {br_mac}"

    status = machine.succeed("mcp-unikernel status web --json")
    assert "10.99.0.2" in status, status

    machine.succeed("systemctl stop mcp-unikernel@web.service")
    result = machine.succeed("systemctl show -p Result --value mcp-unikernel@web.service").strip()
    assert result == "success", f"stop result {result!r}"
    machine.succeed("journalctl -u mcp-unikernel@web.service -o cat | grep -q 'powered down'")
    machine.fail("ip link show mcp-web")
    machine.fail("curl -sf --max-time 3 http://10.99.0.2:8080/")
  '';
}
