import FoundationEssentials
import IntegrationModel
import Planner
import Policy
import PolicySource
import Reconciler
import Primitives

/// A pull-request comment: a summary line and table, then the findings and steps.
package enum MarkdownReport {
    package static func render(_ report: Report) -> String {
        var lines: [String] = []
        let icon = report.inSync && report.steps.isEmpty ? "✅" : (report.findings.contains { $0.kind == .unenforceable || $0.kind == .conflict || $0.kind == .expired || $0.kind == .notYetValid } ? "❌" : "⚠️")
        lines.append("### \(icon) Tether \(report.kind.rawValue) on `\(cell(report.host))`: \(headline(report))")
        lines.append("")
        lines.append("Revision `\(report.revision.prefix(12))` (\(cell(report.revisionSummary))) from `\(cell(report.source.reviewName))`, folder `\(cell(report.source.path))`; policies: \(report.policies.isEmpty ? "none" : report.policies.map { "`\($0)`" }.joined(separator: ", ")).")
        lines.append("")
        lines.append("| Integration | Managed | Findings | By kind |")
        lines.append("|---|---:|---:|---|")
        for scope in SettingCatalog.scopes {
            let managed = report.managed.filter { $0.key.scope == scope }.count
            let findings = report.findings.filter { $0.key.scope == scope }
            guard managed > 0 || !findings.isEmpty else { continue }
            let kinds = Dictionary(grouping: findings, by: \.kind).sorted { $0.key.rawValue < $1.key.rawValue }
                .map { "\($0.value.count) \($0.key.label)" }.joined(separator: ", ")
            lines.append("| \(scope.heading) | \(managed) | \(findings.count) | \(kinds) |")
        }
        if !report.findings.isEmpty {
            lines.append("")
            lines.append("<details open><summary>Findings (\(report.findings.count))</summary>")
            lines.append("")
            lines.append("| Path | Kind | Actual | Desired | Declared at | Details | Step |")
            lines.append("|---|---|---|---|---|---|---:|")
            for finding in report.findings {
                // The numbered step below that makes this change, if the plan makes one.
                let step = report.steps.firstIndex { $0.key == finding.key }.map { "\($0 + 1)" } ?? ""
                var details: [String] = []
                if let change = finding.lastChange { details.append("changed \(ReportFormatting.timestamp(change.at)) by \(change.actor)") }
                if let noticed = finding.noticedAt { details.append("noticed \(ReportFormatting.timestamp(noticed))") }
                if let reason = finding.reason { details.append(reason) }
                lines.append("| `\(finding.key)` | \(finding.kind.label)\(finding.mode == .observe ? " (observe)" : "") | `\(cell(finding.actual.description))` | `\(cell(finding.desired.description))` | `\(finding.source.shortDescription)` | \(cell(details.joined(separator: "; "))) | \(step) |")
            }
            lines.append("")
            lines.append("</details>")
        }
        if !report.steps.isEmpty {
            lines.append("")
            lines.append(report.kind == .apply ? "**Applied, in this order:**" : "**Steps, in this order:**")
            lines.append("")
            for (index, step) in report.steps.enumerated() { lines.append("\(index + 1). \(cell(step.description))") }
        }
        if !report.health.isEmpty {
            lines += ["", "| Connector | State | Server | Last contact | Queue | Last error |", "|---|---|---|---|---:|---|"]
            for status in report.health {
                lines.append("| \(status.integration.displayName) | \(status.state) | \(status.server ?? "") | \(status.lastSuccess.map(ReportFormatting.timestamp) ?? "never") | \(status.queueDepth) | \(cell(status.running ? status.lastError ?? "" : "")) |")
            }
        }
        if !report.sensors.isEmpty {
            lines += ["", "| Sensor | State | Source | Note |", "|---|---|---|---|"]
            for sensor in report.sensors {
                lines.append("| \(sensor.status.sensor.rawValue) | \(sensor.isRunning ? "running" : "stopped") | \(cell(sensor.status.source)) | \(cell(sensor.status.note ?? "")) |")
            }
        }
        if let isolation = report.isolation { lines += ["", "**Network isolation:** \(cell(ReportFormatting.isolation(isolation)))"] }
        for note in report.notes {
            lines.append("")
            lines.append("> \(note)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func headline(_ report: Report) -> String {
        if report.inSync && report.steps.isEmpty { return "in sync (\(report.managedKeys) managed settings)" }
        let steps = report.steps.isEmpty ? "" : ", \(report.steps.count) step\(report.steps.count == 1 ? "" : "s")"
        return ReportFormatting.breakdown(report) + steps
    }

    /// Text safe inside a table cell.
    static func cell(_ text: String) -> String {
        text.replacingAll("|", with: "\\|").replacingAll("\n", with: " ").replacingAll("`", with: "'")
    }
}

/// One self-contained HTML page (no external assets) that a person opens in a browser.
package enum HTMLReport {
    package static func render(_ report: Report) -> String {
        var body = ""
        let status = report.inSync && report.steps.isEmpty ? "ok" : (report.findings.contains { [.unenforceable, .conflict, .expired, .notYetValid, .drift].contains($0.kind) } ? "bad" : "warn")
        body += "<header class=\"\(status)\"><h1>Tether \(report.kind.rawValue): \(escape(report.host))</h1>"
        body += "<p class=\"summary\">\(escape(MarkdownReport.headline(report)))</p></header>\n"
        body += "<dl class=\"facts\">"
        body += fact("Revision", "<code>\(escape(String(report.revision.prefix(12))))</code> \(escape(report.revisionSummary))")
        body += fact("Source", "\(escape(report.source.reviewName)) @ \(escape(report.source.ref ?? "HEAD")), folder \(escape(report.source.path))")
        body += fact("Labels", escape(report.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")))
        body += fact("Policies", escape(report.policies.joined(separator: ", ")))
        if let applied = report.lastAppliedRevision { body += fact("Last applied", "<code>\(escape(String(applied.prefix(12))))</code>") }
        body += fact("Generated", escape(ReportFormatting.timestamp(report.generatedAt)))
        body += "</dl>\n"
        body += cards(report)
        for scope in SettingCatalog.scopes {
            let managed = report.managed.filter { $0.key.scope == scope }
            let findings = report.findings.filter { $0.key.scope == scope }
            guard !managed.isEmpty || !findings.isEmpty else { continue }
            body += "<section><h2>\(escape(scope.heading))</h2>\n<table><thead><tr><th>Setting</th><th>Status</th><th>Actual</th><th>Desired</th><th>Declared at</th><th>Details</th></tr></thead><tbody>\n"
            var shown = Set<String>()
            for finding in findings {
                shown.insert(finding.key.description)
                var details: [String] = []
                if let change = finding.lastChange { details.append("changed \(ReportFormatting.timestamp(change.at)) by \(change.actor)") }
                if let noticed = finding.noticedAt { details.append("noticed \(ReportFormatting.timestamp(noticed))") }
                if let reason = finding.reason { details.append(reason) }
                body += "<tr class=\"\(finding.kind.rawValue)\"><td><code>\(escape(finding.key.description))</code></td><td><span class=\"badge \(finding.kind.rawValue)\">\(escape(finding.kind.label))\(finding.mode == .observe ? " · observe" : "")</span></td>"
                body += "<td>\(escape(finding.actual.description))</td><td>\(escape(finding.desired.description))</td>"
                body += "<td><code>\(escape(finding.source.shortDescription))</code></td><td>\(escape(details.joined(separator: "; ")))</td></tr>\n"
            }
            for entry in managed where !shown.contains(entry.key.description) {
                body += "<tr class=\"in-sync\"><td><code>\(escape(entry.key.description))</code></td><td><span class=\"badge in-sync\">in sync</span></td><td colspan=\"2\"></td><td><code>\(escape(entry.source.shortDescription))</code></td><td></td></tr>\n"
            }
            body += "</tbody></table></section>\n"
        }
        if !report.steps.isEmpty {
            body += "<section><h2>\(report.kind == .apply ? "Applied, in this order" : "Steps, in this order")</h2><ol>"
            for step in report.steps { body += "<li>\(escape(step.description))</li>" }
            body += "</ol></section>\n"
        }
        if !report.health.isEmpty {
            body += "<section><h2>Health</h2><table><thead><tr><th>Connector</th><th>State</th><th>Server</th><th>Last contact</th><th>Queue</th><th>Last error</th></tr></thead><tbody>"
            for status in report.health {
                let badge = status.state == "connected" ? "in-sync" : (status.state == "failing" ? "drift" : "excepted")
                body += "<tr><td>\(escape(status.integration.displayName))</td><td><span class=\"badge \(badge)\">\(escape(status.state))</span></td><td>\(escape(status.server ?? ""))</td>"
                body += "<td>\(escape(status.lastSuccess.map(ReportFormatting.timestamp) ?? "never"))</td><td>\(status.queueDepth)</td><td>\(escape(status.running ? status.lastError ?? "" : ""))</td></tr>"
            }
            body += "</tbody></table></section>\n"
        }
        if !report.sensors.isEmpty {
            body += "<section><h2>Sensors</h2><table><thead><tr><th>Sensor</th><th>State</th><th>Source</th><th>Note</th></tr></thead><tbody>"
            for sensor in report.sensors {
                body += "<tr><td>\(escape(sensor.status.sensor.rawValue))</td><td>\(sensor.isRunning ? "running" : "stopped")</td>"
                body += "<td>\(escape(sensor.status.source))</td><td>\(escape(sensor.status.note ?? ""))</td></tr>"
            }
            body += "</tbody></table></section>\n"
        }
        if let isolation = report.isolation {
            body += "<section><h2>Network isolation</h2><p>\(escape(ReportFormatting.isolation(isolation)))</p></section>\n"
        }
        for note in report.notes { body += "<p class=\"note\">\(escape(note))</p>\n" }
        return page(title: "Tether \(report.kind.rawValue) — \(report.host)", body: body)
    }

    private static func cards(_ report: Report) -> String {
        var html = "<div class=\"cards\">"
        html += "<div class=\"card\"><b>\(report.managedKeys)</b><span>managed</span></div>"
        for kind in FindingKind.allCases {
            guard let count = report.counts[kind] else { continue }
            html += "<div class=\"card \(kind.rawValue)\"><b>\(count)</b><span>\(escape(kind.label))</span></div>"
        }
        html += "<div class=\"card\"><b>\(report.steps.count)</b><span>steps</span></div></div>\n"
        return html
    }

    private static func fact(_ name: String, _ html: String) -> String { "<dt>\(name)</dt><dd>\(html)</dd>" }

    /// The page around `body`, with its style inline.
    static func page(title: String, body: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escape(title))</title>
        <style>
        body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1100px;padding:24px;color:#1d2125;background:#fff}
        header{border-left:6px solid #888;padding:4px 16px;margin-bottom:16px}header.ok{border-color:#2e7d32}header.warn{border-color:#ed8b00}header.bad{border-color:#c62828}
        h1{font-size:22px;margin:0}h2{font-size:17px;margin:28px 0 8px}.summary{margin:4px 0;color:#444}
        dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0 0 16px}dt{color:#666}dd{margin:0}
        .cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:90px}
        .card b{display:block;font-size:22px}.card span{color:#555}
        table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #e4e4e4;padding:6px 8px;text-align:left;vertical-align:top}th{background:#f6f7f8}
        code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace}td code{white-space:nowrap}
        .badge{border-radius:10px;padding:1px 8px;font-size:12px;background:#eee;white-space:nowrap}
        .badge.in-sync{background:#e3f1e4;color:#1b5e20}.badge.drift,.badge.conflict,.badge.expired,.badge.not-yet-valid,.badge.unenforceable{background:#fde2e1;color:#8e1b1b}
        .badge.pending,.badge.expiring,.badge.exception-expired{background:#fff1d6;color:#7a4b00}.badge.excepted{background:#eceff1;color:#455a64}
        .card.drift b,.card.conflict b,.card.expired b,.card.not-yet-valid b,.card.unenforceable b{color:#c62828}.card.pending b,.card.expiring b{color:#b26a00}
        .note{background:#f6f7f8;padding:8px 12px;border-radius:6px}
        </style></head>
        <body>
        \(body)
        </body></html>

        """
    }

    /// By Unicode scalar, not by character: a quote or `<` followed by a combining mark is one
    /// character, and must still be escaped.
    static func escape(_ text: String) -> String {
        var result = ""
        result.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&#39;"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }
}
