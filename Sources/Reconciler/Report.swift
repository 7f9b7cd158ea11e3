import ConnectorCore
import Foundation
import IntegrationModel
import Planner
import Policy
import PolicySource

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
    /// The device's host name.
    public let host: String
    public let labels: [String: String]
    /// The policies that selected this device, highest priority first.
    public let policies: [String]
    /// Every managed key with the policy line that declared it.
    public let managed: [(key: DesiredKey, source: SourceLocation)]
    public let findings: [Finding]
    public let steps: [PlanStep]
    public let restarts: [Integration]
    /// For `apply`: whether the steps were applied.
    public let applied: Bool
    /// The revision Tether last applied to this agent, and when.
    public let lastAppliedRevision: String?
    public let lastAppliedAt: Date?
    /// Things people should know that are not findings (what an offline plan could not check).
    public let notes: [String]
    /// Each connector's connection health (drift reports on a device).
    public var health: [ConnectorStatus] = []
    /// The embedded agent's sensors, as the controller last ran them (drift reports on a device).
    public var sensors: [SensorReport] = []

    /// In sync when nothing but accepted exceptions differs.
    public var inSync: Bool { !findings.contains { $0.kind.isProblem } }

    public var managedKeys: Int { managed.count }

    public init(kind: Kind, revision: PolicyRevision, host: String, labels: [String: String], desired: ResolvedDesiredState,
                plan: Plan, applied: Bool = false, lastApplied: (revision: String?, at: Date?) = (nil, nil),
                notes: [String] = [], generatedAt: Date = Date()) {
        self.kind = kind
        self.revision = revision.commit.id
        self.revisionSummary = revision.commit.summary
        self.source = revision.spec
        self.generatedAt = generatedAt
        self.host = host
        self.labels = labels
        self.policies = desired.policies
        self.managed = plan.managed
        self.findings = plan.findings
        self.steps = plan.steps
        self.restarts = plan.restarts
        self.applied = applied
        self.lastAppliedRevision = lastApplied.revision
        self.lastAppliedAt = lastApplied.at
        self.notes = notes
    }

    /// Findings by integration (app-wide first), in catalog order.
    public var findingsByScope: [(scope: SettingScope, findings: [Finding])] {
        SettingCatalog.scopes.compactMap { scope in
            let group = findings.filter { $0.key.scope == scope }
            return group.isEmpty ? nil : (scope, group)
        }
    }

    /// How many findings of each kind.
    public var counts: [FindingKind: Int] {
        Dictionary(grouping: findings, by: \.kind).mapValues(\.count)
    }
}

extension SettingScope {
    /// "EDR (KATAEDR)", or "App-wide".
    public var heading: String {
        switch self {
        case .app: return "App-wide"
        case .integration(let integration): return "\(integration.displayName) (\(integration.taskName))"
        }
    }
}
