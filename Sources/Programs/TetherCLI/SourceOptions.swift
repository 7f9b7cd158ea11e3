import ArgumentParser
import AgentInterface
import EmbeddedAgent
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import IntegrationModel
import GitSource
import KESLAgent
import Policy
import PolicySource
import Reconciler
import Reports
import Primitives

/// Options every reconciling command shares.
struct SourceOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The policy repository: a local path or a URL (file://, https://, ssh://).", valueName: "path-or-url"))
    var repo: String = "."

    @Option(name: .long, help: ArgumentHelp("A branch, tag or commit id to read (default: the repository's HEAD).", valueName: "ref"))
    var ref: String?

    @Option(name: .long, help: ArgumentHelp("The folder of the commit's tree holding the policy files.", valueName: "folder"))
    var path: String = "policies"

    @OptionGroup var device: DeviceOptions
    @OptionGroup var credentialOptions: CredentialOptions

    var spec: SourceSpec { SourceSpec(repository: repo, ref: ref, path: path) }

    /// Opens the repository: a local one as it is, a remote one through its mirror (fetched
    /// when its refs moved).
    /// Where mirrors of a remote live: the state directory's `mirrors`, or, when there is no
    /// state directory, a temporary folder removed when the process ends (a command that only
    /// reads must not make a state directory, even to hold a mirror).
    private var mirrorDirectory: URL {
        device.stateDirectoryExists ? device.stateDirectoryURL.appending(path: "mirrors") : TemporaryMirrors.folder
    }

    func repository() throws -> GitRepository {
        do {
            return try PolicyRevision.open(spec, mirrorDirectory: mirrorDirectory,
                                           credentials: try credentialOptions.credentials()).repository
        } catch let error as SourceError {
            throw CommandError("error: \(error.message)")
        }
    }

    /// Reads and decodes the revision's policies (for `validate`, which applies nothing).
    func revision() throws -> PolicyRevision {
        do {
            return try PolicyRevision(spec: spec, mirrorDirectory: mirrorDirectory,
                                      credentials: try credentialOptions.credentials())
        } catch let error as SourceError {
            throw CommandError("error: \(error.message)")
        }
    }
}

/// How to authenticate to a remote repository. Secrets come from files or the environment,
/// never from the command line.
struct CredentialOptions: ParsableArguments {
    @Option(name: .customLong("git-user"), help: ArgumentHelp("The user name for an https remote.", valueName: "name"))
    var gitUser: String?

    @Option(name: .customLong("git-password-file"), help: ArgumentHelp("A file holding the password or token for an https remote (else $TETHER_GIT_TOKEN or $TETHER_GIT_PASSWORD).", valueName: "file"))
    var gitPasswordFile: String?

    @Option(name: .customLong("ssh-key"), help: ArgumentHelp("The private key for an ssh remote.", valueName: "file"))
    var sshKey: String?

    @Option(name: .customLong("ssh-passphrase-file"), help: ArgumentHelp("A file holding the ssh key's passphrase.", valueName: "file"))
    var sshPassphraseFile: String?

    @Option(name: .customLong("known-hosts"), help: ArgumentHelp("An OpenSSH known_hosts file that must list an ssh remote's host key.", valueName: "file"))
    var knownHosts: String?

    @Option(name: .customLong("git-ca-file"), help: ArgumentHelp("A PEM CA bundle to trust for https remotes.", valueName: "file"))
    var gitCAFile: String?

    func credentials() throws -> RemoteCredentials {
        func secret(_ file: String) throws -> String {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw CommandError("error: \(file): cannot read the file (missing or not readable)")
            }
            return String(decoding: data, as: UTF8.self).trimming { $0.isNewline }
        }
        if let gitCAFile {
            do { try GitRepository.trustCertificates(inFile: gitCAFile) } catch { throw CommandError("error: \(error)") }
        }
        let token = ProcessEnvironment.value("TETHER_GIT_TOKEN")
        let environmentPassword = ProcessEnvironment.value("TETHER_GIT_PASSWORD")
        let password = try gitPasswordFile.map(secret) ?? token ?? environmentPassword
        let source = gitPasswordFile.map { "--git-password-file \($0)" }
            ?? (token != nil ? "$TETHER_GIT_TOKEN" : environmentPassword != nil ? "$TETHER_GIT_PASSWORD" : nil)
        return RemoteCredentials(username: gitUser, password: password, sshPrivateKey: sshKey,
                                 sshPassphrase: try sshPassphraseFile.map(secret), knownHosts: knownHosts, passwordSource: source)
    }
}

