internal import CCurl
internal import CCurlShims
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// A PKCS#12 client identity for mutual TLS, passed to libcurl in memory (never written to a file).
package struct ClientIdentity: Sendable {
    package let pkcs12: [UInt8]
    package let password: String

    package init(pkcs12: [UInt8], password: String) {
        self.pkcs12 = pkcs12
        self.password = password
    }
}

/// An HTTP CONNECT proxy, with credentials when it needs them.
package struct ProxySettings: Sendable {
    /// `host:port` or `http://host:port`.
    package let address: String
    package let user: String?
    package let password: String?

    package init(address: String, user: String? = nil, password: String? = nil) {
        self.address = address
        self.user = user
        self.password = password
    }
}

/// How one connector talks to its server.
package struct TransportConfiguration: Sendable {
    /// The pinned server certificate (PEM): the only trust anchor. A server presenting a
    /// certificate that neither equals nor chains to it is refused. Nil: the system's CA bundle,
    /// or `caFile` (a cheap probe of a git host, not the platform).
    package var pinnedCertificatePEM: String?
    /// A PEM CA bundle to trust when nothing is pinned.
    package var caFile: String?
    package var clientIdentity: ClientIdentity?
    package var proxy: ProxySettings?
    /// Seconds to establish the connection (TCP and TLS).
    package var connectionTimeout: Int
    /// Seconds for the whole request.
    package var requestTimeout: Int
    /// The largest response body taken in; a longer one is cut off while it arrives
    /// (`responseTooLarge`), never held whole. The platform's answers are small JSON documents.
    package var maximumBodyBytes: Int

    /// Names answered without DNS, as curl's `CURLOPT_RESOLVE` takes them
    /// (`HOST:PORT:ADDRESS[,ADDRESS…]`, IPv6 in brackets): while the endpoint is isolated, DNS
    /// is blocked and the platform's names resolve to what was allowed.
    package var fixedAddresses: [String] = []

    /// The default bound on a response body: 16 MiB.
    package static let defaultMaximumBodyBytes = 16 << 20

    package init(pinnedCertificatePEM: String?, caFile: String? = nil, clientIdentity: ClientIdentity? = nil, proxy: ProxySettings? = nil,
                connectionTimeout: Int = 10, requestTimeout: Int = 10, maximumBodyBytes: Int = TransportConfiguration.defaultMaximumBodyBytes) {
        self.maximumBodyBytes = maximumBodyBytes
        self.pinnedCertificatePEM = pinnedCertificatePEM
        self.caFile = caFile
        self.clientIdentity = clientIdentity
        self.proxy = proxy
        self.connectionTimeout = connectionTimeout
        self.requestTimeout = requestTimeout
    }
}

/// Where an upload's bytes come from, and how far it got.
private final class UploadSource {
    let fd: Int32
    let size: Int
    var offset = 0

    init(fd: Int32, size: Int) {
        self.fd = fd
        self.size = size
    }
}

/// An HTTP response; 4xx and 5xx are responses, not errors.
package struct HTTPResponse: Sendable {
    package let status: Int
    package let body: [UInt8]
    package var text: String { String(decoding: body, as: UTF8.self) }
}

