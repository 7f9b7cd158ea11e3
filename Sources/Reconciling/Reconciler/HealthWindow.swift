import AgentInterface
import ConnectorCore
import EmbeddedAgent
import FoundationEssentials
import Planner
import IntegrationModel
import Policy
import Primitives

/// What an apply changed, kept so that it can be undone exactly: the agent's state, client
/// containers and applied state from before.
package struct RestorePoint: Sendable {
    let state: AgentState
    let containers: [Integration: InstalledContainer]
    let applied: AppliedState

    /// Captures the agent as it is now.
    package init(agent: AgentBackend) throws {
        state = try agent.state()
        var containers: [Integration: InstalledContainer] = [:]
        for integration in Integration.allCases {
            if let container = try agent.clientContainer(integration) { containers[integration] = container }
        }
        self.containers = containers
        applied = try agent.appliedState()
    }

    /// The steps that bring an agent in `current` state back to this point, ordered by the rules
    /// like any plan: found by comparing the two states, not by replaying what was done.
    func steps(from current: AgentState) -> [PlanStep] {
        let here = SourceLocation(file: "the restore point", line: 1, column: 1)
        var values: [DesiredKey: (value: ResolvedValue, source: SourceLocation)] = [:]
        for scope in SettingCatalog.scopes {
            for (path, _) in SettingCatalog.paths(scope) {
                values[.setting(path)] = (.setting(state.value(path)), here)
            }
        }
        var removals: [PlanStep] = []
        for integration in Integration.allCases {
            if let certificate = state.serverCertificates[integration] {
                values[.serverCertificate(integration)] = (.serverCertificate(certificate, bytes: certificate.der, path: "the previous certificate"), here)
            } else if current.serverCertificates[integration] != nil {
                removals.append(.removeServerCertificate(integration))
            }
            if let certificate = state.clientCertificates[integration], let container = containers[integration] {
                // A container whose password an earlier release kept cannot be installed again:
                // the one installed now stays.
                if container.password == .forgotten { continue }
                values[.clientCertificate(integration)] = (.clientCertificate(certificate, container: container.pkcs12, password: container.password,
                                                                              file: "the previous container"), here)
            } else if current.clientCertificates[integration] != nil {
                removals.append(.removeClientCertificate(integration))
            }
        }
        let desired = ResolvedDesiredState(values: values, policies: [], unresolved: [:], modes: [:], exceptions: [:])
        let steps = Planner.plan(desired: desired, actual: current).steps
        // Certificates the previous state did not have go before any task starts.
        let firstStart = steps.firstIndex { if case .start = $0 { return true }; return false } ?? steps.count
        return Array(steps[..<firstStart]) + removals + Array(steps[firstStart...])
    }

    /// Puts the agent back as it was when this point was taken: run it inside a transaction of
    /// the agent (see `Reconciliation.apply`).
    package func restore(on agent: AgentBackend) throws {
        for step in steps(from: try agent.state()) { try step.run(on: agent, restoring: true) }
        try agent.recordApplied(applied.values, revision: applied.revision)
    }
}

/// After an apply, checks that each connector the apply changed reaches its server; the
/// result says which did not, and why.
package enum HealthWindow {
    /// Refuses a health window for a backend whose connectors Tether does not run, naming the
    /// option and the backend, before anything changes.
    package static func requireSupport(by backend: AgentBackend.Type) throws {
        try AgentCapabilities.require(.connectors, for: "--health-window", by: backend,
                                      instead: "it runs its own connectors, so Tether cannot see whether they reach their servers. Leave out --health-window (or give 0), or govern the embedded agent (--agent embedded)")
    }

    /// The same for an opened session.
    package static func requireSupport(by session: AgentSession) throws {
        try requireSupport(by: type(of: session.backend))
    }

    /// The running connectors a plan touched (all of them when an app-wide setting changed).
    package static func connectors(changedBy steps: [PlanStep], running: Set<Integration>) -> [Integration] {
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
    package static func check(_ connectors: [Integration], runtime: ConnectorRuntime, seconds: Double,
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
            Threads.sleep(seconds: min(retryEvery, remaining))
        }
        return pending.compactMap { failing[$0] }
    }
}
