import EmbeddedAgent
import Foundation
import Reconciler
import TetherTestSupport
import Testing

/// A second state directory for the same device: its labels and client container copied.
private func freshDevice(like env: Environment) throws -> TemporaryDirectory {
    let device = try TemporaryDirectory("tether-device")
    for file in ["labels", "edr-client.p12", "edr-client.pass"] {
        try device.write(file, try Data(contentsOf: env.state.url.appendingPathComponent(file)))
    }
    return device
}

/// An allowed-signers file with one new key in it.
private func allowedSigners(in directory: TemporaryDirectory) throws -> String {
    let key = directory.url.appendingPathComponent("alice").path
    try runProgram("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", key])
    let publicKey = try String(contentsOfFile: key + ".pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    return try directory.write("allowed_signers", "alice@example.com \(publicKey)\n")
}

/// The newest history entry that says the agent matches a revision.
private func lastAppliedEntry(_ state: URL) throws -> HistoryEntry? {
    try History(stateDirectory: state).entries(limit: 10_000).first { $0.result.leftAgentMatching }
}

@Suite("One pipeline: vouch before reading, refuse rollbacks everywhere, safe under overlap and kills")
struct PipelineTests {
    @Test("apply --verify head on an unsigned head with a broken policy names the signature and never the YAML")
    func verifiesBeforeReading() throws {
        let env = try Environment()
        let keyDirectory = try TemporaryDirectory()
        let allowed = try allowedSigners(in: keyDirectory)
        let broken = try env.repo.commit(["policies/edr.yaml": "spec: [unclosed\n  port: {\n"], message: "Broken and unsigned")

        let apply = env.run("apply", "--verify", "head", "--allowed-signers", allowed, "--detailed-exitcodes")
        #expect(apply.code == 8)
        #expect(apply.stderr.contains("commit \(broken.prefix(12)) (\"Broken and unsigned\") is not signed: refused"))
        #expect(!apply.stderr.contains("YAML") && !apply.stderr.contains("edr.yaml"), "untrusted files are never parsed: \(apply.stderr)")
        let applied = try Agent(stateDirectory: env.state.path).appliedState().revision
        #expect(applied == nil, "nothing applied")
        for command in ["plan", "drift"] {
            let refused = env.run(command, "--verify", "head", "--allowed-signers", allowed)
            #expect(refused.code == 1, "\(command)")
            #expect(refused.stderr.contains("is not signed: refused") && !refused.stderr.contains("YAML"), "\(command): \(refused.stderr)")
        }
    }

    @Test("A commit signed by a key past its allowed-signers valid-before is refused by plan --verify head, naming the option and the dates, as git verify-commit refuses it")
    func expiredSigningKey() throws {
        let env = try Environment()
        let keyDirectory = try TemporaryDirectory()
        let file = try allowedSigners(in: keyDirectory)
        _ = try env.repo.git("-c", "user.name=Alice", "-c", "user.email=alice@example.com", "-c", "gpg.format=ssh",
                                      "-c", "user.signingkey=\(keyDirectory.url.appendingPathComponent("alice").path)", "commit", "-q", "--allow-empty", "-S", "-m", "Signed")
        #expect(env.run("plan", "--verify", "head", "--allowed-signers", file).code == 0, "the key alone verifies")
        let line = try String(contentsOfFile: file, encoding: .utf8)
        let expired = try keyDirectory.write("expired_signers", line.replacingOccurrences(of: "alice@example.com ", with: "alice@example.com valid-before=\"20200101\" "))
        let git = try runProgram("git", ["-C", env.repo.path, "-c", "gpg.ssh.allowedSignersFile=\(expired)", "verify-commit", "HEAD"])
        #expect(git.status != 0, "git refuses it too")
        let refused = env.run("plan", "--verify", "head", "--allowed-signers", expired)
        #expect(refused.code == 1)
        #expect(refused.stderr.contains("says valid-before=\"20200101\" (2020-01-01") && refused.stderr.contains("expired"), "\(refused.stderr)")
    }

