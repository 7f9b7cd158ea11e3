import AgentInterface
import ArgumentParser
import FoundationEssentials
import IntegrationModel
import PolicySource
import Reconciler
import Reports
import Primitives

/// `tether history`
struct HistoryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "List every apply, rollback and drift detection on this device: when, which revision, what came of it.")

    @OptionGroup var device: DeviceOptions

    @Option(help: "How many entries, newest first.")
    var limit: Int = 20

    @OptionGroup var output: OutputOptions

    func run() throws {
        try device.requireAgentState()
        let entries = try History(stateDirectory: device.stateDirectoryURL).entries(limit: limit)
        if output.isJSON {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            Console.out(String(decoding: try encoder.encode(entries), as: UTF8.self))
            return
        }
        if entries.isEmpty {
            Console.out("No history yet: run `tether apply` or `tether drift`.")
            return
        }
        Console.out("WHEN                  WHAT      REVISION      RESULT         FINDINGS  DETAIL")
        for entry in entries {
            let columns = [
                ReportFormatting.timestamp(entry.at).padded(to: 21),
                entry.kind.rawValue.padded(to: 9),
                String(entry.revision.prefix(12)).padded(to: 13),
                entry.result.rawValue.padded(to: 14),
                String(entry.findings).padded(to: 9),
                String(entry.detail.prefix(80)),
            ]
            Console.out(columns.joined(separator: " "))
        }
    }
}

/// `tether rollback`
struct RollbackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollback",
        abstract: "Re-apply the last known-good revision: the one applied before the current one.",
        discussion: """
            Reads that revision from the same repository (--repo, --path) and applies it in one transaction. Going back is refused everywhere else (apply, plan, drift, the controller): rollback is the deliberate way, and its report says "Rolled back from … to …". --to picks another revision from `tether history`; --verify checks its signatures first. Exit 0 when rolled back, 1 on error (nothing changed).
            """)

    @OptionGroup var source: SourceOptions
    @OptionGroup var backend: BackendOptions
    @OptionGroup var reportOptions: ReportOptions

    @Option(help: ArgumentHelp("The revision to go back to (default: the one applied before the current one).", valueName: "commit"))
    var to: String?

    @OptionGroup var health: HealthWindowOptions
    @OptionGroup var verification: VerifyOptions

    func run() throws {
        let choice = try backend.choice(source.device)
        do {
            try health.requireSupport(choice.backendType)
        } catch let unsupported as UnsupportedOption {
            throw CommandError("error: \(unsupported.message)")
        }
        let session = try agentCall { try AgentSession(choice, stateDirectory: source.device.stateDirectoryURL) }
        let history = session.history
        let current = try agentCall { try session.backend.appliedState().revision }
        let target: String
        if let to {
            target = to
        } else {
            guard let previous = try history.appliedRevisions().first(where: { $0 != current }) else {
                throw CommandError("error: no earlier known-good revision in `tether history`; name one with --to COMMIT")
            }
            target = previous
        }
        var options = source
        options.ref = target
        let outcome = try refusing {
            var gate = verification.gate
            gate.rollbackRequested = true
            return try CommandPipeline.compare(options, backend: backend, keepBackend: true, gate: gate, warnExpiry: reportOptions.warnExpiry, session: session)
                .apply(actor: "tether rollback", historyKind: .rollback, healthWindow: health.healthWindow)
        }
        try reportOptions.emit(outcome.report)
        if let failure = outcome.failure {
            Console.error(failure)
            throw ExitCode(1)
        }
    }
}

/// `tether report …`
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Work with saved reports.",
        subcommands: [MergeReports.self])
}

/// `tether report merge`
struct MergeReports: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Combine many devices' JSON reports into one fleet view: in sync, drifting, failing; by integration and by field.",
        discussion: "Example: tether report merge reports/*.json -o html --out fleet.html")

    @Argument(help: "JSON reports made with `tether drift --format json`, or folders of them (`tether run --report-dir`, collected from many devices).")
    var files: [String] = []

    @Option(name: [.customShort("o"), .customLong("output"), .customLong("format")], help: ArgumentHelp("json, markdown or html.", valueName: "format"))
    var format: FleetFormat = .markdown

    @Option(name: .customLong("out"), help: ArgumentHelp("Write to this file instead of standard output.", valueName: "file"))
    var output: String?

    enum FleetFormat: String, ExpressibleByArgument, CaseIterable { case json, markdown, html }

    func validate() throws {
        if files.isEmpty { throw ValidationError("give the reports to merge, e.g. `tether report merge a.json b.json --format html`") }
    }

    func run() throws {
        var paths: [String] = []
        for file in files {
            var isFolder = false
            if FileManager.default.fileExists(atPath: file, isDirectory: &isFolder), isFolder {
                let found = ((try? FileManager.default.subpathsOfDirectory(atPath: file)) ?? [])
                    .filter { $0.hasSuffix(".json") }.sorted().map { URL(fileURLWithPath: file).appending(path: $0).path }
                if found.isEmpty { throw CommandError("error: \(file) holds no JSON report") }
                paths += found
            } else {
                paths.append(file)
            }
        }
        let inputs = try paths.map { (name: $0, data: Data(try readFile($0))) }
        let fleet: FleetReport
        do {
            fleet = try FleetReport(files: inputs)
        } catch let error as FleetError {
            throw CommandError("error: \(error.description)")
        }
        let text: String
        switch format {
        case .json: text = fleet.json()
        case .markdown: text = fleet.markdown()
        case .html: text = fleet.html()
        }
        if let output {
            do { try text.write(toFile: output, atomically: true, encoding: .utf8) } catch {
                throw CommandError("error: cannot write \(output): \(reason(of: error))")
            }
            Console.error("Wrote the fleet view (\(fleet.summary)) to \(output).")
        } else {
            Console.out(text)
        }
    }
}

/// `tether agent snapshot`
struct Snapshot: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Print the agent's actual state as JSON (no secrets), for `tether plan --against`.",
        discussion: "Example: tether agent snapshot > device.json; then, anywhere: tether plan --repo . --against device.json")

    @OptionGroup var device: DeviceOptions
    @OptionGroup var backend: BackendOptions

    func run() throws {
        let agent = try backend.open(device)
        let snapshot = try agentCall {
            AgentSnapshot(host: ProcessInfo.processInfo.hostName, labels: try device.deviceLabels(),
                          state: try agent.state(), applied: try agent.appliedState())
        }
        Console.out(snapshot.json())
    }
}
