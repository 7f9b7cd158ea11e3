import CProcessShims
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A long-running helper process (a TLS server, git daemon, sshd), started with posix_spawn
/// and killed with SIGKILL when released. Not a Foundation.Process: Foundation reaps its
/// children one at a time, so a server that never exits could stall every `runProgram`, and a
/// child started from async code may ignore SIGTERM.
package final class BackgroundProcess: @unchecked Sendable {
    let pid: pid_t

    /// `executable` is a path, or a name looked up in PATH.
    package init(_ executable: String, _ arguments: [String]) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd in [STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO] {
            posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == STDIN_FILENO ? O_RDONLY : O_WRONLY, 0)
        }
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let status = posix_spawnp(&child, executable, &actions, nil, argv, environ)
        guard status == 0 else { throw FixtureError("cannot start \(executable): \(String(cString: strerror(status)))") }
        pid = child
    }

    deinit {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
package func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = loopback(port: 0)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw FixtureError("cannot bind a free port") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
package func waitForPort(_ port: Int, seconds: Double = 10) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        close(fd)
        if connected == 0 { return }
        usleep(20_000)
    }
    throw FixtureError("nothing listens on 127.0.0.1:\(port) after \(seconds) s")
}

/// A listening socket on 127.0.0.1 with a port the kernel chose.
package func listenOnLoopback() throws -> (Int32, Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var reuse: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
    var address = loopback(port: 0)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0, listen(fd, 16) == 0 else {
        close(fd)
        throw FixtureError("cannot listen on 127.0.0.1")
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}

func loopback(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return address
}

/// `openssl s_server -www` on 127.0.0.1: a real TLS peer that answers GET with a status page,
/// optionally requiring a client certificate issued by the PKI's CA.
package final class OpenSSLServer: @unchecked Sendable {
    package let port: Int
    private let process: BackgroundProcess

    package init(pki: TestPKI, certificate: String = "server.pem", key: String = "server.key", requireClientCertificate: Bool = false) throws {
        port = try freePort()
        var arguments = ["s_server", "-accept", "127.0.0.1:\(port)", "-cert", pki.path(certificate), "-key", pki.path(key), "-www", "-quiet"]
        if requireClientCertificate {
            arguments += ["-CAfile", pki.path("ca.pem"), "-Verify", "1", "-verify_return_error"]
        }
        process = try BackgroundProcess("openssl", arguments)
        try waitForPort(port)
    }

    package var url: String { "https://127.0.0.1:\(port)/" }
    /// The same port over plain HTTP (for the plain-HTTP behaviours).
    package var plainURL: String { "http://127.0.0.1:\(port)/" }
}

/// A socket that listens but never accepts: connections complete, then nothing is ever said.
package final class SilentServer: @unchecked Sendable {
    package let port: Int
    private let fd: Int32

    package init() throws {
        (fd, port) = try listenOnLoopback()
    }

    deinit { close(fd) }
}

/// A small HTTP CONNECT proxy on 127.0.0.1, in-process, that tunnels to loopback targets only,
/// optionally demanding Basic credentials (407 without them), and counts the tunnels it made.
package final class ConnectProxy: @unchecked Sendable {
    package let port: Int
    private let listener: Int32
    private let credentials: String?
    private let lock = NSLock()
    private var tunnelCount = 0
    private var stopped = false

    /// `user` and `password`, when given, are required from clients.
    package init(user: String? = nil, password: String? = nil) throws {
        signal(SIGPIPE, SIG_IGN)
        credentials = user.map { Data("\($0):\(password ?? "")".utf8).base64EncodedString() }
        (listener, port) = try listenOnLoopback()
        let thread = Thread { [weak self] in self?.acceptLoop() }
        thread.start()
    }

    deinit {
        lock.withLock { stopped = true }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    /// How many CONNECT tunnels were opened.
    package var tunnels: Int { lock.withLock { tunnelCount } }

    package var address: String { "127.0.0.1:\(port)" }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 { return }
            if lock.withLock({ stopped }) { close(client); return }
            Thread { [weak self] in self?.serve(client) }.start()
        }
    }

    private func serve(_ client: Int32) {
        var request = [UInt8]()
        var byte: UInt8 = 0
        while !request.ends(with: Array("\r\n\r\n".utf8)) {
            guard read(client, &byte, 1) == 1, request.count < 8192 else { close(client); return }
            request.append(byte)
        }
        let head = String(decoding: request, as: UTF8.self)
        let lines = head.components(separatedBy: "\r\n")
        let parts = lines[0].split(separator: " ")
        guard parts.count >= 2, parts[0] == "CONNECT" else { reply(client, "405 Method Not Allowed"); return }
        if let credentials, !lines.contains(where: { $0.lowercased() == "proxy-authorization: basic \(credentials.lowercased())" }) {
            reply(client, "407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"tether-test\"")
            return
        }
        let target = parts[1].split(separator: ":")
        guard target.count == 2, target[0] == "127.0.0.1" || target[0] == "localhost", let port = Int(target[1]) else {
            reply(client, "403 Forbidden")
            return
        }
        let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { close(upstream); reply(client, "502 Bad Gateway"); return }
        lock.withLock { tunnelCount += 1 }
        let established = Array("HTTP/1.1 200 Connection established\r\n\r\n".utf8)
        _ = established.withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
        pump(client, upstream)
    }

    private func reply(_ client: Int32, _ status: String) {
        let response = Array("HTTP/1.1 \(status)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8)
        _ = response.withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
        close(client)
    }

}

/// Copies bytes both ways between two sockets until either side closes (or 30 s of silence),
/// then closes both.
func pump(_ a: Int32, _ b: Int32) {
    var fds = [pollfd(fd: a, events: Int16(POLLIN), revents: 0), pollfd(fd: b, events: Int16(POLLIN), revents: 0)]
    var buffer = [UInt8](repeating: 0, count: 16384)
    loop: while poll(&fds, 2, 30_000) > 0 {
        for (index, entry) in fds.enumerated() where entry.revents != 0 {
            let count = read(entry.fd, &buffer, buffer.count)
            if count <= 0 { break loop }
            let other = index == 0 ? b : a
            _ = buffer.withUnsafeBytes { write(other, $0.baseAddress, count) }
        }
    }
    close(a)
    close(b)
}

extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool {
        count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix
    }
}

