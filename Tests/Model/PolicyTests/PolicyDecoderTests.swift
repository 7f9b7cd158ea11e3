import Foundation
import IntegrationModel
import Testing
@testable import Policy

private func decode(_ text: String, file: String = "policies/p.yaml") -> (policies: [IntegrationPolicy], problems: [PolicyProblem]) {
    PolicyDecoder.decode(file: file, contents: Array(text.utf8))
}

private func policy(_ name: String, priority: Int = 0, labels: [String: String] = [:], spec: String) -> String {
    let selector = labels.isEmpty ? "" : "  selector:\n    matchLabels:\n" + labels.sorted { $0.key < $1.key }.map { "      \($0.key): \($0.value)\n" }.joined()
    return """
        apiVersion: tether/v1
        kind: IntegrationPolicy
        metadata:
          name: \(name)
        spec:
          priority: \(priority)
        \(selector)\(spec)
        """
}

@Suite("Decoding policies")
struct PolicyDecoderTests {
    @Test("Every value keeps the file, line and column that declared it")
    func positions() throws {
        let text = """
            apiVersion: tether/v1
            kind: IntegrationPolicy
            metadata:
              name: prod-edr
            spec:
              priority: 100
              selector:
                matchLabels: {env: prod}
              behaviorDetection: true
              edr:
                enabled: true
                port: 8443
                serverCertificate: certs/kata.pem
                clientCertificate:
                  file: /etc/tether/edr.p12
                  passwordFile: /etc/tether/edr.pass
              ndr:
                endpoints:
                  - {address: 10.0.0.1, port: 8081}
                  - {address: "::1", port: 8082}
            """
        let result = decode(text)
        #expect(result.problems.isEmpty, "\(result.problems)")
        let policy = try #require(result.policies.first)
        #expect(policy.name == "prod-edr")
        #expect(policy.priority == 100)
        #expect(policy.matchLabels == ["env": "prod"])
        let port = try #require(policy.values[.setting(SettingPath.edr.port)])
        #expect(port.value == .setting(.int(8443)))
        #expect(port.source == SourceLocation(file: "policies/p.yaml", line: 12, column: 11))
        #expect(policy.values[.serverCertificate(.edr)]?.value == .serverCertificate(path: "certs/kata.pem"))
        #expect(policy.values[.clientCertificate(.edr)]?.value
                == .clientCertificate(ClientCertificateReference(file: "/etc/tether/edr.p12", passwordFile: "/etc/tether/edr.pass")))
        #expect(policy.values[.setting(SettingPath.ndr.endpoints)]?.value
                == .setting(.endpoints([Endpoint(address: "10.0.0.1", port: 8081), Endpoint(address: "::1", port: 8082)])))
        #expect(policy.values[.setting(SettingPath.behaviorDetection)]?.value == .setting(.bool(true)))
        // Fields the policy does not name are not managed by it.
        #expect(policy.values[.setting(SettingPath.edr.address)] == nil)
    }

    @Test("Policy names are lower-case letters, digits, '-' and '.', at most 253, starting with a letter or digit; anything else is refused by name")
    func names() {
        for name in ["a", "0", "edr-base.prod", String(repeating: "a", count: 253)] {
            #expect(PolicyDecoder.isValidName(name), "\(name)")
        }
        for name in ["", "-a", ".a", "A", "edr_base", "edr base", "é", "e\u{301}", "ａ", String(repeating: "a", count: 254)] {
            #expect(!PolicyDecoder.isValidName(name), "\(name)")
        }
        let refused = decode(policy("Edr", spec: "  edr:\n    enabled: true\n"))
        #expect(refused.policies.isEmpty && refused.problems.contains { $0.description.contains("metadata.name 'Edr' is not a valid name") }, "\(refused.problems)")
    }

    @Test("Every problem of a file is reported in one run, each at its line and column")
    func everyProblemAtOnce() {
        let text = policy("bad", spec: """
              edr:
                prot: 443
                port: "443"
                synchronizationPeriod: 61
                mode: cloud
                enabled: yes please
              ndr:
                UseClientPinnedCertificate: true
            """)
        let messages = decode(text).problems.map(\.description)
        #expect(messages.contains("policies/p.yaml:8:5: spec.edr: unknown field 'prot'; did you mean 'port'?"))
        #expect(messages.contains("policies/p.yaml:9:11: edr.port: expected an integer, found the string \"443\""))
        #expect(messages.contains("policies/p.yaml:10:28: edr.synchronizationPeriod: 61 is out of range: expected an integer from 1 to 60 (minutes)"))
        #expect(messages.contains("policies/p.yaml:11:11: edr.mode: \"cloud\" is not allowed: expected one of kata, expert-onprem"))
        #expect(messages.contains("policies/p.yaml:12:14: edr.enabled: expected true or false, found the string \"yes please\""))
        #expect(messages.contains("policies/p.yaml:14:5: spec.ndr: unknown field 'UseClientPinnedCertificate'; 'UseClientPinnedCertificate' is the vendor's key name: policies use 'mutualAuthentication'"))
        #expect(messages.count == 6)
        // In line order, whatever order the decoder visits a mapping's keys in (found by `make fuzz`).
        let lines = decode(text).problems.map(\.location.line)
        #expect(lines == lines.sorted())
    }

    @Test("Lines are counted as git counts them: CRLF is one line end, a lone CR is refused where it is")
    func lineEnds() {
        let crlf = policy("crlf", spec: "  edr:\n    port: \"443\"\n").replacingOccurrences(of: "\n", with: "\r\n")
        #expect(decode(crlf).problems.map(\.description) == ["policies/p.yaml:8:11: edr.port: expected an integer, found the string \"443\""])
        let loneCR = policy("cr", spec: "  edr:\r    port: 443\n")
        #expect(decode(loneCR).problems.map(\.description)
                == ["policies/p.yaml:7:7: a line break other than LF or CRLF (U+000D): save the file with LF or CRLF line ends"])
        // The indentation bound holds for CRLF files too.
        let deep = (0..<300).map { String(repeating: " ", count: $0) + "a:" }.joined(separator: "\r\n")
        #expect(decode(deep).problems.first?.message.contains("nesting too deep") == true)
    }

    @Test("Keys are plain words: explicit '? ' keys and lists or mappings as keys are refused where they stand")
    func plainKeys() {
        #expect(decode(policy("q", spec: "  edr:\n    ? port\n    : 443\n")).problems.map(\.description)
                == ["policies/p.yaml:8:5: an explicit '? ' key is not allowed: field names are plain words"])
        #expect(decode(policy("f", spec: "  edr:\n    [port, x]: 443\n")).problems.map(\.description)
                == ["policies/p.yaml:8:13: a list or mapping used as a key is not allowed: field names are plain words"])
        // A question mark inside a value, and a list followed by a comment with a colon, are no keys.
        let values = decode(policy("ok", spec: "  edr:\n    address: \"a?b\"\n  ndr:\n    endpoints: []   # note: none\n")).problems
        #expect(values.count == 2 && !values.contains { $0.message.contains("plain words") })
    }

    @Test("A repeated key is reported at its second appearance (where its tag starts, if it has one), the same way every time, even when the repeats differ by tag")
    func repeatedKeys() throws {
        let text = policy("r", spec: "  edr:\n    port: 443\n    !!str port: 444\n    address: a\n    address: b\n")
        let answers = Set((0..<20).map { _ in decode(text).problems.map(\.description) })
        #expect(answers == [["policies/p.yaml:9:5: field 'address', 'port' appears twice in one mapping"]], "\(answers)")
        // Inputs make fuzz found, kept as seeds: one answer each, every time.
        let seeds = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Support/FuzzSeeds/policy")
        for name in ["regression-repeated-list-keys.yaml", "regression-keys-differing-by-tag.yaml"] {
            let bytes = try Array(Data(contentsOf: seeds.appendingPathComponent(name)))
            let seen = Set((0..<20).map { _ in PolicyDecoder.decode(file: name, contents: bytes).problems.map(\.description) })
            #expect(seen.count == 1, "\(name): \(seen)")
        }
    }

    @Test("What looks like keys inside text is text: a question mark ending a value, lists and colons in block scalars")
    func textIsText() {
        let text = policy("t", spec: """
              exceptions:
                - key: edr.port
                  reason: waiting for the vendor ?
                  expires: 2099-01-01
              annotations:
                note: |
                  [1]: https://example.org/ticket
                  ? is this right
            """)
        #expect(!decode(text).problems.contains { $0.message.contains("plain words") }, "\(decode(text).problems)")
        // A key repeated in another mapping's place is not the repeat: the repeat is.
        let repeated = policy("r", spec: "  edr:\n    enabled: true\n  ndr:\n    enabled: true\n  sandbox:\n    enabled: true\n    enabled: false\n")
        #expect(decode(repeated).problems.map(\.description) == ["policies/p.yaml:13:5: field 'enabled' appears twice in one mapping"])
    }

    @Test("Malformed YAML is located where the parser stopped")
    func malformedYAML() {
        let problems = decode("apiVersion: tether/v1\nkind: IntegrationPolicy\nmetadata:\n  name: [unclosed\n").problems
        #expect(problems.count == 1)
        #expect(problems.first?.location.file == "policies/p.yaml")
        #expect(problems.first?.location.line == 5)
        #expect(problems.first?.message.hasPrefix("malformed YAML:") == true)
    }

    @Test("apiVersion, kind and metadata.name are required and checked")
    func header() {
        let problems = decode("apiVersion: tether/v2\nkind: Policy\nspec: {}\n").problems.map(\.description)
        #expect(problems.contains("policies/p.yaml:1:13: apiVersion 'tether/v2' is not supported: expected 'tether/v1'"))
        #expect(problems.contains("policies/p.yaml:2:7: kind 'Policy' is not supported: expected 'IntegrationPolicy'"))
        #expect(problems.contains("policies/p.yaml:1:1: missing 'metadata' with a 'name'"))
    }

    @Test("Host names, IP addresses and ports are checked")
    func addresses() {
        let problems = decode(policy("hosts", spec: """
              edr:
                address: 300.1.2.3
              sandbox:
                servers:
                  - {address: sandbox.example, port: 70000}
            """)).problems.map(\.description)
        #expect(problems.contains("policies/p.yaml:8:14: edr.address: \"300.1.2.3\" is not an IPv4 address, an IPv6 address or a host name"))
        #expect(problems.contains("policies/p.yaml:11:42: sandbox.servers[0].port: 70000 is out of range: expected an integer from 1 to 65535"))
        #expect(decode(policy("ok", spec: "  edr:\n    address: \"fe80::1\"\n")).problems.isEmpty)
    }

    @Test("Several documents in one file, empty ones skipped")
    func multipleDocuments() {
        let text = policy("a", spec: "  edr: {port: 1}\n") + "\n---\n# nothing here\n---\n" + policy("b", spec: "  edr: {port: 2}\n")
        let result = decode(text)
        #expect(result.problems.isEmpty)
        #expect(result.policies.map(\.name) == ["a", "b"])
    }
}

