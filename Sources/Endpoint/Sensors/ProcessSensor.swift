internal import CSensorShims
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import X509
import Primitives

/// Process starts and stops: from BPF programs on the scheduler's exec and exit tracepoints
/// (everything known in the kernel, as it happens); where they cannot load, from the kernel's
/// netlink process connector (exec and exit as they happen, the rest read from /proc, which a
/// short program may have left); where that is refused too (no CAP_NET_ADMIN, a container
/// without it), from a scan of /proc every `scanInterval`, which misses processes that live
/// less than that.
final class ProcessSensor: @unchecked Sendable {
    private var thread: SensorThread?
    private(set) var status: SensorStatus
    private let counters = KernelCounters()
    /// What the BPF source is called in statuses (`tether agent watch`, `agent status`).
    static let bpfSource = "eBPF (sched_process_exec and sched_process_exit, ring buffer)"

    init(buffer: SensorBuffer, prevention: PreventionList, scanInterval: TimeInterval = 1, allowConnector: Bool = true, allowBPF: Bool = true,
         executables: ExecutableNames = ExecutableNames()) {
        var bpfNote: String?
        if allowConnector && allowBPF && Self.inOwnPidNamespace {
            bpfNote = "the BPF programs are not used in a pid namespace of its own (they report the host's pids)"
        } else if allowConnector && allowBPF {
            switch BPFProbe.open(BPFObjects.process) {
            case .success(let probe):
                status = SensorStatus(sensor: .process, source: Self.bpfSource, running: true, note: nil)
                let counters = self.counters
                thread = SensorThread(name: "sensor:process") { thread in
                    Self.readBPF(probe, buffer: buffer, executables: executables, counters: counters, thread: thread, prevention: prevention)
                }
                return
            case .failure(let refusal):
                bpfNote = "the BPF programs were not loaded (\(refusal.reason))"
            }
        }
        let enricher = ProcessEnricher()
        let fd = !allowConnector ? -EPERM : (Self.inOwnPidNamespace ? -EOPNOTSUPP : tether_proc_connector_open())
        if fd >= 0 {
            status = SensorStatus(sensor: .process, source: "netlink process connector", running: true,
                                  note: bpfNote.map { $0 + "; the process connector reads the rest from /proc, which misses programs that end first (their path, command line and hash)" })
            let counters = self.counters
            thread = SensorThread(name: "sensor:process") { thread in
                Self.readConnector(fd: fd, buffer: buffer, enricher: enricher, counters: counters, thread: thread, prevention: prevention)
                close(fd)
            }
        } else {
            let why: String
            switch fd {
            case -EPERM: why = "Operation not permitted: it needs CAP_NET_ADMIN"
            case -EOPNOTSUPP: why = "this process is in a pid namespace of its own (a container): the kernel sends it no process events"
            case -ETIMEDOUT: why = "the kernel did not acknowledge the subscription: outside the initial pid and user namespaces it sends nothing"
            default: why = String(cString: strerror(-fd))
            }
            let reason = (bpfNote.map { $0 + "; " } ?? "") + (allowConnector ? "the netlink process connector was refused (\(why))" : "the netlink process connector is not used")
            status = SensorStatus(sensor: .process, source: "/proc scan every \(Int(scanInterval)) s", running: true,
                                  note: reason + "; a scan misses processes that live less than \(Int(scanInterval)) s and their exit codes")
            thread = SensorThread(name: "sensor:procscan") { thread in
                Self.scan(every: scanInterval, buffer: buffer, enricher: enricher, thread: thread, prevention: prevention)
            }
        }
    }

    /// True when /proc/self/status lists more than one pid (NSpid): pids here are not the kernel's.
    static var inOwnPidNamespace: Bool {
        guard let status = ProcFS.read("/proc/self/status", limit: 8192) else { return false }
        for line in status.split(separator: UInt8(ascii: "\n")) where line.starts(with: Array("NSpid:".utf8)) {
            return line.dropFirst(6).split(whereSeparator: { $0 == 9 || $0 == 32 }).count > 1
        }
        return false
    }

