import AgentInterface
import Foundation
import IntegrationModel
import X509

/// An agent held in memory, written from `AgentBackend`'s contract: all-or-nothing
/// transactions, the rule that a running task's preconditions hold, certificates as given.
/// No connectors and no shared store, so it exercises the reconciler's other path — the one a
/// backend that commits on its own (the vendor's agent) takes.
final class MemoryAgent: AgentBackend {
    static let capabilities: AgentCapabilities = []
    static let displayName = "an in-memory agent"

    private(set) var current = AgentState.initial
    private(set) var applied = AppliedState.none
    /// Transactions committed, in order, by actor.
    private(set) var commits: [String] = []
    private var depth = 0

    func state() throws -> AgentState { current }
    func appliedState() throws -> AppliedState { applied }
    func recordApplied(_ values: [DesiredKey: String], revision: String?) throws {
        applied = AppliedState(values: values, revision: revision, at: Date())
    }
    func clientContainer(_ integration: Integration) throws -> InstalledContainer? { nil }

    func transaction<T>(actor: String, _ body: () throws -> T) throws -> T {
        let result = try atomically(body)
        if depth == 0 { commits.append(actor) }
        return result
    }

    func atomically<T>(_ body: () throws -> T) throws -> T {
        let before = (current, applied)
        depth += 1
        defer { depth -= 1 }
        do {
            return try body()
        } catch {
            (current, applied) = before
            throw error
        }
    }

    func set(_ path: SettingPath, to value: SettingValue) throws {
        if path.isTaskState, let integration = path.integration {
            return try value == .bool(true) ? start(integration) : stop(integration)
        }
        current.settings[path] = value
        try requireRunningTasksValid()
    }

    func start(_ integration: Integration) throws {
        let unmet = current.unmetPreconditions(integration)
        guard unmet.isEmpty else { throw AgentError.preconditionFailed(integration, action: "start", reasons: unmet) }
        current.running.insert(integration)
    }

    func stop(_ integration: Integration) throws { current.running.remove(integration) }

    func addServerCertificate(_ integration: Integration, bytes: [UInt8], source: String) throws -> Certificate {
        let certificate = try Certificate(bytes: bytes)
        current.serverCertificates[integration] = certificate
        return certificate
    }

    func removeServerCertificate(_ integration: Integration) throws {
        current.serverCertificates[integration] = nil
        try requireRunningTasksValid()
    }

    func addClientCertificate(_ integration: Integration, pkcs12: [UInt8], password: ContainerPassword, source: String) throws -> Certificate {
        throw AgentError.invalidSetting("the in-memory agent takes no client containers")
    }

    func removeClientCertificate(_ integration: Integration) throws {
        current.clientCertificates[integration] = nil
        try requireRunningTasksValid()
    }

    func restoreClientCertificate(_ integration: Integration, certificate: Certificate, pkcs12: [UInt8], password: ContainerPassword) throws {
        current.clientCertificates[integration] = certificate
    }

    private func requireRunningTasksValid() throws {
        for integration in current.running {
            let unmet = current.unmetPreconditions(integration)
            if !unmet.isEmpty { throw AgentError.preconditionFailed(integration, action: "keep running", reasons: unmet) }
        }
    }
}
