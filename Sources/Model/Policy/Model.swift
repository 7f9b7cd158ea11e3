import FoundationEssentials
import IntegrationModel

/// Where something was declared: a file in the repository, a line and a column (both from 1).
package struct SourceLocation: Hashable, Sendable, Codable, CustomStringConvertible {
    package let file: String
    package let line: Int
    package let column: Int

    package init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    /// `file:line`, as people cite a place.
    package var shortDescription: String { "\(file):\(line)" }
    /// `file:line:column`, as compilers print it.
    package var description: String { "\(file):\(line):\(column)" }
}

/// One problem found in the policies, printed as `FILE:LINE:COLUMN: message`.
package struct PolicyProblem: Error, Sendable, Hashable, CustomStringConvertible {
    package let location: SourceLocation
    package let message: String

    package init(_ location: SourceLocation, _ message: String) {
        self.location = location
        self.message = message
    }

    package var description: String { "\(location): \(message)" }

    /// A stable name for the kind of problem, for scripts (`tether validate -o json`).
    package var code: String {
        let rules: [(code: String, says: [String])] = [
            ("yaml-syntax", ["malformed YAML", "a line break other than"]),
            ("duplicate", ["appears twice", "used by "]),
            ("unknown-field", ["unknown field", "unknown setting path", "unknown key"]),
            ("yaml-1.1-ambiguous", ["in YAML 1.1"]),
            ("wrong-type", [", found "]),
            ("out-of-range", ["out of range"]),
            ("tag", ["the tag "]),
            ("conflict", ["conflict", "disagree"]),
            ("certificate", ["certificate"]),
            ("refused-input", ["refused"]),
        ]
        return rules.first { rule in rule.says.contains { message.contains($0) } }?.code ?? "invalid"
    }
}

/// Every problem found in one run, in file and line order.
package struct PolicyProblems: Error, Sendable, CustomStringConvertible {
    package let problems: [PolicyProblem]

    package init(_ problems: [PolicyProblem]) {
        self.problems = problems.sorted {
            ($0.location.file, $0.location.line, $0.location.column) < ($1.location.file, $1.location.line, $1.location.column)
        }
    }

    package var description: String { problems.map(\.description).joined(separator: "\n") }
}


/// A reference to a PKCS#12 client container that lives on the device, never in git.
package struct ClientCertificateReference: Hashable, Sendable, Codable {
    /// The container's path on the device.
    package let file: String
    /// A file on the device holding the container's password; nil for a container without one.
    package let passwordFile: String?

    package init(file: String, passwordFile: String?) {
        self.file = file
        self.passwordFile = passwordFile
    }
}

/// What a policy says one key should be.
package enum DesiredValue: Hashable, Sendable, CustomStringConvertible {
    case setting(SettingValue)
    /// A certificate file in the repository (a path inside it).
    case serverCertificate(path: String)
    case clientCertificate(ClientCertificateReference)

    package var description: String {
        switch self {
        case .setting(let value): return value.description
        case .serverCertificate(let path): return path
        case .clientCertificate(let reference): return reference.file
        }
    }
}

/// A value and the place that declared it.
package struct Sourced<Value: Sendable & Hashable>: Sendable, Hashable {
    package let value: Value
    package let source: SourceLocation

    package init(_ value: Value, at source: SourceLocation) {
        self.value = value
        self.source = source
    }
}

/// Who has authority over a key: Tether corrects it (`enforce`, the default), only reports it
/// (`observe`), or leaves it alone entirely (`ignore`).
package enum FieldMode: String, Sendable, Hashable, Codable {
    case enforce, observe, ignore
}

/// An accepted difference: the key is reported but not corrected until the exception expires.
package struct PolicyException: Sendable, Hashable {
    package let key: DesiredKey
    package let reason: String
    /// The moment the exception stops applying.
    package let expires: Date
    /// The date as written in the policy.
    package let expiresText: String
    package let source: SourceLocation
    package let policy: String

    package init(key: DesiredKey, reason: String, expires: Date, expiresText: String, source: SourceLocation, policy: String) {
        self.key = key
        self.reason = reason
        self.expires = expires
        self.expiresText = expiresText
        self.source = source
        self.policy = policy
    }

    package func isActive(at date: Date) -> Bool { date < expires }
}

/// One `IntegrationPolicy` document.
package struct IntegrationPolicy: Sendable {
    package let name: String
    package let priority: Int
    /// `matchLabels`; empty selects every device.
    package let matchLabels: [String: String]
    /// Where the document starts.
    package let location: SourceLocation
    /// The keys this policy manages and the values it gives them.
    package let values: [DesiredKey: Sourced<DesiredValue>]
    /// Keys this policy marks `observe` or `ignore`.
    package let modes: [DesiredKey: Sourced<FieldMode>]
    package let exceptions: [PolicyException]
    /// `observe`: every key this policy wins is reported, never corrected.
    package let mode: FieldMode
    /// Lets a revision that does not descend from the last applied one be applied (a deliberate rollback).
    package let allowRollback: Bool

    /// Whether the policy applies to a device with these labels.
    package func selects(_ labels: [String: String]) -> Bool {
        matchLabels.allSatisfy { labels[$0.key] == $0.value }
    }
}
