import ConnectorCore
import FoundationEssentials
import IntegrationModel
import Planner
import Policy
import PolicySource
import Reconciler

/// Renders a report for tools, as `policies/report.schema.json` documents it.
/// `formatVersion` changes only when a published key changes meaning.
package enum JSONReport {
    package static let formatVersion = 1

    /// The report as its document.
    package static func document(_ report: Report) -> ReportDocument {
        var counts: [String: Int] = [:]
        for (kind, count) in report.counts { counts[kind.rawValue] = count }
        return ReportDocument(
            formatVersion: formatVersion, kind: report.kind.rawValue, revision: report.revision, revisionSummary: report.revisionSummary,
            source: .init(repository: report.source.displayRepository, ref: report.source.ref ?? "HEAD", path: report.source.path),
            generatedAt: Timestamp.string(report.generatedAt), device: .init(host: report.host, labels: report.labels),
            policies: report.policies, inSync: report.inSync, managedKeys: report.managedKeys,
            managed: report.managed.map { .init(path: $0.key.description, source: .init($0.source)) }, counts: counts,
            findings: report.findings.map(finding), steps: report.steps.map { .init(action: action($0), path: $0.key.description, description: $0.description) },
            notes: report.notes,
            lastApplied: report.lastAppliedRevision.map { .init(revision: $0, at: report.lastAppliedAt.map(Timestamp.string)) },
            applied: report.kind == .apply ? report.applied : nil,
            health: report.health.isEmpty ? nil : report.health.map(health),
            sensors: report.sensors.isEmpty ? nil : report.sensors.map(sensor),
            isolation: report.isolation.map(isolation))
    }

    /// The isolation, as `tether agent status --json` prints it too.
    package static func isolation(_ status: IsolationStatus) -> ReportDocument.Isolation {
        ReportDocument.Isolation(active: status.active, enforced: status.checked ? status.enforced : nil, until: status.until.map(Timestamp.string),
                                 problem: status.problem, allowed: status.allowed.map(\.summary), reasserted: status.reasserted,
                                 reassertedAt: status.reassertedAt.map(Timestamp.string))
    }

    /// One sensor, as `tether agent status --json` prints it too.
    package static func sensor(_ report: SensorReport) -> ReportDocument.Sensor {
        ReportDocument.Sensor(sensor: report.status.sensor.rawValue, running: report.isRunning, source: report.status.source,
                              note: report.status.note, since: Timestamp.string(report.since))
    }

    package static func render(_ report: Report) -> String {
        serialize(document(report))
    }

    static func finding(_ finding: Finding) -> ReportDocument.Finding {
        ReportDocument.Finding(
            path: finding.key.description, kind: finding.kind.rawValue,
            integration: finding.key.scope.prefix.isEmpty ? nil : finding.key.scope.prefix,
            desired: value(finding.desired), actual: value(finding.actual), source: .init(finding.source),
            mode: finding.mode.rawValue, corrected: finding.corrected, reason: finding.reason,
            noticedAt: finding.noticedAt.map(Timestamp.string),
            lastChange: finding.lastChange.map { .init(at: Timestamp.string($0.at), actor: $0.actor, from: $0.old, to: $0.new) })
    }

    /// One connector's health, as `tether agent status --json` prints it too.
    package static func health(_ status: ConnectorStatus) -> ReportDocument.Health {
        ReportDocument.Health(
            integration: status.integration.rawValue, running: status.running, state: status.state, server: status.server,
            lastSuccess: status.lastSuccess.map(Timestamp.string), lastAttempt: status.lastAttempt.map(Timestamp.string),
            lastError: status.lastError, errorKind: status.errorKind, queueDepth: status.queueDepth, sent: status.sent,
            throttled: status.throttled, dropped: status.dropped)
    }

    static func value(_ value: ReportValue) -> ReportDocument.Value? {
        switch value {
        case .setting(let setting): return .setting(setting)
        case .certificate(let fingerprint, let subject, let notAfter):
            return .certificate(sha256: fingerprint, subject: subject, notAfter: Timestamp.string(notAfter))
        case .describedCertificate(let serial, let issuer, let subject): return .describedCertificate(serial: serial, issuer: issuer, subject: subject)
        case .none: return nil
        }
    }

    static func action(_ step: PlanStep) -> String {
        switch step {
        case .stop: return "stop"
        case .start: return "start"
        case .set: return "set"
        case .pinServerCertificate: return "pinServerCertificate"
        case .installClientCertificate: return "installClientCertificate"
        case .removeServerCertificate: return "removeServerCertificate"
        case .removeClientCertificate: return "removeClientCertificate"
        }
    }

    /// Pretty, key-sorted JSON with a trailing newline. Besides the control characters JSON
    /// escapes itself, whatever else a terminal acts on (DEL, the C1 range, direction
    /// overrides: `TerminalText.needsEscaping`) is written as `\uXXXX`, so the text stays valid
    /// JSON (they occur only in strings).
    package static func serialize<T: Encodable>(_ document: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let text = String(decoding: (try? encoder.encode(document)) ?? Data(), as: UTF8.self)
        guard text.unicodeScalars.contains(where: TerminalText.needsEscaping) else { return text + "\n" }
        var safe = ""
        for scalar in text.unicodeScalars {
            if TerminalText.needsEscaping(scalar) {
                let digits = String(scalar.value, radix: 16)
                safe += "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
            } else {
                safe.unicodeScalars.append(scalar)
            }
        }
        return safe + "\n"
    }
}
