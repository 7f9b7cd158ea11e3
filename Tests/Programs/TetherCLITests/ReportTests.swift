#if canImport(FoundationXML)
import EmbeddedAgent
import FoundationXML
#endif
import Foundation
import IntegrationModel
import Reconciler
import TetherTestSupport
import Testing

private func findings(_ result: TetherResult) -> [[String: Any]] {
    result.json["findings"] as? [[String: Any]] ?? []
}

private func finding(_ result: TetherResult, _ path: String, kind: String? = nil) -> [String: Any]? {
    findings(result).first { $0["path"] as? String == path && (kind == nil || $0["kind"] as? String == kind) }
}

@Suite("Every finding has a cause")
struct FindingCauseTests {
    @Test("pending: git changed and the agent has not caught up; drift: changed outside Tether; conflict: both")
    func threeWay() throws {
        let env = try Environment()
        #expect(env.run("apply").code == 0)

        try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        let pending = env.run("drift", "--format", "json")
        #expect(pending.code == 2)
        #expect(finding(pending, "edr.port")?["kind"] as? String == "pending")

        #expect(env.agentCommand("set-settings", "edr", "Port=8443").code == 0)
        let conflict = env.run("drift", "--format", "json")
        #expect(finding(conflict, "edr.port")?["kind"] as? String == "conflict")

        try env.repo.commit(["policies/base.yaml": Environment.base])
        let drift = env.run("drift", "--format", "json")
        let port = try #require(finding(drift, "edr.port"))
        #expect(port["kind"] as? String == "drift")
        #expect(port["desired"] as? Int == 443)
        #expect(port["actual"] as? Int == 8443)
        #expect((port["lastChange"] as? [String: Any])?["actor"] as? String == "tether agent set-settings")
        let noticed = try #require(port["noticedAt"] as? String)
        // Noticed once: a later detection keeps the first time.
        Thread.sleep(forTimeInterval: 1.1)
        #expect(finding(env.run("drift", "--format", "json"), "edr.port")?["noticedAt"] as? String == noticed)
    }

    @Test("A certificate that expires within --warn-expiry days is expiring; an expired one is expired")
    func expiry() throws {
        let env = try Environment()
        let shortLived = try TestPKI(days: 10)
        try env.repo.commit(data: ["certs/kata.pem": try shortLived.data("server.pem")], message: "Short-lived certificate")
        #expect(env.run("apply").code == 0)
        let soon = env.run("drift", "--format", "json")
        #expect(soon.code == 2)
        let expiring = try #require(finding(soon, "edr.serverCertificate", kind: "expiring"))
        #expect((expiring["reason"] as? String)?.contains("in 9 days") == true || (expiring["reason"] as? String)?.contains("in 10 days") == true)
        #expect(env.run("drift", "--warn-expiry", "5").code == 0)

        try env.repo.commit(data: ["certs/kata.pem": try certificate(validFrom: "20200101000000Z", until: "20200102000000Z")], message: "Expired")
        let expired = env.run("drift", "--format", "json")
        #expect(finding(expired, "edr.serverCertificate", kind: "expired")?["reason"] as? String == "the certificate expired on 2020-01-02")
        #expect(finding(expired, "edr.serverCertificate", kind: "pending") != nil)
    }

    @Test("unenforceable: a client container missing on this device is a finding with the reason, not a crash")
    func unenforceable() throws {
        let env = try Environment()
        try FileManager.default.removeItem(at: env.state.url.appendingPathComponent("edr-client.p12"))
        let drift = env.run("drift", "--format", "json")
        #expect(drift.code == 2)
        let missing = try #require(finding(drift, "edr.clientCertificate"))
        #expect(missing["kind"] as? String == "unenforceable")
        #expect((missing["reason"] as? String)?.contains("client container edr-client.p12 cannot be read on this device") == true)
        // apply refuses it with the policy line, and changes nothing.
        let apply = env.run("apply")
        #expect(apply.code == 1)
        #expect(apply.stderr.contains("policies/prod.yaml:13:5: edr.clientCertificate: client container edr-client.p12 cannot be read"))
    }

