import ArgumentParser
import ConnectorCore
import Controller
import Foundation
import Policy
import Reconciler
import Reports

/// `tether validate`
struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check every policy file of a revision and print every problem as FILE:LINE:COLUMN: message.",
        discussion: """
            Checks YAML syntax, fields (with a did-you-mean for unknown ones), types, ranges, unique policy names, observe/ignore lists and exceptions, that each serverCertificate exists in the same commit and is a certificate, and that no two policies of equal priority that could select one device disagree. Client containers live on devices, so `plan` checks them. Exit 0 when valid, 1 when not.
            """)

    @OptionGroup var source: SourceOptions

    func run() throws {
        let revision = try source.revision()
        let problems = revision.validate()
        if !problems.isEmpty { throw PolicyProblems(problems) }
        let count = revision.policySet.policies.count
        Console.out("Valid: \(count) polic\(count == 1 ? "y" : "ies") in \(revision.fileCount) file\(revision.fileCount == 1 ? "" : "s") at revision \(revision.commit.id.prefix(12)) (\(source.path)/).")
    }
}

extension Reconciliation {
    /// Compares the revision the source options name with this device (or a snapshot).
    init(_ source: SourceOptions, warnExpiry: Int, snapshot: AgentSnapshot? = nil) throws {
        let revision = try source.revision()
        let labels: [String: String]
        if let snapshot {
            labels = snapshot.labels.merging(try source.device.labelOverrides()) { _, new in new }
        } else {
            labels = try source.device.deviceLabels()
        }
        do {
            try self.init(revision: revision, labels: labels, host: snapshot?.host ?? ProcessInfo.processInfo.hostName,
                          stateDirectory: source.device.stateDirectoryURL, snapshot: snapshot, warnExpiryDays: warnExpiry)
        } catch let error as AgentError {
            throw CommandError("error: \(error)")
        }
    }
}

/// `tether plan`
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show what apply would change on this agent, in the order it would change it.",
        discussion: """
            Each finding says why it exists: pending (git changed), drift (the agent was changed outside Tether), conflict (both), expiring/expired certificates, unenforceable values, and differences accepted by exceptions. With --against device.json (from `tether agent snapshot`) the plan is made offline, for a pull request's CI, without access to any endpoint. Exit 0 when there is nothing to do, 2 when there are changes, 1 on error (like terraform plan -detailed-exitcode).
            """)

    @OptionGroup var source: SourceOptions
    @OptionGroup var reportOptions: ReportOptions

    @Option(help: ArgumentHelp("Plan offline against an agent snapshot instead of this device's agent.", valueName: "snapshot.json"))
    var against: String?

    func run() throws {
        let snapshot = try against.map { path in
            try agentCall { try AgentSnapshot(json: Data(try readFile(path)), source: path) }
        }
        let comparison = try Reconciliation(source, warnExpiry: reportOptions.warnExpiry, snapshot: snapshot)
        if snapshot == nil, !comparison.plan.unenforceable.isEmpty { throw PolicyProblems(comparison.plan.unenforceable) }
        try reportOptions.emit(comparison.report(.plan))
        if !comparison.plan.isEmpty || !comparison.plan.unenforceable.isEmpty { throw ExitCode(2) }
    }
}

/// `tether apply`
struct ApplyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Make the agent match the revision: every change in one transaction, or none.",
        discussion: """
            Keys marked observe or covered by an active exception are reported, never changed. Exit 0 when applied (or nothing to do), 1 on error; after an error the agent is exactly as it was. With --detailed-exitcodes the exit code is a bitmask: 2 changes were made, 4 the apply failed (nothing changed), 8 verification refused the revision.
            """)

    @OptionGroup var source: SourceOptions
    @OptionGroup var reportOptions: ReportOptions

    @Flag(help: "Exit with a bitmask: 2 changes made, 4 failures, 8 verification refused.")
    var detailedExitcodes = false

    @OptionGroup var health: HealthWindowOptions

    @Option(help: "Signature verification before applying: off, head (the revision) or range (every commit since the last applied one).")
    var verify: VerifyMode = .off

    @Option(help: ArgumentHelp("The allowed-signers file (ssh-keygen's format) for --verify.", valueName: "file"))
    var allowedSigners: String?

    func validate() throws {
        if verify != .off && allowedSigners == nil { throw ValidationError("--verify \(verify.rawValue) needs --allowed-signers FILE (ssh-keygen's allowed_signers format)") }
    }

    func run() throws {
        let comparison = try Reconciliation(source, warnExpiry: reportOptions.warnExpiry)
        if case .refused(let reason) = CommitVerification.check(
            repository: comparison.revision.repository, head: comparison.revision.commit,
            lastApplied: comparison.applied.revision, mode: verify, allowedSigners: allowedSigners) {
            Console.error("error: verification refused the revision, nothing was changed: \(reason)")
            throw ExitCode(detailedExitcodes ? 8 : 1)
        }
        let outcome = try comparison.apply(actor: "tether apply", healthWindow: health.healthWindow)
        try reportOptions.emit(outcome.report)
        if let failure = outcome.failure {
            Console.error(failure)
            throw ExitCode(detailedExitcodes ? 4 : 1)
        }
        if detailedExitcodes && outcome.changed { throw ExitCode(2) }
    }
}

/// `--health-window SECONDS`.
struct HealthWindowOptions: ParsableArguments {
    @Option(help: ArgumentHelp("After applying, sync each changed connector for up to this many seconds; if one never reaches its server, restore the previous state. 0: off.", valueName: "seconds"))
    var healthWindow: Double = 0

    func validate() throws {
        if healthWindow < 0 { throw ValidationError("--health-window takes seconds, 0 or more; for example --health-window 30") }
    }
}

/// `tether drift`
struct DriftCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drift",
        abstract: "Report every managed setting where the agent differs from the revision: why, declared where, changed by whom, noticed when.",
        discussion: """
            Kinds: pending (git changed, the agent has not caught up), drift (changed outside Tether), conflict (both changed), expiring/expired certificates (--warn-expiry days), unenforceable (cannot be applied here, with the reason), excepted (accepted by an exception in git) and exception-expired. Each detection is recorded in `tether history`. Exit 0 when in sync (exceptions aside), 2 otherwise, 1 on error.
            """)

    @OptionGroup var source: SourceOptions
    @OptionGroup var reportOptions: ReportOptions

    func run() throws {
        let report = try Reconciliation(source, warnExpiry: reportOptions.warnExpiry).detectDrift()
        try reportOptions.emit(report)
        if !report.inSync { throw ExitCode(2) }
    }
}
