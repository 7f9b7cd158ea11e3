import Foundation
import Testing
import YAMLReader
@testable import Policy

private func format(_ text: String) throws(PolicyProblem) -> String {
    try PolicyFormatter.format(file: "policies/p.yaml", contents: Array(text.utf8))
}

@Suite("Formatting policies (tether fmt)")
struct PolicyFormatterTests {
    @Test("A policy written any which way gets the schema's key order, two-space indentation and sorted labels; one-line flow collections stay on one line; comments kept")
    func canonicalLayout() throws {
        let messy = """
            # header comment

            kind: IntegrationPolicy
            spec:
                ndr: {enabled: true, pingPeriod: 30}   # ndr inline
                edr:
                    port: 8443
                    enabled: true
                    address: 'kata.example'
                    # about the cert
                    serverCertificate: certs/a.pem


                priority: 5
                selector: {matchLabels: {zone: b, env: prod}}
                exceptions:
                -   reason: "test"   # why
                    path: edr.port
                    expires: '2027-01-01'
            metadata: {name: messy, labels: {b: "2", a: '1'}}
            apiVersion: tether/v1
            # footer

            """
        let expected = """
            # header comment

            apiVersion: tether/v1
            kind: IntegrationPolicy
            metadata:
              name: messy
              labels: {a: "1", b: "2"}
            spec:
              priority: 5
              selector:
                matchLabels: {env: prod, zone: b}
              exceptions:
                - path: edr.port
                  reason: "test"  # why
                  expires: "2027-01-01"
              edr:
                enabled: true
                address: "kata.example"
                port: 8443
                # about the cert
                serverCertificate: certs/a.pem
              ndr: {enabled: true, pingPeriod: 30}  # ndr inline
            # footer

            """
        let formatted = try format(messy)
        #expect(formatted == expected)
        // The layout is a fixed point, and the policy reads the same.
        #expect(try format(formatted) == formatted)
        let before = PolicyDecoder.decode(file: "p.yaml", contents: Array(messy.utf8))
        let after = PolicyDecoder.decode(file: "p.yaml", contents: Array(formatted.utf8))
        #expect(before.problems.isEmpty && after.problems.isEmpty)
        #expect(before.policies.map { $0.values.mapValues(\.value) } == after.policies.map { $0.values.mapValues(\.value) })
        #expect(before.policies.map(\.matchLabels) == after.policies.map(\.matchLabels))
        #expect(before.policies.map(\.exceptions.count) == [1] && after.policies.map(\.exceptions.count) == [1])
    }

    @Test("Every scalar keeps its meaning: plain stays plain (yes, 0755, ~), quoted stays a string, blocks stay text")
    func scalarsKeepTheirMeaning() throws {
        let text = """
            a: yes
            b: 0755
            c: ~
            d: '443'
            e: 'it''s "quoted"'
            f: "tab\\there \\u00e9 \\x1b"
            g: !!str 12
            h: |
              line one
                indented # not a comment
            i: >-
              folded
              text
            j: |+
              kept

            k: plain
              continued
            l: |2
                leading spaces
            m:
            n: []
            o: {}
            p: &anchor value
            q: *anchor

            """
        let expected = """
            a: yes
            b: 0755
            c: ~
            d: "443"
            e: "it's \\"quoted\\""
            f: "tab\\there é \\e"
            g: !!str 12
            h: |
              line one
                indented # not a comment
            i: |-
              folded text
            j: |+
              kept

            k: plain continued
            l: |2
                leading spaces
            m:
            n: []
            o: {}
            p: &anchor value
            q: *anchor

            """
        #expect(try format(text) == expected)
        #expect(try format(expected) == expected)
    }

