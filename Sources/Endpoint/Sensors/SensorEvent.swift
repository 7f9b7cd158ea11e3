import FoundationEssentials
import IntegrationModel
import WireFormat

/// What a sensor saw, typed; `type` and `detail` are its form on the wire (docs/wire-format.md,
/// "Sensor events").
package struct SensorEvent: Sendable, Equatable {
    package let at: Date
    package let payload: Payload

    package enum Payload: Sendable, Equatable {
        case processStart(ProcessFacts)
        case processStop(ProcessStop)
        case network(NetworkConnection)
        case file(FileChange)
        case detection(Detection)
        case processingResult(ProcessingResult)
    }

    package init(at: Date = Date(), _ payload: Payload) {
        self.at = at
        self.payload = payload
    }

    /// The wire's event type.
    package var type: EventType {
        switch payload {
        case .processStart: return .processStart
        case .processStop: return .processStop
        case .network: return .networkConnection
        case .file: return .fileChange
        case .detection: return .detection
        case .processingResult: return .processingResult
        }
    }

    /// The wire's `detail`: only what is known (a field is absent, never empty or guessed);
    /// pids, uids, ports and exit codes as numbers.
    package var detail: [String: DetailValue] {
        var detail: [String: DetailValue] = [:]
        func put(_ key: String, _ value: String?) { if let value { detail[key] = .text(value) } }
        func put<Number: BinaryInteger>(_ key: String, _ value: Number?) { if let value { detail[key] = DetailValue(value) } }
        switch payload {
        case .processStart(let process):
            put("pid", process.pid)
            put("ppid", process.parentPid)
            put("uid", process.uid)
            put("path", process.executable)
            put("commandLine", process.commandLine)
            put("startTime", process.startedAt.map(Timestamp.string))
            put("sha256", process.sha256)
            put("md5", process.md5)
            if !process.missing.isEmpty { detail["missing"] = .text(process.missing.joined(separator: ",")) }
        case .processStop(let stop):
            put("pid", stop.pid)
            put("exitCode", stop.exitCode)
            put("signal", stop.signal)
            put("path", stop.executable)
            put("startTime", stop.startedAt.map(Timestamp.string))
        case .network(let connection):
            put("action", connection.action.rawValue)
            put("protocol", connection.transport.rawValue)
            put("localAddress", connection.local.address)
            put("localPort", connection.local.port)
            if let remote = connection.remote {
                put("remoteAddress", remote.address)
                put("remotePort", remote.port)
            }
            put("uid", connection.uid)
            put("pid", connection.owner?.pid)
            put("path", connection.owner?.executable)
        case .file(let change):
            put("action", change.action.rawValue)
            put("path", change.path)
            put("oldPath", change.oldPath)
            if change.isDirectory { detail["directory"] = .flag(true) }
            put("pid", change.actor?.pid)
            put("processPath", change.actor?.executable)
        case .detection(let detection):
            put("detectionId", detection.id)
            put("source", detection.source.rawValue)
            put("path", detection.path)
            put("sha256", detection.sha256)
            put("md5", detection.md5)
            put("pid", detection.pid)
            put("commandLine", detection.commandLine)
            put("rule", detection.rule)
            put("scanId", detection.scanId)
            put("verdict", detection.verdict)
        case .processingResult(let result):
            put("detectionId", result.detectionId)
            put("action", result.action.rawValue)
            put("result", result.result)
            put("pid", result.pid)
        }
        return detail
    }
}

