// tether-fetch: one mirror fetch for tether, which starts it, feeds it a MirrorFetchRequest
// (a FetchMessage) on standard input, reads the MirrorFetchResponse from standard output, and
// kills it when the fetch outlives --fetch-timeout. Not meant to be run by hand. Links no
// Foundation (docs/architecture.md, "What an endpoint pays").
#if canImport(Glibc)
import Glibc
#endif
internal import CProcessShims
import GitSource
import Primitives

// An orphan must not live on holding the mirror's lock: the kernel kills this process when
// tether goes, and an alarm ends it in any case a little after its time limit.
_ = tether_die_with_parent()

// A request is a few hundred bytes; over 1 MiB it is no request (MirrorFetch.serve says so).
let input = readAll(STDIN_FILENO, limit: 1 << 20) ?? []
if let request = MirrorFetchRequest(decoding: input) {
    if getppid() != request.parentProcess { exit(1) }  // tether ended before the kernel knew to tell us
    alarm(UInt32(max(1, min(request.timeout, 86_400))) + 10)
}
let response = MirrorFetch.serve(input)
writeAll(response.encoded ?? [], to: STDOUT_FILENO)
exit(response.error == nil ? 0 : 1)
