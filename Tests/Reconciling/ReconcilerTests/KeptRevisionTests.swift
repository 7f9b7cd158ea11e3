import Foundation
import GitSource
import PolicySource
import TetherTestSupport
import Testing

/// The kept revision's file: read back exactly, or not at all.
@Suite("The kept revision on disk")
struct KeptRevisionTests {
    static func sample() throws -> KeptRevision {
        try #require(KeptRevision(
            commit: GitCommit(id: String(repeating: "ab", count: 20), summary: "Policies, with \"quotes\",\nlines and 9:colons,", committedAt: 1_796_563_092),
            repository: "/srv/policies", path: "policies", gate: "verify head, allowed signers /etc/tether/allowed_signers 1:2:3/-", signer: "ci@example.com",
            policyFiles: [KeptRevision.File(path: "policies/base.yaml", contents: Array("spec: {}\n".utf8)),
                          KeptRevision.File(path: "policies/a,b\n\u{1b}[31m.yaml", contents: [0, 255, 44, 58, 10])],
            otherFiles: [KeptRevision.File(path: "certs/kata.pem", contents: Array(repeating: 7, count: 3000))]))
    }

    @Test("Written and read back: the same revision, whatever bytes its names and files hold")
    func roundTrip() throws {
        let folder = try TemporaryDirectory("tether-kept")
        let file = folder.url.appending(path: KeptRevision.fileName).path
        let kept = try Self.sample()
        try kept.write(to: file)
        #expect(KeptRevision.read(from: file) == kept)
        let unsigned = try #require(KeptRevision(commit: kept.commit, repository: ".", path: "p", gate: "", signer: nil, policyFiles: [], otherFiles: []))
        try unsigned.write(to: file)
        #expect(KeptRevision.read(from: file) == unsigned)
        #expect(try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == [KeptRevision.fileName], "no temporary file left")
    }

    @Test("Cut short, a byte changed, another format, a link or nothing: nil, never a different revision")
    func damaged() throws {
        let folder = try TemporaryDirectory("tether-kept")
        let file = folder.url.appending(path: KeptRevision.fileName).path
        #expect(KeptRevision.read(from: file) == nil)
        try Self.sample().write(to: file)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        for cut in [0, 10, bytes.count / 2, bytes.count - 1] {
            try bytes.prefix(cut).write(to: URL(fileURLWithPath: file))
            #expect(KeptRevision.read(from: file) == nil, "cut at \(cut)")
        }
        for position in stride(from: 30, to: bytes.count, by: 97) {
            var changed = bytes
            changed[position] ^= 0x01
            try changed.write(to: URL(fileURLWithPath: file))
            #expect(KeptRevision.read(from: file) == nil, "byte \(position) changed")
        }
        try (bytes + Data("x".utf8)).write(to: URL(fileURLWithPath: file))
        #expect(KeptRevision.read(from: file) == nil, "bytes after the checksum")
        try Data("tether kept revision 2\n".utf8 + bytes.dropFirst(23)).write(to: URL(fileURLWithPath: file))
        #expect(KeptRevision.read(from: file) == nil, "another format")
        try FileManager.default.removeItem(atPath: file)
        let elsewhere = folder.url.appending(path: "elsewhere").path
        try Self.sample().write(to: elsewhere)
        try FileManager.default.createSymbolicLink(atPath: file, withDestinationPath: elsewhere)
        #expect(KeptRevision.read(from: file) == nil, "a link is not followed")
    }

    @Test("A revision larger than the limit is not kept")
    func tooLarge() throws {
        let commit = GitCommit(id: String(repeating: "cd", count: 20), summary: "Large", committedAt: 0)
        let file = KeptRevision.File(path: "policies/big.yaml", contents: [UInt8](repeating: 32, count: KeptRevision.largest + 1))
        #expect(KeptRevision(commit: commit, repository: ".", path: "policies", gate: "", signer: nil, policyFiles: [file], otherFiles: []) == nil)
    }
}
