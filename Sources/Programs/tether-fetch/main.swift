// tether-fetch: one mirror fetch for tether, which starts it, feeds it a MirrorFetchRequest
// (a FetchMessage) on standard input, reads the MirrorFetchResponse from standard output, and
// kills it when the fetch outlives --fetch-timeout. Not meant to be run by hand. Links no
// Foundation (docs/architecture.md, "What an endpoint pays").
#if canImport(Glibc)
import Glibc
#endif
internal import CProcessShims
import GitSource

// An orphan must not live on holding the mirror's lock: the kernel kills this process when
// tether goes, and an alarm ends it in any case a little after its time limit.
_ = tether_die_with_parent()

var input: [UInt8] = []
var buffer = [UInt8](repeating: 0, count: 4096)
while input.count <= 1 << 20 {
    let count = read(STDIN_FILENO, &buffer, buffer.count)
    if count < 0 && errno == EINTR { continue }
    if count <= 0 { break }
    input += buffer[0..<count]
}
if let request = MirrorFetchRequest(decoding: input) {
    if getppid() != request.parentProcess { exit(1) }  // tether ended before the kernel knew to tell us
    alarm(UInt32(max(1, min(request.timeout, 86_400))) + 10)
}
let response = MirrorFetch.serve(input)
let output = response.encoded ?? []
var written = 0
while written < output.count {
    let count = output[written...].withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
    if count < 0 && errno == EINTR { continue }
    if count <= 0 { break }
    written += count
}
exit(response.error == nil ? 0 : 1)
