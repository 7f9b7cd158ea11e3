import Foundation
import IntegrationModel
import X509

/// An endpoint agent that Tether reconciles: what the planner compares with and what a plan's
/// steps change. The embedded agent (EmbeddedAgent's SQLite store) is one; the vendor's agent
/// driven through its command line can be another, without touching the planner (see
/// docs/architecture.md). Every change must leave the agent obeying its rules 1–6 (README.md), and
/// `transaction` must make a group of changes all-or-nothing (a backend that cannot roll back
/// records what it changed and undoes it in reverse).
package protocol AgentBackend: AnyObject {
    /// Every setting (defaults filled), the running tasks and the certificates.
    func state() throws -> AgentState
    /// What Tether last applied here, and which revision.
    func appliedState() throws -> AppliedState
    /// Records what Tether applied, as part of the current transaction.
    func recordApplied(_ values: [String: String], revision: String?) throws
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