/// Why a request failed, each failure named distinctly for status and reports.
package enum TransportError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The server's certificate does not equal or chain to the pinned one (or its name does not match).
    case serverCertificateRejected(String)
    /// The server asked for a client certificate and none is configured.
    case clientCertificateMissing(String)
    /// The server refused the client certificate, or the container could not be used.
    case clientCertificateRejected(String)
    case unreachable(String)
    case timedOut(String)
    /// The proxy could not be reached or refused the CONNECT (with its HTTP code when it sent one).
    case proxyRefused(String)
    /// Something other than TLS answered on the port (plain HTTP, say).
    case notTLS(String)
    /// The server and Tether share no TLS version (Tether speaks TLS 1.2 and 1.3).
    case tlsVersionMismatch(String)
    /// The connection was closed or reset during the TLS handshake or mid-transfer.
    case connectionReset(String)
    /// The answer's body passed `maximumBodyBytes`; the transfer was stopped there.
    case responseTooLarge(String)
    case other(String)

    /// The failure's name in status and reports (`client-certificate-missing`).
    package var kind: String {
        switch self {
        case .serverCertificateRejected: return "server-certificate-rejected"
        case .clientCertificateMissing: return "client-certificate-missing"
        case .clientCertificateRejected: return "client-certificate-rejected"
        case .unreachable: return "unreachable"
        case .timedOut: return "timed-out"
        case .proxyRefused: return "proxy-refused"
        case .notTLS: return "not-tls"
        case .tlsVersionMismatch: return "tls-version-mismatch"
        case .connectionReset: return "connection-reset"
        case .responseTooLarge: return "response-too-large"
        case .other: return "other"
        }
    }

    package var description: String {
        switch self {
        case .serverCertificateRejected(let detail): return "server certificate rejected: \(detail)"
        case .clientCertificateMissing(let detail): return "client certificate missing: \(detail)"
        case .clientCertificateRejected(let detail): return "client certificate rejected: \(detail)"
        case .unreachable(let detail): return "server unreachable: \(detail)"
        case .timedOut(let detail): return "timed out: \(detail)"
        case .proxyRefused(let detail): return "proxy refused: \(detail)"
        case .notTLS(let detail): return "not TLS: the server does not speak TLS on this port (plain HTTP?): \(detail)"
        case .tlsVersionMismatch(let detail):
            return "no common TLS version: the server offers none of TLS 1.2 and 1.3, which Tether requires: \(detail)"
        case .connectionReset(let detail): return "connection reset: \(detail)"
        case .responseTooLarge(let detail): return "response too large: \(detail)"
        case .other(let detail): return detail
        }
    }
}

