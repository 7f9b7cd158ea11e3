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

    @Test("The file has the published keys, sorted, with an absent revision and signer as null and absent parts left out")
    func publishedKeys() throws {
        let full = try JSONDecoder().decode(JSONValue.self, from: status(verified: true).json())
        guard case .object(let members) = full, case .object(let cycle)? = full["lastCycle"], case .object(let verified)? = full["lastVerified"] else {
            Issue.record("not an object: \(full)")
            return
        }
        #expect(members.keys.sorted() == ["cycles", "errors", "lastCycle", "lastVerified", "pid", "problems", "source", "suspended", "verify"])
        #expect(cycle.keys.sorted() == ["at", "bytesReceived", "condition", "durationSeconds", "fetched", "findings", "message", "reason", "revision", "steps"])
        #expect(verified["signer"] == .null && full["verify"] == "head" && cycle["at"] == "2025-12-06T05:46:40Z", "\(full)")
        let bare = try JSONDecoder().decode(JSONValue.self, from: status(verified: false).json())
        #expect(bare["lastCycle"]?["revision"] == .null && bare["lastVerified"] == nil && bare["problems"] == nil, "\(bare)")
        #expect(String(decoding: status(verified: false).json(), as: UTF8.self).hasPrefix("{\n  \"cycles\" : 12,\n  \"errors\" : 1,\n"))
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

        // What a controller carries over from the run before: the last verification alone.
        let carried = try #require(ControllerStatus.lastVerified(in: file))
        #expect(carried.revision == "0123456789abcdef0123456789abcdef01234567" && carried.committedAt == Date(timeIntervalSince1970: 1_764_990_000)
                && carried.verifiedAt == Date(timeIntervalSince1970: 1_765_000_000) && carried.signer == nil)
        try status(verified: false).write(to: file)
        #expect(ControllerStatus.lastVerified(in: file) == nil)
        try Data("{\"lastVerified\": {\"revision\": 1}}".utf8).write(to: file)
        #expect(ControllerStatus.lastVerified(in: file) == nil && ControllerStatus.read(file) == nil)
        #expect(ControllerStatus.lastVerified(in: folder.appending(path: "missing.json")) == nil)
    }
}
