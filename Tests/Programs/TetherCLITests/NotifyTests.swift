import Controller
import Foundation
import IntegrationModel
import MQTT
import PolicySource
import TetherTestSupport
import Testing

/// A controller following a git remote with `--notify` and `--bundle-url`, a broker, and the
/// published folder served over HTTP: what `tether publish` feeds.
private final class PushSetup: @unchecked Sendable {
    let env: Environment
    let keys: TemporaryDirectory
    let key: String
    let allowed: String
    let remotes: TemporaryDirectory
    var daemon: GitDaemon?
    let published: TemporaryDirectory
    let web: StaticFileServer
    let broker: MQTTBroker
    let topic = "tether/policies"
    var controller: ChildProcess?

    init() throws {
        env = try Environment()
        keys = try TemporaryDirectory("tether-keys")
        key = keys.url.appending(path: "alice").path
        try runProgram("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", key])
        let publicKey = try String(contentsOfFile: key + ".pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        allowed = try keys.write("allowed_signers", "alice@example.com \(publicKey)\n")
        remotes = try TemporaryDirectory("tether-remotes")
        published = try TemporaryDirectory("tether-published")
        web = try StaticFileServer(folder: published.path)
        broker = try MQTTBroker()
        try runProgram("git", ["init", "-q", "--bare", "-b", "main", remotes.url.appending(path: "policies.git").path])
        try env.repo.git("remote", "add", "origin", remotes.url.appending(path: "policies.git").path)
        daemon = try GitDaemon(base: remotes.path)
    }

    /// A signed commit changing the EDR port, pushed to the remote unless `push` is false.
    @discardableResult
    func commit(port: Int, signed: Bool = true, push: Bool = true) throws -> String {
        try env.repo.directory.write("policies/base.yaml", Environment.base.replacingOccurrences(of: "port: 443", with: "port: \(port)"))
        try env.repo.git("add", "-A")
        if signed {
            try env.repo.git("-c", "user.name=Alice", "-c", "user.email=alice@example.com", "-c", "gpg.format=ssh", "-c", "user.signingkey=\(key)",
                             "commit", "-q", "-S", "-m", "Port \(port)")
        } else {
            try env.repo.git("-c", "user.name=Mallory", "-c", "user.email=m@example.com", "commit", "-q", "-m", "Port \(port), unsigned")
        }
        if push { try env.repo.git("push", "-q", "--force", "origin", "main") }
        return try env.repo.git("rev-parse", "HEAD").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func publish(notify: Bool = true) -> TetherResult {
        tether(["publish", "--repo", env.repo.path, "--ref", "main", "--out", published.path]
               + (notify ? ["--notify", broker.url(topic), "--sign-key", key] : []))
    }

    /// Sends `message` as the broker's retained message, as anyone who can publish on the topic can.
    func send(_ message: [UInt8], as client: String) throws {
        try MQTTClient(address: try MQTTAddress(parsing: broker.url(topic)), tls: nil, clientID: client).publishRetained(message, timeout: 10)
    }

    /// A message naming `commit`, signed with `key` when given.
    func message(_ commit: String, ref: String = "refs/heads/main", at time: String = "2026-01-01T00:00:00Z", signedWith key: String? = nil) throws -> [UInt8] {
        var revision = PublishedRevision(repository: "policies", ref: ref, commit: commit, bundle: "bundles/\(commit).bundle", publishedAt: time)
        if let key { try revision.sign(keyFile: key) }
        return revision.message
    }

    var log: String { controller?.stderr ?? "" }

    /// Starts `tether run --notify …` (interval 300 s: only a message makes it look sooner), with
    /// `--verify head --bundle-url …` unless `bundles` is false (then the message only says when to ask git).
    func start(bundles: Bool = true) throws {
        controller = try ChildProcess(tetherExecutable, [
            "run", "--no-connectors", "--no-sensors", "--repo", daemon!.url("policies.git"), "--ref", "main", "--state-dir", env.state.path,
            "--interval", "300", "--notify", broker.url(topic), "--notify-spread", "2",
        ] + (bundles ? ["--verify", "head", "--allowed-signers", allowed, "--bundle-url", web.url] : []))
    }

    var status: ControllerStatus? { ControllerStatus.read(env.state.url.appending(path: "controller.json")) }

    /// Waits up to `seconds` for the controller's last cycle to have reconciled `revision`.
    func waitForRevision(_ revision: String, seconds: Double) -> Bool {
        waitFor(seconds: seconds) { self.status?.lastCycle.revision == revision && self.status?.lastCycle.condition == .ready }
    }

    func waitForLog(_ text: String, seconds: Double = 15) -> Bool {
        waitFor(seconds: seconds) { self.controller?.stderr.contains(text) == true }
    }

    func waitFor(seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return condition()
    }
}

@Suite("Push: tether publish, a broker's message and the published bundles", .serialized, .ownThread)
struct NotifyTests {
    @Test("A new signed commit, published with --notify, is applied within 15 s from its bundle of a few kilobytes, with the git host down")
    func publishedAndApplied() throws {
        let setup = try PushSetup()
        let first = try setup.commit(port: 1443)
        #expect(setup.publish(notify: false).code == 0)
        try setup.start()
        #expect(setup.waitForRevision(first, seconds: 30), "the first cycle applies the signed head: \(setup.controller?.stderr ?? "")")
        #expect(setup.waitForLog("notifications: subscribed to \(setup.broker.url(setup.topic))"))

        let second = try setup.commit(port: 2443)
        setup.daemon = nil  // the git host is gone: only the published folder has the new commit
        let published = Date()
        let publish = setup.publish()
        #expect(publish.code == 0, "\(publish.stderr)")
        let delta = "bundles/\(first)-\(second).bundle"
        #expect(publish.stdout.contains(delta))
        #expect(publish.stdout.contains("notified \(setup.broker.url(setup.topic))"))
        #expect(setup.waitForRevision(second, seconds: 15), "applied within 15 s of publishing: \(setup.controller?.stderr ?? "")")
        let elapsed = Date().timeIntervalSince(published)
        #expect(elapsed < 15)
        let log = setup.controller?.stderr ?? ""
        #expect(log.contains("read \(second.prefix(12)) from \(delta)"), "the delta bundle, not the full one: \(log)")
        let size = try FileManager.default.attributesOfItem(atPath: setup.published.url.appending(path: delta).path)[.size] as? Int ?? .max
        #expect(size < 4096, "a one-line change is a small download (\(size) bytes)")
        #expect(setup.status?.notifications?.connected == true)
        #expect(setup.status?.notifications?.lastMessage?.outcome == "applied")
        let status = tether(["status", "--state-dir", setup.env.state.path])
        #expect(status.stdout.contains("notify       \(setup.broker.url(setup.topic)): connected"))
        #expect(status.stdout.contains("last message refs/heads/main at \(second.prefix(12))"))
    }

