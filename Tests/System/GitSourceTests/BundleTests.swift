import Foundation
import GitSource
import TetherTestSupport
import Testing

@Suite("Git bundles written with libgit2's pack builder and read with its indexer")
struct BundleTests {
    /// A repository with two commits, and a bare copy that has only the first.
    private func repositories() throws -> (source: GitFixture, first: String, second: String, reader: TemporaryDirectory) {
        let source = try GitFixture()
        let first = try source.commit(["policies/a.yaml": "one\n"], message: "First")
        let reader = try TemporaryDirectory("tether-reader")
        try runProgram("git", ["clone", "-q", "--bare", source.path, reader.url.appending(path: "r.git").path])
        let second = try source.commit(["policies/a.yaml": "two\n", "policies/b.yaml": "bee\n"], message: "Second")
        return (source, first, second, reader)
    }

    @Test("A full and a delta bundle are what git bundle verify accepts; read, they bring exactly the commit, and move no ref")
    func roundTrip() throws {
        let (source, first, second, reader) = try repositories()
        let repository = try GitRepository(path: source.path)
        let full = try repository.bundle(of: repository.resolve(second), as: "refs/heads/main")
        let delta = try repository.bundle(of: repository.resolve(second), as: "refs/heads/main", excluding: [first])
        #expect(delta.bytes.count < full.bytes.count)
        for (name, bundle) in [("full", full), ("delta", delta)] {
            let path = try reader.write("\(name).bundle", Data(bundle.bytes))
            let verified = try runProgram("git", ["-C", source.path, "bundle", "verify", path])
            #expect(verified.status == 0, "\(name): \(verified.output)")
        }
        let mirror = try GitRepository(path: reader.url.appending(path: "r.git").path)
        #expect(!mirror.contains(commit: second))
        let parsed = try GitBundle(parsing: delta.bytes)
        #expect(parsed.prerequisites == [first])
        #expect(try mirror.add(parsed).map(\.commit) == [second])
        #expect(mirror.contains(commit: second))
        #expect(try mirror.resolve("main").id == first, "reading a bundle moves no ref")
        let files = try mirror.files(in: mirror.resolve(second), under: "policies") { _ in true }
        #expect(files.map(\.path) == ["policies/a.yaml", "policies/b.yaml"])
        try mirror.setReference("refs/heads/main", to: second, reason: "test")
        #expect(try mirror.resolve("main").id == second)
    }

    @Test("A bundle cut off, with a flipped byte, without its prerequisite, or not a bundle at all is refused saying which, and adds no commit")
    func damaged() throws {
        let (source, first, second, reader) = try repositories()
        let repository = try GitRepository(path: source.path)
        let delta = try repository.bundle(of: repository.resolve(second), as: "refs/heads/main", excluding: [first]).bytes
        let mirror = try GitRepository(path: reader.url.appending(path: "r.git").path)

        var cut = delta
        cut.removeLast(30)
        var flipped = delta
        flipped[flipped.count - 40] ^= 0xff
        for (name, bytes) in [("cut off", cut), ("flipped", flipped)] {
            #expect(throws: GitError.self, "\(name)") { try mirror.add(GitBundle(parsing: bytes)) }
            #expect(!mirror.contains(commit: second), "\(name)")
        }
        do { try mirror.add(GitBundle(parsing: cut)) } catch { #expect("\(error)".contains("damaged or incomplete"), "\(error)") }

        // A reader that lacks the base: the delta is refused before a byte is indexed.
        let empty = try TemporaryDirectory("tether-empty")
        try runProgram("git", ["init", "-q", "--bare", empty.path])
        let bare = try GitRepository(path: empty.path)
        do {
            try bare.add(GitBundle(parsing: delta))
            Issue.record("a delta without its prerequisite was read")
        } catch {
            #expect("\(error)".contains("needs commit \(first.prefix(12))"), "\(error)")
        }

        for (bytes, says) in [(Array("<html>not found</html>".utf8), "not a git bundle"),
                              (Array("# v2 git bundle\n\u{1b}[31m refs/heads/main\n\nPACK".utf8), "line 2: expected"),
                              (Array("# v2 git bundle\n\(second) refs/heads/main\n\n".utf8), "pack is missing"),
                              (Array("# v2 git bundle\n\(second) refs/heads/main".utf8), "the header does not end")] {
            do {
                _ = try GitBundle(parsing: bytes)
                Issue.record("read: \(says)")
            } catch {
                #expect("\(error)".contains(says), "\(error)")
            }
        }
    }
}
