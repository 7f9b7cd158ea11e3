import FoundationEssentials

/// Many devices' JSON reports combined into one fleet view: which devices are in sync, drifting
/// or failing, and which integrations and fields drift across the fleet.
package struct FleetReport {
    /// One device's report, as read from its JSON.
    package struct Device {
        package let file: String
        package let host: String
        package let revision: String
        package let inSync: Bool
        package let generatedAt: String
        /// (path, kind, integration) of each finding.
        package let findings: [(path: String, kind: String, integration: String)]

        /// `in sync`, `drifting`, or `failing` (something cannot be applied, has expired or is not valid yet).
        package var status: String {
            if findings.contains(where: { ["unenforceable", "expired", "not-yet-valid"].contains($0.kind) }) { return "failing" }
            return inSync ? "in sync" : "drifting"
        }
    }

    package let devices: [Device]

    /// Reads JSON reports (`tether drift --format json`); errors name the file. Reads only the
    /// keys a fleet view needs, so reports of any formatVersion 1 tether merge.
    package init(files: [(name: String, data: Data)]) throws {
        let read = try files.map { file in
            guard let report = try? JSONDecoder().decode(MergedReport.self, from: file.data) else {
                throw FleetError(description: "\(file.name): not a tether JSON report (make one with `tether drift --format json`)")
            }
            let findings = (report.findings ?? []).map { finding in
                (path: finding.path ?? "?", kind: finding.kind ?? "drift", integration: finding.integration ?? "app")
            }
            // A plan is made against a snapshot (one per kind of device, often taken on one machine):
            // each file is its own entry, named by the file. Drift reports are one per device.
            let host = report.kind == "plan"
                ? URL(fileURLWithPath: file.name).deletingPathExtension().lastPathComponent
                : report.device?.host ?? file.name
            return Device(file: file.name, host: host, revision: report.revision,
                          inSync: report.inSync ?? findings.isEmpty, generatedAt: report.generatedAt ?? "", findings: findings)
        }
        // One entry per device: its newest report (ISO 8601 times sort as text).
        var newest: [String: Int] = [:]
        for (index, device) in read.enumerated() where newest[device.host].map({ read[$0].generatedAt <= device.generatedAt }) ?? true {
            newest[device.host] = index
        }
        devices = read.indices.filter { newest[read[$0].host] == $0 }.map { read[$0] }
    }

    /// Devices per status.
    package var statusCounts: [(status: String, count: Int)] {
        ["in sync", "drifting", "failing"].map { status in (status, devices.filter { $0.status == status }.count) }
    }

    /// Per integration: how many devices have findings there.
    package var byIntegration: [(integration: String, devices: Int, findings: Int)] {
        let names = Set(devices.flatMap { $0.findings.map(\.integration) }).sorted()
        return names.map { name in
            (name, devices.filter { $0.findings.contains { $0.integration == name } }.count,
             devices.reduce(0) { $0 + $1.findings.filter { $0.integration == name }.count })
        }
    }

    /// Per field: how many devices, and with which kinds.
    package var byField: [(path: String, devices: Int, kinds: String)] {
        let paths = Set(devices.flatMap { $0.findings.map(\.path) }).sorted()
        return paths.map { path in
            let hits = devices.flatMap { device in device.findings.filter { $0.path == path } }
            let kinds = Dictionary(grouping: hits, by: \.kind).sorted { $0.key < $1.key }.map { "\($0.value.count) \($0.key)" }.joined(separator: ", ")
            return (path, devices.filter { $0.findings.contains { $0.path == path } }.count, kinds)
        }
    }

    package var summary: String {
        "\(devices.count) device\(devices.count == 1 ? "" : "s"): " + statusCounts.map { "\($0.count) \($0.status)" }.joined(separator: ", ")
    }

    package func json() -> String {
        JSONReport.serialize(FleetDocument(
            formatVersion: 1, kind: "fleet", summary: Dictionary(uniqueKeysWithValues: statusCounts.map { ($0.status, $0.count) }),
            devices: devices.map { .init(host: $0.host, file: $0.file, revision: $0.revision, status: $0.status, findings: $0.findings.count,
                                         generatedAt: $0.generatedAt) },
            byIntegration: byIntegration.map { .init(integration: $0.integration, devices: $0.devices, findings: $0.findings) },
            byField: byField.map { .init(path: $0.path, devices: $0.devices, kinds: $0.kinds) }))
    }

    package func markdown() -> String {
        var lines = ["### Tether fleet: \(summary)", "", "| Device | Status | Findings | Revision | Report |", "|---|---|---:|---|---|"]
        for device in devices.sorted(by: { ($0.status, $0.host) < ($1.status, $1.host) }) {
            lines.append("| `\(device.host)` | \(device.status) | \(device.findings.count) | `\(device.revision.prefix(12))` | \(device.file) |")
        }
        if !byIntegration.isEmpty {
            lines += ["", "| Integration | Devices with findings | Findings |", "|---|---:|---:|"]
            lines += byIntegration.map { "| \($0.integration) | \($0.devices) | \($0.findings) |" }
        }
        if !byField.isEmpty {
            lines += ["", "| Field | Devices | Kinds |", "|---|---:|---|"]
            lines += byField.map { "| `\($0.path)` | \($0.devices) | \($0.kinds) |" }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    package func html() -> String {
        var body = "<header class=\"\(devices.allSatisfy { $0.status == "in sync" } ? "ok" : "warn")\"><h1>Tether fleet</h1><p class=\"summary\">\(HTMLReport.escape(summary))</p></header>\n"
        body += "<div class=\"cards\">" + statusCounts.map { "<div class=\"card\"><b>\($0.count)</b><span>\($0.status)</span></div>" }.joined() + "</div>\n"
        body += "<section><h2>Devices</h2><table><thead><tr><th>Device</th><th>Status</th><th>Findings</th><th>Revision</th><th>Report</th></tr></thead><tbody>"
        for device in devices.sorted(by: { ($0.status, $0.host) < ($1.status, $1.host) }) {
            let badge = device.status == "in sync" ? "in-sync" : (device.status == "failing" ? "unenforceable" : "drift")
            body += "<tr><td><code>\(HTMLReport.escape(device.host))</code></td><td><span class=\"badge \(badge)\">\(device.status)</span></td><td>\(device.findings.count)</td><td><code>\(device.revision.prefix(12))</code></td><td>\(HTMLReport.escape(device.file))</td></tr>"
        }
        body += "</tbody></table></section>\n"
        if !byIntegration.isEmpty {
            body += "<section><h2>By integration</h2><table><thead><tr><th>Integration</th><th>Devices with findings</th><th>Findings</th></tr></thead><tbody>"
            body += byIntegration.map { "<tr><td>\(HTMLReport.escape($0.integration))</td><td>\($0.devices)</td><td>\($0.findings)</td></tr>" }.joined()
            body += "</tbody></table></section>\n"
        }
        if !byField.isEmpty {
            body += "<section><h2>By field</h2><table><thead><tr><th>Field</th><th>Devices</th><th>Kinds</th></tr></thead><tbody>"
            body += byField.map { "<tr><td><code>\(HTMLReport.escape($0.path))</code></td><td>\($0.devices)</td><td>\(HTMLReport.escape($0.kinds))</td></tr>" }.joined()
            body += "</tbody></table></section>\n"
        }
        return HTMLReport.page(title: "Tether fleet — \(summary)", body: body)
    }
}

package struct FleetError: Error, CustomStringConvertible {
    package let description: String
}

/// What a fleet view reads of each device's JSON report (`ReportDocument`), leniently.
struct MergedReport: Decodable {
    struct Device: Decodable { let host: String? }
    struct Finding: Decodable {
        let path: String?
        let kind: String?
        let integration: String?
    }

    let formatVersion: Int
    let kind: String?
    let revision: String
    let device: Device?
    let inSync: Bool?
    let generatedAt: String?
    let findings: [Finding]?
}

/// `tether report merge --format json`.
struct FleetDocument: Encodable {
    struct Device: Encodable {
        let host: String
        let file: String
        let revision: String
        let status: String
        let findings: Int
        let generatedAt: String
    }

    struct IntegrationCount: Encodable {
        let integration: String
        let devices: Int
        let findings: Int
    }

    struct FieldCount: Encodable {
        let path: String
        let devices: Int
        let kinds: String
    }

    let formatVersion: Int
    let kind: String
    let summary: [String: Int]
    let devices: [Device]
    let byIntegration: [IntegrationCount]
    let byField: [FieldCount]
}
