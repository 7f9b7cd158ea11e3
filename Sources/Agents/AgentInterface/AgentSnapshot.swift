import FoundationEssentials
import IntegrationModel
import X509

/// An agent's actual state captured to a file (`tether agent snapshot`), so a plan can be made
/// offline against it (`tether plan --against`). Holds no secrets: certificates only (public),
/// never a client container, its key or its password.
package struct AgentSnapshot: Sendable {
    package static let formatVersion = 1

    package let takenAt: Date
    package let host: String
    package let labels: [String: String]
    package let state: AgentState
    package let applied: AppliedState

    package init(takenAt: Date = Date(), host: String, labels: [String: String], state: AgentState, applied: AppliedState) {
        self.takenAt = takenAt
        self.host = host
        self.labels = labels
        self.state = state
        self.applied = applied
    }

    /// The snapshot as its JSON document (pretty, sorted keys).
    package func json() -> String {
        var settings: [String: SettingValue] = [:]
        for (path, value) in state.settings { settings[path.description] = value }
        var certificates: [String: [String: SnapshotDocument.CertificateEntry]] = [:]
        for integration in Integration.allCases {
            var pair: [String: SnapshotDocument.CertificateEntry] = [:]
            if let server = state.serverCertificates[integration] { pair["server"] = .init(server) }
            if let client = state.clientCertificates[integration] {
                pair["client"] = .init(client, password: state.clientPasswords[integration] ?? ContainerPassword.none)
            }
            if !pair.isEmpty { certificates[integration.rawValue] = pair }
        }
        let document = SnapshotDocument(
            formatVersion: Self.formatVersion, kind: SnapshotDocument.kindName, takenAt: Timestamp.string(takenAt),
            device: .init(host: host, labels: labels), settings: settings, running: state.running.sorted().map(\.rawValue),
            certificates: certificates, applied: applied.revision.map { revision in
                .init(revision: revision, values: Dictionary(uniqueKeysWithValues: applied.values.map { ($0.key.description, $0.value) }))
            })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(document)) ?? Data(), as: UTF8.self) + "\n"
    }

    /// Reads a snapshot; `source` names the file in errors.
    package init(json data: Data, source: String) throws {
        func fail(_ message: String) -> AgentError { .invalidSetting("\(source): \(message)") }
        guard let header = try? JSONDecoder().decode(SnapshotDocument.Header.self, from: data) else {
            throw fail("not a JSON object; make one with `tether agent snapshot > device.json`")
        }
        guard header.kind == SnapshotDocument.kindName else { throw fail("not an agent snapshot (its \"kind\" is not \"agentSnapshot\")") }
        guard let version = header.formatVersion, version <= Self.formatVersion else {
            throw fail("formatVersion \(header.formatVersion.map(String.init) ?? "missing") is newer than this tether reads (\(Self.formatVersion))")
        }
        let document: SnapshotDocument
        do {
            document = try JSONDecoder().decode(SnapshotDocument.self, from: data)
        } catch let error as DecodingError {
            throw fail("not a snapshot this tether reads: \(SnapshotDocument.describe(error))")
        }
        var state = AgentState.initial
        for (key, value) in document.settings {
            guard let path = SettingCatalog.path(named: key), let field = SettingCatalog.field(path) else { throw fail("unknown setting '\(key)'") }
            guard field.problem(with: value) == nil else {
                throw fail("setting '\(key)' has an invalid value: expected \(field.kind.expectation)")
            }
            state.settings[path] = value
        }
        state.fillDefaults()
        for name in document.running {
            guard let integration = Integration(rawValue: name) else { throw fail("unknown integration '\(name)' in \"running\"") }
            state.running.insert(integration)
        }
        for (name, pair) in document.certificates {
            guard let integration = Integration(rawValue: name) else { throw fail("unknown integration '\(name)' in \"certificates\"") }
            for (role, entry) in pair {
                guard ["server", "client"].contains(role), let bytes = Data(base64Encoded: entry.der),
                      let certificate = try? Certificate(bytes: Array(bytes)) else {
                    throw fail("certificates.\(name).\(role) is not a certificate")
                }
                if role == "server" {
                    state.serverCertificates[integration] = certificate
                } else {
                    state.clientCertificates[integration] = certificate
                    state.clientPasswords[integration] = entry.passwordSource.map { ContainerPassword(storedForm: $0) } ?? ContainerPassword.none
                }
            }
        }
        self.init(takenAt: Timestamp.date(document.takenAt) ?? Date(), host: document.device.host, labels: document.device.labels,
                  state: state, applied: AppliedState(values: Self.appliedValues(document.applied?.values ?? [:]), revision: document.applied?.revision, at: nil))
    }

    /// The applied values as the snapshot writes them (`edr.port` → text), by key; keys this
    /// release does not know are not managed here.
    private static func appliedValues(_ written: [String: String]) -> [DesiredKey: String] {
        var values: [DesiredKey: String] = [:]
        for (path, value) in written {
            if let key = DesiredKey(path: path) { values[key] = value }
        }
        return values
    }
}

/// The snapshot file's format (formatVersion 1). Keys once published keep their meaning.
struct SnapshotDocument: Codable {
    static let kindName = "agentSnapshot"

    /// What is read first, to say clearly what a file is not.
    struct Header: Decodable {
        let kind: String?
        let formatVersion: Int?
    }

    struct Device: Codable {
        let host: String
        let labels: [String: String]
    }

    /// A certificate: public facts and the DER, never a key; for a client container, where its
    /// password is read from (`none`, `forgotten`, `file:PATH`; absent in older snapshots: none).
    struct CertificateEntry: Codable {
        let sha256: String
        let subject: String
        let notAfter: String
        let der: String
        let passwordSource: String?

        init(_ certificate: Certificate, password: ContainerPassword? = nil) {
            sha256 = certificate.sha256Fingerprint
            subject = certificate.subject
            notAfter = Timestamp.string(certificate.notAfter)
            der = Data(certificate.der).base64EncodedString()
            passwordSource = password?.storedForm
        }
    }

    struct Applied: Codable {
        let revision: String
        let values: [String: String]
    }

    let formatVersion: Int
    let kind: String
    let takenAt: String
    let device: Device
    let settings: [String: SettingValue]
    let running: [String]
    let certificates: [String: [String: CertificateEntry]]
    let applied: Applied?

    /// Where a document went wrong, in words.
    static func describe(_ error: DecodingError) -> String {
        func at(_ context: DecodingError.Context) -> String {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? "" : " at \(path)"
        }
        switch error {
        case .keyNotFound(let key, let context): return "\"\(key.stringValue)\" is missing\(at(context))"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return "unexpected value\(at(context))"
        @unknown default: return "\(error)"
        }
    }
}
