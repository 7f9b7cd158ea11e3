import FoundationEssentials

/// The embedded agent's sensors (docs/architecture.md, "Sensors").
package enum SensorKind: String, CaseIterable, Sendable, Codable {
    case process, network, file
    /// Execution prevention: before programs run (fanotify permission events) or right after.
    case prevention
}

/// Whether a sensor runs, from which kernel interface, and what it cannot see there.
package struct SensorStatus: Sendable, Equatable, Codable {
    package let sensor: SensorKind
    /// `netlink process connector`, `/proc scan every 1 s`, `/proc/net every 1 s`,
    /// `fanotify on the file systems of /etc, /tmp`, `inotify on 412 folders under /etc`.
    package let source: String
    package let running: Bool
    /// A fallback's reason and what it misses, once; nil when nothing is missed.
    package let note: String?

    package init(sensor: SensorKind, source: String, running: Bool, note: String?) {
        self.sensor = sensor
        self.source = source
        self.running = running
        self.note = note
    }

    package var stopped: SensorStatus { SensorStatus(sensor: sensor, source: source, running: false, note: note) }
}

/// What the sensors watch and how.
package struct SensorOptions: Sendable, Equatable {
    /// Folders whose files are watched (`edr.fileMonitoring.paths`).
    package var filePaths: [String]
    /// Folders never reported (the agent's own state directory).
    package var excludedPaths: [String]
    /// Seconds between /proc scans (when the process connector is refused) and /proc/net reads.
    package var scanInterval: TimeInterval
    /// False to use the unprivileged interfaces only (a /proc scan, inotify), as without the capabilities.
    package var kernelInterfaces: Bool

    package init(filePaths: [String], excludedPaths: [String] = [], scanInterval: TimeInterval = 1, kernelInterfaces: Bool = true) {
        self.filePaths = filePaths
        self.excludedPaths = excludedPaths
        self.scanInterval = scanInterval
        self.kernelInterfaces = kernelInterfaces
    }
}

/// The three sensors, started together into one buffer and stopped together.
package final class SensorSet: @unchecked Sendable {
    package private(set) var options: SensorOptions
    private let buffer: SensorBuffer
    private let process: ProcessSensor
    private let network: NetworkSensor
    private var file: FileSensor
    /// The executables of the processes seen starting: owners of connections and file changes.
    private let executables: ExecutableNames

    /// Starts every sensor; a kernel interface that is refused falls back, and says so in its status.
    /// A process whose executable is on `prevention` is killed as soon as it is seen.
    package init(buffer: SensorBuffer, options: SensorOptions, prevention: PreventionList = PreventionList()) {
        self.options = options
        self.buffer = buffer
        // The process sensor's starts name the owners of connections and file changes.
        let executables = ExecutableNames()
        self.executables = executables
        process = ProcessSensor(buffer: buffer, prevention: prevention, scanInterval: options.scanInterval, allowConnector: options.kernelInterfaces,
                                executables: executables)
        network = NetworkSensor(buffer: buffer, interval: options.scanInterval, allowBPF: options.kernelInterfaces, executables: executables)
        file = Self.fileSensor(buffer: buffer, options: options, executables: executables)
    }

    /// The kernel names files by their real paths: compare with those (/bin on merged-usr is /usr/bin).
    private static func fileSensor(buffer: SensorBuffer, options: SensorOptions, executables: ExecutableNames) -> FileSensor {
        let real = { (paths: [String]) in paths.map { URL(fileURLWithPath: $0).resolvingSymlinksInPath().path } }
        return FileSensor(buffer: buffer, paths: real(options.filePaths), excluded: real(options.excludedPaths), allowFanotify: options.kernelInterfaces,
                          executables: executables)
    }

    /// Watches other folders: only the file sensor restarts (the process sensor, and with it
    /// execution prevention, goes on). False when the old file sensor's thread did not end in time.
    @discardableResult
    package func watch(_ folders: [String], excluding excluded: [String]) -> Bool {
        let ended = file.stop()
        options.filePaths = folders
        options.excludedPaths = excluded
        file = Self.fileSensor(buffer: buffer, options: options, executables: executables)
        return ended
    }

    package var statuses: [SensorStatus] { [process.status, network.status, file.status] }

    /// Records the kernel interfaces delivered (BPF ring buffers, process connector, fanotify or
    /// inotify) and how many, or how often, they reported losing some.
    package var kernelCounts: [SensorKind: (reported: Int, overflows: Int)] {
        [.process: process.kernelCounts, .network: network.kernelCounts, .file: file.kernelCounts]
    }

    /// Stops every sensor and waits for their threads (a quarter second each, normally; three
    /// seconds at most). False when one is stuck in the kernel and was left to end by itself.
    @discardableResult
    package func stop() -> Bool {
        [process.stop(), network.stop(), file.stop()].allSatisfy { $0 }
    }

    deinit { stop() }
}
