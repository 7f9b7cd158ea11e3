import Foundation
import IntegrationModel
import SQLiteDB

/// One entry of the history: an apply, a drift detection or a rollback.
package struct HistoryEntry: Sendable, Equatable, Encodable {
    package let id: Int
    package let at: Date
    /// `apply`, `drift` or `rollback`.
    package let kind: String
    package let revision: String
    /// `applied`, `nothing-to-do`, `failed`, `in-sync`, `drift`.
    package let result: String
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

    package init(id: Int = 0, at: Date = Date(), kind: String, revision: String, result: String, findings: Int, detail: String,
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
    package static let fileName = "history.db"
    /// The schema name under which the agent's store attaches this file (see `Reconciliation.apply`).
    package static let schema = "history"
    /// The file.
    package let file: URL

    package init(stateDirectory: URL) throws {
        try FileManager.default.createDirectory(at: stateDirectory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        file = stateDirectory.appendingPathComponent(History.fileName)
        database = try Database(path: file.path)
        // A rollback journal, always: an apply commits this file and the other (agent.db, history.db)
        // in one transaction, which SQLite makes atomic only without WAL.
        try database.execute("PRAGMA journal_mode = DELETE")
        try History.migrator.migrate(database, store: file.path)
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

    /// Appends an entry.
    package func record(_ entry: HistoryEntry) throws {
        try database.transaction { try History.record(entry, into: database, schema: "main") }
    }

    /// Appends an entry unless the newest entry of its kind says the same (revision, result,
    /// findings and detail).
    package func recordIfChanged(_ entry: HistoryEntry) throws {
        let last = try database.query("SELECT revision, result, findings, detail FROM history WHERE kind = ? ORDER BY id DESC LIMIT 1",
                                      [.text(entry.kind)]).first
        if let last, last[0].text == entry.revision, last[1].text == entry.result, last[2].integer == Int64(entry.findings),
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
                           [.real(entry.at.timeIntervalSince1970), .text(entry.kind), .text(entry.revision),
                            .text(entry.result), .integer(Int64(entry.findings)), .text(entry.detail), labels])
        try database.query("DELETE FROM \(schema).history WHERE id <= (SELECT max(id) FROM \(schema).history) - ?",
                           [.integer(Int64(History.retained))])
    }

    /// The entries, newest first.
    package func entries(limit: Int = 50) throws -> [HistoryEntry] {
        try database.query("SELECT id, at, kind, revision, result, findings, detail, labels FROM history ORDER BY id DESC LIMIT ?",
                           [.integer(Int64(limit))]).compactMap { row in
            guard let id = row[0].integer, let at = row[1].real, let kind = row[2].text, let revision = row[3].text,
                  let result = row[4].text, let findings = row[5].integer else { return nil }
            let labels = row[7].text.flatMap { try? JSONDecoder().decode([String: String].self, from: Data($0.utf8)) }
            return HistoryEntry(id: Int(id), at: Date(timeIntervalSince1970: at), kind: kind, revision: revision,
                                result: result, findings: Int(findings), detail: row[6].text ?? "", labels: labels)
        }
    }

    /// The labels of the newest apply or rollback that left the agent matching a revision;
    /// nil when none recorded them.
    package func lastAppliedLabels() throws -> [String: String]? {
        let row = try database.query("""
            SELECT labels FROM history WHERE kind IN ('apply', 'rollback') AND result IN ('applied', 'nothing-to-do')
            ORDER BY id DESC LIMIT 1
            """).first
        return row?[0].text.flatMap { try? JSONDecoder().decode([String: String].self, from: Data($0.utf8)) }
    }

    /// The revisions the agent was known to match after an apply, newest first, each once; a
    /// revision whose apply a health window rolled back does not count.
    package func appliedRevisions() throws -> [String] {
        var seen = Set<String>()
        var rolledBack = Set<String>()
        var revisions: [String] = []
        let rows = try database.query("SELECT revision, result FROM history WHERE kind IN ('apply', 'rollback') ORDER BY id DESC")
        for row in rows {
            guard let revision = row[0].text, let result = row[1].text else { continue }
            if result == "rolled-back" {
                rolledBack.insert(revision)
            } else if ["applied", "nothing-to-do"].contains(result), !rolledBack.contains(revision), seen.insert(revision).inserted {
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
            for row in try database.query("SELECT key, value, at FROM noticed") {
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
                    try database.query("INSERT OR REPLACE INTO noticed (key, value, at) VALUES (?, ?, ?)",
                                       [.text(key), .text(value), .real(now.timeIntervalSince1970)])
                    result[key] = now
                }
            }
            for key in noticed.keys where differences[key] == nil {
                try database.query("DELETE FROM noticed WHERE key = ?", [.text(key)])
            }
            return result
        }
    }
}