/// Options that locate this device: its state directory and labels.
struct DeviceOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The agent's state directory (its store, labels file and mirrors). Default: $TETHER_STATE_DIR, else /var/lib/tether.", valueName: "dir"))
    var stateDir: String?

    @Option(name: .customLong("label"), help: ArgumentHelp("A device label that policy selectors match, key=value; repeat for more. On top of the state directory's labels for this run only (`tether agent labels set` keeps them).", valueName: "key=value"))
    var labels: [String] = []

    func validate() throws {
        for label in labels where DeviceLabels.parse(label) == nil {
            throw ValidationError("--label '\(label)' is not key=value; write for example --label env=prod")
        }
    }

    var stateDirectory: String {
        stateDir ?? ProcessEnvironment.value("TETHER_STATE_DIR") ?? "/var/lib/tether"
    }

    var stateDirectoryURL: URL { URL(fileURLWithPath: stateDirectory, isDirectory: true) }

    /// Whether the state directory exists: commands that only read never make one (a mistyped
    /// --state-dir must not leave stores behind).
    var stateDirectoryExists: Bool {
        var isFolder = false
        return FileManager.default.fileExists(atPath: stateDirectory, isDirectory: &isFolder) && isFolder
    }

    /// Refuses a read-only command that needs the agent's records when there are none here.
    func requireAgentState() throws {
        guard stateDirectoryExists else {
            throw CommandError("error: there is no agent state at \(stateDirectory) (no such folder): check --state-dir or $TETHER_STATE_DIR; `tether apply` or `tether run` makes it")
        }
    }

    /// The `--label` flags.
    func labelOverrides() throws -> [String: String] {
        var overrides: [String: String] = [:]
        for label in labels {
            if let (key, value) = DeviceLabels.parse(label) { overrides[key] = value }
        }
        return overrides
    }

    /// The labels file, with `--label` on top.
    func deviceLabels() throws -> [String: String] {
        do {
            return try DeviceLabels.load(stateDirectory: stateDirectory, overrides: try labelOverrides())
        } catch let error as SourceError {
            throw CommandError("error: \(error.message)")
        }
    }

    func agent() throws -> Agent {
        do {
            return try Agent(stateDirectory: stateDirectory)
        } catch {
            throw CommandError("error: \(error)")
        }
    }
}

extension ReportFormat: ExpressibleByArgument {}

/// `--warn-expiry`: how many days ahead a certificate's expiry is reported.
struct ExpiryOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Warn about certificates that expire within this many days.", valueName: "days"))
    var warnExpiry: Int = 30

    func validate() throws {
        if warnExpiry < 0 { throw ValidationError("--warn-expiry takes a number of days, 0 or more; for example --warn-expiry 30") }
    }
}

/// How a report is written: `-o`/`--output` (or `--format`) the format, `--out` the file, `--warn-expiry`.
/// `-o text|json` (as kubectl): what commands that print for people and scripts take; `--json`
/// stays as a short way to say `-o json`.
struct OutputOptions: ParsableArguments {
    enum Format: String, ExpressibleByArgument, CaseIterable { case text, json }

    @Option(name: [.customShort("o"), .customLong("output")], help: ArgumentHelp("text for people, json for scripts.", valueName: "format"))
    var output: Format = .text

    @Flag(help: "The same as -o json.")
    var json = false

    /// Whether to print JSON.
    var isJSON: Bool { json || output == .json }
}

struct ReportOptions: ParsableArguments {
    @Option(name: [.customShort("o"), .customLong("output"), .customLong("format")],
            help: ArgumentHelp("text for people (colour on a terminal), json for tools, markdown for a pull-request comment, html for a browser, sarif for code scanning, junit for CI test views (-o json, as kubectl).",
                               valueName: "format"),
            completion: .list(ReportFormat.allCases.map(\.rawValue)))
    var formatName: String = ReportFormat.text.rawValue

    @Option(name: .customLong("out"), help: ArgumentHelp("Write the report to this file instead of standard output (a report, not a saved plan to apply).", valueName: "file"))
    var out: String?

    @OptionGroup var expiry: ExpiryOptions
    var warnExpiry: Int { expiry.warnExpiry }

    @Flag(name: .customLong("no-color"), help: "No colour, even on a terminal (as a non-empty NO_COLOR or TERM=dumb).")
    var noColor = false

    func validate() throws {
        if ReportFormat(rawValue: formatName) == nil {
            let formats = ReportFormat.allCases.map(\.rawValue).joined(separator: ", ")
            throw ValidationError("--output takes a format (\(formats)), not '\(formatName)'; to write the report to a file, use --out \(formatName)")
        }
    }

