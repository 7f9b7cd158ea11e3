import AgentInterface
import ConnectorCore
import EmbeddedAgent
import Firewall
import Foundation
import IntegrationModel
import PlatformSim
import SQLiteDB
import TetherTestSupport
import WireFormat
import Testing
import X509

/// An agent on disk talking to a platform on 127.0.0.1.
final class Rig: @unchecked Sendable {
    let pki: PlatformPKI
    let platform: PlatformSimulator
    let state: TemporaryDirectory
    let agent: Agent
    var runtime: ConnectorRuntime
    /// The connectors' clock: tests move it instead of sleeping.
    let clock = TestClock()

    /// The test network the agent sits in, when it isolates.
    let network: TestNetwork?

    /// Without `network` the platform is on 127.0.0.1, and an isolation cannot touch this
    /// machine (its firewall points at a namespace that does not exist). With it, the platform
    /// serves in the network's outside namespace and the firewall acts inside.
    init(mutualTLS: Bool = true, queueLimit: Int = 100_000, start: [Integration] = [.edr], network: TestNetwork? = nil) throws {
        self.network = network
        let host = network == nil ? "127.0.0.1" : TestNetwork.outsideAddress
        let pki = try PlatformPKI.create(names: ["localhost", "127.0.0.1", "::1", TestNetwork.outsideAddress])
        self.pki = pki
        if let network {
            platform = try TestNetwork.within(network.outside) { try PlatformSimulator(pki: pki, requireClientCertificate: mutualTLS, host: host) }
        } else {
            platform = try PlatformSimulator(pki: pki, requireClientCertificate: mutualTLS)
        }
        state = try TemporaryDirectory("tether-agent")
        agent = try Agent(stateDirectory: state.path)
        let clock = self.clock
        runtime = try ConnectorRuntime(agent: agent, queueLimit: queueLimit,
                                       firewall: Firewall(networkNamespace: network?.insidePath ?? "/run/netns/tether-tests-never-isolate-this-machine"),
                                       clock: { clock.now })
        let here = [Endpoint(address: host, port: platform.port)]
        try agent.transaction(actor: "test") {
            try agent.set(SettingPath.edr.address, to: .string(host))
            try agent.set(SettingPath.edr.port, to: .int(platform.port))
            try agent.set(SettingPath.ndr.endpoints, to: .endpoints(here))
            try agent.set(SettingPath.sandbox.servers, to: .endpoints(here))
            for integration in Integration.allCases {
                try agent.addServerCertificate(integration, bytes: Array(pki.serverCertificatePEM.utf8), source: "server.pem")
                if mutualTLS {
                    try Data("pw\n".utf8).write(to: state.url.appendingPathComponent("client.pass"))
                    try agent.addClientCertificate(integration, pkcs12: try pki.issueClient(commonName: "endpoint-1", password: "pw"),
                                                   password: .file("client.pass"), source: "client.p12")
                    try agent.set(SettingPath.common(integration).mutualAuthentication, to: .bool(true))
                }
            }
            for integration in start { try agent.start(integration) }
        }
    }

    func set(_ path: SettingPath, _ value: SettingValue) throws {
        try agent.set(path, to: value)
    }

    /// Events of one type, numbered n = 0…
    static func events(_ count: Int, type: EventType = .processStart, from start: Int = 0) -> [TelemetryEvent] {
        (start..<(start + count)).map { TelemetryEvent(type: type, detail: ["n": DetailValue($0)]) }
    }
}

@Suite("Connectors over real TLS to the local platform", .serialized)
struct ConnectorTransportTests {
    @Test("The pinned certificate is accepted, mutual TLS is presented, and the sync carries the agent's facts")
    func syncAccepted() throws {
        let rig = try Rig()
        let outcome = rig.runtime.sync(.edr)
        #expect(outcome.succeeded, "\(outcome.summary)")
        let sync = try #require(rig.platform.received.first { $0.path.hasSuffix("/sync") })
        #expect(sync.clientSubject?.contains("CN=endpoint-1") == true)
        let request = try #require(sync.decode(SyncRequest.self), "the sync is a SyncRequest")
        #expect(request.agentId == (try rig.runtime.agentId()))
        #expect(request.tasks["KATAEDR"] == "running")
        let status = try #require(try rig.runtime.status().first { $0.integration == .edr })
        #expect(status.state == "connected")
        #expect(status.server == "127.0.0.1:\(rig.platform.port)")
    }

