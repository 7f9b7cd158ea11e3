import ArgumentParser
import ConnectorCore
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
            Checks YAML syntax, fields (with a did-you-mean for unknown ones), types, ranges, unique
            policy names, observe/ignore lists and exceptions, that each serverCertificate exists in the
            same commit and is a certificate, and that no two policies of equal priority that could
            select one device disagree. Client containers live on devices, so `plan` checks them.
            Exit 0 when valid, 1 when not.
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

/// What plan, apply and drift share: read the revision, resolve it for this device (or for a
/// snapshot of one), compare three ways.
struct Comparison {
    let revision: PolicyRevision
    let labels: [String: String]
    let host: String
    let desired: ResolvedDesiredState
    let agent: Agent?
    let applied: AppliedState
    let plan: Plan
    let notes: [String]

    init(_ source: SourceOptions, warnExpiry: Int, snapshot: AgentSnapshot? = nil) throws {
        revision = try source.revision()
        try revision.requireValid()
        var notes: [String] = []
        if let snapshot {
            labels = snapshot.labels.merging(try source.device.labelOverrides()) { _, new in new }
            host = snapshot.host
        } else {
            labels = try source.device.deviceLabels()
            host = ProcessInfo.processInfo.hostName
        }
        let state = try revision.policySet.desiredState(labels: labels)
        var resolved = try Reconciler.resolve(state, revision: revision, deviceDirectory: source.device.stateDirectoryURL)
        let actual: AgentState
        if let snapshot {
            agent = nil
            actual = snapshot.state
            applied = snapshot.applied
            let offline = resolved.unresolved.keys.filter { if case .clientCertificate = $0 { return true }; return false }
            if !offline.isEmpty {
                notes.append("not checked offline: " + offline.sorted().map(\.description).joined(separator: ", ")
                             + " (client containers live on the device, not in the snapshot)")
                resolved = resolved.dropping(unresolved: offline)
            }
        } else {
            let agent = try source.device.agent()
            self.agent = agent
            actual = try agentCall { try agent.state() }
            applied = try agentCall { try agent.appliedState() }
        }
        desired = resolved
        plan = Reconciler.plan(desired: resolved, actual: actual, applied: applied, warnExpiryDays: warnExpiry)
        self.notes = notes
    }

    func report(_ kind: Report.Kind, plan: Plan? = nil, applied didApply: Bool = false, notes extra: [String] = []) -> Report {
        Report(kind: kind, revision: revision, host: host, labels: labels, desired: desired, plan: plan ?? self.plan,
               applied: didApply, lastApplied: (applied.revision, applied.at), notes: notes + extra)
    }

    func history(_ source: SourceOptions) throws -> History {
        do {
            return try History(stateDirectory: source.device.stateDirectoryURL)
        } catch {
            throw CommandError("error: history store: \(error)")
        }
    }
}

