import FoundationEssentials
import IntegrationModel
import YAMLReader
import Primitives

/// Decodes `IntegrationPolicy` YAML documents, keeping the file, line and column of every value,
/// and collecting every problem rather than stopping at the first.
package struct PolicyDecoder {
    package static let apiVersion = "tether/v1"
    package static let kind = "IntegrationPolicy"

    private let file: String
    private var problems: [PolicyProblem] = []

    private init(file: String) {
        self.file = file
    }

    /// Decodes every document in one file. Empty documents are skipped. Problems come in line
    /// and column order, the same for the same input.
    package static func decode(file: String, contents: [UInt8]) -> (policies: [IntegrationPolicy], problems: [PolicyProblem]) {
        var decoder = PolicyDecoder(file: file)
        if let problem = longLine(contents, file: file) { return ([], [problem]) }
        guard let text = String(validating: contents, as: UTF8.self) else {
            return ([], [PolicyProblem(SourceLocation(file: file, line: 1, column: 1), "the file is not valid UTF-8 text")])
        }
        if let problem = preflight(text, file: file) { return ([], [problem]) }
        var policies: [IntegrationPolicy] = []
        // Scalars come untyped: `ScalarType` types them.
        let (documents, error) = YAML.documents(in: text, maximumDepth: Self.maximumDepth)
        for node in documents {
            var budget = Self.maximumNodes
            guard Self.withinBudget(node, depth: 0, budget: &budget) else {
                decoder.add(node, "the document expands to more than \(Self.maximumNodes) nodes or nests deeper than \(Self.maximumDepth) levels (YAML aliases?): refused")
                continue
            }
            for (node, tag) in Self.unsupportedTags(node) {
                decoder.add(node, "the tag \(tag) is not allowed: policies use plain YAML values (standard tags such as !!str only)")
            }
            if let policy = decoder.policy(from: node) { policies.append(policy) }
        }
        if let error { decoder.add(yamlError: error) }
        let problems = decoder.problems.sorted {
            ($0.location.line, $0.location.column, $0.message) < ($1.location.line, $1.location.column, $1.message)
        }
        return (policies, problems)
    }

    // MARK: - Bounds on untrusted input

    /// Limits for one file: nesting depth, aliases, and nodes after alias expansion.
    package static let maximumDepth = 64
    package static let maximumAliases = 256
    package static let maximumNodes = 100_000

    /// The longest line a policy file may hold. Policies name files rather than hold them, so
    /// a line this long is hostile; refused by one pass over the bytes, before anything reads
    /// the text character by character.
    package static let maximumLineBytes = 64 << 10

    /// The first line longer than `maximumLineBytes`, as a problem with an excerpt.
    static func longLine(_ contents: [UInt8], file: String) -> PolicyProblem? {
        var line = 1
        var start = 0
        for index in 0...contents.count {
            guard index == contents.count || contents[index] == 0x0A else { continue }
            if index - start > maximumLineBytes {
                let head = String(decoding: contents[start..<min(index, start + 240)], as: UTF8.self)
                let shown = TerminalText.escaped(String(head.trimmingSpaces().prefix(60)))
                return PolicyProblem(SourceLocation(file: file, line: line, column: 1),
                                     "a line of \(index - start) bytes, where a policy line holds at most \(maximumLineBytes): refused (it begins '\(shown)…')")
            }
            line += 1
            start = index + 1
        }
        return nil
    }

    /// Checks what the YAML parser would otherwise recurse into or expand, before parsing.
    static func preflight(_ text: String, file: String) -> PolicyProblem? {
        var flowDepth = 0
        var aliases = 0
        var line = 1
        var column = 0
        // Characters are compared by their ASCII value (nil for any other): the same answers as
        // comparing Characters (a quote with a combining mark is no quote either way), without a
        // string comparison per character.
        var quote: UInt8?
        var comment = false
        var previous: UInt8? = 0x20
        /// Where a `?` that may open an explicit key stands, and where a list or mapping that may
        /// be a key ends (with whether a colon followed it): the composer's report of such keys
        /// repeated has no stable place, and field names are plain words anyway.
        var question: (line: Int, column: Int)?
        var closed: (line: Int, column: Int, colon: Bool)?
        /// Whether only indentation (and `- `) came before on this line: where a key can start.
        var keyCanStart = true
        /// The lines of block scalars (`|`, `>`): text, not YAML structure.
        let bytes = Array(text.utf8)
        let textLines = blockScalarLines(bytes)
        /// The first line indented deeper than nesting allows, reported after the checks above.
        var deepLine: Int?
        var indentation = 0
        func plainKeysOnly(_ at: (line: Int, column: Int), _ what: String) -> PolicyProblem {
            PolicyProblem(SourceLocation(file: file, line: at.line, column: at.column), "\(what) is not allowed: field names are plain words")
        }
        let space: UInt8 = 0x20, lineFeed: UInt8 = 0x0A, carriageReturn: UInt8 = 0x0D
        // One pass over the UTF-8 bytes. Structure is ASCII; any other scalar is text (nil
        // below). Columns count scalars, as libyaml's marks do.
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            if byte & 0xC0 == 0x80 { continue }  // the rest of a scalar already counted
            column += 1
            // Most bytes are letters and digits, which change no state below but these two (the
            // next line break resets both within comments and block scalars too).
            if question == nil, closed == nil, byte.isASCIILetter || byte.isASCIIDigit {
                keyCanStart = false
                previous = byte
                continue
            }
            // Block nesting needs indentation (or compact "- - -" sequences): bound it.
            if indentation == column - 1, byte == space || byte == UInt8(ascii: "-") {
                indentation += 1
                if indentation > maximumDepth * 4, deepLine == nil { deepLine = line }
            }
            var ascii: UInt8? = byte < 0x80 ? byte : nil
            // CR LF ends a line as LF does.
            if byte == carriageReturn, index < bytes.count, bytes[index] == lineFeed {
                ascii = lineFeed
                index += 1
            }
            // NEL (C2 85), LS and PS (E2 80 A8/A9) break lines for YAML too.
            let otherBreak: UInt32? = switch (byte, index < bytes.count ? bytes[index] : 0, index + 1 < bytes.count ? bytes[index + 1] : 0) {
            case (0xC2, 0x85, _): 0x85
            case (0xE2, 0x80, 0xA8): 0x2028
            case (0xE2, 0x80, 0xA9): 0x2029
            default: nil
            }
            let breaksLine = ascii == lineFeed || ascii == 0x0B || ascii == 0x0C || ascii == carriageReturn || otherBreak != nil
            let ends = ascii == space || breaksLine
            if let at = question {
                if ends { return plainKeysOnly(at, "an explicit '? ' key") }
                question = nil
            }
            if let at = closed, !comment, quote == nil {
                if at.colon && ends { return plainKeysOnly((at.line, at.column), "a list or mapping used as a key") }
                if ascii == UInt8(ascii: ":") && !at.colon { closed?.colon = true } else if ascii != space || at.colon { closed = nil }
            }
            if breaksLine, ascii != lineFeed {
                // A lone CR, NEL, LS or PS breaks a line for YAML but not for git or an editor:
                // every line and column reported after it would point at the wrong place.
                let scalar = otherBreak ?? UInt32(byte)
                return PolicyProblem(SourceLocation(file: file, line: line, column: column),
                                     "a line break other than LF or CRLF (U+\(scalar.digits(radix: 16, width: 4))): save the file with LF or CRLF line ends")
            }
            if ascii == lineFeed {
                line += 1
                column = 0
                indentation = 0
                comment = false
                previous = space
                keyCanStart = true
                continue
            }
            if comment || (line < textLines.count && textLines[line]) { continue }
            let atKeyStart = keyCanStart
            if ascii != space && ascii != UInt8(ascii: "-") { keyCanStart = false }
            if let open = quote {
                if ascii == open { quote = nil }
                previous = ascii
                continue
            }
            let boundary = previous == space || previous == UInt8(ascii: "[") || previous == UInt8(ascii: "{") || previous == UInt8(ascii: ",") || column == 1
            switch ascii {
            case UInt8(ascii: "\"") where boundary, UInt8(ascii: "'") where boundary:
                quote = ascii
            case UInt8(ascii: "#") where previous == space || column == 1:
                comment = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                flowDepth += 1
                if flowDepth > maximumDepth {
                    return PolicyProblem(SourceLocation(file: file, line: line, column: column), "YAML nests deeper than \(maximumDepth) levels: refused")
                }
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                flowDepth = max(0, flowDepth - 1)
                closed = (line, column, false)
            case UInt8(ascii: "?") where atKeyStart:
                question = (line, column)
            case UInt8(ascii: "*") where previous == space || previous == UInt8(ascii: "[") || previous == UInt8(ascii: ",") || previous == UInt8(ascii: "{"):
                aliases += 1
                if aliases > maximumAliases {
                    return PolicyProblem(SourceLocation(file: file, line: line, column: column), "more than \(maximumAliases) YAML aliases in one file: refused")
                }
            default:
                break
            }
            previous = ascii
        }
        if let at = question { return plainKeysOnly(at, "an explicit '? ' key") }
        if let at = closed, at.colon { return plainKeysOnly((at.line, at.column), "a list or mapping used as a key") }
        if let deepLine {
            return PolicyProblem(SourceLocation(file: file, line: deepLine, column: 1), "YAML indented more than \(maximumDepth * 4) columns (nesting too deep): refused")
        }
        return nil
    }

    /// Every node carrying a tag other than YAML's standard ones (`!custom`, `!!python/…`), with it.
    static func unsupportedTags(_ node: YAMLNode) -> [(YAMLNode, String)] {
        var found: [(YAMLNode, String)] = []
        func visit(_ node: YAMLNode) {
            let tag = node.tag
            switch node {
            case .scalar:
                break
            case .mapping(let mapping):
                for (key, value) in mapping {
                    visit(key)
                    visit(value)
                }
            case .sequence(let sequence):
                sequence.forEach(visit)
            }
            if !tag.isEmpty, !ScalarType.standardTags.contains(tag) {
                found.append((node, tag.hasPrefix("tag:yaml.org,2002:") ? "!!" + tag.dropFirst("tag:yaml.org,2002:".count) : tag))
            }
        }
        visit(node)
        return found
    }

    /// Walks the composed document (aliases included) within a node and depth budget.
    static func withinBudget(_ node: YAMLNode, depth: Int, budget: inout Int) -> Bool {
        budget -= 1
        guard budget >= 0, depth <= maximumDepth else { return false }
        switch node {
        case .mapping(let map):
            for (key, value) in map {
                guard withinBudget(key, depth: depth + 1, budget: &budget), withinBudget(value, depth: depth + 1, budget: &budget) else { return false }
            }
        case .sequence(let sequence):
            for item in sequence where !withinBudget(item, depth: depth + 1, budget: &budget) { return false }
        default:
            break
        }
        return true
    }

    // MARK: - Documents

    private mutating func policy(from node: YAMLNode) -> IntegrationPolicy? {
        if case .null? = ScalarType(node) { return nil }
        guard let root = mapping(node, "a policy document") else { return nil }
        let fields = fieldMap(root, allowed: ["apiVersion", "kind", "metadata", "spec"], context: "a policy document")
        let start = location(node)
        var valid = true

        if let version = fields["apiVersion"] {
            if let text = string(version.value, "apiVersion"), text != Self.apiVersion {
                add(version.value, "apiVersion '\(TerminalText.excerpt(text))' is not supported: expected '\(Self.apiVersion)'")
                valid = false
            }
        } else {
            add(start, "missing 'apiVersion': expected 'apiVersion: \(Self.apiVersion)'")
            valid = false
        }
        if let kind = fields["kind"] {
            if let text = string(kind.value, "kind"), text != Self.kind {
                add(kind.value, "kind '\(TerminalText.excerpt(text))' is not supported: expected '\(Self.kind)'")
                valid = false
            }
        } else {
            add(start, "missing 'kind': expected 'kind: \(Self.kind)'")
            valid = false
        }

        var name: String?
        if let metadata = fields["metadata"], let map = mapping(metadata.value, "metadata") {
            let metadataFields = fieldMap(map, allowed: ["name", "labels", "annotations"], context: "metadata")
            if let nameNode = metadataFields["name"] {
                if let text = string(nameNode.value, "metadata.name") {
                    if Self.isValidName(text) {
                        name = text
                    } else {
                        add(nameNode.value, "metadata.name '\(text)' is not a valid name: use lower-case letters, digits, '-' and '.' (at most 253)")
                    }
                }
            } else {
                add(metadata.key, "missing 'metadata.name'")
            }
            for key in ["labels", "annotations"] {
                if let labels = metadataFields[key] { _ = stringMap(labels.value, "metadata.\(key)") }
            }
        } else if fields["metadata"] == nil {
            add(start, "missing 'metadata' with a 'name'")
        }

        var priority = 0
        var matchLabels: [String: String] = [:]
        var values: [DesiredKey: Sourced<DesiredValue>] = [:]
        var modes: [DesiredKey: Sourced<FieldMode>] = [:]
        var exceptions: [PolicyException] = []
        var policyMode = FieldMode.enforce
        var allowRollback = false
        if let spec = fields["spec"], let map = mapping(spec.value, "spec") {
            let allowed = ["priority", "mode", "allowRollback", "selector", "behaviorDetection", "proxy", "observe", "ignore", "exceptions"]
                + Integration.allCases.map(\.rawValue)
            let specFields = fieldMap(map, allowed: allowed, context: "spec")
            if let priorityNode = specFields["priority"], let number = integer(priorityNode.value, "spec.priority") {
                priority = number
            }
            if let modeNode = specFields["mode"], let text = string(modeNode.value, "spec.mode") {
                if let parsed = FieldMode(rawValue: text), parsed != .ignore {
                    policyMode = parsed
                } else {
                    add(modeNode.value, "spec.mode: '\(text)' is not a mode: expected enforce (correct drift) or observe (report only)")
                }
            }
            if let rollbackNode = specFields["allowRollback"], let flag = boolean(rollbackNode.value, "spec.allowRollback") {
                allowRollback = flag
            }
            if let selector = specFields["selector"], let selectorMap = mapping(selector.value, "spec.selector") {
                let selectorFields = fieldMap(selectorMap, allowed: ["matchLabels"], context: "spec.selector")
                if let labels = selectorFields["matchLabels"] {
                    matchLabels = stringMap(labels.value, "spec.selector.matchLabels") ?? [:]
                }
            }
            if let node = specFields["behaviorDetection"] {
                setting(SettingPath.behaviorDetection, node.value, into: &values)
            }
            if let proxy = specFields["proxy"], let proxyMap = mapping(proxy.value, "spec.proxy") {
                let proxyFields = fieldMap(proxyMap, allowed: ["address", "user", "passwordFile"], context: "spec.proxy")
                for (key, pair) in proxyFields {
                    if let path = SettingCatalog.path(.app, "proxy.\(key)") { setting(path, pair.value, into: &values) }
                }
            }
            for integration in Integration.allCases {
                if let section = specFields[integration.rawValue] {
                    self.integration(integration, section.value, into: &values)
                }
            }
            for mode in [FieldMode.observe, .ignore] {
                guard let list = specFields[mode.rawValue] else { continue }
                for (key, node) in keyList(list.value, "spec.\(mode.rawValue)") {
                    if let earlier = modes[key] {
                        add(node, "spec.\(mode.rawValue): '\(key)' is already marked '\(earlier.value.rawValue)' at line \(earlier.source.line)")
                    } else {
                        modes[key] = Sourced(mode, at: location(node))
                    }
                }
            }
            if let list = specFields["exceptions"] {
                exceptions = self.exceptions(list.value, policy: name ?? "")
            }
        } else if fields["spec"] == nil {
            add(start, "missing 'spec'")
        }

        guard valid, let name else { return nil }
        return IntegrationPolicy(name: name, priority: priority, matchLabels: matchLabels, location: start, values: values,
                                 modes: modes, exceptions: exceptions.map { $0.withPolicy(name) }, mode: policyMode, allowRollback: allowRollback)
    }

    private mutating func integration(_ integration: Integration, _ node: YAMLNode, into values: inout [DesiredKey: Sourced<DesiredValue>]) {
        let context = "spec.\(integration.rawValue)"
        guard let map = mapping(node, context) else { return }
        let (groups, allowed) = Self.layouts[integration]!
        let present = fieldMap(map, allowed: allowed, context: context, vendorScope: .integration(integration))
        for (key, pair) in present {
            if let members = groups[key] {
                guard let groupMap = mapping(pair.value, "\(context).\(key)") else { continue }
                for (member, memberPair) in fieldMap(groupMap, allowed: members, context: "\(context).\(key)") {
                    if let path = SettingCatalog.path(.integration(integration), "\(key).\(member)") { setting(path, memberPair.value, into: &values) }
                }
                continue
            }
            switch key {
            case "serverCertificate":
                if let path = string(pair.value, "\(context).serverCertificate") {
                    if path.isEmpty || path.hasPrefix("/") || path.split(separator: "/").contains("..") {
                        add(pair.value, "\(context).serverCertificate must be a relative path inside the repository, found '\(path)'")
                    } else {
                        values[.serverCertificate(integration)] = Sourced(.serverCertificate(path: path), at: location(pair.value))
                    }
                }
            case "clientCertificate":
                guard let clientMap = mapping(pair.value, "\(context).clientCertificate") else { continue }
                let clientFields = fieldMap(clientMap, allowed: ["file", "passwordFile"], context: "\(context).clientCertificate")
                guard let fileNode = clientFields["file"] else {
                    add(pair.key, "\(context).clientCertificate needs 'file': the PKCS#12 container's path on the device")
                    continue
                }
                guard let file = string(fileNode.value, "\(context).clientCertificate.file") else { continue }
                var passwordFile: String?
                if let passwordNode = clientFields["passwordFile"] {
                    guard let text = string(passwordNode.value, "\(context).clientCertificate.passwordFile") else { continue }
                    passwordFile = text
                }
                values[.clientCertificate(integration)] = Sourced(
                    .clientCertificate(ClientCertificateReference(file: file, passwordFile: passwordFile)), at: location(pair.key))
            default:
                if let path = SettingCatalog.path(.integration(integration), key) { setting(path, pair.value, into: &values) }
            }
        }
    }

    /// Per integration, the fields a policy writes under it: dotted fields (`fileMonitoring.paths`)
    /// written as groups (`fileMonitoring: {paths: …}`), and the names allowed at its top.
    private static let layouts: [Integration: (groups: [String: [String]], allowed: [String])] = {
        var layouts: [Integration: (groups: [String: [String]], allowed: [String])] = [:]
        for integration in Integration.allCases {
            let fields = SettingCatalog.fields(.integration(integration))
            var groups: [String: [String]] = [:]
            for field in fields {
                guard let dot = field.name.firstIndex(of: ".") else { continue }
                groups[String(field.name[..<dot]), default: []].append(String(field.name[field.name.index(after: dot)...]))
            }
            let allowed = fields.map(\.name).filter { !$0.contains(".") } + groups.keys.sorted() + ["serverCertificate", "clientCertificate"]
            layouts[integration] = (groups, allowed)
        }
        return layouts
    }()

    private mutating func setting(_ path: SettingPath, _ node: YAMLNode, into values: inout [DesiredKey: Sourced<DesiredValue>]) {
        guard let field = SettingCatalog.field(path), let value = settingValue(field, node, path: path.description) else { return }
        if let problem = field.problem(with: value) {
            add(node, "\(path): \(problem)")
            return
        }
        values[.setting(path)] = Sourced(.setting(value), at: location(node))
    }

    private mutating func settingValue(_ field: SettingField, _ node: YAMLNode, path: String) -> SettingValue? {
        switch field.kind {
        case .bool:
            return boolean(node, path).map(SettingValue.bool)
        case .integer:
            return integer(node, path).map(SettingValue.int)
        case .choice, .host, .text:
            return string(node, path).map(SettingValue.string)
        case .paths:
            guard case .sequence(let sequence) = node else {
                add(node, "\(path): expected \(field.kind.expectation), found \(describe(node))")
                return nil
            }
            var list: [String] = []
            var valid = true
            for (index, item) in sequence.enumerated() {
                let itemPath = "\(path)[\(index)]"
                guard let folder = string(item, itemPath) else { valid = false; continue }
                if let problem = FolderList.problem(folder: folder) {
                    add(item, "\(itemPath): \(problem)")
                    valid = false
                }
                list.append(folder)
            }
            return valid ? .paths(list) : nil
        case .endpoints:
            guard case .sequence(let sequence) = node else {
                add(node, "\(path): expected a list of {address, port}, found \(describe(node))")
                return nil
            }
            var list: [Endpoint] = []
            for (index, item) in sequence.enumerated() {
                let itemPath = "\(path)[\(index)]"
                guard let map = mapping(item, itemPath) else { return nil }
                let fields = fieldMap(map, allowed: ["address", "port"], context: itemPath)
                guard let addressNode = fields["address"], let portNode = fields["port"] else {
                    add(item, "\(itemPath): needs both 'address' and 'port'")
                    return nil
                }
                guard let address = string(addressNode.value, "\(itemPath).address"),
                      let port = integer(portNode.value, "\(itemPath).port") else { return nil }
                if !HostName.isValid(address) {
                    add(addressNode.value, "\(itemPath).address: \"\(address)\" is not \(SettingKind.host.expectation)")
                    return nil
                }
                if !(1...65535).contains(port) {
                    add(portNode.value, "\(itemPath).port: \(port) is out of range: expected an integer from 1 to 65535")
                    return nil
                }
                list.append(Endpoint(address: address, port: port))
            }
            return .endpoints(list)
        }
    }

    /// A list of key paths (`[edr.port, ndr.pingPeriod]`), each checked against the catalog.
    private mutating func keyList(_ node: YAMLNode, _ path: String) -> [(DesiredKey, YAMLNode)] {
        guard case .sequence(let sequence) = node else {
            add(node, "\(path): expected a list of setting paths such as [edr.port], found \(describe(node))")
            return []
        }
        var keys: [(DesiredKey, YAMLNode)] = []
        for item in sequence {
            guard let text = string(item, path) else { continue }
            guard let key = DesiredKey(path: text) else {
                add(item, "\(path): unknown setting path '\(TerminalText.excerpt(text))'\(Suggestion.hint(for: text, among: DesiredKey.all.map(\.description)))")
                continue
            }
            keys.append((key, item))
        }
        return keys
    }

    private mutating func exceptions(_ node: YAMLNode, policy: String) -> [PolicyException] {
        guard case .sequence(let sequence) = node else {
            add(node, "spec.exceptions: expected a list of {path, reason, expires}, found \(describe(node))")
            return []
        }
        var result: [PolicyException] = []
        for (index, item) in sequence.enumerated() {
            let context = "spec.exceptions[\(index)]"
            guard let map = mapping(item, context) else { continue }
            let fields = fieldMap(map, allowed: ["path", "reason", "expires"], context: context)
            guard let pathNode = fields["path"], let reasonNode = fields["reason"], let expiresNode = fields["expires"] else {
                add(item, "\(context): an exception needs 'path', 'reason' and 'expires' (a date such as 2026-12-31)")
                continue
            }
            guard let pathText = string(pathNode.value, "\(context).path"),
                  let reason = string(reasonNode.value, "\(context).reason"),
                  let expiresText = string(expiresNode.value, "\(context).expires") else { continue }
            guard let key = DesiredKey(path: pathText) else {
                add(pathNode.value, "\(context).path: unknown setting path '\(TerminalText.excerpt(pathText))'\(Suggestion.hint(for: pathText, among: DesiredKey.all.map(\.description)))")
                continue
            }
            if reason.trimmingSpaces().isEmpty {
                add(reasonNode.value, "\(context).reason: say why the difference is accepted")
                continue
            }
            guard let expires = PolicyDecoder.expiry(expiresText) else {
                add(expiresNode.value, "\(context).expires: '\(expiresText)' is not a date: write YYYY-MM-DD (the exception ends when that day ends, UTC) or an ISO 8601 time")
                continue
            }
            result.append(PolicyException(key: key, reason: reason, expires: expires, expiresText: expiresText,
                                          source: location(item), policy: policy))
        }
        return result
    }

    /// `2026-12-31` (the end of that day, UTC) or an ISO 8601 time.
    static func expiry(_ text: String) -> Date? {
        if text.utf8.count == 10, let day = try? Date.ISO8601FormatStyle(timeZone: .gmt).year().month().day().parse(text) {
            return day.addingTimeInterval(86_400)
        }
        return try? Date.ISO8601FormatStyle().parse(text)
    }

    // MARK: - Typed reads that report what they found instead

    private mutating func mapping(_ node: YAMLNode, _ path: String) -> YAMLMapping? {
        if case .mapping(let map) = node { return map }
        add(node, "\(path): expected a mapping of fields, found \(describe(node))")
        return nil
    }

    /// The fields of a mapping by name; unknown and repeated fields are reported.
    private mutating func fieldMap(_ map: YAMLMapping, allowed: [String], context: String,
                                   vendorScope: SettingScope? = nil) -> Fields {
        var result = Fields()
        for (key, value) in map {
            guard let name = key.scalar?.string else {
                add(key, "\(context): field names must be plain words")
                continue
            }
            guard allowed.contains(name) else {
                var hint = Suggestion.hint(for: name, among: allowed)
                if let vendorScope, let field = SettingCatalog.field(vendorKey: name, in: vendorScope), field.vendorKey?.lowercased() == name.lowercased() {
                    hint = "; '\(name)' is the vendor's key name: policies use '\(field.name)'"
                }
                add(key, "\(context): unknown field '\(TerminalText.excerpt(name))'\(hint)")
                continue
            }
            if result[name] != nil {
                add(key, "\(context): field '\(name)' appears twice")
                continue
            }
            result.fields.append((name, (key, value)))
        }
        return result
    }

    /// A mapping's fields by name, in the order written. Only allowed names, each once, get
    /// in, so a lookup reads at most as many entries as a mapping may have fields (a dozen or
    /// so): cheaper than a dictionary's hashing and allocation, once per mapping of every file.
    private struct Fields: Sequence {
        var fields: [(name: String, pair: (key: YAMLNode, value: YAMLNode))] = []

        subscript(_ name: String) -> (key: YAMLNode, value: YAMLNode)? {
            fields.first { $0.name == name }?.pair
        }

        func makeIterator() -> IndexingIterator<[(name: String, pair: (key: YAMLNode, value: YAMLNode))]> {
            fields.makeIterator()
        }
    }

    private mutating func string(_ node: YAMLNode, _ path: String) -> String? {
        if refusesAmbiguousString(node, path) { return nil }
        if case .string(let text)? = ScalarType(node) { return text }
        add(node, "\(path): expected a string, found \(describe(node))")
        return nil
    }

    /// Refuses a plain scalar that YAML 1.1 and YAML 1.2 read differently, naming both readings
    /// and the spelling to write (a reviewer must not have to know which one a tool uses).
    private mutating func refusesAmbiguous(_ node: YAMLNode, _ path: String) -> Bool {
        guard let difference = ScalarType.yaml11Difference(node), case .scalar(let scalar) = node else { return false }
        add(node, "\(path): \(scalar.string) is \(difference.yaml12) in YAML 1.2 but \(difference.yaml11) in YAML 1.1 (older tools): write \(difference.write), or quote it for a string")
        return true
    }

    /// For text fields: a plain `no`, `on`, `1_000` is text in YAML 1.2 but a boolean or a
    /// number in YAML 1.1 (the "Norway problem"); it must be quoted.
    private mutating func refusesAmbiguousString(_ node: YAMLNode, _ path: String) -> Bool {
        guard let difference = ScalarType.yaml11Difference(node), difference.yaml12.hasPrefix("the string"),
              case .scalar(let scalar) = node else { return false }
        add(node, "\(path): \(scalar.string) is \(difference.yaml12) in YAML 1.2 but \(difference.yaml11) in YAML 1.1 (older tools): quote it, \"\(scalar.string)\"")
        return true
    }

    private mutating func integer(_ node: YAMLNode, _ path: String) -> Int? {
        if refusesAmbiguous(node, path) { return nil }
        if case .integer(let number)? = ScalarType(node) { return number }
        add(node, "\(path): expected an integer, found \(describe(node))")
        return nil
    }

    private mutating func boolean(_ node: YAMLNode, _ path: String) -> Bool? {
        if refusesAmbiguous(node, path) { return nil }
        if case .boolean(let value)? = ScalarType(node) { return value }
        add(node, "\(path): expected true or false, found \(describe(node))")
        return nil
    }

    private mutating func stringMap(_ node: YAMLNode, _ path: String) -> [String: String]? {
        guard let map = mapping(node, path) else { return nil }
        var result: [String: String] = [:]
        for (key, value) in map {
            guard let name = key.scalar?.string else {
                add(key, "\(path): keys must be strings")
                continue
            }
            guard case .scalar(let scalar) = value, let type = ScalarType(value), type != .null else {
                add(value, "\(path).\(name): expected a string, found \(describe(value))")
                continue
            }
            if refusesAmbiguousString(value, "\(path).\(name)") { continue }
            result[name] = scalar.string
        }
        return result
    }

    private func describe(_ node: YAMLNode) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .scalar(let scalar):
            switch ScalarType(node) {
            case .null?: return "nothing (null)"
            case .boolean?: return "the boolean \(scalar.string)"
            case .integer?: return "the integer \(TerminalText.excerpt(scalar.string))"
            case .float?: return "the number \(TerminalText.excerpt(scalar.string))"
            default: return "the string \"\(TerminalText.excerpt(scalar.string))\""
            }
        }
    }

    // MARK: - Problems

    private func location(_ node: YAMLNode) -> SourceLocation {
        SourceLocation(file: file, line: node.mark.line, column: node.mark.column)
    }

    private mutating func add(_ node: YAMLNode, _ message: String) {
        add(location(node), message)
    }

    private mutating func add(_ location: SourceLocation, _ message: String) {
        problems.append(PolicyProblem(location, message))
    }

    private mutating func add(yamlError error: YAMLError) {
        problems.append(Self.problem(error, file: file))
    }

    /// A YAML reader's error as a policy problem (repeated keys named as fields).
    static func problem(_ error: YAMLError, file: String) -> PolicyProblem {
        let location = SourceLocation(file: file, line: error.mark.line, column: error.mark.column)
        if !error.repeatedKeys.isEmpty {
            return PolicyProblem(location, "field '\(error.repeatedKeys.map { TerminalText.excerpt($0) }.joined(separator: "', '"))' appears twice in one mapping")
        }
        let detail = error.context.map { " (\($0.text) at line \($0.mark.line), column \($0.mark.column))" } ?? ""
        return PolicyProblem(location, "malformed YAML: \(error.problem)\(detail)")
    }

    /// Which lines hold block scalars' text (the lines after `key: |` or `- >-` that are
    /// indented deeper, and blank lines among them), by line number (index 0 unused). Lines
    /// end with LF or CRLF; read by bytes (indentation, `#`, `|`, `>` and the chomping digits
    /// are ASCII).
    static func blockScalarLines(_ bytes: [UInt8]) -> [Bool] {
        let space = UInt8(ascii: " "), lineFeed: UInt8 = 0x0A
        var textLines = [false]
        var parent: Int?
        var start = 0
        while start <= bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != lineFeed { end += 1 }
            defer { start = end + 1 }
            let raw = bytes[start..<(end > start && bytes[end - 1] == 0x0D ? end - 1 : end)]
            let indent = raw.prefix { $0 == space }.count
            let content = raw.dropFirst(indent)
            if let block = parent {
                if content.allSatisfy({ $0 == space }) || indent > block {
                    textLines.append(true)
                    continue
                }
                parent = nil
            }
            textLines.append(false)
            var value = content
            if let hash = value.indices.first(where: { $0 != value.startIndex && value[$0] == UInt8(ascii: "#") && value[$0 - 1] == space }) {
                value = value[..<(hash - 1)]
            }
            while value.last == space { value = value.dropLast() }
            let last = value.reversed().prefix { $0 != space }
            guard let indicator = last.last, indicator == UInt8(ascii: "|") || indicator == UInt8(ascii: ">"),
                  last.dropLast().allSatisfy({ $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") || $0.isASCIIDigit }) else { continue }
            let before = value.dropLast(last.count)
            if before.isEmpty || before.suffix(2).elementsEqual([UInt8(ascii: ":"), space]) || before.suffix(2).elementsEqual([UInt8(ascii: "-"), space]) { parent = indent }
        }
        return textLines
    }

    /// Whether `name` may be a policy's metadata.name: lower-case letters, digits, `-` and `.`.
    package static func isValidName(_ name: String) -> Bool {
        // By bytes: every allowed character is one ASCII byte, and any other byte (a combining
        // mark's included) refuses the name, as comparing Characters would, without breaking
        // graphemes.
        let bytes = name.utf8
        guard let first = bytes.first, bytes.count <= 253, first.isASCIILowercase || first.isASCIIDigit else { return false }
        return bytes.allSatisfy { $0.isASCIILowercase || $0.isASCIIDigit || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }
    }
}

extension PolicyException {
    func withPolicy(_ name: String) -> PolicyException {
        PolicyException(key: key, reason: reason, expires: expires, expiresText: expiresText, source: source, policy: name)
    }
}
