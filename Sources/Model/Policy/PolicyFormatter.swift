import IntegrationModel
import YAMLReader

/// `tether fmt`: one layout for policy files, as `terraform fmt` gives HCL one. Block style,
/// two-space indentation, lists indented under their key, policy keys in the schema's order,
/// comments kept where they stood (end-of-line comments aligned in runs of lines), one blank
/// line kept where the author left any. A scalar keeps its meaning: a plain one stays plain
/// and a quoted one quoted. The result is checked against the input (same values, same
/// comments) before it is returned. docs/architecture.md, "Formatting policies".
package enum PolicyFormatter {
    /// The canonical layout of a policy file's bytes; a problem (with its place) for a file
    /// that is not YAML a policy can be, or that the formatter cannot write without changing
    /// it. The bounds are the decoder's: the same file is refused by `validate` and `fmt`.
    package static func format(file: String, contents: [UInt8]) throws(PolicyProblem) -> String {
        if let problem = PolicyDecoder.longLine(contents, file: file) { throw problem }
        guard let text = String(validating: contents, as: UTF8.self) else {
            throw PolicyProblem(SourceLocation(file: file, line: 1, column: 1), "the file is not valid UTF-8 text")
        }
        if let problem = PolicyDecoder.preflight(text, file: file) { throw problem }
        let (resolved, error) = YAML.documents(in: text, maximumDepth: PolicyDecoder.maximumDepth)
        if let error { throw PolicyDecoder.problem(error, file: file) }
        for document in resolved {
            var budget = PolicyDecoder.maximumNodes
            guard PolicyDecoder.withinBudget(document, depth: 0, budget: &budget) else {
                throw PolicyProblem(SourceLocation(file: file, line: document.mark.line, column: document.mark.column),
                                    "the document expands to more than \(PolicyDecoder.maximumNodes) nodes or nests deeper than \(PolicyDecoder.maximumDepth) levels (YAML aliases?): refused")
            }
        }
        let source: YAMLSource
        do {
            source = try YAMLSource(text, maximumDepth: PolicyDecoder.maximumDepth)
        } catch {
            throw PolicyDecoder.problem(error, file: file)
        }
        var writer = LayoutWriter(source: source)
        let output: String
        do {
            output = try writer.write()
            try verify(output, against: resolved, comments: source.comments)
        } catch {
            let place = error.position.map { SourceLocation(file: file, line: $0.line, column: $0.column) } ?? SourceLocation(file: file, line: 1, column: 1)
            throw PolicyProblem(place, error.message)
        }
        return output
    }

    /// Why the layout was not written: a construct it does not write, or a result that would
    /// not read back to the same document (a defect of `fmt`, reported as such).
    struct Refusal: Error {
        let message: String
        let position: YAMLMark?

        static func unsupported(_ what: String, _ position: YAMLMark) -> Refusal {
            Refusal(message: "\(what): fmt leaves this file as it is", position: position)
        }

        static func wouldChange(_ what: String) -> Refusal {
            Refusal(message: "fmt would change what this file means (\(what)), so it leaves it as it is; please report this", position: nil)
        }
    }

    /// `text` as a YAML double-quoted scalar: the escapes that keep it one line and printable
    /// (`\n`, `\t`, `\e`, `\N`, `\L`, `\P`, `\xHH` for other controls), everything else as it is.
    /// What `fmt` writes and `PolicyWriter` writes.
    static func doubleQuoted(_ text: String) -> String {
        var quoted = "\""
        for character in text.unicodeScalars {
            switch character {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case "\n": quoted += "\\n"
            case "\t": quoted += "\\t"
            case "\r": quoted += "\\r"
            case "\0": quoted += "\\0"
            case "\u{1B}": quoted += "\\e"
            case "\u{85}": quoted += "\\N"
            case "\u{2028}": quoted += "\\L"
            case "\u{2029}": quoted += "\\P"
            case "\u{FEFF}": quoted += "\\uFEFF"
            default:
                if character.value < 0x20 || (0x7F...0x9F).contains(character.value) {
                    quoted += "\\x" + (character.value < 0x10 ? "0" : "") + String(character.value, radix: 16, uppercase: true)
                } else {
                    quoted.unicodeScalars.append(character)
                }
            }
        }
        return quoted + "\""
    }

    /// Reads `output` back and compares it with the input's documents and comments.
    private static func verify(_ output: String, against expected: [YAMLNode], comments: [YAMLComment]) throws(Refusal) {
        let (written, error) = YAML.documents(in: output, maximumDepth: PolicyDecoder.maximumDepth)
        if let error { throw .wouldChange("the result does not read as YAML: \(error)") }
        guard written.count == expected.count else { throw .wouldChange("\(expected.count) documents became \(written.count)") }
        var budget = 1_000_000
        for (left, right) in zip(expected, written) where !same(left, right, budget: &budget) {
            throw .wouldChange(budget <= 0 ? "too many nodes to compare once aliases are expanded" : "a value differs at line \(right.mark.line)")
        }
        let writtenComments = (try? YAMLSource(output, maximumDepth: PolicyDecoder.maximumDepth))?.comments.map(\.text) ?? []
        guard writtenComments.sorted() == comments.map(\.text).sorted() else { throw .wouldChange("a comment was lost") }
    }

    /// Equal as a reader sees them: scalars by text, tag and type; mappings by key, in any order.
    private static func same(_ left: YAMLNode, _ right: YAMLNode, budget: inout Int) -> Bool {
        budget -= 1
        guard budget > 0 else { return false }
        switch (left, right) {
        case (.scalar(let a), .scalar(let b)):
            return a.string == b.string && a.tag == b.tag && ScalarType(left) == ScalarType(right)
        case (.sequence(let a), .sequence(let b)):
            guard a.tag == b.tag, a.items.count == b.items.count else { return false }
            for (x, y) in zip(a.items, b.items) where !same(x, y, budget: &budget) { return false }
            return true
        case (.mapping(let a), .mapping(let b)):
            guard a.tag == b.tag, a.pairs.count == b.pairs.count else { return false }
            // Keys are scalars (the formatter refuses others) and unique (the reader refuses repeats).
            var others: [String: YAMLNode] = [:]
            for pair in b.pairs {
                guard case .scalar(let key) = pair.key else { return false }
                others[key.tag + "\u{0}" + key.string] = pair.value
            }
            for pair in a.pairs {
                guard case .scalar(let key) = pair.key, let other = others[key.tag + "\u{0}" + key.string],
                      same(pair.value, other, budget: &budget) else { return false }
            }
            return true
        default:
            return false
        }
    }
}

