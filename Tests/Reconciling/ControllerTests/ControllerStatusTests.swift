@testable import Controller
import Foundation
import IntegrationModel
import Testing

@Suite("controller.json")
struct ControllerStatusTests {
    private func status(verified: Bool) -> ControllerStatus {
        ControllerStatus(
            pid: 4242, suspended: false, verify: .head,
            source: .init(repository: "https://git.example.com/secops/policies.git", ref: "main", path: "policies"),
            lastCycle: .init(at: Date(timeIntervalSince1970: 1_765_000_000.25), durationSeconds: 0.004123, condition: .ready, reason: "in-sync",
                             message: "in sync \u{1b}[31m \"quoted\"", revision: verified ? "0123456789abcdef0123456789abcdef01234567" : nil,
                             findings: 0, steps: 0, fetched: false, bytesReceived: 324),
            cycles: 12, errors: 1,
            lastVerified: verified ? .init(revision: "0123456789abcdef0123456789abcdef01234567", committedAt: Date(timeIntervalSince1970: 1_764_990_000),
                                           verifiedAt: Date(timeIntervalSince1970: 1_765_000_000), signer: nil) : nil,
            problems: verified ? ["the connectors: no platform address"] : nil)
    }

    @Test("The file written every cycle holds the same document as tether status -o json (JSONEncoder), with and without the optional parts")
    func sameDocument() throws {
        for verified in [true, false] {
            let status = status(verified: verified)
            let written = try JSONDecoder().decode(JSONValue.self, from: Data(status.document.text(pretty: true).utf8))
            let encoded = try JSONDecoder().decode(JSONValue.self, from: try status.json())
            #expect(written == encoded, "\(status.document.text(pretty: true))")
        }
    }

    @Test("What is written is read back whole")
    func readBack() throws {
        let folder = FileManager.default.temporaryDirectory.appending(path: "tether-status-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appending(path: "controller.json")
        try status(verified: true).write(to: file)
        let read = try #require(ControllerStatus.read(file))
        #expect(read.lastCycle.message == "in sync \u{1b}[31m \"quoted\"" && read.lastCycle.durationSeconds == 0.004123 && read.cycles == 12)
        #expect(read.lastVerified?.signer == nil && read.lastVerified?.revision.count == 40 && read.problems?.count == 1)
    }
}
