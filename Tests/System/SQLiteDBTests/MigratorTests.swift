import Foundation
import SQLiteDB
import Testing

/// A database file in a folder of its own, removed afterwards.
private final class ScratchDatabase {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("tether-sqlite-\(UUID().uuidString.prefix(8))")
    var path: String { folder.appendingPathComponent("store.db").path }

    init() throws { try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true) }
    deinit { try? FileManager.default.removeItem(at: folder) }
}

private let steps = [
    Migration(1, "items", sql: "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"),
    Migration(2, "item sizes", sql: "ALTER TABLE items ADD COLUMN size INTEGER NOT NULL DEFAULT 0;"),
]

@Suite("Schema migrations")
struct MigratorTests {
    @Test("Pending migrations run in order, once; the version is kept in user_version")
    func inOrder() throws {
        let scratch = try ScratchDatabase()
        let database = try Database(path: scratch.path)
        #expect(try Migrator(Array(steps.prefix(1))).migrate(database, store: "store.db") == [1])
        try database.query("INSERT INTO items (name) VALUES ('kept')")
        #expect(try Migrator(steps).migrate(database, store: "store.db") == [2], "only what is pending")
        #expect(try Migrator(steps).migrate(database, store: "store.db") == [], "nothing twice")
        #expect(try database.userVersion() == 2)
        #expect(try database.query("SELECT name, size FROM items") == [[.text("kept"), .integer(0)]])
    }

    @Test("A failing migration leaves the store at the version before it, and says which step failed")
    func failure() throws {
        let scratch = try ScratchDatabase()
        let database = try Database(path: scratch.path)
        let broken = steps + [Migration(3, "a broken step", sql: "CREATE TABLE extra (a INTEGER); ALTER TABLE nowhere ADD COLUMN b INTEGER;")]
        let error = #expect(throws: SQLiteError.self) { try Migrator(broken).migrate(database, store: "store.db") }
        #expect(error?.message.contains("migration 3 (a broken step) failed") == true, "\(String(describing: error))")
        #expect(try database.userVersion() == 2, "1 and 2 are in, 3 is not")
        #expect(try database.query("SELECT name FROM sqlite_master WHERE name = 'extra'").isEmpty, "nothing of step 3 is kept")
    }

    @Test("A store written by a newer program is refused, not misread")
    func newer() throws {
        let scratch = try ScratchDatabase()
        let database = try Database(path: scratch.path)
        try database.execute("PRAGMA user_version = 7")
        let error = #expect(throws: SQLiteError.self) { try Migrator(steps).migrate(database, store: "store.db") }
        #expect(error?.message.contains("schema version 7, newer than this tether knows (2)") == true)
    }
}

@Suite("Read transactions")
struct ReadTransactionTests {
    @Test("Several reads share one transaction; inside a write transaction a read joins it; a read that throws leaves the store usable")
    func reads() throws {
        let scratch = try ScratchDatabase()
        let database = try Database(path: scratch.path)
        try database.execute("CREATE TABLE items (name TEXT NOT NULL)")
        try database.query("INSERT INTO items (name) VALUES ('a'), ('b')")
        let counts = try database.read { (try database.query("SELECT count(*) FROM items"), try database.query("SELECT name FROM items ORDER BY name")) }
        #expect(counts.0 == [[.integer(2)]] && counts.1 == [[.text("a")], [.text("b")]])
        let seen = try database.transaction {
            try database.query("INSERT INTO items (name) VALUES ('c')")
            return try database.read { try database.query("SELECT count(*) FROM items") }
        }
        #expect(seen == [[.integer(3)]], "the read sees its own transaction's write")
        struct Stop: Error {}
        #expect(throws: Stop.self) { try database.read { _ = try database.query("SELECT 1"); throw Stop() } }
        try database.query("INSERT INTO items (name) VALUES ('d')")
        #expect(try database.query("SELECT count(*) FROM items") == [[.integer(4)]], "no transaction was left open")
    }
}
