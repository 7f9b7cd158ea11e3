import IntegrationModel
import Policy

/// The JSON report (`--format json`) as a document: what `JSONReport` writes and
/// `policies/report.schema.json` describes. Keys once published keep their meaning; absent
/// values that the format has always carried are written as null.
package struct ReportDocument: Encodable, Sendable {
    package struct Source: Encodable, Sendable {
        package let repository: String
        package let ref: String
        package let path: String
    }

    package struct Device: Encodable, Sendable {
        package let host: String
        package let labels: [String: String]
    }

    /// A place in a policy file.
    package struct Location: Encodable, Sendable {
        package let file: String
        package let line: Int
        package let column: Int

        init(_ source: SourceLocation) {
            file = source.file
            line = source.line
            column = source.column
        }
    }

    package struct Managed: Encodable, Sendable {
        package let path: String
        package let source: Location
    }

    /// A desired or actual value: a setting's value, or a certificate's public facts.
    package enum Value: Encodable, Sendable {
        case setting(SettingValue)
        case certificate(sha256: String, subject: String, notAfter: String)
        /// A certificate the agent only describes: serial number, issuer, subject.
        case describedCertificate(serial: String, issuer: String, subject: String)

        private enum CertificateKeys: String, CodingKey { case sha256, subject, notAfter }
        private enum DescribedKeys: String, CodingKey { case serial, issuer, subject }

        package func encode(to encoder: Encoder) throws {
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

    package struct LastChange: Encodable, Sendable {
        package let at: String
        package let actor: String
        package let from: String
        package let to: String
    }

    package struct Finding: Encodable, Sendable {
        package let path: String
        package let kind: String
        /// null for app-wide settings.
        package let integration: String?
        /// null when there is none (a certificate not pinned, a value that cannot be read).
        package let desired: Value?
        package let actual: Value?
        package let source: Location
        package let mode: String
        package let corrected: Bool
        package let reason: String?
        package let noticedAt: String?
        package let lastChange: LastChange?

        private enum CodingKeys: String, CodingKey {
            case path, kind, integration, desired, actual, source, mode, corrected, reason, noticedAt, lastChange
        }

        package func encode(to encoder: Encoder) throws {
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

    package struct Step: Encodable, Sendable {
        package let action: String
        package let path: String
        package let description: String
    }

    package struct LastApplied: Encodable, Sendable {
        package let revision: String
        package let at: String?

        private enum CodingKeys: String, CodingKey { case revision, at }

        package func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(revision, forKey: .revision)
            try container.encode(at, forKey: .at)
        }
    }

    /// One connector's health.
    package struct Health: Encodable, Sendable {
        package let integration: String
        package let running: Bool
        package let state: String
        package let server: String?
        package let lastSuccess: String?
        package let lastAttempt: String?
        package let lastError: String?
        package let errorKind: String?
        package let queueDepth: Int
        package let sent: Int
        package let throttled: Int
        package let dropped: Int

        private enum CodingKeys: String, CodingKey {
            case integration, running, state, server, lastSuccess, lastAttempt, lastError, errorKind, queueDepth, sent, throttled, dropped
        }

        /// Unknown values are written as null.
        package func encode(to encoder: Encoder) throws {
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
    package struct Sensor: Encodable, Sendable {
        /// `process`, `network` or `file`.
        package let sensor: String
        /// Running now: recorded as running by a `tether run` that is still alive.
        package let running: Bool
        /// The kernel interface: `netlink process connector`, `/proc scan every 1 s`…
        package let source: String
        /// A fallback's reason and what it misses.
        package let note: String?
        /// When it started or stopped.
        package let since: String

        private enum CodingKeys: String, CodingKey { case sensor, running, source, note, since }

        package func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(sensor, forKey: .sensor)
            try container.encode(running, forKey: .running)
            try container.encode(source, forKey: .source)
            try container.encode(note, forKey: .note)
            try container.encode(since, forKey: .since)
        }
    }

    /// The platform's network isolation, as ordered and as the kernel holds it.
    package struct Isolation: Encodable, Sendable {
        /// Ordered and not lifted.
        package let active: Bool
        /// Tether's nftables table is in the kernel as written: the endpoint is cut off. Null when
        /// the kernel's table cannot be read (not root, another network namespace).
        package let enforced: Bool?
        /// When it lifts by itself; null for a lasting one.
        package let until: String?
        /// Why an active isolation is not enforced.
        package let problem: String?
        /// What still flows, for people.
        package let allowed: [String]
        /// Times the table was found removed or changed and put back, and when last.
        package let reasserted: Int
        package let reassertedAt: String?

        private enum CodingKeys: String, CodingKey { case active, enforced, until, problem, allowed, reasserted, reassertedAt }

        package func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(active, forKey: .active)
            try container.encode(enforced, forKey: .enforced)
            try container.encode(until, forKey: .until)
            try container.encode(problem, forKey: .problem)
            try container.encode(allowed, forKey: .allowed)
            try container.encode(reasserted, forKey: .reasserted)
            try container.encode(reassertedAt, forKey: .reassertedAt)
        }
    }

    package let formatVersion: Int
    /// `plan`, `apply` or `drift`.
    package let kind: String
    package let revision: String
    package let revisionSummary: String
    package let source: Source
    package let generatedAt: String
    package let device: Device
    package let policies: [String]
    package let inSync: Bool
    package let managedKeys: Int
    package let managed: [Managed]
    package let counts: [String: Int]
    package let findings: [Finding]
    package let steps: [Step]
    package let notes: [String]
    package let lastApplied: LastApplied?
    /// `apply` reports only: whether the steps were applied.
    package let applied: Bool?
    /// Drift reports on a device: each connector's health.
    package let health: [Health]?
    /// Drift reports on a device where the sensors ever ran: which run and from what source.
    package let sensors: [Sensor]?
    /// Drift reports on a device that was ever isolated.
    package let isolation: Isolation?
}
