internal import COpenSSL
internal import COpenSSLShims
import Foundation
import X509

/// A private key and its certificate, both PEM.
package struct IssuedCertificate: Sendable {
    package let certificatePEM: String
    package let privateKeyPEM: String
    package let certificate: Certificate

    /// A key pair read back from PEM (as `CertificateAuthority` wrote it).
    package init(certificatePEM: String, privateKeyPEM: String) throws {
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = privateKeyPEM
        certificate = try Certificate(bytes: Array(certificatePEM.utf8))
    }

    init(certificatePEM: String, privateKeyPEM: String, certificate: Certificate) {
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = privateKeyPEM
        self.certificate = certificate
    }

    /// The pair as a PKCS#12 container protected by `password` (for mutual TLS clients).
    package func pkcs12(password: String, name: String = "tether") throws -> [UInt8] {
        OpenSSL.initialize()
        guard let key = try OpenSSL.readKey(privateKeyPEM), let cert = try OpenSSL.readCertificate(certificatePEM) else {
            throw X509Error.incompleteContainer("cannot read the key pair")
        }
        defer { EVP_PKEY_free(key); X509_free(cert) }
        guard let container = PKCS12_create(password, name, key, cert, nil, 0, 0, 0, 0, 0) else {
            throw X509Error.notAContainer(reason: OpenSSL.drainErrors() ?? "PKCS12_create failed")
        }
        defer { PKCS12_free(container) }
        var buffer: UnsafeMutablePointer<UInt8>?
        let length = i2d_PKCS12(container, &buffer)
        guard length > 0, let buffer else { throw X509Error.notAContainer(reason: OpenSSL.drainErrors() ?? "cannot encode") }
        defer { tether_openssl_free(buffer) }
        return Array(UnsafeBufferPointer(start: buffer, count: Int(length)))
    }
}