/// One line of output: its text and the comment that ends it.
private struct OutputLine {
    var text: String
    var comment: String?
    /// A line of a block scalar's text: kept even when blank at the end of the file.
    var isText = false
}

private extension String {
    /// Empty, or spaces only (an own-line comment's indentation).
    var isBlank: Bool { utf8.allSatisfy { $0 == UInt8(ascii: " ") } }
}

/// A mapping's pair or a list's item, with the comments that belong to it.
private final class Entry {
    let key: YAMLSourceNode?
    let value: YAMLSourceNode
    let start: YAMLMark
    var children: [Entry] = []
    /// Own-line comments above it.
    var leading: [YAMLComment] = []
    /// Comments at the end of its first line (more than one only until `settleComments`).
    var trailing: [YAMLComment] = []
    var blankBefore = false

    init(key: YAMLSourceNode?, value: YAMLSourceNode) {
        self.key = key
        self.value = value
        self.start = key?.start ?? value.start
    }

    /// A flow collection of scalars with no comment inside (`{address: a, port: 1}`,
    /// `[edr.port]`): written on one line, as its author did, when it fits.
    var isCompact: Bool {
        switch value.content {
        case .mapping(_, isFlow: true), .sequence(_, isFlow: true): break
        default: return false
        }
        return children.allSatisfy { child in
            guard child.leading.isEmpty, child.trailing.isEmpty, child.key?.anchor == nil, child.key?.tag.isEmpty != false else { return false }
            switch child.value.content {
            case .alias: return true
            case .scalar(let text, let style): return !(text.isEmpty && style == .plain) && style != .literal && style != .folded
            default: return false
            }
        }
    }

