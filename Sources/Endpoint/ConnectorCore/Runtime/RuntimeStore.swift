import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import IntegrationModel
import Sensors
import SQLiteDB
import WireFormat

/// A telemetry event from the endpoint's sensors (or a Sandbox verdict).
package struct TelemetryEvent: Sendable, Equatable {
    package let type: EventType
    package let at: Date
    package let detail: [String: DetailValue]

    package init(type: EventType, at: Date = Date(), detail: [String: DetailValue] = [:]) {
        self.type = type
        self.at = at
        self.detail = detail
    }

    /// A sensor's event as it is queued.
    package init(_ event: SensorEvent) {
        self.init(type: event.type, at: event.at, detail: event.detail)
    }
}

/// What became of telemetry events, counted by type (`tether agent status`, the metrics).
package enum TelemetryOutcome: String, CaseIterable, Sendable {
    /// Reported by a sensor.
    case seen
    /// Dropped because the sensors' in-memory buffer was full.
    case bufferDropped = "buffer-dropped"
    /// Written to an integration's queue.
    case queued
    /// Not queued: the integration's telemetry was off by the rules.
    case suppressed
    /// Not queued: the on-disk queue was at its bound.
    case dropped
    /// Dropped by the hourly count limits.
    case throttled
    /// Acknowledged by the platform.
    case sent
}

/// A queued event with its place in the queue.
struct QueuedEvent {
    let seq: Int64
    let event: TelemetryEvent
}

/// A telemetry batch from the moment it is formed until the platform acknowledges it: a resend
/// after a failure, a crash or a restart carries the same id and the same events, so the
/// platform can tell it from new events (docs/wire-format.md).
struct PendingBatch: Equatable {
    let batchId: String
    /// The queued events it sends, in order.
    let seqs: [Int64]
    /// The last queued event it accounts for (sent or throttled); removed through it on acknowledgement.
    let throughSeq: Int64
    /// The clock hour its events count against, per type.
    let hour: Int
    let counts: [String: Int]
    let throttled: Int
}

/// How a connector is doing, as `tether agent status` and the drift report's health section show it.
package struct ConnectorStatus: Sendable {
    package let integration: Integration
    package let running: Bool
    /// `stopped`, `connected`, `failing` or `not yet connected`.
    package let state: String
    /// The server last tried (`127.0.0.1:443`).
    package let server: String?
    package let lastSuccess: Date?
    package let lastAttempt: Date?
    package let lastError: String?
    /// `server-certificate-rejected`, `client-certificate-missing`, `client-certificate-rejected`,
    /// `unreachable`, `timed-out`, `proxy-refused`, `not-tls`, `tls-version-mismatch`,
    /// `connection-reset`, `http-error`, `other`.
    package let errorKind: String?
    package let queueDepth: Int
    package let sent: Int
    package let dropped: Int
    package let throttled: Int
    package let backoffUntil: Date?
}

/// The connectors' durable state (`runtime.db` beside the agent's store): the telemetry queue,
/// counters, connection status, response commands, isolation, prevention rules and the Sandbox
/// queue. Apart from `agent.db`, so connector traffic never touches settings.
final class RuntimeStore {
    let database: Database
    let queueLimit: Int

