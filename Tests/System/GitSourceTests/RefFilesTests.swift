import Foundation
import GitSource
import TetherTestSupport
import Testing

/// Refs read from a repository's files without libgit2 (RefFiles), against git's own answer.
@Suite("Refs read from the repository's files")
struct RefFilesTests {
    /// A repository with a branch, a lightweight and an annotated tag, a second commit and a
    /// branch that only git's remote-tracking refs know.
    private static func repository() throws -> (GitFixture, first: String, second: String) {
        let repo = try GitFixture()
        let first = try repo.commit(["policies/a.yaml": "# one\n"])
        try repo.git("tag", "light")
        try repo.git("tag", "-a", "-m", "Release", "v1.0")
        try repo.git("branch", "feature/x")
        let second = try repo.commit(["policies/a.yaml": "# two\n"])
        try repo.git("update-ref", "refs/remotes/origin/upstream", first)
        return (repo, first, second)
    }

    private static func revParse(_ repo: GitFixture, _ name: String) throws -> String {
        try runProgram("git", ["-C", repo.path, "rev-parse", "--verify", "-q", name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("Loose and packed refs, symbolic and detached HEAD, a bare repository: the id git names; an annotated tag's own id")
    func answersAsGit() throws {
        let (repo, first, second) = try Self.repository()
        let tag = try Self.revParse(repo, "refs/tags/v1.0")
        #expect(tag != first, "an annotated tag is an object of its own")
        let expected: [(String?, String)] = [(nil, second), ("", second), ("HEAD", second), ("main", second), ("refs/heads/main", second),
                                            ("feature/x", first), ("light", first), ("v1.0", tag)]
        for packed in [false, true] {
            if packed { try repo.git("pack-refs", "--all") }
            for (ref, id) in expected {
                #expect(RefFiles.objectID(ref, repositoryAt: repo.path) == id, "\(ref ?? "nil"), packed: \(packed)")
            }
        }
        // libgit2 peels to the same commit where the ref names a commit.
        #expect(try GitRepository(path: repo.path).resolve("feature/x").id == RefFiles.objectID("feature/x", repositoryAt: repo.path))

        try repo.git("checkout", "-q", "--detach", first)
        #expect(RefFiles.objectID(nil, repositoryAt: repo.path) == first)
        #expect(RefFiles.objectID(nil, repositoryAt: repo.path + "/") == first)

        let bare = try TemporaryDirectory("tether-bare")
        try runProgram("git", ["clone", "-q", "--mirror", repo.path, bare.path + "/policies.git"])
        #expect(RefFiles.objectID("main", repositoryAt: bare.path + "/policies.git") == second)
    }

    @Test("Where the files cannot say for sure, nil: libgit2 decides")
    func leavesTheRestToLibgit2() throws {
        let (repo, first, _) = try Self.repository()
        for expression in ["main~1", "main^", "HEAD@{1}", "v1.*", "main:policies", first.prefix(7).description, "cafe", "../main",
                           "refs/heads/../../x", "-main", "main.lock", "nosuch", "refs/heads/nosuch", "main\u{1b}[31m",
                           "upstream"] {
            #expect(RefFiles.objectID(expression, repositoryAt: repo.path) == nil, "\(expression)")
        }
        // A folder inside the work tree (libgit2 searches upward), and a work tree whose .git is a file.
        #expect(RefFiles.objectID(nil, repositoryAt: repo.path + "/policies") == nil)
        let worktree = try TemporaryDirectory("tether-worktree")
        try repo.git("worktree", "add", "-q", worktree.path + "/w", "feature/x")
        #expect(RefFiles.objectID(nil, repositoryAt: worktree.path + "/w") == nil)
        // A ref that is a link, or holds something else than an id.
        let heads = repo.path + "/.git/refs/heads"
        try FileManager.default.createSymbolicLink(atPath: heads + "/linked", withDestinationPath: heads + "/main")
        #expect(RefFiles.objectID("linked", repositoryAt: repo.path) == nil)
        try "not an id\n".write(toFile: heads + "/odd", atomically: true, encoding: .utf8)
        #expect(RefFiles.objectID("odd", repositoryAt: repo.path) == nil)
        // HEAD on a branch with no commit yet, and HEAD pointing outside refs/.
        try repo.git("symbolic-ref", "HEAD", "refs/heads/unborn")
        #expect(RefFiles.objectID(nil, repositoryAt: repo.path) == nil)
        try "ref: ../../etc/passwd\n".write(toFile: repo.path + "/.git/HEAD", atomically: true, encoding: .utf8)
        #expect(RefFiles.objectID(nil, repositoryAt: repo.path) == nil)
        // A damaged packed-refs file is not guessed around.
        try "ref: refs/heads/main\n".write(toFile: repo.path + "/.git/HEAD", atomically: true, encoding: .utf8)
        try repo.git("pack-refs", "--all")
        try "# pack-refs with: peeled\nnot a line\n".write(toFile: repo.path + "/.git/packed-refs", atomically: true, encoding: .utf8)
        #expect(RefFiles.objectID("light", repositoryAt: repo.path) == nil)
    }

    @Test("Packed refs are names of bytes: a look-alike by Unicode equivalence is another ref, as in git")
    func packedNamesAreBytes() throws {
        let (repo, first, _) = try Self.repository()
        try repo.git("pack-refs", "--all")
        // KELVIN SIGN K (U+212A) is canonically equivalent to K: Swift's == says equal, git does not.
        let packed = repo.path + "/.git/packed-refs"
        try (try String(contentsOfFile: packed, encoding: .utf8) + "\(first) refs/tags/\u{212A}8s\n").write(toFile: packed, atomically: true, encoding: .utf8)
        #expect(RefFiles.objectID("K8s", repositoryAt: repo.path) == nil)
        try repo.git("tag", "K8s", first)
        #expect(RefFiles.objectID("K8s", repositoryAt: repo.path) == first)
    }

    @Test("Whether the repository holds a commit: loose, packed, neither; never through another repository's objects")
    func holdsObject() throws {
        let (repo, first, second) = try Self.repository()
        #expect(RefFiles.holdsObject(second, repositoryAt: repo.path))
        try repo.git("gc", "-q", "--prune=now")
        #expect(!FileManager.default.fileExists(atPath: repo.path + "/.git/objects/" + first.prefix(2) + "/" + first.dropFirst(2)), "packed by gc")
        #expect(RefFiles.holdsObject(first, repositoryAt: repo.path) && RefFiles.holdsObject(second, repositoryAt: repo.path))
        for absent in [String(repeating: "0", count: 40), String(repeating: "f", count: 40), String(first.dropLast()) + (first.last == "0" ? "1" : "0")] {
            #expect(!RefFiles.holdsObject(absent, repositoryAt: repo.path), "\(absent)")
        }
        #expect(!RefFiles.holdsObject("not an id", repositoryAt: repo.path))
        // A ref file naming a commit the repository does not hold (a copy of the refs alone).
        let copy = try TemporaryDirectory("tether-refs-only")
        try runProgram("git", ["init", "-q", "-b", "main", copy.path])
        try "\(second)\n".write(toFile: copy.path + "/.git/refs/heads/main", atomically: true, encoding: .utf8)
        #expect(RefFiles.objectID(nil, repositoryAt: copy.path) == second)
        #expect(!RefFiles.holdsObject(second, repositoryAt: copy.path))
        // Objects borrowed from another repository are left to libgit2.
        try (repo.path + "/.git/objects\n").write(toFile: copy.path + "/.git/objects/info/alternates", atomically: true, encoding: .utf8)
        #expect(!RefFiles.holdsObject(second, repositoryAt: copy.path))
    }

    @Test("A repository another user owns is left to libgit2 (and its safe.directory rule)")
    func otherOwner() throws {
        let (repo, _, _) = try Self.repository()
        #expect(RefFiles.objectID(nil, repositoryAt: repo.path) != nil)
        guard getuid() == 0 else { return }
        try runProgram("chown", ["-R", "nobody", repo.path])
        defer { _ = try? runProgram("chown", ["-R", "root", repo.path]) }
        #expect(RefFiles.objectID(nil, repositoryAt: repo.path) == nil)
    }
}
