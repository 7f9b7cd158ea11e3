import ConnectorCore
import EmbeddedAgent
import Foundation
import HTTPServer
import Logging

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
            let holder = (try? String(contentsOf: file, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
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
        let server = try HTTPServer(host: host == "localhost" ? "127.0.0.1" : host, port: port, limits: .probes) { request in
            switch request.path {
            case "/healthz": return ServerResponse(status: 200, contentType: "text/plain", body: Array("ok\n".utf8))
            case "/readyz":
                return metrics.isReady ? ServerResponse(status: 200, contentType: "text/plain", body: Array("ready\n".utf8))
                                       : ServerResponse(status: 503, contentType: "text/plain", body: Array("not ready: no successful cycle yet\n".utf8))
            case "/metrics":
                return ServerResponse(status: 200, contentType: "text/plain; version=0.0.4", body: Array(metrics.render().utf8))
            default:
                return ServerResponse(status: 404, contentType: "text/plain", body: Array("try /healthz, /readyz or /metrics\n".utf8))
            }
        }
        self.server = server
        return server.port
    }

    /// Runs until `shouldStop` says so (checked often; the current cycle always finishes), or
    /// after `cycles` cycles. `shouldReload` (SIGHUP) starts a cycle at once.
    package func run(cycles: Int? = nil, shouldStop: () -> Bool, shouldReload: () -> Bool, afterCycle: (CycleResult) -> Void = { _ in }) {
        var failures = 0
        var done = 0
        var runtime: ConnectorRuntime?
        var sensors: SensorSupervisor?
        defer { sensors?.stop() }
        while !shouldStop() {
            let result = controller.runCycle()
            done += 1
            afterCycle(result)
            if let cycles, done >= cycles { break }
            failures = (result.condition == .failed || result.condition == .stalled) ? failures + 1 : 0
            let wait = delay(afterFailures: failures)
            logger.debug("next cycle in \(Int(wait)) s")
            let deadline = Date().addingTimeInterval(wait)
            while Date() < deadline && !shouldStop() {
                if shouldReload() {
                    logger.info("SIGHUP: configuration re-read, cycling now")
                    break
                }
                // The vendor's agent runs its own connectors.
                if controller.configuration.runConnectors, controller.configuration.agent.kind == .embedded {
                    if runtime == nil, let agent = try? Agent(stateDirectory: controller.configuration.stateDirectory.path) {
                        runtime = try? ConnectorRuntime(agent: agent)
                    }
                    if sensors == nil, controller.configuration.runSensors,
                       let agent = try? Agent(stateDirectory: controller.configuration.stateDirectory.path) {
                        let logger = self.logger
                        sensors = try? SensorSupervisor(agent: agent) { message in logger.info("\(message)") }
                        sensors?.start()
                    }
                    for outcome in runtime?.tick() ?? [] where outcome.attempted {
                        if outcome.succeeded {
                            logger.debug("\(outcome.integration.rawValue): \(outcome.summary)")
                        } else {
                            logger.warning("\(outcome.integration.rawValue): \(outcome.summary)", metadata: ["errorKind": .string(outcome.errorKind ?? "other")])
                        }
                    }
                }
                Thread.sleep(forTimeInterval: min(0.25, max(0, deadline.timeIntervalSinceNow)))
            }
        }
    }

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
