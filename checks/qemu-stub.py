# STAND-IN FOR QEMU, for checks/wiring.nix only (hosts without nested
# virtualisation): installed as bin/qemu-system-<arch> of a fake qemuPackage,
# so the helper execs it exactly as it would exec QEMU. It boots nothing. It
# does the parts of QEMU the units and the helper see:
#   - writes its PID to the -pidfile path;
#   - serves QMP on the `-chardev socket,id=qmp,path=...,server=on` socket
#     (or `-qmp unix:PATH,server=on`):
#     greeting, qmp_capabilities, query-status; system_powerdown ends it with
#     status 1 (what QEMU's isa-debug-exit gives for a program that exited 0,
#     docs/helper.md), quit ends it with status 0;
#   - SIGTERM ends it with status 0, as QEMU does;
#   - prints one line per event to stdout (the unit's journal).
# The first line of the installed file is the python3 shebang (checks/default.nix).
import json
import os
import re
import signal
import socket
import sys


def log(msg):
    print(f"qemu-stub: {msg}", flush=True)


def opt_value(opts, key):
    # QemuOpts: key=value pairs separated by ',', a literal ',' is doubled.
    for part in re.findall(r"(?:[^,]|,,)+", opts):
        if part.startswith(key + "="):
            return part[len(key) + 1 :].replace(",,", ",")
    return None


def main(argv):
    pidfile = qmp_path = name = None
    i = 0
    while i < len(argv):
        a = argv[i]
        v = argv[i + 1] if i + 1 < len(argv) else ""
        if a == "-pidfile":
            pidfile = v
        elif a == "-chardev" and "id=qmp" in v.split(","):
            qmp_path = opt_value(v, "path")
        elif a == "-qmp" and v.startswith("unix:"):
            qmp_path = re.findall(r"(?:[^,]|,,)+", v[len("unix:") :])[0].replace(",,", ",")
        elif a == "-name":
            name = v.split(",")[0]
        i += 1
    if qmp_path is None:
        log("no -chardev socket,id=qmp,path=...")
        return 2

    signal.signal(signal.SIGTERM, lambda *_: (log("SIGTERM, exiting 0"), sys.exit(0)))
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(qmp_path):
        os.unlink(qmp_path)
    srv.bind(qmp_path)
    srv.listen(4)
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    log(f"running {name}, uid {os.getuid()}, QMP on {qmp_path}")

    while True:
        conn, _ = srv.accept()
        f = conn.makefile("rwb", buffering=0)

        def send(obj):
            f.write((json.dumps(obj) + "\r\n").encode())

        send({"QMP": {"version": {"qemu": {"major": 0, "minor": 0, "micro": 0}, "package": "qemu-stub"}, "capabilities": []}})
        for line in f:
            try:
                cmd = json.loads(line).get("execute")
            except ValueError:
                send({"error": {"class": "GenericError", "desc": "bad JSON"}})
                continue
            log(f"QMP {cmd}")
            if cmd in ("qmp_capabilities",):
                send({"return": {}})
            elif cmd == "query-status":
                send({"return": {"status": "running", "running": True}})
            elif cmd == "system_powerdown":
                send({"return": {}})
                send({"event": "POWERDOWN", "data": {}, "timestamp": {"seconds": 0, "microseconds": 0}})
                log("powered down (as if the program exited 0): exiting 1")
                return 1
            elif cmd == "quit":
                send({"return": {}})
                log("quit: exiting 0")
                return 0
            else:
                send({"error": {"class": "CommandNotFound", "desc": f"The command {cmd} has not been found"}})
        conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
