@testable import TetherCLI
import TetherTestSupport
import Testing

/// `tether run`'s arguments read without reflection (RunArguments.swift) against
/// swift-argument-parser's reading of the same arguments.
@Suite("tether run's arguments read directly")
struct RunArgumentsTests {
    /// Valid uses of every option of `tether run`, with what each one needs beside it.
    static let samples: [[String]] = [
        [],
        ["--config", "/etc/tether/other.yaml"],
        ["--repo", "https://git.example.com/secops/policies.git"],
        ["--ref", "main"],
        ["--path", "fleet/policies"],
        ["--state-dir", "/var/lib/tether-test"],
        ["--label", "env=prod", "--label", "site=ber"],
        ["--git-user", "ci"],
        ["--git-password-file", "/etc/tether/token"],
        ["--ssh-key", "/etc/tether/id_ed25519"],
        ["--ssh-passphrase-file", "/etc/tether/passphrase"],
        ["--known-hosts", "/etc/tether/known_hosts"],
        ["--git-ca-file", "/etc/tether/ca.pem"],
        ["--agent", "kesl"],
        ["--kesl-control", "/opt/kaspersky/kesl/bin/kesl-control"],
        ["--kesl-tasks", "edr=KATAEDR,behaviorDetection=Behavior_Detection"],
        ["--interval", "60"],
        ["--interval", "0.5", "--once"],
        ["--jitter", "0.25"],
        ["--max-backoff", "600"],
        ["--once"],
        ["--cycles", "3"],
        ["--verify", "range", "--allowed-signers", "/etc/tether/allowed_signers"],
        ["--allowed-signers", "/etc/tether/allowed_signers"],
        ["--suspend"],
        ["--metrics-address", "127.0.0.1:9464"],
        ["--textfile", "/var/lib/node_exporter/tether.prom"],
        ["--report-dir", "/var/log/tether"],
        ["--report-keep", "5"],
        ["--log-format", "json"],
        ["--health-window", "30"],
        ["--no-connectors"],
        ["--no-sensors"],
        ["--fetch-timeout", "20"],
        ["--probe-url", "https://git.example.com/secops/policies.git/info/refs", "--ref", "main"],
        ["--notify", "mqtt://127.0.0.1:1883/tether/policies"],
        ["--notify", "mqtts://127.0.0.1:8883/t", "--notify-ca", "ca.pem", "--notify-cert", "c.pem", "--notify-key", "k.pem"],
        ["--notify-spread", "30"],
        ["--notify-keepalive", "30"],
        ["--bundle-url", "https://cdn.example/policies", "--notify", "mqtt://127.0.0.1:1883/t", "--verify", "head",
         "--allowed-signers", "/etc/tether/allowed_signers", "--repo", "https://git.example.com/secops/policies.git"],
        ["--prune"],
        ["--once", "--no-sensors", "--repo", "/srv/policies", "--state-dir", "/tmp/state", "--log-format", "json", "--label", "env=prod"],
    ]

    /// Everything a command holds, as `dump` writes it: an option left unset shows as its definition.
    static func contents(_ command: RunCommand) -> String {
        var text = ""
        dump(command, to: &text)
        return text
    }

    /// `--name value` written `--name=value`.
    static func attached(_ arguments: [String]) -> [String] {
        var result: [String] = []
        for argument in arguments {
            if let last = result.last, last.hasPrefix("--"), !last.contains("="), !argument.hasPrefix("--"), !RunCommand.isFlag(last) {
                result[result.count - 1] = last + "=" + argument
            } else {
                result.append(argument)
            }
        }
        return result
    }

    @Test("Every option of tether run is read directly, and a sample uses it")
    func everyOptionIsCovered() {
        let options = Set(RunConfiguration.keys.map(\.name)).union(["config"])
        #expect(RunCommand.directlyReadOptions == options)
        let sampled = Set(Self.samples.joined().filter { $0.hasPrefix("--") }.map { String($0.dropFirst(2)) })
        #expect(sampled == options, "options without a sample: \(options.subtracting(sampled).sorted())")
    }

    @Test("Read directly or by swift-argument-parser, the same arguments give the same command", arguments: samples)
    func sameCommand(_ arguments: [String]) throws {
        for form in [arguments, Self.attached(arguments)] {
            let parsed = try RunCommand.parse(form)
            let direct = try #require(RunCommand.parseDirectly(form), "\(form) was left to the parser")
            #expect(Self.contents(direct) == Self.contents(parsed), "\(form)")
        }
        // A typo in the default of an option no sample names would show here too.
        #expect(Self.contents(try #require(RunCommand.parseDirectly([]))).contains("(*definition*)") == false)
    }

    @Test("Anything but the plain forms is left to swift-argument-parser, which gives its own answer")
    func leftToTheParser() throws {
        // Valid, or not, as the parser decides: not run here (a valid one would reconcile this machine).
        for arguments in [["--once", "--once"], ["--interval", "60", "--interval", "120"], ["--repo", ""], ["--repo=-x"]] {
            #expect(RunCommand.parseDirectly(arguments) == nil, "\(arguments)")
        }
        for help in [["--help"], ["-h"]] {
            #expect(RunCommand.parseDirectly(help) == nil)
            let result = tether(["run"] + help)
            #expect(result.code == 0 && result.stdout.contains("USAGE: tether run "), "\(help): \(result.stdout.prefix(200))")
        }
        let mistakes: [(arguments: [String], says: String)] = [
            (["--once", "--intervall", "5"], "Unknown option '--intervall'"),
            (["policies"], "Unexpected argument 'policies'"),
            (["--", "--once"], "Unexpected argument '--once'"),
            (["--once=true"], "--once"),
            (["--repo"], "Missing value for '--repo"),
            (["--interval", "abc"], "The value 'abc' is invalid for '--interval"),
            (["--interval", "-5"], "--interval"),
            (["--jitter", "2"], "--jitter is a share of the interval, from 0 to 1"),
            (["--verify", "head"], "--verify head needs --allowed-signers FILE"),
            (["--label", "nokey"], "--label 'nokey' is not key=value"),
            (["--interval", "0.5"], "would reconcile without a pause"),
            (["--notify-cert", "c.pem"], "--notify-cert and --notify-key go together"),
            (["--probe-url", "https://git.example.com/p.git/info/refs"], "--probe-url needs --ref"),
        ]
        for mistake in mistakes {
            #expect(RunCommand.parseDirectly(mistake.arguments) == nil, "\(mistake.arguments)")
            let result = tether(["run"] + mistake.arguments)
            #expect(result.code == 1 && result.stderr.contains(mistake.says) && result.stderr.contains("tether run"),
                    "\(mistake.arguments): \(result.stderr)")
        }
    }
}

extension RunCommand {
    /// Whether `--name` is one of run's flags (takes no value).
    static func isFlag(_ option: String) -> Bool {
        RunConfiguration.keys.contains { "--" + $0.name == option && $0.kind == .flag }
    }
}
