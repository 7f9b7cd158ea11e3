import FoundationEssentials
import IntegrationModel
import Testing

/// Timestamps written by hand, against Foundation's ISO 8601 style.
@Suite("Timestamps")
struct TimestampTests {
    @Test("The same text as Date.ISO8601FormatStyle, from before 1582 to after 9999, fractions and leap days included; read back to the second")
    func sameAsFoundation() {
        let style = Date.ISO8601FormatStyle()
        var seconds: [Double] = [0, -1, -0.5, 0.999, 59.5, 86_399.9, 86_400, 951_782_400, 951_868_799, 1_796_563_092, 4_102_444_800,
                                 -11_644_473_600, 13_569_465_600 - 1, 68_169_600, 1_709_164_800,
                                 // Around the Gregorian calendar's start (Foundation's turns Julian before it) and year 10,000.
                                 -12_219_292_800, -12_219_292_800.5, -12_219_292_801, -62_135_596_800, 253_402_300_799, 253_402_300_800,
                                 Date.distantPast.timeIntervalSince1970, Date.distantFuture.timeIntervalSince1970]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 { seconds.append(Double.random(in: -11_644_473_600...13_569_465_600, using: &generator)) }
        for second in seconds {
            let date = Date(timeIntervalSince1970: second)
            let text = Timestamp.string(date)
            #expect(text == date.formatted(style), "\(second)")
            if (-12_219_292_800 ..< 253_402_300_800).contains(second) {
                #expect(Timestamp.date(text) == Date(timeIntervalSince1970: second.rounded(.down)), "\(text)")
            }
        }
        // Times no calendar holds (from a platform's command, say) are written, not a crash.
        for second in [1e300, -1e300, Double.infinity, 9.3e18] {
            #expect(!Timestamp.string(Date(timeIntervalSince1970: second)).isEmpty, "\(second)")
        }
        #expect(Timestamp.string(Date(timeIntervalSince1970: 1_796_563_092)) == "2026-12-06T13:18:12Z")
    }
}
