#if canImport(Glibc)
import Glibc
#endif
import Primitives

/// OpenSSH's known_hosts for ssh remotes, as `ssh` reads it: plain and hashed (`|1|salt|hash`,
/// `ssh-keyscan -H`) host names, `[host]:port` for other ports than 22, `*` and `?` patterns and
/// `!` negations, `@revoked` keys (refused for every host), `@cert-authority` lines (a CA's key,
/// never a host's), and the key with its type compared whole. Tested against `ssh-keygen -F`.
package enum KnownHosts {
    package enum Verdict: Equatable { case trusted, refused(String) }

    /// Whether `key` (the SSH wire form of the host key) is the one `file` lists for `host` on `port`.
    package static func check(host: String, port: Int, key: [UInt8], file: String?) -> Verdict {
        // libgit2 hands an IPv6 address over in its URL brackets; known_hosts writes it bare.
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        let name = port == 22 ? bare : "[\(bare)]:\(port)"
        guard let file else { return .refused("ssh host \(name) cannot be checked: give a known_hosts file (--known-hosts)") }
        guard let data = PlainFiles.contents(file) else { return .refused("the known_hosts file \(file) cannot be read") }
        guard !key.isEmpty else { return .refused("ssh host \(name) did not present its key") }
        var hostListed = false
        var authorityOnly = false
        var trusted = false
        // Lines end with LF; a CR before it is dropped, as ssh drops it (split by bytes: Swift
        // would read CR LF as one character and the file as one line).
        for rawBytes in data.split(separator: 0x0A) {
            let raw = String(decoding: rawBytes.last == 0x0D ? rawBytes.dropLast() : rawBytes[...], as: UTF8.self)
            var fields = raw.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let first = fields.first, !first.hasPrefix("#") else { continue }
            var marker: String?
            if first.hasPrefix("@") {
                marker = first
                fields.removeFirst()
            }
            guard fields.count >= 3, let listed = PlainFiles.base64Decoded(Substring(fields[2])), keyType(listed) == fields[1] else { continue }
            if marker == "@revoked" {
                if listed == key { return .refused("ssh host \(name) presented a key that \(file) marks @revoked") }
                continue
            }
            guard matches(name, fields[0]) else { continue }
            switch marker {
            case nil:
                hostListed = true
                if listed == key { trusted = true }
            case "@cert-authority":
                authorityOnly = true
            default:
                continue  // a marker OpenSSH does not know: the line is ignored, as ssh does
            }
        }
        if trusted { return .trusted }
        if hostListed {
            return .refused("ssh host \(name) presented a key that is not the one in \(file): refusing (a man in the middle, or a changed host key)")
        }
        if authorityOnly {
            return .refused("ssh host \(name) is listed in \(file) only through a @cert-authority key, and Tether's ssh (libssh2) cannot check host certificates: list the host's own key")
        }
        return .refused("ssh host \(name) is not in \(file)")
    }

    /// Whether `name` is matched by a host field: a hashed name, or patterns of which one matches
    /// and no negated one does.
    static func matches(_ name: String, _ field: String) -> Bool {
        if field.hasPrefix("|1|") {
            let parts = field.split(separator: "|", omittingEmptySubsequences: false)
            guard parts.count == 4, let salt = PlainFiles.base64Decoded(parts[2]), salt.count == 20,
                  let hash = PlainFiles.base64Decoded(parts[3]) else { return false }
            return SHA1.hmac(key: salt, message: asciiLowercased(name)) == hash
        }
        let folded = String(decoding: asciiLowercased(field), as: UTF8.self)
        return Patterns.matchesList(String(decoding: asciiLowercased(name), as: UTF8.self), folded.split(separator: ","))
    }

    /// The bytes with ASCII letters lower-cased and nothing else changed, as OpenSSH folds names.
    static func asciiLowercased(_ text: some StringProtocol) -> [UInt8] {
        text.utf8.map { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) ? $0 | 0x20 : $0 }
    }

    /// The key type an SSH public key blob names (its first string).
    static func keyType(_ blob: [UInt8]) -> String? {
        guard blob.count >= 4 else { return nil }
        let length = Int(blob[0]) << 24 | Int(blob[1]) << 16 | Int(blob[2]) << 8 | Int(blob[3])
        guard length > 0, blob.count >= 4 + length else { return nil }
        return String(decoding: blob[4..<4 + length], as: UTF8.self)
    }

    /// The ssh port a remote URL names: `ssh://[user@]host[:port]/path` (22 when none), and 22 for
    /// the scp-like `user@host:path`.
    package static func sshPort(of url: String) -> Int {
        guard let scheme = url.firstRange(ofText: "://") else {
            // scp-like: `[user@host:port]:path` names a port, as libgit2 reads it.
            if url.hasPrefix("["), let close = url.firstIndex(of: "]"), let colon = url[..<close].lastIndex(of: ":"),
               let port = Int(url[url.index(after: colon)..<close]), url[..<colon].firstIndex(of: ":") == nil || url.firstIndex(of: "@") != nil {
                return port
            }
            return 22
        }
        var authority = url[scheme.upperBound...].prefix { $0 != "/" }
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            authority = authority[authority.index(after: close)...]
        } else if let colon = authority.firstIndex(of: ":") {
            authority = authority[colon...]
        } else {
            return 22
        }
        guard authority.hasPrefix(":"), let port = Int(authority.dropFirst()) else { return 22 }
        return port
    }
}

