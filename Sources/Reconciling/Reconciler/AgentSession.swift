import AgentInterface
import ConnectorCore
import EmbeddedAgent
import FoundationEssentials
import KESLAgent

/// The agent a state directory governs, opened once with what goes with it: the backend, Tether's
/// history beside it and, for a backend whose connectors Tether runs, the connectors' store. The
/// one place that knows which backend is which (docs/architecture.md, "Backends and their
/// capabilities"); everything else asks for a capability. `tether run` holds one for the
/// process's life, so each store file has one connection.
package final class AgentSession {
    package let stateDirectory: URL
    package let backend: AgentBackend
    package let history: History
    /// The embedded agent, when that is the backend: what runs connectors and shares its commit.
    private let embedded: Agent?
    private var runtime: ConnectorRuntime?

    /// Opens the chosen backend and the history in `stateDirectory`.
    package init(_ choice: AgentChoice, stateDirectory: URL) throws {
        self.stateDirectory = stateDirectory
        switch choice.kind {
        case .embedded:
            let agent = try Agent(stateDirectory: stateDirectory.path)
            embedded = agent
            backend = agent
            history = try History(stateDirectory: stateDirectory) { file in
                try agent.connection(attaching: file, as: History.attachedSchema)
            }
        case .kesl:
            backend = try Self.keslAgent(choice, stateDirectory: stateDirectory)
            embedded = nil
            history = try History(stateDirectory: stateDirectory)
        }
    }

    /// Another backend (a test's in-memory agent) with a history of its own: what such a backend
    /// can do is what its type declares; it runs no connectors Tether knows.
    package init(backend: AgentBackend, history: History, stateDirectory: URL) {
        self.stateDirectory = stateDirectory
        self.backend = backend
        self.history = history
        embedded = nil
    }

    /// Only the chosen backend, for commands that read or export the agent and keep no history
    /// (`agent snapshot`, `import`).
    package static func backend(_ choice: AgentChoice, stateDirectory: URL) throws -> AgentBackend {
        switch choice.kind {
        case .embedded:
            return try Agent(stateDirectory: stateDirectory.path)
        case .kesl:
            return try keslAgent(choice, stateDirectory: stateDirectory)
        }
    }

    private static func keslAgent(_ choice: AgentChoice, stateDirectory: URL) throws -> KESLAgent {
        let tasks = try choice.keslTasks.map { try VendorTaskNames(overrides: $0) } ?? VendorTaskNames()
        return try KESLAgent(stateDirectory: stateDirectory.path, control: KESLControl(executable: choice.keslControlPath, tasks: tasks))
    }

    /// What this backend can do beyond `AgentBackend`.
    package var capabilities: AgentCapabilities { type(of: backend).capabilities }

    /// The files whose replacement (a backup restored) means this session must be opened anew.
    package var storeFiles: [URL] {
        let names = embedded != nil ? [Agent.storeFileName, ConnectorRuntime.storeFileName] : [KESLAgent.storeFileName]
        return (names + [History.fileName]).map { stateDirectory.appending(path: $0) }
    }

    /// The connectors' runtime (opened on first use, then kept), or nil when the backend runs
    /// its own connectors (no `.connectors` capability).
    package func connectors() throws -> ConnectorRuntime? {
        guard let embedded else { return nil }
        if let runtime { return runtime }
        let opened = try ConnectorRuntime(agent: embedded)
        runtime = opened
        return opened
    }

    /// A sensor supervisor over this session's connectors, or nil when the backend has none.
    package func sensorSupervisor(log: @escaping @Sendable (String) -> Void) throws -> SensorSupervisor? {
        guard let runtime = try connectors() else { return nil }
        return SensorSupervisor(runtime: runtime, log: log)
    }

    /// Runs `body` as one change of the agent in the name of `actor` and records the history
    /// entry it returns: in the same commit when the backend shares its store
    /// (`.historyInAgentCommit`), or right after its commit otherwise. A history write that fails
    /// after the backend committed is `ChangedNotRecorded`: the change stays, and the entry is
    /// recorded at the next start.
    package func committing<T>(actor: String, _ body: () throws -> (T, HistoryEntry)) throws -> T {
        if let embedded {
            return try embedded.transaction(actor: actor) { database in
                let (result, entry) = try body()
                try History.record(entry, into: database, schema: History.attachedSchema)
                return result
            }
        }
        let (result, entry) = try backend.transaction(actor: actor) { try body() }
        if let problem = history.recordAfterCommit(entry) {
            throw ChangedNotRecorded(problem: problem)
        }
        return result
    }
}

/// The agent was changed and committed, but the history entry could not be written.
package struct ChangedNotRecorded: Error, CustomStringConvertible {
    package let problem: String
    package var description: String { "the agent was changed, but the history entry could not be written: \(problem)" }
}
