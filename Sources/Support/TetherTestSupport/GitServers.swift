import Foundation
import HTTPServer
import PlatformTLS

/// `git daemon` serving a folder of repositories over git:// on 127.0.0.1, killed when released.
package final class GitDaemon: @unchecked Sendable {
    package let port: Int
    private let process: BackgroundProcess

    /// Serves every repository below `base` (read-only).
    package init(base: String) throws {
        port = try freePort()
        // git-daemon itself (not `git daemon`, which would run it as a child that outlives a kill).
        let execPath = try runProgram("git", ["--exec-path"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        process = try BackgroundProcess(execPath + "/git-daemon", ["--export-all", "--reuseaddr", "--listen=127.0.0.1", "--port=\(port)",
                                                                  "--base-path=\(base)", base])
        try waitForPort(port)
    }

    /// The URL of a repository below the base folder.
    package func url(_ name: String) -> String { "git://127.0.0.1:\(port)/\(name)" }
}

/// OpenSSH's sshd on 127.0.0.1 for git over ssh: its own host key, one authorized client key,
/// serving the current user's shell (so `git-upload-pack PATH` works). Killed when released.
package final class SSHServer: @unchecked Sendable {
    package let port: Int
    private let directory: TemporaryDirectory
    private let process: BackgroundProcess
    /// A known_hosts line for this server.
    package let knownHostsLine: String
    /// The client's private key file.
    package let clientKey: String

    package init() throws {
        directory = try TemporaryDirectory("tether-sshd")
        let hostKey = directory.url.appending(path: "host_ed25519").path
        clientKey = directory.url.appending(path: "client_ed25519").path
        for arguments in [["-q", "-t", "ed25519", "-N", "", "-f", hostKey], ["-q", "-t", "ed25519", "-N", "", "-f", clientKey]] {
            let made = try runProgram("ssh-keygen", arguments)
            guard made.status == 0 else { throw FixtureError("ssh-keygen: \(made.output)") }
        }
        let authorized = try String(contentsOfFile: clientKey + ".pub", encoding: .utf8)
        try directory.write("authorized_keys", authorized)
        port = try freePort()
        let config = """
            Port \(port)
            ListenAddress 127.0.0.1
            HostKey \(hostKey)
            AuthorizedKeysFile \(directory.url.appending(path: "authorized_keys").path)
            PidFile \(directory.url.appending(path: "sshd.pid").path)
            PermitRootLogin prohibit-password
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            StrictModes no

            """
        let configFile = try directory.write("sshd_config", config)
        try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        process = try BackgroundProcess("/usr/sbin/sshd", ["-D", "-e", "-f", configFile])
        try waitForPort(port)
        let hostPublic = try String(contentsOfFile: hostKey + ".pub", encoding: .utf8).split(separator: " ")
        knownHostsLine = "[127.0.0.1]:\(port) \(hostPublic[0]) \(hostPublic[1])\n"
    }

    /// An ssh URL for a repository at an absolute path on this machine.
    package func url(_ path: String) -> String { "ssh://\(NSUserName())@127.0.0.1:\(port)\(path)" }
}

/// `git http-backend` behind a small HTTP server on 127.0.0.1 (the smart HTTP protocol),
/// optionally demanding Basic credentials; counts the bytes it sent.
package final class GitHTTPServer: @unchecked Sendable {
    private var server: HTTPServer?
    package let port: Int
    private let counter = ByteCounter()

    /// Serves the repositories below `base`; with `user`/`password`, a request without them is
    /// answered 401; with `tls` (certificate and key PEM) over HTTPS.
    package init(base: String, user: String? = nil, password: String? = nil, tls: (certificatePEM: String, keyPEM: String)? = nil) throws {
        let expected = user.map { "Basic " + Data("\($0):\(password ?? "")".utf8).base64EncodedString() }
        let counter = self.counter
        let handler: @Sendable (ServerRequest) -> ServerResponse = { request in
            if let expected, request.headers["authorization"] != expected {
                return ServerResponse(status: 401, contentType: "text/plain", body: Array("authentication required\n".utf8),
                                      headers: ["WWW-Authenticate": "Basic realm=\"tether-test\""])
            }
            let response = GitHTTPServer.cgi(request, base: base)
            counter.add(response.body.count)
            return response
        }
        let server = try tls.map { try HTTPServer(certificatePEM: $0.certificatePEM, privateKeyPEM: $0.keyPEM, handler: handler) }
            ?? HTTPServer(handler: handler)
        self.server = server
        port = server.port
        scheme = tls == nil ? "http" : "https"
    }

    private let scheme: String

    /// The repository's URL (https URLs name localhost, which the server certificate carries).
    package func url(_ name: String) -> String {
        scheme == "https" ? "https://localhost:\(port)/\(name)" : "http://127.0.0.1:\(port)/\(name)"
    }

    /// Bytes of response bodies sent so far.
    package var bytesSent: Int { counter.total }

    private static func cgi(_ request: ServerRequest, base: String) -> ServerResponse {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["git", "http-backend"]
        var environment = ProcessInfo.processInfo.environment
        environment["GIT_PROJECT_ROOT"] = base
        environment["GIT_HTTP_EXPORT_ALL"] = "1"
        environment["REQUEST_METHOD"] = request.method
        environment["PATH_INFO"] = request.path
        environment["QUERY_STRING"] = request.query.map { "\($0.key)=\($0.value)" }.joined(separator: "&")
        environment["CONTENT_TYPE"] = request.headers["content-type"] ?? ""
        environment["CONTENT_LENGTH"] = String(request.body.count)
        environment["REMOTE_ADDR"] = "127.0.0.1"
        if let protocolHeader = request.headers["git-protocol"] { environment["GIT_PROTOCOL"] = protocolHeader }
        process.environment = environment
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return ServerResponse(status: 500) }
        input.fileHandleForWriting.write(Data(request.body))
        try? input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard let split = data.firstRange(of: Data("\r\n\r\n".utf8)) ?? data.firstRange(of: Data("\n\n".utf8)) else {
            return ServerResponse(status: 500)
        }
        var status = 200
        var contentType = "application/octet-stream"
        var headers: [String: String] = [:]
        for line in String(decoding: data[..<split.lowerBound], as: UTF8.self).split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            switch name.lowercased() {
            case "status": status = Int(value.prefix(3)) ?? 200
            case "content-type": contentType = value
            default: headers[name] = value
            }
        }
        return ServerResponse(status: status, contentType: contentType, body: Array(data[split.upperBound...]), headers: headers)
    }
}

