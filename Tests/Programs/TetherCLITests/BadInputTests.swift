import Foundation
import TetherTestSupport
import Testing

/// Each bad input gets one clear message with its location, exit 1, and the agent's store is
/// byte-for-byte unchanged.
@Suite("Bad input is refused clearly and changes nothing")
struct BadInputTests {
    /// Applies the good policies, commits `files`, then runs `arguments` and checks the refusal.
    private func expectRefusal(_ files: [String: String], _ arguments: [String] = ["apply"],
                               extraFlags: [String]? = nil, message expected: String,
                               sourceLocation: Testing.SourceLocation = #_sourceLocation) throws {
        let env = try Environment()
        #expect(env.run("apply").code == 0, sourceLocation: sourceLocation)
        #expect(tether(["agent", "set-settings", "edr", "Port=8443", "--state-dir", env.state.path]).code == 0, sourceLocation: sourceLocation)
        if !files.isEmpty { try env.repo.commit(files) }
        let before = try env.storeDigest()
        let result = tether(arguments + (extraFlags ?? env.flags))
        #expect(result.code == 1, "exit \(result.code): \(result.stdout)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains(expected), "stderr was: \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stdout.isEmpty, sourceLocation: sourceLocation)
        #expect(try env.storeDigest() == before, "the store changed", sourceLocation: sourceLocation)
    }

