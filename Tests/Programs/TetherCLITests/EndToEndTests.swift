import AgentInterface
import EmbeddedAgent
import Foundation
import IntegrationModel
import Planner
import Reconciler
import TetherTestSupport
import Testing

@Suite("plan → apply → drift against a real repository and an agent on disk")
struct EndToEndTests {
    @Test("A new device: plan shows the changes (exit 2), apply makes them, drift is in sync (exit 0)")
    func planApplyDrift() throws {
        let env = try Environment()
        let plan = env.run("plan", "--detailed-exitcode")
        #expect(plan.code == 2, "\(plan.stderr)")
        #expect(env.run("plan").code == 0, "without --detailed-exitcode a plan with changes exits 0")
        #expect(plan.stdout.hasPrefix("Plan: 5 steps to match revision \(env.revision.prefix(12)) (5 pending;"))
        #expect(plan.stdout.contains("edr.port") == false, "port is already 443 by default: no noise")
        #expect(plan.stdout.contains("1. pin edr server certificate certs/kata.pem"))
        #expect(plan.stdout.contains("start EDR (KATAEDR)"))
        // Planning changes nothing.
        #expect(try Agent(stateDirectory: env.state.path).state().running.isEmpty)

        let apply = env.run("apply")
        #expect(apply.code == 0, "\(apply.stderr)")
        #expect(apply.stdout.hasPrefix("Applied: 5 steps"))
        let agent = try Agent(stateDirectory: env.state.path).state()
        #expect(agent.running == [.edr])
        #expect(agent.value(SettingPath.edr.synchronizationPeriod) == .int(10))
        #expect(agent.clientCertificates[.edr]?.subject == "O=Tether demo fleet,CN=endpoint-demo")

        let drift = env.run("drift", "--format", "json")
        #expect(drift.code == 0, "\(drift.stderr)")
        #expect(drift.json["inSync"] as? Bool == true)
        #expect(drift.json["formatVersion"] as? Int == 1)
        #expect(drift.json["revision"] as? String == env.revision)
        #expect((drift.json["findings"] as? [Any])?.isEmpty == true)
        #expect(env.run("plan").code == 0)
        #expect(env.run("apply").stdout.hasPrefix("Nothing to apply."))
    }

    @Test("A local set-settings is drift: edr.port desired 443, actual 8443, with where it was declared; apply restores it")
    func localChangeIsDrift() throws {
        let env = try Environment()
        #expect(env.run("apply").code == 0)
        let set = tether(["agent", "set-settings", "edr", "Port=8443", "--state-dir", env.state.path])
        #expect(set.code == 0, "\(set.stderr)")

        let drift = env.run("drift", "--format", "json")
        #expect(drift.code == 2)
        #expect(drift.json["inSync"] as? Bool == false)
        let findings = try #require(drift.json["findings"] as? [[String: Any]])
        #expect(findings.count == 1)
        let finding = try #require(findings.first)
        #expect(finding["path"] as? String == "edr.port")
        #expect(finding["desired"] as? Int == 443)
        #expect(finding["actual"] as? Int == 8443)
        let source = try #require(finding["source"] as? [String: Any])
        #expect(source["file"] as? String == "policies/base.yaml")
        #expect(source["line"] as? Int == 8)
        let change = try #require(finding["lastChange"] as? [String: Any])
        #expect(change["actor"] as? String == "tether agent set-settings")

        let text = env.run("drift")
        #expect(text.code == 2)
        #expect(text.stdout.contains("edr.port  8443 → 443"))
        #expect(text.stdout.contains("declared at policies/base.yaml:8"))

        #expect(env.run("apply").code == 0)
        #expect(env.run("drift").code == 0)
        #expect(try Agent(stateDirectory: env.state.path).state().value(SettingPath.edr.port) == .int(443))
    }

    @Test("A failing apply leaves the store byte-for-byte untouched")
    func failingApplyChangesNothing() throws {
        let env = try Environment()
        #expect(env.run("apply").code == 0)
        let agent = try Agent(stateDirectory: env.state.path)
        let before = try env.storeDigest()
        // A plan whose last step the agent refuses: NDR has no server certificate.
        let plan = Plan(findings: [], steps: [
            .set(SettingPath.edr.port, from: .int(443), to: .int(9443)),
            .stop(.edr),
            .start(.ndr),
        ])
        let error = #expect(throws: AgentError.self) { try agent.transaction(actor: "test") { try plan.apply(to: agent, revision: "0000") } }
        #expect(error?.description.contains("NDR (KATANDR) cannot start") == true)
        #expect(try env.storeDigest() == before)
        #expect(try agent.state().running == [.edr])
    }

    @Test("Labels select policies: without env=prod only the base policy applies")
    func labelSelection() throws {
        let env = try Environment(labels: "")
        let plan = env.run("plan", "--format", "json")
        #expect(plan.code == 0, "\(plan.stderr)")
        #expect(plan.json["policies"] as? [String] == ["base"])
        let labelled = env.run("plan", "--detailed-exitcode", "--format", "json", "--label", "env=prod")
        #expect(labelled.code == 2)
        #expect(labelled.json["policies"] as? [String] == ["prod-edr", "base"])
        #expect((labelled.json["device"] as? [String: Any])?["labels"] as? [String: String] == ["env": "prod"])
    }

