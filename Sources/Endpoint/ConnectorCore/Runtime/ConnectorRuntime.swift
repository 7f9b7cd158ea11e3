import AgentInterface
import EmbeddedAgent
import Firewall
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import HTTPTransport
import IntegrationModel
import Sensors
import WireFormat
import X509
import Primitives

/// The outcome of one connector's sync.
package struct SyncOutcome: Sendable {
    package let integration: Integration
    /// False when the task is stopped (nothing was attempted).
    package let attempted: Bool
    package let succeeded: Bool
    /// What happened, for people: "synced with 127.0.0.1:443; 120 events sent in 1 batch".
    package let summary: String
    package let errorKind: String?
}

/// The connector core: EDR, NDR and Sandbox connectors that talk HTTPS to the platform with the
/// agent's settings and certificates. Every call blocks on the network: run it on a dedicated
/// thread, never on Swift's cooperative pool.
package final class ConnectorRuntime: @unchecked Sendable {
    let agent: Agent
    let store: RuntimeStore
    let directory: URL
    /// The connectors' clock: timers (isolation auto-off, back-off, hourly limits) read it, so
    /// tests move time instead of sleeping.
    let clock: @Sendable () -> Date
    /// Where network isolation is enforced: the process's own network namespace, or (tests) one they made.
    let firewall: Firewall
    /// How often a running controller reads the isolation table back while isolated.
    package static let isolationCheckSeconds: TimeInterval = 5
    /// Events per telemetry batch at most.
    package static let batchSize = 1024
    /// The connectors' store file in the state directory.
    package static let storeFileName = "runtime.db"
    /// A run-process command may start only executables listed in this file (one path a line).
    package static let allowListFileName = "run-process.allow"

    /// Opens the connectors' store beside the agent's. `queueLimit` bounds each telemetry queue.
    package init(agent: Agent, queueLimit: Int = 100_000, firewall: Firewall = Firewall(),
                 clock: @escaping @Sendable () -> Date = { Date() }) throws {
        self.agent = agent
        self.clock = clock
        self.firewall = firewall
        directory = agent.directory
        do {
            store = try RuntimeStore(directory: agent.directory, queueLimit: queueLimit)
        } catch {
            throw AgentError.store("runtime.db: \(error)")
        }
        finishInterruptedQuarantines()
        // An isolation an earlier release only recorded has no lock file yet: make it, so the
        // loop's checks (which look for the file first) see the isolation.
        if !Self.mayHoldIsolation(directory),
           let recorded = try? store.database.query("SELECT 1 FROM isolation WHERE active = 1 OR table_written = 1"), !recorded.isEmpty {
            let fd = open(directory.appending(path: Self.isolationLockFileName).path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
            if fd >= 0 { close(fd) }
        }
    }

    /// The agent's id on the wire.
    package func agentId() throws -> String { try storeCall { try store.agentId() } }

    // MARK: - Telemetry in

    /// Records sensor events for an integration's telemetry. Telemetry exists only while
    /// behaviour detection (and, for EDR, `telemetry`) is on: otherwise nothing is queued.
    /// Returns how many were queued (the rest were over the queue's bound, and counted).
    @discardableResult
    package func record(_ events: [TelemetryEvent], for integration: Integration = .edr) throws -> Int {
        guard try telemetryFlows(integration, value: agent.value) else {
            try storeCall {
                try store.database.transaction {
                    try store.bump(integration, "suppressed", by: events.count)
                    try store.bump(integration, TelemetryOutcome.suppressed, counts: RuntimeStore.countByType(events))
                }
            }
            return 0
        }
        return try storeCall { try store.enqueue(events, for: integration) }
    }

    /// Whether `integration`'s telemetry flows in this state (behaviour detection on, and for EDR `telemetry`).
    package func telemetryFlows(_ integration: Integration, state: AgentState) -> Bool {
        (try? telemetryFlows(integration, value: state.value)) ?? false
    }

    /// Telemetry exists while behaviour detection is on (and, for EDR, `telemetry`); Sandbox has none.
    private func telemetryFlows(_ integration: Integration, value: (SettingPath) throws -> SettingValue) throws -> Bool {
        guard try value(SettingPath.behaviorDetection) == .bool(true) else { return false }
        if integration == .edr { return try value(SettingPath.edr.telemetry) == .bool(true) }
        return integration == .ndr
    }

    // MARK: - Sync

    /// Syncs every running connector now (and flushes its telemetry); stopped ones are skipped.
    package func syncAll() -> [SyncOutcome] {
        Integration.allCases.map { sync($0) }
    }

    /// One sync of one connector: EDR sync + command results + telemetry flush; NDR ping +
    /// event packages; Sandbox uploads and verdict polling.
    package func sync(_ integration: Integration) -> SyncOutcome {
        let state: AgentState
        do {
            state = try agent.state()
        } catch {
            return SyncOutcome(integration: integration, attempted: false, succeeded: false, summary: "\(error)", errorKind: "other")
        }
        guard state.running.contains(integration) else {
            return SyncOutcome(integration: integration, attempted: false, succeeded: true, summary: "stopped", errorKind: nil)
        }
        expireIsolation()
        do {
            let summary: String
            switch integration {
            case .edr: summary = try syncEDR(state)
            case .ndr: summary = try syncNDR(state)
            case .sandbox: summary = try syncSandbox(state)
            }
            return SyncOutcome(integration: integration, attempted: true, succeeded: true, summary: summary, errorKind: nil)
        } catch let failure as ConnectorFailure {
            try? store.recordFailure(integration, server: failure.server, kind: failure.kind, message: failure.message, at: clock())
            return SyncOutcome(integration: integration, attempted: true, succeeded: false, summary: failure.message, errorKind: failure.kind)
        } catch {
            try? store.recordFailure(integration, server: nil, kind: "other", message: "\(error)", at: clock())
            return SyncOutcome(integration: integration, attempted: true, succeeded: false, summary: "\(error)", errorKind: "other")
        }
    }

    /// Sends queued telemetry now without a sync (the batch timer or the 1024-event mark).
    package func flushTelemetry(_ integration: Integration) -> SyncOutcome {
        guard integration != .sandbox, let state = try? agent.state(), state.running.contains(integration),
              telemetryFlows(integration, state: state) else {
            return SyncOutcome(integration: integration, attempted: false, succeeded: true, summary: "nothing to flush", errorKind: nil)
        }
        do {
            let client = try makeClient(integration, state: state)
            let server: Endpoint
            let url: String
            var size = ConnectorRuntime.batchSize
            if integration == .edr {
                guard case .string(let address) = state.value(SettingPath.edr.address),
                      case .int(let port) = state.value(SettingPath.edr.port) else { throw ConnectorFailure(kind: "other", message: "no EDR address", server: nil) }
                server = Endpoint(address: address, port: port)
                url = "\(Self.url(server))/kata/edr/v1/sensors/\(try agentId())/events"
            } else {
                let last = try storeCall { try store.status(.ndr, running: true).server }
                guard case .endpoints(let endpoints) = state.value(SettingPath.ndr.endpoints),
                      let chosen = endpoints.first(where: { $0.description == last }) ?? endpoints.first else { throw ConnectorFailure(kind: "other", message: "no NDR endpoint", server: nil) }
                server = chosen
                url = "\(Self.url(server))/kata/ndr/v1/sensors/\(try agentId())/events"
                if case .int(let value) = state.value(SettingPath.ndr.maximumEventsInPackage) { size = value }
            }
            let summary = try flush(integration, client: client, url: url, server: server, state: state, packageSize: size)
            return SyncOutcome(integration: integration, attempted: true, succeeded: true, summary: summary, errorKind: nil)
        } catch let failure as ConnectorFailure {
            try? store.recordFailure(integration, server: failure.server, kind: failure.kind, message: failure.message, at: clock())
            return SyncOutcome(integration: integration, attempted: true, succeeded: false, summary: failure.message, errorKind: failure.kind)
        } catch {
            return SyncOutcome(integration: integration, attempted: true, succeeded: false, summary: "\(error)", errorKind: "other")
        }
    }

    /// What is due now for each running connector, by its settings: a sync every
    /// `synchronizationPeriod` (EDR), a ping every `pingPeriod` (NDR), polling while scans wait
    /// (Sandbox), and a telemetry flush every `maximumDataTransferTime` or at 1024 queued events.
    /// Runs what is due and returns what it did.
    package func tick(now: Date? = nil) -> [SyncOutcome] {
        let now = now ?? clock()
        // An isolation's auto-off is due on its own, whether or not a connector syncs now.
        expireIsolation()
        guard let state = try? agent.state() else { return [] }
        var outcomes: [SyncOutcome] = []
        for integration in state.running.sorted() {
            guard let due = schedule(integration, state: state, now: now) else { continue }
            if due.sync <= now {
                outcomes.append(sync(integration))
            } else if let flush = due.flush, flush <= now {
                outcomes.append(flushTelemetry(integration))
            }
        }
        return outcomes
    }

    /// When `tick` next has something to do (a sync, a flush, an isolation's auto-off), so the
    /// process can sleep until then; nil when nothing runs.
    package func nextDue(now: Date? = nil) -> Date? {
        let now = now ?? clock()
        guard let state = try? agent.state() else { return nil }
        var next: Date?
        func consider(_ date: Date?) { if let date { next = min(next ?? date, date) } }
        for integration in state.running {
            let due = schedule(integration, state: state, now: now)
            consider(due?.sync)
            consider(due?.flush)
        }
        if let isolation = try? store.database.query("SELECT until FROM isolation WHERE id = 1 AND active = 1").first {
            // One already past is lifted by the next tick; only a future one is a deadline.
            if let until = isolation[0].real { consider(max(Date(timeIntervalSince1970: until), now)) }
            // While isolated the table is read back this often: a removed one is put back within it.
            consider(now.addingTimeInterval(Self.isolationCheckSeconds))
        }
        return next
    }

    /// When a running connector's next sync is due (its period after the last attempt; 30 s
    /// after an error at most; not before a Sandbox back-off ends) and, when events wait and
    /// telemetry flows, its next telemetry flush (not before the retry after a failed one).
    private func schedule(_ integration: Integration, state: AgentState, now: Date) -> (sync: Date, flush: Date?)? {
        let status = try? store.status(integration, running: true)
        let period: TimeInterval
        switch integration {
        case .edr: period = TimeInterval(state.int(SettingPath.edr.synchronizationPeriod) * 60)
        case .ndr: period = TimeInterval(state.int(SettingPath.ndr.pingPeriod))
        case .sandbox: period = ((try? store.pendingScanCount()) ?? 0) == 0 ? 300 : 5
        }
        let retry = status?.lastError != nil ? min(period, 30) : period
        var sync = status?.lastAttempt.map { $0.addingTimeInterval(retry) } ?? now
        if integration == .sandbox, let until = (try? store.backoff(.sandbox))?.until { sync = max(sync, until) }
        var flush: Date?
        if telemetryFlows(integration, state: state), let transfer = SettingPath.eventTransfer(integration),
           let depth = try? store.depth(integration), depth > 0 {
            let age = (try? store.oldestEventAge(integration, now: now)) ?? 0
            var at = depth >= ConnectorRuntime.batchSize ? now
                : now.addingTimeInterval(TimeInterval(state.int(transfer.maximumDataTransferTime)) - age)
            if status?.lastError != nil, let last = status?.lastAttempt { at = max(at, last.addingTimeInterval(retry)) }
            flush = at
        }
        return (sync, flush)
    }

    /// Every connector's status.
    package func status() throws -> [ConnectorStatus] {
        let state = try agent.state()
        return try storeCall { try store.database.read { try Integration.allCases.map { try store.status($0, running: state.running.contains($0)) } } }
    }

    // MARK: - EDR

    private func syncEDR(_ state: AgentState) throws -> String {
        let server = Endpoint(address: state.string(SettingPath.edr.address), port: state.int(SettingPath.edr.port))
        let client = try makeClient(.edr, state: state)
        let agentId = try self.agentId()
        let base = "\(Self.url(server))/kata/edr/v1/sensors/\(agentId)"
        let results = try storeCall { try unreportedResults() }
        let body = SyncRequest(
            agentId: agentId, hostName: Self.hostName, addresses: Self.addresses(),
            os: ProcessInfo.processInfo.operatingSystemVersionString,
            versions: .init(agent: "tether-connector-core 1", settings: settingsVersion(state)),
            tasks: Dictionary(uniqueKeysWithValues: Integration.allCases.map { ($0.taskName, state.running.contains($0) ? "running" : "stopped") }),
            isolation: (try? isolationStatus().enforced) ?? false, commandResults: results)
        let response = try post(client, url: "\(base)/sync", body, server: server)
        try storeCall { try markReported(results.map(\.id)) }
        let received = try document(SyncResponse.self, in: response, from: server, what: "the platform's answer to the sync is not a sync response").commands
        let channel = UploadChannel(client: client, base: base, server: server)
        for command in received { try handle(command, channel: channel) }
        try storeCall { try store.recordSuccess(.edr, server: server.description, at: clock()) }

        var summary = "synced with \(server)"
        if !received.isEmpty { summary += "; \(received.count) command\(received.count == 1 ? "" : "s") received" }
        if telemetryFlows(.edr, state: state) {
            let flushed = try flush(.edr, client: client, url: "\(base)/events", server: server, state: state)
            summary += "; " + flushed
        } else {
            summary += "; telemetry off"
        }
        return summary
    }

    /// Sends queued events in order, in batches, applying the count limits; stops at the first
    /// failure so nothing is lost or reordered.
    private func flush(_ integration: Integration, client: HTTPClient, url: String, server: Endpoint, state: AgentState,
                       packageSize: Int = ConnectorRuntime.batchSize) throws -> String {
        var sent = 0, batches = 0, throttled = 0
        guard SettingPath.eventTransfer(integration) != nil else { return "no telemetry for \(integration.displayName)" }
        while true {
            // A batch formed before (and not acknowledged: a failure, a crash) goes again as it was.
            let batch: PendingBatch
            if let pending = try storeCall({ try store.pendingBatch(integration) }) {
                batch = pending
            } else {
                let queued = try storeCall { try store.peek(integration, limit: packageSize) }
                guard let last = queued.last else { break }
                let hour = HourlyBudget.hour(clock())
                var budget = HourlyBudget(integration, state: state, spent: try storeCall { try store.sentThisHour(integration, hour: hour) })
                var seqs: [Int64] = []
                var batchCounts: [String: Int] = [:]
                var dropped = 0
                var droppedByType: [String: Int] = [:]
                for item in queued {
                    guard budget.take(item.event.type) else {
                        dropped += 1
                        droppedByType[item.event.type.rawValue, default: 0] += 1
                        continue
                    }
                    batchCounts[item.event.type.rawValue, default: 0] += 1
                    seqs.append(item.seq)
                }
                let formed = PendingBatch(batchId: UUID().uuidString.lowercased(), seqs: seqs, throughSeq: last.seq, hour: hour,
                                          counts: batchCounts, throttled: dropped)
                batch = try storeCall { try store.savePendingBatch(formed, for: integration, throttledByType: droppedByType) }
            }
            let events = try storeCall { try store.events(integration, seqs: batch.seqs) }
            if !events.isEmpty {
                let wire = events.map { WireEvent(seq: Int($0.seq), type: $0.event.type.rawValue, time: Timestamp.string($0.event.at), detail: $0.event.detail) }
                _ = try post(client, url: url, EventBatch(batchId: batch.batchId, events: wire), server: server)
                batches += 1
                sent += events.count
            }
            try storeCall { try store.acknowledge(batch, for: integration) }
            throttled += batch.throttled
        }
        var summary = sent == 0 && throttled == 0 ? "no events queued" : "\(sent) event\(sent == 1 ? "" : "s") sent in \(batches) batch\(batches == 1 ? "" : "es")"
        if throttled > 0 { summary += ", \(throttled) throttled" }
        return summary
    }

    // MARK: - NDR

    private func syncNDR(_ state: AgentState) throws -> String {
        guard case .endpoints(let endpoints) = state.value(SettingPath.ndr.endpoints), !endpoints.isEmpty else {
            throw ConnectorFailure(kind: "other", message: "NDR has no endpoints", server: nil)
        }
        let client = try makeClient(.ndr, state: state)
        let agentId = try self.agentId()
        var failures: [String] = []
        var lastFailure: ConnectorFailure?
        // One endpoint at a time, in order: the first that answers the ping is used.
        for endpoint in endpoints {
            let base = "\(Self.url(endpoint))/kata/ndr/v1/sensors/\(agentId)"
            do {
                _ = try post(client, url: "\(base)/ping", Ping(agentId: agentId, time: Timestamp.string(clock())), server: endpoint)
            } catch let failure as ConnectorFailure {
                failures.append(failure.message)
                lastFailure = failure
                continue
            }
            try storeCall { try store.recordSuccess(.ndr, server: endpoint.description, at: clock()) }
            var summary = "pinged \(endpoint)"
            if !failures.isEmpty { summary += " after failing over from " + failures.joined(separator: "; ") }
            if telemetryFlows(.ndr, state: state) {
                let size = state.int(SettingPath.ndr.maximumEventsInPackage)
                summary += "; " + (try flush(.ndr, client: client, url: "\(base)/events", server: endpoint, state: state, packageSize: size))
            }
            return summary
        }
        throw ConnectorFailure(kind: lastFailure?.kind ?? "unreachable", message: "no NDR endpoint answered: " + failures.joined(separator: "; "),
                               server: endpoints.last?.description)
    }

    // MARK: - Sandbox

    /// Queues files for scanning; refused (with an event) when the on-disk queue would exceed `queueSize` MB.
    @discardableResult
    package func submitToSandbox(_ files: [(path: String, content: [UInt8])]) throws -> [String] {
        let state = try agent.state()
        let limit: Int = { if case .int(let value) = state.value(SettingPath.sandbox.queueSize) { return value }; return 1024 }()
        // Check and insert in one transaction, so two submitters cannot overfill the queue together;
        // a refusal rolls the whole submission back, then is recorded as an event.
        struct QueueFull: Error { let message: String }
        do {
            return try store.database.transaction {
                var queued = try store.queuedBytes()
                var ids: [String] = []
                for file in files {
                    guard queued + file.content.count <= limit * 1024 * 1024 else {
                        throw QueueFull(message: "the Sandbox queue is full: \(file.path) (\(file.content.count) bytes) does not fit in sandbox.queueSize = \(limit) MB (\(queued) bytes waiting); nothing was queued")
                    }
                    let id = UUID().uuidString.lowercased()
                    try store.addScan(id: id, path: file.path, content: file.content)
                    queued += file.content.count
                    ids.append(id)
                }
                return ids
            }
        } catch let full as QueueFull {
            try storeCall {
                try store.enqueue([TelemetryEvent(type: .sandboxQueueFull, at: clock(), detail: ["files": .text(files.map(\.path).joined(separator: ", "))])], for: .edr)
            }
            throw AgentError.invalidSetting(full.message)
        } catch {
            throw AgentError.store("runtime.db: \(error)")
        }
    }

    /// Each scan: its file, state (`queued`, `processing`, `done`) and verdict.
    package func sandboxScans() throws -> [(id: String, path: String, state: String, verdict: String?)] {
        try storeCall { try store.scans().map { ($0.id, $0.path, $0.state, $0.verdict) } }
    }

    private func syncSandbox(_ state: AgentState) throws -> String {
        guard case .endpoints(let servers) = state.value(SettingPath.sandbox.servers), let server = servers.first else {
            throw ConnectorFailure(kind: "other", message: "Sandbox has no servers", server: nil)
        }
        let backoff = try storeCall { try store.backoff(.sandbox) }
        if let until = backoff.until, until > clock() {
            return "backing off until \(Timestamp.string(until)) (the scanner answered 429)"
        }
        let client = try makeClient(.sandbox, state: state)
        let base = "\(Self.url(server))/kata/scanner/v1/sensors/\(try agentId())/scans"
        var uploaded = 0
        for scan in try storeCall({ try store.scans(state: "queued") }) {
            let boundary = "tether-\(UUID().uuidString.lowercased())"
            var body: [UInt8] = []
            func part(_ name: String, _ value: [UInt8], filename: String? = nil) {
                var head = "--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\""
                if let filename { head += "; filename=\"\(filename)\"\r\nContent-Type: application/octet-stream" }
                head += "\r\n\r\n"
                body += Array(head.utf8) + value + Array("\r\n".utf8)
            }
            let filename = String((scan.path.split(separator: "/").last ?? "").map { $0 == "\"" || $0 == "\\" || $0.isNewline ? "_" : $0 })
            part("content", scan.content ?? [], filename: filename)
            part("scanId", Array(scan.id.utf8))
            part("objectType", Array("file".utf8))
            body += Array("--\(boundary)--\r\n".utf8)
            let response = try send(client, method: "POST", url: base, headers: ["Content-Type: multipart/form-data; boundary=\(boundary)"],
                                    body: body, server: server, acceptRateLimit: true)
            if response.status == 429 {
                let delay = min(300.0, pow(2.0, Double(backoff.step)))
                try storeCall { try store.setBackoff(.sandbox, until: clock().addingTimeInterval(delay)) }
                try storeCall { try store.recordSuccess(.sandbox, server: server.description, at: clock()) }
                return "\(uploaded) uploaded; the scanner answered 429, backing off \(Int(delay)) s"
            }
            try storeCall { try store.updateScan(scan.id, state: "processing") }
            uploaded += 1
        }
        try storeCall { try store.setBackoff(.sandbox, until: nil) }
        var verdicts = 0
        if try storeCall({ try !store.scans(state: "processing").isEmpty }) {
            let response = try send(client, method: "GET", url: "\(base)/state?state=detect,not%20detected,processing,timeout,error",
                                    headers: [], body: nil, server: server)
            let list = try document(ScanStates.self, in: response, from: server, what: "the scanner's answer is not a list of scan states").scans
            let mine = Dictionary(uniqueKeysWithValues: try storeCall { try store.scans(state: "processing") }.map { ($0.id, $0) })
            for entry in list {
                let id = entry.scanId, verdict = entry.state
                guard let scan = mine[id], verdict != "processing" else { continue }
                try storeCall {
                    var events = [TelemetryEvent(type: .sandboxVerdict, at: clock(), detail: ["path": .text(scan.path), "scanId": .text(id), "verdict": .text(verdict)])]
                    if verdict == "detect" { events += Self.sandboxDetection(path: scan.path, scanId: id, at: clock()) }
                    try store.updateScan(id, state: "done", verdict: verdict, dropContent: true)
                    try store.enqueue(events, for: .edr)
                }
                _ = try? send(client, method: "DELETE", url: "\(base)/\(id)", headers: [], body: nil, server: server)
                verdicts += 1
            }
        }
        try storeCall { try store.recordSuccess(.sandbox, server: server.description, at: clock()) }
        let waiting = try storeCall { try store.pendingScanCount() }
        return "\(uploaded) uploaded, \(verdicts) verdict\(verdicts == 1 ? "" : "s"), \(waiting) waiting"
    }

    /// A Sandbox `detect` as the agent's own detection, and what it did about it: it reports the
    /// object and leaves it where it is.
    static func sandboxDetection(path: String, scanId: String, at: Date) -> [TelemetryEvent] {
        var detection = Detection(source: .sandbox, path: path)
        detection.scanId = scanId
        detection.verdict = "detect"
        let result = ProcessingResult(detectionId: detection.id, action: .reported,
                                      result: "the object stays in place; the embedded agent reports Sandbox detections and does not remove files")
        return [SensorEvent(at: at, .detection(detection)), SensorEvent(at: at, .processingResult(result))].map(TelemetryEvent.init)
    }

    // MARK: - Transport

    func makeClient(_ integration: Integration, state: AgentState) throws -> HTTPClient {
        guard let pinned = state.serverCertificates[integration] else {
            throw ConnectorFailure(kind: "server-certificate-rejected", message: "no server certificate is pinned", server: nil)
        }
        let paths = SettingPath.common(integration)
        var identity: ClientIdentity?
        if state.bool(paths.mutualAuthentication) {
            guard let container = try agent.clientContainer(integration) else {
                throw ConnectorFailure(kind: "client-certificate-missing", message: "mutual authentication is on but no client certificate is installed", server: nil)
            }
            do {
                identity = ClientIdentity(pkcs12: container.pkcs12, password: try container.readPassword(stateDirectory: directory))
            } catch {
                throw ConnectorFailure(kind: "client-certificate-rejected", message: "\(error)", server: nil)
            }
        }
        var proxy: ProxySettings?
        let address = state.string(SettingPath.proxy.address)
        if state.bool(paths.useProxy), !address.isEmpty {
            let name = state.string(SettingPath.proxy.user)
            let user: String? = name.isEmpty ? nil : name
            var password: String?
            let file = state.string(SettingPath.proxy.passwordFile)
            if !file.isEmpty {
                do {
                    password = try DeviceFiles.readSecret(file, stateDirectory: directory)
                } catch {
                    throw ConnectorFailure(kind: "proxy-refused", message: "the proxy password file \(error)", server: nil)
                }
            }
            proxy = ProxySettings(address: address, user: user, password: password)
        }
        do {
            var configuration = TransportConfiguration(
                pinnedCertificatePEM: pinned.pem, clientIdentity: identity, proxy: proxy,
                connectionTimeout: state.int(paths.connectionTimeout), requestTimeout: state.int(paths.requestTimeout))
            configuration.fixedAddresses = isolatedAddresses()
            return try HTTPClient(configuration: configuration)
        } catch {
            throw ConnectorFailure(kind: "other", message: "\(error)", server: nil)
        }
    }

    private func post<Body: Encodable>(_ client: HTTPClient, url: String, _ document: Body, server: Endpoint) throws -> HTTPResponse {
        try send(client, method: "POST", url: url, headers: ["Content-Type: application/json"], body: Wire.encode(document), server: server)
    }

    private func send(_ client: HTTPClient, method: String, url: String, headers: [String], body: [UInt8]?, server: Endpoint,
                      acceptRateLimit: Bool = false) throws -> HTTPResponse {
        let response: HTTPResponse
        do {
            response = try client.send(method: method, url: url, headers: headers, body: body)
        } catch let error as TransportError {
            throw ConnectorFailure(error, server: server.description)
        }
        if (200..<300).contains(response.status) || (acceptRateLimit && response.status == 429) { return response }
        throw ConnectorFailure(kind: "http-error", message: "HTTP \(response.status) from \(server) for \(method) \(URL(string: url)?.path ?? url)",
                               server: server.description)
    }

    /// A wire document read from an answer; one that is not what the format says fails the
    /// connection's attempt, named (never taken as an empty answer).
    private func document<T: Decodable>(_ type: T.Type, in response: HTTPResponse, from server: Endpoint, what: String) throws -> T {
        do {
            return try Wire.decode(type, from: response.body)
        } catch {
            throw ConnectorFailure(kind: "other", message: "\(what) (docs/wire-format.md)", server: server.description)
        }
    }

    /// `https://host:port`, IPv6 addresses in brackets (as `Endpoint` writes them).
    static func url(_ endpoint: Endpoint) -> String { "https://\(endpoint)" }

    private func settingsVersion(_ state: AgentState) -> Int {
        state.lastChanges.values.map { Int($0.at.timeIntervalSince1970) }.max() ?? 0
    }

    /// The host name, looked up once (it can cost a resolver round trip).
    static let hostName = ProcessInfo.processInfo.hostName

    static func addresses() -> [String] {
        var result: [String] = []
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var cursor = list
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let address = entry.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET) else { continue }
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(address, socklen_t(MemoryLayout<sockaddr_in>.size), &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 {
                let text = host.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                if text != "127.0.0.1" { result.append(text) }
            }
        }
        return result
    }

    @discardableResult
    func storeCall<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as AgentError {
            throw error
        } catch let error as ConnectorFailure {
            throw error
        } catch {
            throw AgentError.store("runtime.db: \(error)")
        }
    }
}

