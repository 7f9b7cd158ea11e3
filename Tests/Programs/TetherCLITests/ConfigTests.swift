import Foundation
@testable import TetherCLI
import TetherTestSupport
import Testing

/// `tether run`'s configuration: the file, TETHER_* variables and the command line.
@Suite("Configuration of tether run", .serialized, .ownThread)
struct ConfigTests {
    @Test("config show: --help is help, defaults show their values, what run refuses is refused, booleans in the file are true or false")
    func configShow() throws {
        let help = tether(["config", "show", "--help"])
        #expect(help.code == 0 && help.stdout.contains("USAGE: tether config show"), "\(help.stdout)")
        let shown = tether(["config", "show", "--", "--state-dir", "/tmp/x"])
        func line(_ key: String) -> String { shown.stdout.split(separator: "\n").first { $0.hasPrefix(key + " ") }.map(String.init) ?? "" }
        #expect(line("interval").contains("300.0 (default)") && line("path").contains("policies (default)") && line("once").contains("off (default)"),
                "\(shown.stdout)")
        for refused in [["--bogus"], ["--interval", "abc"]] {
            let result = tether(["config", "show", "--"] + refused)
            #expect(result.code == 1 && result.stderr.contains("tether run would refuse these options"), "\(refused): \(result.stderr)")
        }
        let folder = try TemporaryDirectory("tether-config")
        let file = try folder.write("tether.yaml", "suspend: yes\n")
        let yes = tether(["config", "show", "--config", file])
        #expect(yes.code == 1 && yes.stderr.contains("\(file):1: 'suspend' takes true or false, not 'yes'"), "\(yes.stderr)")
    }

    @Test("The configuration's keys are exactly the long options of `tether run`, in its help's order, flags as flags")
    func keysAreTheRunOptions() {
        var fromHelp: [(name: String, flag: Bool)] = []
        for line in RunCommand.helpMessage(columns: 1000).split(separator: "\n") {
            let text = line.drop { $0 == " " }
            guard text.hasPrefix("--") else { continue }
            let name = String(text.dropFirst(2).prefix { $0 != " " && $0 != "," })
            guard !["help", "version", "config"].contains(name), !fromHelp.contains(where: { $0.name == name }) else { continue }
            fromHelp.append((name, !text.dropFirst(2 + name.count).drop { $0 == " " }.hasPrefix("<")))
        }
        #expect(RunConfiguration.keys.map(\.name) == fromHelp.map(\.name))
        #expect(RunConfiguration.keys.filter { $0.kind == .flag }.map(\.name) == fromHelp.filter(\.flag).map(\.name))
        #expect(RunConfiguration.keys.filter { $0.kind == .list }.map(\.name) == ["label"], "label is the option given more than once")
    }

    @Test("The command line wins over TETHER_* variables, which win over the file; config show names each value's source and masks credentials")
    func precedence() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let folder = try TemporaryDirectory("tether-config")
        let file = try folder.write("tether.yaml", """
            # tether run's configuration
            repo: https://deploy:s3cr3t@git.example.org/policies.git
            interval: 60
            jitter: 0.3
            label: {env: prod, site: fra1}
            suspend: true
            """)
        let shown = try runProgram(tetherExecutable, ["config", "show", "--config", file, "--", "--jitter", "0.2"],
                                   environment: ["TETHER_INTERVAL": "120", "TETHER_GIT_TOKEN": "tok-123", "TETHER_SUSPEND": "false"])
        #expect(shown.status == 0, "\(shown.output)")
        func line(_ key: String) -> String { shown.output.split(separator: "\n").first { $0.hasPrefix(key + " ") }.map(String.init) ?? "" }
        #expect(line("jitter").contains("0.2") && line("jitter").hasSuffix("# command line"), "\(line("jitter"))")
        #expect(line("interval").contains("120") && line("interval").hasSuffix("# environment TETHER_INTERVAL"))
        #expect(line("suspend").contains("off") && line("suspend").hasSuffix("# environment TETHER_SUSPEND"), "a variable turns off a flag the file set")
        #expect(line("label").contains("env=prod, site=fra1") && line("label").hasSuffix("\(file):5"))
        #expect(line("repo").contains("https://***@git.example.org/policies.git") && line("repo").hasSuffix("\(file):2"), "\(line("repo"))")
        #expect(!shown.output.contains("s3cr3t") && !shown.output.contains("tok-123"), "no secret is printed: \(shown.output)")
        #expect(shown.output.contains("TETHER_GIT_TOKEN is set (never shown)"))
        #expect(line("max-backoff").hasSuffix("(default)"))
    }

    @Test("tether run takes its repository, state directory and suspend from the file; a variable and a flag take precedence")
    func runReadsTheFile() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let env = try Environment()
        let folder = try TemporaryDirectory("tether-config")
        let file = try folder.write("tether.yaml", "repo: \(env.repo.path)\nstate-dir: \(env.state.path)\nsuspend: true\n")
        let suspended = try runProgram(tetherExecutable, ["run", "--once", "--config", file])
        #expect(suspended.status == 0, "\(suspended.output)")
        #expect(suspended.output.contains("suspended: nothing applied"), "\(suspended.output)")
        // The same file through $TETHER_CONFIG, with suspend turned off by a variable: it applies.
        let applied = try runProgram(tetherExecutable, ["run", "--once"], environment: ["TETHER_CONFIG": file, "TETHER_SUSPEND": "0"])
        #expect(applied.status == 0, "\(applied.output)")
        #expect(applied.output.contains("reason=applied"), "\(applied.output)")
    }

    @Test("A bad file: every problem with its line and what to write, nothing run; a file others can change is refused")
    func badFile() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let folder = try TemporaryDirectory("tether-config")
        let bad = try folder.write("bad.yaml", "intervl: 5\nonce: maybe\nlabel: [{a: b}]\n")
        let refused = try runProgram(tetherExecutable, ["run", "--config", bad])
        #expect(refused.status == 1)
        #expect(refused.output.contains("\(bad):1: unknown key 'intervl' (the keys are the long options of `tether run`); did you mean 'interval'?"), "\(refused.output)")
        #expect(refused.output.contains("\(bad):2: 'once' takes true or false, not 'maybe'"))
        #expect(refused.output.contains("\(bad):3: 'label' takes a list of plain values"))
        let nested = try folder.write("nested.yaml", "label: {env: {a: b}}\n")
        let refusedLabel = try runProgram(tetherExecutable, ["run", "--config", nested])
        #expect(refusedLabel.status == 1 && refusedLabel.output.contains("\(nested):1: 'label' takes plain keys and values"), "\(refusedLabel.output)")
        let open = try folder.write("open.yaml", "interval: 5\n")
        chmod(open, 0o666)
        let writable = try runProgram(tetherExecutable, ["config", "show", "--config", open])
        #expect(writable.status == 1 && writable.output.contains("can be changed by others: \(open) is writable by other users"), "\(writable.output)")
        // A file that is safe itself, in a folder anyone may write to (no sticky bit): another user
        // could put a link to a file of theirs in its place.
        let shared = try folder.subfolder("shared")
        chmod(shared, 0o777)
        let inShared = try folder.write("shared/tether.yaml", "interval: 5\n")
        let swappable = try runProgram(tetherExecutable, ["config", "show", "--config", inShared])
        #expect(swappable.status == 1 && swappable.output.contains("the folder \(shared) is writable by other users, who could put another file in its place"),
                "\(swappable.output)")
        // A link from a safe folder to a file in such a folder: where it leads is checked too.
        let safe = try folder.subfolder("safe")
        let link = safe + "/tether.yaml"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: inShared)
        let linked = try runProgram(tetherExecutable, ["config", "show", "--config", link])
        #expect(linked.status == 1 && linked.output.contains("the folder \(shared) is writable by other users"), "\(linked.output)")
        // /tmp-like folders (sticky) are fine for a file this user owns.
        let sticky = try folder.subfolder("sticky")
        chmod(sticky, 0o1777)
        let inSticky = try folder.write("sticky/tether.yaml", "interval: 5\n")
        #expect(try runProgram(tetherExecutable, ["config", "show", "--config", inSticky]).status == 0)
        // `..` on the way and a linked folder above the file are resolved before the folders are checked.
        #expect(try runProgram(tetherExecutable, ["config", "show", "--config", safe + "/../sticky/tether.yaml"]).status == 0)
        let linkedFolder = folder.url.appendingPathComponent("via").path
        try FileManager.default.createSymbolicLink(atPath: linkedFolder, withDestinationPath: sticky)
        #expect(try runProgram(tetherExecutable, ["config", "show", "--config", linkedFolder + "/tether.yaml"]).status == 0)
        let missing = try runProgram(tetherExecutable, ["run", "--config", folder.url.appendingPathComponent("none.yaml").path])
        #expect(missing.status == 1 && missing.output.contains("cannot read the configuration file"), "\(missing.output)")
    }

    @Test("Seconds that are not finite or are absurd are refused before anything starts, from the command line and the file alike")
    func absurdSeconds() throws {
        let env = try Environment()
        for (option, value) in [("--interval", "nan"), ("--interval", "inf"), ("--interval", "1e300"), ("--max-backoff", "1e9"),
                                ("--fetch-timeout", "1e20"), ("--fetch-timeout", "0"), ("--health-window", "1e300")] {
            let refused = tether(["run", "--once", option, value] + env.flags)
            #expect(refused.code == 1, "\(option) \(value): \(refused.stderr)")
            #expect(refused.stderr.contains("\(option) takes seconds from"), "\(option) \(value): \(refused.stderr)")
        }
        let unbounded = tether(["run", "--interval", "0"] + env.flags)
        #expect(unbounded.code == 1 && unbounded.stderr.contains("--interval 0.0 would reconcile without a pause"), "\(unbounded.stderr)")
        let apply = tether(["apply", "--health-window", "nan"] + env.flags)
        #expect(apply.code == 1 && apply.stderr.contains("--health-window takes seconds from 0 to 3600, not nan"), "\(apply.stderr)")
        let folder = try TemporaryDirectory("tether-config")
        let file = try folder.write("nan.yaml", "interval: inf\n")
        let fromFile = tether(["run", "--once", "--config", file] + env.flags)
        #expect(fromFile.code == 1 && fromFile.stderr.contains("\(file):1: 'interval' takes seconds from 0.0 to 604800.0, not 'inf'"), "\(fromFile.stderr)")
        let zero = try folder.write("zero.yaml", "suspend: false\ninterval: 0\n")
        let fromZero = tether(["run", "--config", zero] + env.flags)
        #expect(fromZero.code == 1 && fromZero.stderr.contains("\(zero):2: 'interval: 0' would reconcile without a pause"), "\(fromZero.stderr)")
        #expect(!FileManager.default.fileExists(atPath: env.state.url.appendingPathComponent("controller.json").path), "nothing ran")
    }

    @Test("A TETHER_ variable that names no key is warned about with the closest one, not silently ignored")
    func unknownVariable() throws {
        let shown = try runProgram(tetherExecutable, ["config", "show"], environment: ["TETHER_INTERVL": "5", "TETHER_CONFIG": ""])
        #expect(shown.output.contains("warning: the variable TETHER_INTERVL names no key of `tether run` and is ignored; did you mean TETHER_INTERVAL?"),
                "\(shown.output)")
    }

    @Test("Every option of tether run has a key, and no key is made up")
    func everyOption() throws {
        let folder = try TemporaryDirectory("tether-config")
        let empty = try folder.write("empty.yaml", "")
        let shown = try runProgram(tetherExecutable, ["config", "show", "--config", empty])
        let keys = Set(shown.output.split(separator: "\n").dropFirst().compactMap { $0.split(separator: " ").first.map(String.init) })
        let help = try runProgram(tetherExecutable, ["run", "--help"]).output
        let options = Set(help.split(separator: "\n").compactMap { line -> String? in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard trimmed.hasPrefix("--") else { return nil }
            let name = String(trimmed.dropFirst(2).prefix { $0 != " " })
            return name.allSatisfy { $0.isLowercase || $0 == "-" } ? name : nil  // not a wrapped line's "--verify."
        }).subtracting(["help", "version", "config"])
        #expect(keys == options, "keys \(keys.sorted()) vs options \(options.sorted())")
        #expect(keys.contains("interval") && keys.contains("no-sensors") && keys.contains("state-dir"))
    }
}