    @Test("A server whose certificate is not the pinned one is refused, and status names it")
    func wrongCertificate() throws {
        let rig = try Rig()
        let other = try PlatformPKI.create()
        try rig.agent.transaction(actor: "test") {
            try rig.agent.addServerCertificate(.edr, bytes: Array(other.serverCertificatePEM.utf8), source: "other.pem")
        }
        let outcome = rig.runtime.sync(.edr)
        #expect(!outcome.succeeded)
        #expect(outcome.errorKind == "server-certificate-rejected")
        #expect(rig.platform.received.isEmpty)
        let status = try #require(try rig.runtime.status().first { $0.integration == .edr })
        #expect(status.state == "failing")
        #expect(status.errorKind == "server-certificate-rejected")
    }

    @Test("A platform that requires a client certificate, and none is configured: client certificate missing")
    func clientCertificateMissing() throws {
        let rig = try Rig()
        try rig.set(SettingPath.edr.mutualAuthentication, .bool(false))
        let outcome = rig.runtime.sync(.edr)
        #expect(outcome.errorKind == "client-certificate-missing", "\(outcome.summary)")
    }

    @Test("Through the app-wide proxy with credentials when useProxy is on; straight when it is off")
    func proxy() throws {
        let rig = try Rig()
        let proxy = try ConnectProxy(user: "tether", password: "proxy-secret")
        try rig.state.write("proxy.pass", "proxy-secret\n")
        try rig.agent.transaction(actor: "test") {
            try rig.set(SettingPath.proxy.address, .string(proxy.address))
            try rig.set(SettingPath.proxy.user, .string("tether"))
            try rig.set(SettingPath.proxy.passwordFile, .string("proxy.pass"))
        }
        #expect(rig.runtime.sync(.edr).succeeded)
        #expect(proxy.tunnels == 1)
        try rig.state.write("proxy.pass", "wrong\n")
        #expect(rig.runtime.sync(.edr).errorKind == "proxy-refused")
        try rig.set(SettingPath.edr.useProxy, .bool(false))
        #expect(rig.runtime.sync(.edr).succeeded)
        #expect(proxy.tunnels == 1)
    }

    @Test("requestTimeout is honoured: a server that never answers times out after it")
    func timeout() throws {
        let rig = try Rig()
        let silent = try SilentServer()
        try rig.agent.transaction(actor: "test") {
            try rig.set(SettingPath.edr.port, .int(silent.port))
            try rig.set(SettingPath.edr.requestTimeout, .int(1))
            try rig.set(SettingPath.edr.connectionTimeout, .int(1))
        }
        let started = Date()
        let outcome = rig.runtime.sync(.edr)
        let elapsed = Date().timeIntervalSince(started)
        #expect(outcome.errorKind == "timed-out", "\(outcome.summary)")
        #expect(elapsed >= 0.9 && elapsed < 3, "took \(elapsed) s")
    }
}

@Suite("Telemetry: batches, outages, restarts, limits", .serialized)
struct TelemetryTests {
    @Test("Batches arrive complete and in order across a server outage and an agent restart")
    func outageAndRestart() throws {
        let rig = try Rig()
        try rig.set(SettingPath.edr.requestCountLimits, .bool(false))
        #expect(try rig.runtime.record(Rig.events(1500)) == 1500)
        rig.platform.stop()
        let down = rig.runtime.sync(.edr)
        #expect(down.errorKind == "unreachable")
        #expect(try rig.runtime.record(Rig.events(1000, from: 1500)) == 1000)
        #expect(try rig.runtime.status().first { $0.integration == .edr }?.queueDepth == 2500)

        // The agent restarts (a new runtime over the same store); the platform comes back.
        rig.runtime = try ConnectorRuntime(agent: try Agent(stateDirectory: rig.state.path), clock: { [clock = rig.clock] in clock.now })
        try rig.platform.start()
        let up = rig.runtime.sync(.edr)
        #expect(up.succeeded, "\(up.summary)")
        let events = rig.platform.events()
        #expect(events.count == 2500)
        #expect(events.map { $0.detail["n"] } == (0..<2500).map { DetailValue($0) })
        let batches = rig.platform.received.filter { $0.path.hasSuffix("/events") }.map { $0.decode(EventBatch.self)?.events.count ?? 0 }
        #expect(batches == [1024, 1024, 452])
        #expect(try rig.runtime.status().first { $0.integration == .edr }?.queueDepth == 0)
    }

