import AgentInterface
import ConnectorCore
import EmbeddedAgent
import Foundation
import GitSource
import HTTPTransport
import IntegrationModel
import KESLAgent
import Logging
import Planner
import Policy
import PolicySource
import Reconciler
import X509

/// What one cycle came to, in Flux's terms: `Ready` (applied or already in sync), `Stalled`
/// (refused: verification, anti-rollback, invalid policies), `Suspended`, or `Failed` (an error
/// that a later cycle may not have).
package struct CycleResult: Sendable {
    package enum Condition: String, Sendable, Codable { case ready = "Ready", stalled = "Stalled", suspended = "Suspended", failed = "Failed" }

    package let condition: Condition
    /// `applied`, `in-sync`, `drift-reported`, `suspended`, `verification-refused`, `rollback-refused`, `invalid-policies`, `error`.
    package let reason: String
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
/// and records what it did.
package final class Controller: @unchecked Sendable {
    package var configuration: ControllerConfiguration
    package let metrics = Metrics()
    /// Called with each cycle's drift report (when the cycle got that far): `tether run --report-dir`.
    package var onReport: ((Report) -> Void)?
    let logger: Logger
    private var lastVerified: (revision: String, commitTime: Date, at: Date, signer: String?)?
    /// Kept between cycles: the stores opened once, and what the revision came to while
    /// nothing it depends on moved — a no-change cycle decodes nothing again.
    private var stores: (agent: AgentBackend, history: History, runtime: ConnectorRuntime?)?
    private var storeIdentity: [[UInt64]?] = []
    private var prepared: PreparedRevision?
    /// The revision and labels whose label warnings were logged last (each warning once).
    private var labelsWarnedFor: (commit: String, labels: [String: String])?
    private lazy var host = ProcessInfo.processInfo.hostName
    /// `--probe-url`: the conditional GET before git, and the tag of the refs last fetched.
    private let probe = HeadProbe()

    package init(configuration: ControllerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        lastVerified = ControllerStatus.read(configuration.statusFile)?.lastVerified.map {
            ($0.revision, $0.committedAt, $0.verifiedAt, $0.signer)
        }
    }

    /// Whether the controller is suspended (by flag or by the `suspend` file).
    package var isSuspended: Bool {
        configuration.suspend || FileManager.default.fileExists(atPath: configuration.suspendFile.path)
    }

    /// One cycle. Never throws: every failure is a result.
    package func runCycle() -> CycleResult {
        let started = Date()
        var fetchDuration: TimeInterval = 0
        var update: MirrorUpdate?
        func finish(_ condition: CycleResult.Condition, _ reason: String, _ message: String, revision: String? = nil,
                    report: Report? = nil) -> CycleResult {
            var byIntegration: [String: Int] = [:]
            var byKind: [String: [String: Int]] = [:]
            for finding in report?.findings ?? [] where finding.kind.isProblem {
                let integration = finding.key.scope.prefix.isEmpty ? "app" : finding.key.scope.prefix
                byIntegration[integration, default: 0] += 1
                byKind[integration, default: [:]][finding.kind.rawValue, default: 0] += 1
            }
            let result = CycleResult(condition: condition, reason: reason, message: message, revision: revision, startedAt: started,
                                     duration: Date().timeIntervalSince(started), fetchDuration: fetchDuration,
                                     fetched: update?.fetched ?? false, bytesReceived: update?.bytesReceived ?? 0,
                                     findings: byIntegration.values.reduce(0, +), findingsByIntegration: byIntegration, findingsByKind: byKind,
                                     steps: report?.steps.count ?? 0)
            if condition == .failed {
                stores = nil
                prepared = nil
            }
            if let runtime = stores?.runtime { metrics.recordTelemetry(from: runtime) }
            if let report { onReport?(report) }
            metrics.record(result, health: report?.health ?? [], suspended: isSuspended)
            writeStatus(result)
            log(result)
            return result
        }

        // 1. The source: with a probe URL, first ask a web server whether the refs moved (no git
        // connection on 304); else ask the remote for its refs; fetch only when the pinned ref moved.
        let repository: GitRepository
        let mirrors = configuration.stateDirectory.appendingPathComponent("mirrors")
        var probed: HeadProbe.Answer?
        if let url = configuration.probeURL {
            let answer = probe.ask(url, caFile: configuration.probeCAFile, timeout: configuration.fetchTimeout)
            probed = answer
            metrics.probed(answer)
            if case .failed(let reason) = answer { logger.info("the probe was not answered usefully (\(reason)); asking git") }
        }
        if case .notModified = probed, prepared != nil, let mirror = PolicyRevision.openMirror(configuration.source, mirrorDirectory: mirrors) {
            repository = mirror
        } else {
            do {
                let fetchStart = Date()
                let opened = try PolicyRevision.open(configuration.source, mirrorDirectory: mirrors,
                                                     credentials: configuration.credentials, timeout: configuration.fetchTimeout)
                fetchDuration = Date().timeIntervalSince(fetchStart)
                repository = opened.repository
                update = opened.update
                if update?.rebuilt == true { logger.warning("the mirror was missing or damaged and was made anew") }
            } catch {
                return finish(.failed, "fetch-failed", "\(error)")
            }
        }

        // 2. The revision: vouched for (signatures before any file is read, then ancestry), read,
        // decoded — or taken from the last cycle when neither it, the last applied revision nor
        // the allowed signers moved.
        let agent: AgentBackend, history: History, runtime: ConnectorRuntime?
        let vouched: VouchedRevision
        let head: GitCommit
        do {
            (agent, history, runtime) = try openStores()
            head = try repository.resolve(configuration.source.ref)
            // The tag the next probe asks against, if its answer listed what was fetched.
            if let probed, update != nil { probe.fetched(head.id, under: probed) }
            let lastApplied = try agent.appliedState().revision
            let signers = configuration.allowedSigners.flatMap { FileStamp(path: $0) }
            if let prepared, prepared.commit == head.id, prepared.lastApplied == lastApplied, prepared.signers == signers {
                vouched = prepared.vouched
            } else {
                prepared = nil
                var pinned = configuration.source
                pinned.ref = head.id  // the commit resolved once: what is cached is what was vouched for
                vouched = try Pipeline.revision(pinned, repository: repository, gate: gate, lastApplied: lastApplied)
                prepared = PreparedRevision(commit: head.id, lastApplied: lastApplied, signers: signers, vouched: vouched)
            }
        } catch let refused as RevisionRefused {
            let revision = try? repository.resolve(configuration.source.ref).id
            switch refused.reason {
            case .verification:
                metrics.verificationRefused()
                return finish(.stalled, refused.reason.rawValue, refused.message, revision: revision)
            case .rollback:
                metrics.rollbackRefused()
                let age = lastVerified.map { " The last verified revision \($0.revision.prefix(12)) was committed \(Self.age(since: $0.commitTime)) ago." } ?? ""
                return finish(.stalled, refused.reason.rawValue, refused.message + age, revision: revision)
            }
        } catch let problems as PolicyProblems {
            return finish(.stalled, "invalid-policies", problems.description, revision: try? repository.resolve(configuration.source.ref).id)
        } catch {
            return finish(.failed, "error", "\(error)", revision: try? repository.resolve(configuration.source.ref).id)
        }
        let revision = vouched.revision
        if configuration.verify != .off { lastVerified = (head.id, head.time, Date(), vouched.signer) }

        // 3. Reconcile: apply (unless suspended) and report.
        do {
            let labels = try DeviceLabels.load(stateDirectory: configuration.stateDirectory.path, overrides: configuration.labelOverrides)
            if labelsWarnedFor?.commit != head.id || labelsWarnedFor?.labels != labels {
                labelsWarnedFor = (head.id, labels)
                for warning in revision.policySet.labelWarnings(labels) { logger.warning("\(warning)") }
            }
            let desired = try prepared!.desired(labels: labels, revision: revision, stateDirectory: configuration.stateDirectory)
            func compare() throws -> Reconciliation {
                try Reconciliation(revision: revision, gate: gate, labels: labels, host: host, stateDirectory: configuration.stateDirectory,
                                   agent: agent, history: history, desired: desired, notes: vouched.notes,
                                   warnExpiryDays: configuration.warnExpiryDays, prune: configuration.prune)
            }
            let reconciliation = try compare()
            if isSuspended {
                let report = reconciliation.detectDrift(runtime: runtime, onlyChanges: true)
                return finish(.suspended, "suspended", "suspended: nothing applied; \(report.findings.filter { $0.kind.isProblem }.count) findings reported",
                              revision: head.id, report: report)
            }
            var message = "in sync"
            var reason = "in-sync"
            var drift = reconciliation
            // Apply when there is something to change, and also when the revision is new, so it
            // becomes the base that anti-rollback and `tether rollback` start from.
            if !reconciliation.plan.isEmpty || reconciliation.applied.revision != head.id {
                let outcome = try reconciliation.apply(actor: "tether run", healthWindow: configuration.healthWindow)
                if let failure = outcome.failure {
                    return finish(.failed, "apply-failed", failure, revision: head.id, report: outcome.report)
                }
                if outcome.changed {
                    reason = "applied"
                    message = "applied \(outcome.report.steps.count) steps"
                }
                drift = try compare()
            }
            let report = drift.detectDrift(runtime: runtime, onlyChanges: true)
            if !report.inSync && reason == "in-sync" {
                reason = "drift-reported"
                message = "\(report.findings.filter { $0.kind.isProblem }.count) findings reported (observed or not correctable)"
            }
            return finish(.ready, reason, message, revision: head.id, report: report)
        } catch let refused as RevisionRefused {
            return finish(.stalled, refused.reason.rawValue, refused.message, revision: head.id)
        } catch let problems as PolicyProblems {
            return finish(.stalled, "invalid-policies", problems.description, revision: head.id)
        } catch {
            return finish(.failed, "error", "\(error)", revision: head.id)
        }
    }

    /// The agent (and its store), the history and, for the embedded agent, the connectors'
    /// store, opened on first use and kept; a cycle that fails closes them, so the next one
    /// starts afresh.
    private func openStores() throws -> (agent: AgentBackend, history: History, runtime: ConnectorRuntime?) {
        // A store file replaced meanwhile (a backup restored) is opened anew, never written through
        // the connection to the file it replaced.
        let agentFiles = configuration.agent.kind == .embedded ? [Agent.storeFileName, ConnectorRuntime.storeFileName] : [KESLAgent.storeFileName]
        let files = (agentFiles + [History.fileName]).map { configuration.stateDirectory.appendingPathComponent($0).path }
        let identity = files.map { FileStamp.identity(of: $0) }
        if let stores, identity == storeIdentity { return stores }
        stores = nil
        prepared = nil
        let agent = try configuration.agent.open(stateDirectory: configuration.stateDirectory)
        let opened = (agent, try History(stateDirectory: configuration.stateDirectory), try (agent as? Agent).map { try ConnectorRuntime(agent: $0) })
        stores = opened
        storeIdentity = files.map { FileStamp.identity(of: $0) }
        return opened
    }

    /// What each revision must pass.
    var gate: RevisionGate { RevisionGate(verify: configuration.verify, allowedSigners: configuration.allowedSigners) }

    // MARK: - What the controller did last

    private func writeStatus(_ result: CycleResult) {
        let status = ControllerStatus(
            pid: Int(getpid()), suspended: isSuspended, verify: configuration.verify,
            source: .init(repository: configuration.source.displayRepository, ref: configuration.source.ref ?? "HEAD", path: configuration.source.path),
            lastCycle: .init(at: result.startedAt, durationSeconds: result.duration, condition: result.condition, reason: result.reason,
                             message: result.message, revision: result.revision, findings: result.findings, steps: result.steps,
                             fetched: result.fetched, bytesReceived: result.bytesReceived),
            cycles: metrics.cycles, errors: metrics.errors,
            lastVerified: lastVerified.map { .init(revision: $0.revision, committedAt: $0.commitTime, verifiedAt: $0.at, signer: $0.signer) })
        try? status.write(to: configuration.statusFile)
    }

    private func log(_ result: CycleResult) {
        var metadata: Logger.Metadata = [
            "condition": .string(result.condition.rawValue), "reason": .string(result.reason),
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

/// What a file looked like — the path itself (a symbolic link re-pointed changes it) and what
/// it leads to (device, inode, size, modification and change times) — so a changed stamp means
/// the file must be read again.
struct FileStamp: Equatable {
    private struct Facts: Equatable {
        let device: UInt64
        let inode: UInt64
        let size: Int64
        let modified: [Int]
        let changed: [Int]

        init?(_ path: String, following: Bool) {
            var info = stat()
            guard (following ? stat(path, &info) : lstat(path, &info)) == 0 else { return nil }
            device = UInt64(info.st_dev)
            inode = UInt64(info.st_ino)
            size = Int64(info.st_size)
            modified = [info.st_mtim.tv_sec, info.st_mtim.tv_nsec]
            changed = [info.st_ctim.tv_sec, info.st_ctim.tv_nsec]
        }
    }

    private let link: Facts
    private let target: Facts?

    /// A file's device and inode: which file a path names now.
    static func identity(of path: String) -> [UInt64]? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return [UInt64(info.st_dev), UInt64(info.st_ino)]
    }

    init?(path: String) {
        guard let link = Facts(path, following: false) else { return nil }
        self.link = link
        target = Facts(path, following: true)
    }
}

/// A revision the controller vouched for and read, and its desired state for the labels last
/// seen, resolved with the device files as they were (stamped, so a changed container or
/// password file is read again).
final class PreparedRevision {
    let commit: String
    let lastApplied: String?
    let signers: FileStamp?
    let vouched: VouchedRevision
    private var resolved: (labels: [String: String], files: [String: FileStamp?], desired: ResolvedDesiredState)?

    init(commit: String, lastApplied: String?, signers: FileStamp?, vouched: VouchedRevision) {
        self.commit = commit
        self.lastApplied = lastApplied
        self.signers = signers
        self.vouched = vouched
    }

    /// The desired state for `labels`: the one resolved last time when the labels and every
    /// device file it read are unchanged.
    func desired(labels: [String: String], revision: PolicyRevision, stateDirectory: URL) throws -> ResolvedDesiredState {
        if let resolved, resolved.labels == labels, resolved.files.allSatisfy({ FileStamp(path: $0.key) == $0.value }) {
            return resolved.desired
        }
        let state = try revision.policySet.desiredState(labels: labels)
        var files: [String: FileStamp?] = [:]
        for sourced in state.values.values {
            guard case .clientCertificate(let reference) = sourced.value else { continue }
            for path in [reference.file] + (reference.passwordFile.map { [$0] } ?? []) {
                let named = path.hasPrefix("/") ? path : stateDirectory.appendingPathComponent(path).path
                files[named] = FileStamp(path: named)
            }
        }
        let desired = try DesiredStateResolver.resolve(state, revision: revision, deviceDirectory: stateDirectory)
        resolved = (labels, files, desired)
        return desired
    }
}
