import Foundation
import HTTPTransport
import TetherTestSupport
import Testing

/// libcurl and OpenSSL against real TLS servers on 127.0.0.1.
@Suite("HTTPS with a pinned certificate, mutual TLS and a proxy", .serialized)
struct HTTPClientTests {
    let pki: TestPKI

    init() throws {
        pki = try TestPKI()
    }

    private func client(pin: String = "server.pem", identity: Bool = false, password: String? = nil,
                        proxy: ProxySettings? = nil, timeout: Int = 5) throws -> HTTPClient {
        var clientIdentity: ClientIdentity?
        if identity {
            let secret = try password ?? pki.text("edr-client.pass").trimmingCharacters(in: .whitespacesAndNewlines)
            clientIdentity = ClientIdentity(pkcs12: Array(try pki.data("edr-client.p12")), password: secret)
        }
        return try HTTPClient(configuration: TransportConfiguration(
            pinnedCertificatePEM: try pki.text(pin), clientIdentity: clientIdentity, proxy: proxy,
            connectionTimeout: timeout, requestTimeout: timeout))
    }

    @Test("The pinned server certificate is accepted, and so is the CA it chains to")
    func pinnedAccepted() throws {
        let server = try OpenSSLServer(pki: pki)
        let response = try client().send(url: server.url)
        #expect(response.status == 200)
        #expect(response.text.contains("s_server"))
        #expect(try client(pin: "ca.pem").send(url: server.url).status == 200)
    }

