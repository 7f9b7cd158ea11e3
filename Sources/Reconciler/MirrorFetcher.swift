import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GitSource

/// What a fetch child process is asked to do (JSON on its standard input: credentials never
/// appear on a command line, where every user of the machine can read them).
public struct MirrorFetchRequest: Codable, Sendable {
    public var url: String
    public var mirrorPath: String
    public var timeout: TimeInterval
    public var username: String?
    public var password: String?
    public var sshPrivateKey: String?
    public var sshPassphrase: String?
    public var knownHosts: String?
    /// A CA bundle for https remotes (`--git-ca-file`).
    public var certificateAuthorityFile: String?

    public init(url: String, mirrorPath: String, credentials: RemoteCredentials, timeout: TimeInterval) {
        self.url = url
        self.mirrorPath = mirrorPath
        self.timeout = timeout
        username = credentials.username
        password = credentials.password
        sshPrivateKey = credentials.sshPrivateKey
        sshPassphrase = credentials.sshPassphrase
        knownHosts = credentials.knownHosts
        certificateAuthorityFile = url.lowercased().hasPrefix("https://") ? GitRepository.trustedCertificateFile : nil
    }

    var credentials: RemoteCredentials {
        RemoteCredentials(username: username, password: password, sshPrivateKey: sshPrivateKey, sshPassphrase: sshPassphrase, knownHosts: knownHosts)
    }
}

/// What a fetch child process answers (JSON on its standard output).
public struct MirrorFetchResponse: Codable, Sendable {
    public var fetched = false
    public var rebuilt = false
    public var bytesReceived = 0
    /// The error, already free of passwords.
    public var error: String?
}

/// Brings mirrors up to date where a stuck network cannot hold the controller: the ref listing
/// runs on a thread with a deadline (it touches no mirror, so abandoning it costs a thread and
/// nothing else), and the fetch runs in a child process (`tether fetch-mirror`) that is killed
/// at its deadline, so its socket and its lock on the mirror go with it.
public enum MirrorFetcher {
    /// The executable whose `fetch-mirror` subcommand serves `MirrorFetchRequest`s: `tether`
    /// itself. Set once at start-up by the command line.
    nonisolated(unsafe) public static var executable: String?

    /// How many abandoned ref listings may still be blocked on the network before listings go to
    /// the child process too (each holds a thread until the kernel gives up on its connection).
    static let abandonedProbeLimit = 2
    private static let lock = NSLock()
    nonisolated(unsafe) private static var abandonedProbes = 0
    private static let queue = DispatchQueue(label: "tether.refs", attributes: .concurrent)

    /// The remote's refs, or nil when too many earlier listings are still stuck (then the child
    /// process lists them itself). Throws `abandoned` past the time limit.
    static func probe(_ url: String, credentials: RemoteCredentials, timeout: TimeInterval,
                      abandoned: SourceError) throws -> [String: String]? {
        guard lock.withLock({ abandonedProbes < abandonedProbeLimit }) else { return nil }
        let result = ProbeResult()
        let done = DispatchSemaphore(value: 0)
        queue.async {
            result.set(Result { try GitRepository.advertisedRefs(url: url, credentials: credentials, timeout: timeout) })
            if !result.deliver() { lock.withLock { abandonedProbes -= 1 } }
            done.signal()
        }
        guard done.wait(timeout: .now() + timeout) == .success else {
            if result.abandon() { lock.withLock { abandonedProbes += 1 } }
            throw abandoned
        }
        switch result.value! {
        case .success(let refs): return refs
        case .failure(let error as GitError): throw SourceError(message: error.message)
        case .failure(let error): throw error
        }
    }

    /// Runs the fetch in a child process and waits for it until `deadline`; past it the child is
    /// killed and `abandoned` thrown.
    static func fetch(_ request: MirrorFetchRequest, until deadline: Date, abandoned: SourceError) throws -> MirrorUpdate {
        guard let executable else {
            throw SourceError(message: "cannot fetch: the tether executable that runs fetches is not known")
        }
        let input = try JSONEncoder().encode(request)
        let output = try ChildRun.run(executable, ["fetch-mirror"], input: Array(input), until: deadline)
        guard let output else { throw abandoned }
        guard let response = try? JSONDecoder().decode(MirrorFetchResponse.self, from: Data(output)) else {
            throw SourceError(message: "fetching \(GitRepository.redacted(request.url)) failed: the fetch process ended without an answer")
        }
        if let error = response.error { throw SourceError(message: error) }
        return MirrorUpdate(fetched: response.fetched, rebuilt: response.rebuilt, bytesReceived: response.bytesReceived)
    }