    /// The connectors' schema, step by step (version 1: the first release's, adopted as it is).
    static let migrator = Migrator([
        Migration(1, "telemetry queue, counters, status, commands, isolation, prevention, scans", sql: """
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
            """),
        Migration(2, "the telemetry batch being sent, kept until the platform acknowledges it", sql: """
            CREATE TABLE pending_batches (integration TEXT PRIMARY KEY, batch_id TEXT NOT NULL, seqs TEXT NOT NULL,
                through_seq INTEGER NOT NULL, hour INTEGER NOT NULL, counts TEXT NOT NULL, throttled INTEGER NOT NULL);
            """),
        Migration(3, "the sensors: which run, from which source, for which tether run", sql: """
            CREATE TABLE sensors (sensor TEXT PRIMARY KEY, source TEXT NOT NULL, running INTEGER NOT NULL, note TEXT,
                pid INTEGER NOT NULL, since REAL NOT NULL);
            """),
        Migration(4, "network isolation in the kernel: what the table allows, its listing as read back, re-assertions", sql: """
            ALTER TABLE isolation ADD COLUMN allowed TEXT;
            ALTER TABLE isolation ADD COLUMN listing TEXT;
            ALTER TABLE isolation ADD COLUMN table_written INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE isolation ADD COLUMN problem TEXT;
            ALTER TABLE isolation ADD COLUMN reasserted INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE isolation ADD COLUMN reasserted_at REAL;
            ALTER TABLE isolation ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
            """),
        Migration(5, "files the platform put in quarantine: where each was, its owner, mode and SHA-256", sql: """
            CREATE TABLE quarantine (id TEXT PRIMARY KEY, original_path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
                owner INTEGER NOT NULL, grp INTEGER NOT NULL, mode INTEGER NOT NULL, at REAL NOT NULL, command_id TEXT,
                state TEXT NOT NULL, restored_at REAL);
            """),
        Migration(6, "the start time of the tether run that runs the sensors: a reused pid is not it", sql: """
            ALTER TABLE sensors ADD COLUMN pid_start INTEGER;
            """),
    ])

    init(directory: URL, queueLimit: Int) throws {
        let path = directory.appending(path: ConnectorRuntime.storeFileName).path
        database = try Database(path: path)
        self.queueLimit = queueLimit
        // The queue holds the machine's command lines: the owner's alone (SQLite gives its WAL and
        // shared-memory files the database's mode).
        for file in [path, path + "-wal", path + "-shm"] { chmod(file, 0o600) }
        // WAL: connector traffic writes often, and readers (tether agent status) never wait on it.
        try database.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        try RuntimeStore.migrator.migrate(database, store: directory.appending(path: ConnectorRuntime.storeFileName).path)
    }

    // MARK: - Identity

    /// The agent's id, made once.
    func agentId() throws -> String {
        if let id = try database.query("SELECT value FROM meta WHERE key = 'agent_id'").first?[0].text { return id }
        let id = UUID().uuidString.lowercased()
        try database.query("INSERT INTO meta (key, value) VALUES ('agent_id', ?)", [.text(id)])
        return id
    }

    // MARK: - The telemetry queue

    /// Appends events in order; events beyond the queue's bound are dropped and counted.
    /// Returns how many were queued.
    @discardableResult
    func enqueue(_ events: [TelemetryEvent], for integration: Integration) throws -> Int {
        try database.transaction {
            var depth = try self.depth(integration)
            var queued = 0
            let insert = try database.prepare("INSERT INTO events (integration, type, at, detail) VALUES (?, ?, ?, ?)")
            for event in events {
                guard depth < queueLimit else {
                    try bump(integration, "dropped", by: events.count - queued)
                    try bump(integration, TelemetryOutcome.dropped, counts: Self.countByType(events.dropFirst(queued)))
                    break
                }
                try insert.query([.text(integration.rawValue), .text(event.type.rawValue), .real(event.at.timeIntervalSince1970), .text(Wire.object(event.detail))])
                depth += 1
                queued += 1
            }
            try bump(integration, TelemetryOutcome.queued, counts: Self.countByType(events.prefix(queued)))
            return queued
        }
    }

    /// The oldest `limit` events, in order.
    func peek(_ integration: Integration, limit: Int) throws -> [QueuedEvent] {
        try database.query("SELECT seq, type, at, detail FROM events WHERE integration = ? ORDER BY seq LIMIT ?",
                           [.text(integration.rawValue), .integer(Int64(limit))]).compactMap(Self.queuedEvent)
    }

