internal import COpenSSL
internal import COpenSSLShims
import FoundationEssentials
import Primitives

/// The outcome of checking a commit's signature against an allowed-signers file.
package enum SignatureVerdict: Sendable, Equatable, CustomStringConvertible {
    /// Signed by a key the allowed-signers file lists, for these principals.
    case verified(principal: String, key: String)
    case unsigned
    /// Signed, but not with an SSH signature (e.g. OpenPGP), which Tether does not accept.
    case notSSH
    /// The signature does not verify (a changed commit, or a forged signature).
    case invalid(reason: String, key: String?)
    /// A good signature by a key the allowed-signers file does not list.
    case unknownSigner(key: String)
    /// A good signature by a listed key whose entry does not allow it here: another namespace,
    /// or a commit time outside its valid-after/valid-before (the reason names which and when).
    case notAllowed(key: String, reason: String)

    package var isTrusted: Bool { if case .verified = self { return true }; return false }

    package var description: String {
        switch self {
        case .verified(let principal, let key): return "signed by \(principal) (\(key))"
        case .unsigned: return "not signed"
        case .notSSH: return "signed, but not with an SSH signature (gpg.format=ssh)"
        case .invalid(let reason, let key): return "bad signature\(key.map { " by key \($0)" } ?? ""): \(reason)"
        case .unknownSigner(let key): return "signed by key \(key), which the allowed signers do not list"
        case .notAllowed(let key, let reason): return "signed by key \(key), but \(reason)"
        }
    }
}

/// One entry of an allowed-signers file (ssh-keygen's format):
/// `principals [options] keytype base64-key [comment]`.
package struct AllowedSigner: Sendable {
    package let principals: String
    package let keyBlob: [UInt8]
    /// The namespaces the key may sign in (nil: any).
    package var namespaces: [String]?
    /// `valid-after` and `valid-before` as written and in seconds since 1970: the key signs
    /// only commits made in between, as `ssh-keygen -Y verify` checks them at the commit's time.
    package var validAfter: (text: String, seconds: Int64)?
    package var validBefore: (text: String, seconds: Int64)?
    /// `cert-authority`: the key is a CA's, and vouches for the user certificates it signed
    /// (for a principal the entry's patterns match); it never signs a commit itself.
    package var isCertificateAuthority = false

    init(principals: String, keyBlob: [UInt8]) {
        self.principals = principals
        self.keyBlob = keyBlob
    }

    /// Why this entry does not allow a signature in `namespace` made at `time`; nil when it does.
    func refusal(namespace: String, at time: Int64?) -> String? {
        if let namespaces, !Patterns.matchesList(namespace, namespaces.map { Substring($0) }) {
            return "its allowed-signers entry (\(principals)) limits it to namespaces=\"\(namespaces.joined(separator: ","))\", not \(namespace)"
        }
        guard let time else { return nil }
        if let validAfter, time < validAfter.seconds {
            return "its allowed-signers entry (\(principals)) says valid-after=\"\(validAfter.text)\" (\(SSHSignature.utc(validAfter.seconds))) and the commit was made at \(SSHSignature.utc(time)): not yet valid"
        }
        if let validBefore, time > validBefore.seconds {
            return "its allowed-signers entry (\(principals)) says valid-before=\"\(validBefore.text)\" (\(SSHSignature.utc(validBefore.seconds))) and the commit was made at \(SSHSignature.utc(time)): expired"
        }
        return nil
    }
}

