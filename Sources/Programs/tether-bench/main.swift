import ConnectorCore
import EmbeddedAgent
import Foundation
import IntegrationModel
import PlatformSim
import Sensors
import WireFormat

// make bench, part two: telemetry through EDR to the local platform over mutual TLS, and the
// durable queue's write rate. Everything on 127.0.0.1, in one process; prints figures.

// `tether-bench fleet …` and `tether-bench push …`: the fleet simulations behind scripts/fleet-sim
// (Fleet.swift, Push.swift).
if CommandLine.arguments.dropFirst().first == "fleet" {
    try runFleet(Array(CommandLine.arguments.dropFirst(2)))
    exit(0)
}
if CommandLine.arguments.dropFirst().first == "push" {
    try runPush(Array(CommandLine.arguments.dropFirst(2)))
    exit(0)
}

func measure(_ body: () throws -> Void) rethrows -> Double {
    let start = Date()
    try body()
    return Date().timeIntervalSince(start)
}

func rate(_ count: Int, _ seconds: Double) -> String {
    String(format: "%9.0f /s  (%d in %.2f s)", Double(count) / seconds, count, seconds)
}

let directory = FileManager.default.temporaryDirectory.appending(path: "tether-bench-\(UUID().uuidString.prefix(8))")
defer { try? FileManager.default.removeItem(at: directory) }
let pki = try PlatformPKI.create()
let platform = try PlatformSimulator(pki: pki, requireClientCertificate: true)
let agent = try Agent(stateDirectory: directory.path)
let runtime = try ConnectorRuntime(agent: agent, queueLimit: 1_000_000)
try agent.transaction(actor: "bench") {
    try agent.set(SettingPath.edr.port, to: .int(platform.port))
    try agent.set(SettingPath.edr.requestCountLimits, to: .bool(false))
    try agent.addServerCertificate(.edr, bytes: Array(pki.serverCertificatePEM.utf8), source: "bench")
    try Data("pw\n".utf8).write(to: directory.appending(path: "client.pass"))
    try agent.addClientCertificate(.edr, pkcs12: try pki.issueClient(commonName: "bench", password: "pw"), password: .file("client.pass"), source: "bench")
    try agent.set(SettingPath.edr.mutualAuthentication, to: .bool(true))
    try agent.start(.edr)
}

func events(_ count: Int) -> [TelemetryEvent] {
    (0..<count).map { TelemetryEvent(type: EventType.sensorTypes[$0 % 6], detail: ["path": .text("/usr/bin/tool-\($0 % 97)"), "pid": DetailValue($0)]) }
}

print("Connector core, on 127.0.0.1 (platform-sim in-process, mutual TLS, EC P-256):\n")
let single = events(2_000)
let one = try measure { for event in single { try runtime.record([event]) } }
print("queue: one event per transaction      " + rate(single.count, one))
let batch = events(100_000)
let many = try measure { try runtime.record(batch) }
print("queue: 100,000 events in one call     " + rate(batch.count, many))
let depth = single.count + batch.count
var outcome: SyncOutcome?
let send = measure { outcome = runtime.sync(.edr) }
guard let outcome, outcome.succeeded else { fatalError("sync failed: \(outcome?.summary ?? "")") }
print("EDR telemetry sent over mutual TLS    " + rate(depth, send) + "  [\(outcome.summary)]")
let events = platform.events()
print("platform received                     \(events.count) events, in order: \(events.map(\.seq) == events.map(\.seq).sorted())")
let syncs = 200
let syncTime = measure { for _ in 0..<syncs { _ = runtime.sync(.edr) } }
print(String(format: "EDR sync round trips (new TLS session each) %7.1f ms each (%d syncs)", syncTime / Double(syncs) * 1000, syncs))

