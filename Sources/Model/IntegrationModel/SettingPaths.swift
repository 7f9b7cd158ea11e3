/// Every setting of the catalog as a typed path, so code names settings the compiler checks:
/// `state[.edr.telemetry]`, `SettingPath.common(integration).enabled`. Paths are made here and
/// in `SettingCatalog` only (from the catalog's own fields), never from a string elsewhere, so
/// an unknown path cannot exist. A test checks that these constants and the catalog agree.
extension SettingPath {
    /// Behaviour detection (app-wide).
    package static let behaviorDetection = SettingPath(.app, "behaviorDetection")
    /// The app-wide proxy.
    package static let proxy = ProxySettingPaths()
    package static let edr = EDRSettingPaths()
    package static let ndr = NDRSettingPaths()
    package static let sandbox = SandboxSettingPaths()

    /// The fields every integration has.
    package static func common(_ integration: Integration) -> CommonSettingPaths { CommonSettingPaths(integration) }

    /// The sync and event-transfer fields of EDR and NDR; nil for Sandbox, which has none.
    package static func eventTransfer(_ integration: Integration) -> EventTransferSettingPaths? {
        integration == .sandbox ? nil : EventTransferSettingPaths(integration)
    }

    /// Whether this is an integration's `enabled` (its task runs), which is task state, not a setting.
    package var isTaskState: Bool { integration != nil && field == "enabled" }
}

package struct ProxySettingPaths: Sendable {
    package let address = SettingPath(.app, "proxy.address")
    package let user = SettingPath(.app, "proxy.user")
    package let passwordFile = SettingPath(.app, "proxy.passwordFile")
}

package struct CommonSettingPaths: Sendable {
    package let enabled: SettingPath
    package let mutualAuthentication: SettingPath
    package let connectionTimeout: SettingPath
    package let requestTimeout: SettingPath
    package let useProxy: SettingPath

    init(_ integration: Integration) {
        let scope = SettingScope.integration(integration)
        enabled = SettingPath(scope, "enabled")
        mutualAuthentication = SettingPath(scope, "mutualAuthentication")
        connectionTimeout = SettingPath(scope, "connectionTimeout")
        requestTimeout = SettingPath(scope, "requestTimeout")
        useProxy = SettingPath(scope, "useProxy")
    }
}

package struct EventTransferSettingPaths: Sendable {
    package let synchronizationPeriod: SettingPath
    package let maximumDataTransferTime: SettingPath
    package let requestCountLimits: SettingPath
    package let maximumEventsPerHour: SettingPath
    package let eventLimitExceededPercentage: SettingPath

    init(_ integration: Integration) {
        let scope = SettingScope.integration(integration)
        synchronizationPeriod = SettingPath(scope, "synchronizationPeriod")
        maximumDataTransferTime = SettingPath(scope, "maximumDataTransferTime")
        requestCountLimits = SettingPath(scope, "requestCountLimits")
        maximumEventsPerHour = SettingPath(scope, "maximumEventsPerHour")
        eventLimitExceededPercentage = SettingPath(scope, "eventLimitExceededPercentage")
    }
}

/// An integration's paths: its own fields, and those every integration has (`.edr.enabled`).
@dynamicMemberLookup
package protocol IntegrationSettingPaths: Sendable {
    static var integration: Integration { get }
}

extension IntegrationSettingPaths {
    package subscript(dynamicMember field: KeyPath<CommonSettingPaths, SettingPath>) -> SettingPath {
        SettingPath.common(Self.integration)[keyPath: field]
    }
}

/// An integration that syncs and sends events (EDR, NDR): `.edr.maximumEventsPerHour`.
package protocol EventTransferSettingPathsOwner: IntegrationSettingPaths {}

extension EventTransferSettingPathsOwner {
    package subscript(dynamicMember field: KeyPath<EventTransferSettingPaths, SettingPath>) -> SettingPath {
        EventTransferSettingPaths(Self.integration)[keyPath: field]
    }
}

package struct EDRSettingPaths: EventTransferSettingPathsOwner {
    package static let integration = Integration.edr
    package let mode = SettingPath(.integration(.edr), "mode")
    package let address = SettingPath(.integration(.edr), "address")
    package let port = SettingPath(.integration(.edr), "port")
    package let telemetry = SettingPath(.integration(.edr), "telemetry")
    package let fileMonitoringPaths = SettingPath(.integration(.edr), "fileMonitoring.paths")
}

package struct NDRSettingPaths: EventTransferSettingPathsOwner {
    package static let integration = Integration.ndr
    package let endpoints = SettingPath(.integration(.ndr), "endpoints")
    package let maximumEventsInPackage = SettingPath(.integration(.ndr), "maximumEventsInPackage")
    package let pingPeriod = SettingPath(.integration(.ndr), "pingPeriod")
}

package struct SandboxSettingPaths: IntegrationSettingPaths {
    package static let integration = Integration.sandbox
    package let servers = SettingPath(.integration(.sandbox), "servers")
    package let queueSize = SettingPath(.integration(.sandbox), "queueSize")
}

extension SettingCatalog {
    /// Every path of a scope with its field, in the order people read them.
    package static func paths(_ scope: SettingScope) -> [(path: SettingPath, field: SettingField)] {
        fields(scope).map { (SettingPath(scope, $0.name), $0) }
    }

    /// The path of a field named in a scope (as a policy or the command line names it); nil when
    /// the catalog has no such setting.
    package static func path(_ scope: SettingScope, _ name: String) -> SettingPath? {
        fields(scope).contains { $0.name == name } ? SettingPath(scope, name) : nil
    }
}