/// Verifies SSH signatures (the SSHSIG format of `git commit -S` with `gpg.format=ssh`) with
/// OpenSSL: Ed25519, ECDSA (P-256, P-384, P-521) and RSA (rsa-sha2-256/512) keys.
package enum SSHSignature {
    /// Reads an allowed-signers file; lines it cannot use (unknown key types or options, a date
    /// ssh-keygen cannot read) are skipped.
    package static func allowedSigners(_ text: String) -> [AllowedSigner] {
        var signers: [AllowedSigner] = []
        for rawLine in text.split(separator: "\n") {
            let line = rawLine.trimmingSpaces()
            if line.isEmpty || line.hasPrefix("#") { continue }
            let tokens = tokenize(line)
            guard tokens.count >= 3 else { continue }
            var index = 1
            var options: [(name: String, value: String)] = []
            if !isKeyType(tokens[1]) {
                options = self.options(tokens[1])
                index = 2
            }
            guard tokens.count > index + 1, isKeyType(tokens[index]), let blob = Data(base64Encoded: tokens[index + 1]) else { continue }
            var signer = AllowedSigner(principals: tokens[0], keyBlob: Array(blob))
            // As OpenSSH's sshsigopt_parse: an unknown or repeated option, a date it cannot read
            // or an empty time range makes the whole line unusable (a typo must not widen a key).
            var usable = Set(options.map(\.name)).count == options.count
            for (name, value) in options {
                switch name {
                case "cert-authority":
                    signer.isCertificateAuthority = true
                case "namespaces":
                    signer.namespaces = value.split(separator: ",").map(String.init)
                case "valid-after", "valid-before":
                    guard let seconds = absoluteTime(value), seconds > 0 else { usable = false; continue }
                    if name == "valid-after" { signer.validAfter = (value, seconds) } else { signer.validBefore = (value, seconds) }
                default:
                    usable = false
                }
            }
            if let after = signer.validAfter, let before = signer.validBefore, before.seconds <= after.seconds { usable = false }
            if usable { signers.append(signer) }
        }
        return signers
    }

    /// Checks an armored SSH signature over `payload` in `namespace` ("git" for commits).
    /// `time`, when given, is when the commit was made (its committer time, as git passes it to
    /// `ssh-keygen -Y verify`): a key's valid-after and valid-before are checked against it.
    package static func verify(armored: String, payload: [UInt8], allowed: [AllowedSigner], namespace: String = "git", at time: Int64? = nil) -> SignatureVerdict {
        guard armored.contains("-----BEGIN SSH SIGNATURE-----") else { return .notSSH }
        let body = armored.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        guard let blob = Data(base64Encoded: body) else { return .invalid(reason: "the signature is not valid base64", key: nil) }
        var reader = SSHReader(Array(blob))
        guard reader.readBytes(6) == Array("SSHSIG".utf8), reader.readUInt32() == 1,
              let publicKey = reader.readString(), let signedNamespace = reader.readString(), let reserved = reader.readString(),
              let hashName = reader.readString(), let signature = reader.readString() else {
            return .invalid(reason: "not an SSHSIG signature", key: nil)
        }
        // A user certificate: its CA's signature checked first; the signature is then the key's inside it.
        var certificate: SSHCertificate?
        var signingKey = publicKey
        if SSHCertificate.isCertificate(publicKey) {
            guard let parsed = SSHCertificate(publicKey) else { return .invalid(reason: "a malformed SSH certificate", key: nil) }
            do {
                guard try verify(signature: parsed.signature, data: parsed.signedPart, publicKey: parsed.authority) else {
                    return .invalid(reason: "the certificate's signature does not match its CA key", key: fingerprint(parsed.key))
                }
            } catch {
                return .invalid(reason: "the certificate: \(error)", key: fingerprint(parsed.key))
            }
            certificate = parsed
            signingKey = parsed.key
        }
        let key = fingerprint(signingKey)
        guard String(decoding: signedNamespace, as: UTF8.self) == namespace else {
            return .invalid(reason: "signed for namespace '\(String(decoding: signedNamespace, as: UTF8.self))', not '\(namespace)'", key: key)
        }
        let hashAlgorithm = String(decoding: hashName, as: UTF8.self)
        guard let digest = hashAlgorithm == "sha512" ? EVP_sha512() : (hashAlgorithm == "sha256" ? EVP_sha256() : nil) else {
            return .invalid(reason: "unsupported hash \(hashAlgorithm)", key: key)
        }
        var signed = Array("SSHSIG".utf8)
        SSHReader.appendString(&signed, signedNamespace)
        SSHReader.appendString(&signed, reserved)
        SSHReader.appendString(&signed, hashName)
        SSHReader.appendString(&signed, hash(payload, digest))
        do {
            guard try verify(signature: signature, data: signed, publicKey: signingKey) else {
                return .invalid(reason: "the signature does not match the commit", key: key)
            }
        } catch {
            return .invalid(reason: "\(error)", key: key)
        }
        if let certificate { return verdict(certificate, key: key, allowed: allowed, namespace: namespace, at: time) }
        let listed = allowed.filter { $0.keyBlob == publicKey && !$0.isCertificateAuthority }
        guard let first = listed.first else { return .unknownSigner(key: key) }
        guard let signer = listed.first(where: { $0.refusal(namespace: namespace, at: time) == nil }) else {
            return .notAllowed(key: key, reason: first.refusal(namespace: namespace, at: time) ?? "its entry does not allow it")
        }
        return .verified(principal: signer.principals, key: key)
    }

    /// A good signature by a certificate's key: trusted when a cert-authority entry lists the
    /// CA, the certificate is a user certificate valid at the commit's time, and one of its
    /// principals is one the entry's patterns match (as `ssh-keygen -Y verify` checks them).
    private static func verdict(_ certificate: SSHCertificate, key: String, allowed: [AllowedSigner], namespace: String, at time: Int64?) -> SignatureVerdict {
        let described = "\(key) (certificate \"\(certificate.keyID)\" by CA \(fingerprint(certificate.authority)))"
        let authorities = allowed.filter { $0.isCertificateAuthority && $0.keyBlob == certificate.authority }
        guard !authorities.isEmpty else { return .unknownSigner(key: described) }
        guard certificate.isUserCertificate else { return .notAllowed(key: described, reason: "it is a host certificate, not a user certificate") }
        if let time {
            if time < certificate.validAfter {
                return .notAllowed(key: described, reason: "the certificate is valid from \(utc(certificate.validAfter)) and the commit was made at \(utc(time)): not yet valid")
            }
            if time >= certificate.validBefore {
                return .notAllowed(key: described, reason: "the certificate is valid until \(utc(certificate.validBefore)) and the commit was made at \(utc(time)): expired")
            }
        }
        var reason = "the certificate's principals (\(certificate.principals.joined(separator: ", "))) are none its CA's entry allows"
        for authority in authorities {
            let patterns = authority.principals.split(separator: ",")
            guard let principal = certificate.principals.first(where: { Patterns.matchesList($0, patterns) }) else { continue }
            if let refusal = authority.refusal(namespace: namespace, at: time) {
                reason = refusal
                continue
            }
            return .verified(principal: principal, key: described)
        }
        return .notAllowed(key: described, reason: reason)
    }

    /// `SHA256:…` as ssh-keygen prints a key's fingerprint.
    package static func fingerprint(_ blob: [UInt8]) -> String {
        "SHA256:" + Data(hash(blob, EVP_sha256())).base64EncodedString().trimming(charactersIn: "=")
    }

    private struct VerifyError: Error, CustomStringConvertible { let description: String }

    private static func verify(signature: [UInt8], data: [UInt8], publicKey: [UInt8]) throws -> Bool {
        OpenSSL.initialize()
        var keyReader = SSHReader(publicKey)
        guard let typeBytes = keyReader.readString() else { throw VerifyError(description: "malformed public key") }
        let keyType = String(decoding: typeBytes, as: UTF8.self)
        var signatureReader = SSHReader(signature)
        guard let signatureType = signatureReader.readString().map({ String(decoding: $0, as: UTF8.self) }),
              var signatureBlob = signatureReader.readString() else { throw VerifyError(description: "malformed signature") }
        var digest: OpaquePointer?
        let key: OpaquePointer?
        switch keyType {
        case "ssh-ed25519":
            guard let raw = keyReader.readString(), raw.count == 32 else { throw VerifyError(description: "malformed Ed25519 key") }
            key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, raw, raw.count)
        case "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521":
            guard keyReader.readString() != nil, let point = keyReader.readString() else { throw VerifyError(description: "malformed ECDSA key") }
            let prefixes: [String: String] = [
                "ecdsa-sha2-nistp256": "3059301306072a8648ce3d020106082a8648ce3d030107034200",
                "ecdsa-sha2-nistp384": "3076301006072a8648ce3d020106052b81040022036200",
                "ecdsa-sha2-nistp521": "30819b301006072a8648ce3d020106052b8104002303818600",
            ]
            let spki = hex(prefixes[keyType]!) + point
            key = spki.withUnsafeBufferPointer { buffer in
                var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
                return d2i_PUBKEY(nil, &cursor, buffer.count)
            }
            digest = keyType.hasSuffix("256") ? EVP_sha256() : (keyType.hasSuffix("384") ? EVP_sha384() : EVP_sha512())
            var parts = SSHReader(signatureBlob)
            guard let r = parts.readString(), let s = parts.readString() else { throw VerifyError(description: "malformed ECDSA signature") }
            signatureBlob = DER.sequence(DER.integer(r) + DER.integer(s))
        case "ssh-rsa":
            guard let exponent = keyReader.readString(), let modulus = keyReader.readString() else { throw VerifyError(description: "malformed RSA key") }
            let pkcs1 = DER.sequence(DER.integer(modulus) + DER.integer(exponent))
            key = pkcs1.withUnsafeBufferPointer { buffer in
                var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
                return d2i_PublicKey(EVP_PKEY_RSA, nil, &cursor, buffer.count)
            }
            switch signatureType {
            case "rsa-sha2-512": digest = EVP_sha512()
            case "rsa-sha2-256": digest = EVP_sha256()
            default: throw VerifyError(description: "RSA signature type \(signatureType) is not accepted (use rsa-sha2-256 or rsa-sha2-512)")
            }
        default:
            throw VerifyError(description: "key type \(keyType) is not supported")
        }
        guard let key else { throw VerifyError(description: "OpenSSL cannot read the \(keyType) key: \(OpenSSL.drainErrors() ?? "unknown error")") }
        defer { EVP_PKEY_free(key) }
        guard let context = EVP_MD_CTX_new() else { throw VerifyError(description: "EVP_MD_CTX_new failed") }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestVerifyInit(context, nil, digest, nil, key) == 1 else {
            throw VerifyError(description: OpenSSL.drainErrors() ?? "EVP_DigestVerifyInit failed")
        }
        let result = EVP_DigestVerify(context, signatureBlob, signatureBlob.count, data, data.count)
        OpenSSL.discardErrors()
        return result == 1
    }

    static func hash(_ data: [UInt8], _ digest: OpaquePointer?) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        EVP_Digest(data, data.count, &output, &length, digest, nil)
        return Array(output.prefix(Int(length)))
    }

    private static func isKeyType(_ token: String) -> Bool {
        token.hasPrefix("ssh-") || token.hasPrefix("ecdsa-sha2-") || token.hasPrefix("sk-")
    }

    /// Splits on spaces, keeping double-quoted parts together.
    /// An options field (`namespaces="git,file",valid-before="20300101"`) as names and values,
    /// split at commas outside quotes; names lower-cased, values unquoted.
    private static func options(_ field: String) -> [(name: String, value: String)] {
        var parts: [String] = []
        var current = ""
        var quoted = false
        for character in field {
            if character == "\"" { quoted.toggle(); continue }
            if character == "," && !quoted {
                parts.append(current)
                current = ""
            } else {
                current.append(character)
            }
        }
        parts.append(current)
        return parts.filter { !$0.isEmpty }.map { part in
            guard let equals = part.firstIndex(of: "=") else { return (part.lowercased(), "") }
            return (part[..<equals].lowercased(), String(part[part.index(after: equals)...]))
        }
    }

    /// OpenSSH's absolute time: `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, in the
    /// machine's time zone unless it ends in `Z` (UTC); nil for anything else.
    static func absoluteTime(_ text: String) -> Int64? {
        var digits = Substring(text)
        let utc = digits.hasSuffix("Z") || digits.hasSuffix("z")
        if utc { digits = digits.dropLast() }
        guard [8, 12, 14].contains(digits.count), digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        let numbers = Array(digits.utf8).map { Int32($0 - UInt8(ascii: "0")) }
        func field(_ offset: Int, _ length: Int) -> Int32 {
            offset + length <= numbers.count ? numbers[offset..<offset + length].reduce(0) { $0 * 10 + $1 } : 0
        }
        var parts = tm()
        parts.tm_year = field(0, 4) - 1900
        parts.tm_mon = field(4, 2) - 1
        parts.tm_mday = field(6, 2)
        parts.tm_hour = field(8, 2)
        parts.tm_min = field(10, 2)
        parts.tm_sec = field(12, 2)
        parts.tm_isdst = -1
        guard (0...11).contains(parts.tm_mon), (1...31).contains(parts.tm_mday), parts.tm_hour < 24, parts.tm_min < 60, parts.tm_sec < 61 else { return nil }
        let seconds = utc ? timegm(&parts) : mktime(&parts)
        return seconds == -1 ? nil : Int64(seconds)
    }

    /// A time as `2024-06-01 12:00:00 UTC`.
    static func utc(_ seconds: Int64) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) UTC"
    }

    private static func tokenize(_ line: String) -> [String] {
        var tokens: [String] = []
        var current = ""
        var quoted = false
        for character in line {
            if character == "\"" { quoted.toggle(); current.append(character); continue }
            if (character == " " || character == "\t") && !quoted {
                if !current.isEmpty { tokens.append(current); current = "" }
            } else {
                current.append(character)
            }
        }
        if !current.isEmpty { tokens.append(current) }
        return tokens
    }

    private static func hex(_ text: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            bytes.append(UInt8(text[index..<next], radix: 16)!)
            index = next
        }
        return bytes
    }
}

