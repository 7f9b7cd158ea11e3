import ArgumentParser
import CTetherVersion
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import GitSource
import HTTPTransport
import Policy
import Reconciler
import SQLiteDB
import X509

/// The `tether` command.
package struct Tether: ParsableCommand {
    package static let configuration = CommandConfiguration(
        commandName: "tether",
        abstract: "Keep an endpoint agent's EDR, NDR and Sandbox integrations exactly as a git repository declares.",
        discussion: """
            Tether reads IntegrationPolicy documents from a git commit (never from a working tree), selects those matching this device's labels, merges them by priority and reconciles the embedded agent's certificates, connector state and settings.

            Exit codes: validate 0 valid, 1 invalid; plan 0 planned, 1 error, or with --detailed-exitcode 0 nothing to do, 2 changes, 1 error; apply 0 applied or nothing to do, 1 error (nothing changed), or with --detailed-exitcodes a bitmask (2 changes, 4 failures, 8 verification or anti-rollback refused the revision); drift 0 in sync, 2 drift, 1 error.

            Start here:
              tether validate --repo .                      check every policy file
              tether plan --repo . --state-dir ./state      what would change
              tether apply --repo . --state-dir ./state     change it, all or nothing
              tether drift --repo . --state-dir ./state     is the agent still as git says?
              tether run --repo URL --state-dir DIR         the controller, on an endpoint
            """,
        version: Tether.versionText,
        subcommands: [InitCommand.self, ValidateCommand.self, RenderCommand.self, PlanCommand.self, ApplyCommand.self, DriftCommand.self, RunCommand.self, ConfigCommand.self, StatusCommand.self, ImportCommand.self,
                      HistoryCommand.self, RollbackCommand.self, ReportCommand.self, AgentCommand.self, SchemaCommand.self, FmtCommand.self, PublishCommand.self]
    )

    package init() {}

    /// Tether's release: `0.9.0` in a package (`make package` stamps it from git), `0.9.0-dev`
    /// from a checkout.
    package static let version = String(cString: tether_version())
    /// The commit a package was built from; empty from a checkout.
    package static let commit = String(cString: tether_commit())

    /// What `tether --version` prints: Tether's release (and commit) and the C libraries it runs with.
    static var versionText: String {
        "tether \(version) (\(commit.isEmpty ? "" : "commit \(commit.prefix(12)), ")libgit2 \(libgit2Version), libcurl \(libcurlVersion), \(openSSLVersion), SQLite \(sqliteVersion))"
    }

    /// Runs tether with `arguments` (without the program name) and returns the exit code.
    /// Output goes to `Console.current`.
    package static func run(arguments: [String]) -> Int32 {
        // Everything Tether writes (stores holding client containers, history, mirrors) is the owner's alone.
        umask(0o077)
        do {
            var arguments = arguments
            // `tether run` also reads its configuration file and TETHER_* variables (RunConfiguration).
            if arguments.first == "run", !arguments.contains("--help"), !arguments.contains("-h") {
                let configuration = try RunConfiguration(commandLine: Array(arguments.dropFirst()))
                for warning in configuration.warnings { Console.error(warning) }
                arguments = ["run"] + configuration.arguments + arguments.dropFirst()
            }
            var command = try parse(arguments)
            try command.run()
            return 0
        } catch {
            return report(error)
        }
    }

    /// The command `arguments` name, parsed and validated.
    ///
    /// `tether run` starts on every endpoint, often (cron, `--once`), so its plain arguments are
    /// read without the parser's reflection (`RunCommand.parseDirectly`). Anything else (an
    /// error, `--help`, a completion request) is parsed from the root, so messages and usage
    /// name `tether run` exactly as before.
    static func parse(_ arguments: [String]) throws -> ParsableCommand {
        if arguments.first == "run", let command = RunCommand.parseDirectly(Array(arguments.dropFirst())) {
            return command
        }
        return try parseAsRoot(arguments)
    }

    static func report(_ error: Error) -> Int32 {
        switch error {
        case let problems as PolicyProblems:
            Console.error(problems.description)
            Console.error("\(problems.problems.count) problem\(problems.problems.count == 1 ? "" : "s") found; nothing was changed.")
            return 1
        case let exit as ExitCode:
            return exit.rawValue
        case let failure as CommandError:
            Console.error(failure.description)
            return 1
        default:
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if code == .success {
                Console.out(message)
                return 0
            }
            if !message.isEmpty { Console.error(message) }
            // Usage mistakes are errors too: exit 1, as the documented contract says.
            return code == .validationFailure ? 1 : code.rawValue
        }
    }
}

/// A failure already explained to the user; carries only its message.
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
