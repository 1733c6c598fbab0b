# kill -9 of QEMU is a failure: systemd restarts the instance (Restart=on-failure),
# the helper cleans up the stale TAP/pidfile, and the VM serves again.
common: {
  name = "mcp-unikernel-kill-restart-${common.flavour}";

  nodes.machine =
    { ... }:
    {
      imports = [ common.host ];
      services.mcp.unikernels.web = common.fileServerVM "10.99.0.2" "v1.txt";
    };

  testScript = common.pyHelpers + ''
    machine.wait_for_unit("mcp-unikernel@web.service")
    wait_http(machine, "http://10.99.0.2:8080/", "served-v1")
    old = main_pid(machine, "mcp-unikernel@web.service")

    machine.succeed(f"kill -9 {old}")
    machine.wait_until_succeeds(
        "test $(systemctl show -p NRestarts --value mcp-unikernel@web.service) -ge 1", timeout=60)
    machine.wait_for_unit("mcp-unikernel@web.service")
    new = main_pid(machine, "mcp-unikernel@web.service")
    assert new not in (0, old), f"main PID {old} -> {new}"
    wait_http(machine, "http://10.99.0.2:8080/", "served-v1")

    # Exactly one QEMU for this VM.
    n = int(machine.succeed("pgrep -c -u mcp-vm-web qemu-system").strip())
    assert n == 1, f"{n} QEMU processes"
  '';
}
