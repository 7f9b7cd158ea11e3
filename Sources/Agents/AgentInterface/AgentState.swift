import FoundationEssentials
import IntegrationModel
import X509
import Primitives

/// What the agent has right now: every setting (defaults filled), which tasks run, and the
/// pinned server and installed client certificates.
package struct AgentState: Sendable {
    /// Every setting of every scope; a setting never set holds its default.
    package var settings: [SettingPath: SettingValue]
    package var running: Set<Integration>
    package var serverCertificates: [Integration: Certificate]
    package var clientCertificates: [Integration: Certificate]
    /// Where each installed client container's password is read from (never the password).
    package var clientPasswords: [Integration: ContainerPassword] = [:]
    /// SHA-256 of each installed client container's bytes, when the agent has them: the same
    /// certificate re-exported (with a new password, say) is another container.
    package var clientContainerDigests: [Integration: String] = [:]
    /// Certificates the agent only describes (the vendor's agent prints a serial number and an
    /// issuer, not the certificate), where it holds one that Tether did not install.
    package var describedServerCertificates: [Integration: CertificateDescription] = [:]
    package var describedClientCertificates: [Integration: CertificateDescription] = [:]
    /// Settings this agent cannot take, with why (the vendor's command line has no way to set
    /// them): the planner reports them as unenforceable here and plans no step for them.
    package var unsupported: [SettingPath: String] = [:]

    /// Whether a server certificate is pinned, known in full or only described.
    package func hasServerCertificate(_ integration: Integration) -> Bool {
        serverCertificates[integration] != nil || describedServerCertificates[integration] != nil
    }

    /// Whether a client certificate is installed, known in full or only described.
    package func hasClientCertificate(_ integration: Integration) -> Bool {
        clientCertificates[integration] != nil || describedClientCertificates[integration] != nil
    }
    /// The last recorded change of each path (`edr.port`, `edr.serverCertificate`).
    package var lastChanges: [String: ChangeRecord]

    /// The value at `path`; `enabled` reads whether the task runs.
    package func value(_ path: SettingPath) -> SettingValue {
        if path.isTaskState, let integration = path.integration {
            return .bool(running.contains(integration))
        }
        if let value = settings[path] { return value }
        return SettingCatalog.field(path)?.defaultValue ?? .string("")
    }

    /// The value at `path`: `state[.edr.port]`.
    package subscript(path: SettingPath) -> SettingValue { value(path) }

    /// A boolean setting's value (its default when never set).
    package func bool(_ path: SettingPath) -> Bool {
        if case .bool(let flag) = value(path) { return flag }
        preconditionFailure("\(path) is not a boolean setting")
    }

    /// An integer setting's value (its default when never set).
    package func int(_ path: SettingPath) -> Int {
        if case .int(let number) = value(path) { return number }
        preconditionFailure("\(path) is not an integer setting")
    }

    /// A text setting's value (its default when never set).
    package func string(_ path: SettingPath) -> String {
        if case .string(let text) = value(path) { return text }
        preconditionFailure("\(path) is not a text setting")
    }

    /// Whether the integration's task could run with these settings; the unmet preconditions otherwise.
    package func unmetPreconditions(_ integration: Integration) -> [String] {
        var unmet: [String] = []
        if !hasServerCertificate(integration) {
            unmet.append("no server certificate is pinned (rule 1: the server certificate is added before the integration starts)")
        }
        if value(SettingPath.common(integration).mutualAuthentication) == .bool(true), !hasClientCertificate(integration) {
            unmet.append("mutualAuthentication is on but no client certificate is installed (rule 2)")
        }
        if integration == .edr, value(SettingPath.edr.telemetry) == .bool(true),
           value(SettingPath.behaviorDetection) == .bool(false) {
            unmet.append("telemetry is on but behaviorDetection is off (rule 3: EDR telemetry needs behaviour detection)")
        }
        return unmet
    }

    /// Whether `other` has the same settings, running tasks and certificates (change records aside).
    package func sameConfiguration(as other: AgentState) -> Bool {
        func fingerprints(_ certificates: [Integration: Certificate]) -> [Integration: String] { certificates.mapValues(\.sha256Fingerprint) }
        return settings == other.settings && running == other.running
            && fingerprints(serverCertificates) == fingerprints(other.serverCertificates)
            && fingerprints(clientCertificates) == fingerprints(other.clientCertificates) && clientPasswords == other.clientPasswords
            && clientContainerDigests == other.clientContainerDigests
            && describedServerCertificates == other.describedServerCertificates && describedClientCertificates == other.describedClientCertificates
    }

    /// Gives every setting not set its default.
    package mutating func fillDefaults() {
        for scope in SettingCatalog.scopes {
            for (path, field) in SettingCatalog.paths(scope) where !field.isTaskState {
                if settings[path] == nil { settings[path] = field.defaultValue }
            }
        }
    }

    /// The state of a fresh agent: defaults everywhere, nothing running, no certificates.
    package static let initial = AgentState(settings: [:], running: [], serverCertificates: [:], clientCertificates: [:], clientPasswords: [:],
                                           lastChanges: [:])
}

