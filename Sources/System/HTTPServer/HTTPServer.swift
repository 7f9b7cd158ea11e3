import FoundationEssentials
#if canImport(Glibc)
import Glibc
import Primitives
#endif

/// A request as the server read it.
package struct ServerRequest: Sendable {
    package let method: String
    /// The path without the query (`/kata/scanner/v1/sensors/s1/scans`).
    package let path: String
    package let query: [String: String]
    /// Header names in lower case.
    package let headers: [String: String]
    package let body: [UInt8]
    /// The client certificate's subject, when the client presented one.
    package let clientSubject: String?

    package var text: String { String(decoding: body, as: UTF8.self) }
}

/// A response to send.
package struct ServerResponse: Sendable {
    package var status: Int
    package var contentType: String
    package var body: [UInt8]
    package var headers: [String: String]

    package init(status: Int, contentType: String = "application/json", body: [UInt8] = [], headers: [String: String] = [:]) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }
}

/// Why the server could not start.
package struct ServerError: Error, CustomStringConvertible, Sendable {
    package let description: String

    package init(description: String) {
        self.description = description
    }
}

/// What a server accepts from its clients and how long it waits for them. A request beyond a
/// limit is answered with its status (400, 405, 408, 413, 431) without reading the rest, and
/// the connection is closed.
package struct ServerLimits: Sendable {
    /// The methods served; any other gets 405 before its body is read. nil serves every method.
    package var methods: Set<String>?
    /// The largest request body; a larger declared one gets 413, unread.
    package var maximumBody: Int
    /// The largest request head (request line and headers); a larger one gets 431.
    package var maximumHead: Int
    /// How long a client may take to send one whole request once its first byte arrived (408 after).
    package var requestDeadline: Double
    /// How long a connection may wait for its next request, or between two reads.
    package var idleTimeout: Double
    /// Connections open at once. At the limit a new connection closes the oldest one, so that
    /// clients that hold connections open cannot keep a new one out.
    package var maximumConnections: Int

    package init(methods: Set<String>?, maximumBody: Int, maximumHead: Int, requestDeadline: Double, idleTimeout: Double,
                maximumConnections: Int) {
        self.methods = methods
        self.maximumBody = maximumBody
        self.maximumHead = maximumHead
        self.requestDeadline = requestDeadline
        self.idleTimeout = idleTimeout
        self.maximumConnections = maximumConnections
    }

    /// For an API: every method, bodies up to 256 MiB, ten minutes per request.
    package static let standard = ServerLimits(methods: nil, maximumBody: 256 * 1024 * 1024, maximumHead: 64 * 1024,
                                              requestDeadline: 600, idleTimeout: 30, maximumConnections: 256)
    /// For health probes and metrics scrapes: GET and HEAD only, no bodies, 8 KiB heads, five
    /// seconds per request, 64 connections.
    package static let probes = ServerLimits(methods: ["GET", "HEAD"], maximumBody: 0, maximumHead: 8 * 1024,
                                            requestDeadline: 5, idleTimeout: 5, maximumConnections: 64)
}

