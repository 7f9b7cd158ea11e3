import FoundationEssentials
import IntegrationModel
import Primitives

/// A vendor settings file as `kesl-control --get-settings` prints it and `--set-settings --file`
/// reads it: top-level `Key=Value` lines (with or without a `[General]` header), list sections
/// (`[Endpoints.item_0000]`) and other sections (`[EventTransferSettings]`). Read tolerantly:
/// names compare case-insensitively, comments (`;`, `#`) and unknown keys are kept out of the
/// way, any number of digits may follow `item_`.
package struct VendorINI: Sendable, Equatable {
    /// One `Key=Value` line.
    package struct Entry: Sendable, Equatable {
        package var key: String
        package var value: String
    }

    /// A section: its name as written and its entries in order.
    package struct Section: Sendable, Equatable {
        package var name: String
        package var entries: [Entry]

        /// The value of `key`, case-insensitively.
        package func value(_ key: String) -> String? {
            entries.first { $0.key.equalsIgnoringCase(key) }?.value
        }
    }

    /// Top-level entries (and those under `[General]`).
    package var general: [Entry]
    /// Every other section, in file order.
    package var sections: [Section]

    package init(general: [Entry] = [], sections: [Section] = []) {
        self.general = general
        self.sections = sections
    }

    /// A line that is not INI: where and what.
    package struct ParseError: Error, Sendable, CustomStringConvertible {
        package let line: Int
        package let text: String
        package var description: String { "line \(line) is not INI (Key=Value, [Section] or a comment): \(TerminalText.excerpt(text))" }
    }

    /// Reads INI text.
    package init(parsing text: String) throws {
        self.init()
        var current: Int?  // index into sections; nil for the general part
        for (index, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).enumerated() {
            let line = raw.trimmingSpaces()
            if line.isEmpty || line.hasPrefix(";") || line.hasPrefix("#") { continue }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]"), line.count > 2 else { throw ParseError(line: index + 1, text: String(raw)) }
                let name = line.dropFirst().dropLast().trimmingSpaces()
                if name.equalsIgnoringCase("General") {
                    current = nil
                } else if let existing = sections.firstIndex(where: { $0.name.equalsIgnoringCase(name) }) {
                    current = existing
                } else {
                    sections.append(Section(name: name, entries: []))
                    current = sections.count - 1
                }
                continue
            }
            guard let equals = line.firstIndex(of: "="), equals != line.startIndex else { throw ParseError(line: index + 1, text: String(raw)) }
            let entry = Entry(key: line[..<equals].trimmingSpaces(),
                              value: line[line.index(after: equals)...].trimmingSpaces())
            if let current { sections[current].entries.append(entry) } else { general.append(entry) }
        }
    }

    /// The value of `key` at the top level, case-insensitively.
    package func value(_ key: String) -> String? {
        general.first { $0.key.equalsIgnoringCase(key) }?.value
    }

    /// The section called `name`, case-insensitively.
    package func section(_ name: String) -> Section? {
        sections.first { $0.name.equalsIgnoringCase(name) }
    }

    /// The items of a list (`Endpoints` → `[Endpoints.item_0000]`, `[Endpoints.item_1]` …), by item number.
    package func items(_ list: String) -> [Section] {
        let prefix = (list + ".item_").lowercased()
        return sections.compactMap { section -> (Int, Section)? in
            let name = section.name.lowercased()
            guard name.hasPrefix(prefix), let number = Int(name.dropFirst(prefix.count)), number >= 0 else { return nil }
            return (number, section)
        }.sorted { $0.0 < $1.0 }.map(\.1)
    }

    /// The file as text, general entries first.
    package func rendered() -> String {
        var lines = general.map { "\($0.key)=\($0.value)" }
        for section in sections {
            if !lines.isEmpty { lines.append("") }
            lines.append("[\(section.name)]")
            lines += section.entries.map { "\($0.key)=\($0.value)" }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
