import FoundationEssentials

/// Times as Tether writes and reads them everywhere (reports, status, logs, the wire): ISO 8601
/// in UTC to the second, `2026-11-29T13:07:47Z`. Formatted without ICU: a controller writes
/// several every cycle.
package enum Timestamp {
    private static let style = Date.ISO8601FormatStyle()

    /// `2026-11-29T13:07:47Z`: what `Date.ISO8601FormatStyle()` writes (TimestampTests holds
    /// the two to the same text), worked out from the seconds since 1970 without its calendar
    /// and time zone, whose first use costs a starting process a tenth of a millisecond. Dates
    /// before the Gregorian calendar (1582-10-15, where Foundation's turns Julian) or after
    /// 9999, and times that are no number (a platform's command may carry anything), go to
    /// Foundation.
    package static func string(_ date: Date) -> String {
        let interval = date.timeIntervalSince1970
        guard interval.isFinite, (-12_219_292_800 ..< 253_402_300_800).contains(interval) else { return date.formatted(style) }
        let seconds = Int64(interval.rounded(.down))
        let (days, second) = (seconds.floorDivided(by: 86_400), seconds.floorModulo(86_400))
        // Days since 1970 to a civil date (H. Hinnant's algorithm, proleptic Gregorian).
        let shifted = days + 719_468
        let era = shifted.floorDivided(by: 146_097)
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let yearText = year >= 0 && year < 10_000 ? String(String(year + 10_000).dropFirst()) : "\(year)"
        return "\(yearText)-\(two(month))-\(two(day))T\(two(second / 3600)):\(two(second / 60 % 60)):\(two(second % 60))Z"
    }

    /// The date of an ISO 8601 text, or nil when it is not one.
    package static func date(_ text: String) -> Date? { try? style.parse(text) }
}

private extension Int64 {
    /// Division rounded toward minus infinity.
    func floorDivided(by divisor: Int64) -> Int64 { (self - floorModulo(divisor)) / divisor }
    /// The remainder of `floorDivided(by:)`, from 0 to `divisor - 1`.
    func floorModulo(_ divisor: Int64) -> Int64 { ((self % divisor) + divisor) % divisor }
}