/// A process as the kernel and /proc describe it at its start.
package struct ProcessFacts: Sendable, Equatable {
    package static func == (lhs: ProcessFacts, rhs: ProcessFacts) -> Bool {
        lhs.pid == rhs.pid && lhs.parentPid == rhs.parentPid && lhs.uid == rhs.uid && lhs.executable == rhs.executable
            && lhs.commandLine == rhs.commandLine && lhs.startedAt == rhs.startedAt && lhs.sha256 == rhs.sha256 && lhs.md5 == rhs.md5
            && lhs.missing == rhs.missing
    }

    package let pid: Int32
    package var parentPid: Int32?
    package var uid: UInt32?
    package var executable: String?
    /// The arguments joined by spaces (at most 4 KiB).
    package var commandLine: String?
    package var startedAt: Date?
    package var sha256: String?
    package var md5: String?
    /// The device and inode of the file hashed: how execution prevention confirms, before it
    /// kills, that the pid still runs that file. Not on the wire.
    var executableIdentity: (device: UInt64, inode: UInt64)?
    /// What could not be read because the process was gone (or unreadable) first:
    /// `path`, `commandLine`, `startTime`, `sha256`, `ppid`, `uid`.
    package var missing: [String] = []

    package init(pid: Int32) { self.pid = pid }
}

package struct ProcessStop: Sendable, Equatable {
    package let pid: Int32
    /// The exit code of a process that exited (the process connector knows it; a /proc scan does not).
    package let exitCode: Int32?
    /// The signal that ended a process that was killed.
    package let signal: Int32?
    package let executable: String?
    /// When the process started (the BPF source knows): with the pid, which process ended.
    package let startedAt: Date?

    /// `status` as `waitpid` reports it, when known.
    init(pid: Int32, status: Int32?, executable: String?, startedAt: Date? = nil) {
        self.pid = pid
        self.executable = executable
        self.startedAt = startedAt
        if let status, status & 0x7F == 0 {
            exitCode = (status >> 8) & 0xFF
            signal = nil
        } else {
            exitCode = nil
            signal = status.map { $0 & 0x7F }
        }
    }
}

/// A process that owns a socket or made a file change, where the kernel says which.
package struct ProcessRef: Sendable, Equatable {
    package let pid: Int32
    package let executable: String?
}

package struct SocketAddress: Sendable, Equatable, Hashable {
    package let address: String
    package let port: Int
}

package struct NetworkConnection: Sendable, Equatable {
    package enum Action: String, Sendable { case opened, closed, listening, bound }
    package enum Transport: String, Sendable { case tcp, udp }
    package let action: Action
    package let transport: Transport
    package let local: SocketAddress
    package let remote: SocketAddress?
    package let uid: UInt32?
    package let owner: ProcessRef?
}

/// A threat the agent itself found.
package struct Detection: Sendable, Equatable {
    package enum Source: String, Sendable {
        /// A process whose executable matches an execution-prevention rule.
        case executionPrevention = "execution-prevention"
        /// An object the Sandbox judged `detect`.
        case sandbox
    }
    /// Links the detection to its processing result.
    package let id: String
    package let source: Source
    package let path: String
    package var sha256: String?
    package var md5: String?
    package var pid: Int32?
    package var commandLine: String?
    /// The rule that matched (`sha256:…`).
    package var rule: String?
    package var scanId: String?
    package var verdict: String?

    package init(id: String = UUID().uuidString.lowercased(), source: Source, path: String) {
        self.id = id
        self.source = source
        self.path = path
    }
}

/// What the agent did about a detection.
package struct ProcessingResult: Sendable, Equatable {
    package enum Action: String, Sendable {
        /// The process was killed.
        case processTerminated = "process-terminated"
        /// The kernel refused to execute the file: the program never ran.
        case executionDenied = "execution-denied"
        /// Killing it failed (it had ended, or the agent may not signal it).
        case terminationFailed = "termination-failed"
        /// Not killed on principle: pid 1, Tether itself or a process Tether started.
        case terminationRefused = "termination-refused"
        /// Reported only: the object was left where it is.
        case reported
    }
    package let detectionId: String
    package let action: Action
    /// For people: "SIGKILL sent to pid 4242", "the object stays in place; the embedded agent does not remove files".
    package let result: String
    package let pid: Int32?

    package init(detectionId: String, action: Action, result: String, pid: Int32? = nil) {
        self.detectionId = detectionId
        self.action = action
        self.result = result
        self.pid = pid
    }
}

package struct FileChange: Sendable, Equatable {
    package enum Action: String, Sendable { case modified, created, deleted, renamed }
    package let action: Action
    package let path: String
    package let oldPath: String?
    package let isDirectory: Bool
    package let actor: ProcessRef?
}
