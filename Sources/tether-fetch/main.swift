// tether-fetch: one mirror fetch for tether, which starts it, feeds it a MirrorFetchRequest
// (JSON) on standard input, reads the MirrorFetchResponse from standard output, and kills it
// when the fetch outlives --fetch-timeout. Not meant to be run by hand.
#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
import GitSource

var input: [UInt8] = []
var buffer = [UInt8](repeating: 0, count: 4096)
while input.count <= 1 << 20 {
    let count = read(STDIN_FILENO, &buffer, buffer.count)
    if count < 0 && errno == EINTR { continue }
    if count <= 0 { break }
    input += buffer[0..<count]
}
let response = MirrorFetch.serve(input)
let output = (try? JSONEncoder().encode(response)).map(Array.init) ?? []
var written = 0
while written < output.count {
    let count = output[written...].withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
    if count < 0 && errno == EINTR { continue }
    if count <= 0 { break }
    written += count
}
exit(response.error == nil ? 0 : 1)