@Suite("Selecting and merging policies")
struct PolicySetTests {
    private func set(_ files: [String: String]) throws -> PolicySet {
        try PolicySet(files: files.sorted { $0.key < $1.key }.map { ($0.key, Array($0.value.utf8)) })
    }

    @Test("Policies are selected by the device's labels and merged field by field, highest priority first")
    func selectionAndPriority() throws {
        let policies = try set([
            "base.yaml": policy("base", spec: "  edr:\n    port: 443\n    address: 10.0.0.5\n"),
            "prod.yaml": policy("prod", priority: 100, labels: ["env": "prod"], spec: "  edr:\n    port: 8443\n"),
            "lab.yaml": policy("lab", priority: 200, labels: ["env": "lab"], spec: "  edr:\n    port: 9443\n"),
        ])
        let prod = try policies.desiredState(labels: ["env": "prod", "site": "paris"])
        #expect(prod.policies == ["prod", "base"])
        #expect(prod.setting(SettingPath.edr.port) == .int(8443))
        #expect(prod.values[.setting(SettingPath.edr.port)]?.source.file == "prod.yaml")
        #expect(prod.setting(SettingPath.edr.address) == .string("10.0.0.5"))

        let other = try policies.desiredState(labels: [:])
        #expect(other.policies == ["base"])
        #expect(other.setting(SettingPath.edr.port) == .int(443))
    }

