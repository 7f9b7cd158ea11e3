internal import COpenSSL
internal import COpenSSLShims
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Primitives

/// An error from OpenSSL or from certificate checks, with OpenSSL's own reason where it gave one.
package enum X509Error: Error, CustomStringConvertible, Sendable, Equatable {
    /// The bytes are neither a PEM nor a DER certificate.
    case notACertificate(reason: String)
    /// The bytes are not a PKCS#12 container.
    case notAContainer(reason: String)
    /// The container's password is wrong (the MAC does not verify).
    case wrongPassword
    /// The container lacks a certificate or a private key, or they do not belong together.
    case incompleteContainer(String)

    package var description: String {
        switch self {
        case .notACertificate(let reason): return "not a PEM or DER X.509 certificate (\(reason))"
        case .notAContainer(let reason): return "not a PKCS#12 container (\(reason))"
        case .wrongPassword: return "the PKCS#12 container's password is wrong"
        case .incompleteContainer(let what): return "the PKCS#12 container is incomplete: \(what)"
        }
    }
}

/// An X.509 certificate: its DER bytes and what people check about it.
package struct Certificate: Sendable, Hashable, Codable {
    /// The DER encoding.
    package let der: [UInt8]
    /// Subject and issuer in RFC 2253 form (`CN=kata,O=Example`).
    package let subject: String
    package let issuer: String
    /// The serial number in upper-case hex.
    package let serialNumber: String
    package let notBefore: Date
    package let notAfter: Date
    /// SHA-256 of the DER bytes, lower-case hex pairs joined by colons.
    package let sha256Fingerprint: String

    /// Parses one certificate from PEM or DER bytes (the first, when a PEM file holds several).
    package init(bytes: [UInt8]) throws {
        OpenSSL.initialize()
        guard bytes.count < 16 << 20 else { throw X509Error.notACertificate(reason: "\(bytes.count) bytes is far too large for a certificate") }
        let parsed: OpaquePointer? = bytes.withUnsafeBytes { buffer -> OpaquePointer? in
            guard let base = buffer.baseAddress else { return nil }
            let bio = BIO_new_mem_buf(base, Int32(buffer.count))
            defer { BIO_free(bio) }
            if let pem = PEM_read_bio_X509(bio, nil, nil, nil) { return pem }
            OpenSSL.discardErrors()
            var cursor: UnsafePointer<UInt8>? = base.assumingMemoryBound(to: UInt8.self)
            return d2i_X509(nil, &cursor, buffer.count)
        }
        guard let parsed else {
            throw X509Error.notACertificate(reason: OpenSSL.drainErrors() ?? "no certificate found")
        }
        defer { X509_free(parsed) }
        try self.init(handle: parsed)
    }

    init(handle: OpaquePointer) throws {
        var derPointer: UnsafeMutablePointer<UInt8>?
        let length = i2d_X509(handle, &derPointer)
        guard length > 0, let derPointer else {
            throw X509Error.notACertificate(reason: OpenSSL.drainErrors() ?? "cannot encode as DER")
        }
        der = Array(UnsafeBufferPointer(start: derPointer, count: Int(length)))
        tether_openssl_free(derPointer)
        subject = OpenSSL.name(X509_get_subject_name(handle))
        issuer = OpenSSL.name(X509_get_issuer_name(handle))
        serialNumber = OpenSSL.serial(X509_get0_serialNumber(handle))
        notBefore = OpenSSL.date(X509_get0_notBefore(handle))
        notAfter = OpenSSL.date(X509_get0_notAfter(handle))
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var digestLength: UInt32 = 0
        X509_digest(handle, EVP_sha256(), &digest, &digestLength)
        sha256Fingerprint = digest.prefix(Int(digestLength)).hexDigits(separator: ":")
    }

    /// The certificate as PEM text.
    package var pem: String {
        let body = Data(der).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return "-----BEGIN CERTIFICATE-----\n\(body)\n-----END CERTIFICATE-----\n"
    }

    /// The first 8 bytes of the fingerprint, for short listings (`3f:a1:…`).
    package var shortFingerprint: String {
        String(sha256Fingerprint.prefix(23))
    }

    /// Whether the certificate is valid at `date`.
    package func isValid(at date: Date) -> Bool {
        notBefore <= date && date <= notAfter
    }
}

/// A client identity: a PKCS#12 container's leaf certificate and a matching private key.
package struct ClientContainer: Sendable {
    /// The leaf certificate (the private key is checked, never kept or shown).
    package let certificate: Certificate
    /// Certificates bundled with the leaf (its chain), if any.
    package let chainLength: Int

    /// Opens a PKCS#12 container with its password and checks that its key matches its certificate.
    package init(pkcs12 bytes: [UInt8], password: String) throws {
        OpenSSL.initialize()
        guard bytes.count < 16 << 20 else { throw X509Error.notAContainer(reason: "\(bytes.count) bytes is far too large for a client container") }
        let container: OpaquePointer? = bytes.withUnsafeBytes { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress?.assumingMemoryBound(to: UInt8.self)
            return d2i_PKCS12(nil, &cursor, buffer.count)
        }
        guard let container else {
            throw X509Error.notAContainer(reason: OpenSSL.drainErrors() ?? "cannot decode")
        }
        defer { PKCS12_free(container) }
        var passwordBytes = Array(password.utf8CString)
        defer { for index in passwordBytes.indices { passwordBytes[index] = 0 } }
        guard PKCS12_verify_mac(container, passwordBytes, -1) == 1 else {
            OpenSSL.discardErrors()
            throw X509Error.wrongPassword
        }
        var key: OpaquePointer?
        var leaf: OpaquePointer?
        var chain: OpaquePointer?
        guard PKCS12_parse(container, passwordBytes, &key, &leaf, &chain) == 1 else {
            throw X509Error.notAContainer(reason: OpenSSL.drainErrors() ?? "cannot parse")
        }
        defer {
            if let key { EVP_PKEY_free(key) }
            if let leaf { X509_free(leaf) }
            if let chain { tether_x509_stack_free(chain) }
        }
        guard let key else { throw X509Error.incompleteContainer("no private key") }
        guard let leaf else { throw X509Error.incompleteContainer("no certificate that matches its private key") }
        guard X509_check_private_key(leaf, key) == 1 else {
            OpenSSL.discardErrors()
            throw X509Error.incompleteContainer("the private key does not belong to the certificate")
        }
        certificate = try Certificate(handle: leaf)
        chainLength = chain.map { Int(OPENSSL_sk_num($0)) } ?? 0
    }
}

