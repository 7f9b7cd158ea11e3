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
        ["/proc", "/sys", "/dev", "/etc/tether", directory.path, directory.resolvingSymlinksInPath().path]
    }

    /// tether and tether-fetch, where this process runs them from (after an upgrade the kernel
    /// names the old file "… (deleted)"; the new one has the same path).
    private static func ownPrograms() -> [String] {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, Int(PATH_MAX))
        guard count > 0 else { return [] }
        var program = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if program.hasSuffix(" (deleted)") { program.removeLast(" (deleted)".count) }
        guard let slash = program.lastIndex(of: "/") else { return [program] }
        return [program, String(program[..<slash]) + "/tether-fetch"]
    }

    /// The file a command names, its folder opened without following a link, refused when it is
    /// (by path, or by the folder's or the file's identity, which bind mounts cannot disguise)
    /// one the platform may not touch.
    private func locate(_ given: String?) -> Result<HostFile, ActionRefusal> {
        let file: HostFile
        do {
            file = try HostFile(given)
        } catch {
            return .failure(ActionRefusal("\(error)"))
        }
        let forbidden = forbiddenFolders()
        for folder in forbidden where file.path == folder || file.path.hasPrefix(folder + "/") {
            return .failure(ActionRefusal("\(TerminalText.excerpt(file.path)) is under \(folder), which the platform may not touch"))
        }
        if file.folderIsKernelView {
            return .failure(ActionRefusal("\(TerminalText.excerpt(file.path)) is on /proc or /sys (through another path), which the platform may not touch"))
        }
        if let identity = file.folderIdentity {
            for folder in forbidden where FileIdentity(path: folder) == identity {
                return .failure(ActionRefusal("\(TerminalText.excerpt(file.path)) is in \(folder) (through another path), which the platform may not touch"))
            }
        }
        return .success(file)
    }

    /// The regular file a command names, located and opened for reading; with the command's
    /// `sha256`, only when the file has it (a path seen in a container may name another file here).
    private func target(_ command: Command) -> Result<(file: HostFile, digests: (sha256: String, md5: String)), ActionRefusal> {
        locate(command.path).flatMap { file in
            do {
                try file.openForReading()
            } catch {
                return .failure(ActionRefusal("\(error)"))
            }
            let programs = Set(Self.ownPrograms().compactMap { FileIdentity(path: $0) })
            if programs.contains(FileIdentity(file.info)) {
                return .failure(ActionRefusal("\(TerminalText.excerpt(file.path)) is one of Tether's own programs, which the platform may not touch"))
            }
            guard let digests = fileDigests(fileDescriptor: file.descriptor) else {
                return .failure(ActionRefusal("\(TerminalText.excerpt(file.path)) cannot be read"))
            }
            if let expected = command.sha256?.lowercased(), expected != digests.sha256 {
                return .failure(ActionRefusal("\(TerminalText.excerpt(file.path)) has sha256 \(digests.sha256), not \(TerminalText.excerpt(expected)): another file than the one meant; nothing was done"))
            }
            return .success((file, digests))
        }
    }

    /// The link count, said when a file has other names that the action leaves.
    private static func otherNames(_ info: stat) -> String {
        info.st_nlink > 1 ? " (the file has \(info.st_nlink - 1) other name\(info.st_nlink == 2 ? "" : "s"), which stay)" : ""
    }

    // MARK: - get-file

    /// Sends the file's bytes to the platform (`POST …/commands/{id}/file`, read as they are
    /// sent) with its SHA-256, within the size bound.
    func getFile(_ command: Command, id: String, channel: UploadChannel?) -> (String, String) {
        let bound = min(command.maxBytes ?? Self.defaultUploadBytes, Self.largestUpload)
        guard bound > 0 else { return ("rejected", "maxBytes must be positive") }
        let file: HostFile, digests: (sha256: String, md5: String)
        switch target(command) {
        case .success(let found): (file, digests) = found
        case .failure(let refusal): return ("refused", refusal.reason)
        }
        let path = TerminalText.excerpt(file.path)
        let size = Int(file.info.st_size)
        guard size <= bound else { return ("refused", "\(path) has \(size) bytes, over the bound of \(bound) (maxBytes)") }
        guard let channel else { return ("failed", "no connection to the platform to send the file over") }
        do {
            let response = try channel.client.upload(url: "\(channel.base)/commands/\(id)/file",
                                                      headers: ["X-Tether-SHA256: \(digests.sha256)"], fileDescriptor: file.descriptor, size: size)
            guard (200..<300).contains(response.status) else { return ("failed", "the platform answered HTTP \(response.status) to the file") }
        } catch {
            return ("failed", "\(path) could not be sent: \(error)")
        }
        var after = stat()
        if fstat(file.descriptor, &after) == 0, after.st_size != file.info.st_size || after.st_ctim.tv_sec != file.info.st_ctim.tv_sec
            || after.st_ctim.tv_nsec != file.info.st_ctim.tv_nsec {
            return ("failed", "\(path) changed while it was sent; ask again")
        }
        return ("applied", "sent \(path): \(size) bytes, sha256 \(digests.sha256)")
    }

    // MARK: - delete-file

    func deleteFile(_ command: Command) -> (String, String) {
        let file: HostFile, digests: (sha256: String, md5: String)
        switch target(command) {
        case .success(let found): (file, digests) = found
        case .failure(let refusal): return ("refused", refusal.reason)
        }
        do {
            try file.removeOpened()
        } catch {
            return ("failed", "\(error)")
        }
        return ("applied", "deleted \(TerminalText.excerpt(file.path)): \(file.info.st_size) bytes, sha256 \(digests.sha256)" + Self.otherNames(file.info))
    }

    // MARK: - Quarantine

    /// Moves the file into the quarantine store: written down first (`moving`), then the
    /// bytes copied into a file only root may read and synced, the copy's SHA-256 checked
    /// against the file's, the original removed, and the row marked `held`. A kill before the
    /// original is removed leaves it where it was; one after is finished at the next start.
    func quarantineFile(_ command: Command, id commandId: String) -> (String, String) {
        withQuarantineLock(wait: true) { quarantineLocked(command, id: commandId) } ?? ("failed", "the quarantine store cannot be locked")
    }

    /// Runs `body` holding the quarantine store's lock (`quarantine/.lock`), which every
    /// process's quarantine, restore and recovery take: none sees another's half-done work.
    /// Without `wait`, nil when another holds it.
    private func withQuarantineLock<T>(wait: Bool, _ body: () -> T) -> T? {
        let folder = directory.appending(path: Self.quarantineFolder).path
        mkdir(folder, 0o700)
        chmod(folder, 0o700)
        return withLockFile(folder + "/.lock", wait: wait, body)
    }

    private func quarantineLocked(_ command: Command, id commandId: String) -> (String, String) {
        let file: HostFile, digests: (sha256: String, md5: String)
        switch target(command) {
        case .success(let found): (file, digests) = found
        case .failure(let refusal): return ("refused", refusal.reason)
        }
        let path = TerminalText.excerpt(file.path)
        let folder = directory.appending(path: Self.quarantineFolder).path
        // Room for the copy, and some to spare for the stores beside it.
        var space = statvfs()
        if statvfs(folder, &space) == 0, UInt64(space.f_bavail) * UInt64(space.f_frsize) < UInt64(file.info.st_size) + (64 << 20) {
            return ("failed", "\(path) (\(file.info.st_size) bytes) does not fit in the quarantine store with 64 MiB to spare; it stays where it was")
        }
        let id = UUID().uuidString.lowercased()
        let stored = folder + "/" + id
        do {
            try storeCall {
                try store.database.query("""
                    INSERT INTO quarantine (id, original_path, size, sha256, owner, grp, mode, at, command_id, state)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'moving')
                    """, [.text(id), .text(file.path), .integer(Int64(file.info.st_size)), .text(digests.sha256), .integer(Int64(file.info.st_uid)),
                          .integer(Int64(file.info.st_gid)), .integer(Int64(file.info.st_mode & 0o7777)), .real(clock().timeIntervalSince1970),
                          .text(commandId)])
            }
            let target = open(stored, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard target >= 0 else { throw ActionRefusal("the store: \(String(cString: strerror(errno)))") }
            try Self.copy(from: file.descriptor, to: target, mode: 0o400, size: Int(file.info.st_size))
            let check = open(stored, O_RDONLY | O_CLOEXEC)
            defer { if check >= 0 { close(check) } }
            guard check >= 0, fileDigests(fileDescriptor: check)?.sha256 == digests.sha256 else {
                throw ActionRefusal("the file changed while it was copied")
            }
            // The copy is whole and checked: from here a kill is finished by holding it.
            try store.database.query("UPDATE quarantine SET state = 'copied' WHERE id = ?", [.text(id)])
            try file.removeOpened()
        } catch {
            unlink(stored)
            _ = try? store.database.query("DELETE FROM quarantine WHERE id = ?", [.text(id)])
            return ("failed", "\(path) could not be put in quarantine: \(error); it stays where it was")
        }
        _ = try? store.database.query("UPDATE quarantine SET state = 'held' WHERE id = ?", [.text(id)])
        return ("applied", "quarantined \(path) as \(id): \(file.info.st_size) bytes, sha256 \(digests.sha256)" + Self.otherNames(file.info))
    }

    /// Puts a quarantined file back where it was, with its owner and mode: its folder reached
    /// without following a link and checked again, never over a file that is there now.
    package func restoreFile(quarantineId id: String?) -> (String, String) {
        guard let id, !id.isEmpty, id.allSatisfy({ $0.isHexDigit || $0 == "-" }) else {
            return ("rejected", "a restore needs the quarantineId that quarantine-file answered")
        }
        return withQuarantineLock(wait: true) { restoreLocked(id) } ?? ("failed", "the quarantine store cannot be locked")
    }

    private func restoreLocked(_ id: String) -> (String, String) {
        guard let row = try? store.database.query("SELECT original_path, owner, grp, mode, state, sha256 FROM quarantine WHERE id = ?", [.text(id)]).first,
              let original = row[0].text else {
            return ("failed", "nothing is in quarantine as \(id)")
        }
        guard row[4].text == "held" else { return ("failed", "\(id) is not held (\(row[4].text ?? "?"))") }
        let path = TerminalText.excerpt(original)
        let stored = directory.appending(path: Self.quarantineFolder).appending(path: id).path
        let source = open(stored, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard source >= 0 else { return ("failed", "the quarantined copy of \(path) is missing: \(String(cString: strerror(errno)))") }
        defer { close(source) }
        guard fileDigests(fileDescriptor: source)?.sha256 == row[5].text else {
            return ("failed", "the quarantined copy of \(path) no longer has its SHA-256; it is not restored")
        }
        let file: HostFile
        switch locate(original) {
        case .success(let located): file = located
        case .failure(let refusal): return ("failed", refusal.reason)
        }
        // Set-user-ID and set-group-ID bits are not given back: the service may not set them
        // (RestrictSUIDSGID), and a file that came back from quarantine should not carry them.
        let saved = mode_t(row[3].integer ?? 0o600)
        let mode = saved & ~mode_t(S_ISUID | S_ISGID)
        do {
            let target = try file.createNew()
            do {
                try Self.copy(from: source, to: target, mode: mode, owner: (uid_t(row[1].integer ?? 0), gid_t(row[2].integer ?? 0)))
            } catch {
                file.removeCreated()
                throw error
            }
        } catch {
            return ("failed", "\(path) could not be restored: \(error)")
        }
        unlink(stored)
        _ = try? store.database.query("UPDATE quarantine SET state = 'restored', restored_at = ? WHERE id = ?",
                                      [.real(clock().timeIntervalSince1970), .text(id)])
        return ("applied", "restored \(path) from quarantine \(id)" + (mode == saved ? "" : " (without its set-user-ID or set-group-ID bit)"))
    }

    /// Finishes what a kill left of a quarantine (when a runtime opens, unless another process
    /// holds the store's lock: then it is working, not interrupted). A row still `moving` (the
    /// original was not touched) is dropped with its copy; a row `copied` (the copy was whole
    /// and checked) is held once its copy still has its SHA-256, since its original may be gone.
    func finishInterruptedQuarantines() {
        guard let rows = try? store.database.query("SELECT id, state, sha256 FROM quarantine WHERE state IN ('moving', 'copied')"), !rows.isEmpty else { return }
        _ = withQuarantineLock(wait: false) {
            for row in rows {
                guard let id = row[0].text else { continue }
                let stored = directory.appending(path: Self.quarantineFolder).appending(path: id).path
                let copy = open(stored, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                let whole = copy >= 0 && fileDigests(fileDescriptor: copy)?.sha256 == row[2].text
                if copy >= 0 { close(copy) }
                if row[1].text == "copied", whole {
                    _ = try? store.database.query("UPDATE quarantine SET state = 'held' WHERE id = ?", [.text(id)])
                } else {
                    unlink(stored)
                    _ = try? store.database.query("DELETE FROM quarantine WHERE id = ?", [.text(id)])
                }
            }
        }
    }

    /// Every file put in quarantine, newest first (restored ones too, with when).
    package func quarantinedFiles() throws -> [QuarantinedFile] {
        try storeCall {
            try store.database.query("""
                SELECT id, original_path, size, sha256, owner, grp, mode, at, command_id, restored_at FROM quarantine
                WHERE state IN ('held', 'restored') ORDER BY at DESC
                """).compactMap { row in
                guard let id = row[0].text, let path = row[1].text, let sha = row[3].text, let at = row[7].real else { return nil }
                return QuarantinedFile(id: id, originalPath: path, size: Int(row[2].integer ?? 0), sha256: sha, owner: UInt32(row[4].integer ?? 0),
                                       group: UInt32(row[5].integer ?? 0), mode: UInt32(row[6].integer ?? 0), at: Date(timeIntervalSince1970: at),
                                       commandId: row[8].text, restoredAt: row[9].real.map { Date(timeIntervalSince1970: $0) })
            }
        }
    }

    /// Copies an open file's bytes from its start into `target` (then closed), with its mode
    /// and owner, synced; with `size`, never more than that (a file grown meanwhile fails).
    private static func copy(from source: Int32, to target: Int32, mode: mode_t, owner: (uid_t, gid_t)? = nil, size: Int? = nil) throws {
        defer { close(target) }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var offset: off_t = 0
        while true {
            if let size, offset > off_t(size) { throw ActionRefusal("the file grew while it was copied") }
            let count = buffer.withUnsafeMutableBytes { pread(source, $0.baseAddress, $0.count, offset) }
            if count < 0 && errno == EINTR { continue }
            if count < 0 { throw ActionRefusal("reading: \(String(cString: strerror(errno)))") }
            if count == 0 { break }
            var written = 0
            while written < count {
                let step = buffer.withUnsafeBytes { Glibc.write(target, $0.baseAddress! + written, count - written) }
                if step < 0 && errno == EINTR { continue }
                guard step > 0 else { throw ActionRefusal("writing: \(String(cString: strerror(errno)))") }
                written += step
            }
            offset += off_t(count)
        }
        if let owner, fchown(target, owner.0, owner.1) != 0 { throw ActionRefusal("setting the owner: \(String(cString: strerror(errno)))") }
        // After the owner: chown clears set-user-ID and set-group-ID bits.
        if fchmod(target, mode) != 0 { throw ActionRefusal("setting the mode: \(String(cString: strerror(errno)))") }
        if fsync(target) != 0 { throw ActionRefusal("syncing: \(String(cString: strerror(errno)))") }
    }
}

/// Why a response action was refused or failed, for its result.
struct ActionRefusal: Error, CustomStringConvertible {
    let reason: String
    init(_ reason: String) { self.reason = reason }
    var description: String { reason }
}