    @Test("Equal priority, different values: an error naming both files and lines")
    func equalPriorityConflict() throws {
        let policies = try set([
            "a.yaml": policy("team-a", priority: 10, spec: "  edr:\n    port: 443\n"),
            "b.yaml": policy("team-b", priority: 10, spec: "  edr:\n    port: 8443\n    address: 10.0.0.1\n"),
        ])
        let error = try #require(throws: PolicyProblems.self) { try policies.desiredState(labels: [:]) }
        #expect(error.problems.count == 1)
        let message = try #require(error.problems.first).description
        #expect(message.contains("edr.port"))
        #expect(message.contains("'team-a' (a.yaml:8)"))
        #expect(message.contains("'team-b' (b.yaml:8)"))
        #expect(!policies.potentialConflicts().isEmpty)
    }

    @Test("Equal priority and equal values, or selectors that exclude each other, are no conflict")
    func noConflict() throws {
        let policies = try set([
            "a.yaml": policy("a", priority: 10, labels: ["env": "prod"], spec: "  edr:\n    port: 443\n"),
            "b.yaml": policy("b", priority: 10, labels: ["env": "lab"], spec: "  edr:\n    port: 8443\n"),
            "c.yaml": policy("c", priority: 10, spec: "  edr:\n    address: 10.0.0.1\n"),
            "d.yaml": policy("d", priority: 10, spec: "  edr:\n    address: 10.0.0.1\n"),
        ])
        #expect(policies.potentialConflicts().isEmpty)
        #expect(try policies.desiredState(labels: ["env": "lab"]).setting(SettingPath.edr.port) == .int(8443))
    }

