import ConnectorCore
import Foundation
import IntegrationModel
import Planner
import Policy
import PolicySource
import Reconciler

/// Renders a report for tools, as `policies/report.schema.json` documents it.
/// `formatVersion` changes only when a published key changes meaning.
public enum JSONReport {
    public static let formatVersion = 1

    public static func object(_ report: Report) -> [String: Any] {
        var counts: [String: Int] = [:]
        for (kind, count) in report.counts { counts[kind.rawValue] = count }
        var root: [String: Any] = [
            "formatVersion": formatVersion,
            "kind": report.kind.rawValue,
            "revision": report.revision,
            "revisionSummary": report.revisionSummary,
            "source": ["repository": report.source.displayRepository, "ref": report.source.ref ?? "HEAD", "path": report.source.path],
            "generatedAt": ReportFormatting.timestamp(report.generatedAt),
            "device": ["host": report.host, "labels": report.labels] as [String: Any],
            "policies": report.policies,
            "inSync": report.inSync,
            "managedKeys": report.managedKeys,
            "managed": report.managed.map { ["path": $0.key.description, "source": location($0.source)] as [String: Any] },
            "counts": counts,
            "findings": report.findings.map(finding),
            "steps": report.steps.map { ["action": action($0), "path": $0.key.description, "description": $0.description] },
            "notes": report.notes,
        ]
        if let revision = report.lastAppliedRevision {
            root["lastApplied"] = ["revision": revision, "at": report.lastAppliedAt.map(ReportFormatting.timestamp) ?? NSNull()] as [String: Any]
        }
        if report.kind == .apply { root["applied"] = report.applied }
        if !report.health.isEmpty { root["health"] = report.health.map(health) }
        return root
    }

    public static func render(_ report: Report) -> String {
        serialize(object(report))
    }

    static func finding(_ finding: Finding) -> [String: Any] {
        var object: [String: Any] = [
            "path": finding.key.description,
            "kind": finding.kind.rawValue,
            "integration": finding.key.scope.prefix.isEmpty ? NSNull() : finding.key.scope.prefix,
            "desired": value(finding.desired),
            "actual": value(finding.actual),
            "source": location(finding.source),
            "mode": finding.mode.rawValue,
            "corrected": finding.corrected,
        ]
        if let reason = finding.reason { object["reason"] = reason }
        if let noticed = finding.noticedAt { object["noticedAt"] = ReportFormatting.timestamp(noticed) }
        if let change = finding.lastChange {
            object["lastChange"] = ["at": ReportFormatting.timestamp(change.at), "actor": change.actor, "from": change.old, "to": change.new]
        }
        return object
    }

    /// One connector's health, as `tether agent status --json` prints it too.
    public static func health(_ status: ConnectorStatus) -> [String: Any] {
        [
            "integration": status.integration.rawValue,
            "running": status.running,
            "state": status.state,
            "server": status.server ?? NSNull(),
            "lastSuccess": status.lastSuccess.map(ReportFormatting.timestamp) ?? NSNull(),
            "lastAttempt": status.lastAttempt.map(ReportFormatting.timestamp) ?? NSNull(),
            "lastError": status.lastError ?? NSNull(),
            "errorKind": status.errorKind ?? NSNull(),
            "queueDepth": status.queueDepth,
            "sent": status.sent,
            "throttled": status.throttled,
            "dropped": status.dropped,
        ]
    }

    static func location(_ source: SourceLocation) -> [String: Any] {
        ["file": source.file, "line": source.line, "column": source.column]
    }

    static func value(_ value: ReportValue) -> Any {
        switch value {
        case .setting(let setting): return setting.jsonValue
        case .certificate(let fingerprint, let subject, let notAfter):
            return ["sha256": fingerprint, "subject": subject, "notAfter": ReportFormatting.timestamp(notAfter)]
        case .none: return NSNull()
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

    /// Pretty, key-sorted JSON with a trailing newline.
    public static func serialize(_ object: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
