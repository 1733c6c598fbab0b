# NixOS module: services.mcp.unikernels.<name> -> Nanos unikernels under QEMU,
# one instance of the package's template unit mcp-unikernel@.service per
# unikernel (after its build instance mcp-unikernel-build@<name>.service),
# each on its own TAP on an isolated host bridge, each QEMU as its own user.
# The JSON written for each instance follows docs/config-schema.md
# (schema_version 1). Docs: docs/nixos.md.
#
# One file per job, as microvm.nix's host modules are split:
#   host/options.nix     the options (and the removed qemuUser/qemuGroup)
#   host/units.nix       systemd.packages, instance JSON, per-instance drop-ins
#                        (nixos/lib/units.nix), the target's Wants=
#   host/network.nix     the bridge and the isolation tables
#   host/users.nix       one system user + group per unikernel
#   host/assertions.nix  assertions and warnings
#   host/on-remove.nix   onRemove and mcp-unikernel-gc.service (purge on removal)
#   host/guest-network.nix  per-VM gateway ports, the guest's resolver and
#                        NTP servers (options, defaults, assertions)
#   host/ready.nix       readiness, health, dependsOn, credentials: options,
#                        assertions, the credentials' activation snippet
#   host/common.nix      values they all derive from the configuration
#
# Module arguments used: config, lib, pkgs, utils (utils.escapeSystemdPath).
{
  imports = [
    ./host/options.nix
    ./host/units.nix
    ./host/network.nix
    ./host/users.nix
    ./host/assertions.nix
    ./host/guest-network.nix
    ./host/on-remove.nix
    ./host/ready.nix
  ];
}
