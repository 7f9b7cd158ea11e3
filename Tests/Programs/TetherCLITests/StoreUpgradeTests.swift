import AgentInterface
import ConnectorCore
import EmbeddedAgent
import Foundation
import IntegrationModel
import PlatformSim
import Reconciler
import SQLiteDB
import TetherTestSupport
import Testing
import X509

/// The three stores exactly as the first release wrote them (before schema versions were kept).
private enum FirstRelease {
    static let agent = """
        CREATE TABLE IF NOT EXISTS settings (path TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS tasks (integration TEXT PRIMARY KEY, running INTEGER NOT NULL, changed_at REAL NOT NULL, starts INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE IF NOT EXISTS certificates (
            integration TEXT NOT NULL, role TEXT NOT NULL, der BLOB NOT NULL,
            container BLOB, secret BLOB, added_at REAL NOT NULL,
            PRIMARY KEY (integration, role));
        CREATE TABLE IF NOT EXISTS changes (id INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL,
            path TEXT NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, value TEXT NOT NULL, revision TEXT NOT NULL, at REAL NOT NULL);
        CREATE TABLE IF NOT EXISTS applied_revision (id INTEGER PRIMARY KEY CHECK (id = 1), revision TEXT NOT NULL, at REAL NOT NULL);
        """
    static let history = """
        CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL,
            revision TEXT NOT NULL, result TEXT NOT NULL, findings INTEGER NOT NULL, detail TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS noticed (key TEXT PRIMARY KEY, value TEXT NOT NULL, at REAL NOT NULL);
        """
    static let runtime = """
        PRAGMA journal_mode = WAL;
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, integration TEXT NOT NULL,
            type TEXT NOT NULL, at REAL NOT NULL, detail TEXT NOT NULL);
        CREATE INDEX IF NOT EXISTS events_by_integration ON events (integration, seq);
        CREATE TABLE IF NOT EXISTS counters (integration TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
            PRIMARY KEY (integration, name));
        CREATE TABLE IF NOT EXISTS throttle (integration TEXT NOT NULL, hour INTEGER NOT NULL, type TEXT NOT NULL,
            count INTEGER NOT NULL, PRIMARY KEY (integration, hour, type));
        CREATE TABLE IF NOT EXISTS status (integration TEXT PRIMARY KEY, server TEXT, last_success REAL, last_attempt REAL,
            last_error TEXT, error_kind TEXT, backoff_until REAL, backoff_step INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE IF NOT EXISTS commands (id TEXT PRIMARY KEY, type TEXT NOT NULL, payload TEXT NOT NULL,
            received_at REAL NOT NULL, result TEXT NOT NULL, detail TEXT NOT NULL, reported INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE IF NOT EXISTS isolation (id INTEGER PRIMARY KEY CHECK (id = 1), active INTEGER NOT NULL,
            since REAL, until REAL, exclusions TEXT NOT NULL, command_id TEXT, lifted_by TEXT);
        CREATE TABLE IF NOT EXISTS prevention (hash TEXT PRIMARY KEY, algorithm TEXT NOT NULL, command_id TEXT NOT NULL, at REAL NOT NULL);
        CREATE TABLE IF NOT EXISTS scans (scan_id TEXT PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL, content BLOB,
            state TEXT NOT NULL, verdict TEXT, submitted_at REAL NOT NULL, updated_at REAL NOT NULL);
        """
}