/// Message digests.
package enum Digest {
    /// SHA-256 as lower-case hex.
    package static func sha256Hex(_ bytes: [UInt8]) -> String {
        SSHSignature.hash(bytes, EVP_sha256()).hexDigits()
    }
}

/// Reads SSH wire types (RFC 4251): uint32, string.
/// An OpenSSH certificate (PROTOCOL.certkeys): the key it certifies, for whom and when, and
/// the CA's signature over everything before that signature.
struct SSHCertificate {
    /// The certified key, as a plain public key blob (`ssh-ed25519` …).
    let key: [UInt8]
    let isUserCertificate: Bool
    let keyID: String
    let principals: [String]
    /// Seconds since 1970; `validBefore` is exclusive (0xFFFF… means forever).
    let validAfter: Int64
    let validBefore: Int64
    /// The CA's public key blob, and its signature over `signedPart`.
    let authority: [UInt8]
    let signature: [UInt8]
    let signedPart: [UInt8]

    static func isCertificate(_ blob: [UInt8]) -> Bool {
        var reader = SSHReader(blob)
        return reader.readString().map { String(decoding: $0, as: UTF8.self).hasSuffix("-cert-v01@openssh.com") } ?? false
    }

    init?(_ blob: [UInt8]) {
        var reader = SSHReader(blob)
        guard let typeBytes = reader.readString() else { return nil }
        let type = String(decoding: typeBytes, as: UTF8.self)
        guard type.hasSuffix("-cert-v01@openssh.com"), reader.readString() != nil else { return nil }  // the nonce
        let plainType = String(type.dropLast("-cert-v01@openssh.com".count))
        // The key's own fields, in the plain key's order, re-encoded as that key.
        let fieldCount: Int
        switch plainType {
        case "ssh-ed25519": fieldCount = 1
        case "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa": fieldCount = 2
        default: return nil
        }
        var key: [UInt8] = []
        SSHReader.appendString(&key, Array(plainType.utf8))
        for _ in 0..<fieldCount {
            guard let field = reader.readString() else { return nil }
            SSHReader.appendString(&key, field)
        }
        self.key = key
        guard reader.readUInt64() != nil, let certificateType = reader.readUInt32(), let keyID = reader.readString(),
              let principalList = reader.readString(), let after = reader.readUInt64(), let before = reader.readUInt64(),
              reader.readString() != nil, reader.readString() != nil, reader.readString() != nil,  // critical options, extensions, reserved
              let authority = reader.readString() else { return nil }
        let signedLength = reader.position
        guard let signature = reader.readString(), reader.position == blob.count else { return nil }
        isUserCertificate = certificateType == 1
        self.keyID = String(decoding: keyID, as: UTF8.self)
        var names: [String] = []
        var principalReader = SSHReader(principalList)
        while principalReader.position < principalList.count {
            guard let name = principalReader.readString() else { return nil }
            names.append(String(decoding: name, as: UTF8.self))
        }
        principals = names
        validAfter = Int64(clamping: after)
        validBefore = Int64(clamping: before)
        self.authority = authority
        self.signature = signature
        signedPart = Array(blob[..<signedLength])
    }
}

