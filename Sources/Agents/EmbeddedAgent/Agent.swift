import AgentInterface
import AgentRecords
import FoundationEssentials
import IntegrationModel
import SQLiteDB
import X509
import Primitives

/// The embedded endpoint agent (settings side): an SQLite store in the state directory holding
/// each integration's settings, whether its task runs, and its certificates. It enforces
/// the agent's rules itself (README.md, "Rules the agent enforces"): a change that would leave a running task with an unmet
/// precondition is refused, and nothing of it is kept.
package final class Agent: AgentBackend, @unchecked Sendable {
    /// The state directory.
    package let directory: URL
    let database: Database
    /// Held by the thread inside a transaction (or a read), so the threads of `tether run` that
    /// share this agent never see each other's nesting depth or half-made changes.
    private let lock = Lock(recursive: true)
    /// Parsed certificates by their DER bytes (`parsedCertificate`), guarded by `lock`.
    private var certificates: [[UInt8]: Certificate] = [:]
    private var transactionDepth = 0
    private var actor = "tether agent"
    private var attached = Set<String>()

    /// The store's file name inside the state directory.
    package static let storeFileName = "agent.db"
    package static let capabilities: AgentCapabilities = [.connectors, .historyInAgentCommit]
    package static let displayName = "the embedded agent (--agent embedded)"

    /// Opens the agent's store in `stateDirectory`, creating both when missing (owner-only permissions:
    /// the store holds client containers).
    package init(stateDirectory: String) throws {
        directory = URL(fileURLWithPath: stateDirectory, isDirectory: true)
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw AgentError.store("cannot create the state directory \(stateDirectory): \(reason(of: error))")
        }
        let path = directory.appending(path: Agent.storeFileName).path
        do {
            // A rollback journal, always: an apply commits this file and the other (agent.db, history.db)
            // in one transaction, which SQLite makes atomic only without WAL. What is deleted is
            // overwritten, not left in free pages (docs/architecture.md, "Secrets").
            database = try Database.openPrivate(path: path)
            try Agent.migrator.migrate(database, store: path)
        } catch {
            throw AgentError.store("\(path): \(error)")
        }
    }

    /// The store's schema, step by step. Version 1 is the schema of the first release: on a
    /// store made before versions were kept it finds every table in place and changes nothing.
    static let migrator = Migrator([
        Migration(1, "settings, tasks, certificates, changes, applied state", sql: """
        CREATE TABLE IF NOT EXISTS settings (path TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS tasks (integration TEXT PRIMARY KEY, running INTEGER NOT NULL, changed_at REAL NOT NULL, starts INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE IF NOT EXISTS certificates (
            integration TEXT NOT NULL, role TEXT NOT NULL, der BLOB NOT NULL,
            container BLOB, secret BLOB, added_at REAL NOT NULL,
            PRIMARY KEY (integration, role));
        """ + AgentRecords.tables),
        // Earlier releases kept each client container's password here. It is erased (secure_delete
        // overwrites it), and a container that had one is marked 'forgotten' until it is installed
        // again with its password file.
        Migration(2, "client container passwords no longer kept: where each is read from instead", sql: """
        ALTER TABLE certificates ADD COLUMN password_source TEXT;
        UPDATE certificates SET password_source = CASE WHEN secret IS NULL OR length(secret) = 0 THEN 'none' ELSE 'forgotten' END
            WHERE role = 'client';
        UPDATE certificates SET secret = NULL;
        """),
    ])

    // MARK: - Reading

    /// The state last read, and the store's version then: a controller's cycle that finds the
    /// store unchanged does not read, decode and parse it again.
    private let lastState = Lock()
    private var lastRead: (version: Database.Version, state: AgentState)?

    /// Reads the whole state.
    package func state() throws -> AgentState {
        try storeAccess {
            // Read inside a transaction of the caller's, the state may yet be rolled back (and a
            // rollback takes nothing off this connection's count of changes): not kept.
            let keep = !database.inTransaction
            return try database.read {
                let version = try database.version()
                if keep, let last = lastState.withLock({ lastRead }), last.version == version { return last.state }
                let state = try readState()
                if keep { lastState.withLock { lastRead = (version, state) } }
                return state
            }
        }
    }

    private func readState() throws -> AgentState {
        var state = AgentState.initial
        let decoder = JSONDecoder()
        for row in try database.query("SELECT path, value FROM settings") {
            guard let pathText = row[0].text, let json = row[1].text, let path = SettingCatalog.path(named: pathText),
                  let value = try? decoder.decode(SettingValue.self, from: Data(json.utf8)) else { continue }
            state.settings[path] = value
        }
        state.fillDefaults()
        for row in try database.query("SELECT integration FROM tasks WHERE running = 1") {
            if let name = row[0].text, let integration = Integration(rawValue: name) { state.running.insert(integration) }
        }
        for row in try database.query("SELECT integration, role, der, password_source, container FROM certificates") {
            guard let name = row[0].text, let integration = Integration(rawValue: name), let der = row[2].blob,
                  let certificate = parsedCertificate(der) else { continue }
            if row[1].text == "server" {
                state.serverCertificates[integration] = certificate
            } else {
                state.clientCertificates[integration] = certificate
                state.clientPasswords[integration] = ContainerPassword(storedForm: row[3].text)
                state.clientContainerDigests[integration] = row[4].blob.map(sha256Hex)
            }
        }
        state.lastChanges = try AgentRecords(database).latestChanges()
        return state
    }

    /// One setting's value (its default when never set), without reading the whole state.
    package func value(_ path: SettingPath) throws -> SettingValue {
        if path.isTaskState, let integration = path.integration {
            return .bool(try state().running.contains(integration))
        }
        return try storeAccess {
            if let json = try database.query("SELECT value FROM settings WHERE path = ?", [.text(path.description)]).first?[0].text,
               let value = try? JSONDecoder().decode(SettingValue.self, from: Data(json.utf8)) {
                return value
            }
            return SettingCatalog.field(path)?.defaultValue ?? .string("")
        }
    }

    /// The client container of an integration and where its password is read from, for the
    /// connectors' mutual TLS.
    package func clientContainer(_ integration: Integration) throws -> InstalledContainer? {
        try storeAccess {
            let rows = try database.query("SELECT container, password_source FROM certificates WHERE integration = ? AND role = 'client'",
                                          [.text(integration.rawValue)])
            guard let row = rows.first, let container = row[0].blob else { return nil }
            return InstalledContainer(pkcs12: container, password: ContainerPassword(storedForm: row[1].text))
        }
    }

    // MARK: - Changing, all or nothing

    /// Runs `body` as one transaction in the name of `actor`: every change in it is kept, or
    /// (when it throws) none is and the store is exactly as before.
    @discardableResult
    package func transaction<T>(actor: String, _ body: () throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        let previousActor = self.actor
        self.actor = actor
        defer { self.actor = previousActor }
        return try atomically(body)
    }

    /// The same, handing `body` the store's connection: tables of a database attached with
    /// `attach(_:as:)` are written in the same transaction (one commit across both files).
    @discardableResult
    package func transaction<T>(actor: String, _ body: (Database) throws -> T) throws -> T {
        try transaction(actor: actor) { try body(database) }
    }

    /// The store's connection with `file` attached as `schema`: how History shares it, so that the
    /// process holds one connection to each file and an apply commits both in one transaction.
    package func connection(attaching file: URL, as schema: String) throws -> Database {
        try attach(file, as: schema)
        return database
    }

    /// Attaches another SQLite file to the store's connection under `schema` (once), so that
    /// one transaction covers both. Both files use a rollback journal, so SQLite commits them
    /// atomically together (a super-journal).
    package func attach(_ file: URL, as schema: String) throws {
        lock.lock()
        defer { lock.unlock() }
        guard !attached.contains(schema) else { return }
        _ = try storeAccess { try database.query("ATTACH DATABASE ? AS \(schema)", [.text(file.path)]) }
        attached.insert(schema)
    }

    /// Runs `body` in a transaction, or in a savepoint inside one, so that a nested change that
    /// fails is undone even when its caller carries on.
    package func atomically<T>(_ body: () throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        transactionDepth += 1
        defer { transactionDepth -= 1 }
        guard transactionDepth > 1 else { return try storeAccess { try database.transaction(body) } }
        let savepoint = "nested_\(transactionDepth)"
        try storeAccess { try database.execute("SAVEPOINT \(savepoint)") }
        do {
            let result = try body()
            try storeAccess { try database.execute("RELEASE \(savepoint)") }
            return result
        } catch {
            try? database.execute("ROLLBACK TO \(savepoint); RELEASE \(savepoint);")
            throw error
        }
    }

    /// Sets one setting. A running task must still meet its preconditions afterwards; changing
    /// EDR `mode` restarts the EDR task (rule 6).
    package func set(_ path: SettingPath, to value: SettingValue) throws {
        guard let field = SettingCatalog.field(path) else {
            throw AgentError.invalidSetting("unknown setting '\(path)'")
        }
        if field.isTaskState, let integration = path.integration {
            return try (value == .bool(true)) ? start(integration) : stop(integration)
        }
        if let problem = field.problem(with: value) {
            throw AgentError.invalidSetting("\(path): \(problem)")
        }
        try atomically {
            let before = try state()
            let old = before.value(path)
            guard old != value else { return }
            try database.query("INSERT INTO settings (path, value) VALUES (?, ?) ON CONFLICT(path) DO UPDATE SET value = excluded.value",
                               [.text(path.description), .text(Agent.json(value))])
            try record(path.description, old: old.description, new: value.description)
            try requireRunningTasksValid(action: "take \(path) = \(value)")
            if path == SettingPath.edr.mode, before.running.contains(.edr) {
                try database.query("UPDATE tasks SET changed_at = ?, starts = starts + 1 WHERE integration = 'edr'", [.real(Date().timeIntervalSince1970)])
                try record("edr.enabled", old: "true", new: "true (restarted: mode changed)")
            }
        }
    }

    /// Starts an integration's task; refused with the unmet preconditions named.
    package func start(_ integration: Integration) throws {
        try atomically {
            let current = try state()
            if current.running.contains(integration) { return }
            let unmet = current.unmetPreconditions(integration)
            guard unmet.isEmpty else { throw AgentError.preconditionFailed(integration, action: "start", reasons: unmet) }
            try setRunning(integration, true)
        }
    }

    /// Stops an integration's task.
    package func stop(_ integration: Integration) throws {
        try atomically {
            if try state().running.contains(integration) { try setRunning(integration, false) }
        }
    }

    /// Pins `bytes` (a PEM or DER certificate) as the integration's server certificate, replacing any other.
    @discardableResult
    package func addServerCertificate(_ integration: Integration, bytes: [UInt8], source: String) throws -> Certificate {
        let certificate = try Certificate.toPin(bytes, source: source)
        try atomically {
            let old = try state().serverCertificates[integration]
            guard old?.sha256Fingerprint != certificate.sha256Fingerprint else { return }
            try database.query("INSERT OR REPLACE INTO certificates (integration, role, der, added_at) VALUES (?, 'server', ?, ?)",
                               [.text(integration.rawValue), .blob(certificate.der), .real(Date().timeIntervalSince1970)])
            try record("\(integration.rawValue).serverCertificate", old: old?.sha256Fingerprint ?? "none", new: certificate.sha256Fingerprint)
        }
        return certificate
    }

    /// Removes the pinned server certificate; a running task needs it, so it is stopped first (rule 5).
    package func removeServerCertificate(_ integration: Integration) throws {
        try atomically {
            let current = try state()
            guard let old = current.serverCertificates[integration] else { return }
            if current.running.contains(integration) { try setRunning(integration, false) }
            try database.query("DELETE FROM certificates WHERE integration = ? AND role = 'server'", [.text(integration.rawValue)])
            try record("\(integration.rawValue).serverCertificate", old: old.sha256Fingerprint, new: "none")
        }
    }

    /// Installs a PKCS#12 client container after opening it with its password (read from its
    /// file now) and checking that its key matches its certificate. The container stays inside
    /// the store, and where its password comes from; the password itself is never kept.
    @discardableResult
    package func addClientCertificate(_ integration: Integration, pkcs12: [UInt8], password: ContainerPassword, source: String) throws -> Certificate {
        let container = try InstalledContainer(pkcs12: pkcs12, password: password).open(stateDirectory: directory, source: source).container
        try atomically {
            let current = try state()
            let old = current.clientCertificates[integration]
            let oldPassword = current.clientPasswords[integration]
            guard old?.sha256Fingerprint != container.certificate.sha256Fingerprint || oldPassword != password
                    || current.clientContainerDigests[integration] != sha256Hex(pkcs12) else { return }
            try database.query("INSERT OR REPLACE INTO certificates (integration, role, der, container, password_source, added_at) VALUES (?, 'client', ?, ?, ?, ?)",
                               [.text(integration.rawValue), .blob(container.certificate.der), .blob(pkcs12),
                                .text(password.storedForm), .real(Date().timeIntervalSince1970)])
            let new = container.certificate.sha256Fingerprint
            if old?.sha256Fingerprint == new, let oldPassword {
                try record("\(integration.rawValue).clientCertificate", old: "\(new) (\(oldPassword))", new: "\(new) (\(password))")
            } else {
                try record("\(integration.rawValue).clientCertificate", old: old?.sha256Fingerprint ?? "none", new: new)
            }
        }
        return container.certificate
    }

    /// Puts back a container this agent held before, as it was (not opened again).
    package func restoreClientCertificate(_ integration: Integration, certificate: Certificate, pkcs12: [UInt8], password: ContainerPassword) throws {
        try atomically {
            let current = try state()
            try database.query("INSERT OR REPLACE INTO certificates (integration, role, der, container, password_source, added_at) VALUES (?, 'client', ?, ?, ?, ?)",
                               [.text(integration.rawValue), .blob(certificate.der), .blob(pkcs12), .text(password.storedForm),
                                .real(Date().timeIntervalSince1970)])
            try record("\(integration.rawValue).clientCertificate", old: current.clientCertificates[integration]?.sha256Fingerprint ?? "none",
                       new: certificate.sha256Fingerprint)
        }
    }

    /// Removes the client certificate; a running task that uses mutual authentication is stopped first (rule 5).
    package func removeClientCertificate(_ integration: Integration) throws {
        try atomically {
            let current = try state()
            guard let old = current.clientCertificates[integration] else { return }
            if current.running.contains(integration),
               current.value(SettingPath.common(integration).mutualAuthentication) == .bool(true) {
                try setRunning(integration, false)
            }
            try database.query("DELETE FROM certificates WHERE integration = ? AND role = 'client'", [.text(integration.rawValue)])
            try record("\(integration.rawValue).clientCertificate", old: old.sha256Fingerprint, new: "none")
        }
    }

    /// The recorded changes, newest first.
    package func changes(limit: Int = 100) throws -> [ChangeRecord] {
        try storeAccess { try AgentRecords(database).changes(limit: limit) }
    }

    // MARK: - Internals

    private func setRunning(_ integration: Integration, _ running: Bool) throws {
        try database.query("""
            INSERT INTO tasks (integration, running, changed_at, starts) VALUES (?, ?, ?, ?)
            ON CONFLICT(integration) DO UPDATE SET running = excluded.running, changed_at = excluded.changed_at,
                starts = starts + excluded.starts
            """, [.text(integration.rawValue), .integer(running ? 1 : 0), .real(Date().timeIntervalSince1970), .integer(running ? 1 : 0)])
        try record("\(integration.rawValue).enabled", old: String(!running), new: String(running))
    }

    private func requireRunningTasksValid(action: String) throws {
        let current = try state()
        for integration in current.running.sorted() {
            let unmet = current.unmetPreconditions(integration)
            if !unmet.isEmpty { throw AgentError.preconditionFailed(integration, action: action, reasons: unmet) }
        }
    }

    private func record(_ path: String, old: String, new: String) throws {
        try AgentRecords(database).record(actor: actor, path: path, old: old, new: new)
    }

    /// A stored certificate, parsed once per content for as long as this agent is open (every
    /// cycle reads the state; parsing DER is OpenSSL's work, not the store's).
    private func parsedCertificate(_ der: [UInt8]) -> Certificate? {
        if let known = certificates[der] { return known }
        guard let certificate = try? Certificate(bytes: der) else { return nil }
        if certificates.count >= 16 { certificates.removeAll() }
        certificates[der] = certificate
        return certificate
    }

    func storeAccess<T>(_ body: () throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        do {
            return try body()
        } catch let error as SQLiteError {
            throw AgentError.store(error.description)
        }
    }

    static func json(_ value: SettingValue) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self)
    }
}
