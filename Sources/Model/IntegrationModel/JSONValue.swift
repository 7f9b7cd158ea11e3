import FoundationEssentials

/// Any JSON value, typed: for documents that are open by design (a platform's commands before
/// the agent interprets them, the bodies platform-sim records, the policy JSON Schema).
package enum JSONValue: Codable, Sendable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    package init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    package func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            if value.rounded() == value, abs(value) < 1e15 { try container.encode(Int64(value)) } else { try container.encode(value) }
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// The member `key` of an object.
    package subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    package var string: String? { if case .string(let value) = self { return value }; return nil }

    /// Decodes a typed document from this value.
    package func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try JSONDecoder().decode(type, from: try JSONEncoder().encode(self))
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral {
    package init(stringLiteral value: String) { self = .string(value) }
    package init(integerLiteral value: Int) { self = .number(Double(value)) }
    package init(booleanLiteral value: Bool) { self = .bool(value) }
    package init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    package init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(Dictionary(elements) { _, last in last }) }
    package init(nilLiteral: ()) { self = .null }
}

extension JSONValue {
    /// The value as JSON text, keys sorted and slashes left as they are, as JSONEncoder writes it
    /// with `.sortedKeys` and `.withoutEscapingSlashes` (and `.prettyPrinted` when `pretty`, but
    /// for an empty array or object: `[]`, `{}`), at a fraction of its cost: for what is written
    /// every cycle (the log line, the controller's status). A number that is not finite, which
    /// JSON cannot hold, is written as null.
    package func text(pretty: Bool = false) -> String {
        var text = ""
        write(into: &text, pretty: pretty, indent: 0)
        return text
    }

    private func write(into text: inout String, pretty: Bool, indent: Int) {
        switch self {
        case .null: text += "null"
        case .bool(let value): text += value ? "true" : "false"
        case .number(let value):
            if !value.isFinite {
                text += "null"
            } else if value.rounded() == value, abs(value) < 1e15 {
                text += String(Int64(value))
            } else {
                text += value.description
            }
        case .string(let value): Self.quote(value, into: &text)
        case .array(let items):
            Self.container("[", "]", items.map { (nil, $0) }, into: &text, pretty: pretty, indent: indent)
        case .object(let members):
            Self.container("{", "}", members.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, into: &text, pretty: pretty, indent: indent)
        }
    }

    private static func container(_ open: String, _ close: String, _ entries: [(String?, JSONValue)], into text: inout String, pretty: Bool, indent: Int) {
        guard !entries.isEmpty else {
            text += open + close
            return
        }
        text += open
        for (index, (key, value)) in entries.enumerated() {
            if index > 0 { text += "," }
            if pretty { text += "\n" + String(repeating: " ", count: indent + 2) }
            if let key {
                quote(key, into: &text)
                text += pretty ? " : " : ":"
            }
            value.write(into: &text, pretty: pretty, indent: indent + 2)
        }
        if pretty { text += "\n" + String(repeating: " ", count: indent) }
        text += close
    }

    /// Appends `value` as a JSON string: quotes, backslashes and control characters escaped as
    /// JSONEncoder does (`\n`, `\u001b`), everything else as it is.
    package static func quote(_ value: String, into text: inout String) {
        text += "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\n": text += "\\n"
            case "\r": text += "\\r"
            case "\t": text += "\\t"
            case "\u{08}": text += "\\b"
            case "\u{0C}": text += "\\f"
            case "\u{00}"..."\u{1F}":
                let digits = String(scalar.value, radix: 16)
                text += "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
            default: text.unicodeScalars.append(scalar)
            }
        }
        text += "\""
    }
}