    /// A list item whose collection starts on the dash's line (`- name: x`, `- - a`).
    var isInlineItem: Bool {
        guard key == nil, value.anchor == nil, value.tag.isEmpty, !children.isEmpty, !isCompact else { return false }
        switch value.content {
        case .mapping(_, _), .sequence(_, _): return true
        default: return false
        }
    }
}

private struct LayoutWriter {
    let source: YAMLSource
    private var lines: [OutputLine] = []
    private var blankLines: Set<Int> = []

    init(source: YAMLSource) {
        self.source = source
    }

    mutating func write() throws(PolicyFormatter.Refusal) -> String {
        var documentComments = source.comments[...]
        for (index, document) in source.documents.enumerated() {
            let nextStart = index + 1 < source.documents.count ? source.documents[index + 1].start : nil
            var mine: [YAMLComment] = []
            while let comment = documentComments.first, nextStart.map({ comment.position < $0 }) ?? true {
                mine.append(comment)
                documentComments.removeFirst()
            }
            if let version = document.version {
                lines.append(OutputLine(text: "%YAML \(version)"))
            }
            // `---` between documents, and to start an empty first one that others follow.
            if index > 0 || document.version != nil || (Self.isEmpty(document) && source.documents.count > 1) {
                lines.append(OutputLine(text: "---"))
            }
            try write(document, comments: mine)
        }
        if source.documents.isEmpty { ownLine(source.comments, indent: 0, firstInBlock: true) }
        while let last = lines.last, last.text.isEmpty, last.comment == nil, !last.isText { lines.removeLast() }
        alignComments()
        return lines.isEmpty ? "" : lines.map { line in
            guard let comment = line.comment else { return line.text }
            return line.text.isBlank ? line.text + comment : line.text + " " + comment
        }.joined(separator: "\n") + "\n"
    }

    /// A document with no node, or only an empty plain scalar (`---` alone).
    private static func isEmpty(_ document: YAMLSourceDocument) -> Bool {
        guard let root = document.root else { return true }
        if case .scalar("", .plain) = root.content, root.anchor == nil, root.tag.isEmpty { return true }
        return false
    }

    private mutating func write(_ document: YAMLSourceDocument, comments: [YAMLComment]) throws(PolicyFormatter.Refusal) {
        guard let root = document.root, !Self.isEmpty(document) else {
            ownLine(comments, indent: 0, firstInBlock: lines.isEmpty)
            return
        }
        let entries = try Self.entries(of: root)
        var all: [Entry] = []
        var stack = entries.reversed() as [Entry]
        while let entry = stack.popLast() {
            all.append(entry)
            stack += entry.children.reversed()
        }
        var header: [YAMLComment] = []
        var footer: [YAMLComment] = []
        // `all` is in the order written (pre-order), so its starts never decrease.
        func firstIndex(startingAfter position: YAMLMark, orAt: Bool) -> Int {
            var low = 0
            var high = all.count
            while low < high {
                let middle = (low + high) / 2
                if all[middle].start < position || (!orAt && all[middle].start == position) { low = middle + 1 } else { high = middle }
            }
            return low
        }
        for comment in comments {
            if comment.isOwnLine {
                let next = firstIndex(startingAfter: comment.position, orAt: false)
                if comment.position < root.start {
                    header.append(comment)
                } else if next < all.count {
                    all[next].leading.append(comment)
                } else {
                    footer.append(comment)
                }
            } else {
                // The first entry that starts on the comment's line (`ndr: {port: 1}  # c` is
                // about ndr), else the last one before it (the line closes a flow collection).
                var previous = firstIndex(startingAfter: comment.position, orAt: true) - 1
                while previous > 0, all[previous - 1].start.line == comment.position.line { previous -= 1 }
                if previous >= 0 { all[previous].trailing.append(comment) } else { header.append(comment) }
            }
        }
        for entry in all { entry.blankBefore = source.blankLines.contains(entry.start.line - 1) }
        for entry in entries { Self.settleComments(entry) }
        ownLine(header, indent: 0, firstInBlock: lines.isEmpty)
        // A blank line between the header and the first entry written separates the header
        // from whatever entry comes first once the keys are in order.
        if let first = entries.first, !header.isEmpty, first.leading.isEmpty, first.blankBefore {
            blank()
            first.blankBefore = false
        }
        let order = KeyOrder(documentRoot: root)
        switch root.content {
        case .mapping(_, _) where !entries.isEmpty, .sequence(_, _) where !entries.isEmpty:
            if let properties = Self.properties(of: root) { lines.append(OutputLine(text: properties)) }
            collection(entries, isMapping: root.content.isMapping, indent: 0, firstPrefix: nil, path: [], order: order)
        default:
            value(root, lead: "", indent: 0, children: [], compact: false, comment: nil, path: [], order: order)
        }
        ownLine(footer, indent: 0, firstInBlock: false)
    }