    /// The child's side: performs one request (one fetch per mirror across processes, by a lock
    /// file beside it) and returns the response.
    public static func serve(_ input: [UInt8]) -> MirrorFetchResponse {
        var response = MirrorFetchResponse()
        guard let request = try? JSONDecoder().decode(MirrorFetchRequest.self, from: Data(input)) else {
            response.error = "fetch-mirror: standard input is not a fetch request (it is run by tether itself)"
            return response
        }
        do {
            if let file = request.certificateAuthorityFile { try GitRepository.trustCertificates(inFile: file) }
            try FileManager.default.createDirectory(atPath: (request.mirrorPath as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            let lock = Glibc.open(request.mirrorPath + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            if lock >= 0 { flock(lock, LOCK_EX) }
            defer { if lock >= 0 { close(lock) } }
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
}

/// A ref listing's result, handed from its thread to the waiting caller — or dropped, when the
/// caller gave up on it.
private final class ProbeResult: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<[String: String], Error>?
    private var abandoned = false

    func set(_ value: Result<[String: String], Error>) { lock.withLock { result = value } }
    var value: Result<[String: String], Error>? { lock.withLock { result } }
    /// The caller gave up; false when the result had already come.
    func abandon() -> Bool { lock.withLock { abandoned = result == nil; return abandoned } }
    /// Whether the caller still waits (false: it was abandoned).
    func deliver() -> Bool { lock.withLock { !abandoned } }
}

/// A child process fed `input` on standard input, whose standard output is collected until it
/// ends or `deadline` passes (then it is killed and nil returned).
enum ChildRun {
    /// A pipe whose ends are not inherited by other children this process starts.
    private static func makePipe(_ ends: inout [Int32]) -> Bool {
        guard pipe(&ends) == 0 else { return false }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        return true
    }

    static func run(_ executable: String, _ arguments: [String], input: [UInt8], until deadline: Date) throws -> [UInt8]? {
        var toChild: [Int32] = [0, 0]
        var fromChild: [Int32] = [0, 0]
        guard makePipe(&toChild) else { throw SourceError(message: "cannot start a fetch: \(String(cString: strerror(errno)))") }
        guard makePipe(&fromChild) else {
            close(toChild[0]); close(toChild[1])
            throw SourceError(message: "cannot start a fetch: \(String(cString: strerror(errno)))")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, toChild[0], STDIN_FILENO)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], STDOUT_FILENO)
        posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0)
        // The child starts with default signal handling, whatever this process blocks.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        close(toChild[0])
        close(fromChild[1])
        guard status == 0 else {
            close(toChild[1]); close(fromChild[0])
            throw SourceError(message: "cannot start \(executable) for a fetch: \(String(cString: strerror(status)))")
        }
        defer {
            close(fromChild[0])
            var ended: Int32 = 0
            while waitpid(pid, &ended, 0) < 0 && errno == EINTR {}
        }
        // The request is small (well under a pipe's buffer): written whole before reading.
        _ = input.withUnsafeBytes { write(toChild[1], $0.baseAddress, $0.count) }
        close(toChild[1])
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let remaining = deadline.timeIntervalSinceNow
            var descriptor = pollfd(fd: fromChild[0], events: Int16(POLLIN), revents: 0)
            let ready = remaining > 0 ? poll(&descriptor, 1, Int32(min(remaining * 1000, 60_000).rounded(.up))) : 0
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 {
                if remaining <= 0 || ready < 0 {
                    kill(pid, SIGKILL)
                    return nil
                }
                continue
            }
            let count = read(fromChild[0], &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { return output }
            output += buffer[0..<count]
            if output.count > 1 << 20 {
                kill(pid, SIGKILL)
                throw SourceError(message: "the fetch process wrote more than 1 MiB of answer; stopped")
            }
        }
    }
}