/// SHA-1 and HMAC-SHA1, for known_hosts' hashed names only (OpenSSH's `|1|` format). GitSource
/// links no crypto library of its own (libgit2's is internal).
enum SHA1 {
    static func hmac(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var block = key.count > 64 ? digest(key) : key
        block += [UInt8](repeating: 0, count: 64 - block.count)
        let inner = digest(block.map { $0 ^ 0x36 } + message)
        return digest(block.map { $0 ^ 0x5c } + inner)
    }

    static func digest(_ message: [UInt8]) -> [UInt8] {
        var h: [UInt32] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
        var data = message + [0x80]
        while data.count % 64 != 56 { data.append(0) }
        let bits = UInt64(message.count) * 8
        for shift in stride(from: 56, through: 0, by: -8) { data.append(UInt8(truncatingIfNeeded: bits >> UInt64(shift))) }
        var w = [UInt32](repeating: 0, count: 80)
        for chunk in stride(from: 0, to: data.count, by: 64) {
            for i in 0..<16 {
                w[i] = UInt32(data[chunk + 4 * i]) << 24 | UInt32(data[chunk + 4 * i + 1]) << 16 | UInt32(data[chunk + 4 * i + 2]) << 8 | UInt32(data[chunk + 4 * i + 3])
            }
            for i in 16..<80 { w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotatedLeft(1) }
            var (a, b, c, d, e) = (h[0], h[1], h[2], h[3], h[4])
            for i in 0..<80 {
                let (f, k): (UInt32, UInt32) = switch i {
                case 0..<20: ((b & c) | (~b & d), 0x5A827999)
                case 20..<40: (b ^ c ^ d, 0x6ED9EBA1)
                case 40..<60: ((b & c) | (b & d) | (c & d), 0x8F1BBCDC)
                default: (b ^ c ^ d, 0xCA62C1D6)
                }
                let temp = a.rotatedLeft(5) &+ f &+ e &+ k &+ w[i]
                (e, d, c, b, a) = (d, c, b.rotatedLeft(30), a, temp)
            }
            h[0] = h[0] &+ a; h[1] = h[1] &+ b; h[2] = h[2] &+ c; h[3] = h[3] &+ d; h[4] = h[4] &+ e
        }
        return h.flatMap { value in (0..<4).map { UInt8(truncatingIfNeeded: value >> UInt32(24 - 8 * $0)) } }
    }
}

private extension UInt32 {
    func rotatedLeft(_ count: UInt32) -> UInt32 { self << count | self >> (32 - count) }
}
