/// One of the agent's three integrations with the targeted-attack platform.
/// Each is a task on the agent; "enabled" means the task is running.
package enum Integration: String, CaseIterable, Sendable, Codable, Comparable {
    case edr, ndr, sandbox

    /// The vendor's task name (as `kesl-control` shows it).
    package var taskName: String {
        switch self {
        case .edr: return "KATAEDR"
        case .ndr: return "KATANDR"
        case .sandbox: return "KATASandbox"
        }
    }

    /// A name for people: "EDR", "NDR", "Sandbox".
    package var displayName: String {
        switch self {
        case .edr: return "EDR"
        case .ndr: return "NDR"
        case .sandbox: return "Sandbox"
        }
    }

    /// Parses `edr`, `EDR`, `KATAEDR` and the like.
    package init?(argument: String) {
        let lowered = argument.lowercased()
        if let match = Integration.allCases.first(where: { $0.rawValue == lowered || $0.taskName.lowercased() == lowered }) {
            self = match
        } else {
            return nil
        }
    }

    package static func < (lhs: Integration, rhs: Integration) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// Where a setting lives: app-wide, or in one integration.
package enum SettingScope: Hashable, Sendable, Comparable {
    case app
    case integration(Integration)

    /// The prefix of a setting path: "" for app-wide, "edr" for EDR.
    package var prefix: String {
        switch self {
        case .app: return ""
        case .integration(let integration): return integration.rawValue
        }
    }

    package static func < (lhs: SettingScope, rhs: SettingScope) -> Bool {
        switch (lhs, rhs) {
        case (.app, .integration): return true
        case (.integration(let a), .integration(let b)): return a < b
        default: return false
        }
    }
}

/// A setting's address, written as in reports: `edr.port`, `behaviorDetection`, `proxy.address`.
package struct SettingPath: Hashable, Sendable, Comparable, CustomStringConvertible {
    package let scope: SettingScope
    package let field: String

    /// Internal: other modules take paths from `SettingPath`'s typed constants or the catalog.
    init(_ scope: SettingScope, _ field: String) {
        self.scope = scope
        self.field = field
    }

    package var description: String {
        scope.prefix.isEmpty ? field : "\(scope.prefix).\(field)"
    }

    /// The integration this path belongs to, if any.
    package var integration: Integration? {
        if case .integration(let integration) = scope { return integration }
        return nil
    }

    package static func < (lhs: SettingPath, rhs: SettingPath) -> Bool {
        if lhs.scope != rhs.scope { return lhs.scope < rhs.scope }
        return SettingCatalog.order(of: lhs) < SettingCatalog.order(of: rhs)
    }
}
