internal import CSensorShims
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// TCP connections opened and closed and TCP sockets listening, as they happen, from a BPF
/// program on the kernel's inet_sock_set_state tracepoint (network.bpf.c), with UDP sockets
/// bound listed every `interval` through sock_diag. Where the program cannot load: every
/// socket listed every `interval` through the kernel's sock_diag netlink interface (binary,
/// TIME_WAIT left out by the kernel), or from /proc/net/{tcp,tcp6,udp,udp6} where that is
/// refused, and compared by socket inode, the owning process found through /proc/PID/fd when a
/// new socket appears; a connection that opens and closes between two lists is not seen.
final class NetworkSensor: @unchecked Sendable {
    private var thread: SensorThread?
    private(set) var status: SensorStatus
    private let counters = KernelCounters()

    init(buffer: SensorBuffer, interval: TimeInterval = 1, allowSockDiag: Bool = true, allowBPF: Bool = true, executables: ExecutableNames = ExecutableNames()) {
        let every = "every \(interval < 1 ? String(interval) : String(Int(interval))) s"
        var probe = [tether_socket](repeating: tether_socket(), count: 1)
        let diag = allowSockDiag ? tether_sock_diag(AF_INET, Int32(IPPROTO_TCP), &probe, 1) : -EPERM
        let readable = FileManager.default.isReadableFile(atPath: "/proc/net/tcp")
        var bpfNote: String?
        if allowSockDiag && allowBPF && ProcessSensor.inOwnPidNamespace {
            bpfNote = "the BPF program is not used in a pid namespace of its own (it reports the host's pids); "
        } else if allowSockDiag && allowBPF {
            switch BPFProbe.open(BPFObjects.network) {
            case .success(let tcp):
                let listing = diag >= 0 ? "sock_diag \(every)" : "/proc/net \(every)"
                // UDP peers: programs of their own, with a ring of their own; optional.
                let udpPeers: BPFProbe?
                var udpNote: String?
                switch BPFProbe.open(BPFObjects.udp) {
                case .success(let probe):
                    udpPeers = probe.note == nil ? probe : nil
                    udpNote = probe.note
                case .failure(let refusal):
                    udpPeers = nil
                    udpNote = refusal.reason
                }
                status = SensorStatus(sensor: .network,
                                      source: udpPeers != nil ? "eBPF (inet_sock_set_state; cgroup connect and sendmsg for UDP peers), \(listing) for UDP sockets bound"
                                                              : "eBPF (inet_sock_set_state) for TCP, \(listing) for UDP",
                                      running: true,
                                      note: (udpNote.map { "UDP peers are not seen as they happen: \($0); " } ?? "")
                                          + "UDP sockets bound and closed between two lists are not seen")
                let counters = self.counters
                thread = SensorThread(name: "sensor:network") { thread in
                    Self.readBPF(tcp, udpPeers: udpPeers, udp: SocketTable(sockDiag: diag >= 0, transports: [.udp]), every: interval, buffer: buffer,
                                 executables: executables, counters: counters, thread: thread)
                }
                return
            case .failure(let refusal):
                bpfNote = "the BPF program was not loaded (\(refusal.reason)); "
            }
        }
        let short = (bpfNote ?? "") + "connections shorter than the interval are not seen"
        if diag >= 0 {
            status = SensorStatus(sensor: .network, source: "sock_diag \(every)", running: true, note: short)
        } else if readable {
            status = SensorStatus(sensor: .network, source: "/proc/net \(every)", running: true,
                                  note: (allowSockDiag ? "sock_diag was refused (\(String(cString: strerror(-diag)))); " : "") + short)
        } else {
            status = SensorStatus(sensor: .network, source: "none", running: false,
                                  note: "neither sock_diag (\(String(cString: strerror(-diag)))) nor /proc/net/tcp can be read: no network events")
            return
        }
        let useDiag = diag >= 0
        thread = SensorThread(name: "sensor:network") { thread in
            var table = SocketTable(sockDiag: useDiag)
            table.refresh(report: nil)
            while !thread.isStopping {
                thread.sleep(interval)
                if thread.isStopping { break }
                table.refresh(report: buffer)
            }
        }
    }

    /// Records the BPF program delivered, and those its ring buffer had no room for.
    var kernelCounts: (reported: Int, overflows: Int) { counters.read() }

    /// False when its thread did not end in time.
    @discardableResult
    func stop() -> Bool {
        let ended = thread?.stop() ?? true
        thread = nil
        status = status.stopped
        return ended
    }