    @Test("A 200 MiB policy blob (200 KB in git) is refused by its size before it is inflated: validate's peak memory stays small")
    func hugeBlob() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let env = try Environment()
        let big = env.repo.directory.url.appendingPathComponent("policies/big.yaml")
        try Data(count: 200 << 20).write(to: big)
        try env.repo.commitAll(message: "A huge policy")
        // The child's peak resident memory, as the kernel counts it (wait4's rusage), in KiB.
        let measured = try runProgram("/usr/bin/python3", ["-c", """
            import resource, subprocess, sys
            done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
            print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
            print(done.stderr)
            """, tetherExecutable, "validate", "--repo", env.repo.path])
        let lines = measured.output.split(separator: "\n", maxSplits: 1)
        let figures = lines.first?.split(separator: " ").compactMap { Int($0) } ?? []
        #expect(figures.first == 1, "\(measured.output)")
        #expect(measured.output.contains("policies/big.yaml: 209715200 bytes is larger than the 1048576-byte limit for a policy file"), "\(measured.output)")
        #expect(figures.count == 2 && figures[1] < 100 * 1024, "peak \(figures.last ?? 0) KiB: the blob was inflated")
    }

    @Test("Malformed YAML")
    func malformedYAML() throws {
        try expectRefusal(["policies/base.yaml": "apiVersion: tether/v1\nkind: [IntegrationPolicy\n"],
                          message: "policies/base.yaml:3:1: malformed YAML:")
    }

    @Test("An unknown field, with a did-you-mean")
    func unknownField() throws {
        try expectRefusal(["policies/base.yaml": Environment.base.replacingOccurrences(of: "    port: 443", with: "    prot: 443")],
                          message: "policies/base.yaml:8:5: spec.edr: unknown field 'prot'; did you mean 'port'?")
    }

    @Test("A wrong type")
    func wrongType() throws {
        try expectRefusal(["policies/base.yaml": Environment.base.replacingOccurrences(of: "behaviorDetection: true", with: "behaviorDetection: sometimes")],
                          message: "policies/base.yaml:6:22: behaviorDetection: expected true or false, found the string \"sometimes\"")
    }

    @Test("An out-of-range value")
    func outOfRange() throws {
        try expectRefusal(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 0")],
                          message: "policies/base.yaml:8:11: edr.port: 0 is out of range: expected an integer from 1 to 65535")
    }

    @Test("A certificate file missing from the repository")
    func missingCertificate() throws {
        try expectRefusal(["policies/prod.yaml": Environment.prod.replacingOccurrences(of: "certs/kata.pem", with: "certs/missing.pem")],
                          message: "policies/prod.yaml:11:24: edr.serverCertificate: certificate file 'certs/missing.pem' does not exist in commit")
    }

    @Test("A file that is not a certificate")
    func notACertificate() throws {
        try expectRefusal(["certs/kata.pem": "this is not a certificate\n"],
                          message: "policies/prod.yaml:11:24: edr.serverCertificate: 'certs/kata.pem' is not a PEM or DER X.509 certificate")
    }

    @Test("A client container whose password is wrong")
    func wrongPassword() throws {
        let env = try Environment()
        #expect(env.run("apply").code == 0)
        try env.state.write("edr-client.pass", "not-the-password\n")
        // A new container is wanted, so the password matters now.
        let pki = try TestPKI()
        try env.state.write("edr-client.p12", try pki.data("edr-client.p12"))
        let before = try env.storeDigest()
        let result = env.run("apply")
        #expect(result.code == 1)
        #expect(result.stderr.contains("policies/prod.yaml:13:5: edr.clientCertificate: client container edr-client.p12 does not open with the password in edr-client.pass: wrong password"), "\(result.stderr)")
        #expect(try env.storeDigest() == before)
    }

    @Test("An unknown ref")
    func unknownRef() throws {
        try expectRefusal([:], ["apply", "--ref", "no-such-branch"], message: "unknown ref 'no-such-branch'")
    }

    @Test("A path that is not a git repository")
    func notARepository() throws {
        let plain = try TemporaryDirectory()
        let env = try Environment()
        #expect(env.run("apply").code == 0)
        let before = try env.storeDigest()
        let result = tether(["apply", "--repo", plain.path, "--state-dir", env.state.path])
        #expect(result.code == 1)
        #expect(result.stderr.contains("\(plain.path) is not a git repository"))
        #expect(try env.storeDigest() == before)
    }

    @Test("A policy that cannot hold on this agent (mutual TLS without a client certificate) names its line")
    func unenforceable() throws {
        let withoutClient = Environment.prod.replacingOccurrences(of: """
                clientCertificate:
                  file: edr-client.p12
                  passwordFile: edr-client.pass

            """, with: "\n")
        let env = try Environment(policies: ["policies/base.yaml": Environment.base, "policies/prod.yaml": withoutClient])
        #expect(env.agentCommand("get-settings", "edr").code == 0)
        let before = try env.storeDigest()
        let result = env.run("apply")
        #expect(result.code == 1)
        #expect(result.stderr.contains("policies/prod.yaml:10:14: edr.enabled: EDR cannot run as declared: mutualAuthentication is on but no client certificate is installed"), "\(result.stderr)")
        #expect(try env.storeDigest() == before)
    }
}

@Suite("tether validate")
struct ValidateTests {
    @Test("Every problem in every file in one run, as FILE:LINE:COLUMN: message; exit 1")
    func everyProblem() throws {
        let env = try Environment()
        try env.repo.commit([
            "policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 99999"),
            "policies/prod.yaml": Environment.prod.replacingOccurrences(of: "certs/kata.pem", with: "certs/none.pem")
                .replacingOccurrences(of: "synchronizationPeriod: 10", with: "synchronisationPeriod: 10"),
        ])
        let head = try env.repo.git("rev-parse", "HEAD").prefix(12)
        let result = env.run("validate")
        #expect(result.code == 1)
        let lines = result.stderr.split(separator: "\n").map(String.init)
        #expect(lines.contains("policies/base.yaml:8:11: edr.port: 99999 is out of range: expected an integer from 1 to 65535"))
        #expect(lines.contains("policies/prod.yaml:16:5: spec.edr: unknown field 'synchronisationPeriod'; did you mean 'synchronizationPeriod'?"))
        #expect(lines.contains("policies/prod.yaml:11:24: edr.serverCertificate: certificate file 'certs/none.pem' does not exist in commit \(head)"))
        #expect(lines.last == "3 problems found; nothing was changed.")
    }

    @Test("A valid repository: exit 0 and a one-line summary")
    func valid() throws {
        let env = try Environment()
        let result = env.run("validate")
        #expect(result.code == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("Valid: 2 policies in 2 files at revision \(env.revision.prefix(12))"))
    }

    @Test("validate checks that certificates exist and are certificates")
    func certificates() throws {
        let env = try Environment()
        try env.repo.commit(["policies/prod.yaml": Environment.prod.replacingOccurrences(of: "certs/kata.pem", with: "README.md"),
                             "README.md": "hello\n"])
        let result = env.run("validate")
        #expect(result.code == 1)
        #expect(result.stderr.contains("policies/prod.yaml:11:24: edr.serverCertificate: 'README.md' is not a PEM or DER X.509 certificate"))
    }
}

