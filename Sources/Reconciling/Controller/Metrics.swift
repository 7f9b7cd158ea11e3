import ConnectorCore
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import IntegrationModel
import Sensors
import Primitives

/// The controller's counters and gauges, rendered in Prometheus's text format for /metrics.
package final class Metrics: @unchecked Sendable {
    private let lock = Lock()
    private var cycleCount = 0
    private var errorCount = 0
    private var verificationRefusals = 0
    private var rollbackRefusals = 0
    private var fetchBytes = 0
    private var fetches = 0
    private var fetchSeconds = Histogram()
    private var cycleSeconds = Histogram()
    private var findingsByKind: [String: [String: Int]] = [:]
    private var lastSuccess: Date?
    /// `tether_build_info`'s labels (the release and the C libraries), set once at start.
    package var buildInfo: [(name: String, value: String)] {
        get { lock.withLock { build } }
        set { lock.withLock { build = newValue } }
    }
    private var build: [(name: String, value: String)] = []
    /// `tether_interval_seconds`: the configured interval, so alerting rules need not assume one.
    package var intervalSeconds: Double? {
        get { lock.withLock { interval } }
        set { lock.withLock { interval = newValue } }
    }
    private var interval: Double?
    private var last: CycleResult?
    private var lastApplied: String?
    private var findings: [String: Int] = [:]
    private var connectors: [(integration: String, state: String, running: Bool)] = []
    private var suspended = false
    private var ready = false
    /// Scope (`sensors`, `edr`, `ndr`) → event type → outcome → count, as runtime.db keeps them.
    private var telemetry: [String: TelemetryCounts] = [:]
    private var sensors: [(name: String, running: Bool)] = []
    private var kernel: [(name: String, reported: Int, overflows: Int)] = []
    private var isolation: (ordered: Bool, enforced: Bool, reasserted: Int) = (false, false, 0)
    private var prevention: [(decision: String, count: Int)] = []

    package var cycles: Int { lock.withLock { cycleCount } }
    package var errors: Int { lock.withLock { errorCount } }
    /// Ready once a cycle has reconciled (or reported, when suspended) without error, and while
    /// the agent, its connectors and sensors are open.
    package var isReady: Bool { lock.withLock { ready && problems.isEmpty } }

    /// What /readyz answers: nil when ready, else why not.
    package var notReadyBecause: String? {
        lock.withLock {
            if let problem = problems.sorted(by: { $0.key < $1.key }).first { return problem.value }
            return ready ? nil : "no successful cycle yet"
        }
    }

    /// What keeps a part of the process from running (`agent`, `connectors`, `sensors`), or nil
    /// when it runs again: shown by /readyz, `tether status` and the log.
    package func setProblem(_ part: String, _ problem: String?) {
        lock.withLock { problems[part] = problem }
    }

    /// The agent's own problem (its stores cannot be opened).
    package func setAgentProblem(_ problem: String?) { setProblem("agent", problem) }

    /// Every part's problem, for `tether status`.
    package var problemList: [String] { lock.withLock { problems.sorted { $0.key < $1.key }.map(\.value) } }
    private var problems: [String: String] = [:]

    func record(_ result: CycleResult, health: [ConnectorStatus], suspended: Bool) {
        lock.withLock {
            cycleCount += 1
            if result.condition == .failed || result.condition == .stalled { errorCount += 1 }
            ready = result.condition == .ready || result.condition == .suspended
            fetchSeconds.observe(result.fetchDuration)
            cycleSeconds.observe(result.duration)
            if ready { lastSuccess = result.startedAt.addingTimeInterval(result.duration) }
            if result.fetched { fetches += 1 }
            fetchBytes += result.bytesReceived
            last = result
            if result.condition == .ready, let revision = result.revision { lastApplied = revision }
            if result.condition == .ready || result.condition == .suspended {
                findings = result.findingsByIntegration
                findingsByKind = result.findingsByKind
            }
            if !health.isEmpty { connectors = health.map { ($0.integration.rawValue, $0.state, $0.running) } }
            self.suspended = suspended
        }
    }

    /// The network isolation as ordered and as the kernel holds it.
    func recordIsolation(_ status: IsolationStatus?) {
        guard let status else { return }
        lock.withLock { isolation = (status.active, status.enforced, status.reasserted) }
    }

    /// What the sensors saw and what became of each event type, read from the connectors' store.
    func recordTelemetry(from runtime: ConnectorRuntime) {
        var counts: [String: TelemetryCounts] = [:]
        var reports: [SensorReport] = []
        var kernel: [(String, Int, Int)] = []
        var decisions: [(decision: String, count: Int)] = []
        _ = try? runtime.readTogether {
            if let sensed = try? runtime.telemetryCounts(nil) { counts["sensors"] = sensed }
            for integration in [Integration.edr, .ndr] {
                if let counted = try? runtime.telemetryCounts(integration) { counts[integration.rawValue] = counted }
            }
            reports = (try? runtime.sensorReports()) ?? []
            kernel = [SensorKind.process, .file].compactMap { sensor in
                (try? runtime.kernelCounts(sensor)).map { (sensor.rawValue, $0.reported, $0.overflows) }
            }
            decisions = (try? runtime.preventionCounts()) ?? []
        }
        lock.withLock {
            prevention = decisions
            telemetry = counts
            sensors = reports.map { ($0.status.sensor.rawValue, $0.isRunning) }
            self.kernel = reports.isEmpty ? [] : kernel
        }
    }

    private var probes: [String: Int] = [:]
    /// `--notify`: nil without it, else whether the broker link is up.
    private var notifyUp: Bool?
    private var notifyMessages: [String: Int] = [:]
    private var notifyToApplied = Histogram()
    private var bundleReads: [String: Int] = [:]

    /// The revision the last Ready cycle reconciled.
    package var lastAppliedRevision: String? { lock.withLock { lastApplied } }

    func notifyLink(up: Bool) { lock.withLock { notifyUp = up } }
    func notified(_ outcome: NoticeOutcome) { lock.withLock { notifyMessages[outcome.rawValue, default: 0] += 1 } }
    /// A notified commit was applied (or found applied) this long after its message arrived.
    func notifiedApplied(after seconds: Double) { lock.withLock { notifyToApplied.observe(seconds) } }
    func bundleRead(_ result: String) { lock.withLock { bundleReads[result, default: 0] += 1 } }

    func probed(_ answer: HeadProbe.Answer) {
        lock.withLock { probes[answer.label, default: 0] += 1 }
    }

    func verificationRefused() { lock.withLock { verificationRefusals += 1 } }
    func rollbackRefused() { lock.withLock { rollbackRefusals += 1 } }

    /// The Prometheus text exposition.
    package func render() -> String {
        lock.withLock {
            var lines: [String] = []
            func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, Double)]) {
                lines.append("# HELP \(name) \(help)")
                lines.append("# TYPE \(name) \(type)")
                for (labels, value) in samples {
                    let number = value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
                    lines.append("\(name)\(labels) \(number)")
                }
            }
            if !build.isEmpty {
                metric("tether_build_info", "gauge", "Tether's release and the libraries it runs with.",
                       [("{" + build.map { "\($0.name)=\"\(Self.escaped($0.value))\"" }.joined(separator: ",") + "}", 1)])
            }
            // The standard process families, as Prometheus client libraries export them.
            let process = ProcessFigures.read()
            metric("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", process.cpuSeconds.map { [("", $0)] } ?? [])
            metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", process.residentBytes.map { [("", $0)] } ?? [])
            metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", process.virtualBytes.map { [("", $0)] } ?? [])
            metric("process_open_fds", "gauge", "Number of open file descriptors.", process.openDescriptors.map { [("", $0)] } ?? [])
            metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", process.maximumDescriptors.map { [("", $0)] } ?? [])
            metric("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", process.startTime.map { [("", $0)] } ?? [])
            metric("tether_interval_seconds", "gauge", "The configured interval between cycles (--interval).", interval.map { [("", $0)] } ?? [])
            metric("tether_cycles_total", "counter", "Reconcile cycles run.", [("", Double(cycleCount))])
            metric("tether_cycle_errors_total", "counter", "Cycles that failed or were refused.", [("", Double(errorCount))])
            metric("tether_verification_refusals_total", "counter", "Revisions refused by signature verification.", [("", Double(verificationRefusals))])
            metric("tether_rollback_refusals_total", "counter", "Revisions refused because they do not descend from the last applied one.", [("", Double(rollbackRefusals))])
            metric("tether_ready", "gauge", "1 when the last cycle reconciled without error.", [("", ready ? 1 : 0)])
            metric("tether_suspended", "gauge", "1 while the controller is suspended.", [("", suspended ? 1 : 0)])
            // Every family is described even before it has a sample, so dashboards and alerting
            // rules can be checked against a fresh controller's output.
            metric("tether_last_cycle_timestamp_seconds", "gauge", "When the last cycle started.",
                   last.map { [("", $0.startedAt.timeIntervalSince1970.rounded())] } ?? [])
            metric("tether_last_cycle_duration_seconds", "gauge", "How long the last cycle took.", last.map { [("", $0.duration)] } ?? [])
            metric("tether_last_cycle_condition", "gauge", "The last cycle's condition.",
                   last.map { [("{condition=\"\($0.condition.rawValue)\",reason=\"\($0.reason.rawValue)\"}", 1)] } ?? [])
            metric("tether_last_applied_revision_info", "gauge", "The revision last reconciled.", lastApplied.map { [("{revision=\"\($0)\"}", 1)] } ?? [])
            metric("tether_last_success_timestamp_seconds", "gauge", "When the last cycle that reconciled without error ended.",
                   lastSuccess.map { [("", $0.timeIntervalSince1970.rounded())] } ?? [])
            // Histograms, not summaries: a fleet's buckets add up across controllers.
            metric("tether_cycle_duration_seconds", "histogram", "How long cycles take.", cycleSeconds.samples)
            metric("tether_fetch_duration_seconds", "histogram", "Time to ask the remote for its refs and fetch when they moved.", fetchSeconds.samples)
            metric("tether_probes_total", "counter", "Probes of --probe-url by answer: not-modified (no git connection), changed, failed (git asked instead).",
                   ["not-modified", "changed", "failed"].map { ("{result=\"\($0)\"}", Double(probes[$0] ?? 0)) })
            if let notifyUp {
                metric("tether_notify_connected", "gauge", "1 while the link to the --notify broker is up (subscribed).", [("", notifyUp ? 1 : 0)])
                metric("tether_notify_messages_total", "counter",
                       "Broker messages by outcome: scheduled (a cycle comes sooner), coalesced (one was already due), current (the applied commit), ignored (another ref), malformed, refused (the cycle did not take its commit).",
                       NoticeOutcome.allCases.filter { $0 != .applied }.map { ("{outcome=\"\($0.rawValue)\"}", Double(notifyMessages[$0.rawValue] ?? 0)) })
                metric("tether_notify_to_applied_seconds", "histogram", "From a message's arrival to the end of the cycle that reconciled its commit.", notifyToApplied.samples)
                metric("tether_bundle_reads_total", "counter", "Notified commits read from --bundle-url: used, or failed (git asked instead).",
                       ["used", "failed"].map { ("{result=\"\($0)\"}", Double(bundleReads[$0] ?? 0)) })
            }
            metric("tether_fetches_total", "counter", "Cycles that fetched objects (the pinned ref had moved).", [("", Double(fetches))])
            metric("tether_fetch_bytes_total", "counter", "Bytes received by fetches.", [("", Double(fetchBytes))])
            metric("tether_drift_findings", "gauge", "Findings (not in sync) per integration at the last cycle.",
                   ["app", "edr", "ndr", "sandbox"].map { ("{integration=\"\($0)\"}", Double(findings[$0] ?? 0)) })
            let byKind = findingsByKind.sorted { $0.key < $1.key }.flatMap { integration, kinds in
                kinds.sorted { $0.key < $1.key }.map { ("{integration=\"\(integration)\",kind=\"\($0.key)\"}", Double($0.value)) }
            }
            metric("tether_findings", "gauge", "Findings (not in sync) by integration and kind at the last cycle.", byKind)
            // One series per integration whatever its state: labels that change would make new series.
            metric("tether_connector_up", "gauge", "1 when the connector reached its server at its last attempt.",
                   connectors.map { ("{integration=\"\($0.integration)\"}", $0.state == "connected" ? 1 : 0) })
            metric("tether_connector_running", "gauge", "1 when the integration's task runs (the connector is meant to connect).",
                   connectors.map { ("{integration=\"\($0.integration)\"}", $0.running ? 1 : 0) })
            let events = telemetry.sorted { $0.key < $1.key }.flatMap { scope, counts in
                counts.byType.sorted { $0.key < $1.key }.flatMap { type, outcomes in
                    outcomes.sorted { $0.key.rawValue < $1.key.rawValue }.map {
                        ("{scope=\"\(scope)\",type=\"\(Self.escaped(type))\",outcome=\"\($0.key.rawValue)\"}", Double($0.value))
                    }
                }
            }
            metric("tether_telemetry_events_total", "counter",
                   "Telemetry events by type: seen and buffer-dropped by the sensors (scope sensors); queued, suppressed, dropped (queue full), throttled and sent per integration.",
                   events)
            metric("tether_sensor_running", "gauge", "1 while the sensor runs (telemetry flows).", sensors.map { ("{sensor=\"\($0.name)\"}", $0.running ? 1 : 0) })
            metric("tether_sensor_kernel_records_total", "counter", "Records the kernel interface delivered to the sensor.",
                   kernel.map { ("{sensor=\"\($0.name)\"}", Double($0.reported)) })
            metric("tether_sensor_kernel_overflows_total", "counter", "Records lost in the kernel: BPF records its ring buffer had no room for, or times a full socket buffer or queue lost some (process connector, fanotify).",
                   kernel.map { ("{sensor=\"\($0.name)\"}", Double($0.overflows)) })
            let decisions = Set(ExecutionGuard.Counts.decisionNames)
            metric("tether_prevention_decisions_total", "counter",
                   "Executions execution prevention answered before they ran: allowed and denied count each once; allowed-unread (hash not known within the deadline) and allowed-too-large are among the allowed, and killed-after-late-read among the allowed-unread (ended when the read found the file listed).",
                   prevention.filter { decisions.contains($0.decision) }.map { ("{decision=\"\($0.decision)\"}", Double($0.count)) })
            metric("tether_prevention_events_total", "counter",
                   "Other counts of execution prevention: cached (answered without reading the file), ignored (files the kernel then stopped asking about until they change), read-errors (files the kernel could not open for Tether; it refused those executions).",
                   prevention.filter { !decisions.contains($0.decision) }.map { ("{kind=\"\($0.decision)\"}", Double($0.count)) })
            metric("tether_isolation_ordered", "gauge", "1 while the platform's network isolation is in effect (ordered, not lifted, not expired).",
                   [("", isolation.ordered ? 1 : 0)])
            metric("tether_isolation_enforced", "gauge", "1 while Tether's nftables table is in the kernel as written; 0 with tether_isolation_ordered 1 means the endpoint is NOT isolated.",
                   [("", isolation.enforced ? 1 : 0)])
            metric("tether_isolation_reasserted_total", "counter", "Times the isolation table was found removed or changed and put back.",
                   [("", Double(isolation.reasserted))])
            return lines.joined(separator: "\n") + "\n"
        }
    }

    /// A label value with `\`, `"` and line breaks escaped.
    static func escaped(_ value: String) -> String {
        value.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"").replacingAll("\n", with: "\\n")
    }
}