    /// Records the kernel reported (fork, exec and exit) and how often it lost some to a full socket buffer.
    var kernelCounts: (reported: Int, overflows: Int) { counters.read() }

    /// False when its thread did not end in time.
    @discardableResult
    func stop() -> Bool {
        let ended = thread?.stop() ?? true
        thread = nil
        status = status.stopped
        return ended
    }

    /// A process start, and when its executable is on the execution-prevention list, the process
    /// killed at once with a detection and what was done about it.
    static func report(start facts: ProcessFacts, at now: Date, into buffer: SensorBuffer, prevention: PreventionList) {
        buffer.push(SensorEvent(at: now, .processStart(facts)))
        guard let rule = prevention.match(sha256: facts.sha256, md5: facts.md5) else { return }
        var detection = Detection(source: .executionPrevention, path: facts.executable ?? "")
        detection.sha256 = facts.sha256
        detection.md5 = facts.md5
        detection.pid = facts.pid
        detection.commandLine = facts.commandLine
        detection.rule = rule
        buffer.push(SensorEvent(at: now, .detection(detection)))
        buffer.push(SensorEvent(at: Date(), .processingResult(terminate(facts, detection: detection.id))))
    }

    /// Kills the process if it still runs the file that matched, through a pidfd (a reused pid or
    /// a later exec is left alone); never pid 1, Tether itself or a process Tether started.
    private static func terminate(_ facts: ProcessFacts, detection: String) -> ProcessingResult {
        let pid = facts.pid
        if let protected = ProcessTermination.protectedProcess(pid, parent: facts.parentPid ?? 0) {
            return ProcessingResult(detectionId: detection, action: .terminationRefused, result: "pid \(pid) is \(protected): never killed", pid: pid)
        }
        guard let identity = facts.executableIdentity else {
            return ProcessingResult(detectionId: detection, action: .terminationFailed, result: "pid \(pid): its file could not be identified", pid: pid)
        }
        let result = tether_kill_if_running(pid, identity.device, identity.inode)
        switch result {
        case 0:
            return ProcessingResult(detectionId: detection, action: .processTerminated, result: "SIGKILL sent to pid \(pid)", pid: pid)
        case -ESRCH, -ENOENT, -ESTALE:
            return ProcessingResult(detectionId: detection, action: .terminationFailed, result: "pid \(pid) had ended or run another program", pid: pid)
        default:
            return ProcessingResult(detectionId: detection, action: .terminationFailed,
                                    result: "pid \(pid) could not be killed: \(String(cString: strerror(-result)))", pid: pid)
        }
    }

    private static func readConnector(fd: Int32, buffer: SensorBuffer, enricher: ProcessEnricher, counters: KernelCounters, thread: SensorThread,
                                      prevention: PreventionList) {
        var records = [tether_proc_event](repeating: tether_proc_event(), count: 4096)
        let me = getpid()
        while !thread.isStopping {
            var overflows: Int32 = 0
            let count = tether_proc_connector_read(fd, 250, &records, Int32(records.count), &overflows)
            counters.add(overflows: Int(overflows))
            guard count > 0 else { continue }
            counters.add(reported: Int(count))
            // No pause to gather records here (as the file sensor does): /proc must be read while
            // the process still runs; a 1 ms pause cut the short programs described from 94 % to 35 %.
            let now = Date()
            for record in records.prefix(Int(count)) {
                // Threads end too: only a whole process (its leader) is a process-stop.
                if record.what == UInt32(TETHER_PROC_FORK) {
                    // The parent and the creation time, so an exec needs no read of /proc/PID/stat.
                    enricher.forked(record.tgid, parent: record.parent, at: ProcFS.date(monotonicNanoseconds: record.timestamp_ns))
                } else if record.what == UInt32(TETHER_PROC_EXIT) {
                    guard record.pid == record.tgid, record.tgid != me else { continue }
                    buffer.push(SensorEvent(at: now, .processStop(ProcessStop(pid: record.tgid, status: record.exit_code,
                                                                              executable: enricher.forget(record.tgid)))))
                } else if record.what == UInt32(TETHER_PROC_EXEC) {
                    report(start: enricher.facts(record.tgid), at: now, into: buffer, prevention: prevention)
                }
            }
        }
    }

