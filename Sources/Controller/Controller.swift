import ConnectorCore
import Foundation
import GitSource
import IntegrationModel
import Logging
import Policy
import Reconciler
import X509

/// What one cycle came to, in Flux's terms: `Ready` (applied or already in sync), `Stalled`
/// (refused: verification, anti-rollback, invalid policies), `Suspended`, or `Failed` (an error
/// that a later cycle may not have).
public struct CycleResult: Sendable {
    public enum Condition: String, Sendable { case ready = "Ready", stalled = "Stalled", suspended = "Suspended", failed = "Failed" }

    public let condition: Condition
    /// `applied`, `in-sync`, `drift-reported`, `suspended`, `verification-refused`, `rollback-refused`, `invalid-policies`, `error`.
    public let reason: String
    public let message: String
    public let revision: String?
    public let startedAt: Date
    public let duration: TimeInterval
    public let fetchDuration: TimeInterval
    /// Whether objects were fetched, and how many bytes came in.
    public let fetched: Bool
    public let bytesReceived: Int
    public let findings: Int
    public let findingsByIntegration: [String: Int]
    public let steps: Int
}

/// The controller: each cycle fetches the pinned ref (only when it moved), verifies commit
/// signatures, refuses rollbacks, reconciles (or only reports, when suspended or observing)
/// and records what it did.
public final class Controller: @unchecked Sendable {
    public var configuration: ControllerConfiguration
    public let metrics = Metrics()
    let logger: Logger
    private var lastVerified: (revision: String, commitTime: Date, at: Date, signer: String?)?

    public init(configuration: ControllerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        lastVerified = Self.readStatus(configuration.statusFile).lastVerified
    }

    /// Whether the controller is suspended (by flag or by the `suspend` file).
    public var isSuspended: Bool {
        configuration.suspend || FileManager.default.fileExists(atPath: configuration.suspendFile.path)
    }

    /// One cycle. Never throws: every failure is a result.
    public func runCycle() -> CycleResult {
        let started = Date()
        var fetchDuration: TimeInterval = 0
        var update: MirrorUpdate?
        func finish(_ condition: CycleResult.Condition, _ reason: String, _ message: String, revision: String? = nil,
                    report: Report? = nil) -> CycleResult {
            var byIntegration: [String: Int] = [:]
            for finding in report?.findings ?? [] where finding.kind.isProblem {
                byIntegration[finding.key.scope.prefix.isEmpty ? "app" : finding.key.scope.prefix, default: 0] += 1
            }
            let result = CycleResult(condition: condition, reason: reason, message: message, revision: revision, startedAt: started,
                                     duration: Date().timeIntervalSince(started), fetchDuration: fetchDuration,
                                     fetched: update?.fetched ?? false, bytesReceived: update?.bytesReceived ?? 0,
                                     findings: byIntegration.values.reduce(0, +), findingsByIntegration: byIntegration,
                                     steps: report?.steps.count ?? 0)
            metrics.record(result, health: report?.health ?? [], suspended: isSuspended)
            writeStatus(result)
            log(result)
            return result
        }

        // 1. The source: ask the remote for its refs; fetch only when the pinned ref moved.
        let repository: GitRepository
        do {
            let fetchStart = Date()
            let opened = try PolicyRevision.open(configuration.source, mirrorDirectory: configuration.stateDirectory.appendingPathComponent("mirrors"),
                                                 credentials: configuration.credentials, timeout: configuration.fetchTimeout)
            fetchDuration = Date().timeIntervalSince(fetchStart)
            repository = opened.repository
            update = opened.update
            if update?.rebuilt == true { logger.warning("the mirror was missing or damaged and was made anew") }
        } catch {
            return finish(.failed, "fetch-failed", "\(error)")
        }

        // 2. The revision: vouched for (signatures before any file is read, then ancestry), read, decoded.
        let agent: Agent
        let vouched: VouchedRevision
        do {
            agent = try Agent(stateDirectory: configuration.stateDirectory.path)
            let lastApplied = try agent.appliedState().revision
            vouched = try Pipeline.revision(configuration.source, repository: repository, gate: gate, lastApplied: lastApplied)
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
        let head = revision.commit
        if configuration.verify != .off { lastVerified = (head.id, head.time, Date(), vouched.signer) }

        // 3. Reconcile: apply (unless suspended) and report.
        do {
            let labels = try DeviceLabels.load(stateDirectory: configuration.stateDirectory.path, overrides: configuration.labelOverrides)
            let reconciliation = try Reconciliation(revision: revision, gate: gate, labels: labels, host: ProcessInfo.processInfo.hostName,
                                                    stateDirectory: configuration.stateDirectory, agent: agent, notes: vouched.notes,
                                                    warnExpiryDays: configuration.warnExpiryDays)
            if isSuspended {
                let report = reconciliation.detectDrift()
                return finish(.suspended, "suspended", "suspended: nothing applied; \(report.findings.filter { $0.kind.isProblem }.count) findings reported",
                              revision: head.id, report: report)
            }
            var message = "in sync"
            var reason = "in-sync"
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
            }
            let drift = try Reconciliation(revision: revision, gate: gate, labels: labels, host: ProcessInfo.processInfo.hostName,
                                           stateDirectory: configuration.stateDirectory, agent: agent,
                                           warnExpiryDays: configuration.warnExpiryDays).detectDrift()
            if !drift.inSync && reason == "in-sync" {
                reason = "drift-reported"
                message = "\(drift.findings.filter { $0.kind.isProblem }.count) findings reported (observed or not correctable)"
            }
            return finish(.ready, reason, message, revision: head.id, report: drift)
        } catch let refused as RevisionRefused {
            return finish(.stalled, refused.reason.rawValue, refused.message, revision: head.id)
        } catch let problems as PolicyProblems {
            return finish(.stalled, "invalid-policies", problems.description, revision: head.id)
        } catch {
            return finish(.failed, "error", "\(error)", revision: head.id)
        }
    }