    @Test("Without --bundle-url: tether publish --notify after a push gets the change applied from git within 15 s, not at the 300 s interval")
    func notifiedFromGit() throws {
        let setup = try PushSetup()
        let first = try setup.commit(port: 1443)
        try setup.start(bundles: false)
        #expect(setup.waitForRevision(first, seconds: 30), "\(setup.log)")
        #expect(setup.waitForLog("notifications: subscribed"))
        let second = try setup.commit(port: 2443)
        let published = Date()
        let publish = tether(["publish", "--repo", setup.env.repo.path, "--ref", "main", "--out", setup.published.path,
                              "--notify", setup.broker.url(setup.topic)])
        #expect(publish.code == 0, "\(publish.stderr)")
        #expect(setup.waitForRevision(second, seconds: 15), "\(setup.log)")
        #expect(Date().timeIntervalSince(published) < 15)
        #expect(!setup.log.contains("read \(second.prefix(12)) from"), "no bundle without --bundle-url")
    }

    @Test("Messages the publisher did not sign, signed ones replayed, for another branch's commit, for an unsigned commit, damaged, or for a commit their bundle lacks change nothing, and the log says why")
    func forgedMessagesChangeNothing() throws {
        let setup = try PushSetup()
        let first = try setup.commit(port: 1443)
        #expect(setup.publish(notify: false).code == 0)
        try setup.start()
        #expect(setup.waitForRevision(first, seconds: 30), "\(setup.log)")
        let second = try setup.commit(port: 2443)
        #expect(setup.publish().code == 0)
        #expect(setup.waitForRevision(second, seconds: 15), "\(setup.log)")
        let refused = "for refs/heads/main, refused:"

        // A signed commit on another branch (the mirror has it): named for main without the
        // publisher's signature, then signed by a key that is not an allowed signer.
        try setup.env.repo.git("checkout", "-q", "-b", "feature")
        let feature = try setup.commit(port: 7443, push: false)
        let later = try setup.commit(port: 8443, push: false)
        try setup.env.repo.git("push", "-q", "origin", "feature")
        try setup.env.repo.git("checkout", "-q", "main")
        kill(setup.controller!.pid, SIGHUP)  // a cycle from git: the mirror now holds the feature branch
        #expect(setup.waitForLog("SIGHUP"))
        Thread.sleep(forTimeInterval: 1)
        try setup.send(try setup.message(feature, at: Timestamp.string(Date())), as: "attacker-1")
        #expect(setup.waitForLog("the notification names \(feature.prefix(12)) \(refused) the message is not signed (publish with --sign-key)"), "\(setup.log)")
        let mallory = setup.keys.url.appending(path: "mallory").path
        try runProgram("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "mallory", "-f", mallory])
        try setup.send(try setup.message(later, at: Timestamp.string(Date().addingTimeInterval(1)), signedWith: mallory), as: "attacker-2")
        #expect(setup.waitForLog("the notification names \(later.prefix(12)) \(refused) the message's signature is"), "\(setup.log)")
        // The same message again (a retained one, at every reconnection) schedules nothing.
        try setup.send(try setup.message(later, at: Timestamp.string(Date().addingTimeInterval(2)), signedWith: mallory), as: "attacker-2")
        #expect(setup.waitForLog("refs/heads/main at \(later.prefix(12)) was refused already: nothing to do"), "\(setup.log)")

        // Replayed: a message the publisher signed for the first commit, sent again.
        try setup.send(try setup.message(first, signedWith: setup.key), as: "attacker-3")
        #expect(setup.waitForLog("the notification names \(first.prefix(12)) \(refused) it was published at 2026-01-01T00:00:00Z, before the publication already taken"),
                "\(setup.log)")

        // An unsigned commit, published and signed by CI (the CDN has its bundle) but never pushed.
        let unsigned = try setup.commit(port: 6666, signed: false, push: false)
        #expect(setup.publish().code == 0)
        #expect(setup.waitForLog("the notification names \(unsigned.prefix(12)) \(refused) commit \(unsigned.prefix(12)) (\"Port 6666, unsigned\") is not signed: refused"),
                "\(setup.log)")

