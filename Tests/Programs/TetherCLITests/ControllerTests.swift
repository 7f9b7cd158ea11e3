import Controller
import EmbeddedAgent
import Foundation
import GitSource
import Logging
import PlatformSim
import PolicySource
import Reconciler
import TetherTestSupport
import Testing

/// A bare "remote" repository that the environment's repository pushes to.
@discardableResult
private func publish(_ env: Environment, to remotes: TemporaryDirectory, name: String = "policies.git") throws -> String {
    let bare = remotes.url.appendingPathComponent(name).path
    if !FileManager.default.fileExists(atPath: bare) {
        try runProgram("git", ["init", "-q", "--bare", "-b", "main", bare])
        try env.repo.git("remote", "add", "origin", bare)
    }
    try env.repo.git("push", "-q", "--force", "origin", "main")
    return bare
}

/// A git daemon behind a proxy that can hold connections, serving the environment's policies.
private struct HeldRemote {
    let env: Environment
    let remotes: TemporaryDirectory
    let daemon: GitDaemon
    let proxy: HoldingProxy

    init() throws {
        env = try Environment()
        remotes = try TemporaryDirectory("tether-remotes")
        try publish(env, to: remotes)
        daemon = try GitDaemon(base: remotes.path)
        proxy = try HoldingProxy(to: daemon.port)
    }

    var flags: [String] {
        ["--no-connectors", "--repo", "git://127.0.0.1:\(proxy.port)/policies.git", "--ref", "main", "--state-dir", env.state.path]
    }

    /// Makes the mirror with one cycle, then moves the remote's branch to a new commit.
    @discardableResult
    func mirrorThenMove() throws -> String {
        #expect(tether(["run", "--once"] + flags).code == 0, "the mirror is made")
        let newer = try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        try publish(env, to: remotes)
        return newer
    }
}