@Suite("tether agent: the local administrator's commands")
struct AgentCommandTests {
    @Test("get-settings prints vendor keys; --json prints policy names")
    func getSettings() throws {
        let env = try Environment()
        let text = env.agentCommand("get-settings", "ndr")
        #expect(text.code == 0)
        #expect(text.stdout.contains("[KATANDR] stopped"))
        #expect(text.stdout.contains("Endpoints=127.0.0.1:8081"))
        #expect(text.stdout.contains("EventTransferSettings.PingPeriod=450"))
        let json = env.agentCommand("get-settings", "sandbox", "--json").json
        #expect((json["settings"] as? [String: Any])?["queueSize"] as? Int == 1024)
        #expect(json["task"] as? String == "KATASandbox")
    }

    @Test("set-settings takes vendor keys, bare INI keys and lists; mistakes get a did-you-mean")
    func setSettings() throws {
        let env = try Environment()
        #expect(env.agentCommand("set-settings", "ndr", "PingPeriod=300", "Endpoints=10.0.0.1:8081,[::1]:8082").code == 0)
        let json = env.agentCommand("get-settings", "ndr", "--json").json
        let settings = json["settings"] as? [String: Any]
        #expect(settings?["pingPeriod"] as? Int == 300)
        #expect((settings?["endpoints"] as? [[String: Any]])?.last?["address"] as? String == "::1")

        let typo = env.agentCommand("set-settings", "edr", "Prot=1")
        #expect(typo.code == 1)
        #expect(typo.stderr.contains("unknown key 'Prot' for edr; did you mean 'Port'?"))
        let range = env.agentCommand("set-settings", "edr", "SynchronizationPeriod=0")
        #expect(range.code == 1)
        #expect(range.stderr.contains("SynchronizationPeriod: 0 is out of range: expected an integer from 1 to 60 (minutes)"))
    }