    @Test("Events the previous release queued (every detail as text) go out with their numbers as numbers, and the platform takes them")
    func queuedByThePreviousRelease() throws {
        let rig = try Rig()
        try rig.set(SettingPath.behaviorDetection, .bool(true))
        try rig.set(SettingPath.edr.telemetry, .bool(true))
        #expect(try rig.runtime.record(Rig.events(1)) == 1)
        // The row as the previous release wrote it.
        let store = try Database(path: rig.state.url.appendingPathComponent(ConnectorRuntime.storeFileName).path)
        try store.execute(#"UPDATE events SET type = 'file-change', detail = '{"pid":"9401","directory":"true","path":"/srv/42"}'"#)
        let sync = rig.runtime.sync(.edr)
        #expect(sync.succeeded, "\(sync.summary)")
        let event = try #require(rig.platform.events().first)
        #expect(event.detail == ["pid": 9401, "directory": .flag(true), "path": "/srv/42"], "a path of digits stays text: \(event.detail)")
    }

    @Test("Count limits: at most maximumEventsPerHour, one type at most eventLimitExceededPercentage of it")
    func throttling() throws {
        let rig = try Rig()
        try rig.agent.transaction(actor: "test") {
            try rig.set(SettingPath.edr.maximumEventsPerHour, .int(100))
            try rig.set(SettingPath.edr.eventLimitExceededPercentage, .int(50))
        }
        try rig.runtime.record(Rig.events(80, type: .processStart) + Rig.events(40, type: .fileChange))
        #expect(rig.runtime.sync(.edr).succeeded)
        let sent = rig.platform.events()
        #expect(sent.filter { $0.type == "process-start" }.count == 50)
        #expect(sent.filter { $0.type == "file-change" }.count == 40)
        try rig.runtime.record(Rig.events(30, type: .networkConnection))
        #expect(rig.runtime.sync(.edr).succeeded)
        #expect(rig.platform.events().count == 100, "the hourly budget is spent")
        let status = try #require(try rig.runtime.status().first { $0.integration == .edr })
        #expect(status.sent == 100)
        #expect(status.throttled == 50)
    }

    @Test("The queue is bounded; what it drops is counted and reported")
    func bounded() throws {
        let rig = try Rig(queueLimit: 10)
        #expect(try rig.runtime.record(Rig.events(15)) == 10)
        let status = try #require(try rig.runtime.status().first { $0.integration == .edr })
        #expect(status.queueDepth == 10)
        #expect(status.dropped == 5)
    }

    @Test("Telemetry flows only while telemetry and behaviour detection are both on")
    func telemetrySwitch() throws {
        let rig = try Rig()
        try rig.set(SettingPath.edr.telemetry, .bool(false))
        #expect(try rig.runtime.record(Rig.events(5)) == 0)
        let outcome = rig.runtime.sync(.edr)
        #expect(outcome.succeeded)
        #expect(outcome.summary.contains("telemetry off"))
        #expect(rig.platform.events().isEmpty)
    }

    @Test("NDR fails over to the next endpoint and sends packages of at most maximumEventsInPackage")
    func ndrFailover() throws {
        let rig = try Rig(start: [.ndr])
        let closed = try freePort()
        try rig.agent.transaction(actor: "test") {
            try rig.set(SettingPath.ndr.endpoints, .endpoints([Endpoint(address: "127.0.0.1", port: closed), Endpoint(address: "127.0.0.1", port: rig.platform.port)]))
            try rig.set(SettingPath.ndr.maximumEventsInPackage, .int(100))
            try rig.set(SettingPath.ndr.requestCountLimits, .bool(false))
        }
        try rig.runtime.record(Rig.events(250, type: .networkConnection), for: .ndr)
        let outcome = rig.runtime.sync(.ndr)
        #expect(outcome.succeeded, "\(outcome.summary)")
        #expect(outcome.summary.contains("failing over from 127.0.0.1:\(closed)"))
        #expect(rig.platform.received.contains { $0.path.hasSuffix("/ping") })
        let packages = rig.platform.received.filter { $0.path.hasPrefix("/kata/ndr/") && $0.path.hasSuffix("/events") }
            .map { $0.decode(EventBatch.self)?.events.count ?? 0 }
        #expect(packages == [100, 100, 50])
        #expect(try rig.runtime.status().first { $0.integration == .ndr }?.server == "127.0.0.1:\(rig.platform.port)")
    }
}

@Suite("Sandbox and response commands", .serialized)
struct SandboxAndResponseTests {
    @Test("Submit → upload → poll → verdict; the EICAR test file is a detection and each verdict is an event")
    func sandboxVerdicts() throws {
        let rig = try Rig(start: [.edr, .sandbox])
        try rig.runtime.submitToSandbox([(path: "/tmp/clean.txt", content: Array("harmless\n".utf8)),
                                         (path: "/tmp/eicar.com", content: Array(PlatformSimulator.eicar.utf8))])
        #expect(rig.runtime.sync(.sandbox).summary.hasPrefix("2 uploaded, 0 verdicts"))
        #expect(rig.runtime.sync(.sandbox).summary.hasPrefix("0 uploaded, 2 verdicts"))
        let verdicts = Dictionary(uniqueKeysWithValues: try rig.runtime.sandboxScans().map { ($0.path, $0.verdict ?? "") })
        #expect(verdicts == ["/tmp/clean.txt": "not detected", "/tmp/eicar.com": "detect"])
        let upload = try #require(rig.platform.received.first { $0.method == "POST" && $0.path.hasSuffix("/scans") })
        #expect(upload.body?["objectType"]?.string == "file")
        #expect(rig.platform.received.filter { $0.method == "DELETE" }.count == 2)
        #expect(rig.runtime.sync(.edr).succeeded)
        #expect(rig.platform.events().filter { $0.type == "sandbox-verdict" }.count == 2)
        // The EICAR object is the agent's own detection too, with what it did about it.
        let detection = try #require(rig.platform.events().first { $0.type == "detection" })
        #expect(detection.detail["source"] == "sandbox" && detection.detail["path"] == "/tmp/eicar.com" && detection.detail["verdict"] == "detect")
        let result = try #require(rig.platform.events().first { $0.type == "processing-result" })
        #expect(result.detail["detectionId"] == detection.detail["detectionId"] && result.detail["action"] == "reported")
        #expect(rig.platform.events().filter { $0.type == "detection" }.count == 1, "the clean object is no detection")
    }

