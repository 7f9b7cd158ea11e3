import ArgumentParser
import PolicySource

/// `tether run`'s arguments read without swift-argument-parser's reflection.
///
/// The parser learns a command's options by reflecting on it (`Mirror`), and every option type
/// it meets costs the Swift runtime a scan of all the binary's protocol conformances: 21 of the
/// 51 million instructions of a `run --once` that changes nothing went there. `tether run`
/// starts on every endpoint, often (cron, `--once`), so the plain forms of its own options
/// (`--name value`, `--name=value`, `--flag`, each given once; `--label` repeats) are read here
/// and checked by the same `validate()` functions. Anything else (an unknown or repeated
/// option, a value that is empty or starts with `-`, `--help`, a failed check) returns nil,
/// and the parser reads the arguments as before, with its own messages.
/// RunArgumentsTests checks that both readings give the same command, default by default and
/// option by option. docs/architecture.md, "What an endpoint pays", has the figures.
extension RunCommand {
    /// How one long option sets its property: nil when the text is not a value of its type.
    private enum Setter: Sendable {
        case flag(@Sendable (inout RunCommand) -> Void)
        case value(@Sendable (inout RunCommand, String) -> Bool)
        case list(@Sendable (inout RunCommand, String) -> Void)
    }

    /// A setter that converts the text as swift-argument-parser would (`init(argument:)`).
    private static func value<Value: ExpressibleByArgument>(_ set: @escaping @Sendable (inout RunCommand, Value) -> Void) -> Setter {
        .value { command, text in
            guard let value = Value(argument: text) else { return false }
            set(&command, value)
            return true
        }
    }

    /// Every long option of `tether run`, by name.
    private static let setters: [String: Setter] = [
        "config": value { $0.config = $1 },
        "repo": value { $0.source.repo = $1 },
        "ref": value { $0.source.ref = $1 },
        "path": value { $0.source.path = $1 },
        "state-dir": value { $0.source.device.stateDir = $1 },
        "label": .list { $0.source.device.labels.append($1) },
        "git-user": value { $0.source.credentialOptions.gitUser = $1 },
        "git-password-file": value { $0.source.credentialOptions.gitPasswordFile = $1 },
        "ssh-key": value { $0.source.credentialOptions.sshKey = $1 },
        "ssh-passphrase-file": value { $0.source.credentialOptions.sshPassphraseFile = $1 },
        "known-hosts": value { $0.source.credentialOptions.knownHosts = $1 },
        "git-ca-file": value { $0.source.credentialOptions.gitCAFile = $1 },
        "agent": value { $0.backend.agent = $1 },
        "kesl-control": value { $0.backend.keslControl = $1 },
        "kesl-tasks": value { $0.backend.keslTasks = $1 },
        "interval": value { $0.interval = $1 },
        "jitter": value { $0.jitter = $1 },
        "max-backoff": value { $0.maxBackoff = $1 },
        "once": .flag { $0.once = true },
        "cycles": value { $0.cycles = $1 },
        "verify": value { $0.verify = $1 },
        "allowed-signers": value { $0.allowedSigners = $1 },
        "suspend": .flag { $0.suspend = true },
        "metrics-address": value { $0.metricsAddress = $1 },
        "textfile": value { $0.textfile = $1 },
        "report-dir": value { $0.reportDir = $1 },
        "report-keep": value { $0.reportKeep = $1 },
        "log-format": value { $0.logFormat = $1 },
        "health-window": value { $0.healthWindow = $1 },
        "no-connectors": .flag { $0.noConnectors = true },
        "no-sensors": .flag { $0.noSensors = true },
        "fetch-timeout": value { $0.fetchTimeout = $1 },
        "probe-url": value { $0.probeURL = $1 },
        "notify": value { $0.notify.url = $1 },
        "notify-ca": value { $0.notify.caFile = $1 },
        "notify-cert": value { $0.notify.certificateFile = $1 },
        "notify-key": value { $0.notify.keyFile = $1 },
        "notify-spread": value { $0.notifySpread = $1 },
        "notify-keepalive": value { $0.notifyKeepalive = $1 },
        "bundle-url": value { $0.bundleURL = $1 },
        "prune": .flag { $0.prune = true },
    ]

    /// The long options read here, for the tests.
    static var directlyReadOptions: Set<String> { Set(setters.keys) }

    /// The command with every option at the default its declaration gives.
    private static func defaults() -> RunCommand {
        var device = DeviceOptions()
        device.stateDir = nil
        device.labels = []
        var credentials = CredentialOptions()
        credentials.gitUser = nil
        credentials.gitPasswordFile = nil
        credentials.sshKey = nil
        credentials.sshPassphraseFile = nil
        credentials.knownHosts = nil
        credentials.gitCAFile = nil
        var source = SourceOptions()
        source.repo = "."
        source.ref = nil
        source.path = "policies"
        source.device = device
        source.credentialOptions = credentials
        var backend = BackendOptions()
        backend.agent = nil
        backend.keslControl = nil
        backend.keslTasks = nil
        var notify = NotifyOptions()
        notify.url = nil
        notify.caFile = nil
        notify.certificateFile = nil
        notify.keyFile = nil

        var command = RunCommand()
        command.config = nil
        command.source = source
        command.backend = backend
        command.interval = 300
        command.jitter = 0.1
        command.maxBackoff = 3600
        command.once = false
        command.cycles = nil
        command.verify = .off
        command.allowedSigners = nil
        command.suspend = false
        command.metricsAddress = nil
        command.textfile = nil
        command.reportDir = nil
        command.reportKeep = 20
        command.logFormat = .text
        command.healthWindow = 0
        command.noConnectors = false
        command.noSensors = false
        command.fetchTimeout = 60
        command.probeURL = nil
        command.notify = notify
        command.notifySpread = 10
        command.notifyKeepalive = 60
        command.bundleURL = nil
        command.prune = false
        return command
    }

    /// `arguments` (after `run`) as a validated command, or nil when swift-argument-parser
    /// must read them (see above).
    static func parseDirectly(_ arguments: [String]) -> RunCommand? {
        var command = defaults()
        var given: Set<String> = []
        var remaining = arguments[...]
        while let argument = remaining.popFirst() {
            guard argument.hasPrefix("--") else { return nil }
            var name = argument.dropFirst(2)
            var attached: String?
            if let equals = name.firstIndex(of: "=") {
                attached = String(name[name.index(after: equals)...])
                name = name[..<equals]
            }
            let key = String(name)
            guard let setter = setters[key] else { return nil }
            // The option's value: attached, or the next argument; neither empty nor option-like.
            func value() -> String? {
                guard let text = attached ?? remaining.popFirst(), !text.isEmpty, !text.hasPrefix("-") else { return nil }
                return text
            }
            switch setter {
            case .flag(let set):
                guard attached == nil, given.insert(key).inserted else { return nil }
                set(&command)
            case .list(let append):
                guard let text = value() else { return nil }
                append(&command, text)
            case .value(let set):
                guard let text = value(), given.insert(key).inserted, set(&command, text) else { return nil }
            }
        }
        // The checks swift-argument-parser makes, in its order: each option group's, then the command's.
        do {
            try command.source.device.validate()
            try command.backend.validate()
            try command.notify.validate()
            try command.validate()
        } catch {
            return nil
        }
        return command
    }
}