/// A small HTTP/1.1 server on 127.0.0.1 (or ::1): a thread per connection, keep-alive,
/// Content-Length and chunked bodies, within `ServerLimits`. In the clear for loopback endpoints (the controller's /metrics);
/// the local platform and tests put TLS under it (PlatformTLS), so no TLS server is part of
/// the shipped `tether`. Not for the open internet.
package final class HTTPServer: @unchecked Sendable {
    /// The port it listens on.
    package let port: Int
    private let state: ServerState

    /// Starts a server at once. `port` 0 lets the kernel choose. `upgrade`, when given, turns
    /// each accepted socket into the connection requests are read from (a TLS session, say);
    /// nil from it closes the socket.
    package init(host: String = "127.0.0.1", port: Int = 0, limits: ServerLimits = .standard,
                upgrade: (@Sendable (Int32) -> ServerConnection?)? = nil,
                handler: @escaping @Sendable (ServerRequest) -> ServerResponse) throws {
        // A client that hangs up mid-response must not kill the process.
        signal(SIGPIPE, SIG_IGN)
        let (listener, boundPort) = try Self.listen(host: host, port: port)
        self.port = boundPort
        state = ServerState(limits: limits, upgrade: upgrade, listener: listener, handler: handler)
        let state = self.state
        Threads.start(name: "http:accept") { state.acceptLoop() }
    }

    deinit {
        stop()
    }

    /// Stops accepting and closes every open connection.
    package func stop() {
        state.stop()
    }

    private static func listen(host: String, port: Int) throws -> (Int32, Int) {
        let v6 = host.contains(":")
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var result: Int32
        if v6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = UInt16(port).bigEndian
            guard inet_pton(AF_INET6, host, &address.sin6_addr) == 1 else {
                close(fd)
                throw ServerError(description: "'\(host)' is not an IPv6 address")
            }
            result = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        } else {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(port).bigEndian
            guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
                close(fd)
                throw ServerError(description: "'\(host)' is not an IPv4 address")
            }
            result = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        guard result == 0, Glibc.listen(fd, 64) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw ServerError(description: "cannot listen on \(host):\(port): \(reason)")
        }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        let bound: UInt16 = withUnsafePointer(to: &storage) { pointer in
            v6 ? pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_port }
               : pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_port }
        }
        return (fd, Int(UInt16(bigEndian: bound)))
    }
}

/// What the accept loop and the connection threads share.
private final class ServerState: @unchecked Sendable {
    let limits: ServerLimits
    /// Makes the connection of an accepted socket; nil for plain HTTP.
    let upgrade: (@Sendable (Int32) -> ServerConnection?)?
    let listener: Int32
    let handler: @Sendable (ServerRequest) -> ServerResponse
    private let lock = Lock()
    private var stopped = false
    /// Open connections, by descriptor, with the order they were accepted in.
    private var connections: [Int32: UInt64] = [:]
    /// Connections shut down to make room, whose threads have not ended yet.
    private var closing = Set<Int32>()
    private var accepted: UInt64 = 0

    init(limits: ServerLimits, upgrade: (@Sendable (Int32) -> ServerConnection?)?, listener: Int32,
         handler: @escaping @Sendable (ServerRequest) -> ServerResponse) {
        self.limits = limits
        self.upgrade = upgrade
        self.listener = listener
        self.handler = handler
    }

