# Two unikernels on the bridge; probe unikernels (busybox wget, one request
# each, output in their journal) show what a VM can reach:
#   - the gateway on an allowed port: yes; on another port: no;
#   - another VM on the bridge: no (isolated bridge ports + nft);
#   - a node off the bridge: no (nothing forwarded, even with ip_forward=1).
# The host reaches both VMs; the outside node cannot reach them through the host.
common:
let
  gw = "10.99.0.1";
in
{
  name = "mcp-unikernel-isolation-${common.flavour}";

  nodes.outside =
    { pkgs, ... }:
    {
      networking.firewall.enable = false;
      services.nginx.enable = true;
      services.nginx.virtualHosts.default.locations."/".return = "200 outside-node";
      # Route the bridge subnet through the host to prove nothing is forwarded.
      networking.interfaces.eth1.ipv4.routes = [
        {
          address = "10.99.0.0";
          prefixLength = 24;
          via = "192.168.1.1";
        }
      ];
      environment.systemPackages = [ pkgs.curl ];
    };

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ common.host ];
      # The test driver numbers nodes alphabetically on vlan 1:
      # machine = 192.168.1.1, outside = 192.168.1.2.
      # Forwarding on: the nft rules alone must keep the bridge isolated.
      boot.kernel.sysctl."net.ipv4.ip_forward" = 1;
      services.mcp.firewall.allowedTCPPorts = [ 8000 ];
      networking.firewall.allowedTCPPorts = [ 9000 ];
      systemd.services.gateway-http = {
        wantedBy = [ "multi-user.target" ];
        script = ''
          mkdir -p /tmp/gw && echo gateway-ok > /tmp/gw/index.html
          cd /tmp/gw && exec ${pkgs.python3}/bin/python3 -m http.server 8000 --bind 0.0.0.0
        '';
        serviceConfig.PrivateTmp = true;
      };
      systemd.services.gateway-closed = {
        wantedBy = [ "multi-user.target" ];
        script = ''
          mkdir -p /tmp/gw && echo closed-port-reached > /tmp/gw/index.html
          cd /tmp/gw && exec ${pkgs.python3}/bin/python3 -m http.server 9000 --bind 0.0.0.0
        '';
        serviceConfig.PrivateTmp = true;
      };
      services.mcp.unikernels = {
        a = common.fileServerVM "10.99.0.2" "v1.txt";
        b = common.fileServerVM "10.99.0.3" "v2.txt";
        probe-gw = (common.probeVM "10.99.0.10" "http://${gw}:8000/") // {
          autoStart = false;
        };
        probe-closed = (common.probeVM "10.99.0.11" "http://${gw}:9000/") // {
          autoStart = false;
        };
        probe-peer = (common.probeVM "10.99.0.12" "http://10.99.0.2:8080/") // {
          autoStart = false;
        };
        probe-out = (common.probeVM "10.99.0.13" "http://192.168.1.2/") // {
          autoStart = false;
        };
      };
    };

  testScript = common.pyHelpers + ''
    start_all()
    outside.wait_for_unit("nginx.service")
    machine.wait_for_unit("gateway-http.service")
    machine.wait_for_unit("gateway-closed.service")
    machine.wait_for_unit("mcp-unikernels.target")

    with subtest("the host reaches both VMs"):
        wait_http(machine, "http://10.99.0.2:8080/", "served-v1")
        wait_http(machine, "http://10.99.0.3:8080/", "served-v2")
        machine.succeed("curl -sf --max-time 5 http://192.168.1.2/ | grep -q outside-node")

    with subtest("bridge ports are isolated and the rules are loaded"):
        for tap in ("mcp-a", "mcp-b"):
            machine.succeed(f"bridge -d link show dev {tap} | grep -q 'isolated on'")
        machine.succeed("nft list ruleset | grep -q mcp")

    def probe(name):
        unit = f"mcp-unikernel@{name}.service"
        machine.succeed(f"systemctl start {unit}")
        # One request, then the guest powers off and QEMU exits 0.
        machine.wait_until_succeeds(f"! systemctl is-active --quiet {unit}", timeout=120)
        return machine.succeed(f"journalctl -u {unit} -o cat")

    with subtest("a VM reaches the gateway on an allowed port"):
        log = probe("probe-gw")
        assert "gateway-ok" in log, log
        result = machine.succeed("systemctl show -p Result --value mcp-unikernel@probe-gw.service").strip()
        assert result == "success", f"clean guest exit reported as {result!r}"

    with subtest("but not on another gateway port"):
        log = probe("probe-closed")
        assert "closed-port-reached" not in log, log
        assert "wget:" in log, log

    with subtest("nor another VM on the bridge"):
        log = probe("probe-peer")
        assert "served-v1" not in log, log
        assert "wget:" in log, log

    with subtest("nor a node off the bridge"):
        log = probe("probe-out")
        assert "outside-node" not in log, log
        assert "wget:" in log, log

    with subtest("the outside node cannot reach the VMs through the host"):
        outside.succeed("ip route get 10.99.0.2 | grep -q 192.168.1.1")
        outside.fail("curl -sf --max-time 5 http://10.99.0.2:8080/")
  '';
}