    @Test("Secrets never reach a report: certificates by fingerprint, no container, no password")
    func noSecrets() throws {
        let env = try Environment()
        #expect(env.run("apply").code == 0)
        let password = try env.pki.text("edr-client.pass").trimmingCharacters(in: .whitespacesAndNewlines)
        for format in ["text", "json", "markdown", "html", "sarif", "junit"] {
            let output = env.run("plan", "--format", format).stdout + env.run("drift", "--format", format).stdout
            #expect(!output.contains(password), "the password appears in \(format)")
            #expect(!output.contains("PRIVATE KEY"), "a key appears in \(format)")
        }
        let snapshot = env.agentCommand("snapshot").stdout
        #expect(!snapshot.contains(password))
        #expect(!snapshot.contains(Data(try env.pki.data("edr-client.p12")).base64EncodedString().prefix(40)))
    }
}

@Suite("Per-field authority in git")
struct AuthorityTests {
    private func policies(extra: String) -> [String: String] {
        ["policies/base.yaml": Environment.base + "\n" + extra, "policies/prod.yaml": Environment.prod]
    }

    @Test("observe: reported, never corrected; ignore: neither")
    func observeAndIgnore() throws {
        let env = try Environment(policies: policies(extra: "  observe: [edr.port]\n  ignore: [edr.address]\n"))
        #expect(env.run("apply").code == 0)
        #expect(env.agentCommand("set-settings", "edr", "Port=8443", "Address=10.9.9.9").code == 0)
        let drift = env.run("drift", "--format", "json")
        #expect(drift.code == 2)
        let port = try #require(finding(drift, "edr.port"))
        #expect(port["mode"] as? String == "observe")
        #expect(port["corrected"] as? Bool == false)
        #expect(finding(drift, "edr.address") == nil)
        #expect(env.run("plan").code == 0, "nothing to correct")
        #expect(env.run("apply").code == 0)
        let settings = env.agentCommand("get-settings", "edr", "--json").json["settings"] as? [String: Any]
        #expect(settings?["port"] as? Int == 8443)
        #expect(settings?["address"] as? String == "10.9.9.9")
    }

    @Test("An active exception accepts the difference with its reason; an expired one is reported and enforced again")
    func exceptions() throws {
        let active = "  exceptions:\n    - {path: edr.port, reason: \"INC-4711: trying 8443\", expires: 2999-12-31}\n"
        let env = try Environment(policies: policies(extra: active))
        #expect(env.run("apply").code == 0)
        #expect(env.agentCommand("set-settings", "edr", "Port=8443").code == 0)
        let drift = env.run("drift", "--format", "json")
        #expect(drift.code == 0, "an accepted difference keeps the device in sync")
        let excepted = try #require(finding(drift, "edr.port"))
        #expect(excepted["kind"] as? String == "excepted")
        #expect((excepted["reason"] as? String)?.contains("INC-4711: trying 8443") == true)
        #expect(env.run("plan").code == 0)

        try env.repo.commit(["policies/base.yaml": Environment.base + "\n" + active.replacingOccurrences(of: "2999-12-31", with: "2020-01-31")])
        let expired = env.run("drift", "--format", "json")
        #expect(expired.code == 2)
        #expect((finding(expired, "edr.port", kind: "exception-expired")?["reason"] as? String)?.contains("expired on 2020-01-31") == true)
        #expect(finding(expired, "edr.port", kind: "drift") != nil)
        #expect(env.run("apply").code == 0)
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("Port=443"))
    }

    @Test("Mistakes in observe lists and exceptions are located")
    func mistakes() throws {
        let env = try Environment(policies: policies(extra: "  observe: [edr.prot]\n  exceptions:\n    - {path: edr.port, reason: x, expires: someday}\n"))
        let result = env.run("validate")
        #expect(result.code == 1)
        #expect(result.stderr.contains("policies/base.yaml:10:13: spec.observe: unknown setting path 'edr.prot'; did you mean 'edr.port'?"))
        #expect(result.stderr.contains("policies/base.yaml:12:44: spec.exceptions[0].expires: 'someday' is not a date"))
    }
}

