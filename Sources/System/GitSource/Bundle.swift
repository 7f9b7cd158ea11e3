internal import CGit2
#if canImport(Glibc)
import Glibc
#endif

/// A git bundle (git's v2 format, what `git bundle create` writes and `git fetch` reads): a
/// header naming the commits it carries and those it assumes the reader has, then a pack.
/// `tether publish` writes them; a controller with `--bundle-url` reads them instead of
/// fetching from git (docs/architecture.md, "Push: notifications and bundles").
package struct GitBundle: Sendable {
    /// The refs the bundle carries: name and commit id.
    package let refs: [(name: String, commit: String)]
    /// The commits a reader must already have (`-` lines): their objects are not in the pack.
    package let prerequisites: [String]
    /// The pack's bytes.
    package let pack: ArraySlice<UInt8>

    static let signature = "# v2 git bundle\n"
    /// The most a header may take: a bundle of Tether's carries one ref and a few prerequisites.
    static let maximumHeaderBytes = 64 << 10

    /// Reads a bundle's header. Throws, saying where, on anything that is not a v2 bundle.
    package init(parsing bytes: [UInt8]) throws {
        guard bytes.starts(with: Array(Self.signature.utf8)) else {
            throw GitError(.corrupted, "not a git bundle (it does not start with \"# v2 git bundle\")")
        }
        var refs: [(String, String)] = []
        var prerequisites: [String] = []
        var position = Self.signature.utf8.count
        var lineNumber = 1
        while true {
            lineNumber += 1
            guard position < Self.maximumHeaderBytes,
                  let end = bytes[position...].prefix(Self.maximumHeaderBytes - position).firstIndex(of: UInt8(ascii: "\n")) else {
                throw GitError(.corrupted, "bundle header line \(lineNumber): the header does not end within \(Self.maximumHeaderBytes) bytes (cut off?)")
            }
            let line = bytes[position..<end]
            position = end + 1
            if line.isEmpty { break }
            guard let text = String(validating: line, as: UTF8.self) else {
                throw GitError(.corrupted, "bundle header line \(lineNumber): not UTF-8")
            }
            if text.hasPrefix("-") {
                let id = String(text.dropFirst().prefix(40))
                guard Self.isCommitID(id) else { throw GitError(.corrupted, "bundle header line \(lineNumber): a prerequisite that is not a commit id") }
                prerequisites.append(id)
            } else {
                let parts = text.split(separator: " ", maxSplits: 1)
                guard parts.count == 2, Self.isCommitID(String(parts[0])), parts[1].hasPrefix("refs/") else {
                    throw GitError(.corrupted, "bundle header line \(lineNumber): expected \"<commit id> refs/…\"")
                }
                refs.append((String(parts[1]), String(parts[0])))
            }
        }
        guard !refs.isEmpty else { throw GitError(.corrupted, "the bundle names no ref") }
        guard bytes.count - position >= 32, bytes[position..<position + 4].elementsEqual(Array("PACK".utf8)) else {
            throw GitError(.corrupted, "the bundle's pack is missing or does not start with PACK (cut off?)")
        }
        self.refs = refs
        self.prerequisites = prerequisites
        self.pack = bytes[position...]
    }

    init(refs: [(name: String, commit: String)], prerequisites: [String], pack: ArraySlice<UInt8>) {
        self.refs = refs
        self.prerequisites = prerequisites
        self.pack = pack
    }

    /// The bundle as a file holds it.
    package var bytes: [UInt8] {
        var header = Self.signature
        for prerequisite in prerequisites { header += "-\(prerequisite)\n" }
        for ref in refs { header += "\(ref.commit) \(ref.name)\n" }
        header += "\n"
        return Array(header.utf8) + pack
    }

    /// Whether `text` is a full commit id as git writes it (40 lower-case hexadecimal digits).
    package static func isCommitID(_ text: String) -> Bool {
        text.utf8.count == 40 && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }
}

