/// OpenSSH's patterns (match.c), for known_hosts host names and allowed-signers namespaces.
package enum Patterns {
    /// Whether `name` matches the comma-separated list: a pattern matches it and no negated
    /// pattern (`!pattern`) does.
    package static func matchesList(_ name: some StringProtocol, _ patterns: [Substring]) -> Bool {
        var matched = false
        for pattern in patterns {
            if pattern.hasPrefix("!") {
                if matches(Array(pattern.dropFirst().utf8), Array(name.utf8)) { return false }
            } else if matches(Array(pattern.utf8), Array(name.utf8)) {
                matched = true
            }
        }
        return matched
    }

    /// Whether `text` matches `pattern`: `*` any run of bytes, `?` one byte, anything else itself.
    package static func matches(_ pattern: [UInt8], _ text: [UInt8]) -> Bool {
        var p = 0, t = 0
        var star: Int?, resume = 0
        while t < text.count {
            if p < pattern.count && (pattern[p] == UInt8(ascii: "?") || pattern[p] == text[t]) {
                p += 1
                t += 1
            } else if p < pattern.count && pattern[p] == UInt8(ascii: "*") {
                star = p
                resume = t
                p += 1
            } else if let at = star {
                p = at + 1
                resume += 1
                t = resume
            } else {
                return false
            }
        }
        while p < pattern.count && pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }
}
