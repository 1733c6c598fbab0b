# Values derived from a unikernel's name and IPv4 arithmetic, builtins only.
# Must match the helper exactly (src/derive.rs, docs/config-schema.md):
#   TAP  `mcp-<name>` when name has at most 11 characters, else
#        `mcp-<first 6 chars>-<first 4 hex of sha256(name)>` (15 characters);
#   MAC  `02:` + the first 5 bytes of sha256("mcp-unikernel:" + name), lower case.
# and, for the NixOS module only (the helper reads it from the JSON):
#   user `mcp-vm-<name>` when that has at most 31 characters, else
#        `mcp-vm-<first 15 chars>-<first 8 hex of sha256(name)>` (31 characters).
#        NixOS aborts evaluation on user and group names of 32 characters or
#        more (nixos/modules/config/users-groups.nix: "longer than 31 characters").
let
  sha256 = builtins.hashString "sha256";

  pow2 = n: if n <= 0 then 1 else 2 * pow2 (n - 1);
  mod = a: b: a - (a / b) * b;

  octetText = n: toString n;

  # "10.99.0.2" -> [ 10 99 0 2 ], or null when it is not a dotted IPv4 address.
  parseIPv4 =
    s:
    let
      m = if builtins.isString s then builtins.match "([0-9]{1,3})\\.([0-9]{1,3})\\.([0-9]{1,3})\\.([0-9]{1,3})" s else null;
      # fromJSON rejects leading zeros ("010"), which is what we want.
      octets = if m == null then null else map (o: builtins.fromJSON o) m;
      ok = m != null && builtins.all (o: builtins.match "0|[1-9][0-9]*" o != null) m
        && builtins.all (o: o <= 255) octets;
    in
    if ok then octets else null;

  toInt = octets: builtins.foldl' (acc: o: acc * 256 + o) 0 octets;

  fromInt =
    n:
    builtins.concatStringsSep "." (map octetText [
      (mod (n / 16777216) 256)
      (mod (n / 65536) 256)
      (mod (n / 256) 256)
      (mod n 256)
    ]);
in
rec {
  inherit parseIPv4 fromInt;

  tapName =
    name:
    if builtins.stringLength name <= 11 then
      "mcp-${name}"
    else
      "mcp-${builtins.substring 0 6 name}-${builtins.substring 0 4 (sha256 name)}";

  # The system user (and group) QEMU runs as for this unikernel: one per VM.
  userName =
    name:
    let
      plain = "mcp-vm-${name}";
    in
    if builtins.stringLength plain <= 31 then
      plain
    else
      "mcp-vm-${builtins.substring 0 15 name}-${builtins.substring 0 8 (sha256 name)}";

  # "02:" + the first 5 bytes of sha256(seed): locally administered, unicast.
  macFrom =
    seed:
    let
      h = sha256 seed;
      byte = i: builtins.substring (2 * i) 2 h;
    in
    builtins.concatStringsSep ":" ([ "02" ] ++ map byte [ 0 1 2 3 4 ]);

  mac = name: macFrom "mcp-unikernel:${name}";

  # The bridge's default MAC: fixed, so it does not follow its lowest port's
  # MAC as TAPs join and leave (which flushes the VMs' neighbour entries).
  bridgeMac = bridgeName: macFrom "mcp-unikernel-bridge:${bridgeName}";

  # A unicast MAC ("aa:bb:cc:dd:ee:ff", the first octet even).
  isUnicastMac =
    s:
    builtins.isString s
    && builtins.match "[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}" s != null
    && mod (builtins.fromTOML "v = 0x${builtins.substring 0 2 s}").v 2 == 0;

  isIPv4 = s: parseIPv4 s != null;

  # "10.99.0.1/24" -> { address = "10.99.0.1"; prefixLength = 24; } or null.
  parseCIDR =
    s:
    let
      m = builtins.match "([0-9.]+)/([0-9]{1,2})" s;
      p = if m == null then null else builtins.fromJSON (builtins.elemAt m 1);
    in
    if m == null || parseIPv4 (builtins.head m) == null || p < 1 || p > 30 then
      null
    else
      {
        address = builtins.head m;
        prefixLength = p;
      };

  netmask = prefixLength: fromInt (pow2 32 - pow2 (32 - prefixLength));

  # Facts about `ip` relative to the subnet of `gateway/prefixLength`
  # (both already valid).
  classify =
    {
      gateway,
      prefixLength,
      ip,
    }:
    let
      size = pow2 (32 - prefixLength);
      gw = toInt (parseIPv4 gateway);
      net = gw - mod gw size;
      bcast = net + size - 1;
      x = toInt (parseIPv4 ip);
    in
    {
      network = fromInt net;
      broadcast = fromInt bcast;
      inSubnet = x >= net && x <= bcast;
      isNetwork = x == net;
      isBroadcast = x == bcast;
      isGateway = x == gw;
    };
}
