import AgentInterface
import ArgumentParser
import Controller
import EmbeddedAgent
import FoundationEssentials
import GitSource
import IntegrationModel
import KESLAgent
import Planner
import Policy
import PolicySource
import Reconciler
import Reports

/// `tether validate`
struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check every policy file of a revision and print every problem as FILE:LINE:COLUMN: message.",
        discussion: """
            Reads a commit (never the working tree); with --staged, the files staged in the index, so a pre-commit hook checks what the next commit will hold (see .pre-commit-hooks.yaml). Checks YAML syntax, fields (with a did-you-mean for unknown ones), types, ranges, unique policy names, observe/ignore lists and exceptions, that each serverCertificate exists in the same commit and is a certificate, and that no two policies of equal priority that could select one device disagree. Client containers live on devices, so `plan` checks them. Exit 0 when valid, 1 when not.
            """)

    @OptionGroup var source: SourceOptions

    @Flag(help: "Check the files staged in the index (what the next commit will hold), for a pre-commit hook. Needs a local repository.")
    var staged = false

    @OptionGroup var output: OutputOptions

    func validate() throws {
        if staged && GitRepository.isRemote(source.repo) {
            throw ValidationError("--staged reads the index of a local repository; give its path with --repo, for example --repo .")
        }
    }

    func run() throws {
        guard output.isJSON else { return try check() }
        // For scripts: every problem with its file, line, column and code; exit 1 when there are any.
        var problems: [PolicyProblem] = []
        do {
            try check(quiet: true)
        } catch let found as PolicyProblems {
            problems = found.problems
        }
        let document = JSONValue.object([
            "valid": .bool(problems.isEmpty),
            "problems": .array(problems.map { problem in
                .object(["file": .string(problem.location.file), "line": .number(Double(problem.location.line)),
                         "column": .number(Double(problem.location.column)), "code": .string(problem.code), "message": .string(problem.message)])
            }),
        ])
        Console.out(rendered: JSONReport.serialize(document))
        if !problems.isEmpty { throw ExitCode(1) }
    }

    private func check(quiet: Bool = false) throws {
        let revision: PolicyRevision
        if staged {
            do {
                revision = try PolicyRevision(spec: source.spec, repository: try source.repository(), commit: .index)
            } catch let error as SourceError {
                throw CommandError("error: \(error.message)")
            }
        } else {
            revision = try source.revision()
        }
        let problems = revision.validate()
        if !problems.isEmpty { throw PolicyProblems(problems) }
        guard !quiet else { return }
        let count = revision.policySet.policies.count
        let place = staged ? "staged in the index" : "at revision \(revision.commit.id.prefix(12))"
        Console.out("Valid: \(count) polic\(count == 1 ? "y" : "ies") in \(revision.fileCount) file\(revision.fileCount == 1 ? "" : "s") \(place) (\(source.path)/).")
    }
}

/// How the commands reach the one driver (`Driver` in Reconciler): the agent the options
/// choose, the revision the source options name, warnings on standard error, and the
/// pipeline's errors as one-line messages.
enum CommandPipeline {
    /// Compares the revision with this device's agent. `keepBackend`: the command changes the
    /// agent, so the backend options are kept in agent.conf — after `require` has refused what
    /// the chosen backend cannot do, so a refused command changes nothing.
    static func compare(_ source: SourceOptions, backend: BackendOptions, keepBackend: Bool = false, gate: RevisionGate, warnExpiry: Int,
                        prune: Bool = false, require: (AgentBackend.Type) throws -> Void = { _ in }, session opened: AgentSession? = nil) throws -> Reconciliation {
        try mappingErrors {
            let repository = try source.repository()
            let choice = try backend.choice(source.device)
            do {
                try require(choice.backendType)
            } catch let unsupported as UnsupportedOption {
                throw CommandError("error: \(unsupported.message)")
            }
            if keepBackend { try backend.keep(choice, in: source.device) }
            let session = try opened ?? agentCall { try AgentSession(choice, stateDirectory: source.device.stateDirectoryURL) }
            let labels = try source.device.deviceLabels()
            noteLabelOverrides(source)
            return try Driver(gate: gate, warn: warn).compare(source.spec, repository: repository, session: session, labels: labels,
                                                             host: ProcessInfo.processInfo.hostName, warnExpiryDays: warnExpiry, prune: prune)
        }
    }

