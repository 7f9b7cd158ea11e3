import ConnectorCore
import Firewall
import FoundationEssentials
import IntegrationModel
import Planner
import Policy
import PolicySource
import Reconciler
import Primitives

/// Renders a report for people: a one-line summary first, findings grouped by integration
/// with their cause and the policy line that declared each desired value, then the ordered steps.
package struct TextReport {
    /// Colour only where a person reads a terminal (and NO_COLOR is unset).
    package var colour: Bool

    package init(colour: Bool) {
        self.colour = colour
    }

    /// The report, every value escaped and Tether's colours applied after (`StyledText`).
    package func render(_ report: Report) -> String {
        var lines: [StyledText] = [summary(report), ""]
        lines.append("  revision  \(report.revision.prefix(12))  \(report.revisionSummary)")
        lines.append("  source    \(report.source.displayRepository) @ \(report.source.ref ?? "HEAD"), folder \(report.source.path)")
        let labels = report.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
        lines.append("  device    \(report.host), labels: \(labels.isEmpty ? "(none)" : labels)")
        lines.append("  policies  \(report.policies.isEmpty ? "(none select this device)" : report.policies.joined(separator: ", "))")
        if let applied = report.lastAppliedRevision {
            lines.append("  applied   \(applied.prefix(12))\(report.lastAppliedAt.map { " at \(ReportFormatting.timestamp($0))" } ?? "")")
        }

        if !report.findings.isEmpty {
            let width = min(34, report.findings.map { $0.key.description.count }.max() ?? 0)
            for (scope, group) in report.findingsByScope {
                lines.append("")
                lines.append(bold(scope.heading))
                for finding in group {
                    let name = finding.key.description.padded(to: max(width, finding.key.description.count))
                    lines.append("  \(symbol(for: finding)) \(name)  \(finding.actual) → \(finding.desired)  \(tag(finding))")
                    var detail = "declared at \(finding.source.shortDescription)"
                    if let change = finding.lastChange {
                        detail += "; changed \(ReportFormatting.timestamp(change.at)) by \(change.actor)"
                    }
                    if let noticed = finding.noticedAt {
                        detail += "; noticed \(ReportFormatting.timestamp(noticed))"
                    }
                    lines.append(dim("      " + detail))
                    if let reason = finding.reason { lines.append(dim("      " + reason)) }
                }
            }
        }

        if !report.steps.isEmpty {
            lines.append("")
            let title: String
            switch report.kind {
            case .apply: title = report.applied ? "Applied, in this order:" : "Undone, as if never applied:"
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
        if !report.health.isEmpty {
            lines.append("")
            lines.append(bold("Health"))
            for status in report.health {
                let name = "\(status.integration.displayName) (\(status.integration.taskName))".padded(to: 22)
                var line: StyledText = "  \(name)"
                switch status.state {
                case "connected": line += green(status.state)
                case "failing": line += red(status.state)
                default: line += StyledText(status.state)
                }
                if let server = status.server { line += " — \(server)" }
                if let success = status.lastSuccess { line += "; last contact \(ReportFormatting.timestamp(success))" }
                if status.running { line += "; queue \(status.queueDepth)" }
                lines.append(line)
                if let error = status.lastError, status.running { lines.append(dim("      last error (\(status.errorKind ?? "error")): \(error)")) }
            }
            for sensor in report.sensors {
                let name = "\(sensor.status.sensor.rawValue) sensor".padded(to: 22)
                lines.append("  \(name)\(sensor.isRunning ? green("running") : "stopped") — \(sensor.status.source)")
                if let note = sensor.status.note { lines.append(dim("      \(note)")) }
            }
            if let isolation = report.isolation { lines.append("  \("network isolation".padded(to: 22))\(ReportFormatting.isolation(isolation))") }
        }
        for note in report.notes {
            lines.append("")
            lines.append("Note: \(note)")
        }

        switch report.kind {
        case .plan where !report.steps.isEmpty:
            lines.append("")
            lines.append("Run `tether apply` with the same --repo, --ref and --path to make these changes.")
        case .drift where report.findings.contains(where: \.corrected):
            lines.append("")
            lines.append("Run `tether apply` to restore what git declares, or change the policy in git to keep the agent's value.")
        default:
            break
        }
        return lines.map { $0.rendered(colour: colour) }.joined(separator: "\n") + "\n"
    }

    private func summary(_ report: Report) -> StyledText {
        let problems = report.findings.filter { $0.kind.isProblem }
        let revision = String(report.revision.prefix(12))
        let breakdown = ReportFormatting.breakdown(report)
        switch report.kind {
        case .plan:
            if report.steps.isEmpty && problems.isEmpty {
                return green("No changes.") + " The agent matches revision \(revision): \(report.managedKeys) managed settings in sync."
            }
            if report.steps.isEmpty { return yellow("No changes to make") + ", but \(breakdown) against revision \(revision)." }
            let count = report.steps.count
            return yellow("Plan: \(count) step\(count == 1 ? "" : "s")") + " to match revision \(revision) (\(breakdown); shown as actual → desired)."
        case .apply:
            if report.steps.isEmpty { return green("Nothing to apply.") + " The agent already matches revision \(revision)." }
            if !report.applied { return red("Not applied") + ": the agent is as it was before (\(breakdown) against revision \(revision)); see the note below." }
            return green("Applied: \(report.steps.count) step\(report.steps.count == 1 ? "" : "s")") + " to match revision \(revision) (\(breakdown))."
        case .drift:
            if report.inSync {
                let excepted = report.counts[.excepted].map { ", \($0) accepted by exceptions" } ?? ""
                return green("In sync.") + " All \(report.managedKeys) managed settings match revision \(revision)\(excepted)."
            }
            return red("Out of sync: \(breakdown)") + " against revision \(revision) (shown as actual → desired)."
        }
    }

    private func tag(_ finding: Finding) -> StyledText {
        let text = "[\(finding.kind.label)\(finding.mode == .observe ? ", observe" : "")]"
        switch finding.kind {
        case .drift, .conflict, .expired, .notYetValid, .unenforceable: return red(text)
        case .pending, .expiring, .exceptionExpired: return yellow(text)
        case .excepted, .released: return dim(text)
        }
    }

    private func symbol(for finding: Finding) -> StyledText {
        switch (finding.actual, finding.desired) {
        case (.none, _): return green("+")
        case (_, .none): return red("!")
        default: return yellow("~")
        }
    }

    private func bold(_ text: String) -> StyledText { StyledText(text, style: .bold) }
    private func dim(_ text: String) -> StyledText { StyledText(text, style: .dim) }
    private func red(_ text: String) -> StyledText { StyledText(text, style: .red) }
    private func green(_ text: String) -> StyledText { StyledText(text, style: .green) }
    private func yellow(_ text: String) -> StyledText { StyledText(text, style: .yellow) }
}

/// Formatting every renderer shares.
package enum ReportFormatting {
    /// ISO 8601 in UTC, to the second.
    package static func timestamp(_ date: Date) -> String { Timestamp.string(date) }

    /// The isolation as the kernel holds it: `off`, `ACTIVE, enforced …` or `ORDERED BUT NOT ENFORCED: why`.
    package static func isolation(_ isolation: IsolationStatus) -> String {
        guard isolation.active else { return "off" }
        let until = isolation.until.map { " until \(ReportFormatting.timestamp($0))" } ?? " until lifted"
        guard isolation.checked else {
            return "ORDERED\(until); whether the kernel enforces it cannot be read here: \(isolation.problem ?? "")"
        }
        guard isolation.enforced else {
            return "ORDERED BUT NOT ENFORCED (the endpoint is not cut off): \(isolation.problem ?? "Tether's nftables table is missing")"
        }
        var text = "ACTIVE\(until), enforced by the nftables table \(Firewall.table) (\(isolation.allowed.count) allowed flow\(isolation.allowed.count == 1 ? "" : "s"))"
        if isolation.reasserted > 0 {
            text += "; put back \(isolation.reasserted) time\(isolation.reasserted == 1 ? "" : "s") after it was removed or changed"
                + (isolation.reassertedAt.map { ", last at \(ReportFormatting.timestamp($0))" } ?? "")
        }
        return text
    }


    /// "1 drift, 2 pending" — counts by kind, in a fixed order.
    package static func breakdown(_ report: Report) -> String {
        let counts = report.counts
        let parts = FindingKind.allCases.compactMap { kind in counts[kind].map { "\($0) \(kind.label)" } }
        return parts.isEmpty ? "no findings" : parts.joined(separator: ", ")
    }
}