struct SSHReader {
    private let bytes: [UInt8]
    private var offset = 0

    /// How many bytes were read.
    var position: Int { offset }

    mutating func readUInt64() -> UInt64? {
        guard let raw = readBytes(8) else { return nil }
        return raw.reduce(0) { ($0 << 8) | UInt64($1) }
    }

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func readBytes(_ count: Int) -> [UInt8]? {
        guard count >= 0, offset + count <= bytes.count else { return nil }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    mutating func readUInt32() -> UInt32? {
        guard let raw = readBytes(4) else { return nil }
        return raw.reduce(0) { ($0 << 8) | UInt32($1) }
    }

    mutating func readString() -> [UInt8]? {
        guard let length = readUInt32() else { return nil }
        return readBytes(Int(length))
    }

    static func appendString(_ output: inout [UInt8], _ value: [UInt8]) {
        let length = UInt32(value.count)
        output += [UInt8(length >> 24), UInt8((length >> 16) & 0xFF), UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF)]
        output += value
    }
}

/// Just enough DER for public keys and ECDSA signatures.
enum DER {
    static func length(_ count: Int) -> [UInt8] {
        if count < 0x80 { return [UInt8(count)] }
        var bytes: [UInt8] = []
        var value = count
        while value > 0 { bytes.insert(UInt8(value & 0xFF), at: 0); value >>= 8 }
        return [0x80 | UInt8(bytes.count)] + bytes
    }

    /// An INTEGER from an SSH mpint (already two's complement, big-endian).
    static func integer(_ mpint: [UInt8]) -> [UInt8] {
        var content = mpint.isEmpty ? [0] : mpint
        if content[0] & 0x80 != 0 { content.insert(0, at: 0) }
        return [0x02] + length(content.count) + content
    }

    static func sequence(_ content: [UInt8]) -> [UInt8] {
        [0x30] + length(content.count) + content
    }
}
