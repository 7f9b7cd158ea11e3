import Foundation
import KESLAgent
import SQLiteDB
import TetherTestSupport
import Testing

/// The policies of the vendor-agent scenario: EDR on 9443 with a pinned server certificate and
/// mutual TLS with a client container, NDR with two endpoints (and its own server certificate).
private let vendorPolicy = """
    apiVersion: tether/v1
    kind: IntegrationPolicy
    metadata:
      name: vendor-edr-ndr
    spec:
      behaviorDetection: true
      edr:
        enabled: true
        port: 9443
        serverCertificate: certs/kata.pem
        mutualAuthentication: true
        clientCertificate:
          file: edr-client.p12
          passwordFile: edr-client.pass
      ndr:
        enabled: true
        serverCertificate: certs/kata.pem
        endpoints:
          - {address: 10.0.0.1, port: 8081}
          - {address: 10.0.0.2, port: 8082}
    """

/// A device governed through the stand-in for kesl-control.
private func vendorDevice() throws -> (Environment, KESLStandIn) {
    let env = try Environment(policies: ["policies/vendor.yaml": vendorPolicy])
    return (env, try KESLStandIn())
}

extension Environment {
    /// A command against the vendor's agent through `standIn`.
    func kesl(_ standIn: KESLStandIn, _ arguments: String...) -> TetherResult {
        tether(arguments + flags + ["--agent", "kesl", "--kesl-control", standIn.executable])
    }
}

@Suite("The vendor's agent through kesl-control (a stand-in written from its contract)", .serialized, .ownThread)
struct KESLBackendTests {
    @Test("plan lists the changes (exit 2), apply makes them through kesl-control, drift is in sync")
    func planApplyDrift() throws {
        let (env, standIn) = try vendorDevice()
        let plan = env.kesl(standIn, "plan", "--detailed-exitcode")
        #expect(plan.code == 2, "\(plan.stdout)\(plan.stderr)")
        #expect(plan.stdout.contains("edr.port"), "\(plan.stdout)")

        standIn.clearCalls()
        let apply = env.kesl(standIn, "apply")
        // The state is read once for the plan and reused under the lock; nothing is read twice,
        // and each task's settings go to the vendor as one file.
        #expect(standIn.calls.filter { $0.first == "--get-settings" }.count == 3, "\(standIn.calls)")
        #expect(standIn.calls.filter { $0.first == "--set-settings" }.map { $0[1] } == ["KATAEDR", "KATANDR"], "\(standIn.calls)")
        #expect(apply.code == 0, "\(apply.stdout)\(apply.stderr)")
        let edr = try standIn.run("--get-settings", "KATAEDR").output
        #expect(edr.contains("Port=9443") && edr.contains("UseClientPinnedCertificate=Yes"), "\(edr)")
        let ndr = try standIn.run("--get-settings", "KATANDR").output
        #expect(ndr.contains("[Endpoints.item_0000]") && ndr.contains("[Endpoints.item_0001]") && ndr.contains("Address=10.0.0.2"), "\(ndr)")
        #expect(!ndr.contains("item_0002"))
        #expect(try standIn.run("--get-task-state", "KATAEDR").output.contains("State: Started"))
        #expect(try standIn.run("--query-kataedr-client-certificate").output.contains("Subject: "))
        // The container's password went on standard input, never on a command line.
        let password = try env.pki.text("edr-client.pass").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!standIn.calls.joined().joined(separator: " ").contains(password))
        // Nor is it in any file Tether keeps (the policy's own password file aside), and no private
        // file handed to kesl-control is left behind.
        for file in try FileManager.default.contentsOfDirectory(atPath: env.state.path) where file != "edr-client.pass" {
            #expect(!file.hasPrefix(".kesl-"), "\(file) was left behind")
            if let data = FileManager.default.contents(atPath: env.state.url.appendingPathComponent(file).path) {
                #expect(data.range(of: Data(password.utf8)) == nil, "\(file) holds the password")
            }
        }