    private static func scan(every interval: TimeInterval, buffer: SensorBuffer, enricher: ProcessEnricher, thread: SensorThread,
                             prevention: PreventionList) {
        // Each process by its executable, so a program that replaces itself (exec without fork,
        // as a shell's last command does) is a new start. What runs when the sensor starts is the
        // baseline, not news (as with the connector).
        func running() -> [Int32: String] {
            var result: [Int32: String] = [:]
            for pid in ProcFS.numericEntries("/proc") {
                // A file replaced under a running program (a package upgrade) is not a new start.
                var executable = ProcFS.readLink("/proc/\(pid)/exe") ?? ""
                if executable.hasSuffix(" (deleted)") { executable.removeLast(10) }
                result[pid] = executable
            }
            return result
        }
        var known = running()
        while !thread.isStopping {
            thread.sleep(interval)
            if thread.isStopping { break }
            let current = running()
            let now = Date()
            for (pid, executable) in current.sorted(by: { $0.key < $1.key }) where known[pid] != executable {
                report(start: enricher.facts(pid), at: now, into: buffer, prevention: prevention)
            }
            for pid in known.keys.sorted() where current[pid] == nil {
                buffer.push(SensorEvent(at: now, .processStop(ProcessStop(pid: pid, status: nil, executable: enricher.forget(pid)))))
            }
            known = current
        }
    }

}

/// Counts shared between a sensor's thread and whoever asks.
final class KernelCounters: @unchecked Sendable {
    private let lock = Lock()
    private var reported = 0
    private var overflows = 0

    func add(reported: Int = 0, overflows: Int = 0) {
        lock.lock()
        self.reported += reported
        self.overflows += overflows
        lock.unlock()
    }

    func read() -> (reported: Int, overflows: Int) {
        lock.lock()
        defer { lock.unlock() }
        return (reported, overflows)
    }
}

/// What /proc says of a process at its start, with its executable's SHA-256 cached by file
/// (device, inode, size, modification time), so a program run a thousand times is hashed once.
final class ProcessEnricher: @unchecked Sendable {
    /// A file's identity and version. The change time is in it because no user can set it back
    /// (the modification time can be, with utimensat).
    private struct FileKey: Hashable {
        let device: UInt64, inode: UInt64, size: Int64, modified: Int, modifiedNanoseconds: Int, changed: Int, changedNanoseconds: Int

        init(_ info: stat) {
            device = UInt64(info.st_dev)
            inode = UInt64(info.st_ino)
            size = Int64(info.st_size)
            modified = info.st_mtim.tv_sec
            modifiedNanoseconds = info.st_mtim.tv_nsec
            changed = info.st_ctim.tv_sec
            changedNanoseconds = info.st_ctim.tv_nsec
        }
    }
    /// Executables larger than this are not hashed (`missing` says sha256).
    static let hashSizeLimit: Int64 = 256 << 20
    private var hashes: [FileKey: (sha256: String, md5: String)] = [:]
    /// The executables of the processes seen starting, for their stop events.
    private var executables: [Int32: String] = [:]
    private let lock = Lock()
    static let hashCacheLimit = 4096
    static let processLimit = 65_536
    static let commandLineLimit = 4096

    /// New processes' parents and creation times from the connector's fork records, until their
    /// exec (or exit).
    private var forks: [Int32: (parent: Int32, at: Date)] = [:]

