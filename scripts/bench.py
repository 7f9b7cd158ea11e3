#!/usr/bin/env python3
"""make bench: what an endpoint pays (binary sizes, start-up, a no-change run and cycle,
against a static Swift hello built in the same run), then time and peak memory of `tether
validate` and `tether plan` on generated policy repositories of 100, 1,000 and 10,000 files,
and of a plan on the bundled example.

Repositories are written with `git fast-import` into .tether-bench/. Each figure is the
median of several runs of the whole process (start-up included); peak memory is the
process's maximum resident set size as the kernel reports it (wait4 rusage).
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, ".tether-bench")


def policy(i):
    # One device in ten matches (shard s0); priorities differ so selected policies never tie.
    return f"""apiVersion: tether/v1
kind: IntegrationPolicy
metadata:
  name: policy-{i:05d}
spec:
  priority: {i}
  selector:
    matchLabels: {{shard: s{i % 10}, env: prod}}
  edr:
    port: {1024 + i % 60000}
    synchronizationPeriod: {1 + i % 60}
    maximumEventsPerHour: {1000 + i}
    telemetry: true
  ndr:
    endpoints:
      - {{address: 10.0.{i // 250 % 250}.{i % 250 + 1}, port: 8081}}
      - {{address: ndr-{i}.example.internal, port: 8082}}
    pingPeriod: {300 + i % 100}
  sandbox:
    queueSize: {512 + i % 1024}
"""


def host_policy(i):
    # Equal priority, one device each: the layout that made validate's conflict check quadratic.
    return f"""apiVersion: tether/v1
kind: IntegrationPolicy
metadata:
  name: host-{i:05d}
spec:
  selector:
    matchLabels: {{host: h-{i}}}
  edr:
    port: {1024 + i % 60000}
"""


def make_repository(count, kind="mixed"):
    path = os.path.join(WORK, f"repo-{count}" if kind == "mixed" else f"repo-{kind}-{count}")
    if os.path.isdir(os.path.join(path, ".git")):
        return path
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["git", "init", "-q", "-b", "main", path], check=True)
    stream = [b"commit refs/heads/main\n", b"committer Bench <bench@tether.invalid> 1764590400 +0000\n"]
    message = f"{count} policies".encode()
    stream.append(b"data %d\n%s\n" % (len(message), message))
    for i in range(count):
        blob = (policy(i) if kind == "mixed" else host_policy(i)).encode()
        stream.append(b"M 100644 inline policies/team-%03d/policy-%05d.yaml\n" % (i // 100, i))
        stream.append(b"data %d\n%s\n" % (len(blob), blob))
    subprocess.run(["git", "fast-import", "--quiet"], input=b"".join(stream), cwd=path, check=True)
    return path


def run_once(command):
    """Wall seconds, CPU seconds (children included), peak RSS (MiB) and exit code of one run."""
    with open(os.path.join(WORK, "stderr.log"), "w+b") as log:  # a file, not a pipe: a long run must not block on it
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code not in (0, 2):
            log.seek(0)
            sys.exit(f"bench: {' '.join(command)} failed:\n{log.read().decode()[-2000:]}")
        return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code


def measure_in_turn(commands, runs):
    """For each command: median wall seconds, median CPU seconds, the largest peak RSS (MiB) and
    the exit codes over `runs` runs. The commands run in turn within each round, so that the
    machine's drift while they are measured touches them alike (goals compare their ratios)."""
    samples = [([], [], [], set()) for _ in commands]
    for _ in range(runs):
        for command, (walls, cpus, peaks, codes) in zip(commands, samples):
            wall, cpu, peak, code = run_once(command)
            walls.append(wall)
            cpus.append(cpu)
            peaks.append(peak)
            codes.add(code)
    return [(statistics.median(walls), statistics.median(cpus), max(peaks), codes) for walls, cpus, peaks, codes in samples]


def measure(command, runs):
    """Median wall seconds, median CPU seconds and the largest peak RSS (MiB) over `runs` runs."""
    return measure_in_turn([command], runs)[0]


FLOOR_SOURCE = """// The floor: the smallest static Swift program that uses Foundation, built as tether is.
import Foundation
print("hello from \\(ProcessInfo.processInfo.processName) at \\(Date().timeIntervalSince1970)")
"""


def build_floor():
    """Builds the static hello (`swift build -c release --static-swift-stdlib`), stripped."""
    folder = os.path.join(WORK, "floor")
    os.makedirs(os.path.join(folder, "Sources", "floor"), exist_ok=True)
    with open(os.path.join(folder, "Package.swift"), "w") as manifest:
        manifest.write('// swift-tools-version:6.0\nimport PackageDescription\n'
                       'let package = Package(name: "floor", targets: [.executableTarget(name: "floor")])\n')
    with open(os.path.join(folder, "Sources", "floor", "main.swift"), "w") as source:
        source.write(FLOOR_SOURCE)
    subprocess.run(["swift", "build", "-c", "release", "--static-swift-stdlib", "--package-path", folder],
                   check=True, stdout=subprocess.DEVNULL)
    stripped = os.path.join(WORK, "endpoint", "floor")
    subprocess.run(["strip", "--strip-unneeded", "-o", stripped, os.path.join(folder, ".build", "release", "floor")], check=True)
    return stripped


def libraries_loaded(command):
    """How many shared libraries the dynamic loader maps for `command` (LD_DEBUG=files)."""
    result = subprocess.run(command, env=dict(os.environ, LD_DEBUG="files"), capture_output=True, text=True)
    return sum(1 for line in result.stderr.splitlines() if "calling init:" in line)


def endpoint_costs(tether, runs):
    """Sizes, start-up and a no-change run of the stripped binaries, beside the floor's."""
    folder = os.path.join(WORK, "endpoint")
    os.makedirs(folder, exist_ok=True)
    binaries = {}
    for name in ("tether", "tether-fetch"):
        binaries[name] = os.path.join(folder, name)  # side by side, as installed: tether finds tether-fetch beside it
        subprocess.run(["strip", "--strip-unneeded", "-o", binaries[name], os.path.join(os.path.dirname(tether), name)], check=True)
    sys.stderr.write("bench: building the floor (a static Swift hello)…\n")
    floor = build_floor()
    example = make_example()
    state = os.path.join(folder, "state")
    shutil.rmtree(state, ignore_errors=True)
    once = [binaries["tether"], "run", "--once", "--no-sensors", "--repo", example, "--state-dir", state, "--log-format", "json"]
    measure(once, 1)  # the first run applies; the runs measured change nothing
    sys.stderr.write("bench: measuring start-up and a no-change run…\n")
    measured = measure_in_turn([[floor], [binaries["tether"], "--version"], once], max(runs, 40))
    (_, floor_cpu, floor_peak, _), (_, version_cpu, version_peak, _), (_, once_cpu, once_peak, _) = measured
    return {
        "floor": floor, "floor_size": os.path.getsize(floor), "floor_cpu": floor_cpu, "floor_peak": floor_peak,
        "tether_size": os.path.getsize(binaries["tether"]), "fetch_size": os.path.getsize(binaries["tether-fetch"]),
        "version_cpu": version_cpu, "version_peak": version_peak, "once_cpu": once_cpu, "once_peak": once_peak,
        "version_libraries": libraries_loaded([binaries["tether"], "--version"]), "once_libraries": libraries_loaded(once),
        "floor_libraries": libraries_loaded([floor]),
    }


def print_endpoint_costs(costs, cycle_cpu):
    """The table issue 24 asks for, with each goal and whether it holds."""
    floor_cpu = costs["floor_cpu"]
    mb = 1e6
    rows = [
        ("tether, stripped", f"{costs['floor_size'] / mb:.1f} MB", f"{costs['tether_size'] / mb:.1f} MB", "≤ 30 MB", costs["tether_size"] <= 30 * mb),
        ("tether-fetch, stripped", "", f"{costs['fetch_size'] / mb:.1f} MB", "≤ 8 MB", costs["fetch_size"] <= 8 * mb),
        ("--version: CPU", f"{floor_cpu * 1000:.2f} ms", f"{costs['version_cpu'] * 1000:.2f} ms (×{costs['version_cpu'] / floor_cpu:.1f})",
         "≤ ×2", costs["version_cpu"] <= 2 * floor_cpu),
        ("--version: peak memory", f"{costs['floor_peak']:.1f} MiB", f"{costs['version_peak']:.1f} MiB", "", None),
        ("--version: shared libraries", f"{costs['floor_libraries']}", f"{costs['version_libraries']}", "", None),
        ("run --once, no change: CPU*", "", f"{costs['once_cpu'] * 1000:.2f} ms (×{costs['once_cpu'] / floor_cpu:.1f})", "≤ ×4", costs["once_cpu"] <= 4 * floor_cpu),
        ("run --once, no change: peak", "", f"{costs['once_peak']:.1f} MiB", "≤ 24 MiB", costs["once_peak"] <= 24),
        ("run --once: shared libraries", "", f"{costs['once_libraries']}", "", None),
    ]
    if cycle_cpu is not None:
        rows.append(("no-change cycle in `run`: CPU", "", f"{cycle_cpu * 1000:.2f} ms", "≤ 1 ms", cycle_cpu <= 0.001))
    print("\nwhat an endpoint pays (stripped binaries as the package ships them; floor: a static Swift hello that uses Foundation;")
    print(f"CPU: the median of whole processes, children included (*); peak memory: the largest. Floor: {costs['floor']})")
    header = f"{'':<30}  {'floor':>10}  {'tether':>22}  {'goal':>9}  met"
    print(header)
    print("-" * len(header))
    for name, floor, value, goal, met in rows:
        print(f"{name:<30}  {floor:>10}  {value:>22}  {goal:>9}  {'' if met is None else ('yes' if met else 'NO')}")


def make_example():
    """A repository made from examples/quickstart, as `make run` uses it."""
    example = os.path.join(WORK, "example")
    if not os.path.isdir(os.path.join(example, ".git")):
        shutil.copytree(os.path.join(ROOT, "examples/quickstart"), example, dirs_exist_ok=True)
        subprocess.run(["git", "init", "-q", "-b", "main", example], check=True)
        subprocess.run(["git", "-C", example, "add", "-A"], check=True)
        subprocess.run(["git", "-C", example, "-c", "user.name=Bench", "-c", "user.email=b@tether.invalid",
                        "commit", "-q", "-m", "example"], check=True)
    return example


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tether", default=os.path.join(ROOT, ".build/release/tether"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--cycles", type=int, default=1000, help="no-change controller cycles to run in one process")
    parser.add_argument("--platform-sim", default=os.path.join(ROOT, ".build/release/platform-sim"))
    parser.add_argument("--idle-seconds", type=int, default=60, help="how long the idle controller is watched")
    parser.add_argument("--short-seconds", type=int, default=20, help="how long 1,000 short programs a second run under tether agent watch")
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    state = os.path.join(WORK, "state")
    os.makedirs(state, exist_ok=True)
    with open(os.path.join(state, "labels"), "w") as labels:
        labels.write("shard=s0\nenv=prod\n")

    costs = endpoint_costs(args.tether, args.runs)
    print(f"tether: {args.tether}; median of {args.runs} runs per figure; whole process, start-up included\n")
    header = f"{'policy files':>12}  {'command':<8}  {'wall':>9}  {'CPU':>9}  {'peak RSS':>9}  {'per file':>9}"
    print(header)
    print("-" * len(header))
    rows = []
    for count in [int(size) for size in args.sizes.split(",")]:
        sys.stderr.write(f"bench: generating and measuring {count} files…\n")
        repository = make_repository(count)
        for command in ("validate", "plan"):
            argv = [args.tether, command, "--repo", repository, "--state-dir", state]
            wall, cpu, peak, _ = measure(argv, args.runs)
            rows.append((count, command, wall))
            print(f"{count:>12}  {command:<8}  {wall * 1000:>7.1f}ms  {cpu * 1000:>7.1f}ms  {peak:>6.1f}MiB  {wall / count * 1e6:>7.1f}µs")

    sys.stderr.write("bench: generating and measuring 20000 per-host files of equal priority…\n")
    repository = make_repository(20000, kind="hosts")
    print()
    for command, extra in (("validate", []), ("plan", ["--label", "host=h-5"])):
        wall, cpu, peak, _ = measure([args.tether, command, "--repo", repository, "--state-dir", state] + extra, args.runs)
        print(f"{'20000 hosts':>12}  {command:<8}  {wall * 1000:>7.1f}ms  {cpu * 1000:>7.1f}ms  {peak:>6.1f}MiB  {wall / 20000 * 1e6:>7.1f}µs")

    # The bundled example, as `make run` uses it (a repository made from examples/quickstart).
    example = make_example()
    wall, cpu, peak, _ = measure([args.tether, "plan", "--repo", example, "--state-dir", os.path.join(WORK, "example-state")], args.runs)
    print(f"\nbundled example (examples/quickstart), tether plan: {wall * 1000:.1f} ms wall, {cpu * 1000:.1f} ms CPU, {peak:.1f} MiB peak RSS")

    plans = {count: wall for count, command, wall in rows if command == "plan"}
    if len(plans) >= 2:
        sizes = sorted(plans)
        small, large = sizes[0], sizes[-1]
        print(f"growth of plan from {small} to {large} files: ×{plans[large] / plans[small]:.1f} time for ×{large / small:.0f} files")
    cycle_cpu = controller_bench(args.tether, args.cycles) if os.path.isdir(os.path.join(WORK, "repo-100")) else None
    idle_bench(args.tether, args.platform_sim, args.idle_seconds)
    short_programs_bench(args.tether, args.short_seconds)
    syscall_tax_bench(args.tether)
    unwatched_writes_bench(args.tether)
    print_endpoint_costs(costs, cycle_cpu)


def sensor_work_folder(name, what):
    """A fresh folder for a benchmark of the sensors, or None (said) when not root: the kernel
    interfaces they use need it."""
    if os.geteuid() != 0:
        print(f"\n{what}: skipped (the kernel interfaces need root)")
        return None
    base = os.path.join(WORK, name)
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    return base


def short_programs_bench(tether, seconds):
    """`tether agent watch --json` (as root: the sensors as tether run runs them) while a loop
    starts about 1,000 short programs a second (a copy of /bin/true with a byte appended, so
    its own file, started with posix_spawn and waited for): the share of their starts reported
    with path and command line, and the CPU of the whole watch process."""
    base = sensor_work_folder("short", "short programs")
    if base is None:
        return
    program = os.path.join(base, "short-program")
    shutil.copyfile("/bin/true", program)
    with open(program, "ab") as appended:
        appended.write(b"tether-bench")
    os.chmod(program, 0o755)
    output = open(os.path.join(base, "watch.jsonl"), "w")
    watch = subprocess.Popen([tether, "agent", "watch", "--json", "--seconds", str(seconds + 4), "--path", base,
                              "--state-dir", os.path.join(base, "state")], stdout=output, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    started = 0
    end = time.monotonic() + seconds
    tick = time.monotonic()
    while time.monotonic() < end:
        for _ in range(10):
            pid = os.posix_spawn(program, [program, "--run", str(started)], {})
            os.waitpid(pid, 0)
            started += 1
        tick += 0.01
        delay = tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    _, status, usage = os.wait4(watch.pid, 0)
    watch.returncode = status
    sources = [line for line in watch.stderr.read().splitlines() if line.startswith("sensor process")]
    output.close()
    complete = seen = 0
    with open(os.path.join(base, "watch.jsonl")) as lines:
        for line in lines:
            event = json.loads(line)
            detail = event.get("detail", {})
            if event.get("type") != "process-start" or "--run" not in detail.get("commandLine", "--run"):
                continue
            if detail.get("path") not in (program, None):
                continue
            seen += 1
            missing = detail.get("missing", "")
            if "path" not in missing and "commandLine" not in missing:
                complete += 1
    cpu = usage.ru_utime + usage.ru_stime
    print(f"\nshort programs: {started} started in {seconds} s ({started / seconds:.0f} /s) under tether agent watch --json"
          f" ({sources[0] if sources else 'process sensor: unknown source'})")
    print(f"  starts seen: {seen} ({seen / max(1, started) * 100:.2f} %); with path and command line: {complete} ({complete / max(1, started) * 100:.2f} %)")
    print(f"  CPU of the watch process: {cpu:.2f} s in {seconds + 4} s = {cpu / (seconds + 4) * 100:.1f} % of one core")


def syscall_tax_bench(tether):
    """What the sensors cost every other process's system calls (a program on sys_exit, as
    syscall tracers use, would add to every one: measured at +150 ns a call on average here).
    `dd bs=1` from /dev/zero to /dev/null (a read and a write per byte, neither in a watched
    folder) is timed without and with `tether agent watch` running; medians of 5 runs, in
    nanoseconds per system call."""
    base = sensor_work_folder("tax", "system-call cost")
    if base is None:
        return
    count = 2_000_000

    def per_call():
        samples = []
        for _ in range(5):
            began = time.perf_counter()
            subprocess.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={count}"], check=True, stderr=subprocess.DEVNULL)
            samples.append((time.perf_counter() - began) / (2 * count) * 1e9)
        return statistics.median(samples)

    without = per_call()
    watch = subprocess.Popen([tether, "agent", "watch", "--json", "--seconds", "60", "--path", base, "--state-dir", os.path.join(base, "state")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    try:
        within = per_call()
    finally:
        watch.terminate()
        sources = [line for line in watch.communicate()[1].splitlines() if line.startswith("sensor file")]
    print(f"\nsystem-call cost for every process (dd bs=1 /dev/zero to /dev/null, {2 * count:,} read and write calls, median of 5):"
          f" {without:.0f} ns a call without the sensors, {within:.0f} ns with them ({within - without:+.0f} ns)"
          f" ({sources[0] if sources else 'file sensor: unknown source'})")


def unwatched_writes_bench(tether, seconds=10):
    """What changes outside the watched folders cost: the file system is marked whole, so each
    file closed after writing on it reaches Tether, which drops it. A writer rewrites 10,000
    files a second in a folder beside the watched one (same file system) under `tether agent
    watch`; its CPU, and how many changes it reported (none should be)."""
    base = sensor_work_folder("unwatched", "unwatched writes")
    if base is None:
        return
    watched, elsewhere = os.path.join(base, "watched"), os.path.join(base, "elsewhere")
    os.makedirs(watched)
    os.makedirs(elsewhere)
    output = open(os.path.join(base, "watch.jsonl"), "w")
    watch = subprocess.Popen([tether, "agent", "watch", "--json", "--seconds", str(seconds + 4), "--path", watched,
                              "--state-dir", os.path.join(base, "state")], stdout=output, stderr=subprocess.DEVNULL)
    time.sleep(2)
    writer = ("import os, sys, time\n"
              "folder, seconds = sys.argv[1], float(sys.argv[2])\n"
              "end = time.monotonic() + seconds; n = 0; tick = time.monotonic()\n"
              "while time.monotonic() < end:\n"
              "    for i in range(100):\n"
              "        with open(os.path.join(folder, 'f%d' % ((n + i) % 10000)), 'w') as f: f.write('x')\n"
              "    n += 100; tick += 0.01\n"
              "    delay = tick - time.monotonic()\n"
              "    if delay > 0: time.sleep(delay)\n"
              "print(n)\n")
    wrote = int(subprocess.run([sys.executable, "-c", writer, elsewhere, str(seconds)], capture_output=True, text=True, check=True).stdout)
    _, _, usage = os.wait4(watch.pid, 0)
    output.close()
    with open(os.path.join(base, "watch.jsonl")) as lines:
        reported = sum(1 for line in lines if '"file-change"' in line)
    cpu = usage.ru_utime + usage.ru_stime
    print(f"\nunwatched writes: {wrote} files written in {seconds} s ({wrote / seconds:.0f} /s) beside the watched folder, same file system:"
          f" {reported} changes reported; CPU of tether agent watch {cpu:.2f} s in {seconds + 4} s = {cpu / (seconds + 4) * 100:.1f} % of one core")


def process_cpu(pid):
    """User + system CPU seconds of a running process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_bench(tether, platform_sim, seconds):
    """A controller with nothing to do: interval 300 s, one connector (EDR, synced with
    platform-sim on loopback every 5 minutes), sensors off. What it costs while it waits."""
    base = os.path.join(WORK, "idle")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    port_socket = socket.socket()
    port_socket.bind(("127.0.0.1", 0))
    port = port_socket.getsockname()[1]
    port_socket.close()
    platform_dir = os.path.join(base, "platform")
    platform = subprocess.Popen([platform_sim, "--port", str(port), "--dir", platform_dir],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    controller = None
    try:
        for _ in range(200):
            if os.path.exists(os.path.join(platform_dir, "server.pem")):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    pass
            time.sleep(0.05)
        repo = os.path.join(base, "repo")
        os.makedirs(os.path.join(repo, "policies"))
        os.makedirs(os.path.join(repo, "certs"))
        shutil.copy(os.path.join(platform_dir, "server.pem"), os.path.join(repo, "certs", "kata.pem"))
        with open(os.path.join(repo, "policies", "idle.yaml"), "w") as document:
            document.write(f"""apiVersion: tether/v1
kind: IntegrationPolicy
metadata:
  name: idle
spec:
  edr:
    enabled: true
    address: 127.0.0.1
    port: {port}
    serverCertificate: certs/kata.pem
    synchronizationPeriod: 5
""")
        subprocess.run(["git", "init", "-q", "-b", "main", repo], check=True)
        subprocess.run(["git", "-C", repo, "add", "-A"], check=True)
        subprocess.run(["git", "-C", repo, "-c", "user.name=Bench", "-c", "user.email=b@tether.invalid", "commit", "-q", "-m", "idle"], check=True)
        state = os.path.join(base, "state")
        log = open(os.path.join(base, "controller.log"), "w")
        controller = subprocess.Popen([tether, "run", "--repo", repo, "--ref", "main", "--state-dir", state, "--interval", "300",
                                       "--no-sensors", "--log-format", "json"], stdout=log, stderr=log)
        received = os.path.join(platform_dir, "received.jsonl")
        deadline = time.time() + 30
        while time.time() < deadline and not (os.path.exists(received) and "/sync" in open(received).read()):
            time.sleep(0.1)
        time.sleep(2)
        before, start = process_cpu(controller.pid), time.perf_counter()
        sys.stderr.write(f"bench: watching an idle controller for {seconds} s…\n")
        time.sleep(seconds)
        used, wall = process_cpu(controller.pid) - before, time.perf_counter() - start
        synced = open(received).read().count("/sync") if os.path.exists(received) else 0
        print(f"\nidle controller (interval 300 s, the EDR connector synced every 5 min, sensors off), watched {wall:.0f} s:")
        print(f"  {used * 1000:.0f} ms CPU = {used / wall * 100:.3f} % of one core ({synced} sync{'s' if synced != 1 else ''} with the platform so far)")
    finally:
        if controller:
            controller.terminate()
            controller.wait()
        platform.kill()
        platform.wait()


class CountingProxy:
    """A TCP forwarder on 127.0.0.1 that counts the bytes flowing each way."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.received = 0  # bytes from the server to the client
        self.sent = 0
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            pair = [0]
            threading.Thread(target=self.pump, args=(client, upstream, "sent", pair), daemon=True).start()
            threading.Thread(target=self.pump, args=(upstream, client, "received", pair), daemon=True).start()

    def pump(self, source, destination, counter, pair):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                setattr(self, counter, getattr(self, counter) + len(data))
                destination.sendall(data)
        except OSError:
            pass
        finally:
            # Each direction shuts both down; the last one out closes them.
            for s in (source, destination):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self.lock:
                pair[0] += 1
                last = pair[0] == 2
            if last:
                source.close()
                destination.close()

    def reset(self):
        self.received = self.sent = 0


def controller_bench(tether, cycles):
    """The controller's steady state against a git daemon on loopback."""
    base = os.path.join(WORK, "remotes")
    bare = os.path.join(base, "policies.git")
    if not os.path.isdir(bare):
        os.makedirs(base, exist_ok=True)
        subprocess.run(["git", "clone", "-q", "--bare", os.path.join(WORK, "repo-100"), bare], check=True)
    port_socket = socket.socket()
    port_socket.bind(("127.0.0.1", 0))
    daemon_port = port_socket.getsockname()[1]
    port_socket.close()
    exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip()
    daemon = subprocess.Popen([exec_path + "/git-daemon", "--export-all", "--reuseaddr", "--listen=127.0.0.1",
                               f"--port={daemon_port}", f"--base-path={base}", base],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", daemon_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        proxy = CountingProxy(daemon_port)
        state = os.path.join(WORK, "controller-state")
        shutil.rmtree(state, ignore_errors=True)
        os.makedirs(state)
        with open(os.path.join(state, "labels"), "w") as labels:
            labels.write("shard=s0\nenv=prod\n")
        url = f"git://127.0.0.1:{proxy.port}/policies.git"
        common = [tether, "run", "--repo", url, "--ref", "main", "--state-dir", state, "--no-connectors", "--log-format", "json"]
        wall, cpu, peak, codes = measure(common + ["--once"], 1)
        first = proxy.received
        proxy.reset()
        wall1, cpu1, peak1, _ = measure(common + ["--once"], 1)
        print(f"\ncontroller against git:// on loopback (100 policy files):")
        print(f"  first cycle (clone, apply):        {wall * 1000:7.1f} ms wall, {cpu * 1000:7.1f} ms CPU, {first} bytes received")
        print(f"  no-change cycle, whole process:    {wall1 * 1000:7.1f} ms wall, {cpu1 * 1000:7.1f} ms CPU, "
              f"{proxy.received} bytes received, {proxy.sent} sent")
        proxy.reset()
        wall, cpu, peak, _ = measure(common + ["--cycles", str(cycles), "--interval", "0", "--jitter", "0"], 1)
        print(f"  {cycles} no-change cycles in one process: {wall / cycles * 1000:7.2f} ms wall and "
              f"{cpu / cycles * 1000:7.2f} ms CPU per cycle; peak RSS after them {peak:.1f} MiB; "
              f"{proxy.received / cycles:.0f} bytes received per cycle")
        return cpu / cycles
    finally:
        daemon.kill()
        daemon.wait()


if __name__ == "__main__":
    main()
