import FoundationEssentials
import GitSource
import Policy
import X509

// The one reconcile pipeline (docs/architecture.md): resolve the revision → vouch for it
// (signatures, then ancestry) → read and decode → resolve device files → plan → apply and
// record in one transaction. `plan` and `drift` stop after planning; `apply`, `rollback` and
// the controller go on. Every command gets here through `Pipeline.revision` and
// `Reconciliation`, so the checks cannot differ between them.

/// Which commits must carry a trusted SSH signature before they are read or applied.
package enum VerifyMode: String, Sendable, CaseIterable {
    /// No verification.
    case off
    /// The revision to apply.
    case head
    /// Every commit since the last applied revision.
    case range
}

/// Checks that the commits to apply carry trusted SSH signatures. Reads commit objects only,
/// never a policy file.
package enum CommitVerification {
    package enum Outcome: Equatable {
        /// May be applied; the principal that signed the head, when verification is on.
        case accepted(signer: String?)
        /// Which commit was refused, why, and which key signed it if any.
        case refused(String)
    }

    /// `head` mode checks the revision; `range` every commit since `lastApplied` (the head
    /// alone when there is none, or it is not an ancestor).
    package static func check(repository: GitRepository, head: GitCommit, lastApplied: String?, mode: VerifyMode,
                             allowedSigners: String?) -> Outcome {
        guard mode != .off else { return .accepted(signer: nil) }
        guard let file = allowedSigners else { return .refused("--verify \(mode.rawValue) needs --allowed-signers FILE") }
        let allowed: [AllowedSigner]
        switch signers(in: file) {
        case .success(let read): allowed = read
        case .failure(let problem): return .refused(problem.message)
        }
        var commits = [head]
        if mode == .range, let last = lastApplied, last != head.id, repository.contains(commit: last),
           repository.isDescendant(head, of: last), let range = try? repository.commits(from: head, since: last) {
            commits = range
        }
        var signer: String?
        for commit in commits {
            let verdict: SignatureVerdict
            do {
                guard let signature = try repository.signature(of: commit) else {
                    return .refused("commit \(commit.id.prefix(12)) (\"\(commit.summary)\") is not signed: refused")
                }
                verdict = SSHSignature.verify(armored: signature.signature, payload: signature.signedData, allowed: allowed, at: commit.committedAt)
            } catch {
                return .refused("commit \(commit.id.prefix(12)): \(error)")
            }
            guard case .verified(let principal, _) = verdict else {
                return .refused("commit \(commit.id.prefix(12)) (\"\(commit.summary)\") is \(verdict): refused")
            }
            if commit.id == head.id { signer = principal }
        }
        return .accepted(signer: signer)
    }
}

extension CommitVerification {
    /// The entries of the allowed-signers file `file` (ssh-keygen's format), read now: it may
    /// change while a controller runs.
    package static func signers(in file: String) -> Result<[AllowedSigner], SourceError> {
        guard let data = FileManager.default.contents(atPath: file) else {
            return .failure(SourceError(message: "the allowed-signers file \(file) cannot be read"))
        }
        return .success(SSHSignature.allowedSigners(String(decoding: data, as: UTF8.self)))
    }
}

