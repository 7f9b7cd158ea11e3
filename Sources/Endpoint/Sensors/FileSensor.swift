internal import CSensorShims
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// Files written, created, deleted and renamed under the configured folders. With CAP_SYS_ADMIN
/// it marks each folder of those trees with fanotify (`FolderMarks`), which says which process
/// acted and passes only what happens in them: changes elsewhere never reach this process. A
/// tree of more than `folderMarkLimit` folders has its whole file system marked instead, and
/// filtered here. Without CAP_SYS_ADMIN it watches the folders and their subfolders with inotify
/// (at most `inotifyWatchLimit` folders), which does not say who.
final class FileSensor: @unchecked Sendable {
    private var threads: [SensorThread] = []
    private(set) var status: SensorStatus
    private let counters = KernelCounters()
    static let inotifyWatchLimit = 8192
    static let folderMarkLimit = 65_536

    init(buffer: SensorBuffer, paths: [String], excluded: [String], allowFanotify: Bool = true, executables: ExecutableNames = ExecutableNames(),
         folderMarkLimit: Int = FileSensor.folderMarkLimit) {
        let scope = PathScope(included: paths, excluded: excluded)
        var notes: [String] = []
        var inotifyPaths = paths
        var source: [String] = []
        let fd = allowFanotify ? tether_fanotify_open() : -EPERM
        if fd >= 0 {
            let marks = FolderMarks(fd: fd, scope: scope, limit: folderMarkLimit)
            var folders: [String] = []
            var filesystems: [String] = []
            inotifyPaths = []
            for path in paths {
                switch marks.markTree(path) {
                case .marked:
                    folders.append(path)
                case .tooMany:
                    // Past the limit: the whole file system, filtered here (what marks are placed stay).
                    let result = tether_fanotify_mark_filesystem(fd, path)
                    if result == 0 {
                        filesystems.append(path)
                        notes.append("\(path) holds more than \(folderMarkLimit) folders: its whole file system is marked, and what happens outside the folder is filtered here")
                    } else {
                        folders.append(path)
                        notes.append("\(path) holds more than \(folderMarkLimit) folders, and its file system cannot be marked (\(String(cString: strerror(-result)))): deeper folders are not watched")
                    }
                case .failed(let error) where error == EPERM:
                    notes.append("fanotify cannot mark \(path) (\(String(cString: strerror(error))): it needs CAP_SYS_ADMIN); inotify watches it, and does not say which process changed a file")
                    inotifyPaths.append(path)
                case .failed(let error):
                    notes.append("\(path) is not watched: \(String(cString: strerror(error)))")
                }
            }
            if folders.isEmpty && filesystems.isEmpty {
                marks.closeFilesystems()
                close(fd)
            } else {
                if !folders.isEmpty { source.append("fanotify on \(marks.count) folder\(marks.count == 1 ? "" : "s") under " + folders.joined(separator: ", ")) }
                if !filesystems.isEmpty { source.append("fanotify on the file systems of " + filesystems.joined(separator: ", ")) }
                let counters = self.counters
                threads.append(SensorThread(name: "sensor:fanotify") { thread in
                    var reader = FanotifyReader(fd: fd, marks: marks, scope: scope, buffer: buffer, counters: counters, executables: executables)
                    reader.run(thread)
                    marks.closeFilesystems()
                    close(fd)
                })
            }
        } else if allowFanotify {
            notes.append("fanotify was refused (\(String(cString: strerror(-fd)))\(fd == -EPERM ? ": it needs CAP_SYS_ADMIN" : "")); inotify does not say which process changed a file")
        }
        if !inotifyPaths.isEmpty {
            let watcher = InotifyWatcher(paths: inotifyPaths, scope: scope, limit: Self.inotifyWatchLimit)
            if let watcher {
                source.append("inotify on \(watcher.watchCount) folder\(watcher.watchCount == 1 ? "" : "s") under " + inotifyPaths.joined(separator: ", "))
                if watcher.watchCount >= Self.inotifyWatchLimit { notes.append("inotify watches at most \(Self.inotifyWatchLimit) folders; deeper ones are not watched") }
                notes.append(contentsOf: watcher.problems)
                let counters = self.counters
                threads.append(SensorThread(name: "sensor:inotify") { thread in
                    watcher.run(thread, buffer: buffer, counters: counters)
                })
            } else {
                notes.append("inotify could not start: \(String(cString: strerror(errno)))")
            }
        }
        status = SensorStatus(sensor: .file, source: source.isEmpty ? "none" : source.joined(separator: "; "), running: !threads.isEmpty,
                              note: notes.isEmpty ? nil : notes.joined(separator: "; "))
    }