        // The agent.conf keeps the backend: later commands need no --agent.
        let drift = env.run("drift", "--format", "json")
        #expect(drift.code == 0, "\(drift.stdout)\(drift.stderr)")
        #expect((drift.json["inSync"] as? Bool) == true)
    }

    @Test("A change made with kesl-control is drift by 'outside Tether': desired and actual shown, exit 2; apply restores it")
    func outsideChange() throws {
        let (env, standIn) = try vendorDevice()
        #expect(env.kesl(standIn, "apply").code == 0)
        #expect(try standIn.run("--set-settings", "KATAEDR", "Port=8443").status == 0)

        let drift = env.run("drift", "--format", "json")
        #expect(drift.code == 2, "\(drift.stdout)\(drift.stderr)")
        let findings = drift.json["findings"] as? [[String: Any]] ?? []
        let port = findings.first { $0["path"] as? String == "edr.port" }
        #expect(port?["kind"] as? String == "drift")
        #expect(port?["desired"] as? Int == 9443 && port?["actual"] as? Int == 8443, "\(String(describing: port))")
        #expect((port?["lastChange"] as? [String: Any])?["actor"] as? String == KESLAgent.outsideActor)

        #expect(env.run("apply").code == 0)
        #expect(try standIn.run("--get-settings", "KATAEDR").output.contains("Port=9443"))
        #expect(env.run("drift").code == 0)
    }

    @Test("When the vendor refuses to start KATANDR, apply exits non-zero naming it and every task is left as it was")
    func refusalUndoesEverything() throws {
        let (env, standIn) = try vendorDevice()
        let before = try ["KATAEDR", "KATANDR", "KATASandbox"].map { try standIn.run("--get-settings", $0).output }
        try standIn.fail("--start-task KATANDR")
        let apply = env.kesl(standIn, "apply")
        #expect(apply.code == 1)
        #expect(apply.stderr.contains("KATANDR"), "\(apply.stderr)")
        #expect(apply.stderr.contains("nothing was changed"), "\(apply.stderr)")
        let after = try ["KATAEDR", "KATANDR", "KATASandbox"].map { try standIn.run("--get-settings", $0).output }
        #expect(after == before)
        #expect(try standIn.run("--get-task-state", "KATAEDR").output.contains("State: Stopped"))
        #expect(try standIn.run("--query-kataedr-server-certificate").status != 0, "the certificate added before the failure was removed again")
        #expect(try standIn.run("--query-kataedr-client-certificate").status != 0)

        try standIn.fail(nil)
        #expect(env.run("apply").code == 0)
    }

    @Test("A kesl-control that makes its change and then exits non-zero: the change is undone, so 'nothing was changed' is true")
    func changedThenFailed() throws {
        for command in ["--set-settings KATAEDR", "--start-task KATAEDR", "--add-kataedr-server-certificate"] {
            let (env, standIn) = try vendorDevice()
            let before = try ["KATAEDR", "KATANDR", "KATASandbox"].map { try standIn.run("--get-settings", $0).output }
            try standIn.failAfter(command)
            let apply = env.kesl(standIn, "apply")
            #expect(apply.code == 1, "\(command): \(apply.stderr)")
            #expect(apply.stderr.contains("failed after making its change"), "\(command): \(apply.stderr)")
            let after = try ["KATAEDR", "KATANDR", "KATASandbox"].map { try standIn.run("--get-settings", $0).output }
            #expect(after == before, "\(command): the settings are as before")
            #expect(try standIn.run("--get-task-state", "KATAEDR").output.contains("State: Stopped"), "\(command)")
            #expect(try standIn.run("--query-kataedr-server-certificate").status != 0, "\(command): the certificate it added is gone again")
            #expect(apply.stderr.contains("nothing was changed"), "\(command): undone, so true: \(apply.stderr)")
            #expect(env.run("apply").code == 0, "\(command): a later apply goes through")
        }
    }

    @Test("A certificate query that fails once is asked again, not read as 'none installed'")
    func transientQuery() throws {
        let (env, standIn) = try vendorDevice()
        #expect(env.kesl(standIn, "apply").code == 0)
        try standIn.failAfter("--query-kataedr-server-certificate")
        let drift = env.run("drift", "--format", "json")
        #expect(drift.code == 0, "in sync: the installed certificate was seen: \(drift.stdout)")
        #expect(standIn.calls.filter { $0 == ["--query-kataedr-server-certificate"] }.count >= 2)
    }

    @Test("Settings kesl-control cannot express are unenforceable on this backend, with the reason; the rest is applied")
    func unsupportedSettings() throws {
        let env = try Environment(policies: ["policies/proxy.yaml": """
            apiVersion: tether/v1
            kind: IntegrationPolicy
            metadata:
              name: proxy
            spec:
              proxy: {address: "proxy.corp:3128"}
              edr:
                port: 9443
            """])
        let standIn = try KESLStandIn()
        let plan = env.kesl(standIn, "plan", "--format", "json")
        #expect(plan.code == 0, "\(plan.stdout)\(plan.stderr)")
        let findings = plan.json["findings"] as? [[String: Any]] ?? []
        let proxy = findings.first { $0["path"] as? String == "proxy.address" }
        #expect(proxy?["kind"] as? String == "unenforceable")
        #expect((proxy?["reason"] as? String)?.contains("kesl-control has no command for the application-wide proxy") == true)
        #expect(env.run("plan").stdout.contains("kesl-control") == false, "plan keeps no backend: without --agent it plans for the embedded agent")
        #expect(env.kesl(standIn, "apply").code == 0)
        #expect(try standIn.run("--get-settings", "KATAEDR").output.contains("Port=9443"))
    }

    @Test("A missing kesl-control, or one that prints what is not INI: one error naming the command (a hung one: KESLAgentTests)")
    func brokenVendorCommand() throws {
        let env = try Environment(policies: ["policies/vendor.yaml": vendorPolicy])
        let missing = tether(["plan"] + env.flags + ["--agent", "kesl", "--kesl-control", "/nonexistent/kesl-control"])
        #expect(missing.code == 1)
        #expect(missing.stderr.contains("/nonexistent/kesl-control does not exist"), "\(missing.stderr)")

        let folder = try TemporaryDirectory("kesl-broken")
        let garbage = folder.url.appendingPathComponent("garbage").path
        try writeExecutable(garbage, Data("#!/bin/sh\necho '<html>not ini</html>'\n".utf8))
        let notINI = tether(["plan"] + env.flags + ["--agent", "kesl", "--kesl-control", garbage])
        #expect(notINI.code == 1)
        #expect(notINI.stderr.contains("kesl-control --get-settings KATAEDR: printed something that is not a settings file"), "\(notINI.stderr)")
    }

    @Test("--health-window with the vendor's agent is refused before anything changes, naming the option and the backend")
    func healthWindowRefused() throws {
        let (env, standIn) = try vendorDevice()
        for command in [["apply", "--health-window", "30"], ["run", "--once", "--health-window", "30"], ["rollback", "--to", env.revision, "--health-window", "30"]] {
            let refused = tether(command + env.flags + ["--agent", "kesl", "--kesl-control", standIn.executable])
            #expect(refused.code == 1, "\(command): \(refused.stdout)\(refused.stderr)")
            #expect(refused.stderr.contains("--health-window needs connectors that Tether runs, and the vendor's agent (--agent kesl, through kesl-control) has none"),
                    "\(command): \(refused.stderr)")
        }
        let changing = ["--set-settings", "--start-task", "--stop-task"]
        #expect(!standIn.calls.contains { call in changing.contains(call.first ?? "") || call.first?.hasPrefix("--add-") == true || call.first?.hasPrefix("--remove-") == true },
                "kesl-control was asked to change nothing: \(standIn.calls)")
        #expect(!FileManager.default.fileExists(atPath: env.state.url.appendingPathComponent("agent.conf").path), "the refused backend was not kept")
    }

    @Test("When the history cannot be written after the vendor committed, apply says the agent changed and was not recorded; the next start records it")
    func historyAfterTheVendorsCommit() throws {
        let (env, standIn) = try vendorDevice()
        #expect(env.kesl(standIn, "plan").code == 0)
        // A history that refuses every new entry, as SQLite does on a full disk.
        let history = try Database(path: env.state.url.appendingPathComponent("history.db").path)
        try history.execute("CREATE TRIGGER full BEFORE INSERT ON history BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;")
        let apply = env.kesl(standIn, "apply")
        #expect(apply.code == 1, "\(apply.stdout)\(apply.stderr)")
        #expect(apply.stderr.contains("error: the agent was changed, but the history entry could not be written: ") && apply.stderr.contains("database or disk is full"),
                "\(apply.stderr)")
        #expect(apply.stderr.contains("recorded at the next start"), "\(apply.stderr)")
        #expect(!apply.stderr.contains("nothing was changed"), "\(apply.stderr)")
        #expect(try standIn.run("--get-settings", "KATAEDR").output.contains("Port=9443"), "the vendor's agent was changed")
        try history.execute("DROP TRIGGER full")
        let listed = tether(["history", "--state-dir", env.state.path])
        #expect(listed.stdout.contains("apply") && listed.stdout.contains("applied"), "the entry kept aside is recorded: \(listed.stdout)\(listed.stderr)")
        #expect(!FileManager.default.fileExists(atPath: env.state.url.appendingPathComponent("history.pending").path))
        #expect(env.run("drift").code == 0)
    }

    @Test("tether killed -9 in the middle of an apply: the next apply undoes the half-made change first, says so, and applies")
    func killedMidApply() throws {
        let (env, standIn) = try vendorDevice()
        try standIn.hang("--start-task KATANDR")
        let apply = Process()
        apply.executableURL = URL(fileURLWithPath: tetherExecutable)
        apply.arguments = ["apply"] + env.flags + ["--agent", "kesl", "--kesl-control", standIn.executable]
        apply.standardOutput = FileHandle.nullDevice
        apply.standardError = FileHandle.nullDevice
        try apply.run()
        let deadline = Date().addingTimeInterval(60)
        while !standIn.calls.contains(["--start-task", "KATANDR"]), Date() < deadline { usleep(50_000) }
        kill(apply.processIdentifier, SIGKILL)
        apply.waitUntilExit()
        try standIn.hang(nil)
        #expect(try standIn.run("--get-settings", "KATAEDR").output.contains("Port=9443"), "half applied before the kill")
        // The vendor command outlives tether and holds its lock: the next apply waits for it, then
        // undoes the whole half-made change (the late start of KATANDR too) and applies again.

        let again = env.run("apply")
        #expect(again.code == 0, "\(again.stdout)\(again.stderr)")
        #expect(again.stderr.contains("warning: an earlier change to the vendor's agent was cut short"), "\(again.stderr)")
        #expect(again.stderr.contains("every step already made was undone"), "\(again.stderr)")
        #expect(try standIn.run("--get-task-state", "KATANDR").output.contains("State: Started"))
        #expect(env.run("drift").code == 0)
    }

    @Test("The controller governs the vendor's agent: one cycle of run --once applies through kesl-control, and the next keeps the backend")
    func controller() throws {
        let (env, standIn) = try vendorDevice()
        let first = env.kesl(standIn, "run", "--once", "--no-connectors")
        #expect(first.code == 0, "\(first.stdout)\(first.stderr)")
        #expect(try standIn.run("--get-settings", "KATAEDR").output.contains("Port=9443"))
        standIn.clearCalls()
        let second = env.run("run", "--once")
        #expect(second.code == 0, "\(second.stdout)\(second.stderr)")
        #expect(standIn.calls.contains(["--get-settings", "KATAEDR"]), "the second cycle read the vendor's agent again")
        #expect(!standIn.calls.contains { $0.first == "--set-settings" }, "in sync: nothing set")
    }

    @Test("import of the vendor's agent, committed, validates and plans to nothing; the client container is listed, not exported")
    func importAgent() throws {
        let (env, standIn) = try vendorDevice()
        #expect(env.kesl(standIn, "apply").code == 0)
        let output = try TemporaryDirectory("tether-import")
        let imported = tether(["import", "--state-dir", env.state.path, "--into", output.path])
        #expect(imported.code == 0, "\(imported.stdout)\(imported.stderr)")
        #expect(imported.stdout.contains("edr.clientCertificate: not exported"), "\(imported.stdout)")
        let yaml = try String(contentsOf: output.url.appendingPathComponent("policies/imported.yaml"), encoding: .utf8)
        let lines = yaml.components(separatedBy: "\n")
        #expect(lines.contains { $0.hasPrefix("    port: 9443 ") && $0.hasSuffix("  # Port") }, "\(yaml)")
        #expect(lines.contains { $0.hasPrefix("    maximumEventsInPackage: 1024 ") && $0.hasSuffix("  # EventTransferSettings.MaximumNumberOfEventsInPackage") }, "\(yaml)")
        let layout = tether(["fmt", "--check", output.url.appendingPathComponent("policies").path])
        #expect(layout.code == 0 && layout.stdout.isEmpty, "import writes tether fmt's layout: \(layout.stdout)")
        #expect(!yaml.contains("\n  proxy:") && yaml.contains("# proxy: not managed on this agent"), "kesl-control cannot express the proxy: \(yaml)")

        // Committed to a repository of its own, for a device that only has the vendor's agent.
        let repo = try GitFixture()
        var files: [String: String] = ["policies/imported.yaml": yaml]
        for integration in ["edr", "ndr"] {
            files["certs/\(integration).pem"] = try String(contentsOf: output.url.appendingPathComponent("certs/\(integration).pem"), encoding: .utf8)
        }
        try repo.commit(files, message: "Imported")
        #expect(tether(["validate", "--repo", repo.path]).code == 0)
        let device = try TemporaryDirectory("tether-imported-device")
        let plan = tether(["plan", "--repo", repo.path, "--state-dir", device.path, "--agent", "kesl", "--kesl-control", standIn.executable,
                           "--detailed-exitcode"])
        #expect(plan.code == 0, "\(plan.stdout)\(plan.stderr)")

        // Vendor settings files both ways: exported from the agent (and from a revision), imported back.
        let exported = tether(["agent", "export", "ndr", "--ini", "--state-dir", env.state.path])
        #expect(exported.code == 0 && exported.stdout.contains("[Endpoints.item_0001]") && exported.stdout.contains("PingPeriod=450"), "\(exported.stdout)\(exported.stderr)")
        let desired = tether(["render", "--repo", env.repo.path, "--state-dir", env.state.path, "-o", "ini", "--integration", "edr"])
        #expect(desired.stdout.contains("Port=9443") && desired.stdout.contains("UseClientPinnedCertificate=Yes"), "\(desired.stdout)\(desired.stderr)")
        #expect(try standIn.run("--set-settings", "KATAEDR", "--file", try output.write("KATAEDR.ini", desired.stdout)).status == 0)
        let ini = try output.write("KATANDR.ini", exported.stdout)
        let fromINI = try TemporaryDirectory("tether-import-ini")
        #expect(tether(["import", "--ini", "ndr=\(ini)", "--into", fromINI.path, "--state-dir", device.path]).code == 0)
        let ndr = try String(contentsOf: fromINI.url.appendingPathComponent("policies/imported.yaml"), encoding: .utf8)
        #expect(ndr.contains("- {address: \"10.0.0.2\", port: 8082}"), "\(ndr)")
    }
}