    @Test("A server presenting any other certificate is refused, even one a public CA would trust")
    func otherCertificateRefused() throws {
        let server = try OpenSSLServer(pki: pki)
        let otherPKI = try TestPKI()
        let other = try HTTPClient(configuration: TransportConfiguration(pinnedCertificatePEM: try otherPKI.text("server.pem"), requestTimeout: 5))
        #expect {
            try other.send(url: server.url)
        } throws: { error in
            guard case TransportError.serverCertificateRejected = error else { return false }
            return true
        }
    }

    @Test("Host name verification stays on: a name the certificate does not carry is refused")
    func hostName() throws {
        try pki.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                        "-subj", "/CN=elsewhere.example", "-addext", "subjectAltName=DNS:elsewhere.example",
                        "-keyout", "wrong-name.key", "-out", "wrong-name.pem")
        let server = try OpenSSLServer(pki: pki, certificate: "wrong-name.pem", key: "wrong-name.key")
        #expect {
            try client(pin: "wrong-name.pem").send(url: server.url)
        } throws: { error in
            guard case TransportError.serverCertificateRejected = error else { return false }
            return true
        }
    }

    @Test("Mutual TLS: the container is presented from memory; without it the error says the certificate is missing")
    func mutualTLS() throws {
        let server = try OpenSSLServer(pki: pki, requireClientCertificate: true)
        #expect(try client(identity: true).send(url: server.url).status == 200)
        #expect {
            try client().send(url: server.url)
        } throws: { error in
            guard case TransportError.clientCertificateMissing = error else { return false }
            return true
        }
        #expect {
            try client(identity: true, password: "wrong").send(url: server.url)
        } throws: { error in
            guard case TransportError.clientCertificateRejected(let detail) = error else { return false }
            return !detail.contains("wrong")
        }
    }

    @Test("Through an HTTP CONNECT proxy, with credentials; a refusing proxy is named as such")
    func proxy() throws {
        let server = try OpenSSLServer(pki: pki)
        let proxy = try ConnectProxy(user: "tether", password: "s3cret")
        let good = try client(proxy: ProxySettings(address: proxy.address, user: "tether", password: "s3cret"))
        #expect(try good.send(url: server.url).status == 200)
        #expect(proxy.tunnels == 1)
        let bad = try client(proxy: ProxySettings(address: proxy.address, user: "tether", password: "wrong"))
        #expect(throws: TransportError.proxyRefused("the proxy answered CONNECT with HTTP 407")) { try bad.send(url: server.url) }
        #expect(proxy.tunnels == 1)
    }

    @Test("Unreachable servers and timeouts are told apart; the timeout is honoured")
    func unreachableAndTimeout() throws {
        let closed = try freePort()
        #expect {
            try client().send(url: "https://127.0.0.1:\(closed)/")
        } throws: { error in
            guard case TransportError.unreachable = error else { return false }
            return true
        }
        let silent = try SilentServer()
        let started = Date()
        #expect {
            try client(timeout: 1).send(url: "https://127.0.0.1:\(silent.port)/")
        } throws: { error in
            guard case TransportError.timedOut = error else { return false }
            return true
        }
        let elapsed = Date().timeIntervalSince(started)
        #expect(elapsed >= 0.9 && elapsed < 3, "took \(elapsed) s for a 1 s timeout")
    }

    /// The failure kinds of `runs` requests, each on a new client (a fresh connection), counted.
    private func failureKinds(_ runs: Int = 20, url: String, _ makeClient: () throws -> HTTPClient) throws -> [String: Int] {
        var kinds: [String: Int] = [:]
        var examples: [String: String] = [:]
        for _ in 0..<runs {
            do {
                _ = try makeClient().send(url: url)
                kinds["success", default: 0] += 1
            } catch let error as TransportError {
                kinds[error.kind, default: 0] += 1
                examples[error.kind] = error.description
            }
        }
        if kinds.count > 1 { Issue.record("different kinds for one fault: \(kinds) \(examples)") }
        return kinds
    }

    @Test("A server that wants a client certificate is named so 20 times out of 20, even when its reset destroys its alert")
    func clientCertificateWanted() throws {
        for behaviour in [PythonTLSPeer.Behaviour.requireClientCertificate, .requireClientCertificateAndReset] {
            let peer = try PythonTLSPeer(pki: pki, behaviour: behaviour)
            #expect(try failureKinds(url: peer.url) { try client() } == ["client-certificate-missing": 20], "\(behaviour)")
            #expect(try failureKinds(url: peer.url) { try client(identity: true) } == ["success": 20], "\(behaviour)")
        }
        // The reset case says what to check.
        let abrupt = try PythonTLSPeer(pki: pki, behaviour: .requireClientCertificateAndReset)
        for _ in 0..<5 {
            #expect {
                try client().send(url: abrupt.url)
            } throws: { error in
                guard case TransportError.clientCertificateMissing(let detail) = error else { return false }
                return detail.contains("the server requires one: ") || detail.contains("it may require one (mutualAuthentication is off)")
            }
        }
    }

    @Test("A client certificate from another CA is named as not accepted, 20 times out of 20")
    func clientCertificateFromAnotherCA() throws {
        let otherPKI = try TestPKI()
        let secret = try otherPKI.text("edr-client.pass").trimmingCharacters(in: .whitespacesAndNewlines)
        let foreign = ClientIdentity(pkcs12: Array(try otherPKI.data("edr-client.p12")), password: secret)
        for behaviour in [PythonTLSPeer.Behaviour.requireClientCertificate, .requireClientCertificateAndReset] {
            let peer = try PythonTLSPeer(pki: pki, behaviour: behaviour)
            let kinds = try failureKinds(url: peer.url) {
                try HTTPClient(configuration: TransportConfiguration(pinnedCertificatePEM: try pki.text("server.pem"), clientIdentity: foreign,
                                                                     connectionTimeout: 5, requestTimeout: 5))
            }
            #expect(kinds == ["client-certificate-rejected": 20], "\(behaviour)")
        }
    }

    @Test("Plain HTTP on the port, a server with only TLS 1.0/1.1, and a reset mid-response are each named, 20 times out of 20")
    func protocolFaults() throws {
        for (behaviour, kind) in [(PythonTLSPeer.Behaviour.plainHTTP, "not-tls"), (.oldTLSOnly, "tls-version-mismatch"),
                                  (.resetMidResponse, "connection-reset")] {
            let peer = try PythonTLSPeer(pki: pki, behaviour: behaviour)
            #expect(try failureKinds(url: peer.url) { try client() } == [kind: 20], "\(behaviour)")
        }
    }

    @Test("A body longer than the bound is cut off while it arrives (a 10 GB answer costs no memory), and says so")
    func boundedBody() throws {
        let peer = try PythonTLSPeer(pki: pki, behaviour: .endlessPlainHTTP)
        let client = try HTTPClient(configuration: TransportConfiguration(pinnedCertificatePEM: nil, connectionTimeout: 5, requestTimeout: 60,
                                                                          maximumBodyBytes: 1 << 20))
        // Held whole, the 10 GB body would end in the 60 s timeout, not in this error.
        #expect {
            try client.send(url: peer.plainURL)
        } throws: { error in
            guard let failure = error as? TransportError, case .responseTooLarge(let detail) = failure else { return false }
            return detail.contains("longer than 1048576 bytes") && failure.kind == "response-too-large"
        }
    }

    @Test("A server that resets each connection as soon as it accepts it is named a reset, never unreachable, 20 times out of 20")
    func resetOnAccept() throws {
        let peer = try PythonTLSPeer(pki: pki, behaviour: .resetOnAccept)
        let kinds = try failureKinds(url: peer.url) { try client() }
        #expect(kinds == ["connection-reset": 20], "\(kinds)")
    }

    @Test("A plain-HTTP server that resets the connection is not said to have failed a TLS handshake")
    func plainReset() throws {
        let peer = try PythonTLSPeer(pki: pki, behaviour: .resetPlainHTTP)
        let client = try HTTPClient(configuration: TransportConfiguration(pinnedCertificatePEM: nil, connectionTimeout: 5, requestTimeout: 5))
        #expect {
            try client.send(url: peer.plainURL)
        } throws: { error in
            "\(error)".contains("mid-transfer") && !"\(error)".contains("TLS")
        }
    }
}
