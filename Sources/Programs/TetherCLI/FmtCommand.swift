import ArgumentParser
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Policy
import Primitives

/// `tether fmt`
struct FmtCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fmt",
        abstract: "Rewrite policy files in one layout (as terraform fmt): key order, indentation and quoting, with every comment kept.",
        discussion: """
            The layout: block style, two spaces of indentation, lists indented under their key, the keys of a policy in the schema's order (labels sorted, unknown keys after the known ones, in their own order), end-of-line comments aligned in runs, one blank line kept where there were any. A plain value stays plain and a quoted one quoted (double quotes), so no value changes its meaning; each result is read back and compared with the file before anything is written. Files that are not valid YAML are left alone and reported with their line.

            Exit codes: 0 every file is in the layout (or was rewritten), 1 with --check some file differs, or some file could not be read or formatted.

            Examples:
              tether fmt                       # every *.yaml and *.yml below the current folder
              tether fmt --check --diff policies/
              tether fmt - < policies/base.yaml
            """)

    @Flag(help: "Write nothing: list the files whose layout differs, and exit 1 if any does (for CI and pre-commit).")
    var check = false

    @Flag(help: "Show each change as a unified diff (with --check too).")
    var diff = false

    @Argument(help: ArgumentHelp("Policy files, or folders to search for *.yaml and *.yml (hidden ones skipped); - formats standard input to standard output.", valueName: "path"))
    var paths: [String] = []

    func validate() throws {
        if paths.contains("-") && paths.count > 1 {
            throw ValidationError("- (standard input) cannot be combined with files: run `tether fmt -` on its own")
        }
    }

    func run() throws {
        if paths == ["-"] {
            try formatStandardInput()
            return
        }
        var failed = false
        var differs = false
        for (file, followsLinks) in try files() {
            let contents: [UInt8]
            let version: stat
            do {
                (contents, version) = try Self.read(file, followingLinks: followsLinks)
            } catch {
                Console.error("error: \(file): \(error.description)")
                failed = true
                continue
            }
            let formatted: String
            do {
                formatted = try PolicyFormatter.format(file: file, contents: contents)
            } catch {
                Console.error("error: \(error.description)")
                failed = true
                continue
            }
            guard Array(formatted.utf8) != contents else { continue }
            differs = true
            Console.out(file)
            if diff {
                // git's a/ and b/ prefixes where they mean something: on a relative path.
                let (old, new) = file.hasPrefix("/") ? (file, file) : ("a/" + file, "b/" + file)
                Console.out(unifiedDiff(from: String(decoding: contents, as: UTF8.self), to: formatted, oldName: old, newName: new))
            }
            if check { continue }
            do {
                try Self.replace(file, with: formatted, readVersion: version)
            } catch {
                Console.error("error: \(file): \(error.description); the file is left as it is")
                failed = true
            }
        }
        if failed || (check && differs) { throw ExitCode(1) }
    }

    private func formatStandardInput() throws {
        guard let contents = readAll(STDIN_FILENO, limit: Self.maximumFileBytes) else {
            throw CommandError("error: standard input: unreadable, or larger than \(Self.maximumFileBytes >> 20) MiB")
        }
        let formatted: String
        do {
            formatted = try PolicyFormatter.format(file: "<stdin>", contents: contents)
        } catch {
            throw CommandError("error: \(error.description)")
        }
        let differs = Array(formatted.utf8) != contents
        if diff {
            if differs { Console.out(unifiedDiff(from: String(decoding: contents, as: UTF8.self), to: formatted, oldName: "<stdin>", newName: "<stdin>")) }
        } else if !check {
            Console.out(rendered: formatted)
        }
        if check && differs { throw ExitCode(1) }
    }

    /// Policy files are small; a bigger one is refused rather than read.
    static let maximumFileBytes = 16 << 20

    /// The files named, and the *.yaml and *.yml files below the folders named, in path order,
    /// each with whether a link may be followed to it: links met inside a folder are not
    /// (they may lead out of it); a link named on the command line is.
    private func files() throws -> [(path: String, followsLinks: Bool)] {
        var found: [(path: String, followsLinks: Bool)] = []
        for path in paths.isEmpty ? ["."] : paths {
            var status = stat()
            guard stat(path, &status) == 0 else {
                throw CommandError("error: \(path): \(String(cString: strerror(errno)))")
            }
            guard status.st_mode & S_IFMT == S_IFDIR else {
                found.append((path, true))
                continue
            }
            var folders = [path]
            while let folder = folders.popLast() {
                let names: [String]
                do {
                    names = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
                } catch {
                    throw CommandError("error: \(folder): cannot list the folder")
                }
                for name in names where !name.hasPrefix(".") {
                    let child = folder == "." && path == "." ? name : (folder.hasSuffix("/") ? folder + name : folder + "/" + name)
                    var entry = stat()
                    guard lstat(child, &entry) == 0 else { continue }
                    switch entry.st_mode & S_IFMT {
                    case S_IFDIR: folders.append(child)
                    case S_IFREG where name.hasSuffix(".yaml") || name.hasSuffix(".yml"): found.append((child, false))
                    default: break
                    }
                }
            }
        }
        return found.sorted { $0.path < $1.path }
    }

    /// A file's bytes and the version read (a regular file within the size bound).
    private static func read(_ path: String, followingLinks: Bool) throws(CommandError) -> ([UInt8], stat) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (followingLinks ? 0 : O_NOFOLLOW))
        guard descriptor >= 0 else {
            throw CommandError(errno == ELOOP ? "became a link while being read; left as it is" : String(cString: strerror(errno)))
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFREG else { throw CommandError("not a regular file") }
        guard let bytes = readAll(descriptor, limit: maximumFileBytes) else {
            throw CommandError("unreadable, or larger than \(maximumFileBytes >> 20) MiB")
        }
        return (bytes, status)
    }

    /// Replaces a file's contents in one step (a new file renamed over it, with the same
    /// owner and permissions), so an interrupted run leaves the old file or the new one, never
    /// half; and only when the file is still the version read (an editor's save meanwhile wins).
    private static func replace(_ path: String, with text: String, readVersion: stat) throws(CommandError) {
        guard let resolved = realpath(path, nil) else { throw CommandError(String(cString: strerror(errno))) }
        let target = String(cString: resolved)
        free(resolved)
        var status = stat()
        guard lstat(target, &status) == 0 else { throw CommandError(String(cString: strerror(errno))) }
        guard Self.sameVersion(status, readVersion) else { throw CommandError("changed while it was being formatted") }
        let folder = target.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        var template = Array("\(folder.isEmpty ? "" : folder)/.tether-fmt-XXXXXX".utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else { throw CommandError("cannot write beside it: \(String(cString: strerror(errno)))") }
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        let temporary = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var closed = false
        defer {
            if !closed { close(descriptor) }
            unlink(temporary)
        }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        // The owner is kept where this user may set it (root formatting another user's file).
        if fchown(descriptor, status.st_uid, status.st_gid) != 0 && getuid() == 0 {
            throw CommandError("cannot give the new file its owner: \(String(cString: strerror(errno)))")
        }
        guard written == bytes.count, fchmod(descriptor, status.st_mode & 0o7777) == 0, fsync(descriptor) == 0 else {
            throw CommandError("cannot write beside it: \(String(cString: strerror(errno)))")
        }
        closed = true
        var last = stat()
        guard close(descriptor) == 0, lstat(target, &last) == 0, Self.sameVersion(last, readVersion) else {
            throw CommandError("changed while it was being formatted")
        }
        guard rename(temporary, target) == 0 else {
            throw CommandError("cannot replace it: \(String(cString: strerror(errno)))")
        }
    }

    private static func sameVersion(_ left: stat, _ right: stat) -> Bool {
        left.st_dev == right.st_dev && left.st_ino == right.st_ino && left.st_size == right.st_size
            && left.st_mtim.tv_sec == right.st_mtim.tv_sec && left.st_mtim.tv_nsec == right.st_mtim.tv_nsec
    }
}