    @Test("Higher priority wins field by field; equal priority with different values is an error naming both")
    func priorities() throws {
        let override = """
            apiVersion: tether/v1
            kind: IntegrationPolicy
            metadata: {name: port-override}
            spec:
              priority: 50
              edr: {port: 8443, address: 10.0.0.9}
            """
        let env = try Environment(policies: ["policies/base.yaml": Environment.base, "policies/override.yaml": override])
        let plan = env.run("plan", "--format", "json")
        let findings = try #require(plan.json["findings"] as? [[String: Any]])
        let port = try #require(findings.first { $0["path"] as? String == "edr.port" })
        #expect(port["desired"] as? Int == 8443)
        #expect((port["source"] as? [String: Any])?["file"] as? String == "policies/override.yaml")

        let clash = override.replacingOccurrences(of: "priority: 50", with: "priority: 0")
        try env.repo.commit(["policies/override.yaml": clash])
        let conflict = env.run("plan")
        #expect(conflict.code == 1)
        #expect(conflict.stderr.contains("policies/override.yaml:6:15: edr.port: policies 'base' (policies/base.yaml:8) and 'port-override' (policies/override.yaml:6)"))
        #expect(env.run("validate").code == 1)
    }

    @Test("--ref reads an older commit; a file:// URL is read through a mirror in the state directory")
    func refsAndURLs() throws {
        let env = try Environment()
        let first = env.revision
        try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        let old = tether(["plan", "--format", "json", "--ref", String(first.prefix(8))] + env.flags)
        #expect(old.json["revision"] as? String == first)
        let remote = tether(["plan", "--detailed-exitcode", "--format", "json", "--repo", "file://\(env.repo.path)", "--ref", "main", "--state-dir", env.state.path])
        #expect(remote.code == 2, "\(remote.stderr)")
        let findings = remote.json["findings"] as? [[String: Any]] ?? []
        #expect(findings.contains { $0["path"] as? String == "edr.port" && $0["desired"] as? Int == 4443 })
        #expect(FileManager.default.fileExists(atPath: env.state.url.appendingPathComponent("mirrors").path))
    }
}

@Suite("Restore points")
struct RestorePointTests {
    @Test("Restoring compares states: settings, tasks and certificates come back, whatever happened in between")
    func restoresEverything() throws {
        let env = try Environment()
        #expect(env.run("apply").code == 0)
        let agent = try Agent(stateDirectory: env.state.path)
        let before = try agent.state()
        let point = try RestorePoint(agent: agent)
        let other = try TestPKI()
        try agent.transaction(actor: "test") {
            try agent.set(SettingPath.edr.port, to: .int(9443))
            try agent.set(SettingPath.edr.mode, to: .string("expert-onprem"))
            try agent.addServerCertificate(.edr, bytes: Array(try other.data("server.pem")), source: "other")
            try agent.addServerCertificate(.ndr, bytes: Array(try other.data("server.pem")), source: "other")
            try agent.start(.ndr)
            try agent.set(SettingPath.edr.telemetry, to: .bool(false))
            try agent.set(SettingPath.behaviorDetection, to: .bool(false))
        }
        try agent.transaction(actor: "test restore") { try point.restore(on: agent) }
        let after = try agent.state()
        #expect(after.running == before.running)
        #expect(after.serverCertificates == before.serverCertificates)
        #expect(after.clientCertificates == before.clientCertificates)
        #expect(after.settings == before.settings)
        #expect(env.run("drift").code == 0)
    }
}

@Suite("README")
struct ReadmeTests {
    @Test("The first session runs as README.md writes it, and ends as it says: edr.port 9443 → 8443, exit 2")
    func firstSession() throws {
        let readme = try String(contentsOf: repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let section = try #require(readme.components(separatedBy: "## A first session").dropFirst().first)
        let block = try #require(section.components(separatedBy: "```sh\n").dropFirst().first?.components(separatedBy: "```").first)
        // `swift build` has run already (this test is part of the build); everything else as written.
        let script = block.split(separator: "\n").filter { $0 != "swift build" }.joined(separator: "\n")
        let work = try TemporaryDirectory("tether-readme")
        for name in ["examples", ".build"] {
            try FileManager.default.createSymbolicLink(at: work.url.appendingPathComponent(name),
                                                       withDestinationURL: repositoryRoot.appendingPathComponent(name))
        }
        let last = script.split(separator: "\n").last.map(String.init) ?? ""
        let body = script.split(separator: "\n").dropLast().joined(separator: "\n")
        let run = try runProgram("/bin/bash", ["-c", "set -e\n" + body + "\nset +e\n" + last + "\necho \"exit $?\""], in: work.path)
        #expect(run.output.contains("edr.port") && run.output.contains("9443 → 8443"), "\(run.output)")
        #expect(run.output.hasSuffix("exit 2\n"), "\(run.output.suffix(300))")
    }
}

@Suite("Render")
struct RenderTests {
    @Test("render shows each merged value with the policy line that set it, for this device's labels")
    func render() throws {
        let env = try Environment()
        let text = env.run("render")
        #expect(text.code == 0, "\(text.stderr)")
        #expect(text.stdout.contains("# policies, highest priority first: prod-edr, base"))
        let lines = text.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("  port: 443") && $0.hasSuffix("# policies/base.yaml:8:11") }, "\(text.stdout)")
        #expect(lines.contains { $0.hasPrefix("  synchronizationPeriod: 10") && $0.contains("# policies/prod.yaml:") })
        let json = env.run("render", "-o", "json", "--label", "env=lab")
        let values = json.json["values"] as? [String: Any]
        #expect((values?["edr.port"] as? [String: Any])?["value"] as? Int == 443)
        #expect(values?["edr.enabled"] == nil, "env=lab: the prod policy does not select the device")
    }
}

