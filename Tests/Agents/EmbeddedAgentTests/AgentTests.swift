import AgentInterface
import EmbeddedAgent
import Foundation
import IntegrationModel
import TetherTestSupport
import Testing

@Suite("The embedded agent's store and rules")
struct AgentTests {
    let state: TemporaryDirectory
    let pki: TestPKI
    let agent: Agent

    init() throws {
        state = try TemporaryDirectory("tether-state")
        pki = TestPKI.shared
        agent = try Agent(stateDirectory: state.path)
    }

    private var storePath: String { state.url.appendingPathComponent(Agent.storeFileName).path }
    private var password: String { (try? pki.text("edr-client.pass"))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "" }
    private let edrPort = SettingPath.edr.port

    @Test("A fresh agent has every default of the catalog, nothing running and no certificates")
    func defaults() throws {
        let current = try agent.state()
        #expect(current.running.isEmpty)
        #expect(current.serverCertificates.isEmpty)
        #expect(current.value(edrPort) == .int(443))
        #expect(current.value(SettingPath.edr.enabled) == .bool(false))
        #expect(current.value(SettingPath.edr.mode) == .string("kata"))
        #expect(current.value(SettingPath.ndr.endpoints) == .endpoints([Endpoint(address: "127.0.0.1", port: 8081)]))
        #expect(current.value(SettingPath.ndr.pingPeriod) == .int(450))
        #expect(current.value(SettingPath.sandbox.queueSize) == .int(1024))
        #expect(current.value(SettingPath.behaviorDetection) == .bool(true))
        #expect(FileManager.default.fileExists(atPath: storePath))
        let permissions = try FileManager.default.attributesOfItem(atPath: storePath)[.posixPermissions] as? Int
        #expect(permissions == 0o600)
    }

    @Test("Settings persist on disk and are checked against their range")
    func settings() throws {
        try agent.set(edrPort, to: .int(8443))
        #expect(try Agent(stateDirectory: state.path).state().value(edrPort) == .int(8443))
        let error = #expect(throws: AgentError.self) { try agent.set(edrPort, to: .int(70000)) }
        #expect(error?.description == "edr.port: 70000 is out of range: expected an integer from 1 to 65535")
    }

    @Test("The state read again is the store's now: a change through this agent, through another process's connection, or straight in SQLite is seen at the next read")
    func stateFollowsTheStore() throws {
        #expect(try agent.state().value(edrPort) == .int(443))
        #expect(try agent.state().value(edrPort) == .int(443))
        try agent.set(edrPort, to: .int(8443))
        #expect(try agent.state().value(edrPort) == .int(8443), "a change through this agent")
        try Agent(stateDirectory: state.path).set(edrPort, to: .int(9443))
        #expect(try agent.state().value(edrPort) == .int(9443), "a change through another connection")
        let sqlite = try runProgram("/usr/bin/env", ["python3", "-c", """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1]); db.execute("UPDATE settings SET value = '10443' WHERE path = 'edr.port'"); db.commit()
            """, storePath])
        #expect(sqlite.status == 0, "\(sqlite.output)")
        #expect(try agent.state().value(edrPort) == .int(10443), "a change by another program")
    }

    @Test("A task does not start without a pinned server certificate, and the error says so (rule 1)")
    func startNeedsServerCertificate() throws {
        let error = #expect(throws: AgentError.self) { try agent.start(.edr) }
        #expect(error?.description.contains("EDR (KATAEDR) cannot start: no server certificate is pinned") == true)
        #expect(try agent.state().running.isEmpty)

        try agent.addServerCertificate(.edr, bytes: Array(try pki.data("server.pem")), source: "server.pem")
        try agent.start(.edr)
        #expect(try agent.state().running == [.edr])
    }

