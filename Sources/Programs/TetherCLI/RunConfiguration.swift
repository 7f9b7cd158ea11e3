import ArgumentParser
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import IntegrationModel
import YAMLReader
import Primitives
import Reports

/// Where `tether run` takes its settings from (README, "Configuration"): the command line wins,
/// then `TETHER_*` environment variables, then the configuration file (`--config FILE`, else
/// `$TETHER_CONFIG`, else /etc/tether/tether.yaml when it exists), then the defaults. Every
/// option of `tether run` has a key, its long name: `interval: 60`, `state-dir: /var/lib/tether`,
/// `label: [env=prod]`, `suspend: true`; and a variable, `TETHER_` and the key in capitals with
/// `_` for `-`: `TETHER_INTERVAL=60`.
struct RunConfiguration {
    /// The file read when neither `--config` nor `$TETHER_CONFIG` names one.
    static let defaultFile = "/etc/tether/tether.yaml"

    /// One option of `tether run`.
    struct Key: Equatable {
        enum Kind: Equatable { case value, flag, list }
        let name: String
        let kind: Kind

        var flag: String { "--" + name }
        /// `TETHER_` and the name in capitals with `_` for `-` (names are ASCII).
        var variable: String { "TETHER_" + String(String.UnicodeScalarView(name.uppercased().unicodeScalars.map { $0 == "-" ? "_" : $0 })) }
    }

    /// Where an effective value came from.
    enum Source: Equatable, CustomStringConvertible {
        case commandLine
        case environment(String)
        case file(String, line: Int)
        case `default`

        var description: String {
            switch self {
            case .commandLine: return "command line"
            case .environment(let name): return "environment \(name)"
            case .file(let path, let line): return "\(path):\(line)"
            case .default: return "default"
            }
        }
    }

    /// A key's effective value: text for an option, `true`/`false` for a flag, items for a list.
    struct Entry {
        let key: Key
        let values: [String]
        let source: Source
    }

    /// Every option of `tether run`, in its help's order. Written out rather than read from the
    /// help at each start (that cost a millisecond and a half of every run); ConfigTests checks
    /// that `config show` lists exactly the long options `tether run --help` shows.
    static let keys: [Key] = {
        let values = ["repo", "ref", "path", "state-dir"]
        let lists = ["label"]
        let more = ["git-user", "git-password-file", "ssh-key", "ssh-passphrase-file", "known-hosts", "git-ca-file", "agent", "kesl-control",
                    "kesl-tasks", "interval", "jitter", "max-backoff"]
        let flags: Set = ["once", "suspend", "no-connectors", "no-sensors", "prune"]
        let rest = ["once", "cycles", "verify", "allowed-signers", "suspend", "metrics-address", "textfile", "report-dir", "report-keep",
                    "log-format", "health-window", "no-connectors", "no-sensors", "fetch-timeout", "probe-url", "notify", "notify-ca", "notify-cert",
                    "notify-key", "notify-spread", "notify-keepalive", "bundle-url", "prune"]
        return values.map { Key(name: $0, kind: .value) } + lists.map { Key(name: $0, kind: .list) } + more.map { Key(name: $0, kind: .value) }
            + rest.map { Key(name: $0, kind: flags.contains($0) ? .flag : .value) }
    }()

    /// Each option's default as `tether run --help` states it (`300.0`, `$TETHER_STATE_DIR, else
    /// /var/lib/tether`), for `config show`.
    static func defaultsFromHelp() -> [String: String] {
        var defaults: [String: String] = [:]
        var option: String?
        var text = ""
        func keep() {
            guard let option, let start = text.firstRange(ofText: "default: ") ?? text.firstRange(ofText: "Default: ") else { return }
            var value = text[start.upperBound...].prefix { $0 != ")" }.trimmingSpaces()
            while value.count > 1 && value.hasSuffix(".") { value.removeLast() }
            if !value.isEmpty { defaults[option] = value }
        }
        for line in RunCommand.helpMessage(columns: 1000).split(separator: "\n") {
            let trimmed = line.trimmingSpaces()
            if trimmed.hasPrefix("--") {
                keep()
                option = String(trimmed.dropFirst(2).prefix { $0 != " " && $0 != "," })
                text = trimmed
            } else if option != nil {
                text += " " + trimmed
            }
        }
        keep()
        return defaults
    }