    @Test("Potential conflicts among many policies are found exactly as pair-by-pair comparison finds them")
    func conflictsAtScale() throws {
        // 200 per-host policies (disjoint), some sharing a host with a different port, a few
        // per-team ones and two for every device: every conflicting pair, and only those.
        var files: [String: String] = [:]
        for index in 0..<200 {
            files["h\(index).yaml"] = policy("host-\(index)", labels: ["host": "h\(index % 190)"], spec: "  edr:\n    port: \(1000 + index)\n")
        }
        for team in 0..<3 {
            files["t\(team).yaml"] = policy("team-\(team)", labels: ["team": "t\(team)", "host": "h\(team)"], spec: "  edr:\n    port: \(2000 + team)\n")
        }
        files["all-a.yaml"] = policy("all-a", spec: "  edr:\n    port: 1005\n")
        files["all-b.yaml"] = policy("all-b", spec: "  edr:\n    port: 1005\n")
        let policies = try set(files)
        let found = Set(policies.potentialConflicts().map(\.description))
        var expected = Set<String>()
        let port = DesiredKey.setting(SettingPath.edr.port)
        for (index, a) in policies.policies.enumerated() {
            for b in policies.policies[(index + 1)...] {
                guard let x = a.values[port], let y = b.values[port], x.value != y.value,
                      a.matchLabels.allSatisfy({ label in b.matchLabels[label.key].map { $0 == label.value } ?? true }) else { continue }
                expected.insert("\(y.source.file):\(y.source.line):\(y.source.column): edr.port: policies '\(a.name)'")
            }
        }
        #expect(found.count == expected.count, "\(found.count) found, \(expected.count) pairs conflict")
        for prefix in expected {
            #expect(found.contains { $0.hasPrefix(prefix) }, "missing: \(prefix)")
        }
        #expect(expected.count > 200, "the set really has conflicts: \(expected.count)")
    }