// make bench, part three: the sensors under load. A shell loop runs about 1,000 programs a
// second and a writer about 10,000 file writes a second (both separate processes: the sensors
// never report Tether's own pid) for `seconds`, while the sensors run as `tether run` runs them
// and queue what they see. CPU is this process's (getrusage), which while the main thread
// sleeps is the sensors' threads and the one that writes the queue.

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// Starts `/bin/sh -c script`, its standard output in a file.
func start(_ script: String, output: URL) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", script]
    _ = FileManager.default.createFile(atPath: output.path, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: output)
    try process.run()
    return process
}

let seconds = Int(ProcessInfo.processInfo.environment["TETHER_BENCH_SENSOR_SECONDS"] ?? "10") ?? 10
// Outside the state directory: the sensors never report the agent's own files.
let watched = FileManager.default.temporaryDirectory.appending(path: "tether-bench-watched-\(UUID().uuidString.prefix(8))")
try FileManager.default.createDirectory(at: watched, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: watched) }
try agent.transaction(actor: "bench") {
    try agent.set(SettingPath.edr.fileMonitoringPaths, to: .paths([watched.path]))
}

/// CPU seconds of each of this process's threads, by name (/proc/self/task/*/stat).
func threadCPU() -> [String: Double] {
    var result: [String: Double] = [:]
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    for task in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? [] {
        guard let stat = try? String(contentsOfFile: "/proc/self/task/\(task)/stat", encoding: .utf8),
              let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") else { continue }
        let name = String(stat[stat.index(after: open)..<close])
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
        result[name, default: 0] += (user + system) / ticks
    }
    return result
}

