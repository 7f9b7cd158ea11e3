#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import IntegrationModel

// The documents the connectors and the platform exchange (docs/wire-format.md), as Codable
// types both sides share: the connector core sends and reads them, platform-sim reads and
// answers them, so the two cannot drift apart.

/// JSON as Tether writes it on the wire: sorted keys, so equal documents are equal bytes.
public enum Wire {
    public static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(value)) ?? Data("{}".utf8))
    }

    /// A string map as a JSON object with sorted keys, as `encode` writes it, without an encoder:
    /// the telemetry queue writes one per event, thousands a second under load.
    public static func object(_ map: [String: String]) -> String {
        var text = "{"
        for (index, key) in map.keys.sorted().enumerated() {
            if index > 0 { text += "," }
            appendString(key, to: &text)
            text += ":"
            appendString(map[key]!, to: &text)
        }
        return text + "}"
    }

    private static func appendString(_ value: String, to text: inout String) {
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
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                text += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: text.unicodeScalars.append(scalar)
            }
        }
        text += "\""
    }

    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }
}

// MARK: - EDR

/// `POST …/sync`.
public struct SyncRequest: Codable, Sendable {
    public struct Versions: Codable, Sendable {
        public var agent: String
        /// Changes whenever a setting changes (the time of the last change).
        public var settings: Int

        public init(agent: String, settings: Int) {
            self.agent = agent
            self.settings = settings
        }
    }

    public var agentId: String
    public var hostName: String
    public var addresses: [String]
    public var os: String
    public var versions: Versions
    /// Task name → `running` or `stopped`.
    public var tasks: [String: String]
    public var isolation: Bool
    public var commandResults: [CommandResult]

    public init(agentId: String, hostName: String, addresses: [String], os: String, versions: Versions, tasks: [String: String],
                isolation: Bool, commandResults: [CommandResult]) {
        self.agentId = agentId
        self.hostName = hostName
        self.addresses = addresses
        self.os = os
        self.versions = versions
        self.tasks = tasks
        self.isolation = isolation
        self.commandResults = commandResults
    }
}

/// The result of a command, reported on the next sync.
public struct CommandResult: Codable, Sendable, Equatable {
    public var id: String
    /// `applied`, `refused`, `rejected` or `failed`.
    public var result: String
    public var detail: String

    public init(id: String, result: String, detail: String) {
        self.id = id
        self.result = result
        self.detail = detail
    }
}

/// The answer to a sync: commands, as the platform sent them (each is interpreted, and a
/// malformed one rejected, by the agent: see `Command`).
public struct SyncResponse: Codable, Sendable {
    public var commands: [JSONValue]
    public var serverTime: String?

    public init(commands: [JSONValue], serverTime: String?) {
        self.commands = commands
        self.serverTime = serverTime
    }

    private enum CodingKeys: String, CodingKey { case commands, serverTime }

    /// Read leniently: one command that is not JSON the agent can hold (a number out of range)
    /// becomes null — it has no id, so it is not carried out — and never costs the others; a
    /// `serverTime` of another type is ignored.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        serverTime = try? container.decodeIfPresent(String.self, forKey: .serverTime)
        var commands: [JSONValue] = []
        if container.contains(.commands) {
            var list = try container.nestedUnkeyedContainer(forKey: .commands)
            while !list.isAtEnd {
                if let command = try? list.decode(JSONValue.self) {
                    commands.append(command)
                } else {
                    _ = try list.decode(Skipped.self)
                    commands.append(.null)
                }
            }
        }
        self.commands = commands
    }
}

/// Any JSON value, read and dropped (to step over an element that cannot be decoded).
struct Skipped: Decodable {
    init(from decoder: Decoder) throws {}
}

/// A response command as the agent understands it.
public struct Command: Codable, Sendable {
    /// One allowed destination while the endpoint is isolated.
    public struct Exclusion: Codable, Sendable, Equatable {
        public var address: String?
        public var port: Int?
        public var direction: String?

        public init(address: String?, port: Int? = nil, direction: String? = nil) {
            self.address = address
            self.port = port
            self.direction = direction
        }

        private enum CodingKeys: String, CodingKey { case address, port, direction }

        /// A port may come as a number or as a numeric string (as the first release stored it).
        public init(from decoder: Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            address = try container.decodeIfPresent(String.self, forKey: .address)
            direction = try container.decodeIfPresent(String.self, forKey: .direction)
            if let number = try? container.decodeIfPresent(Int.self, forKey: .port) {
                port = number
            } else if let text = try container.decodeIfPresent(String.self, forKey: .port) {
                guard let number = Int(text) else {
                    throw DecodingError.dataCorruptedError(forKey: .port, in: container, debugDescription: "'\(text)' is not a port")
                }
                port = number
            } else {
                port = nil
            }
        }
    }

    /// One hash an execution prevention list forbids.
    public struct Rule: Codable, Sendable {
        public var hash: String?
        public var algorithm: String?
    }

    public var id: String?
    /// `network-isolation`, `network-isolation-off`, `execution-prevention`, `run-process`.
    public var type: String?
    public var exclusions: [Exclusion]?
    public var durationSeconds: Int?
    public var rules: [Rule]?
    public var executable: String?
    public var arguments: [String]?
}

/// `POST …/events` (EDR and NDR).
public struct EventBatch: Codable, Sendable {
    /// Identifies this send.
    public var batchId: String
    public var events: [WireEvent]

    public init(batchId: String, events: [WireEvent]) {
        self.batchId = batchId
        self.events = events
    }
}

/// One telemetry event.
public struct WireEvent: Codable, Sendable, Equatable {
    public var seq: Int
    /// `process-start`, `process-stop`, `network-connection`, `file-change`, `detection`,
    /// `remediation`, `sandbox-verdict`, `sandbox-queue-full`.
    public var type: String
    public var time: String
    public var detail: [String: String]

    public init(seq: Int, type: String, time: String, detail: [String: String]) {
        self.seq = seq
        self.type = type
        self.time = time
        self.detail = detail
    }
}

/// The answer to an event batch.
public struct Accepted: Codable, Sendable {
    public var accepted: Int
    public init(accepted: Int) { self.accepted = accepted }
}

// MARK: - NDR

/// `POST …/ping`.
public struct Ping: Codable, Sendable {
    public var agentId: String
    public var time: String
    public init(agentId: String, time: String) {
        self.agentId = agentId
        self.time = time
    }
}

public struct Pong: Codable, Sendable {
    public var pong: Bool
    public init(pong: Bool) { self.pong = pong }
}

// MARK: - Sandbox

/// One object's scan state (the answer to an upload, and each item of a state list).
public struct ScanState: Codable, Sendable, Equatable {
    public var scanId: String
    /// `processing`, `detect`, `not detected`, `timeout`, `error`.
    public var state: String
    public init(scanId: String, state: String) {
        self.scanId = scanId
        self.state = state
    }
}

/// `GET …/scans/state`.
public struct ScanStates: Codable, Sendable {
    public var scans: [ScanState]
    public init(scans: [ScanState]) { self.scans = scans }

    private enum CodingKeys: String, CodingKey { case scans }

    /// Read leniently: an entry without a scan id or a state is skipped, never the whole list.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        var list = try container.nestedUnkeyedContainer(forKey: .scans)
        var scans: [ScanState] = []
        while !list.isAtEnd {
            if let scan = try? list.decode(ScanState.self) { scans.append(scan) } else { _ = try list.decode(Skipped.self) }
        }
        self.scans = scans
    }
}

/// An error a platform answers with.
public struct WireError: Codable, Sendable {
    public var error: String
    public init(_ error: String) { self.error = error }
}
