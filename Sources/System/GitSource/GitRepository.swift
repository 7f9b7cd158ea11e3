internal import CGit2
internal import CGit2Shims
import Primitives
#if canImport(Glibc)
import Glibc
#endif

/// An error from libgit2 or from reading a repository, with libgit2's own message.
package struct GitError: Error, CustomStringConvertible, Sendable {
    package enum Kind: Sendable { case notARepository, unknownRef, notFound, fetchFailed, corrupted, limitExceeded, other }
    package let kind: Kind
    package let message: String
    package var description: String { message }

    init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// Builds an error from libgit2's thread-local error state; call right after the failing call.
    static func last(_ kind: Kind, _ context: String) -> GitError {
        let detail = git_error_last().flatMap { $0.pointee.message.map { String(cString: $0) } } ?? "unknown libgit2 error"
        return GitError(kind, "\(context): \(detail)")
    }
}

/// A file read from a commit's tree.
package struct GitFile: Sendable {
    /// The path inside the repository (`policies/edr.yaml`).
    package let path: String
    package let contents: [UInt8]
}

/// Bounds on what a policy tree may hold: it is untrusted input.
package struct TreeLimits: Sendable {
    package var maximumFileBytes: Int
    package var maximumTotalBytes: Int
    package var maximumFiles: Int
    package var maximumDepth: Int

    package init(maximumFileBytes: Int = 1 << 20, maximumTotalBytes: Int = 256 << 20, maximumFiles: Int = 50_000, maximumDepth: Int = 32) {
        self.maximumFileBytes = maximumFileBytes
        self.maximumTotalBytes = maximumTotalBytes
        self.maximumFiles = maximumFiles
        self.maximumDepth = maximumDepth
    }

    package static let standard = TreeLimits()
}

/// What a tree walk has used of its limits.
private struct Budget {
    let limits: TreeLimits
    var files = 0
    var bytes = 0
}

/// A resolved commit.
package struct GitCommit: Sendable, Equatable {
    /// The full 40-character commit id.
    package let id: String
    package let summary: String
    /// When it was committed, in seconds since 1970 (UTC).
    package let committedAt: Int64

    package init(id: String, summary: String, committedAt: Int64) {
        self.id = id
        self.summary = summary
        self.committedAt = committedAt
    }

    /// Stands for the index (what the next commit will hold) where a commit is expected.
    package static let index = GitCommit(id: "(staged)", summary: "the files staged in the index", committedAt: 0)
}