/// `tether plan`
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show what apply would change on this agent, in the order it would change it.",
        discussion: """
            Each finding says why it exists: pending (git changed), drift (the agent was changed outside
            Tether), conflict (both), expiring/expired certificates, unenforceable values, and differences
            accepted by exceptions. With --against device.json (from `tether agent snapshot`) the plan is made
            offline, for a pull request's CI, without access to any endpoint.
            Exit 0 when there is nothing to do, 2 when there are changes, 1 on error
            (like terraform plan -detailed-exitcode).
            """)

    @OptionGroup var source: SourceOptions
    @OptionGroup var reportOptions: ReportOptions

    @Option(help: ArgumentHelp("Plan offline against an agent snapshot instead of this device's agent.", valueName: "snapshot.json"))
    var against: String?

    func run() throws {
        let snapshot = try against.map { path in
            try agentCall { try AgentSnapshot(json: Data(try readFile(path)), source: path) }
        }
        let comparison = try Comparison(source, warnExpiry: reportOptions.warnExpiry, snapshot: snapshot)
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
            Keys marked observe or covered by an active exception are reported, never changed.
            Exit 0 when applied (or nothing to do), 1 on error; after an error the agent is exactly as it was.
            With --detailed-exitcodes the exit code is a bitmask: 2 changes were made, 4 the apply failed
            (nothing changed), 8 verification refused the revision.
            """)

    @OptionGroup var source: SourceOptions
    @OptionGroup var reportOptions: ReportOptions

    @Flag(help: "Exit with a bitmask: 2 changes made, 4 failures, 8 verification refused.")
    var detailedExitcodes = false

    @OptionGroup var health: HealthWindowOptions

    func run() throws {
        let comparison = try Comparison(source, warnExpiry: reportOptions.warnExpiry)
        let outcome = try Applier(comparison: comparison, source: source, healthWindow: health.healthWindow).apply(actor: "tether apply")
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

/// Applies a comparison's plan, checks the changed connectors' health when asked, and records
/// the outcome in the history.
struct Applier {
    let comparison: Comparison
    let source: SourceOptions
    var healthWindow: Double = 0

    struct Outcome {
        let report: Report
        let changed: Bool
        /// The error, when the apply failed (and nothing changed).
        let failure: String?
    }

    func apply(actor: String, historyKind: String = "apply", notes: [String] = []) throws -> Outcome {
        let plan = comparison.plan
        let history = try comparison.history(source)
        let revision = comparison.revision.commit.id
        if !plan.unenforceable.isEmpty {
            try? history.record(HistoryEntry(kind: historyKind, revision: revision, result: "failed", findings: plan.findings.count,
                                             detail: plan.unenforceable.map(\.description).joined(separator: "; ")))
            throw PolicyProblems(plan.unenforceable)
        }
        guard let agent = comparison.agent else { throw CommandError("error: no agent to apply to") }
        let restorePoint = try agentCall { try RestorePoint(agent: agent) }
        do {
            try plan.apply(to: agent, actor: "\(actor) \(revision.prefix(12))", revision: revision)
        } catch {
            let message = "error: apply failed, nothing was changed: \(error)"
            try? history.record(HistoryEntry(kind: historyKind, revision: revision, result: "failed", findings: plan.findings.count, detail: "\(error)"))
            return Outcome(report: comparison.report(.apply, applied: false, notes: notes), changed: false, failure: message)
        }
        if healthWindow > 0, !plan.isEmpty {
            let running = try agentCall { try agent.state().running }
            let changed = HealthWindow.connectors(changedBy: plan.steps, running: running)
            let runtime = try agentCall { try ConnectorRuntime(agent: agent) }
            let failed = HealthWindow.check(changed, runtime: runtime, seconds: healthWindow)
            if !failed.isEmpty {
                let reasons = failed.map { "\($0.integration.displayName) did not reach its server (\($0.errorKind ?? "error"): \($0.summary))" }
                do {
                    try restorePoint.restore(agent, undoing: plan.steps, actor: "tether apply health window")
                } catch {
                    let message = "error: the health window failed (\(reasons.joined(separator: "; "))) and restoring the previous state failed too: \(error)"
                    try? history.record(HistoryEntry(kind: historyKind, revision: revision, result: "failed", findings: plan.findings.count, detail: message))
                    return Outcome(report: comparison.report(.apply, applied: true, notes: notes), changed: true, failure: message)
                }
                let note = "Health window (\(Int(healthWindow)) s): " + reasons.joined(separator: "; ") + ". The previous state was restored."
                try? history.record(HistoryEntry(kind: historyKind, revision: revision, result: "rolled-back", findings: plan.findings.count,
                                                 detail: reasons.joined(separator: "; ")))
                return Outcome(report: comparison.report(.apply, applied: false, notes: notes + [note]), changed: false,
                               failure: "error: apply rolled back: " + reasons.joined(separator: "; "))
            }
        }
        try? history.record(HistoryEntry(kind: historyKind, revision: revision, result: plan.isEmpty ? "nothing-to-do" : "applied",
                                         findings: plan.findings.count,
                                         detail: plan.steps.map { $0.key.description }.joined(separator: ", ")))
        return Outcome(report: comparison.report(.apply, applied: !plan.isEmpty, notes: notes), changed: !plan.isEmpty, failure: nil)
    }
}

/// `tether drift`
struct DriftCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drift",
        abstract: "Report every managed setting where the agent differs from the revision: why, declared where, changed by whom, noticed when.",
        discussion: """
            Kinds: pending (git changed, the agent has not caught up), drift (changed outside Tether),
            conflict (both changed), expiring/expired certificates (--warn-expiry days), unenforceable
            (cannot be applied here, with the reason), excepted (accepted by an exception in git) and
            exception-expired. Each detection is recorded in `tether history`.
            Exit 0 when in sync (exceptions aside), 2 otherwise, 1 on error.
            """)

    @OptionGroup var source: SourceOptions
    @OptionGroup var reportOptions: ReportOptions

    func run() throws {
        let comparison = try Comparison(source, warnExpiry: reportOptions.warnExpiry)
        var plan = comparison.plan
        let history = try comparison.history(source)
        var differences: [String: String] = [:]
        for finding in plan.findings where [.pending, .drift, .conflict, .unenforceable].contains(finding.kind) {
            differences[finding.key.description] = "\(finding.kind.rawValue):\(finding.actual)"
        }
        let noticed = (try? history.notice(differences)) ?? [:]
        for index in plan.findings.indices {
            plan.findings[index].noticedAt = noticed[plan.findings[index].key.description]
        }
        var report = comparison.report(.drift, plan: plan)
        if let agent = comparison.agent, let runtime = try? ConnectorRuntime(agent: agent) {
            report.health = (try? runtime.status()) ?? []
        }
        try? history.record(HistoryEntry(kind: "drift", revision: report.revision, result: report.inSync ? "in-sync" : "drift",
                                         findings: plan.findings.filter { $0.kind.isProblem }.count,
                                         detail: plan.findings.map { "\($0.key) \($0.kind.rawValue)" }.joined(separator: ", ")))
        try reportOptions.emit(report)
        if !report.inSync { throw ExitCode(2) }
    }
}
