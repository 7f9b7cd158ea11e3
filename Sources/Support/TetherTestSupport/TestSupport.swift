import CProcessShims
import Foundation

/// A temporary folder, removed when the value is released.
package final class TemporaryDirectory: @unchecked Sendable {
    package let url: URL
    package var path: String { url.path }

    package init(_ label: String = "tether") throws {
        url = FileManager.default.temporaryDirectory.appending(path: "\(label)-\(UUID().uuidString.prefix(8))", directoryHint: .isDirectory)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(at: url)
    }

    /// Writes `text` to a file below the folder, creating folders on the way; returns its path.
    @discardableResult
    package func write(_ relativePath: String, _ text: String) throws -> String {
        try write(relativePath, Data(text.utf8))
    }

    @discardableResult
    package func write(_ relativePath: String, _ data: Data) throws -> String {
        let file = url.appending(path: relativePath)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try writeFile(file.path, data, mode: 0o644)
        return file.path
    }

    package func subfolder(_ name: String) throws -> String {
        let folder = url.appending(path: name, directoryHint: .isDirectory)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder.path
    }
}

/// The result of running a program.
package struct ProgramResult: Sendable {
    package let status: Int32
    package let output: String
}

/// Runs a program to completion and returns its exit status and combined output.
/// Only for short-lived tools (git, openssl); long-running servers use `BackgroundProcess`.
/// Started with posix_spawn, its output in a file of its own: not Foundation's `Process`, whose
/// pipes' descriptors can be closed twice under many processes at once, closing another test's
/// (swiftlang/swift#57827: a test run then dies of EBADF in FileHandle).
@discardableResult
package func runProgram(_ executable: String, _ arguments: [String], in directory: String? = nil,
                       environment: [String: String] = [:]) throws -> ProgramResult {
    let outputs = try TemporaryDirectory("tether-run")
    let output = outputs.url.appending(path: "output").path
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, output, O_WRONLY | O_CREAT | O_APPEND, 0o600)
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO)
    // The test's own descriptors (sockets, other tests' files) stay out of the child.
    _ = tether_spawn_close_from(&actions, 3)
    // A program found on PATH, and a working folder, through env(1) (`env -C DIR`).
    var command = executable.hasPrefix("/") ? [executable] + arguments : ["/usr/bin/env", executable] + arguments
    if let directory { command = ["/usr/bin/env", "-C", directory] + command }
    let variables = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }.map { "\($0.key)=\($0.value)" }
    let argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) } + [nil]
    let envp: [UnsafeMutablePointer<CChar>?] = variables.map { strdup($0) } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    var child: pid_t = 0
    let started = posix_spawn(&child, command[0], &actions, nil, argv, envp)
    guard started == 0 else { throw FixtureError("cannot start \(command[0]): \(String(cString: strerror(started)))") }
    var status: Int32 = 0
    while waitpid(child, &status, 0) < 0 && errno == EINTR {}
    // As Process reports it: the exit code, or the signal that ended the program.
    let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : status & 0x7f
    let data = FileManager.default.contents(atPath: output) ?? Data()
    return ProgramResult(status: code, output: String(decoding: data, as: UTF8.self))
}

/// Errors from test fixtures.
package struct FixtureError: Error, CustomStringConvertible {
    package let description: String
    package init(_ description: String) { self.description = description }
}

