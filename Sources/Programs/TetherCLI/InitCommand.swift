import ArgumentParser
import FoundationEssentials
import IntegrationModel
import Primitives
#if canImport(Glibc)
import Glibc
#endif
import GitSource
import Policy
import Reports

/// `tether init`
struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Start a policy repository: a commented policy that validates as soon as it is committed, a certs/ folder, the schema for editors, and a CI example.",
        discussion: """
            Writes into DIR (default: the current folder), making it a git repository when it is not one, and never overwrites a file: when one of them exists, nothing is written. Then: git add -A && git commit -m "First policies" && tether validate --repo DIR
            """)

    @Argument(help: ArgumentHelp("The folder to start the repository in.", valueName: "dir"))
    var directory: String = "."

    /// What the skeleton holds, by path.
    static func files() -> [(path: String, text: String)] {
        [
            ("policies/base.yaml", """
                # yaml-language-server: $schema=../schema/integration-policy.schema.json
                # An IntegrationPolicy: the settings every device gets. Policies that select fewer devices
                # (spec.selector.matchLabels) and have a higher spec.priority win field by field.
                # Check it with `tether validate --repo .`, see what a device gets with `tether render`.
                apiVersion: tether/v1
                kind: IntegrationPolicy
                metadata:
                  name: base  # unique in the repository
                spec:
                  priority: 0
                  behaviorDetection: true
                  edr:
                    enabled: false      # turn on once certs/ holds the platform's certificate:
                    address: 127.0.0.1  #   serverCertificate: certs/kata.pem
                    port: 443
                    connectionTimeout: 10
                    requestTimeout: 10
                  ndr:
                    enabled: false
                  sandbox:
                    enabled: false

                """),
            ("certs/README.md", """
                # certs/

                The platform's **server** certificates (PEM or DER) that policies pin with
                `serverCertificate: certs/<file>`. They are public: they belong in git.

                Never put a **client** certificate container (`.p12`) or a password here: those live on
                each device (`clientCertificate: {file: …, passwordFile: …}`, relative paths are taken from
                the device's state directory).

                """),
            ("schema/integration-policy.schema.json", JSONReport.serialize(PolicySchema.document)),
            (".pre-commit-config.yaml", """
                # Checks the staged policies before each commit (https://pre-commit.com).
                repos:
                  - repo: local
                    hooks:
                      - id: tether-fmt
                        name: tether fmt --check
                        entry: tether fmt --check --diff
                        language: system
                        files: ^policies/.*\\.ya?ml$
                      - id: tether-validate
                        name: tether validate --staged
                        entry: tether validate --staged --repo .
                        language: system
                        pass_filenames: false

                """),
            ("ci/validate.sh", """
                #!/bin/sh
                # For CI: the layout of every policy file (`tether fmt` rewrites them), every policy
                # of the commit, and the plan against a device's snapshot
                # (`tether agent snapshot > device.json` on the device) for the pull request.
                set -e
                tether fmt --check --diff policies
                tether validate --repo .
                if [ -f device.json ]; then tether plan --repo . --against device.json -o markdown; fi

                """),
        ]
    }

    func run() throws {
        let root = URL(fileURLWithPath: directory, isDirectory: true)
        let existing = Self.files().map { root.appending(path: $0.path).path }.filter { FileManager.default.fileExists(atPath: $0) }
        guard existing.isEmpty else {
            throw CommandError("error: \(existing.joined(separator: ", ")) already exist\(existing.count == 1 ? "s" : ""): nothing was written")
        }
        do {
            _ = try GitRepository(path: root.path)
        } catch {
            do {
                try GitRepository.create(at: root.path)
            } catch {
                throw CommandError("error: \(error)")
            }
        }
        for file in Self.files() {
            let url = root.appending(path: file.path)
            do {
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try file.text.write(to: url, atomically: true, encoding: .utf8)
            } catch {
                throw CommandError("error: cannot write \(url.path): \(reason(of: error))")
            }
        }
        chmod(root.appending(path: "ci/validate.sh").path, 0o755)
        Console.out("Started a policy repository in \(root.path): " + Self.files().map(\.path).joined(separator: ", ") + ".")
        Console.out("Next: git -C \(directory) add -A && git -C \(directory) commit -m \"First policies\" && tether validate --repo \(directory)")
    }
}
