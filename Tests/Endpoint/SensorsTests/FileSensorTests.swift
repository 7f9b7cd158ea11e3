import Foundation
@testable import Sensors
import TetherTestSupport
import Testing

/// The file sensor as `tether run` starts it as root: fanotify marks on the file systems of the
/// watched folders. The writers are other processes (the sensor never reports its own).
@Suite("File sensor: fanotify on the watched folders' file systems", .serialized)
struct FileSensorTests {
    /// Waits until the sensor's thread has marked the folders for writes as they happen.
    private func waitUntilMarked(_ sensor: FileSensor) {
        let deadline = Date().addingTimeInterval(5)
        while sensor.writes?.markedAtStart != true, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
    }

    /// Waits until `condition` holds on what the buffer gathered, at most `seconds`.
    private func gather(_ buffer: SensorBuffer, seconds: Double = 5, until condition: ([FileChange]) -> Bool) -> [FileChange] {
        var changes: [FileChange] = []
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            for event in buffer.drain().events {
                if case .file(let change) = event.payload { changes.append(change) }
            }
            if condition(changes) { break }
            Thread.sleep(forTimeInterval: 0.1)
        } while Date() < deadline
        return changes
    }

    @Test("A file under the watched folder is seen created, written (each close after writing, a mapping's too), renamed and deleted, in that order, with the writer; a long path is whole",
          .enabled(if: getuid() == 0, "fanotify needs CAP_SYS_ADMIN (CI runs as root)"))
    func changesInOrder() throws {
        let folder = try TemporaryDirectory("tether-files")
        _ = try folder.write("appended", "old\n")
        _ = try folder.write("mapped", String(repeating: "m", count: 64))
        // A name of 200 bytes, two deep.
        let long = String(repeating: "n", count: 200)
        let buffer = SensorBuffer()
        let sensor = FileSensor(buffer: buffer, paths: [folder.path], excluded: [])
        defer { sensor.stop() }
        waitUntilMarked(sensor)
        #expect(sensor.status.source == "fanotify on the file systems of \(folder.path) (writes as they happen in up to 16384 of their folders)", "\(sensor.status)")

        let script = """
            printf new > created; sleep 0.1; printf more >> created
            exec 3>> appended; printf one >&3; printf two >&3; exec 3>&-
            python3 -c 'import mmap, os; fd = os.open("mapped", os.O_RDWR); m = mmap.mmap(fd, 64); m[0:1] = b"w"; m.close(); os.close(fd)'
            mkdir -p \(long)/\(long); printf deep > \(long)/\(long)/file
            mv created renamed; rm renamed
            """
        #expect(try runProgram("/bin/sh", ["-c", script], in: folder.path).status == 0)
        let path = { (name: String) in folder.url.appendingPathComponent(name).path }
        let deep = path("\(long)/\(long)/file")
        let changes = gather(buffer) { changes in
            changes.contains { $0.path == path("renamed") && $0.action == .deleted } && changes.contains { $0.path == deep && $0.action == .modified }
        }
        let summary = changes.map { "\($0.action.rawValue) \($0.path.replacingOccurrences(of: long, with: "<200>"))" }
        // The created file: created, written twice (two opens a tenth of a second apart), renamed, deleted, in that order.
        let created = changes.filter { [path("created"), path("renamed")].contains($0.path) }.map { "\($0.action.rawValue) \($0.path)" }
        #expect(created == ["created \(path("created"))", "modified \(path("created"))", "modified \(path("created"))", "renamed \(path("renamed"))",
                            "deleted \(path("renamed"))"], "\(summary)")
        let appended = changes.filter { $0.path == path("appended") }
        #expect(appended.map(\.action) == [.modified], "two writes and a close are one change: \(summary)")
        #expect(appended.first?.actor?.pid ?? 0 > 0 && appended.first?.actor?.executable?.hasPrefix("/") == true, "the writer is named: \(String(describing: appended.first))")
        #expect(changes.filter { $0.path == path("mapped") }.map(\.action) == [.modified], "written through a mapping only: \(summary)")
        #expect(changes.filter { $0.path == deep }.map(\.action) == [.created, .modified], "\(summary)")
        #expect(sensor.kernelCounts.overflows == 0)
    }

    @Test("Changes outside the watched folders on the same file system, and in a folder left out of them, are not reported",
          .enabled(if: getuid() == 0, "fanotify needs CAP_SYS_ADMIN (CI runs as root)"))
    func filteredInTheKernel() throws {
        let folder = try TemporaryDirectory("tether-files-scope")
        let outside = try TemporaryDirectory("tether-files-outside")
        try FileManager.default.createDirectory(atPath: folder.path + "/left-out/below", withIntermediateDirectories: true)
        for index in 0..<50 {
            _ = try outside.write("file-\(index)", "x")
            _ = try folder.write("left-out/below/file-\(index)", "x")
        }
        _ = try folder.write("watched", "x")
        let buffer = SensorBuffer()
        let sensor = FileSensor(buffer: buffer, paths: [folder.path], excluded: [folder.path + "/left-out"])
        defer { sensor.stop() }
        waitUntilMarked(sensor)
        // The folder left out, and the one under it, are not marked.
        #expect(sensor.status.source == "fanotify on the file systems of \(folder.path) (writes as they happen in up to 16384 of their folders)", "\(sensor.status)")
        // 20 rounds of rewriting 100 files elsewhere, creating and deleting some, then one watched write.
        let script = """
            for round in $(seq 20); do
              for i in $(seq 0 49); do printf y > \(outside.path)/file-$i; printf y >> left-out/below/file-$i; done
              printf y > left-out/new-$round; rm left-out/new-$round; printf y > \(outside.path)/new-$round; rm \(outside.path)/new-$round
            done
            printf y >> watched
            """
        #expect(try runProgram("/bin/sh", ["-c", script], in: folder.path).status == 0)
        let changes = gather(buffer) { $0.contains { $0.path == folder.path + "/watched" } }
        #expect(changes.map(\.path) == [folder.path + "/watched"], "\(changes.prefix(5))")
    }

    @Test("A write is seen as it happens, before its file is closed, and its close seconds later once more; so are truncate(2) and an O_RDONLY | O_TRUNC open, and writes in a folder made meanwhile",
          .enabled(if: getuid() == 0, "fanotify needs CAP_SYS_ADMIN (CI runs as root)"))
    func writesAsTheyHappen() throws {
        let folder = try TemporaryDirectory("tether-files-writes")
        _ = try folder.write("held", "old\n")
        _ = try folder.write("truncated", "to be emptied\n")
        _ = try folder.write("emptied", "to be emptied\n")
        _ = try folder.write("rewritten", "to be emptied, then written\n")
        let buffer = SensorBuffer()
        let sensor = FileSensor(buffer: buffer, paths: [folder.path], excluded: [])
        defer { sensor.stop() }
        waitUntilMarked(sensor)
        // Writers that keep their file open for 4 s after two writes: one in the folder, one in a folder made while the sensor runs.
        let holder = "import os, sys, time; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT); os.write(fd, b'one'); os.write(fd, b'two'); time.sleep(4)"
        let script = """
            cd '\(folder.path)'
            python3 -c "\(holder)" held &
            python3 -c 'import os; os.truncate("truncated", 0)'
            python3 -c 'import os, time; os.truncate("rewritten", 0); time.sleep(1.2); open("rewritten", "a").write("new")' &
            python3 -c 'import os; os.close(os.open("emptied", os.O_RDONLY | os.O_TRUNC))'
            mkdir made; sleep 0.5
            python3 -c "\(holder)" made/later &
            wait
            """
        let writers = try ChildProcess("/bin/sh", ["-c", script])
        defer { writers.kill(); _ = writers.wait() }
        let path = { (name: String) in folder.url.appendingPathComponent(name).path }
        let started = Date()
        let changes = gather(buffer, seconds: 3) { changes in
            changes.contains { $0.path == path("held") } && changes.contains { $0.path == path("made/later") && $0.action == .modified }
                && changes.filter { $0.path == path("rewritten") }.count == 2
        }
        let summary = changes.map { "\($0.action.rawValue) \($0.path)" }
        #expect(Date().timeIntervalSince(started) < 3.5, "seen while the writers still hold their files open: \(summary)")
        #expect(changes.filter { $0.path == path("held") }.map(\.action) == [.modified], "two writes, one change: \(summary)")
        #expect(changes.filter { $0.path == path("truncated") }.map(\.action) == [.modified], "truncate(2) by path, which closes nothing: \(summary)")
        #expect(changes.filter { $0.path == path("emptied") }.map(\.action) == [.modified], "O_RDONLY | O_TRUNC: \(summary)")
        // A truncation has no close: a write by the same process a second later is a change of its own.
        #expect(changes.filter { $0.path == path("rewritten") }.map(\.action) == [.modified, .modified], "\(summary)")
        #expect(changes.filter { $0.path == path("made/later") }.map(\.action) == [.created, .modified], "\(summary)")
        // The holders close their files 4 s after their writes: that close is reported, once each.
        #expect(writers.wait() == 0)
        let after = gather(buffer, seconds: 1) { _ in false }
        #expect(after.filter { $0.action == .modified }.map(\.path).sorted() == [path("held"), path("made/later")], "\(after)")
    }
}
