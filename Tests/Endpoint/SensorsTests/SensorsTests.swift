import Foundation
import IntegrationModel
@testable import Sensors
import WireFormat
import Testing

@Suite("Sensors: the parts that need no kernel interface")
struct SensorsTests {
    @Test("/proc/net lines: addresses in the kernel's word order become dotted and colon forms; sockets without an inode are kept out")
    func procNet() throws {
        let tcp = """
              sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
               0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51234 1 0000000000000000 100 0 0 10 0
               1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 51240 1 0000000000000000 20 4 30 10 -1
               2: 0100007F:C352 0100007F:1F90 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0000000000000000
            """
        let entries = SocketTable.parse(Array(tcp.utf8), transport: .tcp, family: AF_INET)
        try #require(entries.count == 2, "TIME_WAIT has no inode (no owner left): it is kept out")
        #expect(entries[0].local == SocketAddress(address: "127.0.0.1", port: 8080) && entries[0].isListening && entries[0].inode == 51234)
        #expect(entries[1].remote == SocketAddress(address: "127.0.0.1", port: 8080) && entries[1].local.port == 50000 && entries[1].uid == 1000)
        let tcp6 = """
              sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
               0: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
            """
        let six = SocketTable.parse(Array(tcp6.utf8), transport: .tcp, family: AF_INET6)
        #expect(six.first?.local == SocketAddress(address: "::1", port: 443))
        #expect(SocketTable.parse(Array("header\n0: garbage\n  1: 0100007F:ZZZZ 00000000:0000 0A 0 0 0 0 0 1\n".utf8), transport: .tcp, family: AF_INET).isEmpty,
                "malformed lines are skipped, never guessed")
    }

    @Test("The buffer holds at most its capacity; what does not fit is dropped and counted by type, and seen counts everything")
    func boundedBuffer() {
        let buffer = SensorBuffer(capacity: 3)
        let file = SensorEvent(.file(FileChange(action: .modified, path: "/tmp/a", oldPath: nil, isDirectory: false, actor: nil)))
        let stop = SensorEvent(.processStop(ProcessStop(pid: 42, status: 0, executable: nil)))
        #expect(buffer.push(file) && buffer.push(file) && buffer.push(stop))
        #expect(!buffer.push(file) && !buffer.push(stop))
        let drained = buffer.drain()
        #expect(drained.events.count == 3)
        #expect(drained.seen == ["file-change": 3, "process-stop": 2])
        #expect(drained.dropped == ["file-change": 1, "process-stop": 1])
        #expect(buffer.drain().events.isEmpty && buffer.push(file), "a drained buffer takes events again")
    }

    @Test("An exit status is an exit code or the signal that ended the process, never the raw status")
    func exitStatus() {
        #expect(ProcessStop(pid: 1, status: 256, executable: nil).exitCode == 1)
        let killed = ProcessStop(pid: 1, status: 9, executable: nil)
        #expect(killed.exitCode == nil && killed.signal == 9)
        let unknown = SensorEvent(.processStop(ProcessStop(pid: 7, status: nil, executable: nil))).detail
        #expect(unknown == ["pid": 7], "a /proc scan does not know how it ended, and says nothing")
    }

    @Test("Watched folders: under an included folder, not under an excluded one, by whole path components")
    func scope() {
        let scope = PathScope(included: ["/srv/data", "/etc"], excluded: ["/srv/data/state"])
        #expect(scope.contains("/srv/data/file") && scope.contains("/etc") && scope.contains("/etc/ssh/sshd_config"))
        #expect(!scope.contains("/srv/database/file"), "a sibling with the same prefix is not inside")
        #expect(!scope.contains("/srv/data/state/runtime.db") && !scope.contains("/srv/data/state"))
        #expect(PathScope(included: ["/"], excluded: []).contains("/anything/at/all"))
    }

    @Test("Only what is known goes on the wire: a file change without a process says no pid; a detection links to its result")
    func detail() {
        let change = SensorEvent(.file(FileChange(action: .renamed, path: "/tmp/new", oldPath: "/tmp/old", isDirectory: true, actor: nil)))
        #expect(change.detail == ["action": "renamed", "path": "/tmp/new", "oldPath": "/tmp/old", "directory": .flag(true)])
        var detection = Detection(id: "d1", source: .executionPrevention, path: "/tmp/x")
        detection.rule = "sha256:ab"
        let result = ProcessingResult(detectionId: detection.id, action: .processTerminated, result: "SIGKILL sent to pid 9", pid: 9)
        #expect(SensorEvent(.detection(detection)).detail == ["detectionId": "d1", "source": "execution-prevention", "path": "/tmp/x", "rule": "sha256:ab"])
        #expect(SensorEvent(.processingResult(result)).detail["detectionId"] == "d1")
        #expect(SensorEvent(.processingResult(result)).type == .processingResult)
        #expect(SensorEvent(.processingResult(result)).detail["pid"] == .number(9), "a pid is a number on the wire")
        var start = ProcessFacts(pid: 9401)
        start.parentPid = 1
        start.uid = 0
        #expect(SensorEvent(.processStart(start)).detail == ["pid": 9401, "ppid": 1, "uid": 0])
    }

    @Test("The prevention list matches by SHA-256 or MD5 and names the rule; replacing it drops the old rules")
    func prevention() {
        let list = PreventionList()
        list.replace(sha256: ["aa"], md5: ["bb"])
        #expect(list.match(sha256: "aa", md5: nil) == "sha256:aa")
        #expect(list.match(sha256: "cc", md5: "bb") == "md5:bb")
        list.replace(sha256: [], md5: [])
        #expect(list.match(sha256: "aa", md5: "bb") == nil)
    }

    @Test("edr.fileMonitoring.paths: absolute, normalised folders without control characters, no repeats, at most 64")
    func folders() {
        #expect(FolderList.problem(FolderList.defaultFileMonitoring) == nil)
        #expect(FolderList.problem(["/"]) == nil)
        #expect(FolderList.problem([])?.contains("empty") == true)
        #expect(FolderList.problem(["etc"])?.contains("not an absolute folder") == true)
        for folder in ["/etc/", "/etc//ssh", "/etc/./ssh", "/etc/../root"] {
            #expect(FolderList.problem([folder])?.contains("not normalised") == true, "\(folder)")
        }
        #expect(FolderList.problem(["/tmp/\u{1B}[2J"])?.contains("\\x1b") == true, "a control character is refused and shown escaped")
        #expect(FolderList.problem(["/etc", "/etc"])?.contains("listed twice") == true)
        #expect(FolderList.problem((0...64).map { "/d\($0)" })?.contains("at most 64") == true)
    }

    @Test("Command lines leave the machine without the passwords in URLs or in arguments named like secrets")
    func redaction() {
        #expect(CommandLineRedaction.redacted("git clone https://deploy:s3cr3t@git.example.org/repo.git") == "git clone https://***@git.example.org/repo.git")
        #expect(CommandLineRedaction.redacted("curl -u x https://host/path?a=b@c") == "curl -u x https://host/path?a=b@c", "an @ after the host is not userinfo")
        #expect(CommandLineRedaction.redacted("tool --password=hunter2 --api-key=abc --user=bob TOKEN=xyz") == "tool --password=*** --api-key=*** --user=bob TOKEN=***")
        #expect(CommandLineRedaction.redacted("sleep 30") == "sleep 30")
    }

    @Test("The effective uid comes from the Uid line of /proc/PID/status (real, effective, saved, fs)")
    func statusUid() {
        let status = Array("Name:\tx\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n".utf8)
        #expect(ProcessEnricher.effectiveUid(status[...]) == 0)
        #expect(ProcessEnricher.effectiveUid(Array("Name:\tx\n".utf8)[...]) == nil)
    }
}

@Suite("Reading /proc")
struct ProcFSTests {
    @Test("A /proc file is read as it is, and the boot time comes from it")
    func reads() throws {
        let status = String(decoding: try #require(ProcFS.read("/proc/self/status", limit: 8192)), as: UTF8.self)
        #expect(status.hasPrefix("Name:") && status.contains("\nPid:"), "\(status.prefix(80))")
        let boot = try #require(ProcFS.bootTime)
        #expect(boot < Date() && boot > Date(timeIntervalSince1970: 1_000_000_000))
    }
}
