import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
import GitSource
import IntegrationModel
import Policy
import X509

/// Where policies come from: a repository (local path or URL), a ref and a folder in its tree.
package struct SourceSpec: Sendable {
    package var repository: String
    package var ref: String?
    package var path: String

    package init(repository: String, ref: String?, path: String) {
        self.repository = repository
        self.ref = ref
        self.path = path
    }

    /// The repository as people and logs may see it: without a password in its URL.
    package var displayRepository: String { GitRepository.redacted(repository) }

    /// The repository as a review shows it (the Markdown and HTML reports a pull request
    /// carries): a remote's URL (redacted), a local checkout's folder name — not `.` nor the
    /// CI runner's absolute path.
    package var reviewName: String {
        guard !GitRepository.isRemote(repository) else { return displayRepository }
        var path = repository
        if let resolved = realpath(repository, nil) {
            path = String(cString: resolved)
            free(resolved)
        }
        let name = path.split(separator: "/").last.map(String.init) ?? path
        return name.hasSuffix(".git") && name.count > 4 ? String(name.dropLast(4)) : name
    }
}

/// One revision's policies, read from git objects (never from a working tree), or from the
/// state directory's kept revision (`KeptRevision`).
package final class PolicyRevision {
    package let spec: SourceSpec
    package let commit: GitCommit
    package let policySet: PolicySet
    /// How many policy files were read.
    package let fileCount: Int
    /// Where its files come from.
    private enum Files {
        case repository(GitRepository)
        /// A kept revision's files; the repository is opened only for a file it lacks (or a
        /// check that reads commits).
        /// (Paths by their bytes: Swift's strings compare by Unicode equivalence, git's paths do not.)
        case kept([[UInt8]: [UInt8]], open: () throws -> GitRepository)
    }
    private var files: Files

    /// Whether a file is a policy file.
    package static func isPolicyFile(_ path: String) -> Bool { path.hasSuffix(".yaml") || path.hasSuffix(".yml") }

    /// Opens the repository (mirroring it into `mirrorDirectory` when it is a URL), resolves
    /// the ref and decodes every `.yaml`/`.yml` file under the path. Throws `SourceError`;
    /// problems in the files are kept for `validate()` and `requireValid()`.
    package convenience init(spec: SourceSpec, mirrorDirectory: URL, credentials: RemoteCredentials = .none) throws {
        let repository = try Self.open(spec, mirrorDirectory: mirrorDirectory, credentials: credentials).repository
        try self.init(spec: spec, repository: repository)
    }

    /// Reads the revision `spec.ref` names from an opened repository.
    package convenience init(spec: SourceSpec, repository: GitRepository) throws {
        let commit: GitCommit
        do {
            commit = try repository.resolve(spec.ref)
        } catch let error as GitError {
            throw SourceError(message: error.message)
        }
        try self.init(spec: spec, repository: repository, commit: commit)
    }

    /// Reads the policy files of `commit`, already resolved (and vouched for, see `Pipeline`);
    /// `GitCommit.index` reads the files staged in the index instead (`validate --staged`).
    package init(spec: SourceSpec, repository: GitRepository, commit: GitCommit) throws {
        self.spec = spec
        self.files = .repository(repository)
        self.commit = commit
        let files: [GitFile]
        do {
            files = commit == .index ? try repository.stagedFiles(under: spec.path, include: Self.isPolicyFile)
                                     : try repository.files(in: commit, under: spec.path, include: Self.isPolicyFile)
        } catch let error as GitError {
            throw SourceError(message: error.message)
        }
        if files.isEmpty {
            let place = commit == .index ? "staged in the index" : "in commit \(commit.id.prefix(12))"
            throw SourceError(message: "no policy files (*.yaml, *.yml) under '\(spec.path)' \(place) of \(spec.displayRepository); pass the folder that holds them with --path")
        }
        fileCount = files.count
        policySet = PolicySet(decoding: files.map { ($0.path, $0.contents) })
    }

    /// The revision `kept` holds, decoded again; `open` opens its repository if a file the kept
    /// revision lacks, or a check of its commits, needs it.
    package init(kept: KeptRevision, open: @escaping () throws -> GitRepository) {
        spec = SourceSpec(repository: kept.repository, ref: kept.commit.id, path: kept.path)
        commit = kept.commit
        fileCount = kept.policyFiles.count
        policySet = PolicySet(decoding: kept.policyFiles.map { ($0.path, $0.contents) })
        files = .kept(Dictionary(kept.otherFiles.map { (Array($0.path.utf8), $0.contents) }, uniquingKeysWith: { first, _ in first }), open: open)
    }

    /// The repository the revision was read from (the mirror, for a remote), opened now if the
    /// revision came from the state directory.
    package func repository() throws -> GitRepository {
        switch files {
        case .repository(let repository):
            return repository
        case .kept(_, let open):
            let repository = try open()
            files = .repository(repository)
            return repository
        }
    }

    /// This revision as the state directory keeps it: its policy files and the server
    /// certificates its policies name, read again from git. Nil when they are more than
    /// `KeptRevision.largest` bytes, or for the staged files.
    package func kept(gate: String, signer: String?) throws -> KeptRevision? {
        guard commit != .index, case .repository(let repository) = files else { return nil }
        do {
            let policyFiles = try repository.files(in: commit, under: spec.path, include: Self.isPolicyFile)
            let named = Set(certificateReferences.map { Array($0.path.utf8) }).map { String(decoding: $0, as: UTF8.self) }.sorted()
            let otherFiles = try named.compactMap { path in try repository.file(in: commit, at: path).map { KeptRevision.File(path: path, contents: $0.contents) } }
            return KeptRevision(commit: commit, repository: spec.repository, path: spec.path, gate: gate, signer: signer,
                                policyFiles: policyFiles.map { KeptRevision.File(path: $0.path, contents: $0.contents) }, otherFiles: otherFiles)
        } catch let error as GitError {
            throw SourceError(message: error.message)
        }
    }

    /// Throws `PolicyProblems` when any policy file has a problem.
    package func requireValid() throws {
        if !policySet.problems.isEmpty { throw PolicyProblems(policySet.problems) }
    }

    /// Reads a file of this revision; nil when there is none at `path`.
    package func file(at path: String) throws -> [UInt8]? {
        if case .kept(let kept, _) = files, let contents = kept[Array(path.utf8)] { return contents }
        do {
            let repository = try repository()
            if commit == .index { return try repository.stagedFile(at: path)?.contents }
            return try repository.file(in: commit, at: path)?.contents
        } catch let error as GitError {
            throw SourceError(message: error.message)
        }
    }

    /// Checks what can be checked without a device: every referenced server certificate exists
    /// in this revision and is a certificate; policies of equal priority that could select one
    /// device never disagree. Returns every problem found.
    package func validate() -> [PolicyProblem] {
        var problems = policySet.problems + policySet.potentialConflicts()
        var checked: [String: String?] = [:]
        for (key, sourced, path) in certificateReferences {
            if checked[path] == nil { checked[path] = certificateProblem(path) }
            if let problem = checked[path] ?? nil {
                problems.append(PolicyProblem(sourced.source, "\(key): \(problem)"))
            }
        }
        return PolicyProblems(problems).problems
    }

    /// Every server certificate the policies name: the key, where it is written, and its path
    /// in this revision.
    private var certificateReferences: [(key: DesiredKey, sourced: Sourced<DesiredValue>, path: String)] {
        policySet.policies.flatMap { policy in
            policy.values.compactMap { key, sourced in
                guard case .serverCertificate(let path) = sourced.value else { return nil }
                return (key, sourced, path)
            }
        }
    }

    /// Reads and parses a server certificate of this revision.
    package func certificate(at path: String) throws -> (Certificate, [UInt8]) {
        guard let bytes = try file(at: path) else {
            throw CertificateFileError.missing
        }
        do {
            return (try Certificate(bytes: bytes), bytes)
        } catch {
            throw CertificateFileError.invalid("\(error)")
        }
    }

    private func certificateProblem(_ path: String) -> String? {
        do {
            _ = try certificate(at: path)
            return nil
        } catch let error as CertificateFileError {
            return error.message(path: path, commit: commit)
        } catch {
            return "\(path): \(error)"
        }
    }

    /// Opens a local repository, or brings the mirror of a remote one up to date within
    /// `timeout` seconds: the remote's refs are asked for here (touching no mirror), and only
    /// when one moved is the mirror fetched, in a child process that is killed at the time
    /// limit. A stuck connection therefore never outlives its cycle or blocks a later one.
    package static func open(_ spec: SourceSpec, mirrorDirectory: URL, credentials: RemoteCredentials,
                            timeout: TimeInterval = 60) throws -> (repository: GitRepository, update: MirrorUpdate?) {
        guard GitRepository.isRemote(spec.repository) else {
            do {
                return (try GitRepository(path: spec.repository), nil)
            } catch let error as GitError {
                throw SourceError(message: error.message)
            }
        }
        let path = mirrorDirectory.appending(path: mirrorName(for: spec.repository)).path
        let deadline = Date().addingTimeInterval(timeout)
        let abandoned = SourceError(message: "fetching \(spec.displayRepository) took longer than \(Int(timeout)) s (--fetch-timeout): abandoned")
        let update: MirrorUpdate
        if !FileManager.default.fileExists(atPath: path),
           let cloned = try MirrorFetcher.clone(spec.repository, into: path, credentials: credentials, until: deadline, abandoned: abandoned) {
            update = cloned
        } else if let refs = try MirrorFetcher.probe(spec.repository, credentials: credentials, timeout: timeout, abandoned: abandoned),
                  let current = GitRepository.mirror(at: path, holding: refs) {
            return (current, MirrorUpdate(fetched: false, rebuilt: false, bytesReceived: 0))
        } else {
            update = try MirrorFetcher.fetch(MirrorFetchRequest(url: spec.repository, mirrorPath: path, credentials: credentials,
                                                                timeout: max(1, deadline.timeIntervalSinceNow)),
                                             until: deadline, abandoned: abandoned)
        }
        do {
            return (try GitRepository(path: path), update)
        } catch let error as GitError {
            throw SourceError(message: error.message)
        }
    }

    /// The mirror of a remote as it is, without contacting the remote (a probe said nothing
    /// moved); nil when there is no mirror yet or the source is a local path.
    package static func openMirror(_ spec: SourceSpec, mirrorDirectory: URL) -> GitRepository? {
        guard GitRepository.isRemote(spec.repository) else { return nil }
        let path = mirrorDirectory.appending(path: mirrorName(for: spec.repository)).path
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return try? GitRepository(path: path)
    }

    /// A folder name for a remote's mirror: readable, and unique by a hash of the URL without
    /// its password (so `team-a` and `team_a` never share a mirror).
    static func mirrorName(for url: String) -> String {
        let redacted = GitRepository.redacted(url)
        let host = redacted.split(separator: "/").dropFirst().first { !$0.isEmpty }.map { String($0.split(separator: "@").last ?? $0) } ?? "remote"
        let readable = String(host.map { $0.isLetter || $0.isNumber ? $0 : "_" }.prefix(40))
        return "\(readable)-\(Digest.sha256Hex(Array(redacted.utf8)).prefix(16))"
    }
}

/// Why a server certificate named by a policy cannot be used.
package enum CertificateFileError: Error {
    case missing
    case invalid(String)

    package func message(path: String, commit: GitCommit) -> String {
        switch self {
        case .missing: return "certificate file '\(path)' does not exist \(commit == .index ? "among the staged files" : "in commit \(commit.id.prefix(12))")"
        case .invalid(let reason): return "'\(path)' is \(reason)"
        }
    }
}

/// The repository or ref could not be read.
package struct SourceError: Error, CustomStringConvertible, Sendable {
    package let message: String
    package var description: String { message }

    package init(message: String) {
        self.message = message
    }
}
