import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GitSource
internal import CProcessShims

/// Brings mirrors up to date where a stuck network cannot hold the controller (see
/// docs/architecture.md, "Fetching"). Work that touches nothing shared — listing a remote's
/// refs, cloning a first mirror into a folder of its own — runs on a thread with a deadline:
/// abandoning it costs a thread and nothing else. A fetch into an existing mirror runs in a
/// child process (`tether-fetch`) killed at its deadline, so its socket and its lock on the
/// mirror go with it.
public enum MirrorFetcher {
    /// The `tether-fetch` executable that serves `MirrorFetchRequest`s: installed beside
    /// `tether` (and built beside the test runner).
    public static var executable: String {
        let current = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: current).deletingLastPathComponent().appendingPathComponent("tether-fetch").path
    }

    /// How many abandoned threads may still be blocked on the network before the work goes to
    /// the child process instead (each holds a thread until the kernel gives up on its connection).
    static let abandonedLimit = 2
    private static let lock = NSLock()
    nonisolated(unsafe) private static var abandonedCount = 0
    private static let queue = DispatchQueue(label: "tether.network", attributes: .concurrent)

    /// Runs `work` on a thread and waits up to `timeout`; nil when too many earlier ones are
    /// still stuck (the caller then uses the child process). Past the time limit the work is
    /// abandoned, `abandoned` thrown, and `cleanUp` gets its result whenever it comes.
    private static func abandonable<T>(timeout: TimeInterval, abandoned: SourceError, _ work: @escaping @Sendable () throws -> T,
                                       cleanUp: @escaping @Sendable (Result<T, Error>) -> Void = { _ in }) throws -> T? {
        guard lock.withLock({ abandonedCount < abandonedLimit }) else { return nil }
        let handoff = Handoff<T>()
        let done = DispatchSemaphore(value: 0)
        queue.async {
            let result = Result { try work() }
            if !handoff.deliver(result) {
                cleanUp(result)
                lock.withLock { abandonedCount -= 1 }
            }
            done.signal()
        }
        let result: Result<T, Error>
        if done.wait(timeout: .now() + timeout) == .success, let delivered = handoff.take() {
            result = delivered
        } else if handoff.abandon() {
            lock.withLock { abandonedCount += 1 }
            throw abandoned
        } else {
            // It came just as the time ran out: use it (its clean-up is the caller's now).
            guard let delivered = handoff.take() else { throw abandoned }
            result = delivered
        }
        switch result {
        case .success(let value): return value
        case .failure(let error as GitError): throw SourceError(message: error.message)
        case .failure(let error): throw error
        }
    }

    /// The remote's refs, or nil when too many earlier listings are still stuck (then the child
    /// process lists them itself). Throws `abandoned` past the time limit.
    static func probe(_ url: String, credentials: RemoteCredentials, timeout: TimeInterval,
                      abandoned: SourceError) throws -> [String: String]? {
        try abandonable(timeout: timeout, abandoned: abandoned) {
            try GitRepository.advertisedRefs(url: url, credentials: credentials, timeout: timeout)
        }
    }

    /// Makes the first mirror at `path`: cloned into a folder of its own, then renamed into place
    /// (under the mirror's lock, held for the rename only). Nil when too many threads are stuck.
    static func clone(_ url: String, into path: String, credentials: RemoteCredentials, until deadline: Date,
                      abandoned: SourceError) throws -> MirrorUpdate? {
        removeClonesOfEndedProcesses(path)
        let folder = "\(path).clone-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        let removeFolder: @Sendable (Result<MirrorUpdate, Error>) -> Void = { _ in try? FileManager.default.removeItem(atPath: folder) }
        // However this ends — cloned and renamed, refused, failed — the folder goes; an abandoned
        // clone removes it itself when its thread ends.
        var abandonedClone = false
        defer { if !abandonedClone { removeFolder(.success(MirrorUpdate(fetched: false, rebuilt: false, bytesReceived: 0))) } }
        let timeout = max(1, deadline.timeIntervalSinceNow)
        let update: MirrorUpdate?
        do {
            update = try abandonable(timeout: timeout, abandoned: abandoned, {
                try GitRepository.updateMirror(url: url, at: folder, credentials: credentials, timeout: timeout).1
            }, cleanUp: removeFolder)
        } catch let error as SourceError where error.message == abandoned.message {
            abandonedClone = true
            throw error
        }
        guard let update else { return nil }
        let lock = Glibc.open(path + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        defer { if lock >= 0 { close(lock) } }
        // The lock is held by a fetch process at most until its own deadline; wait no longer than ours.
        while lock >= 0, flock(lock, LOCK_EX | LOCK_NB) != 0 {
            guard Date() < deadline else { throw abandoned }
            usleep(20_000)
        }
        // Another process may have made the mirror meanwhile: then it stays, and this clone goes.
        if !FileManager.default.fileExists(atPath: path) { rename(folder, path) }
        return update
    }

    /// Clone folders left by processes that ended mid-clone (a kill -9, a power cut).
    private static func removeClonesOfEndedProcesses(_ path: String) {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        let prefix = URL(fileURLWithPath: path).lastPathComponent + ".clone-"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [] where name.hasPrefix(prefix) {
            guard let pid = name.dropFirst(prefix.count).split(separator: "-").first.flatMap({ pid_t($0) }),
                  kill(pid, 0) != 0 && errno == ESRCH else { continue }
            try? FileManager.default.removeItem(at: directory.appendingPathComponent(name))
        }
    }

    /// Runs the fetch in a child process and waits for it until `deadline`; past it the child is
    /// killed and `abandoned` thrown.
    static func fetch(_ request: MirrorFetchRequest, until deadline: Date, abandoned: SourceError) throws -> MirrorUpdate {
        let input = try JSONEncoder().encode(request)
        let output = try ChildRun.run(executable, [], input: Array(input), until: deadline)
        guard let output else { throw abandoned }
        guard let response = try? JSONDecoder().decode(MirrorFetchResponse.self, from: Data(output)) else {
            throw SourceError(message: "fetching \(GitRepository.redacted(request.url)) failed: the fetch process ended without an answer")
        }
        if let error = response.error { throw SourceError(message: error) }
        return MirrorUpdate(fetched: response.fetched, rebuilt: response.rebuilt, bytesReceived: response.bytesReceived)
    }
}

/// A result handed from a worker thread to the waiting caller — or left to the worker, when the
/// caller gave up on it.
private final class Handoff<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<T, Error>?
    private var abandoned = false

    /// Hands the result over; false when the caller already gave up (the worker keeps it).
    func deliver(_ value: Result<T, Error>) -> Bool {
        lock.withLock {
            guard !abandoned else { return false }
            result = value
            return true
        }
    }

    func take() -> Result<T, Error>? { lock.withLock { result } }

    /// The caller gives up; false when the result had come after all.
    func abandon() -> Bool {
        lock.withLock {
            abandoned = result == nil
            return abandoned
        }
    }
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
        // Nothing else of this process goes with the child (the controller's lock, its /metrics
        // listener, other connections): a child that outlives this process must hold none of them.
        tether_spawn_close_from(&actions, 3)
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
