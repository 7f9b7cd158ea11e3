import ConnectorCore
import FoundationEssentials
import IntegrationModel
import Planner
import Policy
import PolicySource

/// Everything a plan, apply or drift report says, for the renderers in `Reports`.
package struct Report: Sendable {
    package enum Kind: String, Sendable {
        case plan, apply, drift
    }

    package let kind: Kind
    /// The commit id the desired state came from.
    package let revision: String
    package let revisionSummary: String
    package let source: SourceSpec
    package let generatedAt: Date
    /// The device's host name.
    package let host: String
    package let labels: [String: String]
    /// The policies that selected this device, highest priority first.
    package let policies: [String]
    /// Every managed key with the policy line that declared it.
    package let managed: [(key: DesiredKey, source: SourceLocation)]
    package let findings: [Finding]
    package let steps: [PlanStep]
    package let restarts: [Integration]
    /// For `apply`: whether the steps were applied.
    package let applied: Bool
    /// The revision Tether last applied to this agent, and when.
    package let lastAppliedRevision: String?
    package let lastAppliedAt: Date?
    /// Things people should know that are not findings (what an offline plan could not check).
    package let notes: [String]
    /// Each connector's connection health (drift reports on a device).
    package var health: [ConnectorStatus] = []
    /// The embedded agent's sensors, as the controller last ran them (drift reports on a device).
    package var sensors: [SensorReport] = []
    /// The platform's network isolation, as ordered and as the kernel holds it (drift reports
    /// on a device that was ever isolated).
    package var isolation: IsolationStatus?
    /// Which device (kind) an offline plan stands for: the snapshot's file name, so that the
    /// plans of several snapshots taken on one machine stay apart (SARIF categories).
    package var device: String?

    /// In sync when nothing but accepted exceptions differs.
    package var inSync: Bool { !findings.contains { $0.kind.isProblem } }

    package var managedKeys: Int { managed.count }

    package init(kind: Kind, revision: PolicyRevision, host: String, labels: [String: String], desired: ResolvedDesiredState,
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
    package var findingsByScope: [(scope: SettingScope, findings: [Finding])] {
        SettingCatalog.scopes.compactMap { scope in
            let group = findings.filter { $0.key.scope == scope }
            return group.isEmpty ? nil : (scope, group)
        }
    }

    /// How many findings of each kind.
    package var counts: [FindingKind: Int] {
        Dictionary(grouping: findings, by: \.kind).mapValues(\.count)
    }
}

extension SettingScope {
    /// "EDR (KATAEDR)", or "App-wide".
    package var heading: String {
        switch self {
        case .app: return "App-wide"
        case .integration(let integration): return "\(integration.displayName) (\(integration.taskName))"
        }
    }
}
