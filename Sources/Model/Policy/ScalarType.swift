import YAMLReader

/// The type of a YAML scalar under YAML 1.2's core schema — what JSON Schema tools and current
/// YAML loaders read — decided without regular expressions: quoted scalars are strings; plain
/// ones are null, booleans (`true`/`false`), integers (decimal, `0x` hex, `0o` octal), numbers
/// or strings. An explicit standard tag (`!!str 443`) wins; other tags are refused
/// (`PolicyDecoder.unsupportedTag`). Plain scalars that YAML 1.1 reads differently are found by
/// `yaml11Difference`, so that a typed field never takes a value some tool reads otherwise.
enum ScalarType: Equatable {
    case null
    case boolean(Bool)
    case integer(Int)
    case float
    case string(String)

    init?(_ node: YAMLNode) {
        guard case .scalar(let scalar) = node else { return nil }
        let text = scalar.string
        switch scalar.tag {
        case "":
            break
        case Self.yamlTag("str"), "!":
            self = .string(text)
            return
        case Self.yamlTag("int"):
            self = ScalarType.parseInteger(text).map(ScalarType.integer) ?? .string(text)
            return
        case Self.yamlTag("bool"):
            self = ScalarType.parseBoolean(text).map(ScalarType.boolean) ?? .string(text)
            return
        case Self.yamlTag("null"):
            self = .null
            return
        default:
            self = .string(text)
            return
        }
        guard scalar.isPlain else {
            self = .string(text)
            return
        }
        switch text {
        case "", "~", "null", "Null", "NULL":
            self = .null
            return
        default:
            break
        }
        if let value = ScalarType.parseBoolean(text) {
            self = .boolean(value)
        } else if let value = ScalarType.parseInteger(text) {
            self = .integer(value)
        } else if ScalarType.isFloat(text) {
            self = .float
        } else {
            self = .string(text)
        }
    }

    /// The tags a policy may carry: YAML's standard ones and the non-specific `!`.
    static let standardTags: Set<String> = Set(["", "!"] + ["str", "int", "bool", "null", "float", "map", "seq"].map(yamlTag))

    /// The full name of a YAML standard tag (`!!str` is `tag:yaml.org,2002:str`).
    static func yamlTag(_ name: String) -> String { "tag:yaml.org,2002:" + name }

    /// For a plain scalar that YAML 1.1 (PyYAML, older tools) reads differently from YAML 1.2:
    /// what 1.1 reads, what 1.2 reads, and the spelling both read alike. nil when they agree.
    static func yaml11Difference(_ node: YAMLNode) -> (yaml11: String, yaml12: String, write: String)? {
        guard case .scalar(let scalar) = node, scalar.isPlain, scalar.tag.isEmpty else { return nil }
        let text = scalar.string
        // Every spelling below starts with one of these: most values are decided by one byte.
        guard let lead = text.utf8.first, "yYnNoO0123456789+-".utf8.contains(lead) else { return nil }
        // A plain decimal without a leading zero (`443`) reads alike in both.
        if Self.unsignedDecimal(text) != nil && (text.utf8.count == 1 || lead != UInt8(ascii: "0")) { return nil }
        // None of the spellings below holds a dot, so a dotted scalar (an address, a float) is
        // none of them. (1.1's floats with '_' or ':', such as 1_000.5, are not looked for.)
        if text.utf8.contains(UInt8(ascii: ".")) { return nil }
        switch text {
        case "y", "Y", "yes", "Yes", "YES", "on", "On", "ON":
            return ("true", "the string \"\(text)\"", "true")
        case "n", "N", "no", "No", "NO", "off", "Off", "OFF":
            return ("false", "the string \"\(text)\"", "false")
        default:
            break
        }
        var digits = Substring(text)
        var sign = ""
        if let first = digits.first, first == "-" || first == "+" {
            sign = first == "-" ? "-" : ""
            digits = digits.dropFirst()
        }
        guard let first = digits.utf8.first, first.isASCIIDigit else { return nil }
        let allDigits = digits.utf8.allSatisfy(\.isASCIIDigit)
        if allDigits, digits.count > 1, first == UInt8(ascii: "0"), let decimal = Int(digits, radix: 10) {
            // 1.1: octal when every digit is below 8; 1.2: decimal.
            let octal = Int(digits.dropFirst(), radix: 8)
            return (octal.map { "\(sign)\($0) (octal)" } ?? "the string \"\(text)\"", "\(sign)\(decimal)", "\(sign)\(decimal)")
        }
        if digits.contains("_"), let value = Int(digits.filter { $0 != "_" }, radix: 10) {
            return ("\(sign)\(value)", "the string \"\(text)\"", "\(sign)\(value)")
        }
        if digits.hasPrefix("0b"), let value = Int(digits.dropFirst(2), radix: 2) {
            return ("\(sign)\(value)", "the string \"\(text)\"", "\(sign)\(value)")
        }
        if digits.hasPrefix("0o"), let value = Int(digits.dropFirst(2), radix: 8) {
            return ("the string \"\(text)\"", "\(sign)\(value)", "\(sign)\(value)")
        }
        if digits.contains(":") {
            // 1.1's base 60: 1:30 is 90.
            var value = 0
            for part in digits.split(separator: ":", omittingEmptySubsequences: false) {
                guard let number = Int(part), number >= 0 else { return nil }
                value = value * 60 + number
            }
            return ("\(sign)\(value) (base 60)", "the string \"\(text)\"", "\(sign)\(value)")
        }
        return nil
    }