    @Test("Scalars YAML 1.1 and 1.2 read differently are refused at their place, with the spelling to write; other tags are refused")
    func oneMeaningPerScalar() throws {
        let text = policy("p", labels: ["country": "no"], spec: """
              behaviorDetection: on
              edr:
                port: 0443
                enabled: yes
                connectionTimeout: 1_0
                requestTimeout: 0b11
                maximumDataTransferTime: 1:30
                synchronizationPeriod: 0x1F
                telemetry: True
                address: !!python/object/apply:os.system ["id"]
                mode: !custom kata

            """)
        let result = decode(text)
        let messages = result.problems.map(\.description)
        let expected = [
            "policies/p.yaml:9:16: spec.selector.matchLabels.country: no is the string \"no\" in YAML 1.2 but false in YAML 1.1 (older tools): quote it, \"no\"",
            "policies/p.yaml:10:22: behaviorDetection: on is the string \"on\" in YAML 1.2 but true in YAML 1.1 (older tools): write true, or quote it for a string",
            "policies/p.yaml:12:11: edr.port: 0443 is 443 in YAML 1.2 but 291 (octal) in YAML 1.1 (older tools): write 443, or quote it for a string",
            "policies/p.yaml:13:14: edr.enabled: yes is the string \"yes\" in YAML 1.2 but true in YAML 1.1 (older tools): write true",
            "policies/p.yaml:14:24: edr.connectionTimeout: 1_0 is the string \"1_0\" in YAML 1.2 but 10 in YAML 1.1 (older tools): write 10",
            "policies/p.yaml:15:21: edr.requestTimeout: 0b11 is the string \"0b11\" in YAML 1.2 but 3 in YAML 1.1 (older tools): write 3",
            "policies/p.yaml:16:30: edr.maximumDataTransferTime: 1:30 is the string \"1:30\" in YAML 1.2 but 90 (base 60) in YAML 1.1 (older tools): write 90",
            "policies/p.yaml:19:14: the tag !!python/object/apply:os.system is not allowed",
            "policies/p.yaml:20:11: the tag !custom is not allowed",
        ]
        for message in expected {
            #expect(messages.contains { $0.hasPrefix(message) }, "missing: \(message)\nin: \(messages)")
        }
        #expect(!messages.contains { $0.contains("synchronizationPeriod") || $0.contains("telemetry") }, "0x1F and True mean one thing: \(messages)")

        let plain = decode(policy("q", labels: ["country": "\"no\""], spec: "  edr:\n    port: 443\n    enabled: true\n    address: !!str 10.0.0.5\n"))
        #expect(plain.problems.isEmpty, "\(plain.problems)")
        #expect(plain.policies.first?.values[.setting(SettingPath.edr.port)]?.value == .setting(.int(443)))
        #expect(plain.policies.first?.matchLabels == ["country": "no"])
    }

    @Test("Policy names are unique in the repository")
    func uniqueNames() {
        let error = #expect(throws: PolicyProblems.self) {
            try set(["a.yaml": policy("same", spec: "  edr: {port: 1}\n"), "b.yaml": policy("same", spec: "  edr: {port: 2}\n")])
        }
        #expect(error?.description.contains("b.yaml:1:1: policy name 'same' is already used at a.yaml:1") == true)
    }
}

