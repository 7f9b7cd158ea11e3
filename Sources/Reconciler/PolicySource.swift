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
    public init(spec: SourceSpec, repository: GitRepository) throws {
        self.spec = spec
        self.repository = repository
        do {
            commit = try repository.resolve(spec.ref)
        } catch let error as GitError {
            throw SourceError(message: error.message)
        }
        let files: [GitFile]
        do {
            files = try repository.files(in: commit, under: spec.path) { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }
        } catch let error as GitError {
            throw SourceError(message: error.message)
        }
        if files.isEmpty {
            throw SourceError(message: "no policy files (*.yaml, *.yml) under '\(spec.path)' in commit \(commit.id.prefix(12)) of \(spec.repository); pass the folder that holds them with --path")
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

    /// Opens a local repository, or brings the mirror of a remote one up to date.
    public static func open(_ spec: SourceSpec, mirrorDirectory: URL, credentials: RemoteCredentials,
                            timeout: TimeInterval = 60) throws -> (repository: GitRepository, update: MirrorUpdate?) {
        do {
            if GitRepository.isRemote(spec.repository) {
                let path = mirrorDirectory.appendingPathComponent(mirrorName(for: spec.repository)).path
                let (mirror, update) = try GitRepository.updateMirror(url: spec.repository, at: path, credentials: credentials, timeout: timeout)
                return (mirror, update)
            }
            return (try GitRepository(path: spec.repository), nil)
        } catch let error as GitError {
            throw SourceError(message: error.message)
        }
    }

    static func mirrorName(for url: String) -> String {
        let safe = url.map { $0.isLetter || $0.isNumber ? $0 : "_" }
        return String(String(safe).suffix(80))
    }
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
