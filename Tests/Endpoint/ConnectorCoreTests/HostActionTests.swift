import ConnectorCore
import Foundation
import IntegrationModel
import EmbeddedAgent
import SQLiteDB
import TetherTestSupport
import Testing
import WireFormat

/// A copy of a system program in `folder` with bytes appended: its hash is its own, never the
/// system program's, so only what the test starts can match it.
private func markedCopy(of program: String, in folder: TemporaryDirectory, name: String) throws -> (path: String, sha256: String) {
    let path = folder.url.appendingPathComponent(name).path
    try writeExecutable(path, try Data(contentsOf: URL(fileURLWithPath: program)) + Data("tether test \(UUID().uuidString)\n".utf8))
    return (path, try fileDigest(path))
}

/// A program started by a shell that exits at once, so its parent is not this process (Tether
/// never ends a process it started itself).
private func detachedProcess(_ path: String, _ arguments: [String]) throws -> Int32 {
    let shell = try ChildProcess("/bin/sh", ["-c", "'\(path)' \(arguments.joined(separator: " ")) </dev/null >/dev/null 2>&1 & echo $!"])
    shell.wait()
    return try #require(Int32(shell.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
}

/// Whether the process runs (not gone, not a zombie waiting for its parent).
private func isRunning(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
    return !stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z")
}

/// Waits up to 5 s for the process to end.
private func ended(_ pid: Int32) -> Bool {
    let deadline = Date().addingTimeInterval(5)
    while isRunning(pid), Date() < deadline { usleep(10_000) }
    return !isRunning(pid)
}

