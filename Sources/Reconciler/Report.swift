import Foundation
import IntegrationModel
import Policy

/// Everything a plan, apply or drift report says, for the renderers in `Reports`.
public struct Report: Sendable {
    public enum Kind: String, Sendable {
        case plan, apply, drift
    }

    public let kind: Kind
    /// The commit id the desired state came from.
    public let revision: String
    public let revisionSummary: String
    public let source: SourceSpec
    public let generatedAt: Date
    public let labels: [String: String]
    /// The policies that selected this device, highest priority first.
    public let policies: [String]
    /// How many keys the policies manage on this device.
    public let managedKeys: Int
    public let findings: [Finding]
    public let steps: [PlanStep]
    public let restarts: [Integration]
    /// For `apply`: whether the steps were applied.
    public let applied: Bool

    public var inSync: Bool { findings.isEmpty }

    public init(kind: Kind, revision: PolicyRevision, labels: [String: String], desired: ResolvedDesiredState,
                plan: Plan, applied: Bool = false, generatedAt: Date = Date()) {
        self.kind = kind
        self.revision = revision.commit.id
        self.revisionSummary = revision.commit.summary
        self.source = revision.spec
        self.generatedAt = generatedAt
        self.labels = labels
        self.policies = desired.policies
        self.managedKeys = desired.values.count
        self.findings = plan.findings
        self.steps = plan.steps
        self.restarts = plan.restarts
        self.applied = applied
    }
}

