import Foundation
import PlatformSim
import TetherTestSupport
import Testing
import WireFormat

/// The platform, a device whose EDR telemetry flows to it with a short batch delay, and a
/// folder the file sensor watches.
private struct TelemetryRig {
    let platform: PlatformSimulator
    let env: Environment
    let watched: TemporaryDirectory
    /// Where the platform keeps every request as it came (`received.jsonl`).
    let received: TemporaryDirectory

    /// Unlimited by default: the machine's other activity (a parallel test run) must not use up
    /// the hourly budget a probe needs.
    static func policy(port: Int, watched: String, telemetry: Bool, limits: String = "requestCountLimits: false") -> String {
        """
        apiVersion: tether/v1
        kind: IntegrationPolicy
        metadata:
          name: telemetry
        spec:
          behaviorDetection: true
          edr:
            address: 127.0.0.1
            port: \(port)
            maximumDataTransferTime: 1
            \(limits)
            telemetry: \(telemetry)
            fileMonitoring:
              paths: ["\(watched)"]
        """
    }

    init(limits: String = "requestCountLimits: false") throws {
        let pki = try PlatformPKI.create()
        received = try TemporaryDirectory("tether-received")
        platform = try PlatformSimulator(pki: pki, requireClientCertificate: true, recordFile: received.url.appendingPathComponent("received.jsonl"))
        watched = try TemporaryDirectory("tether-watched")
        env = try Environment(policies: [
            "policies/telemetry.yaml": Self.policy(port: platform.port, watched: watched.path, telemetry: true, limits: limits),
            "policies/prod.yaml": Environment.prod,
        ], platform: pki)
    }

