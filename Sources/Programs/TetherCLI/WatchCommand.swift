import ArgumentParser
import ConnectorCore
import FoundationEssentials
import IntegrationModel
import Sensors
import WireFormat
import Primitives

/// `tether agent watch`
struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Run the sensors in the foreground and print what they see: process starts and stops, network connections, file changes.",
        discussion: """
            Shows which kernel interface each sensor uses on this machine and what a fallback misses: where the process connector is refused (without CAP_NET_ADMIN on older kernels, or in a container's own pid namespace) the process sensor scans /proc; without CAP_SYS_ADMIN the file sensor uses inotify, which does not say which process changed a file. Nothing is queued or sent: `tether run` runs the same sensors while telemetry flows and sends what they see. Until Ctrl-C, or --seconds.
            """)

    @Option(help: ArgumentHelp("Stop after this many seconds.", valueName: "seconds"))
    var seconds: Double?

    @Option(name: .customLong("path"), help: ArgumentHelp("A folder whose files to watch; repeat for more. Default: the agent's edr.fileMonitoring.paths.", valueName: "folder"))
    var paths: [String] = []

    @Flag(help: "Use only what an unprivileged process may: a /proc scan and inotify (as without the capabilities).")
    var unprivileged = false

    @Flag(help: "Print one JSON object a line (the wire's type, time and detail).")
    var json = false

    @OptionGroup var device: DeviceOptions

    func validate() throws {
        if let seconds, seconds <= 0 { throw ValidationError("--seconds takes a number of seconds above 0; for example --seconds 10") }
        for path in paths where !path.hasPrefix("/") {
            throw ValidationError("--path '\(path)' is not an absolute folder; write for example --path /etc")
        }
    }

    func run() throws {
        let folders: [String]
        if paths.isEmpty, FileManager.default.fileExists(atPath: device.stateDirectoryURL.appending(path: "agent.db").path) {
            folders = try device.agent().state().filePaths
        } else {
            folders = paths.isEmpty ? FolderList.defaultFileMonitoring : paths
        }
        let buffer = SensorBuffer()
        let sensors = SensorSet(buffer: buffer, options: SensorOptions(filePaths: folders, excludedPaths: [device.stateDirectoryURL.path],
                                                                       kernelInterfaces: !unprivileged))
        for status in sensors.statuses {
            let line = "sensor \(status.sensor.rawValue): \(status.running ? status.source : "not running")" + (status.note.map { " — \($0)" } ?? "")
            if json { Console.error(line) } else { Console.out(line) }
        }
        StopSignal.install()
        let deadline = seconds.map { Date().addingTimeInterval($0) }
        var total = 0
        var dropped = 0
        repeat {
            Threads.sleep(seconds: 0.2)
            let drained = buffer.drain()
            dropped += drained.dropped.values.reduce(0, +)
            total += drained.events.count
            for event in drained.events { Console.out(json ? Self.json(event) : Self.text(event)) }
        } while !StopSignal.requested && (deadline.map { Date() < $0 } ?? true)
        sensors.stop()
        let last = buffer.drain()
        dropped += last.dropped.values.reduce(0, +)
        total += last.events.count
        for event in last.events { Console.out(json ? Self.json(event) : Self.text(event)) }
        let summary = "\(total) events" + (dropped > 0 ? ", \(dropped) dropped (the buffer was full)" : "")
        if json { Console.error(summary) } else { Console.out(summary) }
    }

    static func text(_ event: SensorEvent) -> String {
        let detail = event.detail.sorted { $0.key < $1.key }.map { "\($0.key)=\(TerminalText.excerpt($0.value.description, limit: 200))" }
        return "\(Timestamp.string(event.at)) \(event.type.rawValue) " + detail.joined(separator: " ")
    }

    static func json(_ event: SensorEvent) -> String {
        String(decoding: Wire.encode(WireEvent(seq: 0, type: event.type.rawValue, time: Timestamp.string(event.at), detail: event.detail)), as: UTF8.self)
    }
}