    /// An `events` row (seq, type, at, detail) as a queued event.
    private static func queuedEvent(_ row: [SQLValue]) -> QueuedEvent? {
        guard let seq = row[0].integer, let type = row[1].text.flatMap(EventType.init), let at = row[2].real else { return nil }
        let stored = (try? Wire.decode([String: DetailValue].self, from: Array((row[3].text ?? "{}").utf8))) ?? [:]
        let detail = DetailValue.current(stored)
        return QueuedEvent(seq: seq, event: TelemetryEvent(type: type, at: Date(timeIntervalSince1970: at), detail: detail))
    }

    /// The batch formed for `integration` and not yet acknowledged, if any.
    func pendingBatch(_ integration: Integration) throws -> PendingBatch? {
        guard let row = try database.query("SELECT batch_id, seqs, through_seq, hour, counts, throttled FROM pending_batches WHERE integration = ?",
                                           [.text(integration.rawValue)]).first,
              let batchId = row[0].text, let through = row[2].integer, let hour = row[3].integer, let throttled = row[5].integer,
              let seqs = try? Wire.decode([Int64].self, from: Array((row[1].text ?? "").utf8)),
              let counts = try? Wire.decode([String: Int].self, from: Array((row[4].text ?? "").utf8)) else { return nil }
        return PendingBatch(batchId: batchId, seqs: seqs, throughSeq: through, hour: Int(hour), counts: counts, throttled: Int(throttled))
    }