    /// The event details the platform received whose `key` holds `marker`, as JSON read them
    /// from `received.jsonl` (not through Tether's own types).
    func receivedDetails(containing marker: String) -> [[String: Any]] {
        let text = (try? String(contentsOf: received.url.appendingPathComponent("received.jsonl"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").flatMap { line -> [[String: Any]] in
            guard let request = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let events = (request["body"] as? [String: Any])?["events"] as? [[String: Any]] else { return [] }
            return events.compactMap { $0["detail"] as? [String: Any] }.filter { $0.values.contains { "\($0)".contains(marker) } }
        }
    }

    /// The sensors `tether agent status --json` shows.
    func sensors() -> [[String: Any]] {
        env.agentCommand("status", "--json").json["sensors"] as? [[String: Any]] ?? []
    }

    /// Waits until `condition` holds, or `seconds` pass; whether it held.
    @discardableResult
    func wait(seconds: Double, until condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(100_000)
        }
        return condition()
    }
}

/// Starts a python3 process that lives `seconds` with `marker` on its command line.
private func probeProcess(_ marker: String, seconds: Double = 2) throws -> ChildProcess {
    try ChildProcess("/usr/bin/env", ["python3", "-c", "import time; time.sleep(\(seconds))", marker])
}

@Suite("Sensors: telemetry from the machine itself", .serialized, .ownThread)
struct SensorTests {
    @Test("A process, a TCP connection and a file made on the machine arrive as EDR telemetry within seconds; after git turns telemetry off, a new process does not",
          .enabled(if: getuid() == 0, "the process connector and fanotify need root (CI runs as root)"))
    func realTelemetry() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let rig = try TelemetryRig()
        let textfile = rig.env.state.url.appendingPathComponent("tether.prom").path
        let controller = try ChildProcess(tetherExecutable, ["run", "--interval", "1", "--jitter", "0", "--textfile", textfile] + rig.env.flags)
        defer { controller.kill(); controller.wait() }
        #expect(rig.wait(seconds: 30) { rig.sensors().count == 3 && rig.sensors().allSatisfy { $0["running"] as? Bool == true } },
                "the sensors start once EDR telemetry flows: \(controller.stderr)")
        // The drift report's health section says which sensors run, and from what.
        let drift = rig.env.run("drift", "--format", "json")
        let reported = drift.json["sensors"] as? [[String: Any]] ?? []
        #expect(reported.map { $0["sensor"] as? String } == ["process", "network", "file"] && reported.allSatisfy { $0["running"] as? Bool == true },
                "\(drift.stdout)")
        #expect(rig.env.run("drift").stdout.contains("process sensor"))
        let sources = Dictionary(uniqueKeysWithValues: rig.sensors().map { ($0["sensor"] as? String ?? "", $0["source"] as? String ?? "") })
        #expect(sources["process"] == (bpfLoads ? "eBPF (sched_process_exec and sched_process_exit, ring buffer)" : "netlink process connector"), "\(sources)")
        #expect(sources["file"]?.hasPrefix("fanotify") == true, "\(sources)")

        // A process with a unique command line, a TCP connection to a unique loopback port, a file with a unique name.
        let marker = "tether-probe-\(UUID().uuidString.lowercased())"
        let started = Date()
        let process = try probeProcess(marker)
        let listener = try TCPListener()
        let client = try listener.connect()
        let fileName = "\(marker).txt"
        try rig.watched.write(fileName, "written by the sensor test\n")
        func arrived(_ events: [WireEvent]) -> (process: WireEvent?, connection: WireEvent?, file: WireEvent?) {
            (events.first { $0.type == "process-start" && $0.detail["commandLine"]?.text?.contains(marker) == true },
             events.first { $0.type == "network-connection" && $0.detail["action"] == "opened" && $0.detail["remotePort"] == DetailValue(listener.port) },
             events.first { $0.type == "file-change" && $0.detail["path"]?.text == rig.watched.url.appendingPathComponent(fileName).path })
        }
        let allArrived = rig.wait(seconds: 15) {
            let found = arrived(rig.platform.events())
            return found.process != nil && found.connection != nil && found.file != nil
        }
        let latency = Date().timeIntervalSince(started)
        client.close()
        process.wait()
        let found = arrived(rig.platform.events())
        #expect(allArrived, "every probe arrived at the platform: \(found); \(controller.stderr.suffix(2000))")
        #expect(latency < 10, "within a few seconds (took \(latency) s)")
        #expect(found.process?.detail["path"]?.text?.hasPrefix("/") == true && found.process?.detail["uid"] == DetailValue(getuid()))
        #expect(found.process?.detail["sha256"]?.text?.count == 64)
        #expect(found.connection?.detail["remoteAddress"] == "127.0.0.1" && found.connection?.detail["protocol"] == "tcp")
        #expect(found.connection?.detail["pid"] == DetailValue(getpid()), "the connection's owner is this test process")
        #expect(found.file?.detail["pid"] == DetailValue(getpid()), "fanotify says who wrote the file")
        #expect(rig.platform.events().allSatisfy { $0.detail["pid"] != DetailValue(controller.pid) }, "the controller's own activity is not reported")
        // On the wire, as the platform stored it: pid, uid and ports are JSON numbers, text is text.
        let wireProcess = rig.receivedDetails(containing: marker).first { $0["commandLine"] != nil }
        #expect(wireProcess?["pid"] is NSNumber && wireProcess?["uid"] as? NSNumber == NSNumber(value: getuid()) && wireProcess?["commandLine"] is String,
                "\(String(describing: wireProcess))")
        let wireConnection = rig.receivedDetails(containing: "127.0.0.1").first { ($0["remotePort"] as? NSNumber)?.intValue == listener.port }
        #expect(wireConnection?["localPort"] is NSNumber && (wireConnection?["pid"] as? NSNumber)?.int32Value == getpid(), "\(String(describing: wireConnection))")
        // The metrics count what the sensors saw and what the platform took, by type.
        func metrics() -> String { (try? String(contentsOfFile: textfile, encoding: .utf8)) ?? "" }
        #expect(rig.wait(seconds: 5) { metrics().contains(#"tether_telemetry_events_total{scope="edr",type="process-start",outcome="sent"}"#) }, "\(metrics())")
        #expect(metrics().contains(#"tether_telemetry_events_total{scope="sensors",type="file-change",outcome="seen"}"#))
        #expect(metrics().contains(#"tether_sensor_running{sensor="process"} 1"#))

        // git moves the watched folder: the file sensor follows, the others go on.
        let moved = try TemporaryDirectory("tether-watched-2")
        rig.env.revision = try rig.env.repo.commit(["policies/telemetry.yaml": TelemetryRig.policy(port: rig.platform.port, watched: moved.path, telemetry: true)],
                                                   message: "Watch another folder")
        #expect(rig.wait(seconds: 15) { rig.sensors().contains { ($0["source"] as? String)?.contains(moved.path) == true } }, "\(rig.sensors())")
        try moved.write("\(marker)-moved.txt", "x")
        #expect(rig.wait(seconds: 10) { rig.platform.events().contains { $0.detail["path"]?.text == moved.url.appendingPathComponent("\(marker)-moved.txt").path } })

        // git turns EDR telemetry off: the sensors stop within a cycle, and a new process does not arrive.
        rig.env.revision = try rig.env.repo.commit(["policies/telemetry.yaml": TelemetryRig.policy(port: rig.platform.port, watched: moved.path, telemetry: false)],
                                                   message: "EDR telemetry off")
        #expect(rig.wait(seconds: 15) { rig.sensors().allSatisfy { $0["running"] as? Bool == false } }, "the sensors stop: \(rig.sensors())")
        let after = "tether-probe-\(UUID().uuidString.lowercased())"
        try probeProcess(after, seconds: 1.5).wait()
        Thread.sleep(forTimeInterval: 3)
        #expect(!rig.platform.events().contains { $0.detail["commandLine"]?.text?.contains(after) == true }, "nothing is sent once telemetry is off")
        let status = rig.env.agentCommand("status")
        #expect(status.stdout.contains("Sensors: stopped since"), "\(status.stdout)")
        #expect(status.stdout.contains("process-start") && status.stdout.contains("EDR queued"), "\(status.stdout)")
    }

    @Test("Without fanotify permission events (no CAP_SYS_ADMIN), a listed program is killed as soon as it starts, status says so, and the platform receives the detection and what was done",
          .enabled(if: getuid() == 0, "the process connector needs root (CI runs as root)"))
    func executionPrevention() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let rig = try TelemetryRig()
        // A program no other test runs: sleep with a marker appended (ELF ignores trailing bytes).
        let forbidden = rig.watched.url.appendingPathComponent("forbidden-sleep").path
        var bytes = try Data(contentsOf: URL(fileURLWithPath: "/bin/sleep"))
        bytes.append(Data(UUID().uuidString.utf8))
        try writeExecutable(forbidden, bytes)
        let sha256 = String(try runProgram("sha256sum", [forbidden]).output.prefix(64))
        // A hostile list also names Tether's own program: that rule is never enforced.
        let own = String(try runProgram("sha256sum", [tetherExecutable]).output.prefix(64))
        rig.platform.queueCommand(["type": "execution-prevention", "rules": [["hash": .string(sha256), "algorithm": "sha256"],
                                                                             ["hash": .string(own), "algorithm": "sha256"]]])

        // Without CAP_SYS_ADMIN in its bounding set, tether cannot hold a fanotify permission group: the fallback.
        let controller = try ChildProcess("/usr/bin/setpriv", ["--bounding-set", "-sys_admin", tetherExecutable, "run", "--interval", "1", "--jitter", "0"] + rig.env.flags)
        defer { controller.kill(); controller.wait() }
        #expect(rig.wait(seconds: 30) { rig.sensors().contains { $0["running"] as? Bool == true } }, "\(controller.stderr)")
        let sync = rig.env.agentCommand("sync", "edr")
        #expect(sync.code == 0, "\(sync.stdout)")
        #expect(rig.env.agentCommand("status").code == 0)
        Thread.sleep(forTimeInterval: 1.5)  // the sensors read the rules every half second
        let mode = rig.env.agentCommand("status").stdout
        #expect(mode.contains("prevention kill right after the start (process sensor)"), "\(mode)")
        #expect(mode.contains("fanotify permission events are refused (Operation not permitted: they need CAP_SYS_ADMIN)"), "\(mode)")

        let started = Date()
        let victim = try ChildProcess(forbidden, ["30"])
        let status = victim.wait()
        #expect(status == 128 + SIGKILL, "killed by the agent (exit \(status))")
        #expect(Date().timeIntervalSince(started) < 5)
        var detection: WireEvent?
        var result: WireEvent?
        rig.wait(seconds: 15) {
            let events = rig.platform.events()
            detection = events.first { $0.type == "detection" && $0.detail["pid"] == DetailValue(victim.pid) }
            result = events.first { $0.type == "processing-result" && $0.detail["detectionId"] == detection?.detail["detectionId"] }
            return detection != nil && result != nil
        }
        #expect(detection?.detail["source"] == "execution-prevention" && detection?.detail["rule"]?.text == "sha256:\(sha256)", "\(String(describing: detection))")
        #expect(detection?.detail["path"]?.text == forbidden)
        #expect(result?.detail["action"] == "process-terminated", "\(String(describing: result))")
        #expect(kill(controller.pid, 0) == 0, "the controller, whose program is on the list too, still runs")
        #expect(rig.env.agentCommand("status").code == 0, "and so do tether's own commands")
        #expect(controller.stderr.contains("1 rule(s) match init, Tether's own programs or another program never blocked (a loader, a shell, the package manager…) and are not enforced"), "\(controller.stderr)")
    }

    @Test("Over the hourly limits, the sensors' events are counted as throttled by type when seen, never queued",
          .enabled(if: getuid() == 0, "the process connector and fanotify need root (CI runs as root)"))
    func throttledWhenSeen() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        // 1,000 events an hour, one type at most 1 % of them: 10 file changes at most, whatever
        // else the machine does meanwhile (a parallel test run spends other types' shares).
        let rig = try TelemetryRig(limits: "maximumEventsPerHour: 1000\n    eventLimitExceededPercentage: 1")
        // Without CAP_SYS_ADMIN in its bounding set, tether cannot hold a fanotify permission group: the fallback.
        let controller = try ChildProcess("/usr/bin/setpriv", ["--bounding-set", "-sys_admin", tetherExecutable, "run", "--interval", "1", "--jitter", "0"] + rig.env.flags)
        defer { controller.kill(); controller.wait() }
        #expect(rig.wait(seconds: 30) { rig.sensors().contains { $0["running"] as? Bool == true } }, "\(controller.stderr)")
        for index in 0..<40 { try rig.watched.write("file-\(index)", "x") }
        func fileChanges() -> [String: Int] {
            let telemetry = rig.env.agentCommand("status", "--json").json["telemetry"] as? [String: [String: [String: Int]]]
            return telemetry?["edr"]?["file-change"] ?? [:]
        }
        #expect(rig.wait(seconds: 10) { (fileChanges()["throttled"] ?? 0) >= 70 }, "40 creations and 40 writes, 10 let through: \(fileChanges())")
        #expect(fileChanges()["queued"] == 10, "\(fileChanges())")
        // A sync that failed under a loaded machine is retried after 30 s.
        #expect(rig.wait(seconds: 45) { rig.platform.events().filter { $0.type == "file-change" }.count == fileChanges()["queued"] },
                "the platform got \(rig.platform.events().filter { $0.type == "file-change" }.count) file changes; \(fileChanges()); \(rig.env.agentCommand("status").stdout)")
    }

    @Test("As nobody, in a network namespace without the process connector (a container), the sensors fall back, say so once, and still see a process and a file",
          .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"),
                   "makes the namespace with unshare and drops to nobody with setpriv"))
    func unprivilegedFallbacks() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let watched = try TemporaryDirectory("tether-watched")
        chmod(watched.path, 0o755)
        let watch = try ChildProcess("/usr/bin/unshare", ["--net", "--", "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", tetherExecutable,
                                                          "agent", "watch", "--seconds", "6", "--json", "--path", watched.path, "--state-dir", "/nonexistent"])
        Thread.sleep(forTimeInterval: 1.5)
        let marker = "tether-probe-\(UUID().uuidString.lowercased())"
        let process = try probeProcess(marker, seconds: 2.5)
        try watched.write("\(marker).txt", "seen by inotify\n")
        process.wait()
        #expect(watch.wait() == 0, "\(watch.stderr)")
        #expect(watch.stderr.contains("sensor process: /proc scan every 1 s — the BPF programs were not loaded (") && watch.stderr.contains("; the netlink process connector was refused"),
                "\(watch.stderr)")
        #expect(watch.stderr.contains("sensor file: inotify on 1 folder under \(watched.path) — fanotify cannot mark the file system of \(watched.path) (Operation not permitted: it needs CAP_SYS_ADMIN)"),
                "\(watch.stderr)")
        let events = watch.stdout.split(separator: "\n").compactMap { try? Wire.decode(WireEvent.self, from: Array($0.utf8)) }
        #expect(events.contains { $0.type == "process-start" && $0.detail["commandLine"]?.text?.contains(marker) == true }, "\(watch.stdout.suffix(3000))")
        let file = events.first { $0.type == "file-change" && $0.detail["path"]?.text == watched.url.appendingPathComponent("\(marker).txt").path }
        #expect(file != nil, "\(watch.stdout.suffix(3000))")
        #expect(file?.detail["pid"] == nil, "inotify does not say who changed a file, and no pid is made up")
    }
}