    /// The entries of a collection node, recursively (nesting is bounded by the reader).
    private static func entries(of node: YAMLSourceNode) throws(PolicyFormatter.Refusal) -> [Entry] {
        var result: [Entry] = []
        switch node.content {
        case .mapping(let pairs, _):
            for pair in pairs {
                guard case .scalar(_, let style) = pair.key.content else {
                    throw .unsupported("a list, mapping or alias used as a key", pair.key.start)
                }
                if style == .literal || style == .folded { throw .unsupported("a block scalar used as a key", pair.key.start) }
                let entry = Entry(key: pair.key, value: pair.value)
                entry.children = try entries(of: pair.value)
                result.append(entry)
            }
        case .sequence(let items, _):
            for item in items {
                let entry = Entry(key: nil, value: item)
                entry.children = try entries(of: item)
                result.append(entry)
            }
        case .scalar, .alias:
            break
        }
        return result
    }

    /// One comment at most ends a line: an inline item's line is its first child's, and
    /// comments that cannot end a line go above it.
    private static func settleComments(_ entry: Entry) {
        for child in entry.children { settleComments(child) }
        if entry.isInlineItem, let first = entry.children.first {
            // The item's line is its first child's (in the order written; `mapping` writes the
            // first one in the sorted order there, with its comments above the dash).
            first.trailing = entry.trailing + first.trailing
            entry.trailing = []
            first.leading += first.trailing.dropFirst()
            first.trailing = Array(first.trailing.prefix(1))
        }
        entry.leading += entry.trailing.dropFirst()
        entry.trailing = Array(entry.trailing.prefix(1))
    }

    private mutating func ownLine(_ comments: [YAMLComment], indent: Int, firstInBlock: Bool) {
        for (index, comment) in comments.enumerated() {
            if comment.followsBlankLine && !(firstInBlock && index == 0) { blank() }
            lines.append(OutputLine(text: String(repeating: " ", count: indent), comment: comment.text))
        }
    }

    private mutating func blank() {
        if let last = lines.last, !(last.text.isEmpty && last.comment == nil) { lines.append(OutputLine(text: "")) }
    }

    /// Comments above an entry, and the blank line its author left before it.
    private mutating func above(_ entry: Entry, indent: Int, first: Bool) {
        ownLine(entry.leading, indent: indent, firstInBlock: first)
        if entry.blankBefore && !(first && entry.leading.isEmpty) { blank() }
    }

    /// Writes what stands above an entry and gives what its line starts with: the indentation,
    /// or for an inline item's first entry the dash's prefix (nothing may stand between the dash
    /// and it: its comments go above the dash).
    private mutating func start(_ entry: Entry, first: Bool, indent: Int, firstPrefix: String?) -> String {
        if first, let firstPrefix {
            ownLine(entry.leading, indent: max(0, indent - 2), firstInBlock: true)
            return firstPrefix
        }
        above(entry, indent: indent, first: first)
        return String(repeating: " ", count: indent)
    }

