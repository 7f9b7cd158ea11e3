import FoundationEssentials
import IntegrationModel
import Planner
import Policy
import PolicySource
import Reconciler

/// SARIF 2.1.0: each finding located at the policy file and line that declared it, so code
/// hosts show it on the pull request's diff.
package enum SARIFReport {
    package static func render(_ report: Report) -> String {
        let rules = FindingKind.allCases.map { kind in
            SARIFLog.Rule(id: "tether/\(kind.rawValue)", name: kind.rawValue.split(separator: "-").map { $0.capitalized }.joined(),
                          shortDescription: .init(text: ruleText(kind)), defaultConfiguration: .init(level: level(kind)))
        }
        // A released setting has no policy line to point at: SARIF shows what policies declare.
        let results = report.findings.filter { $0.kind != .released }.map { finding in
            var text = "\(finding.key) is \(finding.actual) on \(report.host); the policy declares \(finding.desired) (\(finding.kind.label))."
            if let reason = finding.reason { text += " \(reason)." }
            if let change = finding.lastChange { text += " Changed \(ReportFormatting.timestamp(change.at)) by \(change.actor)." }
            return SARIFLog.Result(
                ruleId: "tether/\(finding.kind.rawValue)", level: level(finding.kind), message: .init(text: text),
                locations: [.init(physicalLocation: .init(artifactLocation: .init(uri: finding.source.file),
                                                          region: .init(startLine: finding.source.line, startColumn: finding.source.column)),
                                  logicalLocations: [.init(fullyQualifiedName: finding.key.description, kind: "member")])],
                partialFingerprints: ["tetherFinding/v1": "\(report.host)/\(finding.key)/\(finding.kind.rawValue)"],
                properties: .init(path: finding.key.description, desired: JSONReport.value(finding.desired),
                                  actual: JSONReport.value(finding.actual), device: report.host, revision: report.revision))
        }
        let run = SARIFLog.Run(
            tool: .init(driver: .init(name: "tether", informationUri: "https://tether.invalid/", semanticVersion: "1.0.0", rules: rules)),
            // The category is all before the last "/": one per device, as code scanning wants it.
            automationDetails: .init(id: "tether/\(report.kind.rawValue)/\(report.device ?? report.host)/"),
            versionControlProvenance: [.init(repositoryUri: Self.uri(report.source.displayRepository), revisionId: report.revision)],
            results: results)
        return JSONReport.serialize(SARIFLog(schema: "https://json.schemastore.org/sarif-2.1.0.json", version: "2.1.0", runs: [run]))
    }

    /// An absolute URI for the repository, as SARIF requires: a local path becomes `file:///…`.
    static func uri(_ repository: String) -> String {
        if repository.contains("://") { return repository }
        return URL(fileURLWithPath: repository).standardizedFileURL.absoluteString
    }

    static func level(_ kind: FindingKind) -> String {
        switch kind {
        case .drift, .conflict, .expired, .notYetValid, .unenforceable: return "error"
        case .pending, .expiring, .exceptionExpired: return "warning"
        case .excepted, .released: return "note"
        }
    }

    static func ruleText(_ kind: FindingKind) -> String {
        switch kind {
        case .pending: return "Git changed and the agent has not caught up yet."
        case .drift: return "The agent was changed outside Tether."
        case .conflict: return "Both git and the agent changed since the last apply."
        case .expiring: return "A certificate expires soon."
        case .expired: return "A certificate has expired."
        case .notYetValid: return "A certificate is not valid yet."
        case .unenforceable: return "The desired value cannot be applied on this device."
        case .excepted: return "A difference accepted by an exception in git."
        case .released: return "A setting Tether managed that no policy declares any more; it stays as it is unless pruned."
        case .exceptionExpired: return "An exception has expired and no longer applies."
        }
    }
}

