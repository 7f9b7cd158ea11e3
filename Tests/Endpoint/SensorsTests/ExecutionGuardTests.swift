import Foundation
@testable import Sensors
import TetherTestSupport
import Testing
import X509

/// A copy of a system program in `folder` with bytes appended, so its hash is its own and never
/// the system program's: the only kind of file these tests deny.
func markedCopy(of program: String, in folder: URL, name: String, appending extra: String = "tether test copy\n") throws -> (path: String, sha256: String, md5: String) {
    let path = folder.appendingPathComponent(name).path
    var bytes = try Data(contentsOf: URL(fileURLWithPath: program))
    bytes.append(Data(extra.utf8))
    try writeExecutable(path, bytes)
    let digests = try #require(digestsOf(path))
    return (path, digests.sha256, digests.md5)
}

func digestsOf(_ path: String) -> (sha256: String, md5: String)? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    return fileDigests(fileDescriptor: fd)
}

/// Runs `command` through /bin/sh; its exit status and what it printed.
func shell(_ command: String) throws -> ProgramResult {
    try runProgram("/bin/sh", ["-c", command])
}

@Suite("Execution prevention before a program runs (fanotify permission events, on copies in a temporary folder)", .serialized)
struct ExecutionGuardTests {
    let folder: URL

    init() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("tether-guard-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    @Test("A listed copy of /bin/echo never prints, run five times; a listed #! script and an MD5-listed copy are denied; an unlisted copy runs")
    func denies() throws {
        defer { try? FileManager.default.removeItem(at: folder) }
        let echo = try markedCopy(of: "/bin/echo", in: folder, name: "listed-echo")
        let byMD5 = try markedCopy(of: "/bin/echo", in: folder, name: "listed-by-md5", appending: "another copy\n")
        let other = try markedCopy(of: "/bin/echo", in: folder, name: "unlisted-echo", appending: "a third copy\n")
        let scriptPath = folder.appendingPathComponent("listed.sh").path
        try writeExecutable(scriptPath, Data("#!/bin/sh\necho the script ran\n".utf8))
        let script = try #require(digestsOf(scriptPath))
        // A file changed within the last second is neither cached nor ignored (a same-size rewrite
        // within one tick of the change-time clock would look the same): let these settle.
        Thread.sleep(forTimeInterval: 1.1)
        let prevention = PreventionList()
        prevention.replace(sha256: [echo.sha256, script.sha256], md5: [byMD5.md5])
        let buffer = SensorBuffer(capacity: 100)
        let executionGuard = try ExecutionGuard(scope: .directory(folder.path), prevention: prevention, buffer: buffer)
        defer { executionGuard.stop() }

        for run in 1...5 {
            let result = try shell("'\(echo.path)' printed-by-a-listed-program")
            #expect(!result.output.contains("printed-by-a-listed-program"), "run \(run): \(result.output)")
            #expect(result.status == 126, "run \(run): the shell could not execute it: \(result.output)")
        }
        let md5Run = try shell("'\(byMD5.path)' printed-by-md5")
        #expect(!md5Run.output.contains("printed-by-md5") && md5Run.status == 126)
        let scriptRun = try shell("'\(scriptPath)'")
        #expect(!scriptRun.output.contains("the script ran") && scriptRun.status == 126, "\(scriptRun.output)")
        let unlisted = try shell("'\(other.path)' printed-by-an-unlisted-copy")
        #expect(unlisted.status == 0 && unlisted.output == "printed-by-an-unlisted-copy\n")

        let counts = executionGuard.counts
        #expect(counts.denied == 7)
        #expect(counts.cached >= 4, "the listed copy's hash was read once, not five times: \(counts)")
        let events = buffer.drain().events
        let detections = events.compactMap { if case .detection(let detection) = $0.payload { detection } else { nil } }
        #expect(detections.count == 7)
        #expect(detections.first?.path == echo.path && detections.first?.rule == "sha256:\(echo.sha256)")
        let results = events.compactMap { if case .processingResult(let result) = $0.payload { result } else { nil } }
        #expect(results.allSatisfy { $0.action == .executionDenied } && results.count == 7)

        // A rule removed: the same file runs at once (its hash is cached, the decision is not).
        prevention.replace(sha256: [], md5: [])
        executionGuard.forgetAllowed()
        #expect(try shell("'\(echo.path)' runs-now").output == "runs-now\n")
        // The unlisted copy ran, so the kernel no longer asks about it; listed now, it is asked again and denied.
        #expect(executionGuard.counts.ignored >= 1)
        #expect(try shell("'\(other.path)' still-runs").output == "still-runs\n")
        prevention.replace(sha256: [other.sha256], md5: [])
        executionGuard.forgetAllowed()
        let nowListed = try shell("'\(other.path)' must-not-print")
        #expect(!nowListed.output.contains("must-not-print") && nowListed.status == 126, "\(nowListed.output)")
        // Modified in place (same inode), a file allowed before is asked about again.
        prevention.replace(sha256: [], md5: [])
        executionGuard.forgetAllowed()
        #expect(try shell("'\(other.path)' allowed-again").status == 0)
        let fd = open(other.path, O_WRONLY | O_APPEND | O_CLOEXEC)
        #expect(write(fd, "x", 1) == 1)
        close(fd)
        let changed = try #require(digestsOf(other.path))
        prevention.replace(sha256: [changed.sha256], md5: [])  // no forgetAllowed: the modification alone drops the mark
        let afterChange = try shell("'\(other.path)' changed-file")
        #expect(!afterChange.output.contains("changed-file") && afterChange.status == 126, "\(afterChange.output)")
    }

    @Test("A file larger than the bound is not read: it runs, and is counted as such")
    func tooLarge() throws {
        defer { try? FileManager.default.removeItem(at: folder) }
        let big = try markedCopy(of: "/bin/true", in: folder, name: "big-true")
        // Sparse: nothing is written, the file is only longer than the bound.
        #expect(truncate(big.path, off_t(ExecutionGuard.largestHashedFile + 4096)) == 0)
        let digests = try #require(digestsOf(big.path))
        let prevention = PreventionList()
        prevention.replace(sha256: [digests.sha256], md5: [])
        let executionGuard = try ExecutionGuard(scope: .directory(folder.path), prevention: prevention, buffer: nil)
        defer { executionGuard.stop() }
        #expect(try shell("'\(big.path)'").status == 0, "documented: files over \(ExecutionGuard.largestHashedFile) bytes are not read")
        #expect(executionGuard.counts.allowedTooLarge == 1)
    }

    @Test("A file system mounted after the guard started is guarded too (a tmpfs the test mounts and unmounts)")
    func laterMount() throws {
        defer { try? FileManager.default.removeItem(at: folder) }
        let mountPoint = folder.appendingPathComponent("mounted").path
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let prevention = PreventionList()
        let source = try markedCopy(of: "/bin/echo", in: folder, name: "listed-echo")
        prevention.replace(sha256: [source.sha256], md5: [])
        let executionGuard = try ExecutionGuard(scope: .fileSystems, prevention: prevention, buffer: nil)
        defer { executionGuard.stop() }
        let before = executionGuard.source
        #expect(try shell("mount -t tmpfs -o size=16m tether-guard-test '\(mountPoint)'").status == 0)
        defer { _ = try? shell("umount '\(mountPoint)'") }
        let copy = mountPoint + "/listed-echo"
        try writeExecutable(copy, try Data(contentsOf: URL(fileURLWithPath: source.path)))
        var denied = false
        let deadline = Date().addingTimeInterval(5)
        while !denied, Date() < deadline {
            let run = try shell("'\(copy)' from-the-new-mount")
            denied = run.status == 126 && !run.output.contains("from-the-new-mount")
            if !denied { usleep(50_000) }
        }
        #expect(denied, "the new tmpfs is marked when it appears: \(before) → \(executionGuard.source)")
    }

    @Test("mountinfo paths are unescaped, and pseudo file systems are not marked")
    func mounts() {
        #expect(ExecutionGuard.unescapedMountPath(ArraySlice(Array(#"/mnt/a\040b\134c"#.utf8))) == #"/mnt/a b\c"#)
        let mounts = ExecutionGuard.programMounts().map(\.path)
        #expect(mounts.contains("/"))
        #expect(!mounts.contains("/proc") && !mounts.contains("/sys"))
    }
}
