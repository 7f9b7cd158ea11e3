import Foundation
import IntegrationModel
import HTTPServer
import PlatformTLS
import WireFormat
import X509

/// A request the platform received, as tests and the demo read it back (and as
/// `received.jsonl` keeps it, one JSON object a line).
package struct ReceivedRequest: Codable, Sendable {
    package let at: Date
    package let method: String
    package let path: String
    /// The client certificate's subject, when mutual TLS was used.
    package let clientSubject: String?
    /// The body, when it was JSON; for a multipart upload, its fields and the content's size.
    package let body: JSONValue?

    /// The body as a wire document (`SyncRequest`, `EventBatch`…), when it is one.
    package func decode<T: Decodable>(_ type: T.Type) -> T? { try? body?.decode(type) }

    package var agentId: String? {
        let parts = path.split(separator: "/")
        guard let index = parts.firstIndex(of: "sensors"), index + 1 < parts.count else { return nil }
        return String(parts[index + 1])
    }
}

/// The platform's PKI: a test CA and the server certificate it issued (for localhost,
/// 127.0.0.1 and ::1), kept in a folder so a restarted platform presents the same certificate.
package struct PlatformPKI: Sendable {
    package let caPEM: String
    package let caKeyPEM: String
    package let serverCertificatePEM: String
    package let serverKeyPEM: String

    /// Loads the PKI from `directory`, or makes one there (ca.pem, server.pem and their keys).
    package static func loadOrCreate(in directory: URL, days: Int = 90) throws -> PlatformPKI {
        let files = ["ca.pem", "ca.key", "server.pem", "server.key"].map { directory.appending(path: $0) }
        if files.allSatisfy({ FileManager.default.fileExists(atPath: $0.path) }) {
            let texts = try files.map { try String(contentsOf: $0, encoding: .utf8) }
            return PlatformPKI(caPEM: texts[0], caKeyPEM: texts[1], serverCertificatePEM: texts[2], serverKeyPEM: texts[3])
        }
        let pki = try create(days: days)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for (file, text) in zip(files, [pki.caPEM, pki.caKeyPEM, pki.serverCertificatePEM, pki.serverKeyPEM]) {
            try text.write(to: file, atomically: true, encoding: .utf8)
            if file.lastPathComponent.hasSuffix(".key") { chmod(file.path, 0o600) }
        }
        return pki
    }

    /// A new PKI in memory.
    /// A CA and a server certificate for `names` (loopback's by default; tests in network
    /// namespaces add the addresses they serve on).
    package static func create(days: Int = 90, names: [String] = ["localhost", "127.0.0.1", "::1"]) throws -> PlatformPKI {
        let authority = try CertificateAuthority(commonName: "Tether platform-sim CA", days: days)
        let server = try authority.issue(commonName: "kata.platform-sim.local", names: names, days: days)
        return PlatformPKI(caPEM: authority.root.certificatePEM, caKeyPEM: authority.root.privateKeyPEM,
                           serverCertificatePEM: server.certificatePEM, serverKeyPEM: server.privateKeyPEM)
    }

    /// Issues a client certificate from this CA as a PKCS#12 container.
    package func issueClient(commonName: String, password: String, days: Int = 90) throws -> [UInt8] {
        let authority = CertificateAuthority(root: try IssuedCertificate(certificatePEM: caPEM, privateKeyPEM: caKeyPEM))
        return try authority.issue(commonName: commonName, client: true, days: days).pkcs12(password: password)
    }
}

