import AgentInterface
import FoundationEssentials
import IntegrationModel
import Policy
import X509

// The planner: a pure function of the desired state, the agent's actual state and what was
// last applied — no SQLite, git or network (docs/architecture.md).

/// The device's desired state with certificates read: from the revision (server certificates)
/// and from the device itself (client containers, which never enter git).
package struct ResolvedDesiredState: Sendable {
    package let values: [DesiredKey: (value: ResolvedValue, source: SourceLocation)]
    package let policies: [String]
    /// Desired values that cannot be read on this device (a missing client container, a wrong password).
    package let unresolved: [DesiredKey: (reason: String, source: SourceLocation)]
    package let modes: [DesiredKey: Sourced<FieldMode>]
    package let exceptions: [DesiredKey: PolicyException]

    package init(values: [DesiredKey: (value: ResolvedValue, source: SourceLocation)], policies: [String],
                unresolved: [DesiredKey: (reason: String, source: SourceLocation)], modes: [DesiredKey: Sourced<FieldMode>],
                exceptions: [DesiredKey: PolicyException]) {
        self.values = values
        self.policies = policies
        self.unresolved = unresolved
        self.modes = modes
        self.exceptions = exceptions
    }

    package func mode(_ key: DesiredKey) -> FieldMode { modes[key]?.value ?? .enforce }

    /// The same state without some unresolved keys (those an offline plan cannot check).
    package func dropping(unresolved keys: [DesiredKey]) -> ResolvedDesiredState {
        var remaining = unresolved
        for key in keys { remaining[key] = nil }
        return ResolvedDesiredState(values: values, policies: policies, unresolved: remaining, modes: modes, exceptions: exceptions)
    }
}

