internal import CSensorShims
import FoundationEssentials
import Primitives
#if canImport(Glibc)
import Glibc
#endif

/// Files written, created, deleted and renamed under the configured folders. With CAP_SYS_ADMIN
/// it marks the file systems holding them with fanotify, which says which process acted and
/// sees a write when its file is closed; each watched folder is marked too for writes as they
/// happen (`WriteMarks`: a file held open, a truncation). Otherwise it watches the folders and
/// their subfolders with inotify (at most `inotifyWatchLimit` folders), which does not say who.
final class FileSensor: @unchecked Sendable {
    private var threads: [SensorThread] = []
    private(set) var status: SensorStatus
    private let counters = KernelCounters()
    /// The folders marked for writes as they happen, where fanotify runs.
    private(set) var writes: WriteMarks?
    static let inotifyWatchLimit = 8192
    static let writeMarkLimit = 16_384

    init(buffer: SensorBuffer, paths: [String], excluded: [String], allowFanotify: Bool = true, executables: ExecutableNames = ExecutableNames()) {
        let scope = PathScope(included: paths, excluded: excluded)
        var notes: [String] = []
        var inotifyPaths = paths
        var source: [String] = []
        let fd = allowFanotify ? tether_fanotify_open() : -EPERM
        if fd >= 0 {
            var mounts: [[UInt32]: Int32] = [:]
            var marked: [String] = []
            inotifyPaths = []
            for path in paths {
                let mountFD = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                guard mountFD >= 0 else {
                    notes.append("\(path) is not watched: \(String(cString: strerror(errno)))")
                    continue
                }
                var fsid: [UInt32] = [0, 0]
                guard tether_filesystem_id(mountFD, &fsid) == 0 else { close(mountFD); continue }
                if mounts[fsid] != nil {
                    close(mountFD)
                    marked.append(path)
                    continue
                }
                let result = tether_fanotify_mark_filesystem(fd, path)
                if result == 0 {
                    mounts[fsid] = mountFD
                    marked.append(path)
                } else {
                    close(mountFD)
                    notes.append("fanotify cannot mark the file system of \(path) (\(String(cString: strerror(-result)))\(result == -EPERM ? ": it needs CAP_SYS_ADMIN" : "")); inotify watches it, and does not say which process changed a file")
                    inotifyPaths.append(path)
                }
            }
            if mounts.isEmpty {
                close(fd)
            } else {
                // The folders are marked for writes on the sensor's thread, before it reads: a large
                // tree must not hold up the start (what happens meanwhile waits in the kernel's queue).
                let writes = WriteMarks(fd: fd, scope: scope, limit: Self.writeMarkLimit)
                source.append("fanotify on the file systems of " + marked.joined(separator: ", ")
                              + " (writes as they happen in up to \(Self.writeMarkLimit) of their folders)")
                self.writes = writes
                let counters = self.counters
                let frozenMounts = mounts
                let roots = marked
                threads.append(SensorThread(name: "sensor:fanotify") { thread in
                    for root in roots where !thread.isStopping { writes.markTree(root, atStart: true, until: { thread.isStopping }) }
                    writes.markedAtStart = true
                    var reader = FanotifyReader(fd: fd, mounts: frozenMounts, scope: scope, buffer: buffer, counters: counters, executables: executables,
                                                writes: writes)
                    reader.run(thread)
                    close(fd)
                    for mountFD in frozenMounts.values { close(mountFD) }
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

/// The folders of the watched trees marked for writes as they happen
/// (`tether_fanotify_mark_folder_writes`), beside the file systems' marks: a folder not marked
/// (past a limit, on another file system than its tree's root, on a network or FUSE file
/// system, a name not UTF-8, a mark refused) loses only that, its files' writes are still seen
/// when they are closed. Used by the sensor's thread only, once made.
final class WriteMarks: @unchecked Sendable {
    let fd: Int32
    let scope: PathScope
    /// Folders the walk at start marks at most; a folder made or moved in later has its own
    /// walk, of `laterLimit` folders at most (it runs on the thread that reads the records).
    let limit: Int
    static let laterLimit = 4096
    private let lock = Lock()
    private var marked = false

    /// Whether the walk at start has ended (the thread marks the folders before it reads).
    var markedAtStart: Bool {
        get { lock.withLock { marked } }
        set { lock.withLock { marked = newValue } }
    }

    init(fd: Int32, scope: PathScope, limit: Int) {
        self.fd = fd
        self.scope = scope
        self.limit = limit
    }

    /// Marks `root` and the folders under it in scope and on its file system, breadth first,
    /// each looked at without following a link or triggering an automount before it is opened
    /// (one descriptor open at a time); `until` ends the walk early.
    func markTree(_ root: String, atStart: Bool = false, until stop: () -> Bool = { false }) {
        var rootInfo = stat()
        guard fstatat(AT_FDCWD, root, &rootInfo, AT_SYMLINK_NOFOLLOW | Int32(TETHER_AT_NO_AUTOMOUNT)) == 0 else { return }
        var queue = [root]
        var next = 0
        var marked = 0
        let most = atStart ? limit : Self.laterLimit
        while next < queue.count, marked < most, !stop() {
            let folder = queue[next]
            next += 1
            var info = stat()
            guard fstatat(AT_FDCWD, folder, &info, AT_SYMLINK_NOFOLLOW | Int32(TETHER_AT_NO_AUTOMOUNT)) == 0,
                  info.st_mode & S_IFMT == S_IFDIR, info.st_dev == rootInfo.st_dev else { continue }
            let folderFD = open(folder, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard folderFD >= 0 else { continue }
            defer { close(folderFD) }
            // A network or FUSE file system's listing could wait on its server or daemon.
            guard tether_is_remote_filesystem(folderFD) == 0 else { continue }
            let result = tether_fanotify_mark_folder_writes(fd, folderFD)
            guard result == 0 else { continue }
            marked += 1
            let listing = dup(folderFD)
            guard listing >= 0, let directory = fdopendir(listing) else {
                if listing >= 0 { close(listing) }
                continue
            }
            while let entry = readdir(directory), queue.count - next < most - marked {
                let type = entry.pointee.d_type
                guard type == UInt8(DT_DIR) || type == UInt8(DT_UNKNOWN) else { continue }
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                if name == "." || name == ".." { continue }
                let path = folder == "/" ? "/" + name : folder + "/" + name
                if scope.contains(path) { queue.append(path) }
            }
            closedir(directory)
            // Done with: keep only what is still to walk.
            if next > 1024 { queue.removeFirst(next); next = 0 }
        }
    }
}

/// Reads fanotify records and turns directory handles into paths (cached by handle).
private struct FanotifyReader {
    let fd: Int32
    let mounts: [[UInt32]: Int32]
    let scope: PathScope
    let buffer: SensorBuffer
    let counters: KernelCounters
    /// The process sensor's starts: a writer that has ended meanwhile is still named.
    let executables: ExecutableNames
    /// The folders marked for writes as they happen; new ones are marked as they appear.
    let writes: WriteMarks
    private var directories: [[UInt8]: String] = [:]
    /// When each writer's write to a file was last reported (as it happened, or at its close):
    /// a write or a close by the same process within `sameChange` of it is that change. Later
    /// ones are reported again, so nothing a writer does is hidden for longer (a file held open
    /// and written on is reported once per interval; its close after the interval once more).
    private var written: [String: [Int32: Date]] = [:]
    private let me = getpid()
    static let writtenLimit = 16_384
    static let sameChange: TimeInterval = 1

    init(fd: Int32, mounts: [[UInt32]: Int32], scope: PathScope, buffer: SensorBuffer, counters: KernelCounters, executables: ExecutableNames,
         writes: WriteMarks) {
        self.fd = fd
        self.mounts = mounts
        self.scope = scope
        self.buffer = buffer
        self.counters = counters
        self.executables = executables
        self.writes = writes
    }

    mutating func run(_ thread: SensorThread) {
        // Room for several reads of 8 KiB (at most 8192 / 24 records each).
        var records = [tether_file_event](repeating: tether_file_event(), count: 4096)
        while !thread.isStopping {
            let count = tether_fanotify_read(fd, 250, &records, Int32(records.count))
            guard count > 0 else { continue }
            counters.add(reported: Int(count))
            defer { SensorThread.gather(received: Int(count), of: records.count) }
            let now = Date()
            // One lookup per process per batch: a writer makes thousands of records a second.
            var actors: [Int32: ProcessRef] = [:]
            var movedFrom: (path: String, pid: Int32, isDirectory: Bool, actor: ProcessRef?)?
            for index in 0..<Int(count) {
                let record = records[index]
                if record.mask & UInt64(TETHER_FILE_OVERFLOW) != 0 {
                    counters.add(overflows: 1)
                    // Closes may be among what was lost: a write reported since is not held back.
                    written.removeAll(keepingCapacity: true)
                    continue
                }
                let isDirectory = record.mask & UInt64(TETHER_FILE_ONDIR) != 0
                let resolved = path(of: record)
                // A folder moved or deleted: every cached path under it is stale.
                if isDirectory, record.mask & UInt64(TETHER_FILE_MOVED_FROM | TETHER_FILE_MOVED_TO | TETHER_FILE_DELETE) != 0 {
                    directories.removeAll(keepingCapacity: true)
                }
                guard let path = resolved, scope.contains(path) else { continue }
                // A folder made or moved in: its files' writes are seen as they happen too.
                if isDirectory, record.mask & UInt64(TETHER_FILE_CREATE | TETHER_FILE_MOVED_TO) != 0 { writes.markTree(path) }
                guard record.pid != me else { continue }
                var actor: ProcessRef?
                if record.pid > 0 {
                    if actors[record.pid] == nil {
                        actors[record.pid] = ProcessRef(pid: record.pid, executable: ProcFS.readLink("/proc/\(record.pid)/exe") ?? executables.name(of: record.pid))
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
                    written[path] = nil
                    movedFrom = (path, record.pid, isDirectory, actor)
                    continue
                }
                if record.mask & UInt64(TETHER_FILE_MOVED_TO) != 0 {
                    emit(.renamed, path, oldPath: movedFrom?.path)
                    movedFrom = nil
                    continue
                }
                // Created and deleted in one record (merged by the kernel): the order is the
                // one that leaves the file as it is now.
                let created = record.mask & UInt64(TETHER_FILE_CREATE) != 0, deleted = record.mask & UInt64(TETHER_FILE_DELETE) != 0
                var status = stat()
                let existsNow = created && deleted && lstat(path, &status) == 0
                if deleted && existsNow {
                    written[path] = nil
                    emit(.deleted, path)
                }
                if created { emit(.created, path) }
                // A write as it happens, or a close after writing: one change per writer and
                // `sameChange` (a write through a mapping, or in a folder not marked, is seen at its close).
                if record.mask & UInt64(TETHER_FILE_MODIFY | TETHER_FILE_CLOSE_WRITE) != 0 {
                    if let last = written[path]?[record.pid], now.timeIntervalSince(last) < Self.sameChange {
                        if record.mask & UInt64(TETHER_FILE_CLOSE_WRITE) != 0 { written[path]?[record.pid] = nil }
                    } else {
                        if written.count >= Self.writtenLimit { written.removeAll(keepingCapacity: true) }
                        emit(.modified, path)
                        written[path, default: [:]][record.pid] = record.mask & UInt64(TETHER_FILE_CLOSE_WRITE) != 0 ? nil : now
                    }
                    if written[path]?.isEmpty == true { written[path] = nil }
                }
                if deleted && !existsNow {
                    written[path] = nil
                    emit(.deleted, path)
                }
            }
            if let pending = movedFrom {
                buffer.push(SensorEvent(at: now, .file(FileChange(action: .renamed, path: pending.path, oldPath: nil, isDirectory: pending.isDirectory,
                                                                  actor: pending.actor))))
            }
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
            guard let mountFD = mounts[[record.fsid.0, record.fsid.1]] else { return nil }
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