    private mutating func mapping(_ entries: [Entry], indent: Int, firstPrefix: String?, path: [String], order: KeyOrder) {
        let sorted = order.sorted(entries, at: path)
        for (index, entry) in sorted.enumerated() {
            guard let key = entry.key, case .scalar(let name, let style) = key.content else { continue }
            let prefix = start(entry, first: index == 0, indent: indent, firstPrefix: firstPrefix)
            let keyText = Self.properties(of: key).map { $0 + " " } ?? ""
            let lead = prefix + keyText + Self.scalar(name, style: style == .plain ? .plain : .doubleQuoted) + ":"
            value(entry.value, lead: lead, indent: indent, children: entry.children, compact: entry.isCompact, comment: entry.trailing.first, path: path + [name], order: order)
        }
    }

    private mutating func sequence(_ entries: [Entry], indent: Int, firstPrefix: String?, path: [String], order: KeyOrder) {
        for (index, entry) in entries.enumerated() {
            let prefix = start(entry, first: index == 0, indent: indent, firstPrefix: firstPrefix)
            value(entry.value, lead: prefix + "-", indent: indent, children: entry.children, compact: entry.isCompact, comment: entry.trailing.first, path: path + ["[]"], order: order)
        }
    }

    /// Writes `node` after `lead` (`key:` or `-`, at `indent`), and what it holds below.
    private mutating func value(_ node: YAMLSourceNode, lead: String, indent: Int, children: [Entry], compact: Bool, comment: YAMLComment?, path: [String], order: KeyOrder) {
        let isItem = lead.hasSuffix("-")
        let properties = Self.properties(of: node)
        /// `lead`, the node's properties and `text`, each written only when there is one.
        func line(_ text: String = "") -> String {
            [lead, properties ?? "", text].filter { !$0.isEmpty }.joined(separator: " ")
        }
        let withProperties = line()
        if compact && !children.isEmpty {
            let flow = Self.flow(order.sorted(children, at: path), isMapping: node.content.isMapping)
            let text = line(flow)
            if text.unicodeScalars.count <= Self.compactWidth {
                lines.append(OutputLine(text: text, comment: comment?.text))
                return
            }
        }
        switch node.content {
        case .alias(let name):
            lines.append(OutputLine(text: line("*" + name), comment: comment?.text))
        case .scalar(let text, let style):
            if let block = Self.literal(text, style: style, indent: indent + 2) {
                lines.append(OutputLine(text: line(block.header), comment: comment?.text))
                lines += block.lines.map { OutputLine(text: $0, isText: true) }
            } else {
                lines.append(OutputLine(text: line(Self.scalar(text, style: style)), comment: comment?.text))
            }
        case .mapping(_, _) where children.isEmpty:
            lines.append(OutputLine(text: line("{}"), comment: comment?.text))
        case .sequence(_, _) where children.isEmpty:
            lines.append(OutputLine(text: line("[]"), comment: comment?.text))
        case .mapping(_, _), .sequence(_, _):
            if isItem && properties == nil {
                collection(children, isMapping: node.content.isMapping, indent: indent + 2, firstPrefix: lead + " ", path: path, order: order)
            } else {
                if !withProperties.isEmpty { lines.append(OutputLine(text: withProperties, comment: comment?.text)) }
                collection(children, isMapping: node.content.isMapping, indent: lead.isEmpty ? indent : indent + 2, firstPrefix: nil, path: path, order: order)
            }
        }
    }

    private mutating func collection(_ entries: [Entry], isMapping: Bool, indent: Int, firstPrefix: String?, path: [String], order: KeyOrder) {
        if isMapping {
            mapping(entries, indent: indent, firstPrefix: firstPrefix, path: path, order: order)
        } else {
            sequence(entries, indent: indent, firstPrefix: firstPrefix, path: path, order: order)
        }
    }

    /// The widest line a flow collection is kept on; a wider one is written in block style.
    static let compactWidth = 100