    /// Seconds from the file or a variable are finite and in range, and refused with where they
    /// came from (`/etc/tether/tether.yaml:3`); an interval under 1 s needs a bounded run.
    private static func checkSeconds(_ entries: [Entry]) throws {
        let bounded = entries.contains { ($0.key.name == "once" && $0.values == ["true"]) || ($0.key.name == "cycles" && !$0.values.isEmpty) }
        for entry in entries {
            guard entry.source != .commandLine, entry.source != .default, let range = Seconds.options[entry.key.name]?.range, let text = entry.values.first else { continue }
            guard let value = Double(text), value.isFinite, range.contains(value) else {
                throw CommandError("\(entry.source): '\(entry.key.name)' takes seconds from \(range.lowerBound) to \(range.upperBound), not '\(TerminalText.excerpt(text))'")
            }
            if entry.key.name == "interval", value < Seconds.shortestUnboundedInterval, !bounded {
                throw CommandError("\(entry.source): 'interval: \(text)' would reconcile without a pause, for as long as it runs; give 1 or more seconds (for example 300)")
            }
        }
    }

    /// How the configuration file turned out when it was read.
    enum FileCheck {
        case cannotRead
        /// Someone else than root or this user could change what it holds (why).
        case changeableByOthers(String)
        case read(Data)
    }

