internal import CSensorShims
import Dispatch
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Primitives
import X509

/// BPF programs loaded and attached (tether_bpf_probe, over libbpf), and their ring buffer.
/// Detached and freed when the value goes.
final class BPFProbe: @unchecked Sendable {
    private let probe: OpaquePointer

    /// Loads an embedded object (`BPFObjects`); why not, in words, when the kernel, libbpf or
    /// the privilege is missing.
    static func open(_ base64: String, ring: String = "events", drops: String = "drops") -> Result<BPFProbe, BPFRefusal> {
        guard let object = Data(base64Encoded: base64) else { return .failure(BPFRefusal(reason: "the embedded BPF object is not base64 (a build defect)")) }
        var error = [CChar](repeating: 0, count: 768)
        let probe = object.withUnsafeBytes { bytes in
            tether_bpf_probe_open(bytes.baseAddress, bytes.count, ring, drops, &error, error.count)
        }
        guard let probe else {
            return .failure(BPFRefusal(reason: String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)))
        }
        return .success(BPFProbe(probe))
    }

    private init(_ probe: OpaquePointer) {
        self.probe = probe
    }

    /// Waits up to `milliseconds` for records and hands each to `body` (its bytes are valid only
    /// during the call). Returns how many, or -errno.
    func poll(milliseconds: Int32, _ body: (UnsafeRawBufferPointer) -> Void) -> Int {
        var length = 0
        var result: Int32 = 0
        guard let records = tether_bpf_probe_poll(probe, milliseconds, &length, &result) else { return Int(result) }
        guard result == 0 else { return Int(result) }
        var offset = 0
        var count = 0
        while offset + 8 <= length {
            let size = Int(records.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            guard offset + 8 + size <= length else { break }
            body(UnsafeRawBufferPointer(start: records + offset + 8, count: size))
            offset += 8 + (size + 7) & ~7
            count += 1
        }
        return count
    }

    /// Records the programs had no room for, counted in the kernel.
    var drops: Int { Int(tether_bpf_probe_drops(probe)) }

    /// Writes an entry of one of the programs' maps (the key and value types as the program
    /// declares them, from tether_bpf_events.h). 0, or -errno.
    func update<Key, Value>(_ map: String, key: Key, value: Value) -> Int32 {
        withUnsafeBytes(of: key) { key in
            withUnsafeBytes(of: value) { value in tether_bpf_probe_update(probe, map, key.baseAddress, value.baseAddress) }
        }
    }

    /// What was left out when the programs were attached, and why (see tether_bpf_probe_note).
    var note: String? { tether_bpf_probe_note(probe).map { String(cString: $0) } }

    deinit { tether_bpf_probe_close(probe) }
}

/// Why BPF programs were not loaded.
struct BPFRefusal: Error {
    let reason: String
}

/// The identity and version of an executable as the kernel saw it at exec: device (the
/// kernel's number, converted), inode and change time. No user can set a change time back.
/// Files are matched on inode and change time only: on btrfs subvolumes and overlayfs, stat's
/// device is not the super block's the kernel names.
struct ExecutableVersion: Hashable {
    let device: UInt64
    let inode: UInt64
    let changed: Int64
    let changedNanoseconds: Int64

    /// The kernel's device number (major << 20 | minor) in the encoding stat(2) uses.
    static func userDevice(_ kernel: UInt64) -> UInt64 {
        let major = kernel >> 20, minor = kernel & 0xFFFFF
        return (minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & ~0xFF) << 12) | ((major & ~0xFFF) << 32)
    }

    func matches(_ info: stat) -> Bool {
        UInt64(info.st_ino) == inode && Int64(info.st_ctim.tv_sec) == changed && Int64(info.st_ctim.tv_nsec) == changedNanoseconds
    }
}

/// A process by pid and start time: a reused pid is another process.
struct ProcessKey: Hashable {
    let pid: Int32
    let start: UInt64
}

