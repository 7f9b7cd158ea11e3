import FoundationEssentials

/// What a policy can manage: a setting, or an integration's server or client certificate.
package enum DesiredKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    case setting(SettingPath)
    case serverCertificate(Integration)
    case clientCertificate(Integration)

    /// The path as reports show it: `edr.port`, `edr.serverCertificate`.
    package var description: String {
        switch self {
        case .setting(let path): return path.description
        case .serverCertificate(let integration): return "\(integration.rawValue).serverCertificate"
        case .clientCertificate(let integration): return "\(integration.rawValue).clientCertificate"
        }
    }

    package var scope: SettingScope {
        switch self {
        case .setting(let path): return path.scope
        case .serverCertificate(let integration), .clientCertificate(let integration): return .integration(integration)
        }
    }

    package static func < (lhs: DesiredKey, rhs: DesiredKey) -> Bool {
        if lhs.scope != rhs.scope { return lhs.scope < rhs.scope }
        return lhs.rank < rhs.rank
    }

    /// Parses a path as reports write it (`edr.port`, `edr.serverCertificate`, `proxy.address`).
    package init?(path: String) {
        for integration in Integration.allCases where path.hasPrefix(integration.rawValue + ".") {
            let field = String(path.dropFirst(integration.rawValue.count + 1))
            switch field {
            case "serverCertificate": self = .serverCertificate(integration)
            case "clientCertificate": self = .clientCertificate(integration)
            default:
                guard let settingPath = SettingCatalog.path(.integration(integration), field) else { return nil }
                self = .setting(settingPath)
            }
            return
        }
        guard let settingPath = SettingCatalog.path(.app, path) else { return nil }
        self = .setting(settingPath)
    }

    /// Every key a policy can manage, in report order.
    package static let all: [DesiredKey] = SettingCatalog.scopes.flatMap { scope -> [DesiredKey] in
        var keys = SettingCatalog.paths(scope).map { DesiredKey.setting($0.path) }
        if case .integration(let integration) = scope {
            keys += [.serverCertificate(integration), .clientCertificate(integration)]
        }
        return keys
    }.sorted()

    private var rank: (Int, SettingPath?) {
        switch self {
        case .serverCertificate: return (1, nil)
        case .clientCertificate: return (2, nil)
        case .setting(let path) where path.isTaskState: return (0, nil)
        case .setting(let path): return (3, path)
        }
    }
}

private func < (lhs: (Int, SettingPath?), rhs: (Int, SettingPath?)) -> Bool {
    if lhs.0 != rhs.0 { return lhs.0 < rhs.0 }
    guard let a = lhs.1, let b = rhs.1 else { return false }
    return a < b
}
