import Foundation
import IntegrationModel
import Policy
import Reconciler

/// Renders a report for people: a one-line summary first, findings grouped by integration
/// with the policy line that declared each desired value, then the ordered steps.
public struct TextReport {
    /// Colour only where a person reads a terminal (and NO_COLOR is unset).
    public var colour: Bool

    public init(colour: Bool) {
        self.colour = colour
    }

    public func render(_ report: Report) -> String {
        var lines: [String] = [summary(report), ""]
        lines.append("  revision  \(report.revision.prefix(12))  \(report.revisionSummary)")
        lines.append("  source    \(report.source.repository) @ \(report.source.ref ?? "HEAD"), folder \(report.source.path)")
        let labels = report.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
        lines.append("  device    labels: \(labels.isEmpty ? "(none)" : labels)")
        lines.append("  policies  \(report.policies.isEmpty ? "(none select this device)" : report.policies.joined(separator: ", "))")

        if !report.findings.isEmpty {
            let width = min(34, report.findings.map { $0.key.description.count }.max() ?? 0)
            for scope in SettingCatalog.scopes {
                let group = report.findings.filter { $0.key.scope == scope }
                guard !group.isEmpty else { continue }
                lines.append("")
                lines.append(bold(heading(scope)))
                for finding in group {
                    let name = finding.key.description.padding(toLength: max(width, finding.key.description.count), withPad: " ", startingAt: 0)
                    let symbol = self.symbol(for: finding)
                    lines.append("  \(symbol) \(name)  \(finding.actual) → \(finding.desired)")
                    var where_ = "      declared at \(finding.source.shortDescription)"
                    if let change = finding.lastChange {
                        where_ += "; last changed \(Self.timestamp(change.at)) by \(change.actor)"
                    }
                    lines.append(dim(where_))
                }
            }
        }

        if !report.steps.isEmpty {
            lines.append("")
            let title: String
            switch report.kind {
            case .apply: title = "Applied, in this order:"
            case .plan: title = "Steps, in this order:"
            case .drift: title = "To restore, apply would, in this order:"
            }
            lines.append(bold(title))
            for (index, step) in report.steps.enumerated() {
                lines.append("  \(index + 1). \(step)")
            }
            for integration in report.restarts {
                lines.append("  (\(integration.displayName) restarts: its mode changes while it runs)")
            }
        }

        switch report.kind {
        case .plan where !report.steps.isEmpty:
            lines.append("")
            lines.append("Run `tether apply` with the same --repo, --ref and --path to make these changes.")
        case .drift where !report.inSync:
            lines.append("")
            lines.append("Run `tether apply` to restore what git declares, or change the policy in git to keep the agent's value.")
        default:
            break
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func summary(_ report: Report) -> String {
        let count = report.findings.count
        let noun = count == 1 ? "setting" : "settings"
        let revision = String(report.revision.prefix(12))
        switch report.kind {
        case .plan:
            if report.steps.isEmpty { return green("No changes.") + " The agent matches revision \(revision): \(report.managedKeys) managed settings in sync." }
            return yellow("Plan: \(count) \(noun) to change") + " on this agent to match revision \(revision) (shown as actual → desired)."
        case .apply:
            if report.steps.isEmpty { return green("Nothing to apply.") + " The agent already matches revision \(revision)." }
            return green("Applied: \(count) \(noun) changed") + " to match revision \(revision)."
        case .drift:
            if report.inSync { return green("In sync.") + " All \(report.managedKeys) managed settings match revision \(revision)." }
            return red("Drift: \(count) \(noun) \(count == 1 ? "differs" : "differ")") + " from revision \(revision) (shown as actual → desired)."
        }
    }

    private func heading(_ scope: SettingScope) -> String {
        switch scope {
        case .app: return "App-wide"
        case .integration(let integration): return "\(integration.displayName) (\(integration.taskName))"
        }
    }

    private func symbol(for finding: Finding) -> String {
        switch (finding.actual, finding.desired) {
        case (.none, _): return green("+")
        case (_, .none): return red("-")
        default: return yellow("~")
        }
    }

    static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }

    private func paint(_ text: String, _ code: String) -> String { colour ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text }
    private func bold(_ text: String) -> String { paint(text, "1") }
    private func dim(_ text: String) -> String { paint(text, "2") }
    private func red(_ text: String) -> String { paint(text, "31") }
    private func green(_ text: String) -> String { paint(text, "32") }
    private func yellow(_ text: String) -> String { paint(text, "33") }
}
