import AgentInterface
import FoundationEssentials
import IntegrationModel
import Policy
import X509

/// A desired value made concrete for this device: certificates read and parsed.
package enum ResolvedValue: Sendable {
    case setting(SettingValue)
    case serverCertificate(Certificate, bytes: [UInt8], path: String)
    /// A client container and where its password is read from (the password itself is not carried).
    case clientCertificate(Certificate, container: [UInt8], password: ContainerPassword, file: String)

    /// The certificate, for certificate values.
    package var certificate: Certificate? {
        switch self {
        case .setting: return nil
        case .serverCertificate(let certificate, _, _), .clientCertificate(let certificate, _, _, _): return certificate
        }
    }
}

/// What a report shows as a desired or actual value. Secrets never appear: certificates are
/// shown by fingerprint, subject and expiry only.
package enum ReportValue: Sendable, Equatable, CustomStringConvertible {
    case setting(SettingValue)
    case certificate(fingerprint: String, subject: String, notAfter: Date)
    /// A certificate the agent only describes (the vendor's agent does not give it out).
    case describedCertificate(serial: String, issuer: String, subject: String)
    case none

    init(_ certificate: Certificate?) {
        if let certificate {
            self = .certificate(fingerprint: certificate.sha256Fingerprint, subject: certificate.subject, notAfter: certificate.notAfter)
        } else {
            self = .none
        }
    }

    package var description: String {
        switch self {
        case .setting(let value): return value.description
        case .certificate(let fingerprint, let subject, _): return "\(subject) (sha256 \(fingerprint.prefix(23))…)"
        case .describedCertificate(let serial, let issuer, let subject): return "\(subject) (serial \(serial), issuer \(issuer))"
        case .none: return "none"
        }
    }
}

/// Why a finding exists.
package enum FindingKind: String, Sendable, CaseIterable {
    /// Git changed and the agent has not caught up yet (or Tether never applied this key).
    case pending
    /// Someone or something changed the agent outside Tether since the last apply.
    case drift
    /// Both git and the agent changed since the last apply.
    case conflict
    /// A certificate expires within the warning window.
    case expiring
    /// A certificate has expired.
    case expired
    /// A certificate's validity has not begun yet (its notBefore is in the future).
    case notYetValid = "not-yet-valid"
    /// The desired value cannot be applied on this device; `reason` says why.
    case unenforceable
    /// A difference accepted by an exception in git until it expires.
    case excepted
    /// An exception has expired: it no longer applies and the key is enforced again.
    case exceptionExpired = "exception-expired"
    /// Tether managed the key, and no policy declares it any more: it stays as it is (reset to
    /// the vendor default with `--prune`).
    case released

    /// Whether the finding makes a drift report "not in sync".
    package var isProblem: Bool { self != .excepted && self != .released }

    /// A word or two for people.
    package var label: String {
        switch self {
        case .pending: return "pending"
        case .drift: return "drift"
        case .conflict: return "conflict"
        case .expiring: return "expiring"
        case .expired: return "expired"
        case .notYetValid: return "not yet valid"
        case .unenforceable: return "unenforceable"
        case .excepted: return "excepted"
        case .exceptionExpired: return "exception expired"
        case .released: return "released"
        }
    }
}

/// One thing a report tells about a managed key.
package struct Finding: Sendable {
    package let key: DesiredKey
    package let kind: FindingKind
    package let desired: ReportValue
    package let actual: ReportValue
    /// The policy line that declared the desired value (or the exception).
    package let source: SourceLocation
    /// The last recorded change of this key on the agent (who, when), if any.
    package let lastChange: ChangeRecord?
    /// When this difference was first noticed by `drift`.
    package var noticedAt: Date?
    /// Why, in words (for unenforceable, expiring, excepted and expired exceptions).
    package let reason: String?
    /// `observe` findings are reported, never corrected.
    package let mode: FieldMode
    /// Whether `apply` corrects it.
    package let corrected: Bool
    /// Whether an unenforceable finding stops the whole apply (a value that cannot hold here);
    /// false for a setting this agent has no way to take, which is only reported.
    package let blocksApply: Bool

    package init(key: DesiredKey, kind: FindingKind, desired: ReportValue, actual: ReportValue, source: SourceLocation,
                lastChange: ChangeRecord? = nil, noticedAt: Date? = nil, reason: String? = nil, mode: FieldMode = .enforce,
                corrected: Bool, blocksApply: Bool = true) {
        self.blocksApply = blocksApply
        self.key = key
        self.kind = kind
        self.desired = desired
        self.actual = actual
        self.source = source
        self.lastChange = lastChange
        self.noticedAt = noticedAt
        self.reason = reason
        self.mode = mode
        self.corrected = corrected
    }
}