    func stop() {
        lock.withLock {
            if stopped { return }
            stopped = true
            // Wake the accept loop; it closes the socket itself, so its descriptor cannot be
            // reused by another socket while it still waits on it. Connections are shut down
            // under the lock: a thread removes its descriptor under it before closing it.
            shutdown(listener, Int32(SHUT_RDWR))
            for fd in connections.keys { shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    func acceptLoop() {
        defer { close(listener) }
        while true {
            let client = accept(listener, nil, nil)
            if client >= 0 { _ = fcntl(client, F_SETFD, FD_CLOEXEC) }  // accept4 needs _GNU_SOURCE
            if client < 0 {
                if lock.withLock({ stopped }) { break }
                usleep(10_000)  // out of descriptors, say: do not spin
                continue
            }
            let admitted = lock.withLock { () -> Bool in
                if stopped { return false }
                // At the limit the oldest connection makes room: its thread sees the shutdown and
                // ends. Clients that hold many connections open lose their own oldest first.
                if connections.count - closing.count >= limits.maximumConnections,
                   let oldest = connections.filter({ !closing.contains($0.key) }).min(by: { $0.value < $1.value })?.key {
                    closing.insert(oldest)
                    shutdown(oldest, Int32(SHUT_RDWR))
                }
                accepted += 1
                connections[client] = accepted
                return true
            }
            guard admitted else { close(client); break }
            Threads.start(name: "http:client") { [self] in serve(client) }
        }
    }

    private func serve(_ fd: Int32) {
        defer {
            lock.withLock {
                _ = connections.removeValue(forKey: fd)
                _ = closing.remove(fd)
            }
            close(fd)
        }
        Self.setTimeout(fd, SO_RCVTIMEO, limits.idleTimeout)
        Self.setTimeout(fd, SO_SNDTIMEO, limits.idleTimeout)
        // Small TLS records (session tickets, short answers) must not wait for Nagle's algorithm.
        var noDelay: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, socklen_t(MemoryLayout<Int32>.size))
        let connection: ServerConnection
        if let upgrade {
            guard let upgraded = upgrade(fd) else { return }
            connection = upgraded
        } else {
            connection = PlainConnection(fd: fd)
        }
        var reader = RequestReader(limits: limits, connection: connection) { Self.setTimeout(fd, SO_RCVTIMEO, $0) }
        while true {
            switch reader.next() {
            case .closed:
                return
            case .refused(let status, let message, let isHead):
                _ = write(connection, ServerResponse(status: status, contentType: "text/plain", body: Array((message + "\n").utf8),
                                                     headers: status == 405 ? ["Allow": (limits.methods ?? []).sorted().joined(separator: ", ")] : [:]),
                          keepAlive: false, head: isHead)
                drain(connection, fd: fd)
                return
            case .request(let request, let keepAlive):
                guard write(connection, handler(request), keepAlive: keepAlive, head: request.method == "HEAD"), keepAlive else { return }
            }
        }
    }

    static func setTimeout(_ fd: Int32, _ option: Int32, _ seconds: Double) {
        let bounded = max(seconds, 0.001)
        var value = timeval(tv_sec: Int(bounded), tv_usec: Int((bounded * 1_000_000).truncatingRemainder(dividingBy: 1_000_000)))
        setsockopt(fd, SOL_SOCKET, option, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// After a refusal: stops sending, then reads (and drops) what the client is still sending
    /// for a moment, so that closing with unread data does not reset the connection before the
    /// client has read the answer.
    private func drain(_ connection: ServerConnection, fd: Int32) {
        shutdown(fd, Int32(SHUT_WR))
        Self.setTimeout(fd, SO_RCVTIMEO, 0.2)
        let until = Date().addingTimeInterval(0.5)
        var discarded = 0
        var scratch: [UInt8] = []
        while discarded < 1024 * 1024, Date() < until, connection.read(into: &scratch) {
            discarded += scratch.count
            scratch.removeAll(keepingCapacity: true)
        }
    }

    /// Sends a response; for a HEAD request (`head`) only its head, with the body's length.
    private func write(_ connection: ServerConnection, _ response: ServerResponse, keepAlive: Bool, head isHead: Bool) -> Bool {
        var head = "HTTP/1.1 \(response.status) \(reason(response.status))\r\nContent-Type: \(response.contentType)\r\nContent-Length: \(response.body.count)\r\n"
        head += "Connection: \(keepAlive ? "keep-alive" : "close")\r\n"
        for (name, value) in response.headers { head += "\(name): \(value)\r\n" }
        head += "\r\n"
        return connection.write(Array(head.utf8) + (isHead ? [] : response.body))
    }

    private func reason(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 201: return "Created"
        case 204: return "No Content"
        case 400: return "Bad Request"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 413: return "Content Too Large"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 503: return "Service Unavailable"
        default: return "Status"
        }
    }
}

/// One accepted connection, in the clear or over TLS.
package protocol ServerConnection {
    /// The client certificate's subject, when the client presented one.
    var clientSubject: String? { get }
    /// Appends what arrives; false at the end of the stream or on an error.
    func read(into buffer: inout [UInt8]) -> Bool
    func write(_ bytes: [UInt8]) -> Bool
}

private struct PlainConnection: ServerConnection {
    let fd: Int32
    var clientSubject: String? { nil }

    func read(into buffer: inout [UInt8]) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let count = recv(fd, &chunk, chunk.count, 0)
        guard count > 0 else { return false }
        buffer.append(contentsOf: chunk[0..<count])
        return true
    }

    func write(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }
}