    /// YAML 1.2 core booleans.
    private static func parseBoolean(_ text: String) -> Bool? {
        switch text {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default: return nil
        }
    }

    /// YAML 1.2 core integers: decimal (`443`, `-1`, `0443` is 443), hexadecimal (`0x1F`) and
    /// octal (`0o17`).
    private static func parseInteger(_ text: String) -> Int? {
        if let value = unsignedDecimal(text) { return value }
        var digits = Substring(text)
        var negative = false
        if let sign = digits.first, sign == "-" || sign == "+" {
            negative = sign == "-"
            digits = digits.dropFirst()
        }
        // By bytes: an ASCII digit is one byte, and any other byte is no digit (nor is a
        // digit with a combining mark, which no branch below reads as a number either).
        guard let first = digits.utf8.first, first.isASCIIDigit else { return nil }
        let value: Int?
        if digits.hasPrefix("0x") {
            value = negative ? nil : Int(digits.dropFirst(2), radix: 16)
        } else if digits.hasPrefix("0o") {
            value = negative ? nil : Int(digits.dropFirst(2), radix: 8)
        } else if digits.utf8.allSatisfy(\.isASCIIDigit) {
            value = Int(digits, radix: 10)
        } else {
            value = nil
        }
        return value.map { negative ? -$0 : $0 }
    }

    /// Up to 18 ASCII digits and nothing else, read by bytes (most integers in policies).
    private static func unsignedDecimal(_ text: String) -> Int? {
        let bytes = text.utf8
        guard (1...18).contains(bytes.count) else { return nil }
        var value = 0
        for byte in bytes {
            guard byte.isASCIIDigit else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }

    private static func isFloat(_ text: String) -> Bool {
        switch text {
        case ".inf", ".Inf", ".INF", "-.inf", "-.Inf", "-.INF", "+.inf", "+.Inf", "+.INF", ".nan", ".NaN", ".NAN": return true
        default:
            // ASCII digits, signs, dots and exponents only, compared by bytes (each is one byte,
            // and a byte of anything else refuses the text, as comparing Characters would).
            let bytes = text.utf8
            guard let first = bytes.first, first.isASCIIDigit || "+-.".utf8.contains(first) else { return false }
            return bytes.allSatisfy { $0.isASCIIDigit || "+-.eE".utf8.contains($0) } && Double(text) != nil
        }
    }
}
