import Foundation
import TetherTestSupport
import Testing

/// examples/ci: the pull-request check the GitHub Actions workflow and the GitLab CI job run,
/// run here on a repository made in the test.
@Suite("Pull-request examples")
struct CIExampleTests {
    let examples = repositoryRoot.appendingPathComponent("examples/ci")

    /// A policy repository as a team keeps it: policies, the server certificate, the check
    /// script, and a snapshot of two device kinds (one as git declares, one new).
    private func repository() throws -> Environment {
        let env = try Environment()
        #expect(env.run("apply").code == 0)
        let synced = env.agentCommand("snapshot")
        let fresh = try TemporaryDirectory("tether-device")
        try fresh.write("labels", "env=prod\n")
        let new = tether(["agent", "snapshot", "--state-dir", fresh.path])
        #expect(synced.code == 0 && new.code == 0, "\(synced.stderr)\(new.stderr)")
        let script = try String(contentsOf: examples.appendingPathComponent("pr-check.sh"), encoding: .utf8)
        // The team keeps its policies in tether fmt's layout (the check requires it).
        let formatted = tether(["fmt", env.repo.path + "/policies"])
        #expect(formatted.code == 0, "\(formatted.stderr)")
        env.revision = try env.repo.commit(["devices/prod-synced.json": synced.stdout, "devices/prod-new.json": new.stdout, "ci/pr-check.sh": script],
                                           message: "Device snapshots and the check")
        chmod(env.repo.directory.url.appendingPathComponent("ci/pr-check.sh").path, 0o755)
        return env
    }

    @Test("The check validates, plans against each device snapshot, merges the plans into the comment and writes SARIF")
    func check() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let env = try repository()
        let run = try runProgram("ci/pr-check.sh", ["tether-out"], in: env.repo.path, environment: ["TETHER": tetherExecutable])
        #expect(run.status == 0, "\(run.output)")
        let out = env.repo.directory.url.appendingPathComponent("tether-out")
        let comment = try String(contentsOf: out.appendingPathComponent("comment.md"), encoding: .utf8)
        #expect(comment.hasPrefix("## Tether plan for 2 device kinds"), "\(comment)")
        // One row per device kind, though both snapshots were taken on one machine.
        #expect(comment.contains("2 devices: 1 in sync"), "one kind is as git says, the other gets changes: \(comment)")
        #expect(comment.contains("| `prod-synced` | in sync |") && comment.contains("| `prod-new` | ") && !comment.contains("| `prod-new` | in sync |"), "\(comment)")
        let plan = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("plans/prod-new.json"))) as? [String: Any]
        #expect(plan?["kind"] as? String == "plan" && plan?["revision"] as? String == env.revision)
        let sarif = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("sarif/prod-new.sarif"))) as? [String: Any]
        #expect(sarif?["version"] as? String == "2.1.0")
        // One code-scanning category per snapshot, though both were taken on one machine.
        let ids = try ["prod-new", "prod-synced"].map { name -> String? in
            let log = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("sarif/\(name).sarif"))) as? [String: Any]
            return ((log?["runs"] as? [[String: Any]])?.first?["automationDetails"] as? [String: Any])?["id"] as? String
        }
        #expect(ids == ["tether/plan/prod-new/", "tether/plan/prod-synced/"], "\(ids)")
    }

    @Test("A broken policy fails the check with its file and line, and no comment is made")
    func broken() throws {
        let env = try repository()
        let base = try String(contentsOfFile: env.repo.path + "/policies/base.yaml", encoding: .utf8).replacingOccurrences(of: "port: 443", with: "port: 70000")
        let line = try #require(base.components(separatedBy: "\n").firstIndex { $0.contains("port: 70000") }) + 1
        env.revision = try env.repo.commit(["policies/base.yaml": base], message: "Typo")
        let run = try runProgram("ci/pr-check.sh", ["tether-out"], in: env.repo.path, environment: ["TETHER": tetherExecutable])
        #expect(run.status == 1)
        #expect(run.output.contains("policies/base.yaml:\(line):") && run.output.contains("70000 is out of range"), "\(run.output)")
        #expect(!FileManager.default.fileExists(atPath: env.repo.directory.url.appendingPathComponent("tether-out/comment.md").path))
    }

    @Test("A policy file out of tether fmt's layout fails the check with the diff that fixes it")
    func unformatted() throws {
        let env = try repository()
        env.revision = try env.repo.commit(["policies/team.yaml": "kind: IntegrationPolicy\napiVersion: tether/v1\nmetadata: {name: team}\nspec: {priority: 5}\n"], message: "Unformatted")
        let run = try runProgram("ci/pr-check.sh", ["tether-out"], in: env.repo.path, environment: ["TETHER": tetherExecutable])
        #expect(run.status == 1)
        #expect(run.output.contains("policies/team.yaml\n--- a/policies/team.yaml\n+++ b/policies/team.yaml\n"), "\(run.output)")
        #expect(run.output.contains("-kind: IntegrationPolicy\n apiVersion: tether/v1\n+kind: IntegrationPolicy\n metadata: {name: team}\n"), "\(run.output)")
        #expect(!FileManager.default.fileExists(atPath: env.repo.directory.url.appendingPathComponent("tether-out/comment.md").path))
    }

    @Test("The GitHub workflow and the GitLab job are YAML and run that same script")
    func workflows() throws {
        for file in ["github-actions.yml", "gitlab-ci.yml"] {
            let path = examples.appendingPathComponent(file).path
            let parsed = try runProgram("/usr/bin/python3", ["-c", "import sys; from ruamel.yaml import YAML; YAML(typ='safe').load(open(sys.argv[1]))", path])
            #expect(parsed.status == 0, "\(file): \(parsed.output)")
            #expect(try String(contentsOfFile: path, encoding: .utf8).contains("ci/pr-check.sh tether-out"), "\(file)")
            #expect(try !String(contentsOfFile: path, encoding: .utf8).contains("category: tether"), "one category for many runs is refused by code scanning: \(file)")
        }
    }
}
