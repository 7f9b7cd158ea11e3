/// A server address and port, as in NDR `endpoints` and Sandbox `servers`.
package struct Endpoint: Hashable, Sendable, Codable, CustomStringConvertible {
    package var address: String
    package var port: Int

    package init(address: String, port: Int) {
        self.address = address
        self.port = port
    }

    /// `host:port`, with IPv6 addresses in brackets.
    package var description: String {
        address.contains(":") ? "[\(address)]:\(port)" : "\(address):\(port)"
    }
}

/// The value of one setting.
package enum SettingValue: Hashable, Sendable, CustomStringConvertible {
    case bool(Bool)
    case int(Int)
    case string(String)
    case endpoints([Endpoint])
    /// Absolute folders on the device (`edr.fileMonitoring.paths`), compared as a set.
    case paths([String])

    package var description: String {
        switch self {
        case .bool(let value): return value ? "true" : "false"
        case .int(let value): return String(value)
        case .string(let value): return "\"\(value)\""
        case .endpoints(let list): return "[" + list.map(\.description).joined(separator: ", ") + "]"
        case .paths(let list): return "[" + list.joined(separator: ", ") + "]"
        }
    }

    /// The value as JSON: a boolean, a number, a string or an array of `{address, port}` objects.
    package var json: JSONValue {
        switch self {
        case .bool(let value): return .bool(value)
        case .int(let value): return .number(Double(value))
        case .string(let value): return .string(value)
        case .endpoints(let list): return .array(list.map { ["address": .string($0.address), "port": .number(Double($0.port))] })
        case .paths(let list): return .array(list.map(JSONValue.string))
        }
    }
}

extension SettingValue: Codable {
    package init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .int(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let list = try? container.decode([String].self) {
            self = .paths(list)
        } else {
            self = .endpoints(try container.decode([Endpoint].self))
        }
    }

    package func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .endpoints(let list): try container.encode(list)
        case .paths(let list): try container.encode(list)
        }
    }
}