    @Test("apply --ref of an ancestor is refused and names both ways back; plan and drift show it as a rollback apply refuses; rollback goes back and says so")
    func antiRollbackEverywhere() throws {
        let env = try Environment()
        let first = env.revision
        #expect(env.run("apply").code == 0)
        let second = try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        #expect(env.run("apply").code == 0)
        let before = try env.storeDigest()

        let apply = env.run("apply", "--ref", first, "--detailed-exitcodes")
        #expect(apply.code == 8)
        #expect(apply.stderr.contains("revision \(first.prefix(12)) does not descend from the last applied revision \(second.prefix(12))"))
        #expect(apply.stderr.contains("tether rollback --to \(first.prefix(12))"))
        #expect(apply.stderr.contains("spec.allowRollback: true"))
        #expect(try env.storeDigest() == before, "the agent is unchanged")
        #expect(env.run("apply", "--ref", first).code == 1)
        // plan and drift only read: they show what going back would change, and say apply refuses it.
        for command in ["plan", "drift"] {
            let shown = env.run(command, "--ref", first)
            #expect(shown.code == 0 || shown.code == 2, "\(command): \(shown.stderr)")
            #expect(shown.stdout.contains("would be a rollback from \(second.prefix(12)) to \(first.prefix(12))") && shown.stdout.contains("`tether apply` refuses it")
                    && shown.stdout.contains("tether rollback --to \(first.prefix(12))"), "\(command): \(shown.stdout)")
        }
        #expect(try env.storeDigest() == before)

        let keyDirectory = try TemporaryDirectory()
        let unsigned = env.run("rollback", "--verify", "head", "--allowed-signers", try allowedSigners(in: keyDirectory))
        #expect(unsigned.code == 1 && unsigned.stderr.contains("is not signed: refused"), "rollback verifies too: \(unsigned.stderr)")
        #expect(try env.storeDigest() == before)