/// A blocking HTTPS client over libcurl and OpenSSL with a pinned server certificate, optional
/// mutual TLS and an optional proxy. Owns one curl handle (reused across requests, so
/// connections are kept alive) and frees it in `deinit`. Not thread-safe, and `send` blocks:
/// call it from a dedicated thread, never from Swift's cooperative pool.
package final class HTTPClient {
    private let handle: UnsafeMutableRawPointer
    private let configuration: TransportConfiguration
    private let errorBuffer: UnsafeMutablePointer<CChar>
    /// `fixedAddresses` as curl holds them, until the handle goes.
    private var fixedAddressList: UnsafeMutablePointer<curl_slist>?

    package init(configuration: TransportConfiguration) throws {
        // libcurl is loaded (and initialised) by the first client, not at start.
        if let reason = tether_curl_load() { throw TransportError.other(String(cString: reason)) }
        guard let handle = tether_curl_easy_init() else { throw TransportError.other("libcurl could not create a handle") }
        self.handle = handle
        self.configuration = configuration
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        try configure()
    }

    deinit {
        tether_curl_easy_cleanup(handle)
        tether_curl_slist_free_all(fixedAddressList)
        errorBuffer.deallocate()
    }

    private func configure() throws {
        try check(tether_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer))
        try check(tether_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
        try check(tether_curl_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, 1))
        try check(tether_curl_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, 2))
        try check(tether_curl_setopt_long(handle, CURLOPT_SSLVERSION, CURL_SSLVERSION_TLSv1_2))
        // HTTP/1.1, as the platform speaks it: one framing, and failures classify() knows.
        try check(tether_curl_setopt_long(handle, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1))
        if let pinned = configuration.pinnedCertificatePEM {
            // The pinned certificate is the only anchor: no system bundle, no CA folder.
            try check(tether_curl_setopt_string(handle, CURLOPT_CAINFO, nil))
            try check(tether_curl_setopt_string(handle, CURLOPT_CAPATH, nil))
            let pem = Array(pinned.utf8)
            try check(pem.withUnsafeBytes { tether_curl_setopt_blob(handle, CURLOPT_CAINFO_BLOB, $0.baseAddress, $0.count) })
        } else if let caFile = configuration.caFile {
            try check(tether_curl_setopt_string(handle, CURLOPT_CAINFO, caFile))
        }
        if let identity = configuration.clientIdentity {
            try check(identity.pkcs12.withUnsafeBytes { tether_curl_setopt_blob(handle, CURLOPT_SSLCERT_BLOB, $0.baseAddress, $0.count) })
            try check(tether_curl_setopt_string(handle, CURLOPT_SSLCERTTYPE, "P12"))
            try check(tether_curl_setopt_string(handle, CURLOPT_KEYPASSWD, identity.password))
        }
        if let proxy = configuration.proxy {
            try check(tether_curl_setopt_string(handle, CURLOPT_PROXY, proxy.address))
            try check(tether_curl_setopt_long(handle, CURLOPT_HTTPPROXYTUNNEL, 1))
            if let user = proxy.user { try check(tether_curl_setopt_string(handle, CURLOPT_PROXYUSERNAME, user)) }
            if let password = proxy.password { try check(tether_curl_setopt_string(handle, CURLOPT_PROXYPASSWORD, password)) }
        } else {
            // Ignore http_proxy and friends from the environment: the proxy is a setting.
            try check(tether_curl_setopt_string(handle, CURLOPT_NOPROXY, "*"))
        }
        if !configuration.fixedAddresses.isEmpty {
            for entry in configuration.fixedAddresses { fixedAddressList = tether_curl_slist_append(fixedAddressList, entry) }
            try check(tether_curl_setopt_slist(handle, CURLOPT_RESOLVE, fixedAddressList))
        }
        try check(tether_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, configuration.connectionTimeout * 1000))
        try check(tether_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, configuration.requestTimeout * 1000))
        try check(tether_curl_setopt_write_function(handle, { data, size, count, context in
            guard let data, let context else { return 0 }
            let sink = Unmanaged<ResponseSink>.fromOpaque(context).takeUnretainedValue()
            // Past the bound the transfer stops here (libcurl fails it with a write error).
            guard sink.body.count + size * count <= sink.limit else {
                sink.exceeded = true
                return 0
            }
            sink.body.append(contentsOf: UnsafeRawBufferPointer(start: data, count: size * count))
            return size * count
        }))
    }

    /// A header of the last response (`ETag`), or nil.
    package func responseHeader(_ name: String) -> String? {
        var header: UnsafeMutablePointer<curl_header>?
        guard tether_curl_easy_header(handle, name, 0, UInt32(CURLH_HEADER), -1, &header) == CURLHE_OK, let value = header?.pointee.value else { return nil }
        return String(cString: value)
    }

    /// Sends one request and waits for the whole response.
    package func send(method: String = "GET", url: String, headers: [String] = [], body: [UInt8]? = nil) throws -> HTTPResponse {
        let sink = ResponseSink(limit: configuration.maximumBodyBytes)
        let context = Unmanaged.passRetained(sink)
        defer { context.release() }
        errorBuffer[0] = 0
        try check(tether_curl_setopt_string(handle, CURLOPT_URL, url))
        try check(tether_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context.toOpaque()))
        try check(tether_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, method == "GET" ? nil : method))
        if let body {
            try check(tether_curl_setopt_long(handle, CURLOPT_POSTFIELDSIZE, body.count))
            try check(body.withUnsafeBytes { tether_curl_setopt_pointer(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: $0.baseAddress)) })
        } else {
            try check(tether_curl_setopt_long(handle, CURLOPT_HTTPGET, 1))
        }
        var list: UnsafeMutablePointer<curl_slist>?
        for header in headers { list = tether_curl_slist_append(list, header) }
        defer { tether_curl_slist_free_all(list) }
        try check(tether_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, list))

        return try response(to: url, sink: sink, code: tether_curl_easy_perform(handle))
    }

    /// The answer a transfer got, or why it failed.
    private func response(to url: String, sink: ResponseSink, code: CURLcode) throws -> HTTPResponse {
        if sink.exceeded {
            throw TransportError.responseTooLarge("the answer from \(url) is longer than \(configuration.maximumBodyBytes) bytes; it was cut off there")
        }
        guard code == CURLE_OK else { throw classify(code, received: sink.body.count, tls: url.lowercased().hasPrefix("https:")) }
        var status = 0
        tether_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return HTTPResponse(status: status, body: sink.body)
    }

    /// POSTs `size` bytes of the open file `fd` from its start, read as they are sent (never
    /// held whole); a file that ends early fails the transfer (one that grows is cut at `size`:
    /// the caller compares the file before and after).
    package func upload(url: String, headers: [String], fileDescriptor fd: Int32, size: Int) throws -> HTTPResponse {
        let sink = ResponseSink(limit: configuration.maximumBodyBytes)
        let context = Unmanaged.passRetained(sink)
        defer { context.release() }
        let source = UploadSource(fd: fd, size: size)
        let sourceContext = Unmanaged.passRetained(source)
        defer { sourceContext.release() }
        errorBuffer[0] = 0
        try check(tether_curl_setopt_string(handle, CURLOPT_URL, url))
        try check(tether_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context.toOpaque()))
        try check(tether_curl_setopt_long(handle, CURLOPT_UPLOAD, 1))
        // A large file takes as long as it takes: no bound on the whole transfer, but it must
        // keep moving (1 KiB/s over 30 s), as a stalled peer would not.
        try check(tether_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, 0))
        try check(tether_curl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, 1024))
        try check(tether_curl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, 30))
        try check(tether_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, "POST"))
        try check(tether_curl_setopt_off_t(handle, CURLOPT_INFILESIZE_LARGE, curl_off_t(size)))
        try check(tether_curl_setopt_pointer(handle, CURLOPT_READDATA, sourceContext.toOpaque()))
        try check(tether_curl_setopt_read_function(handle, { buffer, size, count, context in
            guard let buffer, let context else { return Int(CURL_READFUNC_ABORT) }
            let source = Unmanaged<UploadSource>.fromOpaque(context).takeUnretainedValue()
            let wanted = min(size * count, source.size - source.offset)
            guard wanted > 0 else { return 0 }
            var read = 0
            repeat {
                read = pread(source.fd, buffer, wanted, off_t(source.offset))
            } while read < 0 && errno == EINTR
            // Shorter than promised: the file shrank while it was sent.
            guard read > 0 else { return Int(CURL_READFUNC_ABORT) }
            source.offset += read
            return read
        }))
        var list: UnsafeMutablePointer<curl_slist>?
        // No "Expect: 100-continue" round trip before the body.
        for header in headers + ["Content-Type: application/octet-stream", "Expect:"] { list = tether_curl_slist_append(list, header) }
        defer { tether_curl_slist_free_all(list) }
        try check(tether_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, list))
        let code = tether_curl_easy_perform(handle)
        // The handle sends bodies from memory again afterwards, within the request timeout,
        // and holds no pointer to this upload's source.
        _ = tether_curl_setopt_long(handle, CURLOPT_UPLOAD, 0)
        _ = tether_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, configuration.requestTimeout * 1000)
        _ = tether_curl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, 0)
        _ = tether_curl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, 0)
        _ = tether_curl_setopt_pointer(handle, CURLOPT_READDATA, nil)
        _ = tether_curl_setopt_read_function(handle, nil)
        return try response(to: url, sink: sink, code: code)
    }

    /// Names a libcurl failure by what happened; reads the error buffer and the transfer's
    /// figures right after the call that failed.
    private func classify(_ code: CURLcode, received: Int, tls: Bool) -> TransportError {
        let detail = errorBuffer[0] != 0 ? String(cString: errorBuffer) : String(cString: tether_curl_easy_strerror(code))
        var connectCode = 0
        tether_curl_getinfo_long(handle, CURLINFO_HTTP_CONNECTCODE, &connectCode)
        var headerBytes = 0
        tether_curl_getinfo_long(handle, CURLINFO_HEADER_SIZE, &headerBytes)
        var newConnections = 0
        tether_curl_getinfo_long(handle, CURLINFO_NUM_CONNECTS, &newConnections)
        var handshakeDone: curl_off_t = 0
        tether_curl_getinfo_off_t(handle, CURLINFO_APPCONNECT_TIME_T, &handshakeDone)
        var osErrno = 0
        tether_curl_getinfo_long(handle, CURLINFO_OS_ERRNO, &osErrno)
        let lowered = detail.lowercased()
        if configuration.proxy != nil {
            if connectCode >= 300 { return .proxyRefused("the proxy answered CONNECT with HTTP \(connectCode)") }
            if code == CURLE_COULDNT_RESOLVE_PROXY { return .proxyRefused(detail) }
            if code == CURLE_COULDNT_CONNECT && connectCode == 0 && !lowered.contains("after connect") { return .proxyRefused(detail) }
        }
        let clientAlert = lowered.contains("certificate required") || lowered.contains("alert bad certificate")
            || lowered.contains("alert unknown ca") || lowered.contains("handshake failure")
        let notTLS = lowered.contains("wrong version number") || lowered.contains("packet length too long") || lowered.contains("http request")
        let noCommonVersion = lowered.contains("protocol version") || lowered.contains("unsupported protocol")
            || lowered.contains("no protocols available") || lowered.contains("version too low")
        let cutOff = [CURLE_SSL_CONNECT_ERROR, CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE].contains(code)
        switch code {
        case CURLE_PEER_FAILED_VERIFICATION:
            return .serverCertificateRejected(detail)
        case CURLE_SSL_CERTPROBLEM:
            return .clientCertificateRejected("the client container cannot be used: \(detail)")
        case CURLE_COULDNT_CONNECT where lowered.contains("reset by peer") || osErrno == Int(ECONNRESET):
            // The server accepted the connection and reset it: it was reached (libcurl's message
            // is then "Couldn't connect to server"; the system's error says what happened).
            return .connectionReset("the server reset the connection as soon as it was made: \(detail)")
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST:
            return .unreachable(detail)
        case CURLE_OPERATION_TIMEDOUT:
            return .timedOut(detail)
        case _ where cutOff && clientAlert:
            return configuration.clientIdentity == nil
                ? .clientCertificateMissing("the server requires one: \(detail)") : .clientCertificateRejected("the server did not accept the client certificate: \(detail)")
        case _ where cutOff && notTLS:
            return .notTLS(detail)
        case _ where cutOff && noCommonVersion:
            return .tlsVersionMismatch(detail)
        case _ where cutOff && configuration.proxy == nil && newConnections > 0 && handshakeDone > 0 && headerBytes == 0 && received == 0:
            // TLS 1.3 finishes the client's side of the handshake before the server has checked
            // the client's certificate; a server that refuses it often closes at once, and its
            // alert is lost with the reset. Nothing came back on a fresh connection: say what
            // the server most likely wanted (docs/architecture.md, "Connection failures").
            if configuration.clientIdentity == nil {
                return .clientCertificateMissing("the server closed the connection right after the TLS handshake: it may require one (mutualAuthentication is off) (\(detail))")
            }
            return .clientCertificateRejected("the server closed the connection right after the TLS handshake: it most likely did not accept the client certificate (issued by a CA it does not trust?) (\(detail))")
        case _ where cutOff:
            // Plain HTTP has no handshake: its APPCONNECT time is always 0.
            let when = tls && handshakeDone == 0 && newConnections > 0 ? "during the TLS handshake" : "mid-transfer"
            return .connectionReset("the server closed or reset the connection \(when): \(detail)")
        default:
            return .other("libcurl error \(code.rawValue): \(detail)")
        }
    }

    private func check(_ code: CURLcode) throws {
        guard code == CURLE_OK else {
            throw TransportError.other("libcurl refused an option: \(String(cString: tether_curl_easy_strerror(code)))")
        }
    }
}

private final class ResponseSink {
    var body: [UInt8] = []
    let limit: Int
    var exceeded = false

    init(limit: Int) { self.limit = limit }
}

/// The libcurl this process runs with (`7.88.1`) once a transfer has loaded it; before that,
/// the one it was built with (the package depends on that release or a later one), so that
/// asking for the version loads nothing.
package var libcurlVersion: String {
    guard tether_curl_loaded() != 0 else { return LIBCURL_VERSION }
    // "libcurl/7.88.1 OpenSSL/3.0.19 …": the first word, without its name.
    return String(String(cString: tether_curl_version()).split(separator: " ").first?.split(separator: "/").last ?? "?")
}