    @Test("429 means back off: nothing is lost, the upload waits")
    func backoff() throws {
        let rig = try Rig(start: [.sandbox])
        rig.platform.rejectScans(1)
        try rig.runtime.submitToSandbox([(path: "a.bin", content: [1, 2, 3])])
        let first = rig.runtime.sync(.sandbox)
        #expect(first.summary.contains("429"))
        #expect(rig.runtime.sync(.sandbox).summary.hasPrefix("backing off until"))
        #expect(try rig.runtime.sandboxScans().first?.state == "queued")
        rig.clock.advance(1.1)
        #expect(rig.runtime.sync(.sandbox).summary.hasPrefix("1 uploaded"))
    }

    @Test("A full queue refuses a submission with a clear error and an event, and keeps nothing of it")
    func queueFull() throws {
        let rig = try Rig(start: [.sandbox])
        try rig.set(SettingPath.sandbox.queueSize, .int(1))
        let big = [UInt8](repeating: 7, count: 700 * 1024)
        try rig.runtime.submitToSandbox([(path: "one.bin", content: big)])
        let error = #expect(throws: AgentError.self) { try rig.runtime.submitToSandbox([(path: "two.bin", content: big)]) }
        #expect(error?.description.contains("the Sandbox queue is full: two.bin") == true)
        #expect(try rig.runtime.sandboxScans().map(\.path) == ["one.bin"])
    }

