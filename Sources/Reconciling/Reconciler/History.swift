import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import IntegrationModel
import PolicySource
import SQLiteDB

/// What a history entry is about.
package enum HistoryKind: String, Sendable, Codable, CaseIterable {
    case apply, drift, rollback
}

/// What came of it. Stored as its raw value (`tether history` prints it as it is).
package enum HistoryResult: String, Sendable, Codable, CaseIterable {
    /// The agent now matches the revision: changes were made, or none were needed.
    case applied
    case nothingToDo = "nothing-to-do"
    case failed
    /// A health window undid the apply.
    case rolledBack = "rolled-back"
    case verificationRefused = "verification-refused"
    case rollbackRefused = "rollback-refused"
    /// A drift detection's outcome.
    case inSync = "in-sync"
    case drift

    /// The refusal's result.
    package init(_ reason: RevisionRefused.Reason) {
        switch reason {
        case .verification: self = .verificationRefused
        case .rollback: self = .rollbackRefused
        }
    }

    /// Whether the agent matched the revision afterwards (anti-rollback and `rollback` start there).
    package var leftAgentMatching: Bool { self == .applied || self == .nothingToDo }
}

/// One entry of the history: an apply, a drift detection or a rollback.
package struct HistoryEntry: Sendable, Equatable, Codable {
    package let id: Int
    package let at: Date
    package let kind: HistoryKind
    package let revision: String
    package let result: HistoryResult
    package let findings: Int
    /// A short, secret-free description: the error, or the paths found.
    package let detail: String
    /// The device's labels an apply used (nil for other entries, and entries of the first release).
    package let labels: [String: String]?

    /// `tether history --json` writes these keys; `at` as an ISO 8601 time.
    private enum CodingKeys: String, CodingKey { case at, kind, revision, result, findings, detail, labels }

    package func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(Timestamp.string(at), forKey: .at)
        try container.encode(kind, forKey: .kind)
        try container.encode(revision, forKey: .revision)
        try container.encode(result, forKey: .result)
        try container.encode(findings, forKey: .findings)
        try container.encode(detail, forKey: .detail)
        try container.encodeIfPresent(labels, forKey: .labels)
    }

    package init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let time = try container.decode(String.self, forKey: .at)
        guard let at = Timestamp.date(time) else {
            throw DecodingError.dataCorruptedError(forKey: .at, in: container, debugDescription: "not an ISO 8601 time: \(time)")
        }
        self.init(at: at, kind: try container.decode(HistoryKind.self, forKey: .kind), revision: try container.decode(String.self, forKey: .revision),
                  result: try container.decode(HistoryResult.self, forKey: .result), findings: try container.decode(Int.self, forKey: .findings),
                  detail: try container.decode(String.self, forKey: .detail), labels: try container.decodeIfPresent([String: String].self, forKey: .labels))
    }

    package init(id: Int = 0, at: Date = Date(), kind: HistoryKind, revision: String, result: HistoryResult, findings: Int, detail: String,
                 labels: [String: String]? = nil) {
        self.labels = labels
        self.id = id
        self.at = at
        self.kind = kind
        self.revision = revision
        self.result = result
        self.findings = findings
        self.detail = detail
    }
}

