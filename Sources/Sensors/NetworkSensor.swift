import Foundation

/// TCP connections opened and closed, TCP sockets listening and UDP sockets bound, read from
/// /proc/net/{tcp,tcp6,udp,udp6} every `interval` and compared by socket inode; the owning
/// process is found through /proc/PID/fd when a new socket appears. A connection that opens and
/// closes between two reads is not seen.
final class NetworkSensor: @unchecked Sendable {
    private var thread: SensorThread?
    private(set) var status: SensorStatus

    init(buffer: SensorBuffer, interval: TimeInterval = 1) {
        let readable = FileManager.default.isReadableFile(atPath: "/proc/net/tcp")
        status = SensorStatus(sensor: .network, source: "/proc/net every \(interval < 1 ? String(interval) : String(Int(interval))) s", running: readable,
                              note: readable ? "connections shorter than the interval are not seen" : "/proc/net/tcp cannot be read: no network events")
        guard readable else { return }
        thread = SensorThread(name: "tether network sensor") { thread in
            var table = SocketTable()
            table.refresh(report: nil)
            while !thread.isStopping {
                thread.sleep(interval)
                if thread.isStopping { break }
                table.refresh(report: buffer)
            }
        }
    }

    func stop() {
        thread?.stop()
        thread = nil
        status = status.stopped
    }
}

/// One socket as /proc/net lists it.
struct SocketEntry: Equatable {
    let transport: NetworkConnection.Transport
    let local: SocketAddress
    let remote: SocketAddress
    /// The TCP state (`01` established … `0A` listen); UDP's `07` is unconnected.
    let state: UInt8
    let uid: UInt32
    let inode: UInt64

    var isListening: Bool { transport == .tcp && state == 0x0A }
}

/// The sockets seen last, with their owners, and what changed since.
struct SocketTable {
    private var sockets: [UInt64: (entry: SocketEntry, owner: ProcessRef?)] = [:]
    private let me = getpid()

    /// Reads the tables again and reports the differences (none on the first read: the baseline).
    mutating func refresh(report buffer: SensorBuffer?) {
        var current: [UInt64: SocketEntry] = [:]
        for (file, transport, family) in [("tcp", NetworkConnection.Transport.tcp, AF_INET), ("tcp6", .tcp, AF_INET6),
                                          ("udp", .udp, AF_INET), ("udp6", .udp, AF_INET6)] {
            guard let bytes = ProcFS.read("/proc/net/" + file, limit: 16 << 20) else { continue }
            for entry in Self.parse(bytes, transport: transport, family: family) where entry.inode != 0 {
                current[entry.inode] = entry
            }
        }
        guard let buffer else {
            sockets = current.mapValues { ($0, nil) }
            return
        }
        let now = Date()
        let opened = current.keys.filter { sockets[$0] == nil }
        let owners = opened.isEmpty ? [:] : Self.owners(of: Set(opened))
        for inode in opened.sorted() {
            let entry = current[inode]!
            let owner = owners[inode]
            sockets[inode] = (entry, owner)
            if owner?.pid == me { continue }
            let action: NetworkConnection.Action = entry.transport == .udp ? .bound : (entry.isListening ? .listening : .opened)
            buffer.push(SensorEvent(at: now, .network(Self.connection(entry, action: action, owner: owner))))
        }
        for (inode, known) in sockets where current[inode] == nil {
            sockets[inode] = nil
            if known.owner?.pid == me { continue }
            buffer.push(SensorEvent(at: now, .network(Self.connection(known.entry, action: .closed, owner: known.owner))))
        }
    }

    private static func connection(_ entry: SocketEntry, action: NetworkConnection.Action, owner: ProcessRef?) -> NetworkConnection {
        let hasRemote = entry.remote.port != 0
        return NetworkConnection(action: action, transport: entry.transport, local: entry.local, remote: hasRemote ? entry.remote : nil,
                                 uid: entry.uid, owner: owner)
    }

    /// The processes holding these socket inodes, found by reading every process's descriptors
    /// (stopping once all are found).
    static func owners(of inodes: Set<UInt64>) -> [UInt64: ProcessRef] {
        var found: [UInt64: ProcessRef] = [:]
        for pid in ProcFS.numericEntries("/proc") {
            let fdDirectory = "/proc/\(pid)/fd/"
            for fd in ProcFS.numericEntries(fdDirectory) {
                guard let target = ProcFS.readLink(fdDirectory + String(fd)), target.hasPrefix("socket:["),
                      let inode = UInt64(target.dropFirst(8).dropLast()), inodes.contains(inode), found[inode] == nil else { continue }
                found[inode] = ProcessRef(pid: pid, executable: ProcFS.readLink("/proc/\(pid)/exe"))
            }
            if found.count == inodes.count { break }
        }
        return found
    }

    /// The lines of one /proc/net table.
    static func parse(_ bytes: [UInt8], transport: NetworkConnection.Transport, family: Int32) -> [SocketEntry] {
        var entries: [SocketEntry] = []
        for line in bytes.split(separator: UInt8(ascii: "\n")).dropFirst() {
            let fields = line.split(separator: UInt8(ascii: " "))
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            guard fields.count >= 10, let local = address(fields[1], family: family), let remote = address(fields[2], family: family),
                  let state = UInt8(String(decoding: fields[3], as: UTF8.self), radix: 16),
                  let uid = UInt32(String(decoding: fields[7], as: UTF8.self)),
                  let inode = UInt64(String(decoding: fields[9], as: UTF8.self)) else { continue }
            entries.append(SocketEntry(transport: transport, local: local, remote: remote, state: state, uid: uid, inode: inode))
        }
        return entries
    }

    /// `0100007F:1F90` → 127.0.0.1:8080. The address is in 32-bit words in the kernel's byte
    /// order, the port in hex.
    static func address(_ field: ArraySlice<UInt8>, family: Int32) -> SocketAddress? {
        guard let colon = field.firstIndex(of: UInt8(ascii: ":")),
              let port = Int(String(decoding: field[(colon + 1)...], as: UTF8.self), radix: 16) else { return nil }
        let hex = Array(field[..<colon])
        let size = family == AF_INET ? 4 : 16
        guard hex.count == size * 2 else { return nil }
        var raw = [UInt8](repeating: 0, count: size)
        for word in 0..<(size / 4) {
            guard let value = UInt32(String(decoding: hex[(word * 8)..<(word * 8 + 8)], as: UTF8.self), radix: 16) else { return nil }
            // The kernel prints each word of the address as this host holds it in memory: its bytes,
            // in the host's order, are the address in network order.
            withUnsafeBytes(of: value) { bytes in
                for index in 0..<4 { raw[word * 4 + index] = bytes[index] }
            }
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(family, raw, &text, socklen_t(text.count)) != nil else { return nil }
        return SocketAddress(address: String(decoding: text.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self), port: port)
    }
}
