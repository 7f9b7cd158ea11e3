internal import CSensorShims
import FoundationEssentials
import IntegrationModel
#if canImport(Glibc)
import Glibc
#endif
import X509
import Primitives

/// The platform's `terminate-process`: a process named by its pid and start time, or every
/// process whose executable has a SHA-256, ended with SIGKILL through a pidfd after confirming
/// on it that it is still that process (docs/architecture.md, "Response actions"). Never init,
/// Tether itself or a process Tether started.
package enum ProcessTermination {
    /// What became of each process the command named or matched.
    package struct Outcome: Sendable, Equatable {
        /// Ended (it is gone): pid and executable.
        package var ended: [(pid: Int32, path: String)] = []
        /// Left alone on principle or because it could not be ended, with why.
        package var spared: [(pid: Int32, why: String)] = []

        package static func == (lhs: Outcome, rhs: Outcome) -> Bool {
            lhs.ended.map(\.pid) == rhs.ended.map(\.pid) && lhs.spared.map(\.pid) == rhs.spared.map(\.pid)
        }

        /// For the command's result: `ended pid 812 (/tmp/x/sleep); spared pid 1: init`.
        package var summary: String {
            var parts: [String] = []
            if !ended.isEmpty { parts.append("ended " + ended.map { "pid \($0.pid) (\($0.path))" }.joined(separator: ", ")) }
            if !spared.isEmpty { parts.append("spared " + spared.map { "pid \($0.pid): \($0.why)" }.joined(separator: ", ")) }
            return parts.isEmpty ? "no running process matched" : parts.joined(separator: "; ")
        }
    }

    /// How close a process's start must be to the one named (the event's time has whole seconds).
    static let startTolerance: TimeInterval = 2
    /// How long to wait for a killed process to be gone before saying it was not.
    static let waitMilliseconds: Int32 = 2000

    /// Ends the process `pid` if it started at `startedAt`.
    package static func terminate(pid: Int32, startedAt: Date) -> Outcome {
        var outcome = Outcome()
        if let why = protectedReason(pid) {
            outcome.spared.append((pid, why))
            return outcome
        }
        // Read now: a clock stepped since Tether started (NTP after boot) moves the boot time.
        guard let ticks = ProcFS.startTicks(pid), let boot = ProcFS.currentBootTime() else {
            outcome.spared.append((pid, "no such process"))
            return outcome
        }
        guard FileManager.default.fileExists(atPath: "/proc/\(pid)/exe") || ProcFS.readLink("/proc/\(pid)/exe") != nil else {
            outcome.spared.append((pid, "a kernel thread is never ended"))
            return outcome
        }
        let started = ProcFS.date(startTicks: ticks, boot: boot)
        guard abs(started.timeIntervalSince(startedAt)) <= startTolerance else {
            outcome.spared.append((pid, "started at \(Timestamp.string(started)), not \(Timestamp.string(startedAt)): another process has that pid now"))
            return outcome
        }
        kill(pid, ticks: ticks, into: &outcome)
        return outcome
    }

    /// Ends every process whose executable's SHA-256 is `sha256` (lower-case hex). Each
    /// executable file is read once, however many processes run it.
    package static func terminate(sha256: String) -> Outcome {
        var outcome = Outcome()
        // init's program and Tether's own: never a reason to end every process that runs it.
        for (path, name) in [("/proc/1/exe", "init"), ("/proc/self/exe", "Tether")] {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            if fileDigests(fileDescriptor: fd)?.sha256 == sha256 {
                outcome.spared.append((pid: name == "init" ? 1 : getpid(), why: "that is the hash of \(name)'s own program: no process is ended by it"))
                return outcome
            }
        }
        var digests: [FileIdentity: String] = [:]
        for pid in ProcFS.numericEntries("/proc") {
            var info = stat()
            guard stat("/proc/\(pid)/exe", &info) == 0 else { continue }  // a kernel thread, or gone
            let identity = FileIdentity(info)
            if digests[identity] == nil {
                let fd = open("/proc/\(pid)/exe", O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { continue }
                digests[identity] = fileDigests(fileDescriptor: fd)?.sha256 ?? ""
                close(fd)
            }
            guard digests[identity] == sha256 else { continue }
            if let why = protectedReason(pid) {
                outcome.spared.append((pid, why))
                continue
            }
            // The pidfd is opened before the check that it still runs the file hashed: a pid
            // reused meanwhile runs another file, or is not the pidfd's process.
            let path = ProcFS.readLink("/proc/\(pid)/exe") ?? "?"
            report(pid, path: path, tether_kill_running_file(pid, identity.device, identity.inode, waitMilliseconds), into: &outcome)
        }
        return outcome
    }

    private static func kill(_ pid: Int32, ticks: UInt64, into outcome: inout Outcome) {
        report(pid, path: ProcFS.readLink("/proc/\(pid)/exe") ?? "?", tether_kill_started(pid, ticks, waitMilliseconds), into: &outcome)
    }

    private static func report(_ pid: Int32, path: String, _ result: Int32, into outcome: inout Outcome) {
        switch result {
        case 0: outcome.ended.append((pid, path))
        case -ESRCH, -ESTALE: outcome.spared.append((pid, "it had ended"))
        case -ETIMEDOUT: outcome.spared.append((pid, "SIGKILL sent, but it was still there after \(waitMilliseconds / 1000) s (a process in uninterruptible sleep)"))
        case let error: outcome.spared.append((pid, "it could not be signalled: \(String(cString: strerror(-error)))"))
        }
    }

    /// Why `pid` is never ended, or nil: init, Tether itself, a process Tether started.
    static func protectedReason(_ pid: Int32) -> String? {
        protectedProcess(pid, parent: nil).map { "\($0) is never ended" }
    }

    /// What `pid` is when it is one no kill ever hits (`init`, `Tether itself`, `a process
    /// Tether started`), or nil; `parent` when known, else read from /proc. The one rule every
    /// kill follows (this one, execution prevention's).
    static func protectedProcess(_ pid: Int32, parent known: Int32?) -> String? {
        if pid <= 1 { return "init" }
        if pid == getpid() { return "Tether itself" }
        if (known ?? parent(of: pid)) == getpid() { return "a process Tether started" }
        return nil
    }

    /// The parent's pid (/proc/PID/stat field 4).
    static func parent(of pid: Int32) -> Int32? {
        guard let bytes = ProcFS.read("/proc/\(pid)/stat", limit: 1024), let close = bytes.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = bytes[(close + 1)...].split(separator: UInt8(ascii: " "))
        return fields.count > 1 ? Int32(String(decoding: fields[1], as: UTF8.self)) : nil
    }
}
