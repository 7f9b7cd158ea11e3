// A libFuzzer target for the reader of the vendor's settings files (`make fuzz`,
// docs/architecture.md "Fuzzing"). FuzzSupport gives it a main for both builds.
import FuzzSupport
import KESLAgent

/// Reads one input as what `kesl-control --get-settings` printed and checks what any input
/// must give: an answer (a settings file or an error), the same one twice.
@_cdecl("LLVMFuzzerTestOneInput")
package func fuzzVendorINI(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let text = String(decoding: data.map { UnsafeBufferPointer(start: $0, count: size) } ?? UnsafeBufferPointer(start: nil, count: 0), as: UTF8.self)
    let first = try? VendorINI(parsing: text)
    let second = try? VendorINI(parsing: text)
    precondition(first == second, "the reader gave two different answers for one input")
    return 0
}

@main
struct FuzzVendorINIMain {
    static func main() { fuzzMain(fuzzVendorINI) }
}
