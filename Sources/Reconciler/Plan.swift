import ConnectorCore
import Foundation
import IntegrationModel
import Policy
import X509

/// A desired value made concrete for this device: certificates read and parsed.
public enum ResolvedValue: Sendable {
    case setting(SettingValue)
    case serverCertificate(Certificate, bytes: [UInt8], path: String)
    case clientCertificate(Certificate, container: [UInt8], password: String, file: String)
}

/// What a report shows as a desired or actual value. Secrets never appear: certificates are
/// shown by fingerprint, subject and expiry only.
public enum ReportValue: Sendable, Equatable, CustomStringConvertible {
    case setting(SettingValue)
    case certificate(fingerprint: String, subject: String, notAfter: Date)
    case none

    init(_ certificate: Certificate?) {
        if let certificate {
            self = .certificate(fingerprint: certificate.sha256Fingerprint, subject: certificate.subject, notAfter: certificate.notAfter)
        } else {
            self = .none
        }
    }

    public var description: String {
        switch self {
        case .setting(let value): return value.description
        case .certificate(let fingerprint, let subject, _): return "\(subject) (sha256 \(fingerprint.prefix(23))…)"
        case .none: return "none"
        }
    }
}

/// One managed key whose actual value differs from the desired one.
public struct Finding: Sendable {
    public let key: DesiredKey
    public let desired: ReportValue
    public let actual: ReportValue
    /// The policy line that declared the desired value.
    public let source: SourceLocation
    /// The last recorded change of this key on the agent (who, when), if any.
    public let lastChange: ChangeRecord?
}

/// One step of a plan. Steps run in the order the rules need (DESIGN.md §1).
public enum PlanStep: Sendable, CustomStringConvertible {
    case stop(Integration)
    case set(SettingPath, from: SettingValue, to: SettingValue)
    case pinServerCertificate(Integration, Certificate, bytes: [UInt8], path: String)
    case installClientCertificate(Integration, Certificate, container: [UInt8], password: String, file: String)
    case start(Integration)

    public var description: String {
        switch self {
        case .stop(let integration): return "stop \(integration.displayName) (\(integration.taskName))"
        case .set(let path, let from, let to): return "set \(path): \(from) → \(to)"
        case .pinServerCertificate(let integration, let certificate, _, let path):
            return "pin \(integration.rawValue) server certificate \(path) (\(certificate.subject), sha256 \(certificate.shortFingerprint)…)"
        case .installClientCertificate(let integration, let certificate, _, _, let file):
            return "install \(integration.rawValue) client certificate \(file) (\(certificate.subject), sha256 \(certificate.shortFingerprint)…)"
        case .start(let integration): return "start \(integration.displayName) (\(integration.taskName))"
        }
    }

    /// The symbol Terraform users read: `+` add, `~` change, `-` stop.
    public var symbol: String {
        switch self {
        case .stop: return "-"
        case .start, .pinServerCertificate, .installClientCertificate: return "+"
        case .set: return "~"
        }
    }

    /// The key this step changes.
    public var key: DesiredKey {
        switch self {
        case .stop(let integration), .start(let integration): return .setting(SettingPath(.integration(integration), "enabled"))
        case .set(let path, _, _): return .setting(path)
        case .pinServerCertificate(let integration, _, _, _): return .serverCertificate(integration)
        case .installClientCertificate(let integration, _, _, _, _): return .clientCertificate(integration)
        }
    }

    func run(on agent: Agent) throws {
        switch self {
        case .stop(let integration): try agent.stop(integration)
        case .start(let integration): try agent.start(integration)
        case .set(let path, _, let value): try agent.set(path, to: value)
        case .pinServerCertificate(let integration, _, let bytes, let path):
            try agent.addServerCertificate(integration, bytes: bytes, source: path)
        case .installClientCertificate(let integration, _, let container, let password, let file):
            try agent.addClientCertificate(integration, pkcs12: container, password: password, source: file)
        }
    }
}

/// The findings of one comparison and the ordered steps that remove them.
public struct Plan: Sendable {
    public let findings: [Finding]
    public let steps: [PlanStep]
    /// Tasks that keep running through a change that restarts them (EDR `mode`, rule 6).
    public let restarts: [Integration]

    public var isEmpty: Bool { steps.isEmpty }

    public init(findings: [Finding], steps: [PlanStep], restarts: [Integration] = []) {
        self.findings = findings
        self.steps = steps
        self.restarts = restarts
    }

    /// Runs every step on the agent in one transaction in the name of `actor`: all or nothing.
    public func apply(to agent: Agent, actor: String) throws {
        try agent.transaction(actor: actor) {
            for step in steps { try step.run(on: agent) }
        }
    }
}