/// JUnit XML: one test case per managed setting, failing where it is out of sync, laid out as
/// the strict JUnit schema (windyroad's JUnit.xsd) wants it: test cases carry name, classname
/// and time only; what each case means (where it is declared, what a plan will change) is in
/// the suite's system-out.
package enum JUnitReport {
    package static func render(_ report: Report) -> String {
        var cases: [String] = []
        var notes: [String] = []
        var failures = 0
        var keys = report.managed.map { ($0.key, $0.source) }
        for finding in report.findings where !keys.contains(where: { $0.0 == finding.key }) {
            keys.append((finding.key, finding.source))
        }
        for (key, source) in keys.sorted(by: { $0.0 < $1.0 }) {
            let classname = "tether.\(report.host).\(key.scope.prefix.isEmpty ? "app" : key.scope.prefix)"
            var element = "    <testcase name=\"\(HTMLReport.escape(key.description))\" classname=\"\(HTMLReport.escape(classname))\" time=\"0\""
            // In a plan, a pending change is what the pull request asks for: it passes, saying what will change.
            let intended = report.kind == .plan ? report.findings.filter { $0.key == key && $0.kind == .pending } : []
            let problems = report.findings.filter { $0.key == key && $0.kind.isProblem && !(report.kind == .plan && $0.kind == .pending) }
            var note = "\(key): declared at \(source.shortDescription)"
            for change in intended { note += "; will change: \(change.actual) → \(change.desired)" }
            for excepted in report.findings where excepted.key == key && excepted.kind == .excepted { note += "; \(excepted.reason ?? "excepted")" }
            notes.append(note)
            if problems.isEmpty {
                element += "/>"
            } else {
                failures += 1
                let message = problems.map { "\($0.kind.label): actual \($0.actual), desired \($0.desired)" }.joined(separator: "; ")
                let detail = problems.map { finding -> String in
                    var line = "\(finding.key) \(finding.kind.label) — declared at \(finding.source.shortDescription)"
                    if let reason = finding.reason { line += "; \(reason)" }
                    if let change = finding.lastChange { line += "; changed \(ReportFormatting.timestamp(change.at)) by \(change.actor)" }
                    return line
                }.joined(separator: "\n")
                element += ">\n      <failure message=\"\(HTMLReport.escape(message))\" type=\"\(problems[0].kind.rawValue)\">\(HTMLReport.escape(detail))</failure>\n    </testcase>"
            }
            cases.append(element)
        }
        let name = "tether \(report.kind.rawValue) \(report.host) @ \(report.revision.prefix(12))"
        // The schema's timestamp has no time zone: UTC, written without the Z.
        let timestamp = String(ReportFormatting.timestamp(report.generatedAt).dropLast())
        return """
            <?xml version="1.0" encoding="UTF-8"?>
            <testsuites>
              <testsuite package="tether" id="0" name="\(HTMLReport.escape(name))" timestamp="\(timestamp)" hostname="\(HTMLReport.escape(report.host))" tests="\(cases.count)" failures="\(failures)" errors="0" time="0">
                <properties/>
            \(cases.joined(separator: "\n"))
                <system-out>\(HTMLReport.escape(notes.joined(separator: "\n")))</system-out>
                <system-err/>
              </testsuite>
            </testsuites>

            """
    }
}

/// The formats `--format` takes.
package enum ReportFormat: String, CaseIterable, Sendable {
    case text, json, markdown, html, sarif, junit

    /// Renders `report`; colour applies to text on a terminal only.
    package func render(_ report: Report, colour: Bool) -> String {
        switch self {
        case .text: return TextReport(colour: colour).render(report)
        case .json: return JSONReport.render(report)
        case .markdown: return MarkdownReport.render(report)
        case .html: return HTMLReport.render(report)
        case .sarif: return SARIFReport.render(report)
        case .junit: return JUnitReport.render(report)
        }
    }
}

/// The part of SARIF 2.1.0 Tether writes.
struct SARIFLog: Encodable {
    struct Text: Encodable { let text: String }
    struct Level: Encodable { let level: String }
    struct Rule: Encodable {
        let id: String
        let name: String
        let shortDescription: Text
        let defaultConfiguration: Level
    }
    struct Driver: Encodable {
        let name: String
        let informationUri: String
        let semanticVersion: String
        let rules: [Rule]
    }
    struct Tool: Encodable { let driver: Driver }
    struct Identifier: Encodable { let id: String }
    struct Provenance: Encodable {
        let repositoryUri: String
        let revisionId: String
    }
    struct ArtifactLocation: Encodable { let uri: String }
    struct Region: Encodable {
        let startLine: Int
        let startColumn: Int
    }
    struct PhysicalLocation: Encodable {
        let artifactLocation: ArtifactLocation
        let region: Region
    }
    struct LogicalLocation: Encodable {
        let fullyQualifiedName: String
        let kind: String
    }
    struct Location: Encodable {
        let physicalLocation: PhysicalLocation
        let logicalLocations: [LogicalLocation]
    }
    struct Properties: Encodable {
        let path: String
        let desired: ReportDocument.Value?
        let actual: ReportDocument.Value?
        let device: String
        let revision: String

        private enum CodingKeys: String, CodingKey { case path, desired, actual, device, revision }

        /// A missing value is written as null.
        func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(path, forKey: .path)
            try container.encode(desired, forKey: .desired)
            try container.encode(actual, forKey: .actual)
            try container.encode(device, forKey: .device)
            try container.encode(revision, forKey: .revision)
        }
    }
    struct Result: Encodable {
        let ruleId: String
        let level: String
        let message: Text
        let locations: [Location]
        let partialFingerprints: [String: String]
        let properties: Properties
    }
    struct Run: Encodable {
        let tool: Tool
        let automationDetails: Identifier
        let versionControlProvenance: [Provenance]
        let results: [Result]
    }

    let schema: String
    let version: String
    let runs: [Run]

    private enum CodingKeys: String, CodingKey {
        case schema = "$schema", version, runs
    }
}
