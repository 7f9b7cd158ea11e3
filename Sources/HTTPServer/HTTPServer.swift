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

/// A small HTTP/1.1 server on 127.0.0.1 (or ::1): a thread per connection, keep-alive,
/// Content-Length bodies. In the clear for loopback endpoints (the controller's /metrics);
/// the local platform and tests put TLS under it (PlatformTLS), so no TLS server is part of
/// the shipped `tether`. Not for the open internet.
public final class HTTPServer: @unchecked Sendable {
    /// The port it listens on.
    public let port: Int
    private let state: ServerState

    /// Starts a server at once. `port` 0 lets the kernel choose. `upgrade`, when given, turns
    /// each accepted socket into the connection requests are read from (a TLS session, say);
    /// nil from it closes the socket.
    public init(host: String = "127.0.0.1", port: Int = 0, upgrade: (@Sendable (Int32) -> ServerConnection?)? = nil,
                handler: @escaping @Sendable (ServerRequest) -> ServerResponse) throws {
        // A client that hangs up mid-response must not kill the process.
        signal(SIGPIPE, SIG_IGN)
        let (listener, boundPort) = try Self.listen(host: host, port: port)
        self.port = boundPort
        state = ServerState(upgrade: upgrade, listener: listener, handler: handler)
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
    /// Makes the connection of an accepted socket; nil for plain HTTP.
    let upgrade: (@Sendable (Int32) -> ServerConnection?)?
    let listener: Int32
    let handler: @Sendable (ServerRequest) -> ServerResponse
    private let lock = NSLock()
    private var stopped = false
    private var connections = Set<Int32>()

    static let maximumConnections = 256

    init(upgrade: (@Sendable (Int32) -> ServerConnection?)?, listener: Int32, handler: @escaping @Sendable (ServerRequest) -> ServerResponse) {
        self.upgrade = upgrade
        self.listener = listener
        self.handler = handler
    }

    func stop() {
        let open: Set<Int32> = lock.withLock {
            if stopped { return [] }
            stopped = true
            return connections
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
            let accepted = lock.withLock { () -> Bool? in
                if stopped { return nil }
                // A bounded number of connections at once; beyond it a client is closed at once.
                guard connections.count < Self.maximumConnections else { return false }
                connections.insert(client)
                return true
            }
            guard let accepted else { close(client); break }
            guard accepted else { close(client); continue }
            Thread { [self] in serve(client) }.start()
        }
    }

    private func serve(_ fd: Int32) {
        defer {
            lock.withLock { _ = connections.remove(fd) }
            close(fd)
        }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
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
        while let request = readRequest(connection, buffer: &buffer) {
            let response = handler(request)
            guard write(connection, response, keepAlive: request.headers["connection"]?.lowercased() != "close") else { return }
            if request.headers["connection"]?.lowercased() == "close" { return }
        }
    }

    private func readRequest(_ connection: ServerConnection, buffer: inout [UInt8]) -> ServerRequest? {
        let separator: [UInt8] = [13, 10, 13, 10]
        var headerEnd: Int?
        while headerEnd == nil {
            headerEnd = buffer.firstRange(of: separator)?.lowerBound
            if headerEnd != nil { break }
            guard buffer.count < 64 * 1024, connection.read(into: &buffer) else { return nil }
        }
        let head = String(decoding: buffer[..<headerEnd!], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count >= 2 else { return nil }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var bodyStart = headerEnd! + 4
        let body: [UInt8]
        if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
            // Chunked request bodies (libgit2 sends them): size line, data, CRLF … a zero-size chunk.
            var decoded: [UInt8] = []
            while true {
                var lineEnd = buffer[bodyStart...].firstRange(of: [13, 10])
                while lineEnd == nil {
                    guard connection.read(into: &buffer) else { return nil }
                    lineEnd = buffer[bodyStart...].firstRange(of: [13, 10])
                }
                let sizeText = String(decoding: buffer[bodyStart..<lineEnd!.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
                guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0,
                      size <= 256 * 1024 * 1024 - decoded.count else { return nil }
                let dataStart = lineEnd!.upperBound
                if size == 0 {
                    var trailerEnd = buffer[dataStart...].firstRange(of: [13, 10])
                    while trailerEnd == nil {
                        guard connection.read(into: &buffer) else { return nil }
                        trailerEnd = buffer[dataStart...].firstRange(of: [13, 10])
                    }
                    bodyStart = trailerEnd!.upperBound
                    break
                }
                while buffer.count < dataStart + size + 2 {
                    guard connection.read(into: &buffer) else { return nil }
                }
                decoded += buffer[dataStart..<(dataStart + size)]
                bodyStart = dataStart + size + 2
            }
            body = decoded
            buffer.removeFirst(bodyStart)
        } else {
            guard let length = Int(headers["content-length"] ?? "0"), length >= 0, length <= 256 * 1024 * 1024 else { return nil }
            while buffer.count < bodyStart + length {
                guard connection.read(into: &buffer) else { return nil }
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
        return ServerRequest(method: String(requestLine[0]), path: String(parts.first ?? ""), query: query,
                             headers: headers, body: body, clientSubject: connection.clientSubject)
    }

    private func write(_ connection: ServerConnection, _ response: ServerResponse, keepAlive: Bool) -> Bool {
        var head = "HTTP/1.1 \(response.status) \(reason(response.status))\r\nContent-Type: \(response.contentType)\r\nContent-Length: \(response.body.count)\r\n"
        head += "Connection: \(keepAlive ? "keep-alive" : "close")\r\n"
        for (name, value) in response.headers { head += "\(name): \(value)\r\n" }
        head += "\r\n"
        return connection.write(Array(head.utf8) + response.body)
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
        case 429: return "Too Many Requests"
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
