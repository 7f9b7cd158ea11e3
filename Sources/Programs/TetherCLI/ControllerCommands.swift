import AgentInterface
import ArgumentParser
import Controller
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import X509
import SQLiteDB
import HTTPTransport
import GitSource
import IntegrationModel
import Logging
import PolicySource
import Reconciler
import Reports
import Primitives

extension VerifyMode: ExpressibleByArgument {}

/// `tether run`
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run as a controller: reconcile every --interval, run the connectors in between, until SIGTERM or Ctrl-C.",
        discussion: """
            Each cycle asks the remote for its refs and fetches only when the pinned ref moved, verifies commit signatures (--verify), refuses a revision that does not descend from the last applied one (unless a policy says spec.allowRollback: true), then applies — or only reports, while suspended (--suspend, or a file named `suspend` in the state directory) or for policies in spec.mode: observe. Errors back off exponentially up to --max-backoff. One controller per state directory. SIGTERM and SIGINT finish the current cycle and exit 0; SIGHUP re-reads the labels, suspend and allowed-signers files and cycles at once. `tether status` shows what it did last; --metrics-address serves /healthz, /readyz and /metrics.
            """)

    @Option(help: ArgumentHelp("The configuration file (default: $TETHER_CONFIG, else /etc/tether/tether.yaml when it exists): every option below has a key, its long name. The command line wins, then TETHER_* variables, then the file; `tether config show` prints what is in effect.", valueName: "file"))
    var config: String?

    @OptionGroup var source: SourceOptions
    @OptionGroup var backend: BackendOptions

    @Option(help: ArgumentHelp("Seconds between cycles.", valueName: "seconds"))
    var interval: Double = 300

    @Option(help: ArgumentHelp("Random spread of the interval, as a share of it (0.1: ±10 %).", valueName: "share"))
    var jitter: Double = 0.1

    @Option(help: ArgumentHelp("The longest wait between cycles after repeated errors.", valueName: "seconds"))
    var maxBackoff: Double = 3600

    @Flag(help: "Run one cycle and exit: 0 when it reconciled (Ready), 1 otherwise. For cron and tests.")
    var once = false

    @Option(help: ArgumentHelp("Stop after this many cycles (for benchmarks).", valueName: "count"))
    var cycles: Int?

    @Option(help: "Signature verification: off, head (the revision applied) or range (every commit since the last applied one).")
    var verify: VerifyMode = .off

    @Option(help: ArgumentHelp("The allowed-signers file (ssh-keygen's format) for --verify.", valueName: "file"))
    var allowedSigners: String?

    @Flag(help: "Suspend: report every cycle, apply nothing.")
    var suspend = false

    @Option(help: ArgumentHelp("Serve /healthz, /readyz and /metrics on this address, e.g. 127.0.0.1:9464. WARNING: another address than loopback (0.0.0.0:9464 for a fleet's Prometheus) serves them in the clear to anyone who reaches the port: restrict it with a firewall.", valueName: "host:port"))
    var metricsAddress: String?

    @Option(help: ArgumentHelp("After every cycle, write the /metrics text to this file (atomically), for node_exporter's textfile collector: a fleet that scrapes node_exporter needs no new port. Name it *.prom in the collector's folder.", valueName: "path"))
    var textfile: String?

    @Option(help: ArgumentHelp("After every cycle, keep its drift report as JSON in this folder (`tether-REVISION.json`: the newest per revision, replaced in one rename), for a log shipper or `tether report merge`. The oldest beyond --report-keep are removed.", valueName: "dir"))
    var reportDir: String?

    @Option(help: ArgumentHelp("Reports --report-dir keeps at most (one per revision).", valueName: "count"))
    var reportKeep: Int = 20

    @Option(help: "Log lines as text (for people) or json (one object a line).")
    var logFormat: LogFormat = .text

    @Option(help: ArgumentHelp("After applying, sync each changed connector for up to this many seconds; restore the previous state if one never connects.", valueName: "seconds"))
    var healthWindow: Double = 0

    @Flag(help: "Do not run the connectors between cycles (nor the sensors).")
    var noConnectors = false

    @Flag(help: "Do not run the embedded agent's sensors: no process, network or file telemetry from this machine.")
    var noSensors = false

    @Option(help: ArgumentHelp("Seconds one fetch may take.", valueName: "seconds"))
    var fetchTimeout: Double = 60

    @Option(help: ArgumentHelp("Before any git connection, ask this HTTP(S) URL with If-None-Match: the repository's static info/refs, kept current by `git update-server-info` and served by a plain web server or cache. A 304 means nothing moved, and the cycle opens no git connection. Anything else, or an error, asks git as usual; an answer longer than 4 MiB is cut off while it arrives. https uses the system's CAs, or --git-ca-file.", valueName: "url"))
    var probeURL: String?

    @OptionGroup var notify: NotifyOptions

    @Option(help: ArgumentHelp("With --notify: a message starts a cycle after a random delay of up to this many seconds, so a fleet does not arrive at once; messages meanwhile make one cycle.", valueName: "seconds"))
    var notifySpread: Double = 10

    @Option(help: ArgumentHelp("With --notify: seconds of silence after which the broker and the controller take the link for dead (MQTT keepalive).", valueName: "seconds"))
    var notifyKeepalive: Int = 60

    @Option(help: ArgumentHelp("With --notify and --verify: the folder `tether publish` writes, served over HTTP(S) (e.g. https://cdn.example/policies). A notified commit whose message an allowed signer signed (tether publish --sign-key) is read from its bundle instead of from git, then vouched for as from git; anything else asks git. https uses the system's CAs, or --git-ca-file.", valueName: "url"))
    var bundleURL: String?

    @Flag(help: "Reset released settings (managed before, declared by no policy now) to the vendor default.")
    var prune = false

    enum LogFormat: String, ExpressibleByArgument, CaseIterable { case text, json }

    func validate() throws {
        try Seconds.check(interval, "interval")
        if interval < Seconds.shortestUnboundedInterval, !once, cycles == nil {
            throw ValidationError("--interval \(interval) would reconcile without a pause, for as long as it runs; give 1 or more seconds (for example --interval 300), or bound the run with --cycles N")
        }
        try Seconds.check(maxBackoff, "max-backoff")
        try Seconds.check(fetchTimeout, "fetch-timeout")
        try Seconds.check(healthWindow, "health-window")
        if !(0...1).contains(jitter) { throw ValidationError("--jitter is a share of the interval, from 0 to 1; for example --jitter 0.1") }
        if verify != .off && allowedSigners == nil { throw ValidationError("--verify \(verify.rawValue) needs --allowed-signers FILE (ssh-keygen's allowed_signers format)") }
        if let metricsAddress, Self.address(metricsAddress).map({ !(0...65535).contains($0.1) }) ?? true {
            throw ValidationError("--metrics-address takes host:port with a port from 1 to 65535, e.g. 127.0.0.1:9464")
        }
        if probeURL != nil && source.ref == nil {
            throw ValidationError("--probe-url needs --ref: info/refs does not name the remote's default branch, so a probe cannot see it move (e.g. --ref main)")
        }
        if let probeURL, !(probeURL.hasPrefix("http://") || probeURL.hasPrefix("https://")) {
            throw ValidationError("--probe-url takes an http:// or https:// URL, e.g. https://git.example.com/secops/policies.git/info/refs")
        }
        try Seconds.check(notifySpread, "notify-spread")
        if !(5...3600).contains(notifyKeepalive) { throw ValidationError("--notify-keepalive takes seconds from 5 to 3600; for example --notify-keepalive 60") }
        if let bundleURL {
            guard notify.url != nil else { throw ValidationError("--bundle-url is read when a notification comes: it needs --notify mqtt://HOST:PORT/TOPIC") }
            guard bundleURL.hasPrefix("http://") || bundleURL.hasPrefix("https://") else {
                throw ValidationError("--bundle-url takes an http:// or https:// URL, e.g. https://cdn.example/policies")
            }
            guard verify != .off else {
                throw ValidationError("--bundle-url takes revisions from a web server no one vouches for: it needs --verify head or range (with --allowed-signers)")
            }
            guard GitRepository.isRemote(source.repo) else { throw ValidationError("--bundle-url fills the mirror of a remote --repo; a local repository needs none") }
        }
        if reportKeep < 1 { throw ValidationError("--report-keep takes a count of 1 or more; for example --report-keep 20") }
    }

    /// An MQTT client id unique to this endpoint and state directory (the broker disconnects a
    /// client when another connects with its id): the host name, and a hash of the machine's id
    /// (/etc/machine-id, which machines cloned from one image get anew) and the folder.
    static func clientID(stateDirectory: String) -> String {
        let host = ProcessInfo.processInfo.hostName.prefix(40).map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "_" }
        let machine = FileManager.default.contents(atPath: "/etc/machine-id").map { String(decoding: $0, as: UTF8.self) } ?? ""
        return "tether-\(String(host))-\(Digest.sha256Hex(Array((machine + stateDirectory).utf8)).prefix(12))"
    }

    static func address(_ text: String) -> (String, Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]) else { return nil }
        return (String(text[..<colon]).trimming(charactersIn: "[]"), port)
    }

    func run() throws {
        _ = TetherLogHandler.bootstrapped
        let format: TetherLogHandler.Format = logFormat == .json ? .json : .text
        TetherLogHandler.settings.format = format
        // This run's lines in this run's format, whatever another run in the process chose.
        let logger = Logger(label: "tether.controller") { TetherLogHandler(label: $0, format: format) }
        let lock: ControllerLock
        do {
            lock = try ControllerLock(file: source.device.stateDirectoryURL.appending(path: "controller.lock"))
        } catch {
            throw CommandError("error: \(error)")
        }
        defer { withExtendedLifetime(lock) {} }
        var configuration = ControllerConfiguration(
            source: source.spec, stateDirectory: source.device.stateDirectoryURL, labelOverrides: try source.device.labelOverrides(),
            credentials: try source.credentialOptions.credentials(), verify: verify, allowedSigners: allowedSigners,
            interval: interval, jitter: jitter, maximumBackoff: maxBackoff, suspend: suspend, healthWindow: healthWindow,
            fetchTimeout: fetchTimeout, runConnectors: !noConnectors && !once)
        configuration.prune = prune
        configuration.runSensors = !noSensors
        configuration.metricsRead = metricsAddress != nil || textfile != nil
        configuration.probeURL = probeURL
        if let probeURL, probeURL.hasPrefix("http://") {
            logger.warning("--probe-url \(probeURL) is plain HTTP: anyone on the path can answer 304 and hold updates back for up to \(10) cycles; prefer https")
        }
        configuration.probeCAFile = source.credentialOptions.gitCAFile
        // A bounded run (--once, --cycles) has no use for messages.
        if !once, cycles == nil, let address = try notify.address() {
            configuration.notify = NotifySettings(address: address, tls: notify.tls, spread: notifySpread, keepalive: notifyKeepalive,
                                                  clientID: Self.clientID(stateDirectory: source.device.stateDirectoryURL.path))
            configuration.bundleURL = bundleURL
        }
        let choice = try backend.choice(source.device)
        if healthWindow > 0 {
            do {
                try HealthWindow.requireSupport(by: choice.backendType)
            } catch let unsupported as UnsupportedOption {
                throw CommandError("error: \(unsupported.message)")
            }
        }
        try backend.keep(choice, in: source.device)
        configuration.agent = choice
        let controller = Controller(configuration: configuration, logger: logger)
        if let reportDir {
            let keep = reportKeep
            controller.onReport = { report in ReportFolder(path: reportDir, keep: keep, logger: logger).keep(report) }
        }
        // The libraries' releases as loaded (the built-with ones until then): again after each cycle.
        let buildInfo = { [("version", Tether.version), ("libgit2", libgit2Version), ("libcurl", libcurlVersion),
                           ("openssl", openSSLVersion), ("sqlite", sqliteVersion)] }
        controller.metrics.buildInfo = buildInfo()
        let loop = ControllerLoop(controller: controller, logger: logger)
        if let metricsAddress, let (host, port) = Self.address(metricsAddress) {
            do {
                let bound = try loop.serveMetrics(host: host, port: port)
                logger.info("serving /healthz, /readyz and /metrics on http://\(host):\(bound)")
            } catch {
                throw CommandError("error: \(error)")
            }
        }
        let wakeup = Wakeup()
        StopSignal.wake(wakeup)
        defer { StopSignal.stopWaking() }
        StopSignal.install()
        logger.info("controller started", metadata: ["repo": .string(source.spec.displayRepository), "ref": .string(source.ref ?? "HEAD"),
                                                     "interval": .stringConvertible(interval), "verify": .string(verify.rawValue)])
        var last: CycleResult?
        // Under systemd (Type=notify): ready after the first cycle, a watchdog ping after every
        // cycle that completes, the last result as the status, and stopping at the end.
        let notifier = ServiceNotifier()
        // The longest a healthy controller goes between two completed cycles: the wait (or the
        // back-off after errors), two fetch timeouts, the health window, and a margin. The unit's
        // WatchdogSec= is replaced by it, so a longer interval in the configuration is not killed.
        let quiet = max(interval * (1 + jitter), maxBackoff) + 2 * fetchTimeout + healthWindow + 300
        notifier?.send(["WATCHDOG_USEC": String(Int(quiet * 1_000_000))])
        loop.run(cycles: once ? 1 : cycles, wakeup: wakeup, shouldStop: { StopSignal.requested }, shouldReload: { StopSignal.takeReload() }) { result in
            controller.metrics.buildInfo = buildInfo()
            var fields = ["WATCHDOG": "1", "STATUS": "\(result.condition.rawValue): \(result.message)"]
            if last == nil { fields["READY"] = "1" }
            notifier?.send(fields)
            if let textfile { writeTextfile(textfile, controller.metrics.render(), logger: logger) }
            last = result
        }
        notifier?.send(["STOPPING": "1", "STATUS": "stopping"])
        loop.stopServing()
        logger.info("controller stopped", metadata: ["cycles": .stringConvertible(controller.metrics.cycles)])
        if once, let last, last.condition != .ready && last.condition != .suspended { throw ExitCode(1) }
    }

    /// Replaces `path` with `text` in one rename, so the collector never reads half a file.
    private func writeTextfile(_ path: String, _ text: String, logger: Logger) {
        do {
            let url = URL(fileURLWithPath: path)
            let temporary = url.deletingLastPathComponent().appending(path: ".\(url.lastPathComponent).\(getpid()).tmp")
            try Data(text.utf8).write(to: temporary)
            // Readable by the collector, which runs as another user.
            chmod(temporary.path, 0o644)
            guard rename(temporary.path, url.path) == 0 else { throw CommandError(String(cString: strerror(errno))) }
        } catch {
            logger.warning("cannot write the metrics textfile \(path): \(error)")
        }
    }
}

