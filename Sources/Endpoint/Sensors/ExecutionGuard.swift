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
        /// Allowed because the hash was not known within the deadline (or every read was busy).
        package var allowedUnread = 0
        /// Allowed because the file is larger than `largestHashedFile`.
        package var allowedTooLarge = 0
        /// Allowed unread, then killed when the read that went on found the file listed.
        package var killedAfterLateRead = 0
        /// Answers that needed no read of the file.
        package var cached = 0
        /// Files allowed that the kernel will not ask about again until they change.
        package var ignored = 0
        /// Reads of the group that failed (the kernel could not open a file for Tether: it
        /// denied that execution, and the guard went on).
        package var readErrors = 0

        package init() {}

        /// Each count by its name in counters and metrics.
        package var byName: [(String, Int)] {
            [("allowed", allowed), ("denied", denied), ("allowed-unread", allowedUnread), ("allowed-too-large", allowedTooLarge),
             ("killed-after-late-read", killedAfterLateRead), ("cached", cached), ("ignored", ignored), ("read-errors", readErrors)]
        }

        /// The names of the decisions (allowed and denied count each execution once; the others
        /// say more of some allowed ones), then of the other counts.
        package static let decisionNames = ["allowed", "denied", "allowed-unread", "allowed-too-large", "killed-after-late-read"]
        package static let otherNames = ["cached", "ignored", "read-errors"]

        /// The difference since `earlier`.
        package func since(_ earlier: Counts) -> Counts {
            var difference = Counts()
            difference.allowed = allowed - earlier.allowed
            difference.denied = denied - earlier.denied
            difference.allowedUnread = allowedUnread - earlier.allowedUnread
            difference.allowedTooLarge = allowedTooLarge - earlier.allowedTooLarge
            difference.killedAfterLateRead = killedAfterLateRead - earlier.killedAfterLateRead
            difference.cached = cached - earlier.cached
            difference.ignored = ignored - earlier.ignored
            difference.readErrors = readErrors - earlier.readErrors
            return difference
        }
    }

    /// Why the guard cannot run here.
    package struct Unavailable: Error, CustomStringConvertible {
        package let description: String
    }

    /// How it runs: `fanotify permission events on 3 file systems (before programs run)`.
    package var source: String {
        if let directory { return "fanotify permission events in \(directory) (before programs run)" }
        let count = state.lock.withLock { state.markedDevices.count }
        return "fanotify permission events on \(count) file system\(count == 1 ? "" : "s") (before programs run)"
    }

    /// File systems not guarded, and why (network and FUSE file systems, marks refused).
    package var unmarked: [String] { state.lock.withLock { state.unmarked } }

    private let fd: Int32
    /// The directory of a `.directory` scope: its watch goes with the ignore marks and is put back.
    private let directory: String?
    private let prevention: PreventionList
    private let buffer: SensorBuffer?
    private let thread: SensorThread
    private let mountWatcher: SensorThread?
    private let state = GuardState()
    private let hasher: Hasher

    /// Starts checking executions in `scope` against `prevention`; denials go to `buffer` as
    /// detections. Throws when permission events are not available (no CAP_SYS_ADMIN, a kernel
    /// without them): the caller falls back to killing after the start.
    package init(scope: Scope, prevention: PreventionList, buffer: SensorBuffer?) throws(Unavailable) {
        let fd = tether_exec_guard_open()
        guard fd >= 0 else { throw Unavailable(description: Self.refusal(fd)) }
        self.fd = fd
        self.prevention = prevention
        self.buffer = buffer
        let hasher = Hasher()
        self.hasher = hasher
        let state = self.state
        var mounts: Int32 = -1
        switch scope {
        case .directory(let path):
            directory = path
            let result = tether_exec_guard_mark(fd, path, 1)
            guard result == 0 else {
                close(fd)
                throw Unavailable(description: "\(path) cannot be marked: \(String(cString: strerror(-result)))")
            }
        case .fileSystems:
            directory = nil
            Self.markMounts(fd: fd, state: state)
            guard !state.markedDevices.isEmpty else {
                close(fd)
                throw Unavailable(description: "no file system could be marked: " + state.unmarked.joined(separator: "; "))
            }
            // A file system mounted later (a USB stick, a container's root) is marked when it
            // appears, by a thread of its own: a path lookup that blocks never holds the answers.
            mounts = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)
        }
        mountWatcher = mounts < 0 ? nil : SensorThread(name: "sensor:mounts") { [mounts] thread in
            var none = [tether_exec_request](repeating: tether_exec_request(), count: 1)
            var changed: Int32 = 0
            while !thread.isStopping {
                _ = tether_exec_guard_read(-1, mounts, 250, &none, 0, &changed)
                if changed != 0 { Self.markMounts(fd: fd, state: state) }
            }
            close(mounts)
        }
        thread = SensorThread(name: "sensor:prevent") { thread in
            var requests = [tether_exec_request](repeating: tether_exec_request(), count: 64)
            var unused: Int32 = 0
            while !thread.isStopping {
                let count = tether_exec_guard_read(fd, -1, 250, &requests, Int32(requests.count), &unused)
                if count == -EBADF || count == -EINVAL { break }
                if count < 0 {
                    // The kernel could not open one file for Tether (NFS root squash, EMFILE):
                    // it refused that execution; every other one is still answered.
                    state.lock.withLock { state.counts.readErrors += 1 }
                    continue
                }
                for request in requests.prefix(Int(count)) {
                    Self.answer(request, fd: fd, prevention: prevention, buffer: buffer, state: state, hasher: hasher)
                }
            }
            // Closing the group lets every execution still waiting go on.
            close(fd)
        }
    }

    /// Marks every file system of the mount table (again: adding a mark that exists changes
    /// nothing, and a device number a file system had before may belong to a new one now),
    /// except those whose server or daemon could hang every execution on the machine if it
    /// stopped answering. The lists of marked and unmarked file systems are the table's now.
    private static func markMounts(fd: Int32, state: GuardState) {
        var marked = Set<String>()
        var unmarked: [String] = []
        for mount in programMounts() where !marked.contains(mount.device) {
            if mount.type.hasPrefix("fuse") || networkFileSystems.contains(mount.type) {
                unmarked.append("\(mount.path) (\(mount.type)): a network or FUSE file system, whose server could hang every execution")
                continue
            }
            let result = tether_exec_guard_mark(fd, mount.path, 0)
            if result == 0 {
                marked.insert(mount.device)
            } else {
                unmarked.append("\(mount.path) (\(mount.type)): \(String(cString: strerror(-result)))")
            }
        }
        state.lock.withLock {
            state.markedDevices = marked
            state.unmarked = unmarked
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
        let watcherEnded = mountWatcher?.stop() ?? true
        return thread.stop() && watcherEnded
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
        // Changed within the last second: a rewrite of the same size inside one tick of the
        // change-time clock would look the same, so such a file is neither cached nor ignored.
        let settled = Double(info.st_ctim.tv_sec) + Double(info.st_ctim.tv_nsec) / 1e9 < Date().timeIntervalSince1970 - 1
        var digests = state.lock.withLock { state.cache[key] }
        if digests != nil {
            state.lock.withLock { state.counts.cached += 1 }
        } else if info.st_size > largestHashedFile {
            allow(request, fd: fd, state: state) { $0.allowedTooLarge += 1 }
            return
        } else {
            // The process is named for good before it may go on: a read that ends after the
            // deadline and finds the file listed still ends it.
            let late = LateRead(pid: request.pid, prevention: prevention, state: state, buffer: buffer)
            digests = hasher.digests(of: request.fd, within: answerDeadline) { read in
                if settled {
                    state.lock.withLock {
                        if state.cache.count >= cacheLimit { state.cache.removeAll(keepingCapacity: true) }
                        state.cache[key] = read
                    }
                }
                late.finished(read)
            }
            if digests == nil {
                late.allowedUnread()
                allow(request, fd: fd, state: state) { $0.allowedUnread += 1 }
                return
            }
            late.answeredInTime()
        }
        guard let digests else {
            allow(request, fd: fd, state: state) { $0.allowedUnread += 1 }
            return
        }
        // The decision and the ignore mark under one lock with forgetAllowed: a mark made for
        // the old list can never outlive its flush.
        let rule: String? = state.lock.withLock {
            let rule = prevention.match(sha256: digests.sha256, md5: digests.md5)
            // Only files that only root can change, and that have not changed just now: a write
            // through a shared mapping raises no modification event to drop the mark.
            let rootsOnly = info.st_uid == 0 && info.st_mode & 0o022 == 0
            if rule == nil, settled, rootsOnly, state.ignoredFiles < cacheLimit, tether_exec_guard_ignore(fd, request.fd) == 0 {
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
        report(into: buffer, path: path, digests: digests, pid: request.pid, rule: rule, action: .executionDenied,
               result: "the kernel refused to execute \(path) for pid \(request.pid): it never ran")
    }

    /// A detection of a listed file and what was done about it, for the platform.
    static func report(into buffer: SensorBuffer?, path: String, digests: (sha256: String, md5: String), pid: Int32, rule: String,
                       action: ProcessingResult.Action, result: String) {
        var detection = Detection(source: .executionPrevention, path: path)
        detection.sha256 = digests.sha256
        detection.md5 = digests.md5
        detection.pid = pid
        detection.rule = rule
        let now = Date()
        buffer?.push(SensorEvent(at: now, .detection(detection)))
        buffer?.push(SensorEvent(at: now, .processingResult(ProcessingResult(detectionId: detection.id, action: action, result: result, pid: pid))))
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

    /// File systems served over the network or by a process: a server or daemon that stops
    /// answering would hold every execution from them, so they are not marked.
    static let networkFileSystems: Set<String> = ["nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs", "lustre", "sshfs"]

    /// One mount of /proc/self/mountinfo whose file system can hold programs.
    struct Mount: Equatable {
        let path: String
        /// `major:minor`, the same for every mount of one file system.
        let device: String
        let type: String
    }

    /// The mounts of /proc/self/mountinfo whose file systems can hold programs.
    static func programMounts() -> [Mount] {
        guard let text = ProcFS.read("/proc/self/mountinfo", limit: 1 << 22) else { return [Mount(path: "/", device: "/", type: "?")] }
        var mounts: [Mount] = []
        for line in text.split(separator: UInt8(ascii: "\n")) {
            let fields = line.split(separator: UInt8(ascii: " "))
            guard let dash = fields.firstIndex(where: { $0.elementsEqual([UInt8(ascii: "-")]) }), fields.count > dash + 1, fields.count > 4 else { continue }
            let type = String(decoding: fields[dash + 1], as: UTF8.self)
            guard !pseudoFileSystems.contains(type) else { continue }
            mounts.append(Mount(path: unescapedMountPath(fields[4]), device: String(decoding: fields[2], as: UTF8.self), type: type))
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
    /// File systems marked now, by `major:minor`, and those left unmarked (with why).
    var markedDevices = Set<String>()
    var unmarked: [String] = []
}

/// An execution allowed before its file was read: if the read, going on, finds the file
/// listed, the process (named by a pidfd opened before it was allowed) is ended. A read that
/// ends in time is the answer's alone: nothing is ended here then.
private final class LateRead: @unchecked Sendable {
    private let lock = Lock()
    private var pidfd: Int32
    private let pid: Int32
    private let prevention: PreventionList
    private let state: GuardState
    private let buffer: SensorBuffer?
    /// Neither answered in time nor acted on yet.
    private var open = true
    private var allowed = false
    /// Hashes read before the answer said whether it waited for them.
    private var early: (sha256: String, md5: String)?

    init(pid: Int32, prevention: PreventionList, state: GuardState, buffer: SensorBuffer?) {
        pidfd = tether_pidfd_open(pid)
        self.pid = pid
        self.prevention = prevention
        self.state = state
        self.buffer = buffer
    }

    deinit { if pidfd >= 0 { close(pidfd) } }

    /// The answer used the hashes: nothing to do later.
    func answeredInTime() { lock.withLock { open = false } }

    /// The execution was allowed unread; the read may have ended meanwhile.
    func allowedUnread() {
        let read: (sha256: String, md5: String)? = lock.withLock {
            allowed = true
            guard open, let early else { return nil }
            open = false
            return early
        }
        if let read { act(on: read) }
    }

    /// The read ended (in time or not).
    func finished(_ digests: (sha256: String, md5: String)) {
        let late: Bool = lock.withLock {
            guard open else { return false }
            guard allowed else {
                early = digests
                return false
            }
            open = false
            return true
        }
        if late { act(on: digests) }
    }

    private func act(on digests: (sha256: String, md5: String)) {
        guard let rule = prevention.match(sha256: digests.sha256, md5: digests.md5) else { return }
        // Never init, Tether or its children, as any kill (ProcessTermination.protectedReason).
        let killed = pidfd >= 0 && ProcessTermination.protectedReason(pid) == nil && tether_pidfd_kill(pidfd) == 0
        if killed { state.lock.withLock { state.counts.killedAfterLateRead += 1 } }
        ExecutionGuard.report(into: buffer, path: "pid \(pid)", digests: digests, pid: pid, rule: rule,
                              action: killed ? .processTerminated : .terminationFailed,
                              result: killed ? "its file was read after the answer's deadline and is listed: SIGKILL sent to pid \(pid)"
                                  : "its file was read after the answer's deadline and is listed; pid \(pid) had ended")
    }
}

/// Reads a file's hashes on a thread of its own, so that the guard can stop waiting at its
/// deadline; at most four reads go on at once (a hung file system holds one each).
private final class Hasher: @unchecked Sendable {
    private let lock = Lock()
    /// Reads going on; at most `limit` at once.
    private var busy = 0
    private let limit = 4

    /// The file's SHA-256 and MD5 within `seconds`, or nil (the read goes on and ends by
    /// itself). `read` receives the hashes whenever the read ends.
    func digests(of fd: Int32, within seconds: TimeInterval,
                 read: @escaping @Sendable ((sha256: String, md5: String)) -> Void) -> (sha256: String, md5: String)? {
        let taken: Bool = lock.withLock {
            if busy >= limit { return false }
            busy += 1
            return true
        }
        guard taken else { return nil }
        // The read keeps its own descriptor: the request's is closed when the kernel is answered.
        let own = dup(fd)
        guard own >= 0 else {
            lock.withLock { busy -= 1 }
            return nil
        }
        let result = DigestResult()
        Threads.start(name: "sensor:hash") { [self] in
            // Never past the bound: a file made longer (sparse) while it waits is not read for hours.
            let digests = fileDigests(fileDescriptor: own, limit: ExecutionGuard.largestHashedFile)
            close(own)
            lock.withLock { busy -= 1 }
            if let digests { read(digests) }
            result.set(digests)
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