/// Root on a kernel that describes its types (CO-RE needs /sys/kernel/btf/vmlinux): where the
/// BPF programs load (CI runs as root on such a kernel).
private let bpfLoads = getuid() == 0 && FileManager.default.fileExists(atPath: "/sys/kernel/btf/vmlinux")

@Suite("Sensors in the kernel: eBPF", .serialized, .ownThread)
struct BPFSensorTests {
    /// A copy of /bin/true with bytes appended (its own file and hash), in a folder of the test's.
    private func shortProgram(in folder: TemporaryDirectory) throws -> String {
        var bytes = try Data(contentsOf: URL(fileURLWithPath: "/bin/true"))
        bytes.append(Data("tether bpf test\n".utf8))
        let path = folder.url.appendingPathComponent("short-lived").path
        try writeExecutable(path, bytes)
        return path
    }

    @Test("As root, the process sensor is eBPF: programs that live a millisecond are each seen with their path, command line, parent and exit code, stop after start",
          .enabled(if: bpfLoads, "loading BPF programs needs root (CI runs as root) and a kernel with BTF"))
    func shortPrograms() throws {
        try #require(FileManager.default.isExecutableFile(atPath: tetherExecutable), "swift build builds the tether executable")
        let folder = try TemporaryDirectory("tether-bpf")
        let program = try shortProgram(in: folder)
        let watch = try ChildProcess(tetherExecutable, ["agent", "watch", "--seconds", "5", "--json", "--path", folder.path, "--state-dir", folder.path + "/state"])
        Thread.sleep(forTimeInterval: 1.5)
        let marker = "run-\(UUID().uuidString.lowercased())"
        // Started by a shell from the folder, by a relative name: the kernel names the file.
        let runs = try runProgram("/bin/sh", ["-c", "for i in 1 2 3 4 5 6 7 8 9 10; do ./short-lived \(marker) $i; done; ./short-lived \(marker) last; exit 0"], in: folder.path)
        #expect(runs.status == 0)
        #expect(watch.wait() == 0, "\(watch.stderr)")
        #expect(watch.stderr.contains("sensor process: eBPF (sched_process_exec and sched_process_exit, ring buffer)\n"), "\(watch.stderr)")
        let events = watch.stdout.split(separator: "\n").compactMap { try? Wire.decode(WireEvent.self, from: Array($0.utf8)) }
        let starts = events.filter { $0.type == "process-start" && $0.detail["commandLine"]?.text?.hasPrefix("./short-lived \(marker) ") == true }
        #expect(starts.count == 11, "every one of the 11 runs: \(watch.stdout.suffix(3000))")
        let digest = try #require(digestsOfFile(program))
        for start in starts {
            #expect(start.detail["path"]?.text == program)
            #expect(start.detail["sha256"]?.text == digest)
            #expect(start.detail["missing"] == nil, "nothing missing: \(start.detail)")
            #expect(start.detail["ppid"] != nil && start.detail["uid"]?.number == 0)
        }
        #expect(starts.contains { $0.detail["commandLine"]?.text == "./short-lived \(marker) last" })
        let pids = Set(starts.compactMap { $0.detail["pid"]?.number })
        let stops = events.filter { $0.type == "process-stop" && pids.contains($0.detail["pid"]?.number ?? -1) }
        #expect(stops.count == 11 && stops.allSatisfy { $0.detail["exitCode"]?.number == 0 && $0.detail["path"]?.text == program })
        for pid in pids {
            let mine = events.filter { $0.detail["pid"]?.number == pid && $0.type.hasPrefix("process-") }
            #expect(mine.map(\.type) == ["process-start", "process-stop"], "pid \(pid): \(mine)")
            // The stop names the process by pid and start time, as its start did.
            #expect(mine.first?.detail["startTime"] != nil && mine.first?.detail["startTime"] == mine.last?.detail["startTime"], "\(mine)")
        }
    }

