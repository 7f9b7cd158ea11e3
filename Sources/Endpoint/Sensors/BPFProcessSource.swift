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

    deinit { tether_bpf_probe_close(probe) }
}

/// Why BPF programs were not loaded.
struct BPFRefusal: Error {
    let reason: String
}

/// The identity and version of an executable as the kernel saw it at exec: device (as stat
/// reports it), inode and change time. No user can set a change time back.
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
        UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode && Int64(info.st_ctim.tv_sec) == changed && Int64(info.st_ctim.tv_nsec) == changedNanoseconds
    }
}

/// Hashes executables off the event stream: a worker thread reads each new file version once
/// (SHA-256 and MD5, cached by `ExecutableVersion`), so a slow or hung file system delays only
/// the starts that wait for its files, never the reading of the kernel's records. A start
/// whose file is not hashed within `deadline` (or finds the queue full) goes out without its
/// hash, with `missing` saying so.
final class ExecutableHasher: @unchecked Sendable {
    struct Job {
        let facts: ProcessFacts
        let version: ExecutableVersion
        let seenAt: Date
    }

    private let lock = Lock()
    private let wake = DispatchSemaphore(value: 0)
    private var queue: [Job] = []
    private var stopping = false
    /// When the job the worker holds was taken: the deadline is counted from there.
    private var busySince: Date?
    private var cache: [ExecutableVersion: (sha256: String, md5: String)] = [:]
    /// Processes whose start waits for the worker, and their stops, held until the start is out.
    private var waiting: [Int32: [() -> Void]] = [:]
    private let deliver: @Sendable (ProcessFacts, Date) -> Void
    static let queueLimit = 4096
    static let cacheLimit = 4096
    let deadline: TimeInterval

    /// `deliver` gets each start once, hashed or not, from the worker's thread or the caller's.
    init(deadline: TimeInterval = 1, deliver: @escaping @Sendable (ProcessFacts, Date) -> Void) {
        self.deadline = deadline
        self.deliver = deliver
        Threads.start(name: "sensor:hash", stackSize: 1 << 20) { [self] in work() }
    }

    /// Hands a start over: delivered at once when its file's hash is known (or cannot be had
    /// in time), else when the worker has read the file.
    func submit(_ facts: ProcessFacts, version: ExecutableVersion, at seenAt: Date) {
        lock.lock()
        if let digests = cache[version] {
            lock.unlock()
            deliver(Self.hashed(facts, digests), seenAt)
            return
        }
        let stuck = busySince.map { Date().timeIntervalSince($0) > deadline } ?? false
        guard !stuck, queue.count < Self.queueLimit, !stopping else {
            lock.unlock()
            deliver(Self.unhashed(facts), seenAt)
            return
        }
        queue.append(Job(facts: facts, version: version, seenAt: seenAt))
        waiting[facts.pid, default: []] = []
        lock.unlock()
        wake.signal()
    }

    /// Runs `stop` (a process's stop) now, or after the start of the same process when that
    /// still waits for the worker: a reader never sees a process end before it began.
    func afterStart(of pid: Int32, _ stop: @escaping () -> Void) {
        lock.lock()
        if waiting[pid] != nil {
            waiting[pid]?.append(stop)
            lock.unlock()
            return
        }
        lock.unlock()
        stop()
    }

    /// Delivers a start, then what waited for it.
    private func finish(_ facts: ProcessFacts, _ seenAt: Date) {
        deliver(facts, seenAt)
        lock.lock()
        let held = waiting.removeValue(forKey: facts.pid) ?? []
        lock.unlock()
        for stop in held { stop() }
    }

    /// Ends the worker once its current file is read; what is queued goes out unhashed.
    func stop() {
        lock.lock()
        stopping = true
        let left = queue
        queue.removeAll()
        lock.unlock()
        wake.signal()
        for job in left { finish(Self.unhashed(job.facts), job.seenAt) }
    }

    private func work() {
        while true {
            wake.wait()
            while true {
                lock.lock()
                if stopping {
                    lock.unlock()
                    return
                }
                guard !queue.isEmpty else {
                    lock.unlock()
                    break
                }
                let job = queue.removeFirst()
                if let digests = cache[job.version] {
                    lock.unlock()
                    finish(Self.hashed(job.facts, digests), job.seenAt)
                    continue
                }
                busySince = Date()
                lock.unlock()
                let digests = Self.read(job)
                lock.lock()
                busySince = nil
                if let digests {
                    if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
                    cache[job.version] = digests
                }
                lock.unlock()
                finish(digests.map { Self.hashed(job.facts, $0) } ?? Self.unhashed(job.facts), job.seenAt)
            }
        }
    }

    /// The file the kernel ran: by its path, or through /proc/PID/exe while the process lives;
    /// only when it is still the version that ran (device, inode, change time).
    private static func read(_ job: Job) -> (sha256: String, md5: String)? {
        for path in [job.facts.executable, "/proc/\(job.facts.pid)/exe"].compactMap({ $0 }) {
            let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var info = stat()
            guard fstat(fd, &info) == 0, job.version.matches(info), Int64(info.st_size) <= ProcessEnricher.hashSizeLimit else { continue }
            return fileDigests(fileDescriptor: fd)
        }
        return nil
    }

