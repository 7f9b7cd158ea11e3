import AgentInterface
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import HTTPTransport
import IntegrationModel
import Primitives
import SQLiteDB
import Sensors
import WireFormat
import X509

/// A file the platform had put in quarantine, as `tether agent quarantine list` shows it.
package struct QuarantinedFile: Sendable, Equatable {
    package let id: String
    package let originalPath: String
    package let size: Int
    package let sha256: String
    package let owner: UInt32
    package let group: UInt32
    package let mode: UInt32
    package let at: Date
    package let commandId: String?
    /// When it went back (nil while it is held).
    package let restoredAt: Date?
}

/// Where a get-file's bytes go: the platform, through the connection the sync uses.
struct UploadChannel {
    let client: HTTPClient
    /// `…/kata/edr/v1/sensors/{agentId}`.
    let base: String
    let server: Endpoint
}

/// The vendor's other response actions for Linux hosts, carried out on this host
/// (docs/architecture.md, "Response actions"): terminate a process, get, delete, quarantine
/// and restore a file. Each result says what happened here, never what was asked.
extension ConnectorRuntime {
    /// A get-file sends at most this much unless the command allows more (and never more than `largestUpload`).
    package static let defaultUploadBytes = 100 << 20
    static let largestUpload = 1 << 30
    /// The quarantine store's folder in the state directory (0700; files 0400).
    package static let quarantineFolder = "quarantine"

    // MARK: - terminate-process

    func terminateProcess(_ command: Command) -> (String, String) {
        let outcome: ProcessTermination.Outcome
        if let given = command.sha256 {
            let sha256 = given.lowercased()
            guard command.pid == nil else { return ("rejected", "give pid with startTime, or sha256, not both") }
            guard sha256.count == 64, sha256.allSatisfy(\.isHexDigit) else {
                return ("rejected", "'\(TerminalText.excerpt(given))' is not a SHA-256 (64 hex digits)")
            }
            outcome = ProcessTermination.terminate(sha256: sha256)
        } else if let pid = command.pid {
            guard (2...Int(Int32.max)).contains(pid) else { return ("rejected", "pid \(pid) is not a process Tether may end") }
            guard let startTime = command.startTime else {
                return ("rejected", "pid \(pid) needs its startTime (as the process-start event gave it), so that a reused pid is never hit")
            }
            outcome = ProcessTermination.terminate(pid: Int32(pid), startedAt: startTime.date)
        } else {
            return ("rejected", "a terminate-process command needs pid and startTime, or sha256")
        }
        return (outcome.ended.isEmpty ? "failed" : "applied", outcome.summary)
    }

    // MARK: - Which files the platform may touch

    /// Folders whose files are never fetched, deleted or quarantined: the kernel's views, devices,
    /// and Tether's own (its state, configuration and programs).
    private func forbiddenFolders() -> [String] {
        ["/proc", "/sys", "/dev", "/etc/tether", directory.resolvingSymlinksInPath().path] + Self.ownPrograms
    }