    /// Records the kernel reported, and how often its queue overflowed (events lost there).
    var kernelCounts: (reported: Int, overflows: Int) { counters.read() }

    /// False when a thread did not end in time.
    @discardableResult
    func stop() -> Bool {
        let ended = threads.map { $0.stop() }.allSatisfy { $0 }
        threads = []
        status = status.stopped
        return ended
    }
}

/// Which paths are watched: under an included folder and not under an excluded one (the state
/// directory, so the agent's own writes never feed back as events).
struct PathScope: Sendable {
    let included: [String]
    let excluded: [String]

    func contains(_ path: String) -> Bool {
        func under(_ root: String) -> Bool { root == "/" || path == root || path.hasPrefix(root.hasSuffix("/") ? root : root + "/") }
        return included.contains(where: under) && !excluded.contains(where: under)
    }
}

/// The folders a fanotify group has marked (`tether_fanotify_mark_folder`), and a descriptor on
/// each file system they are on (to open directory handles there). Used by the sensor's thread
/// only, once made.
final class FolderMarks: @unchecked Sendable {
    enum Outcome {
        case marked
        case tooMany
        case failed(Int32)
    }

    let fd: Int32
    let scope: PathScope
    /// Folders one walk marks at most (a tree such as `/` is not marked folder by folder).
    let limit: Int
    /// Folders marked (a mark goes with its folder when the folder is deleted).
    private(set) var count = 0
    /// A descriptor on each file system marked, by its id (statfs's f_fsid, as fanotify gives it).
    private(set) var filesystems: [[UInt32]: Int32] = [:]

    init(fd: Int32, scope: PathScope, limit: Int) {
        self.fd = fd
        self.scope = scope
        self.limit = limit
    }

    /// Marks `root` and the folders under it, breadth first, each opened from its parent's
    /// descriptor without following links, leaving out excluded ones. `found` gets every entry
    /// met under `root` (for a folder just made, whose first entries came before its mark).
    func markTree(_ root: String, found: ((String, Bool) -> Void)? = nil) -> Outcome {
        let rootFD = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else { return .failed(errno) }
        var queue: [(fd: Int32, path: String)] = [(rootFD, root)]
        var outcome = Outcome.marked
        var marked = 0
        while !queue.isEmpty {
            let (folderFD, folder) = queue.removeFirst()
            defer { close(folderFD) }
            guard marked < limit else {
                outcome = .tooMany
                continue
            }
            let result = tether_fanotify_mark_folder(fd, folderFD)
            guard result == 0 else {
                if folder == root { outcome = .failed(-result) }
                continue
            }
            marked += 1
            count += 1
            var fsid: [UInt32] = [0, 0]
            if filesystems.count < 1024, tether_filesystem_id(folderFD, &fsid) == 0, filesystems[fsid] == nil {
                filesystems[fsid] = dup(folderFD)
            }
            let listing = dup(folderFD)
            guard listing >= 0, let directory = fdopendir(listing) else {
                if listing >= 0 { close(listing) }
                continue
            }
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                if name == "." || name == ".." { continue }
                let path = folder == "/" ? "/" + name : folder + "/" + name
                var isDirectory = entry.pointee.d_type == UInt8(DT_DIR)
                if entry.pointee.d_type == UInt8(DT_UNKNOWN) {
                    var info = stat()
                    isDirectory = fstatat(folderFD, name, &info, AT_SYMLINK_NOFOLLOW) == 0 && info.st_mode & S_IFMT == S_IFDIR
                }
                guard scope.contains(path) else { continue }
                found?(path, isDirectory)
                guard isDirectory else { continue }
                let child = openat(folderFD, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if child >= 0 { queue.append((child, path)) }
            }
            closedir(directory)
        }
        return outcome
    }

