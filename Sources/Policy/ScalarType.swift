import Yams

/// The type of a YAML scalar under YAML 1.1's implicit rules (as Yams's default resolver types
/// them), decided without regular expressions: quoted scalars are strings; plain ones are
/// null, booleans (true/false/yes/no/on/off), integers, numbers or strings.
/// An explicit tag (`!!str 443`) wins.
enum ScalarType: Equatable {
    case null
    case boolean(Bool)
    case integer(Int)
    case float
    case string(String)

    init?(_ node: Node) {
        guard case .scalar(let scalar) = node else { return nil }
        let text = scalar.string
        switch scalar.tag.rawValue {
        case "", "?":
            break
        case Tag.Name.str.rawValue, "!":
            self = .string(text)
            return
        case Tag.Name.int.rawValue:
            self = Int(text).map(ScalarType.integer) ?? .string(text)
            return
        case Tag.Name.bool.rawValue:
            self = ScalarType.parseBoolean(text).map(ScalarType.boolean) ?? .string(text)
            return
        case Tag.Name.null.rawValue:
            self = .null
            return
        default:
            self = .string(text)
            return
        }
        guard scalar.style == .plain || scalar.style == .any else {
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

    private static func parseBoolean(_ text: String) -> Bool? {
        switch text {
        case "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON": return true
        case "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF": return false
        default: return nil
        }
    }

    /// Decimal (`443`, `-1`, `1_000`), hexadecimal (`0x1F`), octal (`0o17`, `017`) and binary (`0b101`).
    private static func parseInteger(_ text: String) -> Int? {
        var digits = Substring(text)
        var negative = false
        if let sign = digits.first, sign == "-" || sign == "+" {
            negative = sign == "-"
            digits = digits.dropFirst()
        }
        guard let first = digits.first, first.isASCII, first.isNumber else { return nil }
        let cleaned = digits.filter { $0 != "_" }
        let value: Int?
        if cleaned.hasPrefix("0x") {
            value = Int(cleaned.dropFirst(2), radix: 16)
        } else if cleaned.hasPrefix("0b") {
            value = Int(cleaned.dropFirst(2), radix: 2)
        } else if cleaned.hasPrefix("0o") {
            value = Int(cleaned.dropFirst(2), radix: 8)
        } else if cleaned.count > 1 && cleaned.hasPrefix("0") {
            value = Int(cleaned.dropFirst(), radix: 8)
        } else {
            value = Int(cleaned, radix: 10)
        }
        return value.map { negative ? -$0 : $0 }
    }

    private static func isFloat(_ text: String) -> Bool {
        switch text {
        case ".inf", ".Inf", ".INF", "-.inf", "-.Inf", "-.INF", "+.inf", ".nan", ".NaN", ".NAN": return true
        default:
            guard let first = text.first, first.isNumber || first == "-" || first == "+" || first == "." else { return false }
            return Double(text.filter { $0 != "_" }) != nil
        }
    }
}