/// Hashes executables off the event stream: a worker thread reads each new file version once
/// (SHA-256 and MD5, cached by `ExecutableVersion`), so a slow or hung file system delays only
/// the starts that wait for its files, never the reading of the kernel's records.
/// - A start waits at most `deadline` (from when its record was read) for its hash; after
///   that it goes out without it, `missing` saying so. A worker stuck in a read longer than
///   that is left behind and replaced; with three left behind at once, nothing is hashed
///   until one of them returns (and takes the work up again).
/// - Files on FUSE and network file systems are not read (their daemon or server could hang
///   the read), nor anything but a regular file reached without a link.
/// - A process's stop goes out after its start, and the starts of one process in order.
final class ExecutableHasher: @unchecked Sendable {
    struct Job {
        let facts: ProcessFacts
        let key: ProcessKey
        let version: ExecutableVersion
        let seenAt: Date
    }
    typealias Digests = (sha256: String, md5: String, device: UInt64)

    private let lock = Lock()
    private let wake = DispatchSemaphore(value: 0)
    private var queue: [Job] = []
    private var stopping = false
    /// The worker that takes jobs, and the job it reads since when (monotonic nanoseconds).
    private var activeWorker = 0
    private var reading: (job: Job, since: UInt64)?
    /// Workers left behind in a read that has not returned; at the limit, hashing pauses.
    private var stuckWorkers = 0
    private var paused = false
    private var cache: [ExecutableVersion: Digests] = [:]
    /// Starts not yet delivered, by process, and the stops held until they are.
    private var pending: [ProcessKey: (count: Int, held: [() -> Void])] = [:]
    private let deliver: @Sendable (ProcessFacts, Date) -> Void
    static let queueLimit = 4096
    static let cacheLimit = 4096
    static let stuckLimit = 3
    let deadline: TimeInterval

    /// `deliver` gets each start once, hashed or not, from the worker's thread or the caller's.
    init(deadline: TimeInterval = 1, deliver: @escaping @Sendable (ProcessFacts, Date) -> Void) {
        self.deadline = deadline
        self.deliver = deliver
        startWorker(0)
    }

    private func startWorker(_ id: Int) {
        Threads.start(name: "sensor:hash", stackSize: 1 << 20) { [self] in work(id) }
    }

    /// Hands a start over: delivered at once when its file's hash is known (and no earlier start
    /// of the process waits), else when the worker has read the file or the deadline passed.
    func submit(_ facts: ProcessFacts, key: ProcessKey, version: ExecutableVersion, at seenAt: Date) {
        lock.lock()
        let late = takeStuck()
        if let digests = cache[version], pending[key] == nil {
            lock.unlock()
            for job in late { finish(job, nil) }
            deliver(Self.hashed(facts, digests), seenAt)
            return
        }
        let job = Job(facts: facts, key: key, version: version, seenAt: seenAt)
        guard queue.count < Self.queueLimit, !stopping, !paused else {
            lock.unlock()
            for job in late { finish(job, nil) }
            deliver(Self.unhashed(facts), seenAt)
            return
        }
        queue.append(job)
        pending[key, default: (0, [])].count += 1
        lock.unlock()
        for job in late { finish(job, nil) }
        wake.signal()
    }

    /// Gives up on a read that has taken longer than the deadline (the reader calls this after
    /// each poll, so a start waits no longer on a quiet machine).
    func expire() {
        lock.lock()
        let late = takeStuck()
        lock.unlock()
        for job in late { finish(job, nil) }
    }

    /// Under the lock: when the worker is stuck in a read, what it holds and what waits, to go
    /// out unhashed; the worker is replaced, or hashing pauses while too many are stuck.
    private func takeStuck() -> [Job] {
        guard let current = reading, DispatchTime.now().uptimeNanoseconds - current.since > UInt64(deadline * 1e9) else { return [] }
        let late = [current.job] + queue
        queue.removeAll()
        reading = nil
        stuckWorkers += 1
        activeWorker += 1
        if stuckWorkers < Self.stuckLimit {
            startWorker(activeWorker)
        } else {
            paused = true
        }
        return late
    }

    /// Runs `stop` (a process's stop) now, or after the starts of that process that still wait.
    func afterStart(of key: ProcessKey, _ stop: @escaping () -> Void) {
        lock.lock()
        if pending[key] != nil {
            pending[key]?.held.append(stop)
            lock.unlock()
            return
        }
        lock.unlock()
        stop()
    }

