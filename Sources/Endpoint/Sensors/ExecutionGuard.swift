internal import CSensorShims
import Dispatch
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import X509
import Primitives

/// Execution prevention before a program runs (docs/architecture.md, "Execution prevention"):
/// the kernel asks, through fanotify permission events (`FAN_OPEN_EXEC_PERM`), before it
/// executes a file (a program, or a script named on a `#!` line), and a file whose SHA-256 or
/// MD5 is on the list is answered with a deny: `execve` fails with EPERM and not one
/// instruction of it runs.
///
/// Each answer has a deadline: a file whose hash is not known within `answerDeadline` (a hung
/// network file system, a FUSE daemon that does not answer) is allowed and counted, and while
/// its hash is still being read every other unknown file is allowed at once, so no program on
/// the machine waits on Tether longer than the deadline. Hashes are cached by device, inode,
/// change time and size: a file is read once however often it runs. A file allowed is not
/// asked about again until it is modified or the list changes (an ignore mark the kernel drops
/// on modification; `forgetAllowed` drops them all), so a program that runs often pays the
/// check once. If Tether dies, the kernel drops its group and allows what was waiting.
package final class ExecutionGuard: @unchecked Sendable {
    /// Where executions are checked.
    package enum Scope: Sendable, Equatable {
        /// Every mounted file system that can hold a program (not /proc, /sys and the like).
        case fileSystems
        /// Only the files directly in one directory (tests: a copied binary in a temporary folder).
        case directory(String)
    }

    /// How long a program may wait for the answer at most.
    package static let answerDeadline: TimeInterval = 1
    /// Files larger than this are not read (allowed, and counted): a hash of a bigger file
    /// would not be ready within the deadline.
    package static let largestHashedFile = 128 << 20
    /// Cached hashes, and files the kernel need not ask about, at most (then each starts again).
    static let cacheLimit = 16_384

    /// What the guard decided, since it started.
    package struct Counts: Sendable, Equatable {
        package var allowed = 0
        package var denied = 0
        /// Allowed because the hash was not known within the deadline.
        package var allowedUnread = 0
        /// Allowed because the file is larger than `largestHashedFile`.
        package var allowedTooLarge = 0
        /// Answers that needed no read of the file.
        package var cached = 0
        /// Files allowed that the kernel will not ask about again until they change.
        package var ignored = 0

        package init(allowed: Int = 0, denied: Int = 0, allowedUnread: Int = 0, allowedTooLarge: Int = 0, cached: Int = 0, ignored: Int = 0) {
            self.allowed = allowed
            self.denied = denied
            self.allowedUnread = allowedUnread
            self.allowedTooLarge = allowedTooLarge
            self.cached = cached
            self.ignored = ignored
        }

        /// Each count by its name in counters and metrics (`denied`, `allowed-unread`…).
        package var byDecision: [(String, Int)] {
            [("allowed", allowed), ("denied", denied), ("allowed-unread", allowedUnread), ("allowed-too-large", allowedTooLarge),
             ("cached", cached), ("ignored", ignored)]
        }

        /// The decisions by name, as `byDecision` names them.
        package static let decisionNames = ["allowed", "denied", "allowed-unread", "allowed-too-large", "cached", "ignored"]

        /// The difference since `earlier`.
        package func since(_ earlier: Counts) -> Counts {
            Counts(allowed: allowed - earlier.allowed, denied: denied - earlier.denied, allowedUnread: allowedUnread - earlier.allowedUnread,
                   allowedTooLarge: allowedTooLarge - earlier.allowedTooLarge, cached: cached - earlier.cached, ignored: ignored - earlier.ignored)
        }
    }

    /// Why the guard cannot run here.
    package struct Unavailable: Error, CustomStringConvertible {
        package let description: String
    }

    /// How it runs: `fanotify permission events on 3 file systems (before programs run)`.
    package let source: String
    /// File systems that could not be marked, and why (they are not guarded).
    package let unmarked: [String]

    private let fd: Int32
    /// The directory of a `.directory` scope: its watch goes with the ignore marks and is put back.
    private let directory: String?
    private let prevention: PreventionList
    private let buffer: SensorBuffer?
    private let thread: SensorThread
    private let state = GuardState()
    private let hasher: Hasher

    /// Starts checking executions in `scope` against `prevention`; denials go to `buffer` as
    /// detections. Throws when permission events are not available (no CAP_SYS_ADMIN, a kernel
    /// without them): the caller falls back to killing after the start.
    package init(scope: Scope, prevention: PreventionList, buffer: SensorBuffer?) throws(Unavailable) {
        let fd = tether_exec_guard_open()
        guard fd >= 0 else { throw Unavailable(description: Self.refusal(fd)) }
        var marked: [String] = []
        var unmarked: [String] = []
        switch scope {
        case .directory(let path):
            let result = tether_exec_guard_mark(fd, path, 1)
            guard result == 0 else {
                close(fd)
                throw Unavailable(description: "\(path) cannot be marked: \(String(cString: strerror(-result)))")
            }
            marked.append(path)
        case .fileSystems:
            var devices = Set<UInt64>()
            for mount in Self.programMounts() {
                var info = stat()
                guard stat(mount, &info) == 0, devices.insert(UInt64(info.st_dev)).inserted else { continue }
                let result = tether_exec_guard_mark(fd, mount, 0)
                if result == 0 { marked.append(mount) } else { unmarked.append("\(mount): \(String(cString: strerror(-result)))") }
            }
            guard !marked.isEmpty else {
                close(fd)
                throw Unavailable(description: "no file system could be marked: " + unmarked.joined(separator: "; "))
            }
        }
        self.fd = fd
        if case .directory(let path) = scope { directory = path } else { directory = nil }
        self.prevention = prevention
        self.buffer = buffer
        self.unmarked = unmarked
        if case .directory(let path) = scope {
            source = "fanotify permission events in \(path) (before programs run)"
        } else {
            source = "fanotify permission events on \(marked.count) file system\(marked.count == 1 ? "" : "s") (before programs run)"
        }
        let hasher = Hasher()
        self.hasher = hasher
        let state = self.state
        thread = SensorThread(name: "sensor:prevent") { thread in
            var requests = [tether_exec_request](repeating: tether_exec_request(), count: 64)
            while !thread.isStopping {
                let count = tether_exec_guard_read(fd, 250, &requests, Int32(requests.count))
                if count < 0 { break }
                for request in requests.prefix(Int(count)) {
                    Self.answer(request, fd: fd, prevention: prevention, buffer: buffer, state: state, hasher: hasher)
                }
            }
            // Closing the group lets every execution still waiting go on.
            close(fd)
        }
    }

    /// Why permission events cannot be used here, or nil when they can (a group is opened and closed).
    package static func unavailableBecause() -> String? {
        let fd = tether_exec_guard_open()
        guard fd >= 0 else { return refusal(fd) }
        close(fd)
        return nil
    }

    private static func refusal(_ error: Int32) -> String {
        let why = error == -EPERM ? "Operation not permitted: they need CAP_SYS_ADMIN"
            : error == -EINVAL ? "the kernel has none (CONFIG_FANOTIFY_ACCESS_PERMISSIONS)"
            : String(cString: strerror(-error))
        return "fanotify permission events are refused (\(why))"
    }

    /// Stops checking; executions go on unchecked. False when the thread did not end in time.
    @discardableResult
    package func stop() -> Bool {
        thread.stop()
    }

    /// What was decided so far.
    package var counts: Counts { state.lock.withLock { state.counts } }

    /// Has the kernel ask again about every file allowed so far: call after the list changed.
    /// Under the decision lock, so no answer made under the old list marks a file afterwards.
    package func forgetAllowed() {
        state.lock.withLock {
            _ = tether_exec_guard_forget_ignored(fd)
            if let directory { _ = tether_exec_guard_mark(fd, directory, 1) }
            state.ignoredFiles = 0
        }
    }

    // MARK: - Answering

    /// Decides one execution and answers the kernel: a deny only for a file known to be listed.
    private static func answer(_ request: tether_exec_request, fd: Int32, prevention: PreventionList, buffer: SensorBuffer?,
                               state: GuardState, hasher: Hasher) {
        var info = stat()
        guard fstat(request.fd, &info) == 0 else {
            allow(request, fd: fd, state: state) { _ in }
            return
        }
        let key = FileKey(device: UInt64(info.st_dev), inode: UInt64(info.st_ino), changeSeconds: Int64(info.st_ctim.tv_sec),
                          changeNanoseconds: Int64(info.st_ctim.tv_nsec), size: Int64(info.st_size))
        var digests = state.lock.withLock { state.cache[key] }
        if digests != nil {
            state.lock.withLock { state.counts.cached += 1 }
        } else if info.st_size > largestHashedFile {
            allow(request, fd: fd, state: state) { $0.allowedTooLarge += 1 }
            return
        } else {
            // The hash is cached when the read ends, in time or not: the next run is answered at once.
            digests = hasher.digests(of: request.fd, within: answerDeadline) { read in
                state.lock.withLock {
                    if state.cache.count >= cacheLimit { state.cache.removeAll(keepingCapacity: true) }
                    state.cache[key] = read
                }
            }
            if digests == nil {
                allow(request, fd: fd, state: state) { $0.allowedUnread += 1 }
                return
            }
        }
        guard let digests else {
            allow(request, fd: fd, state: state) { $0.allowedUnread += 1 }
            return
        }
        // The decision and the ignore mark under one lock with forgetAllowed: a mark made for
        // the old list can never outlive its flush.
        let rule: String? = state.lock.withLock {
            let rule = prevention.match(sha256: digests.sha256, md5: digests.md5)
            if rule == nil, state.ignoredFiles < cacheLimit, tether_exec_guard_ignore(fd, request.fd) == 0 {
                state.ignoredFiles += 1
                state.counts.ignored += 1
            }
            return rule
        }
        guard let rule else {
            allow(request, fd: fd, state: state) { _ in }
            return
        }
        let path = ProcFS.readLink("/proc/self/fd/\(request.fd)") ?? "?"
        tether_exec_guard_answer(fd, request.fd, 0)
        state.lock.withLock { state.counts.denied += 1 }
        var detection = Detection(source: .executionPrevention, path: path)
        detection.sha256 = digests.sha256
        detection.md5 = digests.md5
        detection.pid = request.pid
        detection.rule = rule
        let now = Date()
        buffer?.push(SensorEvent(at: now, .detection(detection)))
        buffer?.push(SensorEvent(at: now, .processingResult(ProcessingResult(
            detectionId: detection.id, action: .executionDenied,
            result: "the kernel refused to execute \(path) for pid \(request.pid): it never ran", pid: request.pid))))
    }

    private static func allow(_ request: tether_exec_request, fd: Int32, state: GuardState, count: (inout Counts) -> Void) {
        tether_exec_guard_answer(fd, request.fd, 1)
        state.lock.withLock {
            state.counts.allowed += 1
            count(&state.counts)
        }
    }

    // MARK: - Where programs can be

    /// File system types that never hold a program to run.
    static let pseudoFileSystems: Set<String> = [
        "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs", "securityfs", "pstore", "bpf",
        "configfs", "fusectl", "hugetlbfs", "autofs", "binfmt_misc", "nsfs", "rpc_pipefs", "efivarfs", "selinuxfs",
    ]

    /// The mount points of /proc/self/mountinfo whose file systems can hold programs.
    static func programMounts() -> [String] {
        guard let text = ProcFS.read("/proc/self/mountinfo", limit: 1 << 20) else { return ["/"] }
        var mounts: [String] = []
        for line in text.split(separator: UInt8(ascii: "\n")) {
            let fields = line.split(separator: UInt8(ascii: " "))
            guard let dash = fields.firstIndex(where: { $0.elementsEqual([UInt8(ascii: "-")]) }), fields.count > dash + 1, fields.count > 4 else { continue }
            let type = String(decoding: fields[dash + 1], as: UTF8.self)
            guard !pseudoFileSystems.contains(type) else { continue }
            mounts.append(unescapedMountPath(fields[4]))
        }
        return mounts
    }

    /// mountinfo writes space, tab, newline and backslash in a path as `\040`-style octal.
    static func unescapedMountPath(_ field: ArraySlice<UInt8>) -> String {
        var bytes: [UInt8] = []
        var index = field.startIndex
        while index < field.endIndex {
            if field[index] == UInt8(ascii: "\\"), index + 3 < field.endIndex,
               let value = UInt8(String(decoding: field[(index + 1)...(index + 3)], as: UTF8.self), radix: 8) {
                bytes.append(value)
                index += 4
            } else {
                bytes.append(field[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A file as it is now: a change to its bytes changes its change time.
struct FileKey: Hashable {
    let device: UInt64
    let inode: UInt64
    let changeSeconds: Int64
    let changeNanoseconds: Int64
    let size: Int64
}

private final class GuardState: @unchecked Sendable {
    let lock = Lock()
    var counts = ExecutionGuard.Counts()
    var cache: [FileKey: (sha256: String, md5: String)] = [:]
    /// Ignore marks made since the last flush.
    var ignoredFiles = 0
}

/// Reads a file's hashes on a thread of its own, so that the guard can stop waiting at its
/// deadline; while one read is still going on, it takes no other.
private final class Hasher: @unchecked Sendable {
    private let lock = Lock()
    private var busy = false

    /// The file's SHA-256 and MD5 within `seconds`, or nil (the read goes on and ends by
    /// itself). `read` receives the hashes whenever the read ends.
    func digests(of fd: Int32, within seconds: TimeInterval,
                 read: @escaping @Sendable ((sha256: String, md5: String)) -> Void) -> (sha256: String, md5: String)? {
        let taken: Bool = lock.withLock {
            if busy { return false }
            busy = true
            return true
        }
        guard taken else { return nil }
        // The read keeps its own descriptor: the request's is closed when the kernel is answered.
        let own = dup(fd)
        guard own >= 0 else {
            lock.withLock { busy = false }
            return nil
        }
        let result = DigestResult()
        Threads.start(name: "sensor:hash") { [self] in
            let digests = fileDigests(fileDescriptor: own)
            close(own)
            if let digests { read(digests) }
            result.set(digests)
            lock.withLock { busy = false }
        }
        return result.wait(seconds)
    }
}

private final class DigestResult: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let lock = Lock()
    private var value: (sha256: String, md5: String)?

    func set(_ digests: (sha256: String, md5: String)?) {
        lock.withLock { value = digests }
        done.signal()
    }

    func wait(_ seconds: TimeInterval) -> (sha256: String, md5: String)? {
        guard done.wait(timeout: .now() + seconds) == .success else { return nil }
        return lock.withLock { value }
    }
}
