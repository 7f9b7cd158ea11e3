import ConnectorCore
import Foundation
import IntegrationModel
import Policy

/// What an apply changed, kept so that it can be undone exactly: the agent's state, client
/// containers and applied state from before.
public struct RestorePoint: Sendable {
    let state: AgentState
    let containers: [Integration: (pkcs12: [UInt8], password: String)]
    let applied: AppliedState

    /// Captures the agent as it is now.
    public init(agent: Agent) throws {
        state = try agent.state()
        var containers: [Integration: (pkcs12: [UInt8], password: String)] = [:]
        for integration in Integration.allCases {
            if let container = try agent.clientContainer(integration) { containers[integration] = container }
        }
        self.containers = containers
        applied = try agent.appliedState()
    }

    /// The steps that undo `steps` (applied after this point was taken), in an order the rules allow.
    func undo(_ steps: [PlanStep]) -> [PlanStep] {
        steps.reversed().map { step in
            switch step {
            case .stop(let integration): return .start(integration)
            case .start(let integration): return .stop(integration)
            case .set(let path, let from, let to): return .set(path, from: to, to: from)
            case .pinServerCertificate(let integration, _, _, _):
                if let old = state.serverCertificates[integration] {
                    return .pinServerCertificate(integration, old, bytes: old.der, path: "the previous certificate")
                }
                return .removeServerCertificate(integration)
            case .installClientCertificate(let integration, _, _, _, _):
                if let old = state.clientCertificates[integration], let container = containers[integration] {
                    return .installClientCertificate(integration, old, container: container.pkcs12, password: container.password,
                                                     file: "the previous container")
                }
                return .removeClientCertificate(integration)
            case .removeServerCertificate(let integration), .removeClientCertificate(let integration):
                return .stop(integration)  // never produced by a forward plan
            }
        }
    }

    /// Puts the agent back as it was before `steps`, in one transaction.
    public func restore(_ agent: Agent, undoing steps: [PlanStep], actor: String) throws {
        try agent.transaction(actor: actor) {
            for step in undo(steps) { try step.run(on: agent) }
            try agent.recordApplied(applied.values, revision: applied.revision)
        }
    }
}

/// After an apply, checks that each connector the apply changed reaches its server; the
/// result says which did not, and why.
public enum HealthWindow {
    /// The running connectors a plan touched (all of them when an app-wide setting changed).
    public static func connectors(changedBy steps: [PlanStep], running: Set<Integration>) -> [Integration] {
        var changed = Set<Integration>()
        for step in steps {
            switch step.key.scope {
            case .app: changed.formUnion(running)
            case .integration(let integration): changed.insert(integration)
            }
        }
        return changed.intersection(running).sorted()
    }

    /// Syncs each connector until it succeeds or `seconds` pass; returns those that never did.
    public static func check(_ connectors: [Integration], runtime: ConnectorRuntime, seconds: Double,
                             retryEvery: Double = 2) -> [SyncOutcome] {
        let deadline = Date().addingTimeInterval(seconds)
        var failing: [Integration: SyncOutcome] = [:]
        var pending = connectors
        while true {
            var still: [Integration] = []
            for integration in pending {
                let outcome = runtime.sync(integration)
                if outcome.succeeded {
                    failing[integration] = nil
                } else {
                    failing[integration] = outcome
                    still.append(integration)
                }
            }
            pending = still
            let remaining = deadline.timeIntervalSinceNow
            if pending.isEmpty || remaining <= 0 { break }
            Thread.sleep(forTimeInterval: min(retryEvery, remaining))
        }
        return pending.compactMap { failing[$0] }
    }
}