    /// Delivers a start (hashed or not), then what waited for the last start of its process.
    private func finish(_ job: Job, _ digests: Digests?) {
        deliver(digests.map { Self.hashed(job.facts, $0) } ?? Self.unhashed(job.facts), job.seenAt)
        lock.lock()
        var held: [() -> Void] = []
        if var entry = pending[job.key] {
            entry.count -= 1
            if entry.count <= 0 {
                held = entry.held
                pending[job.key] = nil
            } else {
                pending[job.key] = entry
            }
        }
        lock.unlock()
        for stop in held { stop() }
    }

    /// Ends the workers; what is queued, and the start being read, go out unhashed.
    func stop() {
        lock.lock()
        stopping = true
        let left = (reading.map { [$0.job] } ?? []) + queue
        queue.removeAll()
        reading = nil
        lock.unlock()
        wake.signal()
        for job in left { finish(job, nil) }
    }

    private func work(_ id: Int) {
        while true {
            wake.wait()
            while true {
                lock.lock()
                guard id == activeWorker, !stopping else {
                    lock.unlock()
                    wake.signal()  // passes the wake-up on to the worker that replaced this one
                    return
                }
                guard !queue.isEmpty else {
                    lock.unlock()
                    break
                }
                let job = queue.removeFirst()
                if let digests = cache[job.version] {
                    lock.unlock()
                    finish(job, digests)
                    continue
                }
                if Date().timeIntervalSince(job.seenAt) > deadline {
                    lock.unlock()
                    finish(job, nil)
                    continue
                }
                reading = (job, DispatchTime.now().uptimeNanoseconds)
                lock.unlock()
                let digests = Self.read(job)
                lock.lock()
                let abandoned = id != activeWorker
                if !abandoned { reading = nil }
                if let digests {
                    if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
                    cache[job.version] = digests
                }
                if abandoned {
                    // Back from a read given up on: its start has gone out already. Take the
                    // work up again if hashing paused for want of workers, else end.
                    stuckWorkers -= 1
                    guard paused, !stopping else {
                        lock.unlock()
                        return
                    }
                    paused = false
                    activeWorker = id
                    lock.unlock()
                    continue
                }
                lock.unlock()
                finish(job, digests)
            }
        }
    }

