#if canImport(Glibc)
import Glibc
#endif
import GitSource
import Primitives

/// The files of the revision applied last, kept in the state directory (`kept-revision`), so
/// that a controller starting while the ref still names that revision reads them from there
/// and loads no libgit2 (docs/architecture.md, "What an endpoint pays").
///
/// Kept only after the revision was vouched for and applied, and used only while the agent's
/// applied revision is still that commit and the gate is as it was: it never stands in for
/// another revision, so it cannot carry a rollback or a revision nobody vouched for.
package struct KeptRevision: Equatable, Sendable {
    /// One file of the commit.
    package struct File: Equatable, Sendable {
        package let path: String
        package let contents: [UInt8]

        package init(path: String, contents: [UInt8]) {
            self.path = path
            self.contents = contents
        }
    }

    package let commit: GitCommit
    /// The source it was read from: the repository as given and the folder of policy files.
    package let repository: String
    package let path: String
    /// What it was vouched for under (verification, allowed signers and their stamp), in the
    /// words of whoever keeps it: it stands in only under the same words.
    package let gate: String
    /// The principal that signed the commit, when verification is on.
    package let signer: String?
    /// The policy files, as the revision read them.
    package let policyFiles: [File]
    /// Other files the policies name (server certificates).
    package let otherFiles: [File]

    /// The most a kept revision holds: a larger one is read from git every time.
    package static let largest = 8 << 20

    /// Nil when the files hold more than `largest` bytes.
    package init?(commit: GitCommit, repository: String, path: String, gate: String, signer: String?, policyFiles: [File], otherFiles: [File]) {
        guard (policyFiles + otherFiles).reduce(0, { $0 + $1.contents.count + $1.path.utf8.count }) <= Self.largest else { return nil }
        self.commit = commit
        self.repository = repository
        self.path = path
        self.gate = gate
        self.signer = signer
        self.policyFiles = policyFiles
        self.otherFiles = otherFiles
    }

    /// The file's name in a state directory.
    package static let fileName = "kept-revision"

    private static let header = Array("tether kept revision 1\n".utf8)

    // MARK: - On disk: a header line, then netstrings ("5:hello,"), the last a checksum of the rest.

    /// The revision kept in `file`; nil when there is none or it is damaged (cut short, changed,
    /// of another format): the caller reads git instead.
    package static func read(from file: String) -> KeptRevision? {
        // Not a link, and never waiting on a FIFO put in its place.
        let descriptor = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var info = stat()
        let limit = largest * 2 + 65536
        guard fstat(descriptor, &info) == 0, info.st_mode & S_IFMT == S_IFREG, let bytes = readAll(descriptor, limit: limit), bytes.count <= limit,
              bytes.starts(with: header) else { return nil }
        var reader = Reader(bytes: bytes, position: header.count)
        do {
            let commit = GitCommit(id: try reader.text(), summary: try reader.text(), committedAt: try reader.number())
            let repository = try reader.text()
            let path = try reader.text()
            let gate = try reader.text()
            let signed = try reader.number() == 1
            let signer = try reader.text()
            func files() throws -> [File] {
                let count = try reader.number()
                guard (0...1_000_000).contains(count) else { throw Reader.Damaged() }
                return try (0..<Int(count)).map { _ in File(path: try reader.text(), contents: try reader.field()) }
            }
            let policyFiles = try files()
            let otherFiles = try files()
            let end = reader.position
            guard try reader.text() == checksum(bytes[..<end]), reader.position == bytes.count else { return nil }
            return KeptRevision(commit: commit, repository: repository, path: path, gate: gate, signer: signed ? signer : nil,
                                policyFiles: policyFiles, otherFiles: otherFiles)
        } catch {
            return nil
        }
    }

    /// Writes the revision to `file` in one rename (never half a file under that name); not
    /// flushed: a file damaged by a crash fails its checksum and git is read instead.
    package func write(to file: String) throws(SourceError) {
        var bytes = Self.header
        func field<Bytes: Collection>(_ value: Bytes) where Bytes.Element == UInt8 {
            bytes += Array("\(value.count):".utf8)
            bytes += value
            bytes.append(UInt8(ascii: ","))
        }
        for text in [commit.id, commit.summary, String(commit.committedAt), repository, path, gate, signer == nil ? "0" : "1", signer ?? ""] {
            field(Array(text.utf8))
        }
        for files in [policyFiles, otherFiles] {
            field(Array(String(files.count).utf8))
            for file in files {
                field(Array(file.path.utf8))
                field(file.contents)
            }
        }
        field(Array(Self.checksum(bytes[...]).utf8))
        let temporary = "\(file).\(getpid()).tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard descriptor >= 0 else { throw SourceError(message: "cannot write \(temporary): \(String(cString: strerror(errno)))") }
        let written = writeAll(bytes, to: descriptor)
        close(descriptor)
        guard written, rename(temporary, file) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw SourceError(message: "cannot write \(file): \(reason)")
        }
    }

    /// FNV-1a (64 bits) in hexadecimal: finds a file cut short or changed by a crash. The state
    /// directory is the owner's alone, so it need not resist someone who writes there.
    static func checksum(_ bytes: ArraySlice<UInt8>) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let digits = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// Reads netstrings from a position on.
    private struct Reader {
        struct Damaged: Error {}
        let bytes: [UInt8]
        var position: Int

        mutating func field() throws -> [UInt8] {
            var length = 0
            var digits = 0
            while position < bytes.count, bytes[position].isASCIIDigit {
                length = length * 10 + Int(bytes[position] - UInt8(ascii: "0"))
                digits += 1
                position += 1
                guard digits <= 9 else { throw Damaged() }
            }
            guard digits > 0, position < bytes.count, bytes[position] == UInt8(ascii: ":"), length <= bytes.count - position - 2 else { throw Damaged() }
            let start = position + 1
            guard bytes[start + length] == UInt8(ascii: ",") else { throw Damaged() }
            position = start + length + 1
            return Array(bytes[start..<(start + length)])
        }

        mutating func text() throws -> String {
            let field = try field()
            guard let text = String(validating: field, as: UTF8.self) else { throw Damaged() }
            return text
        }

        mutating func number() throws -> Int64 {
            guard let value = Int64(try text()) else { throw Damaged() }
            return value
        }
    }
}