        let rollback = env.run("rollback")
        #expect(rollback.code == 0, "\(rollback.stderr)")
        #expect(rollback.stdout.contains("Rolled back from \(second.prefix(12)) to \(first.prefix(12))."))
        #expect(try Agent(stateDirectory: env.state.path).appliedState().revision == first)
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("Port=443"))

        // Forward again is fine; a policy that allows going back says so in the report.
        #expect(env.run("apply", "--ref", second).code == 0)
        let allow = Environment.base.replacingOccurrences(of: "spec:\n", with: "spec:\n  allowRollback: true\n")
        try env.repo.git("checkout", "-q", "-b", "older", first)
        let deliberate = try env.repo.commit(["policies/base.yaml": allow], message: "Deliberately back")
        let back = env.run("apply", "--ref", deliberate)
        #expect(back.code == 0, "\(back.stderr)")
        #expect(back.stdout.contains("policy 'base'") && back.stdout.contains("spec.allowRollback: true"), "\(back.stdout)")
    }

    @Test("Ten overlapping applies of two revisions, 10 times: the revision recorded as applied is always the one the agent holds")
    func overlappingApplies() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        // Enough policy files that decoding takes a while: the window in which another apply can
        // commit between vouching for a revision and applying it.
        var policies = ["policies/base.yaml": Environment.base, "policies/prod.yaml": Environment.prod]
        for index in 0..<300 {
            policies["policies/teams/t\(index).yaml"] = """
                apiVersion: tether/v1
                kind: IntegrationPolicy
                metadata:
                  name: team-\(index)
                spec:
                  selector:
                    matchLabels: {team: t\(index)}
                  ndr:
                    pingPeriod: \(300 + index)
                """
        }
        let env = try Environment(policies: policies)
        let a = env.revision
        let b = try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        for round in 0..<10 {
            let device = try freshDevice(like: env)
            let order = round % 2 == 0 ? [a, a, a, b, a, a, a, a, a, a] : [b, a, b, a, a, b, a, b, a, a]
            let applies = try order.map {
                try ChildProcess(tetherExecutable, ["apply", "--ref", $0, "--repo", env.repo.path, "--state-dir", device.path])
            }
            for process in applies {
                let code = process.wait()
                #expect(code == 0 || (code == 1 && process.stderr.contains("does not descend from the last applied revision")),
                        "round \(round): exit \(code): \(process.stderr)")
            }
            let recorded = try #require(try Agent(stateDirectory: device.path).appliedState().revision)
            #expect(try lastAppliedEntry(device.url)?.revision == recorded, "round \(round): history agrees with the agent")
            let drift = tether(["drift", "--ref", recorded, "--repo", env.repo.path, "--state-dir", device.path])
            #expect(drift.code == 0, "round \(round): the agent holds \(recorded.prefix(12)): \(drift.stdout)")
            // Never back from B to A: every apply was vouched for against what the agent held when it applied.
            let sequence = try History(stateDirectory: device.url).entries(limit: 100).reversed()
                .filter { $0.result.leftAgentMatching }.map(\.revision)
            if let firstB = sequence.firstIndex(of: b) {
                #expect(!sequence[firstB...].contains(a), "round \(round): went back from B to A: \(sequence.map { $0 == a ? "A" : "B" })")
            }
        }
    }

    @Test("kill -9 during apply: the agent and its history move together, never one without the other")
    func killedApplies() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let env = try Environment()
        let a = env.revision
        let b = try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        var outcomes: [String: Int] = [:]
        for trial in 0..<30 {
            let device = try freshDevice(like: env)
            #expect(tether(["apply", "--ref", a, "--repo", env.repo.path, "--state-dir", device.path]).code == 0)
            let apply = try ChildProcess(tetherExecutable, ["apply", "--ref", b, "--repo", env.repo.path, "--state-dir", device.path])
            usleep(useconds_t(trial * 3_000))
            apply.kill()
            apply.wait()
            let recorded = try #require(try Agent(stateDirectory: device.path).appliedState().revision)
            outcomes[recorded == b ? "new" : "old", default: 0] += 1
            #expect(try lastAppliedEntry(device.url)?.revision == recorded, "trial \(trial): history agrees with the agent")
            let drift = tether(["drift", "--ref", recorded, "--repo", env.repo.path, "--state-dir", device.path])
            #expect(drift.code == 0, "trial \(trial): the agent is wholly on \(recorded.prefix(12)): \(drift.stdout)")
        }
        #expect(outcomes["old", default: 0] > 0, "some kills land before the commit: \(outcomes)")
    }
}

@Suite("Health window and overlap", .ownThread)
struct HealthWindowOverlapTests {
    @Test("A failed health window does not undo an apply that came after it")
    func restoreOnlyOwnChanges() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let env = try Environment()
        let closed = try freePort()
        let b = try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: \(closed)")],
                                    message: "EDR to a port nobody serves")
        let c = try env.repo.commit(["policies/extra.yaml": """
            apiVersion: tether/v1
            kind: IntegrationPolicy
            metadata:
              name: extra
            spec:
              ndr:
                pingPeriod: 600
            """], message: "On top")
        let slow = try ChildProcess(tetherExecutable, ["apply", "--ref", b, "--health-window", "4", "--repo", env.repo.path, "--state-dir", env.state.path])
        // Once B is applied (its health window is running), C is applied on top of it.
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, (try? lastAppliedEntry(env.state.url)?.revision) != b { usleep(20_000) }
        #expect(env.run("apply", "--ref", c).code == 0)
        let code = slow.wait()
        #expect(code == 1)
        #expect(slow.stderr.contains("the agent was changed since this apply"), "\(slow.stderr)")
        #expect(try Agent(stateDirectory: env.state.path).appliedState().revision == c, "C stays applied")
        #expect(env.run("drift", "--ref", c).code == 0, "the agent holds C")
    }
}