    /// Reads the configuration file at `path` if no one but root or this user can change what it
    /// holds, as sshd checks its files (StrictModes): each symbolic link on the way, one at a
    /// time, and the file itself, owned by root or this user; every folder above each of them
    /// the same and not writable by others — unless sticky (as /tmp) and the entry in it is
    /// root's or this user's. The file is then opened without following links and read only
    /// when it is still the file checked (device and inode), so it cannot be swapped between
    /// the check and the read. At most 1 MiB.
    static func readChecked(_ path: String) -> FileCheck {
        func trusted(_ owner: uid_t) -> Bool { owner == 0 || owner == geteuid() }
        /// The folders from / down to `folder` (a real path: no link, no `..`), checked in turn.
        func checkFolders(_ folder: String, entryOwner: uid_t) -> String? {
            var prefix = ""
            var owners: [(path: String, info: stat)] = []
            for part in ["/"] + folder.split(separator: "/").map(String.init) {
                prefix = part == "/" ? "/" : (prefix == "/" ? "/" : prefix + "/") + part
                var info = stat()
                guard lstat(prefix, &info) == 0 else { return "the folder \(prefix) cannot be examined" }
                owners.append((prefix, info))
            }
            for (index, folder) in owners.enumerated() {
                let info = folder.info
                if !trusted(info.st_uid) { return "the folder \(folder.path) belongs to user \(info.st_uid)" }
                let childOwner = index + 1 < owners.count ? owners[index + 1].info.st_uid : entryOwner
                if info.st_mode & 0o022 != 0, info.st_mode & S_ISVTX == 0 || !trusted(childOwner) {
                    return "the folder \(folder.path) is writable by other users, who could put another file in its place"
                }
            }
            return nil
        }
        var current = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        for _ in 0..<32 {
            var info = stat()
            guard lstat(current, &info) == 0 else { return .cannotRead }
            let name = URL(fileURLWithPath: current).lastPathComponent
            guard let folder = realpath(URL(fileURLWithPath: current).deletingLastPathComponent().path, nil) else { return .cannotRead }
            let realFolder = String(cString: folder)
            free(folder)
            if let problem = checkFolders(realFolder, entryOwner: info.st_uid) { return .changeableByOthers(problem) }
            let entry = (realFolder == "/" ? "" : realFolder) + "/" + name
            if !trusted(info.st_uid) { return .changeableByOthers("\(entry) belongs to user \(info.st_uid)") }
            if info.st_mode & S_IFMT == S_IFLNK {
                var target = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let length = readlink(entry, &target, target.count - 1)
                guard length > 0 else { return .cannotRead }
                let destination = String(decoding: target.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                current = destination.hasPrefix("/") ? destination : realFolder + "/" + destination
                continue
            }
            guard info.st_mode & S_IFMT == S_IFREG else { return .cannotRead }
            if info.st_mode & 0o022 != 0 { return .changeableByOthers("\(entry) is writable by other users") }
            let fd = open(entry, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { return .cannotRead }
            defer { close(fd) }
            var opened = stat()
            guard fstat(fd, &opened) == 0, opened.st_dev == info.st_dev, opened.st_ino == info.st_ino else {
                return .changeableByOthers("\(entry) was replaced while it was checked")
            }
            var data = Data()
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = read(fd, &buffer, buffer.count)
                if count < 0 { return .cannotRead }
                if count == 0 { return .read(data) }
                data.append(contentsOf: buffer.prefix(count))
                if data.count > 1 << 20 { return .cannotRead }
            }
        }
        return .cannotRead
    }

    let file: String?
    let entries: [Entry]
    /// `TETHER_*` variables that name no key (a typo is otherwise silently ignored), with the closest.
    let warnings: [String]

    /// Variables Tether reads that are not keys of `tether run`.
    private static let otherVariables: Set<String> = ["TETHER_CONFIG", "TETHER_GIT_PASSWORD", "TETHER_GIT_TOKEN", "TETHER_KESL_CONTROL",
                                                      "TETHER_DEVICE_FILES", "TETHER_STATE_DIR", "TETHER_BENCH_SENSOR_SECONDS"]

    /// Reads the file and the environment for the keys `commandLine` does not give.
    init(commandLine: [String], environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        let explicit = Self.configOption(in: commandLine)
        let named = explicit ?? environment["TETHER_CONFIG"].flatMap { $0.isEmpty ? nil : $0 }
        let path = named ?? (FileManager.default.fileExists(atPath: Self.defaultFile) ? Self.defaultFile : nil)
        file = path
        var fromFile: [String: (values: [String], line: Int)] = [:]
        if let path {
            // It says which repository governs this endpoint: only root, or whoever runs tether, may change it.
            let data: Data
            switch Self.readChecked(path) {
            case .read(let bytes):
                data = bytes
            case .cannotRead:
                throw CommandError("error: cannot read the configuration file \(path)\(named == nil ? "" : " (named by \(explicit != nil ? "--config" : "$TETHER_CONFIG"))") (a file of at most 1 MiB)")
            case .changeableByOthers(let problem):
                throw CommandError("error: the configuration file \(path) can be changed by others: \(problem); it says which repository governs this endpoint, so Tether does not read it. Make root (or the user running tether) the owner of each, and run `chmod go-w` on them")
            }
            fromFile = try Self.parse(String(decoding: data, as: UTF8.self), path: path)
        }
        let given = Set(commandLine.compactMap { argument -> String? in
            guard argument.hasPrefix("--") else { return nil }
            return String(argument.dropFirst(2).prefix { $0 != "=" })
        })
        var entries: [Entry] = []
        for key in Self.keys {
            if given.contains(key.name) {
                entries.append(Entry(key: key, values: Self.values(of: key, in: commandLine), source: .commandLine))
            } else if let text = environment[key.variable], !text.isEmpty || key.kind == .flag,
                      // $TETHER_KESL_CONTROL stays the run-time fallback it always was (not kept in agent.conf).
                      key.name != "kesl-control" {
                entries.append(Entry(key: key, values: try Self.environmentValues(key, text), source: .environment(key.variable)))
            } else if let value = fromFile[key.name] {
                entries.append(Entry(key: key, values: value.values, source: .file(path!, line: value.line)))
            } else {
                entries.append(Entry(key: key, values: [], source: .default))
            }
        }
        self.entries = entries
        try Self.checkSeconds(entries)
        let known = Set(Self.keys.map(\.variable)).union(Self.otherVariables)
        warnings = environment.keys.filter { $0.hasPrefix("TETHER_") && !known.contains($0) }.sorted().map { name in
            "warning: the variable \(TerminalText.excerpt(name)) names no key of `tether run` and is ignored"
                + (Suggestion.closest(to: name, among: known.sorted()).map { "; did you mean \($0)?" } ?? "")
        }
    }

    /// The arguments the file and the environment add before the command line's own.
    var arguments: [String] {
        entries.flatMap { entry -> [String] in
            switch (entry.source, entry.key.kind) {
            case (.commandLine, _), (.default, _): return []
            case (_, .flag): return entry.values == ["true"] ? [entry.key.flag] : []
            // `--key=value`, so a value such as -5 or -- is never read as an option.
            case (_, .value), (_, .list): return entry.values.map { "\(entry.key.flag)=\($0)" }
            }
        }
    }

    /// `--config FILE` or `--config=FILE` on a command line.
    static func configOption(in arguments: [String]) -> String? {
        values(of: Key(name: "config", kind: .value), in: arguments).last
    }

    /// A key's values as the command line gives them (for `config show`).
    private static func values(of key: Key, in arguments: [String]) -> [String] {
        var values: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == key.flag {
                if key.kind == .flag { values = ["true"] } else if index + 1 < arguments.count {
                    values = key.kind == .list ? values + [arguments[index + 1]] : [arguments[index + 1]]
                    index += 1
                }
            } else if argument.hasPrefix(key.flag + "=") {
                let value = String(argument.dropFirst(key.flag.count + 1))
                values = key.kind == .list ? values + [value] : [value]
            }
            index += 1
        }
        return values
    }

