#if canImport(Glibc)
import Glibc
#endif
import ChildProcess
import FoundationEssentials
import GitSource
import IntegrationModel
import Primitives
import X509

// `tether publish`: a ref's revisions as static files any web server, CDN or object store can
// serve, and the message that says one moved. docs/architecture.md, "Push: notifications and
// bundles". Neither is trusted by a controller: a message only makes it look sooner, a bundle
// only supplies objects, and the revision is vouched for (signatures, ancestry) as from git. A
// message signed by the publisher (`--sign-key`) also vouches for where the ref points, which
// commit signatures cannot: only such a message lets a controller take a commit from a bundle.

/// The message `tether publish --notify` leaves on the broker (retained): which commit a ref
/// points at now, and where its bundle is, relative to the published folder.
package struct PublishedRevision: Codable, Sendable, Equatable {
    /// The repository as the publisher named it (redacted): for people reading the message.
    package var repository: String
    /// The full ref name (`refs/heads/main`).
    package var ref: String
    /// The commit id (40 hexadecimal digits).
    package var commit: String
    /// The full bundle, relative to the published folder (`bundles/<commit>.bundle`).
    package var bundle: String
    /// When it was published (RFC 3339).
    package var publishedAt: String
    /// The publisher's SSH signature (namespace `tether-publish`) over `statement`; nil when
    /// published without `--sign-key`.
    package var signature: String?

    /// The namespace publication signatures are made in (ssh-keygen -Y sign -n).
    package static let signatureNamespace = "tether-publish"

    package init(repository: String, ref: String, commit: String, bundle: String, publishedAt: String, signature: String? = nil) {
        self.repository = repository
        self.ref = ref
        self.commit = commit
        self.bundle = bundle
        self.publishedAt = publishedAt
        self.signature = signature
    }

    /// What the publisher signs: that the ref pointed at the commit at that time.
    package var statement: [UInt8] {
        Array("tether publication v1\nref \(ref)\ncommit \(commit)\npublishedAt \(publishedAt)\n".utf8)
    }

    /// When it was published; nil when `publishedAt` is not a time.
    package var publishedDate: Date? { Timestamp.date(publishedAt) }

    /// Signs the statement with the SSH key `keyFile` (or, given a public key, the ssh-agent's
    /// matching key) through ssh-keygen, as `git commit -S` with gpg.format=ssh does.
    package mutating func sign(keyFile: String) throws {
        let outcome: ChildOutcome
        do {
            outcome = try ChildProcess.run("/usr/bin/ssh-keygen", ["-q", "-Y", "sign", "-f", keyFile, "-n", Self.signatureNamespace],
                                           input: statement, timeout: 30)
        } catch {
            throw SourceError(message: "cannot sign the publication with ssh-keygen: \(error)")
        }
        let armored = outcome.output
        guard outcome.status == 0, armored.hasPrefix("-----BEGIN SSH SIGNATURE-----") else {
            throw SourceError(message: "ssh-keygen could not sign with \(keyFile): \(TerminalText.excerpt(outcome.errorOutput, limit: 300))")
        }
        signature = armored
    }

    /// Whether an allowed signer signed this publication: the principal, else why not.
    package func verifiedSigner(allowed: [AllowedSigner]) -> Result<String, SourceError> {
        guard let signature else {
            return .failure(SourceError(message: "the message is not signed (publish with --sign-key)"))
        }
        let verdict = SSHSignature.verify(armored: signature, payload: statement, allowed: allowed, namespace: Self.signatureNamespace,
                                          at: publishedDate.map { Int64($0.timeIntervalSince1970) })
        guard case .verified(let principal, _) = verdict else {
            return .failure(SourceError(message: "the message's signature is \(verdict)"))
        }
        return .success(principal)
    }

    /// Reads a message; throws, saying what is wrong, on anything else.
    package init(message bytes: [UInt8]) throws {
        let decoded: PublishedRevision
        do {
            decoded = try JSONDecoder().decode(PublishedRevision.self, from: Data(bytes))
        } catch {
            throw SourceError(message: "not a publication message (JSON with repository, ref, commit, bundle, publishedAt expected)")
        }
        guard GitBundle.isCommitID(decoded.commit) else { throw SourceError(message: "the message's commit is not a 40-digit commit id") }
        guard decoded.ref.hasPrefix("refs/heads/") || decoded.ref.hasPrefix("refs/tags/"), Publication.isSafeRefName(decoded.ref) else {
            throw SourceError(message: "the message's ref is not a branch or tag name")
        }
        guard decoded.publishedDate != nil else { throw SourceError(message: "the message's publishedAt is not a time (RFC 3339)") }
        guard decoded.repository.utf8.count <= 1024, (decoded.signature?.utf8.count ?? 0) <= 8192 else {
            throw SourceError(message: "the message's repository or signature is too long")
        }
        self = decoded
    }

    /// The message's bytes (compact JSON, keys sorted).
    package var message: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(self)) ?? Data())
    }

    /// Whether this message is about `wanted` (a ref as `--ref` takes it: `main`, `v1.2`, a full
    /// name; nil for the remote's HEAD, which any branch may be).
    package func concerns(_ wanted: String?) -> Bool {
        guard let wanted else { return ref.hasPrefix("refs/heads/") }
        return ref == wanted || ref == "refs/heads/\(wanted)" || ref == "refs/tags/\(wanted)"
    }
}

