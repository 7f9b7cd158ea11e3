import AgentInterface
import ChildProcess
import FoundationEssentials
import IntegrationModel
#if canImport(Glibc)
import Glibc
import Primitives
#endif

/// The vendor's task names, in one table an option can override (versions of the agent differ).
package struct VendorTaskNames: Sendable, Equatable {
    package var edr = "KATAEDR"
    package var ndr = "KATANDR"
    package var sandbox = "KATASandbox"
    package var behaviorDetection = "Behavior_Detection"

    package init() {}

    package func task(_ integration: Integration) -> String {
        switch integration {
        case .edr: return edr
        case .ndr: return ndr
        case .sandbox: return sandbox
        }
    }

    /// The certificate commands' group (`--add-kataedr-server-certificate`).
    static func group(_ integration: Integration) -> String {
        switch integration {
        case .edr: return "kataedr"
        case .ndr: return "katandr"
        case .sandbox: return "sandbox"
        }
    }

    /// Reads overrides written `edr=KATAEDR2,behaviorDetection=BehaviorDetection`. Names are
    /// letters, digits and `_`, so that none reads as an option or breaks a line.
    package init(overrides text: String) throws {
        self.init()
        for pair in text.split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingSpaces() }
            guard parts.count == 2, !parts[1].isEmpty, parts[1].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
                throw KESLError(command: "--kesl-tasks", message: "'\(pair)' is not name=TASK; write for example edr=KATAEDR,behaviorDetection=Behavior_Detection")
            }
            switch parts[0] {
            case "edr": edr = parts[1]
            case "ndr": ndr = parts[1]
            case "sandbox": sandbox = parts[1]
            case "behaviorDetection": behaviorDetection = parts[1]
            default:
                throw KESLError(command: "--kesl-tasks", message: "'\(parts[0])' is not one of edr, ndr, sandbox, behaviorDetection")
            }
        }
    }

    /// The overrides as `init(overrides:)` reads them.
    package var overrides: String { "edr=\(edr),ndr=\(ndr),sandbox=\(sandbox),behaviorDetection=\(behaviorDetection)" }
}

/// A vendor command that failed: the command (never a password: those go on standard input)
/// and what the vendor said.
package struct KESLError: Error, Sendable, CustomStringConvertible {
    package let command: String
    package let message: String

    package init(command: String, message: String) {
        self.command = command
        self.message = message
    }

    package var description: String { "\(command): \(message)" }
}

/// The vendor's command line, `kesl-control`: runs one command at a time, each bounded by a
/// timeout, and turns every way it can fail into one `KESLError` naming the command.
package struct KESLControl: Sendable {
    package static let defaultPath = "/opt/kaspersky/kesl/bin/kesl-control"

    package let executable: String
    package let tasks: VendorTaskNames
    /// Seconds one call may take.
    package let timeout: TimeInterval
    /// A descriptor (the backend's lock) each call keeps open until the vendor's process exits.
    var heldOpen: Int32?

    package init(executable: String, tasks: VendorTaskNames = VendorTaskNames(), timeout: TimeInterval = 60) {
        self.executable = executable
        self.tasks = tasks
        self.timeout = timeout
    }

    /// Runs `kesl-control ARGUMENTS` and returns how it ended; throws only when it could not
    /// run to its end. `input` goes to its standard input. `heldOpen` (a lock) is kept open in
    /// the vendor's process until it exits. Tether's own secrets in the environment
    /// (`TETHER_*`) are not passed on.
    func outcome(_ arguments: [String], input: [UInt8] = []) throws -> ChildOutcome {
        let command = "kesl-control " + arguments.joined(separator: " ")
        guard access(executable, X_OK) == 0 else {
            let why = access(executable, F_OK) == 0 ? "is not executable" : "does not exist"
            throw KESLError(command: command, message: "\(executable) \(why) (set --kesl-control PATH or $TETHER_KESL_CONTROL)")
        }
        let environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("TETHER_") }
        do {
            return try ChildProcess.run(executable, arguments, input: input, timeout: timeout, environment: environment, heldOpen: heldOpen)
        } catch {
            throw KESLError(command: command, message: "\(error)")
        }
    }

    /// Runs `kesl-control ARGUMENTS` and returns what it printed; a non-zero exit is an error
    /// with what the vendor said.
    @discardableResult
    func run(_ arguments: [String], input: [UInt8] = []) throws -> String {
        let ended = try outcome(arguments, input: input)
        guard ended.status == 0 else {
            var said = ended.errorOutput.trimmingWhitespace()
            if said.isEmpty { said = ended.output.trimmingWhitespace() }
            if said.isEmpty { said = "no message" }
            var message = "exit \(ended.status): \(TerminalText.excerpt(said, limit: 400))"
            if geteuid() != 0, said.lowercased().contains("root") || said.lowercased().contains("permission") {
                message += " (kesl-control needs root; run tether as root)"
            }
            throw KESLError(command: "kesl-control " + arguments.joined(separator: " "), message: message)
        }
        return ended.output
    }

    /// A task's settings file.
    func settings(_ task: String) throws -> VendorINI {
        let text = try run(["--get-settings", task])
        do {
            return try VendorINI(parsing: text)
        } catch {
            throw KESLError(command: "kesl-control --get-settings \(task)", message: "printed something that is not a settings file: \(error)")
        }
    }

    /// Whether a task runs (`State: Started`).
    func isRunning(_ task: String) throws -> Bool {
        let text = try run(["--get-task-state", task])
        for line in text.split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingSpaces() }
            if parts.count == 2, parts[0].lowercased() == "state" {
                switch parts[1].lowercased() {
                case "started", "running": return true
                case "stopped", "not started": return false
                default: break
                }
            }
        }
        throw KESLError(command: "kesl-control --get-task-state \(task)", message: "printed no 'State: Started' or 'State: Stopped' line: \(TerminalText.excerpt(text, limit: 200))")
    }

    /// The installed certificate as the vendor describes it, or nil when there is none (the
    /// query exits non-zero). A non-zero exit is asked again once before it is taken as none: a
    /// query that failed for another reason must not make an undo remove what it should restore.
    func query(_ integration: Integration, role: CertificateRole) throws -> CertificateDescription? {
        let arguments = ["--query-\(VendorTaskNames.group(integration))-\(role.rawValue)-certificate"]
        var ended = try outcome(arguments)
        if ended.status != 0 { ended = try outcome(arguments) }
        guard ended.status == 0 else { return nil }
        let text = ended.output
        var fields: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].trimmingSpaces().lowercased()] = line[line.index(after: colon)...].trimmingSpaces()
        }
        guard let serial = fields["serial number"], let issuer = fields["issuer"] else {
            throw KESLError(command: "kesl-control --query-\(VendorTaskNames.group(integration))-\(role.rawValue)-certificate",
                            message: "printed no 'Serial number:' and 'Issuer:' lines: \(TerminalText.excerpt(text, limit: 200))")
        }
        return CertificateDescription(serial: serial, issuer: issuer, subject: fields["subject"] ?? "", validTo: fields["valid to"] ?? "")
    }
}

/// A certificate slot of a task.
package enum CertificateRole: String, Sendable, Codable {
    case server, client
}
