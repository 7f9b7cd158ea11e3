import IntegrationModel
import Testing

@Suite("Styled text for a terminal")
struct StyledTextTests {
    @Test("Every segment is escaped before Tether's colours are put around it: a value's own colour codes stay text")
    func escapedThenPainted() {
        let value = "ok\u{1B}[31m\u{1B}[0m"
        let line: StyledText = "reason: \(value) " + StyledText("[drift]", style: .red)
        #expect(line.rendered(colour: true) == "reason: ok\\x1b[31m\\x1b[0m \u{1B}[31m[drift]\u{1B}[0m")
        #expect(line.rendered(colour: false) == "reason: ok\\x1b[31m\\x1b[0m [drift]")
        #expect(StyledText("\u{1B}[1m", style: .bold).rendered(colour: true) == "\u{1B}[1m\\x1b[1m\u{1B}[0m")
    }
}
