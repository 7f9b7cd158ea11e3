// A libFuzzer target for the policy decoder (`make fuzz`, docs/architecture.md "Fuzzing").
// FuzzSupport gives it a main for both builds.
import FuzzSupport
import Policy

/// Decodes one input as a policy file and checks what any input must give: the same result
/// twice, and every problem located inside the file. Then formats it (`tether fmt`): a file is
/// formatted or refused for what it is, never for a layout that would change it, and the
/// layout of the layout is itself.
@_cdecl("LLVMFuzzerTestOneInput")
package func fuzzPolicy(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let first = PolicyDecoder.decode(file: "fuzz.yaml", contents: bytes)
    let second = PolicyDecoder.decode(file: "fuzz.yaml", contents: bytes)
    precondition(first.problems == second.problems && first.policies.count == second.policies.count,
                 "the decoder gave two different answers for one input:\n\(first.problems)\n\(second.problems)")
    let lines = bytes.reduce(1) { $0 + ($1 == 10 ? 1 : 0) }
    for problem in first.problems {
        precondition(problem.location.file == "fuzz.yaml", "a problem names another file: \(problem)")
        precondition(problem.location.line >= 1 && problem.location.line <= lines + 1, "a problem outside the file: \(problem)")
    }
    do {
        let formatted = try PolicyFormatter.format(file: "fuzz.yaml", contents: bytes)
        let again = try PolicyFormatter.format(file: "fuzz.yaml", contents: Array(formatted.utf8))
        precondition(again == formatted, "fmt is not a fixed point:\n\(formatted)\n---\n\(again)")
    } catch {
        precondition(!error.message.hasPrefix("fmt would change"), "fmt refused its own layout: \(error)")
    }
    return 0
}

@main
struct FuzzPolicyMain {
    static func main() { fuzzMain(fuzzPolicy) }
}
