import Foundation
import PlatformSim
import TetherTestSupport
import Testing
import WireFormat

/// A platform on 127.0.0.1 requiring mutual TLS, and a device whose policies point EDR at it.
private func platformAndDevice() throws -> (PlatformSimulator, Environment) {
    let pki = try PlatformPKI.create()
    let platform = try PlatformSimulator(pki: pki, requireClientCertificate: true)
    let env = try Environment(policies: [
        "policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: \(platform.port)"),
        "policies/prod.yaml": Environment.prod,
    ], platform: pki)
    return (platform, env)
}

@Suite("tether agent sync and status against the local platform", .serialized, .ownThread)
struct ConnectorCommandTests {
    @Test("A running controller with a connector holds one connection to each store: agent.db, runtime.db and history.db")
    func oneConnectionPerStore() throws {
        let (platform, env) = try platformAndDevice()
        let free = try listenOnLoopback()
        close(free.0)
        let run = try ChildProcess(tetherExecutable, ["run", "--interval", "300", "--no-sensors", "--metrics-address", "127.0.0.1:\(free.1)"] + env.flags)
        defer { run.kill(); run.wait() }
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, !(platform.received.contains { $0.path.hasSuffix("/sync") } && (try? httpGet(port: free.1, path: "/readyz").status) == 200) {
            usleep(100_000)
        }
        #expect(platform.received.contains { $0.path.hasSuffix("/sync") }, "the EDR connector synced: \(run.stderr.suffix(2000))")
        // Every descriptor the process holds, by the file it names.
        let descriptors = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(run.pid)/fd").compactMap {
            try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(run.pid)/fd/\($0)")
        }
        for store in ["agent.db", "runtime.db", "history.db"] {
            let path = env.state.url.appendingPathComponent(store).resolvingSymlinksInPath().path
            #expect(descriptors.filter { $0 == path }.count == 1, "\(store): \(descriptors.filter { $0.hasSuffix(".db") })")
        }
    }

    @Test("An agent that cannot be opened is shown in /readyz, tether status and the log, and the controller goes on trying")
    func agentThatCannotBeOpened() throws {
        let (_, env) = try platformAndDevice()
        // agent.db is a folder: SQLite cannot open it.
        try FileManager.default.createDirectory(at: env.state.url.appendingPathComponent("agent.db"), withIntermediateDirectories: true)
        let free = try listenOnLoopback()
        close(free.0)
        let run = try ChildProcess(tetherExecutable, ["run", "--interval", "300", "--no-sensors", "--metrics-address", "127.0.0.1:\(free.1)"] + env.flags)
        defer { run.kill(); run.wait() }
        var readyz = (status: 0, body: "")
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, !readyz.body.contains("the agent cannot be opened") {
            readyz = (try? httpGet(port: free.1, path: "/readyz")) ?? readyz
            usleep(100_000)
        }
        #expect(readyz.status == 503 && readyz.body.contains("not ready: the agent cannot be opened"), "\(readyz)")
        #expect(readyz.body.contains("agent.db"), "it names the store: \(readyz.body)")
        var status = tether(["status", "--state-dir", env.state.path])
        while Date() < deadline, !status.stdout.contains("Failed") {
            usleep(100_000)
            status = tether(["status", "--state-dir", env.state.path])
        }
        #expect(status.stdout.contains("Failed") && status.stdout.contains("the agent cannot be opened"), "\(status.stdout)")
        #expect(run.stderr.contains("the agent cannot be opened"), "\(run.stderr)")
    }

    @Test("The client container's password is read from the policy's file at each connection and kept in no file Tether writes")
    func noPasswordAtRest() throws {
        let (platform, env) = try platformAndDevice()
        #expect(env.run("apply").code == 0)
        #expect(env.agentCommand("sync", "edr").code == 0)
        #expect(platform.events().isEmpty)
        // Every file of the state directory but the operator's own password file (the policy names it).
        let password = Data("cli-pass".utf8)
        let files = try FileManager.default.subpathsOfDirectory(atPath: env.state.path).filter { $0 != "edr-client.pass" }
        #expect(files.contains("agent.db") && files.contains("runtime.db"))
        for file in files {
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: env.state.url.appendingPathComponent(file).path, isDirectory: &isFolder), !isFolder.boolValue else { continue }
            #expect(try Data(contentsOf: env.state.url.appendingPathComponent(file)).range(of: password) == nil, "\(file) holds the password")
        }
        // Without its password file the connector says which file it could not read.
        try FileManager.default.removeItem(at: env.state.url.appendingPathComponent("edr-client.pass"))
        let failed = env.agentCommand("sync", "edr")
        #expect(failed.code == 1)
        #expect(failed.stdout.contains("FAILED (client-certificate-rejected)") && failed.stdout.contains("password file edr-client.pass cannot be read"),
                "\(failed.stdout)")
    }

    @Test("A sync loads libcurl, which starts libssh2 through Tether's libssh2_init, and no libgit2: libssh2's own start is found where libcurl loaded it")
    func syncLoadsNoGit() throws {
        let (platform, env) = try platformAndDevice()
        #expect(env.run("apply").code == 0)
        let traced = try withExtendedLifetime(platform) {
            try runProgram("/usr/bin/env", ["LD_DEBUG=files", tetherExecutable, "agent", "sync", "edr", "--state-dir", env.state.path])
        }
        #expect(traced.status == 0, "\(traced.output.suffix(800))")
        #expect(traced.output.contains("EDR (KATAEDR)          ok: synced"), "\(traced.output.suffix(800))")
        #expect(traced.output.contains("file=libcurl.so.4") && traced.output.contains("file=libssh2.so.1"), "LD_DEBUG=files shows libcurl and libssh2 loaded")
        #expect(!traced.output.contains("file=libgit2"), "a sync loaded libgit2")
    }

    @Test("apply → sync connects (exit 0) → the drift report's health section shows EDR connected; a wrong port fails (exit 1)")
    func syncStatusHealth() throws {
        let (platform, env) = try platformAndDevice()
        #expect(env.run("apply").code == 0)
        #expect(env.agentCommand("emit-events", "--count", "5").stdout == "Queued 5 process-start events for EDR.\n")

        let sync = env.agentCommand("sync")
        #expect(sync.code == 0, "\(sync.stdout)\(sync.stderr)")
        #expect(sync.stdout.contains("EDR (KATAEDR)          ok: synced with 127.0.0.1:\(platform.port); 5 events sent in 1 batch"))
        #expect(sync.stdout.contains("NDR (KATANDR)          skipped: stopped"))
        #expect(platform.events().count == 5)

        let status = env.agentCommand("status", "--json").json
        let edr = (status["connectors"] as? [[String: Any]])?.first { $0["integration"] as? String == "edr" }
        #expect(edr?["state"] as? String == "connected")

        let drift = env.run("drift", "--format", "json")
        #expect(drift.code == 0)
        let health = (drift.json["health"] as? [[String: Any]])?.first { $0["integration"] as? String == "edr" }
        #expect(health?["state"] as? String == "connected")
        #expect(env.run("drift").stdout.contains("EDR (KATAEDR)         connected — 127.0.0.1:\(platform.port)"))

        platform.stop()
        let failed = env.agentCommand("sync", "edr")
        #expect(failed.code == 1)
        #expect(failed.stdout.contains("FAILED (unreachable)"))
        #expect(env.run("drift").stdout.contains("last error (unreachable)"))
    }

    @Test("Two overlapping senders killed at random points 20 times: after the platform drops resent batches by batchId, every event arrived once")
    func killedSender() throws {
        let (platform, env) = try platformAndDevice()
        #expect(env.run("apply").code == 0)
        #expect(env.agentCommand("set-settings", "edr", "UseRequestCountLimits=false").code == 0)
        let tetherBinary = tetherExecutable
        try #require(FileManager.default.isExecutableFile(atPath: tetherBinary), "swift build builds the tether executable")
        var emitted = 0
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            #expect(env.agentCommand("emit-events", "--count", "1100").code == 0)
            emitted += 1100
            // Two senders overlap, as a controller's sync and an operator's can.
            let senders = (0..<2).map { _ in Process() }
            for sender in senders {
                sender.executableURL = URL(fileURLWithPath: tetherBinary)
                sender.arguments = ["agent", "sync", "edr", "--state-dir", env.state.path]
                sender.standardOutput = FileHandle.nullDevice
                sender.standardError = FileHandle.nullDevice
                try sender.run()
            }
            usleep(UInt32.random(in: 20_000...400_000, using: &generator))
            for sender in senders {
                kill(sender.processIdentifier, SIGKILL)
                sender.waitUntilExit()
            }
        }
        let last = env.agentCommand("sync", "edr")
        #expect(last.code == 0, "\(last.stdout)\(last.stderr)")
        let seqs = platform.events().map(\.seq)
        #expect(seqs.count == emitted, "\(seqs.count) events taken in, \(emitted) emitted")
        #expect(Set(seqs).count == seqs.count, "an event was taken in twice")
        #expect(seqs == seqs.sorted(), "events arrived out of order")
        let status = env.agentCommand("status", "--json").json
        let edr = (status["connectors"] as? [[String: Any]])?.first { $0["integration"] as? String == "edr" }
        #expect(edr?["sent"] as? Int == emitted, "each acknowledged batch is counted once")
        #expect(edr?["queueDepth"] as? Int == 0)
        print("killedSender: \(emitted) events, \(platform.duplicateBatches) resent batches dropped by the platform")
    }

    @Test("A file the platform quarantined is listed by tether agent quarantine list and put back by restore")
    func quarantine() throws {
        let (platform, env) = try platformAndDevice()
        #expect(env.run("apply").code == 0)
        let folder = try TemporaryDirectory("tether-quarantine-cli")
        let suspect = try folder.write("suspect\u{1b}[31m.bin", "not for you\n")
        platform.queueCommand(["id": "q-cli", "type": "quarantine-file", "path": .string(suspect)])
        #expect(env.agentCommand("sync", "edr").code == 0)
        #expect(!FileManager.default.fileExists(atPath: suspect))
        let list = env.agentCommand("quarantine", "list")
        #expect(list.stdout.contains("held") && list.stdout.contains("suspect\\x1b[31m.bin"), "escape bytes in a name are shown escaped: \(list.stdout)")
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(env.agentCommand("quarantine", "list", "-o", "json").stdout.utf8)) as? [[String: Any]])
        let id = try #require(entries.first?["id"] as? String)
        #expect(entries.first?["originalPath"] as? String == suspect && entries.first?["commandId"] as? String == "q-cli")
        #expect(env.agentCommand("quarantine", "restore", "not-an-id").code == 1)
        let restored = env.agentCommand("quarantine", "restore", id)
        #expect(restored.code == 0 && restored.stdout.hasPrefix("Restored "), "\(restored.stdout)\(restored.stderr)")
        #expect(try String(contentsOfFile: suspect, encoding: .utf8) == "not for you\n")
        #expect(env.agentCommand("quarantine", "list").stdout.contains("restored"))
    }

    @Test("Execution prevention through tether run: a listed copy is denied before it runs; after kill -9 of tether it runs again")
    func preventionBeforeRun() throws {
        let (platform, env) = try platformAndDevice()
        #expect(env.run("apply").code == 0)
        let folder = try TemporaryDirectory("tether-prevention")
        // A copy of /bin/echo with bytes appended: its hash is its own, never the system program's.
        // Written through a close-on-exec descriptor: a child started meanwhile by a test running
        // alongside must not inherit it open for writing (exec would fail with ETXTBSY).
        let listed = folder.url.appendingPathComponent("listed-echo").path
        var bytes = try Data(contentsOf: URL(fileURLWithPath: "/bin/echo"))
        bytes.append(Data("tether prevention test\n".utf8))
        try writeExecutable(listed, bytes)
        let sha256 = try fileDigest(listed)
        platform.queueCommand(["id": "prevent-1", "type": "execution-prevention", "rules": [["hash": .string(sha256), "algorithm": "sha256"]]])
        #expect(env.agentCommand("sync", "edr").code == 0)
        let result = platform.received.filter { $0.path.hasSuffix("/sync") }.last?.decode(SyncRequest.self)?.commandResults.first { $0.id == "prevent-1" }
        #expect(result == nil, "reported on the next sync")

        let run = try ChildProcess(tetherExecutable, ["run", "--interval", "300"] + env.flags)
        defer { run.kill(); run.wait() }
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, !env.agentCommand("status").stdout.contains("prevention fanotify permission events") {
            usleep(100_000)
        }
        let status = env.agentCommand("status").stdout
        #expect(status.contains("prevention fanotify permission events on"), "\(status)\n\(run.stderr.suffix(2000))")
        func runListed() throws -> ProgramResult { try runProgram("/bin/sh", ["-c", "'\(listed)' printed-by-the-listed-copy"]) }
        for _ in 1...5 {
            let denied = try runListed()
            #expect(!denied.output.contains("printed-by-the-listed-copy") && denied.status == 126, "\(denied.output)")
        }
        #expect(try runProgram("/bin/echo", ["an unlisted program runs"]).output == "an unlisted program runs\n")
        // The denials are queued for the platform within the sensors' next check.
        func queuedDenials() -> Int? {
            let telemetry = env.agentCommand("status", "-o", "json").json["telemetry"] as? [String: [String: [String: Int]]]
            return telemetry?["edr"]?["processing-result"]?["queued"]
        }
        let queuedBy = Date().addingTimeInterval(10)
        while Date() < queuedBy, queuedDenials() != 5 { usleep(100_000) }
        #expect(queuedDenials() == 5)

        // Tether dies: the kernel drops its group, and nothing waits on it.
        run.kill()
        #expect(run.wait() == 128 + SIGKILL)
        let after = try runListed()
        #expect(after.output == "printed-by-the-listed-copy\n", "executions go on once Tether is gone")
        #expect(env.agentCommand("sync", "edr").code == 0)
        let reported = platform.received.filter { $0.path.hasSuffix("/sync") }.flatMap { $0.decode(SyncRequest.self)?.commandResults ?? [] }
            .first { $0.id == "prevent-1" }
        #expect(reported?.result == "applied")
        #expect(reported?.detail.contains("denies listed programs before they run (fanotify permission events)") == true, "\(reported?.detail ?? "")")
        let events = platform.received.filter { $0.path.hasSuffix("/events") }.flatMap { $0.decode(EventBatch.self)?.events ?? [] }
        let denials = events.filter { $0.type == "processing-result" && $0.detail["action"] == .text("execution-denied") }
        // Delivery is at least once: a batch the platform took just before the kill -9 is sent
        // again by the next sync, with the same sequence numbers.
        #expect(Set(denials.map(\.seq)).count == 5, "each denial reaches the platform: \(events.map(\.type))")
    }

    @Test("Isolation from the platform, enforced in the endpoint's network namespace, seen and lifted by tether agent isolation-off")
    func isolation() throws {
        // tether runs inside the test's namespace; the platform and a web server outside it.
        let network = try TestNetwork()
        // The platform by name, as in production: resolved when the isolation starts, then fixed.
        let name = "platform.tether.test"
        try network.setInsideHosts("\(TestNetwork.outsideAddress) \(name)\n")
        let pki = try PlatformPKI.create(names: [name])
        let platform = try TestNetwork.within(network.outside) {
            try PlatformSimulator(pki: pki, requireClientCertificate: true, host: TestNetwork.outsideAddress)
        }
        let other = try TestListener(in: network.outside, host: TestNetwork.otherOutsideAddress)
        let env = try Environment(policies: [
            "policies/base.yaml": Environment.base.replacingOccurrences(of: "port: 443", with: "port: \(platform.port)")
                .replacingOccurrences(of: "address: 127.0.0.1", with: "address: \(name)"),
            "policies/prod.yaml": Environment.prod,
        ], platform: pki)
        #expect(env.run("apply").code == 0)
        func inside(_ arguments: String...) throws -> ProgramResult {
            try runProgram("ip", ["netns", "exec", network.inside, tetherExecutable, "agent"] + arguments + ["--state-dir", env.state.path])
        }
        platform.queueCommand(["type": "network-isolation", "durationSeconds": 3600, "exclusions": [["address": "10.0.0.1"]]])
        let sync = try inside("sync", "edr")
        #expect(sync.status == 0, "\(sync.output)")
        #expect(!TestNetwork.canConnect(from: network.inside, to: TestNetwork.otherOutsideAddress, port: other.port))
        let status = try inside("isolation-status")
        #expect(status.status == 0, "\(status.output)")
        #expect(status.output.contains("Network isolation is ordered since"))
        #expect(status.output.contains("ACTIVE until"), "\(status.output)")
        #expect(status.output.contains("enforced by the nftables table tether_isolation (2 allowed flows)"), "\(status.output)")
        #expect(status.output.contains("allowed: outbound tcp to \(TestNetwork.outsideAddress) remote port \(platform.port) (platform EDR \(name))"), "\(status.output)")
        #expect(status.output.contains("allowed: both with 10.0.0.1 (exclusion 1)"), "\(status.output)")
        // The drift report says it too, and follows policies/report.schema.json.
        let quoted = ([tetherExecutable, "drift", "--format", "json"] + env.flags).map { "'\($0)'" }.joined(separator: " ")
        let drift = try runProgram("ip", ["netns", "exec", network.inside, "/bin/sh", "-c", quoted + " 2>/dev/null"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(drift.output.utf8)) as? [String: Any], "\(drift.output)")
        let reported = report["isolation"] as? [String: Any]
        #expect(reported?["active"] as? Bool == true && reported?["enforced"] as? Bool == true, "\(String(describing: reported))")
        let reportFile = try env.state.write("isolated-drift.json", drift.output)
        let valid = try runProgram("python3", ["-c", """
            import json, sys, jsonschema
            jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))
            """, repositoryRoot.appendingPathComponent("policies/report.schema.json").path, reportFile])
        #expect(valid.status == 0, "\(valid.output)")
        // DNS is out of reach while isolated: the name no longer resolves, and the connector still syncs.
        try network.setInsideHosts("# nothing\n")
        let isolatedSync = try inside("sync", "edr")
        #expect(isolatedSync.status == 0, "the platform's name keeps the address allowed: \(isolatedSync.output)")
        let agentStatus = try inside("status", "-o", "json")
        let isolation = (try JSONSerialization.jsonObject(with: Data(agentStatus.output.utf8)) as? [String: Any])?["isolation"] as? [String: Any]
        #expect(isolation?["enforced"] as? Bool == true)
        // Seen from outside the namespace the firewall is not there: the test machine is untouched.
        #expect(env.agentCommand("isolation-status").stdout.contains("ORDERED BUT NOT ENFORCED"), "no table in this machine's own namespace")

        let off = try inside("isolation-off")
        #expect(off.output == "Isolation lifted by tether agent isolation-off.\n", "\(off.output)")
        #expect(TestNetwork.canConnect(from: network.inside, to: TestNetwork.otherOutsideAddress, port: other.port))
        #expect(try inside("isolation-status").output.hasPrefix("Network isolation is off (last lifted by tether agent isolation-off)"))
        try network.setInsideHosts("\(TestNetwork.outsideAddress) \(name)\n")
        #expect(try inside("sync", "edr").status == 0)
        let results = platform.received.filter { $0.path.hasSuffix("/sync") }.last?.decode(SyncRequest.self)
        #expect(results?.isolation == false, "the platform hears of the lift on the next sync")
    }
}

