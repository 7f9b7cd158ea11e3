#!/usr/bin/env python3
"""Measures the controller's health endpoint under hostile local clients: 300 clients that send
half a request and reconnect as fast as they are dropped, while /healthz is probed 60 times,
then four requests that declare 256 MiB bodies. Prints probes answered, threads and RSS.

    python3 scripts/hostile-probes.py [path/to/tether]     (default .build/debug/tether)
"""
import os, socket, subprocess, sys, tempfile, time
tether = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".build/debug/tether")
work = tempfile.mkdtemp(prefix="tether-probes-")
repo, state = os.path.join(work, "repo"), os.path.join(work, "state")
os.mkdir(state)
subprocess.run([tether, "init", repo], check=True, stdout=subprocess.DEVNULL)
subprocess.run(["git", "-C", repo, "add", "-A"], check=True)
subprocess.run(["git", "-C", repo, "-c", "user.name=probe", "-c", "user.email=probe@localhost", "commit", "-qm", "init"], check=True)
listener = socket.socket(); listener.bind(("127.0.0.1", 0)); port = listener.getsockname()[1]; listener.close()
p = subprocess.Popen([tether, "run", "--repo", repo, "--state-dir", state,
                      "--metrics-address", f"127.0.0.1:{port}", "--interval", "600"], stderr=subprocess.DEVNULL)
for _ in range(100):
    try: socket.create_connection(("127.0.0.1", port), timeout=1).close(); break
    except OSError: time.sleep(0.05)
def rss(): return int(open(f"/proc/{p.pid}/status").read().split("VmRSS:")[1].split()[0]) // 1024
def threads(): return int(open(f"/proc/{p.pid}/status").read().split("Threads:")[1].split()[0])
def probe():
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    try: return s.recv(100).startswith(b"HTTP/1.1 200")
    except Exception: return False
    finally: s.close()
def slow_client():
    n = socket.create_connection(("127.0.0.1", port)); n.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"); return n
print("rss start MB", rss())
slow = [slow_client() for _ in range(300)]
ok = 0
for i in range(60):
    ok += probe()
    for j, s in enumerate(slow):  # the slow clients reconnect as fast as they are dropped
        try: s.send(b"X")
        except Exception:
            try: slow[j] = slow_client()
            except Exception: pass
    time.sleep(0.25)
print("healthz answered", ok, "of 60 with 300 slow clients reconnecting; threads", threads())
for _ in range(4):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 268435456\r\n\r\n")
    sent = 0
    try:
        while sent < 268435456: sent += s.send(b"\0" * 1048576)
    except Exception: pass
    try: reply = s.recv(40)
    except Exception as e: reply = repr(e).encode()
    print("sent before close MB", sent // 1048576, "reply", reply)
    s.close()
print("rss end MB", rss())
p.terminate(); p.wait()
subprocess.run(["rm", "-rf", work])
