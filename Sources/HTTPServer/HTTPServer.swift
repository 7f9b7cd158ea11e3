internal import COpenSSL
internal import COpenSSLShims
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

    public init(status: Int, json: String) {
        self.init(status: status, body: Array(json.utf8))
    }
}

/// Why the server could not start.
public struct ServerError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// A small HTTP/1.1 server on 127.0.0.1 (or ::1), over TLS 1.2 or newer through OpenSSL
/// (optionally requiring a client certificate from a given CA) or in the clear for loopback
/// metrics; a thread per connection, keep-alive, Content-Length bodies. For the local
/// platform, the controller's metrics and tests, not for the open internet.
public final class HTTPServer: @unchecked Sendable {
    /// The port it listens on.
    public let port: Int
    private let state: ServerState

    /// Starts a plain-HTTP server at once (for loopback endpoints such as /metrics).
    public init(host: String = "127.0.0.1", port: Int = 0, handler: @escaping @Sendable (ServerRequest) -> ServerResponse) throws {
        signal(SIGPIPE, SIG_IGN)
        let (listener, boundPort) = try Self.listen(host: host, port: port)
        self.port = boundPort
        state = ServerState(context: nil, listener: listener, handler: handler)
        let state = self.state
        Thread { state.acceptLoop() }.start()
    }

    /// Starts an HTTPS server at once. `port` 0 lets the kernel choose.
    public init(certificatePEM: String, privateKeyPEM: String, clientCAPEM: String? = nil, host: String = "127.0.0.1", port: Int = 0,
                handler: @escaping @Sendable (ServerRequest) -> ServerResponse) throws {
        _ = tether_load_providers()
        // A client that hangs up mid-response must not kill the process.
        signal(SIGPIPE, SIG_IGN)
        guard let context = SSL_CTX_new(TLS_server_method()) else { throw ServerError(description: "SSL_CTX_new failed") }
        func fail(_ what: String) -> ServerError {
            SSL_CTX_free(context)
            return ServerError(description: "\(what): \(drainErrors())")
        }
        tether_ssl_ctx_require_tls12(context)
        guard let certificate = readPEM(certificatePEM, PEM_read_bio_X509), SSL_CTX_use_certificate(context, certificate) == 1 else {
            throw fail("the server certificate is unusable")
        }
        X509_free(certificate)
        guard let key = readPEM(privateKeyPEM, { PEM_read_bio_PrivateKey($0, $1, $2, $3) }), SSL_CTX_use_PrivateKey(context, key) == 1 else {
            throw fail("the server key is unusable")
        }
        EVP_PKEY_free(key)
        if let clientCAPEM {
            guard let authority = readPEM(clientCAPEM, PEM_read_bio_X509), X509_STORE_add_cert(SSL_CTX_get_cert_store(context), authority) == 1 else {
                throw fail("the client CA is unusable")
            }
            X509_free(authority)
            SSL_CTX_set_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
        }
        let (listener, boundPort) = try Self.listen(host: host, port: port)
        self.port = boundPort
        state = ServerState(context: context, listener: listener, handler: handler)
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
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
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
    /// The TLS context; nil for plain HTTP.
    let context: OpaquePointer?
    let listener: Int32
    let handler: @Sendable (ServerRequest) -> ServerResponse
    private let lock = NSLock()
    private var stopped = false
    private var connections = Set<Int32>()
    private var contextFreed = false

    static let maximumConnections = 256

    init(context: OpaquePointer?, listener: Int32, handler: @escaping @Sendable (ServerRequest) -> ServerResponse) {
        self.context = context
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
        let connection: Connection
        if let context {
            guard let tls = TLSConnection(context: context, fd: fd) else { return }
            connection = tls
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

    private func readRequest(_ connection: Connection, buffer: inout [UInt8]) -> ServerRequest? {
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

    private func write(_ connection: Connection, _ response: ServerResponse, keepAlive: Bool) -> Bool {
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

    deinit {
        if let context { SSL_CTX_free(context) }
    }
}

/// One accepted connection, in the clear or over TLS.
private protocol Connection {
    var clientSubject: String? { get }
    /// Appends what arrives; false at the end of the stream or on an error.
    func read(into buffer: inout [UInt8]) -> Bool
    func write(_ bytes: [UInt8]) -> Bool
}

private struct PlainConnection: Connection {
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

/// A TLS session over an accepted socket; freed with the connection.
private final class TLSConnection: Connection {
    private let ssl: OpaquePointer
    let clientSubject: String?

    /// Completes the handshake; nil when it fails (the client was told why by the TLS alert).
    init?(context: OpaquePointer, fd: Int32) {
        guard let ssl = SSL_new(context) else { return nil }
        SSL_set_fd(ssl, fd)
        guard SSL_accept(ssl) == 1 else {
            ERR_clear_error()
            SSL_free(ssl)
            // Let the client read the alert (e.g. "certificate required") before the socket
            // closes: closing with unread data would reset the connection and lose it.
            shutdown(fd, Int32(SHUT_WR))
            var drain = timeval(tv_sec: 0, tv_usec: 200_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &drain, socklen_t(MemoryLayout<timeval>.size))
            var sink = [UInt8](repeating: 0, count: 4096)
            while recv(fd, &sink, sink.count, 0) > 0 {}
            return nil
        }
        self.ssl = ssl
        var subject: String?
        if let peer = SSL_get1_peer_certificate(ssl) {
            if let name = X509_NAME_oneline(X509_get_subject_name(peer), nil, 0) {
                subject = String(cString: name)
                tether_openssl_free(name)
            }
            X509_free(peer)
        }
        clientSubject = subject
    }

    deinit {
        SSL_shutdown(ssl)
        SSL_free(ssl)
    }

    func read(into buffer: inout [UInt8]) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let count = SSL_read(ssl, &chunk, Int32(chunk.count))
        guard count > 0 else {
            ERR_clear_error()
            return false
        }
        buffer.append(contentsOf: chunk[0..<Int(count)])
        return true
    }

    func write(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { SSL_write(ssl, $0.baseAddress, Int32($0.count)) }
            guard written > 0 else {
                ERR_clear_error()
                return false
            }
            offset += Int(written)
        }
        return true
    }
}

private func readPEM(_ pem: String, _ reader: (OpaquePointer?, UnsafeMutablePointer<OpaquePointer?>?, (@convention(c) (UnsafeMutablePointer<CChar>?, Int32, Int32, UnsafeMutableRawPointer?) -> Int32)?, UnsafeMutableRawPointer?) -> OpaquePointer?) -> OpaquePointer? {
    let bytes = Array(pem.utf8)
    return bytes.withUnsafeBytes { buffer in
        let bio = BIO_new_mem_buf(buffer.baseAddress, Int32(buffer.count))
        defer { BIO_free(bio) }
        return reader(bio, nil, nil, nil)
    }
}

private func drainErrors() -> String {
    var reasons: [String] = []
    while case let code = ERR_get_error(), code != 0 {
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        reasons.append(buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
    }
    return reasons.isEmpty ? "unknown OpenSSL error" : reasons.joined(separator: "; ")
}