    /// Compares the revision offline with an agent snapshot: nothing on this machine is opened.
    static func compareOffline(_ source: SourceOptions, snapshot: AgentSnapshot, gate: RevisionGate, warnExpiry: Int, prune: Bool) throws -> OfflineComparison {
        try mappingErrors {
            let repository = try source.repository()
            let labels = snapshot.labels.merging(try source.device.labelOverrides()) { _, new in new }
            noteLabelOverrides(source)
            return try Driver(gate: gate, warn: warn).compareOffline(source.spec, repository: repository, snapshot: snapshot, labels: labels,
                                                                    deviceDirectory: source.device.stateDirectoryURL, warnExpiryDays: warnExpiry, prune: prune)
        }
    }

    private static func warn(_ warning: String) { Console.error("warning: \(warning)") }

    private static func noteLabelOverrides(_ source: SourceOptions) {
        if !source.device.labels.isEmpty {
            Console.error("note: --label \(source.device.labels.joined(separator: " --label ")) is for this run only; keep labels with `tether agent labels set`")
        }
    }

    /// The agent's refusals as `agentCall` words them; the source's by their message.
    private static func mappingErrors<T>(_ body: () throws -> T) throws -> T {
        do {
            return try agentCall(body)
        } catch let error as SourceError {
            throw CommandError("error: \(error.message)")
        }
    }
}

extension RevisionRefused {
    /// What the commands print: the refusal, and that nothing changed.
    var commandMessage: String {
        switch reason {
        case .verification: return "error: verification refused the revision, nothing was changed: \(message)"
        case .rollback: return "error: \(message)"
        }
    }
}

/// Runs `body`, turning a refused revision into its message (exit 1).
func refusing<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let refused as RevisionRefused {
        throw CommandError(refused.commandMessage)
    }
}

/// `tether plan`
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show what apply would change on this agent, in the order it would change it.",
        discussion: """
            Each finding says why it exists: pending (git changed), drift (the agent was changed outside Tether), conflict (both), expiring/expired certificates, unenforceable values, and differences accepted by exceptions. With --against device.json (from `tether agent snapshot`) the plan is made offline, for a pull request's CI, without access to any endpoint. Exit 0 when the plan was made, 1 on error (a refused revision too); with --detailed-exitcode, as terraform plan: 0 nothing to do, 2 changes, 1 error.
            """)

    @OptionGroup var source: SourceOptions
    @OptionGroup var backend: BackendOptions
    @OptionGroup var reportOptions: ReportOptions

    @Option(help: ArgumentHelp("Plan offline against an agent snapshot instead of this device's agent (- for standard input).", valueName: "snapshot.json"))
    var against: String?

    @OptionGroup var verification: VerifyOptions

    @Flag(help: "Exit 2 when there are changes (0 nothing to do, 1 error), as terraform plan -detailed-exitcode.")
    var detailedExitcode = false

    @Flag(help: "Plan to reset released settings (managed before, declared by no policy now) to the vendor default.")
    var prune = false

    @Option(help: ArgumentHelp("Also save the plan to this file, for `tether apply --plan-file FILE` to apply exactly (as terraform plan -out).", valueName: "file"))
    var planFile: String?

    func validate() throws {
        if planFile != nil, against != nil {
            throw ValidationError("--plan-file saves a plan to apply on this device; a plan --against a snapshot cannot be applied here (drop one of them)")
        }
    }

    func run() throws {
        let plan: Plan
        if let against {
            let snapshot = try agentCall { try AgentSnapshot(json: Data(try readFile(against)), source: against) }
            let comparison = try refusing {
                try CommandPipeline.compareOffline(source, snapshot: snapshot, gate: verification.gate, warnExpiry: reportOptions.warnExpiry, prune: prune)
            }
            plan = comparison.plan
            var report = comparison.report()
            if against != "-" { report.device = String((against.split(separator: "/").last ?? "").split(separator: ".").first ?? "") }
            try reportOptions.emit(report)
        } else if !source.device.stateDirectoryExists, try backend.choice(source.device).kind == .embedded {
            if planFile != nil { throw CommandError("error: there is no agent at \(source.device.stateDirectory) to save a plan for; apply once, or drop --plan-file") }
            // No state directory: plan against a fresh agent, and write nothing.
            Console.error("note: there is no agent state at \(source.device.stateDirectory): planned against a fresh agent; nothing was written")
            var fresh = AgentState.initial
            fresh.fillDefaults()
            let snapshot = AgentSnapshot(host: ProcessInfo.processInfo.hostName, labels: [:], state: fresh, applied: .none)
            let comparison = try refusing {
                try CommandPipeline.compareOffline(source, snapshot: snapshot, gate: verification.gate, warnExpiry: reportOptions.warnExpiry, prune: prune)
            }
            plan = comparison.plan
            try plan.requireEnforceable()
            try reportOptions.emit(comparison.report())
        } else {
            let comparison = try refusing {
                try CommandPipeline.compare(source, backend: backend, gate: verification.readOnlyGate, warnExpiry: reportOptions.warnExpiry, prune: prune)
            }
            plan = comparison.plan
            try plan.requireEnforceable()
            try reportOptions.emit(comparison.report(.plan))
            if let planFile {
                let spec = comparison.report(.plan).source
                let saved = comparison.saved(tether: Tether.version, repository: spec.displayRepository, ref: spec.ref ?? "HEAD")
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                do {
                    try (try encoder.encode(saved) + Data("\n".utf8)).write(to: URL(fileURLWithPath: planFile), options: .atomic)
                } catch {
                    throw CommandError("error: the plan cannot be saved to \(planFile): \(error)")
                }
                Console.error("Saved the plan (\(saved.steps.count) step\(saved.steps.count == 1 ? "" : "s")) to \(planFile): apply exactly it with tether apply --plan-file \(planFile)")
            }
        }
        if detailedExitcode && (!plan.isEmpty || !plan.unenforceable.isEmpty) { throw ExitCode(2) }
    }
}

