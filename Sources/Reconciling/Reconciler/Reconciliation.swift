import AgentInterface
import ConnectorCore
import EmbeddedAgent
import Foundation
import IntegrationModel
import Planner
import Policy
import PolicySource

/// One comparison of a revision with a device (its agent, or a snapshot of one), ready to
/// report or apply. What `plan`, `apply`, `drift`, `rollback` and the controller share.
package struct Reconciliation {
    package let revision: PolicyRevision
    package let labels: [String: String]
    package let host: String
    package let desired: ResolvedDesiredState
    /// The agent, when comparing with a device (nil for a snapshot).
    package let agent: AgentBackend?
    package let applied: AppliedState
    package let plan: Plan
    package let notes: [String]
    /// What the revision had to pass; re-checked inside the write transaction.
    package let gate: RevisionGate
    let history: History?
    let warnExpiryDays: Int
    /// Whether released settings are reset to the vendor default (`--prune`).
    let prune: Bool

    /// Compares `revision` with the agent in `stateDirectory` (or `agent`, already opened there),
    /// or with `snapshot` when given (then nothing on this machine is opened or changed).
    /// `notes` are carried into every report (a deliberate rollback says so).
    /// `desired`, when given, is this revision's desired state for these labels, resolved
    /// earlier (the controller keeps it while neither the revision nor the device files move);
    /// `history` an already opened history.
    package init(revision: PolicyRevision, gate: RevisionGate = .standard, labels: [String: String], host: String,
                stateDirectory: URL, agent: AgentBackend? = nil, history: History? = nil, snapshot: AgentSnapshot? = nil,
                desired: ResolvedDesiredState? = nil, notes: [String] = [], warnExpiryDays: Int = 30, prune: Bool = false) throws {
        try revision.requireValid()
        self.revision = revision
        self.gate = gate
        self.labels = labels
        self.host = host
        self.warnExpiryDays = warnExpiryDays
        self.prune = prune
        var notes = notes
        var resolved = try desired ?? DesiredStateResolver.resolve(try revision.policySet.desiredState(labels: labels),
                                                         revision: revision, deviceDirectory: stateDirectory)
        let actual: AgentState
        if let snapshot {
            self.agent = nil
            self.history = nil
            actual = snapshot.state
            applied = snapshot.applied
            let offline = resolved.unresolved.keys.filter { if case .clientCertificate = $0 { return true }; return false }
            if !offline.isEmpty {
                notes.append("not checked offline: " + offline.sorted().map(\.description).joined(separator: ", ")
                             + " (client containers live on the device, not in the snapshot)")
                resolved = resolved.dropping(unresolved: offline)
            }
        } else {
            let agent = try agent ?? Agent(stateDirectory: stateDirectory.path)
            self.agent = agent
            self.history = try history ?? History(stateDirectory: stateDirectory)
            actual = try agent.state()
            applied = try agent.appliedState()
        }
        self.desired = resolved
        plan = Planner.plan(desired: resolved, actual: actual, applied: applied, warnExpiryDays: warnExpiryDays, prune: prune)
        self.notes = notes
    }

    /// A report of this comparison.
    package func report(_ kind: Report.Kind, plan: Plan? = nil, applied didApply: Bool = false, notes extra: [String] = []) -> Report {
        Report(kind: kind, revision: revision, host: host, labels: labels, desired: desired, plan: plan ?? self.plan,
               applied: didApply, lastApplied: (applied.revision, applied.at), notes: notes + extra)
    }

    /// What an apply did.
    package struct ApplyOutcome {
        package let report: Report
        package let changed: Bool
        /// The error, when the apply failed or was rolled back (the agent is then as it was).
        package let failure: String?
    }

    /// Plans again and applies inside one write transaction, with the history entry in the same
    /// transaction: overlapping applies serialize, and the revision recorded as applied is always
    /// the one the agent holds (a kill at any point leaves both as before, or both as after).
    /// Inside the transaction the revision is vouched for again (signatures, ancestry) against
    /// the revision the agent holds then, before anything changes.
    /// With a health window, syncs each changed connector for up to that many seconds and
    /// restores the previous state when one never reaches its server. Throws `PolicyProblems`
    /// for values that cannot be applied here and `RevisionRefused`; nothing is changed then.
    package func apply(actor: String, historyKind: String = "apply", notes: [String] = [], healthWindow: Double = 0) throws -> ApplyOutcome {
        let revisionId = revision.commit.id
        guard let agent, let history else { throw SourceError(message: "an offline comparison cannot be applied") }
        var notes = notes
        let done: (plan: Plan, restorePoint: RestorePoint, after: AgentState)
        do {
            done = try committing(agent, actor: "\(actor) \(revisionId.prefix(12))") {
                let lastApplied = try agent.appliedState()
                // Vouched for again against what the agent holds now, under the write lock: another
                // apply may have moved it since this revision was checked (never trust the earlier read).
                for note in try gate.recheck(revision, lastApplied: lastApplied.revision) where !notes.contains(note) && !self.notes.contains(note) {
                    notes.append(note)
                }
                let plan = Planner.plan(desired: desired, actual: try agent.state(), applied: lastApplied, warnExpiryDays: warnExpiryDays, prune: prune)
                if !plan.unenforceable.isEmpty { throw PolicyProblems(plan.unenforceable) }
                let restorePoint = try RestorePoint(agent: agent)
                try plan.apply(to: agent, revision: revisionId)
                return ((plan, restorePoint, try agent.state()),
                        HistoryEntry(kind: historyKind, revision: revisionId, result: plan.isEmpty ? "nothing-to-do" : "applied",
                                     findings: plan.findings.count, detail: plan.steps.map { $0.key.description }.joined(separator: ", "),
                                     labels: labels))
            }
        } catch let problems as PolicyProblems {
            try? history.record(HistoryEntry(kind: historyKind, revision: revisionId, result: "failed", findings: plan.findings.count,
                                             detail: problems.problems.map(\.description).joined(separator: "; ")))
            throw problems
        } catch let refused as RevisionRefused {
            try? history.record(HistoryEntry(kind: historyKind, revision: revisionId, result: refused.reason.rawValue, findings: 0, detail: refused.message))
            throw refused
        } catch let undone as UndoneChange {
            // An agent that cannot roll back undid what it could; the rest stays changed.
            try? history.record(HistoryEntry(kind: historyKind, revision: revisionId, result: "failed", findings: plan.findings.count, detail: "\(undone)"))
            return ApplyOutcome(report: report(.apply, applied: false, notes: notes), changed: true, failure: "error: apply failed: \(undone)")
        } catch {
            try? history.record(HistoryEntry(kind: historyKind, revision: revisionId, result: "failed", findings: plan.findings.count, detail: "\(error)"))
            return ApplyOutcome(report: report(.apply, applied: false, notes: notes), changed: false,
                                failure: "error: apply failed, nothing was changed: \(error)")
        }
        let plan = done.plan
        if healthWindow > 0, !plan.isEmpty {
            let changed: [Integration]
            let runtime: ConnectorRuntime
            do {
                changed = HealthWindow.connectors(changedBy: plan.steps, running: try agent.state().running)
                guard let embedded = agent as? Agent else { throw SourceError(message: "this agent's connectors cannot be checked from here") }
                runtime = try ConnectorRuntime(agent: embedded)
            } catch {
                // The changes are committed: say so, and that their health could not be checked.
                let message = "error: applied, but the health window could not run: \(error)"
                try? history.record(HistoryEntry(kind: historyKind, revision: revisionId, result: "applied", findings: plan.findings.count, detail: message))
                return ApplyOutcome(report: report(.apply, plan: plan, applied: true, notes: notes), changed: true, failure: message)
            }
            let failed = HealthWindow.check(changed, runtime: runtime, seconds: healthWindow)
            if !failed.isEmpty {
                let reasons = failed.map { "\($0.integration.displayName) did not reach its server (\($0.errorKind ?? "error"): \($0.summary))" }
                do {
                    try committing(agent, actor: "\(actor) health window") {
                        // Only this apply's own changes are undone: when another apply or a local
                        // change came after it, restoring would undo theirs too.
                        guard try agent.appliedState().revision == revisionId, try agent.state().sameConfiguration(as: done.after) else {
                            throw ChangedSinceApply()
                        }
                        try done.restorePoint.restore(on: agent)
                        return ((), HistoryEntry(kind: historyKind, revision: revisionId, result: "rolled-back", findings: plan.findings.count,
                                                 detail: reasons.joined(separator: "; ")))
                    }
                } catch is ChangedSinceApply {
                    let message = "error: the health window failed (\(reasons.joined(separator: "; "))), but the agent was changed since this apply (another apply or a local change), so the previous state was not restored"
                    try? history.record(HistoryEntry(kind: historyKind, revision: revisionId, result: "failed", findings: plan.findings.count, detail: message))
                    return ApplyOutcome(report: report(.apply, plan: plan, applied: true, notes: notes), changed: true, failure: message)
                } catch {
                    let message = "error: the health window failed (\(reasons.joined(separator: "; "))) and restoring the previous state failed too: \(error)"
                    try? history.record(HistoryEntry(kind: historyKind, revision: revisionId, result: "failed", findings: plan.findings.count, detail: message))
                    return ApplyOutcome(report: report(.apply, plan: plan, applied: true, notes: notes), changed: true, failure: message)
                }
                let note = "Health window (\(Int(healthWindow)) s): " + reasons.joined(separator: "; ") + ". The previous state was restored."
                return ApplyOutcome(report: report(.apply, plan: plan, applied: false, notes: notes + [note]), changed: false,
                                    failure: "error: apply rolled back: " + reasons.joined(separator: "; "))
            }
        }
        return ApplyOutcome(report: report(.apply, plan: plan, applied: !plan.isEmpty, notes: notes), changed: !plan.isEmpty, failure: nil)
    }

    /// Runs `body` as one change of `agent` and records the history entry it returns in the same
    /// commit when the agent's store can join it (the embedded agent: one SQLite transaction over
    /// both files), or right after the commit otherwise.
    private func committing<T>(_ agent: AgentBackend, actor: String, _ body: () throws -> (T, HistoryEntry)) throws -> T {
        if let embedded = agent as? Agent, let history {
            try embedded.attach(history.file, as: History.schema)
            return try embedded.transaction(actor: actor) { database in
                let (result, entry) = try body()
                try History.record(entry, into: database, schema: History.schema)
                return result
            }
        }
        let (result, entry) = try agent.transaction(actor: actor) { try body() }
        try history?.record(entry)
        return result
    }

    /// A warning when the labels differ from the ones the last apply used: another set of
    /// policies may now select this device.
    package var labelChange: String? {
        guard let history, let previous = try? history.lastAppliedLabels(), previous != labels else { return nil }
        func text(_ labels: [String: String]) -> String {
            labels.isEmpty ? "(none)" : labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
        }
        return "the labels differ from the last apply's (\(text(previous)) then, \(text(labels)) now): other policies may select this device"
    }

    /// Records a drift detection (noting when each difference was first seen) and returns its
    /// report, with connector health (from `runtime`, or the agent's connectors opened here).
    /// With `onlyChanges`, a detection that says what the last one said is not recorded again
    /// (the controller's steady state writes nothing).
    package func detectDrift(runtime: ConnectorRuntime? = nil, onlyChanges: Bool = false) -> Report {
        var plan = self.plan
        var differences: [String: String] = [:]
        for finding in plan.findings where [.pending, .drift, .conflict, .unenforceable].contains(finding.kind) {
            differences[finding.key.description] = "\(finding.kind.rawValue):\(finding.actual)"
        }
        let noticed = (try? history?.notice(differences)) ?? [:]
        for index in plan.findings.indices {
            plan.findings[index].noticedAt = noticed[plan.findings[index].key.description]
        }
        var report = self.report(.drift, plan: plan)
        if let agent = agent as? Agent, let runtime = try? runtime ?? ConnectorRuntime(agent: agent) {
            report.health = (try? runtime.status()) ?? []
            report.sensors = (try? runtime.sensorReports()) ?? []
        }
        let entry = HistoryEntry(kind: "drift", revision: report.revision, result: report.inSync ? "in-sync" : "drift",
                                 findings: plan.findings.filter { $0.kind.isProblem }.count,
                                 detail: plan.findings.map { "\($0.key) \($0.kind.rawValue)" }.joined(separator: ", "))
        if onlyChanges {
            try? history?.recordIfChanged(entry)
        } else {
            try? history?.record(entry)
        }
        return report
    }
}

/// A health window's restore found the agent changed by someone else since the apply.
private struct ChangedSinceApply: Error {}