/// Reports and cycle outcomes off the device.
@Suite("Reports off the device")
struct ReportsOffTheDevice {
    @Test("run --report-dir keeps the newest report per revision, bounded; each cycle is one JSON log line with typed values; report merge reads the folder")
    func reportFolder() throws {
        let env = try Environment()
        let folder = try TemporaryDirectory("tether-reports")
        let reports = folder.url.appendingPathComponent("reports").path
        let first = tether(["run", "--cycles", "2", "--interval", "0", "--no-connectors", "--report-dir", reports, "--report-keep", "1",
                            "--log-format", "json"] + env.flags)
        #expect(first.code == 0, "\(first.stderr)")
        let name = "tether-\(env.revision.prefix(12)).json"
        #expect(try FileManager.default.contentsOfDirectory(atPath: reports) == [name], "one report per revision, replaced each cycle")
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: reports).appendingPathComponent(name))) as? [String: Any]
        #expect(report?["kind"] as? String == "drift" && report?["revision"] as? String == env.revision)
        // The cycle's outcome as typed JSON: a number is a number, a flag a boolean.
        let cycles = first.stderr.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            .filter { $0["condition"] != nil }
        #expect(cycles.count == 2, "\(first.stderr)")
        #expect(!first.stderr.contains("was replaced"), "a store the run made itself is no replacement: \(first.stderr)")
        #expect(cycles.first?["condition"] as? String == "Ready" && cycles.first?["duration"] is Double && cycles.first?["fetched"] is Bool)
        #expect(cycles.first?["reason"] as? String == "applied" && cycles.last?["reason"] as? String == "in-sync", "\(cycles)")

        env.revision = try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 8443")], message: "Port")
        #expect(tether(["run", "--once", "--report-dir", reports, "--report-keep", "1"] + env.flags).code == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: reports) == ["tether-\(env.revision.prefix(12)).json"], "the oldest beyond --report-keep went")

        let merged = tether(["report", "merge", reports, "--format", "json"])
        #expect(merged.code == 0, "\(merged.stderr)")
        #expect(merged.stdout.contains(ProcessInfo.processInfo.hostName), "\(merged.stdout)")
        let empty = try folder.write("none/readme.txt", "x")
        _ = empty
        let refused = tether(["report", "merge", folder.url.appendingPathComponent("none").path])
        #expect(refused.code == 1 && refused.stderr.contains("holds no JSON report"))
    }
}