    @Test("Network isolation in the kernel: a blocked address is unreachable, the excluded one and the platform are reachable, lifting restores it")
    func isolation() throws {
        let network = try TestNetwork()
        let rig = try Rig(network: network)
        let blocked = try TestListener(in: network.outside, host: TestNetwork.outsideAddress)
        let excluded = try TestListener(in: network.outside, host: TestNetwork.otherOutsideAddress)
        let blocked6 = try TestListener(in: network.outside, host: TestNetwork.outsideAddress6)
        func reachable(_ host: String, _ port: Int) -> Bool { TestNetwork.canConnect(from: network.inside, to: host, port: port) }
        #expect(reachable(TestNetwork.outsideAddress, blocked.port) && reachable(TestNetwork.otherOutsideAddress, excluded.port))
        #expect(reachable(TestNetwork.outsideAddress6, blocked6.port), "IPv6 works before the isolation")

        rig.platform.queueCommand(["id": "iso-1", "type": "network-isolation", "durationSeconds": 600, "exclusions": [
            ["direction": "outbound", "protocol": 6, "remoteAddress": .string(TestNetwork.otherOutsideAddress + "/32"),
             "remotePorts": [["fromPort": .number(Double(excluded.port)), "toPort": .number(Double(excluded.port))]]],
        ]])
        let first = try TestNetwork.within(network.inside) { rig.runtime.sync(.edr) }
        #expect(first.summary.contains("1 command received"), "\(first.summary)")
        let applied = try #require(try rig.runtime.commandLog().first { $0.id == "iso-1" })
        #expect(applied.result == "applied", "\(applied.detail)")
        #expect(applied.detail.contains("1 platform address and 1 exclusion allowed"), "\(applied.detail)")

        #expect(!reachable(TestNetwork.outsideAddress, blocked.port), "a port of the platform's host that is not the platform's is blocked")
        #expect(!reachable(TestNetwork.outsideAddress6, blocked6.port), "IPv6 is blocked too")
        #expect(reachable(TestNetwork.otherOutsideAddress, excluded.port), "the exclusion is reachable")
        let second = try TestNetwork.within(network.inside) { rig.runtime.sync(.edr) }
        #expect(second.succeeded, "the EDR connector still syncs: \(second.summary)")
        let status = try rig.runtime.isolationStatus()
        #expect(status.active && status.enforced, "\(status.problem ?? "")")
        #expect(status.allowed.map(\.summary) == ["outbound tcp to \(TestNetwork.outsideAddress) remote port \(rig.platform.port) (platform EDR \(TestNetwork.outsideAddress))",
                                                  "outbound tcp to \(TestNetwork.otherOutsideAddress) remote port \(excluded.port) (exclusion 1)"])
        let report = rig.platform.received.filter { $0.path.hasSuffix("/sync") }.last?.decode(SyncRequest.self)
        #expect(report?.commandResults.first?.id == "iso-1")
        #expect(report?.isolation == true, "the platform hears the isolation is enforced")

