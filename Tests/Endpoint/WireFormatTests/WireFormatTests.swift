import IntegrationModel
import Testing
import WireFormat

@Suite("The wire format, read from what a platform may really send")
struct WireFormatTests {
    @Test("One command that cannot be held never costs the others; a serverTime of another type is ignored")
    func lenientCommands() throws {
        let body = #"{"commands": [{"id": "a", "type": "run-process", "n": 1e400}, {"id": "b", "type": "network-isolation-off"}], "serverTime": 1764392400}"#
        let response = try Wire.decode(SyncResponse.self, from: Array(body.utf8))
        #expect(response.commands.count == 2)
        #expect(response.commands[0] == .null, "the unreadable one has no id, so it is not carried out")
        #expect(response.commands[1]["id"]?.string == "b")
        #expect(response.serverTime == nil)
    }

    @Test("A body that is not a sync answer at all is an error, not an empty list")
    func notAnAnswer() {
        #expect(throws: (any Error).self) { try Wire.decode(SyncResponse.self, from: Array("<html>".utf8)) }
        #expect(throws: (any Error).self) { try Wire.decode(SyncResponse.self, from: Array(#"{"commands": 5}"#.utf8)) }
    }

    @Test("Exclusion ports as numbers or numeric strings (as the first release stored them); other text is refused")
    func exclusionPorts() throws {
        let stored = #"[{"address": "10.0.0.5", "port": "443", "direction": "outbound"}, {"address": "10.0.0.6", "port": 8443}, {"address": "10.0.0.7"}]"#
        let exclusions = try Wire.decode([Command.Exclusion].self, from: Array(stored.utf8))
        #expect(exclusions == [Command.Exclusion(address: "10.0.0.5", port: 443, direction: "outbound"),
                               Command.Exclusion(address: "10.0.0.6", port: 8443), Command.Exclusion(address: "10.0.0.7")])
        #expect(throws: (any Error).self) { try Wire.decode([Command.Exclusion].self, from: Array(#"[{"port": "https"}]"#.utf8)) }
    }

    @Test("A scan entry without an id or a state is skipped, never the whole list")
    func lenientScans() throws {
        let body = #"{"scans": [{"scanId": "s1", "state": "detect"}, {"scanId": "s2", "state": null}, {"state": "detect"}, {"scanId": "s3", "state": "not detected"}]}"#
        let states = try Wire.decode(ScanStates.self, from: Array(body.utf8))
        #expect(states.scans == [ScanState(scanId: "s1", state: "detect"), ScanState(scanId: "s3", state: "not detected")])
    }

    @Test("Whole numbers stay integers on the wire")
    func integers() {
        let value: JSONValue = ["port": 443, "ratio": .number(0.5)]
        #expect(String(decoding: Wire.encode(value), as: UTF8.self) == #"{"port":443,"ratio":0.5}"#)
    }

    @Test("An event's detail written without an encoder is what the encoder writes, and reads back the same, whatever its characters")
    func eventDetail() throws {
        let detail: [String: DetailValue] = ["commandLine": "sh -c \"echo \\\"hi\\\"\"\t\u{1B}[31m\u{0}end", "path": "/tmp/naïve/文件 😀", "empty": "",
                                             "slash": "a/b\r\n", "feeds": "\u{08}\u{0C}\u{1F}", "pid": 9401, "uid": 0, "exitCode": -1,
                                             "directory": .flag(true), "digits": "443"]
        let written = Wire.object(detail)
        #expect(written == String(decoding: Wire.encode(detail), as: UTF8.self))
        #expect(try Wire.decode([String: DetailValue].self, from: Array(written.utf8)) == detail)
        #expect(Wire.object([:]) == "{}")
    }

    @Test("Numbers in an event's detail are JSON numbers, and text that looks like a number stays text")
    func detailNumbers() throws {
        let written = Wire.object(["pid": 9401, "localPort": DetailValue(UInt16(34329)), "digits": "443"])
        #expect(written == #"{"digits":"443","localPort":34329,"pid":9401}"#)
        let event = try Wire.decode(WireEvent.self, from: Array(#"{"seq":1,"type":"process-start","time":"2026-12-06T12:00:00Z","detail":{"pid":7,"path":"/bin/true","uid":"0"}}"#.utf8))
        #expect(event.detail["pid"] == .number(7) && event.detail["path"] == "/bin/true" && event.detail["uid"] == .text("0"))
    }
}
