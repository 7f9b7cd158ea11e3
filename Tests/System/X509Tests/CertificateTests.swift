import Foundation
import TetherTestSupport
import Testing
import X509

@Suite("Certificates through OpenSSL")
struct CertificateTests {
    let pki: TestPKI

    init() throws {
        pki = try TestPKI()
    }

    @Test("A PEM certificate reads with the subject, issuer, serial, validity and fingerprint openssl shows")
    func pem() throws {
        let certificate = try Certificate(bytes: Array(try pki.data("server.pem")))
        #expect(certificate.subject == "O=Tether demo platform,CN=kata.demo.local")
        #expect(certificate.issuer == "O=Tether,CN=Tether demo CA")
        let expectedFingerprint = try pki.openssl("x509", "-in", "server.pem", "-noout", "-fingerprint", "-sha256")
            .split(separator: "=").last!.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        #expect(certificate.sha256Fingerprint == expectedFingerprint)
        let serial = try pki.openssl("x509", "-in", "server.pem", "-noout", "-serial")
            .split(separator: "=").last!.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(certificate.serialNumber == serial.uppercased())
        #expect(certificate.isValid(at: Date()))
        #expect(certificate.notAfter.timeIntervalSinceNow > 89 * 86_400)
        #expect(!certificate.isValid(at: Date().addingTimeInterval(91 * 86_400)))
    }

    @Test("DER and PEM of one certificate are the same certificate")
    func der() throws {
        try pki.openssl("x509", "-in", "server.pem", "-outform", "DER", "-out", "server.der")
        let fromDER = try Certificate(bytes: Array(try pki.data("server.der")))
        let fromPEM = try Certificate(bytes: Array(try pki.data("server.pem")))
        #expect(fromDER == fromPEM)
        #expect(try Certificate(bytes: Array(fromDER.pem.utf8)) == fromDER)
    }

    @Test("A file that is not a certificate is refused with OpenSSL's reason")
    func notACertificate() throws {
        let error = #expect(throws: X509Error.self) { try Certificate(bytes: Array("just some text\n".utf8)) }
        guard case .notACertificate(let reason)? = error else {
            Issue.record("expected notACertificate, got \(String(describing: error))")
            return
        }
        #expect(!reason.isEmpty)
        // A private key is not a certificate either.
        #expect(throws: X509Error.self) { try Certificate(bytes: Array(try pki.data("server.key"))) }
    }

    @Test("A PKCS#12 container opens with its password and yields its leaf certificate")
    func container() throws {
        let password = try pki.text("edr-client.pass").trimmingCharacters(in: .whitespacesAndNewlines)
        let container = try ClientContainer(pkcs12: Array(try pki.data("edr-client.p12")), password: password)
        #expect(container.certificate == (try Certificate(bytes: Array(try pki.data("client.pem")))))
        #expect(container.certificate.subject == "O=Tether demo fleet,CN=endpoint-demo")
    }

    @Test("A wrong password, a non-container and a container without a key are told apart")
    func containerErrors() throws {
        let bytes = Array(try pki.data("edr-client.p12"))
        #expect(throws: X509Error.wrongPassword) { try ClientContainer(pkcs12: bytes, password: "not the password") }
        #expect {
            try ClientContainer(pkcs12: Array(try pki.data("client.pem")), password: "")
        } throws: { error in
            if case X509Error.notAContainer = error { return true }
            return false
        }
        try pki.openssl("pkcs12", "-export", "-nokeys", "-in", "client.pem", "-passout", "pass:secret", "-out", "nokey.p12")
        #expect(throws: X509Error.incompleteContainer("no private key")) {
            try ClientContainer(pkcs12: Array(try pki.data("nokey.p12")), password: "secret")
        }
    }

    @Test("An old-style container (3DES, RC2) opens through the legacy provider")
    func legacyContainer() throws {
        try pki.openssl("pkcs12", "-export", "-legacy", "-inkey", "client.key", "-in", "client.pem",
                        "-passout", "pass:legacy", "-out", "legacy.p12")
        let container = try ClientContainer(pkcs12: Array(try pki.data("legacy.p12")), password: "legacy")
        #expect(container.certificate.subject.contains("endpoint-demo"))
    }
}