    @Test("A program run from memory (memfd_create + execve of the descriptor) is seen as memfd:NAME (deleted), its path marked missing, its hash read while it runs",
          .enabled(if: bpfLoads, "loading BPF programs needs root (CI runs as root) and a kernel with BTF"))
    func fileless() throws {
        let folder = try TemporaryDirectory("tether-bpf-memfd")
        let marker = "memfd-\(UUID().uuidString.prefix(8).lowercased())"
        let script = """
            import os, time
            fd = os.memfd_create("\(marker)")
            os.write(fd, open("/bin/sleep", "rb").read() + b"tether test")
            pid = os.fork()
            if pid == 0:
                os.execve(fd, ["\(marker)", "2"], {})
            os.waitpid(pid, 0)
            """
        try folder.write("fileless.py", script)
        let watch = try ChildProcess(tetherExecutable, ["agent", "watch", "--seconds", "5", "--json", "--path", folder.path, "--state-dir", folder.path + "/state"])
        Thread.sleep(forTimeInterval: 1.5)
        #expect(try runProgram("/usr/bin/env", ["python3", folder.path + "/fileless.py"]).status == 0)
        #expect(watch.wait() == 0, "\(watch.stderr)")
        let events = watch.stdout.split(separator: "\n").compactMap { try? Wire.decode(WireEvent.self, from: Array($0.utf8)) }
        let start = events.first { $0.type == "process-start" && $0.detail["commandLine"]?.text == "\(marker) 2" }
        #expect(start?.detail["path"]?.text == "memfd:\(marker) (deleted)", "\(String(describing: start))")
        #expect(start?.detail["missing"]?.text == "path" && start?.detail["sha256"] != nil, "\(String(describing: start))")
    }

