import Foundation
import IntegrationModel
import X509

/// An agent's actual state captured to a file (`tether agent snapshot`), so a plan can be made
/// offline against it (`tether plan --against`). Holds no secrets: certificates only (public),
/// never a client container, its key or its password.
public struct AgentSnapshot: Sendable {
    public static let formatVersion = 1

    public let takenAt: Date
    public let host: String
    public let labels: [String: String]
    public let state: AgentState
    public let applied: AppliedState

    public init(takenAt: Date = Date(), host: String, labels: [String: String], state: AgentState, applied: AppliedState) {
        self.takenAt = takenAt
        self.host = host
        self.labels = labels
        self.state = state
        self.applied = applied
    }

    /// The snapshot as a JSON object.
    public var jsonObject: [String: Any] {
        var settings: [String: Any] = [:]
        for (path, value) in state.settings { settings[path.description] = value.jsonValue }
        var certificates: [String: Any] = [:]
        for integration in Integration.allCases {
            var pair: [String: Any] = [:]
            if let server = state.serverCertificates[integration] { pair["server"] = Self.certificate(server) }
            if let client = state.clientCertificates[integration] { pair["client"] = Self.certificate(client) }
            if !pair.isEmpty { certificates[integration.rawValue] = pair }
        }
        var object: [String: Any] = [
            "formatVersion": Self.formatVersion,
            "kind": "agentSnapshot",
            "takenAt": Self.formatter.string(from: takenAt),
            "device": ["host": host, "labels": labels] as [String: Any],
            "settings": settings,
            "running": state.running.sorted().map(\.rawValue),
            "certificates": certificates,
        ]
        if let revision = applied.revision {
            object["applied"] = ["revision": revision, "values": applied.values] as [String: Any]
        }
        return object
    }

    private static func certificate(_ certificate: Certificate) -> [String: Any] {
        ["sha256": certificate.sha256Fingerprint, "subject": certificate.subject,
         "notAfter": formatter.string(from: certificate.notAfter), "der": Data(certificate.der).base64EncodedString()]
    }

    private static var formatter: ISO8601DateFormatter { ISO8601DateFormatter() }

    /// Reads a snapshot; `source` names the file in errors.
    public init(json data: Data, source: String) throws {
        func fail(_ message: String) -> AgentError { .invalidSetting("\(source): \(message)") }
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw fail("not a JSON object; make one with `tether agent snapshot > device.json`")
        }
        guard object["kind"] as? String == "agentSnapshot" else { throw fail("not an agent snapshot (its \"kind\" is not \"agentSnapshot\")") }
        guard let version = object["formatVersion"] as? Int, version <= Self.formatVersion else {
            throw fail("formatVersion \(object["formatVersion"] ?? "missing") is newer than this tether reads (\(Self.formatVersion))")
        }
        var state = AgentState.initial
        for (key, raw) in object["settings"] as? [String: Any] ?? [:] {
            guard let path = SettingCatalog.path(named: key), let field = SettingCatalog.field(path) else { throw fail("unknown setting '\(key)'") }
            guard let value = Self.value(raw, kind: field.kind), field.problem(with: value) == nil else {
                throw fail("setting '\(key)' has an invalid value: expected \(field.kind.expectation)")
            }
            state.settings[path] = value
        }
        state.fillDefaults()
        for name in object["running"] as? [String] ?? [] {
            guard let integration = Integration(rawValue: name) else { throw fail("unknown integration '\(name)' in \"running\"") }
            state.running.insert(integration)
        }
        for (name, raw) in object["certificates"] as? [String: Any] ?? [:] {
            guard let integration = Integration(rawValue: name), let pair = raw as? [String: Any] else { throw fail("unknown integration '\(name)' in \"certificates\"") }
            for (role, entry) in pair {
                guard let der = (entry as? [String: Any])?["der"] as? String, let bytes = Data(base64Encoded: der),
                      let certificate = try? Certificate(bytes: Array(bytes)) else {
                    throw fail("certificates.\(name).\(role) is not a certificate")
                }
                if role == "server" { state.serverCertificates[integration] = certificate } else { state.clientCertificates[integration] = certificate }
            }
        }
        let device = object["device"] as? [String: Any] ?? [:]
        let applied = object["applied"] as? [String: Any]
        self.init(takenAt: (object["takenAt"] as? String).flatMap { Self.formatter.date(from: $0) } ?? Date(),
                  host: device["host"] as? String ?? "unknown",
                  labels: device["labels"] as? [String: String] ?? [:],
                  state: state,
                  applied: AppliedState(values: applied?["values"] as? [String: String] ?? [:],
                                        revision: applied?["revision"] as? String, at: nil))
    }

    private static func value(_ raw: Any, kind: SettingKind) -> SettingValue? {
        switch kind {
        case .bool:
            return (raw as? Bool).map(SettingValue.bool)
        case .integer:
            return (raw as? Int).map(SettingValue.int)
        case .choice, .host, .text:
            return (raw as? String).map(SettingValue.string)
        case .endpoints:
            guard let list = raw as? [[String: Any]] else { return nil }
            var endpoints: [Endpoint] = []
            for item in list {
                guard let address = item["address"] as? String, let port = item["port"] as? Int else { return nil }
                endpoints.append(Endpoint(address: address, port: port))
            }
            return .endpoints(endpoints)
        }
    }
}
