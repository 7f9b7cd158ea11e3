/// The few text operations Tether used from Foundation's full edition, by Unicode scalar or
/// Character, so that no module needs more than `FoundationEssentials` (docs/architecture.md,
/// "What an endpoint pays").
extension StringProtocol {
    /// Without leading and trailing spaces and tabs (Unicode's horizontal white space).
    package func trimmingSpaces() -> String { trimming { $0.isWhitespace && !$0.isNewline } }

    /// Without leading and trailing white space, line breaks included.
    package func trimmingWhitespace() -> String { trimming { $0.isWhitespace } }

    /// Without leading and trailing characters that are in `characters`.
    package func trimming(charactersIn characters: String) -> String { trimming { characters.contains($0) } }

    /// Without the leading and trailing characters `remove` is true for.
    package func trimming(_ remove: (Character) -> Bool) -> String {
        guard let first = firstIndex(where: { !remove($0) }), let last = lastIndex(where: { !remove($0) }) else { return "" }
        return String(self[first...last])
    }

    /// Every occurrence of `target` replaced by `replacement`, matched by Unicode scalars (so
    /// `\n` is found inside a CR LF pair, as Foundation's `replacingOccurrences` finds it).
    package func replacingAll(_ target: String, with replacement: String) -> String {
        let needle = Array(target.unicodeScalars)
        guard !needle.isEmpty else { return String(self) }
        let scalars = Array(unicodeScalars)
        var result = String.UnicodeScalarView()
        var index = 0
        while index < scalars.count {
            if scalars[index] == needle[0], index + needle.count <= scalars.count, Array(scalars[index..<index + needle.count]) == needle {
                result.append(contentsOf: replacement.unicodeScalars)
                index += needle.count
            } else {
                result.append(scalars[index])
                index += 1
            }
        }
        return String(result)
    }

    /// Whether the two are the same text when case is ignored (Unicode's lower-case mapping).
    package func equalsIgnoringCase(_ other: some StringProtocol) -> Bool { lowercased() == other.lowercased() }

    /// Padded with spaces, or cut, to `width` characters.
    package func padded(to width: Int) -> String {
        count >= width ? String(prefix(width)) : String(self) + String(repeating: " ", count: width - count)
    }

    /// `%XX` sequences decoded as UTF-8; nil when one is malformed or the bytes are not UTF-8.
    package var percentDecoded: String? {
        var bytes: [UInt8] = []
        var utf8 = Array(self.utf8)[...]
        while let byte = utf8.popFirst() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard utf8.count >= 2, let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16) else { return nil }
            bytes.append(value)
            utf8 = utf8.dropFirst(2)
        }
        return String(validating: bytes, as: UTF8.self)
    }
}

extension Sequence where Element == UInt8 {
    /// The bytes as lower-case hexadecimal digits, two a byte, joined by `separator`.
    package func hexDigits(separator: String = "") -> String {
        let digits = Array("0123456789abcdef".unicodeScalars)
        return map { String(String.UnicodeScalarView([digits[Int($0 >> 4)], digits[Int($0 & 0x0F)]])) }.joined(separator: separator)
    }
}

extension BinaryInteger {
    /// The number in `radix`, upper-case, left-padded with zeros to `width` digits.
    package func digits(radix: Int = 10, width: Int, uppercase: Bool = true) -> String {
        let text = String(self, radix: radix, uppercase: uppercase)
        return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
    }
}

extension Double {
    /// The value with exactly `places` digits after the point (rounded half away from zero),
    /// as `String(format: "%.Nf")` writes it.
    package func fixed(_ places: Int) -> String {
        guard isFinite else { return "\(self)" }
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let scaled = (abs(self) * scale).rounded(.toNearestOrAwayFromZero)
        guard scaled < 9e15 else { return "\(self)" }
        let whole = Int(scaled)
        let integer = whole / Int(scale)
        let fraction = whole % Int(scale)
        let sign = self < 0 && whole != 0 ? "-" : ""
        return places == 0 ? "\(sign)\(integer)" : "\(sign)\(integer).\(fraction.digits(width: places))"
    }
}

extension StringProtocol {
    /// Where `text` first occurs, compared by UTF-8 bytes (Swift's `firstRange(of:)` and
    /// `contains(_:)` for strings link the regular-expression engine, a megabyte that
    /// tether-fetch need not carry).
    package func firstRange(ofText text: some StringProtocol) -> Range<Index>? {
        let needle = Array(text.utf8)
        guard let first = needle.first else { return startIndex..<startIndex }
        let bytes = utf8
        var index = bytes.startIndex
        while index != bytes.endIndex {
            if bytes[index] == first {
                var candidate = index
                var matched = 0
                while matched < needle.count, candidate != bytes.endIndex, bytes[candidate] == needle[matched] {
                    matched += 1
                    candidate = bytes.index(after: candidate)
                }
                if matched == needle.count { return index..<candidate }
            }
            index = bytes.index(after: index)
        }
        return nil
    }

    /// Whether `text` occurs, compared by UTF-8 bytes (see `firstRange(ofText:)`).
    package func containsText(_ text: some StringProtocol) -> Bool { firstRange(ofText: text) != nil }
}

/// ASCII classes of a UTF-8 byte, for text read by bytes: each of these characters is one
/// byte, and no byte of a longer character falls in any of them.
extension UInt8 {
    /// `0` to `9`.
    @inlinable package var isASCIIDigit: Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self) }
    /// `a` to `z`.
    @inlinable package var isASCIILowercase: Bool { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) }
    /// `a` to `z` or `A` to `Z`.
    @inlinable package var isASCIILetter: Bool { (self | 0x20).isASCIILowercase }
    /// `0` to `9` or `a` to `f`, as git writes object ids.
    @inlinable package var isLowercaseHexDigit: Bool { isASCIIDigit || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(self) }
}
