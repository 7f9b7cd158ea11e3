internal import CSensorShims
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Primitives

/// Small reads of /proc without Foundation's file machinery: a sensor reads several files per
/// process start, a thousand times a second under load.
package enum ProcFS {
    /// When process `pid` started, in clock ticks after boot (/proc/PID/stat's field 22): with
    /// the pid, who it is (a pid alone may be reused). nil when there is no such process.
    package static func startTicks(_ pid: Int32) -> UInt64? {
        let ticks = tether_process_start_ticks(pid)
        return ticks > 0 ? ticks : nil
    }

    /// Up to `limit` bytes of a file, or nil when it cannot be opened (the process is gone).
    static func read(_ path: String, limit: Int = 4096) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: limit)
        // Read first, then cut: `bytes.prefix(read(fd, into: &bytes))` took the prefix of the
        // buffer as it was before the read, all zeros.
        let count = read(fd, into: &bytes)
        return Array(bytes.prefix(count))
    }

    /// Reads an open file into `buffer` until its end or the buffer is full; how many bytes.
    static func read(_ fd: Int32, into buffer: inout [UInt8]) -> Int {
        var total = 0
        while total < buffer.count {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + total, $0.count - total) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            total += count
        }
        return total
    }

    /// A symbolic link's target (`/proc/PID/exe`), or nil.
    static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = Glibc.readlink(path, &buffer, Int(PATH_MAX))
        guard count > 0 else { return nil }
        return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The numeric entries of a folder (`/proc` → process ids, `/proc/PID/fd` → descriptors).
    static func numericEntries(_ path: String) -> [Int32] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var result: [Int32] = []
        while let entry = readdir(directory) {
            let number = withUnsafeBytes(of: entry.pointee.d_name) { raw -> Int32? in
                var value: Int32 = 0
                var any = false
                for byte in raw {
                    if byte == 0 { break }
                    guard byte >= 48 && byte <= 57 else { return nil }
                    value = value &* 10 &+ Int32(byte - 48)
                    any = true
                }
                return any ? value : nil
            }
            if let number { result.append(number) }
        }
        return result
    }

    /// The system's boot time (`btime` in /proc/stat), to turn a process's start in clock ticks
    /// into a date.
    package static let bootTime: Date? = currentBootTime()

    /// The boot time as /proc/stat says it now (it moves when the clock is stepped).
    package static func currentBootTime() -> Date? {
        guard let bytes = read("/proc/stat", limit: 65_536) else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6).trimmingSpaces()).map { Date(timeIntervalSince1970: $0) }
        }
        return nil
    }

    package static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// The wall-clock time of a process start given in clock ticks after boot (/proc/PID/stat's
    /// field 22), counted from `boot`.
    static func date(startTicks ticks: UInt64, boot: Date) -> Date {
        boot.addingTimeInterval(Double(ticks) / ticksPerSecond)
    }

    /// The wall-clock time of a CLOCK_MONOTONIC reading (the process connector's timestamps).
    static func date(monotonicNanoseconds: UInt64) -> Date {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let nowNanoseconds = Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
        return Date().addingTimeInterval(-Double(nowNanoseconds - Int64(monotonicNanoseconds)) / 1e9)
    }
}
