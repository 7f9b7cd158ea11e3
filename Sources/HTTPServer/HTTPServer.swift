import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A request as the server read it.
public struct ServerRequest: Sendable {
    public let method: String
    /// The path without the query (`/kata/scanner/v1/sensors/s1/scans`).
    public let path: String
    public let query: [String: String]
    /// Header names in lower case.
    public let headers: [String: String]
    public let body: [UInt8]
    /// The client certificate's subject, when the client presented one.
    public let clientSubject: String?

    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// A response to send.
public struct ServerResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]
    public var headers: [String: String]

    public init(status: Int, contentType: String = "application/json", body: [UInt8] = [], headers: [String: String] = [:]) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }
}

/// Why the server could not start.
public struct ServerError: Error, CustomStringConvertible, Sendable {
    public let description: String

    public init(description: String) {
        self.description = description
    }
}

/// What a server accepts from its clients and how long it waits for them. A request beyond a
/// limit is answered with its status (400, 405, 408, 413, 431) without reading the rest, and
/// the connection is closed.
public struct ServerLimits: Sendable {
    /// The methods served; any other gets 405 before its body is read. nil serves every method.
    public var methods: Set<String>?
    /// The largest request body; a larger declared one gets 413, unread.
    public var maximumBody: Int
    /// The largest request head (request line and headers); a larger one gets 431.
    public var maximumHead: Int
    /// How long a client may take to send one whole request once its first byte arrived (408 after).
    public var requestDeadline: Double
    /// How long a connection may wait for its next request, or between two reads.
    public var idleTimeout: Double
    /// Connections open at once. At the limit a new connection closes the oldest one, so that
    /// clients that hold connections open cannot keep a new one out.
    public var maximumConnections: Int

    public init(methods: Set<String>?, maximumBody: Int, maximumHead: Int, requestDeadline: Double, idleTimeout: Double,
                maximumConnections: Int) {
        self.methods = methods
        self.maximumBody = maximumBody
        self.maximumHead = maximumHead
        self.requestDeadline = requestDeadline
        self.idleTimeout = idleTimeout
        self.maximumConnections = maximumConnections
    }

    /// For an API: every method, bodies up to 256 MiB, ten minutes per request.
    public static let standard = ServerLimits(methods: nil, maximumBody: 256 * 1024 * 1024, maximumHead: 64 * 1024,
                                              requestDeadline: 600, idleTimeout: 30, maximumConnections: 256)
    /// For health probes and metrics scrapes: GET and HEAD only, no bodies, 8 KiB heads, five
    /// seconds per request, 64 connections.
    public static let probes = ServerLimits(methods: ["GET", "HEAD"], maximumBody: 0, maximumHead: 8 * 1024,
                                            requestDeadline: 5, idleTimeout: 5, maximumConnections: 64)
}

/// A small HTTP/1.1 server on 127.0.0.1 (or ::1): a thread per connection, keep-alive,
/// Content-Length and chunked bodies, within `ServerLimits`. In the clear for loopback endpoints (the controller's /metrics);
/// the local platform and tests put TLS under it (PlatformTLS), so no TLS server is part of
/// the shipped `tether`. Not for the open internet.
public final class HTTPServer: @unchecked Sendable {
    /// The port it listens on.
    public let port: Int
    private let state: ServerState

    /// Starts a server at once. `port` 0 lets the kernel choose. `upgrade`, when given, turns
    /// each accepted socket into the connection requests are read from (a TLS session, say);
    /// nil from it closes the socket.
    public init(host: String = "127.0.0.1", port: Int = 0, limits: ServerLimits = .standard,
                upgrade: (@Sendable (Int32) -> ServerConnection?)? = nil,
                handler: @escaping @Sendable (ServerRequest) -> ServerResponse) throws {
        // A client that hangs up mid-response must not kill the process.
        signal(SIGPIPE, SIG_IGN)
        let (listener, boundPort) = try Self.listen(host: host, port: port)
        self.port = boundPort
        state = ServerState(limits: limits, upgrade: upgrade, listener: listener, handler: handler)
        let state = self.state
        Thread { state.acceptLoop() }.start()
    }

    deinit {
        stop()
    }

    /// Stops accepting and closes every open connection.
    public func stop() {
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
    private let lock = NSLock()
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
        let open: [Int32] = lock.withLock {
            if stopped { return [] }
            stopped = true
            return Array(connections.keys)
        }
        // Wake the accept loop; it closes the socket itself, so its descriptor cannot be
        // reused by another socket while it still waits on it.
        shutdown(listener, Int32(SHUT_RDWR))
        for fd in open { shutdown(fd, Int32(SHUT_RDWR)) }
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
            Thread { [self] in serve(client) }.start()
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
        var timeout = timeval(tv_sec: Int(limits.idleTimeout), tv_usec: Int((limits.idleTimeout * 1_000_000).truncatingRemainder(dividingBy: 1_000_000)))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
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
        var buffer: [UInt8] = []
        while true {
            switch readRequest(connection, buffer: &buffer) {
            case .closed:
                return
            case .refused(let status, let message):
                _ = write(connection, ServerResponse(status: status, contentType: "text/plain", body: Array((message + "\n").utf8),
                                                     headers: status == 405 ? ["Allow": (limits.methods ?? []).sorted().joined(separator: ", ")] : [:]),
                          keepAlive: false, head: false)
                return
            case .request(let request):
                let keepAlive = request.headers["connection"]?.lowercased() != "close"
                guard write(connection, handler(request), keepAlive: keepAlive, head: request.method == "HEAD"), keepAlive else { return }
            }
        }
    }

