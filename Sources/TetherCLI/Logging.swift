import Foundation
import IntegrationModel
import Logging

/// Log lines on standard error: readable on a terminal, or one JSON object a line
/// (`--log-format json`) for collectors.
struct TetherLogHandler: LogHandler {
    enum Format: String, CaseIterable { case text, json }

    /// The format every handler uses; set by `tether run` before it logs.
    final class Settings: @unchecked Sendable {
        private let lock = NSLock()
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
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level {
        get { TetherLogHandler.settings.level }
        set { TetherLogHandler.settings.level = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let level = event.level
        let message = event.message
        var merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        if let error = event.error { merged["error"] = .string("\(error)") }
        let time = Timestamp.string(Date())
        switch TetherLogHandler.settings.format {
        case .json:
            var object = ["time": time, "level": level.rawValue, "message": message.description, "logger": label]
            for (key, value) in merged { object[key] = value.description }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let data = (try? encoder.encode(object)) ?? Data()
            Console.error(String(decoding: data, as: UTF8.self))
        case .text:
            let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            Console.error("\(time) \(level.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0)) \(message)\(fields.isEmpty ? "" : "  " + fields)")
        }
    }
}