@Suite("Fetching over real transports on loopback", .serialized, .ownThread)
struct FetchTests {
    @Test("--probe-url: after the first cycle, a 304 from a static web server means no git connection; a push (with update-server-info) is fetched")
    func probeURL() throws {
        let remote = try HeldRemote()
        let bare = remote.remotes.url.appendingPathComponent("policies.git").path
        try runProgram("git", ["--git-dir", bare, "update-server-info"])
        // A plain static server with ETags and If-None-Match, as nginx or a cache answers.
        let free = try listenOnLoopback()
        close(free.0)
        let server = try ChildProcess("/usr/bin/python3", ["-c", """
            import hashlib, http.server, os, sys
            root, port = sys.argv[1], int(sys.argv[2])
            class Static(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    path = os.path.join(root, self.path.lstrip("/"))
                    if not os.path.isfile(path):
                        self.send_response(404); self.end_headers(); return
                    body = open(path, "rb").read()
                    tag = '"%s"' % hashlib.sha256(body).hexdigest()[:16]
                    if self.headers.get("If-None-Match") == tag:
                        self.send_response(304); self.send_header("ETag", tag); self.end_headers(); return
                    self.send_response(200); self.send_header("ETag", tag); self.send_header("Content-Length", str(len(body))); self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *args): pass
            http.server.ThreadingHTTPServer(("127.0.0.1", port), Static).serve_forever()
            """, remote.remotes.path, String(free.1)])
        defer { server.kill(); server.wait() }
        try waitForPort(free.1)
        var configuration = ControllerConfiguration(source: SourceSpec(repository: "git://127.0.0.1:\(remote.proxy.port)/policies.git", ref: "main", path: "policies"),
                                                    stateDirectory: remote.env.state.url, runConnectors: false)
        configuration.probeURL = "http://127.0.0.1:\(free.1)/policies.git/info/refs"
        let controller = Controller(configuration: configuration, logger: Logger(label: "test"))
        #expect(controller.runCycle().condition == .ready)
        let afterFirst = remote.proxy.connections
        #expect(afterFirst >= 1, "the first cycle asks git")
        for _ in 0..<3 { #expect(controller.runCycle().condition == .ready) }
        #expect(remote.proxy.connections == afterFirst, "304: no git connection in three cycles")
        #expect(controller.metrics.render().contains("tether_probes_total{result=\"not-modified\"} 3"))

        let newer = try remote.env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        try publish(remote.env, to: remote.remotes)
        try runProgram("git", ["--git-dir", bare, "update-server-info"])
        let moved = controller.runCycle()
        #expect(moved.revision == newer && moved.reason == .applied, "\(moved.message)")
        #expect(remote.proxy.connections > afterFirst, "a changed info/refs sends the cycle to git")

        // A probe that fails (the server is gone) asks git, as without one.
        server.kill()
        server.wait()
        let before = remote.proxy.connections
        #expect(controller.runCycle().condition == .ready)
        #expect(remote.proxy.connections > before)
    }

    @Test("git://: the first cycle fetches; a no-change cycle asks for refs only; a new commit is fetched")
    func gitDaemon() throws {
        let env = try Environment()
        let remotes = try TemporaryDirectory("tether-remotes")
        try publish(env, to: remotes)
        let daemon = try GitDaemon(base: remotes.path)
        let mirror = env.state.url.appendingPathComponent("mirror").path
        let (_, first) = try GitRepository.updateMirror(url: daemon.url("policies.git"), at: mirror)
        #expect(first.fetched)
        #expect(first.bytesReceived > 0)
        let (_, again) = try GitRepository.updateMirror(url: daemon.url("policies.git"), at: mirror)
        #expect(!again.fetched, "nothing moved upstream")
        let newer = try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        try publish(env, to: remotes)
        let (repository, moved) = try GitRepository.updateMirror(url: daemon.url("policies.git"), at: mirror)
        #expect(moved.fetched)
        #expect(try repository.resolve("main").id == newer)

        let run = tether(["run", "--once", "--repo", daemon.url("policies.git"), "--ref", "main", "--state-dir", env.state.path])
        #expect(run.code == 0, "\(run.stderr)")
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("Port=4443"))
        #expect(!FileManager.default.fileExists(atPath: env.state.url.appendingPathComponent(KeptRevision.fileName).path),
                "a remote's revision is not kept: its cycles ask the remote anyway")
    }

    @Test("plan and validate of a remote with no state directory make none: the mirror goes into a temporary folder, removed at exit")
    func remoteWithoutState() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let env = try Environment()
        let remotes = try TemporaryDirectory("tether-remotes")
        try publish(env, to: remotes)
        let daemon = try GitDaemon(base: remotes.path)
        let missing = env.state.url.appendingPathComponent("stat").path
        let scratch = try TemporaryDirectory("tether-tmp")
        for command in [["plan", "--label", "env=prod"], ["validate"]] {
            let result = try runProgram(tetherExecutable, command + ["--repo", daemon.url("policies.git"), "--state-dir", missing], environment: ["TMPDIR": scratch.path])
            #expect(result.status == 0 || (command[0] == "plan" && result.status == 1), "\(command): \(result.output)")
            #expect(result.output.contains(command[0] == "plan" ? "there is no agent state at" : "Valid:"), "\(command): \(result.output)")
        }
        #expect(!FileManager.default.fileExists(atPath: missing), "no state directory was made")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty, "the temporary mirrors were removed")
    }

    @Test("A deleted or corrupted mirror is rebuilt by itself")
    func rebuild() throws {
        let env = try Environment()
        let remotes = try TemporaryDirectory("tether-remotes")
        try publish(env, to: remotes)
        let daemon = try GitDaemon(base: remotes.path)
        let mirror = env.state.url.appendingPathComponent("mirror").path
        _ = try GitRepository.updateMirror(url: daemon.url("policies.git"), at: mirror)
        try FileManager.default.removeItem(atPath: mirror + "/objects")
        let (repository, update) = try GitRepository.updateMirror(url: daemon.url("policies.git"), at: mirror)
        #expect(update.rebuilt)
        #expect(try repository.resolve("main").id == env.revision)
        try FileManager.default.removeItem(atPath: mirror)
        #expect(try GitRepository.updateMirror(url: daemon.url("policies.git"), at: mirror).1.fetched)
    }

    @Test("http(s): a token from a file or the environment, never the command line; a wrong one is refused clearly")
    func httpCredentials() throws {
        let env = try Environment()
        let remotes = try TemporaryDirectory("tether-remotes")
        try publish(env, to: remotes)
        let server = try GitHTTPServer(base: remotes.path, user: "tether", password: "s3cret-token")
        let url = server.url("policies.git")
        try env.state.write("token", "s3cret-token\n")
        let good = tether(["plan", "--detailed-exitcode", "--repo", url, "--git-user", "tether", "--git-password-file", env.state.url.appendingPathComponent("token").path,
                           "--state-dir", env.state.path, "--format", "json"])
        #expect(good.code == 2, "\(good.stderr)")
        #expect(good.json["revision"] as? String == env.revision)

        try env.state.write("wrong", "nope\n")
        let wrong = tether(["plan", "--repo", url, "--git-user", "tether", "--git-password-file", env.state.url.appendingPathComponent("wrong").path,
                            "--state-dir", env.state.path])
        #expect(wrong.code == 1)
        #expect(wrong.stderr.contains("the remote refused the credentials (tried the password from --git-password-file \(env.state.url.appendingPathComponent("wrong").path) for user tether)"), "\(wrong.stderr)")
        #expect(!wrong.stderr.contains("nope"))
        let missing = tether(["plan", "--repo", server.url("nothing-here.git"), "--git-user", "tether",
                              "--git-password-file", env.state.url.appendingPathComponent("token").path, "--state-dir", env.state.path])
        #expect(missing.code == 1)
        #expect(missing.stderr.contains("there is no git repository at that address"), "\(missing.stderr)")
        let none = tether(["plan", "--repo", url, "--state-dir", env.state.path])
        #expect(none.code == 1)
        #expect(none.stderr.contains("asks for credentials and none were given"))
        // A wrong token inside the URL is named as what it is, and not shown.
        let inURL = url.replacingOccurrences(of: "http://", with: "http://tether:wrong-in-url@")
        let refused = tether(["plan", "--repo", inURL, "--state-dir", env.state.path])
        #expect(refused.code == 1)
        #expect(refused.stderr.contains("the remote refused the credentials in the URL (user tether)"), "\(refused.stderr)")
        #expect(!refused.stderr.contains("wrong-in-url"), "\(refused.stderr)")
    }

    @Test("A remote that never answers is abandoned after --fetch-timeout, and the cycle reports it")
    func fetchTimeout() throws {
        let env = try Environment()
        let silent = try SilentServer()
        let started = Date()
        let run = tether(["run", "--once", "--fetch-timeout", "1", "--repo", "git://127.0.0.1:\(silent.port)/policies.git", "--state-dir", env.state.path])
        let elapsed = Date().timeIntervalSince(started)
        #expect(run.code == 1)
        #expect(run.stderr.contains("took longer than 1 s (--fetch-timeout): abandoned"))
        #expect(elapsed < 5, "took \(elapsed) s")
    }

    @Test("A remote that holds a connection open and then recovers: Ready again within two fetch timeouts",
          arguments: [
            (0, true, "the ref listing"),      // held in this process: abandoned, nothing waits on it
            (1, true, "the fetch process"),    // held in tether-fetch: killed with its socket and lock
            (0, false, "the first clone"),     // held in this process, cloning into a folder of its own
          ])
    func heldConnectionRecovers(held: Int, mirrorFirst: Bool, what: String) throws {
        let remote = try HeldRemote()
        let (env, proxy) = (remote.env, remote.proxy)
        defer { proxy.stop() }
        let flags = ["--interval", "0", "--jitter", "0", "--fetch-timeout", "2"] + remote.flags
        var expected = env.revision
        if mirrorFirst { expected = try remote.mirrorThenMove() }

        proxy.hold(next: [held])
        let started = Date()
        let run = tether(["run", "--cycles", "2"] + flags)
        let elapsed = Date().timeIntervalSince(started)
        #expect(run.code == 0, "\(what): \(run.stderr)")
        #expect(run.stderr.contains("took longer than 2 s (--fetch-timeout): abandoned"), "\(what): the first cycle gives up on it")
        let status = tether(["status", "--state-dir", env.state.path]).stdout
        #expect(status.hasPrefix("Ready: applied"), "\(what): \(status)")
        // The first cycle's time limit, a back-off of 1 s, then a second cycle well inside two limits.
        #expect(elapsed < 2 + 1 + 2 * 2, "\(what): took \(elapsed) s")
        #expect(try Agent(stateDirectory: env.state.path).appliedState().revision == expected)
        // Once the held connection closes, the abandoned work ends and leaves nothing behind.
        proxy.stop()
        let mirrorFolder = env.state.url.appendingPathComponent("mirrors").path
        var mirrors: [String] = []
        let deadline = Date().addingTimeInterval(10)
        repeat {
            mirrors = try FileManager.default.contentsOfDirectory(atPath: mirrorFolder).filter { !$0.hasSuffix(".lock") }
            if mirrors.count == 1 { break }
            Thread.sleep(forTimeInterval: 0.1)
        } while Date() < deadline
        #expect(mirrors.count == 1, "\(what): one mirror, no clone folder left behind: \(mirrors)")
    }

    @Test("kill -9 of a controller whose fetch is stuck: the fetch process goes with it, and a new controller starts at once")
    func orphanedFetch() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let remote = try HeldRemote()
        let proxy = remote.proxy
        defer { proxy.stop() }
        let flags = remote.flags
        try remote.mirrorThenMove()

        proxy.hold(next: [1])  // the ref listing passes; the fetch process's connection is held
        let before = proxy.connections
        let controller = try ChildProcess(tetherExecutable, ["run", "--interval", "60", "--fetch-timeout", "120"] + flags)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, proxy.connections < before + 2 { usleep(20_000) }
        try #require(proxy.connections >= before + 2, "the fetch process connected")
        controller.kill()
        controller.wait()

        let started = Date()
        let again = tether(["run", "--once", "--fetch-timeout", "10"] + flags)
        #expect(again.code == 0, "\(again.stderr)")
        #expect(!again.stderr.contains("another controller runs"), "the lock went with the killed controller")
        #expect(Date().timeIntervalSince(started) < 8, "nothing waited on the orphan's locks")
    }

    @Test("https with a private CA (--git-ca-file) and a token from the environment")
    func https() throws {
        let env = try Environment()
        let remotes = try TemporaryDirectory("tether-remotes")
        try publish(env, to: remotes)
        let pki = try PlatformPKI.create()
        let server = try GitHTTPServer(base: remotes.path, user: "tether", password: "env-token",
                                       tls: (pki.serverCertificatePEM, pki.serverKeyPEM))
        let ca = try env.state.write("git-ca.pem", pki.caPEM)
        setenv("TETHER_GIT_TOKEN", "env-token", 1)
        defer { unsetenv("TETHER_GIT_TOKEN") }
        let plan = tether(["plan", "--detailed-exitcode", "--repo", server.url("policies.git"), "--git-user", "tether", "--git-ca-file", ca,
                           "--state-dir", env.state.path, "--format", "json"])
        #expect(plan.code == 2, "\(plan.stderr)")
        #expect(plan.json["revision"] as? String == env.revision)
    }

    @Test("ssh with a key file: the host key must be in --known-hosts",
          .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/sshd"), "sshd on loopback needs root and openssh-server"))
    func ssh() throws {
        let env = try Environment()
        let remotes = try TemporaryDirectory("tether-remotes")
        let bare = try publish(env, to: remotes)
        let impostorKey = env.state.url.appendingPathComponent("impostor").path
        try runProgram("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", impostorKey])
        let impostorPublic = try String(contentsOfFile: impostorKey + ".pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
        let server = try SSHServer()
        let known = try env.state.write("known_hosts", server.knownHostsLine)
        let url = server.url(bare)
        let good = tether(["plan", "--detailed-exitcode", "--repo", url, "--ssh-key", server.clientKey, "--known-hosts", known,
                           "--state-dir", env.state.path, "--format", "json"])
        #expect(good.code == 2, "\(good.stderr)")
        #expect(good.json["revision"] as? String == env.revision)

        let impostor = try env.state.write("impostor_known_hosts", "[127.0.0.1]:\(server.port) \(impostorPublic)\n")
        let refused = tether(["plan", "--repo", url, "--ssh-key", server.clientKey, "--known-hosts", impostor, "--state-dir", env.state.path])
        #expect(refused.code == 1)
        #expect(refused.stderr.contains("presented a key that is not the one in"))
        let unknown = tether(["plan", "--repo", url, "--ssh-key", server.clientKey, "--state-dir", env.state.path])
        #expect(unknown.stderr.contains("give a known_hosts file (--known-hosts)"))

        // Hashed names (ssh-keyscan -H, Debian's HashKnownHosts) are read as git's ssh reads them.
        let hashed = try env.state.write("hashed_known_hosts", server.knownHostsLine)
        #expect(try runProgram("ssh-keygen", ["-q", "-H", "-f", hashed]).status == 0)
        let viaHash = tether(["plan", "--detailed-exitcode", "--repo", url, "--ssh-key", server.clientKey, "--known-hosts", hashed, "--state-dir", env.state.path])
        #expect(viaHash.code == 2, "\(viaHash.stderr)")
        // The port is part of the name: the same key listed for another port does not vouch for this one.
        let key = server.knownHostsLine.split(separator: " ").dropFirst().joined(separator: " ")
        let otherPort = try env.state.write("other_port_known_hosts", "[127.0.0.1]:\(server.port + 1) \(key)\n")
        let wrongPort = tether(["plan", "--repo", url, "--ssh-key", server.clientKey, "--known-hosts", otherPort, "--state-dir", env.state.path])
        #expect(wrongPort.code == 1 && wrongPort.stderr.contains("ssh host [127.0.0.1]:\(server.port) is not in"), "\(wrongPort.stderr)")
    }

    @Test("--ref takes a glob over tags and picks the highest version")
    func semverTags() throws {
        let env = try Environment()
        try env.repo.git("tag", "v1.2.0")
        let later = try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        try env.repo.git("tag", "v1.10.0")
        try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 5443")])
        try env.repo.git("tag", "v2.0.0")
        let plan = tether(["plan", "--ref", "v1.*", "--format", "json"] + env.flags)
        #expect(plan.json["revision"] as? String == later)
        #expect(tether(["plan", "--ref", "v9.*"] + env.flags).stderr.contains("no tag matches 'v9.*'"))
    }
}