    /// tether and tether-fetch, where this process runs them from.
    private static let ownPrograms: [String] = {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, Int(PATH_MAX))
        guard count > 0 else { return [] }
        let program = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = program.lastIndex(of: "/") else { return [program] }
        return [program, String(program[..<slash]) + "/tether-fetch"]
    }()

    /// The path with its folder's symbolic links resolved (the last component is kept as it is,
    /// so a link there is seen as a link), or why the platform may not name it.
    private func checkedPath(_ given: String?) -> Result<String, ActionRefusal> {
        guard let given, given.hasPrefix("/") else { return .failure(ActionRefusal("the path must be absolute")) }
        guard !given.utf8.contains(0) else { return .failure(ActionRefusal("the path holds a NUL byte")) }
        let slash = given.lastIndex(of: "/")!
        let parent = slash == given.startIndex ? "/" : String(given[..<slash])
        let name = String(given[given.index(after: slash)...])
        guard !name.isEmpty, name != ".", name != ".." else { return .failure(ActionRefusal("\(TerminalText.excerpt(given)) does not name a file")) }
        var resolved = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard realpath(parent, &resolved) != nil else {
            return .failure(ActionRefusal("\(TerminalText.excerpt(given)): \(String(cString: strerror(errno)))"))
        }
        let folder = String(decoding: resolved.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let path = folder == "/" ? "/" + name : folder + "/" + name
        for forbidden in forbiddenFolders() where path == forbidden || path.hasPrefix(forbidden + "/") {
            return .failure(ActionRefusal("\(TerminalText.excerpt(path)) is under \(forbidden), which the platform may not touch"))
        }
        return .success(path)
    }

    /// Opens a regular file (not a link, folder, device, socket or pipe) for reading.
    private func openRegularFile(_ path: String) -> Result<(fd: Int32, info: stat), ActionRefusal> {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let why = errno == ELOOP ? "is a symbolic link; name the file it points to" : String(cString: strerror(errno))
            return .failure(ActionRefusal("\(TerminalText.excerpt(path)) \(errno == ELOOP ? why : ": " + why)"))
        }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            return .failure(ActionRefusal("\(TerminalText.excerpt(path)) is not a regular file (a folder, device, socket or pipe)"))
        }
        return .success((fd, info))
    }

    /// The regular file a command names, checked and opened for reading.
    private func target(_ given: String?) -> Result<(path: String, fd: Int32, info: stat), ActionRefusal> {
        checkedPath(given).flatMap { path in openRegularFile(path).map { (path, $0.fd, $0.info) } }
    }

    // MARK: - get-file

    /// Sends the file's bytes to the platform (`POST …/commands/{id}/file`, read as they are
    /// sent) with its SHA-256, within the size bound.
    func getFile(_ command: Command, id: String, channel: UploadChannel?) -> (String, String) {
        let bound = min(command.maxBytes ?? Self.defaultUploadBytes, Self.largestUpload)
        guard bound > 0 else { return ("rejected", "maxBytes must be positive") }
        let path: String, opened: (fd: Int32, info: stat)
        switch target(command.path) {
        case .success(let found): (path, opened) = (found.path, (found.fd, found.info))
        case .failure(let refusal): return ("refused", refusal.reason)
        }
        defer { close(opened.fd) }
        let size = Int(opened.info.st_size)
        guard size <= bound else { return ("refused", "\(TerminalText.excerpt(path)) has \(size) bytes, over the bound of \(bound) (maxBytes)") }
        guard let channel else { return ("failed", "no connection to the platform to send the file over") }
        guard let digests = fileDigests(fileDescriptor: opened.fd) else { return ("failed", "\(TerminalText.excerpt(path)) cannot be read") }
        do {
            let response = try channel.client.upload(url: "\(channel.base)/commands/\(id)/file",
                                                      headers: ["X-Tether-SHA256: \(digests.sha256)"], fileDescriptor: opened.fd, size: size)
            guard (200..<300).contains(response.status) else { return ("failed", "the platform answered HTTP \(response.status) to the file") }
        } catch {
            return ("failed", "\(TerminalText.excerpt(path)) could not be sent: \(error)")
        }
        var after = stat()
        if fstat(opened.fd, &after) == 0, after.st_size != opened.info.st_size || after.st_mtim.tv_sec != opened.info.st_mtim.tv_sec
            || after.st_mtim.tv_nsec != opened.info.st_mtim.tv_nsec {
            return ("failed", "\(TerminalText.excerpt(path)) changed while it was sent; ask again")
        }
        return ("applied", "sent \(TerminalText.excerpt(path)): \(size) bytes, sha256 \(digests.sha256)")
    }

    // MARK: - delete-file

    func deleteFile(_ command: Command) -> (String, String) {
        let path: String, opened: (fd: Int32, info: stat)
        switch target(command.path) {
        case .success(let found): (path, opened) = (found.path, (found.fd, found.info))
        case .failure(let refusal): return ("refused", refusal.reason)
        }
        let digest = fileDigests(fileDescriptor: opened.fd)?.sha256 ?? "unknown"
        close(opened.fd)
        guard unlink(path) == 0 else { return ("failed", "\(TerminalText.excerpt(path)) could not be deleted: \(String(cString: strerror(errno)))") }
        return ("applied", "deleted \(TerminalText.excerpt(path)): \(opened.info.st_size) bytes, sha256 \(digest)")
    }

    // MARK: - Quarantine

    /// Moves the file into the quarantine store: written down first (`moving`), then the
    /// bytes copied into a file only root may read, synced, the original removed, and the row
    /// marked `held`. A kill before the original is removed leaves it where it was.
    func quarantineFile(_ command: Command, id commandId: String) -> (String, String) {
        let path: String, opened: (fd: Int32, info: stat)
        switch target(command.path) {
        case .success(let found): (path, opened) = (found.path, (found.fd, found.info))
        case .failure(let refusal): return ("refused", refusal.reason)
        }
        defer { close(opened.fd) }
        guard let digests = fileDigests(fileDescriptor: opened.fd) else { return ("failed", "\(TerminalText.excerpt(path)) cannot be read") }
        let id = UUID().uuidString.lowercased()
        let folder = directory.appendingPathComponent(Self.quarantineFolder).path
        mkdir(folder, 0o700)
        chmod(folder, 0o700)
        let stored = folder + "/" + id
        do {
            try storeCall {
                try store.database.query("""
                    INSERT INTO quarantine (id, original_path, size, sha256, owner, grp, mode, at, command_id, state)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'moving')
                    """, [.text(id), .text(path), .integer(Int64(opened.info.st_size)), .text(digests.sha256), .integer(Int64(opened.info.st_uid)),
                          .integer(Int64(opened.info.st_gid)), .integer(Int64(opened.info.st_mode & 0o7777)), .real(clock().timeIntervalSince1970),
                          .text(commandId)])
            }
            try copyContents(from: opened.fd, to: stored, mode: 0o400)
        } catch {
            unlink(stored)
            _ = try? store.database.query("DELETE FROM quarantine WHERE id = ?", [.text(id)])
            return ("failed", "\(TerminalText.excerpt(path)) could not be put in quarantine: \(error); it stays where it was")
        }
        guard unlink(path) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(stored)
            _ = try? store.database.query("DELETE FROM quarantine WHERE id = ?", [.text(id)])
            return ("failed", "\(TerminalText.excerpt(path)) could not be removed (\(why)); it stays where it was")
        }
        _ = try? store.database.query("UPDATE quarantine SET state = 'held' WHERE id = ?", [.text(id)])
        return ("applied", "quarantined \(TerminalText.excerpt(path)) as \(id): \(opened.info.st_size) bytes, sha256 \(digests.sha256)")
    }

    /// Puts a quarantined file back where it was, with its owner and mode; refused when
    /// something is there now.
    package func restoreFile(quarantineId id: String?) -> (String, String) {
        guard let id, !id.isEmpty, id.allSatisfy({ $0.isHexDigit || $0 == "-" }) else {
            return ("rejected", "a restore needs the quarantineId that quarantine-file answered")
        }
        guard let row = try? store.database.query("SELECT original_path, owner, grp, mode, state, sha256 FROM quarantine WHERE id = ?", [.text(id)]).first,
              let path = row[0].text else {
            return ("failed", "nothing is in quarantine as \(id)")
        }
        guard row[4].text == "held" else { return ("failed", "\(id) is not held (\(row[4].text ?? "?"))") }
        let stored = directory.appendingPathComponent(Self.quarantineFolder).appendingPathComponent(id).path
        let source = open(stored, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard source >= 0 else { return ("failed", "the quarantined copy of \(TerminalText.excerpt(path)) is missing: \(String(cString: strerror(errno)))") }
        defer { close(source) }
        guard fileDigests(fileDescriptor: source)?.sha256 == row[5].text else {
            return ("failed", "the quarantined copy of \(TerminalText.excerpt(path)) no longer has its SHA-256; it is not restored")
        }
        do {
            // O_EXCL: whatever is at the path now is never overwritten.
            try copyContents(from: source, to: path, mode: mode_t(row[3].integer ?? 0o600), owner: (uid_t(row[1].integer ?? 0), gid_t(row[2].integer ?? 0)))
        } catch {
            return ("failed", "\(TerminalText.excerpt(path)) could not be restored: \(error)")
        }
        unlink(stored)
        _ = try? store.database.query("UPDATE quarantine SET state = 'restored', restored_at = ? WHERE id = ?",
                                      [.real(clock().timeIntervalSince1970), .text(id)])
        return ("applied", "restored \(TerminalText.excerpt(path)) from quarantine \(id)")
    }

    /// Every file put in quarantine, newest first (restored ones too, with when).
    package func quarantinedFiles() throws -> [QuarantinedFile] {
        try storeCall {
            try store.database.query("""
                SELECT id, original_path, size, sha256, owner, grp, mode, at, command_id, restored_at FROM quarantine
                WHERE state != 'moving' ORDER BY at DESC
                """).compactMap { row in
                guard let id = row[0].text, let path = row[1].text, let sha = row[3].text, let at = row[7].real else { return nil }
                return QuarantinedFile(id: id, originalPath: path, size: Int(row[2].integer ?? 0), sha256: sha, owner: UInt32(row[4].integer ?? 0),
                                       group: UInt32(row[5].integer ?? 0), mode: UInt32(row[6].integer ?? 0), at: Date(timeIntervalSince1970: at),
                                       commandId: row[8].text, restoredAt: row[9].real.map { Date(timeIntervalSince1970: $0) })
            }
        }
    }

    /// Copies an open file's bytes into a new file at `path` (never over one that exists), synced.
    private func copyContents(from source: Int32, to path: String, mode: mode_t, owner: (uid_t, gid_t)? = nil) throws {
        let target = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard target >= 0 else { throw ActionRefusal("\(TerminalText.excerpt(path)): \(String(cString: strerror(errno)))") }
        var failure: String?
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var offset: off_t = 0
        while failure == nil {
            let count = buffer.withUnsafeMutableBytes { pread(source, $0.baseAddress, $0.count, offset) }
            if count < 0 && errno == EINTR { continue }
            if count < 0 { failure = "reading: \(String(cString: strerror(errno)))"; break }
            if count == 0 { break }
            var written = 0
            while written < count {
                let step = buffer.withUnsafeBytes { Glibc.write(target, $0.baseAddress! + written, count - written) }
                if step < 0 && errno == EINTR { continue }
                guard step > 0 else {
                    failure = "writing: \(String(cString: strerror(errno)))"
                    break
                }
                written += step
            }
            offset += off_t(count)
        }
        if failure == nil, let owner, fchown(target, owner.0, owner.1) != 0 { failure = "setting the owner: \(String(cString: strerror(errno)))" }
        if failure == nil, fchmod(target, mode) != 0 { failure = "setting the mode: \(String(cString: strerror(errno)))" }
        if failure == nil, fsync(target) != 0 { failure = "syncing: \(String(cString: strerror(errno)))" }
        close(target)
        if let failure {
            unlink(path)
            throw ActionRefusal("\(TerminalText.excerpt(path)): \(failure)")
        }
    }
}

/// Why a response action was refused or failed, for its result.
struct ActionRefusal: Error, CustomStringConvertible {
    let reason: String
    init(_ reason: String) { self.reason = reason }
    var description: String { reason }
}
