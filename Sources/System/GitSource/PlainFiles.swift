#if canImport(Glibc)
import Glibc
#endif
import Primitives

/// The file operations GitSource needs, on POSIX calls: the module links no Foundation, so that
/// tether-fetch, a program of its own, stays small (docs/architecture.md, "What an endpoint pays").
enum PlainFiles {
    /// Whether anything (a file, a folder, a link) is at `path`.
    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    /// Device, inode, size and change and modification times (in nanoseconds) of what is at
    /// `path`, or nil when nothing is: changes when a folder's entries do.
    static func identity(_ path: String) -> [Int]? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return [Int(info.st_dev), Int(info.st_ino), Int(info.st_size), info.st_ctim.tv_sec * 1_000_000_000 + info.st_ctim.tv_nsec,
                info.st_mtim.tv_sec * 1_000_000_000 + info.st_mtim.tv_nsec]
    }

    /// The file's bytes, or nil when it cannot be read.
    static func contents(_ path: String) -> [UInt8]? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        return readAll(descriptor)
    }

    /// Makes the folder and its missing parents (0755, less the umask).
    static func createFolders(_ path: String) throws(GitError) {
        var partial = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            partial += "/" + component
            if mkdir(partial, 0o755) != 0 && errno != EEXIST {
                throw GitError(.other, "cannot create \(partial): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Removes the file, or the folder with everything in it; links are removed, not followed.
    static func removeTree(_ path: String) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        if info.st_mode & S_IFMT == S_IFDIR {
            for name in entries(path) { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    /// The names in a folder (without `.` and `..`); empty when it cannot be read.
    static func entries(_ path: String) -> [String] {
        guard let folder = opendir(path) else { return [] }
        defer { closedir(folder) }
        var names: [String] = []
        while let entry = readdir(folder) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Every path below a folder, relative to it (folders too); links are not followed.
    static func subpaths(_ path: String) -> [String] {
        var found: [String] = []
        for name in entries(path) {
            found.append(name)
            var info = stat()
            if lstat(path + "/" + name, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR {
                found += subpaths(path + "/" + name).map { name + "/" + $0 }
            }
        }
        return found
    }

    /// Seconds on the monotonic clock, for deadlines that a changed wall clock cannot move.
    static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    /// Standard base64 (as in known_hosts), padding optional; nil for anything else.
    static func base64Decoded(_ text: Substring) -> [UInt8]? {
        var bits = 0
        var count = 0
        var bytes: [UInt8] = []
        for character in text.utf8 {
            let value: Int
            switch character {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = Int(character - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = Int(character - UInt8(ascii: "a")) + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = Int(character - UInt8(ascii: "0")) + 52
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            case UInt8(ascii: "="): continue
            default: return nil
            }
            bits = (bits << 6) | value
            count += 6
            if count >= 8 {
                count -= 8
                bytes.append(UInt8((bits >> count) & 0xFF))
            }
        }
        return bytes
    }
}
