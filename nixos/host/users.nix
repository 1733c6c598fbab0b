# One system user and group per unikernel (issue 12, item 5): each VM's QEMU,
# image, QMP socket and TAP belong to that uid alone. The helper refuses a
# config whose qemu_user another config in /etc/mcp-unikernel also uses.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  c = import ./common.nix {
    inherit
      config
      lib
      pkgs
      utils
      ;
  };
  inherit (c) cfg enabled;
in
{
  config = lib.mkIf (cfg.unikernels != { }) {
    users.users = lib.mapAttrs' (
      name: u:
      lib.nameValuePair u.user {
        isSystemUser = true;
        inherit (u) group;
        # /dev/kvm is 0660 root:kvm; the helper keeps supplementary groups
        # (initgroups) when it drops to this user.
        extraGroups = [ "kvm" ];
        description = "QEMU of mcp unikernel ${name}";
      }
    ) enabled;

    users.groups = lib.mapAttrs' (_: u: lib.nameValuePair u.group { }) enabled;
  };
}