/// The local targeted-attack platform: EDR sync and events, NDR ping and events, and the public
/// Sandbox scanner API, over HTTPS on loopback; see docs/wire-format.md. It keeps a record of what
/// it received, can queue response commands for agents, and can play a few failures.
package final class PlatformSimulator: @unchecked Sendable {
    /// The EICAR test string: a scanned object containing it is a detection.
    package static let eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

    package let pki: PlatformPKI
    package let requireClientCertificate: Bool
    private var server: HTTPServer?
    private var controlServer: HTTPServer?
    private let lock = NSLock()
    private var requests: [ReceivedRequest] = []
    private var commands: [String: [JSONValue]] = [:]
    /// Files agents sent for get-file commands, by command id.
    private var files: [String: (bytes: [UInt8], sha256: String)] = [:]
    private var scans: [String: (verdict: String, polls: Int)] = [:]
    private var rejectScansRemaining = 0
    private var failuresRemaining: [(prefix: String, status: Int)] = []
    /// Event batches taken in, by path and `batchId`; a batch sent again is acknowledged and dropped.
    private var batchesTaken = Set<String>()
    private var duplicates = 0
    private let recordFile: URL?
    /// Events taken in, by integration (`edr`, `ndr`) and type.
    private var eventCounts: [String: [String: Int]] = [:]
    private let log: (@Sendable (String) -> Void)?
    private let host: String
    /// The port it listens on.
    package private(set) var port: Int

    /// Starts the platform at once. `port` 0 lets the kernel choose; `recordFile` appends each
    /// received request there as a JSON line; `log` gets a line for each event batch taken in,
    /// counted by event type.
    package init(pki: PlatformPKI, requireClientCertificate: Bool = false, host: String = "127.0.0.1", port: Int = 0, recordFile: URL? = nil,
                log: (@Sendable (String) -> Void)? = nil) throws {
        self.pki = pki
        self.requireClientCertificate = requireClientCertificate
        self.recordFile = recordFile
        self.log = log
        self.host = host
        self.port = port
        try start()
    }

    /// Starts listening (again, after `stop`) on the same port.
    package func start() throws {
        let server = try HTTPServer(certificatePEM: pki.serverCertificatePEM, privateKeyPEM: pki.serverKeyPEM,
                                     clientCAPEM: requireClientCertificate ? pki.caPEM : nil, host: host, port: port) { [weak self] request in
            self?.handle(request) ?? ServerResponse(status: 503)
        }
        lock.withLock {
            self.server = server
            self.port = server.port
        }
    }

    /// Serves the `/sim/` paths (queue a command, the event totals) in plain HTTP on 127.0.0.1
    /// at `port` (0: any free one), for a script that holds no client certificate (the demo);
    /// only to requests that carry `token` in `X-Sim-Token`, so that another local user cannot
    /// queue commands for the agents. Returns the port.
    package func serveControl(port: Int, token: String) throws -> Int {
        let server = try HTTPServer(host: "127.0.0.1", port: port) { [weak self] request in
            guard request.headers["x-sim-token"] == token else {
                return ServerResponse(status: 403, contentType: "text/plain", body: Array("X-Sim-Token is missing or wrong\n".utf8))
            }
            guard request.path.hasPrefix("/sim/") else {
                return ServerResponse(status: 404, contentType: "text/plain", body: Array("only /sim/… here\n".utf8))
            }
            return self?.handle(request) ?? ServerResponse(status: 503)
        }
        lock.withLock { controlServer = server }
        return server.port
    }

    /// Stops listening and drops open connections: an outage.
    package func stop() {
        let server = lock.withLock { () -> HTTPServer? in
            defer { self.server = nil }
            return self.server
        }
        server?.stop()
    }

    deinit {
        stop()
    }

    // MARK: - What tests and the demo use

    /// Every request received, in order.
    package var received: [ReceivedRequest] { lock.withLock { requests } }

    /// The telemetry events taken in for `path` (`edr` or `ndr`), in the order they arrived:
    /// each batch once, however often it was sent (by `batchId`).
    package func events(_ integration: String = "edr") -> [WireEvent] {
        var seen = Set<String>()
        return received.filter { $0.path.hasPrefix("/kata/\(integration)/") && $0.path.hasSuffix("/events") }
            .compactMap { $0.decode(EventBatch.self) }
            .filter { seen.insert($0.batchId).inserted }
            .flatMap(\.events)
    }

    /// Events taken in so far, by integration (`edr`, `ndr`) and event type (`GET /sim/events`).
    package var eventsByType: [String: [String: Int]] { lock.withLock { eventCounts } }

    /// How many event batches arrived again after they had been taken in (and were dropped).
    package var duplicateBatches: Int { lock.withLock { duplicates } }

    /// Queues a response command for an agent (`*` for any); it is sent on that agent's next sync
    /// as it is given (a malformed one too: agents must reject those), with an id added when it
    /// has none.
    package func queueCommand(_ command: JSONValue, for agentId: String = "*") {
        var command = command
        if case .object(var members) = command, members["id"] == nil {
            members["id"] = .string(UUID().uuidString.lowercased())
            command = .object(members)
        }
        lock.withLock { commands[agentId, default: []].append(command) }
    }

    /// The bytes an agent sent for the get-file command `id`, or nil.
    package func receivedFile(_ id: String) -> [UInt8]? {
        lock.withLock { files[id]?.bytes }
    }

    /// The next `count` scan uploads are answered 429 Too Many Requests.
    package func rejectScans(_ count: Int) {
        lock.withLock { rejectScansRemaining = count }
    }

    /// The next `count` requests whose path starts with `prefix` are answered with `status`.
    package func fail(_ prefix: String, status: Int, count: Int = 1) {
        lock.withLock { failuresRemaining += Array(repeating: (prefix, status), count: count) }
    }

    // MARK: - The wire

    private func handle(_ request: ServerRequest) -> ServerResponse {
        let json = try? Wire.decode(JSONValue.self, from: request.body)
        let received = ReceivedRequest(at: Date(), method: request.method, path: request.path, clientSubject: request.clientSubject,
                                       body: json ?? multipartSummary(request))
        let injected: Int? = lock.withLock {
            requests.append(received)
            if let index = failuresRemaining.firstIndex(where: { request.path.hasPrefix($0.prefix) }) {
                return failuresRemaining.remove(at: index).status
            }
            return nil
        }
        record(received)
        if let injected { return answer(WireError("injected failure"), status: injected) }

        let parts = request.path.split(separator: "/").map(String.init)
        // /kata/{edr|ndr}/v1/sensors/{id}/{sync|events|ping}, /kata/scanner/v1/sensors/{id}/scans…, /sim/…
        switch (request.method, parts.first, parts.count > 1 ? parts[1] : "") {
        case ("POST", "kata", "edr") where parts.last == "sync":
            let agent = parts.count > 4 ? parts[4] : "*"
            let pending: [JSONValue] = lock.withLock {
                let list = (commands[agent] ?? []) + (commands["*"] ?? [])
                commands[agent] = nil
                commands["*"] = nil
                return list
            }
            return answer(SyncResponse(commands: pending, serverTime: Date().formatted(.iso8601)))
        case ("POST", "kata", "edr") where parts.last == "events", ("POST", "kata", "ndr") where parts.last == "events":
            guard let batch = received.decode(EventBatch.self) else { return answer(WireError("an event batch is expected"), status: 400) }
            if let problem = Self.numberProblem(batch) { return answer(WireError(problem), status: 400) }
            let isNew = lock.withLock {
                let inserted = batchesTaken.insert(request.path + " " + batch.batchId).inserted
                if !inserted { duplicates += 1 }
                return inserted
            }
            // A batch sent again (its acknowledgement was lost) gets the same answer and is not taken in twice.
            if isNew {
                var types: [String: Int] = [:]
                for event in batch.events { types[event.type, default: 0] += 1 }
                lock.withLock { eventCounts[parts[1], default: [:]].merge(types, uniquingKeysWith: +) }
                let agent = parts.count > 4 ? String(parts[4].prefix(8)) : "?"
                log?("\(parts[1].uppercased()) events from agent \(agent)…: \(batch.events.count) ("
                     + types.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")")
            }
            return answer(Accepted(accepted: batch.events.count))
        case ("POST", "kata", "ndr") where parts.last == "ping":
            return answer(Pong(pong: true))
        case (_, "kata", "scanner"):
            return scanner(request, parts: parts)
        case ("GET", "sim", "received"):
            return ServerResponse(status: 200, body: Self.encoder.encode(ReceivedList(requests: self.received)))
        case ("GET", "sim", "events"):
            return ServerResponse(status: 200, body: Self.encoder.encode(eventsByType))
        case ("POST", "kata", "edr") where parts.count == 8 && parts[5] == "commands" && parts[7] == "file":
            // A get-file's bytes: kept, and refused when they do not have the SHA-256 the agent names.
            let digest = sha256Hex(request.body)
            guard request.headers["x-tether-sha256"] == digest else {
                return answer(WireError("the file's SHA-256 is \(digest), not \(request.headers["x-tether-sha256"] ?? "given")"), status: 422)
            }
            lock.withLock { files[parts[6]] = (request.body, digest) }
            if let recordFile {
                let folder = recordFile.deletingLastPathComponent().appending(path: "files")
                try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                try? Data(request.body).write(to: folder.appending(path: parts[6].filter { $0.isHexDigit || $0 == "-" }))
            }
            log?("get-file \(parts[6]): \(request.body.count) bytes, sha256 \(digest)")
            return answer(["received": .number(Double(request.body.count)), "sha256": .string(digest)] as JSONValue)
        case ("POST", "sim", "commands"):
            guard let json, case .object = json else { return answer(WireError("a JSON command is expected"), status: 400) }
            queueCommand(json, for: request.query["agent"] ?? "*")
            return answer(["queued": true] as JSONValue)
        default:
            return answer(WireError("no such endpoint: \(request.method) \(request.path)"), status: 404)
        }
    }

    private func scanner(_ request: ServerRequest, parts: [String]) -> ServerResponse {
        // /kata/scanner/v1/sensors/{sensorId}/scans[/state|/{scanId}]
        guard parts.count >= 6, parts[5] == "scans" else { return ServerResponse(status: 404) }
        switch (request.method, parts.count) {
        case ("POST", 6):
            let reject: Bool = lock.withLock {
                if rejectScansRemaining > 0 { rejectScansRemaining -= 1; return true }
                return false
            }
            if reject { return ServerResponse(status: 429, body: Array("{\"error\":\"too many requests\"}".utf8), headers: ["Retry-After": "1"]) }
            guard let form = Multipart.parse(request), let scanId = form.fields["scanId"], let content = form.file,
                  form.fields["objectType"] == "file" else {
                return answer(WireError("multipart fields content, scanId and objectType=file are required"), status: 400)
            }
            let verdict = String(decoding: content, as: UTF8.self).contains(Self.eicar) ? "detect" : "not detected"
            lock.withLock { scans[scanId] = (verdict, 0) }
            return answer(ScanState(scanId: scanId, state: "processing"))
        case ("GET", 7) where parts[6] == "state":
            let wanted = Set((request.query["state"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            let list: [ScanState] = lock.withLock {
                var list: [ScanState] = []
                for (id, scan) in scans.sorted(by: { $0.key < $1.key }) {
                    // Every object is "processing" at its first poll, then final.
                    let state = scan.polls == 0 ? "processing" : scan.verdict
                    scans[id] = (scan.verdict, scan.polls + 1)
                    if wanted.isEmpty || wanted.contains(state) { list.append(ScanState(scanId: id, state: state)) }
                }
                return list
            }
            return answer(ScanStates(scans: list))
        case ("DELETE", 7):
            let removed = lock.withLock { scans.removeValue(forKey: parts[6]) != nil }
            return removed ? ServerResponse(status: 204) : ServerResponse(status: 404)
        default:
            return ServerResponse(status: 405)
        }
    }

    private func answer<T: Encodable>(_ document: T, status: Int = 200) -> ServerResponse {
        ServerResponse(status: status, body: Wire.encode(document))
    }

    private func multipartSummary(_ request: ServerRequest) -> JSONValue? {
        guard let form = Multipart.parse(request) else { return nil }
        return ["scanId": .string(form.fields["scanId"] ?? ""), "objectType": .string(form.fields["objectType"] ?? ""),
                "size": .number(Double(form.file?.count ?? 0))]
    }

    /// Received requests as `/sim/received` and `received.jsonl` write them: times as ISO 8601.
    private static let encoder = RecordEncoder()

    private func record(_ request: ReceivedRequest) {
        guard let recordFile else { return }
        var data = Data(Self.encoder.encode(request))
        data.append(0x0A)
        lock.withLock {
            if let handle = try? FileHandle(forWritingTo: recordFile) {
                handle.seekToEndOfFile()
                handle.write(data)
                try? handle.close()
            } else {
                try? data.write(to: recordFile)
            }
        }
    }
}

/// Just enough multipart/form-data for the scanner API.
enum Multipart {
    static func parse(_ request: ServerRequest) -> (fields: [String: String], file: [UInt8]?)? {
        guard let type = request.headers["content-type"], type.hasPrefix("multipart/form-data"),
              let boundaryRange = type.range(of: "boundary=") else { return nil }
        let boundary = Array(("--" + type[boundaryRange.upperBound...].trimmingCharacters(in: CharacterSet(charactersIn: "\" "))).utf8)
        var fields: [String: String] = [:]
        var file: [UInt8]?
        var rest = request.body[...]
        while let start = rest.firstRange(of: boundary) {
            rest = rest[start.upperBound...]
            guard let headerEnd = rest.firstRange(of: [13, 10, 13, 10]) else { break }
            let headers = String(decoding: rest[..<headerEnd.lowerBound], as: UTF8.self)
            let content = rest[headerEnd.upperBound...]
            guard let next = content.firstRange(of: [13, 10] + boundary) else { break }
            let value = Array(content[..<next.lowerBound])
            if let nameRange = headers.range(of: "name=\"") {
                let name = String(headers[nameRange.upperBound...].prefix { $0 != "\"" })
                if headers.contains("filename=") || name == "content" { file = value }
                else { fields[name] = String(decoding: value, as: UTF8.self) }
            }
            rest = content[next.lowerBound...]
        }
        return (fields, file)
    }
}

/// `GET /sim/received`.
struct ReceivedList: Encodable {
    let requests: [ReceivedRequest]
}

/// JSON with sorted keys and ISO 8601 times.
struct RecordEncoder: Sendable {
    func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return Array((try? encoder.encode(value)) ?? Data("{}".utf8))
    }
}

extension PlatformSimulator {

    /// The first numeric detail field sent as anything but a number, named with its event.
    package static func numberProblem(_ batch: EventBatch) -> String? {
        for event in batch.events {
            for (key, value) in event.detail where DetailValue.numericKeys.contains(key) && value.number == nil {
                return "event seq \(event.seq) (\(event.type)): detail.\(key) must be a JSON number, not \(value.text.map { "the string \"\($0)\"" } ?? "\(value)") (docs/wire-format.md)"
            }
        }
        return nil
    }
}