/// One recorded change to the agent, by Tether or by a local administrator.
package struct ChangeRecord: Sendable, Codable, Equatable {
    package let at: Date
    /// Who made it: `tether apply 1a2b3c4`, `tether agent set-settings`.
    package let actor: String
    package let path: String
    package let old: String
    package let new: String

    package init(at: Date, actor: String, path: String, old: String, new: String) {
        self.at = at
        self.actor = actor
        self.path = path
        self.old = old
        self.new = new
    }
}

/// Why the agent refused a change. Nothing was changed.
package enum AgentError: Error, CustomStringConvertible, Sendable {
    /// A task cannot run as asked; each reason names the unmet rule.
    case preconditionFailed(Integration, action: String, reasons: [String])
    case invalidSetting(String)
    case certificate(path: String, reason: String)
    case store(String)

    package var description: String {
        switch self {
        case .preconditionFailed(let integration, let action, let reasons):
            return "\(integration.displayName) (\(integration.taskName)) cannot \(action): " + reasons.joined(separator: "; ")
        case .invalidSetting(let message): return message
        case .certificate(let path, let reason): return "\(path): \(reason)"
        case .store(let message): return "agent state store: \(message)"
        }
    }
}

/// What Tether last applied: each managed key's value (in a canonical text form) and the revision.
package struct AppliedState: Sendable {
    package let values: [DesiredKey: String]
    package let revision: String?
    package let at: Date?

    package init(values: [DesiredKey: String], revision: String?, at: Date?) {
        self.values = values
        self.revision = revision
        self.at = at
    }

    package static let none = AppliedState(values: [:], revision: nil, at: nil)
}

/// Where an installed client container's password comes from. An agent keeps the password
/// file's path, never the password: the file is read each time the container is opened
/// (docs/architecture.md, "Secrets").
package enum ContainerPassword: Hashable, Sendable, CustomStringConvertible {
    /// The container opens with an empty password.
    case none
    /// The password is in this device file (a path as the policy or the command line gave it;
    /// relative paths are taken from the state directory).
    case file(String)
    /// Installed by a release that kept the password itself; the upgrade emptied it, so the
    /// container must be installed again with its password file.
    case forgotten

    /// How stores and snapshots write it: `none`, `forgotten` or `file:PATH`.
    package var storedForm: String {
        switch self {
        case .none: return "none"
        case .forgotten: return "forgotten"
        case .file(let path): return "file:" + path
        }
    }

    /// Reads `storedForm`; anything else (nothing stored) is `forgotten`.
    package init(storedForm text: String?) {
        if text == "none" {
            self = .none
        } else if let text, text.hasPrefix("file:") {
            self = .file(String(text.dropFirst(5)))
        } else {
            self = .forgotten
        }
    }

    package var description: String {
        switch self {
        case .none: return "no password"
        case .file(let path): return "password from \(path)"
        case .forgotten: return "password not kept (installed by an earlier release)"
        }
    }
}

