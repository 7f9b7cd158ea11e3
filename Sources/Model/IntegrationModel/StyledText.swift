/// Text for a terminal made of segments, each with Tether's own style or none. Every segment's
/// text — from a repository, the network, the vendor or Tether itself — is escaped when the
/// whole is rendered, and only then are the styles applied: no byte of any input can become an
/// escape sequence, and Tether's colours never need to be told apart from the same bytes in a
/// value (docs/architecture.md, "Untrusted text and bounded input").
package struct StyledText: ExpressibleByStringInterpolation, Sendable {
    /// Tether's styles, as SGR codes.
    package enum Style: String, Sendable {
        case bold = "1", dim = "2", red = "31", green = "32", yellow = "33"
    }

    private var segments: [(text: String, style: Style?)] = []

    package init(_ text: String, style: Style? = nil) {
        if !text.isEmpty { segments = [(text, style)] }
    }

    package init(stringLiteral value: String) { self.init(value) }

    package init(stringInterpolation: StringInterpolation) { segments = stringInterpolation.segments }

    package struct StringInterpolation: StringInterpolationProtocol {
        var segments: [(text: String, style: Style?)] = []

        package init(literalCapacity: Int, interpolationCount: Int) {}

        package mutating func appendLiteral(_ literal: String) {
            if !literal.isEmpty { segments.append((literal, nil)) }
        }

        package mutating func appendInterpolation(_ styled: StyledText) { segments += styled.segments }

        package mutating func appendInterpolation<Value>(_ value: Value) { appendLiteral(String(describing: value)) }
    }

    package static func + (lhs: StyledText, rhs: StyledText) -> StyledText {
        var joined = lhs
        joined.segments += rhs.segments
        return joined
    }

    package static func += (lhs: inout StyledText, rhs: StyledText) {
        lhs.segments += rhs.segments
    }

    /// The text with every control character escaped and, with `colour`, Tether's styles as SGR
    /// sequences around their segments.
    package func rendered(colour: Bool) -> String {
        segments.map { segment in
            let safe = TerminalText.escaped(segment.text)
            guard colour, let style = segment.style else { return safe }
            return "\u{1B}[\(style.rawValue)m\(safe)\u{1B}[0m"
        }.joined()
    }
}