/// A Prometheus histogram of seconds: cumulative counts per bucket, a sum and a count (bounded
/// memory, and buckets that add up across a fleet).
struct Histogram {
    static let bounds: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
    private var counts = [Int](repeating: 0, count: Histogram.bounds.count)
    private var sum = 0.0
    private var count = 0

    mutating func observe(_ seconds: Double) {
        for (index, bound) in Self.bounds.enumerated() where seconds <= bound { counts[index] += 1 }
        sum += seconds
        count += 1
    }

    /// The `_bucket`, `_sum` and `_count` samples.
    var samples: [(String, Double)] {
        Self.bounds.enumerated().map { ("_bucket{le=\"\($0.element)\"}", Double(counts[$0.offset])) }
            + [("_bucket{le=\"+Inf\"}", Double(count)), ("_sum", sum), ("_count", Double(count))]
    }
}

/// This process's figures from /proc, as the Prometheus client libraries' process collector reads
/// them; nil where /proc does not say.
struct ProcessFigures {
    var cpuSeconds: Double?
    var residentBytes: Double?
    var virtualBytes: Double?
    var openDescriptors: Double?
    var maximumDescriptors: Double?
    var startTime: Double?

    static func read() -> ProcessFigures {
        var figures = ProcessFigures()
        let ticks = ProcFS.ticksPerSecond
        let page = Double(sysconf(Int32(_SC_PAGESIZE)))
        // /proc/self/stat: fields after the command's closing parenthesis; utime is the 14th field.
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") {
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 22, let user = Double(fields[11]), let system = Double(fields[12]), let start = Double(fields[19]),
               let virtual = Double(fields[20]), let resident = Double(fields[21]) {
                figures.cpuSeconds = (user + system) / ticks
                figures.virtualBytes = virtual
                figures.residentBytes = resident * page
                if let boot = ProcFS.bootTime { figures.startTime = boot.timeIntervalSince1970 + start / ticks }
            }
        }
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") { figures.openDescriptors = Double(entries.count) }
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 { figures.maximumDescriptors = Double(limit.rlim_cur) }
        return figures
    }
}