    @Test("start is refused with the unmet rule; certificates can be added, queried and removed")
    func startAndCertificates() throws {
        let env = try Environment()
        let refused = env.agentCommand("start", "edr")
        #expect(refused.code == 1)
        #expect(refused.stderr.contains("EDR (KATAEDR) cannot start: no server certificate is pinned"))
        #expect(env.agentCommand("query-server-certificate", "edr").code == 1)

        #expect(env.agentCommand("add-server-certificate", "edr", env.pki.path("server.pem")).code == 0)
        let query = env.agentCommand("query-server-certificate", "edr")
        #expect(query.code == 0)
        #expect(query.stdout.contains("subject      O=Tether demo platform,CN=kata.demo.local"))
        #expect(env.agentCommand("start", "edr").code == 0)

        // The agent reads the password file each time it connects, so it must be a device file.
        let outside = env.agentCommand("add-client-certificate", "edr", env.pki.path("edr-client.p12"), "--password-file", env.pki.path("edr-client.pass"))
        #expect(outside.code == 1)
        #expect(outside.stderr.contains("edr-client.pass is outside the folders device files may come from"), "\(outside.stderr)")
        try FileManager.default.copyItem(atPath: env.pki.path("ca.pem"), toPath: env.state.url.appendingPathComponent("wrong.pass").path)
        try FileManager.default.copyItem(atPath: env.pki.path("edr-client.pass"), toPath: env.state.url.appendingPathComponent("client.pass").path)
        let wrong = env.agentCommand("add-client-certificate", "edr", env.pki.path("edr-client.p12"), "--password-file", env.state.url.appendingPathComponent("wrong.pass").path)
        #expect(wrong.code == 1)
        #expect(wrong.stderr.contains("the PKCS#12 container's password is wrong"))
        #expect(!wrong.stderr.contains(try env.pki.text("edr-client.pass").trimmingCharacters(in: .whitespacesAndNewlines)))
        let added = env.agentCommand("add-client-certificate", "edr", env.pki.path("edr-client.p12"), "--password-file", env.state.url.appendingPathComponent("client.pass").path)
        #expect(added.code == 0, "\(added.stderr)")
        #expect(env.agentCommand("query-client-certificate", "edr").stdout.contains("CN=endpoint-demo"))

        #expect(env.agentCommand("remove-server-certificate", "edr").code == 0)
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("[KATAEDR] stopped"))
    }

    @Test("Pinning an expired, not yet valid or soon expiring certificate warns; a valid one does not")
    func certificateValidityWarnings() throws {
        let env = try Environment()
        let folder = try TemporaryDirectory()
        let cases: [(name: String, data: Data, warning: String?)] = [
            ("expired.pem", try certificate(validFrom: "20200101000000Z", until: "20200102000000Z"),
             "warning: the certificate expired on 2020-01-02; every connection of EDR fails while it is not valid"),
            ("future.pem", try certificate(validFrom: "20991231000000Z", until: "21000101000000Z"),
             "warning: the certificate is not valid until 2099-12-31T00:00:00Z (is this machine's clock right?)"),
            ("soon.pem", try TestPKI(days: 10).data("server.pem"), "warning: the certificate expires on "),
            ("valid.pem", try env.pki.data("server.pem"), nil),
        ]
        for (name, data, warning) in cases {
            let added = env.agentCommand("add-server-certificate", "edr", try folder.write(name, data))
            #expect(added.code == 0, "\(name): \(added.stderr)")
            #expect(added.stdout.contains("Pinned for EDR"), "\(name)")
            if let warning {
                #expect(added.stderr.contains(warning), "\(name): \(added.stderr)")
            } else {
                #expect(added.stderr.isEmpty, "\(name): \(added.stderr)")
            }
        }
        let soon = env.agentCommand("add-server-certificate", "edr", folder.path + "/soon.pem", "--warn-expiry", "5")
        #expect(soon.code == 0 && soon.stderr.isEmpty, "\(soon.stderr)")
        #expect(env.agentCommand("add-server-certificate", "edr", folder.path + "/soon.pem", "--warn-expiry", "-1").code == 1)
    }

    @Test("Usage mistakes exit 1 and say what to type")
    func usage() {
        let result = tether(["agent", "set-settings", "edr"])
        #expect(result.code == 1)
        #expect(result.stderr.contains("tether agent set-settings edr Port=8443"))
        let help = tether(["plan", "--help"])
        #expect(help.code == 0)
        #expect(help.stdout.contains("--repo"))
        // tether run parses its arguments by itself first (Tether.parse); a mistake still names the whole command.
        let unknown = tether(["run", "--once", "--intervall", "5"])
        #expect(unknown.code == 1)
        #expect(unknown.stderr.contains("Unknown option '--intervall'") && unknown.stderr.contains("Usage: tether run ")
                && unknown.stderr.contains("See 'tether run --help' for more information."), "\(unknown.stderr)")
        let runHelp = tether(["run", "--help"])
        #expect(runHelp.code == 0 && runHelp.stdout.contains("USAGE: tether run "), "\(runHelp.stdout.prefix(300))")
    }
}

