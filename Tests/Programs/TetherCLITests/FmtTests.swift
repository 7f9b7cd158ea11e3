import Foundation
import Glibc
import TetherCLI
import TetherTestSupport
import Testing

@Suite("tether fmt")
struct FmtTests {
    static let messy = """
        kind: IntegrationPolicy
        apiVersion: tether/v1
        metadata: {name: messy}
        spec:
            edr:
                port: 8443   # the platform's port
                enabled: true
            priority: 10

        """
    static let canonical = """
        apiVersion: tether/v1
        kind: IntegrationPolicy
        metadata: {name: messy}
        spec:
          priority: 10
          edr:
            enabled: true
            port: 8443  # the platform's port

        """

    @Test("What tether init writes is already in the layout, and its pre-commit configuration and CI script run fmt")
    func initIsFormatted() throws {
        let folder = try TemporaryDirectory("tether-fmt-init")
        #expect(tether(["init", folder.path]).code == 0)
        let check = tether(["fmt", "--check", folder.path])
        #expect(check.code == 0 && check.stdout.isEmpty, "\(check.stdout)\(check.stderr)")
        let hooks = try String(contentsOfFile: folder.path + "/.pre-commit-config.yaml", encoding: .utf8)
        #expect(hooks.contains("entry: tether fmt --check --diff"))
        #expect(try String(contentsOfFile: folder.path + "/ci/validate.sh", encoding: .utf8).contains("tether fmt --check --diff"))
    }

    @Test("--check lists the files that differ and exits 1, writing nothing; --diff shows the change; fmt rewrites and keeps the file's mode")
    func checkDiffWrite() throws {
        let folder = try TemporaryDirectory("tether-fmt")
        let policies = folder.path + "/policies"
        try FileManager.default.createDirectory(atPath: policies + "/team", withIntermediateDirectories: true)
        try Self.messy.write(toFile: policies + "/team/messy.yaml", atomically: false, encoding: .utf8)
        try Self.canonical.write(toFile: policies + "/good.yml", atomically: false, encoding: .utf8)
        try "not: [yaml".write(toFile: policies + "/notes.txt", atomically: false, encoding: .utf8)
        chmod(policies + "/team/messy.yaml", 0o640)
        // Formatted by root, a user's file stays the user's.
        let owner: uid_t = getuid() == 0 ? 65534 : getuid()
        if getuid() == 0 { chown(policies + "/team/messy.yaml", 65534, 65534) }

        let check = tether(["fmt", "--check", policies])
        #expect(check.code == 1)
        #expect(check.stdout == policies + "/team/messy.yaml\n", "only the file that differs: \(check.stdout)")
        #expect(try String(contentsOfFile: policies + "/team/messy.yaml", encoding: .utf8) == Self.messy, "--check writes nothing")

        let diff = tether(["fmt", "--check", "--diff", policies + "/team/messy.yaml"])
        #expect(diff.code == 1)
        #expect(diff.stdout.contains("--- \(policies)/team/messy.yaml\n+++ \(policies)/team/messy.yaml\n@@ -1,8 +1,8 @@\n-kind: IntegrationPolicy\n apiVersion: tether/v1\n"), "\(diff.stdout)")
        #expect(diff.stdout.contains("+    port: 8443  # the platform's port\n"))

        let write = tether(["fmt", policies])
        #expect(write.code == 0, "\(write.stderr)")
        #expect(write.stdout == policies + "/team/messy.yaml\n")
        #expect(try String(contentsOfFile: policies + "/team/messy.yaml", encoding: .utf8) == Self.canonical)
        var status = stat()
        #expect(stat(policies + "/team/messy.yaml", &status) == 0 && status.st_mode & 0o777 == 0o640, "the mode is kept")
        #expect(status.st_uid == owner, "the owner is kept")
        #expect(try FileManager.default.contentsOfDirectory(atPath: policies + "/team") == ["messy.yaml"], "no temporary file is left")
        let again = tether(["fmt", "--check", policies])
        #expect(again.code == 0 && again.stdout.isEmpty)
    }

    @Test("A file that is not YAML is named with its line and column and left as it is; the other files are still formatted")
    func badFiles() throws {
        let folder = try TemporaryDirectory("tether-fmt-bad")
        let broken = "apiVersion: tether/v1\nkind: IntegrationPolicy\nspec:\n  edr: [port: 1\n"
        try broken.write(toFile: folder.path + "/broken.yaml", atomically: false, encoding: .utf8)
        try Self.messy.write(toFile: folder.path + "/messy.yaml", atomically: false, encoding: .utf8)
        // Escape bytes in a name are shown escaped, never sent to the terminal.
        let hostile = folder.path + "/evil\u{1B}[2Jname.yaml"
        try "a: 1\nb:   2\n".write(toFile: hostile, atomically: false, encoding: .utf8)
        // A link inside a folder is not followed out of it.
        let outside = try TemporaryDirectory("tether-fmt-outside")
        try Self.messy.write(toFile: outside.path + "/target.yaml", atomically: false, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: folder.path + "/link.yaml", withDestinationPath: outside.path + "/target.yaml")

        let result = tether(["fmt", folder.path])
        #expect(result.code == 1)
        #expect(result.stderr.contains("error: \(folder.path)/broken.yaml:5:1: malformed YAML"), "\(result.stderr)")
        #expect(try String(contentsOfFile: folder.path + "/broken.yaml", encoding: .utf8) == broken)
        #expect(try String(contentsOfFile: folder.path + "/messy.yaml", encoding: .utf8) == Self.canonical)
        #expect(result.stdout.contains("evil\\x1b[2Jname.yaml") && !result.stdout.contains("\u{1B}"))
        #expect(try String(contentsOfFile: hostile, encoding: .utf8) == "a: 1\nb: 2\n")
        #expect(try String(contentsOfFile: outside.path + "/target.yaml", encoding: .utf8) == Self.messy, "the link's target is not touched")

        let missing = tether(["fmt", folder.path + "/nowhere.yaml"])
        #expect(missing.code == 1 && missing.stderr.contains("nowhere.yaml: No such file or directory"))
        let mixed = tether(["fmt", "-", folder.path])
        #expect(mixed.code == 1 && mixed.stderr.contains("run `tether fmt -` on its own"))
    }

    @Test("tether fmt - formats standard input to standard output; with no path it formats the current folder")
    func standardInputAndCurrentFolder() throws {
        let folder = try TemporaryDirectory("tether-fmt-stdin")
        try Self.messy.write(toFile: folder.path + "/messy.yaml", atomically: false, encoding: .utf8)
        let piped = try runProgram("/bin/sh", ["-c", "\"$TETHER\" fmt - < messy.yaml"], in: folder.path, environment: ["TETHER": tetherExecutable])
        #expect(piped.status == 0)
        #expect(piped.output == Self.canonical)
        let check = try runProgram("/bin/sh", ["-c", "\"$TETHER\" fmt --check - < messy.yaml"], in: folder.path, environment: ["TETHER": tetherExecutable])
        #expect(check.status == 1 && check.output.isEmpty)
        let here = try runProgram(tetherExecutable, ["fmt"], in: folder.path)
        #expect(here.status == 0 && here.output == "messy.yaml\n", "\(here.output)")
        #expect(try String(contentsOfFile: folder.path + "/messy.yaml", encoding: .utf8) == Self.canonical)
    }
}