    private static func environmentValues(_ key: Key, _ text: String) throws -> [String] {
        switch key.kind {
        case .flag:
            switch text.lowercased() {
            case "1", "true", "yes", "on": return ["true"]
            case "0", "false", "no", "off", "": return ["false"]
            default: throw CommandError("error: \(key.variable)=\(TerminalText.excerpt(text)) is not true or false")
            }
        case .list: return text.split(separator: ",").map { $0.trimmingSpaces() }.filter { !$0.isEmpty }
        case .value: return [text]
        }
    }

    /// The file's keys with their values and lines; every problem at once, each with its place.
    static func parse(_ text: String, path: String) throws -> [String: (values: [String], line: Int)] {
        let node: YAMLNode?
        do {
            node = try YAML.document(in: text)
        } catch let error {
            if let key = error.repeatedKeys.first {
                throw CommandError("\(path):\(error.mark.line): '\(TerminalText.excerpt(key))' appears twice")
            }
            throw CommandError("\(path):\(error.mark.line): not YAML: \(TerminalText.excerpt(error.description, limit: 300))")
        }
        guard let node else { return [:] }
        guard case .mapping(let mapping) = node else {
            throw CommandError("\(path):\(node.mark.line): expected keys and values such as `interval: 300`")
        }
        var result: [String: (values: [String], line: Int)] = [:]
        var problems: [String] = []
        let names = keys.map(\.name)
        for (keyNode, valueNode) in mapping {
            let line = keyNode.mark.line
            guard let name = keyNode.scalar?.string, let key = keys.first(where: { $0.name == name }) else {
                let name = keyNode.scalar?.string ?? "?"
                problems.append("\(path):\(line): unknown key '\(TerminalText.excerpt(name))' (the keys are the long options of `tether run`)\(Suggestion.hint(for: name, among: names))")
                continue
            }
            switch (key.kind, valueNode) {
            case (.flag, .scalar(let scalar)):
                switch scalar.string.lowercased() {
                // YAML 1.2's booleans only, as in policies: `yes` and `on` are words, not flags.
                case "true": result[name] = (["true"], line)
                case "false": result[name] = (["false"], line)
                default: problems.append("\(path):\(line): '\(name)' takes true or false, not '\(TerminalText.excerpt(scalar.string))'")
                }
            case (.value, .scalar(let scalar)):
                result[name] = ([scalar.string], line)
            case (.list, .sequence(let sequence)):
                var items: [String] = []
                for item in sequence {
                    if let text = item.scalar?.string { items.append(text) } else {
                        problems.append("\(path):\(item.mark.line): '\(name)' takes a list of plain values")
                    }
                }
                result[name] = (items, line)
            case (.list, .mapping(let pairs)) where name == "label":
                var labels: [String] = []
                for pair in pairs {
                    guard let label = pair.key.scalar?.string, let value = pair.value.scalar?.string else {
                        problems.append("\(path):\(pair.key.mark.line): 'label' takes plain keys and values, such as `label: {env: prod}`")
                        continue
                    }
                    labels.append("\(label)=\(value)")
                }
                result[name] = (labels, line)
            case (.list, .scalar(let scalar)):
                result[name] = ([scalar.string], line)
            default:
                problems.append("\(path):\(line): '\(name)' takes \(key.kind == .flag ? "true or false" : key.kind == .list ? "a list" : "one value")")
            }
        }
        if !problems.isEmpty { throw CommandError(problems.joined(separator: "\n")) }
        return result
    }

    /// A value as `config show` prints it: whatever precedes `@` in a URL's authority (a user and
    /// password, or a token alone) and its query masked.
    static func display(_ value: String) -> String {
        guard let scheme = value.firstRange(of: "://") else { return value }
        var shown = value
        if let query = shown.firstIndex(of: "?") { shown = String(shown[..<query]) + "?***" }
        let rest = shown[scheme.upperBound...]
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        if let at = rest[..<authorityEnd].lastIndex(of: "@") { shown.replaceSubrange(scheme.upperBound..<at, with: "***") }
        return shown
    }
}