/// One step of a plan. Steps run in the order the agent's rules need (README.md, "Rules the agent enforces").
package enum PlanStep: Sendable, CustomStringConvertible {
    case stop(Integration)
    case set(SettingPath, from: SettingValue, to: SettingValue)
    case pinServerCertificate(Integration, Certificate, bytes: [UInt8], path: String)
    case installClientCertificate(Integration, Certificate, container: [UInt8], password: ContainerPassword, file: String)
    case start(Integration)
    /// Only when restoring a previous state: that state had no such certificate.
    case removeServerCertificate(Integration)
    case removeClientCertificate(Integration)

    package var description: String {
        switch self {
        case .stop(let integration): return "stop \(integration.displayName) (\(integration.taskName))"
        case .set(let path, let from, let to): return "set \(path): \(from) → \(to)"
        case .pinServerCertificate(let integration, let certificate, _, let path):
            return "pin \(integration.rawValue) server certificate \(path) (\(certificate.subject), sha256 \(certificate.shortFingerprint)…)"
        case .installClientCertificate(let integration, let certificate, _, _, let file):
            return "install \(integration.rawValue) client certificate \(file) (\(certificate.subject), sha256 \(certificate.shortFingerprint)…)"
        case .start(let integration): return "start \(integration.displayName) (\(integration.taskName))"
        case .removeServerCertificate(let integration): return "remove \(integration.rawValue) server certificate"
        case .removeClientCertificate(let integration): return "remove \(integration.rawValue) client certificate"
        }
    }

    /// The step in full, bytes included (as digests) and no secret: two steps with the same
    /// fingerprint make the same change. What a saved plan records and an apply of it compares.
    package var fingerprint: String {
        switch self {
        case .pinServerCertificate(_, _, let bytes, _): return description + " bytes " + sha256Hex(bytes)
        case .installClientCertificate(_, _, let container, let password, _):
            return description + " container " + sha256Hex(container) + " password \(password)"
        default: return description
        }
    }

    /// The key this step changes.
    package var key: DesiredKey {
        switch self {
        case .stop(let integration), .start(let integration): return .setting(SettingPath.common(integration).enabled)
        case .set(let path, _, _): return .setting(path)
        case .pinServerCertificate(let integration, _, _, _), .removeServerCertificate(let integration): return .serverCertificate(integration)
        case .installClientCertificate(let integration, _, _, _, _), .removeClientCertificate(let integration): return .clientCertificate(integration)
        }
    }
}

/// The findings of one comparison and the ordered steps that remove them.
package struct Plan: Sendable {
    package var findings: [Finding]
    package let steps: [PlanStep]
    /// Tasks that keep running through a change that restarts them (EDR `mode`, rule 6).
    package let restarts: [Integration]
    /// Every key the policies manage on this device (ignored keys excluded), with its source.
    package let managed: [(key: DesiredKey, source: SourceLocation)]
    /// Canonical desired values, as `AppliedState` records them after a successful apply.
    package let desiredValues: [DesiredKey: String]

    package var isEmpty: Bool { steps.isEmpty }

    /// The desired values that cannot be applied here, as policy problems (for plan and apply).
    package var unenforceable: [PolicyProblem] {
        findings.filter { $0.kind == .unenforceable && $0.blocksApply }.map { PolicyProblem($0.source, "\($0.key): \($0.reason ?? "cannot be applied")") }
    }

    /// Throws the values that cannot be applied here as `PolicyProblems`: what `plan` refuses
    /// and what an apply checks again under its lock.
    package func requireEnforceable() throws {
        let problems = unenforceable
        if !problems.isEmpty { throw PolicyProblems(problems) }
    }

    /// What this plan leaves once its steps are made: the findings an apply does not correct
    /// (observed, excepted, expiring, unenforceable here, released) and no steps. What a drift
    /// report after a successful apply shows, without planning again.
    package func afterApplying() -> Plan {
        Plan(findings: findings.filter { !$0.corrected }, steps: [], restarts: [], managed: managed, desiredValues: desiredValues)
    }

    package init(findings: [Finding], steps: [PlanStep], restarts: [Integration] = [],
                managed: [(key: DesiredKey, source: SourceLocation)] = [], desiredValues: [DesiredKey: String] = [:]) {
        self.findings = findings
        self.steps = steps
        self.restarts = restarts
        self.managed = managed
        self.desiredValues = desiredValues
    }
}