@Suite("Stores upgrade in place")
struct StoreUpgradeTests {
    @Test("A state directory written by the first release is migrated without losing settings, certificates, history or queued events")
    func firstReleaseState() throws {
        let pki = TestPKI.shared
        let state = try TemporaryDirectory("tether-old-state")
        let server = try Certificate(bytes: Array(try pki.data("server.pem")))
        let container = Array(try pki.data("edr-client.p12"))
        let password = try pki.text("edr-client.pass").trimmingCharacters(in: .newlines)
        let client = try ClientContainer(pkcs12: container, password: password).certificate
        let now = Date().timeIntervalSince1970

        let agentDB = try Database(path: state.url.appendingPathComponent("agent.db").path)
        try agentDB.execute(FirstRelease.agent)
        try agentDB.query("INSERT INTO settings (path, value) VALUES ('edr.port', '8443'), ('edr.address', '\"10.0.0.5\"')")
        try agentDB.query("INSERT INTO tasks (integration, running, changed_at, starts) VALUES ('edr', 1, ?, 1)", [.real(now)])
        try agentDB.query("INSERT INTO certificates (integration, role, der, added_at) VALUES ('edr', 'server', ?, ?)", [.blob(server.der), .real(now)])
        try agentDB.query("INSERT INTO certificates (integration, role, der, container, secret, added_at) VALUES ('edr', 'client', ?, ?, ?, ?)",
                          [.blob(client.der), .blob(container), .blob(Array(password.utf8)), .real(now)])
        try agentDB.query("INSERT INTO changes (at, actor, path, old, new) VALUES (?, 'tether apply 0123456789ab', 'edr.port', '443', '8443')", [.real(now)])
        try agentDB.query("INSERT INTO applied (key, value, revision, at) VALUES ('edr.port', '8443', '0123456789abcdef0123456789abcdef01234567', ?)", [.real(now)])
        try agentDB.query("INSERT INTO applied_revision (id, revision, at) VALUES (1, '0123456789abcdef0123456789abcdef01234567', ?)", [.real(now)])

        let historyDB = try Database(path: state.url.appendingPathComponent("history.db").path)
        try historyDB.execute(FirstRelease.history)
        for index in 0..<3 {
            try historyDB.query("INSERT INTO history (at, kind, revision, result, findings, detail) VALUES (?, 'apply', ?, 'applied', 1, 'edr.port')",
                                [.real(now + Double(index)), .text("0123456789abcdef0123456789abcdef01234567")])
        }

        let runtimeDB = try Database(path: state.url.appendingPathComponent("runtime.db").path)
        try runtimeDB.execute(FirstRelease.runtime)
        for index in 0..<5 {
            try runtimeDB.query("INSERT INTO events (integration, type, at, detail) VALUES ('edr', 'process-start', ?, ?)",
                                [.real(now), .text("{\"pid\":\"\(index)\"}")])
        }
        for database in [agentDB, historyDB, runtimeDB] { #expect(try database.userVersion() == 0) }

        let agent = try Agent(stateDirectory: state.path)
        let actual = try agent.state()
        #expect(actual.value(SettingPath.edr.port) == .int(8443))
        #expect(actual.value(SettingPath.edr.address) == .string("10.0.0.5"))
        #expect(actual.running == [.edr])
        #expect(actual.serverCertificates[.edr]?.sha256Fingerprint == server.sha256Fingerprint)
        #expect(actual.clientCertificates[.edr]?.sha256Fingerprint == client.sha256Fingerprint)
        #expect(try agent.clientContainer(.edr)?.pkcs12 == container)
        // The password the first release kept is gone from every file of the state directory
        // (overwritten, not only unlinked from the table); the container waits for its password file.
        #expect(actual.clientPasswords[.edr] == .forgotten)
        for file in try FileManager.default.contentsOfDirectory(atPath: state.path) {
            let bytes = try Data(contentsOf: state.url.appendingPathComponent(file))
            #expect(bytes.range(of: Data(password.utf8)) == nil, "\(file) still holds the client container's password")
        }
        let unopened = #expect(throws: ContainerPasswordError.self) { try agent.clientContainer(.edr)?.readPassword(stateDirectory: state.url) }
        #expect(unopened?.description.contains("apply the policy again") == true)
        #expect(try agent.appliedState().revision == "0123456789abcdef0123456789abcdef01234567")
        #expect(try agent.changes().first?.actor == "tether apply 0123456789ab")
        #expect(try History(stateDirectory: state.url).entries().count == 3)
        let runtime = try ConnectorRuntime(agent: agent)
        #expect(try runtime.status().first { $0.integration == .edr }?.queueDepth == 5)
        #expect(try agentDB.userVersion() == 2, "client container passwords are no longer kept")
        #expect(try historyDB.userVersion() == 2, "history gained the labels an apply used")
        #expect(try runtimeDB.userVersion() == 6, "the connectors gained the batch in flight, the sensors' status, isolation in the kernel, the quarantine, then the sensors' owner's start time")

        // And a store from a newer release is refused, not misread.
        try agentDB.execute("PRAGMA user_version = 99")
        let refused = #expect(throws: AgentError.self) { try Agent(stateDirectory: state.path) }
        #expect("\(refused.map { "\($0)" } ?? "")".contains("schema version 99, newer than this tether knows (2)"))
    }
}

@Suite("Restore points after a rotation")
struct RotationRestoreTests {
    @Test("A restore puts back the previous client container as it was, even when its password file now holds the next one's password")
    func restoreAfterRotation() throws {
        let state = try TemporaryDirectory("tether-restore")
        let pki = try PlatformPKI.create()
        let agent = try Agent(stateDirectory: state.path)
        try state.write("client.pass", "first\n")
        let first = try pki.issueClient(commonName: "endpoint-1", password: "first")
        try agent.transaction(actor: "test") { try agent.addClientCertificate(.edr, pkcs12: first, password: .file("client.pass"), source: "client.p12") }
        let point = try RestorePoint(agent: agent)

        // A rotation: the same paths, a new container and a new password.
        try state.write("client.pass", "second\n")
        let second = try pki.issueClient(commonName: "endpoint-2", password: "second")
        try agent.transaction(actor: "test") { try agent.addClientCertificate(.edr, pkcs12: second, password: .file("client.pass"), source: "client.p12") }

        try agent.transaction(actor: "test restore") { try point.restore(on: agent) }
        #expect(try agent.clientContainer(.edr)?.pkcs12 == first)
        #expect(try agent.state().clientCertificates[.edr]?.subject.contains("endpoint-1") == true)
    }
}
