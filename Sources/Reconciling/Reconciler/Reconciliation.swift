import AgentInterface
import ConnectorCore
import FoundationEssentials
import IntegrationModel
import Planner
import Policy
import PolicySource

/// One comparison of a revision with this device's agent, ready to report or apply: what
/// `plan`, `apply`, `drift`, `rollback` and the controller share. Made by `Driver.compare`.
package struct Reconciliation {
    package let revision: PolicyRevision
    package let labels: [String: String]
    package let host: String
    package let desired: ResolvedDesiredState
    /// The agent, its history and what its backend can do.
    package let session: AgentSession
    package let applied: AppliedState
    /// The agent's state the plan was computed against.
    package let actual: AgentState
    package let plan: Plan
    package let notes: [String]
    /// Who signed the revision, when it was verified.
    package let signer: String?
    /// What the revision had to pass; re-checked inside the write transaction.
    package let gate: RevisionGate
    let warnExpiryDays: Int
    /// Whether released settings are reset to the vendor default (`--prune`).
    let prune: Bool

    /// Compares `desired` (this revision's desired state for these labels) with the agent of
    /// `session`. `notes` are carried into every report (a deliberate rollback says so);
    /// `applied` is the agent's applied state when the caller read it already.
    init(revision: PolicyRevision, gate: RevisionGate, labels: [String: String], host: String, session: AgentSession,
         desired: ResolvedDesiredState, applied: AppliedState? = nil, signer: String? = nil, notes: [String], warnExpiryDays: Int, prune: Bool) throws {
        self.revision = revision
        self.signer = signer
        self.gate = gate
        self.labels = labels
        self.host = host
        self.session = session
        self.desired = desired
        self.warnExpiryDays = warnExpiryDays
        self.prune = prune
        self.notes = notes
        actual = try session.backend.state()
        self.applied = try applied ?? session.backend.appliedState()
        plan = Planner.plan(desired: desired, actual: actual, applied: self.applied, warnExpiryDays: warnExpiryDays, prune: prune)
    }

    /// A report of this comparison.
    package func report(_ kind: Report.Kind, plan: Plan? = nil, applied didApply: Bool = false, notes extra: [String] = [],
                        lastApplied: AppliedState? = nil) -> Report {
        let last = lastApplied ?? applied
        return Report(kind: kind, revision: revision, host: host, labels: labels, desired: desired, plan: plan ?? self.plan,
                      applied: didApply, lastApplied: (last.revision, last.at), notes: notes + extra)
    }

    /// What an apply did.
    package struct ApplyOutcome {
        package let report: Report
        package let changed: Bool
        /// The error, when the apply failed or was rolled back (the agent is then as it was).
        package let failure: String?
        /// What stays to report once the apply's steps are made (for the drift report that
        /// follows), and what the agent then records as applied.
        package let remaining: (plan: Plan, applied: AppliedState)?
    }

    /// Plans again and applies inside one write transaction, with the history entry in the same
    /// transaction: overlapping applies serialize, and the revision recorded as applied is always
    /// the one the agent holds (a kill at any point leaves both as before, or both as after).
    /// Inside the transaction the revision is vouched for again (signatures, ancestry) against
    /// the revision the agent holds then, before anything changes.
    /// With a health window, syncs each changed connector for up to that many seconds and
    /// restores the previous state when one never reaches its server. Throws `PolicyProblems`
    /// for values that cannot be applied here and `RevisionRefused`; nothing is changed then.
    /// A health window needs a backend whose connectors Tether runs: asked of another backend, it
    /// is refused here with `UnsupportedOption`, before anything changes.
    /// With `saved`, applies only while the plan computed under the write lock is that plan,
    /// against the same agent state; otherwise fails with nothing changed.
    package func apply(actor: String, historyKind: HistoryKind = .apply, notes: [String] = [], healthWindow: Double = 0,
                       saved: SavedPlan? = nil) throws -> ApplyOutcome {
        if healthWindow > 0 { try HealthWindow.requireSupport(by: session) }
        let revisionId = revision.commit.id
        let agent = session.backend, history = session.history
        var notes = notes
        let done: (plan: Plan, restorePoint: RestorePoint, after: AgentState, applied: AppliedState)
        do {
            done = try session.committing(actor: "\(actor) \(revisionId.prefix(12))") {
                let lastApplied = try agent.appliedState()
                // Vouched for again against what the agent holds now, under the write lock: another
                // apply may have moved it since this revision was checked (never trust the earlier read).
                for note in try gate.recheck(revision, lastApplied: lastApplied.revision) where !notes.contains(note) && !self.notes.contains(note) {
                    notes.append(note)
                }
                let current = try agent.state()
                let plan = Planner.plan(desired: desired, actual: current, applied: lastApplied, warnExpiryDays: warnExpiryDays, prune: prune)
                try saved?.check(plan, state: current, applied: lastApplied, labels: labels)
                try plan.requireEnforceable()
                let restorePoint = try RestorePoint(agent: agent)
                try plan.apply(to: agent, revision: revisionId)
                return ((plan, restorePoint, try agent.state(), try agent.appliedState()),
                        HistoryEntry(kind: historyKind, revision: revisionId, result: plan.isEmpty ? .nothingToDo : .applied,
                                     findings: plan.findings.count, detail: plan.steps.map { $0.key.description }.joined(separator: ", "),
                                     labels: labels))
            }
        } catch let problems as PolicyProblems {
            try? history.record(HistoryEntry(kind: historyKind, revision: revisionId, result: .failed, findings: plan.findings.count,
                                             detail: problems.problems.map(\.description).joined(separator: "; ")))
            throw problems
        } catch let refused as RevisionRefused {
            try? history.record(HistoryEntry(kind: historyKind, revision: revisionId, result: HistoryResult(refused.reason), findings: 0, detail: refused.message))
            throw refused
        } catch let undone as UndoneChange {
            // An agent that cannot roll back undid what it could; the rest stays changed.
            try? history.record(HistoryEntry(kind: historyKind, revision: revisionId, result: .failed, findings: plan.findings.count, detail: "\(undone)"))
            return ApplyOutcome(report: report(.apply, applied: false, notes: notes), changed: true, failure: "error: apply failed: \(undone)", remaining: nil)
        } catch let unrecorded as ChangedNotRecorded {
            // The backend committed before the history could be written: changed, not recorded (yet).
            return ApplyOutcome(report: report(.apply, applied: true, notes: notes), changed: true, failure: "error: \(unrecorded)", remaining: nil)
        } catch {
            try? history.record(HistoryEntry(kind: historyKind, revision: revisionId, result: .failed, findings: plan.findings.count, detail: "\(error)"))
            return ApplyOutcome(report: report(.apply, applied: false, notes: notes), changed: false,
                                failure: "error: apply failed, nothing was changed: \(error)", remaining: nil)
        }
        let plan = done.plan
        if healthWindow > 0, !plan.isEmpty {
            let changed: [Integration]
            let runtime: ConnectorRuntime
            do {
                changed = HealthWindow.connectors(changedBy: plan.steps, running: try agent.state().running)
                guard let connectors = try session.connectors() else { throw SourceError(message: "this agent's connectors cannot be checked from here") }
                runtime = connectors
            } catch {
                // The changes are committed: say so, and that their health could not be checked.
                let message = "error: applied, but the health window could not run: \(error)"
                try? history.record(HistoryEntry(kind: historyKind, revision: revisionId, result: .applied, findings: plan.findings.count, detail: message))
                return ApplyOutcome(report: report(.apply, plan: plan, applied: true, notes: notes), changed: true, failure: message, remaining: nil)
            }
            let failed = HealthWindow.check(changed, runtime: runtime, seconds: healthWindow)
            if !failed.isEmpty {
                let reasons = failed.map { "\($0.integration.displayName) did not reach its server (\($0.errorKind ?? "error"): \($0.summary))" }
                do {
                    try session.committing(actor: "\(actor) health window") {
                        // Only this apply's own changes are undone: when another apply or a local
                        // change came after it, restoring would undo theirs too.
                        guard try agent.appliedState().revision == revisionId, try agent.state().sameConfiguration(as: done.after) else {
                            throw ChangedSinceApply()
                        }
                        try done.restorePoint.restore(on: agent)
                        return ((), HistoryEntry(kind: historyKind, revision: revisionId, result: .rolledBack, findings: plan.findings.count,
                                                 detail: reasons.joined(separator: "; ")))
                    }
                } catch is ChangedSinceApply {
                    let message = "error: the health window failed (\(reasons.joined(separator: "; "))), but the agent was changed since this apply (another apply or a local change), so the previous state was not restored"
                    try? history.record(HistoryEntry(kind: historyKind, revision: revisionId, result: .failed, findings: plan.findings.count, detail: message))
                    return ApplyOutcome(report: report(.apply, plan: plan, applied: true, notes: notes), changed: true, failure: message, remaining: nil)
                } catch {
                    let message = "error: the health window failed (\(reasons.joined(separator: "; "))) and restoring the previous state failed too: \(error)"
                    try? history.record(HistoryEntry(kind: historyKind, revision: revisionId, result: .failed, findings: plan.findings.count, detail: message))
                    return ApplyOutcome(report: report(.apply, plan: plan, applied: true, notes: notes), changed: true, failure: message, remaining: nil)
                }
                let note = "Health window (\(Int(healthWindow)) s): " + reasons.joined(separator: "; ") + ". The previous state was restored."
                return ApplyOutcome(report: report(.apply, plan: plan, applied: false, notes: notes + [note]), changed: false,
                                    failure: "error: apply rolled back: " + reasons.joined(separator: "; "), remaining: nil)
            }
        }
        // What the apply leaves. A store that keeps values as given (the embedded agent's, which
        // commits with the history) holds exactly what the plan set: its findings without what it
        // corrected. Another backend may normalise what it was given: plan from the state it
        // reported after the apply (read under the lock already, no new call to it).
        let remaining = session.capabilities.contains(.historyInAgentCommit) ? plan.afterApplying()
            : Planner.plan(desired: desired, actual: done.after, applied: done.applied, warnExpiryDays: warnExpiryDays, prune: prune)
        return ApplyOutcome(report: report(.apply, plan: plan, applied: !plan.isEmpty, notes: notes), changed: !plan.isEmpty, failure: nil,
                            remaining: (remaining, done.applied))
    }

    /// Records a drift detection (noting when each difference was first seen) and returns its
    /// report, with connector health when the backend's connectors are Tether's. `plan` is
    /// what an apply left (`ApplyOutcome.remaining`); by default this comparison's.
    /// With `onlyChanges`, a detection that says what the last one said is not recorded again
    /// (the controller's steady state writes nothing).
    package func detectDrift(after remaining: (plan: Plan, applied: AppliedState)? = nil, onlyChanges: Bool = false) -> Report {
        let history = session.history
        var plan = remaining?.plan ?? self.plan
        var differences: [String: String] = [:]
        for finding in plan.findings where [.pending, .drift, .conflict, .unenforceable].contains(finding.kind) {
            differences[finding.key.description] = "\(finding.kind.rawValue):\(finding.actual)"
        }
        let noticed = (try? history.notice(differences)) ?? [:]
        for index in plan.findings.indices {
            plan.findings[index].noticedAt = noticed[plan.findings[index].key.description]
        }
        var report = self.report(.drift, plan: plan, lastApplied: remaining?.applied)
        if let runtime = try? session.connectors() {
            _ = try? runtime.readTogether {
                report.health = (try? runtime.status()) ?? []
                report.sensors = (try? runtime.sensorReports()) ?? []
            }
            // Outside the read: it reads the kernel's table while isolated.
            if let isolation = try? runtime.isolationStatus(), isolation.active || isolation.liftedBy != nil { report.isolation = isolation }
        }
        let entry = HistoryEntry(kind: .drift, revision: report.revision, result: report.inSync ? .inSync : .drift,
                                 findings: plan.findings.filter { $0.kind.isProblem }.count,
                                 detail: plan.findings.map { "\($0.key) \($0.kind.rawValue)" }.joined(separator: ", "))
        if onlyChanges {
            try? history.recordIfChanged(entry)
        } else {
            try? history.record(entry)
        }
        return report
    }
}

