import AgentInterface
import ArgumentParser
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import KESLAgent
import IntegrationModel
import Primitives
import Planner
import Reconciler
import Reports
import X509

/// `tether agent …`: the local administrator's imperative commands, named after `kesl-control`.
/// A change made here is what `tether drift` then reports.
struct AgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Inspect and change the embedded agent directly, as a local administrator would.",
        discussion: "Changes made here are recorded with their time and command, and `tether drift` reports them against git.",
        subcommands: [
            GetSettings.self, SetSettings.self, Start.self, Stop.self,
            AddServerCertificate.self, RemoveServerCertificate.self, QueryServerCertificate.self,
            AddClientCertificate.self, RemoveClientCertificate.self, QueryClientCertificate.self, Snapshot.self, Export.self,
            Sync.self, Status.self, IsolationStatusCommand.self, IsolationOff.self, QuarantineCommand.self, SandboxCommand.self, EmitEvents.self, RunConnectors.self, Watch.self,
            LabelsCommand.self,
        ])
}

extension Integration: ExpressibleByArgument {}

/// `edr`, `ndr`, `sandbox` or `app` (the app-wide settings).
enum SettingsTarget: ExpressibleByArgument {
    case scope(SettingScope)

    init?(argument: String) {
        if argument.lowercased() == "app" {
            self = .scope(.app)
        } else if let integration = Integration(argument: argument) {
            self = .scope(.integration(integration))
        } else {
            return nil
        }
    }

    static var allValueStrings: [String] { Integration.allCases.map(\.rawValue) + ["app"] }

    /// Shells complete the targets (`tether agent get-settings <TAB>`).
    static var defaultCompletionKind: CompletionKind { .list(allValueStrings) }

    var scope: SettingScope { if case .scope(let scope) = self { return scope }; return .app }
}

struct GetSettings: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get-settings",
        abstract: "Print an integration's settings by their vendor key names (or `app` for app-wide settings).")

    @Argument(help: "edr, ndr, sandbox or app.") var target: SettingsTarget
    @OptionGroup var output: OutputOptions
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let state = try agentCall { try device.agent().state() }
        let scope = target.scope
        let paths = SettingCatalog.paths(scope).filter { !$0.field.isTaskState }
        if output.isJSON {
            var settings: [String: SettingValue] = [:]
            for (path, field) in paths { settings[field.name] = state.value(path) }
            var document = SettingsDocument(settings: settings)
            if case .integration(let integration) = scope {
                document.integration = integration.rawValue
                document.task = integration.taskName
                document.running = state.running.contains(integration)
            }
            Console.out(JSONReport.serialize(document))
            return
        }
        if case .integration(let integration) = scope {
            Console.out("[\(integration.taskName)] \(state.running.contains(integration) ? "running" : "stopped")")
        }
        for (path, field) in paths {
            let value = state.value(path)
            Console.out("\(field.vendorKey ?? field.name)=\(Self.vendorText(value))")
        }
    }

    static func vendorText(_ value: SettingValue) -> String {
        switch value {
        case .string(let text): return text
        case .endpoints(let list): return list.map(\.description).joined(separator: ",")
        case .paths(let list): return list.joined(separator: ",")
        default: return value.description
        }
    }
}

