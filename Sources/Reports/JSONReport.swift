import Foundation
import IntegrationModel
import Policy
import Reconciler

/// Renders a report for tools. `formatVersion` changes only when a published key changes meaning.
///
/// Keys: `formatVersion`, `kind` (plan|apply|drift), `revision` (commit id), `source`
/// {repository, ref, path}, `generatedAt`, `device` {labels}, `policies`, `inSync`,
/// `managedKeys`, `findings` [{path, integration, desired, actual, source {file, line, column},
/// lastChange {at, actor, from, to}}], `steps` [{action, path, description}], `applied`.
public enum JSONReport {
    public static let formatVersion = 1

    public static func render(_ report: Report) -> String {
        var root: [String: Any] = [
            "formatVersion": formatVersion,
            "kind": report.kind.rawValue,
            "revision": report.revision,
            "source": ["repository": report.source.repository, "ref": report.source.ref ?? "HEAD", "path": report.source.path],
            "generatedAt": TextReport.timestamp(report.generatedAt),
            "device": ["labels": report.labels],
            "policies": report.policies,
            "inSync": report.inSync,
            "managedKeys": report.managedKeys,
            "findings": report.findings.map(finding),
            "steps": report.steps.map { ["action": action($0), "path": $0.key.description, "description": $0.description] },
        ]
        if report.kind == .apply { root["applied"] = report.applied }
        return serialize(root)
    }

    static func finding(_ finding: Finding) -> [String: Any] {
        var object: [String: Any] = [
            "path": finding.key.description,
            "integration": finding.key.scope.prefix.isEmpty ? NSNull() : finding.key.scope.prefix,
            "desired": value(finding.desired),
            "actual": value(finding.actual),
            "source": ["file": finding.source.file, "line": finding.source.line, "column": finding.source.column],
        ]
        if let change = finding.lastChange {
            object["lastChange"] = ["at": TextReport.timestamp(change.at), "actor": change.actor, "from": change.old, "to": change.new]
        }
        return object
    }

    static func value(_ value: ReportValue) -> Any {
        switch value {
        case .setting(let setting): return setting.jsonValue
        case .certificate(let fingerprint, let subject, let notAfter):
            return ["sha256": fingerprint, "subject": subject, "notAfter": TextReport.timestamp(notAfter)]
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
        }
    }

    /// Pretty, key-sorted JSON with a trailing newline.
    public static func serialize(_ object: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
