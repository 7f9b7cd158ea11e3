internal import COpenSSL
internal import COpenSSLShims
import Foundation
import HTTPServer
import X509
#if canImport(Glibc)
import Glibc
#endif

/// A server-side TLS configuration (TLS 1.2 or newer): the server's certificate and key, and
/// optionally a CA whose client certificates are required. Owns its `SSL_CTX`. For the local
/// platform and tests; errors are read through X509's `OpenSSL` (the package's one place).
package final class TLSServerContext: @unchecked Sendable {
    fileprivate let context: OpaquePointer

    package init(certificatePEM: String, privateKeyPEM: String, clientCAPEM: String? = nil) throws {
        OpenSSL.initialize()
        guard let context = SSL_CTX_new(TLS_server_method()) else { throw ServerError(description: "SSL_CTX_new failed") }
        func fail(_ what: String) -> ServerError {
            SSL_CTX_free(context)
            return ServerError(description: "\(what): \(OpenSSL.drainErrors() ?? "unknown OpenSSL error")")
        }
        tether_ssl_ctx_require_tls12(context)
        guard let certificate = try? OpenSSL.readCertificate(certificatePEM), SSL_CTX_use_certificate(context, certificate) == 1 else {
            throw fail("the server certificate is unusable")
        }
        X509_free(certificate)
        guard let key = try? OpenSSL.readKey(privateKeyPEM), SSL_CTX_use_PrivateKey(context, key) == 1 else {
            throw fail("the server key is unusable")
        }
        EVP_PKEY_free(key)
        if let clientCAPEM {
            guard let authority = try? OpenSSL.readCertificate(clientCAPEM),
                  X509_STORE_add_cert(SSL_CTX_get_cert_store(context), authority) == 1 else {
                throw fail("the client CA is unusable")
            }
            X509_free(authority)
            SSL_CTX_set_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
        }
        self.context = context
    }

    deinit {
        SSL_CTX_free(context)
    }

    /// Completes a handshake on an accepted socket; nil when it fails.
    package func accept(_ fd: Int32) -> ServerConnection? {
        TLSConnection(context: self, fd: fd)
    }
}

extension HTTPServer {
    /// Starts an HTTPS server at once. `port` 0 lets the kernel choose.
    package convenience init(certificatePEM: String, privateKeyPEM: String, clientCAPEM: String? = nil, host: String = "127.0.0.1",
                            port: Int = 0, handler: @escaping @Sendable (ServerRequest) -> ServerResponse) throws {
        let tls = try TLSServerContext(certificatePEM: certificatePEM, privateKeyPEM: privateKeyPEM, clientCAPEM: clientCAPEM)
        try self.init(host: host, port: port, upgrade: { tls.accept($0) }, handler: handler)
    }
}

/// A TLS session over an accepted socket; freed with the connection.
private final class TLSConnection: ServerConnection {
    private let ssl: OpaquePointer
    /// Keeps the context alive as long as a session uses it.
    private let context: TLSServerContext
    let clientSubject: String?

    /// Completes the handshake; nil when it fails (the client was told why by the TLS alert).
    init?(context: TLSServerContext, fd: Int32) {
        guard let ssl = SSL_new(context.context) else { return nil }
        SSL_set_fd(ssl, fd)
        guard SSL_accept(ssl) == 1 else {
            OpenSSL.discardErrors()
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
        self.context = context
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
            OpenSSL.discardErrors()
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
                OpenSSL.discardErrors()
                return false
            }
            offset += Int(written)
        }
        return true
    }
}