    /// Notes a new process's parent and creation time.
    func forked(_ pid: Int32, parent: Int32, at: Date) {
        lock.lock()
        if forks.count >= Self.processLimit { forks.removeAll(keepingCapacity: true) }
        forks[pid] = (parent, at)
        lock.unlock()
    }

    /// Read buffers reused from start to start (an enricher serves one thread).
    private var scratch = [UInt8](repeating: 0, count: ProcessEnricher.commandLineLimit)
    private var linkScratch = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)

    /// Reads the process's files relative to its /proc folder, opened once: the path is looked up
    /// once per start instead of once per file.
    func facts(_ pid: Int32) -> ProcessFacts {
        var facts = ProcessFacts(pid: pid)
        let folder = open("/proc/\(pid)", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if folder >= 0 {
            defer { close(folder) }
            var info = stat()
            if fstat(folder, &info) == 0 { facts.uid = info.st_uid }
            // A process that made itself non-dumpable shows its /proc folder as root's: ask its status.
            if facts.uid == 0, let count = read(folder, "status") { facts.uid = Self.effectiveUid(scratch.prefix(count)) ?? facts.uid }
            let length = readlinkat(folder, "exe", &linkScratch, Int(PATH_MAX))
            if length > 0 { facts.executable = String(decoding: linkScratch.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            if let count = read(folder, "cmdline"), count > 0 {
                var end = count
                while end > 0 && scratch[end - 1] == 0 { end -= 1 }
                facts.commandLine = CommandLineRedaction.redacted(String(decoding: scratch.prefix(end).map { $0 == 0 ? 32 : $0 }, as: UTF8.self))
            }
            lock.lock()
            let fork = forks[pid]
            lock.unlock()
            if let fork {
                facts.parentPid = fork.parent
                facts.startedAt = fork.at
            } else if let count = read(folder, "stat"), let close = scratch.prefix(count).lastIndex(of: UInt8(ascii: ")")) {
                let fields = scratch[(close + 1)..<count].split(separator: UInt8(ascii: " "))
                // After "pid (comm)": state, ppid, … and the start time (field 22) at index 19.
                if fields.count > 19 {
                    facts.parentPid = Int32(String(decoding: fields[1], as: UTF8.self))
                    if let ticks = UInt64(String(decoding: fields[19], as: UTF8.self)), let boot = ProcFS.bootTime {
                        facts.startedAt = ProcFS.date(startTicks: ticks, boot: boot)
                    }
                }
            }
            if let digests = digests(folder) {
                (facts.sha256, facts.md5) = (digests.sha256, digests.md5)
                facts.executableIdentity = (digests.device, digests.inode)
            }
        }
        var missing: [String] = []
        if facts.executable == nil { missing.append("path") }
        if facts.commandLine == nil { missing.append("commandLine") }
        if facts.startedAt == nil { missing.append("startTime") }
        if facts.sha256 == nil { missing.append("sha256") }
        if facts.parentPid == nil { missing.append("ppid") }
        if facts.uid == nil { missing.append("uid") }
        facts.missing = missing
        lock.lock()
        if executables.count >= Self.processLimit { executables.removeAll(keepingCapacity: true) }
        if let executable = facts.executable { executables[pid] = executable }
        lock.unlock()
        return facts
    }

    /// The effective uid on the `Uid:` line of /proc/PID/status (real, effective, saved, fs).
    static func effectiveUid(_ status: ArraySlice<UInt8>) -> UInt32? {
        for line in status.split(separator: UInt8(ascii: "\n")) where line.starts(with: Array("Uid:".utf8)) {
            let fields = line.dropFirst(4).split(whereSeparator: { $0 == 9 || $0 == 32 })
            return fields.count > 1 ? UInt32(String(decoding: fields[1], as: UTF8.self)) : nil
        }
        return nil
    }

    /// Reads a file of the process's folder into `scratch`; how many bytes, or nil.
    private func read(_ folder: Int32, _ name: String) -> Int? {
        let fd = openat(folder, name, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return ProcFS.read(fd, into: &scratch)
    }

    /// The executable recorded at the process's start, now forgotten.
    func forget(_ pid: Int32) -> String? {
        lock.lock()
        defer { lock.unlock() }
        forks[pid] = nil
        return executables.removeValue(forKey: pid)
    }

    /// The running executable's SHA-256 and MD5, read through /proc/PID/exe (so a replaced or
    /// deleted file is still the one that runs).
    private func digests(_ folder: Int32) -> (sha256: String, md5: String, device: UInt64, inode: UInt64)? {
        // The running file's identity first (one call); it is opened and read only when new.
        var info = stat()
        guard fstatat(folder, "exe", &info, 0) == 0, Int64(info.st_size) <= Self.hashSizeLimit else { return nil }
        let key = FileKey(info)
        lock.lock()
        let cached = hashes[key]
        lock.unlock()
        if let cached { return (cached.sha256, cached.md5, key.device, key.inode) }
        let fd = openat(folder, "exe", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        // Kept under the identity of the file read (the process may have run another meanwhile).
        var opened = stat()
        guard fstat(fd, &opened) == 0, Int64(opened.st_size) <= Self.hashSizeLimit, let digest = fileDigests(fileDescriptor: fd) else { return nil }
        let readKey = FileKey(opened)
        lock.lock()
        if hashes.count >= Self.hashCacheLimit { hashes.removeAll(keepingCapacity: true) }
        hashes[readKey] = digest
        lock.unlock()
        return (digest.sha256, digest.md5, readKey.device, readKey.inode)
    }


}

/// The execution-prevention rules the process sensor enforces: hashes of executables that may
/// not run. Replaced whole (as the platform's command replaces the list), read on every start.
package final class PreventionList: @unchecked Sendable {
    private let lock = Lock()
    private var sha256: Set<String> = []
    private var md5: Set<String> = []

    package init() {}

    /// Replaces the list: lower-case hex hashes by algorithm (`sha256`, `md5`). True when it changed.
    @discardableResult
    package func replace(sha256: Set<String>, md5: Set<String>) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard (self.sha256, self.md5) != (sha256, md5) else { return false }
        (self.sha256, self.md5) = (sha256, md5)
        return true
    }

    /// The rule an executable matches (`sha256:…`), or nil.
    func match(sha256 digest: String?, md5 weak: String?) -> String? {
        lock.lock()
        defer { lock.unlock() }
        if let digest, sha256.contains(digest) { return "sha256:" + digest }
        if let weak, md5.contains(weak) { return "md5:" + weak }
        return nil
    }
}

/// What of a command line must not leave the machine: the password in a URL
/// (`https://user:TOKEN@host` → `https://***@host`) and the value of an argument named like a
/// secret (`--password=…`, `token=…`, `--client-secret=…` → `***`).
enum CommandLineRedaction {
    static func redacted(_ text: String) -> String {
        guard text.contains("@") || text.contains("=") else { return text }
        return text.split(separator: " ", omittingEmptySubsequences: false).map { redact(argument: $0) }.joined(separator: " ")
    }

    private static func redact(argument: Substring) -> String {
        var argument = String(argument)
        if let scheme = argument.firstRange(of: "://") {
            let authorityEnd = argument[scheme.upperBound...].firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? argument.endIndex
            if let at = argument[scheme.upperBound..<authorityEnd].lastIndex(of: "@") {
                argument.replaceSubrange(scheme.upperBound..<at, with: "***")
            }
        }
        if let equals = argument.firstIndex(of: "=") {
            let name = argument[..<equals].lowercased()
            if ["password", "passwd", "token", "secret", "apikey", "api-key", "api_key"].contains(where: { name.contains($0) }) {
                argument.replaceSubrange(argument.index(after: equals)..., with: "***")
            }
        }
        return argument
    }
}
