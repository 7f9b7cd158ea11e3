import AgentInterface
import EmbeddedAgent
import FoundationEssentials
import KESLAgent
import Primitives

/// Which agent a state directory governs, kept in its `agent.conf` (`agent=kesl`,
/// `kesl-control=PATH`, `kesl-tasks=edr=KATAEDR,…`) so that every command and the controller
/// keep the backend once it was chosen. The embedded agent is the default.
package struct AgentChoice: Sendable, Equatable {
    package enum Kind: String, Sendable, CaseIterable {
        /// Tether's own agent (its SQLite store and connector core).
        case embedded
        /// The vendor's agent, through `kesl-control`.
        case kesl
    }

    package var kind: Kind = .embedded
    /// kesl-control's path; nil for `$TETHER_KESL_CONTROL` or the vendor's default path.
    package var keslControl: String?
    /// Task name overrides (`edr=KATAEDR,…`); nil for the vendor's names.
    package var keslTasks: String?

    package init(kind: Kind = .embedded, keslControl: String? = nil, keslTasks: String? = nil) {
        self.kind = kind
        self.keslControl = keslControl
        self.keslTasks = keslTasks
    }

    package static let fileName = "agent.conf"

    /// The choice kept in `stateDirectory` (the default when there is none).
    package static func load(stateDirectory: URL) throws -> AgentChoice {
        let file = stateDirectory.appending(path: fileName)
        guard let data = FileManager.default.contents(atPath: file.path) else { return AgentChoice() }
        var choice = AgentChoice()
        for (index, raw) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingSpaces()
            if line.isEmpty || line.hasPrefix("#") { continue }
            let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
            let problem = "\(file.path):\(index + 1): expected agent=embedded|kesl, kesl-control=PATH or kesl-tasks=NAMES, found '\(line)'"
            guard parts.count == 2 else { throw AgentError.invalidSetting(problem) }
            switch parts[0] {
            case "agent":
                guard let kind = Kind(rawValue: parts[1]) else { throw AgentError.invalidSetting(problem) }
                choice.kind = kind
            case "kesl-control": choice.keslControl = parts[1]
            case "kesl-tasks": choice.keslTasks = parts[1]
            default: throw AgentError.invalidSetting(problem)
            }
        }
        return choice
    }

    /// Keeps this choice in `stateDirectory`.
    package func save(stateDirectory: URL) throws {
        var text = "# The agent this state directory governs (tether --agent, --kesl-control, --kesl-tasks).\nagent=\(kind.rawValue)\n"
        if let keslControl { text += "kesl-control=\(keslControl)\n" }
        if let keslTasks { text += "kesl-tasks=\(keslTasks)\n" }
        try FileManager.default.createDirectory(at: stateDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try Data(text.utf8).write(to: stateDirectory.appending(path: Self.fileName), options: .atomic)
    }

    /// kesl-control's path: the choice, else `$TETHER_KESL_CONTROL`, else the vendor's default.
    package var keslControlPath: String {
        keslControl ?? ProcessInfo.processInfo.environment["TETHER_KESL_CONTROL"] ?? KESLControl.defaultPath
    }

    /// The backend this choice opens, for what it can do before it is opened.
    package var backendType: AgentBackend.Type {
        switch kind {
        case .embedded: return Agent.self
        case .kesl: return KESLAgent.self
        }
    }
}