    private static func readBPF(_ probe: BPFProbe, udpPeers: BPFProbe?, udp: SocketTable, every interval: TimeInterval, buffer: SensorBuffer,
                                executables: ExecutableNames, counters: KernelCounters, thread: SensorThread) {
        var udp = udp
        udp.refresh(report: nil)
        seedListeners(probe, sockDiag: udp.sockDiag)
        let me = UInt32(getpid())
        var listed = Date()
        var reportedDrops = 0
        let take = { (record: UnsafeRawBufferPointer) in
            let kind = record.count >= MemoryLayout<tether_bpf_connection>.size ? record.loadUnaligned(as: UInt32.self) : 0
            guard kind == UInt32(TETHER_BPF_TCP) || kind == UInt32(TETHER_BPF_UDP) else { return }
            let event = record.loadUnaligned(as: tether_bpf_connection.self)
            guard event.pid != me, let connection = connection(event, executables: executables) else { return }
            buffer.push(SensorEvent(at: ProcFS.date(monotonicNanoseconds: event.time_ns), .network(connection)))
        }
        while !thread.isStopping {
            let now = Date()
            let count = max(0, probe.poll(milliseconds: 250, take)) + max(0, udpPeers?.poll(milliseconds: 0, take) ?? 0)
            let drops = probe.drops + (udpPeers?.drops ?? 0)
            counters.add(reported: count, overflows: drops - reportedDrops)
            reportedDrops = drops
            if now.timeIntervalSince(listed) >= interval {
                udp.refresh(report: buffer)
                listed = now
            }
            SensorThread.gather(received: count, of: Int.max)
        }
    }

    /// Tells the program who owns the TCP listeners that were there before it (found through
    /// /proc once), so that connections to sshd or a web server started earlier have an owner.
    /// This network namespace's only: another's are not listed here.
    private static func seedListeners(_ probe: BPFProbe, sockDiag: Bool) {
        var namespace = stat()
        guard stat("/proc/self/ns/net", &namespace) == 0 else { return }
        var table = SocketTable(sockDiag: sockDiag, transports: [.tcp])
        for (entry, owner) in table.listeners() {
            guard let owner else { continue }
            let family = UInt32(entry.local.address.contains(":") ? AF_INET6 : AF_INET)
            let key = tether_bpf_listener_key(ns: UInt32(truncatingIfNeeded: namespace.st_ino), family_port: family << 16 | UInt32(entry.local.port))
            _ = probe.update("listeners", key: key, value: tether_bpf_listener(pid: UInt32(bitPattern: owner.pid), uid: entry.uid, socket: 0))
        }
    }

