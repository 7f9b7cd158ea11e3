import FoundationEssentials
import HTTPTransport

/// `tether run --probe-url`: before any git connection, a conditional GET of a URL a plain web
/// server or cache answers for the repository (its static `info/refs`, which `git
/// update-server-info` keeps current), with the ETag of the refs last fetched. A 304 says
/// nothing moved, and the cycle reads the mirror as it is. Anything else (a new tag, an error,
/// no tag) sends the cycle to git as without a probe, and so does the cycle after
/// `trustedInARow` 304s, so a stale cache or a forged 304 holds updates back for a bounded time.
/// docs/architecture.md, "Fetching".
final class HeadProbe {
    /// 304s believed in a row before git is asked anyway.
    static let trustedInARow = 10
    private var believed = 0
    enum Answer {
        /// 304: the refs are as last fetched.
        case notModified
        /// A new (or first) answer, with its tag (nil when the server gave none) and what it lists.
        case changed(etag: String?, refs: String)
        /// No usable answer: git decides.
        case failed(String)

        var label: String {
            switch self {
            case .notModified: return "not-modified"
            case .changed: return "changed"
            case .failed: return "failed"
            }
        }
    }

    /// The most of an info/refs listing read (about 50,000 refs); a longer answer is cut off
    /// while it arrives and git is asked instead.
    static let maximumBodyBytes = 4 << 20

    /// The tag of the refs the mirror was last fetched under.
    private var known: String?
    private var client: (url: String, caFile: String?, client: HTTPClient)?

    func ask(_ url: String, caFile: String?, timeout: TimeInterval) -> Answer {
        do {
            if client?.url != url || client?.caFile != caFile {
                let seconds = max(1, Int(timeout))
                client = (url, caFile, try HTTPClient(configuration: TransportConfiguration(pinnedCertificatePEM: nil, caFile: caFile,
                                                                                           connectionTimeout: seconds, requestTimeout: seconds,
                                                                                           maximumBodyBytes: Self.maximumBodyBytes)))
            }
            let http = client!.client
            let response = try http.send(url: url, headers: known.map { ["If-None-Match: \($0)"] } ?? [])
            switch response.status {
            case 304 where known != nil:
                believed += 1
                // Believed for a while; then git is asked whatever the probe says.
                if believed > Self.trustedInARow {
                    believed = 0
                    return .failed("\(Self.trustedInARow) answers in a row said nothing moved: asking git to be sure")
                }
                return .notModified
            case 200..<300:
                believed = 0
                return .changed(etag: http.responseHeader("ETag"), refs: response.text)
            default: return .failed("HTTP \(response.status)")
            }
        } catch {
            client = nil
            return .failed("\(error)")
        }
    }

    /// The mirror now holds `commit` for the pinned ref: the tag is kept only when the probe's
    /// answer listed that commit (a git server lagging behind the web server is not taken as current).
    func fetched(_ commit: String, under answer: Answer) {
        guard case .changed(let etag, let refs) = answer else { return }
        known = refs.contains(commit) ? etag : nil
    }
}
