import FoundationEssentials
import IntegrationModel
import X509

/// An endpoint agent that Tether reconciles: what the planner compares with and what a plan's
/// steps change. The embedded agent (EmbeddedAgent's SQLite store) is one; the vendor's agent
/// driven through its command line can be another, without touching the planner (see
/// docs/architecture.md). Every change must leave the agent obeying its rules 1–6 (README.md), and
/// `transaction` must make a group of changes all-or-nothing (a backend that cannot roll back
/// records what it changed and undoes it in reverse).
package protocol AgentBackend: AnyObject {
    /// What this kind of backend can do beyond this protocol; options that need more are refused
    /// before anything changes (`AgentCapabilities.require`).
    static var capabilities: AgentCapabilities { get }
    /// What this backend's name is to people ("the embedded agent", "the vendor's agent (kesl-control)").
    static var displayName: String { get }
    /// Warnings about a change a crash cut short and that the backend undid before its last
    /// transaction (`crashRecovery` backends); empty otherwise.
    var recoveryNotes: [String] { get }

    /// Every setting (defaults filled), the running tasks and the certificates.
    func state() throws -> AgentState
    /// What Tether last applied here, and which revision.
    func appliedState() throws -> AppliedState
    /// Records what Tether applied, as part of the current transaction.
    func recordApplied(_ values: [DesiredKey: String], revision: String?) throws
    /// An integration's client container and where its password is read from (restore points keep them).
    func clientContainer(_ integration: Integration) throws -> InstalledContainer?

    /// Runs `body` as one all-or-nothing change in the name of `actor`.
    @discardableResult
    func transaction<T>(actor: String, _ body: () throws -> T) throws -> T
    /// Runs `body` all-or-nothing inside the current transaction (undone alone when it fails,
    /// even when the caller carries on), or as a transaction of its own.
    func atomically<T>(_ body: () throws -> T) throws -> T

    func set(_ path: SettingPath, to value: SettingValue) throws
    func start(_ integration: Integration) throws
    func stop(_ integration: Integration) throws
    @discardableResult
    func addServerCertificate(_ integration: Integration, bytes: [UInt8], source: String) throws -> Certificate
    func removeServerCertificate(_ integration: Integration) throws
    @discardableResult
    /// Installs a client container after opening it with its password (read from `password`'s
    /// file now) and checking its key; keeps where the password comes from, not the password.
    func addClientCertificate(_ integration: Integration, pkcs12: [UInt8], password: ContainerPassword, source: String) throws -> Certificate
    func removeClientCertificate(_ integration: Integration) throws
    /// Puts back a client container this agent held before (a restore point's), without opening
    /// it again: its password file may hold a newer container's password by now.
    func restoreClientCertificate(_ integration: Integration, certificate: Certificate, pkcs12: [UInt8], password: ContainerPassword) throws
}

extension AgentBackend {
    package var recoveryNotes: [String] { [] }
}

/// What a backend can do beyond `AgentBackend`. The reconciler asks for capabilities, never for a
/// concrete backend (docs/architecture.md, "Backends and their capabilities").
package struct AgentCapabilities: OptionSet, Sendable {
    package let rawValue: Int
    package init(rawValue: Int) { self.rawValue = rawValue }

    /// Tether runs this agent's connectors: it can sync them after an apply (`--health-window`)
    /// and show their health in drift reports.
    package static let connectors = AgentCapabilities(rawValue: 1 << 0)
    /// Its store takes the history file into its own transaction, so an apply's history entry
    /// commits with the change. Without it the entry is written right after the agent's commit.
    package static let historyInAgentCommit = AgentCapabilities(rawValue: 1 << 1)
    /// It undoes a change a crash cut short before its next transaction and says so (`recoveryNotes`).
    package static let crashRecovery = AgentCapabilities(rawValue: 1 << 2)

    /// What each capability is, for the refusal.
    var needs: String {
        var parts: [String] = []
        if contains(.connectors) { parts.append("connectors that Tether runs") }
        if contains(.historyInAgentCommit) { parts.append("a store that commits the history with the change") }
        if contains(.crashRecovery) { parts.append("undoing changes a crash cut short") }
        return parts.joined(separator: " and ")
    }

    /// Refuses `option` unless `backend` has `capability`, before anything changes.
    package static func require(_ capability: AgentCapabilities, for option: String, by backend: AgentBackend.Type, instead: String) throws {
        guard !backend.capabilities.isSuperset(of: capability) else { return }
        throw UnsupportedOption(message: "\(option) needs \(capability.needs), and \(backend.displayName) has none; \(instead)")
    }
}

/// An option the chosen backend cannot honour, refused before anything changed.
package struct UnsupportedOption: Error, CustomStringConvertible {
    package let message: String
    package var description: String { message }
}
