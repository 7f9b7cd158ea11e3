internal import CYAML

/// A YAML stream read to be written again (`tether fmt`): nodes as written — scalar styles,
/// flow or block collections, anchors and aliases kept rather than resolved — with where each
/// starts and ends, and the comments, which libyaml's parser drops and this reader finds in the
/// text between the nodes. docs/architecture.md, "Formatting policies".
package struct YAMLSource: Sendable {
    package var documents: [YAMLSourceDocument]
    /// Every comment of the stream, in the order written.
    package var comments: [YAMLComment]
    /// The lines (from 1) that hold nothing but spaces and tabs.
    package var blankLines: Set<Int>

    /// Reads `text`; a malformed stream is an error with its place (nothing is half-read).
    package init(_ text: String, maximumDepth: Int = 64) throws(YAMLError) {
        var bytes = Array(text.utf8)
        guard !bytes.isEmpty else {
            documents = []
            comments = []
            blankLines = []
            return
        }
        var builder = SourceBuilder(maximumDepth: maximumDepth)
        if let error = parseEvents(&bytes, { builder.take($0) }) { throw error }
        documents = builder.documents
        (comments, blankLines) = YAMLSource.comments(in: text, tokens: YAMLSource.tokenSpans(&bytes))
    }

    /// Where each of libyaml's tokens lies (scalars, anchors, tags, indicators, directives):
    /// everything that is not a comment. A `#` outside them is one, as libyaml's scanner
    /// decides (it needs no blank before it after a quote or a bracket). A block scalar's
    /// header line is left out: a comment may end it.
    private static func tokenSpans(_ bytes: inout [UInt8]) -> [(start: YAMLMark, end: YAMLMark)] {
        withYAMLParser(&bytes) { parser, _ in
            var spans: [(start: YAMLMark, end: YAMLMark)] = []
            var token = yaml_token_t()
            while yaml_parser_scan(parser, &token) == 1 {
                defer { yaml_token_delete(&token) }
                if token.type == YAML_STREAM_END_TOKEN { break }
                var start = YAMLMark(token.start_mark)
                let end = YAMLMark(token.end_mark)
                if token.type == YAML_SCALAR_TOKEN,
                   token.data.scalar.style == YAML_LITERAL_SCALAR_STYLE || token.data.scalar.style == YAML_FOLDED_SCALAR_STYLE {
                    start = YAMLMark(line: start.line + 1, column: 1)
                }
                if start < end { spans.append((start, end)) }
            }
            return spans
        } ?? []
    }

    /// The comments of `text`: each `#` outside every token, to the end of its line. Lines
    /// break where libyaml breaks them (LF, CR LF, CR, NEL, LS, PS), so positions agree with its marks.
    private static func comments(in text: String, tokens: [(start: YAMLMark, end: YAMLMark)]) -> ([YAMLComment], Set<Int>) {
        var lines: [[Unicode.Scalar]] = [[]]
        var previous: Unicode.Scalar?
        for character in text.unicodeScalars {
            defer { previous = character }
            switch character {
            case "\n" where previous == "\r":
                continue
            case "\n", "\r", "\u{85}", "\u{2028}", "\u{2029}":
                lines.append([])
            case "\u{FEFF}" where lines.count == 1 && lines[0].isEmpty:
                continue
            default:
                lines[lines.count - 1].append(character)
            }
        }
        var spans = tokens
        spans.sort { $0.start < $1.start }
        var comments: [YAMLComment] = []
        var blankLines: Set<Int> = []
        var spanIndex = 0
        var previousLineBlank = false
        for (lineIndex, scalars) in lines.enumerated() {
            var sawContent = false
            for column in scalars.indices {
                let character = scalars[column]
                guard character != " " && character != "\t" else { continue }
                defer { sawContent = true }
                guard character == "#" else { continue }
                let position = YAMLMark(line: lineIndex + 1, column: column + 1)
                while spanIndex < spans.count && spans[spanIndex].end <= position { spanIndex += 1 }
                if spanIndex < spans.count && spans[spanIndex].start <= position { continue }
                var comment = scalars[column...]
                while let last = comment.last, last == " " || last == "\t" { comment.removeLast() }
                var text = ""
                text.unicodeScalars.append(contentsOf: comment)
                comments.append(YAMLComment(text: text, position: position, isOwnLine: !sawContent, followsBlankLine: !sawContent && previousLineBlank))
                break
            }
            previousLineBlank = !sawContent
            if !sawContent { blankLines.insert(lineIndex + 1) }
        }
        return (comments, blankLines)
    }
}

/// One document of a stream.
package struct YAMLSourceDocument: Sendable {
    /// nil for a document with no node (only comments, or `---` alone).
    package let root: YAMLSourceNode?
    /// The `%YAML` directive's version, when written ("1.1").
    package let version: String?
    /// The `%TAG` directives, as written (`! tag:example.com,2000:`).
    package let tagDirectives: [(handle: String, prefix: String)]
    package let start: YAMLMark
    package let end: YAMLMark
}

/// A node as written.
package final class YAMLSourceNode: Sendable {
    package enum ScalarStyle: Sendable, Equatable {
        case plain, singleQuoted, doubleQuoted, literal, folded
    }

    package enum Content: Sendable {
        /// The scalar's value (after YAML's quoting, escapes and folding) and how it was written.
        case scalar(String, ScalarStyle)
        case mapping([(key: YAMLSourceNode, value: YAMLSourceNode)], isFlow: Bool)
        case sequence([YAMLSourceNode], isFlow: Bool)
        /// `*name`: the anchor's name.
        case alias(String)

        /// Whether this is a mapping.
        package var isMapping: Bool {
            if case .mapping = self { return true }
            return false
        }
    }

    package let content: Content
    package let anchor: String?
    /// As libyaml expands it (`!!str` is `tag:yaml.org,2002:str`); empty when none is written.
    package let tag: String
    package let start: YAMLMark
    package let end: YAMLMark

    init(content: Content, anchor: String?, tag: String, start: YAMLMark, end: YAMLMark) {
        self.content = content
        self.anchor = anchor
        self.tag = tag
        self.start = start
        self.end = end
    }
}