    /// `{key: value, …}` or `[item, …]`, for compact entries' children.
    private static func flow(_ children: [Entry], isMapping: Bool) -> String {
        let items = children.map { child -> String in
            let value: String
            switch child.value.content {
            case .alias(let name): value = "*" + name
            case .scalar(let text, let style): value = [properties(of: child.value), scalar(text, style: style)].compactMap { $0 }.joined(separator: " ")
            default: value = ""
            }
            guard let key = child.key, case .scalar(let name, let style) = key.content else { return value }
            return scalar(name, style: style == .plain ? .plain : .doubleQuoted) + ": " + value
        }
        return isMapping ? "{" + items.joined(separator: ", ") + "}" : "[" + items.joined(separator: ", ") + "]"
    }

    /// `&anchor !tag`, or nil when the node has neither.
    private static func properties(of node: YAMLSourceNode) -> String? {
        var parts: [String] = []
        if let anchor = node.anchor { parts.append("&" + anchor) }
        let standard = "tag:yaml.org,2002:"
        if node.tag.hasPrefix(standard) {
            parts.append("!!" + node.tag.dropFirst(standard.count))
        } else if node.tag == "!" || (node.tag.hasPrefix("!") && !node.tag.dropFirst().contains("!")) {
            parts.append(node.tag)
        } else if !node.tag.isEmpty {
            parts.append("!<\(node.tag)>")
        }
        return parts.isEmpty ? nil : parts.joined(separator: " ")
    }

    /// A scalar on one line: plain text stays plain (folded onto one line); anything quoted, and
    /// plain text that held a line break, is double-quoted.
    private static func scalar(_ text: String, style: YAMLSourceNode.ScalarStyle) -> String {
        if style == .plain && !text.unicodeScalars.contains(where: { $0 == "\n" }) { return text }
        return PolicyFormatter.doubleQuoted(text)
    }


    /// A block scalar's text as a literal block (`|`, `|-`, `|+`), its lines at `indent`; nil
    /// when the text was not written as a block or holds what a literal block cannot.
    private static func literal(_ text: String, style: YAMLSourceNode.ScalarStyle, indent: Int) -> (header: String, lines: [String])? {
        guard style == .literal || style == .folded, !text.isEmpty else { return nil }
        for character in text.unicodeScalars where character != "\n" && character != "\t"
            && (character.value < 0x20 || (0x7F...0x9F).contains(character.value) || character == "\u{2028}" || character == "\u{2029}" || character == "\u{FEFF}") {
            return nil
        }
        var body = Substring(text)
        var breaks = 0
        while body.hasSuffix("\n") {
            body = body.dropLast()
            breaks += 1
        }
        let chomping = breaks == 0 ? "-" : breaks == 1 ? "" : "+"
        let bodyLines = body.split(separator: "\n", omittingEmptySubsequences: false)
        let firstContent = bodyLines.first { !$0.isEmpty }
        let needsIndicator = bodyLines.first?.isEmpty == true || firstContent?.first == " "
        let pad = String(repeating: " ", count: indent)
        var lines = bodyLines.map { $0.isEmpty ? "" : pad + $0 }
        lines += Array(repeating: "", count: max(0, breaks - 1))
        return ("|" + (needsIndicator ? "2" : "") + chomping, lines)
    }

    /// Lines that end with comments, one after another, put their comments in one column,
    /// two spaces after the longest line of the run (yamllint's default minimum).
    private mutating func alignComments() {
        var index = 0
        while index < lines.count {
            guard lines[index].comment != nil, !lines[index].text.isBlank else {
                index += 1
                continue
            }
            var end = index
            while end < lines.count, lines[end].comment != nil, !lines[end].text.isBlank { end += 1 }
            let width = lines[index..<end].map { $0.text.unicodeScalars.count }.max() ?? 0
            for line in index..<end {
                lines[line].text += String(repeating: " ", count: width + 1 - lines[line].text.unicodeScalars.count)
            }
            index = end
        }
    }
}

/// The order of a policy's keys: the schema's, as `PolicyWriter` and the docs write them.
/// Free-form maps (labels) are sorted; keys the schema does not know keep their place after
/// the known ones. Documents that are not policies, or that use aliases (an alias must come
/// after its anchor), keep the order written.
private struct KeyOrder {
    let isPolicy: Bool