struct SetSettings: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-settings",
        abstract: "Change settings by vendor key: `tether agent set-settings edr Port=8443 ConnectionTimeout=20`.",
        discussion: """
            Keys are the vendor's (Port, UseClientPinnedCertificate, EventTransferSettings.PingPeriod or just PingPeriod); policy field names (port) work too. Lists are written Endpoints=10.0.0.1:8081,[::1]:8081. All changes apply together or not at all, and a running task must still meet its preconditions afterwards.
            """)

    @Argument(help: "edr, ndr, sandbox or app.") var target: SettingsTarget
    @Argument(help: "Key=Value pairs.") var assignments: [String] = []
    @OptionGroup var device: DeviceOptions

    func validate() throws {
        if assignments.isEmpty { throw ValidationError("give at least one Key=Value, e.g. `tether agent set-settings edr Port=8443`") }
    }

    func run() throws {
        let scope = target.scope
        var changes: [(SettingPath, SettingValue)] = []
        for assignment in assignments {
            guard let equals = assignment.firstIndex(of: "=") else {
                throw CommandError("error: '\(assignment)' is not Key=Value; write for example Port=8443")
            }
            let key = String(assignment[..<equals])
            let text = String(assignment[assignment.index(after: equals)...])
            let fields = SettingCatalog.fields(scope)
            guard let field = SettingCatalog.field(vendorKey: key, in: scope) ?? fields.first(where: { $0.name.lowercased() == key.lowercased() }) else {
                let known = fields.compactMap(\.vendorKey)
                throw CommandError("error: unknown key '\(key)' for \(scope.prefix.isEmpty ? "app" : scope.prefix)\(Suggestion.hint(for: key, among: known)); known keys: \(known.joined(separator: ", "))")
            }
            if field.isTaskState {
                throw CommandError("error: the task's running state is not a setting; use `tether agent start` or `tether agent stop`")
            }
            switch field.parse(text: text) {
            case .success(let value):
                guard let path = SettingCatalog.path(scope, field.name) else { continue }
                changes.append((path, value))
            case .failure(let error): throw CommandError("error: \(field.vendorKey ?? field.name): \(error)")
            }
        }
        let agent = try device.agent()
        try agentCall {
            try agent.transaction(actor: "tether agent set-settings") {
                for (path, value) in changes { try agent.set(path, to: value) }
            }
        }
        Console.out("Set " + changes.map { "\($0.0)=\($0.1)" }.joined(separator: ", ") + ".")
    }
}

struct Start: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "start", abstract: "Start an integration's task (refused, with the reason, when a precondition is unmet).")
    @Argument(help: "edr, ndr or sandbox.") var integration: Integration
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let agent = try device.agent()
        try agentCall { try agent.transaction(actor: "tether agent start") { try agent.start(integration) } }
        Console.out("\(integration.displayName) (\(integration.taskName)) is running.")
    }
}

struct Stop: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stop", abstract: "Stop an integration's task.")
    @Argument(help: "edr, ndr or sandbox.") var integration: Integration
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let agent = try device.agent()
        try agentCall { try agent.transaction(actor: "tether agent stop") { try agent.stop(integration) } }
        Console.out("\(integration.displayName) (\(integration.taskName)) is stopped.")
    }
}

struct AddServerCertificate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add-server-certificate",
        abstract: "Pin a server certificate (PEM or DER) for an integration, replacing any other.",
        discussion: """
        A certificate that has expired, is not valid yet or expires within --warn-expiry days is \
        pinned all the same, with a warning on standard error: connections fail while it is not valid.
        Exit codes: 0 pinned (warnings included), 1 not a certificate or the file cannot be read.
        """)
    @Argument(help: "edr, ndr or sandbox.") var integration: Integration
    @Argument(help: "The certificate file.") var file: String
    @OptionGroup var expiry: ExpiryOptions
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let bytes = try readFile(file)
        let agent = try device.agent()
        let certificate = try agentCall {
            try agent.transaction(actor: "tether agent add-server-certificate") {
                try agent.addServerCertificate(integration, bytes: bytes, source: file)
            }
        }
        Console.out("Pinned for \(integration.displayName):\n" + describe(certificate))
        switch CertificateValidity(certificate, at: Date(), warnExpiryDays: expiry.warnExpiry) {
        case .valid: break
        case .expired(let why), .notYetValid(let why), .expiring(let why):
            Console.error("warning: \(why); every connection of \(integration.displayName) fails while it is not valid")
        }
    }
}

struct RemoveServerCertificate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove-server-certificate", abstract: "Remove an integration's pinned server certificate (a running task is stopped first).")
    @Argument(help: "edr, ndr or sandbox.") var integration: Integration
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let agent = try device.agent()
        try agentCall { try agent.transaction(actor: "tether agent remove-server-certificate") { try agent.removeServerCertificate(integration) } }
        Console.out("\(integration.displayName) has no pinned server certificate.")
    }
}