    /// Closes the descriptors on the file systems (the group's descriptor is its owner's).
    func closeFilesystems() {
        for descriptor in filesystems.values { close(descriptor) }
        filesystems = [:]
    }
}

/// Reads fanotify records and turns directory handles into paths (cached by handle). A file
/// written is reported once: at its first write seen (FAN_MODIFY, taken 40 times a second at
/// most), or when it is closed after writing if no write was seen (through a mapping, say).
private struct FanotifyReader {
    let fd: Int32
    let marks: FolderMarks
    let scope: PathScope
    let buffer: SensorBuffer
    let counters: KernelCounters
    let executables: ExecutableNames
    private var directories: [[UInt8]: String] = [:]
    /// Files reported written and not yet closed.
    private var written: Set<String> = []
    private let me = getpid()
    static let writtenLimit = 16_384

    init(fd: Int32, marks: FolderMarks, scope: PathScope, buffer: SensorBuffer, counters: KernelCounters, executables: ExecutableNames) {
        self.fd = fd
        self.marks = marks
        self.scope = scope
        self.buffer = buffer
        self.counters = counters
        self.executables = executables
    }

    mutating func run(_ thread: SensorThread) {
        // Room for several reads of 8 KiB (at most 8192 / 24 records each).
        var records = [tether_file_event](repeating: tether_file_event(), count: 4096)
        while !thread.isStopping {
            let count = tether_fanotify_read(fd, 250, &records, Int32(records.count))
            guard count > 0 else { continue }
            counters.add(reported: Int(count))
            defer { SensorThread.gather(received: Int(count), of: records.count) }
            take(records.prefix(Int(count)))
        }
    }