/// Compares desired and actual state and plans the change, ordered by the agent's rules.
package enum Planner {
    /// Compares every managed key with the agent (and with what was last applied, to tell
    /// pending from drift from conflict) and plans the steps that make them equal. Keys marked
    /// `observe`, or covered by an active exception, are reported and never corrected; `ignore`d
    /// keys are left out. Values that cannot hold on this agent become `unenforceable` findings.
    /// Keys Tether applied before that no selected policy declares any more are `released`:
    /// they stay as they are and keep their applied record, or with `prune` (settings only) are
    /// reset to the vendor default.
    package static func plan(desired: ResolvedDesiredState, actual: AgentState, applied: AppliedState = .none,
                            now: Date = Date(), warnExpiryDays: Int = 30, prune: Bool = false) -> Plan {
        var findings: [Finding] = []
        var corrected: [DesiredKey] = []
        var target = actual
        var desiredValues: [DesiredKey: String] = [:]

        for key in desired.values.keys.sorted() {
            let (value, source) = desired.values[key]!
            let mode = desired.mode(key)
            let wanted = canonical(value, key: key)
            var current = canonical(actual: actual, key: key)
            if case .setting(let path) = key, let why = actual.unsupported[path] {
                // The agent has no way to take this setting: reported (unless it asks for what an
                // agent without it has anyway), never planned, and it does not stop the rest.
                if let field = SettingCatalog.field(path), wanted != canonical(field.defaultValue, key: key) {
                    findings.append(Finding(key: key, kind: .unenforceable, desired: reportValue(value), actual: .none, source: source,
                                            reason: "not enforceable on this agent: \(why)", mode: mode, corrected: false, blocksApply: false))
                }
                continue
            }
            if let certificate = value.certificate, let described = actual.description(of: key), described.describes(certificate) {
                // The agent only describes what it holds: the same serial number and issuer is the same certificate.
                current = wanted
            }
            var exception = desired.exceptions[key]
            if let expired = exception, !expired.isActive(at: now) {
                findings.append(Finding(key: key, kind: .exceptionExpired, desired: reportValue(value), actual: reportValue(actual: actual, key: key),
                                        source: expired.source,
                                        reason: "the exception of policy '\(expired.policy)' (\(expired.reason)) expired on \(expired.expiresText); the key is enforced again",
                                        mode: mode, corrected: false))
                exception = nil
            }
            if wanted != current {
                let enforce = mode == .enforce && exception == nil
                var kind: FindingKind = exception != nil ? .excepted : classify(desired: wanted, actual: current, applied: applied.values[key])
                var reason = exception.map { "accepted by policy '\($0.policy)' until \($0.expiresText): \($0.reason)" }
                    ?? (mode == .observe ? "observed only: Tether reports this key and never corrects it" : nil)
                if exception == nil, case .clientCertificate(let integration) = key, case .clientCertificate(let certificate, _, let password, _) = value,
                   actual.clientCertificates[integration]?.sha256Fingerprint == certificate.sha256Fingerprint {
                    let had = actual.clientPasswords[integration] ?? .none
                    if had == .forgotten {
                        // Installed by a release that kept the password: not drift, a step of the upgrade.
                        kind = .pending
                    }
                    reason = reason ?? (had == password
                        ? "the same certificate in another container file (re-exported?): it is installed again"
                        : "the same certificate, installed with \(had); the policy gives \(password)")
                }
                findings.append(Finding(key: key, kind: kind, desired: reportValue(value), actual: reportValue(actual: actual, key: key),
                                        source: exception?.source ?? source, lastChange: actual.lastChanges[key.description],
                                        reason: reason, mode: mode, corrected: enforce))
                if enforce {
                    corrected.append(key)
                    apply(value, key: key, to: &target)
                    desiredValues[key] = wanted
                } else if let previous = applied.values[key] {
                    // Observed or excepted: Tether does not apply it, so what it last applied stands.
                    desiredValues[key] = previous
                }
            } else {
                desiredValues[key] = wanted
            }
            if let certificate = value.certificate {
                let kind: FindingKind
                let reason: String
                switch CertificateValidity(certificate, at: now, warnExpiryDays: warnExpiryDays) {
                case .expired(let why): (kind, reason) = (.expired, why)
                case .expiring(let why): (kind, reason) = (.expiring, why)
                case .notYetValid(let why): (kind, reason) = (.notYetValid, why)
                case .valid: continue
                }
                findings.append(Finding(key: key, kind: kind, desired: reportValue(value), actual: reportValue(actual: actual, key: key),
                                        source: source, reason: reason, mode: mode, corrected: false))
            }
        }

        // Released: applied before, declared by no selected policy now (ignored keys aside).
        var pruned: [DesiredKey: ResolvedValue] = [:]
        for (key, previous) in applied.values.sorted(by: { $0.key.description < $1.key.description }) {
            guard desired.values[key] == nil, desired.unresolved[key] == nil, desired.mode(key) != .ignore else { continue }
            let current = canonical(actual: actual, key: key)
            guard case .setting(let path) = key, let field = SettingCatalog.field(path) else {
                findings.append(Finding(key: key, kind: .released, desired: .none, actual: reportValue(actual: actual, key: key),
                                        source: releasedSource, reason: "\(key) is no longer managed: it stays as it is", corrected: false))
                desiredValues[key] = previous
                continue
            }
            let vendorDefault = field.defaultValue
            let reset = prune && current != canonical(vendorDefault, key: key)
            let stays = reset ? "reset to the vendor default \(vendorDefault) (--prune)"
                              : "stays \(actual.value(path)); the vendor default is \(vendorDefault)\(prune ? "" : " (apply --prune resets it)")"
            findings.append(Finding(key: key, kind: .released, desired: .setting(vendorDefault), actual: reportValue(actual: actual, key: key),
                                    source: releasedSource, reason: "\(key) is no longer managed: \(stays)", corrected: reset))
            if reset {
                pruned[key] = .setting(vendorDefault)
                corrected.append(key)
                apply(.setting(vendorDefault), key: key, to: &target)
            } else if !prune {
                desiredValues[key] = previous
            }
        }

        for (key, problem) in desired.unresolved.sorted(by: { $0.key < $1.key }) {
            findings.append(Finding(key: key, kind: .unenforceable, desired: .none, actual: reportValue(actual: actual, key: key),
                                    source: problem.source, reason: problem.reason, mode: desired.mode(key), corrected: false))
        }

        // The target must hold: every task that will run meets its preconditions.
        for integration in target.running.sorted() {
            let unmet = target.unmetPreconditions(integration)
            guard !unmet.isEmpty else { continue }
            let enabledKey = DesiredKey.setting(SettingPath.common(integration).enabled)
            let source = desired.values[enabledKey]?.source
                ?? findings.first { $0.key.scope == .integration(integration) }?.source
                ?? desired.values.keys.sorted().first.flatMap { desired.values[$0]?.source }
            guard let source else { continue }
            findings.append(Finding(key: enabledKey, kind: .unenforceable, desired: .setting(.bool(true)),
                                    actual: .setting(actual.value(SettingPath.common(integration).enabled)), source: source,
                                    reason: "\(integration.displayName) cannot run as declared: " + unmet.joined(separator: "; "),
                                    corrected: false))
        }

        let blocked = findings.contains { $0.kind == .unenforceable && $0.blocksApply }
        var wanted = desired.values
        for (key, value) in pruned { wanted[key] = (value, releasedSource) }
        let steps = blocked ? [] : orderedSteps(keys: corrected, values: wanted, actual: actual)
        let managed = desired.values.map { (key: $0.key, source: $0.value.source) }.sorted { $0.key < $1.key }
        return Plan(findings: findings, steps: steps, restarts: blocked ? [] : restarts(keys: corrected, actual: actual, target: target),
                    managed: managed, desiredValues: desiredValues)
    }

    /// pending: git moved, the agent did not; drift: the agent moved, git did not; conflict: both.
    package static func classify(desired: String, actual: String, applied: String?) -> FindingKind {
        guard let applied else { return .pending }
        if applied == desired { return .drift }
        if applied == actual { return .pending }
        return .conflict
    }

    /// A comparable text for a desired value: JSON for settings (unordered lists sorted), the
    /// fingerprint for certificates, and for a client container where its password comes from
    /// when it has one.
    package static func canonical(_ value: ResolvedValue, key: DesiredKey) -> String {
        switch value {
        case .setting(let setting): return canonical(setting, key: key)
        case .serverCertificate(let certificate, _, _): return certificate.sha256Fingerprint
        case .clientCertificate(let certificate, let container, let password, _):
            return canonical(client: certificate, password: password, container: sha256Hex(container))
        }
    }

    /// A client container: its certificate's fingerprint, where its password comes from, and
    /// its bytes' digest when known (the same certificate re-exported is another container).
    private static func canonical(client certificate: Certificate, password: ContainerPassword, container: String?) -> String {
        var details: [String] = []
        if password != .none { details.append(password.description) }
        if let container { details.append("container sha256 \(container.prefix(16))") }
        return details.isEmpty ? certificate.sha256Fingerprint : "\(certificate.sha256Fingerprint) (\(details.joined(separator: "; ")))"
    }

    package static func canonical(actual: AgentState, key: DesiredKey) -> String {
        switch key {
        case .setting(let path): return canonical(actual.value(path), key: key)
        case .serverCertificate(let integration):
            return actual.serverCertificates[integration]?.sha256Fingerprint ?? actual.describedServerCertificates[integration]?.identity ?? "none"
        case .clientCertificate(let integration):
            return actual.clientCertificates[integration].map {
                canonical(client: $0, password: actual.clientPasswords[integration] ?? .none, container: actual.clientContainerDigests[integration])
            }
                ?? actual.describedClientCertificates[integration]?.identity ?? "none"
        }
    }

    private static func canonical(_ value: SettingValue, key: DesiredKey) -> String {
        if case .setting(let path) = key, case .endpoints(let list) = value,
           case .endpoints(ordered: false)? = SettingCatalog.field(path)?.kind {
            return SettingValue.endpoints(list.sorted { $0.description < $1.description }).description
        }
        // Folders hold no line break (FolderList refuses control characters): one a line is unambiguous.
        if case .paths(let list) = value { return list.sorted().joined(separator: "\n") }
        return value.description
    }

    package static func reportValue(_ value: ResolvedValue) -> ReportValue {
        switch value {
        case .setting(let setting): return .setting(setting)
        case .serverCertificate(let certificate, _, _), .clientCertificate(let certificate, _, _, _): return ReportValue(certificate)
        }
    }

    package static func reportValue(actual: AgentState, key: DesiredKey) -> ReportValue {
        switch key {
        case .setting(let path): return .setting(actual.value(path))
        case .serverCertificate(let integration), .clientCertificate(let integration):
            let full = key == .serverCertificate(integration) ? actual.serverCertificates[integration] : actual.clientCertificates[integration]
            if full == nil, let described = actual.description(of: key) {
                return .describedCertificate(serial: described.serial, issuer: described.issuer, subject: described.subject)
            }
            return ReportValue(full)
        }
    }

    private static func apply(_ value: ResolvedValue, key: DesiredKey, to target: inout AgentState) {
        switch (key, value) {
        case (.setting(let path), .setting(let wanted)):
            if path.isTaskState, let integration = path.integration {
                if wanted == .bool(true) { target.running.insert(integration) } else { target.running.remove(integration) }
            } else {
                target.settings[path] = wanted
            }
        case (.serverCertificate(let integration), .serverCertificate(let certificate, _, _)):
            target.serverCertificates[integration] = certificate
        case (.clientCertificate(let integration), .clientCertificate(let certificate, let container, let password, _)):
            target.clientCertificates[integration] = certificate
            target.clientPasswords[integration] = password
            target.clientContainerDigests[integration] = sha256Hex(container)
        default:
            break
        }
    }

    /// Orders the steps so that each one is valid when it runs:
    /// stop tasks → behaviour detection on → certificates → telemetry off → other settings →
    /// behaviour detection off → start tasks.
    /// Where a released key is shown as declared: no policy declares it any more.
    package static let releasedSource = SourceLocation(file: "(no policy)", line: 1, column: 1)

    private static func orderedSteps(keys: [DesiredKey], values: [DesiredKey: (value: ResolvedValue, source: SourceLocation)],
                                     actual: AgentState) -> [PlanStep] {
        var stops: [PlanStep] = [], early: [PlanStep] = [], certificates: [PlanStep] = []
        var loosen: [PlanStep] = [], settings: [PlanStep] = [], late: [PlanStep] = [], starts: [PlanStep] = []
        let behaviorDetection = SettingPath.behaviorDetection
        let telemetry = SettingPath.edr.telemetry
        for key in keys {
            guard let (value, _) = values[key] else { continue }
            switch (key, value) {
            case (.setting(let path), .setting(let wanted)) where path.isTaskState:
                guard let integration = path.integration else { continue }
                if wanted == .bool(true) { starts.append(.start(integration)) } else { stops.append(.stop(integration)) }
            case (.setting(let path), .setting(let wanted)):
                let step = PlanStep.set(path, from: actual.value(path), to: wanted)
                if path == behaviorDetection {
                    if wanted == .bool(true) { early.append(step) } else { late.append(step) }
                } else if path == telemetry, wanted == .bool(false) {
                    loosen.append(step)
                } else {
                    settings.append(step)
                }
            case (.serverCertificate(let integration), .serverCertificate(let certificate, let bytes, let path)):
                certificates.append(.pinServerCertificate(integration, certificate, bytes: bytes, path: path))
            case (.clientCertificate(let integration), .clientCertificate(let certificate, let container, let password, let file)):
                certificates.append(.installClientCertificate(integration, certificate, container: container, password: password, file: file))
            default:
                continue
            }
        }
        return stops + early + certificates + loosen + settings + late + starts
    }

    private static func restarts(keys: [DesiredKey], actual: AgentState, target: AgentState) -> [Integration] {
        let modeChanged = keys.contains(.setting(SettingPath.edr.mode))
        return modeChanged && actual.running.contains(.edr) && target.running.contains(.edr) ? [.edr] : []
    }
}