        // Not a publication message at all.
        try setup.send(Array("{\"commit\": \"\\u001b[31mred\"}".utf8), as: "attacker-4")
        #expect(setup.waitForLog("was dropped: not a publication message"), "\(setup.log)")

        // Signed, but its bundle carries another commit than the one it names.
        let other = String(repeating: "ab", count: 20)
        try FileManager.default.copyItem(atPath: setup.published.url.appending(path: "bundles/\(second).bundle").path,
                                         toPath: setup.published.url.appending(path: "bundles/\(other).bundle").path)
        try setup.send(try setup.message(other, at: Timestamp.string(Date().addingTimeInterval(5)), signedWith: setup.key), as: "attacker-5")
        #expect(setup.waitForLog("the published bundles did not give \(other.prefix(12))"), "\(setup.log)")
        #expect(setup.waitForLog("the notification named \(other.prefix(12)) for refs/heads/main: not what the ref holds"))

        // Through all of it the applied revision stayed the signed head git has.
        #expect(setup.status?.lastCycle.revision == second)
        #expect(setup.status?.lastCycle.condition == .ready)
        #expect(!setup.log.contains("\u{1b}"), "no terminal escape reaches the log")
    }

    @Test("The broker going away and coming back: the link is shown down, cycles go on from git meanwhile, and it is up again after back-off")
    func brokerOutage() throws {
        let setup = try PushSetup()
        let first = try setup.commit(port: 1443)
        try setup.start()
        #expect(setup.waitForRevision(first, seconds: 30))
        #expect(setup.waitForLog("notifications: subscribed"))
        setup.broker.stop()
        #expect(setup.waitForLog("the link was lost"), "\(setup.controller?.stderr ?? "")")
        #expect(setup.waitFor(seconds: 5) { setup.status?.notifications?.connected == false }, "tether status shows it at once")
        // The controller goes on: a signal-started cycle (SIGHUP) still reads git.
        let second = try setup.commit(port: 2443)
        kill(setup.controller!.pid, SIGHUP)
        #expect(setup.waitForRevision(second, seconds: 15))
        try setup.broker.start()
        #expect(setup.waitFor(seconds: 20) { setup.status?.notifications?.connected == true }, "reconnected with back-off: \(setup.controller?.stderr ?? "")")
        #expect(setup.status?.notifications?.connected == true)
    }

    @Test("Usage mistakes are refused before anything starts, saying what to type")
    func usage() throws {
        let state = try TemporaryDirectory("tether-usage")
        let common = ["run", "--once", "--state-dir", state.path, "--repo", "git://127.0.0.1:1/p.git"]
        for (arguments, says) in [
            (["--notify", "mqtts://127.0.0.1:8883/t"], "name the broker's CA with --notify-ca FILE"),
            (["--notify", "mqtt://127.0.0.1:1883/t/#"], "plain topic name"),
            (["--notify", "mqtts://127.0.0.1:8883/t", "--notify-ca", "ca.pem", "--notify-cert", "c.pem"], "--notify-cert and --notify-key go together"),
            (["--notify", "mqtt://127.0.0.1:1883/t", "--notify-ca", "ca.pem"], "need an mqtts:// broker"),
            (["--notify", "mqtt://127.0.0.1:1883/t", "--bundle-url", "http://127.0.0.1:1/p"], "needs --verify head or range"),
            (["--bundle-url", "http://127.0.0.1:1/p"], "needs --notify mqtt://HOST:PORT/TOPIC"),
            (["--notify", "mqtt://127.0.0.1:1883/t", "--notify-spread", "7200"], "--notify-spread takes seconds"),
        ] {
            let result = tether(common + arguments)
            #expect(result.code != 0 && result.stderr.contains(says), "\(arguments): \(result.stderr)")
        }
        let unsent = tether(["publish", "--out", state.path, "--sign-key", "key"])
        #expect(unsent.code != 0 && unsent.stderr.contains("--sign-key signs the message --notify sends"), "\(unsent.stderr)")
        let remote = tether(["publish", "--repo", "https://git.example/p.git", "--out", state.path])
        #expect(remote.code != 0 && remote.stderr.contains("publish reads a local repository"), "\(remote.stderr)")
    }
}
