import AgentInterface
import Planner

// Running a plan on an agent: the steps in order, then the record of what was applied, all in
// the caller's transaction (see Reconciliation.apply).

extension PlanStep {
    /// Performs the step on any agent backend; `restoring`, to put back what a restore point
    /// holds (a client container is then installed as it was, not opened again).
    func run(on agent: AgentBackend, restoring: Bool = false) throws {
        switch self {
        case .installClientCertificate(let integration, let certificate, let container, let password, _) where restoring:
            try agent.restoreClientCertificate(integration, certificate: certificate, pkcs12: container, password: password)
        case .stop(let integration): try agent.stop(integration)
        case .start(let integration): try agent.start(integration)
        case .set(let path, _, let value): try agent.set(path, to: value)
        case .pinServerCertificate(let integration, _, let bytes, let path):
            try agent.addServerCertificate(integration, bytes: bytes, source: path)
        case .installClientCertificate(let integration, _, let container, let password, let file):
            try agent.addClientCertificate(integration, pkcs12: container, password: password, source: file)
        case .removeServerCertificate(let integration): try agent.removeServerCertificate(integration)
        case .removeClientCertificate(let integration): try agent.removeClientCertificate(integration)
        }
    }
}

extension Plan {
    /// Runs every step on the agent and records the applied desired state: all or nothing.
    /// Call it inside the agent's transaction (see `Reconciliation.apply`); on its own it runs
    /// in a savepoint of the caller's transaction, or a transaction of its own.
    package func apply(to agent: AgentBackend, revision: String) throws {
        try agent.atomically {
            for step in steps { try step.run(on: agent) }
            let applied = try agent.appliedState()
            if applied.values != desiredValues || applied.revision != revision {
                try agent.recordApplied(desiredValues, revision: revision)
            }
        }
    }
}