    /// A request, a refusal to answer before closing, or the end of the connection.
    private enum Reading {
        case request(ServerRequest)
        case refused(status: Int, message: String)
        case closed
    }

    private func readRequest(_ connection: ServerConnection, buffer: inout [UInt8]) -> Reading {
        let separator: [UInt8] = [13, 10, 13, 10]
        var deadline = buffer.isEmpty ? nil : Date().addingTimeInterval(limits.requestDeadline)
        /// Reads more, within the request's deadline (which starts at its first byte).
        func readMore() -> Reading? {
            guard connection.read(into: &buffer) else { return .closed }
            if deadline == nil { deadline = Date().addingTimeInterval(limits.requestDeadline) }
            if let deadline, Date() > deadline { return .refused(status: 408, message: "the request took longer than \(Int(limits.requestDeadline)) s") }
            return nil
        }
        var headerEnd: Int?
        while headerEnd == nil {
            headerEnd = buffer.firstRange(of: separator)?.lowerBound
            if headerEnd != nil { break }
            if buffer.count > limits.maximumHead { return .refused(status: 431, message: "the request head is over \(limits.maximumHead) bytes") }
            if let stop = readMore() { return stop }
        }
        guard headerEnd! <= limits.maximumHead else { return .refused(status: 431, message: "the request head is over \(limits.maximumHead) bytes") }
        let head = String(decoding: buffer[..<headerEnd!], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let requestLine = lines.removeFirst().split(separator: " ", omittingEmptySubsequences: false)
        guard requestLine.count == 3, !requestLine[0].isEmpty, requestLine[0].allSatisfy({ $0.isASCII && ($0.isLetter || $0 == "-") }),
              requestLine[1].hasPrefix("/"), requestLine[2].hasPrefix("HTTP/1.") else {
            return .refused(status: 400, message: "not an HTTP/1.1 request line")
        }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                return .refused(status: 400, message: "a header line without a name and a colon")
            }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let method = String(requestLine[0])
        if let methods = limits.methods, !methods.contains(method) {
            return .refused(status: 405, message: "\(method) is not served here; use \(methods.sorted().joined(separator: " or "))")
        }
        let chunked = headers["transfer-encoding"]?.lowercased().contains("chunked") == true
        guard let length = Int(headers["content-length"] ?? "0"), length >= 0 else {
            return .refused(status: 400, message: "Content-Length is not a number")
        }
        if length > limits.maximumBody || (chunked && limits.maximumBody == 0) {
            return .refused(status: 413, message: limits.maximumBody == 0 ? "requests here have no body" : "the body is over \(limits.maximumBody) bytes")
        }
        var bodyStart = headerEnd! + 4
        let body: [UInt8]
        if chunked {
            // Chunked request bodies (libgit2 sends them): size line, data, CRLF … a zero-size chunk.
            var decoded: [UInt8] = []
            while true {
                var lineEnd = buffer[bodyStart...].firstRange(of: [13, 10])
                while lineEnd == nil {
                    if let stop = readMore() { return stop }
                    lineEnd = buffer[bodyStart...].firstRange(of: [13, 10])
                }
                let sizeText = String(decoding: buffer[bodyStart..<lineEnd!.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
                guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0 else {
                    return .refused(status: 400, message: "a chunk size is not a hexadecimal number")
                }
                guard size <= limits.maximumBody - decoded.count else {
                    return .refused(status: 413, message: "the body is over \(limits.maximumBody) bytes")
                }
                let dataStart = lineEnd!.upperBound
                if size == 0 {
                    var trailerEnd = buffer[dataStart...].firstRange(of: [13, 10])
                    while trailerEnd == nil {
                        if let stop = readMore() { return stop }
                        trailerEnd = buffer[dataStart...].firstRange(of: [13, 10])
                    }
                    bodyStart = trailerEnd!.upperBound
                    break
                }
                while buffer.count < dataStart + size + 2 {
                    if let stop = readMore() { return stop }
                }
                decoded += buffer[dataStart..<(dataStart + size)]
                bodyStart = dataStart + size + 2
            }
            body = decoded
            buffer.removeFirst(bodyStart)
        } else {
            while buffer.count < bodyStart + length {
                if let stop = readMore() { return stop }
            }
            body = Array(buffer[bodyStart..<(bodyStart + length)])
            buffer.removeFirst(bodyStart + length)
        }
        let target = String(requestLine[1])
        let parts = target.split(separator: "?", maxSplits: 1)
        var query: [String: String] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let key = String(kv[0]).removingPercentEncoding ?? String(kv[0])
                let value = kv.count == 2 ? (String(kv[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(kv[1])) : ""
                query[key] = value
            }
        }
        return .request(ServerRequest(method: method, path: String(parts.first ?? ""), query: query,
                                      headers: headers, body: body, clientSubject: connection.clientSubject))
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
public protocol ServerConnection {
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
