/// Every setting of the catalog as a typed path, so code names settings the compiler checks:
/// `state[.edr.telemetry]`, `SettingPath.common(integration).enabled`. Paths are made here and
/// in `SettingCatalog` only (from the catalog's own fields), never from a string elsewhere, so
/// an unknown path cannot exist. A test checks that these constants and the catalog agree.
extension SettingPath {
    /// Behaviour detection (app-wide).
    public static let behaviorDetection = SettingPath(.app, "behaviorDetection")
    /// The app-wide proxy.
    public static let proxy = ProxySettingPaths()
    public static let edr = EDRSettingPaths()
    public static let ndr = NDRSettingPaths()
    public static let sandbox = SandboxSettingPaths()

    /// The fields every integration has.
    public static func common(_ integration: Integration) -> CommonSettingPaths { CommonSettingPaths(integration) }

    /// The sync and event-transfer fields of EDR and NDR; nil for Sandbox, which has none.
    public static func eventTransfer(_ integration: Integration) -> EventTransferSettingPaths? {
        integration == .sandbox ? nil : EventTransferSettingPaths(integration)
    }

    /// Whether this is an integration's `enabled` (its task runs), which is task state, not a setting.
    public var isTaskState: Bool { integration != nil && field == "enabled" }
}

public struct ProxySettingPaths: Sendable {
    public let address = SettingPath(.app, "proxy.address")
    public let user = SettingPath(.app, "proxy.user")
    public let passwordFile = SettingPath(.app, "proxy.passwordFile")
}

public struct CommonSettingPaths: Sendable {
    public let enabled: SettingPath
    public let mutualAuthentication: SettingPath
    public let connectionTimeout: SettingPath
    public let requestTimeout: SettingPath
    public let useProxy: SettingPath

    init(_ integration: Integration) {
        let scope = SettingScope.integration(integration)
        enabled = SettingPath(scope, "enabled")
        mutualAuthentication = SettingPath(scope, "mutualAuthentication")
        connectionTimeout = SettingPath(scope, "connectionTimeout")
        requestTimeout = SettingPath(scope, "requestTimeout")
        useProxy = SettingPath(scope, "useProxy")
    }
}

public struct EventTransferSettingPaths: Sendable {
    public let synchronizationPeriod: SettingPath
    public let maximumDataTransferTime: SettingPath
    public let requestCountLimits: SettingPath
    public let maximumEventsPerHour: SettingPath
    public let eventLimitExceededPercentage: SettingPath

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
public protocol IntegrationSettingPaths: Sendable {
    static var integration: Integration { get }
}

extension IntegrationSettingPaths {
    public subscript(dynamicMember field: KeyPath<CommonSettingPaths, SettingPath>) -> SettingPath {
        SettingPath.common(Self.integration)[keyPath: field]
    }
}

/// An integration that syncs and sends events (EDR, NDR): `.edr.maximumEventsPerHour`.
public protocol EventTransferSettingPathsOwner: IntegrationSettingPaths {}

extension EventTransferSettingPathsOwner {
    public subscript(dynamicMember field: KeyPath<EventTransferSettingPaths, SettingPath>) -> SettingPath {
        EventTransferSettingPaths(Self.integration)[keyPath: field]
    }
}

public struct EDRSettingPaths: EventTransferSettingPathsOwner {
    public static let integration = Integration.edr
    public let mode = SettingPath(.integration(.edr), "mode")
    public let address = SettingPath(.integration(.edr), "address")
    public let port = SettingPath(.integration(.edr), "port")
    public let telemetry = SettingPath(.integration(.edr), "telemetry")
    public let fileMonitoringPaths = SettingPath(.integration(.edr), "fileMonitoring.paths")
}

public struct NDRSettingPaths: EventTransferSettingPathsOwner {
    public static let integration = Integration.ndr
    public let endpoints = SettingPath(.integration(.ndr), "endpoints")
    public let maximumEventsInPackage = SettingPath(.integration(.ndr), "maximumEventsInPackage")
    public let pingPeriod = SettingPath(.integration(.ndr), "pingPeriod")
}

public struct SandboxSettingPaths: IntegrationSettingPaths {
    public static let integration = Integration.sandbox
    public let servers = SettingPath(.integration(.sandbox), "servers")
    public let queueSize = SettingPath(.integration(.sandbox), "queueSize")
}

extension SettingCatalog {
    /// Every path of a scope with its field, in the order people read them.
    public static func paths(_ scope: SettingScope) -> [(path: SettingPath, field: SettingField)] {
        fields(scope).map { (SettingPath(scope, $0.name), $0) }
    }

    /// The path of a field named in a scope (as a policy or the command line names it); nil when
    /// the catalog has no such setting.
    public static func path(_ scope: SettingScope, _ name: String) -> SettingPath? {
        fields(scope).contains { $0.name == name } ? SettingPath(scope, name) : nil
    }
}
