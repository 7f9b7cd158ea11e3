import AgentInterface
import AgentRecords
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import IntegrationModel
import SQLiteDB
import X509
import Primitives

/// The vendor's agent, governed through its command line `kesl-control` (docs/architecture.md,
/// "The vendor's agent"). Its state is read from the vendor (each task's settings file, task
/// states, certificate queries: once per transaction); what Tether applied, what it changed and
/// copies of the certificates it installed are kept in `kesl.db` in the state directory.
///
/// The vendor's command line is not transactional, so this backend is: before each change it
/// journals (in `kesl.db`, committed) how to undo it; a failed transaction is undone in reverse,
/// and a transaction cut short by a crash is undone when the backend is next opened.
package final class KESLAgent: AgentBackend {
    package static let storeFileName = "kesl.db"
    package static let capabilities: AgentCapabilities = [.crashRecovery]
    package static let displayName = "the vendor's agent (--agent kesl, through kesl-control)"
    /// The actor of changes Tether finds but did not make: the vendor's command line keeps no author.
    package static let outsideActor = "outside Tether (kesl-control keeps no author)"

    package let directory: URL
    package private(set) var control: KESLControl
    let database: Database
    private var depth = 0
    private var actor = "tether"
    /// The agent's state as last read, kept up to date by this transaction's own changes.
    private var cached: AgentState?
    /// The last read outside a transaction, with the store's generation then: a transaction
    /// that starts soon after, with no other Tether change committed since, starts from it
    /// rather than reading the vendor again.
    private var lastRead: (state: AgentState, generation: String, at: Date)?
    /// What the vendor holds of each setting now (this transaction's imports included), for
    /// the undo file of the next import.
    private var vendorHolds: [SettingPath: SettingValue] = [:]
    /// The lock that serializes Tether's own transactions on this agent (kesl.lock).
    private var lock: Int32 = -1
    /// This transaction's undo steps, in the order the changes were made.
    private var undo: [(seq: Int64, step: UndoStep)] = []
    /// Settings set in this transaction and not yet imported, by integration, in order.
    private var pendingSettings: [Integration: [(path: SettingPath, value: SettingValue)]] = [:]
    private var pendingChanges: [(path: String, old: String, new: String)] = []
    private var pendingApplied: AppliedState?
    /// What undoing an interrupted transaction did when the backend was opened, for the caller to report.
    package private(set) var recoveryNotes: [String] = []

    /// Opens the backend's store in `stateDirectory`. A transaction a crash cut short is undone
    /// when the next one starts (under the lock, so never one still running).
    package init(stateDirectory: String, control: KESLControl) throws {
        directory = URL(fileURLWithPath: stateDirectory, isDirectory: true)
        self.control = control
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let path = directory.appending(path: Self.storeFileName).path
            database = try Database.openPrivate(path: path)
            try Self.migrator.migrate(database, store: path)
        } catch {
            throw AgentError.store("\(directory.appending(path: Self.storeFileName).path): \(error)")
        }
    }

    static let migrator = Migrator([
        Migration(1, "applied state, Tether's changes, installed certificates, the undo journal", sql: AgentRecords.tables + """
        CREATE TABLE observed (path TEXT PRIMARY KEY, value TEXT NOT NULL, at REAL NOT NULL);
        CREATE TABLE certificates (integration TEXT NOT NULL, role TEXT NOT NULL, der BLOB NOT NULL, container BLOB,
            password_source TEXT, PRIMARY KEY (integration, role));
        CREATE TABLE journal (seq INTEGER PRIMARY KEY, step TEXT NOT NULL);
        """),
    ])

    // MARK: - Reading

    /// The agent's state: each task's settings file, the task states and the certificate
    /// queries (13 calls), or the copy this transaction keeps.
    package func state() throws -> AgentState {
        if let cached, depth > 0 { return cached }
        let state = try readState()
        if depth > 0 {
            cached = state
            vendorHolds = state.settings
        } else {
            lastRead = (state, try generation(), Date())
        }
        return state
    }

    /// Reads the whole state from the vendor.
    private func readState() throws -> AgentState {
        var state = AgentState.initial
        state.fillDefaults()
        for integration in Integration.allCases {
            let task = control.tasks.task(integration)
            let values: [SettingPath: SettingValue]
            do {
                values = try VendorSettings.read(try control.settings(task), integration: integration, task: task)
            } catch let error as VendorSettings.ReadError {
                throw KESLError(command: "kesl-control --get-settings \(task)", message: error.description)
            }
            for (path, value) in values { state.settings[path] = value }
            if try control.isRunning(task) { state.running.insert(integration) }
            for role in [CertificateRole.server, .client] {
                guard let description = try control.query(integration, role: role) else { continue }
                let kept = try keptCertificate(integration, role)
                if let kept, description.describes(kept.certificate) {
                    if role == .server {
                        state.serverCertificates[integration] = kept.certificate
                    } else {
                        state.clientCertificates[integration] = kept.certificate
                        state.clientPasswords[integration] = kept.password
                        state.clientContainerDigests[integration] = kept.pkcs12.map(sha256Hex)
                    }
                } else if role == .server {
                    state.describedServerCertificates[integration] = description
                } else {
                    state.describedClientCertificates[integration] = description
                }
            }
        }
        state.settings[SettingPath.behaviorDetection] = .bool(try control.isRunning(control.tasks.behaviorDetection))
        state.unsupported = VendorSettings.unsupported
        state.lastChanges = try lastChanges(of: state)
        return state
    }

    /// Changes with every transaction Tether commits here.
    private func generation() throws -> String {
        try storeAccess {
            let row = try database.query("SELECT (SELECT coalesce(max(id), 0) FROM changes), (SELECT coalesce(max(at), 0) FROM applied_revision)").first
            return "\(row?[0].integer ?? 0)/\(row?[1].real ?? 0)"
        }
    }

    /// What Tether last applied here, and which revision.
    package func appliedState() throws -> AppliedState {
        if let pendingApplied { return pendingApplied }
        return try storeAccess { try AgentRecords(database).applied() }
    }

    package func recordApplied(_ values: [DesiredKey: String], revision: String?) throws {
        pendingApplied = AppliedState(values: values, revision: revision, at: Date())
        if depth == 0 { try commit() }
    }

    /// The client container Tether installed here, when it is the one the vendor holds.
    package func clientContainer(_ integration: Integration) throws -> InstalledContainer? {
        guard let kept = try keptCertificate(integration, .client), try state().clientCertificates[integration] == kept.certificate,
              let pkcs12 = kept.pkcs12 else { return nil }
        return InstalledContainer(pkcs12: pkcs12, password: kept.password)
    }

    /// Tether's recorded changes, newest first.
    package func changes(limit: Int = 100) throws -> [ChangeRecord] {
        try storeAccess { try AgentRecords(database).changes(limit: limit) }
    }

    // MARK: - Changing

    package func transaction<T>(actor: String, _ body: () throws -> T) throws -> T {
        let previousActor = self.actor
        self.actor = actor
        defer { self.actor = previousActor }
        return try atomically(body)
    }

    /// A transaction of its own (undone as a whole when it fails), or inside one a group of
    /// changes undone alone when it fails.
    package func atomically<T>(_ body: () throws -> T) throws -> T {
        let outermost = depth == 0
        if outermost {
            try takeLock()
            let recovered: Bool
            do {
                recovered = try recoverInterrupted()
            } catch {
                releaseLock()
                throw error
            }
            cached = nil
            if !recovered, let lastRead, lastRead.at.timeIntervalSinceNow > -30, lastRead.generation == (try? generation()) {
                cached = lastRead.state
                vendorHolds = lastRead.state.settings
            }
            self.lastRead = nil
        }
        // What a nested group that fails puts back: settings it set but never sent, the state
        // as this transaction saw it, its part of the change log.
        let mark = undo.count
        let savedSettings = pendingSettings
        let savedCache = cached
        let savedHolds = vendorHolds
        let changeMark = pendingChanges.count
        depth += 1
        let result: T
        do {
            result = try body()
            if outermost { try flushSettings() }
        } catch {
            depth -= 1
            throw fail(error, mark: mark, settings: savedSettings, cache: savedCache, holds: savedHolds, changes: changeMark)
        }
        depth -= 1
        guard outermost else { return result }
        do {
            try commit()
        } catch {
            // The vendor has the changes but kesl.db could not record them: undo them all.
            throw fail(error, mark: 0, settings: [:], cache: nil, holds: [:], changes: 0)
        }
        releaseLock()
        return result
    }

    /// Undoes a failed group's changes (newest first), puts back what it saw, and gives the
    /// error to throw: the failure as it was when everything was undone, else what stays changed.
    private func fail(_ error: Error, mark: Int, settings: [Integration: [(path: SettingPath, value: SettingValue)]], cache: AgentState?,
                      holds: [SettingPath: SettingValue], changes: Int) -> Error {
        let stillChanged = rollBack(to: mark)
        pendingSettings = settings
        pendingChanges.removeSubrange(min(changes, pendingChanges.count)...)
        cached = stillChanged.isEmpty ? cache : nil
        vendorHolds = holds
        if depth == 0 {
            pendingApplied = nil
            pendingChanges = []
            releaseLock()
        }
        if let undone = error as? UndoneChange {
            return UndoneChange(failure: undone.failure, stillChanged: undone.stillChanged + stillChanged)
        }
        return stillChanged.isEmpty ? error : UndoneChange(failure: "\(error)", stillChanged: stillChanged)
    }

    package func set(_ path: SettingPath, to value: SettingValue) throws {
        guard let field = SettingCatalog.field(path) else { throw AgentError.invalidSetting("unknown setting '\(path)'") }
        if field.isTaskState, let integration = path.integration {
            return try value == .bool(true) ? start(integration) : stop(integration)
        }
        if let problem = field.problem(with: value) { throw AgentError.invalidSetting("\(path): \(problem)") }
        if let reason = VendorSettings.unsupported[path] { throw AgentError.invalidSetting("\(path) cannot be set on the vendor's agent: \(reason)") }
        try atomically {
            let current = try state()
            let old = current.value(path)
            guard old != value else { return }
            if path == SettingPath.behaviorDetection {
                try switchTask(control.tasks.behaviorDetection, on: value == .bool(true))
            } else if let integration = path.integration {
                pendingSettings[integration, default: []].append((path, value))
            }
            cached?.settings[path] = value
            pendingChanges.append((path.description, old.description, value.description))
        }
    }

    package func start(_ integration: Integration) throws {
        try atomically {
            guard try !state().running.contains(integration) else { return }
            try switchTask(control.tasks.task(integration), on: true)
            cached?.running.insert(integration)
            pendingChanges.append(("\(integration.rawValue).enabled", "false", "true"))
        }
    }

    package func stop(_ integration: Integration) throws {
        try atomically {
            guard try state().running.contains(integration) else { return }
            try switchTask(control.tasks.task(integration), on: false)
            cached?.running.remove(integration)
            pendingChanges.append(("\(integration.rawValue).enabled", "true", "false"))
        }
    }

    @discardableResult
    package func addServerCertificate(_ integration: Integration, bytes: [UInt8], source: String) throws -> Certificate {
        let certificate = try Certificate.toPin(bytes, source: source)
        try atomically {
            let current = try state()
            if current.serverCertificates[integration]?.sha256Fingerprint == certificate.sha256Fingerprint { return }
            let undoStep: UndoStep
            if let old = current.serverCertificates[integration] {
                undoStep = .addServerCertificate(integration: integration, der: old.der)
            } else if let described = current.describedServerCertificates[integration] {
                undoStep = .cannotUndo("\(integration.displayName) keeps the new server certificate: the one it had (\(described.identity)) cannot be put back, because kesl-control does not give it out")
            } else {
                undoStep = .removeServerCertificate(integration: integration)
            }
            let group = VendorTaskNames.group(integration)
            try change(undoStep) {
                try withPrivateFile(Array(certificate.pem.utf8), name: "server.pem") { file in
                    _ = try control.run(["--add-\(group)-server-certificate", file])
                }
            }
            try keep(integration, .server, der: certificate.der, container: nil, password: nil)
            cached?.serverCertificates[integration] = certificate
            cached?.describedServerCertificates[integration] = nil
            pendingChanges.append(("\(integration.rawValue).serverCertificate",
                                   current.serverCertificates[integration]?.sha256Fingerprint ?? "none", certificate.sha256Fingerprint))
        }
        return certificate
    }

    package func removeServerCertificate(_ integration: Integration) throws {
        try atomically {
            let current = try state()
            guard current.hasServerCertificate(integration) else { return }
            // The vendor refuses to remove the certificate of a running task (rule 5): stop it first.
            if current.running.contains(integration) { try stop(integration) }
            let undoStep: UndoStep = current.serverCertificates[integration].map { .addServerCertificate(integration: integration, der: $0.der) }
                ?? .cannotUndo("\(integration.displayName)'s server certificate stays removed: kesl-control does not give it out, so it cannot be put back")
            try change(undoStep) { try control.run(["--remove-\(VendorTaskNames.group(integration))-server-certificate"]) }
            cached?.serverCertificates[integration] = nil
            cached?.describedServerCertificates[integration] = nil
            pendingChanges.append(("\(integration.rawValue).serverCertificate", current.serverCertificates[integration]?.sha256Fingerprint ?? "unknown", "none"))
        }
    }

    @discardableResult
    package func addClientCertificate(_ integration: Integration, pkcs12: [UInt8], password: ContainerPassword, source: String) throws -> Certificate {
        let (container, secret) = try InstalledContainer(pkcs12: pkcs12, password: password).open(stateDirectory: directory, source: source)
        try atomically {
            let current = try state()
            let old = current.clientCertificates[integration]
            if old?.sha256Fingerprint == container.certificate.sha256Fingerprint, current.clientPasswords[integration] == password,
               current.clientContainerDigests[integration] == sha256Hex(pkcs12) { return }
            let undoStep: UndoStep
            if let old, let kept = try keptCertificate(integration, .client), kept.certificate == old, let oldContainer = kept.pkcs12 {
                undoStep = .addClientCertificate(integration: integration, pkcs12: oldContainer, password: kept.password.storedForm)
            } else if let described = current.describedClientCertificates[integration] {
                undoStep = .cannotUndo("\(integration.displayName) keeps the new client certificate: the one it had (\(described.identity)) cannot be put back, because kesl-control does not give it out")
            } else {
                undoStep = .removeClientCertificate(integration: integration)
            }
            let group = VendorTaskNames.group(integration)
            try change(undoStep) {
                // The password goes on standard input, never on the command line.
                try withPrivateFile(pkcs12, name: "client.p12") { file in
                    _ = try control.run(["--add-\(group)-client-certificate", file], input: Array((secret + "\n").utf8))
                }
            }
            try keep(integration, .client, der: container.certificate.der, container: pkcs12, password: password)
            cached?.clientCertificates[integration] = container.certificate
            cached?.clientPasswords[integration] = password
            cached?.clientContainerDigests[integration] = sha256Hex(pkcs12)
            cached?.describedClientCertificates[integration] = nil
            pendingChanges.append(("\(integration.rawValue).clientCertificate", old?.sha256Fingerprint ?? "none", container.certificate.sha256Fingerprint))
        }
        return container.certificate
    }

    /// The vendor takes a container only with its password, so this one is installed as any
    /// other: its password file must still hold its password.
    package func restoreClientCertificate(_ integration: Integration, certificate: Certificate, pkcs12: [UInt8], password: ContainerPassword) throws {
        try addClientCertificate(integration, pkcs12: pkcs12, password: password, source: "the previous container")
    }

    package func removeClientCertificate(_ integration: Integration) throws {
        try atomically {
            let current = try state()
            guard current.hasClientCertificate(integration) else { return }
            if current.running.contains(integration) { try stop(integration) }
            var undoStep = UndoStep.cannotUndo("\(integration.displayName)'s client certificate stays removed: kesl-control does not give it out, so it cannot be put back")
            if let old = current.clientCertificates[integration], let kept = try keptCertificate(integration, .client), kept.certificate == old, let pkcs12 = kept.pkcs12 {
                undoStep = .addClientCertificate(integration: integration, pkcs12: pkcs12, password: kept.password.storedForm)
            }
            try change(undoStep) { try control.run(["--remove-\(VendorTaskNames.group(integration))-client-certificate"]) }
            cached?.clientCertificates[integration] = nil
            cached?.describedClientCertificates[integration] = nil
            pendingChanges.append(("\(integration.rawValue).clientCertificate", current.clientCertificates[integration]?.sha256Fingerprint ?? "unknown", "none"))
        }
    }

    // MARK: - Steps and their undoing

    /// How to undo one change, journalled before the change is made.
    enum UndoStep: Codable, CustomStringConvertible {
        case importSettings(task: String, file: String)
        case startTask(String)
        case stopTask(String)
        case addServerCertificate(integration: Integration, der: [UInt8])
        case removeServerCertificate(integration: Integration)
        case addClientCertificate(integration: Integration, pkcs12: [UInt8], password: String)
        case removeClientCertificate(integration: Integration)
        /// A change that cannot be undone, in words.
        case cannotUndo(String)

        var description: String {
            switch self {
            case .importSettings(let task, let file):
                return "\(task) settings back to " + file.split(separator: "\n").filter { !$0.isEmpty }.joined(separator: " ")
            case .startTask(let task): return "\(task) started again"
            case .stopTask(let task): return "\(task) stopped again"
            case .addServerCertificate(let integration, _): return "\(integration.displayName)'s previous server certificate added back"
            case .removeServerCertificate(let integration): return "\(integration.displayName)'s new server certificate removed"
            case .addClientCertificate(let integration, _, _): return "\(integration.displayName)'s previous client certificate added back"
            case .removeClientCertificate(let integration): return "\(integration.displayName)'s new client certificate removed"
            case .cannotUndo(let what): return what
            }
        }
    }

    /// Journals `undoStep`, then makes the change. A call that failed may still have made its
    /// change (a vendor command can change a setting and then exit non-zero, or be stopped at its
    /// timeout), so a failed step is undone with the others; each undo reads the vendor's state
    /// first and does only what is still needed (`perform`).
    private func change(_ undoStep: UndoStep, _ body: () throws -> Void) throws {
        let json = String(decoding: try JSONEncoder().encode(undoStep), as: UTF8.self)
        let seq = try storeAccess { try database.query("INSERT INTO journal (step) VALUES (?) RETURNING seq", [.text(json)]).first?[0].integer ?? 0 }
        undo.append((seq, undoStep))
        try body()
    }

    /// Undoes this transaction's changes after `mark`, newest first; returns what stays changed.
    private func rollBack(to mark: Int) -> [String] {
        var stillChanged: [String] = []
        for (seq, step) in undo[mark...].reversed() {
            if let failure = perform(step) { stillChanged.append(failure) }
            _ = try? database.query("DELETE FROM journal WHERE seq = ?", [.integer(seq)])
        }
        undo.removeSubrange(mark...)
        return stillChanged
    }

    /// Performs an undo step after reading back what it would undo: a step whose change did
    /// not happen (the vendor refused it) is left alone. Nil when the state is as before, else
    /// what stays changed and why.
    private func perform(_ step: UndoStep) -> String? {
        if alreadyAsBefore(step) { return nil }
        do {
            switch step {
            case .importSettings(let task, let file):
                try withPrivateFile(Array(file.utf8), name: "settings.ini") { path in
                    _ = try control.run(["--set-settings", task, "--file", path])
                }
            case .startTask(let task): try control.run(["--start-task", task])
            case .stopTask(let task): try control.run(["--stop-task", task])
            case .addServerCertificate(let integration, let der):
                let pem = try Certificate(bytes: der).pem
                try withPrivateFile(Array(pem.utf8), name: "server.pem") { path in
                    _ = try control.run(["--add-\(VendorTaskNames.group(integration))-server-certificate", path])
                }
                try keep(integration, .server, der: der, container: nil, password: nil)
            case .removeServerCertificate(let integration):
                try control.run(["--remove-\(VendorTaskNames.group(integration))-server-certificate"])
            case .addClientCertificate(let integration, let pkcs12, let stored):
                let password = ContainerPassword(storedForm: stored)
                let (container, secret) = try InstalledContainer(pkcs12: pkcs12, password: password)
                    .open(stateDirectory: directory, source: "the previous container")
                try withPrivateFile(pkcs12, name: "client.p12") { path in
                    _ = try control.run(["--add-\(VendorTaskNames.group(integration))-client-certificate", path], input: Array((secret + "\n").utf8))
                }
                try keep(integration, .client, der: container.certificate.der, container: pkcs12, password: password)
            case .removeClientCertificate(let integration):
                try control.run(["--remove-\(VendorTaskNames.group(integration))-client-certificate"])
            case .cannotUndo(let what):
                return what
            }
            return nil
        } catch {
            return "\(step) did not happen: \(error)"
        }
    }

    /// Whether the vendor, read back, already is as `step` would leave it (the change it undoes
    /// never happened). A read-back that fails says nothing: the undo is then made anyway.
    private func alreadyAsBefore(_ step: UndoStep) -> Bool {
        switch step {
        case .startTask(let task): return (try? control.isRunning(task)) == true
        case .stopTask(let task): return (try? control.isRunning(task)) == false
        case .removeServerCertificate(let integration): return (try? control.query(integration, role: .server)) == .some(nil)
        case .removeClientCertificate(let integration): return (try? control.query(integration, role: .client)) == .some(nil)
        default: return false
        }
    }

    /// Undoes a transaction that a crash cut short (its journal is left in `kesl.db`); whether there was one.
    private func recoverInterrupted() throws -> Bool {
        let rows = try storeAccess { try database.query("SELECT seq, step FROM journal ORDER BY seq DESC") }
        guard !rows.isEmpty else { return false }
        var stillChanged: [String] = []
        for row in rows {
            guard let seq = row[0].integer, let json = row[1].text else { continue }
            if let step = try? JSONDecoder().decode(UndoStep.self, from: Data(json.utf8)) {
                if let failure = perform(step) { stillChanged.append(failure) }
            }
            _ = try? database.query("DELETE FROM journal WHERE seq = ?", [.integer(seq)])
        }
        recoveryNotes.append(UndoneChange(failure: "an earlier change to the vendor's agent was cut short (\(rows.count) step\(rows.count == 1 ? "" : "s"))",
                                      stillChanged: stillChanged).description)
        return true
    }

    /// Switches a vendor task on or off, with its undo journalled.
    private func switchTask(_ task: String, on: Bool) throws {
        try flushSettings()
        try change(on ? .stopTask(task) : .startTask(task)) {
            try control.run([on ? "--start-task" : "--stop-task", task])
        }
    }

    /// Imports the settings set so far in this transaction, one file per task, each journalled
    /// with a file of the values it replaces.
    private func flushSettings() throws {
        let pending = pendingSettings
        pendingSettings = [:]
        for integration in Integration.allCases {
            guard let values = pending[integration], !values.isEmpty else { continue }
            var latest: [SettingPath: SettingValue] = [:]
            var order: [SettingPath] = []
            for (path, value) in values {
                if latest[path] == nil { order.append(path) }
                latest[path] = value
            }
            let file = VendorSettings.file(setting: order.map { ($0, latest[$0]!) })
            let previous = VendorSettings.file(setting: order.map { ($0, vendorHolds[$0] ?? SettingCatalog.field($0)?.defaultValue ?? .string("")) })
            let task = control.tasks.task(integration)
            try change(.importSettings(task: task, file: previous.rendered())) {
                try withPrivateFile(Array(file.rendered().utf8), name: "settings.ini") { path in
                    _ = try control.run(["--set-settings", task, "--file", path])
                }
            }
            for path in order { vendorHolds[path] = latest[path] }
        }
    }

    /// Takes kesl.lock: Tether's transactions on this agent run one at a time (the vendor's
    /// command line has no lock of its own).
    private func takeLock() throws {
        let path = directory.appending(path: "kesl.lock").path
        lock = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0, flock(lock, LOCK_EX) == 0 else {
            if lock >= 0 { close(lock) }
            lock = -1
            throw AgentError.store("cannot lock \(path): \(String(cString: strerror(errno)))")
        }
        // Each vendor command holds the lock too, so one that outlives a killed tether keeps the
        // next transaction (and its undoing of this one) waiting until it is done.
        control.heldOpen = lock
    }

    private func releaseLock() {
        control.heldOpen = nil
        guard lock >= 0 else { return }
        flock(lock, LOCK_UN)
        close(lock)
        lock = -1
    }

    /// Writes what the transaction did to `kesl.db`: Tether's changes, the applied state, and
    /// an empty journal.
    private func commit() throws {
        let changes = pendingChanges
        let applied = pendingApplied
        try storeAccess {
            try database.transaction {
                let records = AgentRecords(database)
                for change in changes {
                    try records.record(actor: actor, path: change.path, old: change.old, new: change.new)
                    try database.query("DELETE FROM observed WHERE path = ?", [.text(change.path)])
                }
                if let applied { try records.replaceApplied(applied.values, revision: applied.revision) }
                try database.query("DELETE FROM journal")
            }
        }
        pendingChanges = []
        pendingApplied = nil
        undo = []
        cached = nil
    }

    // MARK: - Internals

    /// A certificate Tether installed here (with the container and its password's source for a client one).
    private func keptCertificate(_ integration: Integration, _ role: CertificateRole) throws
        -> (certificate: Certificate, pkcs12: [UInt8]?, password: ContainerPassword)? {
        let row = try storeAccess {
            try database.query("SELECT der, container, password_source FROM certificates WHERE integration = ? AND role = ?",
                               [.text(integration.rawValue), .text(role.rawValue)]).first
        }
        guard let row, let der = row[0].blob, let certificate = try? Certificate(bytes: der) else { return nil }
        return (certificate, row[1].blob, ContainerPassword(storedForm: row[2].text))
    }

    private func keep(_ integration: Integration, _ role: CertificateRole, der: [UInt8], container: [UInt8]?, password: ContainerPassword?) throws {
        try storeAccess {
            try database.query("INSERT OR REPLACE INTO certificates (integration, role, der, container, password_source) VALUES (?, ?, ?, ?, ?)",
                               [.text(integration.rawValue), .text(role.rawValue), .blob(der), container.map { .blob($0) } ?? .null,
                                password.map { .text($0.storedForm) } ?? .null])
        }
    }

    /// The last change of each setting and task state: Tether's own from `kesl.db`, or, where
    /// the agent no longer holds what Tether last set, a change from outside Tether, dated when
    /// Tether first saw it.
    private func lastChanges(of state: AgentState) throws -> [String: ChangeRecord] {
        var records: [String: ChangeRecord] = [:]
        try storeAccess {
            records = try AgentRecords(database).latestChanges()
            for (path, record) in records {
                guard let settingPath = SettingCatalog.path(named: path) else { continue }
                let now = state.value(settingPath).description
                guard now != record.new else { continue }
                let seen = try database.query("SELECT value, at FROM observed WHERE path = ?", [.text(path)]).first
                var at = Date()
                if let seen, seen[0].text == now, let first = seen[1].real {
                    at = Date(timeIntervalSince1970: first)
                } else {
                    try database.query("INSERT OR REPLACE INTO observed (path, value, at) VALUES (?, ?, ?)", [.text(path), .text(now), .real(at.timeIntervalSince1970)])
                }
                records[path] = ChangeRecord(at: at, actor: Self.outsideActor, path: path, old: record.new, new: now)
            }
        }
        return records
    }

    /// Writes `bytes` to a file only this user can read, in a private folder of the state
    /// directory, for the length of `body`.
    private func withPrivateFile(_ bytes: [UInt8], name: String, _ body: (String) throws -> Void) throws {
        let folder = directory.appending(path: ".kesl-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appending(path: name)
        guard FileManager.default.createFile(atPath: file.path, contents: Data(bytes), attributes: [.posixPermissions: 0o600]) else {
            throw AgentError.store("cannot write a file in \(folder.path)")
        }
        try body(file.path)
    }

    @discardableResult
    private func storeAccess<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as SQLiteError {
            throw AgentError.store("\(Self.storeFileName): \(error.description)")
        }
    }
}