/// `tether apply`
struct ApplyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Make the agent match the revision: every change in one transaction, or none.",
        discussion: """
            Keys marked observe or covered by an active exception are reported, never changed. Exit 0 when applied (or nothing to do), 1 on error; after an error the agent is exactly as it was. With --detailed-exitcodes the exit code is a bitmask: 2 changes were made, 4 the apply failed (alone: nothing changed; 6: it failed after changing the agent, and the message says what stays), 8 verification or anti-rollback refused the revision. A revision that does not descend from the last applied one is refused: go back with `tether rollback`, or with a policy that says spec.allowRollback: true.
            """)

    @OptionGroup var source: SourceOptions
    @OptionGroup var backend: BackendOptions
    @OptionGroup var reportOptions: ReportOptions

    @Flag(help: "Exit with a bitmask: 2 changes made, 4 failures, 8 verification or anti-rollback refused.")
    var detailedExitcodes = false

    @OptionGroup var health: HealthWindowOptions

    @OptionGroup var verification: VerifyOptions

    @Flag(help: "Reset released settings (managed before, declared by no policy now) to the vendor default.")
    var prune = false

    @Option(help: ArgumentHelp("Apply exactly the plan `tether plan --plan-file FILE` saved, and nothing if the revision, the agent or the steps moved since (exit 1).", valueName: "file"))
    var planFile: String?

    /// The saved plan, read and checked before anything is opened.
    private func savedPlan() throws -> SavedPlan? {
        guard let planFile else { return nil }
        let saved: SavedPlan
        do {
            saved = try JSONDecoder().decode(SavedPlan.self, from: Data(try readFile(planFile)))
        } catch let error as CommandError {
            throw error
        } catch {
            throw CommandError("error: \(planFile) is not a plan tether plan --plan-file saved: \(error)")
        }
        guard saved.format == SavedPlan.format else { throw CommandError("error: \(planFile) is a \(saved.format) plan; this tether reads \(SavedPlan.format)") }
        guard saved.tether == Tether.version else {
            throw CommandError("error: \(planFile) was planned by tether \(saved.tether), this is \(Tether.version): plan again with this one")
        }
        if prune && !saved.prune { throw CommandError("error: \(planFile) was planned without --prune: plan again with it, or drop --prune") }
        return saved
    }

    func run() throws {
        let outcome: Reconciliation.ApplyOutcome
        let saved = try savedPlan()
        do {
            let comparison = try CommandPipeline.compare(source, backend: backend, keepBackend: true, gate: verification.gate,
                                                         warnExpiry: reportOptions.warnExpiry, prune: saved?.prune ?? prune, require: health.requireSupport)
            if let saved, let planFile {
                let spec = comparison.report(.plan).source
                guard saved.repository == spec.displayRepository else {
                    throw CommandError("error: \(planFile) is a plan for \(saved.repository), not \(spec.displayRepository); nothing was changed")
                }
                guard saved.revision == comparison.revision.commit.id else {
                    throw CommandError("error: \(planFile) is a plan for revision \(saved.revision.prefix(12)); the ref is at \(comparison.revision.commit.id.prefix(12)) now. Nothing was changed: run tether plan --plan-file \(planFile) again and review it")
                }
            }
            outcome = try comparison.apply(actor: "tether apply", healthWindow: health.healthWindow, saved: saved)
            // A change that a crash cut short was undone first (a backend that can): say what it left.
            for note in comparison.session.backend.recoveryNotes { Console.error("warning: \(note)") }
        } catch let refused as RevisionRefused {
            Console.error(refused.commandMessage)
            throw ExitCode(detailedExitcodes ? 8 : 1)
        }
        try reportOptions.emit(outcome.report)
        if let failure = outcome.failure {
            Console.error(failure)
            throw ExitCode(detailedExitcodes ? (outcome.changed ? 6 : 4) : 1)
        }
        if detailedExitcodes && outcome.changed { throw ExitCode(2) }
    }
}

