#if canImport(Glibc)
import Glibc
#endif

/// What a fetch child process is asked to do (on its standard input: credentials never appear
/// on a command line, where every user of the machine can read them).
package struct MirrorFetchRequest: Sendable, Equatable {
    package var url: String
    package var mirrorPath: String
    /// Seconds.
    package var timeout: Double
    /// How to authenticate; secrets included, which is why this travels on standard input.
    package var credentials: RemoteCredentials
    /// A CA bundle for https remotes (`--git-ca-file`).
    package var certificateAuthorityFile: String?
    /// The process that asked: the fetch ends when it is gone.
    package var parentProcess: Int32

    package init(url: String, mirrorPath: String, credentials: RemoteCredentials, timeout: Double) {
        self.url = url
        self.mirrorPath = mirrorPath
        self.timeout = timeout
        self.credentials = credentials
        certificateAuthorityFile = url.lowercased().hasPrefix("https://") ? GitRepository.trustedCertificateFile : nil
        parentProcess = getpid()
    }

    /// The request as `FetchMessage` fields; nil when a value holds a NUL byte (a URL or path no
    /// C string can carry, refused rather than cut).
    package var encoded: [UInt8]? {
        FetchMessage.encode([
            ("url", url), ("mirrorPath", mirrorPath), ("timeout", "\(timeout)"), ("parentProcess", "\(parentProcess)"),
            ("certificateAuthorityFile", certificateAuthorityFile), ("username", credentials.username), ("password", credentials.password),
            ("sshPrivateKey", credentials.sshPrivateKey), ("sshPassphrase", credentials.sshPassphrase),
            ("knownHosts", credentials.knownHosts), ("passwordSource", credentials.passwordSource),
        ])
    }

    /// A request read back from `encoded`; nil for anything else.
    package init?(decoding bytes: [UInt8]) {
        guard let fields = FetchMessage.decode(bytes), let url = fields["url"], let mirrorPath = fields["mirrorPath"],
              let timeout = fields["timeout"].flatMap(Double.init), let parent = fields["parentProcess"].flatMap(Int32.init) else { return nil }
        self.url = url
        self.mirrorPath = mirrorPath
        self.timeout = timeout
        parentProcess = parent
        certificateAuthorityFile = fields["certificateAuthorityFile"]
        credentials = RemoteCredentials(username: fields["username"], password: fields["password"], sshPrivateKey: fields["sshPrivateKey"],
                                        sshPassphrase: fields["sshPassphrase"], knownHosts: fields["knownHosts"], passwordSource: fields["passwordSource"])
    }
}

/// What a fetch child process answers (on its standard output).
package struct MirrorFetchResponse: Sendable, Equatable {
    package var fetched = false
    package var rebuilt = false
    package var bytesReceived = 0
    /// The error, already free of passwords.
    package var error: String?

    package init() {}

    /// The response as `FetchMessage` fields; nil when a value holds a NUL byte.
    package var encoded: [UInt8]? {
        FetchMessage.encode([("fetched", "\(fetched)"), ("rebuilt", "\(rebuilt)"), ("bytesReceived", "\(bytesReceived)"), ("error", error)])
    }

    /// A response read back from `encoded`; nil for anything else.
    package init?(decoding bytes: [UInt8]) {
        guard let fields = FetchMessage.decode(bytes), let fetched = fields["fetched"].flatMap(Bool.init),
              let rebuilt = fields["rebuilt"].flatMap(Bool.init), let received = fields["bytesReceived"].flatMap(Int.init) else { return nil }
        self.fetched = fetched
        self.rebuilt = rebuilt
        bytesReceived = received
        error = fields["error"]
    }
}

/// How tether and tether-fetch exchange a request and its response: each field as its name, a
/// NUL byte, its UTF-8 value and a NUL byte, then an `end` field, so that a message cut short
/// is no message. No value may hold NUL (they are paths, URLs and secrets that C strings carry):
/// such a message is not made. Absent fields are left out; a name twice is malformed. JSON would
/// need a JSON library in tether-fetch, which links no Foundation.
package enum FetchMessage {
    private static let end = "end"

    static func encode(_ fields: [(String, String?)]) -> [UInt8]? {
        var bytes: [UInt8] = []
        for case let (name, value?) in fields + [(end, "")] {
            guard !value.utf8.contains(0) else { return nil }
            bytes += Array(name.utf8) + [0] + Array(value.utf8) + [0]
        }
        return bytes
    }

    static func decode(_ bytes: [UInt8]) -> [String: String]? {
        guard bytes.last == 0 else { return nil }
        let parts = bytes.dropLast().split(separator: 0, omittingEmptySubsequences: false)
        guard parts.count % 2 == 0 else { return nil }
        var fields: [String: String] = [:]
        var index = parts.startIndex
        while index + 1 < parts.endIndex {
            guard let name = String(validating: parts[index], as: UTF8.self), let value = String(validating: parts[index + 1], as: UTF8.self),
                  fields.updateValue(value, forKey: name) == nil else { return nil }
            index += 2
        }
        // The last field must be the end: anything after it, or a message without it, is refused.
        guard String(decoding: parts[parts.endIndex - 2], as: UTF8.self) == end, fields.removeValue(forKey: end) == "" else { return nil }
        return fields
    }
}

/// One mirror fetch in a process of its own (`tether-fetch`), so that the caller can kill it,
/// with its sockets and its lock, when the network holds it (see docs/architecture.md).
package enum MirrorFetch {
    /// The child's side: performs one request (one fetch per mirror across processes, by a lock
    /// file beside it) and returns the response.
    package static func serve(_ input: [UInt8]) -> MirrorFetchResponse {
        var response = MirrorFetchResponse()
        guard let request = MirrorFetchRequest(decoding: input) else {
            response.error = "tether-fetch: standard input is not a fetch request (tether runs this program itself)"
            return response
        }
        do {
            if let file = request.certificateAuthorityFile { try GitRepository.trustCertificates(inFile: file) }
            let parent = request.mirrorPath.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
            try PlainFiles.createFolders(parent.isEmpty ? "/" : parent)
            let update = try withMirrorLock(request.mirrorPath) { locked in
                // Lock files inside the mirror are stale only when this fetch holds the mirror's lock.
                if locked { removeStaleLocks(in: request.mirrorPath) }
                return try GitRepository.updateMirror(url: request.url, at: request.mirrorPath,
                                                      credentials: request.credentials, timeout: request.timeout).1
            }
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

    /// Runs `body` holding the mirror's lock (`<mirror>.lock`, beside it): what writes into a
    /// mirror (a fetch, a bundle read into it) does so one at a time across processes. `body`
    /// learns whether the lock was taken (a file system that refuses it still gets the work done).
    package static func withMirrorLock<T>(_ mirrorPath: String, _ body: (Bool) throws -> T) rethrows -> T {
        let lock = Glibc.open(mirrorPath + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        let locked = lock >= 0 && flock(lock, LOCK_EX) == 0
        defer { if lock >= 0 { close(lock) } }
        return try body(locked)
    }

    /// libgit2's lock files left in the mirror by a fetch that was killed (its time limit, a
    /// crash). Only a fetch holding the mirror's lock calls this, so every one of them is stale.
    static func removeStaleLocks(in mirror: String) {
        var candidates = PlainFiles.entries(mirror).map { mirror + "/" + $0 }
        candidates += PlainFiles.subpaths(mirror + "/refs").map { mirror + "/refs/" + $0 }
        for path in candidates where path.hasSuffix(".lock") {
            unlink(path)
        }
    }
}