/// A short-lived program started with posix_spawn, its output in files: for running many at
/// once (overlap tests) and killing one at a chosen moment (crash tests).
package final class ChildProcess: @unchecked Sendable {
    package let pid: pid_t
    private let outputs: TemporaryDirectory
    private var exitStatus: Int32?

    package init(_ executable: String, _ arguments: [String]) throws {
        outputs = try TemporaryDirectory("tether-child")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, outputs.url.appending(path: "stdout").path, O_WRONLY | O_CREAT, 0o600)
        posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, outputs.url.appending(path: "stderr").path, O_WRONLY | O_CREAT, 0o600)
        // The test's own descriptors (sockets, other tests' files) stay out of the child.
        _ = tether_spawn_close_from(&actions, 3)
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let status = posix_spawn(&child, executable, &actions, nil, argv, environ)
        guard status == 0 else { throw FixtureError("cannot start \(executable): \(String(cString: strerror(status)))") }
        pid = child
    }

    /// Waits for the program to end; its exit code, or 128 + the signal that ended it.
    @discardableResult
    package func wait() -> Int32 {
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        exitStatus = code
        return code
    }

    /// Ends the program at once (SIGKILL), as a crash or a power cut would.
    package func kill() {
        _ = Glibc.kill(pid, SIGKILL)
    }

    package var stdout: String { (try? String(contentsOf: outputs.url.appending(path: "stdout"), encoding: .utf8)) ?? "" }
    package var stderr: String { (try? String(contentsOf: outputs.url.appending(path: "stderr"), encoding: .utf8)) ?? "" }

    deinit {
        if exitStatus == nil {
            kill()
            wait()
        }
    }
}

/// The `tether` executable this test run built.
package var tetherExecutable: String { repositoryRoot.appending(path: ".build/debug/tether").path }

