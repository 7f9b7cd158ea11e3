import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import IntegrationModel
import PolicySource
import Reconciler

/// What the controller did last (`controller.json` in the state directory), as `tether status`
/// reads it. Written every cycle; keys once published keep their meaning.
package struct ControllerStatus: Codable, Sendable {
    package struct Source: Codable, Sendable {
        package let repository: String
        package let ref: String
        package let path: String
    }

    package struct Cycle: Codable, Sendable {
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

        /// An absent revision is written as null (the published format has the key always).
        package func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(at, forKey: .at)
            try container.encode(durationSeconds, forKey: .durationSeconds)
            try container.encode(condition, forKey: .condition)
            try container.encode(reason, forKey: .reason)
            try container.encode(message, forKey: .message)
            try container.encode(revision, forKey: .revision)
            try container.encode(findings, forKey: .findings)
            try container.encode(steps, forKey: .steps)
            try container.encode(fetched, forKey: .fetched)
            try container.encode(bytesReceived, forKey: .bytesReceived)
        }
    }

    package struct Verification: Codable, Sendable {
        package let revision: String
        package let committedAt: Date
        package let verifiedAt: Date
        package let signer: String?

        /// An unknown signer is written as null.
        package func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(revision, forKey: .revision)
            try container.encode(committedAt, forKey: .committedAt)
            try container.encode(verifiedAt, forKey: .verifiedAt)
            try container.encode(signer, forKey: .signer)
        }
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

    /// The status file's text: sorted keys, dates as `Timestamp` strings, absent values as null.
    package func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(Timestamp.string(date))
        }
        return try encoder.encode(self)
    }

    /// The status as `json()` has it, as a value: written every cycle, without JSONEncoder's
    /// cost (tests hold the two to the same document).
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
        return .object(members)
    }

    /// Replaces `file` in one rename, so a reader never sees half a status. Not flushed to disk:
    /// the next cycle writes it again.
    func write(to file: URL) throws {
        let bytes = Array(document.text(pretty: true).utf8)
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
        guard let data = try? Data(contentsOf: file) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = Timestamp.date(text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an ISO 8601 time: \(text)"))
            }
            return date
        }
        return try? decoder.decode(ControllerStatus.self, from: data)
    }
}

extension VerifyMode: Codable {}
