import Foundation

/// One fuzz input: libFuzzer's `LLVMFuzzerTestOneInput`.
package typealias FuzzTest = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

#if FUZZING
/// libFuzzer's entry for programs that keep their own `main` (SwiftPM names an executable's
/// entry point itself, so libFuzzer's `main` cannot be used).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ test: FuzzTest) -> CInt
#endif

/// A fuzz target's `main`: built with -DFUZZING (`make fuzz`), libFuzzer's driver with its
/// command line; built normally, a replay of the files given, so that a saved crash can be run
/// again under a debugger. docs/architecture.md, "Fuzzing".
package func fuzzMain(_ test: FuzzTest) -> Never {
#if FUZZING
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, test))
#else
    let name = (CommandLine.arguments.first ?? "fuzz").split(separator: "/").last.map(String.init) ?? "fuzz"
    let paths = CommandLine.arguments.dropFirst()
    guard !paths.isEmpty else {
        print("usage: \(name) FILE…   (replays inputs; `make fuzz` builds the fuzzer itself)")
        exit(2)
    }
    for path in paths {
        guard let data = FileManager.default.contents(atPath: path) else {
            print("\(path): cannot read")
            exit(1)
        }
        _ = data.withUnsafeBytes { test($0.bindMemory(to: UInt8.self).baseAddress, data.count) }
        print("\(path): ok")
    }
    exit(0)
#endif
}