/// The process's start as /proc says it (clock ticks after boot, field 22 of /proc/PID/stat).
private func startTime(of pid: Int32) throws -> Date {
    let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
    let fields = stat[stat.index(after: try #require(stat.lastIndex(of: ")")))...].split(separator: " ")
    let ticks = try #require(Double(fields[19]))
    let boot = try String(contentsOfFile: "/proc/stat", encoding: .utf8).split(separator: "\n").first { $0.hasPrefix("btime ") } ?? ""
    let bootTime = try #require(Double(boot.dropFirst(6)))
    return Date(timeIntervalSince1970: bootTime + ticks / Double(sysconf(Int32(_SC_CLK_TCK))))
}

@Suite("Response actions on this host: terminate, get, delete, quarantine and restore (on files and programs the test made)", .serialized)
struct HostActionTests {
    private func result(_ rig: Rig, _ id: String) throws -> (result: String, detail: String) {
        let entry = try #require(try rig.runtime.commandLog().first { $0.id == id }, "\(id) was not carried out")
        return (entry.result, entry.detail)
    }

    @Test("terminate-process by SHA-256 ends every process running that file and no other; by pid only with the right start time")
    func terminate() throws {
        let rig = try Rig()
        let folder = try TemporaryDirectory("tether-terminate")
        let listed = try markedCopy(of: "/bin/sleep", in: folder, name: "sleep-listed")
        let other = try markedCopy(of: "/bin/sleep", in: folder, name: "sleep-other")
        let first = try detachedProcess(listed.path, ["30"]), second = try detachedProcess(listed.path, ["30"])
        let bystander = try detachedProcess(other.path, ["30"])
        defer { for pid in [first, second, bystander] { kill(pid, SIGKILL) } }

        rig.platform.queueCommand(["id": "term-sha", "type": "terminate-process", "sha256": .string(listed.sha256)])
        #expect(rig.runtime.sync(.edr).succeeded)
        let bySHA = try result(rig, "term-sha")
        #expect(bySHA.result == "applied", "\(bySHA.detail)")
        #expect(bySHA.detail.contains("pid \(first) (\(listed.path))") && bySHA.detail.contains("pid \(second) (\(listed.path))"), "\(bySHA.detail)")
        #expect(ended(first) && ended(second))
        #expect(isRunning(bystander), "a copy with another hash is left alone")

        // By pid: the wrong start time (a reused pid) is never hit; the right one is.
        let pid = bystander
        let started = try startTime(of: pid)
        rig.platform.queueCommand(["id": "term-stale", "type": "terminate-process", "pid": .number(Double(pid)),
                                   "startTime": .number(started.timeIntervalSince1970 - 3600)])
        rig.platform.queueCommand(["id": "term-nostart", "type": "terminate-process", "pid": .number(Double(pid))])
        rig.platform.queueCommand(["id": "term-self", "type": "terminate-process", "pid": .number(Double(getpid())),
                                   "startTime": .number(try startTime(of: getpid()).timeIntervalSince1970)])
        #expect(rig.runtime.sync(.edr).succeeded)
        #expect(try result(rig, "term-stale").result == "failed")
        #expect(try result(rig, "term-stale").detail.contains("another process has that pid now"))
        #expect(try result(rig, "term-nostart").result == "rejected")
        #expect(try result(rig, "term-self").detail == "spared pid \(getpid()): Tether itself is never ended")
        #expect(isRunning(bystander))
        rig.platform.queueCommand(["id": "term-pid", "type": "terminate-process", "pid": .number(Double(pid)),
                                   "startTime": .string(Timestamp.string(started))])
        #expect(rig.runtime.sync(.edr).succeeded)
        let byPid = try result(rig, "term-pid")
        #expect(byPid.result == "applied", "\(byPid.detail)")
        #expect(ended(bystander))
        #expect(rig.runtime.sync(.edr).succeeded)
        let reported = rig.platform.received.filter { $0.path.hasSuffix("/sync") }.flatMap { $0.decode(SyncRequest.self)?.commandResults ?? [] }
        #expect(reported.first { $0.id == "term-sha" }?.result == "applied", "the platform records what happened")
    }

    @Test("get-file sends the file's bytes and SHA-256 to the platform; folders, /proc, links, Tether's own files and files over the bound are refused")
    func getFile() throws {
        let rig = try Rig()
        let folder = try TemporaryDirectory("tether-get-file")
        var bytes = Data(count: 3 << 20)
        for index in stride(from: 0, to: bytes.count, by: 4096) { bytes[index] = UInt8(truncatingIfNeeded: index / 4096) }
        let path = try folder.write("evidence.bin", bytes)
        symlink(path, folder.url.appendingPathComponent("link").path)
        let sha256 = try fileDigest(path)
        rig.platform.queueCommand(["id": "get-1", "type": "get-file", "path": .string(path)])
        rig.platform.queueCommand(["id": "get-small", "type": "get-file", "path": .string(path), "maxBytes": 1024])
        rig.platform.queueCommand(["id": "get-dir", "type": "get-file", "path": .string(folder.path)])
        rig.platform.queueCommand(["id": "get-proc", "type": "get-file", "path": "/proc/self/status"])
        rig.platform.queueCommand(["id": "get-link", "type": "get-file", "path": .string(folder.url.appendingPathComponent("link").path)])
        rig.platform.queueCommand(["id": "get-own", "type": "get-file", "path": .string(rig.state.url.appendingPathComponent(ConnectorRuntime.storeFileName).path)])
        rig.platform.queueCommand(["id": "get-relative", "type": "get-file", "path": "etc/passwd"])
        #expect(rig.runtime.sync(.edr).succeeded)
        let sent = try result(rig, "get-1")
        #expect(sent.result == "applied" && sent.detail == "sent \(path): \(bytes.count) bytes, sha256 \(sha256)", "\(sent.detail)")
        #expect(rig.platform.receivedFile("get-1") == [UInt8](bytes), "the platform holds the file's bytes")
        let small = try result(rig, "get-small")
        #expect(small.result == "refused" && small.detail == "\(path) has \(bytes.count) bytes, over the bound of 1024 (maxBytes)", "\(small.detail)")
        for id in ["get-dir", "get-proc", "get-link", "get-own", "get-relative"] {
            let refused = try result(rig, id)
            #expect(refused.result == "refused", "\(id): \(refused.detail)")
            #expect(rig.platform.receivedFile(id) == nil)
        }
        #expect(try result(rig, "get-link").detail.contains("is a symbolic link"))
        #expect(try result(rig, "get-own").detail.contains("which the platform may not touch"))
    }

    @Test("A folder swapped for a symbolic link, a path with '..', or a file with another hash than the command names is never acted on")
    func linksAndHashes() throws {
        let rig = try Rig()
        let folder = try TemporaryDirectory("tether-links")
        let real = try folder.write("real/victim.txt", "keep me\n")
        let elsewhere = try folder.write("elsewhere/victim.txt", "keep me too\n")
        // "door" is a link to "elsewhere": a command naming door/victim.txt must not reach elsewhere/victim.txt.
        symlink(folder.url.appendingPathComponent("elsewhere").path, folder.url.appendingPathComponent("door").path)
        let hardLink = folder.url.appendingPathComponent("real/second-name.txt").path
        link(real, hardLink)
        rig.platform.queueCommand(["id": "d-link", "type": "delete-file", "path": .string(folder.url.appendingPathComponent("door/victim.txt").path)])
        rig.platform.queueCommand(["id": "d-dots", "type": "delete-file", "path": .string(folder.url.appendingPathComponent("real/../elsewhere/victim.txt").path)])
        rig.platform.queueCommand(["id": "d-hash", "type": "delete-file", "path": .string(real), "sha256": .string(String(repeating: "a", count: 64))])
        rig.platform.queueCommand(["id": "q-hard", "type": "quarantine-file", "path": .string(real), "sha256": .string(try fileDigest(real))])
        #expect(rig.runtime.sync(.edr).succeeded)
        #expect(try result(rig, "d-link").result == "refused")
        #expect(try result(rig, "d-link").detail.contains("is a symbolic link; name the real path"))
        #expect(try result(rig, "d-dots").detail.contains("is not a plain path"))
        #expect(try result(rig, "d-hash").detail.contains("another file than the one meant; nothing was done"))
        #expect(try String(contentsOfFile: elsewhere, encoding: .utf8) == "keep me too\n")
        let quarantined = try result(rig, "q-hard")
        #expect(quarantined.result == "applied" && quarantined.detail.hasSuffix("(the file has 1 other name, which stay)"), "\(quarantined.detail)")
        #expect(FileManager.default.fileExists(atPath: hardLink) && !FileManager.default.fileExists(atPath: real))

        // Restore: the original folder swapped for a link to another folder is refused, and
        // nothing is created where the link points.
        let held = try #require(try rig.runtime.quarantinedFiles().first)
        let realFolder = folder.url.appendingPathComponent("real").path
        try FileManager.default.moveItem(atPath: realFolder, toPath: folder.url.appendingPathComponent("moved").path)
        symlink(folder.url.appendingPathComponent("elsewhere").path, realFolder)
        try FileManager.default.removeItem(atPath: elsewhere)
        let refused = rig.runtime.restoreFile(quarantineId: held.id)
        #expect(refused.0 == "failed" && refused.1.contains("symbolic link"), "\(refused.1)")
        #expect(!FileManager.default.fileExists(atPath: elsewhere), "nothing was written through the link")
    }

    @Test("A quarantine a kill interrupted is finished when a runtime opens: a checked copy is held, a copy begun is dropped (its original was not touched)")
    func interruptedQuarantine() throws {
        let rig = try Rig()
        let folder = try TemporaryDirectory("tether-interrupted")
        let first = try folder.write("first.bin", "first\n")
        rig.platform.queueCommand(["id": "q-a", "type": "quarantine-file", "path": .string(first)])
        #expect(rig.runtime.sync(.edr).succeeded)
        let held = try #require(try rig.runtime.quarantinedFiles().first)
        let store = rig.state.url.appendingPathComponent(ConnectorRuntime.storeFileName).path
        let database = try Database(path: store)
        // As if killed after the copy was checked (the original already gone) …
        try database.query("UPDATE quarantine SET state = 'copied' WHERE id = ?", [.text(held.id)])
        // … and another killed while copying: a partial copy, its original still in place.
        let second = try folder.write("second.bin", "second\n")
        let partial = rig.state.url.appendingPathComponent(ConnectorRuntime.quarantineFolder).appendingPathComponent("0000-partial").path
        try "sec".write(toFile: partial, atomically: false, encoding: .utf8)
        try database.query("""
            INSERT INTO quarantine (id, original_path, size, sha256, owner, grp, mode, at, command_id, state)
            VALUES ('0000-partial', ?, 7, ?, 0, 0, 420, 0, 'q-b', 'moving')
            """, [.text(second), .text(try fileDigest(second))])
        let reopened = try ConnectorRuntime(agent: try Agent(stateDirectory: rig.state.path))
        let files = try reopened.quarantinedFiles()
        #expect(files.map(\.id) == [held.id], "the checked copy is held, the partial one is gone")
        #expect(!FileManager.default.fileExists(atPath: partial))
        #expect(try String(contentsOfFile: second, encoding: .utf8) == "second\n", "its original was never touched")
        #expect(reopened.restoreFile(quarantineId: held.id).0 == "applied")
        #expect(try String(contentsOfFile: first, encoding: .utf8) == "first\n")
    }

    @Test("delete-file removes a file; quarantine moves it into a root-only store with its owner, mode and hash, and restore puts it back as it was")
    func deleteAndQuarantine() throws {
        let rig = try Rig()
        let folder = try TemporaryDirectory("tether-quarantine")
        let doomed = try folder.write("doomed.txt", "delete me\n")
        let suspect = try folder.write("suspect.sh", "#!/bin/sh\necho payload\n")
        chmod(suspect, 0o750)
        let sha256 = try fileDigest(suspect)
        rig.platform.queueCommand(["id": "del-1", "type": "delete-file", "path": .string(doomed)])
        rig.platform.queueCommand(["id": "del-dir", "type": "delete-file", "path": .string(folder.path)])
        rig.platform.queueCommand(["id": "del-dev", "type": "delete-file", "path": "/dev/null"])
        rig.platform.queueCommand(["id": "q-1", "type": "quarantine-file", "path": .string(suspect)])
        #expect(rig.runtime.sync(.edr).succeeded)
        #expect(try result(rig, "del-1").result == "applied" && !FileManager.default.fileExists(atPath: doomed))
        #expect(try result(rig, "del-dir").result == "refused" && FileManager.default.fileExists(atPath: folder.path))
        #expect(try result(rig, "del-dev").result == "refused" && FileManager.default.fileExists(atPath: "/dev/null"))
        let quarantined = try result(rig, "q-1")
        #expect(quarantined.result == "applied", "\(quarantined.detail)")
        #expect(!FileManager.default.fileExists(atPath: suspect), "the file is gone from where it was")
        let held = try #require(try rig.runtime.quarantinedFiles().first)
        #expect(held.originalPath == suspect && held.sha256 == sha256 && held.mode == 0o750 && held.restoredAt == nil)
        #expect(quarantined.detail.contains(held.id))
        let stored = rig.state.url.appendingPathComponent(ConnectorRuntime.quarantineFolder).appendingPathComponent(held.id).path
        let storedMode = try #require(try FileManager.default.attributesOfItem(atPath: stored)[.posixPermissions] as? Int)
        #expect(storedMode == 0o400, "kept, never executable")
        #expect(try FileManager.default.attributesOfItem(atPath: rig.state.url.appendingPathComponent(ConnectorRuntime.quarantineFolder).path)[.posixPermissions] as? Int == 0o700)

        // A file at the original path now is never overwritten; once it is gone, restore works.
        try "someone else's\n".write(toFile: suspect, atomically: true, encoding: .utf8)
        rig.platform.queueCommand(["id": "r-blocked", "type": "restore-file", "quarantineId": .string(held.id)])
        #expect(rig.runtime.sync(.edr).succeeded)
        #expect(try result(rig, "r-blocked").result == "failed")
        #expect(try String(contentsOfFile: suspect, encoding: .utf8) == "someone else's\n")
        try FileManager.default.removeItem(atPath: suspect)
        rig.platform.queueCommand(["id": "r-1", "type": "restore-file", "quarantineId": .string(held.id)])
        #expect(rig.runtime.sync(.edr).succeeded)
        let restored = try result(rig, "r-1")
        #expect(restored.result == "applied", "\(restored.detail)")
        #expect(try fileDigest(suspect) == sha256)
        #expect(try FileManager.default.attributesOfItem(atPath: suspect)[.posixPermissions] as? Int == 0o750)
        #expect(!FileManager.default.fileExists(atPath: stored))
        #expect(try rig.runtime.quarantinedFiles().first?.restoredAt != nil)
        #expect(rig.runtime.restoreFile(quarantineId: held.id).0 == "failed", "restored once")
    }
}

@Suite("The sensors' status names the tether run by pid and start time")
struct SensorOwnerTests {
    /// This process's start in clock ticks after boot (/proc/self/stat, field 22).
    private func startTicks() throws -> Int64 {
        let stat = try String(contentsOfFile: "/proc/self/stat", encoding: .utf8)
        let fields = try #require(stat.split(separator: ")").last).split(separator: " ")
        return try #require(Int64(fields[19]))
    }

    @Test("A running status is running only while that same process lives: another process with its pid (a reused pid) is not it")
    func reusedPid() throws {
        let state = try TemporaryDirectory("tether-sensor-owner")
        let runtime = try ConnectorRuntime(agent: try Agent(stateDirectory: state.path))
        let database = try Database(path: state.path + "/runtime.db")
        let ticks = try startTicks()
        func record(start: SQLValue) throws -> Bool {
            try database.execute("DELETE FROM sensors")
            _ = try database.query("INSERT INTO sensors (sensor, source, running, note, pid, since, pid_start) VALUES ('process', 'eBPF', 1, NULL, ?, 0, ?)",
                                   [.integer(Int64(getpid())), start])
            return try #require(runtime.sensorReports().first).isRunning
        }
        #expect(try record(start: .integer(ticks)), "this process, as recorded")
        #expect(try !record(start: .integer(ticks + 1)), "another process that had this pid before")
        #expect(try record(start: .null), "a record of an earlier release: the pid alone")
    }
}