@Suite("The health window after an apply", .serialized, .ownThread)
struct HealthWindowTests {
    @Test("A changed connector that cannot reach its server brings the previous state back, and the report says so")
    func rollsBack() throws {
        let pki = try PlatformPKI.create()
        let platform = try PlatformSimulator(pki: pki, requireClientCertificate: true)
        let base = Environment.base.replacingOccurrences(of: "port: 443", with: "port: \(platform.port)")
        let env = try Environment(policies: ["policies/base.yaml": base, "policies/prod.yaml": Environment.prod], platform: pki)
        let good = env.run("apply", "--health-window", "5")
        #expect(good.code == 0, "\(good.stderr)")

        let closed = try freePort()
        try env.repo.commit(["policies/base.yaml": base.replacingOccurrences(of: "port: \(platform.port)", with: "port: \(closed)")])
        let bad = env.run("apply", "--health-window", "1", "--detailed-exitcodes")
        #expect(bad.code == 4)
        #expect(bad.stderr.contains("apply rolled back: EDR did not reach its server (unreachable"))
        #expect(bad.stdout.hasPrefix("Not applied"))
        #expect(bad.stdout.contains("The previous state was restored."))
        #expect(env.agentCommand("get-settings", "edr").stdout.contains("Port=\(platform.port)"))
        let drift = env.run("drift", "--format", "json")
        #expect((drift.json["findings"] as? [[String: Any]])?.first?["kind"] as? String == "pending")
        #expect(tether(["history", "--state-dir", env.state.path]).stdout.contains("rolled-back"))
        #expect(env.agentCommand("sync", "edr").code == 0, "the restored connector works")
    }
}