    /// What each revision must pass.
    var gate: RevisionGate { RevisionGate(verify: configuration.verify, allowedSigners: configuration.allowedSigners) }

    // MARK: - What the controller did last

    private func writeStatus(_ result: CycleResult) {
        var object: [String: Any] = [
            "pid": Int(getpid()),
            "suspended": isSuspended,
            "verify": configuration.verify.rawValue,
            "source": ["repository": configuration.source.displayRepository, "ref": configuration.source.ref ?? "HEAD", "path": configuration.source.path],
            "lastCycle": [
                "at": Self.timestamp(result.startedAt),
                "durationSeconds": result.duration,
                "condition": result.condition.rawValue,
                "reason": result.reason,
                "message": result.message,
                "revision": result.revision ?? NSNull(),
                "findings": result.findings,
                "steps": result.steps,
                "fetched": result.fetched,
                "bytesReceived": result.bytesReceived,
            ] as [String: Any],
            "cycles": metrics.cycles,
            "errors": metrics.errors,
        ]
        if let verified = lastVerified {
            object["lastVerified"] = ["revision": verified.revision, "committedAt": Self.timestamp(verified.commitTime),
                                      "verifiedAt": Self.timestamp(verified.at), "signer": verified.signer ?? NSNull()] as [String: Any]
        }
        if let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]) {
            try? data.write(to: configuration.statusFile, options: .atomic)
        }
    }

    /// The last status file, as `tether status` reads it.
    public static func readStatus(_ file: URL) -> (object: [String: Any]?, lastVerified: (revision: String, commitTime: Date, at: Date, signer: String?)?) {
        guard let data = try? Data(contentsOf: file), let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            return (nil, nil)
        }
        var verified: (String, Date, Date, String?)?
        if let entry = object["lastVerified"] as? [String: Any], let revision = entry["revision"] as? String,
           let committed = (entry["committedAt"] as? String).flatMap(ISO8601DateFormatter().date),
           let at = (entry["verifiedAt"] as? String).flatMap(ISO8601DateFormatter().date) {
            verified = (revision, committed, at, entry["signer"] as? String)
        }
        return (object, verified)
    }

    private func log(_ result: CycleResult) {
        var metadata: Logger.Metadata = [
            "condition": .string(result.condition.rawValue), "reason": .string(result.reason),
            "duration": .string(String(format: "%.3f", result.duration)), "fetched": .stringConvertible(result.fetched),
        ]
        if let revision = result.revision { metadata["revision"] = .string(String(revision.prefix(12))) }
        if result.findings > 0 { metadata["findings"] = .stringConvertible(result.findings) }
        switch result.condition {
        case .ready, .suspended: logger.info("\(result.message)", metadata: metadata)
        case .stalled: logger.error("\(result.message)", metadata: metadata)
        case .failed: logger.warning("\(result.message)", metadata: metadata)
        }
    }

    static func timestamp(_ date: Date) -> String { ISO8601DateFormatter().string(from: date) }

    /// "3 days", "5 hours", "12 minutes".
    public static func age(since date: Date, now: Date = Date()) -> String {
        let seconds = max(0, now.timeIntervalSince(date))
        switch seconds {
        case ..<120: return "\(Int(seconds)) seconds"
        case ..<7200: return "\(Int(seconds / 60)) minutes"
        case ..<172_800: return "\(Int(seconds / 3600)) hours"
        default: return "\(Int(seconds / 86_400)) days"
        }
    }
}