    init(documentRoot root: YAMLSourceNode) {
        guard case .mapping(let pairs, _) = root.content,
              pairs.contains(where: { pair in
                  if case .scalar("kind", _) = pair.key.content, case .scalar(let kind, _) = pair.value.content { return kind == PolicyDecoder.kind }
                  return false
              }) else {
            isPolicy = false
            return
        }
        var stack = [root]
        var usesAliases = false
        while let node = stack.popLast(), !usesAliases {
            switch node.content {
            case .alias: usesAliases = true
            case .mapping(let pairs, _): for pair in pairs { stack += [pair.key, pair.value] }
            case .sequence(let items, _): stack += items
            case .scalar: break
            }
        }
        isPolicy = !usesAliases
    }

    func sorted(_ entries: [Entry], at path: [String]) -> [Entry] {
        guard isPolicy else { return entries }
        let names = entries.map { entry -> String in
            if let key = entry.key, case .scalar(let name, _) = key.content { return name }
            return ""
        }
        let ranked: [Int]
        if let known = Self.known(at: path) {
            let rank = Dictionary(known.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: min)
            ranked = names.map { rank[$0] ?? known.count }
        } else if Self.isFreeForm(path) {
            let alphabetical = Dictionary(names.sorted().enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: min)
            ranked = names.map { alphabetical[$0] ?? 0 }
        } else {
            return entries
        }
        return entries.indices.sorted { (ranked[$0], $0) < (ranked[$1], $1) }.map { entries[$0] }
    }

    private static func isFreeForm(_ path: [String]) -> Bool {
        path == ["metadata", "labels"] || path == ["metadata", "annotations"] || path == ["spec", "selector", "matchLabels"]
    }

    private static func known(at path: [String]) -> [String]? {
        let integrations = Integration.allCases.map(\.rawValue)
        switch path.count {
        case 0: return ["apiVersion", "kind", "metadata", "spec"]
        case 1 where path[0] == "metadata": return ["name", "labels", "annotations"]
        case 1 where path[0] == "spec":
            return ["priority", "mode", "selector", "allowRollback", "observe", "ignore", "exceptions"]
                + topLevelNames(SettingCatalog.fields(.app)) + integrations
        default: break
        }
        guard path[0] == "spec" else { return nil }
        let rest = Array(path.dropFirst())
        if rest == ["selector"] { return ["matchLabels"] }
        if rest == ["exceptions", "[]"] { return ["path", "reason", "expires"] }
        if rest == ["proxy"] { return groupNames("proxy", SettingCatalog.fields(.app)) }
        guard let integration = Integration(rawValue: rest[0]) else { return nil }
        let fields = SettingCatalog.fields(.integration(integration))
        switch rest.count {
        case 1:
            // As the design's example reads: where to connect, the certificate to trust, then
            // mutual authentication with the container it uses.
            var names = topLevelNames(fields)
            let mutual = names.firstIndex(of: "mutualAuthentication") ?? names.count
            names.insert(contentsOf: ["serverCertificate", "mutualAuthentication", "clientCertificate"], at: mutual)
            return names.enumerated().filter { index, name in names.firstIndex(of: name) == index }.map(\.element)
        case 2 where rest[1] == "clientCertificate": return ["file", "passwordFile"]
        case 2: return groupNames(rest[1], fields)
        case 3 where rest[2] == "[]": return ["address", "port"]
        default: return nil
        }
    }

    /// Field names before their first dot, each once, in catalog order.
    private static func topLevelNames(_ fields: [SettingField]) -> [String] {
        var names: [String] = []
        for field in fields {
            let name = String(field.name.split(separator: ".", maxSplits: 1)[0])
            if !names.contains(name) { names.append(name) }
        }
        return names
    }

    private static func groupNames(_ group: String, _ fields: [SettingField]) -> [String]? {
        let names = fields.filter { $0.name.hasPrefix(group + ".") }.map { String($0.name.dropFirst(group.count + 1)) }
        return names.isEmpty ? nil : names
    }
}
