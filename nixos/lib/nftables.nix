# nftables isolation rules for the unikernel bridge. Pure: builtins only, so
# it evaluates with a bare `nix-instantiate --eval` (tests/isolation.rs does).
#
#   import ./nftables.nix {
#     bridge = "mcp-br0"; gateway = "10.99.0.1"; prefixLength = 24;
#     allowedTCPPorts = [ 443 ]; allowedUDPPorts = [ ];
#     vms = [ { name = "mcat"; tap = "mcp-mcat"; ip = "10.99.0.2"; mac = "02:aa:bb:cc:dd:ee";
#               allowedTCPPorts = [ 8443 ]; allowedUDPPorts = [ ]; } ];   # per-VM ports: optional
#     tapIngressHooks = true;   # optional, default true (needs Linux >= 6.16, see below)
#   }
#   => {
#        ruleset = "<text for `nft -f`: all our tables, replaced atomically>";
#        removal = "<text for `nft -f`: deletes all our tables; harmless when absent>";
#        tables = {
#          "mcp-unikernel"      = { family = "bridge"; content = "<chains only>"; };
#          "mcp-unikernel-host" = { family = "inet";   content = "<chains only>"; };
#          "mcp-unikernel-arp"  = { family = "arp";    content = "<chains only>"; };
#          "mcp-unikernel-taps" = { family = "netdev"; content = "<chains only>"; };  # see tapIngressHooks
#        };
#      }
#
# Policy (docs/firewall.md): no NAT, no uplink. A VM may reach only the gateway
# (the host's bridge address) on the allowed ports (the global lists, plus the
# VM's own lists in its inet chain `gw-<name>`), ICMP echo and ARP for the
# gateway; nothing is forwarded to or from the bridge; VM-to-VM frames are
# dropped; each VM's TAP must carry that VM's MAC/IPv4 (anti-spoofing) and a
# VM's MAC is accepted on no other bridge port; IPv6 from VMs is dropped.
# The host answers ARP on the bridge only for the gateway and sends no ARP on
# it naming another of its addresses. Link-local multicast frames
# (01:80:c2:00:00:0x: STP, LLDP, 802.1X, pause...) from VM TAPs are dropped
# at the TAP's ingress, before the bridge or any L2 protocol handler sees them.
# IP and ARP reaching the host through the bridge must come from a declared
# VM (its MAC and IPv4 together), which drops frames of bridge ports that are
# not declared TAPs. No packet mark is set or read. The host's own traffic to
# the VMs is not restricted.
#
# tapIngressHooks: the link-local drop is a netdev-family ingress chain bound
# to the TAP names. Linux >= 6.16 accepts such a chain while the TAPs do not
# exist yet and hooks each TAP when it appears (measured on 6.18: also after
# a TAP is deleted and created again); older kernels refuse to load it
# (ENOENT). With tapIngressHooks = false that table is left out; the bridge
# table still drops the link-local frames that pass its hooks, but LLDP
# (01:80:c2:00:00:0e) and, with STP on, BPDUs (01:80:c2:00:00:00) then reach
# the host's handlers on the TAP (docs/firewall.md).
{
  bridge,
  gateway,
  prefixLength,
  allowedTCPPorts ? [ ],
  allowedUDPPorts ? [ ],
  vms,
  tapIngressHooks ? true,
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
        # Gateway ports only this VM may reach (on top of the global lists).
        tcp = checkPorts "allowedTCPPorts of vm ${toString (vm.name or "?")}" (vm.allowedTCPPorts or [ ]);
        udp = checkPorts "allowedUDPPorts of vm ${toString (vm.name or "?")}" (vm.allowedUDPPorts or [ ]);
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

  ingress = if builtins.isBool tapIngressHooks then tapIngressHooks else fail "tapIngressHooks (bool)" tapIngressHooks;

  braces = xs: "{ ${concatStringsSep ", " xs} }";
  taps = braces (map (v: q v.tap) vmList);
  # A declared VM's link-layer and IPv4 address together.
  pairs = braces (map (v: "${v.mac} . ${v.ip}") vmList);

  # Destination 01:80:c2:00:00:00 .. 01:80:c2:00:00:0f (IEEE 802.1D reserved
  # group addresses: STP, pause, LACP, 802.1X, LLDP...).
  linkLocal = "ether daddr & ff:ff:ff:ff:ff:f0 == 01:80:c2:00:00:00";

  # ---- bridge family: layer 2, per bridge port ----
  # Hooks of the bridge family see the ports of every bridge on the host and,
  # without CONFIG_NFT_BRIDGE_META (`meta ibrname`), cannot tell which bridge
  # a frame is on: rules here only name our TAPs and our VMs' MACs.
  bridgeTable = "mcp-unikernel";

  vmChain =
    vm:
    chain "vm-${vm.name}" ''
      # ${vm.name}: TAP ${vm.tap}, MAC ${vm.mac}, IPv4 ${vm.ip}
      ${linkLocal} counter drop comment "link-local multicast"
      ether saddr != ${vm.mac} counter drop comment "spoofed MAC"
      ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether ${vm.mac} arp saddr ip ${vm.ip} arp daddr ip ${gw} accept comment "ARP as itself, with the gateway"
      ether type arp counter drop comment "ARP with a foreign sender or for another address"
      ether type ip ip saddr ${vm.ip} accept comment "IPv4 from its own address"
      ether type ip counter drop comment "spoofed IPv4 source"
      counter drop comment "IPv6, VLAN and any other ethertype"'';

  bridgeContent = lines (
    [
      (chain "prerouting" (lines (
        [
          "type filter hook prerouting priority filter; policy accept;"
          "# Each declared VM TAP jumps to the chain checking that VM's addresses"
          "# (each ends in accept or drop)."
        ]
        ++ map (vm: "iifname ${q vm.tap} jump vm-${vm.name}") vmList
        ++ (if vmList == [ ] then [ ] else [
          "# Any other port (of any bridge): a declared VM's MAC is bound to its TAP, so"
          "# the host tables can trust a VM's MAC + IPv4 pair as coming from its TAP."
          "ether saddr ${braces (map (v: v.mac) vmList)} counter drop comment \"a VM's MAC on another port\""
        ])
      )))
      ""
      (chain "input" (lines (
        [
          "type filter hook input priority filter; policy accept;"
          "# Link-local frames the bridge hands to the host through this hook (it"
          "# passes 01:80:c2:00:00:02-0d,0f here, not through prerouting). The TAP"
          "# ingress chains (table netdev mcp-unikernel-taps) drop them earlier."
        ]
        ++ (if vmList == [ ] then [ "# (no VMs declared)" ] else [
          "iifname ${taps} ${linkLocal} counter drop comment \"link-local multicast from a VM\""
        ])
      )))
      ""
      (chain "forward" (lines (
        [
          "type filter hook forward priority filter; policy accept;"
          "# Port to port (VM to VM, also flooded unicast and broadcasts): never."
          "# The TAPs are also isolated bridge ports; this holds without that."
        ]
        ++ (if vmList == [ ] then [ "# (no VMs declared)" ] else [
          "iifname ${taps} counter drop comment \"from a VM to another port\""
          "oifname ${taps} counter drop comment \"from another port to a VM\""
        ])
      )))
    ]
    ++ concatMap (vm: [ "" (vmChain vm) ]) vmList
  );

  # ---- netdev family: each TAP's ingress, before the bridge ----
  tapTable = "mcp-unikernel-taps";

  tapContent = chain "ingress" ''
    type filter hook ingress devices = ${taps} priority filter; policy accept;
    # Runs before the bridge's rx handler: the frames the bridge consumes as
    # link-local (LLDP, and BPDUs when STP is on) never pass a bridge hook.
    ${linkLocal} counter drop comment "link-local multicast from a VM"'';

  withTaps = ingress && vmList != [ ];

  # ---- inet family: the host's IP stack ----
  hostTable = "mcp-unikernel-host";

  # VMs with gateway ports of their own, and the chain holding them (it
  # returns to from-vms, whose final rule drops, when no port matches).
  perVM = filter (vm: vm.tcp != [ ] || vm.udp != [ ]) vmList;
  gwChain =
    vm:
    chain "gw-${vm.name}" (lines (
      [ "# ${vm.name} (${vm.ip}): gateway ports only this VM may reach" ]
      ++ (if vm.tcp == [ ] then [ ] else [ "ip daddr ${gw} tcp dport ${set vm.tcp} accept comment \"TCP ports allowed to ${vm.name}\"" ])
      ++ (if vm.udp == [ ] then [ ] else [ "ip daddr ${gw} udp dport ${set vm.udp} accept comment \"UDP ports allowed to ${vm.name}\"" ])
    ));

  hostContent = lines (
  [
    (chain "input" ''
      type filter hook input priority filter; policy accept;
      # Everything the VMs send to the host goes through from-vms.
      iifname ${q br} jump from-vms'')
    ""
    (chain "from-vms" (lines (
      [
        "meta nfproto != ipv4 counter drop comment \"IPv6 (the VMs are IPv4 only)\""
        "# Only a declared VM's MAC + IPv4 get further. A VM's TAP carries only its"
        "# own pair and the bridge table drops a VM's MAC on any other port, so this"
        "# drops IP from bridge ports that are not declared TAPs (no packet mark)."
      ]
      ++ (if vmList == [ ] then [ "counter drop comment \"no VMs declared\"" ] else [
        "ether saddr . ip saddr != ${pairs} counter drop comment \"not from a declared VM's TAP\""
      ])
      ++ [
        "# Replies to connections the host opened (the host talks to VMs freely)."
        "ct state established,related accept"
        "ct state invalid counter drop"
      ]
      ++ (if tcp == [ ] then [ "# (no TCP ports allowed)" ] else [ "ip daddr ${gw} tcp dport ${set tcp} accept comment \"allowed TCP ports on the gateway\"" ])
      ++ (if udp == [ ] then [ "# (no UDP ports allowed)" ] else [ "ip daddr ${gw} udp dport ${set udp} accept comment \"allowed UDP ports on the gateway\"" ])
      ++ (if perVM == [ ] then [ ] else [
        "# Ports only some VMs may reach: each VM's own chain (its source address is"
        "# trusted here: the MAC + IPv4 pair above can only come from its TAP)."
      ])
      ++ map (vm: "ip saddr ${vm.ip} jump gw-${vm.name}") perVM
      ++ [
        "ip daddr ${gw} icmp type echo-request accept comment \"ping the gateway\""
        "# Anything else from the bridge to the host (other ports, other host"
        "# addresses, broadcasts) is dropped."
        "counter drop"
      ]
    )))
  ]
  ++ concatMap (vm: [ "" (gwChain vm) ]) perVM
  ++ [
    ""
    (chain "forward" ''
      type filter hook forward priority filter; policy accept;
      # The bridge has no uplink: nothing is routed into or out of it, even
      # with net.ipv4.ip_forward=1 on the host.
      iifname ${q br} counter drop comment "from a VM to anywhere off the bridge"
      oifname ${q br} counter drop comment "from anywhere off the bridge to a VM"'')
  ]);

  # ---- arp family: the host's ARP on the bridge ----
  # Here the interface is the bridge itself (ARP the host receives through
  # it, ARP the host sends on it), so these rules cover every port of the
  # bridge, declared or not, and nothing else.
  arpTable = "mcp-unikernel-arp";

  arpContent = lines [
    (chain "input" ''
      type filter hook input priority filter; policy accept;
      iifname ${q br} jump from-bridge'')
    ""
    (chain "from-bridge" (lines (
      [
        "# Answered and learned: only a declared VM (MAC + IPv4) asking for or"
        "# answering the gateway. The host's other addresses (on the bridge or on"
        "# other interfaces) are never answered on the bridge; ports that are not"
        "# declared TAPs get nothing."
      ]
      ++ (if vmList == [ ] then [ ] else [
        "arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether . arp saddr ip ${pairs} arp daddr ip ${gw} accept comment \"a VM with the gateway\""
      ])
      ++ [ "counter drop comment \"other ARP on the bridge\"" ]
    )))
    ""
    (chain "output" ''
      type filter hook output priority filter; policy accept;
      # Replies and requests the host sends on the bridge name only the gateway.
      oifname ${q br} arp saddr ip != ${gw} counter drop comment "ARP naming another host address"'')
  ];

  header = ''
    # mcp-unikernel isolation rules for bridge ${br} (gateway ${gw}/${toString plen}),
    # ${toString (length vmList)} VM(s). Generated by nixos/lib/nftables.nix; see docs/firewall.md.
    # Loading this file replaces all our tables atomically (each is created if
    # missing, deleted, then defined again; a table not in use is only deleted).
  '';

  allTables = [
    { family = "bridge"; name = bridgeTable; }
    { family = "inet"; name = hostTable; }
    { family = "arp"; name = arpTable; }
    { family = "netdev"; name = tapTable; }
  ];

  # `table X` creates X if it is missing (and changes nothing if present), so
  # the `delete` that follows never fails: the pair is harmless when absent.
  clear = t: ''
    table ${t.family} ${t.name}
    delete table ${t.family} ${t.name}
  '';

  defined =
    [
      { family = "bridge"; name = bridgeTable; content = bridgeContent; }
      { family = "inet"; name = hostTable; content = hostContent; }
      { family = "arp"; name = arpTable; content = arpContent; }
    ]
    ++ (if withTaps then [ { family = "netdev"; name = tapTable; content = tapContent; } ] else [ ]);

  define = t: ''
    table ${t.family} ${t.name} {
    ${indent t.content}
    }
  '';
in
assert checked;
{
  ruleset = header + "\n" + concatStringsSep "" (map clear allTables) + "\n" + concatStringsSep "\n" (map define defined);
  removal = "# mcp-unikernel: delete the isolation tables (harmless when they are absent).\n" + concatStringsSep "" (map clear allTables);
  tables = builtins.listToAttrs (map (t: { name = t.name; value = { inherit (t) family content; }; }) defined);
}