@Suite("Policy files are untrusted input")
struct UntrustedInputTests {
    @Test("Alias bombs, deep nesting and too many aliases are refused with their place")
    func bounds() {
        var bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1...8 {
            bomb += "l\(level): &l\(level) [" + Array(repeating: "*\(level == 1 ? "a" : "l\(level - 1)")", count: 10).joined(separator: ", ") + "]\n"
        }
        let expanded = PolicyDecoder.decode(file: "bomb.yaml", contents: Array(bomb.utf8)).problems
        #expect(expanded.first?.message.contains("expands to more than 100000 nodes") == true)

        let deep = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        let nested = PolicyDecoder.decode(file: "deep.yaml", contents: Array(deep.utf8)).problems
        #expect(nested.first?.description == "deep.yaml:1:65: YAML nests deeper than 64 levels: refused")
        // A quote inside a plain value once made the text check look away; the parser's own
        // bound holds anyway (this used to exhaust the stack when the tree was freed).
        let hidden = "a: x '\nb: " + String(repeating: "[", count: 5_000) + String(repeating: "]", count: 5_000) + "\nc: y '\n"
        let refused = PolicyDecoder.decode(file: "hidden.yaml", contents: Array(hidden.utf8)).problems
        #expect(refused.first?.message.contains("nest deeper than 64 levels") == true, "\(refused)")

        let many = "list: [" + Array(repeating: "*a", count: 300).joined(separator: ", ") + "]\n"
        let aliases = PolicyDecoder.decode(file: "many.yaml", contents: Array(("a: &a 1\n" + many).utf8)).problems
        #expect(aliases.first?.message == "more than 256 YAML aliases in one file: refused")
    }

    @Test("Anchors and aliases within the bounds still work")
    func reasonableAliases() {
        let text = """
            apiVersion: tether/v1
            kind: IntegrationPolicy
            metadata: {name: anchors}
            spec:
              ndr:
                endpoints: &servers
                  - {address: 10.0.0.1, port: 8081}
              sandbox:
                servers: *servers
            """
        let result = PolicyDecoder.decode(file: "p.yaml", contents: Array(text.utf8))
        #expect(result.problems.isEmpty, "\(result.problems)")
        #expect(result.policies.first?.values[.setting(SettingPath.sandbox.servers)]?.value
                == .setting(.endpoints([Endpoint(address: "10.0.0.1", port: 8081)])))
    }
}

@Suite("Hostile lengths in policies")
struct HostileLengthTests {
    @Test("A 1 MB line is refused before the text is read character by character, with where it is and how it begins")
    func longLine() {
        let long = "edr." + String(repeating: "x", count: 1 << 20)
        let problems = decode(policy("p", spec: "  observe: [\(long)]\n")).problems
        #expect(problems.count == 1, "\(problems.map(\.description).joined().prefix(300))")
        #expect(problems.first?.description.hasPrefix("policies/p.yaml:7:1: a line of 1048593 bytes, where a policy line holds at most 65536: refused (it begins 'observe: [edr.xxx") == true,
                "\(problems.first?.description.prefix(300) ?? "")")
        #expect((problems.first?.description.utf8.count ?? 0) < 300)
    }

    @Test("A 60 KB unknown path in observe, ignore or an exception is refused with an excerpt and its length, not echoed whole")
    func longUnknownPath() {
        let long = "edr." + String(repeating: "x", count: 60_000)
        for spec in ["  observe: [\(long)]\n", "  ignore: [\(long)]\n", "  exceptions:\n    - {path: \(long), reason: r, expires: 2030-01-01}\n"] {
            let problems = decode(policy("p", spec: spec)).problems
            let message = problems.first { $0.description.contains("unknown setting path") }?.description ?? ""
            #expect(message.contains("… (\(long.utf8.count) bytes)"), "\(message.prefix(300))")
            #expect(message.utf8.count < 400, "an excerpt, not the whole path: \(message.utf8.count) bytes")
        }
    }

    @Test("A typo still gets its did-you-mean; a word far longer or shorter than every path is compared with none")
    func suggestions() {
        #expect(Suggestion.closest(to: "edr.prot", among: DesiredKey.all.map(\.description)) == "edr.port")
        #expect(Suggestion.closest(to: String(repeating: "e", count: 100_000), among: ["edr.port"]) == nil)
        #expect(Suggestion.closest(to: "x", among: ["a-much-longer-candidate"]) == nil)
    }
}
