import CProcessShims
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Two network namespaces joined by a veth pair, made for one test and removed with it: the
/// only place tests touch a firewall. `inside` is the endpoint (10.200.0.1, fd00:7e7e::1);
/// `outside` the rest of the world (10.200.0.2 and 10.200.0.3, fd00:7e7e::2).
package final class TestNetwork: @unchecked Sendable {
    package let inside: String
    package let outside: String
    package static let insideAddress = "10.200.0.1"
    package static let outsideAddress = "10.200.0.2"
    package static let otherOutsideAddress = "10.200.0.3"
    package static let outsideAddress6 = "fd00:7e7e::2"

    private static let counter = Counter()

    /// Fails when namespaces cannot be made here (not root, no `ip`).
    package init() throws {
        let tag = "\(getpid())-\(Self.counter.next())"
        inside = "tether-in-\(tag)"
        outside = "tether-out-\(tag)"
        let veth = "tv\(tag.replacingOccurrences(of: "-", with: "x"))".prefix(12)
        for name in [inside, outside] {
            let result = try runProgram("ip", ["netns", "add", name])
            guard result.status == 0 else {
                remove()
                throw TestNetworkError(message: "ip netns add \(name): \(result.output)")
            }
            // No duplicate address detection: a new link-local address is usable at once, not after a second.
            do {
                try Self.within(name) {
                    try "0\n".write(toFile: "/proc/sys/net/ipv6/conf/default/accept_dad", atomically: false, encoding: .utf8)
                }
            } catch {
                remove()
                throw error
            }
        }
        let steps: [[String]] = [
            ["-n", inside, "link", "add", "\(veth)a", "address", "02:7e:7e:00:00:01", "type", "veth",
             "peer", "name", "\(veth)b", "address", "02:7e:7e:00:00:02", "netns", outside],
            ["-n", inside, "link", "set", "lo", "up"], ["-n", outside, "link", "set", "lo", "up"],
            ["-n", inside, "addr", "add", "\(Self.insideAddress)/24", "dev", "\(veth)a"],
            ["-n", inside, "addr", "add", "fd00:7e7e::1/64", "dev", "\(veth)a", "nodad"],
            ["-n", outside, "addr", "add", "\(Self.outsideAddress)/24", "dev", "\(veth)b"],
            ["-n", outside, "addr", "add", "\(Self.otherOutsideAddress)/24", "dev", "\(veth)b"],
            ["-n", outside, "addr", "add", "\(Self.outsideAddress6)/64", "dev", "\(veth)b", "nodad"],
            ["-n", inside, "link", "set", "\(veth)a", "up"], ["-n", outside, "link", "set", "\(veth)b", "up"],
            // Neighbours known in advance: the first IPv6 packet waits a second for discovery otherwise.
            ["-n", inside, "neigh", "replace", Self.outsideAddress6, "lladdr", "02:7e:7e:00:00:02", "dev", "\(veth)a"],
            ["-n", outside, "neigh", "replace", "fd00:7e7e::1", "lladdr", "02:7e:7e:00:00:01", "dev", "\(veth)b"],
        ]
        for step in steps {
            let result = try runProgram("ip", step)
            guard result.status == 0 else {
                remove()
                throw TestNetworkError(message: "ip \(step.joined(separator: " ")): \(result.output)")
            }
        }
    }

    deinit { remove() }

    /// Names the endpoint's namespace resolves, as `ip netns exec` shows programs run there
    /// (/etc/netns/NAME/hosts over /etc/hosts): a file of this test's own, removed with it.
    package func setInsideHosts(_ text: String) throws {
        let folder = "/etc/netns/\(inside)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try text.write(toFile: folder + "/hosts", atomically: true, encoding: .utf8)
    }

    private func remove() {
        try? FileManager.default.removeItem(atPath: "/etc/netns/\(inside)")
        // Deleting a namespace deletes its end of the veth pair, and the pair with it.
        _ = try? runProgram("ip", ["netns", "del", inside])
        _ = try? runProgram("ip", ["netns", "del", outside])
    }

    /// The path libnftables and setns take.
    package static func path(_ name: String) -> String { "/run/netns/\(name)" }
    package var insidePath: String { Self.path(inside) }

    /// Runs `body` on a thread of its own inside the namespace `name` (sockets it makes stay there).
    package static func within<T>(_ name: String, _ body: @escaping () throws -> T) throws -> T {
        let box = ResultBox<T>()
        // The thread runs `body` while this one waits for it: never two at once.
        nonisolated(unsafe) let work = body
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            guard tether_enter_network_namespace(path(name)) == 0 else {
                box.result = .failure(TestNetworkError(message: "cannot enter \(name): \(String(cString: strerror(errno)))"))
                return
            }
            box.result = Result { try work() }
        }
        thread.start()
        done.wait()
        return try box.result!.get()
    }

    /// Whether a TCP connection from namespace `name` to `host`:`port` is accepted within `timeout`.
    package static func canConnect(from name: String, to host: String, port: Int, timeout: Double = 1) -> Bool {
        (try? within(name) { connects(to: host, port: port, timeout: timeout) }) ?? false
    }

    private static func connects(to host: String, port: Int, timeout: Double) -> Bool {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICHOST
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let entry = list else { return false }
        defer { freeaddrinfo(entry) }
        let fd = socket(entry.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        if connect(fd, entry.pointee.ai_addr, entry.pointee.ai_addrlen) == 0 { return true }
        guard errno == EINPROGRESS else { return false }
        var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        guard poll(&poller, 1, Int32(timeout * 1000)) == 1 else { return false }
        var failure: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &failure, &length)
        return failure == 0
    }
}

