import AgentInterface
import ConnectorCore
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import GitSource
import HTTPTransport
import IntegrationModel
import Logging
import Planner
import Policy
import PolicySource
import Reconciler
import X509

/// Why a cycle ended as it did (Flux's condition reasons); `tether status` and the log print the raw value.
package enum CycleReason: String, Sendable, Codable {
    case applied
    case inSync = "in-sync"
    /// Findings that applying does not correct (observed, excepted, unenforceable here).
    case driftReported = "drift-reported"
    case suspended
    case verificationRefused = "verification-refused"
    case rollbackRefused = "rollback-refused"
    case invalidPolicies = "invalid-policies"
    case fetchFailed = "fetch-failed"
    case applyFailed = "apply-failed"
    /// The agent's stores could not be opened.
    case agentUnavailable = "agent-unavailable"
    case error

    init(_ reason: RevisionRefused.Reason) {
        switch reason {
        case .verification: self = .verificationRefused
        case .rollback: self = .rollbackRefused
        }
    }
}

/// What one cycle came to, in Flux's terms: `Ready` (applied or already in sync), `Stalled`
/// (refused: verification, anti-rollback, invalid policies), `Suspended`, or `Failed` (an error
/// that a later cycle may not have).
package struct CycleResult: Sendable {
    package enum Condition: String, Sendable, Codable { case ready = "Ready", stalled = "Stalled", suspended = "Suspended", failed = "Failed" }

    package let condition: Condition
    package let reason: CycleReason
    package let message: String
    package let revision: String?
    package let startedAt: Date
    package let duration: TimeInterval
    package let fetchDuration: TimeInterval
    /// Whether objects were fetched, and how many bytes came in.
    package let fetched: Bool
    package let bytesReceived: Int
    package let findings: Int
    package let findingsByIntegration: [String: Int]
    /// The same by integration and kind (`edr` → `drift` → 2).
    package let findingsByKind: [String: [String: Int]]
    package let steps: Int
}

