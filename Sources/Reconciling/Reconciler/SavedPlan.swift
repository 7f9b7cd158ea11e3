import AgentInterface
import FoundationEssentials
import IntegrationModel
import Planner
import X509

/// A reviewed plan, saved to apply exactly later (terraform's `plan -out` / `apply PLANFILE`):
/// the revision, the agent's state it was computed against (a digest), Tether's version and
/// each step in full (`PlanStep.fingerprint`). `apply --plan-file` applies it only while
/// all of them still hold, and changes nothing otherwise. No secret is in it.
package struct SavedPlan: Codable, Sendable, Equatable {
    package static let format = "tether-plan/1"

    package let format: String
    /// The tether that made it; another one refuses it (its planner may differ).
    package let tether: String
    package let revision: String
    package let repository: String
    package let ref: String
    /// `--prune` when planned.
    package let prune: Bool
    /// SHA-256 of the agent's state and applied record when planned.
    package let agentState: String
    /// SHA-256 of the desired values an apply records (which keys Tether manages, and how).
    package let desired: String
    /// The device's labels the policies were selected by.
    package let labels: [String: String]
    package let createdAt: String
    package let steps: [Step]

    package struct Step: Codable, Sendable, Equatable {
        /// For people: `set edr.port: 443 → 8443`.
        package let description: String
        /// The step in full, as `PlanStep.fingerprint` says it.
        package let fingerprint: String
    }

    /// Why a saved plan cannot be applied as it is; nothing was changed.
    package struct Stale: Error, CustomStringConvertible {
        package let description: String
        package init(_ description: String) { self.description = description }
    }

    /// The digest of an agent's state and applied record, as a saved plan keeps it.
    static func digest(state: AgentState, applied: AppliedState) -> String {
        let document = AgentSnapshot(takenAt: Date(timeIntervalSince1970: 0), host: "", labels: [:], state: state, applied: applied).json()
        return sha256Hex(Array(document.utf8))
    }

    /// The digest of the desired values a plan would record.
    static func digest(desired: [DesiredKey: String]) -> String {
        sha256Hex(Array(desired.map { "\($0.key)\u{0}\($0.value)" }.sorted().joined(separator: "\n").utf8))
    }

    /// Checks that `plan`, computed now against `state` for `labels`, is the one saved.
    func check(_ plan: Plan, state: AgentState, applied: AppliedState, labels: [String: String]) throws {
        guard labels == self.labels else {
            throw Stale("the device's labels changed since the plan was saved; run tether plan --plan-file again and review it")
        }
        guard Self.digest(desired: plan.desiredValues) == desired else {
            throw Stale("what the apply would record as managed changed since the plan was saved (a policy file the device reads, or the configuration); run tether plan --plan-file again and review it")
        }
        guard Self.digest(state: state, applied: applied) == agentState else {
            throw Stale("the agent changed since the plan was saved (a setting, a certificate or an apply); run tether plan --plan-file again and review it")
        }
        guard plan.steps.map(\.fingerprint) == steps.map(\.fingerprint) else {
            throw Stale("the steps differ from the saved plan's (a device file it reads changed); run tether plan --plan-file again and review it")
        }
    }
}

extension Reconciliation {
    /// This comparison's plan, to save and apply exactly later.
    package func saved(tether version: String, repository: String, ref: String) -> SavedPlan {
        SavedPlan(format: SavedPlan.format, tether: version, revision: revision.commit.id, repository: repository, ref: ref, prune: prune,
                  agentState: SavedPlan.digest(state: actual, applied: applied), desired: SavedPlan.digest(desired: plan.desiredValues),
                  labels: labels, createdAt: Timestamp.string(Date()),
                  steps: plan.steps.map { SavedPlan.Step(description: $0.description, fingerprint: $0.fingerprint) })
    }
}