/// A TCP forwarder on 127.0.0.1 to a loopback port that holds chosen connections (counted from
/// 0) open without a byte either way — a half-open connection, as a path that silently drops
/// packets leaves it — and forwards every other one.
package final class HoldingProxy: @unchecked Sendable {
    package let port: Int
    private let listener: Int32
    private let target: Int
    private let lock = NSLock()
    private var held: Set<Int> = []
    private var accepted = 0
    private var holding: [Int32] = []

    /// Forwards every connection until told to `hold` some.
    package init(to target: Int) throws {
        signal(SIGPIPE, SIG_IGN)
        self.target = target
        (listener, port) = try listenOnLoopback()
        Thread { [weak self] in self?.acceptLoop() }.start()
    }

    /// Holds the connections that come next, counted from 0 (`[1]`: the second from now).
    package func hold(next offsets: Set<Int>) {
        lock.withLock { held = Set(offsets.map { accepted + $0 }) }
    }

    deinit { stop() }

    /// Stops accepting and closes the held connections (the accepting thread keeps the proxy
    /// alive until then).
    package func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        lock.withLock {
            holding.forEach { close($0) }
            holding = []
        }
    }

    /// How many connections came in.
    package var connections: Int { lock.withLock { accepted } }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 { return }
            let isHeld = lock.withLock { () -> Bool in
                accepted += 1
                guard held.contains(accepted - 1) else { return false }
                holding.append(client)
                return true
            }
            if isHeld { continue }
            let target = self.target
            Thread {
                let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                var address = loopback(port: target)
                let connected = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                guard connected == 0 else { close(upstream); close(client); return }
                pump(client, upstream)
            }.start()
        }
    }
}

/// A misbehaving TLS peer on 127.0.0.1, written with Python's ssl module, for naming connection
/// failures: each accepted connection is served the way `Behaviour` says.
package final class PythonTLSPeer: @unchecked Sendable {
    package enum Behaviour: String, Sendable {
        /// Requires a client certificate from the PKI's CA and closes politely when refused.
        case requireClientCertificate = "require-client-certificate"
        /// Requires a client certificate and resets the connection at once when refused, so its
        /// alert is usually lost.
        case requireClientCertificateAndReset = "require-client-certificate-and-reset"
        /// Speaks plain HTTP on the port.
        case plainHTTP = "plain-http"
        /// Speaks only TLS 1.0 and 1.1.
        case oldTLSOnly = "old-tls-only"
        /// Completes the handshake, starts a 100 kB response and resets the connection after 1 kB.
        case resetMidResponse = "reset-mid-response"
        /// Plain HTTP: answers 200 with a body of 10 GB (Content-Length) and sends it until the client goes.
        case endlessPlainHTTP = "endless-plain-http"
        /// Plain HTTP: reads the request and resets the connection without an answer.
        case resetPlainHTTP = "reset-plain-http"
        /// Resets each connection as soon as it is accepted, before a byte is read.
        case resetOnAccept = "reset-on-accept"
    }

    package let port: Int
    private let process: BackgroundProcess

    package init(pki: TestPKI, behaviour: Behaviour) throws {
        port = try freePort()
        process = try BackgroundProcess("python3", ["-W", "ignore", "-c", Self.script, behaviour.rawValue, String(port),
                                                    pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem")])
        try waitForPort(port)
    }

    package var url: String { "https://127.0.0.1:\(port)/" }
    /// The same port over plain HTTP (for the plain-HTTP behaviours).
    package var plainURL: String { "http://127.0.0.1:\(port)/" }

    private static let script = """
        import socket, ssl, struct, sys, threading
        behaviour, port, certificate, key, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)
        if behaviour.startswith("require-client-certificate"):
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(ca)
        if behaviour == "old-tls-only":
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        def reset(connection):
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()
        def serve(connection):
            try:
                if behaviour == "reset-on-accept":
                    reset(connection)
                    return
                if behaviour == "endless-plain-http":
                    connection.recv(4096)
                    connection.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 10737418240\\r\\n\\r\\n")
                    block = b"\\0" * 65536
                    while True:
                        connection.sendall(block)
                if behaviour == "reset-plain-http":
                    connection.recv(4096)
                    reset(connection)
                    return
                if behaviour == "plain-http":
                    connection.recv(4096)
                    connection.sendall(b"HTTP/1.1 400 Bad Request\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n")
                    connection.close()
                    return
                try:
                    tls = context.wrap_socket(connection, server_side=True)
                except ssl.SSLError:
                    if behaviour.endswith("and-reset"):
                        reset(connection)
                    else:
                        connection.close()
                    return
                tls.recv(65536)
                if behaviour == "reset-mid-response":
                    tls.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 100000\\r\\n\\r\\n" + b"x" * 1000)
                    reset(connection)
                    return
                tls.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok")
                tls.close()
            except OSError:
                connection.close()
        while True:
            connection, _ = listener.accept()
            threading.Thread(target=serve, args=(connection,), daemon=True).start()
        """
}