    /// A connection record as the wire reports it; the owner's executable from the process
    /// sensor's records, else /proc.
    private static func connection(_ event: tether_bpf_connection, executables: ExecutableNames) -> NetworkConnection? {
        let family = Int32(event.family)
        func text(_ address: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) -> String? {
            var copy = address
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            guard withUnsafeBytes(of: &copy, { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) }) != nil else { return nil }
            return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        guard let local = text(event.local), let remote = text(event.remote) else { return nil }
        let action: NetworkConnection.Action
        switch Int(event.action) {
        case TETHER_BPF_OPENED: action = .opened
        case TETHER_BPF_CLOSED, TETHER_BPF_STOPPED_LISTENING: action = .closed
        case TETHER_BPF_LISTENING: action = .listening
        default: return nil
        }
        let pid = Int32(bitPattern: event.pid)
        let owner = pid > 0 ? ProcessRef(pid: pid, executable: executables.name(of: pid) ?? ProcFS.readLink("/proc/\(pid)/exe")) : nil
        let hasRemote = event.remote_port != 0
        return NetworkConnection(action: action, transport: event.kind == UInt32(TETHER_BPF_UDP) ? .udp : .tcp, local: SocketAddress(address: local, port: Int(event.local_port)),
                                 remote: hasRemote ? SocketAddress(address: remote, port: Int(event.remote_port)) : nil,
                                 uid: pid > 0 ? event.uid : nil, owner: owner)
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
    /// Lists through sock_diag (else /proc/net).
    let sockDiag: Bool
    /// The protocols listed.
    let transports: Set<NetworkConnection.Transport>
    private var diagBuffer = [tether_socket](repeating: tether_socket(), count: 4096)

    init(sockDiag: Bool, transports: Set<NetworkConnection.Transport> = [.tcp, .udp]) {
        self.sockDiag = sockDiag
        self.transports = transports
    }

    /// The TCP sockets listening now, with their owners (read once, as the baseline).
    mutating func listeners() -> [(entry: SocketEntry, owner: ProcessRef?)] {
        refresh(report: nil)
        return sockets.values.filter { $0.entry.isListening }.map { ($0.entry, $0.owner) }
    }

    /// Reads the tables again and reports the differences (none on the first read: the baseline).
    mutating func refresh(report buffer: SensorBuffer?) {
        var current: [UInt64: SocketEntry] = [:]
        for (file, transport, family) in [("tcp", NetworkConnection.Transport.tcp, AF_INET), ("tcp6", .tcp, AF_INET6),
                                          ("udp", .udp, AF_INET), ("udp6", .udp, AF_INET6)] where transports.contains(transport) {
            if sockDiag, let listed = list(transport: transport, family: family) {
                for entry in listed where entry.inode != 0 { current[entry.inode] = entry }
                continue
            }
            guard let bytes = ProcFS.read("/proc/net/" + file, limit: 16 << 20) else { continue }
            for entry in Self.parse(bytes, transport: transport, family: family) where entry.inode != 0 {
                current[entry.inode] = entry
            }
        }
        guard let buffer else {
            // The baseline's owners too, so that Tether's own connections are known when they close.
            let owners = Self.owners(of: Set(current.keys))
            sockets = Dictionary(uniqueKeysWithValues: current.map { ($0.key, ($0.value, owners[$0.key])) })
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

    /// One family and protocol through sock_diag; nil when that is refused (the table is read instead).
    private mutating func list(transport: NetworkConnection.Transport, family: Int32) -> [SocketEntry]? {
        var count = tether_sock_diag(family, Int32(transport == .tcp ? IPPROTO_TCP : IPPROTO_UDP), &diagBuffer, Int32(diagBuffer.count))
        if count == Int32(diagBuffer.count) {
            diagBuffer = [tether_socket](repeating: tether_socket(), count: diagBuffer.count * 4)
            count = tether_sock_diag(family, Int32(transport == .tcp ? IPPROTO_TCP : IPPROTO_UDP), &diagBuffer, Int32(diagBuffer.count))
        }
        guard count >= 0 else { return nil }
        return diagBuffer.prefix(Int(count)).compactMap { socket in
            var copy = socket
            func text(_ bytes: UnsafeRawPointer) -> String? {
                var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
                guard inet_ntop(family, bytes, &buffer, socklen_t(buffer.count)) != nil else { return nil }
                return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            }
            guard let local = withUnsafeBytes(of: &copy.local, { text($0.baseAddress!) }),
                  let remote = withUnsafeBytes(of: &copy.remote, { text($0.baseAddress!) }) else { return nil }
            return SocketEntry(transport: transport, local: SocketAddress(address: local, port: Int(socket.local_port)),
                               remote: SocketAddress(address: remote, port: Int(socket.remote_port)),
                               state: socket.state, uid: socket.uid, inode: socket.inode)
        }
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
            guard fields.count >= 10, let inode = number(fields[9], radix: 10), inode != 0,
                  let local = address(fields[1], family: family), let remote = address(fields[2], family: family),
                  let state = number(fields[3], radix: 16), let uid = number(fields[7], radix: 10) else { continue }
            entries.append(SocketEntry(transport: transport, local: local, remote: remote, state: UInt8(truncatingIfNeeded: state),
                                       uid: UInt32(truncatingIfNeeded: uid), inode: inode))
        }
        return entries
    }

    /// A number in ASCII digits, without making a string of it.
    static func number(_ digits: ArraySlice<UInt8>, radix: UInt64) -> UInt64? {
        guard !digits.isEmpty, digits.count <= 20 else { return nil }
        var value: UInt64 = 0
        for byte in digits {
            let digit: UInt64
            switch byte {
            case 48...57: digit = UInt64(byte - 48)
            case 65...70 where radix == 16: digit = UInt64(byte - 55)
            case 97...102 where radix == 16: digit = UInt64(byte - 87)
            default: return nil
            }
            value = value &* radix &+ digit
        }
        return value
    }

    /// `0100007F:1F90` → 127.0.0.1:8080. The address is in 32-bit words in the kernel's byte
    /// order, the port in hex.
    static func address(_ field: ArraySlice<UInt8>, family: Int32) -> SocketAddress? {
        guard let colon = field.firstIndex(of: UInt8(ascii: ":")), let port = number(field[(colon + 1)...], radix: 16) else { return nil }
        let hex = Array(field[..<colon])
        let size = family == AF_INET ? 4 : 16
        guard hex.count == size * 2 else { return nil }
        var raw = [UInt8](repeating: 0, count: size)
        for word in 0..<(size / 4) {
            guard let parsed = number(hex[(word * 8)..<(word * 8 + 8)], radix: 16) else { return nil }
            let value = UInt32(truncatingIfNeeded: parsed)
            // The kernel prints each word of the address as this host holds it in memory: its bytes,
            // in the host's order, are the address in network order.
            withUnsafeBytes(of: value) { bytes in
                for index in 0..<4 { raw[word * 4 + index] = bytes[index] }
            }
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(family, raw, &text, socklen_t(text.count)) != nil else { return nil }
        return SocketAddress(address: String(decoding: text.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self), port: Int(port))
    }
}