struct QueryServerCertificate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "query-server-certificate", abstract: "Show an integration's pinned server certificate; exit 1 when there is none.")
    @Argument(help: "edr, ndr or sandbox.") var integration: Integration
    @OptionGroup var device: DeviceOptions

    func run() throws {
        guard let certificate = try agentCall({ try device.agent().state().serverCertificates[integration] }) else {
            throw CommandError("error: \(integration.displayName) has no pinned server certificate; add one with `tether agent add-server-certificate \(integration.rawValue) FILE`")
        }
        Console.out(describe(certificate))
    }
}

struct AddClientCertificate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add-client-certificate", abstract: "Install a PKCS#12 client container (certificate and private key) for mutual TLS.")
    @Argument(help: "edr, ndr or sandbox.") var integration: Integration
    @Argument(help: "The PKCS#12 (.p12/.pfx) file.") var file: String
    @Option(help: ArgumentHelp("""
        A file holding the container's password (never pass a password as an argument). The agent keeps the file's \
        path, not the password, and reads it each time it connects: it must lie below the state directory, /etc/tether \
        or a folder in $TETHER_DEVICE_FILES.
        """, valueName: "file"))
    var passwordFile: String?
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let container = try readFile(file)
        let password = passwordFile.map { ContainerPassword.file(URL(fileURLWithPath: $0).standardizedFileURL.path) } ?? .none
        let agent = try device.agent()
        let certificate = try agentCall {
            try agent.transaction(actor: "tether agent add-client-certificate") {
                try agent.addClientCertificate(integration, pkcs12: container, password: password, source: file)
            }
        }
        Console.out("Installed for \(integration.displayName):\n" + describe(certificate))
    }
}

struct RemoveClientCertificate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove-client-certificate", abstract: "Remove an integration's client certificate (a running task that needs it is stopped first).")
    @Argument(help: "edr, ndr or sandbox.") var integration: Integration
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let agent = try device.agent()
        try agentCall { try agent.transaction(actor: "tether agent remove-client-certificate") { try agent.removeClientCertificate(integration) } }
        Console.out("\(integration.displayName) has no client certificate.")
    }
}

struct QueryClientCertificate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "query-client-certificate", abstract: "Show an integration's client certificate (never its key); exit 1 when there is none.")
    @Argument(help: "edr, ndr or sandbox.") var integration: Integration
    @OptionGroup var device: DeviceOptions

    func run() throws {
        guard let certificate = try agentCall({ try device.agent().state().clientCertificates[integration] }) else {
            throw CommandError("error: \(integration.displayName) has no client certificate; add one with `tether agent add-client-certificate \(integration.rawValue) FILE --password-file FILE`")
        }
        Console.out(describe(certificate))
    }
}

/// Turns the agent's refusals into one clear message.
func agentCall<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as AgentError {
        throw CommandError("error: \(error)")
    } catch let error as KESLError {
        throw CommandError("error: \(error)")
    } catch let error as UndoneChange {
        throw CommandError("error: \(error)")
    }
}

/// Reads a file named on the command line (at most 256 MiB).
func readFile(_ path: String) throws -> [UInt8] {
    let limit = 256 << 20
    if path == "-" { return try readStandardInput(limit: limit) }
    if let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int, size > limit {
        throw CommandError("error: \(path): \(size) bytes is more than the \(limit)-byte limit")
    }
    guard let data = FileManager.default.contents(atPath: path) else {
        throw CommandError("error: \(path): cannot read the file (missing or not readable)")
    }
    return Array(data)
}

/// Standard input, for `-` where a file is named (`plan --against -`), at most `limit` bytes.
func readStandardInput(limit: Int) throws -> [UInt8] {
    guard let bytes = readAll(STDIN_FILENO, limit: limit) else {
        throw CommandError("error: standard input: \(String(cString: strerror(errno)))")
    }
    if bytes.count > limit { throw CommandError("error: standard input: more than the \(limit)-byte limit") }
    return bytes
}

