import IntegrationModel

/// Writes one `IntegrationPolicy` document as YAML that the decoder reads back to the same
/// values: strings always quoted (so no value reads differently in YAML 1.1), each setting
/// commented with the vendor's key, and notes on what the policy leaves undeclared; laid out
/// as `tether fmt` lays it out.
package struct PolicyWriter {
    /// One integration's section: its settings in catalog order, its server certificate's path
    /// in the repository, and comment lines for what is left out (with what to add).
    package struct Section {
        package var settings: [SettingPath: SettingValue] = [:]
        package var serverCertificate: String?
        package var notes: [String] = []

        package init() {}
    }

    package var name: String
    package var header: [String]
    package var behaviorDetection: SettingValue?
    package var appSettings: [SettingPath: SettingValue] = [:]
    package var appNotes: [String] = []
    package var integrations: [Integration: Section] = [:]

    package init(name: String, header: [String]) {
        self.name = name
        self.header = header
    }

    /// The document.
    package func rendered() -> String {
        var lines = header.map { "# " + $0 }
        lines += ["apiVersion: \(PolicyDecoder.apiVersion)", "kind: \(PolicyDecoder.kind)", "metadata:", "  name: \(Self.quoted(name))", "spec:"]
        func setting(_ key: String, _ value: SettingValue, vendorKey: String?, indent: String) {
            let comment = vendorKey.map { "   # \($0)" } ?? ""
            if case .endpoints(let list) = value {
                lines.append("\(indent)\(key):\(comment)")
                for endpoint in list { lines.append("\(indent)  - {address: \(Self.quoted(endpoint.address)), port: \(endpoint.port)}") }
            } else if case .paths(let list) = value {
                lines.append("\(indent)\(key):\(comment)")
                for folder in list { lines.append("\(indent)  - \(Self.quoted(folder))") }
            } else {
                lines.append("\(indent)\(key): \(Self.scalar(value))\(comment)")
            }
        }
        if let behaviorDetection {
            setting("behaviorDetection", behaviorDetection, vendorKey: "task Behavior_Detection running", indent: "  ")
        }
        let proxy = SettingCatalog.paths(.app).filter { $0.field.name.hasPrefix("proxy.") && appSettings[$0.path] != nil }
        if !proxy.isEmpty {
            lines.append("  proxy:")
            for (path, field) in proxy {
                setting(String(field.name.dropFirst("proxy.".count)), appSettings[path]!, vendorKey: field.vendorKey, indent: "    ")
            }
        }
        lines += appNotes.map { "  # " + $0 }
        for integration in Integration.allCases {
            guard let section = integrations[integration] else { continue }
            lines.append("  \(integration.rawValue):")
            var group: String?
            for (path, field) in SettingCatalog.paths(.integration(integration)) {
                guard let value = section.settings[path] else { continue }
                var name = field.name
                var indent = "    "
                if let dot = name.firstIndex(of: ".") {
                    let prefix = String(name[..<dot])
                    if group != prefix { lines.append("    \(prefix):") }
                    group = prefix
                    name = String(name[name.index(after: dot)...])
                    indent = "      "
                } else {
                    group = nil
                }
                setting(name, value, vendorKey: field.isTaskState ? "task \(integration.taskName) running" : field.vendorKey, indent: indent)
            }
            if let certificate = section.serverCertificate {
                lines.append("    serverCertificate: \(Self.quoted(certificate))")
            }
            lines += section.notes.map { "    # " + $0 }
        }
        let text = lines.joined(separator: "\n") + "\n"
        // In `tether fmt`'s layout, so the file can be committed as it is.
        return (try? PolicyFormatter.format(file: name, contents: Array(text.utf8))) ?? text
    }

    static func scalar(_ value: SettingValue) -> String {
        switch value {
        case .bool(let flag): return flag ? "true" : "false"
        case .int(let number): return String(number)
        case .string(let text): return quoted(text)
        case .endpoints(let list): return "[" + list.map { "{address: \(quoted($0.address)), port: \($0.port)}" }.joined(separator: ", ") + "]"
        case .paths(let list): return "[" + list.map(quoted).joined(separator: ", ") + "]"
        }
    }

    /// A double-quoted YAML string, as `fmt` writes one.
    static func quoted(_ text: String) -> String { PolicyFormatter.doubleQuoted(text) }
}