/// A git repository opened with libgit2. Files are read from git objects, never from a
/// working tree. Owns its libgit2 handle and frees it in `deinit`.
package final class GitRepository {
    let handle: OpaquePointer
    /// Where the repository lives on disk (a mirror for remote sources).
    package let location: String

    static let libraryReady: Bool = {
        // The system's CA bundle is read before the first http(s) remote, not here (Remote.swift).
        tether_git_init()
        // Tether's git behaves the same whoever runs it: no user's or system's git
        // configuration is read (an unreadable $HOME must not fail a fetch).
        for level in [GIT_CONFIG_LEVEL_SYSTEM, GIT_CONFIG_LEVEL_XDG, GIT_CONFIG_LEVEL_GLOBAL, GIT_CONFIG_LEVEL_PROGRAMDATA] {
            _ = tether_git_set_search_path(Int32(level.rawValue), "")
        }
        return true
    }()

    /// Opens the repository at `path` or in one of its parent folders.
    package init(path: String) throws {
        _ = GitRepository.libraryReady
        var repository: OpaquePointer?
        guard PlainFiles.exists(path) else {
            throw GitError(.notARepository, "\(path): no such file or folder")
        }
        if SafeDirectory.lock.withLock({ git_repository_open_ext(&repository, path, 0, nil) }) != 0 || repository == nil {
            let detail = git_error_last().flatMap { $0.pointee.message.map { String(cString: $0) } } ?? ""
            git_error_clear()
            guard detail.containsText("not owned by current user") || detail.containsText("safe.directory") else {
                throw GitError(.notARepository, "\(path) is not a git repository (or inside one)")
            }
            // Opened once more with the owner check off, then judged by the repository libgit2
            // actually found (its work tree, or itself when bare), as git judges it.
            guard let opened = SafeDirectory.openTrusted(path) else {
                throw GitError(.notARepository, "\(path) is owned by another user, so git will not use it (dubious ownership)")
            }
            let top = SafeDirectory.topLevel(of: opened)
            guard SafeDirectory.isSafe(top) else {
                git_repository_free(opened)
                throw GitError(.notARepository, "\(top) is owned by another user, so git will not use it (dubious ownership): run tether as that user, give the repository to this one (chown -R), or mark it safe as git does: git config --global --add safe.directory \(top)")
            }
            repository = opened
        }
        handle = repository!
        location = path
    }

    init(handle: OpaquePointer, location: String) {
        self.handle = handle
        self.location = location
    }

    deinit {
        git_repository_free(handle)
    }

    /// Makes a new repository (with a working tree) at `path`, its first branch `main`.
    @discardableResult
    package static func create(at path: String) throws -> GitRepository {
        _ = libraryReady
        var options = git_repository_init_options()
        git_repository_init_options_init(&options, UInt32(GIT_REPOSITORY_INIT_OPTIONS_VERSION))
        options.flags = GIT_REPOSITORY_INIT_MKPATH.rawValue
        var repository: OpaquePointer?
        let status = "main".withCString { branch in
            options.initial_head = branch
            return SafeDirectory.lock.withLock { git_repository_init_ext(&repository, path, &options) }
        }
        guard status == 0, let repository else { throw GitError.last(.other, "cannot make a repository at \(path)") }
        return GitRepository(handle: repository, location: path)
    }

    /// True when `source` names a remote (`file://`, `https://`, `ssh://`, `git://`, `user@host:path`)
    /// rather than a local folder.
    package static func isRemote(_ source: String) -> Bool {
        if source.containsText("://") { return true }
        if let colon = source.firstIndex(of: ":"), let at = source.firstIndex(of: "@"), at < colon, !source.hasPrefix("/") { return true }
        return false
    }

    /// Fetches `url` into a bare mirror at `mirrorPath` (created when missing) and opens it.
    /// Branches and tags are mirrored as they are upstream; HEAD follows the remote's default branch.
    package static func mirror(url: String, into mirrorPath: String, credentials: RemoteCredentials = .none) throws -> GitRepository {
        try updateMirror(url: url, at: mirrorPath, credentials: credentials).0
    }

    /// Resolves a branch, tag, commit id (full or abbreviated) or any revision expression;
    /// nil or "HEAD" means the repository's HEAD.
    /// A glob over tags (`v1.*`) picks the highest version among the matching tags.
    package func resolve(_ ref: String?) throws -> GitCommit {
        var wanted = (ref?.isEmpty == false) ? ref! : "HEAD"
        if wanted.contains("*") || wanted.contains("?") {
            guard let newest = tags(matching: wanted).first else {
                throw GitError(.unknownRef, "\(location): no tag matches '\(wanted)'")
            }
            wanted = "refs/tags/\(newest)"
        }
        for candidate in [wanted, "refs/heads/\(wanted)", "refs/tags/\(wanted)", "refs/remotes/origin/\(wanted)"] {
            var object: OpaquePointer?
            if git_revparse_single(&object, handle, candidate) == 0, let object {
                defer { git_object_free(object) }
                var peeled: OpaquePointer?
                guard git_object_peel(&peeled, object, GIT_OBJECT_COMMIT) == 0, let peeled else {
                    throw GitError.last(.unknownRef, "'\(wanted)' does not name a commit")
                }
                defer { git_object_free(peeled) }
                return commitInfo(peeled)
            }
        }
        git_error_clear()
        if wanted == "HEAD", git_repository_head_unborn(handle) == 1 {
            git_error_clear()
            throw GitError(.unknownRef, "\(location) has no commits yet: commit the policies first (git add, git commit); Tether reads commits, never the working tree")
        }
        if wanted == "HEAD" {
            throw GitError(.unknownRef, "\(location): HEAD does not point to a commit (an empty repository, or a remote whose HEAD names a missing branch); name a branch, tag or commit with --ref")
        }
        throw GitError(.unknownRef, "\(location): unknown ref '\(wanted)' (not a branch, tag or commit id)")
    }

    func commitInfo(_ commit: OpaquePointer) -> GitCommit {
        let id = oidString(git_commit_id(commit))
        let summary = git_commit_summary(commit).map { String(cString: $0) } ?? ""
        let time = Int64(git_commit_time(commit))
        return GitCommit(id: id, summary: summary, committedAt: time)
    }

    /// Reads every file below `directory` in the commit's tree whose name passes `include`.
    /// Returns an empty list when the directory does not exist in that commit.
    /// Symbolic links and submodules are refused: a policy tree holds plain files only.
    /// `limits` bound file sizes, the tree's total, the number of files and the nesting depth;
    /// going past one is an error naming the path.
    package func files(in commit: GitCommit, under directory: String, limits: TreeLimits = .standard,
                      include: (String) -> Bool) throws -> [GitFile] {
        var budget = Budget(limits: limits)
        return try withTree(of: commit) { root in
            let trimmed = directory.split(separator: "/").joined(separator: "/")
            if trimmed.isEmpty || trimmed == "." {
                var files: [GitFile] = []
                try collect(tree: root, prefix: "", depth: 0, include: include, budget: &budget, into: &files)
                return files
            }
            var entry: OpaquePointer?
            guard git_tree_entry_bypath(&entry, root, trimmed) == 0, let entry else {
                git_error_clear()
                return []
            }
            defer { git_tree_entry_free(entry) }
            guard git_tree_entry_type(entry) == GIT_OBJECT_TREE else {
                throw GitError(.notFound, "\(trimmed) is a file in commit \(commit.id.prefix(12)), not a folder")
            }
            var subtree: OpaquePointer?
            guard git_tree_lookup(&subtree, handle, git_tree_entry_id(entry)) == 0, let subtree else {
                throw GitError.last(.other, "cannot read \(trimmed)")
            }
            defer { git_tree_free(subtree) }
            var files: [GitFile] = []
            try collect(tree: subtree, prefix: trimmed + "/", depth: 0, include: include, budget: &budget, into: &files)
            return files
        }
    }

    /// Reads one file of the commit's tree; nil when there is no file at `path`.
    package func file(in commit: GitCommit, at path: String) throws -> GitFile? {
        try withTree(of: commit) { root in
            var entry: OpaquePointer?
            guard git_tree_entry_bypath(&entry, root, path) == 0, let entry else {
                git_error_clear()
                return nil
            }
            defer { git_tree_entry_free(entry) }
            guard git_tree_entry_type(entry) == GIT_OBJECT_BLOB else { return nil }
            try refuseLinks(entry, path: path)
            return GitFile(path: path, contents: try blobContents(git_tree_entry_id(entry), path: path))
        }
    }

    private func withTree<T>(of commit: GitCommit, _ body: (OpaquePointer) throws -> T) throws -> T {
        var oid = git_oid()
        guard git_oid_fromstr(&oid, commit.id) == 0 else { throw GitError.last(.notFound, "bad commit id \(commit.id)") }
        var commitHandle: OpaquePointer?
        guard git_commit_lookup(&commitHandle, handle, &oid) == 0, let commitHandle else {
            throw GitError.last(.notFound, "commit \(commit.id)")
        }
        defer { git_commit_free(commitHandle) }
        var tree: OpaquePointer?
        guard git_commit_tree(&tree, commitHandle) == 0, let tree else {
            throw GitError.last(.other, "tree of commit \(commit.id)")
        }
        defer { git_tree_free(tree) }
        return try body(tree)
    }

    private func collect(tree: OpaquePointer, prefix: String, depth: Int, include: (String) -> Bool,
                         budget: inout Budget, into files: inout [GitFile]) throws {
        guard depth <= budget.limits.maximumDepth else {
            throw GitError(.limitExceeded, "\(prefix): folders nest deeper than \(budget.limits.maximumDepth) levels")
        }
        let count = git_tree_entrycount(tree)
        var seen = Set<String>()
        for index in 0..<count {
            guard let entry = git_tree_entry_byindex(tree, index) else { continue }
            // The tree is untrusted input: a name must be a plain relative UTF-8 name, once.
            guard let name = String(validatingCString: git_tree_entry_name(entry)) else {
                throw GitError(.other, "\(prefix): a tree entry's name is not UTF-8 text: refused")
            }
            let path = prefix + name
            if name.isEmpty || name == "." || name == ".." || name.contains("/") || name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
                throw GitError(.other, "'\(Self.shown(path))': not a plain file or folder name in a policy tree: refused")
            }
            // git refuses to check out a `.git` inside a tree (fsck: hasDotgit); it is no policy.
            if name.lowercased() == ".git" {
                throw GitError(.other, "'\(Self.shown(path))': a .git inside the policy tree is refused (git itself will not check one out)")
            }
            guard seen.insert(name).inserted else {
                throw GitError(.other, "'\(Self.shown(path))': the name appears twice in one folder of the policy tree: refused")
            }
            switch git_tree_entry_type(entry) {
            case GIT_OBJECT_TREE:
                var subtree: OpaquePointer?
                guard git_tree_lookup(&subtree, handle, git_tree_entry_id(entry)) == 0, let subtree else {
                    throw GitError.last(.other, "cannot read \(path)")
                }
                defer { git_tree_free(subtree) }
                try collect(tree: subtree, prefix: path + "/", depth: depth + 1, include: include, budget: &budget, into: &files)
            case GIT_OBJECT_BLOB:
                guard include(path) else { continue }
                try refuseLinks(entry, path: path)
                budget.files += 1
                guard budget.files <= budget.limits.maximumFiles else {
                    throw GitError(.limitExceeded, "\(path): the policy tree holds more than \(budget.limits.maximumFiles) files")
                }
                let contents = try blobContents(git_tree_entry_id(entry), path: path, limit: budget.limits.maximumFileBytes)
                budget.bytes += contents.count
                guard budget.bytes <= budget.limits.maximumTotalBytes else {
                    throw GitError(.limitExceeded, "\(path): the policy tree holds more than \(budget.limits.maximumTotalBytes) bytes")
                }
                files.append(GitFile(path: path, contents: contents))
            case GIT_OBJECT_COMMIT:
                throw GitError(.other, "\(path): submodules are not allowed in a policy tree")
            default:
                continue
            }
        }
    }

    /// The files staged in the index (what the next commit will hold) under `directory` that
    /// `include` accepts, read from their blobs (never from the working tree), with the same
    /// bounds and refusals as a commit's tree.
    package func stagedFiles(under directory: String, limits: TreeLimits = .standard, include: (String) -> Bool) throws -> [GitFile] {
        let prefix = directory.split(separator: "/").joined(separator: "/")
        var budget = Budget(limits: limits)
        var files: [GitFile] = []
        try withIndex { index in
            for position in 0..<git_index_entrycount(index) {
                guard let entry = git_index_get_byindex(index, position) else { continue }
                guard let path = String(validatingCString: entry.pointee.path) else {
                    throw GitError(.other, "a staged file's name is not UTF-8 text: refused")
                }
                guard prefix.isEmpty || prefix == "." || path.hasPrefix(prefix + "/"), include(path) else { continue }
                let parts = path.split(separator: "/", omittingEmptySubsequences: false)
                if parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) || path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
                    throw GitError(.other, "'\(Self.shown(path))': not a plain path in a policy tree: refused")
                }
                guard parts.count - 1 <= limits.maximumDepth else {
                    throw GitError(.limitExceeded, "\(Self.shown(path)): folders nest deeper than \(limits.maximumDepth) levels")
                }
                switch entry.pointee.mode & 0o170000 {
                case 0o120000: throw GitError(.other, "\(Self.shown(path)): symbolic links are not allowed in a policy tree")
                case 0o160000: throw GitError(.other, "\(Self.shown(path)): submodules are not allowed in a policy tree")
                default: break
                }
                budget.files += 1
                guard budget.files <= limits.maximumFiles else {
                    throw GitError(.limitExceeded, "\(Self.shown(path)): the policy tree holds more than \(limits.maximumFiles) files")
                }
                var oid = entry.pointee.id
                let contents = try blobContents(&oid, path: path, limit: limits.maximumFileBytes)
                budget.bytes += contents.count
                guard budget.bytes <= limits.maximumTotalBytes else {
                    throw GitError(.limitExceeded, "\(Self.shown(path)): the policy tree holds more than \(limits.maximumTotalBytes) bytes")
                }
                files.append(GitFile(path: path, contents: contents))
            }
        }
        return files
    }

    /// One staged file; nil when the index has none at `path`.
    package func stagedFile(at path: String) throws -> GitFile? {
        try stagedFiles(under: "", include: { $0 == path }).first
    }

    private func withIndex<T>(_ body: (OpaquePointer) throws -> T) throws -> T {
        var index: OpaquePointer?
        guard git_repository_index(&index, handle) == 0, let index else {
            throw GitError.last(.other, "\(location): cannot read the index")
        }
        defer { git_index_free(index) }
        return try body(index)
    }

    /// A path as an error shows it: control characters escaped (`\x1b`).
    static func shown(_ path: String) -> String {
        var result = ""
        for scalar in path.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7F {
                let digits = String(scalar.value, radix: 16)
                result += "\\x" + (digits.count == 1 ? "0" : "") + digits
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    private func refuseLinks(_ entry: OpaquePointer, path: String) throws {
        if git_tree_entry_filemode(entry) == GIT_FILEMODE_LINK {
            throw GitError(.other, "\(path): symbolic links are not allowed in a policy tree")
        }
    }

    private func blobContents(_ oid: UnsafePointer<git_oid>?, path: String, limit: Int = TreeLimits.standard.maximumFileBytes) throws -> [UInt8] {
        // The size from the object's header first, so a blob over the limit is never inflated
        // (600 MiB of one repeated byte is about 600 KB in git).
        var odb: OpaquePointer?
        if git_repository_odb(&odb, handle) == 0, let odb {
            defer { git_odb_free(odb) }
            var length = 0
            var type = GIT_OBJECT_INVALID
            if git_odb_read_header(&length, &type, odb, oid) == 0, length > limit {
                throw GitError(.limitExceeded, "\(path): \(length) bytes is larger than the \(limit)-byte limit for a policy file")
            }
        }
        var blob: OpaquePointer?
        guard git_blob_lookup(&blob, handle, oid) == 0, let blob else {
            throw GitError.last(.other, "cannot read \(path)")
        }
        defer { git_blob_free(blob) }
        let size = Int(git_blob_rawsize(blob))
        guard size <= limit else {
            throw GitError(.limitExceeded, "\(path): \(size) bytes is larger than the \(limit)-byte limit for a policy file")
        }
        guard size > 0, let raw = git_blob_rawcontent(blob) else { return [] }
        return Array(UnsafeRawBufferPointer(start: raw, count: size))
    }

    static func oidString(_ oid: UnsafePointer<git_oid>?) -> String {
        var buffer = [CChar](repeating: 0, count: 41)
        git_oid_tostr(&buffer, buffer.count, oid)
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    func oidString(_ oid: UnsafePointer<git_oid>?) -> String { Self.oidString(oid) }
}

/// Calls `body` with a `git_strarray` of `strings`, valid only during the call.
func withStringArray<T>(_ strings: [String], _ body: (inout git_strarray) -> T) -> T {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    defer { pointers.forEach { free($0) } }
    return pointers.withUnsafeMutableBufferPointer { buffer in
        var array = git_strarray(strings: buffer.baseAddress, count: strings.count)
        return body(&array)
    }
}

/// The libgit2 this process runs with (`1.5.1`) once a repository has loaded it; before that,
/// the one it was built with (the package depends on that release), so that asking loads nothing.
package var libgit2Version: String {
    guard tether_git_loaded() != 0 else { return LIBGIT2_VERSION }
    var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
    git_libgit2_version(&major, &minor, &patch)
    return "\(major).\(minor).\(patch)"
}
