import AgentInterface
import AgentRecords
import FoundationEssentials
import IntegrationModel
import SQLiteDB

extension Agent {
    /// The last applied desired state.
    package func appliedState() throws -> AppliedState {
        try storeAccess { try AgentRecords(database).applied() }
    }

    /// Replaces the last applied desired state (none, with a nil revision); call inside the apply's transaction.
    package func recordApplied(_ values: [DesiredKey: String], revision: String?) throws {
        try atomically { try AgentRecords(database).replaceApplied(values, revision: revision) }
    }
}
