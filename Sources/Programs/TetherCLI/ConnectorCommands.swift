import ArgumentParser
import ConnectorCore
import Firewall
import Controller
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import IntegrationModel
import Reports
import Sensors
import WireFormat
import Primitives

/// Opens the agent and its connectors.
func connectorRuntime(_ device: DeviceOptions) throws -> ConnectorRuntime {
    let agent = try device.agent()
    return try agentCall { try ConnectorRuntime(agent: agent) }
}

/// `tether agent sync`
struct Sync: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Connect now: one sync (and a telemetry flush) for each enabled connector; exit 0 if every one succeeded, else 1.",
        discussion: "For operators checking a new certificate or proxy, and for scripts. Stopped connectors are skipped.")

    @Argument(help: "edr, ndr or sandbox (default: every enabled connector).")
    var integration: Integration?

    @OptionGroup var device: DeviceOptions

    func run() throws {
        let runtime = try connectorRuntime(device)
        let outcomes = integration.map { [runtime.sync($0)] } ?? runtime.syncAll()
        var failed = false
        for outcome in outcomes {
            let name = "\(outcome.integration.displayName) (\(outcome.integration.taskName))".padded(to: 22)
            if !outcome.attempted {
                Console.out("\(name) skipped: \(outcome.summary)")
            } else if outcome.succeeded {
                Console.out("\(name) ok: \(outcome.summary)")
            } else {
                failed = true
                Console.out("\(name) FAILED (\(outcome.errorKind ?? "error")): \(outcome.summary)")
            }
        }
        if failed { throw ExitCode(1) }
    }
}

/// `tether agent status`
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show each connector: state, server, last successful contact, queue depth, last error; and network isolation.")

    @OptionGroup var output: OutputOptions
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let runtime = try connectorRuntime(device)
        let statuses = try agentCall { try runtime.status() }
        let isolation = try agentCall { try runtime.isolationStatus() }
        let sensors = try agentCall { try runtime.sensorReports() }
        var counts: [String: TelemetryCounts] = ["sensors": try agentCall { try runtime.telemetryCounts(nil) }]
        for integration in [Integration.edr, .ndr] { counts[integration.rawValue] = try agentCall { try runtime.telemetryCounts(integration) } }
        if output.isJSON {
            Console.out(JSONReport.serialize(AgentStatusDocument(
                connectors: statuses.map(JSONReport.health),
                isolation: JSONReport.isolation(isolation),
                sensors: sensors.map(JSONReport.sensor),
                telemetry: counts.mapValues { $0.byType.mapValues { Dictionary(uniqueKeysWithValues: $0.map { ($0.key.rawValue, $0.value) }) } })))
            return
        }
        for status in statuses { Console.out(HealthFormatting.line(status)) }
        Console.out("Network isolation: " + ReportFormatting.isolation(isolation))
        Console.out(HealthFormatting.sensors(sensors, counts: counts))
        let rules = try agentCall { try runtime.preventionRules() }.count
        let decided = Dictionary(uniqueKeysWithValues: try agentCall { try runtime.preventionCounts() }.map { ($0.decision, $0.count) })
        if rules > 0 || decided.values.contains(where: { $0 > 0 }) {
            Console.out("Execution prevention: \(rules) rule\(rules == 1 ? "" : "s"); before programs ran: \(decided["denied"] ?? 0) denied, "
                        + "\(decided["allowed"] ?? 0) allowed (\(decided["allowed-unread"] ?? 0) not read in time, \(decided["allowed-too-large"] ?? 0) too large to read)")
        }
    }
}

/// `tether agent status --json`.
struct AgentStatusDocument: Encodable {
    let connectors: [ReportDocument.Health]
    let isolation: ReportDocument.Isolation
    let sensors: [ReportDocument.Sensor]
    /// `sensors` (seen, buffer-dropped), `edr` and `ndr` (queued, suppressed, dropped, throttled,
    /// sent) → event type → outcome → count.
    let telemetry: [String: [String: [String: Int]]]
}

