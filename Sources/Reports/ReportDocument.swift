import IntegrationModel
import Policy

/// The JSON report (`--format json`) as a document: what `JSONReport` writes and
/// `policies/report.schema.json` describes. Keys once published keep their meaning; absent
/// values that the format has always carried are written as null.
public struct ReportDocument: Encodable, Sendable {
    public struct Source: Encodable, Sendable {
        public let repository: String
        public let ref: String
        public let path: String
    }

    public struct Device: Encodable, Sendable {
        public let host: String
        public let labels: [String: String]
    }

    /// A place in a policy file.
    public struct Location: Encodable, Sendable {
        public let file: String
        public let line: Int
        public let column: Int

        init(_ source: SourceLocation) {
            file = source.file
            line = source.line
            column = source.column
        }
    }

    public struct Managed: Encodable, Sendable {
        public let path: String
        public let source: Location
    }

    /// A desired or actual value: a setting's value, or a certificate's public facts.
    public enum Value: Encodable, Sendable {
        case setting(SettingValue)
        case certificate(sha256: String, subject: String, notAfter: String)
        /// A certificate the agent only describes: serial number, issuer, subject.
        case describedCertificate(serial: String, issuer: String, subject: String)

        private enum CertificateKeys: String, CodingKey { case sha256, subject, notAfter }
        private enum DescribedKeys: String, CodingKey { case serial, issuer, subject }

        public func encode(to encoder: Encoder) throws {
            switch self {
            case .setting(let value): try value.encode(to: encoder)
            case .certificate(let sha256, let subject, let notAfter):
                var container = encoder.container(keyedBy: CertificateKeys.self)
                try container.encode(sha256, forKey: .sha256)
                try container.encode(subject, forKey: .subject)
                try container.encode(notAfter, forKey: .notAfter)
            case .describedCertificate(let serial, let issuer, let subject):
                var container = encoder.container(keyedBy: DescribedKeys.self)
                try container.encode(serial, forKey: .serial)
                try container.encode(issuer, forKey: .issuer)
                try container.encode(subject, forKey: .subject)
            }
        }
    }

    public struct LastChange: Encodable, Sendable {
        public let at: String
        public let actor: String
        public let from: String
        public let to: String
    }

    public struct Finding: Encodable, Sendable {
        public let path: String
        public let kind: String
        /// null for app-wide settings.
        public let integration: String?
        /// null when there is none (a certificate not pinned, a value that cannot be read).
        public let desired: Value?
        public let actual: Value?
        public let source: Location
        public let mode: String
        public let corrected: Bool
        public let reason: String?
        public let noticedAt: String?
        public let lastChange: LastChange?

        private enum CodingKeys: String, CodingKey {
            case path, kind, integration, desired, actual, source, mode, corrected, reason, noticedAt, lastChange
        }

        public func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(path, forKey: .path)
            try container.encode(kind, forKey: .kind)
            try container.encode(integration, forKey: .integration)
            try container.encode(desired, forKey: .desired)
            try container.encode(actual, forKey: .actual)
            try container.encode(source, forKey: .source)
            try container.encode(mode, forKey: .mode)
            try container.encode(corrected, forKey: .corrected)
            try container.encodeIfPresent(reason, forKey: .reason)
            try container.encodeIfPresent(noticedAt, forKey: .noticedAt)
            try container.encodeIfPresent(lastChange, forKey: .lastChange)
        }
    }

    public struct Step: Encodable, Sendable {
        public let action: String
        public let path: String
        public let description: String
    }

    public struct LastApplied: Encodable, Sendable {
        public let revision: String
        public let at: String?

        private enum CodingKeys: String, CodingKey { case revision, at }

        public func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(revision, forKey: .revision)
            try container.encode(at, forKey: .at)
        }
    }

    /// One connector's health.
    public struct Health: Encodable, Sendable {
        public let integration: String
        public let running: Bool
        public let state: String
        public let server: String?
        public let lastSuccess: String?
        public let lastAttempt: String?
        public let lastError: String?
        public let errorKind: String?
        public let queueDepth: Int
        public let sent: Int
        public let throttled: Int
        public let dropped: Int

        private enum CodingKeys: String, CodingKey {
            case integration, running, state, server, lastSuccess, lastAttempt, lastError, errorKind, queueDepth, sent, throttled, dropped
        }

        /// Unknown values are written as null.
        public func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(integration, forKey: .integration)
            try container.encode(running, forKey: .running)
            try container.encode(state, forKey: .state)
            try container.encode(server, forKey: .server)
            try container.encode(lastSuccess, forKey: .lastSuccess)
            try container.encode(lastAttempt, forKey: .lastAttempt)
            try container.encode(lastError, forKey: .lastError)
            try container.encode(errorKind, forKey: .errorKind)
            try container.encode(queueDepth, forKey: .queueDepth)
            try container.encode(sent, forKey: .sent)
            try container.encode(throttled, forKey: .throttled)
            try container.encode(dropped, forKey: .dropped)
        }
    }

    /// One sensor of the embedded agent.
    public struct Sensor: Encodable, Sendable {
        /// `process`, `network` or `file`.
        public let sensor: String
        /// Running now: recorded as running by a `tether run` that is still alive.
        public let running: Bool
        /// The kernel interface: `netlink process connector`, `/proc scan every 1 s`…
        public let source: String
        /// A fallback's reason and what it misses.
        public let note: String?
        /// When it started or stopped.
        public let since: String

        private enum CodingKeys: String, CodingKey { case sensor, running, source, note, since }

        public func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(sensor, forKey: .sensor)
            try container.encode(running, forKey: .running)
            try container.encode(source, forKey: .source)
            try container.encode(note, forKey: .note)
            try container.encode(since, forKey: .since)
        }
    }

    public let formatVersion: Int
    /// `plan`, `apply` or `drift`.
    public let kind: String
    public let revision: String
    public let revisionSummary: String
    public let source: Source
    public let generatedAt: String
    public let device: Device
    public let policies: [String]
    public let inSync: Bool
    public let managedKeys: Int
    public let managed: [Managed]
    public let counts: [String: Int]
    public let findings: [Finding]
    public let steps: [Step]
    public let notes: [String]
    public let lastApplied: LastApplied?
    /// `apply` reports only: whether the steps were applied.
    public let applied: Bool?
    /// Drift reports on a device: each connector's health.
    public let health: [Health]?
    /// Drift reports on a device where the sensors ever ran: which run and from what source.
    public let sensors: [Sensor]?
}
