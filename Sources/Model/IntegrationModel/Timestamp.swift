import FoundationEssentials

/// Times as Tether writes and reads them everywhere (reports, status, logs, the wire): ISO 8601
/// in UTC to the second, `2026-11-29T13:07:47Z`. Formatted without ICU: a controller writes
/// several every cycle.
package enum Timestamp {
    private static let style = Date.ISO8601FormatStyle()

    /// `2026-11-29T13:07:47Z`.
    package static func string(_ date: Date) -> String { date.formatted(style) }

    /// The date of an ISO 8601 text, or nil when it is not one.
    package static func date(_ text: String) -> Date? { try? style.parse(text) }
}
