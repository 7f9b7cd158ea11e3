import FoundationEssentials
import IntegrationModel
import Primitives

/// Where each catalog setting lives in the vendor's per-task settings files, and how values are
/// written there (`Yes`/`No`, numbers, `[Endpoints.item_NNNN]` lists).
package enum VendorSettings {
    /// Settings the vendor's command line cannot express, with why: reported as unenforceable
    /// on this backend, never dropped in silence.
    package static let unsupported: [SettingPath: String] = {
        var unsupported: [SettingPath: String] = [:]
        let proxy = "kesl-control has no command for the application-wide proxy; set it on the agent itself"
        for path in [SettingPath.proxy.address, SettingPath.proxy.user, SettingPath.proxy.passwordFile] { unsupported[path] = proxy }
        for integration in Integration.allCases {
            unsupported[SettingPath.common(integration).useProxy] = "kesl-control has no per-task proxy switch (the vendor's task uses the agent's proxy)"
        }
        unsupported[SettingPath.edr.fileMonitoringPaths] = "the vendor's agent chooses the files it monitors itself; kesl-control has no setting for them"
        return unsupported
    }()

    /// The fields of an integration kept in its task's settings file: every one with a vendor key
    /// that the vendor's command line can express.
    static func fields(_ integration: Integration) -> [(path: SettingPath, field: SettingField)] {
        SettingCatalog.paths(.integration(integration)).compactMap { path, field in
            guard field.vendorKey != nil, !field.isTaskState, unsupported[path] == nil else { return nil }
            return (path, field)
        }
    }

    /// A key's place: its section (nil for the top level) and its name there.
    static func place(_ field: SettingField) -> (section: String?, key: String) {
        let key = field.vendorKey ?? field.name
        guard let dot = key.firstIndex(of: ".") else { return (nil, key) }
        return (String(key[..<dot]), String(key[key.index(after: dot)...]))
    }

    /// A problem with what the vendor printed.
    package struct ReadError: Error, Sendable, CustomStringConvertible {
        package let description: String
    }

    /// Reads an integration's settings from its task's settings file; a key the file lacks holds
    /// its default. Unknown keys are ignored.
    package static func read(_ ini: VendorINI, integration: Integration, task: String) throws -> [SettingPath: SettingValue] {
        var values: [SettingPath: SettingValue] = [:]
        for (path, field) in fields(integration) {
            let (section, key) = place(field)
            if case .endpoints = field.kind {
                let items = ini.items(key)
                guard !items.isEmpty else { continue }
                var list: [Endpoint] = []
                for item in items {
                    guard let address = item.value("Address"), let portText = item.value("Port"), let port = Int(portText) else {
                        throw ReadError(description: "\(task): [\(item.name)] needs Address and a numeric Port")
                    }
                    list.append(Endpoint(address: address, port: port))
                }
                values[path] = .endpoints(list)
                continue
            }
            let text = section.map { ini.section($0)?.value(key) } ?? ini.value(key)
            guard let text else { continue }
            let value: SettingValue
            switch field.kind {
            case .bool:
                switch text.lowercased() {
                case "yes", "true", "1", "on": value = .bool(true)
                case "no", "false", "0", "off": value = .bool(false)
                default: throw ReadError(description: "\(task): \(field.vendorKey!)=\(TerminalText.excerpt(text)) is not Yes or No")
                }
            case .integer:
                guard let number = Int(text) else { throw ReadError(description: "\(task): \(field.vendorKey!)=\(TerminalText.excerpt(text)) is not a number") }
                value = .int(number)
            case .choice, .host, .text:
                value = .string(text)
            case .endpoints, .paths:
                continue
            }
            values[path] = value
        }
        return values
    }

    /// A settings file that sets exactly `values` (one integration's), for `--set-settings --file`.
    package static func file(setting values: [(path: SettingPath, value: SettingValue)]) -> VendorINI {
        var ini = VendorINI()
        for (path, value) in values {
            guard let field = SettingCatalog.field(path) else { continue }
            let (section, key) = place(field)
            switch value {
            case .endpoints(let list):
                for (index, endpoint) in list.enumerated() {
                    ini.sections.append(VendorINI.Section(name: "\(key).item_\(index.digits(width: 4))",
                                                          entries: [.init(key: "Address", value: endpoint.address),
                                                                    .init(key: "Port", value: String(endpoint.port))]))
                }
                continue
            default:
                let entry = VendorINI.Entry(key: key, value: text(value))
                if let section {
                    if let index = ini.sections.firstIndex(where: { $0.name == section }) {
                        ini.sections[index].entries.append(entry)
                    } else {
                        ini.sections.append(VendorINI.Section(name: section, entries: [entry]))
                    }
                } else {
                    ini.general.append(entry)
                }
            }
        }
        return ini
    }

    /// A value as the vendor writes it.
    static func text(_ value: SettingValue) -> String {
        switch value {
        case .bool(let flag): return flag ? "Yes" : "No"
        case .int(let number): return String(number)
        case .string(let text): return text
        case .endpoints(let list): return list.map(\.description).joined(separator: ",")
        case .paths(let list): return list.joined(separator: ",")
        }
    }
}