        rig.runtime.liftIsolation(by: "tether agent isolation-off")
        #expect(reachable(TestNetwork.outsideAddress, blocked.port), "lifting restores the blocked address")
        #expect(reachable(TestNetwork.outsideAddress6, blocked6.port))
        let lifted = try rig.runtime.isolationStatus()
        #expect(!lifted.active && !lifted.enforced)
        #expect(lifted.liftedBy == "tether agent isolation-off")
        #expect(try Firewall(networkNamespace: network.insidePath).enforcement() == .absent, "the table is gone")
    }

    @Test("A removed or changed isolation table is put back and counted; a kill between the record and the kernel is finished at start")
    func isolationTampered() throws {
        let network = try TestNetwork()
        let rig = try Rig(network: network)
        let blocked = try TestListener(in: network.outside, host: TestNetwork.outsideAddress)
        rig.platform.queueCommand(["id": "iso-2", "type": "network-isolation", "exclusions": [["address": "192.0.2.1", "port": "443"]]])
        _ = try TestNetwork.within(network.inside) { rig.runtime.sync(.edr) }
        #expect(try rig.runtime.isolationStatus().enforced)
        #expect(rig.runtime.enforceIsolation() == nil, "nothing to do while the table is as written")

        // Someone deletes the table: the endpoint is open, status says so, the next tick closes it.
        let fw = Firewall(networkNamespace: network.insidePath)
        try fw.lift()
        #expect(TestNetwork.canConnect(from: network.inside, to: TestNetwork.outsideAddress, port: blocked.port))
        let open = try rig.runtime.isolationStatus()
        #expect(open.active && !open.enforced)
        #expect(open.problem?.contains("missing or changed") == true)
        #expect(rig.runtime.enforceIsolation()?.contains("removed or changed; isolation put back") == true)
        #expect(!TestNetwork.canConnect(from: network.inside, to: TestNetwork.outsideAddress, port: blocked.port))

        // Someone adds an accept rule to Tether's chain: found by the listing, put back.
        let added = try runProgram("ip", ["netns", "exec", network.inside, "nft",
                                          "add rule inet \(Firewall.table) input accept; add rule inet \(Firewall.table) output accept"])
        #expect(added.status == 0, "nft (Debian's nftables, scripts/install-deps --test): \(added.output)")
        #expect(TestNetwork.canConnect(from: network.inside, to: TestNetwork.outsideAddress, port: blocked.port))
        #expect(rig.runtime.enforceIsolation() != nil)
        #expect(!TestNetwork.canConnect(from: network.inside, to: TestNetwork.outsideAddress, port: blocked.port))
        let status = try rig.runtime.isolationStatus()
        #expect(status.enforced && status.reasserted == 2)

        // A new isolation that cannot be put in force leaves this one as it is.
        try rig.agent.transaction(actor: "test") {
            try rig.agent.set(SettingPath.ndr.endpoints, to: .endpoints([Endpoint(address: "platform.invalid", port: 443)]))
            try rig.agent.start(.ndr)
        }
        rig.platform.queueCommand(["id": "iso-8", "type": "network-isolation"])
        _ = try TestNetwork.within(network.inside) { rig.runtime.sync(.edr) }
        let refused = try #require(try rig.runtime.commandLog().first { $0.id == "iso-8" })
        #expect(refused.result == "failed" && refused.detail.contains("platform.invalid cannot be resolved"), "\(refused.detail)")
        try rig.agent.transaction(actor: "test") { try rig.agent.stop(.ndr) }
        let kept = try rig.runtime.isolationStatus()
        #expect(kept.enforced && kept.commandId == "iso-2", "\(kept.problem ?? "")")
        #expect(!TestNetwork.canConnect(from: network.inside, to: TestNetwork.outsideAddress, port: blocked.port))

        // A reboot (the table is gone, the record stays): a new process puts it back at start.
        try fw.lift()
        let restarted = try ConnectorRuntime(agent: try Agent(stateDirectory: rig.state.path), firewall: fw)
        #expect(restarted.enforceIsolation() != nil)
        #expect(try restarted.isolationStatus().enforced)
        // The same from the connectors' store alone, as a controller whose agent cannot be opened does it.
        try fw.lift()
        #expect(ConnectorRuntime.enforceRecordedIsolation(stateDirectory: rig.state.url, firewall: fw)?.contains("isolation put back") == true)
        #expect(try restarted.isolationStatus().enforced)
        #expect(ConnectorRuntime.enforceRecordedIsolation(stateDirectory: rig.state.url, firewall: fw) == nil, "nothing more to do")

        // A lift recorded but killed before the table went: the table goes at start.
        try Database(path: rig.state.url.appendingPathComponent(ConnectorRuntime.storeFileName).path)
            .query("UPDATE isolation SET active = 0, lifted_by = 'a lift killed halfway' WHERE id = 1")
        #expect(try fw.enforcement() != .absent)
        #expect(restarted.enforceIsolation() != nil)
        #expect(try fw.enforcement() == .absent)
        #expect(TestNetwork.canConnect(from: network.inside, to: TestNetwork.outsideAddress, port: blocked.port))
    }

    @Test("Isolation lifts by itself when its timer runs out, and the table goes with it")
    func isolationTimer() throws {
        let network = try TestNetwork()
        let rig = try Rig(network: network)
        rig.platform.queueCommand(["type": "network-isolation", "durationSeconds": 1])
        #expect(try TestNetwork.within(network.inside) { rig.runtime.sync(.edr) }.succeeded)
        #expect(try rig.runtime.isolationStatus().active)
        rig.clock.advance(0.9)
        #expect(try rig.runtime.isolationStatus().enforced, "not yet")
        rig.clock.advance(0.2)
        let status = try rig.runtime.isolationStatus()
        #expect(!status.active)
        #expect(status.liftedBy == "auto-off timer")
        #expect(try Firewall(networkNamespace: network.insidePath).enforcement() == .absent)
    }

    @Test("An isolation that cannot be enforced is reported failed, never applied; a malformed exclusion is rejected")
    func isolationRefused() throws {
        let rig = try Rig()  // its firewall's namespace does not exist: nftables cannot be reached
        rig.platform.queueCommand(["id": "iso-3", "type": "network-isolation"])
        rig.platform.queueCommand(["id": "iso-4", "type": "network-isolation", "exclusions": [["direction": "sideways"]]])
        rig.platform.queueCommand(["id": "iso-5", "type": "network-isolation", "exclusions": [["protocol": 1, "remotePorts": [["fromPort": 1, "toPort": 2]]]]])
        // An exclusion that limits nothing would allow every packet; a misspelt field would too.
        rig.platform.queueCommand(["id": "iso-6", "type": "network-isolation", "exclusions": [["direction": "both"]]])
        rig.platform.queueCommand(["id": "iso-7", "type": "network-isolation", "exclusions": [["remote_address": "10.0.0.1"]]])
        #expect(rig.runtime.sync(.edr).succeeded)
        let log = try rig.runtime.commandLog()
        #expect(log.first { $0.id == "iso-6" }?.detail.hasPrefix("exclusion 1 names no remote address, protocol or port, so it would allow every packet") == true)
        #expect(log.first { $0.id == "iso-7" }?.detail.hasPrefix("exclusion 1: 'remote_address' is not a field of an exclusion") == true)
        #expect(log.filter { ["iso-6", "iso-7"].contains($0.id) }.allSatisfy { $0.result == "rejected" })
        let failed = try #require(log.first { $0.id == "iso-3" })
        #expect(failed.result == "failed")
        #expect(failed.detail.contains("network isolation is not in force: cannot open the network namespace"), "\(failed.detail)")
        #expect(log.first { $0.id == "iso-4" }?.detail == "exclusion 1: direction 'sideways' is not inbound, outbound or both; nothing changed")
        #expect(log.first { $0.id == "iso-5" }?.detail.hasPrefix("exclusion 1: IP protocol 1 has no ports") == true)
        let status = try rig.runtime.isolationStatus()
        #expect(!status.active && !status.enforced)
        #expect(rig.runtime.sync(.edr).succeeded)
        let sync = rig.platform.received.filter { $0.path.hasSuffix("/sync") }.last?.decode(SyncRequest.self)
        #expect(sync?.isolation == false)
        #expect(sync?.commandResults.first { $0.id == "iso-3" }?.result == "failed")
    }

    @Test("Execution prevention replaces the whole list; run-process is refused unless allow-listed, and the refusal is reported")
    func preventionAndRunProcess() throws {
        let rig = try Rig()
        let sha = String(repeating: "a", count: 64)
        let md5 = String(repeating: "b", count: 32)
        rig.platform.queueCommand(["type": "execution-prevention", "rules": [["hash": .string(sha), "algorithm": "sha256"], ["hash": .string(md5), "algorithm": "md5"]]])
        rig.platform.queueCommand(["id": "run-1", "type": "run-process", "executable": "/bin/echo", "arguments": ["hello"]])
        #expect(rig.runtime.sync(.edr).succeeded)
        #expect(try rig.runtime.preventionRules() == [PreventionRule(hash: sha, algorithm: "sha256"), PreventionRule(hash: md5, algorithm: "md5")])
        #expect(try rig.runtime.commandLog().first { $0.id == "run-1" }?.result == "refused")

        rig.platform.queueCommand(["type": "execution-prevention", "rules": [["hash": .string(md5)]]])
        try rig.state.write(ConnectorRuntime.allowListFileName, "/bin/echo\n")
        rig.platform.queueCommand(["id": "run-2", "type": "run-process", "executable": "/bin/echo", "arguments": ["hello"]])
        #expect(rig.runtime.sync(.edr).succeeded)
        #expect(try rig.runtime.preventionRules() == [PreventionRule(hash: md5, algorithm: "md5")])
        let run = try #require(try rig.runtime.commandLog().first { $0.id == "run-2" })
        #expect(run.result == "applied")
        #expect(run.detail == "exit 0: hello\n")
        #expect(rig.runtime.sync(.edr).succeeded)
        let results = rig.platform.received.filter { $0.path.hasSuffix("/sync") }.flatMap { $0.decode(SyncRequest.self)?.commandResults ?? [] }
        #expect(results.first { $0.id == "run-1" }?.result == "refused")

        // A command whose fields do not have the documented types is rejected, and says so.
        rig.platform.queueCommand(["id": "iso-bad", "type": "network-isolation", "durationSeconds": "ten minutes"])
        #expect(rig.runtime.sync(.edr).succeeded)
        #expect(try !rig.runtime.isolationStatus().active)
        #expect(try rig.runtime.commandLog().first { $0.id == "iso-bad" }?.result == "rejected")
    }
}