    @Test("Comments stay with what they describe: above a key, at the end of its line, in lists, at the end of the file")
    func comments() throws {
        let text = """
            apiVersion: tether/v1   # the API
            kind: IntegrationPolicy
            metadata:
              # the name is unique
              name: x
            spec:
              observe: [edr.port,   # first
                        edr.address]   # second

              # a block scalar's header may carry a comment
              edr:
                serverCertificate: |   # inline PEM? no, a path; this is a test
                  text
            # the end
            """
        let formatted = try format(text)
        #expect(formatted == """
            apiVersion: tether/v1  # the API
            kind: IntegrationPolicy
            metadata:
              # the name is unique
              name: x
            spec:
              observe:  # first
                - edr.port
                - edr.address  # second

              # a block scalar's header may carry a comment
              edr:
                serverCertificate: |  # inline PEM? no, a path; this is a test
                  text
            # the end

            """)
        #expect(try format(formatted) == formatted)
    }

    @Test("Comments libyaml reads without a blank before them, and a block scalar's header comment under an anchor, are kept")
    func commentsWithoutBlank() throws {
        let text = """
            k: "v"#after a quote
            ports: [80]#after a bracket
            note: &n
              |#header
              text
            m: {a: 1,#inside
                b: 2}

            """
        let formatted = try format(text)
        for comment in ["#after a quote", "#after a bracket", "#header", "#inside"] {
            #expect(formatted.contains(comment), "\(comment): \(formatted)")
        }
        #expect(try format(formatted) == formatted)
    }

    @Test("Comments of a list item's pairs stay when the pairs are put in order; kept trailing lines and empty documents stay")
    func reorderedListItems() throws {
        let text = """
            apiVersion: tether/v1
            kind: IntegrationPolicy
            metadata: {name: x}
            spec:
              exceptions:
                - reason: waiting for the vendor
                  # the port the vendor asked for
                  path: edr.port
                  expires: "2099-01-01"

            """ + "---\nnote: |+\n  kept\n\n"
        let formatted = try format(text)
        #expect(formatted.contains("""
                # the port the vendor asked for
                - path: edr.port
                  reason: waiting for the vendor
            """), "\(formatted)")
        #expect(formatted.hasSuffix("note: |+\n  kept\n\n"), "\(formatted)")
        #expect(try format(formatted) == formatted)
        #expect(try format("---\n---\n") == "---\n---\n")
    }

    @Test("A file that is not YAML is refused with its line and column, as validate refuses it")
    func invalid() {
        for (text, line, says) in [
            ("a: [1, 2\n", 2, "malformed YAML"),
            ("a: 1\na: 2\n", 2, "appears twice"),
            ("a: *nowhere\n", 1, "undefined alias"),
            ("? [a]\n: b\n", 1, "explicit '? ' key"),
        ] {
            #expect {
                try format(text)
            } throws: { error in
                guard let problem = error as? PolicyProblem else { return false }
                return problem.location.line == line && problem.message.contains(says)
            }
        }
        #expect(throws: PolicyProblem.self) { try PolicyFormatter.format(file: "p.yaml", contents: [0x61, 0x3A, 0x20, 0xFF, 0x0A]) }
    }

    @Test("Documents that are not policies, or that use aliases, keep their key order; lists of lists and several documents are written back")
    func orderKeptWhereItMustBe() throws {
        let text = """
            zeta: 1
            alpha: 2
            ---
            apiVersion: tether/v1
            kind: IntegrationPolicy
            spec: &s {priority: 1}
            metadata: {name: m, annotations: *s}
            ---
            - - a
              - b
            - - c

            """
        #expect(try format(text) == text)
    }

    @Test("A flow collection with comments inside, nested collections or a line wider than 100 columns is written in block style")
    func flowToBlock() throws {
        let wide = String(repeating: "x", count: 94)
        let text = """
            a: {b: {c: 1}}
            d: [1,
                2,   # two
                3]
            e: [\(wide), y]
            f: {g: }

            """
        #expect(try format(text) == """
            a:
              b: {c: 1}
            d:
              - 1
              - 2  # two
              - 3
            e:
              - \(wide)
              - y
            f:
              g:

            """)
    }

    @Test("A file of comments only, an empty file and CR LF line ends")
    func edges() throws {
        #expect(try format("") == "")
        #expect(try format("# only\n\n# comments\n") == "# only\n\n# comments\n")
        #expect(try format("a: 1\r\nb: 2   # two\r\n") == "a: 1\nb: 2  # two\n")
    }
}

@Suite("Formatting every policy file we have, and damaged copies of them")
struct PolicyFormatterCorpusTests {
    /// The repository's own YAML: fuzz seeds, examples, and what `tether init` writes.
    static func corpus() throws -> [(name: String, bytes: [UInt8])] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../..").standardizedFileURL
        var found: [(String, [UInt8])] = []
        for folder in ["Tests/Support/FuzzSeeds/policy", "examples"] {
            let enumerator = FileManager.default.enumerator(atPath: root.appendingPathComponent(folder).path)
            while let name = enumerator?.nextObject() as? String {
                guard name.hasSuffix(".yaml") || name.hasSuffix(".yml") else { continue }
                found.append((folder + "/" + name, try Array(Data(contentsOf: root.appendingPathComponent(folder).appendingPathComponent(name)))))
            }
        }
        return found
    }

    @Test("Each file formats to a fixed point that decodes to the same policies; damaged copies are formatted or refused for what they are, never for the layout")
    func corpusAndMutations() throws {
        let corpus = try Self.corpus()
        #expect(corpus.count >= 5)
        var generator = SplitMix(seed: 20261206)
        var formattedCount = 0
        for (name, bytes) in corpus {
            // Seeds that are regressions of the decoder may be refused; the rest must format.
            if !name.contains("regression") {
                let formatted = try PolicyFormatter.format(file: name, contents: bytes)
                #expect(try PolicyFormatter.format(file: name, contents: Array(formatted.utf8)) == formatted, "\(name)")
                let before = PolicyDecoder.decode(file: name, contents: bytes)
                let after = PolicyDecoder.decode(file: name, contents: Array(formatted.utf8))
                #expect(before.policies.map { $0.values.mapValues(\.value) } == after.policies.map { $0.values.mapValues(\.value) }, "\(name)")
                #expect(before.problems.map(\.message) == after.problems.map(\.message), "\(name)")
            }
            // Damage: lines dropped, repeated, swapped or re-indented, bytes changed.
            let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            for _ in 0..<150 {
                var damaged = lines
                for _ in 0..<(1 + generator.next(3)) where !damaged.isEmpty {
                    let index = generator.next(damaged.count)
                    switch generator.next(5) {
                    case 0: damaged.remove(at: index)
                    case 1: damaged.insert(damaged[index], at: index)
                    case 2: damaged.swapAt(index, generator.next(damaged.count))
                    case 3: damaged[index] = String(repeating: " ", count: generator.next(6)) + damaged[index].trimmingCharacters(in: .whitespaces)
                    default:
                        var characters = Array(damaged[index])
                        let replacements = Array("#:-[]{}'\"|>&*! ")
                        if !characters.isEmpty { characters[generator.next(characters.count)] = replacements[generator.next(replacements.count)] }
                        damaged[index] = String(characters)
                    }
                }
                let input = Array(damaged.joined(separator: "\n").utf8)
                do {
                    let output = try PolicyFormatter.format(file: name, contents: input)
                    formattedCount += 1
                    #expect(try PolicyFormatter.format(file: name, contents: Array(output.utf8)) == output, "\(name):\n\(output)")
                } catch {
                    #expect(!error.message.hasPrefix("fmt would change"), "\(name): \(error)\n\(damaged.joined(separator: "\n"))")
                }
            }
        }
        #expect(formattedCount > 100)
    }
}

/// A small deterministic generator, so a failure repeats.
private struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next(_ bound: Int) -> Int {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Int((z ^ (z >> 31)) % UInt64(bound))
    }
}

@Suite("Plain scalars typed by bytes")
struct ScalarTypeTests {
    private func node(_ text: String) throws -> YAMLNode {
        guard case .mapping(let mapping)? = YAML.documents(in: "v: \(text)\n").documents.first, let value = mapping.pairs.first?.value else {
            throw YAMLError(kind: .composer, problem: "no value in 'v: \(text)'", mark: YAMLMark(line: 1, column: 1), context: nil)
        }
        return value
    }

    @Test("Numbers, floats and text that only looks numeric are typed as YAML 1.2's core schema types them")
    func types() throws {
        let cases: [(String, ScalarType)] = [
            ("443", .integer(443)), ("-1", .integer(-1)), ("+7", .integer(7)), ("0443", .integer(443)), ("0x1F", .integer(31)), ("0o17", .integer(15)),
            ("1.5", .float), ("1e3", .float), ("-.inf", .float), (".NaN", .float), ("true", .boolean(true)), ("~", .null),
            ("10.0.0.1", .string("10.0.0.1")), ("1.2.3", .string("1.2.3")), ("12a", .string("12a")), ("-x", .string("-x")),
            ("\u{663}", .string("\u{663}")), ("1\u{301}", .string("1\u{301}")), ("\u{FF11}", .string("\u{FF11}")),
        ]
        for (text, expected) in cases {
            #expect(ScalarType(try node(text)) == expected, "\(text)")
        }
    }

    @Test("What YAML 1.1 reads otherwise is found, by bytes; addresses and floats are not")
    func yaml11() throws {
        for text in ["010", "1_000", "-1_000", "0b101", "1:30", "yes", "off"] {
            #expect(ScalarType.yaml11Difference(try node(text)) != nil, "\(text)")
        }
        for text in ["10.0.0.1", "443", "0", "1.5", "-1", "ndr-5.example.internal", "1\u{301}0", "\u{663}"] {
            #expect(ScalarType.yaml11Difference(try node(text)) == nil, "\(text)")
        }
    }
}