    /// Keeps `batch` as `integration`'s batch in flight, before its first send, and returns it;
    /// or returns the batch an overlapping sender formed first, which goes instead.
    func savePendingBatch(_ batch: PendingBatch, for integration: Integration, throttledByType: [String: Int] = [:]) throws -> PendingBatch {
        try database.transaction {
            if let first = try pendingBatch(integration) { return first }
            // Counted once, with the batch that drops them (a batch is formed once and resent as it is).
            try bump(integration, TelemetryOutcome.throttled, counts: throttledByType)
            try database.query("INSERT INTO pending_batches (integration, batch_id, seqs, through_seq, hour, counts, throttled) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               [.text(integration.rawValue), .text(batch.batchId), .text(String(decoding: Wire.encode(batch.seqs), as: UTF8.self)),
                                .integer(batch.throughSeq), .integer(Int64(batch.hour)),
                                .text(String(decoding: Wire.encode(batch.counts), as: UTF8.self)), .integer(Int64(batch.throttled))])
            return batch
        }
    }

    /// The queued events with these sequence numbers, in order.
    func events(_ integration: Integration, seqs: [Int64]) throws -> [QueuedEvent] {
        guard let first = seqs.first, let last = seqs.last else { return [] }
        let wanted = Set(seqs)
        return try database.query("SELECT seq, type, at, detail FROM events WHERE integration = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                                  [.text(integration.rawValue), .integer(first), .integer(last)]).compactMap { row in
            guard let seq = row[0].integer, wanted.contains(seq) else { return nil }
            return Self.queuedEvent(row)
        }
    }

    /// Acknowledged: the batch's events leave the queue, its counts are kept, and it is no longer
    /// in flight. Nothing happens when another sender (an overlapping sync) acknowledged it first.
    func acknowledge(_ batch: PendingBatch, for integration: Integration) throws {
        try database.transaction {
            guard try database.query("SELECT 1 FROM pending_batches WHERE integration = ? AND batch_id = ?",
                                     [.text(integration.rawValue), .text(batch.batchId)]).first != nil else { return }
            try remove(integration, through: batch.throughSeq)
            try recordSent(integration, hour: batch.hour, counts: batch.counts)
            try bump(integration, "sent", by: batch.seqs.count)
            try bump(integration, TelemetryOutcome.sent, counts: batch.counts)
            try bump(integration, "throttled", by: batch.throttled)
            try database.query("DELETE FROM pending_batches WHERE integration = ? AND batch_id = ?", [.text(integration.rawValue), .text(batch.batchId)])
        }
    }

    /// Removes events up to and including `seq` (they were delivered or throttled).
    func remove(_ integration: Integration, through seq: Int64) throws {
        try database.query("DELETE FROM events WHERE integration = ? AND seq <= ?", [.text(integration.rawValue), .integer(seq)])
    }

    func depth(_ integration: Integration) throws -> Int {
        Int(try database.query("SELECT count(*) FROM events WHERE integration = ?", [.text(integration.rawValue)]).first?[0].integer ?? 0)
    }

    func oldestEventAge(_ integration: Integration, now: Date) throws -> TimeInterval? {
        guard let at = try database.query("SELECT min(at) FROM events WHERE integration = ?", [.text(integration.rawValue)]).first?[0].real else { return nil }
        return now.timeIntervalSince1970 - at
    }

    // MARK: - Counters and throttling

    static func countByType<Events: Sequence>(_ events: Events) -> [String: Int] where Events.Element == TelemetryEvent {
        var counts: [String: Int] = [:]
        for event in events { counts[event.type.rawValue, default: 0] += 1 }
        return counts
    }

    /// Adds to the per-type counters of one outcome (`queued/process-start`…).
    func bump(_ scope: String, _ outcome: TelemetryOutcome, counts: [String: Int]) throws {
        for (type, count) in counts { try bump(scope: scope, outcome.rawValue + "/" + type, by: count) }
    }

    func bump(_ integration: Integration, _ outcome: TelemetryOutcome, counts: [String: Int]) throws {
        try bump(integration.rawValue, outcome, counts: counts)
    }

    /// Every per-type counter of a scope (an integration, or `sensors`): type → outcome → count.
    func countsByType(_ scope: String) throws -> [String: [TelemetryOutcome: Int]] {
        var result: [String: [TelemetryOutcome: Int]] = [:]
        for row in try database.query("SELECT name, value FROM counters WHERE integration = ? AND name LIKE '%/%'", [.text(scope)]) {
            guard let name = row[0].text, let value = row[1].integer, let slash = name.firstIndex(of: "/"),
                  let outcome = TelemetryOutcome(rawValue: String(name[..<slash])) else { continue }
            result[String(name[name.index(after: slash)...]), default: [:]][outcome] = Int(value)
        }
        return result
    }

    func bump(_ integration: Integration, _ name: String, by amount: Int = 1) throws {
        try bump(scope: integration.rawValue, name, by: amount)
    }

    /// Adds to a counter of a scope: an integration, or `sensors` for what the sensors saw.
    func bump(scope: String, _ name: String, by amount: Int) throws {
        guard amount != 0 else { return }
        try database.query("""
            INSERT INTO counters (integration, name, value) VALUES (?, ?, ?)
            ON CONFLICT(integration, name) DO UPDATE SET value = value + excluded.value
            """, [.text(scope), .text(name), .integer(Int64(amount))])
    }

    func counter(_ integration: Integration, _ name: String) throws -> Int {
        try counter(scope: integration.rawValue, name)
    }

    func counter(scope: String, _ name: String) throws -> Int {
        Int(try database.query("SELECT value FROM counters WHERE integration = ? AND name = ?", [.text(scope), .text(name)]).first?[0].integer ?? 0)
    }

    /// Events sent in the hour `hour` (hours since 1970), by type.
    func sentThisHour(_ integration: Integration, hour: Int) throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for row in try database.query("SELECT type, count FROM throttle WHERE integration = ? AND hour = ?",
                                      [.text(integration.rawValue), .integer(Int64(hour))]) {
            if let type = row[0].text, let count = row[1].integer { counts[type] = Int(count) }
        }
        return counts
    }

    func recordSent(_ integration: Integration, hour: Int, counts: [String: Int]) throws {
        for (type, count) in counts {
            try database.query("""
                INSERT INTO throttle (integration, hour, type, count) VALUES (?, ?, ?, ?)
                ON CONFLICT(integration, hour, type) DO UPDATE SET count = count + excluded.count
                """, [.text(integration.rawValue), .integer(Int64(hour)), .text(type), .integer(Int64(count))])
        }
        try database.query("DELETE FROM throttle WHERE integration = ? AND hour < ?", [.text(integration.rawValue), .integer(Int64(hour - 1))])
    }

    // MARK: - Status

    func recordSuccess(_ integration: Integration, server: String, at: Date = Date()) throws {
        try database.query("""
            INSERT INTO status (integration, server, last_success, last_attempt, last_error, error_kind) VALUES (?, ?, ?, ?, NULL, NULL)
            ON CONFLICT(integration) DO UPDATE SET server = excluded.server, last_success = excluded.last_success,
                last_attempt = excluded.last_attempt, last_error = NULL, error_kind = NULL
            """, [.text(integration.rawValue), .text(server), .real(at.timeIntervalSince1970), .real(at.timeIntervalSince1970)])
    }

    func recordFailure(_ integration: Integration, server: String?, kind: String, message: String, at: Date = Date()) throws {
        try database.query("""
            INSERT INTO status (integration, server, last_attempt, last_error, error_kind) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT(integration) DO UPDATE SET server = excluded.server, last_attempt = excluded.last_attempt,
                last_error = excluded.last_error, error_kind = excluded.error_kind
            """, [.text(integration.rawValue), server.map(SQLValue.text) ?? .null, .real(at.timeIntervalSince1970), .text(message), .text(kind)])
    }

    /// Sets (or clears, with nil) a back-off deadline; each one set counts a step for exponential growth.
    func setBackoff(_ integration: Integration, until: Date?) throws {
        try database.query("INSERT OR IGNORE INTO status (integration) VALUES (?)", [.text(integration.rawValue)])
        if let until {
            try database.query("UPDATE status SET backoff_until = ?, backoff_step = backoff_step + 1 WHERE integration = ?",
                               [.real(until.timeIntervalSince1970), .text(integration.rawValue)])
        } else {
            try database.query("UPDATE status SET backoff_until = NULL, backoff_step = 0 WHERE integration = ?", [.text(integration.rawValue)])
        }
    }

    func backoff(_ integration: Integration) throws -> (until: Date?, step: Int) {
        guard let row = try database.query("SELECT backoff_until, backoff_step FROM status WHERE integration = ?", [.text(integration.rawValue)]).first else {
            return (nil, 0)
        }
        return (row[0].real.map { Date(timeIntervalSince1970: $0) }, Int(row[1].integer ?? 0))
    }

    func status(_ integration: Integration, running: Bool) throws -> ConnectorStatus {
        let row = try database.query("SELECT server, last_success, last_attempt, last_error, error_kind, backoff_until FROM status WHERE integration = ?",
                                     [.text(integration.rawValue)]).first
        let lastSuccess = row?[1].real.map { Date(timeIntervalSince1970: $0) }
        let lastAttempt = row?[2].real.map { Date(timeIntervalSince1970: $0) }
        let lastError = row?[3].text
        let state: String
        if !running { state = "stopped" } else if lastError != nil { state = "failing" } else if lastSuccess != nil { state = "connected" } else { state = "not yet connected" }
        return ConnectorStatus(integration: integration, running: running, state: state, server: row?[0].text,
                               lastSuccess: lastSuccess, lastAttempt: lastAttempt, lastError: lastError, errorKind: row?[4].text,
                               queueDepth: integration == .sandbox ? try pendingScanCount() : try depth(integration),
                               sent: try counter(integration, "sent"), dropped: try counter(integration, "dropped"),
                               throttled: try counter(integration, "throttled"),
                               backoffUntil: row?[5].real.map { Date(timeIntervalSince1970: $0) })
    }

    // MARK: - Sandbox queue

    struct Scan {
        let id: String
        let path: String
        let size: Int
        let content: [UInt8]?
        let state: String
        let verdict: String?
    }

    func queuedBytes() throws -> Int {
        Int(try database.query("SELECT coalesce(sum(size), 0) FROM scans WHERE state IN ('queued', 'processing')").first?[0].integer ?? 0)
    }

    func addScan(id: String, path: String, content: [UInt8]) throws {
        let now = Date().timeIntervalSince1970
        try database.query("INSERT INTO scans (scan_id, path, size, content, state, submitted_at, updated_at) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                           [.text(id), .text(path), .integer(Int64(content.count)), .blob(content), .real(now), .real(now)])
    }

    func scans(state: String? = nil) throws -> [Scan] {
        let rows = state == nil
            ? try database.query("SELECT scan_id, path, size, content, state, verdict FROM scans ORDER BY submitted_at, scan_id")
            : try database.query("SELECT scan_id, path, size, content, state, verdict FROM scans WHERE state = ? ORDER BY submitted_at, scan_id", [.text(state!)])
        return rows.compactMap { row in
            guard let id = row[0].text, let path = row[1].text, let size = row[2].integer, let state = row[4].text else { return nil }
            return Scan(id: id, path: path, size: Int(size), content: row[3].blob, state: state, verdict: row[5].text)
        }
    }

    /// How many scans wait (queued or processing), without reading their contents.
    func pendingScanCount() throws -> Int {
        Int(try database.query("SELECT count(*) FROM scans WHERE state IN ('queued', 'processing')").first?[0].integer ?? 0)
    }

    func updateScan(_ id: String, state: String, verdict: String? = nil, dropContent: Bool = false) throws {
        try database.query("UPDATE scans SET state = ?, verdict = coalesce(?, verdict), updated_at = ?\(dropContent ? ", content = NULL" : "") WHERE scan_id = ?",
                           [.text(state), verdict.map(SQLValue.text) ?? .null, .real(Date().timeIntervalSince1970), .text(id)])
    }
}