/// An installed client container and where its password comes from.
package struct InstalledContainer: Sendable {
    package let pkcs12: [UInt8]
    package let password: ContainerPassword

    package init(pkcs12: [UInt8], password: ContainerPassword) {
        self.pkcs12 = pkcs12
        self.password = password
    }

    /// The container's password, read from its file now, for opening the container.
    package func readPassword(stateDirectory: URL) throws -> String {
        switch password {
        case .none: return ""
        case .file(let path):
            do {
                return try DeviceFiles.readSecret(path, stateDirectory: stateDirectory)
            } catch {
                throw ContainerPasswordError(description: "the client container's password file \(error)")
            }
        case .forgotten:
            throw ContainerPasswordError(description: "the client container was installed by an earlier release, which kept its password; this release does not: apply the policy again, or `tether agent add-client-certificate INTEGRATION FILE --password-file FILE`")
        }
    }
}

extension InstalledContainer {
    /// Opens the container with its password (read from its file now) and checks that its key
    /// matches its certificate, as a backend does before installing it; errors name `source`.
    package func open(stateDirectory: URL, source: String) throws -> (container: ClientContainer, password: String) {
        do {
            let secret = try readPassword(stateDirectory: stateDirectory)
            return (try ClientContainer(pkcs12: pkcs12, password: secret), secret)
        } catch {
            throw AgentError.certificate(path: source, reason: "\(error)")
        }
    }
}

extension Certificate {
    /// A certificate (PEM or DER) a backend is asked to pin; errors name `source`.
    package static func toPin(_ bytes: [UInt8], source: String) throws -> Certificate {
        do {
            return try Certificate(bytes: bytes)
        } catch {
            throw AgentError.certificate(path: source, reason: "\(error)")
        }
    }
}

/// Why a client container's password cannot be had.
package struct ContainerPasswordError: Error, CustomStringConvertible, Sendable {
    package let description: String
}

/// A certificate as an agent describes it without giving it out: the serial number and issuer
/// (what identifies it), the subject and the end of its validity as printed.
package struct CertificateDescription: Sendable, Equatable {
    package let serial: String
    package let issuer: String
    package let subject: String
    package let validTo: String

    package init(serial: String, issuer: String, subject: String, validTo: String) {
        self.serial = serial
        self.issuer = issuer
        self.subject = subject
        self.validTo = validTo
    }

    /// Whether this describes `certificate`: the same serial number and issuer (what identifies
    /// a certificate), and the same subject when one is printed, however each is written
    /// (`0A:1B` or `a1b`; `CN=x, O=y` or `/O=y/CN=x`).
    package func describes(_ certificate: Certificate) -> Bool {
        Self.serial(serial) == Self.serial(certificate.serialNumber) && Self.issuer(issuer) == Self.issuer(certificate.issuer)
            && (subject.isEmpty || Self.issuer(subject) == Self.issuer(certificate.subject))
    }

    /// Identifies the certificate in reports and comparisons: `serial 0a1b, issuer CN=x,O=y`.
    package var identity: String { "serial \(Self.serial(serial)), issuer \(issuer)" }

    static func serial(_ text: String) -> String {
        let digits = text.lowercased().filter(\.isHexDigit)
        let trimmed = digits.drop { $0 == "0" }
        return trimmed.isEmpty ? "0" : String(trimmed)
    }

    static func issuer(_ text: String) -> [String] {
        text.split(whereSeparator: { $0 == "," || $0 == "/" })
            .map { $0.split(separator: "=", maxSplits: 1).map { $0.trimmingSpaces().lowercased() }.joined(separator: "=") }
            .filter { !$0.isEmpty }.sorted()
    }
}

/// A change to an agent that cannot roll back by itself, which failed and was undone step by
/// step: what failed, and what could not be put back (empty when the agent is as it was).
package struct UndoneChange: Error, CustomStringConvertible, Sendable {
    package let failure: String
    package let stillChanged: [String]

    package init(failure: String, stillChanged: [String]) {
        self.failure = failure
        self.stillChanged = stillChanged
    }

    package var description: String {
        if stillChanged.isEmpty { return "\(failure); every step already made was undone, the agent is as it was before" }
        return "\(failure); undoing failed for some steps, so these stay changed (the next drift report shows them): " + stillChanged.joined(separator: "; ")
    }
}
