import Foundation
import HTTPTransport

/// `tether run --probe-url`: before any git connection, a conditional GET of a URL a plain web
/// server or cache answers for the repository (its static `info/refs`, which `git
/// update-server-info` keeps current), with the ETag of the refs last fetched. A 304 says
/// nothing moved, and the cycle reads the mirror as it is. Anything else (a new tag, an error,
/// no tag) sends the cycle to git as without a probe. docs/architecture.md, "Fetching".
final class HeadProbe {
    enum Answer {
        /// 304: the refs are as last fetched.
        case notModified
        /// A new (or first) answer, with its tag (nil when the server gave none).
        case changed(etag: String?)
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

    /// The tag of the refs the mirror was last fetched under.
    private var known: String?
    private var client: (url: String, caFile: String?, client: HTTPClient)?

    func ask(_ url: String, caFile: String?, timeout: TimeInterval) -> Answer {
        do {
            if client?.url != url || client?.caFile != caFile {
                let seconds = max(1, Int(timeout))
                client = (url, caFile, try HTTPClient(configuration: TransportConfiguration(pinnedCertificatePEM: nil, caFile: caFile,
                                                                                           connectionTimeout: seconds, requestTimeout: seconds)))
            }
            let http = client!.client
            let response = try http.send(url: url, headers: known.map { ["If-None-Match: \($0)"] } ?? [])
            switch response.status {
            case 304 where known != nil: return .notModified
            case 200..<300: return .changed(etag: http.responseHeader("ETag"))
            default: return .failed("HTTP \(response.status)")
            }
        } catch {
            client = nil
            return .failed("\(error)")
        }
    }

    /// The refs were fetched under this tag.
    func remember(_ etag: String?) {
        known = etag
    }
}
