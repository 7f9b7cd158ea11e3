import Foundation
import TetherTestSupport
import Testing

@Suite("A saved plan, applied exactly (tether plan --plan-file, tether apply --plan-file)")
struct SavedPlanTests {
    /// A device applied once, then a commit that changes edr.port: one pending step.
    private func pending() throws -> Environment {
        let env = try Environment()
        #expect(env.run("apply").code == 0)
        try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 8443")])
        return env
    }

    @Test("The saved steps are applied, and the file says what was reviewed without any secret")
    func appliesExactly() throws {
        let env = try pending()
        let file = env.state.url.appendingPathComponent("reviewed.plan").path
        let plan = env.run("plan", "--plan-file", file)
        #expect(plan.code == 0, "\(plan.stderr)")
        #expect(plan.stderr.contains("Saved the plan (1 step) to \(file)"))
        let saved = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
        #expect(saved["format"] as? String == "tether-plan/1")
        #expect(saved["revision"] as? String == (try env.repo.git("rev-parse", "HEAD")).trimmingCharacters(in: .whitespacesAndNewlines))
        #expect((saved["steps"] as? [[String: String]])?.first?["description"] == "set edr.port: 443 → 8443")
        #expect(!(try String(contentsOfFile: file, encoding: .utf8)).contains("cli-pass"), "no secret in a saved plan")
        let apply = env.run("apply", "--plan-file", file)
        #expect(apply.code == 0, "\(apply.stderr)")
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("8443"))
        #expect(env.run("drift").code == 0)
    }

    @Test("The agent changed since: refused, nothing changed, exit 1")
    func agentMoved() throws {
        let env = try pending()
        let file = env.state.url.appendingPathComponent("reviewed.plan").path
        #expect(env.run("plan", "--plan-file", file).code == 0)
        #expect(env.agentCommand("set-settings", "edr", "SynchronizationPeriod=30").code == 0)
        let apply = env.run("apply", "--plan-file", file)
        #expect(apply.code == 1)
        #expect(apply.stderr.contains("the agent changed since the plan was saved"), "\(apply.stderr)")
        let settings = env.agentCommand("get-settings", "edr").stdout
        #expect(!settings.contains("8443") && settings.contains("30"), "nothing was applied, the local change stays: \(settings)")
    }

    @Test("The device's labels changed since: refused, nothing changed")
    func labelsMoved() throws {
        let env = try pending()
        let file = env.state.url.appendingPathComponent("reviewed.plan").path
        #expect(env.run("plan", "--plan-file", file).code == 0)
        try env.state.write("labels", "env=prod\nteam=blue\n")
        let apply = env.run("apply", "--plan-file", file)
        #expect(apply.code == 1)
        #expect(apply.stderr.contains("the device's labels changed since the plan was saved"), "\(apply.stderr)")
        #expect(!env.agentCommand("get-settings", "edr").stdout.contains("8443"))
    }

    @Test("The revision moved since: refused before anything is opened for writing; a plan from another file or version is refused")
    func revisionMoved() throws {
        let env = try pending()
        let file = env.state.url.appendingPathComponent("reviewed.plan").path
        #expect(env.run("plan", "--plan-file", file).code == 0)
        try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 9443")])
        let apply = env.run("apply", "--plan-file", file)
        #expect(apply.code == 1)
        #expect(apply.stderr.contains("is a plan for revision") && apply.stderr.contains("Nothing was changed"), "\(apply.stderr)")
        #expect(!env.agentCommand("get-settings", "edr").stdout.contains("9443"))

        var document = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
        document["tether"] = "0.0.1"
        try JSONSerialization.data(withJSONObject: document).write(to: URL(fileURLWithPath: file))
        #expect(env.run("apply", "--plan-file", file).stderr.contains("was planned by tether 0.0.1"))
        try "not a plan".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(env.run("apply", "--plan-file", file).stderr.contains("is not a plan tether plan --plan-file saved"))
        #expect(env.run("plan", "--plan-file", file, "--against", "snapshot.json").stderr.contains("cannot be applied here"))
    }
}