@Suite("Report formats")
struct FormatTests {
    /// An environment with one drifted setting.
    private func drifted() throws -> Environment {
        let env = try Environment()
        #expect(env.run("apply").code == 0)
        #expect(env.agentCommand("set-settings", "edr", "Port=8443").code == 0)
        return env
    }

    @Test("JSON follows policies/report.schema.json")
    func jsonSchema() throws {
        let env = try drifted()
        let report = try env.state.write("report.json", env.run("drift", "--format", "json").stdout)
        let plan = try env.state.write("plan.json", env.run("plan", "--format", "json").stdout)
        let schema = repositoryRoot.appendingPathComponent("policies/report.schema.json").path
        let check = try runProgram("python3", ["-c", """
            import json, sys, jsonschema
            schema = json.load(open(sys.argv[1]))
            for path in sys.argv[2:]:
                jsonschema.validate(json.load(open(path)), schema)
            print("valid")
            """, schema, report, plan])
        #expect(check.status == 0, "\(check.output)")
    }

    @Test("Markdown: a summary line and table, then the findings")
    func markdown() throws {
        let env = try drifted()
        let text = env.run("drift", "--format", "markdown").stdout
        #expect(text.hasPrefix("### ⚠️ Tether drift on `"))
        // A review names the checkout by its folder, not by the runner's absolute path.
        #expect(text.contains("from `\(env.repo.directory.url.lastPathComponent)`, folder `policies`") && !text.contains(env.repo.path), "\(text)")
        #expect(text.contains("| EDR (KATAEDR) | 7 | 1 | 1 drift |"))
        #expect(text.contains("| `edr.port` | drift | `8443` | `443` | `policies/base.yaml:8` |"))
        // Each change names the step that makes it, as the numbered steps below list them.
        #expect(text.contains("| Step |") && text.contains("1. set edr.port: 8443 → 443"), "\(text)")
        #expect(text.split(separator: "\n").contains { $0.hasPrefix("| `edr.port` | drift |") && $0.hasSuffix("| 1 |") }, "\(text)")
    }

    @Test("HTML: one self-contained page with per-integration tables and policy lines")
    func html() throws {
        let env = try drifted()
        let result = env.run("drift", "--format", "html", "--out", env.state.url.appendingPathComponent("drift.html").path)
        #expect(result.code == 2)
        #expect(result.stdout.isEmpty)
        let page = try String(contentsOf: env.state.url.appendingPathComponent("drift.html"), encoding: .utf8)
        #expect(page.hasPrefix("<!DOCTYPE html>"))
        #expect(page.contains("<h2>EDR (KATAEDR)</h2>"))
        #expect(page.contains("<code>policies/base.yaml:8</code>"))
        #expect(!page.contains("src=") && !page.contains("<link"), "no external assets")
    }

