internal import CYAML

/// A YAML stream read into nodes that keep where they stand, over libyaml's event parser
/// (Debian's libyaml). Aliases are resolved to the node their anchor names (shared, not
/// copied); scalars stay untyped text with their tag and style, so the reader decides types
/// (Policy's `ScalarType`). Why not Yams: its resolver and timestamp reader link Foundation's
/// ICU (34 MB of the binary); docs/architecture.md, "What an endpoint pays".
package enum YAML {
    /// Every document of `text`, and the error that ended the stream early, if one did. The
    /// documents before an error are kept.
    /// `maximumDepth` bounds how deep lists and mappings nest (a node tree is freed
    /// recursively, so a deeper one could exhaust the stack).
    package static func documents(in text: String, maximumDepth: Int = 64) -> (documents: [YAMLNode], error: YAMLError?) {
        var bytes = Array(text.utf8)
        if bytes.isEmpty { return ([], nil) }
        var composer = Composer(maximumDepth: maximumDepth)
        let error = parseEvents(&bytes) { composer.take($0) }
        return (composer.documents, error)
    }

    /// The one document of `text` (nil when it holds none); an error for malformed YAML or a
    /// second document.
    package static func document(in text: String) throws(YAMLError) -> YAMLNode? {
        let (documents, error) = documents(in: text)
        if let error { throw error }
        if documents.count > 1, let second = documents.dropFirst().first {
            throw YAMLError(kind: .composer, problem: "expected a single document, found another", mark: second.mark, context: nil)
        }
        return documents.first
    }
}

/// Runs `body` with a libyaml parser reading `bytes`; nil when the parser cannot start (out of
/// memory).
func withYAMLParser<Result>(_ bytes: inout [UInt8], _ body: (UnsafeMutablePointer<yaml_parser_t>, UnsafeMutableBufferPointer<UInt8>) -> Result) -> Result? {
    let parser = UnsafeMutablePointer<yaml_parser_t>.allocate(capacity: 1)
    defer { parser.deallocate() }
    guard yaml_parser_initialize(parser) == 1 else { return nil }
    defer { yaml_parser_delete(parser) }
    return bytes.withUnsafeMutableBufferPointer { buffer in
        yaml_parser_set_input_string(parser, buffer.baseAddress, buffer.count)
        return body(parser, buffer)
    }
}

/// Hands each of libyaml's events for `bytes` to `take` (freed after it returns) until the
/// stream ends; the first error, libyaml's or `take`'s, ends the reading.
func parseEvents(_ bytes: inout [UInt8], _ take: (yaml_event_t) -> YAMLError?) -> YAMLError? {
    let error = withYAMLParser(&bytes) { parser, buffer -> YAMLError? in
        var event = yaml_event_t()
        while true {
            guard yaml_parser_parse(parser, &event) == 1 else { return YAMLError(parser.pointee, text: buffer) }
            defer { yaml_event_delete(&event) }
            if event.type == YAML_STREAM_END_EVENT { return nil }
            if let error = take(event) { return error }
        }
    }
    return error ?? YAMLError(kind: .parser, problem: "the YAML parser could not start (out of memory)", mark: YAMLMark(line: 1, column: 1), context: nil)
}