/// A number of seconds from the command line or the configuration file: finite and within its
/// range before anything starts (NaN, infinity and 1e300 never reach a timer).
enum Seconds {
    static let hour: Double = 3600
    static let week: Double = 7 * 86_400

    /// Every option that takes seconds (its long name), its range and an example: the one table
    /// the command line and the configuration file are checked against.
    static let options: [String: (range: ClosedRange<Double>, example: Int)] = [
        "interval": (0...week, 300), "max-backoff": (0...week, 3600), "fetch-timeout": (0.001...hour, 60), "health-window": (0...hour, 30),
        "notify-spread": (0...hour, 10),
    ]

    /// The shortest interval a run without an end (no --once, no --cycles) may have.
    static let shortestUnboundedInterval: Double = 1

    /// Checks `value` of the option `name` (`interval`) against its range.
    static func check(_ value: Double, _ name: String) throws {
        guard let (range, example) = options[name] else { return }
        guard value.isFinite, range.contains(value) else {
            throw ValidationError("--\(name) takes seconds from \(Self.text(range.lowerBound)) to \(Self.text(range.upperBound)), not \(value); for example --\(name) \(example)")
        }
    }

    private static func text(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}

/// `--health-window SECONDS`.
struct HealthWindowOptions: ParsableArguments {
    @Option(help: ArgumentHelp("After applying, sync each changed connector for up to this many seconds; if one never reaches its server, restore the previous state. 0: off.", valueName: "seconds"))
    var healthWindow: Double = 0

    func validate() throws {
        try Seconds.check(healthWindow, "health-window")
    }

    /// Refuses a health window the chosen backend cannot run, before anything changes.
    func requireSupport(_ backend: AgentBackend.Type) throws {
        if healthWindow > 0 { try HealthWindow.requireSupport(by: backend) }
    }
}

/// `tether drift`
struct DriftCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drift",
        abstract: "Report every managed setting where the agent differs from the revision: why, declared where, changed by whom, noticed when.",
        discussion: """
            Kinds: pending (git changed, the agent has not caught up), drift (changed outside Tether), conflict (both changed), expiring/expired certificates (--warn-expiry days), unenforceable (cannot be applied here, with the reason), excepted (accepted by an exception in git) and exception-expired. A detection that differs from the last one is recorded in `tether history`. Exit 0 when in sync (exceptions aside), 2 otherwise, 1 on error.
            """)

    @OptionGroup var source: SourceOptions
    @OptionGroup var backend: BackendOptions
    @OptionGroup var reportOptions: ReportOptions
    @OptionGroup var verification: VerifyOptions

    func run() throws {
        try source.device.requireAgentState()
        let report = try refusing { try CommandPipeline.compare(source, backend: backend, gate: verification.readOnlyGate, warnExpiry: reportOptions.warnExpiry) }
            .detectDrift(onlyChanges: true)
        try reportOptions.emit(report)
        if !report.inSync { throw ExitCode(2) }
    }
}

/// `--verify` and `--allowed-signers`: which commits must be signed by an allowed signer before
/// any of the revision's files is read.
struct VerifyOptions: ParsableArguments {
    @Option(help: "Signature verification before the revision is read: off, head (the revision) or range (every commit since the last applied one).")
    var verify: VerifyMode = .off

    @Option(help: ArgumentHelp("The allowed-signers file (ssh-keygen's format) for --verify.", valueName: "file"))
    var allowedSigners: String?

    func validate() throws {
        if verify != .off && allowedSigners == nil { throw ValidationError("--verify \(verify.rawValue) needs --allowed-signers FILE (ssh-keygen's allowed_signers format)") }
    }

    var gate: RevisionGate { RevisionGate(verify: verify, allowedSigners: allowedSigners) }

    /// For `plan` and `drift`, which change nothing: a rollback is planned with a note, not refused.
    var readOnlyGate: RevisionGate {
        var gate = self.gate
        gate.rollbackIsNote = true
        return gate
    }
}