    @Test("HTML renders in a real browser (headless Chromium screenshot)", .enabled(if: Chromium.path != nil))
    func htmlRenders() throws {
        let env = try drifted()
        let page = env.state.url.appendingPathComponent("drift.html").path
        _ = env.run("drift", "--format", "html", "--out", page)
        let shot = env.state.url.appendingPathComponent("drift.png").path
        let result = try runProgram(Chromium.path!, ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                                                     "--screenshot=\(shot)", "file://\(page)"])
        #expect(result.status == 0, "\(result.output)")
        let png = try Data(contentsOf: URL(fileURLWithPath: shot))
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]))
        #expect(png.count > 10_000, "a blank page is a few hundred bytes")
    }

    @Test("SARIF 2.1.0: each finding at the policy file and line that declared it")
    func sarif() throws {
        let result = try drifted().run("drift", "--format", "sarif")
        #expect(result.json["version"] as? String == "2.1.0")
        let run = try #require((result.json["runs"] as? [[String: Any]])?.first)
        let results = try #require(run["results"] as? [[String: Any]])
        #expect(results.count == 1)
        #expect(results.first?["ruleId"] as? String == "tether/drift")
        #expect(results.first?["level"] as? String == "error")
        let location = (results.first?["locations"] as? [[String: Any]])?.first?["physicalLocation"] as? [String: Any]
        #expect((location?["artifactLocation"] as? [String: Any])?["uri"] as? String == "policies/base.yaml")
        #expect((location?["region"] as? [String: Any])?["startLine"] as? Int == 8)
        let provenance = (run["versionControlProvenance"] as? [[String: Any]])?.first?["repositoryUri"] as? String
        #expect(provenance?.hasPrefix("file:///") == true, "an absolute URI, not a path: \(String(describing: provenance))")
    }

    @Test("JUnit: one test case per managed setting, failing where out of sync")
    func junit() throws {
        let xml = try drifted().run("drift", "--format", "junit").stdout
        let document = try XMLDocument(xmlString: xml)
        let cases = try document.nodes(forXPath: "//testcase")
        #expect(cases.count == 8)
        let failures = try document.nodes(forXPath: "//testcase[failure]/@name").compactMap(\.stringValue)
        #expect(failures == ["edr.port"])
        #expect(try document.nodes(forXPath: "//testcase/@file").isEmpty, "no attributes outside the JUnit schema")

        // A plan's intended changes pass (the pull request asks for them), saying what will change.
        let env = try Environment()
        let plan = try XMLDocument(xmlString: env.run("plan", "--format", "junit").stdout)
        #expect(try plan.nodes(forXPath: "//testcase[failure]").isEmpty)
        let out = try plan.nodes(forXPath: "//testsuite/system-out").first?.stringValue ?? ""
        #expect(out.contains("edr.enabled: declared at policies/prod.yaml:10; will change: false → true"), "\(out)")
        #expect(try plan.nodes(forXPath: "//testsuite/@package").first?.stringValue == "tether")
        #expect(try plan.nodes(forXPath: "//testsuite/@timestamp").first?.stringValue?.hasSuffix("Z") == false)
    }
}

@Suite("Previews for pull requests and fleets")
struct PreviewTests {
    @Test("agent snapshot → plan --against plans offline, touching no agent")
    func snapshotAndAgainst() throws {
        let env = try Environment()
        #expect(env.run("apply").code == 0)
        #expect(env.agentCommand("set-settings", "edr", "Port=8443").code == 0)
        let snapshot = env.agentCommand("snapshot")
        #expect(snapshot.code == 0)
        #expect(snapshot.json["kind"] as? String == "agentSnapshot")
        let file = try env.repo.directory.write("../device-\(UUID().uuidString.prefix(6)).json", snapshot.stdout)
        defer { try? FileManager.default.removeItem(atPath: file) }

        let ci = try TemporaryDirectory("tether-ci")
        let plan = tether(["plan", "--detailed-exitcode", "--repo", env.repo.path, "--against", file, "--state-dir", ci.path, "--format", "json"])
        #expect(plan.code == 2, "\(plan.stderr)")
        #expect(finding(plan, "edr.port")?["kind"] as? String == "drift")
        #expect((plan.json["policies"] as? [String]) == ["prod-edr", "base"], "labels come from the snapshot")
        #expect((plan.json["notes"] as? [String])?.first?.contains("not checked offline: edr.clientCertificate") == true)
        #expect(finding(plan, "edr.clientCertificate") == nil, "a declared container the snapshot cannot show is not checked, never released")
        #expect(!FileManager.default.fileExists(atPath: ci.url.appendingPathComponent(Agent.storeFileName).path))
        // The snapshot on standard input, as a pipeline hands it over.
        let piped = try runProgram("/bin/sh", ["-c", "\"$0\" plan --repo \"$1\" --against - --state-dir \"$2\" --format json < \"$3\"",
                                                tetherExecutable, env.repo.path, ci.path, file])
        #expect(piped.status == 0 && piped.output.contains("\"edr.port\""), "\(piped.output)")
    }

