// A libFuzzer target for the JSON documents Tether reads back from files: agent snapshots
// (`plan --against`) and drift reports (`report merge`). `make fuzz`, docs/architecture.md
// "Fuzzing". FuzzSupport gives it a main for both builds.
import AgentInterface
import Foundation
import FuzzSupport
import Reports

/// Reads one input as a snapshot and as a report, and checks what any input must give: an
/// answer or an error naming the file, the same twice.
@_cdecl("LLVMFuzzerTestOneInput")
package func fuzzDocuments(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = Data(data.map { UnsafeBufferPointer(start: $0, count: size) } ?? UnsafeBufferPointer(start: nil, count: 0))
    do {
        let snapshot = try AgentSnapshot(json: bytes, source: "fuzz.json")
        let again = try AgentSnapshot(json: bytes, source: "fuzz.json")
        precondition(snapshot.host == again.host && snapshot.applied.values == again.applied.values, "two readings of one snapshot differ")
    } catch {
        precondition("\(error)".contains("fuzz.json"), "a snapshot error that does not name the file: \(error)")
    }
    do {
        let fleet = try FleetReport(files: [("fuzz.json", bytes)])
        precondition(fleet.devices.count == 1, "one file, one device")
    } catch {
        precondition("\(error)".contains("fuzz.json"), "a report error that does not name the file: \(error)")
    }
    return 0
}

@main
struct FuzzDocumentsMain {
    static func main() { fuzzMain(fuzzDocuments) }
}
