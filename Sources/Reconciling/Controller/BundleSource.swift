import FoundationEssentials
import GitSource
import HTTPTransport
import IntegrationModel
import PolicySource

/// `tether run --bundle-url`: the objects of a notified commit from the bundles `tether publish`
/// wrote (a web server, CDN or object store), instead of from git. A bundle only supplies
/// objects: it moves no ref by itself, and the cycle vouches for the commit (signatures,
/// ancestry) before it points the mirror's ref at it. docs/architecture.md, "Push:
/// notifications and bundles".
final class BundleSource {
    /// The largest bundle read; a longer answer is cut off while it arrives.
    static let maximumBundleBytes = 64 << 20
    private var client: (caFile: String?, timeout: Int, client: HTTPClient)?

    /// What a bundle brought: its path under the base URL and its size.
    struct Delivery {
        let path: String
        let bytes: Int
    }

    /// Adds `revision`'s commit to `mirror` from the bundles under `baseURL`: the one from the
    /// commit the mirror has for the ref when it was published (a few kilobytes for a small
    /// change), else the full one. Throws, saying why, when neither gives the commit.
    func bring(_ revision: PublishedRevision, into mirror: GitRepository, baseURL: String, caFile: String?, timeout: TimeInterval) throws -> Delivery {
        let seconds = max(1, Int(timeout))
        if client?.caFile != caFile || client?.timeout != seconds {
            client = (caFile, seconds, try HTTPClient(configuration: TransportConfiguration(
                pinnedCertificatePEM: nil, caFile: caFile, connectionTimeout: seconds, requestTimeout: seconds,
                maximumBodyBytes: Self.maximumBundleBytes)))
        }
        let http = client!.client
        let base = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        var candidates = ["bundles/\(revision.commit).bundle"]
        if let have = try? mirror.resolve(revision.ref), have.id != revision.commit {
            candidates.insert("bundles/\(have.id)-\(revision.commit).bundle", at: 0)
        }
        var problems: [String] = []
        for path in candidates {
            do {
                let response = try http.send(url: "\(base)/\(path)")
                guard response.status == 200 else {
                    problems.append("\(path): HTTP \(response.status)")
                    continue
                }
                let bundle = try GitBundle(parsing: response.body)
                guard bundle.refs.contains(where: { $0.name == revision.ref && $0.commit == revision.commit }) else {
                    let named = bundle.refs.prefix(3).map { "\($0.name) \($0.commit.prefix(12))" }.joined(separator: ", ")
                    problems.append("\(path) names \(TerminalText.excerpt(named, limit: 200)), not \(revision.ref) \(revision.commit.prefix(12))")
                    continue
                }
                try mirror.add(bundle)
                return Delivery(path: path, bytes: response.body.count)
            } catch {
                client = nil
                problems.append("\(path): \(error)")
            }
        }
        throw SourceError(message: problems.joined(separator: "; "))
    }
}
