import Foundation
import PolicySource
import TetherTestSupport
import Testing

/// A controller starting while its local repository's ref still names the revision the agent
/// holds reads the kept revision (state directory, `kept-revision`) and loads no libgit2.
@Suite("Starting from the kept revision", .serialized, .ownThread)
struct KeptRevisionRunTests {
    /// `tether run --once` in a process of its own, with the libraries it loads listed.
    private static func traced(_ env: Environment, _ extra: [String] = []) throws -> ProgramResult {
        try runProgram("/usr/bin/env", ["LD_DEBUG=files", tetherExecutable, "run", "--once", "--no-sensors", "--log-format", "json"] + extra + env.flags)
    }

    private static func loadsGit(_ result: ProgramResult) -> Bool { result.output.contains("file=libgit2") }

    @Test("No change: the second run reads no git and is Ready; drift is corrected from the kept revision; a new commit is read from git and kept")
    func noChangeReadsNoGit() throws {
        let env = try Environment()
        let kept = env.state.url.appending(path: KeptRevision.fileName).path
        let first = try Self.traced(env)
        #expect(first.status == 0 && Self.loadsGit(first), "\(first.output.suffix(600))")
        #expect(KeptRevision.read(from: kept)?.commit.id == env.revision)
        #expect(KeptRevision.read(from: kept)?.otherFiles.map(\.path) == ["certs/kata.pem"], "the certificate the policies pin is kept with them")

        let second = try Self.traced(env)
        #expect(second.status == 0 && !Self.loadsGit(second), "\(second.output.suffix(600))")
        #expect(second.output.contains("\"reason\":\"in-sync\"") && second.output.contains("\"revision\":\"\(env.revision.prefix(12))\""))

        // Someone changes the agent by hand: the kept revision corrects it, still without git.
        #expect(env.agentCommand("set-settings", "edr", "Port=9999").code == 0)
        let corrected = try Self.traced(env)
        #expect(corrected.status == 0 && !Self.loadsGit(corrected), "\(corrected.output.suffix(600))")
        #expect(corrected.output.contains("\"reason\":\"applied\""), "\(corrected.output.suffix(600))")
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("Port=443"))

        let newer = try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        let moved = try Self.traced(env)
        #expect(moved.status == 0 && Self.loadsGit(moved), "\(moved.output.suffix(600))")
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("Port=4443"))
        #expect(KeptRevision.read(from: kept)?.commit.id == newer)
        #expect(KeptRevision.read(from: kept)?.policyFiles.first { $0.path == "policies/base.yaml" }.map { String(decoding: $0.contents, as: UTF8.self) }?
            .contains("port: 4443") == true)
    }

    @Test("The kept revision never stands for another: not after a reset to an older commit (a rollback), not under --verify, not when damaged")
    func neverStandsForAnother() throws {
        let env = try Environment()
        let kept = env.state.url.appending(path: KeptRevision.fileName).path
        let first = env.revision
        #expect(tether(["run", "--once", "--no-sensors"] + env.flags).code == 0)
        let keptFirst = try Data(contentsOf: URL(fileURLWithPath: kept))
        try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        #expect(tether(["run", "--once", "--no-sensors"] + env.flags).code == 0)

        // The branch reset to the first commit, and that commit's kept revision put back: the
        // agent holds the second, so git is read and the rollback refused.
        try env.repo.git("reset", "-q", "--hard", first)
        try keptFirst.write(to: URL(fileURLWithPath: kept))
        let rollback = try Self.traced(env)
        #expect(rollback.status == 1 && Self.loadsGit(rollback), "\(rollback.output.suffix(600))")
        #expect(rollback.output.contains("does not descend from the last applied revision"), "\(rollback.output.suffix(600))")
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("Port=4443"))

        // Kept under --verify off, read under --verify head: git is read, and the unsigned commit refused.
        let signers = try env.state.write("allowed_signers", "ci@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
        try env.repo.git("reset", "-q", "--hard", "main@{1}")
        #expect(tether(["run", "--once", "--no-sensors"] + env.flags).code == 0)
        let verified = try Self.traced(env, ["--verify", "head", "--allowed-signers", signers])
        #expect(verified.status == 1 && Self.loadsGit(verified) && verified.output.contains("is not signed: refused"), "\(verified.output.suffix(600))")

        // Another repository whose ref file names the kept commit but holds no objects: git is read, and says so.
        let refsOnly = try TemporaryDirectory("tether-refs-only")
        try runProgram("git", ["init", "-q", "-b", "main", refsOnly.path])
        let current = try #require(KeptRevision.read(from: kept)).commit.id
        try "\(current)\n".write(toFile: refsOnly.path + "/.git/refs/heads/main", atomically: true, encoding: .utf8)
        let hollow = try runProgram("/usr/bin/env", ["LD_DEBUG=files", tetherExecutable, "run", "--once", "--no-sensors", "--repo", refsOnly.path,
                                                     "--state-dir", env.state.path])
        #expect(hollow.status == 1 && Self.loadsGit(hollow), "\(hollow.output.suffix(600))")

        // A damaged kept revision is not used; git is read and the cycle is Ready.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: kept))
        bytes[bytes.count / 2] ^= 0x20
        try bytes.write(to: URL(fileURLWithPath: kept))
        let damaged = try Self.traced(env)
        #expect(damaged.status == 0 && Self.loadsGit(damaged), "\(damaged.output.suffix(600))")
    }
}
