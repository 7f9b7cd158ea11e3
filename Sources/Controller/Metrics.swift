import ConnectorCore
import Foundation

/// The controller's counters and gauges, rendered in Prometheus's text format for /metrics.
public final class Metrics: @unchecked Sendable {
    private let lock = NSLock()
    private var cycleCount = 0
    private var errorCount = 0
    private var verificationRefusals = 0
    private var rollbackRefusals = 0
    private var fetchBytes = 0
    private var fetches = 0
    private var fetchSeconds: [Double] = []
    private var last: CycleResult?
    private var lastApplied: String?
    private var findings: [String: Int] = [:]
    private var connectors: [(String, String)] = []
    private var suspended = false
    private var ready = false

    public var cycles: Int { lock.withLock { cycleCount } }
    public var errors: Int { lock.withLock { errorCount } }
    /// Ready once a cycle has reconciled (or reported, when suspended) without error.
    public var isReady: Bool { lock.withLock { ready } }

    func record(_ result: CycleResult, health: [ConnectorStatus], suspended: Bool) {
        lock.withLock {
            cycleCount += 1
            if result.condition == .failed || result.condition == .stalled { errorCount += 1 }
            ready = result.condition == .ready || result.condition == .suspended
            fetchSeconds.append(result.fetchDuration)
            if fetchSeconds.count > 1000 { fetchSeconds.removeFirst(fetchSeconds.count - 1000) }
            if result.fetched { fetches += 1 }
            fetchBytes += result.bytesReceived
            last = result
            if result.condition == .ready, let revision = result.revision { lastApplied = revision }
            if result.condition == .ready || result.condition == .suspended { findings = result.findingsByIntegration }
            if !health.isEmpty { connectors = health.map { ($0.integration.rawValue, $0.state) } }
            self.suspended = suspended
        }
    }

    func verificationRefused() { lock.withLock { verificationRefusals += 1 } }
    func rollbackRefused() { lock.withLock { rollbackRefusals += 1 } }

    /// The Prometheus text exposition.
    public func render() -> String {
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
            metric("tether_cycles_total", "counter", "Reconcile cycles run.", [("", Double(cycleCount))])
            metric("tether_cycle_errors_total", "counter", "Cycles that failed or were refused.", [("", Double(errorCount))])
            metric("tether_verification_refusals_total", "counter", "Revisions refused by signature verification.", [("", Double(verificationRefusals))])
            metric("tether_rollback_refusals_total", "counter", "Revisions refused because they do not descend from the last applied one.", [("", Double(rollbackRefusals))])
            metric("tether_ready", "gauge", "1 when the last cycle reconciled without error.", [("", ready ? 1 : 0)])
            metric("tether_suspended", "gauge", "1 while the controller is suspended.", [("", suspended ? 1 : 0)])
            if let last {
                metric("tether_last_cycle_timestamp_seconds", "gauge", "When the last cycle started.", [("", last.startedAt.timeIntervalSince1970.rounded())])
                metric("tether_last_cycle_duration_seconds", "gauge", "How long the last cycle took.", [("", last.duration)])
                metric("tether_last_cycle_condition", "gauge", "The last cycle's condition.", [("{condition=\"\(last.condition.rawValue)\",reason=\"\(last.reason)\"}", 1)])
            }
            if let lastApplied {
                metric("tether_last_applied_revision_info", "gauge", "The revision last reconciled.", [("{revision=\"\(lastApplied)\"}", 1)])
            }
            let sorted = fetchSeconds.sorted()
            let quantiles = [0.5, 0.9, 0.99].map { q -> (String, Double) in
                ("{quantile=\"\(q)\"}", sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))])
            }
            metric("tether_fetch_duration_seconds", "summary", "Time to ask the remote for its refs and fetch when they moved.",
                   quantiles + [("_sum", fetchSeconds.reduce(0, +)), ("_count", Double(fetchSeconds.count))])
            metric("tether_fetches_total", "counter", "Cycles that fetched objects (the pinned ref had moved).", [("", Double(fetches))])
            metric("tether_fetch_bytes_total", "counter", "Bytes received by fetches.", [("", Double(fetchBytes))])
            metric("tether_drift_findings", "gauge", "Findings (not in sync) per integration at the last cycle.",
                   ["app", "edr", "ndr", "sandbox"].map { ("{integration=\"\($0)\"}", Double(findings[$0] ?? 0)) })
            if !connectors.isEmpty {
                metric("tether_connector_up", "gauge", "1 when the connector reached its server at its last attempt.",
                       connectors.map { ("{integration=\"\($0.0)\",state=\"\($0.1)\"}", $0.1 == "connected" ? 1 : 0) })
            }
            return lines.joined(separator: "\n") + "\n"
        }
    }
}