    /// Turns a read's records into events.
    private mutating func take(_ records: ArraySlice<tether_file_event>) {
        let now = Date()
        // One lookup per process per batch: a writer makes thousands of records a second.
        var actors: [Int32: ProcessRef] = [:]
        var movedFrom: (path: String, pid: Int32, isDirectory: Bool, actor: ProcessRef?)?
        for record in records {
            if record.mask & UInt64(TETHER_FILE_OVERFLOW) != 0 {
                counters.add(overflows: 1)
                continue
            }
            let isDirectory = record.mask & UInt64(TETHER_FILE_ONDIR) != 0
            let resolved = path(of: record)
            // A folder moved or deleted: every cached path under it is stale.
            if isDirectory, record.mask & UInt64(TETHER_FILE_MOVED_FROM | TETHER_FILE_MOVED_TO | TETHER_FILE_DELETE) != 0 {
                directories.removeAll(keepingCapacity: true)
            }
            guard let path = resolved, scope.contains(path) else { continue }
            // A folder made or moved in: marked, with what it holds (a folder made is reported
            // with the entries it had before its mark, which made no events).
            var foundInside: [(String, Bool)] = []
            if isDirectory, record.mask & UInt64(TETHER_FILE_CREATE | TETHER_FILE_MOVED_TO) != 0 {
                let made = record.mask & UInt64(TETHER_FILE_CREATE) != 0
                _ = marks.markTree(path, found: made ? { foundInside.append(($0, $1)) } : nil)
            }
            guard record.pid != me else { continue }
            var actor: ProcessRef?
            if record.pid > 0 {
                if actors[record.pid] == nil {
                    actors[record.pid] = ProcessRef(pid: record.pid, executable: executables.name(of: record.pid) ?? ProcFS.readLink("/proc/\(record.pid)/exe"))
                }
                actor = actors[record.pid]
            }
            func emit(_ action: FileChange.Action, _ path: String, oldPath: String? = nil) {
                buffer.push(SensorEvent(at: now, .file(FileChange(action: action, path: path, oldPath: oldPath, isDirectory: isDirectory, actor: actor))))
            }
            if let pending = movedFrom, record.mask & UInt64(TETHER_FILE_MOVED_TO) == 0 || pending.pid != record.pid {
                buffer.push(SensorEvent(at: now, .file(FileChange(action: .renamed, path: pending.path, oldPath: nil, isDirectory: pending.isDirectory,
                                                                  actor: pending.actor))))
                movedFrom = nil
            }
            if record.mask & UInt64(TETHER_FILE_MOVED_FROM) != 0 {
                movedFrom = (path, record.pid, isDirectory, actor)
                continue
            }
            if record.mask & UInt64(TETHER_FILE_MOVED_TO) != 0 {
                emit(.renamed, path, oldPath: movedFrom?.path)
                movedFrom = nil
                continue
            }
            if record.mask & UInt64(TETHER_FILE_CREATE) != 0 {
                emit(.created, path)
                // Who made what was already inside is not known.
                for (inside, isFolder) in foundInside {
                    buffer.push(SensorEvent(at: now, .file(FileChange(action: .created, path: inside, oldPath: nil, isDirectory: isFolder, actor: nil))))
                }
            }
            if record.mask & UInt64(TETHER_FILE_DELETE) != 0 {
                written.remove(path)
                emit(.deleted, path)
            }
            // Modified and closed in one record (merged by the kernel) is one change.
            if record.mask & UInt64(TETHER_FILE_MODIFY) != 0 && !written.contains(path) {
                if written.count >= Self.writtenLimit { written.removeAll(keepingCapacity: true) }
                emit(.modified, path)
                written.insert(path)
            }
            if record.mask & UInt64(TETHER_FILE_CLOSE_WRITE) != 0 && written.remove(path) == nil {
                emit(.modified, path)
            }
        }
        if let pending = movedFrom {
            buffer.push(SensorEvent(at: now, .file(FileChange(action: .renamed, path: pending.path, oldPath: nil, isDirectory: pending.isDirectory,
                                                              actor: pending.actor))))
        }
    }

    /// The record's directory (by its handle, cached) joined with the entry's name.
    private mutating func path(of record: tether_file_event) -> String? {
        var copy = record
        let key = withUnsafeBytes(of: &copy.fsid) { Array($0) } + withUnsafeBytes(of: &copy.handle) { Array($0.prefix(Int(record.handle_bytes))) }
        let directory: String
        if let cached = directories[key] {
            directory = cached
        } else {
            guard let mountFD = marks.filesystems[[record.fsid.0, record.fsid.1]] else { return nil }
            let opened = tether_open_by_handle(mountFD, &copy)
            guard opened >= 0 else { return nil }
            defer { close(opened) }
            guard let resolved = ProcFS.readLink("/proc/self/fd/\(opened)") else { return nil }
            if directories.count >= 16_384 { directories.removeAll(keepingCapacity: true) }
            directories[key] = resolved
            directory = resolved
        }
        let name = withUnsafeBytes(of: &copy.name) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        if name.isEmpty || name == "." { return directory }
        return directory == "/" ? "/" + name : directory + "/" + name
    }
}

/// Watches folders and their subfolders with inotify.
private final class InotifyWatcher: @unchecked Sendable {
    let fd: Int32
    let scope: PathScope
    let limit: Int
    private var folders: [Int32: String] = [:]
    private(set) var problems: [String] = []
    var watchCount: Int { folders.count }
    private static let mask = UInt32(IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_ONLYDIR)

