import Foundation
import GitSource
import TetherTestSupport
import Testing

@Suite("Reading policies from git objects with libgit2")
struct GitRepositoryTests {
    private func yaml(_ path: String) -> Bool { path.hasSuffix(".yaml") }

    @Test("libgit2's start no longer reads the system CA bundle: it is read before the first http(s) remote, and read whole")
    func certificatesPutOff() throws {
        // Debian's libgit2 uses mbedTLS and asks for the bundle in git_libgit2_init.
        #expect(GitRepository.systemCertificates.file == "/etc/ssl/certs/ca-certificates.crt", "\(GitRepository.systemCertificates)")
        // Nothing listens on port 1: the bundle is read before the connection is tried.
        #expect(throws: GitError.self) { try GitRepository.advertisedRefs(url: "http://127.0.0.1:1/policies.git", timeout: 5) }
        #expect(GitRepository.systemCertificates.loaded)
    }

    @Test("Branches, tags, commit ids and HEAD resolve to commits; files come from that commit's tree")
    func refsAndFiles() throws {
        let fixture = try GitFixture()
        let first = try fixture.commit(["policies/a.yaml": "one\n", "README.md": "x\n"], message: "First")
        try fixture.git("tag", "v1")
        let second = try fixture.commit(["policies/a.yaml": "two\n", "policies/sub/b.yaml": "bee\n"], message: "Second")
        let repository = try GitRepository(path: fixture.path)

        #expect(try repository.resolve(nil).id == second)
        #expect(try repository.resolve("main").id == second)
        #expect(try repository.resolve("v1").id == first)
        #expect(try repository.resolve(String(first.prefix(10))).id == first)
        #expect(try repository.resolve("main~1").summary == "First")

        let now = try repository.files(in: repository.resolve("main"), under: "policies", include: yaml)
        #expect(now.map(\.path) == ["policies/a.yaml", "policies/sub/b.yaml"])
        #expect(now.first.map { String(decoding: $0.contents, as: UTF8.self) } == "two\n")
        let then = try repository.files(in: repository.resolve("v1"), under: "policies", include: yaml)
        #expect(then.map { String(decoding: $0.contents, as: UTF8.self) } == ["one\n"])
        #expect(try repository.files(in: repository.resolve("v1"), under: "missing", include: yaml).isEmpty)
    }

    @Test("The working tree is never read: uncommitted edits do not count")
    func objectsNotWorkingTree() throws {
        let fixture = try GitFixture()
        try fixture.commit(["policies/a.yaml": "committed\n"])
        try fixture.directory.write("policies/a.yaml", "edited but not committed\n")
        try fixture.directory.write("policies/new.yaml", "untracked\n")
        let repository = try GitRepository(path: fixture.path)
        let files = try repository.files(in: repository.resolve(nil), under: "policies", include: yaml)
        #expect(files.map { String(decoding: $0.contents, as: UTF8.self) } == ["committed\n"])
    }

    @Test("Unknown refs and folders that are not repositories get clear errors")
    func errors() throws {
        let fixture = try GitFixture()
        try fixture.commit(["policies/a.yaml": "a\n"])
        let repository = try GitRepository(path: fixture.path)
        let unknown = #expect(throws: GitError.self) { try repository.resolve("no-such-branch") }
        #expect(unknown?.message.contains("unknown ref 'no-such-branch'") == true)

        let plain = try TemporaryDirectory()
        let notRepository = #expect(throws: GitError.self) { try GitRepository(path: plain.path) }
        #expect(notRepository?.kind == .notARepository)
        #expect(notRepository?.message.contains("is not a git repository") == true)
    }

    @Test("A file:// remote is mirrored, and a later fetch sees new commits")
    func mirror() throws {
        let fixture = try GitFixture()
        let first = try fixture.commit(["policies/a.yaml": "one\n"])
        let state = try TemporaryDirectory()
        let mirrorPath = state.url.appendingPathComponent("mirror").path
        let url = "file://\(fixture.path)"
        #expect(GitRepository.isRemote(url))
        #expect(!GitRepository.isRemote(fixture.path))

        #expect(try GitRepository.mirror(url: url, into: mirrorPath).resolve(nil).id == first)
        let second = try fixture.commit(["policies/a.yaml": "two\n"])
        let updated = try GitRepository.mirror(url: url, into: mirrorPath)
        #expect(try updated.resolve("main").id == second)
        #expect(try updated.resolve(nil).id == second)
        let file = try updated.file(in: updated.resolve(nil), at: "policies/a.yaml")
        #expect(file.map { String(decoding: $0.contents, as: UTF8.self) } == "two\n")
    }

