import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GitSource
import Policy
import X509

/// Where policies come from: a repository (local path or URL), a ref and a folder in its tree.
public struct SourceSpec: Sendable {
    public var repository: String
    public var ref: String?
    public var path: String

    public init(repository: String, ref: String?, path: String) {
        self.repository = repository
        self.ref = ref
        self.path = path
    }

    /// The repository as people and logs may see it: without a password in its URL.
    public var displayRepository: String { GitRepository.redacted(repository) }
}

/// One revision's policies, read from git objects (never from a working tree).
public final class PolicyRevision {
    public let spec: SourceSpec
    public let commit: GitCommit
    public let policySet: PolicySet
    /// How many policy files were read.
    public let fileCount: Int
    /// The repository the revision was read from (the mirror, for a remote).
    public let repository: GitRepository

    /// Opens the repository (mirroring it into `mirrorDirectory` when it is a URL), resolves
    /// the ref and decodes every `.yaml`/`.yml` file under the path. Throws `SourceError`;
    /// problems in the files are kept for `validate()` and `requireValid()`.
    public convenience init(spec: SourceSpec, mirrorDirectory: URL, credentials: RemoteCredentials = .none) throws {
        let repository = try Self.open(spec, mirrorDirectory: mirrorDirectory, credentials: credentials).repository
        try self.init(spec: spec, repository: repository)
    }

    /// Reads the revision `spec.ref` names from an opened repository.
    public convenience init(spec: SourceSpec, repository: GitRepository) throws {
        let commit: GitCommit
        do {
            commit = try repository.resolve(spec.ref)
        } catch let error as GitError {
            throw SourceError(message: error.message)
        }
        try self.init(spec: spec, repository: repository, commit: commit)
    }

    /// Reads the policy files of `commit`, already resolved (and vouched for, see `Pipeline`).
    public init(spec: SourceSpec, repository: GitRepository, commit: GitCommit) throws {
        self.spec = spec
        self.repository = repository
        self.commit = commit
        let files: [GitFile]
        do {
            files = try repository.files(in: commit, under: spec.path) { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }
        } catch let error as GitError {
            throw SourceError(message: error.message)
        }
        if files.isEmpty {
            throw SourceError(message: "no policy files (*.yaml, *.yml) under '\(spec.path)' in commit \(commit.id.prefix(12)) of \(spec.displayRepository); pass the folder that holds them with --path")
        }
        fileCount = files.count
        policySet = PolicySet(decoding: files.map { ($0.path, $0.contents) })
    }

    /// Throws `PolicyProblems` when any policy file has a problem.
    public func requireValid() throws {
        if !policySet.problems.isEmpty { throw PolicyProblems(policySet.problems) }
    }

    /// Reads a file of this revision; nil when there is none at `path`.
    public func file(at path: String) throws -> [UInt8]? {
        do {
            return try repository.file(in: commit, at: path)?.contents
        } catch let error as GitError {
            throw SourceError(message: error.message)
        }
    }

    /// Checks what can be checked without a device: every referenced server certificate exists
    /// in this revision and is a certificate; policies of equal priority that could select one
    /// device never disagree. Returns every problem found.
    public func validate() -> [PolicyProblem] {
        var problems = policySet.problems + policySet.potentialConflicts()
        var checked: [String: String?] = [:]
        for policy in policySet.policies {
            for (key, sourced) in policy.values {
                guard case .serverCertificate(let path) = sourced.value else { continue }
                if checked[path] == nil { checked[path] = certificateProblem(path) }
                if let problem = checked[path] ?? nil {
                    problems.append(PolicyProblem(sourced.source, "\(key): \(problem)"))
                }
            }
        }
        return PolicyProblems(problems).problems
    }

    /// Reads and parses a server certificate of this revision.
    func certificate(at path: String) throws -> (Certificate, [UInt8]) {
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
    /// `timeout` seconds. libgit2 1.5 has no network timeouts, so the transfer runs on its own
    /// thread: past the time limit it is abandoned and reported, and no other fetch touches that
    /// mirror until it ends.
    public static func open(_ spec: SourceSpec, mirrorDirectory: URL, credentials: RemoteCredentials,
                            timeout: TimeInterval = 60) throws -> (repository: GitRepository, update: MirrorUpdate?) {
        guard GitRepository.isRemote(spec.repository) else {
            do {
                return (try GitRepository(path: spec.repository), nil)
            } catch let error as GitError {
                throw SourceError(message: error.message)
            }
        }
        let path = mirrorDirectory.appendingPathComponent(mirrorName(for: spec.repository)).path
        guard FetchWatchdog.begin(path) else {
            throw SourceError(message: "a previous fetch of \(spec.displayRepository) is still stuck past its time limit; waiting for it to end")
        }
        let outcome = FetchOutcome()
        let done = DispatchSemaphore(value: 0)
        let url = spec.repository
        FetchWatchdog.queue.async {
            defer { FetchWatchdog.end(path); done.signal() }
            // One fetch per mirror across processes too (tether plan beside tether run).
            try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let lock = Glibc.open(path + ".lock", O_RDWR | O_CREAT, 0o600)
            if lock >= 0 { flock(lock, LOCK_EX) }
            defer { if lock >= 0 { flock(lock, LOCK_UN); close(lock) } }
            do {
                outcome.set(.success(try GitRepository.updateMirror(url: url, at: path, credentials: credentials, timeout: timeout)))
            } catch {
                outcome.set(.failure(error))
            }
        }
        guard done.wait(timeout: .now() + timeout) == .success, let result = outcome.result else {
            throw SourceError(message: "fetching \(spec.displayRepository) took longer than \(Int(timeout)) s (--fetch-timeout): abandoned")
        }
        switch result {
        case .success(let (mirror, update)): return (mirror, update)
        case .failure(let error as GitError): throw SourceError(message: error.message)
        case .failure(let error): throw error
        }
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

/// Mirrors with a fetch under way (a fetch past its time limit stays here until it ends).
private enum FetchWatchdog {
    nonisolated(unsafe) private static var inFlight = Set<String>()
    private static let lock = NSLock()
    /// Fetches block on the network: they run here, never on Swift's cooperative pool, on
    /// threads dispatch reuses (a new thread per fetch kept growing the process).
    static let queue = DispatchQueue(label: "tether.fetch", attributes: .concurrent)

    static func begin(_ path: String) -> Bool { lock.withLock { inFlight.insert(path).inserted } }
    static func end(_ path: String) { _ = lock.withLock { inFlight.remove(path) } }
}

/// The result a fetch thread hands back.
private final class FetchOutcome: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Result<(GitRepository, MirrorUpdate), Error>?
    func set(_ result: Result<(GitRepository, MirrorUpdate), Error>) { lock.withLock { value = result } }
    var result: Result<(GitRepository, MirrorUpdate), Error>? { lock.withLock { value } }
}

enum CertificateFileError: Error {
    case missing
    case invalid(String)

    func message(path: String, commit: GitCommit) -> String {
        switch self {
        case .missing: return "certificate file '\(path)' does not exist in commit \(commit.id.prefix(12))"
        case .invalid(let reason): return "'\(path)' is \(reason)"
        }
    }
}

/// The repository or ref could not be read.
public struct SourceError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}