/// libyaml's text (an anchor, a tag), or nil where it has none.
func yamlOptionalText(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? {
    pointer.map { String(cString: $0) }
}

/// libyaml's text, empty where it has none.
func yamlText(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String {
    yamlOptionalText(pointer) ?? ""
}

/// A place in the text: line and column, both counted from 1 (columns in characters), ordered
/// as the text reads.
package struct YAMLMark: Comparable, Hashable, Sendable, CustomStringConvertible {
    package let line: Int
    package let column: Int

    package init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    init(_ mark: yaml_mark_t) {
        self.init(line: Int(mark.line) + 1, column: Int(mark.column) + 1)
    }

    package var description: String { "line \(line), column \(column)" }

    package static func < (left: YAMLMark, right: YAMLMark) -> Bool {
        (left.line, left.column) < (right.line, right.column)
    }
}

/// One node of a document.
package indirect enum YAMLNode: Sendable {
    case scalar(YAMLScalar)
    case mapping(YAMLMapping)
    case sequence(YAMLSequence)

    /// Where the node starts.
    package var mark: YAMLMark {
        switch self {
        case .scalar(let scalar): return scalar.mark
        case .mapping(let mapping): return mapping.mark
        case .sequence(let sequence): return sequence.mark
        }
    }

    /// The tag written on the node, as libyaml expands it (`!!str` is
    /// `tag:yaml.org,2002:str`); empty when none is written.
    package var tag: String {
        switch self {
        case .scalar(let scalar): return scalar.tag
        case .mapping(let mapping): return mapping.tag
        case .sequence(let sequence): return sequence.tag
        }
    }

    /// The scalar, when the node is one.
    package var scalar: YAMLScalar? {
        if case .scalar(let scalar) = self { return scalar }
        return nil
    }
}

/// A scalar: its text as written (after YAML's quoting and folding), untyped.
package struct YAMLScalar: Sendable {
    package let string: String
    package let tag: String
    /// Written without quotes or block indicators: the only kind whose type YAML resolves.
    package let isPlain: Bool
    package let mark: YAMLMark
}

/// A mapping's pairs in the order written. Repeated scalar keys are an error of the stream.
package struct YAMLMapping: Sendable, Sequence {
    package let pairs: [(key: YAMLNode, value: YAMLNode)]
    package let tag: String
    package let mark: YAMLMark

    package func makeIterator() -> IndexingIterator<[(key: YAMLNode, value: YAMLNode)]> { pairs.makeIterator() }
}

/// A sequence's items in order.
package struct YAMLSequence: Sendable, Sequence {
    package let items: [YAMLNode]
    package let tag: String
    package let mark: YAMLMark

    package func makeIterator() -> IndexingIterator<[YAMLNode]> { items.makeIterator() }
}

/// Why a stream could not be read: libyaml's problem and context (the same words `yaml`
/// tools print), or the composer's (an undefined alias, a repeated key).
package struct YAMLError: Error, Equatable, Sendable, CustomStringConvertible {
    package enum Kind: Sendable, Equatable {
        /// Bytes that are not YAML's characters (control bytes, a broken encoding).
        case reader
        case scanner
        case parser
        /// Nodes that do not fit together: an alias to no anchor, a repeated key.
        case composer
    }

    package let kind: Kind
    package let problem: String
    package let mark: YAMLMark
    /// What was being read when the problem was found, and where that began.
    package let context: (text: String, mark: YAMLMark)?
    /// For keys repeated in one mapping: their texts, sorted (`mark` is the first repeat's place).
    package var repeatedKeys: [String]

    package init(kind: Kind, problem: String, mark: YAMLMark, context: (text: String, mark: YAMLMark)?, repeatedKeys: [String] = []) {
        self.kind = kind
        self.problem = problem
        self.mark = mark
        self.context = context
        self.repeatedKeys = repeatedKeys
    }

    init(_ parser: yaml_parser_t, text: UnsafeMutableBufferPointer<UInt8>) {
        let problem = parser.problem.map { String(cString: $0) } ?? "unreadable YAML"
        switch parser.error {
        case YAML_READER_ERROR:
            // The reader reports a byte offset, not a mark: count the lines before it.
            let offset = min(Int(parser.problem_offset), text.count)
            var line = 1
            var lineStart = 0
            for index in 0..<offset where text[index] == 0x0A {
                line += 1
                lineStart = index + 1
            }
            let column = String(decoding: text[lineStart..<offset], as: UTF8.self).count + 1
            self.init(kind: .reader, problem: problem, mark: YAMLMark(line: line, column: column), context: nil)
        default:
            let context = parser.context.map { (text: String(cString: $0), mark: YAMLMark(parser.context_mark)) }
            self.init(kind: parser.error == YAML_SCANNER_ERROR ? .scanner : .parser, problem: problem, mark: YAMLMark(parser.problem_mark), context: context)
        }
    }

    package static func == (left: YAMLError, right: YAMLError) -> Bool {
        left.kind == right.kind && left.problem == right.problem && left.mark == right.mark && left.repeatedKeys == right.repeatedKeys
            && left.context?.text == right.context?.text && left.context?.mark == right.context?.mark
    }

    package var description: String {
        let detail = context.map { " (\($0.text) at \($0.mark))" } ?? ""
        return "\(problem)\(detail) at \(mark)"
    }
}

/// Builds nodes from parser events with an explicit stack (no recursion, however deep).
private struct Composer {
    /// A sequence or mapping whose end has not come yet (a class, so appending copies nothing).
    private final class Open {
        let isMapping: Bool
        let tag: String
        let anchor: String?
        let mark: YAMLMark
        var items: [YAMLNode] = []
        var pairs: [(key: YAMLNode, value: YAMLNode)] = []
        var pendingKey: YAMLNode?
        /// The scalar keys so far, once the mapping has `indexFrom` pairs (before, they are
        /// looked for among the pairs: a policy's mappings are small, and a set costs a hash and
        /// an allocation each; a large mapping stays linear).
        var keys: Set<String> = []
        var indexed = false
        static let indexFrom = 16
        /// Scalar keys met a second time, with where the first such repeat stands.
        var repeats: (names: Set<String>, mark: YAMLMark)?

        /// Whether `name` was a scalar key of this mapping before.
        func isRepeated(_ name: String) -> Bool {
            if !indexed {
                guard pairs.count >= Self.indexFrom else { return pairs.contains { $0.key.scalar?.string == name } }
                keys = Set(pairs.compactMap { $0.key.scalar?.string })
                indexed = true
            }
            return !keys.insert(name).inserted
        }

        init(isMapping: Bool, tag: String, anchor: String?, mark: YAMLMark) {
            self.isMapping = isMapping
            self.tag = tag
            self.anchor = anchor
            self.mark = mark
        }
    }

    let maximumDepth: Int
    private(set) var documents: [YAMLNode] = []
    private var stack: [Open] = []

    init(maximumDepth: Int) {
        self.maximumDepth = maximumDepth
    }
    private var anchors: [String: YAMLNode] = [:]
    private var root: YAMLNode?

    mutating func take(_ event: yaml_event_t) -> YAMLError? {
        let mark = YAMLMark(event.start_mark)
        switch event.type {
        case YAML_DOCUMENT_START_EVENT:
            anchors = [:]
            root = nil
        case YAML_DOCUMENT_END_EVENT:
            documents.append(root ?? .scalar(YAMLScalar(string: "", tag: "", isPlain: true, mark: mark)))
        case YAML_SCALAR_EVENT:
            let scalar = event.data.scalar
            let string = String(decoding: UnsafeBufferPointer(start: scalar.value, count: Int(scalar.length)), as: UTF8.self)
            let node = YAMLNode.scalar(YAMLScalar(string: string, tag: yamlText(scalar.tag), isPlain: scalar.style == YAML_PLAIN_SCALAR_STYLE, mark: mark))
            return add(node, anchor: yamlOptionalText(scalar.anchor))
        case YAML_ALIAS_EVENT:
            let name = yamlText(event.data.alias.anchor)
            guard let node = anchors[name] else {
                return YAMLError(kind: .composer, problem: "found undefined alias '\(name)'", mark: mark, context: nil)
            }
            return add(node, anchor: nil)
        case YAML_SEQUENCE_START_EVENT where stack.count >= maximumDepth, YAML_MAPPING_START_EVENT where stack.count >= maximumDepth:
            return YAMLError(kind: .composer, problem: "lists and mappings nest deeper than \(maximumDepth) levels", mark: mark, context: nil)
        case YAML_SEQUENCE_START_EVENT:
            let start = event.data.sequence_start
            stack.append(Open(isMapping: false, tag: yamlText(start.tag), anchor: yamlOptionalText(start.anchor), mark: mark))
        case YAML_MAPPING_START_EVENT:
            let start = event.data.mapping_start
            stack.append(Open(isMapping: true, tag: yamlText(start.tag), anchor: yamlOptionalText(start.anchor), mark: mark))
        case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
            guard let open = stack.popLast() else { break }
            if let repeats = open.repeats {
                let names = repeats.names.sorted()
                return YAMLError(kind: .composer, problem: "found the mapping key\(names.count == 1 ? "" : "s") '\(names.joined(separator: "', '"))' repeated",
                                 mark: repeats.mark, context: ("while reading a mapping", open.mark), repeatedKeys: names)
            }
            let node: YAMLNode = open.isMapping
                ? .mapping(YAMLMapping(pairs: open.pairs, tag: open.tag, mark: open.mark))
                : .sequence(YAMLSequence(items: open.items, tag: open.tag, mark: open.mark))
            return add(node, anchor: open.anchor)
        default:
            break
        }
        return nil
    }

    /// Puts a finished node where it belongs: the open collection, or the document's root.
    private mutating func add(_ node: YAMLNode, anchor: String?) -> YAMLError? {
        if let anchor { anchors[anchor] = node }
        guard let open = stack.last else {
            root = node
            return nil
        }
        guard open.isMapping else {
            open.items.append(node)
            return nil
        }
        if let key = open.pendingKey {
            open.pairs.append((key, node))
            open.pendingKey = nil
            return nil
        }
        if case .scalar(let scalar) = node, open.isRepeated(scalar.string) {
            if open.repeats == nil { open.repeats = ([], scalar.mark) }
            open.repeats?.names.insert(scalar.string)
        }
        open.pendingKey = node
        return nil
    }
}