/// A health window's restore found the agent changed by someone else since the apply.
private struct ChangedSinceApply: Error {}

/// A revision compared offline with an agent snapshot (`plan --against`): a plan to show,
/// nothing on this machine opened, and nothing to apply.
package struct OfflineComparison {
    package let revision: PolicyRevision
    package let labels: [String: String]
    package let host: String
    package let desired: ResolvedDesiredState
    package let applied: AppliedState
    package let plan: Plan
    package let notes: [String]

    init(revision: PolicyRevision, labels: [String: String], snapshot: AgentSnapshot, desired: ResolvedDesiredState, notes: [String],
         warnExpiryDays: Int, prune: Bool) {
        self.revision = revision
        self.labels = labels
        host = snapshot.host
        var notes = notes
        var resolved = desired
        var applied = snapshot.applied
        let offline = resolved.unresolved.keys.filter { if case .clientCertificate = $0 { return true }; return false }
        if !offline.isEmpty {
            notes.append("not checked offline: " + offline.sorted().map(\.description).joined(separator: ", ")
                         + " (client containers live on the device, not in the snapshot)")
            resolved = resolved.dropping(unresolved: offline)
            // What cannot be checked is left out on both sides: still declared, so never "released".
            applied = AppliedState(values: applied.values.filter { !offline.contains($0.key) }, revision: applied.revision, at: applied.at)
        }
        self.applied = applied
        self.desired = resolved
        self.notes = notes
        plan = Planner.plan(desired: resolved, actual: snapshot.state, applied: applied, warnExpiryDays: warnExpiryDays, prune: prune)
    }

    /// The plan report.
    package func report() -> Report {
        Report(kind: .plan, revision: revision, host: host, labels: labels, desired: desired, plan: plan,
               applied: false, lastApplied: (applied.revision, applied.at), notes: notes)
    }
}