// MARK: - Sensors

extension RuntimeStore {
    /// Replaces what is known of the sensors (the `tether run` that runs them writes it).
    func saveSensors(_ statuses: [SensorStatus], pid: Int32, since: Date) throws {
        try database.transaction {
            try database.execute("DELETE FROM sensors")
            for status in statuses {
                try database.query("INSERT INTO sensors (sensor, source, running, note, pid, since, pid_start) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   [.text(status.sensor.rawValue), .text(status.source), .integer(status.running ? 1 : 0),
                                    status.note.map(SQLValue.text) ?? .null, .integer(Int64(pid)), .real(since.timeIntervalSince1970),
                                    ProcFS.startTicks(pid).map { .integer(Int64($0)) } ?? .null])
            }
        }
    }

    func sensors() throws -> [SensorReport] {
        try database.query("SELECT sensor, source, running, note, pid, since, pid_start FROM sensors ORDER BY rowid").compactMap { row in
            guard let name = row[0].text, let sensor = SensorKind(rawValue: name), let source = row[1].text, let running = row[2].integer,
                  let pid = row[4].integer, let since = row[5].real else { return nil }
            return SensorReport(status: SensorStatus(sensor: sensor, source: source, running: running != 0, note: row[3].text),
                                pid: Int32(pid), pidStart: row[6].integer.flatMap { UInt64(exactly: $0) }, since: Date(timeIntervalSince1970: since))
        }
    }
}

/// A sensor as the `tether run` that runs it last recorded it.
package struct SensorReport: Sendable {
    package let status: SensorStatus
    /// The `tether run` that recorded it.
    package let pid: Int32
    /// That process's start, in clock ticks after boot (nil in a record of an earlier release).
    package let pidStart: UInt64?
    /// When it started or stopped.
    package let since: Date

    /// Running, and its `tether run` still alive: the same process, not another that has its
    /// pid now (a killed controller leaves "running" behind).
    package var isRunning: Bool {
        guard status.running else { return false }
        guard let pidStart else { return kill(pid, 0) == 0 || errno == EPERM }
        return ProcFS.startTicks(pid) == pidStart
    }
}