/// A connector's failure, named for status and reports.
struct ConnectorFailure: Error {
    let kind: String
    let message: String
    let server: String?

    init(kind: String, message: String, server: String?) {
        self.kind = kind
        self.message = message
        self.server = server
    }

    init(_ error: TransportError, server: String) {
        kind = error.kind
        message = "\(server): \(error)"
        self.server = server
    }
}

// MARK: - The hourly count limits

/// The hourly count limits (docs/wire-format.md) for one integration and clock hour: with
/// `requestCountLimits` on, at most `maximumEventsPerHour` events, and one event type at most
/// `eventLimitExceededPercentage` percent of that; detections, their results and Sandbox
/// verdicts always pass (and count). One rule for the flush and for the sensors' admission.
struct HourlyBudget {
    private let limited: Bool
    private let perHour: Int
    private let share: Int
    /// Events counted this hour, by type: those sent (or admitted) before, and those taken since.
    private(set) var counts: [String: Int]
    private var total: Int

    /// The clock hour (hours since 1970) a moment counts in.
    static func hour(_ date: Date) -> Int { Int(date.timeIntervalSince1970 / 3600) }

    init(_ integration: Integration, state: AgentState, spent: [String: Int]) {
        let transfer = SettingPath.eventTransfer(integration)
        limited = transfer.map { state.bool($0.requestCountLimits) } ?? false
        perHour = transfer.map { state.int($0.maximumEventsPerHour) } ?? 0
        share = transfer.map { state.int($0.eventLimitExceededPercentage) } ?? 0
        counts = spent
        total = spent.values.reduce(0, +)
    }

