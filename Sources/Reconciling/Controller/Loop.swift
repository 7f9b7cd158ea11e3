import ConnectorCore
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import HTTPServer
import Logging
import MQTT
import Reconciler
import Primitives

/// One controller per state directory: an exclusive lock on `controller.lock`, held for the
/// process's life (the kernel drops it when the process ends, however it ends).
package final class ControllerLock {
    private let fd: Int32

    /// Takes the lock, or says which process holds it.
    package init(file: URL) throws {
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        fd = open(file.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LockError(description: "cannot open \(file.path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOf: file, encoding: .utf8))?.trimmingWhitespace() ?? "?"
            close(fd)
            throw LockError(description: "another controller runs for this state directory (pid \(holder)); stop it first, or use another --state-dir")
        }
        ftruncate(fd, 0)
        let pid = Array("\(getpid())\n".utf8)
        _ = pid.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }
}

package struct LockError: Error, CustomStringConvertible {
    package let description: String
}

/// Runs cycles every interval (with jitter; exponential back-off after errors), runs the
/// connectors in between, and serves /healthz, /readyz and /metrics when asked.
package final class ControllerLoop {
    private let controller: Controller
    private let logger: Logger
    private var server: HTTPServer?

    package init(controller: Controller, logger: Logger) {
        self.controller = controller
        self.logger = logger
    }

    /// Whether an address is this machine's alone.
    package static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// Serves /healthz, /readyz and /metrics in the clear: on loopback, or on another address
    /// when asked (a fleet's Prometheus), with a warning in the log, since anyone who reaches the
    /// port then reads them.
    package func serveMetrics(host: String, port: Int) throws -> Int {
        if !Self.isLoopback(host) {
            logger.warning("/metrics is served on \(host):\(port), in the clear and to anyone who can reach it: Tether's version, revision, findings and connector states; restrict the port with a firewall")
        }
        let metrics = controller.metrics
        let inbox = controller.notifications
        let server = try HTTPServer(host: host == "localhost" ? "127.0.0.1" : host, port: port, limits: .probes) { request in
            switch request.path {
            case "/healthz": return ServerResponse(status: 200, contentType: "text/plain", body: Array("ok\n".utf8))
            case "/readyz":
                // The broker's link does not decide readiness (the interval keeps the endpoint
                // current without it); it is shown on a second line.
                let link = inbox.map { $0.isConnected ? "notifications: connected\n" : "notifications: not connected (the interval still applies)\n" } ?? ""
                guard let reason = metrics.notReadyBecause else {
                    return ServerResponse(status: 200, contentType: "text/plain", body: Array("ready\n\(link)".utf8))
                }
                return ServerResponse(status: 503, contentType: "text/plain", body: Array("not ready: \(reason)\n\(link)".utf8))
            case "/metrics":
                return ServerResponse(status: 200, contentType: "text/plain; version=0.0.4", body: Array(metrics.render().utf8))
            default:
                return ServerResponse(status: 404, contentType: "text/plain", body: Array("try /healthz, /readyz or /metrics\n".utf8))
            }
        }
        self.server = server
        return server.port
    }

    /// Runs until `shouldStop` says so (checked whenever `wakeup` is woken; the current cycle
    /// always finishes), or after `cycles` cycles. `shouldReload` (SIGHUP) starts a cycle at once.
    /// Between cycles the process sleeps until something is due: the next cycle, a connector's
    /// sync or telemetry flush, an isolation's auto-off, or a wake (a signal; the sensors filling
    /// a batch). The connectors and the sensors run over the controller's one agent session.
    package func run(cycles: Int? = nil, wakeup: Wakeup = Wakeup(), shouldStop: () -> Bool, shouldReload: () -> Bool,
                     afterCycle: (CycleResult) -> Void = { _ in }) {
        var failures = 0
        var done = 0
        var nextCycle = Date()
        let endpoint = EndpointParts(controller: controller, logger: logger, wakeup: wakeup)
        defer { endpoint.stop() }
        // A bounded run (--once, --cycles) has no use for messages.
        var listener: MQTTClient?
        if cycles == nil, let inbox = controller.notifications {
            do {
                listener = try inbox.listen(controller: controller, wanted: controller.configuration.source.ref, logger: logger) { wakeup.wake() }
            } catch {
                logger.error("notifications: \(error); the interval alone keeps this endpoint current")
            }
        }
        defer { listener?.stop() }
        // An isolation still in force is put back in the kernel before the first cycle reaches
        // the network (after a reboot the table is gone); one whose timer ran out is lifted. A
        // device that never had one (no isolation lock) opens nothing for this.
        if controller.configuration.runConnectors, ConnectorRuntime.mayHoldIsolation(controller.configuration.stateDirectory) {
            // The session's connectors only (the sensors start with the loop's first tick, which
            // a single cycle never reaches).
            if let session = try? controller.openSession(), let runtime = try? session.connectors() {
                enforceIsolation(runtime)
            } else if let change = ConnectorRuntime.enforceRecordedIsolation(stateDirectory: controller.configuration.stateDirectory) {
                // The agent cannot be opened: the isolation is kept from the connectors' store alone.
                logger.warning("network isolation (the agent cannot be opened): \(change)")
            }
        }
        while !shouldStop() {
            if shouldReload() {
                logger.info("SIGHUP: configuration re-read, cycling now")
                nextCycle = Date()
            }
            if let inbox = controller.notifications {
                // A message moved the next cycle up (within its spread); a link that went up or
                // down is shown by `tether status` now, not at the next cycle.
                // Never ahead of the back-off after failures: a broker does not set the pace then.
                if failures == 0, let due = inbox.due, due < nextCycle { nextCycle = due }
                if inbox.takeStatusChange() { controller.rewriteStatus() }
            }
            if Date() >= nextCycle {
                let result = controller.runCycle()
                done += 1
                afterCycle(result)
                if let cycles, done >= cycles { break }
                failures = (result.condition == .failed || result.condition == .stalled) ? failures + 1 : 0
                let wait = delay(afterFailures: failures)
                logger.debug("next cycle in \(Int(wait)) s")
                nextCycle = Date().addingTimeInterval(wait)
            }
            var due = nextCycle
            // The vendor's agent runs its own connectors: a session without them has nothing to tick.
            if controller.configuration.runConnectors, let runtime = endpoint.update() {
                enforceIsolation(runtime)
                for outcome in runtime.tick() where outcome.attempted {
                    if outcome.succeeded {
                        logger.debug("\(outcome.integration.rawValue): \(outcome.summary)")
                    } else {
                        logger.warning("\(outcome.integration.rawValue): \(outcome.summary)", metadata: ["errorKind": .string(outcome.errorKind ?? "other")])
                    }
                }
                if let connectorsDue = runtime.nextDue() {
                    // Something the tick could not clear (a server refusing every flush) is
                    // looked at again after a pause, never in a tight loop.
                    due = min(due, max(connectorsDue, Date().addingTimeInterval(Self.shortestNap)))
                }
                // What other processes change in the agent's stores (`tether agent …`) wakes nothing
                // here: it is looked at within this long.
                due = min(due, Date().addingTimeInterval(Self.longestNap))
            }
            if shouldStop() { break }
            wakeup.wait(until: due)
        }
    }

    /// Makes the kernel hold the isolation the store records, and says in the log and the
    /// metrics what that took.
    private func enforceIsolation(_ runtime: ConnectorRuntime) {
        // A device never isolated (no isolation lock) has nothing to check: no store read per tick.
        guard ConnectorRuntime.mayHoldIsolation(controller.configuration.stateDirectory) else { return }
        if let change = runtime.enforceIsolation() { logger.warning("network isolation: \(change)") }
        controller.metrics.recordIsolation(try? runtime.isolationStatus())
    }

    /// The longest the loop sleeps while it runs connectors.
    static let longestNap: TimeInterval = 30
    /// The shortest pause before connectors due again are looked at.
    static let shortestNap: TimeInterval = 1

    /// Stops serving /metrics.
    package func stopServing() {
        server?.stop()
        server = nil
    }

    /// The interval with random jitter, or an exponential back-off after failures (capped).
    func delay(afterFailures failures: Int) -> TimeInterval {
        let configuration = controller.configuration
        if failures > 0 {
            let base = max(1, min(configuration.interval, 5))
            return min(configuration.maximumBackoff, base * pow(2, Double(failures - 1)))
        }
        let spread = configuration.interval * configuration.jitter
        return max(0, configuration.interval + Double.random(in: -spread...spread))
    }
}

/// The connectors and sensors of the controller's current agent session: opened once per
/// session (again only when the controller opened the agent anew), a failure to open them shown
/// in /readyz, `tether status` and the log, and tried again at the next wake.
final class EndpointParts {
    private let controller: Controller
    private let logger: Logger
    private let wakeup: Wakeup
    /// Held, and compared by identity: a new session may be allocated where the old one was.
    private var session: AgentSession?
    private var runtime: ConnectorRuntime?
    private var sensors: SensorSupervisor?

    init(controller: Controller, logger: Logger, wakeup: Wakeup) {
        self.controller = controller
        self.logger = logger
        self.wakeup = wakeup
    }

    /// The current session's connectors, opened (with the sensors) when the session is new.
    func update() -> ConnectorRuntime? {
        guard let current = controller.session else {
            // The agent could not be opened again: nothing runs on the stores it had.
            stop()
            return nil
        }
        if session === current, runtime != nil { return runtime }
        stop()
        do {
            runtime = try current.connectors()
            session = current
            report("connectors", nil)
        } catch {
            report("connectors", "the connectors cannot be opened: \(error)")
            return nil
        }
        if controller.configuration.runSensors, let runtime {
            let logger = self.logger, wakeup = self.wakeup
            let supervisor = SensorSupervisor(runtime: runtime, log: { message in logger.info("\(message)") }, queued: { wakeup.wake() })
            supervisor.start()
            sensors = supervisor
        }
        return runtime
    }

    /// Stops the sensors (what they saw last is queued) and lets go of the connectors.
    func stop() {
        sensors?.stop()
        sensors = nil
        runtime = nil
        session = nil
    }

    private func report(_ part: String, _ problem: String?) {
        let before = controller.metrics.problemList
        controller.metrics.setProblem(part, problem)
        if let problem, !before.contains(problem) { logger.error("\(problem)") }
        if before != controller.metrics.problemList { controller.rewriteStatus() }
    }
}

/// Sleeps until a time or until woken — by another thread, or by a signal handler (`wake` only
/// writes a byte to a pipe, which is async-signal-safe).
package final class Wakeup: @unchecked Sendable {
    private let readEnd: Int32
    /// The descriptor a signal handler writes one byte to.
    package let writeEnd: Int32

    package init() {
        var ends: [Int32] = [-1, -1]
        if pipe(&ends) == 0 {
            for end in ends {
                _ = fcntl(end, F_SETFD, FD_CLOEXEC)
                _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
            }
        } else {
            ends = [-1, -1]
        }
        readEnd = ends[0]
        writeEnd = ends[1]
    }

    deinit {
        close(readEnd)
        close(writeEnd)
    }

    /// Ends the current or next `wait` now.
    package func wake() {
        var byte: UInt8 = 1
        _ = write(writeEnd, &byte, 1)
    }

    /// Waits until `deadline` or a wake, whichever comes first.
    package func wait(until deadline: Date) {
        let milliseconds = max(0, min(Double(Int32.max), (deadline.timeIntervalSinceNow * 1000).rounded(.up)))
        guard readEnd >= 0 else {
            Threads.sleep(seconds: min(0.25, milliseconds / 1000))
            return
        }
        var descriptor = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
        if poll(&descriptor, 1, Int32(milliseconds)) > 0 {
            var buffer = [UInt8](repeating: 0, count: 64)
            while read(readEnd, &buffer, buffer.count) > 0 {}
        }
    }
}