func describe(_ certificate: Certificate) -> String {
    """
      subject      \(certificate.subject)
      issuer       \(certificate.issuer)
      serial       \(certificate.serialNumber)
      valid from   \(ReportFormatting.timestamp(certificate.notBefore))
      valid until  \(ReportFormatting.timestamp(certificate.notAfter))
      sha256       \(certificate.sha256Fingerprint)
    """
}

/// `tether agent get-settings --json`: the settings by policy name; for an integration also its
/// task and whether it runs.
struct SettingsDocument: Encodable {
    let settings: [String: SettingValue]
    var integration: String?
    var task: String?
    var running: Bool?
}

/// `tether agent labels [set k=v … | unset k …]`
struct LabelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "labels",
        abstract: "Show this device's labels (what policy selectors match), or change them: set env=prod team=ops, unset team.",
        discussion: "The labels live in the state directory's `labels` file and change only through this command (or an edit of that file); `--label` on other commands adds one for that run only.")

    enum Action: String, ExpressibleByArgument, CaseIterable { case set, unset }

    @Argument(help: "set or unset; nothing to show the labels.")
    var action: Action?

    @Argument(help: ArgumentHelp("key=value to set, or key to unset.", valueName: "label"))
    var labels: [String] = []

    @OptionGroup var device: DeviceOptions

    func validate() throws {
        switch action {
        case .set?:
            if labels.isEmpty { throw ValidationError("give the labels to set, e.g. `tether agent labels set env=prod`") }
            for label in labels where DeviceLabels.parse(label) == nil {
                throw ValidationError("'\(label)' is not key=value; write for example env=prod")
            }
        case .unset?:
            if labels.isEmpty { throw ValidationError("give the label keys to unset, e.g. `tether agent labels unset team`") }
        case nil:
            if !labels.isEmpty { throw ValidationError("to change labels write `tether agent labels set \(labels.joined(separator: " "))`") }
        }
    }

    func run() throws {
        var current = try device.deviceLabels()
        guard let action else {
            Console.out(current.isEmpty ? "No labels: only policies without a selector select this device."
                                        : current.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "\n"))
            return
        }
        for label in labels {
            switch action {
            case .set: if let (key, value) = DeviceLabels.parse(label) { current[key] = value }
            case .unset: current[label] = nil
            }
        }
        do {
            try DeviceLabels.save(current, stateDirectory: device.stateDirectory)
        } catch {
            throw CommandError("error: cannot write the labels: \(error)")
        }
        Console.out(current.isEmpty ? "No labels." : current.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "\n"))
    }
}

/// `tether agent export`
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Print an integration's actual settings as the vendor's settings file (INI).",
        discussion: """
            What `kesl-control --get-settings TASK` prints and `kesl-control --set-settings TASK --file FILE` reads, for the agent of --state-dir (embedded, or the vendor's with --agent kesl): every setting the vendor's file holds, with its current value. `tether render -o ini --integration edr` writes the desired one from a revision. Example: tether agent export edr --ini > KATAEDR.ini
            """)

    @Argument(help: "edr, ndr or sandbox.") var integration: Integration
    @Flag(help: "The vendor's INI format (the only one).") var ini = false
    @OptionGroup var device: DeviceOptions
    @OptionGroup var backend: BackendOptions

    func run() throws {
        let state = try agentCall { try backend.open(device).state() }
        let values = SettingCatalog.paths(.integration(integration)).compactMap { path, field -> (path: SettingPath, value: SettingValue)? in
            guard field.vendorKey != nil, !field.isTaskState, VendorSettings.unsupported[path] == nil else { return nil }
            return (path, state.value(path))
        }
        Console.out("; \(integration.taskName) settings of the agent in \(device.stateDirectory)\n" + VendorSettings.file(setting: values).rendered())
    }
}
