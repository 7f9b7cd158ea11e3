import ArgumentParser
import FoundationEssentials
import IntegrationModel
import KESLAgent
import Policy
import PolicySource
import Reports
import Primitives

/// `tether render`
struct RenderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "render",
        abstract: "Print the desired state one device gets from a revision: every value merged from the policies that select it, with the file and line that set it.",
        discussion: """
            Like `kustomize build` for Tether: what the policies mean for a device with these labels (the state directory's labels file, and --label for this run), before anything is compared or applied. Values a policy marks observe or ignore, and active exceptions, are shown as such. -o yaml (the default) reads like a policy; -o json is for tools; -o ini --integration edr is the vendor's settings file of the declared settings, for `kesl-control --set-settings TASK --file` (keys it lacks stay as they are). Example: tether render --repo . --label env=prod
            """)

    @OptionGroup var source: SourceOptions

    enum Format: String, ExpressibleByArgument, CaseIterable { case yaml, json, ini }

    @Option(name: [.customShort("o"), .customLong("output")], help: "yaml (for people, like a policy), json (for tools) or ini (the vendor's settings file of one --integration).")
    var format: Format = .yaml

    @Option(help: ArgumentHelp("The integration whose settings -o ini writes.", valueName: "edr|ndr|sandbox"))
    var integration: Integration?

    func validate() throws {
        if format == .ini && integration == nil { throw ValidationError("-o ini writes one integration's settings file: add --integration edr (or ndr, sandbox)") }
    }

    func run() throws {
        let revision = try source.revision()
        try revision.requireValid()
        let labels = try source.device.deviceLabels()
        for warning in revision.policySet.labelWarnings(labels) { Console.error("warning: \(warning)") }
        let state: DesiredState
        do {
            state = try revision.policySet.desiredState(labels: labels)
        } catch let problems as PolicyProblems {
            throw problems
        }
        let keys = state.values.keys.sorted()
        switch format {
        case .ini:
            guard let integration else { return }
            var values: [(path: SettingPath, value: SettingValue)] = []
            for key in keys {
                guard case .setting(let path) = key, path.integration == integration, !path.isTaskState, state.mode(key) == .enforce,
                      VendorSettings.unsupported[path] == nil, case .setting(let value) = state.values[key]!.value else { continue }
                values.append((path, value))
            }
            Console.out("; \(integration.taskName) settings declared by revision \(revision.commit.id.prefix(12)); keys absent here are left as they are\n"
                        + VendorSettings.file(setting: values).rendered())
        case .json:
            let document = RenderDocument(
                revision: revision.commit.id, labels: labels, policies: state.policies,
                values: Dictionary(uniqueKeysWithValues: keys.map { key in
                    let sourced = state.values[key]!
                    return (key.description, RenderDocument.Entry(value: Self.json(sourced.value), source: sourced.source.description,
                                                                  mode: state.mode(key).rawValue,
                                                                  exceptionUntil: state.exceptions[key]?.expiresText))
                }))
            Console.out(JSONReport.serialize(document))
        case .yaml:
            var lines = ["# revision \(revision.commit.id.prefix(12)) for labels \(labels.isEmpty ? "(none)" : labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))",
                         "# policies, highest priority first: \(state.policies.isEmpty ? "none select this device" : state.policies.joined(separator: ", "))"]
            var scope: SettingScope?
            for key in keys {
                let sourced = state.values[key]!
                if key.scope != scope {
                    scope = key.scope
                    if case .integration(let integration) = key.scope { lines.append("\(integration.rawValue):") }
                }
                let indent = key.scope == .app ? "" : "  "
                let name = key.description.split(separator: ".", maxSplits: key.scope == .app ? 0 : 1).last.map(String.init) ?? key.description
                var line = "\(indent)\(name): \(Self.yaml(sourced.value))"
                line = line.padded(to: max(line.count, 44)) + "  # \(sourced.source)"
                if state.mode(key) != .enforce { line += ", \(state.mode(key).rawValue)" }
                if let exception = state.exceptions[key] { line += ", excepted until \(exception.expiresText)" }
                lines.append(line)
            }
            Console.out(lines.joined(separator: "\n"))
        }
    }

    static func yaml(_ value: DesiredValue) -> String {
        switch value {
        case .setting(.endpoints(let list)): return "[" + list.map { "{address: \($0.address), port: \($0.port)}" }.joined(separator: ", ") + "]"
        case .setting(.string(let text)): return "\"\(text)\""
        case .setting(let setting): return setting.description
        case .serverCertificate(let path): return path
        case .clientCertificate(let reference): return "{file: \(reference.file)\(reference.passwordFile.map { ", passwordFile: \($0)" } ?? "")}"
        }
    }

    static func json(_ value: DesiredValue) -> JSONValue {
        switch value {
        case .setting(let setting): return setting.json
        case .serverCertificate(let path): return .string(path)
        case .clientCertificate(let reference):
            return .object(["file": .string(reference.file)].merging(reference.passwordFile.map { ["passwordFile": .string($0)] } ?? [:]) { a, _ in a })
        }
    }
}

/// `tether render -o json`.
struct RenderDocument: Encodable {
    struct Entry: Encodable {
        let value: JSONValue
        /// `FILE:LINE:COLUMN` of the policy value that won.
        let source: String
        /// `enforce`, `observe` or `ignore`.
        let mode: String
        let exceptionUntil: String?
    }

    let revision: String
    let labels: [String: String]
    let policies: [String]
    let values: [String: Entry]
}
