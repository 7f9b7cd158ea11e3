import AgentInterface
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import GitSource
import Planner
import Policy
import PolicySource

/// The one way from a source to a comparison with a device (docs/architecture.md, "The
/// pipeline"): `plan`, `apply`, `drift`, `rollback` and the controller all call it. In order:
/// resolve the ref, vouch for the commit (signatures before any file is read, then decoding and
/// ancestry against what the agent last applied), warn about the device's labels, resolve the
/// desired state with the device's files, and plan. A driver kept between calls (the
/// controller's) reuses what the revision came to while nothing it depends on moved, and says
/// each warning once per revision and labels.
package final class Driver {
    package let gate: RevisionGate
    private let warn: (String) -> Void
    private var prepared: PreparedRevision?
    private var warnedFor: (commit: String, labels: [String: String])?

    /// `warn` receives each warning (a label no selector uses, labels that differ from the last apply's).
    package init(gate: RevisionGate, warn: @escaping (String) -> Void) {
        self.gate = gate
        self.warn = warn
    }

    /// The revision `spec` names in `repository`, vouched for against the agent of `session`,
    /// compared with that agent. Throws `RevisionRefused`, `PolicyProblems` (invalid files, or
    /// values this device cannot hold) and the source's or agent's errors.
    package func compare(_ spec: SourceSpec, repository: GitRepository, session: AgentSession, labels: [String: String], host: String,
                         warnExpiryDays: Int, prune: Bool) throws -> Reconciliation {
        let applied = try session.backend.appliedState()
        let vouched = try vouch(spec, repository: repository, lastApplied: applied.revision)
        return try compare(vouched, applied: applied, session: session, labels: labels, host: host, warnExpiryDays: warnExpiryDays, prune: prune)
    }

    /// The revision `kept` holds, compared with the agent of `session` without git, when it can
    /// stand for the revision the ref names (whose commit the caller found it to be): nothing is
    /// prepared yet, the agent's applied revision is that commit, and the gate is as when it was
    /// kept. Nil otherwise: the caller opens the repository and calls `compare`. `open` opens
    /// the repository if a file or check needs it later; `labels` are read only when the kept
    /// revision is used.
    package func compare(kept: KeptRevision, open: @escaping () throws -> GitRepository, session: AgentSession, labels: () throws -> [String: String],
                         host: String, warnExpiryDays: Int, prune: Bool) throws -> Reconciliation? {
        let applied = try session.backend.appliedState()
        let signers = gate.allowedSigners.flatMap { FileStamp(path: $0) }
        // Compared by bytes: Swift's strings compare by Unicode equivalence, paths do not.
        guard prepared == nil, applied.revision == kept.commit.id, Array(kept.gate.utf8) == Array(gateWords(signers).utf8) else { return nil }
        let revision = PolicyRevision(kept: kept, open: open)
        try revision.requireValid()
        let vouched = VouchedRevision(revision: revision, signer: kept.signer, notes: [])
        prepared = PreparedRevision(commit: kept.commit.id, lastApplied: applied.revision, signers: signers, vouched: vouched, fromGit: false)
        return try compare(vouched, applied: applied, session: session, labels: try labels(), host: host, warnExpiryDays: warnExpiryDays, prune: prune)
    }

    private func compare(_ vouched: VouchedRevision, applied: AppliedState, session: AgentSession, labels: [String: String], host: String,
                         warnExpiryDays: Int, prune: Bool) throws -> Reconciliation {
        let revision = vouched.revision
        warnOnce(revision: revision, labels: labels, lastAppliedLabels: { try? session.history.lastAppliedLabels() })
        let desired = try prepared!.desired(labels: labels, revision: revision, stateDirectory: session.stateDirectory)
        return try Reconciliation(revision: revision, gate: gate, labels: labels, host: host, session: session, desired: desired,
                                  applied: applied, signer: vouched.signer, notes: vouched.notes, warnExpiryDays: warnExpiryDays, prune: prune)
    }

    /// The revision read from git and vouched for, to keep in the state directory once the agent
    /// holds it (`revision`, its commit); nil when it came from there, or is too large to keep.
    package func revisionToKeep(_ revision: String) throws -> KeptRevision? {
        guard let prepared, prepared.fromGit, prepared.commit == revision else { return nil }
        return try prepared.vouched.revision.kept(gate: gateWords(prepared.signers), signer: prepared.vouched.signer)
    }

    /// The gate in words a kept revision carries: verification, the allowed-signers file and its stamp.
    private func gateWords(_ signers: FileStamp?) -> String {
        "verify \(gate.verify.rawValue), allowed signers \(gate.allowedSigners ?? "none") \(signers?.fingerprint ?? "absent"), ancestry \(gate.checksAncestry)"
    }

    /// The revision `spec` names compared offline with `snapshot` (the device decides about ancestry).
    package func compareOffline(_ spec: SourceSpec, repository: GitRepository, snapshot: AgentSnapshot, labels: [String: String],
                                deviceDirectory: URL, warnExpiryDays: Int, prune: Bool) throws -> OfflineComparison {
        var offline = gate
        offline.checksAncestry = false
        let vouched = try Pipeline.revision(spec, repository: repository, gate: offline, lastApplied: snapshot.applied.revision)
        let revision = vouched.revision
        warnOnce(revision: revision, labels: labels, lastAppliedLabels: { nil })
        let desired = try DesiredStateResolver.resolve(try revision.policySet.desiredState(labels: labels), revision: revision,
                                                       deviceDirectory: deviceDirectory)
        return OfflineComparison(revision: revision, labels: labels, snapshot: snapshot, desired: desired, notes: vouched.notes,
                                 warnExpiryDays: warnExpiryDays, prune: prune)
    }

    /// Whether a revision was vouched for and kept (the mirror then holds a good one).
    package var isPrepared: Bool { prepared != nil }

    /// Forgets what was prepared (after a failed cycle, or stores opened anew).
    package func forget() {
        prepared = nil
    }

    /// The revision, vouched for now or (unchanged commit, last applied revision and allowed
    /// signers) earlier.
    private func vouch(_ spec: SourceSpec, repository: GitRepository, lastApplied: String?) throws -> VouchedRevision {
        let head: GitCommit
        do {
            head = try repository.resolve(spec.ref)
        } catch let error as GitError {
            throw SourceError(message: error.message)
        }
        let signers = gate.allowedSigners.flatMap { FileStamp(path: $0) }
        if let prepared, prepared.commit == head.id, prepared.lastApplied == lastApplied, prepared.signers == signers {
            return prepared.vouched
        }
        prepared = nil
        var pinned = spec
        pinned.ref = head.id  // the commit resolved once: what is kept is what was vouched for
        let vouched = try Pipeline.revision(pinned, repository: repository, gate: gate, lastApplied: lastApplied)
        prepared = PreparedRevision(commit: head.id, lastApplied: lastApplied, signers: signers, vouched: vouched, fromGit: true)
        return vouched
    }

    /// The label warnings, once per revision and labels.
    private func warnOnce(revision: PolicyRevision, labels: [String: String], lastAppliedLabels: () -> [String: String]?) {
        guard warnedFor?.commit != revision.commit.id || warnedFor?.labels != labels else { return }
        warnedFor = (revision.commit.id, labels)
        for warning in revision.policySet.labelWarnings(labels) { warn(warning) }
        if let previous = lastAppliedLabels(), previous != labels {
            func text(_ labels: [String: String]) -> String {
                labels.isEmpty ? "(none)" : labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
            }
            warn("the labels differ from the last apply's (\(text(previous)) then, \(text(labels)) now): other policies may select this device")
        }
    }
}