/// `tether status`
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Print what the controller did last: revision, when, result, findings, verification, and whether it is suspended.")

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        let file = device.stateDirectoryURL.appending(path: "controller.json")
        guard let status = ControllerStatus.read(file) else {
            throw CommandError("error: no controller has run for \(device.stateDirectory) yet; start one with `tether run` (or `tether run --once`)")
        }
        if output.isJSON {
            Console.out(String(decoding: status.json(), as: UTF8.self))
            return
        }
        let cycle = status.lastCycle
        Console.out("\(cycle.condition.rawValue): \(cycle.message)")
        Console.out("  last cycle   \(Timestamp.string(cycle.at)) (\(Controller.age(since: cycle.at)) ago), \(cycle.durationSeconds.fixed(2)) s, reason \(cycle.reason)")
        Console.out("  revision     \(cycle.revision.map { String($0.prefix(12)) } ?? "none")")
        Console.out("  findings     \(cycle.findings), steps \(cycle.steps), fetched \(cycle.fetched ? "yes (\(cycle.bytesReceived) bytes)" : "no (ref unchanged)")")
        Console.out("  source       \(status.source.repository) @ \(status.source.ref), folder \(status.source.path)")
        Console.out("  verify       \(status.verify.rawValue)" + (status.lastVerified.map {
            "; last verified \($0.revision.prefix(12))\($0.signer.map { " signed by \($0)" } ?? ""), committed \(Controller.age(since: $0.committedAt)) ago"
        } ?? ""))
        Console.out("  suspended    \(status.suspended ? "yes" : "no")")
        Console.out("  cycles       \(status.cycles) in this run, \(status.errors) with errors")
        for problem in status.problems ?? [] { Console.out("  not running  \(TerminalText.excerpt(problem, limit: 300))") }
        if let notifications = status.notifications {
            let detail = notifications.detail.hasPrefix(notifications.broker + ": ") ? String(notifications.detail.dropFirst(notifications.broker.count + 2)) : notifications.detail
            let link = notifications.connected ? "connected" : "not connected (\(TerminalText.excerpt(detail, limit: 200)))"
            Console.out("  notify       \(notifications.broker): \(link) for \(Controller.age(since: notifications.since))")
            if let message = notifications.lastMessage {
                Console.out("  last message \(message.ref) at \(message.commit.prefix(12)), \(Controller.age(since: message.arrivedAt)) ago: \(message.outcome)")
            }
        }
    }
}