/// Tether's own records beside the agent's store (`history.db` in the state directory): what
/// was applied or detected when, and when each difference was first noticed. Kept apart from
/// the agent so that recording a failed apply leaves the agent's store untouched.
package final class History {
    private let database: Database
    /// `main` for a connection of its own; `history` when it shares the agent's (attached).
    private let schema: String
    package static let fileName = "history.db"
    /// The schema name under which the agent's store attaches this file (see `AgentSession`).
    package static let attachedSchema = "history"
    /// Entries that could not be written after a backend's own commit, kept until the next open.
    package static let pendingFileName = "history.pending"
    /// The file.
    package let file: URL

    /// Opens `history.db` in `stateDirectory` on a connection of its own.
    package convenience init(stateDirectory: URL) throws {
        try self.init(stateDirectory: stateDirectory, sharing: nil)
    }

    /// Opens `history.db` in `stateDirectory`; with `sharing`, on that connection (which must have
    /// the file attached as `attachedSchema`): one connection per file in the process. The
    /// schema is brought up to date on a connection of its own first.
    package init(stateDirectory: URL, sharing: ((URL) throws -> Database)?) throws {
        try FileManager.default.createDirectory(at: stateDirectory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        file = stateDirectory.appending(path: History.fileName)
        let own = try Database(path: file.path)
        // A rollback journal, always: an apply commits this file and the other (agent.db, history.db)
        // in one transaction, which SQLite makes atomic only without WAL.
        try own.execute("PRAGMA journal_mode = DELETE")
        try History.migrator.migrate(own, store: file.path)
        if let sharing {
            database = try sharing(file)
            schema = History.attachedSchema
        } else {
            database = own
            schema = "main"
        }
        recordPending()
    }

    /// The history's schema, step by step (version 1: the first release's, adopted as it is).
    static let migrator = Migrator([
        Migration(1, "history and first-noticed times", sql: """
            CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL,
                revision TEXT NOT NULL, result TEXT NOT NULL, findings INTEGER NOT NULL, detail TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS noticed (key TEXT PRIMARY KEY, value TEXT NOT NULL, at REAL NOT NULL);
            """),
        Migration(2, "the labels an apply used", sql: "ALTER TABLE history ADD COLUMN labels TEXT;"),
    ])

    /// How many entries are kept (the oldest go first).
    package static let retained = 10_000

    /// Appends an entry (after any kept aside earlier, so they stay in order).
    package func record(_ entry: HistoryEntry) throws {
        recordPending()
        try database.transaction { try History.record(entry, into: database, schema: schema) }
    }

    /// Appends an entry, or when that fails keeps it in `history.pending` (recorded at the next
    /// open) and says so: for a backend whose change is already committed.
    /// Returns nil when recorded, else what went wrong.
    package func recordAfterCommit(_ entry: HistoryEntry) -> String? {
        do {
            try record(entry)
            return nil
        } catch {
            let pending = file.deletingLastPathComponent().appending(path: History.pendingFileName)
            var line = (try? JSONEncoder().encode(entry)) ?? Data()
            line.append(UInt8(ascii: "\n"))
            let kept = Self.keep(line, in: pending)
            return "\(error)" + (kept ? "; kept in \(pending.path) and recorded at the next start" : "; it could not be kept either")
        }
    }

    /// Records the entries `recordAfterCommit` kept, in order. The file is first renamed to a
    /// name of this process's own, so two processes never replay (or delete) the same entries,
    /// and an entry already in the history (a replay a crash cut short) is not added again.
    /// When the history still cannot be written, the entries go back to be tried later; opening
    /// the history does not fail for them.
    private func recordPending() {
        let folder = file.deletingLastPathComponent()
        let pending = folder.appending(path: History.pendingFileName)
        guard FileManager.default.fileExists(atPath: pending.path) else { return }
        let claimed = folder.appending(path: ".\(History.pendingFileName).\(getpid()).\(UInt32.random(in: 0...UInt32.max))")
        guard rename(pending.path, claimed.path) == 0, let data = FileManager.default.contents(atPath: claimed.path) else { return }
        let entries = data.split(separator: UInt8(ascii: "\n")).compactMap { try? JSONDecoder().decode(HistoryEntry.self, from: Data($0)) }
        do {
            try database.transaction {
                for entry in entries {
                    let known = try database.query("""
                        SELECT 1 FROM \(schema).history WHERE at = ? AND kind = ? AND revision = ? AND result = ? AND detail = ?
                        """, [.real(entry.at.timeIntervalSince1970), .text(entry.kind.rawValue), .text(entry.revision),
                              .text(entry.result.rawValue), .text(entry.detail)])
                    if known.isEmpty { try History.record(entry, into: database, schema: schema) }
                }
            }
            try? FileManager.default.removeItem(at: claimed)
        } catch {
            Self.keep(data, in: pending)
            try? FileManager.default.removeItem(at: claimed)
        }
    }

    /// Appends lines to the pending file (owner-only), synced; whether they were kept.
    @discardableResult
    private static func keep(_ lines: Data, in pending: URL) -> Bool {
        let fd = open(pending.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return lines.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == lines.count && fsync(fd) == 0
    }

    /// Appends an entry unless the newest entry of its kind says the same (revision, result,
    /// findings and detail).
    package func recordIfChanged(_ entry: HistoryEntry) throws {
        let last = try database.query("SELECT revision, result, findings, detail FROM \(schema).history WHERE kind = ? ORDER BY id DESC LIMIT 1",
                                      [.text(entry.kind.rawValue)]).first
        if let last, last[0].text == entry.revision, last[1].text == entry.result.rawValue, last[2].integer == Int64(entry.findings),
           last[3].text == entry.detail {
            return
        }
        try record(entry)
    }

    /// Appends an entry through another connection that has this file attached as `schema`,
    /// inside that connection's transaction (so the entry commits with the agent's change).
    package static func record(_ entry: HistoryEntry, into database: Database, schema: String) throws {
        let labels = entry.labels.map { labels -> SQLValue in
            .text(String(decoding: (try? JSONEncoder().encode(labels)) ?? Data("{}".utf8), as: UTF8.self))
        } ?? .null
        try database.query("INSERT INTO \(schema).history (at, kind, revision, result, findings, detail, labels) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [.real(entry.at.timeIntervalSince1970), .text(entry.kind.rawValue), .text(entry.revision),
                            .text(entry.result.rawValue), .integer(Int64(entry.findings)), .text(entry.detail), labels])
        try database.query("DELETE FROM \(schema).history WHERE id <= (SELECT max(id) FROM \(schema).history) - ?",
                           [.integer(Int64(History.retained))])
    }

    /// The entries, newest first.
    package func entries(limit: Int = 50) throws -> [HistoryEntry] {
        try database.query("SELECT id, at, kind, revision, result, findings, detail, labels FROM \(schema).history ORDER BY id DESC LIMIT ?",
                           [.integer(Int64(limit))]).compactMap { row in
            guard let id = row[0].integer, let at = row[1].real, let kind = row[2].text.flatMap(HistoryKind.init), let revision = row[3].text,
                  let result = row[4].text.flatMap(HistoryResult.init), let findings = row[5].integer else { return nil }
            let labels = row[7].text.flatMap { try? JSONDecoder().decode([String: String].self, from: Data($0.utf8)) }
            return HistoryEntry(id: Int(id), at: Date(timeIntervalSince1970: at), kind: kind, revision: revision,
                                result: result, findings: Int(findings), detail: row[6].text ?? "", labels: labels)
        }
    }

    /// The labels of the newest apply or rollback that left the agent matching a revision;
    /// nil when none recorded them.
    package func lastAppliedLabels() throws -> [String: String]? {
        let row = try database.query("""
            SELECT labels FROM \(schema).history WHERE kind IN (?, ?) AND result IN (?, ?) ORDER BY at DESC, id DESC LIMIT 1
            """, [.text(HistoryKind.apply.rawValue), .text(HistoryKind.rollback.rawValue),
                  .text(HistoryResult.applied.rawValue), .text(HistoryResult.nothingToDo.rawValue)]).first
        return row?[0].text.flatMap { try? JSONDecoder().decode([String: String].self, from: Data($0.utf8)) }
    }

    /// The revisions the agent was known to match after an apply, newest first, each once; a
    /// revision whose apply a health window rolled back does not count.
    package func appliedRevisions() throws -> [String] {
        var seen = Set<String>()
        var rolledBack = Set<String>()
        var revisions: [String] = []
        // By time: an entry recorded late (kept aside after a backend's commit) keeps its place.
        let rows = try database.query("SELECT revision, result FROM \(schema).history WHERE kind IN (?, ?) ORDER BY at DESC, id DESC",
                                      [.text(HistoryKind.apply.rawValue), .text(HistoryKind.rollback.rawValue)])
        for row in rows {
            guard let revision = row[0].text, let result = row[1].text.flatMap(HistoryResult.init) else { continue }
            if result == .rolledBack {
                rolledBack.insert(revision)
            } else if result.leftAgentMatching, !rolledBack.contains(revision), seen.insert(revision).inserted {
                revisions.append(revision)
            }
        }
        return revisions
    }

    /// When each current difference (key → actual value) was first noticed: the time is kept
    /// while the actual value stays the same, and keys no longer different are forgotten. Writes
    /// only when something changed.
    package func notice(_ differences: [String: String], now: Date = Date()) throws -> [String: Date] {
        func known() throws -> [String: (value: String, at: Date)] {
            var noticed: [String: (value: String, at: Date)] = [:]
            for row in try database.query("SELECT key, value, at FROM \(schema).noticed") {
                guard let key = row[0].text, let value = row[1].text, let at = row[2].real else { continue }
                noticed[key] = (value, Date(timeIntervalSince1970: at))
            }
            return noticed
        }
        func unchanged(_ noticed: [String: (value: String, at: Date)]) -> Bool {
            noticed.count == differences.count && differences.allSatisfy { noticed[$0.key]?.value == $0.value }
        }
        let before = try known()
        if unchanged(before) { return before.mapValues(\.at) }
        return try database.transaction {
            let noticed = try known()
            var result: [String: Date] = [:]
            for (key, value) in differences {
                if let earlier = noticed[key], earlier.value == value {
                    result[key] = earlier.at
                } else {
                    try database.query("INSERT OR REPLACE INTO \(schema).noticed (key, value, at) VALUES (?, ?, ?)",
                                       [.text(key), .text(value), .real(now.timeIntervalSince1970)])
                    result[key] = now
                }
            }
            for key in noticed.keys where differences[key] == nil {
                try database.query("DELETE FROM \(schema).noticed WHERE key = ?", [.text(key)])
            }
            return result
        }
    }
}