/// How a certificate stands at a moment, against a warning window: what `plan` reports as
/// expired or expiring, and what `tether agent add-server-certificate` warns about.
package enum CertificateValidity: Equatable {
    case valid
    /// Each with why, in words: "the certificate expired on 2020-01-02".
    case expired(String)
    case notYetValid(String)
    case expiring(String)

    package init(_ certificate: Certificate, at now: Date, warnExpiryDays: Int) {
        if certificate.notAfter <= now {
            self = .expired("the certificate expired on \(Self.day(certificate.notAfter))")
        } else if now < certificate.notBefore {
            self = .notYetValid("the certificate is not valid until \(Timestamp.string(certificate.notBefore)) (is this machine's clock right?)")
        } else if certificate.notAfter < now.addingTimeInterval(TimeInterval(warnExpiryDays) * 86_400) {
            let days = Int((certificate.notAfter.timeIntervalSince(now) / 86_400).rounded(.down))
            self = .expiring("the certificate expires on \(Self.day(certificate.notAfter)), in \(days) day\(days == 1 ? "" : "s") (warning at \(warnExpiryDays))")
        } else {
            self = .valid
        }
    }

    /// A date as `2026-11-29` (UTC).
    private static func day(_ date: Date) -> String { String(Timestamp.string(date).prefix(10)) }
}

extension AgentState {
    /// The description of a certificate key's certificate, when the agent only describes it.
    func description(of key: DesiredKey) -> CertificateDescription? {
        switch key {
        case .setting: return nil
        case .serverCertificate(let integration): return serverCertificates[integration] == nil ? describedServerCertificates[integration] : nil
        case .clientCertificate(let integration): return clientCertificates[integration] == nil ? describedClientCertificates[integration] : nil
        }
    }
}