    init?(paths: [String], scope: PathScope, limit: Int) {
        fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { return nil }
        self.scope = scope
        self.limit = limit
        for path in paths { watchTree(path) }
    }

    deinit { close(fd) }

    /// Watches a folder and its subfolders, breadth first, up to the limit.
    private func watchTree(_ root: String) {
        var queue = [root]
        while !queue.isEmpty, folders.count < limit {
            let folder = queue.removeFirst()
            guard scope.contains(folder) || scope.included.contains(folder) else { continue }
            let wd = inotify_add_watch(fd, folder, Self.mask)
            guard wd >= 0 else {
                if folder == root { problems.append("\(root) is not watched: \(String(cString: strerror(errno)))") }
                continue
            }
            folders[wd] = folder
            guard let directory = opendir(folder) else { continue }
            while let entry = readdir(directory) {
                guard entry.pointee.d_type == UInt8(DT_DIR) else { continue }
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                if name == "." || name == ".." { continue }
                queue.append(folder == "/" ? "/" + name : folder + "/" + name)
            }
            closedir(directory)
        }
    }

    func run(_ thread: SensorThread, buffer: SensorBuffer, counters: KernelCounters) {
        var bytes = [UInt8](repeating: 0, count: 65_536)
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var pendingMoves: [UInt32: (path: String, isDirectory: Bool)] = [:]
        while !thread.isStopping {
            guard poll(&poller, 1, 250) > 0 else { continue }
            let length = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard length > 0 else { continue }
            defer { SensorThread.gather(received: length, of: bytes.count) }
            let now = Date()
            var offset = 0
            while offset + 16 <= length {
                let (wd, mask, cookie, nameLength) = bytes.withUnsafeBytes { raw in
                    (raw.loadUnaligned(fromByteOffset: offset, as: Int32.self), raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self),
                     raw.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self), Int(raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self)))
                }
                let name = String(decoding: bytes[(offset + 16)..<min(length, offset + 16 + nameLength)].prefix(while: { $0 != 0 }), as: UTF8.self)
                offset += 16 + nameLength
                counters.add(reported: 1)
                if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                    counters.add(overflows: 1)
                    continue
                }
                if mask & UInt32(IN_IGNORED) != 0 {
                    folders[wd] = nil
                    continue
                }
                guard let folder = folders[wd], !name.isEmpty else { continue }
                let path = folder == "/" ? "/" + name : folder + "/" + name
                guard scope.contains(path) else { continue }
                let isDirectory = mask & UInt32(IN_ISDIR) != 0
                func emit(_ action: FileChange.Action, oldPath: String? = nil) {
                    buffer.push(SensorEvent(at: now, .file(FileChange(action: action, path: path, oldPath: oldPath, isDirectory: isDirectory, actor: nil))))
                }
                if mask & UInt32(IN_CREATE) != 0 {
                    emit(.created)
                    if isDirectory { watchTree(path) }
                }
                if mask & UInt32(IN_DELETE) != 0 { emit(.deleted) }
                if mask & UInt32(IN_CLOSE_WRITE) != 0 { emit(.modified) }
                if mask & UInt32(IN_MOVED_FROM) != 0 { pendingMoves[cookie] = (path, isDirectory) }
                if mask & UInt32(IN_MOVED_TO) != 0 {
                    emit(.renamed, oldPath: pendingMoves.removeValue(forKey: cookie)?.path)
                    if isDirectory { watchTree(path) }
                }
            }
            // A move whose other half never came (out of the watched folders) is a rename seen from one side.
            for (_, moved) in pendingMoves {
                buffer.push(SensorEvent(at: now, .file(FileChange(action: .renamed, path: moved.path, oldPath: nil, isDirectory: moved.isDirectory, actor: nil))))
            }
            pendingMoves.removeAll()
        }
    }
}