@Suite("The controller", .serialized, .ownThread)
struct ControllerTests {
    private func keys(_ directory: TemporaryDirectory, _ name: String) throws -> (key: String, allowed: String) {
        let path = directory.url.appendingPathComponent(name).path
        try runProgram("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path])
        let publicKey = try String(contentsOfFile: path + ".pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return (path, "\(name)@example.com \(publicKey)\n")
    }

    @discardableResult
    private func signedCommit(_ env: Environment, key: String, files: [String: String], message: String) throws -> String {
        for (file, text) in files { try env.repo.directory.write(file, text) }
        try env.repo.git("add", "-A")
        try env.repo.git("-c", "user.name=Signer", "-c", "user.email=s@tether.invalid", "-c", "gpg.format=ssh", "-c", "user.signingkey=\(key)",
                         "commit", "-q", "-S", "-m", message)
        return try env.repo.git("rev-parse", "HEAD").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("--verify head: an unsigned or wrongly signed commit is never applied; the report says which, why, and who signed")
    func verifyHead() throws {
        let env = try Environment()
        let keyDirectory = try TemporaryDirectory()
        let alice = try keys(keyDirectory, "alice")
        let mallory = try keys(keyDirectory, "mallory")
        let allowed = try keyDirectory.write("allowed_signers", alice.allowed)
        let verify = ["--verify", "head", "--allowed-signers", allowed]

        let unsigned = tether(["run", "--once"] + verify + env.flags)
        #expect(unsigned.code == 1)
        #expect(unsigned.stderr.contains("commit \(env.revision.prefix(12)) (\"Policies\") is not signed: refused"))
        #expect(try Agent(stateDirectory: env.state.path).state().running.isEmpty, "nothing applied")

        let byMallory = try signedCommit(env, key: mallory.key, files: ["policies/extra.yaml": "# nothing\n"], message: "By mallory")
        let refused = tether(["run", "--once"] + verify + env.flags)
        #expect(refused.code == 1)
        #expect(refused.stderr.contains("commit \(byMallory.prefix(12)) (\"By mallory\") is signed by key SHA256:"))
        #expect(refused.stderr.contains("which the allowed signers do not list"))

        try signedCommit(env, key: alice.key, files: ["policies/extra.yaml": "# still nothing\n"], message: "By alice")
        let applied = tether(["run", "--once"] + verify + env.flags)
        #expect(applied.code == 0, "\(applied.stderr)")
        #expect(try Agent(stateDirectory: env.state.path).state().running == [.edr])
        let status = tether(["status", "--state-dir", env.state.path]).stdout
        #expect(status.contains("signed by alice@example.com"))

        // apply verifies too: with --detailed-exitcodes a refusal is 8.
        try env.repo.commit(["policies/extra.yaml": "# unsigned again\n"], message: "Unsigned")
        let apply = tether(["apply", "--detailed-exitcodes"] + verify + env.flags)
        #expect(apply.code == 8)
        #expect(apply.stderr.contains("verification refused the revision, nothing was changed"))
    }

    @Test("--verify range checks every commit since the last applied one")
    func verifyRange() throws {
        let env = try Environment()
        let keyDirectory = try TemporaryDirectory()
        let alice = try keys(keyDirectory, "alice")
        let allowed = try keyDirectory.write("allowed_signers", alice.allowed)
        try signedCommit(env, key: alice.key, files: ["policies/a.yaml": "# a\n"], message: "Signed base")
        #expect(tether(["run", "--once", "--verify", "range", "--allowed-signers", allowed] + env.flags).code == 0)
        let sneaked = try env.repo.commit(["policies/b.yaml": "# b\n"], message: "Unsigned in the middle")
        try signedCommit(env, key: alice.key, files: ["policies/c.yaml": "# c\n"], message: "Signed on top")
        let range = tether(["run", "--once", "--verify", "range", "--allowed-signers", allowed] + env.flags)
        #expect(range.code == 1)
        #expect(range.stderr.contains("commit \(sneaked.prefix(12)) (\"Unsigned in the middle\") is not signed: refused"))
        #expect(tether(["run", "--once", "--verify", "head", "--allowed-signers", allowed] + env.flags).code == 0, "head alone is signed")
    }

    @Test("Anti-rollback: a force-push to an older commit is refused, unless a policy allows it")
    func antiRollback() throws {
        let env = try Environment()
        let first = env.revision
        #expect(tether(["run", "--once"] + env.flags).code == 0)
        try env.repo.commit(["policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        #expect(tether(["run", "--once"] + env.flags).code == 0)
        try env.repo.git("reset", "-q", "--hard", first)
        try env.repo.commit(["policies/other.yaml": "# a different history\n"], message: "Rewritten")
        let refused = tether(["run", "--once"] + env.flags)
        #expect(refused.code == 1)
        #expect(refused.stderr.contains("does not descend from the last applied revision"))
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("Port=4443"))

        let allow = Environment.base.replacingOccurrences(of: "spec:\n", with: "spec:\n  allowRollback: true\n")
        try env.repo.commit(["policies/base.yaml": allow], message: "Deliberate rollback")
        #expect(tether(["run", "--once"] + env.flags).code == 0)
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("Port=443"))
    }

    @Test("Suspend (flag or file) reports and applies nothing; observe-mode policies never correct")
    func suspendAndObserve() throws {
        let env = try Environment()
        try env.state.write("suspend", "")
        let suspended = tether(["run", "--once"] + env.flags)
        #expect(suspended.code == 0)
        #expect(suspended.stderr.contains("suspended: nothing applied"))
        #expect(try Agent(stateDirectory: env.state.path).state().running.isEmpty)
        #expect(tether(["status", "--state-dir", env.state.path]).stdout.contains("suspended    yes"))
        try FileManager.default.removeItem(at: env.state.url.appendingPathComponent("suspend"))

        #expect(tether(["run", "--once"] + env.flags).code == 0)
        let observing = Environment.base.replacingOccurrences(of: "spec:\n", with: "spec:\n  mode: observe\n")
        try env.repo.commit(["policies/base.yaml": observing.replacingOccurrences(of: "port: 443", with: "port: 4443")])
        #expect(tether(["run", "--once"] + env.flags).code == 0)
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("Port=443\n"), "observe never corrects")
        let drift = env.run("drift", "--format", "json")
        #expect((drift.json["findings"] as? [[String: Any]])?.first?["mode"] as? String == "observe")
    }

    @Test("One controller per state directory")
    func lock() throws {
        let state = try TemporaryDirectory()
        let file = state.url.appendingPathComponent("controller.lock")
        let first = try ControllerLock(file: file)
        let second = #expect(throws: LockError.self) { try ControllerLock(file: file) }
        #expect(second?.description.contains("another controller runs for this state directory (pid \(getpid()))") == true)
        withExtendedLifetime(first) {}
    }

    /// A controller loop for `env`'s repository, serving /healthz, /readyz and /metrics on a free port.
    private func servingLoop(_ env: Environment) throws -> (ControllerLoop, Int) {
        let controller = Controller(configuration: ControllerConfiguration(source: SourceSpec(repository: env.repo.path, ref: nil, path: "policies"),
                                                                           stateDirectory: env.state.url, labelOverrides: [:]),
                                    logger: Logger(label: "test"))
        let loop = ControllerLoop(controller: controller, logger: Logger(label: "test"))
        return (loop, try loop.serveMetrics(host: "127.0.0.1", port: 0))
    }

    @Test("The agent is opened again when a store file is replaced (a backup restored), and not when the session made one itself")
    func storeReplaced() throws {
        let env = try Environment()
        let controller = Controller(configuration: ControllerConfiguration(source: SourceSpec(repository: env.repo.path, ref: nil, path: "policies"),
                                                                           stateDirectory: env.state.url, labelOverrides: [:]),
                                    logger: Logger(label: "test"))
        let first = try controller.openSession()
        _ = try first.connectors()  // makes runtime.db
        #expect(try controller.openSession() === first, "a store the session made is its own")
        let store = env.state.url.appendingPathComponent("agent.db").path
        let copy = store + ".restored"
        try FileManager.default.copyItem(atPath: store, toPath: copy)
        #expect(rename(copy, store) == 0)
        #expect(try controller.openSession() !== first, "a replaced store is opened anew")
    }

    @Test("--metrics-address 0.0.0.0:PORT serves on every address when asked, with a warning (reached here over loopback)")
    func metricsOnEveryAddress() throws {
        let env = try Environment()
        let free = try listenOnLoopback()
        close(free.0)
        let run = try ChildProcess(tetherExecutable, ["run", "--interval", "60", "--metrics-address", "0.0.0.0:\(free.1)"] + env.flags)
        defer { run.kill(); run.wait() }
        var answer = ""
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, !answer.contains("tether_cycles_total") {
            answer = (try? httpGet(port: free.1, path: "/metrics").body) ?? ""
            usleep(100_000)
        }
        #expect(answer.contains("tether_cycles_total"))
        #expect(run.stderr.contains("/metrics is served on 0.0.0.0:\(free.1), in the clear and to anyone who can reach it"), "\(run.stderr)")
        let help = try runProgram(tetherExecutable, ["run", "--help"]).output.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(help.contains("WARNING: another address than loopback"), "\(help)")
    }

    @Test("/healthz, /readyz and /metrics in Prometheus text format")
    func metrics() throws {
        let env = try Environment()
        let (loop, port) = try servingLoop(env)
        #expect(try httpGet(port: port, path: "/healthz").status == 200)
        #expect(try httpGet(port: port, path: "/readyz").status == 503)
        loop.run(cycles: 1, shouldStop: { false }, shouldReload: { false })
        defer { loop.stopServing() }
        #expect(try httpGet(port: port, path: "/readyz").status == 200)
        let metrics = try httpGet(port: port, path: "/metrics").body
        #expect(metrics.contains("# TYPE tether_cycles_total counter\ntether_cycles_total 1\n"))
        #expect(metrics.contains("tether_last_applied_revision_info{revision=\"\(env.revision)\"} 1"))
        #expect(metrics.contains("tether_drift_findings{integration=\"edr\"} 0"))
        #expect(metrics.contains("tether_fetch_duration_seconds_count 1"))
        #expect(metrics.contains("# TYPE tether_cycle_duration_seconds histogram") && metrics.contains("tether_cycle_duration_seconds_bucket{le=\"+Inf\"} 1"))
        #expect(metrics.contains("tether_connector_up{integration=\"edr\"} 0"))
        #expect(metrics.contains("tether_last_success_timestamp_seconds "))
        // The process families Prometheus client libraries export, with this process's figures.
        let samples = Dictionary(metrics.split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap { line -> (String, Double)? in
            let parts = line.split(separator: " ")
            return parts.count == 2 ? (String(parts[0]), Double(parts[1]) ?? -1) : nil
        }, uniquingKeysWith: { first, _ in first })
        #expect(samples["tether_interval_seconds"] != nil, "the configured interval, for alerting rules")
        #expect((samples["process_cpu_seconds_total"] ?? 0) > 0)
        #expect((samples["process_resident_memory_bytes"] ?? 0) > 1_048_576)
        #expect((samples["process_open_fds"] ?? 0) >= 3 && (samples["process_open_fds"] ?? 0) <= (samples["process_max_fds"] ?? 0))
        let started = samples["process_start_time_seconds"] ?? 0
        #expect(started > Date().timeIntervalSince1970 - 3600 && started <= Date().timeIntervalSince1970 + 1, "started \(started)")
    }

    @Test("The health endpoint holds up on its own machine: 300 slow clients, large bodies, other methods, huge or broken heads")
    func hostileProbeClients() throws {
        let env = try Environment()
        let (loop, port) = try servingLoop(env)
        defer { loop.stopServing() }

        // 300 clients that send half a request and wait: /healthz still answers, 10 of 10.
        var slow: [Int32] = []
        defer { slow.forEach { close($0) } }
        for _ in 0..<300 {
            let fd = try connectLoopback(port: port)
            _ = Array("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n".utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            slow.append(fd)
        }
        var answered = 0
        for _ in 0..<10 {
            let probe = try httpExchange(port: port, Array("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8), timeout: 2)
            if probe.status == 200 && probe.body == "ok\n" { answered += 1 }
        }
        #expect(answered == 10)

        // A declared 256 MiB body is refused at once, before a byte of it is sent.
        let large = try httpExchange(port: port, Array("GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 268435456\r\n\r\n".utf8), timeout: 2)
        #expect(large.status == 413)
        let chunked = try httpExchange(port: port, Array("GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".utf8), timeout: 2)
        #expect(chunked.status == 413)

        // Only GET and HEAD; HEAD gets the head alone.
        for method in ["POST", "FOO", "DELETE"] {
            let refused = try httpExchange(port: port, Array("\(method) /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8), timeout: 2)
            #expect(refused.status == 405, "\(method)")
            #expect(refused.head.contains("Allow: GET, HEAD"), "\(method)")
        }
        let head = try httpExchange(port: port, Array("HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8), timeout: 2)
        #expect(head.status == 200 && head.head.contains("Content-Length: 3") && head.body.isEmpty)

        // Heads over 8 KiB, and requests that are not HTTP.
        let huge = try httpExchange(port: port, Array("GET /healthz HTTP/1.1\r\nX-Pad: \(String(repeating: "a", count: 20_000))\r\n\r\n".utf8), timeout: 2)
        #expect(huge.status == 431)
        for garbage in ["hello\r\n\r\n", "GET\r\n\r\n", "GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", "GET /metrics HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                        "GET /healthz HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n", "GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
                        "GET /healthz HTTP/1.1\r\nContent-Length: +0\r\n\r\n", "GET healthz HTTP/1.1\r\n\r\n"] {
            #expect(try httpExchange(port: port, Array(garbage.utf8), timeout: 2).status == 400, "\(garbage.debugDescription)")
        }
        // A refused HEAD gets no body; the absolute form is served; HTTP/1.0 closes after its answer.
        let refusedHead = try httpExchange(port: port, Array("HEAD /healthz HTTP/1.1\r\nContent-Length: 1\r\n\r\nx".utf8), timeout: 2)
        #expect(refusedHead.status == 413 && refusedHead.body.isEmpty)
        #expect(try httpExchange(port: port, Array("GET http://127.0.0.1/healthz HTTP/1.1\r\nConnection: close\r\n\r\n".utf8), timeout: 2).status == 200)
        let asked = Date()
        #expect(try httpExchange(port: port, Array("GET /healthz HTTP/1.0\r\n\r\n".utf8), timeout: 4).status == 200)
        #expect(Date().timeIntervalSince(asked) < 2, "an HTTP/1.0 request without keep-alive is answered and closed")

        // A client that sends a byte and nothing more gets 408 when its five seconds are up.
        let silent = try httpExchange(port: port, Array("G".utf8), timeout: 10)
        #expect(silent.status == 408)

        // A client that trickles a request a byte a second is cut off after five seconds.
        let trickle = try connectLoopback(port: port, timeout: 10)
        defer { close(trickle) }
        let started = Date()
        var reply = [UInt8](repeating: 0, count: 4096)
        var received = 0
        for byte in Array("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa".utf8) {
            guard send(trickle, [byte], 1, Int32(MSG_NOSIGNAL)) == 1 else { break }
            usleep(1_000_000)
            received = recv(trickle, &reply, reply.count, Int32(MSG_DONTWAIT))
            if received > 0 { break }
        }
        #expect(String(decoding: reply.prefix(max(received, 0)), as: UTF8.self).hasPrefix("HTTP/1.1 408"))
        #expect(Date().timeIntervalSince(started) < 7)
    }

    @Test("SIGTERM finishes the current cycle and exits cleanly; logs are JSON lines with --log-format json")
    func signals() throws {
        let env = try Environment()
        let tetherBinary = repositoryRoot.appendingPathComponent(".build/debug/tether").path
        try #require(FileManager.default.isExecutableFile(atPath: tetherBinary), "swift build builds the tether executable")
        let log = env.state.url.appendingPathComponent("run.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tetherBinary)
        process.arguments = ["run", "--interval", "1", "--log-format", "json"] + env.flags
        process.standardError = try FileHandle(forWritingTo: log)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, !((try? String(contentsOf: log, encoding: .utf8))?.contains("\"reason\":\"applied\"") ?? false) {
            Thread.sleep(forTimeInterval: 0.1)
        }
        kill(process.processIdentifier, SIGTERM)
        let stopDeadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < stopDeadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let lines = try String(contentsOf: log, encoding: .utf8).split(separator: "\n")
        let objects = lines.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
        #expect(objects.count == lines.count, "every line is JSON")
        #expect(objects.first?["message"] as? String == "controller started")
        #expect(objects.last?["message"] as? String == "controller stopped")
        let cycle = objects.first { $0["reason"] != nil }
        #expect(cycle?["fetched"] is Bool && cycle?["duration"] is Double, "typed values: \(String(describing: cycle))")
    }
}

@Suite("tether run under a service manager", .ownThread)
struct ServiceNotificationTests {
    @Test("With $NOTIFY_SOCKET, run sets the watchdog's timeout by its configuration, says READY=1 after its first cycle, WATCHDOG=1 after each, its last result as STATUS, and STOPPING=1")
    func notifications() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let env = try Environment()
        let folder = try TemporaryDirectory("tether-notify")
        let path = folder.url.appendingPathComponent("notify").path
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0)
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

        let run = try runProgram(tetherExecutable, ["run", "--cycles", "2", "--interval", "0", "--no-connectors"] + env.flags,
                                 environment: ["NOTIFY_SOCKET": path])
        #expect(run.status == 0, "\(run.output)")
        var messages: [String] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while messages.count < 4 {
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count > 0 else { break }
            messages.append(String(decoding: buffer[0..<count], as: UTF8.self))
        }
        #expect(messages.count == 4, "\(messages)")
        // First the watchdog's timeout for this configuration: the back-off (3600 s), two fetch
        // timeouts (120 s) and a margin (300 s), so a long interval is never taken for a hang.
        #expect(messages.first == "WATCHDOG_USEC=\(4020 * 1_000_000)", "\(messages)")
        messages.removeFirst()
        let first = messages.first?.split(separator: "\n").map(String.init).sorted() ?? []
        #expect(first.count == 3 && first[0] == "READY=1" && first[1].hasPrefix("STATUS=Ready: applied ") && first[2] == "WATCHDOG=1", "\(messages)")
        #expect(messages.dropFirst().first?.contains("WATCHDOG=1") == true && messages.dropFirst().first?.contains("READY=1") == false)
        #expect(messages.last?.contains("STOPPING=1") == true, "\(messages)")
    }
}

@Suite("tether run --textfile", .ownThread)
struct TextfileTests {
    @Test("--textfile writes the /metrics text after every cycle, whole and readable by node_exporter, and leaves no temporary file")
    func textfile() throws {
        let env = try Environment()
        let folder = try TemporaryDirectory("tether-textfile")
        let file = folder.url.appendingPathComponent("tether.prom")
        let run = env.run("run", "--once", "--no-connectors", "--textfile", file.path)
        #expect(run.code == 0, "\(run.stdout)\(run.stderr)")
        let text = try String(contentsOf: file, encoding: .utf8)
        #expect(text.contains("# TYPE tether_cycles_total counter") && text.contains("tether_cycles_total 1"), "\(text)")
        #expect(text.contains("tether_build_info{version=\"") && text.contains(",libgit2=\"") && text.contains(",sqlite=\"3."), "\(text)")
        let mode = (try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? Int) ?? 0
        #expect(mode == 0o644)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["tether.prom"])
    }
}