/// How connector health reads in text and JSON.
enum HealthFormatting {
    /// The sensors, and what became of each event type.
    static func sensors(_ sensors: [SensorReport], counts: [String: TelemetryCounts]) -> String {
        guard let first = sensors.first else { return "Sensors: never run (tether run runs them while EDR or NDR telemetry flows)" }
        let running = sensors.contains(where: \.isRunning)
        var lines = ["Sensors: " + (running ? "running in tether run (pid \(first.pid)) since \(ReportFormatting.timestamp(first.since))"
                                            : "stopped since \(ReportFormatting.timestamp(first.since))")]
        for report in sensors {
            lines.append("  " + report.status.sensor.rawValue.padded(to: 11) + report.status.source
                         + (report.status.note.map { "\n" + String(repeating: " ", count: 13) + $0 } ?? ""))
        }
        let types = Set(counts.values.flatMap(\.byType.keys)).sorted()
        if !types.isEmpty { lines.append("Telemetry by type:") }
        for type in types {
            var parts: [String] = []
            if let sensed = counts["sensors"], sensed.byType[type] != nil {
                parts.append("seen \(sensed.count(type, .seen))" + (sensed.count(type, .bufferDropped) > 0 ? ", \(sensed.count(type, .bufferDropped)) dropped (buffer full)" : ""))
            }
            for integration in [Integration.edr, .ndr] {
                guard let counted = counts[integration.rawValue], let outcomes = counted.byType[type] else { continue }
                let named = TelemetryOutcome.allCases.compactMap { outcome in outcomes[outcome].map { "\(outcome.rawValue) \($0)" } }
                parts.append("\(integration.displayName) " + named.joined(separator: ", "))
            }
            lines.append("  " + type.padded(to: 19) + parts.joined(separator: "; "))
        }
        return lines.joined(separator: "\n")
    }

    static func line(_ status: ConnectorStatus) -> String {
        var text = "\(status.integration.displayName) (\(status.integration.taskName))".padded(to: 22)
        text += status.state
        if let server = status.server { text += " — \(server)" }
        if let success = status.lastSuccess { text += "; last contact \(ReportFormatting.timestamp(success))" }
        text += "; queue \(status.queueDepth)"
        if status.sent > 0 { text += ", sent \(status.sent)" }
        if status.throttled > 0 { text += ", throttled \(status.throttled)" }
        if status.dropped > 0 { text += ", dropped \(status.dropped) (queue full)" }
        if let error = status.lastError { text += "\n" + String(repeating: " ", count: 22) + "last error (\(status.errorKind ?? "error")): \(error)" }
        return text
    }
}

/// `tether agent isolation-status`
struct IsolationStatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "isolation-status",
        abstract: "Show whether this endpoint is isolated from the network: as ordered, and as the kernel enforces it.",
        discussion: """
            Isolation is an nftables table of Tether's own (\(Firewall.table)) that drops every packet in and out \
            except on loopback, to the platform's endpoints, the platform's exclusions and replies of those flows. \
            This command reads the table back from the kernel; `nft list table inet \(Firewall.table)` shows it too.
            """)
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let isolation = try agentCall { try connectorRuntime(device).isolationStatus() }
        guard isolation.active else {
            Console.out("Network isolation is off\(isolation.liftedBy.map { " (last lifted by \($0))" } ?? "").")
            return
        }
        Console.out("Network isolation is ordered since \(isolation.since.map(ReportFormatting.timestamp) ?? "?")"
                    + (isolation.until.map { ", lifts by itself at \(ReportFormatting.timestamp($0))" } ?? ", until lifted")
                    + " (command \(isolation.commandId ?? "?")).")
        Console.out(ReportFormatting.isolation(isolation))
        for allowed in isolation.allowed { Console.out("  allowed: \(allowed.summary)") }
        if !isolation.enforced { throw ExitCode(1) }  // not cut off, or not known to be
    }
}

/// `tether agent isolation-off`
struct IsolationOff: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "isolation-off",
        abstract: "Lift the network isolation locally, at once: the nftables table goes, and the platform hears of it on the next sync.",
        discussion: "The vendor's local emergency switch. A running `tether run` does not put the isolation back; a new command from the platform does.")
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let (result, detail) = try connectorRuntime(device).liftIsolation(by: "tether agent isolation-off")
        guard result == "applied" else { throw CommandError("error: \(detail)") }
        Console.out(detail.prefix(1).uppercased() + detail.dropFirst() + ".")
    }
}