final class ByteCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func add(_ bytes: Int) { lock.withLock { count += bytes } }
    var total: Int { lock.withLock { count } }
}

/// A plain HTTP GET to 127.0.0.1 (for /metrics and friends): the status and the body.
package func httpGet(port: Int, path: String) throws -> (status: Int, body: String) {
    let response = try httpExchange(port: port, Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8))
    return (response.status, response.body)
}

/// Sends `request` as it is over a new connection to 127.0.0.1 and reads until the server
/// closes it or `timeout` seconds pass without a byte: the status (0 when none came), the
/// response head and its body.
package func httpExchange(port: Int, _ request: [UInt8], timeout: Double = 10) throws -> (status: Int, head: String, body: String) {
    let fd = try connectLoopback(port: port, timeout: timeout)
    defer { close(fd) }
    _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    var response = [UInt8]()
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = recv(fd, &chunk, chunk.count, 0)
        if count <= 0 { break }
        response += chunk[0..<count]
    }
    let text = String(decoding: response, as: UTF8.self)
    let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
    let parts = text.components(separatedBy: "\r\n\r\n")
    return (status, parts.first ?? "", parts.dropFirst().joined(separator: "\r\n\r\n"))
}

/// A TCP connection to 127.0.0.1:`port` whose reads and writes give up after `timeout` seconds.
package func connectLoopback(port: Int, timeout: Double = 10) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var limit = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout * 1_000_000).truncatingRemainder(dividingBy: 1_000_000)))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    var address = loopback(port: port)
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        throw FixtureError("nothing listens on 127.0.0.1:\(port)")
    }
    return fd
}