@Suite("tether schema")
struct SchemaTests {
    @Test("The committed policies/integration-policy.schema.json is what `tether schema` prints")
    func committedSchemaIsCurrent() throws {
        let printed = tether(["schema"])
        #expect(printed.code == 0)
        let committed = try String(contentsOf: repositoryRoot.appendingPathComponent("policies/integration-policy.schema.json"), encoding: .utf8)
        #expect(printed.stdout == committed, "run `swift run tether schema > policies/integration-policy.schema.json`")
        let edr = ((printed.json["properties"] as? [String: Any])?["spec"] as? [String: Any])
            .flatMap { ($0["properties"] as? [String: Any])?["edr"] as? [String: Any] }
            .flatMap { $0["properties"] as? [String: Any] }
        let port = edr?["port"] as? [String: Any]
        #expect(port?["maximum"] as? Int == 65535)
        #expect(port?["default"] as? Int == 443)
    }
}

@Suite("Device files named by policies stay in their folders")
struct DeviceFileTests {
    @Test("A policy cannot make the agent read (and send) any file: paths outside the state directory and /etc/tether are refused")
    func outsideAllowedFolders() throws {
        let escaping = Environment.prod.replacingOccurrences(of: "file: edr-client.p12", with: "file: ../../../../etc/passwd")
        let env = try Environment(policies: ["policies/base.yaml": Environment.base, "policies/prod.yaml": escaping])
        let plan = env.run("plan")
        #expect(plan.code == 1)
        #expect(plan.stderr.contains("edr.clientCertificate: client container ../../../../etc/passwd is outside the folders device files may come from"))
        let absolute = Environment.prod.replacingOccurrences(of: "passwordFile: edr-client.pass", with: "passwordFile: /etc/hostname")
        try env.repo.commit(["policies/prod.yaml": absolute])
        #expect(env.run("plan").stderr.contains("password file /etc/hostname is outside the folders"))
    }
}

@Suite("Tether and schema tools agree")
struct YAMLAgreementTests {
    /// The spec lines of each case (under a minimal valid policy).
    static let cases: [String] = [
        "  edr:\n    port: 443\n",
        "  edr:\n    port: 0443\n",
        "  edr:\n    port: 0x1BB\n",
        "  edr:\n    enabled: yes\n",
        "  edr:\n    enabled: True\n",
        "  behaviorDetection: on\n",
        "  edr:\n    connectionTimeout: 1_0\n",
        "  edr:\n    requestTimeout: 1:30\n",
        "  edr:\n    port: 0b101\n",
        "  edr:\n    port: \"443\"\n",
        "  edr:\n    address: no\n",
        "  edr:\n    address: \"no\"\n",
        "  ndr:\n    pingPeriod: 0o17\n",
    ]