    /// Counts one event of `type` against the budget; false when it is over (it is throttled).
    mutating func take(_ type: EventType) -> Bool {
        if limited && !type.isExemptFromLimits
            && (total >= perHour || counts[type.rawValue, default: 0] * 100 >= perHour * share) {
            return false
        }
        counts[type.rawValue, default: 0] += 1
        total += 1
        return true
    }
}

// MARK: - Sensors and telemetry counts

/// What became of each event type, for one integration or for the sensors.
package struct TelemetryCounts: Sendable, Equatable {
    /// Type → outcome → count.
    package let byType: [String: [TelemetryOutcome: Int]]

    package func count(_ type: String, _ outcome: TelemetryOutcome) -> Int { byType[type]?[outcome] ?? 0 }
}

extension ConnectorRuntime {
    /// The sensors as the last `tether run` recorded them (empty when none ever ran).
    /// Runs several of the reads below as one read of the store (one lock, one consistent view),
    /// as a cycle's report and metrics do.
    package func readTogether<T>(_ body: () throws -> T) throws -> T {
        try storeCall { try store.database.read(body) }
    }

    package func sensorReports() throws -> [SensorReport] { try storeCall { try store.sensors() } }

    /// Per-type counts: what the sensors saw (`seen`, `buffer-dropped`) under nil, and what each
    /// integration queued, suppressed, dropped, throttled and sent.
    package func telemetryCounts(_ integration: Integration?) throws -> TelemetryCounts {
        try storeCall { TelemetryCounts(byType: try store.countsByType(integration?.rawValue ?? "sensors")) }
    }

    /// Execution prevention's counts so far, by name (`denied`, `allowed-unread`, `cached`, …; ExecutionGuard.Counts).
    package func preventionCounts() throws -> [(decision: String, count: Int)] {
        try storeCall {
            try (ExecutionGuard.Counts.decisionNames + ExecutionGuard.Counts.otherNames).map { ($0, try store.counter(scope: "sensors", "prevention:\($0)")) }
        }
    }

    /// Records the kernel interface delivered, and how often it said it lost some (a full buffer or queue).
    package func kernelCounts(_ sensor: SensorKind) throws -> (reported: Int, overflows: Int) {
        try storeCall { (try store.counter(scope: "sensors", "kernel-reported:\(sensor.rawValue)"),
                         try store.counter(scope: "sensors", "kernel-overflows:\(sensor.rawValue)")) }
    }
}