/// `tether run --report-dir`: the newest drift report per revision as JSON, bounded.
struct ReportFolder {
    let path: String
    let keep: Int
    let logger: Logger

    func keep(_ report: Report) {
        let folder = URL(fileURLWithPath: path, isDirectory: true)
        let name = "tether-\(report.revision.prefix(12)).json"
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            let temporary = folder.appending(path: ".\(name).\(getpid()).tmp")
            try Data((JSONReport.render(report) + "\n").utf8).write(to: temporary)
            chmod(temporary.path, 0o644)
            guard rename(temporary.path, folder.appending(path: name).path) == 0 else {
                throw CommandError(String(cString: strerror(errno)))
            }
            // The newest `keep` reports stay; older revisions' reports go.
            let reports = try FileManager.default.contentsOfDirectory(atPath: folder.path)
                .filter { $0.hasPrefix("tether-") && $0.hasSuffix(".json") }
                .map { folder.appending(path: $0) }
                .map { (url: $0, modified: (try? FileManager.default.attributesOfItem(atPath: $0.path)[.modificationDate] as? Date) ?? .distantPast) }
                .sorted { $0.modified > $1.modified }
            for old in reports.dropFirst(keep) { try? FileManager.default.removeItem(at: old.url) }
        } catch {
            logger.warning("the report could not be kept in \(path): \(error)")
        }
    }
}
