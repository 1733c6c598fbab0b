# STAND-INS for the NixOS options the module sets or reads, so that
# lib.evalModules can evaluate nixos/module.nix with only a nixpkgs `lib` tree
# (no full nixpkgs here). They are NOT the real NixOS declarations, but for
# every option the module sets they accept exactly what the real ones accept
# (compared with nixpkgs's nixos/ tree, snapshot faukah/nixpkgs 3b20077cd82f,
# with nixpkgs.lib b212b2c; docs/nixos.md says what was compared):
#   - unit names in wantedBy / wants (and the names checked by the eval
#     tests in drop-in text): systemd-lib.nix's unitNameType pattern;
#   - systemd.units.<n>.text / overrideStrategy: concreteUnitOptions
#     (systemd-unit-options.nix);
#   - users.users.<n>: the name check (< 32 characters, aborts otherwise),
#     passwdEntry strings (no ':' or newline), isSystemUser, group,
#     extraGroups (users-groups.nix);
#   - networking.nftables.tables.<n>.family: the enum of nftables.nix;
#   - networkd's ConfigureWithoutCarrier / RequiredForOnline values.
#   - system.activationScripts.<n>: a string or { deps; text;
#     supportsDryActivation; } (activation-script.nix), with its apply.
# Options the module only reads (boot.isContainer, networking.useNetworkd,
# networking.nftables.enable; boot.kernelPackages.kernel.version) are plain
# values, as there.
{ lib, config, ... }:
let
  inherit (lib) mkOption types;

  # nixos/lib/systemd-lib.nix
  unitNamePattern = "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";
  unitNameType = types.strMatching unitNamePattern;
  boolValues = [
    true
    false
    "yes"
    "no"
  ];
  oneOf =
    what: allowed:
    types.addCheck types.anything (v: builtins.elem v allowed) // { description = "one of ${builtins.toJSON allowed} (${what})"; };

  # nixos/modules/config/users-groups.nix: types.passwdEntry
  passwdEntry =
    t:
    types.addCheck t (x: !(lib.hasInfix ":" x || lib.hasInfix "\n" x))
    // {
      description = "${t.description}, not containing newlines or colons";
    };

  loose = mkOption {
    type = types.attrsOf types.anything;
    default = { };
  };

  # nixos/lib/systemd-unit-options.nix: sharedOptions + concreteUnitOptions
  # (what the module sets of them).
  sharedUnitOptions = {
    enable = mkOption {
      type = types.bool;
      default = true;
    };
    overrideStrategy = mkOption {
      type = types.enum [
        "asDropinIfExists"
        "asDropin"
      ];
      default = "asDropinIfExists";
    };
    wantedBy = mkOption {
      type = types.listOf unitNameType;
      default = [ ];
    };
    requiredBy = mkOption {
      type = types.listOf unitNameType;
      default = [ ];
    };
  };

  unitType = types.submodule {
    options = sharedUnitOptions // {
      text = mkOption {
        type = types.nullOr types.str;
        default = null;
      };
    };
  };

  # systemd.targets.<n> (commonUnitOptions; the module sets wants).
  targetType = types.submodule {
    freeformType = types.attrsOf types.anything;
    options = sharedUnitOptions // {
      wants = mkOption {
        type = types.listOf unitNameType;
        default = [ ];
      };
      after = mkOption {
        type = types.listOf unitNameType;
        default = [ ];
      };
    };
  };

  userType = types.submodule (
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = passwdEntry types.str;
          default = name;
          apply =
            x:
            assert (
              builtins.stringLength x < 32 || abort "Username '${x}' is longer than 31 characters which is not allowed!"
            );
            x;
        };
        isSystemUser = mkOption {
          type = types.bool;
          default = false;
        };
        group = mkOption {
          type = types.str;
          default = "";
        };
        extraGroups = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        description = mkOption {
          type = passwdEntry types.str;
          default = "";
        };
      };
    }
  );

  groupType = types.submodule (
    { name, ... }:
    {
      options.name = mkOption {
        type = passwdEntry types.str;
        default = name;
        apply =
          x:
          assert (
            builtins.stringLength x < 32 || abort "Group name '${x}' is longer than 31 characters which is not allowed!"
          );
          x;
      };
    }
  );

  # nixos/modules/system/etc/etc.nix (source or text).
  etcType = types.submodule (
    { config, name, ... }:
    {
      options = {
        source = mkOption { type = types.path; };
        text = mkOption {
          type = types.nullOr types.lines;
          default = null;
        };
      };
      config.source = lib.mkIf (config.text != null) (
        lib.mkDefault ((import ./stub-pkgs.nix).writeText "etc-${baseNameOf name}" config.text)
      );
    }
  );
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    boot.isContainer = mkOption {
      type = types.bool;
      default = false;
    };
    # nixos/modules/system/boot/kernel.nix (read only: its kernel's version)
    boot.kernelPackages = mkOption {
      type = types.anything;
      default = {
        kernel.version = "6.12.0";
      };
    };
    environment.etc = mkOption {
      type = types.attrsOf etcType;
      default = { };
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    users.users = mkOption {
      type = types.attrsOf userType;
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf groupType;
      default = { };
    };
    systemd.package = mkOption {
      type = types.anything;
      default = "/nix/store/00000000000000000000000000000000-systemd";
    };
    systemd.packages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    systemd.units = mkOption {
      type = types.attrsOf unitType;
      default = { };
    };
    systemd.services = loose;
    systemd.targets = mkOption {
      type = types.attrsOf targetType;
      default = { };
    };
    # nixos/modules/system/boot/networkd.nix checks these two keys' values.
    systemd.network.networks = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.networkConfig = mkOption {
            type = types.submodule {
              freeformType = types.attrsOf types.anything;
              options.ConfigureWithoutCarrier = mkOption {
                type = types.nullOr (oneOf "ConfigureWithoutCarrier" boolValues);
                default = null;
              };
            };
            default = { };
          };
          options.linkConfig = mkOption {
            type = types.submodule {
              freeformType = types.attrsOf types.anything;
              options.RequiredForOnline = mkOption {
                type = types.nullOr (
                  oneOf "RequiredForOnline" (
                    boolValues
                    ++ [
                      "missing"
                      "off"
                      "no-carrier"
                      "dormant"
                      "degraded-carrier"
                      "carrier"
                      "degraded"
                      "enslaved"
                      "routable"
                    ]
                  )
                );
                default = null;
              };
            };
            default = { };
          };
        }
      );
      default = { };
    };
    networking.useNetworkd = mkOption {
      type = types.bool;
      default = false;
    };
    networking.bridges = mkOption {
      type = types.attrsOf (types.submodule { options.interfaces = mkOption { type = types.listOf types.str; }; });
      default = { };
    };
    networking.interfaces = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.ipv4.addresses = mkOption {
            type = types.listOf (
              types.submodule {
                options.address = mkOption { type = types.str; };
                options.prefixLength = mkOption { type = types.addCheck types.int (n: n >= 0 && n <= 32); };
              }
            );
            default = [ ];
          };
          options.macAddress = mkOption {
            type = types.nullOr types.str;
            default = null;
          };
          # (set by checks/isolation.nix only, not by the module)
          options.ipv4.routes = mkOption {
            type = types.listOf types.anything;
            default = [ ];
          };
        }
      );
      default = { };
    };
    networking.firewall.interfaces = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.allowedTCPPorts = mkOption {
            type = types.listOf types.port;
            default = [ ];
          };
          options.allowedUDPPorts = mkOption {
            type = types.listOf types.port;
            default = [ ];
          };
        }
      );
      default = { };
    };
    # nixos/modules/system/activation/activation-script.nix: its type
    # (a string, or deps/text/supportsDryActivation) and its apply, which
    # adds the assembled `script`.
    system.activationScripts = mkOption {
      type = types.attrsOf (
        types.either types.str (
          types.submodule {
            options = {
              deps = mkOption {
                type = types.listOf types.str;
                default = [ ];
              };
              text = mkOption { type = types.lines; };
              supportsDryActivation = mkOption {
                type = types.bool;
                default = false;
              };
            };
          }
        )
      );
      default = { };
      apply = set: set // { script = "# stand-in: the assembled activation script"; };
    };
    networking.nftables.enable = mkOption {
      type = types.bool;
      default = false;
    };
    networking.nftables.tables = mkOption {
      type = types.attrsOf (
        types.submodule (
          { name, ... }:
          {
            options = {
              name = mkOption {
                type = types.str;
                default = name;
              };
              family = mkOption {
                type = types.enum [
                  "ip"
                  "ip6"
                  "inet"
                  "arp"
                  "bridge"
                  "netdev"
                ];
              };
              content = mkOption { type = types.lines; };
            };
          }
        )
      );
      default = { };
    };
  };

  # nixos/lib/utils.nix's escapeSystemdPath, re-stated (STAND-IN for the
  # `utils` module argument NixOS passes).
  config._module.args.utils = {
    escapeSystemdPath =
      s:
      let
        replacePrefix = p: r: s: if lib.hasPrefix p s then r + (lib.removePrefix p s) else s;
        trim = s: lib.removeSuffix "/" (lib.removePrefix "/" s);
        normalizedPath = lib.strings.normalizePath s;
      in
      builtins.replaceStrings [ "/" ] [ "-" ] (
        replacePrefix "." (lib.strings.escapeC [ "." ] ".") (
          lib.strings.escapeC (lib.stringToCharacters " !\"#$%&'()*+,;<=>=@[\\]^`{|}~-") (
            if normalizedPath == "/" then normalizedPath else trim normalizedPath
          )
        )
      );
  };
}
