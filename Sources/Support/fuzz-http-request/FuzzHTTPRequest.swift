// A libFuzzer target for the request reader of the health and metrics endpoint (`make fuzz`,
// docs/architecture.md "Fuzzing"). Built with -DFUZZING and -sanitize=fuzzer,address, `main` hands
// over to libFuzzer's driver; built normally, it replays the files it is given.
import FuzzSupport
import HTTPServer

/// Reads one input as the bytes of a connection, under the probe limits and the API limits,
/// in reads whose size the first byte chooses, and checks every request stays within them.
@_cdecl("LLVMFuzzerTestOneInput")
package func fuzzHTTPRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let readSize = Int(bytes.first ?? 0) + 1
    let small = ServerLimits(methods: nil, maximumBody: 64, maximumHead: 256, requestDeadline: 5, idleTimeout: 5, maximumConnections: 1)
    for limits in [ServerLimits.probes, small] {
        let readings = HTTPServer.readRequests(from: bytes, limits: limits, readSize: readSize)
        for reading in readings {
            switch reading {
            case .request(let request, _):
                precondition(request.body.count <= limits.maximumBody, "a body over the limit was read")
                precondition(limits.methods.map { $0.contains(request.method) } ?? true, "a method outside the limits was served")
                precondition(request.path.hasPrefix("/") || request.path == "*", "a request target that is not a path: \(request.path)")
            case .refused(let status, _, _):
                precondition([400, 405, 408, 413, 431].contains(status), "an unexpected refusal \(status)")
            case .closed:
                break
            }
        }
    }
    return 0
}

@main
struct FuzzHTTPRequestMain {
    static func main() { fuzzMain(fuzzHTTPRequest) }
}
