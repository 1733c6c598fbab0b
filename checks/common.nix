# Shared pieces of the nixosTests in this directory.
{
  module,
  fileServer,
  nanosDir,
  opsPackage,
  accel,
}:
rec {
  # The host: the module, the Nanos kernel, files to serve, curl.
  host =
    { pkgs, ... }:
    {
      imports = [ module ];
      virtualisation.memorySize = 2048;
      virtualisation.cores = 2;
      environment.systemPackages = [ pkgs.curl ];
      services.mcp = {
        inherit nanosDir opsPackage;
      };
      systemd.tmpfiles.rules = [
        "d /srv/www 0755 root root -"
        "f+ /srv/www/v1.txt 0644 root root - served-v1"
        "f+ /srv/www/v2.txt 0644 root root - served-v2"
      ];
    };

  # A unikernel running the example file server on port 8080, serving
  # /srv/www/<file> from a volume.
  fileServerVM = ip: file: {
    program = "${fileServer}/bin/file-server";
    args = [
      "--file"
      "/srv/www/${file}"
      "--listen"
      "0.0.0.0:8080"
    ];
    volumes = [
      {
        source = "/srv/www";
        target = "/srv/www";
      }
    ];
    network.ip = ip;
    inherit accel;
    memory = 128;
  };

  # A one-shot unikernel that fetches `url` with busybox wget (static) and
  # prints the body to the serial console (the unit's journal), then powers off.
  probeVM = pkgs: ip: url: {
    program = "${pkgs.pkgsStatic.busybox}/bin/busybox";
    args = [
      "wget"
      "-T"
      "5"
      "-q"
      "-O"
      "-"
      url
    ];
    network.ip = ip;
    inherit accel;
    memory = 64;
    restart = "no";
  };

  # Python helper for the test scripts.
  pyHelpers = ''
    def main_pid(machine, unit):
        return int(machine.succeed(f"systemctl show -p MainPID --value {unit}").strip())

    def wait_http(machine, url, needle, timeout=180):
        machine.wait_until_succeeds(f"curl -sf --max-time 5 {url} | grep -q {needle}", timeout=timeout)
  '';
}
