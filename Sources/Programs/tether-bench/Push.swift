import Controller
import Foundation
import Logging
import MQTT
import PolicySource

/// `tether-bench push`: controllers in this one process, each subscribed to one broker
/// topic on its own MQTT connection (`tether run --notify … --bundle-url … --verify head`), none
/// polling. After a line saying all are subscribed, scripts/fleet-sim publishes a change; each
/// controller cycles when its message's spread says so (two worker threads run the cycles due),
/// and the bench prints when each one applied the new commit (seconds since 1970), for the
/// script to set against the moment it published. libmosquitto waits on its sockets with
/// select(), which cannot watch a descriptor numbered 1,024 or more, and each controller here
/// holds a dozen (stores, mirror, pipes): scripts/fleet-sim runs 50 controllers a process.
func runPush(_ arguments: [String]) throws {
    func option(_ name: String) -> String? { benchOption(arguments, name) }
    guard let url = option("--url"), let dir = option("--dir"), let notify = option("--notify"), let bundles = option("--bundle-url"),
          let signers = option("--allowed-signers") else {
        FileHandle.standardError.write(Data("usage: tether-bench push --url URL --dir DIR --notify MQTT-URL --bundle-url URL --allowed-signers FILE [--controllers N] [--spread S] [--seconds S]\n".utf8))
        exit(2)
    }
    let count = Int(option("--controllers") ?? "1000") ?? 1000
    let spread = Double(option("--spread") ?? "10") ?? 10
    let seconds = Double(option("--seconds") ?? "60") ?? 60
    let firstIndex = Int(option("--first-index") ?? "0") ?? 0
    LoggingSystem.bootstrap { _ in SwiftLogNoOpLogHandler() }
    raiseDescriptorLimit()
    let address = try MQTTAddress(parsing: notify)

    var controllers: [Controller] = []
    var listeners: [MQTTClient] = []
    let wakeup = Wakeup()
    for index in 0..<count {
        var configuration = ControllerConfiguration(source: SourceSpec(repository: url, ref: "main", path: "policies"),
                                                    stateDirectory: URL(fileURLWithPath: dir).appending(path: "c\(index)"),
                                                    verify: .head, allowedSigners: signers, interval: 3600, runConnectors: false)
        configuration.runSensors = false
        configuration.notify = NotifySettings(address: address, tls: nil, spread: spread, keepalive: 60, clientID: "tether-fleet-\(firstIndex + index)")
        configuration.bundleURL = bundles
        let controller = Controller(configuration: configuration, logger: Logger(label: "push"))
        // The first cycle clones (from git) and applies: not what is measured.
        let first = controller.runCycle()
        guard first.condition == .ready else { throw FleetError(description: "controller \(index): \(first.message)") }
        controllers.append(controller)
        listeners.append(try controller.notifications!.listen(controller: controller, wanted: "main", logger: Logger(label: "push")) { wakeup.wake() })

    }
    let subscribed = Date().addingTimeInterval(30)
    while controllers.contains(where: { !$0.notifications!.isConnected }) && Date() < subscribed { Thread.sleep(forTimeInterval: 0.05) }
    let connected = controllers.filter { $0.notifications!.isConnected }.count
    print("{\"event\":\"ready\",\"subscribed\":\(connected)}")
    fflush(nil)

    let before = controllers.map { $0.metrics.lastAppliedRevision }
    let schedule = PushSchedule(count: count)
    let end = Date().addingTimeInterval(seconds)
    let fleet = controllers
    let group = DispatchGroup()
    for _ in 0..<2 {
        group.enter()
        Thread {
            while Date() < end && !schedule.finished {
                guard let index = schedule.take(dueIn: fleet) else {
                    wakeup.wait(until: min(end, Date().addingTimeInterval(0.05)))
                    continue
                }
                let result = fleet[index].runCycle()
                let applied = result.condition == .ready && result.revision != nil && result.revision != before[index]
                schedule.done(index, applied: applied ? Date().timeIntervalSince1970 : nil, failed: result.condition != .ready,
                              fetched: result.fetched)
            }
            group.leave()
        }.start()
    }
    group.wait()
    listeners.forEach { $0.stop() }
    let times = schedule.appliedAt.compactMap { $0 }.sorted()
    print("{\"event\":\"done\",\"controllers\":\(count),\"subscribed\":\(connected),\"applied\":\(times.count),\"cycles\":\(schedule.cycles),\"failed\":\(schedule.failed),\"gitFetches\":\(schedule.fetches),\"appliedAt\":[\(times.map { String(format: "%.3f", $0) }.joined(separator: ","))]}")
}

/// Which controllers' notified cycles are due, and what they came to; shared by the worker threads.
final class PushSchedule: @unchecked Sendable {
    private let lock = NSLock()
    private var running: Set<Int> = []
    private(set) var appliedAt: [Double?]
    private(set) var cycles = 0
    private(set) var failed = 0
    private(set) var fetches = 0

    init(count: Int) { appliedAt = Array(repeating: nil, count: count) }

    var finished: Bool { lock.withLock { !appliedAt.contains(nil) } }

    /// A controller whose message made a cycle due, not running on the other thread.
    func take(dueIn controllers: [Controller]) -> Int? {
        let now = Date()
        return lock.withLock {
            guard let index = controllers.indices.first(where: { !running.contains($0) && (controllers[$0].notifications?.due.map { $0 <= now } ?? false) })
            else { return nil }
            running.insert(index)
            return index
        }
    }

    func done(_ index: Int, applied: Double?, failed: Bool, fetched: Bool) {
        lock.withLock {
            running.remove(index)
            cycles += 1
            if failed { self.failed += 1 }
            if fetched { fetches += 1 }
            if let applied, appliedAt[index] == nil { appliedAt[index] = applied }
        }
    }
}
