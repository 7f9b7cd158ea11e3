import AgentInterface
import EmbeddedAgent
import Dispatch
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import IntegrationModel
import Sensors
import X509
import Primitives

/// Runs the sensors while telemetry flows and feeds what they see into the telemetry queue
/// (docs/architecture.md, "Sensors"). Every `checkInterval` it reads the agent's settings:
/// the sensors run while EDR or NDR telemetry flows by the rules (task running, behaviour
/// detection on, and for EDR `telemetry` on), restart when the watched folders change, and
/// stop when git turns any of those off. EDR receives every event type; NDR the network ones.
/// It has its own thread, so a long controller cycle never holds the sensors back (their buffer
/// is bounded; overflow is counted by type); it shares the connectors' runtime and its store
/// connections, which serialize transactions between threads.
package final class SensorSupervisor: @unchecked Sendable {
    private let runtime: ConnectorRuntime
    private let buffer: SensorBuffer
    private let prevention = PreventionList()
    private let kernelInterfaces: Bool
    private let checkInterval: TimeInterval
    private let lock = Lock()
    private var sensors: SensorSet?
    /// Where execution prevention checks executions before they run (tests: one directory).
    private let preventionScope: ExecutionGuard.Scope
    /// Denies listed programs before they run, while a prevention list is in force.
    private var executionGuard: ExecutionGuard?
    /// Why permission events could not be used (said once; the process sensor kills instead).
    private var guardRefusal: String?
    private var lastGuardCounts = ExecutionGuard.Counts()
    private var lastKernelCounts: [SensorKind: (reported: Int, overflows: Int)] = [:]
    private var started = false
    private var stopping = false
    private let finished = DispatchSemaphore(value: 0)
    /// A problem reported once (the agent's store unreadable), not every check.
    private var lastProblem: String?
    /// The integrations whose telemetry flowed at the last check: where the last events go at stop.
    private var lastFlowing: [Integration] = []
    /// The settings at the last check (the hourly limits).
    private var lastState: AgentState?
    /// Programs never blocked, whatever the platform lists, so that a machine with a hostile or
    /// mistaken list still boots, logs in and can be mended: the dynamic loaders (the kernel
    /// asks about a program's loader too), the shells and `env` (asked about for every `#!`
    /// script), systemd's executor (every service), sshd, sudo, login and getty, and the package
    /// manager. Init and Tether's own programs are added to them.
    static let neverBlocked = [
        "/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1", "/lib/ld-linux-armhf.so.3",
        "/bin/sh", "/bin/bash", "/bin/dash", "/usr/bin/env",
        "/usr/lib/systemd/systemd-executor", "/lib/systemd/systemd-executor",
        "/usr/sbin/sshd", "/usr/bin/sudo", "/bin/login", "/usr/bin/login", "/sbin/agetty",
        "/usr/bin/dpkg", "/usr/bin/dpkg-deb", "/usr/bin/dpkg-split", "/usr/bin/apt", "/usr/bin/apt-get",
        "/usr/lib/apt/apt-helper", "/usr/bin/gpgv", "/usr/bin/rpm", "/usr/bin/dnf", "/usr/bin/yum",
    ]

    /// The guard list, kept here and nowhere else: the hashes of init, of Tether's own programs
    /// (tether, tether-fetch), of `neverBlocked` and of apt's transport methods. A prevention
    /// rule matching one is never enforced. Read again whenever the platform's list or one of
    /// those files changes (an upgrade), on the supervisor's thread, and only while a list exists.
    private var protected: Set<String> = []
    /// The list and the programs' files (device, inode, change time) the hashes were read for:
    /// an upgrade that replaces one reads them again.
    private var protectedFor: (rules: [PreventionRule], files: [String])?

    private func protectedHashes(for listed: [PreventionRule]) -> Set<String> {
        var paths = ["/proc/1/exe", "/proc/self/exe"] + Self.neverBlocked
        if let own = ProcessInfo.processInfo.arguments.first.map({ URL(fileURLWithPath: $0).resolvingSymlinksInPath() }) {
            paths.append(own.deletingLastPathComponent().appending(path: "tether-fetch").path)
        }
        let methods = "/usr/lib/apt/methods"
        paths += ((try? FileManager.default.contentsOfDirectory(atPath: methods)) ?? []).map { "\(methods)/\($0)" }
        let files = paths.map { path -> String in
            var info = stat()
            guard stat(path, &info) == 0 else { return "" }
            return "\(info.st_dev):\(info.st_ino):\(info.st_ctim.tv_sec).\(info.st_ctim.tv_nsec)"
        }
        if let protectedFor, protectedFor.rules == listed, protectedFor.files == files { return protected }
        var hashes = Set<String>()
        for path in paths {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            if let digests = fileDigests(fileDescriptor: fd) { hashes.formUnion([digests.sha256, digests.md5]) }
        }
        protected = hashes
        protectedFor = (listed, files)
        return hashes
    }
    /// Events let into each integration's queue this clock hour, by type.
    private var admitted: [Integration: (hour: Int, counts: [String: Int])] = [:]
    private let log: @Sendable (String) -> Void
    private let queued: @Sendable () -> Void
    /// Signalled by `stop`, so the thread's wait between checks ends at once.
    private let stopRequested = DispatchSemaphore(value: 0)

    /// Supervises sensors that feed `runtime`'s queues (shared with the connectors: one
    /// connection to each store). `kernelInterfaces` false uses only what an unprivileged
    /// process may (a /proc scan, inotify).
    /// `queued` is called when events went into a telemetry queue that was empty (its flush
    /// timer starts) or that now holds a batch (it is due at once), so the owner, asleep until its
    /// next deadline, looks again.
    package init(runtime: ConnectorRuntime, bufferCapacity: Int = 20_000, checkInterval: TimeInterval = 0.5, kernelInterfaces: Bool = true,
                 preventionScope: ExecutionGuard.Scope = .fileSystems,
                 log: @escaping @Sendable (String) -> Void = { _ in }, queued: @escaping @Sendable () -> Void = {}) {
        self.runtime = runtime
        self.preventionScope = preventionScope
        self.queued = queued
        buffer = SensorBuffer(capacity: bufferCapacity)
        self.kernelInterfaces = kernelInterfaces
        self.checkInterval = checkInterval
        self.log = log
    }

    /// Starts checking on a thread of its own.
    package func start() {
        lock.withLock { started = true }
        Threads.start(name: "sensor:queue") { [self] in
            while !isStopping {
                step()
                _ = stopRequested.wait(timeout: .now() + checkInterval)
            }
            stopSensors()
            drain(flowing: lastFlowing)
            guardExecutions(false)
            finished.signal()
        }
    }

    /// Stops the sensors (what they saw last is queued or counted) and waits for the thread.
    package func stop() {
        lock.lock()
        let wasRunning = started && !stopping
        stopping = true
        lock.unlock()
        stopRequested.signal()
        if wasRunning { finished.wait() }
    }

    private var isStopping: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopping
    }

    /// The sensors running now (empty while telemetry is off), and execution prevention while a
    /// list is in force.
    package var statuses: [SensorStatus] {
        lock.lock()
        defer { lock.unlock() }
        return currentStatuses
    }

    /// Call with `lock` held.
    private var currentStatuses: [SensorStatus] {
        var all = sensors?.statuses ?? []
        if let executionGuard {
            all.append(SensorStatus(sensor: .prevention, source: executionGuard.source, running: true,
                                    note: executionGuard.unmarked.isEmpty ? nil : "not guarded: " + executionGuard.unmarked.joined(separator: "; ")))
        } else if let guardRefusal, sensors != nil {
            all.append(SensorStatus(sensor: .prevention, source: "kill right after the start (process sensor)", running: true,
                                    note: guardRefusal + "; a listed program runs until the process sensor sees it and kills it"))
        }
        return all
    }

    private func saveStatuses() {
        let all = lock.withLock { currentStatuses }
        try? runtime.store.saveSensors(all, pid: getpid(), since: Date())
    }

    /// Starts the guard while a prevention list is in force, stops it when there is none.
    private func guardExecutions(_ enforcing: Bool) {
        let running = lock.withLock { executionGuard }
        if enforcing, running == nil, guardRefusal == nil {
            do {
                let started = try ExecutionGuard(scope: preventionScope, prevention: prevention, buffer: buffer)
                lock.withLock {
                    executionGuard = started
                    lastGuardCounts = ExecutionGuard.Counts()
                }
                log("execution prevention: \(started.source)" + (started.unmarked.isEmpty ? "" : "; not guarded: " + started.unmarked.joined(separator: "; ")))
            } catch {
                guardRefusal = error.description
                log("execution prevention: \(error.description); listed programs are killed right after they start instead")
            }
        } else if !enforcing, let running {
            if !running.stop() { report("execution prevention did not stop within 3 s; it is left to end by itself") }
            lock.withLock { executionGuard = nil }
            guardRefusal = nil
        }
    }

    /// One check: start, restart or stop the sensors by the agent's settings, then queue what they
    /// saw. Runs on the supervisor's thread only.
    private func step() {
        let state: AgentState
        do {
            state = try runtime.agent.state()
        } catch {
            report("the sensors cannot read the agent's settings: \(error)")
            return
        }
        let flowing = [Integration.edr, .ndr].filter { state.running.contains($0) && runtime.telemetryFlows($0, state: state) }
        lastFlowing = flowing
        lastState = state
        let listed = (try? runtime.preventionRules()) ?? []
        // A rule that would kill init or Tether's own programs is never enforced (said once).
        let never = listed.isEmpty ? [] : protectedHashes(for: listed)
        let rules = listed.filter { !never.contains($0.hash) }
        if rules.count != listed.count {
            report("execution prevention: \(listed.count - rules.count) rule(s) match init, Tether's own programs or another program never blocked (a loader, a shell, the package manager…) and are not enforced")
        }
        if prevention.replace(sha256: Set(rules.filter { $0.algorithm == "sha256" }.map(\.hash)),
                              md5: Set(rules.filter { $0.algorithm == "md5" }.map(\.hash))) {
            // Files allowed under the old list are asked about again under the new one.
            lock.withLock { executionGuard }?.forgetAllowed()
        }
        // Execution prevention holds while EDR runs, telemetry or not (its events are then suppressed and counted).
        let enforcing = !rules.isEmpty && state.running.contains(.edr)
        // What the prevention line says changes with the guard, and with why it could not start.
        let guarded = (lock.withLock { executionGuard != nil }, guardRefusal)
        guardExecutions(enforcing)
        let guardChanged = guarded != (lock.withLock { executionGuard != nil }, guardRefusal)
        let options = SensorOptions(filePaths: state.filePaths, excludedPaths: [runtime.directory.resolvingSymlinksInPath().path],
                                    kernelInterfaces: kernelInterfaces)
        lock.lock()
        let current = sensors
        lock.unlock()
        if flowing.isEmpty && !enforcing {
            if current != nil {
                stopSensors()
                log("sensors stopped: telemetry is off (\(Self.reason(state)))")
            }
        } else if let current, current.options != options, current.options.kernelInterfaces == options.kernelInterfaces {
            lock.lock()
            let ended = current.watch(options.filePaths, excluding: options.excludedPaths)
            lock.unlock()
            if !ended {
                report("the file sensor did not stop within 3 s (a read blocked in the kernel); it is left to end by itself")
            }
            saveStatuses()
            log("sensor file: \(current.statuses.last?.source ?? "")")
        } else if current?.options != options {
            if current != nil { stopSensors() }
            let started = SensorSet(buffer: buffer, options: options, prevention: prevention)
            lock.lock()
            sensors = started
            lastKernelCounts = [:]
            lock.unlock()
            saveStatuses()
            for status in started.statuses {
                log("sensor \(status.sensor.rawValue): \(status.source)" + (status.note.map { " (\($0))" } ?? ""))
            }
        } else if guardChanged {
            saveStatuses()
        }
        drain(flowing: flowing)
    }

    private func stopSensors() {
        lock.lock()
        let current = sensors
        sensors = nil
        lock.unlock()
        guard let current else { return }
        if !current.stop() { report("a sensor did not stop within 3 s (a read blocked in the kernel); it is left to end by itself") }
        // Prevention goes on while the supervisor runs (its own guard, without the process sensor's kill).
        let stopping = isStopping
        let stopped = current.statuses + lock.withLock { currentStatuses.filter { $0.sensor == .prevention }.map { stopping ? $0.stopped : $0 } }
        try? runtime.store.saveSensors(stopped, pid: getpid(), since: Date())
    }

    /// Moves the buffer's events into the queues of the integrations whose telemetry flows, and
    /// counts them by type.
    private func drain(flowing: [Integration]) {
        let drained = buffer.drain()
        var kernel: [SensorKind: (reported: Int, overflows: Int)] = [:]
        lock.lock()
        if let sensors {
            let now = sensors.kernelCounts
            for (kind, counts) in now {
                let last = lastKernelCounts[kind] ?? (0, 0)
                kernel[kind] = (counts.reported - last.reported, counts.overflows - last.overflows)
            }
            lastKernelCounts = now
        }
        var decided = ExecutionGuard.Counts()
        if let executionGuard {
            let now = executionGuard.counts
            decided = now.since(lastGuardCounts)
            lastGuardCounts = now
        }
        lock.unlock()
        do {
            try runtime.store.database.transaction {
                try runtime.store.bump("sensors", .seen, counts: drained.seen)
                try runtime.store.bump("sensors", .bufferDropped, counts: drained.dropped)
                for (kind, counts) in kernel {
                    try runtime.store.bump(scope: "sensors", "kernel-reported:\(kind.rawValue)", by: counts.reported)
                    try runtime.store.bump(scope: "sensors", "kernel-overflows:\(kind.rawValue)", by: counts.overflows)
                }
                for (decision, count) in decided.byName where count > 0 {
                    try runtime.store.bump(scope: "sensors", "prevention:\(decision)", by: count)
                }
            }
            guard !drained.events.isEmpty else { return }
            let events = drained.events.map(TelemetryEvent.init)
            // Prevention may run while telemetry is off: its detections are then counted as suppressed, not lost.
            if !flowing.contains(.edr) {
                let detections = events.filter { $0.type.isExemptFromLimits }
                if !detections.isEmpty { try runtime.record(detections, for: .edr) }
            }
            for integration in flowing {
                let (kept, throttled) = admit(integration == .edr ? events : events.filter { $0.type.isNetwork }, for: integration)
                let before = kept.isEmpty ? 0 : (try? runtime.store.depth(integration)) ?? 0
                try runtime.record(kept, for: integration)
                if !kept.isEmpty, before == 0 || (try? runtime.store.depth(integration)) ?? 0 >= ConnectorRuntime.batchSize { queued() }
                if !throttled.isEmpty {
                    try runtime.store.database.transaction {
                        try runtime.store.bump(integration, "throttled", by: throttled.values.reduce(0, +))
                        try runtime.store.bump(integration, .throttled, counts: throttled)
                    }
                }
            }
            lastProblem = nil
        } catch {
            report("sensor events could not be queued: \(error)")
        }
    }

    /// The events within this clock hour's budget (`maximumEventsPerHour`, and per type
    /// `eventLimitExceededPercentage` of it, less what was sent this hour), and the rest by type:
    /// events the flush would drop are counted as throttled when seen, never written to disk.
    /// The flush applies the same limits again, so this only ever spares the queue.
    private func admit(_ events: [TelemetryEvent], for integration: Integration) -> (kept: [TelemetryEvent], throttled: [String: Int]) {
        guard let state = lastState else { return (events, [:]) }
        let hour = HourlyBudget.hour(runtime.clock())
        if admitted[integration]?.hour != hour {
            admitted[integration] = (hour, (try? runtime.store.sentThisHour(integration, hour: hour)) ?? [:])
        }
        var budget = HourlyBudget(integration, state: state, spent: admitted[integration]!.counts)
        var kept: [TelemetryEvent] = []
        var throttled: [String: Int] = [:]
        for event in events {
            if budget.take(event.type) { kept.append(event) } else { throttled[event.type.rawValue, default: 0] += 1 }
        }
        admitted[integration] = (hour, budget.counts)
        return (kept, throttled)
    }

    private func report(_ problem: String) {
        guard problem != lastProblem else { return }
        lastProblem = problem
        log(problem)
    }

    static func reason(_ state: AgentState) -> String {
        if state.value(SettingPath.behaviorDetection) != .bool(true) { return "behaviorDetection is off" }
        var parts: [String] = []
        if !state.running.contains(.edr) { parts.append("EDR is stopped") } else if state.value(SettingPath.edr.telemetry) != .bool(true) { parts.append("edr.telemetry is off") }
        if !state.running.contains(.ndr) { parts.append("NDR is stopped") }
        return parts.joined(separator: ", ")
    }
}

extension AgentState {
    /// The folders whose files the sensors watch (`edr.fileMonitoring.paths`).
    package var filePaths: [String] {
        if case .paths(let list) = value(SettingPath.edr.fileMonitoringPaths) { return list }
        return FolderList.defaultFileMonitoring
    }
}
