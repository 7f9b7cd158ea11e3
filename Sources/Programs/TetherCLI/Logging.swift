import FoundationEssentials
import IntegrationModel
import Logging
import Primitives

/// Log lines on standard error: readable on a terminal, or one JSON object a line
/// (`--log-format json`) for collectors.
struct TetherLogHandler: LogHandler {
    enum Format: String, CaseIterable { case text, json }

    /// The format every handler uses; set by `tether run` before it logs.
    final class Settings: @unchecked Sendable {
        private let lock = Lock()
        private var current = Format.text
        private var currentLevel = Logger.Level.info
        var format: Format {
            get { lock.withLock { current } }
            set { lock.withLock { current = newValue } }
        }
        var level: Logger.Level {
            get { lock.withLock { currentLevel } }
            set { lock.withLock { currentLevel = newValue } }
        }
    }

    static let settings = Settings()

    /// Installs the handler once per process.
    static let bootstrapped: Bool = {
        LoggingSystem.bootstrap { label in TetherLogHandler(label: label) }
        return true
    }()

    let label: String
    /// Fixed when the logger is made, so every line of one logger has one format.
    let format: Format
    var metadata: Logger.Metadata = [:]

    init(label: String, format: Format = TetherLogHandler.settings.format) {
        self.label = label
        self.format = format
    }
    var logLevel: Logger.Level {
        get { TetherLogHandler.settings.level }
        set { TetherLogHandler.settings.level = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Metadata as typed JSON: numbers and booleans stay numbers and booleans (`"fetched": false`).
    static func json(_ value: Logger.MetadataValue) -> JSONValue {
        switch value {
        case .string(let text): return .string(text)
        case .stringConvertible(let convertible):
            switch convertible {
            case let flag as Bool: return .bool(flag)
            case let number as Int: return .number(Double(number))
            case let number as Double: return .number(number)
            default: return .string(convertible.description)
            }
        case .array(let values): return .array(values.map(json))
        case .dictionary(let values): return .object(values.mapValues(json))
        }
    }

    func log(event: LogEvent) {
        let level = event.level
        let message = event.message
        var merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        if let error = event.error { merged["error"] = .string("\(error)") }
        let time = Timestamp.string(Date())
        switch format {
        case .json:
            var object: [String: JSONValue] = ["time": .string(time), "level": .string(level.rawValue),
                                               "message": .string(message.description), "logger": .string(label)]
            for (key, value) in merged { object[key] = Self.json(value) }
            Console.error(JSONValue.object(object).text())
        case .text:
            let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            Console.error("\(time) \(level.rawValue.padded(to: 7)) \(message)\(fields.isEmpty ? "" : "  " + fields)")
        }
    }
}
