/// Text from a repository or the network made safe for a terminal, a log or a report: control
/// characters (ESC, CR, backspace, the C1 range) and Unicode direction overrides are shown
/// escaped (`\x1b`), so a file name or a value can never move the cursor, clear a line or
/// paint text of its own. Long values are cut to a readable length.
package enum TerminalText {
    /// `text` with every control character escaped except line feeds and tabs. Tether's own
    /// colours are applied after escaping (`StyledText`), never let through it.
    package static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: needsEscaping) else { return text }
        var result = ""
        result.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            if needsEscaping(scalar) {
                result += scalar.value <= 0xFF ? "\\x" + hex(scalar.value, width: 2) : "\\u{" + hex(scalar.value, width: 4) + "}"
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    /// `text` escaped and, past `limit` characters, cut with how long it was.
    /// Counted in Unicode scalars, so combining marks cannot make a long text look short; only
    /// the head is looked at, so a 1 MB value costs no more than a short one.
    package static func excerpt(_ text: String, limit: Int = 120) -> String {
        var head = ""
        head.unicodeScalars.append(contentsOf: text.unicodeScalars.prefix(limit + 1))
        let safe = escaped(head).replacingNewlines()
        if head.unicodeScalars.count <= limit, safe.unicodeScalars.count <= limit { return safe }
        var cut = ""
        cut.unicodeScalars.append(contentsOf: safe.unicodeScalars.prefix(limit))
        return cut + "… (\(text.utf8.count) bytes)"
    }

    /// Whether a terminal would act on `scalar` (a control character other than line feed and
    /// tab, or a direction override).
    package static func needsEscaping(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x0A, 0x09: return false
        case 0x00...0x1F, 0x7F, 0x80...0x9F: return true
        case 0x202A...0x202E, 0x2066...0x2069: return true  // direction overrides ("Trojan Source")
        default: return false
        }
    }

    private static func hex(_ value: UInt32, width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}

private extension String {
    /// Line feeds shown as `\n` (an excerpt stays on one line).
    func replacingNewlines() -> String {
        var result = ""
        for character in self {
            if character == "\n" { result += "\\n" } else { result.append(character) }
        }
        return result
    }
}