/// A comment: its text from `#` to the end of the line (trailing blanks dropped).
package struct YAMLComment: Sendable, Equatable {
    package let text: String
    package let position: YAMLMark
    /// Alone on its line (else it ends a line that holds YAML).
    package let isOwnLine: Bool
    /// An own-line comment with a blank line above it.
    package let followsBlankLine: Bool
}

/// Builds source nodes from parser events with an explicit stack (no recursion, however deep).
private struct SourceBuilder {
    private final class Open {
        let isMapping: Bool
        let isFlow: Bool
        let tag: String
        let anchor: String?
        let start: YAMLMark
        var items: [YAMLSourceNode] = []

        init(isMapping: Bool, isFlow: Bool, tag: String, anchor: String?, start: YAMLMark) {
            self.isMapping = isMapping
            self.isFlow = isFlow
            self.tag = tag
            self.anchor = anchor
            self.start = start
        }
    }

    let maximumDepth: Int
    private(set) var documents: [YAMLSourceDocument] = []
    private var stack: [Open] = []
    private var root: YAMLSourceNode?
    private var documentStart = YAMLMark(line: 1, column: 1)
    private var version: String?
    private var tagDirectives: [(handle: String, prefix: String)] = []
    private var anchors: Set<String> = []

    init(maximumDepth: Int) {
        self.maximumDepth = maximumDepth
    }

    mutating func take(_ event: yaml_event_t) -> YAMLError? {
        let start = YAMLMark(event.start_mark)
        let end = YAMLMark(event.end_mark)
        switch event.type {
        case YAML_DOCUMENT_START_EVENT:
            let data = event.data.document_start
            root = nil
            anchors = []
            documentStart = start
            version = data.version_directive.map { "\($0.pointee.major).\($0.pointee.minor)" }
            tagDirectives = []
            var directive = data.tag_directives.start
            while let current = directive, current != data.tag_directives.end {
                tagDirectives.append((yamlText(current.pointee.handle), yamlText(current.pointee.prefix)))
                directive = current + 1
            }
        case YAML_DOCUMENT_END_EVENT:
            documents.append(YAMLSourceDocument(root: root, version: version, tagDirectives: tagDirectives, start: documentStart, end: end))
        case YAML_SCALAR_EVENT:
            let scalar = event.data.scalar
            let value = String(decoding: UnsafeBufferPointer(start: scalar.value, count: Int(scalar.length)), as: UTF8.self)
            let style: YAMLSourceNode.ScalarStyle
            switch scalar.style {
            case YAML_SINGLE_QUOTED_SCALAR_STYLE: style = .singleQuoted
            case YAML_DOUBLE_QUOTED_SCALAR_STYLE: style = .doubleQuoted
            case YAML_LITERAL_SCALAR_STYLE: style = .literal
            case YAML_FOLDED_SCALAR_STYLE: style = .folded
            default: style = .plain
            }
            add(YAMLSourceNode(content: .scalar(value, style), anchor: yamlOptionalText(scalar.anchor), tag: yamlText(scalar.tag), start: start, end: end))
        case YAML_ALIAS_EVENT:
            let name = yamlText(event.data.alias.anchor)
            guard anchors.contains(name) else {
                return YAMLError(kind: .composer, problem: "found undefined alias '\(name)'", mark: start, context: nil)
            }
            add(YAMLSourceNode(content: .alias(name), anchor: nil, tag: "", start: start, end: end))
        case YAML_SEQUENCE_START_EVENT where stack.count >= maximumDepth, YAML_MAPPING_START_EVENT where stack.count >= maximumDepth:
            return YAMLError(kind: .composer, problem: "lists and mappings nest deeper than \(maximumDepth) levels", mark: start, context: nil)
        case YAML_SEQUENCE_START_EVENT:
            let data = event.data.sequence_start
            stack.append(Open(isMapping: false, isFlow: data.style == YAML_FLOW_SEQUENCE_STYLE, tag: yamlText(data.tag), anchor: yamlOptionalText(data.anchor), start: start))
        case YAML_MAPPING_START_EVENT:
            let data = event.data.mapping_start
            stack.append(Open(isMapping: true, isFlow: data.style == YAML_FLOW_MAPPING_STYLE, tag: yamlText(data.tag), anchor: yamlOptionalText(data.anchor), start: start))
        case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
            guard let open = stack.popLast() else { break }
            let content: YAMLSourceNode.Content
            if open.isMapping {
                content = .mapping(stride(from: 0, to: open.items.count - 1, by: 2).map { (open.items[$0], open.items[$0 + 1]) }, isFlow: open.isFlow)
            } else {
                content = .sequence(open.items, isFlow: open.isFlow)
            }
            add(YAMLSourceNode(content: content, anchor: open.anchor, tag: open.tag, start: open.start, end: end))
        default:
            break
        }
        return nil
    }

    private mutating func add(_ node: YAMLSourceNode) {
        if let anchor = node.anchor { anchors.insert(anchor) }
        if let open = stack.last {
            open.items.append(node)
        } else {
            root = node
        }
    }
}