    @Test("Mutual authentication needs a client certificate before the task starts (rule 2)")
    func mutualAuthentication() throws {
        try agent.addServerCertificate(.ndr, bytes: Array(try pki.data("server.pem")), source: "server.pem")
        try agent.set(SettingPath.ndr.mutualAuthentication, to: .bool(true))
        let error = #expect(throws: AgentError.self) { try agent.start(.ndr) }
        #expect(error?.description.contains("mutualAuthentication is on but no client certificate is installed") == true)

        try Data((password + "\n").utf8).write(to: agent.directory.appendingPathComponent("client.pass"))
        let certificate = try agent.addClientCertificate(.ndr, pkcs12: Array(try pki.data("edr-client.p12")), password: .file("client.pass"), source: "edr-client.p12")
        try agent.start(.ndr)
        #expect(try agent.state().clientCertificates[.ndr] == certificate)
        // The container stays inside the store for the connectors, with where its password is; the
        // password is checked on the way in and never kept.
        #expect(try agent.clientContainer(.ndr)?.password == .file("client.pass"))
        #expect(try agent.state().clientPasswords[.ndr] == .file("client.pass"))
        let store = try Data(contentsOf: agent.directory.appendingPathComponent(Agent.storeFileName))
        #expect(store.range(of: Data(password.utf8)) == nil)
        try Data("wrong\n".utf8).write(to: agent.directory.appendingPathComponent("wrong.pass"))
        let wrong = #expect(throws: AgentError.self) {
            try agent.addClientCertificate(.sandbox, pkcs12: Array(try pki.data("edr-client.p12")), password: .file("wrong.pass"), source: "edr-client.p12")
        }
        #expect(wrong?.description.contains("password") == true)
        // A password file the agent could not read again when it connects is refused now.
        let outside = #expect(throws: AgentError.self) {
            try agent.addClientCertificate(.sandbox, pkcs12: Array(try pki.data("edr-client.p12")), password: .file(pki.path("edr-client.pass")),
                                           source: "edr-client.p12")
        }
        #expect(outside?.description.contains("is outside the folders device files may come from") == true)
    }

    @Test("EDR telemetry needs behaviour detection while EDR runs (rule 3)")
    func telemetryNeedsBehaviourDetection() throws {
        try agent.addServerCertificate(.edr, bytes: Array(try pki.data("server.pem")), source: "server.pem")
        try agent.start(.edr)
        let error = #expect(throws: AgentError.self) { try agent.set(SettingPath.behaviorDetection, to: .bool(false)) }
        #expect(error?.description.contains("telemetry is on but behaviorDetection is off") == true)
        #expect(try agent.state().value(SettingPath.behaviorDetection) == .bool(true))
        // In the right order it works.
        try agent.transaction(actor: "test") {
            try agent.set(SettingPath.edr.telemetry, to: .bool(false))
            try agent.set(SettingPath.behaviorDetection, to: .bool(false))
        }
        #expect(try agent.state().running == [.edr])
    }

    @Test("Removing a certificate a running task needs stops the task first (rule 5)")
    func removingCertificateStopsTask() throws {
        try agent.addServerCertificate(.edr, bytes: Array(try pki.data("server.pem")), source: "server.pem")
        try agent.start(.edr)
        try agent.removeServerCertificate(.edr)
        let current = try agent.state()
        #expect(current.running.isEmpty)
        #expect(current.serverCertificates[.edr] == nil)
        let paths = try agent.changes(limit: 2).map(\.path)
        #expect(paths == ["edr.serverCertificate", "edr.enabled"])
    }

    @Test("Changing EDR mode while it runs restarts it (rule 6)")
    func modeRestarts() throws {
        try agent.addServerCertificate(.edr, bytes: Array(try pki.data("server.pem")), source: "server.pem")
        try agent.start(.edr)
        try agent.set(SettingPath.edr.mode, to: .string("expert-onprem"))
        let latest = try #require(try agent.changes(limit: 1).first)
        #expect(latest.path == "edr.enabled")
        #expect(latest.new.contains("restarted"))
    }

    @Test("A transaction that fails part-way leaves the store byte-for-byte as it was")
    func allOrNothing() throws {
        try agent.set(edrPort, to: .int(8443))
        let before = try fileDigest(storePath)
        #expect(throws: AgentError.self) {
            try agent.transaction(actor: "test") {
                try agent.set(edrPort, to: .int(9443))
                try agent.addServerCertificate(.ndr, bytes: Array(try pki.data("server.pem")), source: "server.pem")
                try agent.start(.edr) // refused: EDR has no server certificate
            }
        }
        #expect(try fileDigest(storePath) == before)
        let current = try agent.state()
        #expect(current.value(edrPort) == .int(8443))
        #expect(current.serverCertificates[.ndr] == nil)
    }

    @Test("Every change is recorded with who made it and when")
    func changeRecords() throws {
        try agent.transaction(actor: "tether agent set-settings") { try agent.set(edrPort, to: .int(8443)) }
        let record = try #require(try agent.state().lastChanges["edr.port"])
        #expect(record.actor == "tether agent set-settings")
        #expect(record.old == "443")
        #expect(record.new == "8443")
        #expect(abs(record.at.timeIntervalSinceNow) < 60)
    }
}

@Suite("Nested changes")
struct NestedChangeTests {
    @Test("A nested change that fails is undone even when the caller carries on")
    func savepoints() throws {
        let state = try TemporaryDirectory("tether-state")
        let pki = TestPKI.shared
        let agent = try Agent(stateDirectory: state.path)
        try agent.addServerCertificate(.edr, bytes: Array(try pki.data("server.pem")), source: "server.pem")
        try agent.start(.edr)
        let port = SettingPath.edr.port
        let behaviorDetection = SettingPath.behaviorDetection
        try agent.transaction(actor: "test") {
            try agent.set(port, to: .int(8443))
            // Refused after writing (telemetry needs behaviour detection while EDR runs): its write
            // must go, ours must stay.
            #expect(throws: AgentError.self) { try agent.set(behaviorDetection, to: .bool(false)) }
        }
        #expect(try agent.state().value(port) == .int(8443))
        #expect(try agent.state().value(behaviorDetection) == .bool(true))
    }
}