@Suite("Init")
struct InitTests {
    @Test("tether init, then commit, then validate exits 0; a second init writes nothing")
    func initThenValidate() throws {
        let folder = try TemporaryDirectory("tether-init")
        let target = folder.url.appendingPathComponent("policies-repo").path
        let started = tether(["init", target])
        #expect(started.code == 0, "\(started.stderr)")
        try runProgram("git", ["-C", target, "add", "-A"])
        let commit = try runProgram("git", ["-C", target, "-c", "user.name=Me", "-c", "user.email=me@example.com", "commit", "-qm", "First policies"])
        #expect(commit.status == 0, "\(commit.output)")
        let valid = tether(["validate", "--repo", target])
        #expect(valid.code == 0, "\(valid.stderr)")
        let schema = try String(contentsOfFile: target + "/schema/integration-policy.schema.json", encoding: .utf8)
        #expect(schema == tether(["schema"]).stdout, "the editors' schema is the published one")
        let again = tether(["init", target])
        #expect(again.code == 1 && again.stderr.contains("already exist") && again.stderr.contains("nothing was written"))
    }
}

@Suite("Released settings")
struct ReleasedTests {
    @Test("A setting no policy declares any more shows as released in plan and drift; apply --prune sets the vendor default")
    func released() throws {
        let env = try Environment(policies: ["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        #expect(env.run("apply").code == 0)
        try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "    port: 443\n", with: "")], message: "No port")
        let plan = env.run("plan")
        #expect(plan.stdout.contains("edr.port is no longer managed: stays 4443; the vendor default is 443 (apply --prune resets it)"), "\(plan.stdout)")
        #expect(env.run("apply").code == 0)
        let drift = env.run("drift", "-o", "json")
        #expect(drift.code == 0, "released is not drift")
        #expect((drift.json["findings"] as? [[String: Any]])?.contains { $0["kind"] as? String == "released" && $0["path"] as? String == "edr.port" } == true)
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("Port=4443"), "stays as it is")
        #expect(env.run("apply", "--prune").code == 0)
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("Port=443\n"))
        #expect(!env.run("plan").stdout.contains("released"), "no longer managed once reset")
    }
}

@Suite("Labels")
struct LabelTests {
    @Test("A label typo warns with a did-you-mean; --label is for one run; tether agent labels keeps them")
    func labels() throws {
        let env = try Environment(labels: "")
        let typo = env.run("plan", "--label", "env=prdo")
        #expect(typo.code == 0)
        #expect(typo.stderr.contains("warning: the label env=prdo matches no policy's selector (they name env=prod); did you mean env=prod?"), "\(typo.stderr)")
        #expect(typo.stderr.contains("is for this run only"))
        #expect(env.run("plan", "--label", "tier=gold").stderr.contains("warning: the label tier=gold is used by no policy's selector"))

        #expect(env.agentCommand("labels", "set", "env=prod", "team=ops").code == 0)
        #expect(env.agentCommand("labels").stdout == "env=prod\nteam=ops\n")
        #expect(env.agentCommand("labels", "unset", "team").code == 0)
        let kept = env.run("render")
        #expect(kept.stdout.contains("prod-edr"), "the saved label selects the prod policy: \(kept.stdout)")
        #expect(!kept.stderr.contains("warning"))

        #expect(env.run("apply").code == 0)
        #expect(!env.run("plan").stderr.contains("differ"))
        let other = env.run("plan", "--label", "env=lab")
        #expect(other.stderr.contains("warning: the labels differ from the last apply's (env=prod then, env=lab now)"), "\(other.stderr)")
    }
}

@Suite("The bundled example")
struct ExampleTests {
    @Test("examples/quickstart validates on its own once committed")
    func validates() throws {
        let repo = try GitFixture()
        let example = repositoryRoot.appendingPathComponent("examples/quickstart")
        for file in ["policies/base.yaml", "policies/demo-edr.yaml", "certs/kata.pem"] {
            try repo.directory.write(file, try Data(contentsOf: example.appendingPathComponent(file)))
        }
        try repo.git("add", "-A")
        try repo.git("commit", "-qm", "The example")
        let result = tether(["validate", "--repo", repo.path])
        #expect(result.code == 0, "\(result.stderr)")
    }
}
