import Foundation
import IntegrationModel
import Testing

@Suite("JSON text written without JSONEncoder")
struct JSONTextTests {
    private let value: JSONValue = [
        "name": "a/b \u{1b}[31m\t\"quoted\"\\ é \u{2028} \u{7f} \u{0}",
        "whole": 42, "negative": -7, "fraction": .number(0.004123), "tiny": .number(1e-05), "large": .number(123456789.125),
        "list": [true, false, nil, "x"], "empty": [], "nested": ["b": 1, "a": ["z": "y"]], "none": [:],
    ]

    @Test("Compact: the same bytes as JSONEncoder with sorted keys and slashes left as they are")
    func compact() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        #expect(value.text() == String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    @Test("Pretty: the same document as JSONEncoder's pretty print, read back")
    func pretty() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
        let text = value.text(pretty: true)
        #expect(try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) == value)
        #expect(text.hasPrefix("{\n  \"empty\" : [],\n  \"fraction\" : 0.004123,\n"), "\(text)")
        #expect(try JSONDecoder().decode(JSONValue.self, from: try encoder.encode(value)) == value)
    }

    @Test("A number JSON cannot hold is written as null")
    func notFinite() {
        #expect(JSONValue.array([.number(.nan), .number(.infinity)]).text() == "[null,null]")
    }
}