    /// The file the kernel ran: through /proc/PID/exe while the process lives, else by its path
    /// without following a link; only a regular file on a local file system, still the
    /// version that ran before and after it is read.
    private static func read(_ job: Job) -> Digests? {
        var candidates = [("/proc/\(job.facts.pid)/exe", Int32(TETHER_O_PATH) | O_CLOEXEC)]
        if let path = job.facts.executable, path.hasPrefix("/"), !path.hasPrefix("/proc/"), !path.hasPrefix("/dev/fd/") {
            candidates.append((path, Int32(TETHER_O_PATH) | O_CLOEXEC | O_NOFOLLOW))
        }
        for (path, flags) in candidates {
            let handle = open(path, flags)
            guard handle >= 0 else { continue }
            defer { close(handle) }
            var info = stat()
            guard fstat(handle, &info) == 0, info.st_mode & S_IFMT == S_IFREG, job.version.matches(info),
                  Int64(info.st_size) <= ProcessEnricher.hashSizeLimit, tether_is_remote_filesystem(handle) == 0 else { continue }
            let fd = open("/proc/self/fd/\(handle)", O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            // The descriptor reopens the file the handle holds: `info` describes it before the read.
            var after = stat()
            guard let digests = fileDigests(fileDescriptor: fd, limit: Int(info.st_size)),
                  fstat(fd, &after) == 0, after.st_size == info.st_size, after.st_mtim.tv_sec == info.st_mtim.tv_sec,
                  after.st_mtim.tv_nsec == info.st_mtim.tv_nsec, job.version.matches(after) else { continue }
            return (digests.sha256, digests.md5, UInt64(info.st_dev))
        }
        return nil
    }

    private static func hashed(_ facts: ProcessFacts, _ digests: Digests) -> ProcessFacts {
        var facts = facts
        (facts.sha256, facts.md5) = (digests.sha256, digests.md5)
        // The device as stat names it, for the kill that confirms the file first.
        if let identity = facts.executableIdentity { facts.executableIdentity = (digests.device, identity.inode) }
        facts.missing.removeAll { $0 == "sha256" }
        return facts
    }

    private static func unhashed(_ facts: ProcessFacts) -> ProcessFacts {
        var facts = facts
        if !facts.missing.contains("sha256") { facts.missing.append("sha256") }
        return facts
    }
}

extension ProcessSensor {
    /// The records of the BPF programs (process.bpf.c): starts with everything the kernel knew
    /// at exec, stops with their exit status; nothing is read from /proc.
    static func readBPF(_ probe: BPFProbe, buffer: SensorBuffer, executables: ExecutableNames, counters: KernelCounters, thread: SensorThread,
                        prevention: PreventionList) {
        let me = UInt32(getpid())
        let hasher = ExecutableHasher { facts, seenAt in
            report(start: facts, at: seenAt, into: buffer, prevention: prevention)
        }
        defer { hasher.stop() }
        var stopped: Set<ProcessKey> = []
        var reportedDrops = 0
        while !thread.isStopping {
            defer { hasher.expire() }
            let count = probe.poll(milliseconds: 250) { record in
                guard record.count >= 4 else { return }
                switch record.loadUnaligned(as: UInt32.self) {
                case UInt32(TETHER_BPF_EXEC) where record.count >= MemoryLayout<tether_bpf_exec>.size:
                    let exec = record.loadUnaligned(as: tether_bpf_exec.self)
                    guard exec.pid != me else { return }
                    let (facts, version) = Self.facts(exec, record: record)
                    executables.remember(facts.executable, for: facts.pid)
                    hasher.submit(facts, key: ProcessKey(pid: facts.pid, start: exec.start_boottime_ns), version: version,
                                  at: ProcFS.date(monotonicNanoseconds: exec.time_ns))
                case UInt32(TETHER_BPF_EXIT) where record.count >= MemoryLayout<tether_bpf_exit>.size:
                    let exit = record.loadUnaligned(as: tether_bpf_exit.self)
                    let key = ProcessKey(pid: Int32(bitPattern: exit.pid), start: exit.start_boottime_ns)
                    // Threads that exit together may each find the process's last one gone.
                    guard exit.pid != me, stopped.insert(key).inserted else { return }
                    if stopped.count > ProcessEnricher.processLimit { stopped = [key] }
                    let stop = SensorEvent(at: ProcFS.date(monotonicNanoseconds: exit.time_ns),
                                           .processStop(ProcessStop(pid: key.pid, status: exit.exit_code, executable: executables.forget(key.pid),
                                                                    startedAt: startDate(bootNanoseconds: exit.start_boottime_ns))))
                    hasher.afterStart(of: key) { buffer.push(stop) }
                default:
                    return
                }
            }
            let drops = probe.drops
            counters.add(reported: max(0, count), overflows: drops - reportedDrops)
            reportedDrops = drops
            // The kernel keeps the records (4 MiB of ring): gathering them costs nothing here.
            // After an error too, so that one that persists does not spin.
            SensorThread.gather(received: max(0, count), of: Int.max)
        }
    }

    /// A process's start from the kernel's (CLOCK_BOOTTIME), in whole clock ticks as
    /// /proc/PID/stat gives it, so the identity (pid, start) agrees with what /proc says.
    private static func startDate(bootNanoseconds: UInt64) -> Date? {
        guard let boot = ProcFS.bootTime else { return nil }
        return ProcFS.date(startTicks: bootNanoseconds / UInt64(1_000_000_000 / max(1, Int(ProcFS.ticksPerSecond))), boot: boot)
    }

