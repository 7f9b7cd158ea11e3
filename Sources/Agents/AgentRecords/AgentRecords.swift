import AgentInterface
import FoundationEssentials
import IntegrationModel
import SQLiteDB

/// What every agent backend keeps of Tether's own work in its store: the last applied desired
/// state (tables `applied`, `applied_revision`) and the change log (`changes`). The tables are
/// made by each store's migrations; this reads and writes them, inside the caller's transaction.
package struct AgentRecords {
    /// The tables, as a migration creates them.
    package static let tables = """
        CREATE TABLE IF NOT EXISTS changes (id INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL,
            path TEXT NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, value TEXT NOT NULL, revision TEXT NOT NULL, at REAL NOT NULL);
        CREATE TABLE IF NOT EXISTS applied_revision (id INTEGER PRIMARY KEY CHECK (id = 1), revision TEXT NOT NULL, at REAL NOT NULL);
        """

    let database: Database

    package init(_ database: Database) {
        self.database = database
    }

    /// The last applied desired state.
    package func applied() throws -> AppliedState {
        var values: [DesiredKey: String] = [:]
        for row in try database.query("SELECT key, value FROM applied") {
            // A key this release does not know (a newer one's) is not managed here.
            guard let key = row[0].text.flatMap(DesiredKey.init(path:)), let value = row[1].text else { continue }
            values[key] = value
        }
        let row = try database.query("SELECT revision, at FROM applied_revision WHERE id = 1").first
        return AppliedState(values: values, revision: row?[0].text, at: row?[1].real.map { Date(timeIntervalSince1970: $0) })
    }

    /// Replaces the last applied desired state (none, with a nil revision).
    package func replaceApplied(_ values: [DesiredKey: String], revision: String?) throws {
        try database.execute("DELETE FROM applied; DELETE FROM applied_revision;")
        guard let revision else { return }
        let now = Date().timeIntervalSince1970
        // The revision has a row of its own: a device whose policies manage no key still has one.
        try database.query("INSERT INTO applied_revision (id, revision, at) VALUES (1, ?, ?)", [.text(revision), .real(now)])
        for (key, value) in values {
            try database.query("INSERT INTO applied (key, value, revision, at) VALUES (?, ?, ?, ?)",
                               [.text(key.description), .text(value), .text(revision), .real(now)])
        }
    }

    /// Logs one change.
    package func record(actor: String, path: String, old: String, new: String) throws {
        try database.query("INSERT INTO changes (at, actor, path, old, new) VALUES (?, ?, ?, ?, ?)",
                           [.real(Date().timeIntervalSince1970), .text(actor), .text(path), .text(old), .text(new)])
    }

    /// The logged changes, newest first.
    package func changes(limit: Int) throws -> [ChangeRecord] {
        try database.query("SELECT at, actor, path, old, new FROM changes ORDER BY id DESC LIMIT ?", [.integer(Int64(limit))]).compactMap(Self.change)
    }

    /// The last logged change of each path.
    package func latestChanges() throws -> [String: ChangeRecord] {
        let latest = "SELECT at, actor, path, old, new FROM changes WHERE id IN (SELECT max(id) FROM changes GROUP BY path)"
        var records: [String: ChangeRecord] = [:]
        for record in try database.query(latest).compactMap(Self.change) { records[record.path] = record }
        return records
    }

    private static func change(_ row: [SQLValue]) -> ChangeRecord? {
        guard let at = row[0].real, let actor = row[1].text, let path = row[2].text else { return nil }
        return ChangeRecord(at: Date(timeIntervalSince1970: at), actor: actor, path: path, old: row[3].text ?? "", new: row[4].text ?? "")
    }
}