/// OpenSSL's global set-up and error queue, in one place: every OpenSSL error of this package
/// is read (or discarded) here. `package`: PlatformTLS (the local platform's TLS server and
/// certificate authority, not shipped in tether) uses it too.
package enum OpenSSL {
    private static let initialized: Bool = {
        _ = tether_load_providers()
        return true
    }()

    package static func initialize() {
        _ = initialized
    }

    /// Reads and clears the thread's OpenSSL error queue; nil when it is empty.
    package static func drainErrors() -> String? {
        var reasons: [String] = []
        while case let code = ERR_get_error(), code != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            reasons.append(buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        return reasons.isEmpty ? nil : reasons.joined(separator: "; ")
    }

    /// Empties the thread's error queue after a failure that is reported otherwise.
    package static func discardErrors() {
        _ = drainErrors()
    }

    static func name(_ name: OpaquePointer?) -> String {
        guard let name, let bio = BIO_new(BIO_s_mem()) else { return "" }
        defer { BIO_free(bio) }
        X509_NAME_print_ex(bio, name, 0, tether_xn_flag_rfc2253())
        return bioString(bio)
    }

    static func serial(_ serial: UnsafePointer<ASN1_INTEGER>?) -> String {
        guard let serial, let number = ASN1_INTEGER_to_BN(serial, nil) else { return "" }
        defer { BN_free(number) }
        guard let hex = BN_bn2hex(number) else { return "" }
        defer { tether_openssl_free(hex) }
        return String(cString: hex)
    }

    static func date(_ time: UnsafePointer<ASN1_TIME>?) -> Date {
        var parts = tm()
        guard let time, ASN1_TIME_to_tm(time, &parts) == 1 else { return Date(timeIntervalSince1970: 0) }
        return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
    }

    package static func bioString(_ bio: OpaquePointer) -> String {
        var data: UnsafePointer<CChar>?
        let count = tether_bio_mem_data(bio, &data)
        guard let data, count > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: count), as: UTF8.self)
    }
}

/// SHA-256 of bytes, as lower-case hex: how a client container is told from another with the
/// same certificate (re-exported with a new password, say).
package func sha256Hex(_ bytes: [UInt8]) -> String {
    SSHSignature.hash(bytes, EVP_sha256()).hexDigits()
}

/// The SHA-256 and MD5 of what an open file holds from its start, read once in 64 KiB pieces,
/// as lower-case hex; nil when a read fails or the file holds more than `limit` bytes. How the
/// process sensor names an executable and matches it against execution-prevention rules
/// (docs/architecture.md, "Sensors").
package func fileDigests(fileDescriptor fd: Int32, limit: Int = .max) -> (sha256: String, md5: String)? {
    guard let sha = EVP_MD_CTX_new() else { return nil }
    defer { EVP_MD_CTX_free(sha) }
    guard let md5 = EVP_MD_CTX_new() else { return nil }
    defer { EVP_MD_CTX_free(md5) }
    guard EVP_DigestInit_ex(sha, EVP_sha256(), nil) == 1, EVP_DigestInit_ex(md5, EVP_md5(), nil) == 1 else { return nil }
    var buffer = [UInt8](repeating: 0, count: 65_536)
    var offset: off_t = 0
    while true {
        let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
        if count < 0 {
            if errno == EINTR { continue }
            return nil
        }
        if count == 0 { break }
        offset += off_t(count)
        // Longer than the caller reads: no hash (never a hash of part of a file).
        guard offset <= limit else { return nil }
        let updated = buffer.withUnsafeBytes { EVP_DigestUpdate(sha, $0.baseAddress, count) == 1 && EVP_DigestUpdate(md5, $0.baseAddress, count) == 1 }
        guard updated else { return nil }
    }
    func finish(_ context: OpaquePointer) -> String? {
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard EVP_DigestFinal_ex(context, &output, &length) == 1 else { return nil }
        return output.prefix(Int(length)).hexDigits()
    }
    guard let shaHex = finish(sha), let md5Hex = finish(md5) else { return nil }
    return (shaHex, md5Hex)
}

/// The OpenSSL this process runs with (`OpenSSL 3.0.19 27 Jan 2026`).
/// The OpenSSL this process runs with once something has loaded it; before that, the one it was
/// built with (the package depends on that release or a later one), so that asking loads nothing.
package var openSSLVersion: String {
    guard tether_openssl_loaded() != 0 else { return OPENSSL_VERSION_TEXT }
    return String(cString: OpenSSL_version(Int32(OPENSSL_VERSION)))
}