/// What one `tether publish` wrote.
package struct PublicationSummary: Sendable {
    package let ref: String
    package let commit: GitCommit
    /// Bundles written now (path relative to the folder, bytes); those already there are kept.
    package let written: [(path: String, bytes: Int)]
    /// The full bundle's path, relative to the folder.
    package let fullBundle: String
    /// Whether the ref already pointed there (nothing new but the index).
    package let unchanged: Bool
}

/// The published folder:
///
///     info/refs                        the ref index (`<commit>\t<ref>` lines, as `git update-server-info`)
///     bundles/<commit>.bundle          every object of the commit
///     bundles/<from>-<commit>.bundle   what a reader at an earlier published commit lacks
///     tether/published                 the commits published, oldest first (`<ref> <commit>`)
///     tether/lock                      held while one `tether publish` writes
///
/// Bundles are written before the index that names them, each through a temporary file and a
/// rename, so a reader never sees a half-written file or an index ahead of its bundles.
package enum Publication {
    /// Earlier published commits of the ref a delta bundle is written from.
    package static let defaultDeltas = 10

    /// Publishes `ref` (a full ref name) at `commit` of `repository` into `folder`.
    package static func publish(repository: GitRepository, ref: String, commit: GitCommit, into folder: String,
                                deltas: Int = defaultDeltas) throws -> PublicationSummary {
        for sub in ["", "/bundles", "/info", "/tether"] {
            guard mkdir(folder + sub, 0o755) == 0 || errno == EEXIST else {
                throw SourceError(message: "cannot make \(folder + sub): \(String(cString: strerror(errno)))")
            }
        }
        // One publisher at a time per folder (two CI jobs after two merges): the second waits.
        let lock = open("\(folder)/tether/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lock >= 0, flock(lock, LOCK_EX) == 0 else {
            throw SourceError(message: "cannot lock \(folder)/tether/lock: \(String(cString: strerror(errno)))")
        }
        defer { close(lock) }
        let history = readHistory(folder)
        var written: [(String, Int)] = []
        let fullBundle = "bundles/\(commit.id).bundle"
        if !FileManager.default.fileExists(atPath: "\(folder)/\(fullBundle)") {
            let bytes = try repository.bundle(of: commit, as: ref).bytes
            try writeAtomically(bytes, to: "\(folder)/\(fullBundle)")
            written.append((fullBundle, bytes.count))
        }
        var seen: Set<String> = [commit.id]
        for earlier in history.reversed() where earlier.ref == ref && seen.insert(earlier.commit).inserted {
            guard seen.count <= deltas + 1 else { break }
            let path = "bundles/\(earlier.commit)-\(commit.id).bundle"
            guard !FileManager.default.fileExists(atPath: "\(folder)/\(path)"), repository.contains(commit: earlier.commit),
                  repository.isDescendant(commit, of: earlier.commit) else { continue }
            let bytes = try repository.bundle(of: commit, as: ref, excluding: [earlier.commit]).bytes
            try writeAtomically(bytes, to: "\(folder)/\(path)")
            written.append((path, bytes.count))
        }
        var refs = readIndex(folder)
        let unchanged = refs[ref] == commit.id
        refs[ref] = commit.id
        if history.last.map({ $0.ref != ref || $0.commit != commit.id }) ?? true {
            let kept = (history + [(ref, commit.id)]).suffix(1000)
            try writeAtomically(Array(kept.map { "\($0.ref) \($0.commit)\n" }.joined().utf8), to: "\(folder)/tether/published")
        }
        try writeAtomically(Array(refs.sorted { $0.key < $1.key }.map { "\($0.value)\t\($0.key)\n" }.joined().utf8), to: "\(folder)/info/refs")
        return PublicationSummary(ref: ref, commit: commit, written: written, fullBundle: fullBundle, unchanged: unchanged)
    }

    /// The ref index a folder holds (ref → commit); empty when there is none.
    package static func readIndex(_ folder: String) -> [String: String] {
        guard let data = FileManager.default.contents(atPath: "\(folder)/info/refs") else { return [:] }
        var refs: [String: String] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            let parts = line.split(separator: "\t")
            if parts.count == 2, GitBundle.isCommitID(String(parts[0])) { refs[String(parts[1])] = String(parts[0]) }
        }
        return refs
    }

    private static func readHistory(_ folder: String) -> [(ref: String, commit: String)] {
        guard let data = FileManager.default.contents(atPath: "\(folder)/tether/published") else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ")
            guard parts.count == 2, GitBundle.isCommitID(String(parts[1])) else { return nil }
            return (String(parts[0]), String(parts[1]))
        }
    }

    /// Writes through a temporary file beside `path`, synced, then renamed over it.
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        let temporary = "\(path).tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw SourceError(message: "cannot write \(temporary): \(String(cString: strerror(errno)))") }
        guard writeAll(bytes, to: fd) else {
            let reason = String(cString: strerror(errno))
            close(fd)
            unlink(temporary)
            throw SourceError(message: "cannot write \(temporary): \(reason)")
        }
        let synced = fsync(fd) == 0
        close(fd)
        guard synced, rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw SourceError(message: "cannot write \(path): \(reason)")
        }
    }

    /// A ref name safe to put in a file and a URL: printable ASCII, no `..`, no spaces or controls.
    static func isSafeRefName(_ name: String) -> Bool {
        !name.contains("..") && name.utf8.count <= 255
            && name.utf8.allSatisfy { $0 > 32 && $0 < 127 && $0 != UInt8(ascii: "\\") && $0 != UInt8(ascii: "~") && $0 != UInt8(ascii: "^") && $0 != UInt8(ascii: ":") }
    }
}