/// `tether agent sandbox …`
struct SandboxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sandbox", abstract: "Submit files to the platform's Sandbox and list verdicts.",
                                                    subcommands: [SandboxSubmit.self, SandboxList.self])
}

struct SandboxSubmit: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "submit",
        abstract: "Queue files for scanning (on disk, within sandbox.queueSize MB); they upload on the next sync.")
    @Argument(help: "Files to scan.") var paths: [String] = []
    @OptionGroup var device: DeviceOptions

    func validate() throws {
        if paths.isEmpty { throw ValidationError("name the files to scan, e.g. `tether agent sandbox submit ./sample.exe`") }
    }

    func run() throws {
        let files = try paths.map { (path: $0, content: try readFile($0)) }
        let ids = try agentCall { try connectorRuntime(device).submitToSandbox(files) }
        for (file, id) in zip(paths, ids) { Console.out("queued \(file) as scan \(id)") }
    }
}

struct SandboxList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List submitted files, their state and verdicts.")
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let scans = try agentCall { try connectorRuntime(device).sandboxScans() }
        if scans.isEmpty { Console.out("Nothing submitted.") }
        for scan in scans { Console.out("\(scan.id)  \(scan.state.padded(to: 10))  \(scan.verdict ?? "-")  \(scan.path)") }
    }
}

/// `tether agent quarantine`
struct QuarantineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quarantine",
        abstract: "List the files the platform put in quarantine, and put one back.",
        discussion: """
            quarantine-file moves a file into a store only root may read, under the state directory \
            (\(ConnectorRuntime.quarantineFolder)/, mode 0400: never executable), keeping where it was, its owner, \
            mode and SHA-256. restore puts it back with them, never over a file that is there now.
            """,
        subcommands: [QuarantineList.self, QuarantineRestore.self])
}

struct QuarantineList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List quarantined files: id, when, size, SHA-256 and where each was.")
    @OptionGroup var output: OutputOptions
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let files = try agentCall { try connectorRuntime(device).quarantinedFiles() }
        if output.isJSON {
            Console.out(JSONReport.serialize(files.map { file in
                QuarantineEntry(id: file.id, originalPath: file.originalPath, size: file.size, sha256: file.sha256,
                                owner: file.owner, group: file.group, mode: String(file.mode, radix: 8), quarantinedAt: Timestamp.string(file.at),
                                commandId: file.commandId, restoredAt: file.restoredAt.map(Timestamp.string))
            }))
            return
        }
        if files.isEmpty { Console.out("Nothing is in quarantine.") }
        for file in files {
            let state = file.restoredAt.map { "restored \(ReportFormatting.timestamp($0))" } ?? "held"
            Console.out("\(file.id)  \(ReportFormatting.timestamp(file.at))  \(state)  \(file.size) bytes  sha256 \(file.sha256)\n"
                        + "    \(TerminalText.escaped(file.originalPath))  (owner \(file.owner):\(file.group), mode \(String(file.mode, radix: 8)))")
        }
    }
}

/// One line of `tether agent quarantine list -o json`.
struct QuarantineEntry: Encodable {
    let id: String
    let originalPath: String
    let size: Int
    let sha256: String
    let owner: UInt32
    let group: UInt32
    /// Octal, as chmod takes it.
    let mode: String
    let quarantinedAt: String
    let commandId: String?
    let restoredAt: String?
}

struct QuarantineRestore: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restore",
        abstract: "Put a quarantined file back where it was, with its owner and mode (refused if a file is there now).")
    @Argument(help: ArgumentHelp("The id `tether agent quarantine list` shows.", valueName: "id")) var id: String
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let (result, detail) = try connectorRuntime(device).restoreFile(quarantineId: id)
        guard result == "applied" else { throw CommandError("error: \(detail)") }
        Console.out(detail.prefix(1).uppercased() + detail.dropFirst() + ".")
    }
}