/// A small certificate authority for loopback test platforms and tests: EC P-256 keys,
/// SHA-256 signatures. Never meant for production trust.
package final class CertificateAuthority: @unchecked Sendable {
    package let root: IssuedCertificate
    private var nextSerial: Int = 2

    /// Uses an existing CA (its certificate and key) to issue more certificates.
    package init(root: IssuedCertificate) {
        self.root = root
        nextSerial = Int.random(in: 1_000...1_000_000_000)
    }

    /// Makes a new self-signed CA valid for `days`.
    package init(commonName: String, days: Int = 30) throws {
        root = try CertificateAuthority.issue(commonName: commonName, organisation: "Tether test platform", names: [],
                                             days: days, serial: 1, isCA: true, usage: nil, issuer: nil)
    }

    /// Issues a certificate for a server (`names`: DNS names and IP addresses it answers for)
    /// or, with `client: true`, for a client.
    package func issue(commonName: String, names: [String] = [], client: Bool = false, days: Int = 30) throws -> IssuedCertificate {
        nextSerial += 1
        return try CertificateAuthority.issue(commonName: commonName, organisation: "Tether test platform", names: names, days: days,
                                              serial: nextSerial, isCA: false, usage: client ? "clientAuth" : "serverAuth", issuer: root)
    }

    private static func issue(commonName: String, organisation: String, names: [String], days: Int, serial: Int,
                              isCA: Bool, usage: String?, issuer: IssuedCertificate?) throws -> IssuedCertificate {
        OpenSSL.initialize()
        let key = try generateKey()
        defer { EVP_PKEY_free(key) }
        guard let certificate = X509_new() else { throw X509Error.notACertificate(reason: "X509_new failed") }
        defer { X509_free(certificate) }
        X509_set_version(certificate, 2)
        ASN1_INTEGER_set(X509_get_serialNumber(certificate), serial)
        X509_gmtime_adj(X509_getm_notBefore(certificate), -3600)
        X509_gmtime_adj(X509_getm_notAfter(certificate), days * 86_400)
        X509_set_pubkey(certificate, key)
        let subject = X509_get_subject_name(certificate)
        X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_ASC, organisation, -1, -1, 0)
        X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, commonName, -1, -1, 0)

        var issuerKey: OpaquePointer? = key
        var issuerCertificate: OpaquePointer? = certificate
        if let issuer {
            guard let parsedKey = try OpenSSL.readKey(issuer.privateKeyPEM), let parsedCertificate = try OpenSSL.readCertificate(issuer.certificatePEM) else {
                throw X509Error.incompleteContainer("cannot read the issuer")
            }
            issuerKey = parsedKey
            issuerCertificate = parsedCertificate
        }
        defer {
            if issuer != nil {
                EVP_PKEY_free(issuerKey)
                X509_free(issuerCertificate)
            }
        }
        X509_set_issuer_name(certificate, X509_get_subject_name(issuerCertificate))

        var extensions = ["basicConstraints": isCA ? "critical,CA:TRUE" : "critical,CA:FALSE",
                          "keyUsage": isCA ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature,keyAgreement",
                          "subjectKeyIdentifier": "hash"]
        if let usage { extensions["extendedKeyUsage"] = usage }
        if !names.isEmpty {
            extensions["subjectAltName"] = names.map { name in
                name.allSatisfy { $0.isNumber || $0 == "." } || name.contains(":") ? "IP:\(name)" : "DNS:\(name)"
            }.joined(separator: ",")
        }
        var context = X509V3_CTX()
        X509V3_set_ctx(&context, issuerCertificate, certificate, nil, nil, 0)
        for name in ["basicConstraints", "keyUsage", "extendedKeyUsage", "subjectAltName", "subjectKeyIdentifier"] {
            guard let value = extensions[name] else { continue }
            guard let ext = X509V3_EXT_conf_nid(nil, &context, OBJ_txt2nid(name), value) else {
                throw X509Error.notACertificate(reason: OpenSSL.drainErrors() ?? "bad extension \(name)")
            }
            X509_add_ext(certificate, ext, -1)
            X509_EXTENSION_free(ext)
        }
        guard X509_sign(certificate, issuerKey, EVP_sha256()) > 0 else {
            throw X509Error.notACertificate(reason: OpenSSL.drainErrors() ?? "X509_sign failed")
        }
        let certificatePEM = try OpenSSL.pem { PEM_write_bio_X509($0, certificate) }
        return IssuedCertificate(certificatePEM: certificatePEM,
                                 privateKeyPEM: try OpenSSL.pem { PEM_write_bio_PrivateKey($0, key, nil, nil, 0, nil, nil) },
                                 certificate: try Certificate(bytes: Array(certificatePEM.utf8)))
    }

    private static func generateKey() throws -> OpaquePointer {
        guard let context = EVP_PKEY_CTX_new_from_name(nil, "EC", nil) else { throw X509Error.notACertificate(reason: "no EC support") }
        defer { EVP_PKEY_CTX_free(context) }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen_init(context) == 1, EVP_PKEY_CTX_set_group_name(context, "P-256") == 1,
              EVP_PKEY_generate(context, &key) == 1, let key else {
            throw X509Error.notACertificate(reason: OpenSSL.drainErrors() ?? "key generation failed")
        }
        return key
    }
}

extension OpenSSL {
    /// Writes through a memory BIO and returns the text.
    static func pem(_ write: (OpaquePointer) -> Int32) throws -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { throw X509Error.notACertificate(reason: "BIO_new failed") }
        defer { BIO_free(bio) }
        guard write(bio) == 1 else { throw X509Error.notACertificate(reason: drainErrors() ?? "PEM write failed") }
        return bioString(bio)
    }

    static func readKey(_ pem: String) throws -> OpaquePointer? {
        let bytes = Array(pem.utf8)
        return bytes.withUnsafeBytes { buffer in
            let bio = BIO_new_mem_buf(buffer.baseAddress, Int32(buffer.count))
            defer { BIO_free(bio) }
            return PEM_read_bio_PrivateKey(bio, nil, nil, nil)
        }
    }

    static func readCertificate(_ pem: String) throws -> OpaquePointer? {
        let bytes = Array(pem.utf8)
        return bytes.withUnsafeBytes { buffer in
            let bio = BIO_new_mem_buf(buffer.baseAddress, Int32(buffer.count))
            defer { BIO_free(bio) }
            return PEM_read_bio_X509(bio, nil, nil, nil)
        }
    }
}
