import Foundation
@testable import Sensors
import TetherTestSupport
import Testing

private let bpfLoads = getuid() == 0 && FileManager.default.fileExists(atPath: "/sys/kernel/btf/vmlinux")

/// The file sensor as `tether run` starts it as root: the BPF file program for writes, fanotify
/// for the rest. The writers are other processes (the sensor never reports its own).
@Suite("File sensor in the kernel: eBPF writes, fanotify names", .serialized)
struct FileSensorBPFTests {
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

    @Test("Writes under the watched folder come from eBPF, one per open, with the writer, between the file's creation and its rename or deletion; a file opened for writing and left unwritten is not reported",
          .enabled(if: bpfLoads, "loading BPF programs needs root (CI runs as root) and a kernel with BTF"))
    func writesInOrder() throws {
        let folder = try TemporaryDirectory("tether-bpf-files")
        _ = try folder.write("existing", "old\n")
        _ = try folder.write("unwritten", "left alone\n")
        _ = try folder.write("mapped", String(repeating: "m", count: 64))
        // A name of 200 bytes, three deep: longer than any name slot, as a path is whole.
        let long = String(repeating: "n", count: 200)
        let buffer = SensorBuffer()
        let sensor = FileSensor(buffer: buffer, paths: [folder.path], excluded: [])
        defer { sensor.stop() }
        #expect(sensor.status.source == FileSensor.bpfSource + "; fanotify on the file systems of \(folder.path) for creations, deletions and renames",
                "\(sensor.status)")
        #expect(sensor.status.note?.contains(FileSensor.bpfMisses) == true)

        let script = """
            printf new > created; printf more >> created
            printf more >> existing
            exec 3<> unwritten; exec 3>&-
            mkdir -p \(long)/\(long)/\(long); printf deep > \(long)/\(long)/\(long)/file
            mv created renamed; rm renamed
            python3 -c 'import mmap, os; fd = os.open("mapped", os.O_RDWR); m = mmap.mmap(fd, 64); m[0:1] = b"w"'
            """
        #expect(try runProgram("/bin/sh", ["-c", script], in: folder.path).status == 0)
        let path = { (name: String) in folder.url.appendingPathComponent(name).path }
        let deep = path("\(long)/\(long)/\(long)/file")
        let changes = gather(buffer) { changes in
            changes.contains { $0.path == path("renamed") && $0.action == .deleted } && changes.contains { $0.path == path("mapped") } && changes.contains { $0.path == deep }
        }
        let summary = changes.map { "\($0.action.rawValue) \($0.path.replacingOccurrences(of: long, with: "<200>"))" }
        // The created file: created, written (the truncating open, then the append's first write), renamed, deleted, in that order.
        let created = changes.filter { [path("created"), path("renamed")].contains($0.path) }.map { "\($0.action.rawValue) \($0.path)" }
        #expect(created == ["created \(path("created"))", "modified \(path("created"))", "modified \(path("created"))", "renamed \(path("renamed"))",
                            "deleted \(path("renamed"))"], "\(summary)")
        let existing = changes.filter { $0.path == path("existing") }
        #expect(existing.map(\.action) == [.modified], "one change for the append's first write: \(summary)")
        #expect(existing.first?.actor?.pid ?? 0 > 0 && existing.first?.actor?.executable?.hasPrefix("/") == true, "the writer is named: \(String(describing: existing.first))")
        #expect(!changes.contains { $0.path == path("unwritten") }, "opened for writing, not written: \(summary)")
        #expect(changes.contains { $0.path == deep && $0.action == .modified }, "a long path is whole: \(summary)")
        #expect(changes.filter { $0.path == path("mapped") }.map(\.action) == [.modified], "a shared writable mapping: \(summary)")
        #expect(sensor.kernelWriteCounts.overflows == 0)
    }

    @Test("Writes outside the watched folders, and in a folder left out of them, never reach user space: the kernel's filter drops them",
          .enabled(if: bpfLoads, "loading BPF programs needs root (CI runs as root) and a kernel with BTF"))
    func filteredInTheKernel() throws {
        let folder = try TemporaryDirectory("tether-bpf-scope")
        let outside = try TemporaryDirectory("tether-bpf-outside")
        try FileManager.default.createDirectory(atPath: folder.path + "/left-out/below", withIntermediateDirectories: true)
        for index in 0..<50 {
            _ = try outside.write("file-\(index)", "x")
            _ = try folder.write("left-out/below/file-\(index)", "x")
        }
        _ = try folder.write("watched", "x")
        let buffer = SensorBuffer()
        let sensor = FileSensor(buffer: buffer, paths: [folder.path], excluded: [folder.path + "/left-out"])
        defer { sensor.stop() }
        try #require(sensor.status.source.hasPrefix(FileSensor.bpfSource), "\(sensor.status)")
        // 20 rounds of rewriting 100 files that exist (no creation for fanotify to report), then one watched write.
        let script = """
            for round in $(seq 20); do
              for i in $(seq 0 49); do printf y > \(outside.path)/file-$i; printf y >> left-out/below/file-$i; done
            done
            printf y >> watched
            """
        #expect(try runProgram("/bin/sh", ["-c", script], in: folder.path).status == 0)
        let changes = gather(buffer) { $0.contains { $0.path == folder.path + "/watched" } }
        #expect(changes.map(\.path) == [folder.path + "/watched"], "\(changes.prefix(5))")
        #expect(sensor.kernelWriteCounts.reported == 1, "2,000 writes outside the scope, one record: \(sensor.kernelWriteCounts)")
    }

    @Test("Without the BPF program, fanotify reports a file when it is closed after writing, and the status names no eBPF",
          .enabled(if: getuid() == 0, "fanotify needs CAP_SYS_ADMIN (CI runs as root)"))
    func withoutBPF() throws {
        let folder = try TemporaryDirectory("tether-fanotify-files")
        let buffer = SensorBuffer()
        let sensor = FileSensor(buffer: buffer, paths: [folder.path], excluded: [], allowBPF: false)
        defer { sensor.stop() }
        #expect(sensor.status.source == "fanotify on the file systems of \(folder.path)", "\(sensor.status)")
        #expect(try runProgram("/bin/sh", ["-c", "printf x > written"], in: folder.path).status == 0)
        let path = folder.url.appendingPathComponent("written").path
        let changes = gather(buffer) { $0.contains { $0.path == path && $0.action == .modified } }
        #expect(changes.filter { $0.path == path }.map(\.action) == [.created, .modified], "\(changes)")
    }
}