/// What a file looked like — the path itself (a symbolic link re-pointed changes it) and what
/// it leads to (device, inode, size, modification and change times) — so a changed stamp means
/// the file must be read again.
package struct FileStamp: Equatable {
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
    package static func identity(of path: String) -> [UInt64]? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return [UInt64(info.st_dev), UInt64(info.st_ino)]
    }

    package init?(path: String) {
        guard let link = Facts(path, following: false) else { return nil }
        self.link = link
        target = Facts(path, following: true)
    }

    /// The stamp as text, equal for equal stamps: to compare with one kept on disk.
    package var fingerprint: String {
        [link, target].map { facts in
            facts.map { "\($0.device):\($0.inode):\($0.size):\($0.modified.map(String.init).joined(separator: ".")):\($0.changed.map(String.init).joined(separator: "."))" } ?? "-"
        }.joined(separator: "/")
    }
}

/// A revision the driver vouched for and read, and its desired state for the labels last
/// seen, resolved with the device files as they were (stamped, so a changed container or
/// password file is read again).
final class PreparedRevision {
    let commit: String
    let lastApplied: String?
    let signers: FileStamp?
    let vouched: VouchedRevision
    private var resolved: (labels: [String: String], files: [String: FileStamp?], desired: ResolvedDesiredState)?

    /// Read from git (else from the state directory's kept revision).
    let fromGit: Bool

    init(commit: String, lastApplied: String?, signers: FileStamp?, vouched: VouchedRevision, fromGit: Bool) {
        self.commit = commit
        self.lastApplied = lastApplied
        self.signers = signers
        self.vouched = vouched
        self.fromGit = fromGit
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
                let named = path.hasPrefix("/") ? path : stateDirectory.appending(path: path).path
                files[named] = FileStamp(path: named)
            }
        }
        let desired = try DesiredStateResolver.resolve(state, revision: revision, deviceDirectory: stateDirectory)
        resolved = (labels, files, desired)
        return desired
    }
}