/// The controller: each cycle fetches the pinned ref (only when it moved), verifies commit
/// signatures, refuses rollbacks, reconciles (or only reports, when suspended or observing)
/// and records what it did. It owns the process's one `AgentSession` (the agent, its history
/// and its connectors' store, each opened once); `ControllerLoop` runs the connectors and
/// sensors over the same session.
package final class Controller: @unchecked Sendable {
    package var configuration: ControllerConfiguration
    package let metrics = Metrics()
    /// Called with each cycle's drift report (when the cycle got that far): `tether run --report-dir`.
    package var onReport: ((Report) -> Void)?
    let logger: Logger
    /// The time, injected by tests.
    let clock: () -> Date
    private var lastVerified: (revision: String, commitTime: Date, at: Date, signer: String?)?
    /// The agent and its stores, opened once and kept while their files stay the same.
    private(set) var session: AgentSession?
    private var sessionIdentity: [[UInt64]?] = []
    /// Why the agent could not be opened, while it cannot (status, /readyz and the log say it).
    private(set) var sessionProblem: String?
    private lazy var driver = Driver(gate: gate) { [logger] warning in logger.warning("\(warning)") }
    private lazy var host = ProcessInfo.processInfo.hostName
    /// `--probe-url`: the conditional GET before git, and the tag of the refs last fetched.
    private let probe = HeadProbe()
    /// `--notify`: messages waiting for a cycle, and the broker link (nil without it).
    package let notifications: NotificationInbox?
    /// `--bundle-url`: the published bundles a notified commit is read from.
    private let bundles = BundleSource()
    /// When the publication last taken from the bundles was published, per ref: an older signed
    /// message (replayed) is not taken.
    private var publicationTaken: [String: Date] = [:]
    private var lastResult: CycleResult?
    /// The revision last kept in the state directory by this process.
    private var keptCommit: String?

    package init(configuration: ControllerConfiguration, logger: Logger, clock: @escaping () -> Date = Date.init) {
        self.configuration = configuration
        self.logger = logger
        self.clock = clock
        notifications = configuration.notify.map { NotificationInbox(settings: $0, now: clock()) }
        metrics.intervalSeconds = configuration.interval
        if notifications != nil { metrics.notifyLink(up: false) }
        lastVerified = ControllerStatus.lastVerified(in: configuration.statusFile).map {
            ($0.revision, $0.committedAt, $0.verifiedAt, $0.signer)
        }
    }

    /// Whether the controller is suspended (by flag or by the `suspend` file).
    package var isSuspended: Bool {
        configuration.suspend || FileManager.default.fileExists(atPath: configuration.suspendFile.path)
    }

    /// One cycle. Never throws: every failure is a result.
    package func runCycle() -> CycleResult {
        let started = clock()
        var fetchDuration: TimeInterval = 0
        var update: MirrorUpdate?
        // A message that a ref moved is answered by this cycle, whatever started it.
        let notice = notifications?.take(now: clock())
        func finish(_ condition: CycleResult.Condition, _ reason: CycleReason, _ message: String, revision: String? = nil,
                    report: Report? = nil) -> CycleResult {
            var byIntegration: [String: Int] = [:]
            var byKind: [String: [String: Int]] = [:]
            for finding in report?.findings ?? [] where finding.kind.isProblem {
                let integration = finding.key.scope.prefix.isEmpty ? "app" : finding.key.scope.prefix
                byIntegration[integration, default: 0] += 1
                byKind[integration, default: [:]][finding.kind.rawValue, default: 0] += 1
            }
            let result = CycleResult(condition: condition, reason: reason, message: message, revision: revision, startedAt: started,
                                     duration: clock().timeIntervalSince(started), fetchDuration: fetchDuration,
                                     fetched: update?.fetched ?? false, bytesReceived: update?.bytesReceived ?? 0,
                                     findings: byIntegration.values.reduce(0, +), findingsByIntegration: byIntegration, findingsByKind: byKind,
                                     steps: report?.steps.count ?? 0)
            if condition == .failed { driver.forget() }
            if configuration.metricsRead, let runtime = try? self.session?.connectors() { metrics.recordTelemetry(from: runtime) }
            if let report { onReport?(report) }
            if let notice, condition == .ready, revision == notice.revision.commit {
                metrics.notifiedApplied(after: clock().timeIntervalSince(notice.arrivedAt))
                notifications?.record(notice, .applied)
            }
            metrics.record(result, health: report?.health ?? [], suspended: isSuspended)
            lastResult = result
            writeStatus(result)
            log(result)
            return result
        }

        // 1. The source: a notified commit from the published bundles (--bundle-url), vouched
        // for first; else, with a probe URL, ask a web server whether the refs moved (no git
        // connection on 304); else ask the remote for its refs; fetch only when the pinned ref moved.
        // A controller starting with a local repository whose ref still names the revision kept
        // at its last apply reads that revision from the state directory instead, and opens the
        // repository only if something needs it (docs/architecture.md, "What an endpoint pays").
        var repository: GitRepository?
        let mirrors = configuration.stateDirectory.appending(path: "mirrors")
        var probed: HeadProbe.Answer?
        var bundled: GitRepository?
        // Whether the notice was settled already (its commit refused): said once, not again below.
        var noticeSettled = false
        if let notice, let bundleURL = configuration.bundleURL {
            (bundled, noticeSettled) = bring(notice, from: bundleURL, mirrors: mirrors)
        }
        if bundled == nil, let url = configuration.probeURL {
            let answer = probe.ask(url, caFile: configuration.probeCAFile, timeout: configuration.fetchTimeout)
            probed = answer
            metrics.probed(answer)
            if case .failed(let reason) = answer { logger.info("the probe was not answered usefully (\(reason)); asking git") }
        }
        let kept = bundled == nil && notice == nil && lastResult == nil ? keptRevision() : nil
        func openRepository() throws -> GitRepository {
            let fetchStart = clock()
            let opened = try PolicyRevision.open(configuration.source, mirrorDirectory: mirrors,
                                                 credentials: configuration.credentials, timeout: configuration.fetchTimeout)
            fetchDuration += clock().timeIntervalSince(fetchStart)
            update = opened.update
            if update?.rebuilt == true { logger.warning("the mirror was missing or damaged and was made anew") }
            return opened.repository
        }
        if let bundled {
            repository = bundled
        } else if case .notModified = probed, driver.isPrepared, let mirror = PolicyRevision.openMirror(configuration.source, mirrorDirectory: mirrors) {
            repository = mirror
        } else if kept == nil {
            do {
                repository = try openRepository()
            } catch {
                return finish(.failed, .fetchFailed, "\(error)")
            }
        }

        // 2. The agent, opened once for the process (again only when a store file was replaced).
        let session: AgentSession
        do {
            session = try openSession()
        } catch {
            return finish(.failed, .agentUnavailable, "the agent cannot be opened: \(error)")
        }

        // 3. The revision, through the one driver: vouched for (signatures before any file is read,
        // then ancestry), read, decoded — or taken from the last cycle when neither it, the last
        // applied revision nor the allowed signers moved, or from the kept revision when it is
        // the one the agent holds — and compared with the agent.
        var head: GitCommit?
        do {
            func labels() throws -> [String: String] {
                try DeviceLabels.load(stateDirectory: configuration.stateDirectory.path, overrides: configuration.labelOverrides)
            }
            let resolved: GitCommit
            let reconciliation: Reconciliation
            let source = configuration.source
            if let kept, let fromKept = try driver.compare(kept: kept, open: { try PolicyRevision.open(source, mirrorDirectory: mirrors, credentials: .none).repository },
                                                           session: session, labels: labels, host: host,
                                                           warnExpiryDays: configuration.warnExpiryDays, prune: configuration.prune) {
                (resolved, reconciliation) = (kept.commit, fromKept)
                head = resolved
            } else {
                let opened: GitRepository
                do {
                    opened = try repository ?? openRepository()
                } catch {
                    return finish(.failed, .fetchFailed, "\(error)")
                }
                resolved = try opened.resolve(configuration.source.ref)
                head = resolved
                // The tag the next probe asks against, if its answer listed what was fetched.
                if let probed, update != nil { probe.fetched(resolved.id, under: probed) }
                if let notice, !noticeSettled, notice.revision.commit != resolved.id { refuse(notice, against: resolved, in: opened) }
                var pinned = configuration.source
                pinned.ref = resolved.id
                reconciliation = try driver.compare(pinned, repository: opened, session: session, labels: try labels(), host: host,
                                                    warnExpiryDays: configuration.warnExpiryDays, prune: configuration.prune)
            }
            if configuration.verify != .off { lastVerified = (resolved.id, Date(timeIntervalSince1970: Double(resolved.committedAt)), clock(), reconciliation.signer) }

            // 4. Reconcile: apply (unless suspended) and report.
            if isSuspended {
                let report = reconciliation.detectDrift(onlyChanges: true)
                return finish(.suspended, .suspended, "suspended: nothing applied; \(report.findings.filter { $0.kind.isProblem }.count) findings reported",
                              revision: resolved.id, report: report)
            }
            var message = "in sync"
            var reason = CycleReason.inSync
            var remaining: (plan: Plan, applied: AppliedState)?
            // Apply when there is something to change, and also when the revision is new, so it
            // becomes the base that anti-rollback and `tether rollback` start from.
            if !reconciliation.plan.isEmpty || reconciliation.applied.revision != resolved.id {
                let outcome = try reconciliation.apply(actor: "tether run", healthWindow: configuration.healthWindow)
                if let failure = outcome.failure {
                    return finish(.failed, .applyFailed, failure, revision: resolved.id, report: outcome.report)
                }
                if outcome.changed {
                    reason = .applied
                    message = "applied \(outcome.report.steps.count) steps"
                }
                remaining = outcome.remaining
            }
            let report = reconciliation.detectDrift(after: remaining, onlyChanges: true)
            if !report.inSync && reason == .inSync {
                reason = .driftReported
                message = "\(report.findings.filter { $0.kind.isProblem }.count) findings reported (observed or not correctable)"
            }
            keep(resolved.id)
            return finish(.ready, reason, message, revision: resolved.id, report: report)
        } catch let refused as RevisionRefused {
            switch refused.reason {
            case .verification:
                metrics.verificationRefused()
                return finish(.stalled, CycleReason(refused.reason), refused.message, revision: head?.id)
            case .rollback:
                metrics.rollbackRefused()
                let age = lastVerified.map { " The last verified revision \($0.revision.prefix(12)) was committed \(Self.age(since: $0.commitTime, now: clock())) ago." } ?? ""
                return finish(.stalled, CycleReason(refused.reason), refused.message + age, revision: head?.id)
            }
        } catch let problems as PolicyProblems {
            return finish(.stalled, .invalidPolicies, problems.description, revision: head?.id)
        } catch {
            return finish(.failed, .error, "\(error)", revision: head?.id)
        }
    }

    /// Where the revision the agent holds is kept between runs (`KeptRevision`).
    private var keptFile: String { configuration.stateDirectory.appending(path: KeptRevision.fileName).path }

    /// The kept revision, for the first cycle of a controller whose source is a local
    /// repository whose ref names the kept commit now, and which holds that commit (read from
    /// the repository's files, without libgit2); nil otherwise. Later cycles read git, so a
    /// repository damaged meanwhile fails them as before.
    private func keptRevision() -> KeptRevision? {
        let source = configuration.source
        guard !GitRepository.isRemote(source.repository), let commit = RefFiles.objectID(source.ref, repositoryAt: source.repository),
              let kept = KeptRevision.read(from: keptFile), kept.commit.id == commit, Array(kept.path.utf8) == Array(source.path.utf8),
              RefFiles.holdsObject(commit, repositoryAt: source.repository) else { return nil }
        return kept
    }

    /// Keeps the revision the agent now holds, read from git, for the next controller to start
    /// without git; once per revision. (A kept revision stays true of its commit: an older one
    /// left behind by a revision too large to keep is never used while the agent holds another.)
    private func keep(_ revision: String) {
        // Only a local repository's revision is read back (a remote's cycle asks the remote anyway).
        guard keptCommit != revision, !GitRepository.isRemote(configuration.source.repository) else { return }
        keptCommit = revision
        do {
            try driver.revisionToKeep(revision)?.write(to: keptFile)
        } catch {
            logger.warning("the revision could not be kept for the next start (it will read git): \(error)")
        }
    }

    /// The agent and its stores, opened on first use and kept for the process. A store file
    /// replaced meanwhile (a backup restored) is opened anew, never written through the
    /// connection to the file it replaced; `onSessionChange` lets the loop move its connectors
    /// and sensors to the new session.
    package func openSession() throws -> AgentSession {
        if let session {
            let now = session.storeFiles.map { FileStamp.identity(of: $0.path) }
            // A store the session made since it opened (runtime.db on the connectors' first use)
            // is its own, not a replacement.
            let replaced = zip(now, sessionIdentity).contains { current, recorded in recorded != nil && current != recorded }
            if !replaced && now.count == sessionIdentity.count {
                sessionIdentity = now
                return session
            }
            logger.warning("a store file of the agent was replaced; opening the agent anew")
        }
        session = nil
        driver.forget()
        do {
            let opened = try AgentSession(configuration.agent, stateDirectory: configuration.stateDirectory)
            session = opened
            sessionIdentity = opened.storeFiles.map { FileStamp.identity(of: $0.path) }
            if sessionProblem != nil { logger.info("the agent is open again") }
            sessionProblem = nil
            metrics.setAgentProblem(nil)
            return opened
        } catch {
            if sessionProblem == nil { logger.error("the agent cannot be opened: \(error)") }
            sessionProblem = "\(error)"
            metrics.setAgentProblem("the agent cannot be opened: \(error)")
            throw error
        }
    }

    /// Reads a notified commit from the published bundles into the remote's mirror, vouches for
    /// it and points the mirror's ref at it. The publisher's signature on the message vouches for
    /// the ref's position (commit signatures say nothing of which branch a commit is on); the
    /// commit's signatures and its ancestry are checked as for a fetch, before any of its files is
    /// read. Nil, saying why in the log, when the cycle must ask git instead; `refused` when the
    /// message or its commit was refused (said once here, not again by the cycle).
    private func bring(_ notice: Notice, from bundleURL: String, mirrors: URL) -> (repository: GitRepository?, refused: Bool) {
        let revision = notice.revision
        let short = revision.commit.prefix(12)
        func refuse(_ why: String) -> (repository: GitRepository?, refused: Bool) {
            metrics.notified(.refused)
            notifications?.record(notice, .refused)
            logger.warning("the notification names \(short) for \(revision.ref), refused: \(why); nothing from it is used, asking git")
            return (nil, true)
        }
        guard let mirror = PolicyRevision.openMirror(configuration.source, mirrorDirectory: mirrors) else {
            logger.info("notification: no mirror of the repository yet, so \(short) is fetched from git this once")
            return (nil, false)
        }
        let signers = configuration.allowedSigners.map { CommitVerification.signers(in: $0) }
            ?? .failure(SourceError(message: "no --allowed-signers file to check the message's signature against"))
        switch signers.flatMap(revision.verifiedSigner) {
        case .failure(let why): return refuse(why.message)
        case .success: break
        }
        // Only the ref this controller follows, by its full name (`main` is never `refs/tags/main`).
        let wanted = (try? mirror.referenceName(configuration.source.ref ?? "HEAD")) ?? "?"
        guard revision.ref == wanted else { return refuse("it is about \(revision.ref); this controller follows \(wanted)") }
        if let taken = publicationTaken[revision.ref], let date = revision.publishedDate, date < taken {
            return refuse("it was published at \(revision.publishedAt), before the publication already taken (a replayed message?)")
        }
        let lastApplied: String?
        do {
            lastApplied = try openSession().backend.appliedState().revision
        } catch {
            logger.warning("notification: the agent cannot be read (\(error)); asking git")
            return (nil, false)
        }
        do {
            // Under the mirror's lock, as a fetch writes into it.
            let outcome: (repository: GitRepository?, refused: Bool) = try MirrorFetch.withMirrorLock(mirror.location) { _ in
                if !mirror.contains(commit: revision.commit) {
                    let delivery = try bundles.bring(revision, into: mirror, baseURL: bundleURL, caFile: configuration.probeCAFile,
                                                     timeout: configuration.fetchTimeout)
                    metrics.bundleRead("used")
                    logger.info("read \(short) from \(delivery.path) (\(delivery.bytes) bytes)")
                }
                let commit = try mirror.resolve(revision.commit)
                do {
                    _ = try gate.verifySignatures(repository: mirror, head: commit, lastApplied: lastApplied)
                    if let lastApplied, !(mirror.contains(commit: lastApplied) && mirror.isDescendant(commit, of: lastApplied)) {
                        throw RevisionRefused(.rollback, "it does not descend from the applied revision \(lastApplied.prefix(12)) (an older or replayed message?)")
                    }
                } catch let refused as RevisionRefused {
                    return refuse(refused.message)
                }
                try mirror.setReference(revision.ref, to: commit.id, reason: "tether: notified, read from the published bundles")
                return (mirror, false)
            }
            if outcome.repository != nil, let date = revision.publishedDate { publicationTaken[revision.ref] = date }
            return outcome
        } catch {
            metrics.bundleRead("failed")
            logger.warning("the published bundles did not give \(short) (\(TerminalText.excerpt("\(error)", limit: 400))); asking git")
            return (nil, false)
        }
    }

    /// A notification named another commit than the one the cycle took: says why it was not taken.
    private func refuse(_ notice: Notice, against resolved: GitCommit, in repository: GitRepository) {
        let named = notice.revision.commit
        let why = repository.contains(commit: named) && repository.isDescendant(resolved, of: named)
            ? "an older commit than \(resolved.id.prefix(12)), which the ref holds (a replayed message?)"
            : "not what the ref holds (\(resolved.id.prefix(12)))"
        metrics.notified(.refused)
        notifications?.record(notice, .refused)
        logger.warning("the notification named \(named.prefix(12)) for \(notice.revision.ref): \(why); the message is not trusted, so only the ref's commit counts")
    }

    /// What each revision must pass.
    var gate: RevisionGate { RevisionGate(verify: configuration.verify, allowedSigners: configuration.allowedSigners) }

    // MARK: - What the controller did last

    /// Writes `tether status`'s file again (a part of the process stopped or started running).
    package func rewriteStatus() {
        if let lastResult { writeStatus(lastResult) }
    }

    private func writeStatus(_ result: CycleResult) {
        let status = ControllerStatus(
            pid: Int(getpid()), suspended: isSuspended, verify: configuration.verify,
            source: .init(repository: configuration.source.displayRepository, ref: configuration.source.ref ?? "HEAD", path: configuration.source.path),
            lastCycle: .init(at: result.startedAt, durationSeconds: result.duration, condition: result.condition, reason: result.reason.rawValue,
                             message: result.message, revision: result.revision, findings: result.findings, steps: result.steps,
                             fetched: result.fetched, bytesReceived: result.bytesReceived),
            cycles: metrics.cycles, errors: metrics.errors,
            lastVerified: lastVerified.map { .init(revision: $0.revision, committedAt: $0.commitTime, verifiedAt: $0.at, signer: $0.signer) },
            problems: metrics.problemList.isEmpty ? nil : metrics.problemList, notifications: notifications?.status)
        try? status.write(to: configuration.statusFile)
    }

    private func log(_ result: CycleResult) {
        var metadata: Logger.Metadata = [
            "condition": .string(result.condition.rawValue), "reason": .string(result.reason.rawValue),
            "duration": .stringConvertible((result.duration * 1000).rounded() / 1000), "fetched": .stringConvertible(result.fetched),
        ]
        if let revision = result.revision { metadata["revision"] = .string(String(revision.prefix(12))) }
        if result.findings > 0 { metadata["findings"] = .stringConvertible(result.findings) }
        if !result.findingsByIntegration.isEmpty {
            metadata["findingsByIntegration"] = .dictionary(result.findingsByIntegration.mapValues { .stringConvertible($0) })
        }
        if result.steps > 0 { metadata["steps"] = .stringConvertible(result.steps) }
        if result.fetched {
            metadata["bytesReceived"] = .stringConvertible(result.bytesReceived)
            metadata["fetchDuration"] = .stringConvertible((result.fetchDuration * 1000).rounded() / 1000)
        }
        switch result.condition {
        case .ready, .suspended: logger.info("\(result.message)", metadata: metadata)
        case .stalled: logger.error("\(result.message)", metadata: metadata)
        case .failed: logger.warning("\(result.message)", metadata: metadata)
        }
    }

    /// "3 days", "5 hours", "12 minutes".
    package static func age(since date: Date, now: Date = Date()) -> String {
        let seconds = max(0, now.timeIntervalSince(date))
        switch seconds {
        case ..<120: return "\(Int(seconds)) seconds"
        case ..<7200: return "\(Int(seconds / 60)) minutes"
        case ..<172_800: return "\(Int(seconds / 3600)) hours"
        default: return "\(Int(seconds / 86_400)) days"
        }
    }
}