/// `tether config`
struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Show how `tether run` is configured: each option's value and where it came from.",
        subcommands: [ConfigShow.self])
}

/// `tether config show`
struct ConfigShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print the effective configuration of `tether run`: every option, its value, and whether it came from the command line, TETHER_* variables, the configuration file (with its line) or the default.",
        discussion: """
            The command line wins, then TETHER_* environment variables, then the configuration file (--config FILE, else $TETHER_CONFIG, else /etc/tether/tether.yaml when it exists), then the defaults. Give the options `tether run` would get after --, e.g. `tether config show -- --interval 60`. Secrets are never shown: credentials in a URL are masked, and a token in $TETHER_GIT_TOKEN or $TETHER_GIT_PASSWORD shows as set.
            """)

    @Option(help: ArgumentHelp("The configuration file (default: $TETHER_CONFIG, else /etc/tether/tether.yaml when it exists).", valueName: "file"))
    var config: String?

    @OptionGroup var output: OutputOptions

    @Argument(parsing: .captureForPassthrough, help: "The options `tether run` would get, after --.")
    var runArguments: [String] = []

    func run() throws {
        // Before `--`, --help asks for this command's help (the passthrough would take it).
        if runArguments.first != "--", runArguments.contains(where: { $0 == "--help" || $0 == "-h" }) { throw CleanExit.helpRequest(self) }
        var commandLine = runArguments.first == "--" ? Array(runArguments.dropFirst()) : runArguments
        // What `tether run` refuses, this refuses too, in its words.
        do {
            _ = try RunCommand.parse(commandLine)
        } catch {
            throw CommandError("error: tether run would refuse these options: \(RunCommand.message(for: error))")
        }
        if let config { commandLine = ["--config", config] + commandLine }
        let configuration = try RunConfiguration(commandLine: commandLine)
        let defaults = RunConfiguration.defaultsFromHelp()
        let environment = ProcessInfo.processInfo.environment
        let secrets = ["TETHER_GIT_TOKEN", "TETHER_GIT_PASSWORD"].filter { environment[$0] != nil }
        if output.isJSON {
            // Each key's effective value (masked as in the text), its kind and its source.
            var keys: [String: JSONValue] = [:]
            for entry in configuration.entries {
                let value: JSONValue
                switch (entry.source, entry.key.kind) {
                case (.default, .flag): value = .bool(false)
                case (.default, _): value = defaults[entry.key.name].map(JSONValue.string) ?? .null
                case (_, .flag): value = .bool(entry.values == ["true"])
                case (_, .list): value = .array(entry.values.map { .string(RunConfiguration.display($0)) })
                case (_, .value): value = .string(entry.values.map(RunConfiguration.display).joined())
                }
                keys[entry.key.name] = .object(["value": value, "source": .string("\(entry.source)")])
            }
            Console.out(rendered: JSONReport.serialize(JSONValue.object([
                "file": configuration.file.map(JSONValue.string) ?? .null, "keys": .object(keys), "secretsSet": .array(secrets.map(JSONValue.string)),
            ])))
            return
        }
        for warning in configuration.warnings { Console.error(warning) }
        Console.out("configuration file: \(configuration.file ?? "none (\(RunConfiguration.defaultFile) does not exist)")")
        let width = (RunConfiguration.keys.map(\.name.count).max() ?? 10) + 2
        for entry in configuration.entries {
            let value: String
            switch (entry.source, entry.key.kind) {
            case (.default, .flag): value = "off (default)"
            case (.default, _): value = defaults[entry.key.name].map { "\($0) (default)" } ?? "(default)"
            case (_, .flag): value = entry.values == ["true"] ? "on" : "off"
            case (_, .list): value = entry.values.map(RunConfiguration.display).joined(separator: ", ")
            case (_, .value): value = entry.values.map(RunConfiguration.display).joined()
            }
            let line = entry.key.name.padded(to: width) + value
            Console.out(entry.source == .default ? line : line.padded(to: max(line.count, width + 36)) + "  # \(entry.source)")
        }
        for secret in secrets {
            Console.out("\(secret) is set (never shown)")
        }
    }
}