    @Test("report merge: devices in sync, drifting, failing; by integration and by field")
    func merge() throws {
        let good = try Environment()
        #expect(good.run("apply").code == 0)
        let bad = try Environment()
        #expect(bad.run("apply").code == 0)
        #expect(bad.agentCommand("set-settings", "edr", "Port=8443").code == 0)
        let a = try good.state.write("a.json", good.run("drift", "--format", "json").stdout)
        // Two devices: the second report is re-labelled as another host (both ran on this machine).
        var other = try #require(try JSONSerialization.jsonObject(with: Data(bad.run("drift", "--format", "json").stdout.utf8)) as? [String: Any])
        other["device"] = ["host": "device-b", "labels": [:]] as [String: Any]
        let b = try bad.state.write("b.json", try JSONSerialization.data(withJSONObject: other))
        let fleet = tether(["report", "merge", a, b, "--format", "json"])
        #expect(fleet.code == 0)
        #expect(fleet.json["summary"] as? [String: Int] == ["in sync": 1, "drifting": 1, "failing": 0])
        // Reports of one device count once: its newest.
        let again = tether(["report", "merge", a, a, b, "--format", "json"])
        #expect((again.json["devices"] as? [Any])?.count == 2, "one entry per device")
        let merged = try good.state.write("fleet.json", again.stdout)
        let check = try runProgram("python3", ["-c", """
            import json, sys, jsonschema
            jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))
            print("valid")
            """, repositoryRoot.appendingPathComponent("policies/fleet.schema.json").path, merged])
        #expect(check.status == 0, "the fleet view validates against policies/fleet.schema.json: \(check.output)")
        #expect((fleet.json["byField"] as? [[String: Any]])?.first?["path"] as? String == "edr.port")
        #expect(tether(["report", "merge", a, b, "--format", "html"]).stdout.contains("<h2>By field</h2>"))
        let broken = tether(["report", "merge", good.pki.path("ca.pem")])
        #expect(broken.code == 1)
        #expect(broken.stderr.contains("not a tether JSON report"))
    }
}

@Suite("History, rollback and detailed exit codes")
struct HistoryTests {
    @Test("Every apply and drift detection is recorded; rollback re-applies the last known-good revision")
    func historyAndRollback() throws {
        let env = try Environment()
        #expect(env.run("apply").code == 0)
        let first = env.revision
        let second = try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        #expect(env.run("apply").code == 0)
        #expect(env.run("drift").code == 0)

        let history = tether(["history", "--json", "--state-dir", env.state.path])
        let entries = try #require((try JSONSerialization.jsonObject(with: Data(history.stdout.utf8))) as? [[String: Any]])
        #expect(entries.map { $0["kind"] as? String } == ["drift", "apply", "apply"])
        #expect(entries[1]["revision"] as? String == second)
        #expect(entries[2]["revision"] as? String == first)

        let rollback = env.run("rollback")
        #expect(rollback.code == 0, "\(rollback.stderr)")
        #expect(rollback.stdout.contains("Rolled back from \(second.prefix(12)) to \(first.prefix(12))."))
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("Port=443"))
        #expect(tether(["history", "--state-dir", env.state.path]).stdout.contains("rollback  \(first.prefix(12))  applied"))
    }

    @Test("apply --detailed-exitcodes: 2 changes made, 0 nothing to do, 4 failed")
    func detailedExitCodes() throws {
        let env = try Environment()
        #expect(env.run("apply", "--detailed-exitcodes").code == 2)
        #expect(env.run("apply", "--detailed-exitcodes").code == 0)
        try FileManager.default.removeItem(atPath: env.storePath)
        try FileManager.default.createDirectory(atPath: env.storePath, withIntermediateDirectories: true)
        #expect(env.run("apply", "--detailed-exitcodes").code != 0)
    }
}