    @Test("As root, the network sensor is eBPF: a TCP connection that lives 10 ms is seen opened and closed on both sides, and a UDP peer at its first datagram, with the process that owns them",
          .enabled(if: bpfLoads, "loading BPF programs needs root (CI runs as root) and a kernel with BTF"))
    func shortConnection() throws {
        let folder = try TemporaryDirectory("tether-bpf-tcp")
        let watch = try ChildProcess(tetherExecutable, ["agent", "watch", "--seconds", "4", "--json", "--path", folder.path, "--state-dir", folder.path + "/state"])
        Thread.sleep(forTimeInterval: 1.5)
        let port: Int
        do {
            let listener = try TCPListener()
            port = listener.port
            let connection = try listener.connect()
            Thread.sleep(forTimeInterval: 0.01)
            close(connection.client)
            close(connection.server)
        }
        // Three datagrams to one UDP peer: one record, the first.
        let datagrams = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var peer = sockaddr_in()
        peer.sin_family = sa_family_t(AF_INET)
        peer.sin_port = in_port_t(UInt16(port).bigEndian)
        peer.sin_addr.s_addr = inet_addr("127.0.0.1")
        for _ in 0..<3 {
            _ = withUnsafePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(datagrams, "x", 1, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        close(datagrams)
        #expect(watch.wait() == 0, "\(watch.stderr)")
        #expect(watch.stderr.contains("sensor network: eBPF (inet_sock_set_state; cgroup connect and sendmsg for UDP peers), sock_diag every 1 s for UDP sockets bound"),
                "\(watch.stderr)")
        let all = watch.stdout.split(separator: "\n").compactMap { try? Wire.decode(WireEvent.self, from: Array($0.utf8)) }
        let udp = all.filter { $0.type == "network-connection" && $0.detail["protocol"]?.text == "udp" && $0.detail["remotePort"]?.number == Int64(port) }
        #expect(udp.count == 1 && udp.first?.detail["pid"]?.number == Int64(getpid()) && udp.first?.detail["remoteAddress"]?.text == "127.0.0.1", "\(udp)")
        let events = all.filter { $0.type == "network-connection" && $0.detail["protocol"]?.text == "tcp"
            && ($0.detail["localPort"]?.number == Int64(port) || $0.detail["remotePort"]?.number == Int64(port)) }
        let actions = events.map { $0.detail["action"]?.text ?? "" }
        #expect(actions.sorted() == ["closed", "closed", "closed", "listening", "opened", "opened"], "\(events)")
        let me = Int64(getpid())
        #expect(events.allSatisfy { $0.detail["pid"]?.number == me && $0.detail["localAddress"]?.text == "127.0.0.1" }, "\(events)")
        #expect(events.contains { $0.detail["action"]?.text == "opened" && $0.detail["remotePort"]?.number == Int64(port) && $0.detail["remoteAddress"]?.text == "127.0.0.1" })
    }

    @Test("A process with threads ends once: one stop, its exit code, the start time of its start (not a thread's)",
          .enabled(if: bpfLoads, "loading BPF programs needs root (CI runs as root) and a kernel with BTF"))
    func threadedProcess() throws {
        let folder = try TemporaryDirectory("tether-bpf-threads")
        // The main thread ends first (pthread_exit); threads it started 1.1 s later (start times
        // on the wire have whole seconds) end the process (exit code 3): the last thread out is
        // not the leader.
        try folder.write("threads.c", """
            #include <pthread.h>
            #include <stdlib.h>
            #include <unistd.h>
            static void *work(void *unused) { (void)unused; usleep(300000); exit(3); return NULL; }
            int main(void) {
                usleep(1100000);
                pthread_t threads[2];
                for (int i = 0; i < 2; i++) pthread_create(&threads[i], NULL, work, NULL);
                pthread_exit(NULL);
            }
            """)
        let compiled = try runProgram("/usr/bin/env", ["clang", "-O1", "-pthread", "-o", folder.path + "/threads", folder.path + "/threads.c"])
        try #require(compiled.status == 0, "the Swift toolchain's clang compiles it: \(compiled.output)")
        let watch = try ChildProcess(tetherExecutable, ["agent", "watch", "--seconds", "5", "--json", "--path", folder.path, "--state-dir", folder.path + "/state"])
        Thread.sleep(forTimeInterval: 1.5)
        let run = try runProgram(folder.path + "/threads", [])
        #expect(run.status == 3)
        #expect(watch.wait() == 0, "\(watch.stderr)")
        let events = watch.stdout.split(separator: "\n").compactMap { try? Wire.decode(WireEvent.self, from: Array($0.utf8)) }
        let start = try #require(events.last { $0.type == "process-start" && $0.detail["path"]?.text == folder.path + "/threads" }, "\(watch.stdout.suffix(2000))")
        let stops = events.filter { $0.type == "process-stop" && $0.detail["pid"] == start.detail["pid"] }
        #expect(stops.count == 1, "\(stops)")
        #expect(stops.first?.detail["exitCode"]?.number == 3 && stops.first?.detail["startTime"] == start.detail["startTime"], "\(stops) \(start)")
    }

    @Test("A listener older than the sensors gives its owner to the connections it accepts (seeded from sock_diag and /proc at start)",
          .enabled(if: bpfLoads, "loading BPF programs needs root (CI runs as root) and a kernel with BTF"))
    func olderListener() throws {
        let folder = try TemporaryDirectory("tether-bpf-listener")
        let listener = try TCPListener()
        let watch = try ChildProcess(tetherExecutable, ["agent", "watch", "--seconds", "3", "--json", "--path", folder.path, "--state-dir", folder.path + "/state"])
        Thread.sleep(forTimeInterval: 1.5)
        let connection = try listener.connect()
        close(connection.client)
        close(connection.server)
        #expect(watch.wait() == 0, "\(watch.stderr)")
        let accepted = watch.stdout.split(separator: "\n").compactMap { try? Wire.decode(WireEvent.self, from: Array($0.utf8)) }
            .first { $0.type == "network-connection" && $0.detail["action"]?.text == "opened" && $0.detail["localPort"]?.number == Int64(listener.port) }
        #expect(accepted?.detail["pid"]?.number == Int64(getpid()), "\(String(describing: accepted))")
    }

    @Test("Without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN, the BPF programs are refused: the sensor names why and falls back to the process connector",
          .enabled(if: bpfLoads && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), "drops the capabilities with setpriv"))
    func refusedFallsBack() throws {
        let folder = try TemporaryDirectory("tether-bpf-refused")
        let watch = try ChildProcess("/usr/bin/setpriv", ["--bounding-set=-bpf,-perfmon,-sys_admin", "--inh-caps=-all", tetherExecutable,
                                                          "agent", "watch", "--seconds", "1", "--json", "--path", folder.path, "--state-dir", folder.path + "/state"])
        #expect(watch.wait() == 0, "\(watch.stderr)")
        #expect(watch.stderr.contains("sensor process: netlink process connector — the BPF programs were not loaded (the kernel refused the program: Operation not permitted (it needs CAP_BPF and CAP_PERFMON, or root"),
                "\(watch.stderr)")
        #expect(watch.stderr.contains("the process connector reads the rest from /proc, which misses programs that end first"), "\(watch.stderr)")
        #expect(watch.stderr.contains("sensor network: sock_diag every 1 s — the BPF program was not loaded (the kernel refused the program: Operation not permitted"),
                "\(watch.stderr)")
    }
}

/// A file's SHA-256 as coreutils computes it.
private func digestsOfFile(_ path: String) -> String? {
    (try? runProgram("/usr/bin/sha256sum", [path]))?.output.split(separator: " ").first.map(String.init)
}

/// A TCP listener on 127.0.0.1 with a kernel-chosen port, and connections to it held open.
private final class TCPListener {
    let port: Int
    private let fd: Int32

    init() throws {
        (fd, port) = try listenOnLoopback()
    }

    /// A connection from this process to the listener, accepted on the other side.
    func connect() throws -> HeldConnection {
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else { throw FixtureError("cannot connect to 127.0.0.1:\(port)") }
        return HeldConnection(client: client, server: accept(fd, nil, nil))
    }

    deinit { close(fd) }
}

private struct HeldConnection {
    let client: Int32
    let server: Int32

    func close() {
        Glibc.close(client)
        Glibc.close(server)
    }
}