extension GitRepository {
    /// A bundle of `commit` under `refName` holding every object a reader that has the commits
    /// `excluding` lacks (all of them when `excluding` is empty).
    package func bundle(of commit: GitCommit, as refName: String, excluding: [String] = []) throws -> GitBundle {
        var builder: OpaquePointer?
        guard git_packbuilder_new(&builder, handle) == 0, let builder else { throw GitError.last(.other, "cannot start a pack") }
        defer { git_packbuilder_free(builder) }
        var walk: OpaquePointer?
        guard git_revwalk_new(&walk, handle) == 0, let walk else { throw GitError.last(.other, "cannot walk the history") }
        defer { git_revwalk_free(walk) }
        var tip = git_oid()
        guard git_oid_fromstr(&tip, commit.id) == 0, git_revwalk_push(walk, &tip) == 0 else {
            throw GitError.last(.notFound, "commit \(commit.id.prefix(12))")
        }
        for base in excluding {
            var oid = git_oid()
            guard git_oid_fromstr(&oid, base) == 0, git_revwalk_hide(walk, &oid) == 0 else {
                throw GitError.last(.notFound, "commit \(base.prefix(12))")
            }
        }
        guard git_packbuilder_insert_walk(builder, walk) == 0 else { throw GitError.last(.other, "cannot gather the objects of \(commit.id.prefix(12))") }
        var buffer = git_buf()
        defer { git_buf_dispose(&buffer) }
        guard git_packbuilder_write_buf(&buffer, builder) == 0, let start = buffer.ptr else {
            throw GitError.last(.other, "cannot write the pack of \(commit.id.prefix(12))")
        }
        let pack = Array(UnsafeRawBufferPointer(start: start, count: buffer.size))
        return GitBundle(refs: [(refName, commit.id)], prerequisites: excluding, pack: pack[...])
    }

    /// Adds a bundle's objects to this repository, moving no ref. Refuses, having added nothing
    /// a reader could use, a bundle whose prerequisites this repository lacks, one cut off or
    /// damaged (the pack's checksum), and one whose objects do not connect (libgit2's
    /// connectivity check). Returns the commits the bundle names, now present.
    @discardableResult
    package func add(_ bundle: GitBundle) throws -> [(name: String, commit: String)] {
        for prerequisite in bundle.prerequisites where !contains(commit: prerequisite) {
            throw GitError(.notFound, "the bundle needs commit \(prerequisite.prefix(12)), which this repository does not have")
        }
        var odb: OpaquePointer?
        guard git_repository_odb(&odb, handle) == 0, let odb else { throw GitError.last(.other, "cannot open the object database") }
        defer { git_odb_free(odb) }
        var options = git_indexer_options()
        git_indexer_options_init(&options, UInt32(GIT_INDEXER_OPTIONS_VERSION))
        options.verify = 1
        var indexer: OpaquePointer?
        let packFolder = String(cString: git_repository_path(handle)) + "objects/pack"
        guard git_indexer_new(&indexer, packFolder, 0, odb, &options) == 0, let indexer else {
            throw GitError.last(.other, "cannot index the bundle's pack")
        }
        defer { git_indexer_free(indexer) }
        var progress = git_indexer_progress()
        let appended = bundle.pack.withUnsafeBytes { git_indexer_append(indexer, $0.baseAddress, $0.count, &progress) }
        guard appended == 0, git_indexer_commit(indexer, &progress) == 0 else {
            throw GitError.last(.corrupted, "the bundle's pack is damaged or incomplete")
        }
        git_odb_refresh(odb)
        for ref in bundle.refs where !contains(commit: ref.commit) {
            // A pack that lies about what it carries is not kept.
            if let name = git_indexer_name(indexer) {
                for suffix in [".pack", ".idx"] { unlink("\(packFolder)/pack-\(String(cString: name))\(suffix)") }
            }
            throw GitError(.corrupted, "the bundle names commit \(ref.commit.prefix(12)) for \(ref.name) but does not carry it")
        }
        return bundle.refs
    }

    /// The full name of the branch or tag `name` means (`main` → `refs/heads/main`), as git
    /// resolves a short name; `HEAD` means the branch it points at.
    package func referenceName(_ name: String) throws -> String {
        var reference: OpaquePointer?
        let found = name == "HEAD" ? git_repository_head(&reference, handle) : git_reference_dwim(&reference, handle, name)
        guard found == 0, let reference else { throw GitError.last(.unknownRef, "\(location): no branch or tag '\(name)'") }
        defer { git_reference_free(reference) }
        let full = String(cString: git_reference_name(reference))
        guard full.hasPrefix("refs/heads/") || full.hasPrefix("refs/tags/") else {
            throw GitError(.unknownRef, "\(location): '\(name)' is \(full), not a branch or tag")
        }
        return full
    }

    /// Points `name` (a full ref name) at `commit`, which the repository must have.
    package func setReference(_ name: String, to commit: String, reason: String) throws {
        var oid = git_oid()
        guard git_oid_fromstr(&oid, commit) == 0 else { throw GitError(.notFound, "bad commit id \(commit)") }
        var reference: OpaquePointer?
        guard git_reference_create(&reference, handle, name, &oid, 1, reason) == 0 else {
            throw GitError.last(.other, "cannot point \(name) at \(commit.prefix(12))")
        }
        git_reference_free(reference)
    }
}
