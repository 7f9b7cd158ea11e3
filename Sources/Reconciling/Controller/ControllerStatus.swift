import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import IntegrationModel
import PolicySource
import Reconciler

/// What the controller did last (`controller.json` in the state directory), as `tether status`
/// reads it. Written every cycle; keys once published keep their meaning.
package struct ControllerStatus: Decodable, Sendable {
    package struct Source: Decodable, Sendable {
        package let repository: String
        package let ref: String
        package let path: String
    }

    package struct Cycle: Decodable, Sendable {
        package let at: Date
        package let durationSeconds: Double
        package let condition: CycleResult.Condition
        /// See `CycleResult.reason`.
        package let reason: String
        package let message: String
        package let revision: String?
        package let findings: Int
        package let steps: Int
        package let fetched: Bool
        package let bytesReceived: Int
    }

    package struct Verification: Decodable, Sendable {
        package let revision: String
        package let committedAt: Date
        package let verifiedAt: Date
        package let signer: String?
    }

    /// `run --notify`: the broker link and the last message.
    package struct Notifications: Decodable, Sendable {
        package struct Message: Decodable, Sendable {
            package let ref: String
            package let commit: String
            package let arrivedAt: Date
            /// What became of it: scheduled, coalesced, current, ignored, malformed, refused.
            package let outcome: String
        }

        /// The broker and topic (`mqtt://host:1883/tether/policies`).
        package let broker: String
        package let connected: Bool
        /// "connected", or why not.
        package let detail: String
        /// Since when the link has been as it is.
        package let since: Date
        package let lastMessage: Message?
    }

    package let pid: Int
    package let suspended: Bool
    package let verify: VerifyMode
    package let source: Source
    package let lastCycle: Cycle
    /// Cycles in the current run of the controller, and how many of them failed.
    package let cycles: Int
    package let errors: Int
    package let lastVerified: Verification?
    /// What keeps a part of the controller from running now (the agent's stores, the
    /// connectors, the sensors); absent when everything runs.
    package var problems: [String]?
    /// Absent without `--notify`.
    package var notifications: Notifications?

    /// The status file's text: sorted keys, dates as `Timestamp` strings, an absent revision or
    /// signer as null (the published format has those keys always).
    package func json() -> Data {
        Data(document.text(pretty: true).utf8)
    }

    /// The status as a JSON value: written every cycle (JSONValue.text, not JSONEncoder).
    package var document: JSONValue {
        var members: [String: JSONValue] = [
            "pid": .number(Double(pid)), "suspended": .bool(suspended), "verify": .string(verify.rawValue),
            "source": ["repository": .string(source.repository), "ref": .string(source.ref), "path": .string(source.path)],
            "lastCycle": [
                "at": .string(Timestamp.string(lastCycle.at)), "durationSeconds": .number(lastCycle.durationSeconds),
                "condition": .string(lastCycle.condition.rawValue), "reason": .string(lastCycle.reason), "message": .string(lastCycle.message),
                "revision": lastCycle.revision.map { .string($0) } ?? .null, "findings": .number(Double(lastCycle.findings)),
                "steps": .number(Double(lastCycle.steps)), "fetched": .bool(lastCycle.fetched), "bytesReceived": .number(Double(lastCycle.bytesReceived)),
            ],
            "cycles": .number(Double(cycles)), "errors": .number(Double(errors)),
        ]
        if let lastVerified {
            members["lastVerified"] = [
                "revision": .string(lastVerified.revision), "committedAt": .string(Timestamp.string(lastVerified.committedAt)),
                "verifiedAt": .string(Timestamp.string(lastVerified.verifiedAt)), "signer": lastVerified.signer.map { .string($0) } ?? .null,
            ]
        }
        if let problems { members["problems"] = .array(problems.map { .string($0) }) }
        if let notifications {
            members["notifications"] = [
                "broker": .string(notifications.broker), "connected": .bool(notifications.connected), "detail": .string(notifications.detail),
                "since": .string(Timestamp.string(notifications.since)),
                "lastMessage": notifications.lastMessage.map { message in
                    ["ref": .string(message.ref), "commit": .string(message.commit), "arrivedAt": .string(Timestamp.string(message.arrivedAt)),
                     "outcome": .string(message.outcome)]
                } ?? .null,
            ]
        }
        return .object(members)
    }

    /// Replaces `file` in one rename, so a reader never sees half a status. Not flushed to disk:
    /// the next cycle writes it again.
    func write(to file: URL) throws {
        let bytes = json()
        let temporary = file.deletingLastPathComponent().appending(path: ".\(file.lastPathComponent).\(getpid()).tmp").path
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CocoaError(.fileWriteNoPermission) }
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count, rename(temporary, file.path) == 0 else {
            unlink(temporary)
            throw CocoaError(.fileWriteUnknown)
        }
    }

    /// The last status written to `file`; nil when there is none or it cannot be read.
    package static func read(_ file: URL) -> ControllerStatus? {
        read(ControllerStatus.self, from: file)
    }

    /// The last verification `file` records, the one thing a controller carries over from the
    /// run before; nothing else is decoded (a controller reads it at every start, and every
    /// type decoded costs the runtime lookups at first use: docs/architecture.md, "What an
    /// endpoint pays").
    package static func lastVerified(in file: URL) -> Verification? {
        read(CarriedOver.self, from: file)?.lastVerified
    }

    private struct CarriedOver: Decodable {
        let lastVerified: Verification?
    }

    private static func read<Document: Decodable>(_ type: Document.Type, from file: URL) -> Document? {
        guard let data = try? Data(contentsOf: file) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = Timestamp.date(text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an ISO 8601 time: \(text)"))
            }
            return date
        }
        return try? decoder.decode(type, from: data)
    }
}

extension VerifyMode: Decodable {}
