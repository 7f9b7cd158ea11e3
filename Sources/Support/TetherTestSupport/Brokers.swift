import Foundation

/// Debian's mosquitto on 127.0.0.1 (anonymous, nothing kept on disk), killed when released.
/// With `tls`, it speaks TLS only, with the PKI's server certificate, and requires a client
/// certificate from the PKI's CA.
package final class MQTTBroker: @unchecked Sendable {
    package let port: Int
    private let folder: TemporaryDirectory
    private let tls: TestPKI?
    private var process: BackgroundProcess?

    package init(tls: TestPKI? = nil) throws {
        port = try freePort()
        folder = try TemporaryDirectory("tether-broker")
        self.tls = tls
        try start()
    }

    /// The URL of a topic on this broker.
    package func url(_ topic: String) -> String { "\(tls == nil ? "mqtt" : "mqtts")://127.0.0.1:\(port)/\(topic)" }

    /// Ends the broker (SIGKILL, as a crash would): every client's link drops.
    package func stop() { process = nil }

    /// Starts it again on the same port (retained messages are gone: nothing is kept on disk).
    package func start() throws {
        var text = "listener \(port) 127.0.0.1\nallow_anonymous true\npersistence false\n"
        if let tls {
            // As root, mosquitto becomes the `mosquitto` user before it reads these files, which
            // that user cannot read in a test's private folder: it stays root instead.
            if getuid() == 0 { text += "user root\n" }
            text += "cafile \(tls.path("ca.pem"))\ncertfile \(tls.path("server.pem"))\nkeyfile \(tls.path("server.key"))\nrequire_certificate true\n"
        }
        let configuration = try folder.write("mosquitto.conf", text)
        process = try BackgroundProcess("mosquitto", ["-c", configuration])
        try waitForPort(port)
    }
}

/// Python's static file server on 127.0.0.1 for a folder (what a CDN or object store serves),
/// killed when released.
package final class StaticFileServer: @unchecked Sendable {
    package let port: Int
    private let process: BackgroundProcess

    package init(folder: String) throws {
        port = try freePort()
        process = try BackgroundProcess("python3", ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", folder])
        try waitForPort(port)
    }

    package var url: String { "http://127.0.0.1:\(port)" }
}
