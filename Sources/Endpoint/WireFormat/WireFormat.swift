import FoundationEssentials
import IntegrationModel

// The documents the connectors and the platform exchange (docs/wire-format.md), as Codable
// types both sides share: the connector core sends and reads them, platform-sim reads and
// answers them, so the two cannot drift apart.

/// JSON as Tether writes it on the wire: sorted keys, so equal documents are equal bytes.
package enum Wire {
    package static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(value)) ?? Data("{}".utf8))
    }

    /// An event's detail as a JSON object with sorted keys, as `encode` writes it, without an
    /// encoder: the telemetry queue writes one per event, thousands a second under load.
    package static func object(_ map: [String: DetailValue]) -> String {
        var text = "{"
        for (index, key) in map.keys.sorted().enumerated() {
            if index > 0 { text += "," }
            JSONValue.quote(key, into: &text)
            text += ":"
            switch map[key]! {
            case .text(let value): JSONValue.quote(value, into: &text)
            case .number(let value): text += String(value)
            case .flag(let value): text += value ? "true" : "false"
            }
        }
        return text + "}"
    }

    package static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }
}

// MARK: - EDR

/// `POST …/sync`.
package struct SyncRequest: Codable, Sendable {
    package struct Versions: Codable, Sendable {
        package var agent: String
        /// Changes whenever a setting changes (the time of the last change).
        package var settings: Int

        package init(agent: String, settings: Int) {
            self.agent = agent
            self.settings = settings
        }
    }

    package var agentId: String
    package var hostName: String
    package var addresses: [String]
    package var os: String
    package var versions: Versions
    /// Task name → `running` or `stopped`.
    package var tasks: [String: String]
    package var isolation: Bool
    package var commandResults: [CommandResult]

    package init(agentId: String, hostName: String, addresses: [String], os: String, versions: Versions, tasks: [String: String],
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
package struct CommandResult: Codable, Sendable, Equatable {
    package var id: String
    /// `applied`, `refused`, `rejected` or `failed`.
    package var result: String
    package var detail: String

    package init(id: String, result: String, detail: String) {
        self.id = id
        self.result = result
        self.detail = detail
    }
}

/// The answer to a sync: commands, as the platform sent them (each is interpreted, and a
/// malformed one rejected, by the agent: see `Command`).
package struct SyncResponse: Codable, Sendable {
    package var commands: [JSONValue]
    package var serverTime: String?

    package init(commands: [JSONValue], serverTime: String?) {
        self.commands = commands
        self.serverTime = serverTime
    }

    private enum CodingKeys: String, CodingKey { case commands, serverTime }

    /// Read leniently: one command that is not JSON the agent can hold (a number out of range)
    /// becomes null — it has no id, so it is not carried out — and never costs the others; a
    /// `serverTime` of another type is ignored.
    package init(from decoder: Decoder) throws {
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
package struct Command: Codable, Sendable {
    /// Traffic still allowed while the endpoint is isolated, in the platform's response API's
    /// form (`direction`, `protocol`, `remoteAddress`, `localPorts`, `remotePorts`) or the first
    /// release's (`address`, `port`, `direction`).
    package struct Exclusion: Codable, Sendable, Equatable {
        /// A port range, `{"fromPort": 8000, "toPort": 8080}`.
        package struct Ports: Codable, Sendable, Equatable {
            package var fromPort: Int
            package var toPort: Int

            package init(fromPort: Int, toPort: Int) {
                self.fromPort = fromPort
                self.toPort = toPort
            }
        }

        /// `inbound`, `outbound` or `both` (the default).
        package var direction: String?
        /// The IP protocol number (6 TCP, 17 UDP); absent for any.
        package var `protocol`: Int?
        /// An IPv4 or IPv6 address, with an optional `/prefix`.
        package var remoteAddress: String?
        package var localPorts: [Ports]?
        package var remotePorts: [Ports]?
        /// The first release's remote address and port.
        package var address: String?
        package var port: Int?
        /// Fields of the object that are none of the above (a misspelling): the exclusion is refused.
        package var unknownFields: [String] = []

        package init(address: String?, port: Int? = nil, direction: String? = nil) {
            self.address = address
            self.port = port
            self.direction = direction
        }

        package init(direction: String?, protocol: Int? = nil, remoteAddress: String? = nil, localPorts: [Ports]? = nil, remotePorts: [Ports]? = nil) {
            self.direction = direction
            self.protocol = `protocol`
            self.remoteAddress = remoteAddress
            self.localPorts = localPorts
            self.remotePorts = remotePorts
        }

        private enum CodingKeys: String, CodingKey, CaseIterable { case direction, `protocol`, remoteAddress, localPorts, remotePorts, address, port }

        /// Any field name, to find those that are not an exclusion's.
        private struct AnyField: CodingKey {
            let stringValue: String
            var intValue: Int? { nil }
            init?(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        /// The fields an exclusion has, for the message that refuses another.
        package static let fieldNames = CodingKeys.allCases.map(\.stringValue)

        /// A port may come as a number or as a numeric string (as the first release stored it).
        package init(from decoder: Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            unknownFields = try decoder.container(keyedBy: AnyField.self).allKeys.map(\.stringValue)
                .filter { CodingKeys(stringValue: $0) == nil }.sorted()
            direction = try container.decodeIfPresent(String.self, forKey: .direction)
            `protocol` = try container.decodeIfPresent(Int.self, forKey: .protocol)
            remoteAddress = try container.decodeIfPresent(String.self, forKey: .remoteAddress)
            localPorts = try container.decodeIfPresent([Ports].self, forKey: .localPorts)
            remotePorts = try container.decodeIfPresent([Ports].self, forKey: .remotePorts)
            address = try container.decodeIfPresent(String.self, forKey: .address)
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
    package struct Rule: Codable, Sendable {
        package var hash: String?
        package var algorithm: String?
    }

    package var id: String?
    /// `network-isolation`, `network-isolation-off`, `execution-prevention`, `run-process`,
    /// `terminate-process`, `get-file`, `delete-file`, `quarantine-file`, `restore-file`.
    package var type: String?
    package var exclusions: [Exclusion]?
    package var durationSeconds: Int?
    package var rules: [Rule]?
    package var executable: String?
    package var arguments: [String]?
    /// terminate-process: a process by pid and start time (seconds since 1970), or every
    /// process whose executable has `sha256`.
    package var pid: Int?
    package var startTime: CommandTime?
    package var sha256: String?
    /// get-file, delete-file, quarantine-file: the file; get-file's bound in bytes.
    package var path: String?
    package var maxBytes: Int?
    /// restore-file: what quarantine-file answered.
    package var quarantineId: String?
}

/// A moment as a command gives it: seconds since 1970, or an RFC 3339 timestamp as the
/// events carry them (`"2026-11-29T05:00:00Z"`).
package struct CommandTime: Codable, Sendable, Equatable {
    package let date: Date

    package init(_ date: Date) { self.date = date }

    package init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let seconds = try? container.decode(Double.self) {
            date = Date(timeIntervalSince1970: seconds)
        } else if let parsed = Timestamp.date(try container.decode(String.self)) {
            date = parsed
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not seconds since 1970 or an RFC 3339 time")
        }
    }

    package func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(Timestamp.string(date))
    }
}

/// `POST …/events` (EDR and NDR).
package struct EventBatch: Codable, Sendable {
    /// Identifies this send.
    package var batchId: String
    package var events: [WireEvent]

    package init(batchId: String, events: [WireEvent]) {
        self.batchId = batchId
        self.events = events
    }
}

/// A telemetry event's type (docs/wire-format.md, "Sensor events").
package enum EventType: String, Codable, Sendable, CaseIterable {
    case processStart = "process-start"
    case processStop = "process-stop"
    case networkConnection = "network-connection"
    case fileChange = "file-change"
    case detection
    case processingResult = "processing-result"
    case remediation
    case sandboxVerdict = "sandbox-verdict"
    case sandboxQueueFull = "sandbox-queue-full"

    /// Detections, what was done about them and Sandbox verdicts: never dropped by the hourly
    /// count limits, so that noise cannot hide them.
    package var isExemptFromLimits: Bool { self == .detection || self == .processingResult || self == .sandboxVerdict }

    /// What the network sensor reports: the one type NDR receives.
    package var isNetwork: Bool { self == .networkConnection }

    /// The types sensors produce.
    package static let sensorTypes: [EventType] = [.processStart, .processStop, .networkConnection, .fileChange, .detection, .processingResult]
}

/// One value of an event's `detail`: text, or a JSON number (pids, uids, ports, exit codes,
/// sizes) or boolean, as the wire carries them.
package enum DetailValue: Codable, Sendable, Hashable, CustomStringConvertible, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    case text(String)
    case number(Int64)
    case flag(Bool)

    package init(stringLiteral value: String) { self = .text(value) }
    package init(integerLiteral value: Int64) { self = .number(value) }
    package init<Number: BinaryInteger>(_ number: Number) { self = .number(Int64(number)) }

    package init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let flag = try? container.decode(Bool.self) {
            self = .flag(flag)
        } else if let number = try? container.decode(Int64.self) {
            self = .number(number)
        } else {
            self = .text(try container.decode(String.self))
        }
    }

    package func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .text(let text): try container.encode(text)
        case .number(let number): try container.encode(number)
        case .flag(let flag): try container.encode(flag)
        }
    }

    /// The detail keys that are JSON numbers on the wire (docs/wire-format.md).
    package static let numericKeys: Set<String> = ["pid", "ppid", "uid", "localPort", "remotePort", "exitCode", "signal", "n"]

    /// A detail as the wire has it now: the previous release wrote every value as text, so an
    /// event it queued is read with its numbers as numbers and `directory` as a flag.
    package static func current(_ detail: [String: DetailValue]) -> [String: DetailValue] {
        var upgraded = detail
        for (key, value) in detail {
            guard case .text(let text) = value else { continue }
            if numericKeys.contains(key), let number = Int64(text) {
                upgraded[key] = .number(number)
            } else if key == "directory" || key == "synthetic", let flag = Bool(text) {
                upgraded[key] = .flag(flag)
            }
        }
        return upgraded
    }

    /// The text, for text values.
    package var text: String? { if case .text(let text) = self { return text }; return nil }
    /// The number, for numbers.
    package var number: Int64? { if case .number(let number) = self { return number }; return nil }

    package var description: String {
        switch self {
        case .text(let text): return text
        case .number(let number): return String(number)
        case .flag(let flag): return String(flag)
        }
    }
}

/// One telemetry event.
package struct WireEvent: Codable, Sendable, Equatable {
    package var seq: Int
    /// An `EventType`'s raw value.
    package var type: String
    package var time: String
    package var detail: [String: DetailValue]

    package init(seq: Int, type: String, time: String, detail: [String: DetailValue]) {
        self.seq = seq
        self.type = type
        self.time = time
        self.detail = detail
    }
}

/// The answer to an event batch.
package struct Accepted: Codable, Sendable {
    package var accepted: Int
    package init(accepted: Int) { self.accepted = accepted }
}

// MARK: - NDR

/// `POST …/ping`.
package struct Ping: Codable, Sendable {
    package var agentId: String
    package var time: String
    package init(agentId: String, time: String) {
        self.agentId = agentId
        self.time = time
    }
}

package struct Pong: Codable, Sendable {
    package var pong: Bool
    package init(pong: Bool) { self.pong = pong }
}

// MARK: - Sandbox

/// One object's scan state (the answer to an upload, and each item of a state list).
package struct ScanState: Codable, Sendable, Equatable {
    package var scanId: String
    /// `processing`, `detect`, `not detected`, `timeout`, `error`.
    package var state: String
    package init(scanId: String, state: String) {
        self.scanId = scanId
        self.state = state
    }
}

/// `GET …/scans/state`.
package struct ScanStates: Codable, Sendable {
    package var scans: [ScanState]
    package init(scans: [ScanState]) { self.scans = scans }

    private enum CodingKeys: String, CodingKey { case scans }

    /// Read leniently: an entry without a scan id or a state is skipped, never the whole list.
    package init(from decoder: Decoder) throws {
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
package struct WireError: Codable, Sendable {
    package var error: String
    package init(_ error: String) { self.error = error }
}
