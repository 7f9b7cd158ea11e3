import Testing
import YAMLReader

@Suite("YAML read into nodes with places")
struct YAMLReaderTests {
    @Test("Mappings, lists and scalars keep their order, tags, style and the line and column they start at")
    func shapes() throws {
        let text = "name: web\nports:\n  - 443\n  - \"8443\"\ntagged: !!str 12\nnote: |\n  two\n  lines\n"
        let node = try #require(try YAML.document(in: text))
        guard case .mapping(let mapping) = node else { Issue.record("not a mapping: \(node)"); return }
        #expect(mapping.map { $0.key.scalar?.string } == ["name", "ports", "tagged", "note"])
        #expect(mapping.pairs[0].value.mark == YAMLMark(line: 1, column: 7))
        guard case .sequence(let ports) = mapping.pairs[1].value else { Issue.record("ports is no list"); return }
        #expect(ports.items.map { $0.scalar?.string } == ["443", "8443"])
        #expect(ports.items.map { $0.scalar?.isPlain } == [true, false])
        #expect(ports.items[1].mark == YAMLMark(line: 4, column: 5))
        #expect(mapping.pairs[2].value.tag == "tag:yaml.org,2002:str")
        #expect(mapping.pairs[3].value.scalar?.string == "two\nlines\n")
        #expect(mapping.pairs[3].value.scalar?.isPlain == false)
    }

    @Test("Several documents are read in order; an empty one is an empty plain scalar; an empty text holds none")
    func documents() {
        let (documents, error) = YAML.documents(in: "a: 1\n---\n---\nb: 2\n")
        #expect(error == nil)
        #expect(documents.count == 3)
        #expect(documents[1].scalar?.string == "" && documents[1].scalar?.isPlain == true)
        #expect(YAML.documents(in: "").documents.isEmpty)
        #expect(throws: YAMLError.self) { try YAML.document(in: "a: 1\n---\nb: 2\n") }
    }

    @Test("An alias is the node its anchor names; an alias to no anchor is an error at the alias")
    func aliases() {
        let (documents, error) = YAML.documents(in: "base: &b {port: 443}\ncopy: *b\n")
        #expect(error == nil)
        guard case .mapping(let mapping)? = documents.first, case .mapping(let copy) = mapping.pairs[1].value else {
            Issue.record("\(documents)"); return
        }
        #expect(copy.pairs.map { $0.value.scalar?.string } == ["443"])
        let undefined = YAML.documents(in: "a: 1\nb: *nowhere\n")
        #expect(undefined.error?.kind == .composer)
        #expect(undefined.error?.mark == YAMLMark(line: 2, column: 4))
        #expect(undefined.error?.problem.contains("undefined alias 'nowhere'") == true)
    }

    @Test("Keys repeated in one mapping are all named, at the first repeat; the same key in two mappings is no repeat")
    func repeatedKeys() {
        let error = YAML.documents(in: "a:\n  x: 1\n  y: 2\n  x: 3\n  y: 4\nb:\n  x: 1\n").error
        #expect(error?.repeatedKeys == ["x", "y"])
        #expect(error?.mark == YAMLMark(line: 4, column: 3))
        #expect(YAML.documents(in: "a:\n  x: 1\nb:\n  x: 1\n").error == nil)
        // Large mappings are indexed from their 16th key on: repeats before, across and after that point.
        let keys = (1...40).map { "k\($0)" }
        let large = { (extra: [String]) in YAML.documents(in: (keys + extra).map { "\($0): 1" }.joined(separator: "\n") + "\n").error }
        #expect(large([]) == nil)
        #expect(large(["k3", "k20", "k40"])?.repeatedKeys == ["k20", "k3", "k40"])
        #expect(large(["k3", "k20", "k40"])?.mark == YAMLMark(line: 41, column: 1))
        let early = YAML.documents(in: "k1: 1\nk2: 1\nk1: 1\n" + keys.dropFirst(2).map { "\($0): 1" }.joined(separator: "\n") + "\nk2: 2\n").error
        #expect(early?.repeatedKeys == ["k1", "k2"] && early?.mark == YAMLMark(line: 3, column: 1), "\(String(describing: early))")
    }

    @Test("Malformed text gives libyaml's problem and place; documents before it are kept")
    func malformed() {
        let (documents, error) = YAML.documents(in: "ok: 1\n---\nkey: [unclosed\n")
        #expect(documents.count == 1)
        #expect(error?.kind == .parser)
        #expect(error?.problem == "did not find expected ',' or ']'")
        #expect(error?.context?.text == "while parsing a flow sequence")
        #expect(error?.context?.mark == YAMLMark(line: 3, column: 6))
        let control = YAML.documents(in: "a: 1\nb: \u{7}\n").error
        #expect(control?.kind == .reader)
        #expect(control?.mark.line == 2)
    }
}

@Suite("YAML read as written, with its comments (for tether fmt)")
struct YAMLSourceTests {
    @Test("A # inside quotes or a block scalar, or without a blank before it, is text; the rest are comments with their places")
    func comments() throws {
        let text = """
            # head
            a: "x # not"   # one
            b: 'y #no' #two
            c: |  # header
              # text, not a comment
            d: e#f
            \u{2028}
            g: &anchor "q # q"  # three
            """
        let source = try YAMLSource(text)
        #expect(source.comments.map(\.text) == ["# head", "# one", "#two", "# header", "# three"])
        #expect(source.comments.map(\.isOwnLine) == [true, false, false, false, false])
        #expect(source.comments.last?.position == YAMLMark(line: 9, column: 21), "lines break where libyaml breaks them (LS included)")
        guard case .mapping(let pairs, let isFlow)? = source.documents.first?.root?.content else {
            Issue.record("not a mapping")
            return
        }
        #expect(!isFlow && pairs.count == 5)
        #expect(pairs.last?.value.anchor == "anchor")
        if case .scalar(let value, let style) = pairs[2].value.content {
            #expect(value == "# text, not a comment\n" && style == .literal)
        }
        #expect(throws: YAMLError.self) { try YAMLSource("a: *missing\n") }
    }
}