    private static func hashed(_ facts: ProcessFacts, _ digests: (sha256: String, md5: String)) -> ProcessFacts {
        var facts = facts
        (facts.sha256, facts.md5) = (digests.sha256, digests.md5)
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
        var reportedDrops = 0
        while !thread.isStopping {
            let now = Date()
            let count = probe.poll(milliseconds: 250) { record in
                guard record.count >= 4 else { return }
                switch record.loadUnaligned(as: UInt32.self) {
                case UInt32(TETHER_BPF_EXEC) where record.count >= MemoryLayout<tether_bpf_exec>.size:
                    let exec = record.loadUnaligned(as: tether_bpf_exec.self)
                    guard exec.pid != me else { return }
                    let (facts, version) = Self.facts(exec, record: record)
                    executables.remember(facts.executable, for: facts.pid)
                    hasher.submit(facts, version: version, at: now)
                case UInt32(TETHER_BPF_EXIT) where record.count >= MemoryLayout<tether_bpf_exit>.size:
                    let exit = record.loadUnaligned(as: tether_bpf_exit.self)
                    guard exit.pid != me else { return }
                    let pid = Int32(bitPattern: exit.pid)
                    let stop = SensorEvent(at: now, .processStop(ProcessStop(pid: pid, status: exit.exit_code, executable: executables.forget(pid))))
                    hasher.afterStart(of: pid) { buffer.push(stop) }
                default:
                    return
                }
            }
            let drops = probe.drops
            counters.add(reported: max(0, count), overflows: drops - reportedDrops)
            reportedDrops = drops
            // The kernel keeps the records (4 MiB of ring): gathering them costs nothing here.
            if count >= 0 { SensorThread.gather(received: count, of: Int.max) }
        }
    }

    /// A start from an exec record, and the version of the file it ran.
    private static func facts(_ exec: tether_bpf_exec, record: UnsafeRawBufferPointer) -> (ProcessFacts, ExecutableVersion) {
        var facts = ProcessFacts(pid: Int32(bitPattern: exec.pid))
        facts.parentPid = Int32(bitPattern: exec.ppid)
        facts.uid = exec.uid
        if let boot = ProcFS.bootTime {
            // In clock ticks, as /proc/PID/stat gives it, so the identity (pid, start) agrees.
            let ticks = Double(exec.start_boottime_ns / UInt64(1_000_000_000 / max(1, Int(ProcFS.ticksPerSecond))))
            facts.startedAt = boot.addingTimeInterval(ticks / ProcFS.ticksPerSecond)
        }
        let fields = UnsafeRawBufferPointer(rebasing: record[..<MemoryLayout<tether_bpf_exec>.size])
        facts.executable = path(exec, fields: fields)
        let argumentsOffset = MemoryLayout<tether_bpf_exec>.offset(of: \.args) ?? 0
        let arguments = fields[argumentsOffset..<(argumentsOffset + min(Int(exec.args_length), Int(TETHER_BPF_ARGS)))]
        var end = arguments.endIndex
        while end > arguments.startIndex && arguments[end - 1] == 0 { end -= 1 }
        if end > arguments.startIndex {
            facts.commandLine = CommandLineRedaction.redacted(String(decoding: arguments[..<end].map { $0 == 0 ? 32 : $0 }, as: UTF8.self))
        }
        let device = ExecutableVersion.userDevice(exec.device)
        facts.executableIdentity = (device, exec.inode)
        var missing: [String] = []
        if facts.executable == nil { missing.append("path") }
        if facts.commandLine == nil { missing.append("commandLine") }
        if facts.startedAt == nil { missing.append("startTime") }
        facts.missing = missing
        return (facts, ExecutableVersion(device: device, inode: exec.inode, changed: exec.ctime_sec, changedNanoseconds: Int64(exec.ctime_nsec)))
    }

    /// The executable's path from the names the program walked up (an empty one marks a mount
    /// crossed); the name the program asked for when the walk was cut short and that is absolute.
    private static func path(_ exec: tether_bpf_exec, fields: UnsafeRawBufferPointer) -> String? {
        let namesOffset = MemoryLayout<tether_bpf_exec>.offset(of: \.names) ?? 0
        let slot = Int(TETHER_BPF_NAME)
        var components: [String] = []
        for index in 0..<min(Int(exec.depth), Int(TETHER_BPF_DEPTH)) {
            let name = fields[(namesOffset + index * slot)..<(namesOffset + (index + 1) * slot)]
            let length = name.firstIndex(of: 0).map { $0 - name.startIndex } ?? slot
            if length > 0 { components.append(String(decoding: name.prefix(length), as: UTF8.self)) }
        }
        if exec.flags & UInt32(TETHER_BPF_PATH_INCOMPLETE) == 0 {
            return "/" + components.reversed().joined(separator: "/")
        }
        let filenameOffset = MemoryLayout<tether_bpf_exec>.offset(of: \.filename) ?? 0
        let filename = fields[filenameOffset..<(filenameOffset + Int(TETHER_BPF_FILENAME))]
        let asked = String(decoding: filename.prefix { $0 != 0 }, as: UTF8.self)
        return asked.hasPrefix("/") ? asked : nil
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
