import Controller
import Foundation
import Logging
import PolicySource

/// `tether-bench fleet`: many controllers in this one process (a thousand separate processes
/// would need some 35 GB here) polling one git host, each on its own schedule: every
/// `--interval` seconds with ±10 % jitter, as `tether run` does. Prints one JSON line: cycles
/// made, failures, how late cycles started, and how evenly they spread over time. scripts/fleet-sim
/// measures the host's side (CPU, bytes) around it.
func runFleet(_ arguments: [String]) throws {
    func option(_ name: String) -> String? { benchOption(arguments, name) }
    guard let url = option("--url"), let dir = option("--dir") else {
        FileHandle.standardError.write(Data("usage: tether-bench fleet --url URL --dir DIR [--controllers N] [--seconds S] [--interval S] [--probe-url URL]\n".utf8))
        exit(2)
    }
    let count = Int(option("--controllers") ?? "100") ?? 100
    let seconds = Double(option("--seconds") ?? "30") ?? 30
    let interval = Double(option("--interval") ?? "1") ?? 1
    LoggingSystem.bootstrap { _ in SwiftLogNoOpLogHandler() }
    raiseDescriptorLimit()

    var controllers: [Controller] = []
    for index in 0..<count {
        var configuration = ControllerConfiguration(source: SourceSpec(repository: url, ref: "main", path: "policies"),
                                                    stateDirectory: URL(fileURLWithPath: dir).appending(path: "c\(index)"),
                                                    interval: interval, jitter: 0.1, runConnectors: false)
        configuration.runSensors = false
        configuration.probeURL = option("--probe-url")
        let controller = Controller(configuration: configuration, logger: Logger(label: "fleet"))
        // The first cycle clones and applies: not what is measured.
        let first = controller.runCycle()
        guard first.condition == .ready else { throw FleetError(description: "controller \(index): \(first.message)") }
        controllers.append(controller)
        if (index + 1) % 100 == 0 { FileHandle.standardError.write(Data("fleet: \(index + 1) controllers ready\n".utf8)) }
    }
    print("{\"event\":\"ready\"}")
    fflush(nil)

    // Each controller's next start, spread at random over one interval to begin with.
    let start = Date().timeIntervalSince1970
    let state = FleetSchedule(due: (0..<count).map { _ in start + Double.random(in: 0..<interval) })
    let end = start + seconds
    let fleet = controllers
    let group = DispatchGroup()
    for _ in 0..<2 {
        group.enter()
        Thread {
            while let (next, when) = state.take(before: end) {
                let wait = when - Date().timeIntervalSince1970
                if wait > 0 { Thread.sleep(forTimeInterval: wait) }
                let began = Date().timeIntervalSince1970
                let result = fleet[next].runCycle()
                state.done(next, due: when, began: began - start, late: began - when, failed: result.condition != .ready,
                           again: when + interval * Double.random(in: 0.9...1.1))
            }
            group.leave()
        }.start()
    }
    group.wait()
    var lateness = state.lateness
    let starts = state.starts
    let cycles = state.cycles, failed = state.failed
    lateness.sort()
    // A fleet the machine cannot keep up with runs late: rates and spread are over the time it took.
    let elapsed = max(seconds, (starts.max() ?? 0) + 0.001)
    // Starts per 100 ms: the busiest tenth of a second against the average one.
    var buckets = [Int](repeating: 0, count: Int(elapsed * 10) + 1)
    for at in starts where at >= 0 { buckets[min(buckets.count - 1, Int(at * 10))] += 1 }
    let mean = Double(cycles) / Double(buckets.count)
    func percentile(_ p: Double) -> Double { lateness.isEmpty ? 0 : lateness[min(lateness.count - 1, Int(Double(lateness.count) * p))] }
    print(String(format: "{\"event\":\"done\",\"controllers\":%d,\"seconds\":%.1f,\"cycles\":%d,\"failed\":%d,\"cyclesPerSecond\":%.1f,\"wanted\":%.1f,\"lateP50\":%.3f,\"lateP95\":%.3f,\"busiest100msOverMean\":%.2f}",
                 count, elapsed, cycles, failed, Double(cycles) / elapsed, Double(count) / interval, percentile(0.5), percentile(0.95), (buckets.max().map(Double.init) ?? 0) / max(mean, 0.001)))
}

/// The value after `--name` in a bench command's arguments.
func benchOption(_ arguments: [String], _ name: String) -> String? {
    arguments.firstIndex(of: name).flatMap { $0 + 1 < arguments.count ? arguments[$0 + 1] : nil }
}

/// Three stores and a mirror a controller: more descriptors than the default 1,024.
func raiseDescriptorLimit() {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

struct FleetError: Error, CustomStringConvertible {
    let description: String
}

/// When each controller cycles next, and what the cycles came to; shared by the worker threads.
final class FleetSchedule: @unchecked Sendable {
    private let lock = NSLock()
    private var due: [Double]
    private(set) var cycles = 0
    private(set) var failed = 0
    private(set) var lateness: [Double] = []
    private(set) var starts: [Double] = []

    init(due: [Double]) { self.due = due }

    /// The controller due first (taken until `done`), unless it is due after `end`.
    func take(before end: Double) -> (Int, Double)? {
        lock.withLock {
            guard let next = due.indices.min(by: { due[$0] < due[$1] }), due[next] < end else { return nil }
            let when = due[next]
            due[next] = .infinity
            return (next, when)
        }
    }

    func done(_ index: Int, due when: Double, began: Double, late: Double, failed: Bool, again: Double) {
        lock.withLock {
            cycles += 1
            if failed { self.failed += 1 }
            lateness.append(late)
            starts.append(began)
            due[index] = again
        }
    }
}
