import Dispatch
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import ChildProcess
import GitSource
import Primitives

/// Brings mirrors up to date where a stuck network cannot hold the controller (see
/// docs/architecture.md, "Fetching"). Work that touches nothing shared — listing a remote's
/// refs, cloning a first mirror into a folder of its own — runs on a thread with a deadline:
/// abandoning it costs a thread and nothing else. A fetch into an existing mirror runs in a
/// child process (`tether-fetch`) killed at its deadline, so its socket and its lock on the
/// mirror go with it.
package enum MirrorFetcher {
    /// The `tether-fetch` executable that serves `MirrorFetchRequest`s: installed beside
    /// `tether` (and built beside the test runner).
    package static var executable: String {
        let current = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: current).deletingLastPathComponent().appending(path: "tether-fetch").path
    }

    /// How many abandoned threads may still be blocked on the network before the work goes to
    /// the child process instead (each holds a thread until the kernel gives up on its connection).
    static let abandonedLimit = 2
    private static let lock = Lock()
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
            try? FileManager.default.removeItem(at: directory.appending(path: name))
        }
    }

    /// Runs the fetch in a child process and waits for it until `deadline`; past it the child is
    /// killed and `abandoned` thrown.
    static func fetch(_ request: MirrorFetchRequest, until deadline: Date, abandoned: SourceError) throws -> MirrorUpdate {
        guard let input = request.encoded else {
            throw SourceError(message: "fetching \(GitRepository.redacted(request.url)) failed: the URL or a path holds a NUL byte")
        }
        let outcome: ChildOutcome
        do {
            outcome = try ChildProcess.run(executable, [], input: input, timeout: deadline.timeIntervalSinceNow)
        } catch .timedOut {
            throw abandoned
        } catch {
            throw SourceError(message: "fetching \(GitRepository.redacted(request.url)) failed: the fetch process: \(error)")
        }
        guard let response = MirrorFetchResponse(decoding: outcome.standardOutput) else {
            throw SourceError(message: "fetching \(GitRepository.redacted(request.url)) failed: the fetch process ended without an answer")
        }
        if let error = response.error { throw SourceError(message: error) }
        return MirrorUpdate(fetched: response.fetched, rebuilt: response.rebuilt, bytesReceived: response.bytesReceived)
    }
}

/// A result handed from a worker thread to the waiting caller — or left to the worker, when the
/// caller gave up on it.
private final class Handoff<T>: @unchecked Sendable {
    private let lock = Lock()
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
