import Foundation
import SQLiteDB

/// What Tether last applied: each managed key's value (in a canonical text form) and the revision.
public struct AppliedState: Sendable {
    public let values: [String: String]
    public let revision: String?
    public let at: Date?

    public static let none = AppliedState(values: [:], revision: nil, at: nil)
}

extension Agent {
    /// The last applied desired state.
    public func appliedState() throws -> AppliedState {
        try storeAccess {
            var values: [String: String] = [:]
            var revision: String?
            var at: Date?
            for row in try database.query("SELECT key, value, revision, at FROM applied ORDER BY at") {
                guard let key = row[0].text, let value = row[1].text else { continue }
                values[key] = value
                revision = row[2].text
                at = row[3].real.map { Date(timeIntervalSince1970: $0) }
            }
            return AppliedState(values: values, revision: revision, at: at)
        }
    }

    /// Replaces the last applied desired state (none, with a nil revision); call inside the apply's transaction.
    public func recordApplied(_ values: [String: String], revision: String?) throws {
        try atomically {
            try database.execute("DELETE FROM applied")
            guard let revision else { return }
            let now = Date().timeIntervalSince1970
            for (key, value) in values {
                try database.query("INSERT INTO applied (key, value, revision, at) VALUES (?, ?, ?, ?)",
                                   [.text(key), .text(value), .text(revision), .real(now)])
            }
        }
    }
}
