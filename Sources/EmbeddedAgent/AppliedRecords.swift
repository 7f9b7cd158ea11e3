import AgentInterface
import Foundation
import SQLiteDB

extension Agent {
    /// The last applied desired state.
    public func appliedState() throws -> AppliedState {
        try storeAccess {
            var values: [String: String] = [:]
            var revision: String?
            var at: Date?
            for row in try database.query("SELECT key, value FROM applied") {
                guard let key = row[0].text, let value = row[1].text else { continue }
                values[key] = value
            }
            if let row = try database.query("SELECT revision, at FROM applied_revision WHERE id = 1").first {
                revision = row[0].text
                at = row[1].real.map { Date(timeIntervalSince1970: $0) }
            }
            return AppliedState(values: values, revision: revision, at: at)
        }
    }

    /// Replaces the last applied desired state (none, with a nil revision); call inside the apply's transaction.
    public func recordApplied(_ values: [String: String], revision: String?) throws {
        try atomically {
            try database.execute("DELETE FROM applied; DELETE FROM applied_revision;")
            guard let revision else { return }
            let now = Date().timeIntervalSince1970
            // The revision has a row of its own: a device whose policies manage no key still has one.
            try database.query("INSERT INTO applied_revision (id, revision, at) VALUES (1, ?, ?)", [.text(revision), .real(now)])
            for (key, value) in values {
                try database.query("INSERT INTO applied (key, value, revision, at) VALUES (?, ?, ?, ?)",
                                   [.text(key), .text(value), .text(revision), .real(now)])
            }
        }
    }
}