    @Test("On the same files, a YAML 1.2 loader with the published schema never accepts what Tether refuses to read one way")
    func sameVerdicts() throws {
        let python = "/usr/bin/python3"
        try #require(FileManager.default.isExecutableFile(atPath: python), "scripts/install-deps --test installs python3")
        let schema = repositoryRoot.appendingPathComponent("policies/integration-policy.schema.json").path
        let checker = """
            import json, sys
            import jsonschema
            from ruamel.yaml import YAML
            schema = json.load(open(sys.argv[1]))
            document = YAML(typ="safe").load(open(sys.argv[2]).read())
            try:
                jsonschema.validate(document, schema)
                print("valid")
            except jsonschema.ValidationError:
                print("invalid")
            """
        for spec in Self.cases {
            let repo = try GitFixture()
            let text = "apiVersion: tether/v1\nkind: IntegrationPolicy\nmetadata:\n  name: p\nspec:\n" + spec
            try repo.commit(["policies/p.yaml": text])
            let tetherValid = tether(["validate", "--repo", repo.path]).code == 0
            let check = try runProgram(python, ["-c", checker, schema, repo.directory.url.appendingPathComponent("policies/p.yaml").path])
            let schemaValid = check.output.trimmingCharacters(in: .whitespacesAndNewlines) == "valid"
            try #require(check.status == 0, "the YAML 1.2 check ran (python3-ruamel.yaml, python3-jsonschema): \(check.output)")
            // Tether may refuse more (a spelling two YAML versions read differently), never less.
            if tetherValid { #expect(schemaValid, "Tether accepts, the schema refuses: \(spec)") }
            if !schemaValid { #expect(!tetherValid, "the schema refuses, Tether accepts: \(spec)") }
        }
    }
}

@Suite("Output safety")
struct OutputSafetyTests {
    @Test("Control bytes in file names and values never reach the terminal raw; long values are cut")
    func escapedOutput() throws {
        let repo = try GitFixture()
        try repo.commit(["policies/ok.yaml": "apiVersion: tether/v1\nkind: IntegrationPolicy\nmetadata:\n  name: ok\nspec: {}\n",
                         "policies/evil\u{1B}[2K\rFAKE: all good.yaml": "# nothing\n"])
        let named = tether(["validate", "--repo", repo.path])
        #expect(named.code == 1)
        #expect(named.stderr.contains("evil\\x1b[2K\\x0dFAKE: all good.yaml"), "\(named.stderr)")
        #expect(!named.stderr.contains("\u{1B}") && !named.stderr.contains("\r"))

        let long = String(repeating: "x", count: 60_000)
        let valued = try GitFixture()
        try valued.commit(["policies/p.yaml": """
            apiVersion: tether/v1
            kind: IntegrationPolicy
            metadata:
              name: p
            spec:
              edr:
                address: "\\e]0;owned\\a\\e[2J"
                mode: \(long)
            """])
        let result = tether(["validate", "--repo", valued.path])
        #expect(result.code == 1)
        #expect(!result.stderr.contains("\u{1B}") && !result.stderr.contains("\u{07}"), "\(result.stderr.prefix(300))")
        #expect(result.stderr.contains("\\x1b]0;owned\\x07\\x1b[2J"))
        #expect(result.stderr.split(separator: "\n").allSatisfy { $0.utf8.count < 400 }, "every line stays readable")
        #expect(result.stderr.contains("(60000 bytes)"))
    }
}

extension OutputSafetyTests {
    @Test("Colour codes in a repository value are escaped in every format, on the console and in --out files; the JUnit XML still parses")
    func colourCodesFromTheRepository() throws {
        let reason = #"INC-1 \e[0m\e[1m\e[31mall good\e[32m\e[33m\e[2m \x7f\x9b \u202e"#
        let env = try Environment(policies: ["policies/base.yaml": Environment.base + "\n  exceptions:\n    - {path: edr.port, reason: \"\(reason)\", expires: 2999-12-31}\n",
                                             "policies/prod.yaml": Environment.prod])
        #expect(env.run("apply").code == 0)
        #expect(env.agentCommand("set-settings", "edr", "Port=8443").code == 0)
        let folder = try TemporaryDirectory("tether-out")
        for format in ["text", "markdown", "html", "junit", "json", "sarif"] {
            let shown = env.run("drift", "--format", format)
            #expect(shown.stdout.contains("all good"), "\(format): the reason is shown")
            #expect(!shown.stdout.contains("\u{1B}"), "\(format): no raw escape on the console: \(shown.stdout.prefix(400))")
            #expect(!shown.stdout.unicodeScalars.contains { [0x7F, 0x9B, 0x202E].contains($0.value) }, "\(format): no raw DEL, CSI or override")
            if ["json", "sarif"].contains(format) {
                #expect((try? JSONSerialization.jsonObject(with: Data(shown.stdout.utf8))) != nil, "\(format): still valid JSON")
            }
            let file = folder.url.appendingPathComponent("report.\(format)").path
            #expect(env.run("drift", "--format", format, "--out", file).code == 0)
            let written = try String(contentsOfFile: file, encoding: .utf8)
            #expect(!written.contains("\u{1B}"), "\(format): no raw escape in the file")
        }
        let parsed = try runProgram("/usr/bin/python3", ["-c", "import sys, xml.etree.ElementTree as t; t.parse(sys.argv[1]); print('parsed')",
                                                         folder.url.appendingPathComponent("report.junit").path])
        #expect(parsed.output.contains("parsed"), "\(parsed.output)")
    }
}

@Suite("Git errors name the cause and the fix")
struct GitErrorTests {
    @Test("An empty repository with staged files says it has no commits yet")
    func noCommits() throws {
        let repo = try GitFixture()
        try repo.directory.write("policies/p.yaml", "apiVersion: tether/v1\n")
        try repo.git("add", "-A")
        let result = tether(["validate", "--repo", repo.path])
        #expect(result.code == 1)
        #expect(result.stderr.contains("has no commits yet: commit the policies first"), "\(result.stderr)")
    }

    @Test("A repository owned by another user names ownership", .enabled(if: getuid() == 0, "chown needs root"))
    func ownership() throws {
        let env = try Environment()
        try runProgram("chown", ["-R", "nobody", env.repo.path])
        let result = tether(["validate", "--repo", env.repo.path])
        #expect(result.code == 1)
        #expect(result.stderr.contains("is owned by another user"), "\(result.stderr)")
    }

    @Test("A repository owned by another user is read when the system or global git configuration marks it safe, as git does, and only then",
          .enabled(if: getuid() == 0, "chown needs root"))
    func safeDirectory() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let env = try Environment()
        try runProgram("chown", ["-R", "nobody", env.repo.path])
        let top = URL(fileURLWithPath: env.repo.path).resolvingSymlinksInPath().path
        let home = try TemporaryDirectory("tether-home")
        func validate(_ gitconfig: String?, _ extra: [String: String] = [:]) throws -> ProgramResult {
            if let gitconfig { try home.write(".gitconfig", gitconfig) } else { try? FileManager.default.removeItem(atPath: home.path + "/.gitconfig") }
            return try runProgram(tetherExecutable, ["validate", "--repo", env.repo.path + "/policies"],
                                  environment: ["HOME": home.path, "GIT_CONFIG_NOSYSTEM": "1"].merging(extra) { $1 })
        }
        let refused = try validate(nil)
        #expect(refused.status == 1 && refused.output.contains("git config --global --add safe.directory \(top)"), "\(refused.output)")
        #expect(try validate("[safe]\n\tdirectory = \(top)\n").status == 0, "named in ~/.gitconfig")
        #expect(try validate("[safe]\n\tdirectory = *\n").status == 0, "'*' trusts every directory")
        #expect(try validate("[safe]\n\tdirectory = /somewhere/else\n").status == 1, "another directory")
        #expect(try validate("[safe]\n\tdirectory = *\n\tdirectory =\n").status == 1, "an empty value resets the list")
        let global = try home.write("global.gitconfig", "[safe]\n\tdirectory = \(top)\n")
        #expect(try validate(nil, ["GIT_CONFIG_GLOBAL": global]).status == 0, "$GIT_CONFIG_GLOBAL is the global file")
        #expect(try validate("[safe]\n\tdirectory = \(top)\n", ["GIT_CONFIG_GLOBAL": "/dev/null"]).status == 1, "then ~/.gitconfig is not read")
        #expect(try validate(nil, ["GIT_CONFIG_NOSYSTEM": "0", "GIT_CONFIG_SYSTEM": global]).status == 0, "the system file counts too")
        // The repository's own configuration cannot vouch for itself (git ignores safe.directory there).
        try String(contentsOfFile: env.repo.path + "/.git/config", encoding: .utf8).appending("[safe]\n\tdirectory = *\n")
            .write(toFile: env.repo.path + "/.git/config", atomically: false, encoding: .utf8)
        #expect(try validate(nil).status == 1, "a repository's own config is not trusted")
        #expect(try validate("[core\n broken").status == 1, "a broken ~/.gitconfig names nothing and breaks nothing else")
    }

    @Test("Read-only commands create nothing: plan reads a missing state directory as a fresh agent; drift and history say there is no agent state there")
    func readOnlyCommandsCreateNothing() throws {
        let env = try Environment()
        _ = try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 8443")])
        let missing = env.state.url.appendingPathComponent("stat").path  // a typo of a state directory
        let plan = tether(["plan", "--detailed-exitcode", "--repo", env.repo.path, "--state-dir", missing])
        #expect(plan.code == 2, "a fresh agent has the base policy pending: \(plan.stderr)")
        #expect(plan.stdout.contains("edr.port"), "\(plan.stdout)")
        #expect(plan.stderr.contains("there is no agent state at \(missing): planned against a fresh agent; nothing was written"))
        for command in [["drift", "--repo", env.repo.path], ["history"]] {
            let refused = tether(command + ["--state-dir", missing])
            #expect(refused.code == 1, "\(command)")
            #expect(refused.stderr.contains("there is no agent state at \(missing) (no such folder)"), "\(command): \(refused.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: missing), "nothing was created")
    }

    @Test("Reading and fetching do not depend on $HOME or the user's git configuration")
    func noHome() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let env = try Environment()
        let home = try TemporaryDirectory("tether-home")
        try home.write(".gitconfig", "[core\n broken")  // git itself would refuse every command with this
        let read = try runProgram(tetherExecutable, ["validate", "--repo", env.repo.path], environment: ["HOME": home.path])
        #expect(read.status == 0, "\(read.output)")
        let fetch = try runProgram(tetherExecutable, ["run", "--once", "--no-connectors", "--repo", "file://\(env.repo.path)", "--ref", "main",
                                                      "--state-dir", env.state.path], environment: ["HOME": home.path])
        #expect(fetch.status == 0, "\(fetch.output)")
        #expect(!fetch.output.contains(".gitconfig"))
    }
}

@Suite("Pre-commit")
struct StagedTests {
    @Test("validate --staged reads what the next commit will hold: a staged typo fails while HEAD is clean, a staged fix passes")
    func staged() throws {
        let env = try Environment()
        #expect(tether(["validate", "--staged", "--repo", env.repo.path]).code == 0)
        try env.repo.directory.write("policies/base.yaml", Environment.base.replacingOccurrences(of: "port: 443", with: "prot: 443"))
        #expect(tether(["validate", "--staged", "--repo", env.repo.path]).code == 0, "not staged yet: the index is still clean")
        try env.repo.git("add", "-A")
        let typo = tether(["validate", "--staged", "--repo", env.repo.path])
        #expect(typo.code == 1)
        #expect(typo.stderr.contains("policies/base.yaml:8:5: spec.edr: unknown field 'prot'; did you mean 'port'?"), "\(typo.stderr)")
        #expect(tether(["validate", "--repo", env.repo.path]).code == 0, "HEAD is clean")
        try env.repo.directory.write("policies/base.yaml", Environment.base)
        try env.repo.git("add", "-A")
        let fixed = tether(["validate", "--staged", "--repo", env.repo.path])
        #expect(fixed.code == 0, "\(fixed.stderr)")
        #expect(fixed.stdout.contains("staged in the index"))
        let remote = tether(["validate", "--staged", "--repo", "https://git.example.com/x.git"])
        #expect(remote.code == 1 && remote.stderr.contains("--staged reads the index of a local repository"))
    }
}