@Suite("Connectors follow the settings", .serialized)
struct ConnectorLifecycleTests {
    @Test("A connector the reconciler stops keeps its queue; started again, it delivers everything in order")
    func stopStartKeepsEvents() throws {
        let rig = try Rig()
        try rig.set(SettingPath.edr.requestCountLimits, .bool(false))
        try rig.runtime.record(Rig.events(50))
        try rig.agent.stop(.edr)
        #expect(rig.runtime.tick().isEmpty, "a stopped connector does nothing")
        try rig.runtime.record(Rig.events(50, from: 50))
        #expect(try rig.runtime.status().first { $0.integration == .edr }?.queueDepth == 100)
        try rig.agent.start(.edr)
        let outcomes = rig.runtime.tick()
        #expect(outcomes.map(\.integration) == [.edr])
        #expect(outcomes.first?.succeeded == true)
        #expect(rig.platform.events().compactMap { $0.detail["n"] } == (0..<100).map { DetailValue($0) })
    }

    @Test("A changed address takes effect at the next sync (a restart with the new settings)")
    func settingChange() throws {
        let rig = try Rig()
        #expect(rig.runtime.sync(.edr).succeeded)
        let other = try PlatformSimulator(pki: rig.pki, requireClientCertificate: true)
        try rig.set(SettingPath.edr.port, .int(other.port))
        #expect(rig.runtime.sync(.edr).succeeded)
        #expect(other.received.count == 1)
    }
}

/// A clock tests set and move.
final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var current = Date()

    var now: Date { lock.withLock { current } }

    func advance(_ seconds: TimeInterval) {
        lock.withLock { current = current.addingTimeInterval(seconds) }
    }
}

@Suite("The platform's checks of the wire format")
struct PlatformWireChecks {
    @Test("A batch whose pid or port is a string is refused, naming the event and the field; numbers pass")
    func numbersAreNumbers() {
        let good = EventBatch(batchId: "b1", events: [WireEvent(seq: 1, type: "process-start", time: "2026-12-06T12:00:00Z",
                                                               detail: ["pid": 42, "uid": 0, "path": "/bin/true"])])
        #expect(PlatformSimulator.numberProblem(good) == nil)
        let bad = EventBatch(batchId: "b2", events: [WireEvent(seq: 7, type: "network-connection", time: "2026-12-06T12:00:00Z",
                                                              detail: ["pid": 42, "localPort": "34329"])])
        #expect(PlatformSimulator.numberProblem(bad) == #"event seq 7 (network-connection): detail.localPort must be a JSON number, not the string "34329" (docs/wire-format.md)"#)
    }
}
