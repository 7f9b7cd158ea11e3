internal import CSQLite
internal import CSQLiteShims
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Primitives

/// An error from SQLite, carrying SQLite's own message.
package struct SQLiteError: Error, CustomStringConvertible, Sendable {
    package let code: Int32
    package let message: String
    package var description: String { "SQLite error \(code): \(message)" }
}

/// A value bound to or read from a statement.
package enum SQLValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    package var text: String? { if case .text(let value) = self { return value }; return nil }
    package var integer: Int64? { if case .integer(let value) = self { return value }; return nil }
    package var real: Double? {
        switch self {
        case .real(let value): return value
        case .integer(let value): return Double(value)
        default: return nil
        }
    }
    package var blob: [UInt8]? {
        switch self {
        case .blob(let bytes): return bytes
        case .null: return nil
        case .text(let text): return Array(text.utf8)
        case .integer, .real: return nil
        }
    }
}

private let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

/// One SQLite database file, owned by this object and closed in `deinit`. One connection may be
/// shared by the threads of a process (`tether run` holds one per store): each statement, and
/// each transaction from BEGIN to COMMIT, holds the connection for the calling thread alone.
package final class Database: @unchecked Sendable {
    private let handle: OpaquePointer
    /// Held around every use of `handle`; recursive, so a transaction's statements take it again.
    private let lock = Lock(recursive: true)
    /// The statements `query` compiled, by their text: each compiled once and run again
    /// (GRDB's statement cache); emptied when it would pass `cacheLimit`.
    private var cache: [String: OpaquePointer] = [:]
    private static let cacheLimit = 128

    /// Opens (and creates when missing) the database at `path`.
    package init(path: String) throws {
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let code = sqlite3_open_v2(path, &db, flags, nil)
        guard code == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open \(path)"
            if let db { sqlite3_close_v2(db) }
            throw SQLiteError(code: code, message: message)
        }
        handle = db
        sqlite3_busy_timeout(db, 5000)
    }

    deinit {
        for statement in cache.values { sqlite3_finalize(statement) }
        sqlite3_close_v2(handle)
    }

    /// Runs one or more statements that take no parameters.
    /// Opens (or creates, readable by its owner only) a store that holds what must stay private
    /// (client containers, the agent's settings): a rollback journal, so that another file
    /// ATTACHed to it commits atomically with it, and `secure_delete`, so that what is deleted or
    /// overwritten does not linger in free pages.
    package static func openPrivate(path: String) throws -> Database {
        let isNew = !FileManager.default.fileExists(atPath: path)
        let database = try Database(path: path)
        if isNew { chmod(path, 0o600) }
        try database.execute("PRAGMA journal_mode = DELETE; PRAGMA secure_delete = ON;")
        return database
    }

    package func execute(_ sql: String) throws {
        lock.lock()
        defer { lock.unlock() }
        var errorMessage: UnsafeMutablePointer<CChar>?
        let code = sqlite3_exec(handle, sql, nil, nil, &errorMessage)
        if code != SQLITE_OK {
            let message = errorMessage.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(handle))
            sqlite3_free(errorMessage)
            throw SQLiteError(code: code, message: message)
        }
    }

    /// Runs one statement with parameters and returns its rows.
    @discardableResult
    package func query(_ sql: String, _ parameters: [SQLValue] = []) throws -> [[SQLValue]] {
        lock.lock()
        defer { lock.unlock() }
        if let statement = cache[sql] { return try run(statement, parameters) }
        var statement: OpaquePointer?
        try check(sqlite3_prepare_v2(handle, sql, -1, &statement, nil))
        // Text with no statement in it compiles to none: nothing to keep.
        guard let statement else { return try run(nil, parameters) }
        if cache.count >= Self.cacheLimit {
            for cached in cache.values { sqlite3_finalize(cached) }
            cache.removeAll(keepingCapacity: true)
        }
        cache[sql] = statement
        return try run(statement, parameters)
    }

    /// A statement compiled once, to run many times (a queue's insert).
    package func prepare(_ sql: String) throws -> PreparedStatement {
        lock.lock()
        defer { lock.unlock() }
        var statement: OpaquePointer?
        try check(sqlite3_prepare_v2(handle, sql, -1, &statement, nil))
        return PreparedStatement(database: self, statement: statement)
    }

    fileprivate func run(_ statement: OpaquePointer?, _ parameters: [SQLValue]) throws -> [[SQLValue]] {
        lock.lock()
        defer { lock.unlock() }
        sqlite3_reset(statement)
        sqlite3_clear_bindings(statement)
        // Reset when done, so that a statement kept for later holds no read lock meanwhile.
        defer { sqlite3_reset(statement) }
        for (index, parameter) in parameters.enumerated() {
            let position = Int32(index + 1)
            switch parameter {
            case .null: try check(sqlite3_bind_null(statement, position))
            case .integer(let value): try check(sqlite3_bind_int64(statement, position, value))
            case .real(let value): try check(sqlite3_bind_double(statement, position, value))
            case .text(let value): try check(sqlite3_bind_text(statement, position, value, -1, transient))
            case .blob(let bytes):
                try bytes.withUnsafeBytes { buffer in
                    try check(sqlite3_bind_blob(statement, position, buffer.baseAddress, Int32(buffer.count), transient))
                }
            }
        }
        var rows: [[SQLValue]] = []
        while true {
            let code = sqlite3_step(statement)
            if code == SQLITE_DONE { break }
            guard code == SQLITE_ROW else { try check(code); break }
            let columns = sqlite3_column_count(statement)
            var row: [SQLValue] = []
            row.reserveCapacity(Int(columns))
            for column in 0..<columns {
                switch sqlite3_column_type(statement, column) {
                case SQLITE_INTEGER: row.append(.integer(sqlite3_column_int64(statement, column)))
                case SQLITE_FLOAT: row.append(.real(sqlite3_column_double(statement, column)))
                case SQLITE_TEXT: row.append(.text(String(cString: sqlite3_column_text(statement, column))))
                case SQLITE_BLOB:
                    let count = Int(sqlite3_column_bytes(statement, column))
                    if let pointer = sqlite3_column_blob(statement, column) {
                        row.append(.blob(Array(UnsafeRawBufferPointer(start: pointer, count: count))))
                    } else {
                        row.append(.blob([]))
                    }
                case SQLITE_NULL: row.append(.null)
                default: row.append(.text(String(cString: sqlite3_column_text(statement, column))))
                }
            }
            rows.append(row)
        }
        return rows
    }

    /// What tells one state of the database from another: SQLite's `data_version` (moves when
    /// another connection commits) and this connection's own changes. Equal versions, read in
    /// transactions, saw the same data.
    package struct Version: Equatable, Sendable {
        let committedElsewhere: Int64
        let changedHere: Int64
    }

    /// Whether a transaction is open on this connection (whose changes may yet be rolled back).
    package var inTransaction: Bool {
        lock.lock()
        defer { lock.unlock() }
        return sqlite3_get_autocommit(handle) == 0
    }

    /// The database's version now (see `Version`); inside a transaction, the one it reads.
    package func version() throws -> Version {
        lock.lock()
        defer { lock.unlock() }
        let committed = try query("PRAGMA data_version").first?.first?.integer ?? -1
        return Version(committedElsewhere: committed, changedHere: sqlite3_total_changes64(handle))
    }

    /// Runs `body`'s queries in one read transaction: one consistent view, and one lock and
    /// journal check for all of them instead of one per query. Inside a transaction already,
    /// just runs `body`.
    package func read<T>(_ body: () throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        guard sqlite3_get_autocommit(handle) != 0 else { return try body() }
        return try within("BEGIN DEFERRED", body)
    }

    /// Runs `body` in one transaction: committed when it returns, rolled back when it throws.
    package func transaction<T>(_ body: () throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        return try within("BEGIN IMMEDIATE", body)
    }

    /// `body` between `begin` and COMMIT, or ROLLBACK when it throws; the caller holds the lock.
    private func within<T>(_ begin: String, _ body: () throws -> T) throws -> T {
        try query(begin)
        do {
            let result = try body()
            try query("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    fileprivate func check(_ code: Int32) throws {
        guard code == SQLITE_OK || code == SQLITE_ROW || code == SQLITE_DONE else {
            throw SQLiteError(code: code, message: String(cString: sqlite3_errmsg(handle)))
        }
    }
}

/// One step of a store's schema, applied once, in order (GRDB's `DatabaseMigrator` in small).
package struct Migration: Sendable {
    /// The schema version this step brings the store to (1, 2, 3…).
    package let version: Int
    /// What the step does, for errors.
    package let name: String
    let sql: String

    /// A step made of SQL statements without parameters.
    package init(_ version: Int, _ name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

/// Brings a store's schema up to date: the version is kept in SQLite's `user_version`; each
/// pending migration runs in its own transaction together with the version change, so a store
/// is always at one version or the next, never between. A store written by a newer program
/// (a version this one does not know) is refused rather than misread.
package struct Migrator: Sendable {
    package let migrations: [Migration]

    package init(_ migrations: [Migration]) {
        precondition(migrations.map(\.version) == Array(1...migrations.count), "migrations are numbered 1, 2, 3… in order")
        self.migrations = migrations
    }

    /// The newest version this program knows.
    package var latest: Int { migrations.count }

    /// Applies the pending migrations; returns the versions applied.
    @discardableResult
    package func migrate(_ database: Database, store: String) throws -> [Int] {
        let current = try database.userVersion()
        guard current <= latest else {
            throw SQLiteError(code: 0, message: "\(store) has schema version \(current), newer than this tether knows (\(latest)): it was written by a newer release; upgrade tether or restore a backup")
        }
        var applied: [Int] = []
        for migration in migrations where migration.version > current {
            try database.transaction {
                // Another process may have migrated meanwhile: the write lock is ours now, look again.
                guard try database.userVersion() < migration.version else { return }
                do {
                    try database.execute(migration.sql)
                } catch let error as SQLiteError {
                    throw SQLiteError(code: error.code, message: "\(store): migration \(migration.version) (\(migration.name)) failed: \(error.message)")
                }
                try database.execute("PRAGMA user_version = \(migration.version)")
                applied.append(migration.version)
            }
        }
        return applied
    }
}

extension Database {
    /// The schema version (`PRAGMA user_version`): 0 for a store that never had one.
    package func userVersion() throws -> Int {
        Int(try query("PRAGMA user_version").first?.first?.integer ?? 0)
    }
}

/// The SQLite this process runs with (`3.40.1`).
package var sqliteVersion: String {
    guard tether_sqlite_loaded() != 0 else { return SQLITE_VERSION }
    return String(cString: sqlite3_libversion())
}

/// A compiled statement of one database, finalized when it goes; used on that database's thread.
package final class PreparedStatement {
    private let database: Database
    private let statement: OpaquePointer?

    fileprivate init(database: Database, statement: OpaquePointer?) {
        self.database = database
        self.statement = statement
    }

    /// Runs it with these parameters and returns its rows.
    @discardableResult
    package func query(_ parameters: [SQLValue]) throws -> [[SQLValue]] {
        try database.run(statement, parameters)
    }

    deinit { sqlite3_finalize(statement) }
}
