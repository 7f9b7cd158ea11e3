import AgentInterface
import ArgumentParser
import FoundationEssentials
import Primitives
#if canImport(Glibc)
import Glibc
#endif
import IntegrationModel
import KESLAgent
import Policy
import Reconciler

/// `tether import`
struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Write what an agent (or the vendor's settings files) has as policy YAML, to start a repository from it.",
        discussion: """
            Reads the agent of --state-dir (embedded, or the vendor's with --agent kesl) — or, with --ini, the vendor's settings files — and writes DIR/policies/NAME.yaml (each setting commented with the vendor's key) and DIR/certs/INTEGRATION.pem for each server certificate it can read. Committed as it is, the folder plans to nothing against the same agent. What it cannot export (a client container, which never leaves the device; a certificate kesl-control only describes) is left undeclared and listed, with what to add. Example: tether import --agent kesl --into ./policies-repo
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var backend: BackendOptions

    @Option(name: .customLong("ini"), help: ArgumentHelp("Read a vendor settings file (as `kesl-control --get-settings` prints it) instead of the agent: INTEGRATION=FILE, for example edr=KATAEDR.ini; repeat for more.", valueName: "integration=file"))
    var iniFiles: [String] = []

    @Option(name: .customLong("into"), help: ArgumentHelp("The folder to write policies/ and certs/ into (a repository's root).", valueName: "dir"))
    var folder: String?

    /// The spelling before -o/--output meant the format everywhere: refused with what to type.
    @Option(name: .customLong("output"), help: .hidden)
    var oldFolder: String?

    private var output: String { folder ?? "" }

    @Option(help: ArgumentHelp("The policy's name (metadata.name) and file name.", valueName: "name"))
    var name: String = "imported"

    func validate() throws {
        if let oldFolder { throw ValidationError("--output is the format option of every command now; give the folder with --into \(oldFolder)") }
        guard folder != nil else { throw ValidationError("give the folder to write into, for example --into ./policies-repo") }
        guard PolicyDecoder.isValidName(name) else {
            throw ValidationError("--name '\(name)' is not a policy name: lower-case letters, digits, '-' and '.', for example --name imported")
        }
        for entry in iniFiles {
            let parts = entry.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, Integration(rawValue: String(parts[0])) != nil else {
                throw ValidationError("--ini '\(entry)' is not INTEGRATION=FILE; write for example --ini edr=KATAEDR.ini")
            }
        }
    }

    func run() throws {
        let outputURL = URL(fileURLWithPath: output, isDirectory: true)
        let policyFile = outputURL.appending(path: "policies/\(name).yaml")
        guard !FileManager.default.fileExists(atPath: policyFile.path) else {
            throw CommandError("error: \(policyFile.path) already exists; choose another --into or --name")
        }
        var writer = PolicyWriter(name: name, header: [
            "Imported by `tether import` from \(iniFiles.isEmpty ? "the agent of \(device.stateDirectory)" : "vendor settings files") on \(ProcessInfo.processInfo.hostName), \(Timestamp.string(Date())).",
            "Each setting names the vendor's key. Review, commit, and `tether plan` shows nothing to do against that agent.",
        ])
        var certificates: [(file: String, pem: String)] = []
        var undeclared: [String] = []
        if iniFiles.isEmpty {
            let agent = try backend.open(device)
            let state = try agentCall { try agent.state() }
            writer.behaviorDetection = state.value(SettingPath.behaviorDetection)
            for (path, _) in SettingCatalog.paths(.app) where path != SettingPath.behaviorDetection {
                if state.unsupported[path] == nil { writer.appSettings[path] = state.value(path) }
            }
            if let reason = state.unsupported[SettingPath.proxy.address] { writer.appNotes.append("proxy: not managed on this agent: \(reason)") }
            for integration in Integration.allCases {
                var section = PolicyWriter.Section()
                for (path, field) in SettingCatalog.paths(.integration(integration)) where state.unsupported[path] == nil {
                    let value = state.value(path)
                    if let problem = field.problem(with: value) {
                        // A value no policy may hold (the vendor took it): left for a person to decide.
                        let note = "\(field.name): the agent has \(value), which a policy cannot declare (\(problem)): declare the value it should have"
                        section.notes.append(note)
                        undeclared.append("\(integration.rawValue).\(note)")
                    } else {
                        section.settings[path] = value
                    }
                }
                if let certificate = state.serverCertificates[integration] {
                    let file = "certs/\(integration.rawValue).pem"
                    certificates.append((file, certificate.pem))
                    section.serverCertificate = file
                } else if let described = state.describedServerCertificates[integration] {
                    let note = "serverCertificate: kesl-control only describes it (\(described.subject); \(described.identity)): add its PEM to certs/ and declare it"
                    section.notes.append(note)
                    undeclared.append("\(integration.rawValue).\(note)")
                }
                if state.hasClientCertificate(integration) {
                    let note = "clientCertificate: not exported (a client container never leaves the device): declare clientCertificate: {file: …, passwordFile: …} naming where it is on each device"
                    section.notes.append(note)
                    undeclared.append("\(integration.rawValue).\(note)")
                }
                writer.integrations[integration] = section
            }
        } else {
            for entry in iniFiles {
                let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
                let integration = Integration(rawValue: parts[0])!
                let text = String(decoding: try readFile(parts[1]), as: UTF8.self)
                var section = writer.integrations[integration] ?? PolicyWriter.Section()
                do {
                    let values = try VendorSettings.read(try VendorINI(parsing: text), integration: integration, task: parts[1])
                    section.settings.merge(values) { _, new in new }
                } catch {
                    throw CommandError("error: \(parts[1]): \(error)")
                }
                let note = "enabled and the certificates are not in a settings file: declare them"
                section.notes.append(note)
                undeclared.append("\(integration.rawValue): \(note)")
                writer.integrations[integration] = section
            }
        }
        for certificate in certificates where FileManager.default.fileExists(atPath: outputURL.appending(path: certificate.file).path) {
            throw CommandError("error: \(outputURL.appending(path: certificate.file).path) already exists (replacing it would change the pin of every device that uses it); choose another --into")
        }
        do {
            try FileManager.default.createDirectory(at: policyFile.deletingLastPathComponent(), withIntermediateDirectories: true)
            for certificate in certificates {
                let url = outputURL.appending(path: certificate.file)
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data(certificate.pem.utf8).write(to: url, options: .atomic)
            }
            try Data(writer.rendered().utf8).write(to: policyFile, options: .atomic)
        } catch {
            throw CommandError("error: cannot write into \(output): \(reason(of: error))")
        }
        Console.out("Wrote \(policyFile.path)" + certificates.map { "\n  and \(outputURL.appending(path: $0.file).path)" }.joined())
        if !undeclared.isEmpty {
            Console.out("Left undeclared (add these yourself):\n" + undeclared.map { "  - " + TerminalText.escaped($0) }.joined(separator: "\n"))
        }
    }
}
