# nftables isolation rules for the unikernel bridge. Pure: builtins only, so
# it evaluates with a bare `nix-instantiate --eval` (tests/isolation.rs does).
#
#   import ./nftables.nix {
#     bridge = "mcp-br0"; gateway = "10.99.0.1"; prefixLength = 24;
#     allowedTCPPorts = [ 443 ]; allowedUDPPorts = [ ];
#     vms = [ { name = "mcat"; tap = "mcp-mcat"; ip = "10.99.0.2"; mac = "02:aa:bb:cc:dd:ee"; } ];
#   }
#   => {
#        ruleset = "<text for `nft -f`: both tables, replaced atomically>";
#        tables = {
#          "mcp-unikernel"      = { family = "bridge"; content = "<chains only>"; };
#          "mcp-unikernel-host" = { family = "inet";   content = "<chains only>"; };
#        };
#      }
#
# Policy (docs/firewall.md): no NAT, no uplink. A VM may reach only the gateway
# (the host's bridge address) on the allowed ports, ICMP echo and ARP; nothing
# is forwarded to or from the bridge; VM-to-VM frames are dropped; each VM's
# TAP must carry that VM's MAC/IPv4 (anti-spoofing); IP traffic to the host
# from bridge ports that are not declared TAPs is dropped (the kernel here has
# no `meta ibrname`, so this uses a packet mark set by the per-VM chains);
# IPv6 from VMs is dropped. The host's
# own traffic to the VMs is not restricted.
{
  bridge,
  gateway,
  prefixLength,
  allowedTCPPorts ? [ ],
  allowedUDPPorts ? [ ],
  vms,
}:
let
  inherit (builtins) concatStringsSep concatMap map match length toString isInt isString isList filter all;

  fail = what: value: throw "nixos/lib/nftables.nix: invalid ${what}: ${builtins.toJSON value}";

  # ---- minimal validation (the module's assertions give friendlier errors) ----
  checkIfname =
    what: s:
    if isString s && match "[^/:[:space:]\"]{1,15}" s != null then s else fail "${what} (interface name, 1..15 chars, no / : whitespace or quotes)" s;

  checkIPv4 =
    what: s:
    let
      m = if isString s then match "(0|[1-9][0-9]{0,2})\\.(0|[1-9][0-9]{0,2})\\.(0|[1-9][0-9]{0,2})\\.(0|[1-9][0-9]{0,2})" s else null;
    in
    if m != null && all (o: builtins.fromJSON o <= 255) m then s else fail "${what} (IPv4 address)" s;

  checkMAC =
    what: s:
    if isString s && match "[0-9a-f]{2}(:[0-9a-f]{2}){5}" s != null then s else fail "${what} (lower-case MAC xx:xx:xx:xx:xx:xx)" s;

  checkName = s: if isString s && match "[a-z0-9][a-z0-9-]{0,63}" s != null then s else fail "vm name" s;

  checkPorts =
    what: ps:
    if isList ps && all (p: isInt p && p >= 1 && p <= 65535) ps then ps else fail "${what} (list of ports 1..65535)" ps;

  checkVM =
    vm:
    if !(builtins.isAttrs vm) then
      fail "vm (attribute set { name, tap, ip, mac })" vm
    else
      {
        name = checkName (vm.name or null);
        tap = checkIfname "tap of vm ${toString (vm.name or "?")}" (vm.tap or null);
        ip = checkIPv4 "ip of vm ${toString (vm.name or "?")}" (vm.ip or null);
        mac = checkMAC "mac of vm ${toString (vm.name or "?")}" (vm.mac or null);
      };

  br = checkIfname "bridge" bridge;
  gw = checkIPv4 "gateway" gateway;
  plen = if isInt prefixLength && prefixLength >= 1 && prefixLength <= 30 then prefixLength else fail "prefixLength (1..30)" prefixLength;
  tcp = checkPorts "allowedTCPPorts" allowedTCPPorts;
  udp = checkPorts "allowedUDPPorts" allowedUDPPorts;
  vmList = if isList vms then map checkVM vms else fail "vms (list)" vms;

  dupOf =
    attr:
    let
      vals = map (v: v.${attr}) vmList;
      dups = filter (x: length (filter (y: y == x) vals) > 1) vals;
    in
    if dups == [ ] then null else builtins.head dups;

  checked =
    let
      d = builtins.listToAttrs (map (a: { name = a; value = dupOf a; }) [ "name" "tap" "ip" "mac" ]);
      bad = filter (a: d.${a} != null) [ "name" "tap" "ip" "mac" ];
    in
    if bad != [ ] then
      fail "vms (duplicate ${builtins.head bad})" d.${builtins.head bad}
    else if builtins.elem gw (map (v: v.ip) vmList) then
      fail "vms (a VM uses the gateway address)" gw
    else if builtins.elem br (map (v: v.tap) vmList) then
      fail "vms (a TAP is named like the bridge)" br
    else
      true;

  # ---- text helpers ----
  q = s: "\"${s}\"";
  set = xs: if length xs == 1 then toString (builtins.head xs) else "{ ${concatStringsSep ", " (map toString xs)} }";
  lines = concatStringsSep "\n";
  indent = s: lines (map (l: if l == "" then "" else "  " + l) (filter isString (builtins.split "\n" s)));
  chain = name: body: "chain ${name} {\n${indent body}\n}";

  # Set (OR-ed in) on IPv4 that passed a VM's anti-spoofing chain; required by
  # the host table. Other bits of the packet mark are kept.
  markBit = "0x00004d00";

  # ---- bridge family: layer 2, per bridge port ----
  bridgeTable = "mcp-unikernel";

  vmChain =
    vm:
    chain "vm-${vm.name}" ''
      # ${vm.name}: TAP ${vm.tap}, MAC ${vm.mac}, IPv4 ${vm.ip}
      ether saddr != ${vm.mac} counter drop comment "spoofed MAC"
      ether type arp arp htype 1 arp ptype ip arp saddr ether ${vm.mac} arp saddr ip ${vm.ip} accept comment "ARP as itself"
      ether type arp counter drop comment "ARP with a foreign sender"
      ether type ip ip saddr ${vm.ip} meta mark set meta mark or ${markBit} accept comment "IPv4 from its own address"
      ether type ip counter drop comment "spoofed IPv4 source"
      counter drop comment "IPv6, VLAN and any other ethertype"'';

  bridgeContent = lines (
    [
      (chain "prerouting" (lines (
        [
          "type filter hook prerouting priority filter; policy accept;"
          "# Each declared VM TAP jumps to the chain checking that VM's addresses;"
          "# what passes is marked (mark bits ${markBit}) so the host table can tell it"
          "# from frames of bridge ports that are not declared TAPs."
        ]
        ++ map (vm: "iifname ${q vm.tap} jump vm-${vm.name}") vmList
      )))
      ""
      (chain "forward" (lines (
        [
          "type filter hook forward priority filter; policy accept;"
          "# Port to port (VM to VM, also flooded unicast and broadcasts): never."
          "# The TAPs are also isolated bridge ports; this holds without that."
        ]
        ++ (if vmList == [ ] then [ "# (no VMs declared)" ] else [
          "iifname ${set (map (v: q v.tap) vmList)} counter drop comment \"from a VM to another port\""
          "oifname ${set (map (v: q v.tap) vmList)} counter drop comment \"from another port to a VM\""
        ])
      )))
    ]
    ++ concatMap (vm: [ "" (vmChain vm) ]) vmList
  );

  # ---- inet family: the host's IP stack ----
  hostTable = "mcp-unikernel-host";

  hostContent = lines [
    (chain "input" ''
      type filter hook input priority filter; policy accept;
      # Everything the VMs send to the host goes through from-vms.
      iifname ${q br} jump from-vms'')
    ""
    (chain "from-vms" (lines (
      [
        "# Only IPv4 that passed a declared VM's anti-spoofing chain (bridge table"
        "# mcp-unikernel) gets further: this drops frames of undeclared bridge ports."
        "meta mark and ${markBit} != ${markBit} counter drop comment \"not from a declared VM TAP\""
        "# Replies to connections the host opened (the host talks to VMs freely)."
        "ct state established,related accept"
        "ct state invalid counter drop"
      ]
      ++ (if tcp == [ ] then [ "# (no TCP ports allowed)" ] else [ "ip daddr ${gw} tcp dport ${set tcp} accept comment \"allowed TCP ports on the gateway\"" ])
      ++ (if udp == [ ] then [ "# (no UDP ports allowed)" ] else [ "ip daddr ${gw} udp dport ${set udp} accept comment \"allowed UDP ports on the gateway\"" ])
      ++ [
        "ip daddr ${gw} icmp type echo-request accept comment \"ping the gateway\""
        "# Anything else from the bridge to the host (other ports, other host"
        "# addresses, broadcasts, IPv6) is dropped."
        "counter drop"
      ]
    )))
    ""
    (chain "forward" ''
      type filter hook forward priority filter; policy accept;
      # The bridge has no uplink: nothing is routed into or out of it, even
      # with net.ipv4.ip_forward=1 on the host.
      iifname ${q br} counter drop comment "from a VM to anywhere off the bridge"
      oifname ${q br} counter drop comment "from anywhere off the bridge to a VM"'')
  ];

  header = ''
    # mcp-unikernel isolation rules for bridge ${br} (gateway ${gw}/${toString plen}),
    # ${toString (length vmList)} VM(s). Generated by nixos/lib/nftables.nix; see docs/firewall.md.
    # Loading this file replaces both tables atomically (create-if-missing, then delete).
  '';

  table = family: name: content: ''
    table ${family} ${name}
    delete table ${family} ${name}
    table ${family} ${name} {
    ${indent content}
    }
  '';
in
assert checked;
{
  ruleset = header + "\n" + table "bridge" bridgeTable bridgeContent + "\n" + table "inet" hostTable hostContent;
  tables = {
    ${bridgeTable} = {
      family = "bridge";
      content = bridgeContent;
    };
    ${hostTable} = {
      family = "inet";
      content = hostContent;
    };
  };
}
