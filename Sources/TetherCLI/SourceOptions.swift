import ArgumentParser
import ConnectorCore
import Foundation
import Policy
import Reconciler
import Reports

/// Options every reconciling command shares.
struct SourceOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The policy repository: a local path or a URL (file://, https://, ssh://).", valueName: "path-or-url"))
    var repo: String = "."

    @Option(name: .long, help: ArgumentHelp("A branch, tag or commit id to read (default: the repository's HEAD).", valueName: "ref"))
    var ref: String?

    @Option(name: .long, help: ArgumentHelp("The folder of the commit's tree holding the policy files.", valueName: "folder"))
    var path: String = "policies"

    @OptionGroup var device: DeviceOptions

    var spec: SourceSpec { SourceSpec(repository: repo, ref: ref, path: path) }

    /// Reads and decodes the revision's policies.
    func revision() throws -> PolicyRevision {
        do {
            return try PolicyRevision(spec: spec, mirrorDirectory: device.stateDirectoryURL.appendingPathComponent("mirrors"))
        } catch let error as SourceError {
            throw CommandError("error: \(error.message)")
        }
    }
}

/// Options that locate this device: its state directory and labels.
struct DeviceOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The agent's state directory (its store, labels file and mirrors). Default: $TETHER_STATE_DIR, else /var/lib/tether.", valueName: "dir"))
    var stateDir: String?

    @Option(name: .customLong("label"), help: ArgumentHelp("A device label that policy selectors match, key=value; repeat for more. Adds to the state directory's labels file.", valueName: "key=value"))
    var labels: [String] = []

    func validate() throws {
        for label in labels where DeviceLabels.parse(label) == nil {
            throw ValidationError("--label '\(label)' is not key=value; write for example --label env=prod")
        }
    }

    var stateDirectory: String {
        stateDir ?? ProcessInfo.processInfo.environment["TETHER_STATE_DIR"] ?? "/var/lib/tether"
    }

    var stateDirectoryURL: URL { URL(fileURLWithPath: stateDirectory, isDirectory: true) }

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

/// How a report is written: `--format`, `--output`, `--warn-expiry`.
struct ReportOptions: ParsableArguments {
    @Option(help: "text for people (colour on a terminal), json for tools, markdown for a pull-request comment, html for a browser, sarif for code scanning, junit for CI test views.")
    var format: ReportFormat = .text

    @Option(help: ArgumentHelp("Write the report to this file instead of standard output.", valueName: "file"))
    var output: String?

    @Option(help: ArgumentHelp("Report certificates that expire within this many days.", valueName: "days"))
    var warnExpiry: Int = 30

    func validate() throws {
        if warnExpiry < 0 { throw ValidationError("--warn-expiry takes a number of days, 0 or more; for example --warn-expiry 30") }
    }

    /// Renders the report to the file or to standard output.
    func emit(_ report: Report) throws {
        try write(format.render(report, colour: output == nil && Console.current.isTerminal))
    }

    func write(_ text: String) throws {
        guard let output else {
            Console.out(text)
            return
        }
        do {
            try text.write(toFile: output, atomically: true, encoding: .utf8)
        } catch {
            throw CommandError("error: cannot write \(output): \(error.localizedDescription)")
        }
        Console.error("Wrote the \(format.rawValue) report to \(output).")
    }
}
