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
}
