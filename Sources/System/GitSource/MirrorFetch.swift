import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// What a fetch child process is asked to do (JSON on its standard input: credentials never
/// appear on a command line, where every user of the machine can read them).
package struct MirrorFetchRequest: Codable, Sendable {
    package var url: String
    package var mirrorPath: String
    package var timeout: TimeInterval
    /// How to authenticate; secrets included, which is why this travels on standard input.
    package var credentials: RemoteCredentials
    /// A CA bundle for https remotes (`--git-ca-file`).
    package var certificateAuthorityFile: String?
    /// The process that asked: the fetch ends when it is gone.
    package var parentProcess: Int32

    package init(url: String, mirrorPath: String, credentials: RemoteCredentials, timeout: TimeInterval) {
        self.url = url
        self.mirrorPath = mirrorPath
        self.timeout = timeout
        self.credentials = credentials
        certificateAuthorityFile = url.lowercased().hasPrefix("https://") ? GitRepository.trustedCertificateFile : nil
        parentProcess = getpid()
    }
}

/// What a fetch child process answers (JSON on its standard output).
package struct MirrorFetchResponse: Codable, Sendable {
    package var fetched = false
    package var rebuilt = false
    package var bytesReceived = 0
    /// The error, already free of passwords.
    package var error: String?
}

/// One mirror fetch in a process of its own (`tether-fetch`), so that the caller can kill it,
/// with its sockets and its lock, when the network holds it (see docs/architecture.md).
package enum MirrorFetch {
    /// The child's side: performs one request (one fetch per mirror across processes, by a lock
    /// file beside it) and returns the response.
    package static func serve(_ input: [UInt8]) -> MirrorFetchResponse {
        var response = MirrorFetchResponse()
        guard let request = try? JSONDecoder().decode(MirrorFetchRequest.self, from: Data(input)) else {
            response.error = "tether-fetch: standard input is not a fetch request (tether runs this program itself)"
            return response
        }
        do {
            if let file = request.certificateAuthorityFile { try GitRepository.trustCertificates(inFile: file) }
            let parent = request.mirrorPath.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
            try FileManager.default.createDirectory(atPath: parent.isEmpty ? "/" : parent, withIntermediateDirectories: true)
            let lock = Glibc.open(request.mirrorPath + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            let locked = lock >= 0 && flock(lock, LOCK_EX) == 0
            defer { if lock >= 0 { close(lock) } }
            // Lock files inside the mirror are stale only when this fetch holds the mirror's lock.
            if locked { removeStaleLocks(in: request.mirrorPath) }
            let (_, update) = try GitRepository.updateMirror(url: request.url, at: request.mirrorPath,
                                                             credentials: request.credentials, timeout: request.timeout)
            response.fetched = update.fetched
            response.rebuilt = update.rebuilt
            response.bytesReceived = update.bytesReceived
        } catch let error as GitError {
            response.error = error.message
        } catch {
            response.error = "fetching \(GitRepository.redacted(request.url)) failed: \(error)"
        }
        return response
    }

    /// libgit2's lock files left in the mirror by a fetch that was killed (its time limit, a
    /// crash). Only a fetch holding the mirror's lock calls this, so every one of them is stale.
    static func removeStaleLocks(in mirror: String) {
        let manager = FileManager.default
        var candidates = ((try? manager.contentsOfDirectory(atPath: mirror)) ?? []).map { mirror + "/" + $0 }
        candidates += ((try? manager.subpathsOfDirectory(atPath: mirror + "/refs")) ?? []).map { mirror + "/refs/" + $0 }
        for path in candidates where path.hasSuffix(".lock") {
            try? manager.removeItem(atPath: path)
        }
    }
}
