import FoundationEssentials
import PolicySource
import Primitives

/// The device's labels, which policy selectors match: a `labels` file in the state directory
/// (`key=value` per line, `#` comments), overridden by `--label key=value`.
package enum DeviceLabels {
    package static let fileName = "labels"

    /// Reads the labels file (when present) and applies the overrides.
    package static func load(stateDirectory: String, overrides: [String: String]) throws -> [String: String] {
        let path = URL(fileURLWithPath: stateDirectory).appending(path: fileName).path
        var labels: [String: String] = [:]
        if let data = FileManager.default.contents(atPath: path) {
            for (index, rawLine) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let line = rawLine.trimmingSpaces()
                if line.isEmpty || line.hasPrefix("#") { continue }
                guard let (key, value) = parse(line) else {
                    throw SourceError(message: "\(path):\(index + 1): expected key=value, found '\(line)'")
                }
                labels[key] = value
            }
        }
        labels.merge(overrides) { _, new in new }
        return labels
    }

    /// Replaces the labels file with `labels` (one `key=value` a line, sorted), in one rename.
    package static func save(_ labels: [String: String], stateDirectory: String) throws {
        let folder = URL(fileURLWithPath: stateDirectory, isDirectory: true)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let text = labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)\n" }.joined()
        try text.write(to: folder.appending(path: fileName), atomically: true, encoding: .utf8)
    }

    /// Parses `key=value`; nil when there is no `=` or the key is empty.
    package static func parse(_ text: String) -> (String, String)? {
        guard let equals = text.firstIndex(of: "=") else { return nil }
        let key = text[..<equals].trimmingSpaces()
        let value = text[text.index(after: equals)...].trimmingSpaces()
        return key.isEmpty ? nil : (key, value)
    }
}