    var format: ReportFormat { ReportFormat(rawValue: formatName) ?? .text }

    /// Renders the report to the file or to standard output.
    func emit(_ report: Report) throws {
        try write(format.render(report, colour: out == nil && !noColor && Console.current.isTerminal))
    }

    func write(_ text: String) throws {
        guard let out else {
            // The text report is escaped as it is rendered, its colours added after; JSON and SARIF
            // escape every control character themselves (`JSONReport.serialize`), validly.
            if [.text, .json, .sarif].contains(format) { Console.out(rendered: text) } else { Console.out(text) }
            return
        }
        let safe = [.text, .json, .sarif].contains(format) ? text : TerminalText.escaped(text)
        do {
            try safe.write(toFile: out, atomically: true, encoding: .utf8)
        } catch {
            throw CommandError("error: cannot write \(out): \(reason(of: error))")
        }
        Console.error("Wrote the \(format.rawValue) report to \(out).")
    }
}

extension AgentChoice.Kind: ExpressibleByArgument {}

/// `--agent`, `--kesl-control`, `--kesl-tasks`: which agent a command governs. Given to a
/// command that changes the agent (apply, rollback, run), they are kept in the state
/// directory's agent.conf for every later command and the controller.
struct BackendOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The agent to govern: embedded (Tether's own, the default) or kesl (the vendor's agent, through kesl-control). apply, rollback and run keep it in the state directory's agent.conf for later commands.", valueName: "embedded|kesl"))
    var agent: AgentChoice.Kind?

    @Option(name: .customLong("kesl-control"), help: ArgumentHelp("The vendor's command line (default: $TETHER_KESL_CONTROL, else \(KESLControl.defaultPath)).", valueName: "path"))
    var keslControl: String?

    @Option(name: .customLong("kesl-tasks"), help: ArgumentHelp("The vendor's task names where this agent's version differs, for example edr=KATAEDR,ndr=KATANDR,sandbox=KATASandbox,behaviorDetection=Behavior_Detection.", valueName: "names"))
    var keslTasks: String?

    func validate() throws {
        if let keslTasks {
            do { _ = try VendorTaskNames(overrides: keslTasks) } catch { throw ValidationError("--kesl-tasks: \(error)") }
        }
        if let keslControl, keslControl.contains(where: \.isNewline) || keslControl.isEmpty {
            throw ValidationError("--kesl-control takes the path of kesl-control, for example --kesl-control \(KESLControl.defaultPath)")
        }
    }

    /// The choice for `device`'s state directory: what agent.conf keeps, overridden by these
    /// options; with `keep` (a command that changes the agent) the result is kept.
    func choice(_ device: DeviceOptions) throws -> AgentChoice {
        var choice = try agentCall { try AgentChoice.load(stateDirectory: device.stateDirectoryURL) }
        guard givesBackend else { return choice }
        if let agent { choice.kind = agent }
        if let keslControl { choice.keslControl = URL(fileURLWithPath: keslControl).standardizedFileURL.path }
        if let keslTasks { choice.keslTasks = keslTasks }
        return choice
    }

    /// Keeps `choice` in agent.conf when these options changed it (a command that changes the
    /// agent, once nothing has refused it).
    func keep(_ choice: AgentChoice, in device: DeviceOptions) throws {
        guard givesBackend else { return }
        try agentCall { try choice.save(stateDirectory: device.stateDirectoryURL) }
    }

    private var givesBackend: Bool { agent != nil || keslControl != nil || keslTasks != nil }

    /// Opens the chosen agent on `device`'s state directory (only the agent: no history).
    func open(_ device: DeviceOptions) throws -> AgentBackend {
        try agentCall { try AgentSession.backend(choice(device), stateDirectory: device.stateDirectoryURL) }
    }
}

/// A folder for mirrors of a process without a state directory, made on first use and removed
/// when the process exits.
enum TemporaryMirrors {
    static let folder: URL = {
        var template = Array((FileManager.default.temporaryDirectory.path + "/tether-mirrors-XXXXXX").utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buffer in buffer.baseAddress.flatMap { mkdtemp($0) }.map { String(cString: $0) } }
        let folder = URL(fileURLWithPath: made ?? FileManager.default.temporaryDirectory.path + "/tether-mirrors-\(getpid())", isDirectory: true)
        atexit { try? FileManager.default.removeItem(at: TemporaryMirrors.folder) }
        return folder
    }()
}
