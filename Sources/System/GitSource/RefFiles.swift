#if canImport(Glibc)
import Glibc
#endif
import Primitives

/// What a ref names, read from a repository's own files (HEAD, loose refs, `packed-refs`) on
/// POSIX calls, without loading libgit2: a cycle whose ref still names the revision it applied
/// last needs nothing more from git (docs/architecture.md, "What an endpoint pays").
///
/// It answers only where git's answer is certain, and nil everywhere else, so that the caller
/// asks libgit2: a work tree whose `.git` is a file, a folder inside a repository, reftable, a
/// repository another user owns, an expression (`main~1`, `v1.*`), a name that could be an
/// abbreviated commit id, a ref file that is not a plain SHA-1 id.
package enum RefFiles {
    /// The object id that `ref` (nil or empty: HEAD) names in the repository at `path`, found
    /// as `GitRepository.resolve` finds it but not peeled: an annotated tag's own id, not its
    /// commit's.
    package static func objectID(_ ref: String?, repositoryAt path: String) -> String? {
        guard let folder = gitFolder(path) else { return nil }
        let wanted = (ref?.isEmpty == false) ? ref! : "HEAD"
        guard isPlainName(wanted) else { return nil }
        let packed = PackedRefs(folder)
        // `resolve` hands the name to revparse first, which reads it as git's rev-parse does
        // (gitrevisions(7)); when none of those refs exists, its later candidates
        // (refs/heads/NAME read the same way, …, origin's branch) are left to libgit2.
        let candidates: [String]
        if wanted == "HEAD" || wanted.hasPrefix("refs/") {
            candidates = [wanted]
        } else {
            // A file of that name at the top (FETCH_HEAD, or something odd) is left to libgit2.
            guard !PlainFiles.exists(folder + "/" + wanted) else { return nil }
            candidates = ["refs/\(wanted)", "refs/tags/\(wanted)", "refs/heads/\(wanted)", "refs/remotes/\(wanted)", "refs/remotes/\(wanted)/HEAD"]
        }
        for candidate in candidates {
            switch lookUp(candidate, in: folder, packed: packed, depth: 0) {
            case .found(let id): return id
            case .missing: continue
            case .unsure: return nil
            }
        }
        return nil
    }

    /// Whether the repository at `path` holds the object `id` (40 hexadecimal digits): a loose
    /// object, or one listed in a pack's index (version 2). False when it holds none, or the
    /// files cannot say (a repository borrowing objects from another, an unreadable index).
    package static func holdsObject(_ id: String, repositoryAt path: String) -> Bool {
        guard let folder = gitFolder(path), let binary = objectBytes(id) else { return false }
        let objects = folder + "/objects"
        guard !PlainFiles.exists(objects + "/info/alternates") else { return false }
        if PlainFiles.exists(objects + "/" + id.prefix(2) + "/" + id.dropFirst(2)) { return true }
        return PlainFiles.entries(objects + "/pack").contains { name in
            name.hasSuffix(".idx") && PackIndex.lists(binary, in: objects + "/pack/" + name)
        }
    }

    /// The 20 bytes of a SHA-1 id written in hexadecimal.
    private static func objectBytes(_ id: String) -> [UInt8]? {
        guard objectID(Array(id.utf8)) != nil else { return nil }
        let digits = Array(id.utf8).map { $0 <= UInt8(ascii: "9") ? $0 - UInt8(ascii: "0") : $0 - UInt8(ascii: "a") + 10 }
        return (0..<20).map { digits[2 * $0] << 4 | digits[2 * $0 + 1] }
    }

    /// A pack index, version 2 (gitformat-pack(5)): a header, 256 counts by first byte, then
    /// the sorted ids, looked up by reading only what a binary search needs.
    private enum PackIndex {
        static func lists(_ id: [UInt8], in path: String) -> Bool {
            let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
            guard descriptor >= 0 else { return false }
            defer { close(descriptor) }
            func read(_ count: Int, at offset: Int) -> [UInt8]? {
                var bytes = [UInt8](repeating: 0, count: count)
                let done = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, count, off_t(offset)) }
                return done == count ? bytes : nil
            }
            func count(_ bytes: [UInt8], at index: Int) -> Int {
                bytes[index * 4..<index * 4 + 4].reduce(0) { $0 << 8 | Int($1) }
            }
            guard let header = read(8, at: 0), header == [0xFF, 0x74, 0x4F, 0x63, 0, 0, 0, 2], let fanout = read(1024, at: 8) else { return false }
            var low = id[0] == 0 ? 0 : count(fanout, at: Int(id[0]) - 1)
            var high = count(fanout, at: Int(id[0]))
            guard low <= high, high <= count(fanout, at: 255) else { return false }
            while low < high {
                let middle = (low + high) / 2
                guard let name = read(20, at: 8 + 1024 + middle * 20) else { return false }
                if name == id { return true }
                if name.lexicographicallyPrecedes(id) { low = middle + 1 } else { high = middle }
            }
            return false
        }
    }

    private enum Answer { case found(String), missing, unsure }

    /// The git folder of a repository opened at `path` exactly (a work tree's `.git` folder, or
    /// the repository itself when bare), owned by this user; nil for anything else.
    private static func gitFolder(_ path: String) -> String? {
        let base = path.hasSuffix("/") && path.count > 1 ? String(path.dropLast()) : path
        var folder: String
        if isOwnedFolder(base + "/.git") {
            folder = base + "/.git"
        } else if PlainFiles.exists(base + "/.git") {
            return nil
        } else {
            folder = base
        }
        guard isOwnedFolder(base), isOwnedFolder(folder + "/refs"), isOwnedFolder(folder + "/objects"), PlainFiles.exists(folder + "/HEAD"),
              !PlainFiles.exists(folder + "/reftable"), !PlainFiles.exists(folder + "/commondir") else { return nil }
        return folder
    }

    /// A folder (not a link to one) owned by the effective user.
    private static func isOwnedFolder(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR && info.st_uid == geteuid()
    }

    /// A ref name with nothing revparse would read as more than a name, that cannot be taken
    /// for an abbreviated commit id and stays inside the git folder.
    private static func isPlainName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= 255, bytes.first != UInt8(ascii: "/"), bytes.first != UInt8(ascii: "-"), bytes.last != UInt8(ascii: "/"),
              bytes.last != UInt8(ascii: "."), !name.hasSuffix(".lock"), !name.containsText(".."), !name.containsText("//"), !name.containsText("/.") else { return false }
        let isAllowed = { (byte: UInt8) in
            byte.isASCIILetter || byte.isASCIIDigit || byte == UInt8(ascii: "/") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
                || byte == UInt8(ascii: ".")
        }
        guard bytes.allSatisfy(isAllowed) else { return false }
        return !(bytes.count >= 4 && bytes.allSatisfy(\.isLowercaseHexDigit))
    }

    /// A ref as a loose file, else in packed-refs; symbolic refs are followed as libgit2 does
    /// (up to five levels).
    private static func lookUp(_ name: String, in folder: String, packed: PackedRefs, depth: Int) -> Answer {
        guard depth <= 5 else { return .unsure }
        let file = folder + "/" + name
        var info = stat()
        if lstat(file, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFREG, info.st_size <= 4096, let bytes = PlainFiles.contents(file) else {
                // A folder of that name (refs/heads/team/…) is no ref; anything else is odd.
                return info.st_mode & S_IFMT == S_IFDIR ? packedAnswer(name, packed) : .unsure
            }
            var text = bytes[...]
            while let last = text.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") { text.removeLast() }
            if text.starts(with: Array("ref: ".utf8)) {
                let target = String(decoding: text.dropFirst(5), as: UTF8.self)
                guard target.hasPrefix("refs/"), isPlainName(target) else { return .unsure }
                switch lookUp(target, in: folder, packed: packed, depth: depth + 1) {
                case .found(let id): return .found(id)
                case .missing, .unsure: return .unsure  // HEAD of an unborn branch: libgit2 says why
                }
            }
            return objectID(text).map { .found($0) } ?? .unsure
        }
        return packedAnswer(name, packed)
    }

    private static func packedAnswer(_ name: String, _ packed: PackedRefs) -> Answer {
        switch packed {
        case .unreadable: return .unsure
        case .refs(let refs): return refs[Array(name.utf8)].map { .found($0) } ?? .missing
        }
    }

    /// 40 lowercase hexadecimal digits (a SHA-1 id), or nil.
    private static func objectID<Bytes: Collection>(_ bytes: Bytes) -> String? where Bytes.Element == UInt8 {
        guard bytes.count == 40, bytes.allSatisfy(\.isLowercaseHexDigit) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The refs of a `packed-refs` file (none when there is no file), by the bytes of their
    /// names: git compares bytes, Swift's strings compare by Unicode equivalence.
    private enum PackedRefs {
        case refs([[UInt8]: String])
        case unreadable

        init(_ folder: String) {
            let path = folder + "/packed-refs"
            guard PlainFiles.exists(path) else {
                self = .refs([:])
                return
            }
            guard let bytes = PlainFiles.contents(path) else {
                self = .unreadable
                return
            }
            var refs: [[UInt8]: String] = [:]
            for line in bytes.split(separator: UInt8(ascii: "\n")) {
                guard let first = line.first, first != UInt8(ascii: "#"), first != UInt8(ascii: "^") else { continue }
                guard line.count > 41, line[line.startIndex + 40] == UInt8(ascii: " "),
                      let id = RefFiles.objectID(line.prefix(40)) else {
                    self = .unreadable
                    return
                }
                refs[Array(line.dropFirst(41))] = id
            }
            self = .refs(refs)
        }
    }
}