/// Headless Chromium from Debian's package, when installed.
enum Chromium {
    static let path: String? = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
}

@Suite("Command-line habits")
struct HabitTests {
    @Test("-o json prints JSON (as kubectl); --output FILE is refused with what to type, and writes no file named after a format")
    func outputFormat() throws {
        let env = try Environment()
        let json = env.run("drift", "-o", "json")
        #expect(json.code == 2)
        #expect(json.json["formatVersion"] as? Int == 1)
        let old = env.run("drift", "--output", "drift.html")
        #expect(old.code == 1)
        #expect(old.stderr.contains("to write the report to a file, use --out drift.html"), "\(old.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "drift.html") && !FileManager.default.fileExists(atPath: "json"))
    }
}

@Suite("History")
struct DriftHistoryTests {
    @Test("A drift that finds what the last one found adds no history row; a different result does")
    func onlyChanges() throws {
        let env = try Environment()
        #expect(env.run("apply").code == 0)
        let count = { try History(stateDirectory: env.state.url).entries(limit: 100).filter { $0.kind == .drift }.count }
        #expect(env.run("drift").code == 0)
        #expect(env.run("drift").code == 0)
        #expect(try count() == 1)
        #expect(env.agentCommand("set-settings", "edr", "Port=8443").code == 0)
        #expect(env.run("drift").code == 2)
        #expect(try count() == 2)
    }
}

@Suite("One output flag everywhere")
struct OutputFlagTests {
    @Test("-o json (or --json) on validate, status, history, agent status, agent get-settings and config show; import's folder is --into")
    func everywhere() throws {
        let env = try Environment()
        #expect(env.run("apply").code == 0)
        #expect(tether(["run", "--once", "--no-sensors", "--no-connectors"] + env.flags).code == 0)
        let valid = env.run("validate", "-o", "json")
        #expect(valid.code == 0 && valid.json["valid"] as? Bool == true, "\(valid.stdout)")
        env.revision = try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 70000")], message: "Typo")
        let invalid = env.run("validate", "-o", "json")
        let problem = (invalid.json["problems"] as? [[String: Any]])?.first
        #expect(invalid.code == 1 && invalid.json["valid"] as? Bool == false, "\(invalid.stdout)")
        #expect(problem?["file"] as? String == "policies/base.yaml" && problem?["line"] as? Int == 8 && problem?["column"] as? Int != nil
                && problem?["code"] as? String == "out-of-range", "\(String(describing: problem))")
        for arguments in [["status"], ["history"], ["agent", "status"], ["config", "show"]] {
            for flag in [["-o", "json"], ["--json"]] {
                let printed = tether(arguments + flag + (arguments == ["config", "show"] ? [] : ["--state-dir", env.state.path]))
                #expect(printed.code == 0, "\(arguments) \(flag): \(printed.stderr)")
                #expect((try? JSONSerialization.jsonObject(with: Data(printed.stdout.utf8))) != nil, "\(arguments) \(flag) prints JSON: \(printed.stdout)")
            }
        }
        let settings = env.agentCommand("get-settings", "edr", "-o", "json")
        #expect(settings.code == 0 && (try? JSONSerialization.jsonObject(with: Data(settings.stdout.utf8))) != nil, "\(settings.stdout)")
        // Completions offer the formats.
        let completion = try runProgram(tetherExecutable, ["--generate-completion-script", "bash"]).output
        #expect(completion.contains("'markdown'$'\\n''html'$'\\n''sarif'"), "-o <TAB> offers the report formats")
        #expect(completion.contains("'edr'$'\\n''ndr'$'\\n''sandbox'$'\\n''app'"), "agent get-settings <TAB> offers the targets")
        let old = tether(["import", "--state-dir", env.state.path, "--output", "somewhere"])
        #expect(old.code == 1 && old.stderr.contains("give the folder with --into somewhere"), "\(old.stderr)")
    }
}