/// `tether agent emit-events`
struct EmitEvents: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "emit-events",
        abstract: "Record synthetic sensor events into a connector's telemetry queue (for demos, tests and benchmarks).")
    @Option(help: ArgumentHelp("The event type: \(EventType.sensorTypes.map(\.rawValue).joined(separator: ", ")).", valueName: "type"))
    var type: String = "process-start"
    @Option(help: "How many.") var count: Int = 1
    @Option(help: "edr or ndr.") var integration: Integration = .edr
    @OptionGroup var device: DeviceOptions

    func validate() throws {
        let names = EventType.sensorTypes.map(\.rawValue)
        if !names.contains(type) {
            throw ValidationError("unknown event type '\(type)'\(Suggestion.hint(for: type, among: names)); use one of \(names.joined(separator: ", "))")
        }
        if count < 1 { throw ValidationError("--count must be at least 1") }
    }

    func run() throws {
        let eventType = EventType(rawValue: type) ?? .processStart
        let events = (0..<count).map { TelemetryEvent(type: eventType, detail: ["synthetic": .flag(true), "n": DetailValue($0)]) }
        let queued = try agentCall { try connectorRuntime(device).record(events, for: integration) }
        Console.out(queued == count ? "Queued \(queued) \(type) event\(queued == 1 ? "" : "s") for \(integration.displayName)."
                    : "Queued \(queued) of \(count) events for \(integration.displayName) (telemetry off, or the queue is full).")
    }
}

/// `tether agent run`
struct RunConnectors: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run",
        abstract: "Run the connectors until Ctrl-C: syncs, pings, telemetry flushes and Sandbox polling on their own schedules.",
        discussion: "Settings are read four times a second, so connectors start, stop and restart as `tether apply` changes them; queued events survive restarts.")
    @OptionGroup var device: DeviceOptions

    func run() throws {
        let runtime = try connectorRuntime(device)
        StopSignal.install()
        Console.out("Connectors running (Ctrl-C to stop).")
        while !StopSignal.requested {
            for outcome in runtime.tick() where outcome.attempted {
                Console.out("\(ReportFormatting.timestamp(Date())) \(outcome.integration.rawValue): \(outcome.succeeded ? "" : "FAILED (\(outcome.errorKind ?? "error")) ")\(outcome.summary)")
            }
            usleep(250_000)
        }
        Console.out("Stopped.")
    }
}

/// SIGINT/SIGTERM ask a long-running command to finish its current step and exit; SIGHUP
/// asks it to re-read its configuration.
enum StopSignal {
    nonisolated(unsafe) private static var flag: sig_atomic_t = 0
    nonisolated(unsafe) private static var reload: sig_atomic_t = 0
    /// A pipe's write end the handlers write a byte to, so a process asleep until its next
    /// deadline wakes at once (`Wakeup`); -1 for none.
    nonisolated(unsafe) private static var wakeDescriptor: Int32 = -1

    /// Wakes `wakeup` on every signal from now on.
    static func wake(_ wakeup: Wakeup) { wakeDescriptor = wakeup.writeEnd }

    /// Signals no longer wake anything (the `Wakeup` is going away).
    static func stopWaking() { wakeDescriptor = -1 }

    /// In a signal handler: only write(2), which is async-signal-safe; errno is kept for the
    /// code the signal interrupted.
    private static func poke() {
        guard wakeDescriptor >= 0 else { return }
        let saved = errno
        var byte: UInt8 = 1
        _ = write(wakeDescriptor, &byte, 1)
        errno = saved
    }

    static var requested: Bool { flag != 0 }

    /// Whether SIGHUP arrived since the last call.
    static func takeReload() -> Bool {
        guard reload != 0 else { return false }
        reload = 0
        return true
    }

    static func install() {
        flag = 0
        // A parent may have started us with these signals blocked (Foundation.Process from
        // async code does): unblock them, or SIGTERM would never arrive.
        var set = sigset_t()
        sigemptyset(&set)
        for number in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&set, number) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        signal(SIGINT) { _ in StopSignal.flag = 1; StopSignal.poke() }
        signal(SIGTERM) { _ in StopSignal.flag = 1; StopSignal.poke() }
        signal(SIGHUP) { _ in StopSignal.reload = 1; StopSignal.poke() }
    }
}
