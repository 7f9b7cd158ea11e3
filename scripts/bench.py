#!/usr/bin/env python3
"""make bench: time and peak memory of `tether validate` and `tether plan` on generated
policy repositories of 100, 1,000 and 10,000 files, and of a plan on the bundled example.

Repositories are written with `git fast-import` into .tether-bench/. Each figure is the
median of several runs of the whole process (start-up included); peak memory is the
process's maximum resident set size as the kernel reports it (wait4 rusage).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
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


def make_repository(count):
    path = os.path.join(WORK, f"repo-{count}")
    if os.path.isdir(os.path.join(path, ".git")):
        return path
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["git", "init", "-q", "-b", "main", path], check=True)
    stream = [b"commit refs/heads/main\n", b"committer Bench <bench@tether.invalid> 1764590400 +0000\n"]
    message = f"{count} policies".encode()
    stream.append(b"data %d\n%s\n" % (len(message), message))
    for i in range(count):
        blob = policy(i).encode()
        stream.append(b"M 100644 inline policies/team-%03d/policy-%05d.yaml\n" % (i // 100, i))
        stream.append(b"data %d\n%s\n" % (len(blob), blob))
    subprocess.run(["git", "fast-import", "--quiet"], input=b"".join(stream), cwd=path, check=True)
    return path


def measure(command, runs):
    """Median wall seconds, median CPU seconds and the largest peak RSS (MiB) over `runs` runs."""
    walls, cpus, peaks, codes = [], [], [], set()
    for _ in range(runs):
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        walls.append(time.perf_counter() - start)
        cpus.append(usage.ru_utime + usage.ru_stime)
        peaks.append(usage.ru_maxrss / 1024)
        codes.add(os.waitstatus_to_exitcode(status))
        if process.stderr:
            error = process.stderr.read().decode()
            process.stderr.close()
            if codes - {0, 2}:
                sys.exit(f"bench: {' '.join(command)} failed:\n{error}")
    return statistics.median(walls), statistics.median(cpus), max(peaks), codes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tether", default=os.path.join(ROOT, ".build/release/tether"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="100,1000,10000")
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    state = os.path.join(WORK, "state")
    os.makedirs(state, exist_ok=True)
    with open(os.path.join(state, "labels"), "w") as labels:
        labels.write("shard=s0\nenv=prod\n")

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

    # The bundled example, as `make run` uses it (a repository made from examples/quickstart).
    example = os.path.join(WORK, "example")
    if not os.path.isdir(os.path.join(example, ".git")):
        shutil.copytree(os.path.join(ROOT, "examples/quickstart"), example, dirs_exist_ok=True)
        subprocess.run(["git", "init", "-q", "-b", "main", example], check=True)
        subprocess.run(["git", "-C", example, "add", "-A"], check=True)
        subprocess.run(["git", "-C", example, "-c", "user.name=Bench", "-c", "user.email=b@tether.invalid",
                        "commit", "-q", "-m", "example"], check=True)
    wall, cpu, peak, _ = measure([args.tether, "plan", "--repo", example, "--state-dir", os.path.join(WORK, "example-state")], args.runs)
    print(f"\nbundled example (examples/quickstart), tether plan: {wall * 1000:.1f} ms wall, {cpu * 1000:.1f} ms CPU, {peak:.1f} MiB peak RSS")

    plans = {count: wall for count, command, wall in rows if command == "plan"}
    if len(plans) >= 2:
        sizes = sorted(plans)
        small, large = sizes[0], sizes[-1]
        print(f"growth of plan from {small} to {large} files: ×{plans[large] / plans[small]:.1f} time for ×{large / small:.0f} files")


if __name__ == "__main__":
    main()