/// A TCP server in a namespace that accepts every connection and closes it.
package final class TestListener: @unchecked Sendable {
    private let fd: Int32
    package let port: Int

    /// Listens on `host` (an address of namespace `name`) at a free port.
    package init(in name: String, host: String) throws {
        let (fd, port) = try TestNetwork.within(name) { () throws -> (Int32, Int) in
            let family = host.contains(":") ? AF_INET6 : AF_INET
            let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var storage = sockaddr_storage()
            var length: socklen_t
            if family == AF_INET6 {
                length = socklen_t(MemoryLayout<sockaddr_in6>.size)
                withUnsafeMutableBytes(of: &storage) { raw in
                    let address = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in6.self)
                    address.pointee.sin6_family = sa_family_t(AF_INET6)
                    _ = inet_pton(AF_INET6, host, &address.pointee.sin6_addr)
                }
            } else {
                length = socklen_t(MemoryLayout<sockaddr_in>.size)
                withUnsafeMutableBytes(of: &storage) { raw in
                    let address = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self)
                    address.pointee.sin_family = sa_family_t(AF_INET)
                    _ = inet_pton(AF_INET, host, &address.pointee.sin_addr)
                }
            }
            let bound = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
            guard fd >= 0, bound == 0, listen(fd, 16) == 0 else {
                throw TestNetworkError(message: "cannot listen on \(host) in \(name): \(String(cString: strerror(errno)))")
            }
            _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
            let port = withUnsafeBytes(of: &storage) { raw in
                family == AF_INET6 ? raw.load(as: sockaddr_in6.self).sin6_port.bigEndian : raw.load(as: sockaddr_in.self).sin_port.bigEndian
            }
            return (fd, Int(port))
        }
        self.fd = fd
        self.port = port
        Thread { [fd] in
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { if errno == EINTR { continue } else { return } }
                close(client)
            }
        }.start()
    }

    deinit {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

package struct TestNetworkError: Error, CustomStringConvertible {
    package let message: String
    package var description: String { message }
}

private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, Error>?
}

private final class Counter: @unchecked Sendable {
    private var value = 0
    private let lock = NSLock()

    func next() -> Int { lock.lock(); defer { lock.unlock() }; value += 1; return value }
}
