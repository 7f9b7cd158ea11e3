internal import CGit2
internal import CGit2Shims
import Primitives
#if canImport(Glibc)
import Glibc
#endif

/// git's `safe.directory`: a repository owned by another user is opened only when the system
/// or global git configuration names it (or says `*`), as git 2.39 decides it. Only that key
/// of those files is read; Tether's libgit2 reads no git configuration otherwise
/// (docs/architecture.md, "Git configuration and ownership"), and a file that cannot be read names nothing.
enum SafeDirectory {
    /// The configuration files git reads `safe.directory` from, in git's order: the system file
    /// (`$GIT_CONFIG_SYSTEM`, else /etc/gitconfig; none with `GIT_CONFIG_NOSYSTEM`), then the
    /// global ones (`$GIT_CONFIG_GLOBAL`, else `$XDG_CONFIG_HOME/git/config` or
    /// ~/.config/git/config, then ~/.gitconfig).
    static func files(environment: [String: String] = currentEnvironment()) -> [String] {
        var files: [String] = []
        let noSystem = environment["GIT_CONFIG_NOSYSTEM"].map { !["", "0", "false", "no", "off"].contains($0.lowercased()) } ?? false
        if !noSystem { files.append(environment["GIT_CONFIG_SYSTEM"] ?? "/etc/gitconfig") }
        if let global = environment["GIT_CONFIG_GLOBAL"] {
            files.append(global)
        } else if let home = environment["HOME"], !home.isEmpty {
            files.append((environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? home + "/.config") + "/git/config")
            files.append(home + "/.gitconfig")
        }
        return files.filter { !$0.isEmpty }
    }

    /// The directories named safe, in order: an empty value empties the list before it.
    static func entries(in files: [String]) -> [String] {
        var entries: [String] = []
        for file in files where PlainFiles.exists(file) {
            var config: OpaquePointer?
            guard git_config_open_ondisk(&config, file) == 0, let config else {
                git_error_clear()
                continue
            }
            defer { git_config_free(config) }
            var found: [String] = []
            _ = withUnsafeMutablePointer(to: &found) { pointer in
                git_config_get_multivar_foreach(config, "safe.directory", nil, { entry, payload in
                    guard let entry, let value = entry.pointee.value, let payload else { return 0 }
                    payload.assumingMemoryBound(to: [String].self).pointee.append(String(cString: value))
                    return 0
                }, pointer)
            }
            git_error_clear()
            for value in found {
                if value.isEmpty { entries.removeAll() } else { entries.append(value) }
            }
        }
        return entries
    }

    /// Whether `directory` (a repository's top level) is named safe.
    static func isSafe(_ directory: String, environment: [String: String] = currentEnvironment()) -> Bool {
        let wanted = trimmedSlash(directory)
        return entries(in: files(environment: environment)).contains { value in
            if value == "*" { return true }
            var path = value
            if path.hasPrefix("~/"), let home = environment["HOME"] { path = home + path.dropFirst() }
            return trimmedSlash(path) == wanted
        }
    }

    /// The directory git compares with safe.directory: the repository's work tree, or the
    /// repository itself when it is bare.
    static func topLevel(of repository: OpaquePointer) -> String {
        let path = (git_repository_workdir(repository) ?? git_repository_path(repository)).map { String(cString: $0) } ?? ""
        return trimmedSlash(path)
    }

    /// Opens a repository git would trust, with libgit2's owner check off for this open only
    /// (the option is process-wide, so opens that need it take turns).
    static func openTrusted(_ path: String) -> OpaquePointer? {
        lock.withLock {
            _ = tether_git_set_owner_validation(0)
            defer { _ = tether_git_set_owner_validation(1) }
            var repository: OpaquePointer?
            guard git_repository_open_ext(&repository, path, 0, nil) == 0 else {
                git_error_clear()
                return nil
            }
            return repository
        }
    }

    /// Held by every open of a local repository, so that none happens while the owner check is off.
    static let lock = Lock()

    private static func trimmedSlash(_ path: String) -> String {
        path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }

    static func currentEnvironment() -> [String: String] {
        var environment: [String: String] = [:]
        for name in ["GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_GLOBAL", "HOME", "XDG_CONFIG_HOME"] {
            if let value = getenv(name) { environment[name] = String(cString: value) }
        }
        return environment
    }
}
