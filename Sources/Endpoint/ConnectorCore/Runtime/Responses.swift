import AgentInterface
import ChildProcess
import FoundationEssentials
import IntegrationModel
import SQLiteDB
import Sensors
import WireFormat
import Primitives

/// One execution-prevention rule: a file hash that may not run.
package struct PreventionRule: Sendable, Equatable {
    package let hash: String
    /// `sha256` or `md5`.
    package let algorithm: String

    package init(hash: String, algorithm: String) {
        self.hash = hash
        self.algorithm = algorithm
    }
}

extension ConnectorRuntime {
    /// How long a run-process command may run.
    static let runProcessSeconds: TimeInterval = 30

    // MARK: - Commands from the platform

    /// Carries out one response command and keeps its result for the next sync. A command
    /// whose fields do not have the documented types is rejected, and reported as such.
    func handle(_ received: JSONValue, channel: UploadChannel? = nil) throws {
        // Without an id a command cannot be de-duplicated or answered: it is not carried out.
        guard let id = received["id"]?.string, !id.isEmpty else { return }
        let type = received["type"]?.string ?? ""
        let known = try storeCall { try store.database.query("SELECT 1 FROM commands WHERE id = ?", [.text(id)]) }
        guard known.isEmpty else { return }  // delivered twice: done once
        let result: (String, String)
        if let command = try? received.decode(Command.self) {
            switch type {
            case "network-isolation": result = isolate(command, id: id)
            case "network-isolation-off": result = liftIsolation(by: "command \(id)")
            case "execution-prevention": result = replacePrevention(command, id: id)
            case "run-process": result = runProcess(command)
            case "terminate-process": result = terminateProcess(command)
            case "get-file": result = getFile(command, id: id, channel: channel)
            case "delete-file": result = deleteFile(command)
            case "quarantine-file": result = quarantineFile(command, id: id)
            case "restore-file": result = restoreFile(quarantineId: command.quarantineId)
            default: result = ("rejected", "unknown command type '\(type)'")
            }
        } else {
            result = ("rejected", "the command's fields do not have the documented types (docs/wire-format.md)")
        }
        let payload = String(decoding: Wire.encode(received), as: UTF8.self)
        try storeCall {
            try store.database.query("INSERT INTO commands (id, type, payload, received_at, result, detail) VALUES (?, ?, ?, ?, ?, ?)",
                                     [.text(id), .text(type), .text(payload), .real(clock().timeIntervalSince1970), .text(result.0), .text(result.1)])
        }
    }

    func unreportedResults() throws -> [CommandResult] {
        try store.database.query("SELECT id, result, detail FROM commands WHERE reported = 0 ORDER BY received_at").compactMap { row in
            guard let id = row[0].text, let result = row[1].text else { return nil }
            return CommandResult(id: id, result: result, detail: row[2].text ?? "")
        }
    }

    func markReported(_ ids: [String]) throws {
        for id in ids { try store.database.query("UPDATE commands SET reported = 1 WHERE id = ?", [.text(id)]) }
    }

    /// Received commands and their results, newest first.
    package func commandLog(limit: Int = 50) throws -> [(id: String, type: String, result: String, detail: String, reported: Bool)] {
        try storeCall {
            try store.database.query("SELECT id, type, result, detail, reported FROM commands ORDER BY received_at DESC LIMIT ?",
                                     [.integer(Int64(limit))]).compactMap { row in
                guard let id = row[0].text, let type = row[1].text, let result = row[2].text else { return nil }
                return (id, type, result, row[3].text ?? "", row[4].integer == 1)
            }
        }
    }

    // MARK: - Execution prevention

    private func replacePrevention(_ command: Command, id: String) -> (String, String) {
        var parsed: [PreventionRule] = []
        for (index, rule) in (command.rules ?? []).enumerated() {
            let hash = (rule.hash ?? "").lowercased()
            let algorithm = (rule.algorithm ?? (hash.count == 32 ? "md5" : "sha256")).lowercased()
            let length = algorithm == "md5" ? 32 : 64
            guard ["sha256", "md5"].contains(algorithm), hash.count == length, hash.allSatisfy(\.isHexDigit) else {
                return ("rejected", "rule \(index + 1): '\(hash)' is not a \(algorithm) hash; the previous list stays")
            }
            parsed.append(PreventionRule(hash: hash, algorithm: algorithm))
        }
        do {
            try store.database.transaction {
                try store.database.execute("DELETE FROM prevention")
                for rule in parsed {
                    try store.database.query("INSERT OR REPLACE INTO prevention (hash, algorithm, command_id, at) VALUES (?, ?, ?, ?)",
                                             [.text(rule.hash), .text(rule.algorithm), .text(id), .real(clock().timeIntervalSince1970)])
                }
            }
        } catch {
            return ("failed", "\(error)")
        }
        let edrRuns = (try? agent.state().running.contains(.edr)) ?? false
        let mode = parsed.isEmpty ? "" : !edrRuns ? "; not enforced while EDR is stopped"
            : ExecutionGuard.unavailableBecause().map { "; tether run kills listed programs right after they start: \($0)" }
            ?? "; tether run denies listed programs before they run (fanotify permission events)"
        return ("applied", "execution prevention list replaced: \(parsed.count) rule\(parsed.count == 1 ? "" : "s")" + mode)
    }

    /// The execution-prevention rules in force.
    package func preventionRules() throws -> [PreventionRule] {
        try storeCall {
            try store.database.query("SELECT hash, algorithm FROM prevention ORDER BY hash").compactMap { row in
                guard let hash = row[0].text, let algorithm = row[1].text else { return nil }
                return PreventionRule(hash: hash, algorithm: algorithm)
            }
        }
    }

    // MARK: - Run process

    private func runProcess(_ command: Command) -> (String, String) {
        guard let executable = command.executable, !executable.isEmpty else {
            return ("rejected", "a run-process command needs 'executable'")
        }
        let allowFile = directory.appending(path: Self.allowListFileName)
        let allowed = (FileManager.default.contents(atPath: allowFile.path).map { String(decoding: $0, as: UTF8.self) } ?? "")
            .split(separator: "\n").map { $0.trimmingSpaces() }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        guard allowed.contains(executable) else {
            return ("refused", "\(executable) is not in the local allow-list (\(allowFile.path))")
        }
        // At most runProcessSeconds, then killed; only the first 4 KiB of output is kept.
        let outcome: ChildOutcome
        do {
            outcome = try ChildProcess.run(executable, command.arguments ?? [], timeout: Self.runProcessSeconds)
        } catch .timedOut {
            return ("failed", "\(executable) ran longer than \(Int(Self.runProcessSeconds)) s and was killed")
        } catch {
            return ("failed", "\(executable) could not run: \(error)")
        }
        let text = String(decoding: (outcome.standardOutput + outcome.standardError).prefix(4096), as: UTF8.self)
        return (outcome.status == 0 ? "applied" : "failed", "exit \(outcome.status): \(text)")
    }
}