/// One run of the load with the sensors on; `limits` turns the hourly count limits on (the
/// defaults: 3,000 events an hour, 15 % for one type) or off (every event is queued).
@MainActor func sensorRun(limits: Bool) throws {
    try agent.transaction(actor: "bench") { try agent.set(SettingPath.edr.requestCountLimits, to: .bool(limits)) }
    let sensorRuntime = try ConnectorRuntime(agent: agent, queueLimit: 10_000_000)
    let supervisor = SensorSupervisor(runtime: sensorRuntime)
    supervisor.start()
    while supervisor.statuses.isEmpty { Thread.sleep(forTimeInterval: 0.1) }
    Thread.sleep(forTimeInterval: 1)
    let before = (seen: try sensorRuntime.telemetryCounts(nil), queued: try sensorRuntime.telemetryCounts(.edr),
                  process: try sensorRuntime.kernelCounts(.process), file: try sensorRuntime.kernelCounts(.file))
    let threadsBefore = threadCPU()
    let cpuBefore = cpuSeconds()
    let wallBefore = Date()
    // 1,000 programs a second: a bash loop of /bin/true, paced by its own clock, counted by itself.
    let programs = try start("""
        exec bash -c 'start=${EPOCHREALTIME/./}; n=0; total=$(( \(seconds) * 1000 ))
        while [ $n -lt $total ]; do
          /bin/true; n=$((n+1))
          if [ $((n % 100)) -eq 0 ]; then
            ahead=$(( n * 1000 - (${EPOCHREALTIME/./} - start) ))
            [ $ahead -gt 0 ] && sleep 0.$(printf %06d $ahead)
          fi
        done; echo $n'
        """, output: directory.appending(path: "programs.out"))
    // 10,000 file writes a second: 10,000 files rewritten in turn (each once a second, so the
    // kernel has no repeat to merge), paced every 10 ms.
    let writes = try start("""
        exec python3 -c '
        import os, sys, time
        folder, seconds = sys.argv[1], float(sys.argv[2])
        end = time.monotonic() + seconds; n = 0; tick = time.monotonic()
        while time.monotonic() < end:
            for i in range(100):
                with open(os.path.join(folder, "f%d" % ((n + i) % 10000)), "w") as f: f.write("x")
            n += 100; tick += 0.01
            delay = tick - time.monotonic()
            if delay > 0: time.sleep(delay)
        print(n)' \(watched.path) \(seconds)
        """, output: directory.appending(path: "writes.out"))
    programs.waitUntilExit()
    writes.waitUntilExit()
    Thread.sleep(forTimeInterval: 1.5)  // the last records drained into the queue
    let wall = Date().timeIntervalSince(wallBefore)
    let cpu = cpuSeconds() - cpuBefore
    let threadsAfter = threadCPU()
    supervisor.stop()
    let after = (seen: try sensorRuntime.telemetryCounts(nil), queued: try sensorRuntime.telemetryCounts(.edr),
                 process: try sensorRuntime.kernelCounts(.process), file: try sensorRuntime.kernelCounts(.file))
    func delta(_ type: String, _ outcome: TelemetryOutcome, _ pair: (TelemetryCounts, TelemetryCounts)) -> Int {
        pair.1.count(type, outcome) - pair.0.count(type, outcome)
    }
    let ran = Int((try? String(contentsOf: directory.appending(path: "programs.out"), encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
    let wrote = Int((try? String(contentsOf: directory.appending(path: "writes.out"), encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
    let seenPair = (before.seen, after.seen), queuedPair = (before.queued, after.queued)
    let queuedTotal = ["process-start", "process-stop", "network-connection", "file-change"].map { delta($0, .queued, queuedPair) }.reduce(0, +)
    print(limits ? "\nwith the default hourly limits (3,000 events an hour, 15 % for one type):" : "\nwithout limits (every event is queued):")
    print(String(format: "load: %d programs (%.0f /s) by the loop, %d file writes (%.0f /s)", ran, Double(ran) / Double(seconds), wrote, Double(wrote) / Double(seconds)))
    print(String(format: "CPU of the sensors and the queue writer: %.2f s in %.1f s = %.1f%% of one core", cpu, wall, cpu / wall * 100))
    for (name, after) in threadsAfter.sorted(by: { $0.key < $1.key }) where name.hasPrefix("sensor:") {
        let used = after - (threadsBefore[name] ?? 0)
        print(String(format: "  thread %-16@ %5.2f s = %4.1f%% of one core", name as NSString, used, used / wall * 100))
    }
    print("process: the kernel reported \(after.process.reported - before.process.reported) fork/exec/exit records (\(after.process.overflows - before.process.overflows) overflows); "
          + "seen \(delta("process-start", .seen, seenPair)) starts and \(delta("process-stop", .seen, seenPair)) stops")
    print("file:    the kernel reported \(after.file.reported - before.file.reported) records (\(after.file.overflows - before.file.overflows) overflows); "
          + "seen \(delta("file-change", .seen, seenPair)) changes under the watched folder")
    print("buffer:  \(["process-start", "process-stop", "file-change", "network-connection"].map { delta($0, .bufferDropped, seenPair) }.reduce(0, +)) events dropped (full)")
    let throttled = ["process-start", "process-stop", "file-change", "network-connection"].map { delta($0, .throttled, queuedPair) }.reduce(0, +)
    if throttled > 0 { print("limits:  \(throttled) events over this hour's budget counted as throttled when seen, not written") }
    print(String(format: "queue:   %d events written, %.0f /s", queuedTotal, Double(queuedTotal) / wall))
}

print("\nSensors under load for \(seconds) s: a bash loop of /bin/true and a writer of small files (separate processes)")
try sensorRun(limits: true)
try sensorRun(limits: false)

// make bench, part four: what execution prevention adds to every exec. A copy of /bin/true
// (bytes appended: its own hash) is started with posix_spawn and waited for, over and over:
// without the guard, with it on every file system and the file's hash cached, and with it on
// fresh copies (each a new inode, so each is read and hashed). Medians and 99th percentiles.

/// Wall time of one posix_spawn + waitpid of `path`, in microseconds.
func execMicroseconds(_ path: String) -> Double {
    var pid: pid_t = 0
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
    defer { free(argv[0]) }
    let began = DispatchTime.now().uptimeNanoseconds
    guard posix_spawn(&pid, path, nil, nil, argv, environ) == 0 else { return .nan }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return Double(DispatchTime.now().uptimeNanoseconds - began) / 1000
}

func percentiles(_ samples: [Double]) -> (median: Double, p99: Double) {
    let sorted = samples.filter { !$0.isNaN }.sorted()
    guard !sorted.isEmpty else { return (.nan, .nan) }
    return (sorted[sorted.count / 2], sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))])
}

let execFolder = FileManager.default.temporaryDirectory.appending(path: "tether-bench-exec-\(UUID().uuidString.prefix(8))")
try FileManager.default.createDirectory(at: execFolder, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: execFolder) }
let trueBytes = try Data(contentsOf: URL(fileURLWithPath: "/bin/true")) + Data("tether-bench exec copy\n".utf8)
func copyOfTrue(_ name: String) throws -> String {
    let path = execFolder.appending(path: name).path
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
    guard fd >= 0 else { throw CocoaError(.fileWriteUnknown) }
    _ = trueBytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
    return path
}
let cachedCopy = try copyOfTrue("true-copy")
let runs = 2_000
let fresh = try (0..<500).map { try copyOfTrue("fresh-\($0)") }
// The guard neither caches nor ignores a file changed within the last second: let them settle.
Thread.sleep(forTimeInterval: 1.1)
print("\nExecution prevention: a copy of /bin/true started and waited for (posix_spawn + waitpid), µs")
for _ in 0..<100 { _ = execMicroseconds(cachedCopy) }
let benchList = PreventionList()
benchList.replace(sha256: [String(repeating: "0", count: 64)], md5: [])
do {
    // Without and with the guard in alternating blocks, so that drift of the machine falls on both.
    var withoutSamples: [Double] = [], knownSamples: [Double] = []
    for _ in 0..<10 {
        withoutSamples += (0..<(runs / 10)).map { _ in execMicroseconds(cachedCopy) }
        let executionGuard = try ExecutionGuard(scope: .fileSystems, prevention: benchList, buffer: nil)
        _ = execMicroseconds(cachedCopy)
        knownSamples += (0..<(runs / 10)).map { _ in execMicroseconds(cachedCopy) }
        executionGuard.stop()
    }
    let without = percentiles(withoutSamples), known = percentiles(knownSamples)
    let executionGuard = try ExecutionGuard(scope: .fileSystems, prevention: benchList, buffer: nil)
    defer { executionGuard.stop() }
    _ = execMicroseconds(cachedCopy)
    // Every exec asked again (the kernel's ignore marks dropped first, outside the timing), its hash cached.
    let asked = percentiles((0..<runs).map { _ in
        executionGuard.forgetAllowed()
        return execMicroseconds(cachedCopy)
    })
    let uncached = percentiles(fresh.map(execMicroseconds))
    print(String(format: "  no guard                       median %7.1f   p99 %7.1f   (%d runs, in blocks alternating with the next line)", without.median, without.p99, runs))
    print(String(format: "  guard, file allowed before     median %7.1f   p99 %7.1f   added: median %+6.1f   (the kernel no longer asks: the cached case)",
                 known.median, known.p99, known.median - without.median))
    print(String(format: "  guard, asked, hash cached      median %7.1f   p99 %7.1f   added: median %+6.1f   (program and loader asked: two answers)",
                 asked.median, asked.p99, asked.median - without.median))
    print(String(format: "  guard, each file new (hashed)  median %7.1f   p99 %7.1f   added: median %+6.1f   (%d copies of %d bytes)",
                 uncached.median, uncached.p99, uncached.median - without.median, fresh.count, trueBytes.count))
    print("  \(executionGuard.source); this guard's decisions: \(executionGuard.counts)")
} catch {
    print("  guard not measured: \(error)")
}
