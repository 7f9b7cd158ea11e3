internal import CSensorShims
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import IntegrationModel

/// A file the platform names by an absolute path, reached without following a symbolic link
/// anywhere on the way: its folder is opened first (openat2, RESOLVE_NO_SYMLINKS) and every
/// later step acts relative to that folder's descriptor, so a folder swapped for a link after
/// the check cannot redirect a delete, a quarantine or a restore (docs/architecture.md,
/// "Response actions"). Owns its descriptors.
package final class HostFile {
    /// The path as given, checked to be plain: absolute, no `.`, `..` or empty parts.
    package let path: String
    /// The file's name in its folder.
    package let name: String
    private let folder: Int32
    /// Open for reading once `openForReading` succeeded.
    package private(set) var descriptor: Int32 = -1
    package private(set) var info = stat()

    /// Opens the folder of `given`; fails with why when the path is not plain, a part of it is a
    /// symbolic link, or the folder does not exist.
    package init(_ given: String?) throws(HostFileError) {
        guard let given, given.hasPrefix("/") else { throw HostFileError("the path must be absolute") }
        guard !given.utf8.contains(0) else { throw HostFileError("the path holds a NUL byte") }
        let parts = given.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard !parts.isEmpty, parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else {
            throw HostFileError("\(TerminalText.excerpt(given)) is not a plain path (no '.', '..', '//' or trailing '/')")
        }
        path = given
        name = String(parts.last!)
        let parent = parts.count == 1 ? "/" : "/" + parts.dropLast().joined(separator: "/")
        let fd = tether_open_folder_without_links(parent)
        guard fd >= 0 else {
            throw HostFileError(fd == -ELOOP ? "\(TerminalText.excerpt(parent)) or a folder above it is a symbolic link; name the real path"
                                : "\(TerminalText.excerpt(parent)): \(String(cString: strerror(-fd)))")
        }
        folder = fd
    }

    deinit {
        if descriptor >= 0 { close(descriptor) }
        close(folder)
    }

    /// Whether the folder is on the kernel's own views (procfs, sysfs), however it was reached.
    package var folderIsKernelView: Bool { tether_is_kernel_view(folder) == 1 }

    /// The folder's device and inode.
    package var folderIdentity: FileIdentity? {
        var folderInfo = stat()
        guard fstat(folder, &folderInfo) == 0 else { return nil }
        return FileIdentity(folderInfo)
    }

    /// Opens the file for reading: a regular file only, never through a link.
    package func openForReading() throws(HostFileError) {
        // The type first, by name without following: a device or a pipe is never opened at all.
        var named = stat()
        if fstatat(folder, name, &named, AT_SYMLINK_NOFOLLOW) == 0 {
            if (named.st_mode & S_IFMT) == S_IFLNK { throw HostFileError("\(TerminalText.excerpt(path)) is a symbolic link; name the file it points to") }
            if (named.st_mode & S_IFMT) != S_IFREG {
                throw HostFileError("\(TerminalText.excerpt(path)) is not a regular file (a folder, device, socket or pipe)")
            }
        }
        let fd = openat(folder, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else {
            throw HostFileError(errno == ELOOP ? "\(TerminalText.excerpt(path)) is a symbolic link; name the file it points to"
                                : "\(TerminalText.excerpt(path)): \(String(cString: strerror(errno)))")
        }
        var opened = stat()
        guard fstat(fd, &opened) == 0, (opened.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw HostFileError("\(TerminalText.excerpt(path)) is not a regular file (a folder, device, socket or pipe)")
        }
        descriptor = fd
        info = opened
    }

    /// Removes the name, when it still names the file opened (same device and inode).
    package func removeOpened() throws(HostFileError) {
        var now = stat()
        guard fstatat(folder, name, &now, AT_SYMLINK_NOFOLLOW) == 0, now.st_dev == info.st_dev, now.st_ino == info.st_ino else {
            throw HostFileError("\(TerminalText.excerpt(path)) was replaced meanwhile; nothing was removed")
        }
        guard unlinkat(folder, name, 0) == 0 else {
            throw HostFileError("\(TerminalText.excerpt(path)) could not be removed: \(String(cString: strerror(errno)))")
        }
    }

    /// Creates the file, never over one that exists and never through a link; the caller writes
    /// and closes the descriptor.
    package func createNew() throws(HostFileError) -> Int32 {
        let fd = openat(folder, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw HostFileError(errno == EEXIST ? "a file is at \(TerminalText.excerpt(path)) now; it is never overwritten"
                                : "\(TerminalText.excerpt(path)): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    /// Removes a file `createNew` made (after a failed write).
    package func removeCreated() {
        unlinkat(folder, name, 0)
    }
}

/// A file's device and inode: what it is, whatever its names.
package struct FileIdentity: Hashable, Sendable {
    package let device: UInt64
    package let inode: UInt64

    package init(_ info: stat) {
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }

    /// The identity of what `path` names (following links), or nil.
    package init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        self.init(info)
    }
}

/// Why a file action could not reach the file, for the command's result.
package struct HostFileError: Error, CustomStringConvertible {
    package let description: String
    init(_ description: String) { self.description = description }
}