/// A real git repository made with the git command line, with pinned author and commit dates
/// so commit ids are stable.
package final class GitFixture: @unchecked Sendable {
    package let directory: TemporaryDirectory
    package var path: String { directory.path }
    private var tick = 0

    package init() throws {
        directory = try TemporaryDirectory("tether-repo")
        try git("init", "-q", "-b", "main")
    }

    /// Writes files (path → contents) and commits them; returns the commit id.
    @discardableResult
    package func commit(_ files: [String: String], message: String = "Update policies") throws -> String {
        for (file, contents) in files { try directory.write(file, contents) }
        return try commitAll(message: message)
    }

    /// Writes binary files and commits them.
    @discardableResult
    package func commit(data files: [String: Data], message: String) throws -> String {
        for (file, contents) in files { try directory.write(file, contents) }
        return try commitAll(message: message)
    }

    @discardableResult
    package func commitAll(message: String) throws -> String {
        try git("add", "-A")
        tick += 1
        let date = "2026-11-01T12:\(String(format: "%02d", tick % 60)):00Z"
        try git("-c", "user.name=Tether Tests", "-c", "user.email=tests@tether.invalid", "commit", "-q", "--allow-empty", "-m", message,
                environment: ["GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date])
        return try git("rev-parse", "HEAD").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @discardableResult
    package func git(_ arguments: String..., environment: [String: String] = [:]) throws -> String {
        let result = try runProgram("git", arguments, in: path, environment: environment)
        guard result.status == 0 else { throw FixtureError("git \(arguments.joined(separator: " ")) failed: \(result.output)") }
        return result.output
    }
}

/// A throw-away PKI made by scripts/make-pki: `ca.pem`, `server.pem`/`server.key`,
/// `client.pem`/`client.key` and `edr-client.p12` with its password in `edr-client.pass`.
package final class TestPKI: @unchecked Sendable {
    package let directory: TemporaryDirectory

    /// The test process's PKI, made once: tests that only read it share it (each one made
    /// costs several `openssl` runs). Tests that write into a PKI's folder make their own.
    package static let shared: TestPKI = {
        do {
            return try TestPKI()
        } catch {
            fatalError("cannot make the test PKI: \(error)")
        }
    }()

    /// Certificates valid for `days` days from now.
    package init(days: Int = 90) throws {
        directory = try TemporaryDirectory("tether-pki")
        let script = repositoryRoot.appending(path: "scripts/make-pki").path
        let result = try runProgram("/bin/bash", [script, directory.path, String(days)])
        guard result.status == 0 else { throw FixtureError("make-pki failed: \(result.output)") }
    }

    package func path(_ name: String) -> String { directory.url.appending(path: name).path }
    package func data(_ name: String) throws -> Data { try Data(contentsOf: directory.url.appending(path: name)) }
    package func text(_ name: String) throws -> String { String(decoding: try data(name), as: UTF8.self) }

    /// Runs `openssl` with arguments in the PKI's folder.
    @discardableResult
    package func openssl(_ arguments: String...) throws -> String {
        let result = try runProgram("openssl", arguments, in: directory.path)
        guard result.status == 0 else { throw FixtureError("openssl \(arguments.joined(separator: " ")) failed: \(result.output)") }
        return result.output
    }
}

/// The package's root folder (where Package.swift is).
package let repositoryRoot: URL = {
    var url = URL(fileURLWithPath: #filePath)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.appending(path: "Package.swift").path) { return url }
    }
    return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
}()

/// SHA-256 of a file's bytes, as `openssl dgst` prints it, to show a file is byte-for-byte unchanged.
package func fileDigest(_ path: String) throws -> String {
    let result = try runProgram("openssl", ["dgst", "-sha256", "-r", path])
    guard result.status == 0 else { throw FixtureError("openssl dgst failed: \(result.output)") }
    return String(result.output.prefix(64))
}

/// Writes a program file (mode 0755); see `writeFile`.
package func writeExecutable(_ path: String, _ bytes: Data) throws {
    try writeFile(path, bytes, mode: 0o755)
}

/// Writes a file through a descriptor that no child process inherits (O_CLOEXEC). A test
/// running in parallel may start a long-lived child at that moment; had it inherited the
/// descriptor, the file would stay open for writing, and executing it (a script a test wrote)
/// would fail with "Text file busy" (ETXTBSY).
package func writeFile(_ path: String, _ bytes: Data, mode: mode_t) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else { throw FixtureError("cannot write \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    guard written == bytes.count else { throw FixtureError("cannot write \(path): \(String(cString: strerror(errno)))") }
    fchmod(fd, mode)
}