    /// A start from an exec record, and the version of the file it ran.
    private static func facts(_ exec: tether_bpf_exec, record: UnsafeRawBufferPointer) -> (ProcessFacts, ExecutableVersion) {
        var facts = ProcessFacts(pid: Int32(bitPattern: exec.pid))
        facts.parentPid = Int32(bitPattern: exec.ppid)
        facts.uid = exec.uid
        facts.startedAt = startDate(bootNanoseconds: exec.start_boottime_ns)
        let fields = UnsafeRawBufferPointer(rebasing: record[..<MemoryLayout<tether_bpf_exec>.size])
        let (executable, whole) = path(exec, fields: fields)
        facts.executable = executable
        let argumentsOffset = MemoryLayout<tether_bpf_exec>.offset(of: \.args)!
        let arguments = fields[argumentsOffset..<(argumentsOffset + min(Int(exec.args_length), Int(TETHER_BPF_ARGS)))]
        var end = arguments.endIndex
        while end > arguments.startIndex && arguments[end - 1] == 0 { end -= 1 }
        if end > arguments.startIndex {
            facts.commandLine = CommandLineRedaction.redacted(String(decoding: arguments[..<end].map { $0 == 0 ? 32 : $0 }, as: UTF8.self))
        }
        let device = ExecutableVersion.userDevice(exec.device)
        facts.executableIdentity = (device, exec.inode)
        var missing: [String] = []
        if !whole { missing.append("path") }
        if facts.commandLine == nil { missing.append("commandLine") }
        if facts.startedAt == nil { missing.append("startTime") }
        facts.missing = missing
        return (facts, ExecutableVersion(device: device, inode: exec.inode, changed: exec.ctime_sec, changedNanoseconds: Int64(exec.ctime_nsec)))
    }

    /// The executable's path from the names the program walked up (an empty one marks a mount
    /// crossed), with ` (deleted)` as /proc/PID/exe shows it for a file no folder names any
    /// more. When the walk was cut short: the name the program asked for, if absolute (not
    /// through /dev/fd or /proc), else the names walked (`memfd:x`); `whole` is then false.
    private static func path(_ exec: tether_bpf_exec, fields: UnsafeRawBufferPointer) -> (path: String?, whole: Bool) {
        let deleted = exec.flags & UInt32(TETHER_BPF_FILE_DELETED) != 0 ? " (deleted)" : ""
        let namesOffset = MemoryLayout<tether_bpf_exec>.offset(of: \.names)!
        let slot = Int(TETHER_BPF_NAME)
        var components: [String] = []
        for index in 0..<min(Int(exec.depth), Int(TETHER_BPF_DEPTH)) {
            let name = fields[(namesOffset + index * slot)..<(namesOffset + (index + 1) * slot)]
            let length = name.firstIndex(of: 0).map { $0 - name.startIndex } ?? slot
            if length > 0 { components.append(String(decoding: name.prefix(length), as: UTF8.self)) }
        }
        if exec.flags & UInt32(TETHER_BPF_PATH_INCOMPLETE) == 0 {
            return ("/" + components.reversed().joined(separator: "/") + deleted, true)
        }
        let filenameOffset = MemoryLayout<tether_bpf_exec>.offset(of: \.filename)!
        let filename = fields[filenameOffset..<(filenameOffset + Int(TETHER_BPF_FILENAME))]
        let asked = String(decoding: filename.prefix { $0 != 0 }, as: UTF8.self)
        if asked.hasPrefix("/") && !asked.hasPrefix("/dev/fd/") && !asked.hasPrefix("/proc/") { return (asked + deleted, true) }
        return (components.isEmpty ? nil : components.reversed().joined(separator: "/") + deleted, false)
    }
}

/// The executables of the processes seen starting, for their stop records and the network
/// sensor's owners (bounded; shared by the sensors of one `SensorSet`).
final class ExecutableNames: @unchecked Sendable {
    private let lock = Lock()
    private var names: [Int32: String] = [:]

    func remember(_ executable: String?, for pid: Int32) {
        lock.withLock {
            if names.count >= ProcessEnricher.processLimit { names.removeAll(keepingCapacity: true) }
            names[pid] = executable
        }
    }

    func forget(_ pid: Int32) -> String? {
        lock.withLock { names.removeValue(forKey: pid) }
    }

    /// The executable a running process started with, when its start was seen.
    func name(of pid: Int32) -> String? {
        lock.withLock { names[pid] }
    }
}