    @Test("A mirror that holds the remote's refs is used as it is; one whose packs went missing is not, even after it was found healthy")
    func mirrorHealth() throws {
        let fixture = try GitFixture()
        let commit = try fixture.commit(["policies/a.yaml": "one\n"])
        let state = try TemporaryDirectory()
        let mirrorPath = state.url.appendingPathComponent("mirror").path
        _ = try GitRepository.mirror(url: "file://\(fixture.path)", into: mirrorPath)
        let refs = ["refs/heads/main": commit]
        #expect(GitRepository.mirror(at: mirrorPath, holding: refs) != nil)
        #expect(GitRepository.mirror(at: mirrorPath, holding: refs) != nil, "the second time from what the first found")
        #expect(GitRepository.mirror(at: mirrorPath, holding: ["refs/heads/main": String(repeating: "0", count: 40)]) == nil, "other refs")
        let packs = mirrorPath + "/objects/pack"
        for name in try FileManager.default.contentsOfDirectory(atPath: packs) { try FileManager.default.removeItem(atPath: packs + "/" + name) }
        #expect(GitRepository.mirror(at: mirrorPath, holding: refs) == nil, "its objects are gone: the walk runs again and fails")
    }

    @Test("Symbolic links in a policy tree are refused with their path")
    func symlinks() throws {
        let fixture = try GitFixture()
        try fixture.directory.write("outside.yaml", "x\n")
        try FileManager.default.createDirectory(atPath: fixture.path + "/policies", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: fixture.path + "/policies/link.yaml", withDestinationPath: "../outside.yaml")
        try fixture.commitAll(message: "Link")
        let repository = try GitRepository(path: fixture.path)
        let error = #expect(throws: GitError.self) {
            try repository.files(in: repository.resolve(nil), under: "policies", include: yaml)
        }
        #expect(error?.message == "policies/link.yaml: symbolic links are not allowed in a policy tree")
    }

    @Test("A .git folder inside the policy tree (made with git mktree; git itself will not check one out) is refused, not read as policies")
    func dotGitInside() throws {
        let fixture = try GitFixture()
        try fixture.commit(["policies/p.yaml": "a\n"])
        let blob = try fixture.git("rev-parse", "HEAD:policies/p.yaml").trimmingCharacters(in: .whitespacesAndNewlines)
        func tree(_ lines: String) throws -> String {
            try runProgram("/bin/sh", ["-c", "printf '\(lines)' | git -C '\(fixture.path)' mktree"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let inner = try tree("100644 blob \(blob)\\tconfig.yaml\\n")
        let policies = try tree("040000 tree \(inner)\\t.git\\n100644 blob \(blob)\\tp.yaml\\n")
        let root = try tree("040000 tree \(policies)\\tpolicies\\n")
        let commit = try fixture.git("-c", "user.name=a", "-c", "user.email=a@b", "commit-tree", root, "-m", "hostile").trimmingCharacters(in: .whitespacesAndNewlines)
        let repository = try GitRepository(path: fixture.path)
        let error = #expect(throws: GitError.self) {
            try repository.files(in: repository.resolve(commit), under: "policies", include: yaml)
        }
        #expect(error?.message == "'policies/.git': a .git inside the policy tree is refused (git itself will not check one out)")
    }

    @Test("Size, count and depth limits refuse an oversized policy tree, naming the path")
    func limits() throws {
        let fixture = try GitFixture()
        try fixture.commit(["policies/small.yaml": "a\n", "policies/big.yaml": String(repeating: "x", count: 2000)])
        let repository = try GitRepository(path: fixture.path)
        let head = try repository.resolve(nil)
        let large = #expect(throws: GitError.self) {
            try repository.files(in: head, under: "policies", limits: TreeLimits(maximumFileBytes: 1000), include: yaml)
        }
        #expect(large?.message == "policies/big.yaml: 2000 bytes is larger than the 1000-byte limit for a policy file")
        let many = #expect(throws: GitError.self) {
            try repository.files(in: head, under: "policies", limits: TreeLimits(maximumFiles: 1), include: yaml)
        }
        #expect(many?.message.contains("more than 1 files") == true)
        #expect(try repository.files(in: head, under: "policies", include: yaml).count == 2)
    }
}