/// What must hold of a revision before Tether reads its files or applies it.
package struct RevisionGate: Sendable {
    package var verify: VerifyMode
    package var allowedSigners: String?
    /// `tether rollback`: going back to an earlier revision is what was asked for.
    package var rollbackRequested: Bool
    /// Offline plans against a snapshot: the device decides about ancestry when it applies.
    package var checksAncestry: Bool
    /// `plan` and `drift` only read: a revision that would be a rollback is planned, with a note
    /// that apply refuses it and how to go back on purpose, instead of refused.
    package var rollbackIsNote = false

    package init(verify: VerifyMode = .off, allowedSigners: String? = nil, rollbackRequested: Bool = false, checksAncestry: Bool = true) {
        self.verify = verify
        self.allowedSigners = allowedSigners
        self.rollbackRequested = rollbackRequested
        self.checksAncestry = checksAncestry
    }

    /// Verification off, ancestry checked: what `plan`, `drift` and `apply` without `--verify` use.
    package static let standard = RevisionGate()

    /// Signatures only: reads commit objects, never a policy file. Returns the head's signer.
    package func verifySignatures(repository: GitRepository, head: GitCommit, lastApplied: String?) throws -> String? {
        switch CommitVerification.check(repository: repository, head: head, lastApplied: lastApplied, mode: verify, allowedSigners: allowedSigners) {
        case .refused(let reason): throw RevisionRefused(.verification, reason)
        case .accepted(let signer): return signer
        }
    }

    /// Anti-rollback: a revision that does not descend from the last applied one is refused,
    /// unless this is `tether rollback` or a policy of the (already verified) revision says
    /// `spec.allowRollback: true`. Returns the notes a report must carry when going back.
    package func checkAncestry(repository: GitRepository, head: GitCommit, policies: PolicySet, lastApplied: String?) throws -> [String] {
        guard readsAncestry(of: head, lastApplied: lastApplied), let last = lastApplied else { return [] }
        let from = "from \(last.prefix(12)) to \(head.id.prefix(12))"
        if repository.contains(commit: last), repository.isDescendant(head, of: last) { return [] }
        if rollbackRequested { return ["Rolled back \(from)."] }
        if let policy = policies.policies.first(where: \.allowRollback) {
            return ["Went back \(from): policy '\(policy.name)' (\(policy.location.shortDescription)) says spec.allowRollback: true."]
        }
        if rollbackIsNote {
            return ["Applying revision \(head.id.prefix(12)) would be a rollback \(from): it does not descend from the last applied revision, so `tether apply` refuses it. "
                    + "To go back deliberately, run `tether rollback --to \(head.id.prefix(12))`, or commit a policy with spec.allowRollback: true in that revision."]
        }
        throw RevisionRefused(.rollback, """
            revision \(head.id.prefix(12)) does not descend from the last applied revision \(last.prefix(12)) (a rollback or a force-push): refused, nothing was changed. \
            To go back deliberately, run `tether rollback --to \(head.id.prefix(12))`, or commit a policy with spec.allowRollback: true in that revision.
            """)
    }

    /// Whether anti-rollback looks at commits: it is on, and a revision other than `head` was applied last.
    private func readsAncestry(of head: GitCommit, lastApplied: String?) -> Bool {
        checksAncestry && lastApplied != nil && lastApplied != head.id
    }

    /// Both checks, for a revision already read: what every apply's write transaction checks
    /// again against the revision the agent holds then.
    package func recheck(_ revision: PolicyRevision, lastApplied: String?) throws -> [String] {
        // Nothing to read from git (a kept revision's repository stays closed) when neither check reads commits.
        guard verify != .off || readsAncestry(of: revision.commit, lastApplied: lastApplied) else { return [] }
        let repository = try revision.repository()
        _ = try verifySignatures(repository: repository, head: revision.commit, lastApplied: lastApplied)
        return try checkAncestry(repository: repository, head: revision.commit, policies: revision.policySet, lastApplied: lastApplied)
    }
}

/// A revision refused before anything was read or applied.
package struct RevisionRefused: Error, CustomStringConvertible, Sendable {
    package enum Reason: String, Sendable {
        /// A commit is not signed by an allowed signer.
        case verification = "verification-refused"
        /// The revision does not descend from the last applied one.
        case rollback = "rollback-refused"
    }

    package let reason: Reason
    package let message: String
    package var description: String { message }

    package init(_ reason: Reason, _ message: String) {
        self.reason = reason
        self.message = message
    }
}

/// A revision whose commits were vouched for before its files were read.
package struct VouchedRevision {
    package init(revision: PolicyRevision, signer: String?, notes: [String]) {
        self.revision = revision
        self.signer = signer
        self.notes = notes
    }

    package let revision: PolicyRevision
    /// The principal that signed the head, when verification is on.
    package let signer: String?
    /// What a report must say about this revision (a deliberate rollback).
    package let notes: [String]
}

/// The first stages of the pipeline.
package enum Pipeline {
    /// Resolves `spec.ref` in an opened repository, verifies its signatures before reading
    /// anything, reads and decodes its policy files, then checks its ancestry against
    /// `lastApplied`. Throws `RevisionRefused`, `SourceError` or (invalid files) `PolicyProblems`.
    package static func revision(_ spec: SourceSpec, repository: GitRepository, gate: RevisionGate,
                                lastApplied: String?) throws -> VouchedRevision {
        let head: GitCommit
        do {
            head = try repository.resolve(spec.ref)
        } catch let error as GitError {
            throw SourceError(message: error.message)
        }
        let signer = try gate.verifySignatures(repository: repository, head: head, lastApplied: lastApplied)
        var pinned = spec
        pinned.ref = head.id
        let revision = try PolicyRevision(spec: pinned, repository: repository, commit: head)
        try revision.requireValid()
        let notes = try gate.checkAncestry(repository: repository, head: head, policies: revision.policySet, lastApplied: lastApplied)
        return VouchedRevision(revision: revision, signer: signer, notes: notes)
    }
}
