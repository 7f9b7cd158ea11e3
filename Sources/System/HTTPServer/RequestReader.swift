import FoundationEssentials
import Primitives

/// A request (and whether the connection stays open after it), a refusal to answer before
/// closing, or the end of the connection.
package enum RequestReading: Sendable {
    case request(ServerRequest, keepAlive: Bool)
    case refused(status: Int, message: String, isHead: Bool)
    case closed
}

/// Reads HTTP/1.1 requests from one connection within `ServerLimits`: the request line,
/// headers, and a Content-Length or chunked body. Knows nothing of sockets; the server gives it
/// a way to bound the next read.
struct RequestReader {
    let limits: ServerLimits
    let connection: ServerConnection
    /// Bounds how long the next read may wait, in seconds.
    let setReadTimeout: (Double) -> Void
    /// What has arrived and not yet been read as a request.
    private var buffer: [UInt8] = []

    init(limits: ServerLimits, connection: ServerConnection, setReadTimeout: @escaping (Double) -> Void) {
        self.limits = limits
        self.connection = connection
        self.setReadTimeout = setReadTimeout
    }

    /// The longest chunk-size or trailer line of a chunked body.
    static let maximumChunkLine = 4096

    /// The next request on the connection, a refusal, or its end.
    mutating func next() -> RequestReading {
        let separator: [UInt8] = [13, 10, 13, 10]
        var deadline = buffer.isEmpty ? nil : Date().addingTimeInterval(limits.requestDeadline)
        var isHead = false
        func refuse(_ status: Int, _ message: String) -> RequestReading { .refused(status: status, message: message, isHead: isHead) }
        /// Reads more, waiting no longer than the idle timeout or what is left of the request's
        /// deadline (which starts at its first byte).
        func readMore() -> RequestReading? {
            let left = deadline.map { $0.timeIntervalSinceNow } ?? limits.idleTimeout
            setReadTimeout(min(limits.idleTimeout, left))
            let more = connection.read(into: &buffer)
            if deadline == nil, !buffer.isEmpty { deadline = Date().addingTimeInterval(limits.requestDeadline) }
            if let deadline, Date() >= deadline { return refuse(408, "the request took longer than \(Int(limits.requestDeadline)) s") }
            return more ? nil : .closed
        }
        var headerEnd: Int?
        while headerEnd == nil {
            headerEnd = buffer.firstRange(of: separator)?.lowerBound
            if headerEnd != nil { break }
            if buffer.count > limits.maximumHead + 3 { return refuse(431, "the request head is over \(limits.maximumHead) bytes") }
            if let stop = readMore() { return stop }
        }
        guard headerEnd! <= limits.maximumHead else { return refuse(431, "the request head is over \(limits.maximumHead) bytes") }
        let head = String(decoding: buffer[..<headerEnd!], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let requestLine = lines.removeFirst().split(separator: " ", omittingEmptySubsequences: false)
        guard requestLine.count == 3, !requestLine[0].isEmpty, requestLine[0].allSatisfy({ $0.isASCII && ($0.isLetter || $0 == "-") }),
              requestLine[2] == "HTTP/1.1" || requestLine[2] == "HTTP/1.0" else {
            return refuse(400, "not an HTTP/1.1 request line")
        }
        let method = String(requestLine[0])
        isHead = method == "HEAD"
        if let methods = limits.methods, !methods.contains(method) {
            return refuse(405, "\(method) is not served here; use \(methods.sorted().joined(separator: " or "))")
        }
        // Origin form (/path), absolute form (http://host/path), or * for OPTIONS.
        var target = String(requestLine[1])
        if let scheme = ["http://", "https://"].first(where: { target.lowercased().hasPrefix($0) }) {
            let rest = target.dropFirst(scheme.count)
            target = rest.firstIndex(where: { $0 == "/" || $0 == "?" }).map { String(rest[$0...]) } ?? "/"
            if target.hasPrefix("?") { target = "/" + target }
        }
        guard target.hasPrefix("/") || (target == "*" && method == "OPTIONS") else {
            return refuse(400, "the request target is not a path")
        }
        var headers: [String: String] = [:]
        var lengths = Set<String>()
        for line in lines {
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex,
                  !line[..<colon].contains(where: { $0 == " " || $0 == "\t" }) else {
                return refuse(400, "a header line is not a name, a colon and a value")
            }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingSpaces()
            if name == "content-length" { lengths.insert(value) }
            headers[name] = headers[name].map { $0 + ", " + value } ?? value
        }
        // One framing only: conflicting lengths, or a length next to chunked, could smuggle a request.
        var length = 0
        if let lengthText = lengths.first {
            guard lengths.count == 1, !lengthText.isEmpty, lengthText.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let parsed = Int(lengthText) else {
                return refuse(400, "Content-Length is not one number")
            }
            length = parsed
        }
        var chunked = false
        if let codings = headers["transfer-encoding"] {
            guard codings.split(separator: ",").last?.trimmingSpaces().lowercased() == "chunked", lengths.isEmpty else {
                return refuse(400, "Transfer-Encoding must end in chunked and come without Content-Length")
            }
            chunked = true
        }
        if length > limits.maximumBody || (chunked && limits.maximumBody == 0) {
            return refuse(413, limits.maximumBody == 0 ? "requests here have no body" : "the body is over \(limits.maximumBody) bytes")
        }
        let tokens = Set((headers["connection"] ?? "").lowercased().split(separator: ",").map { $0.trimmingSpaces() })
        let keepAlive = requestLine[2] == "HTTP/1.1" ? !tokens.contains("close") : tokens.contains("keep-alive")
        buffer.removeFirst(headerEnd! + 4)
        let body: [UInt8]
        if chunked {
            // Chunked request bodies (libgit2 sends them): size line, data, CRLF … a zero-size
            // chunk, trailers, an empty line. Decoded chunks leave the buffer as they are read.
            var decoded: [UInt8] = []
            /// Takes the next CRLF-ended line from the start of the buffer into `text`; what
            /// ends the request instead, if anything.
            func line(_ text: inout String) -> RequestReading? {
                while true {
                    if let end = buffer.firstRange(of: [13, 10]) {
                        text = String(decoding: buffer[..<end.lowerBound], as: UTF8.self)
                        buffer.removeFirst(end.upperBound)
                        return nil
                    }
                    if buffer.count > Self.maximumChunkLine { return refuse(400, "a chunk line is over \(Self.maximumChunkLine) bytes") }
                    if let stop = readMore() { return stop }
                }
            }
            var text = ""
            while true {
                if let stop = line(&text) { return stop }
                guard let size = Int((text.split(separator: ";").first ?? "").trimmingSpaces(), radix: 16), size >= 0 else {
                    return refuse(400, "a chunk size is not a hexadecimal number")
                }
                guard size <= limits.maximumBody - decoded.count else {
                    return refuse(413, "the body is over \(limits.maximumBody) bytes")
                }
                if size == 0 {
                    // Trailers, up to the empty line that ends the request.
                    repeat {
                        if let stop = line(&text) { return stop }
                    } while !text.isEmpty
                    break
                }
                while buffer.count < size + 2 {
                    if let stop = readMore() { return stop }
                }
                decoded += buffer[..<size]
                buffer.removeFirst(size + 2)
            }
            body = decoded
        } else {
            while buffer.count < length {
                if let stop = readMore() { return stop }
            }
            body = Array(buffer[..<length])
            buffer.removeFirst(length)
        }
        let parts = target.split(separator: "?", maxSplits: 1)
        var query: [String: String] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let key = String(kv[0]).percentDecoded ?? String(kv[0])
                let value = kv.count == 2 ? (String(kv[1]).replacingAll("+", with: " ").percentDecoded ?? String(kv[1])) : ""
                query[key] = value
            }
        }
        return .request(ServerRequest(method: method, path: String(parts.first ?? ""), query: query,
                                      headers: headers, body: body, clientSubject: connection.clientSubject), keepAlive: keepAlive)
    }
}

extension HTTPServer {
    /// What the server makes of `bytes` arriving on one connection, in order, up to its end or
    /// the first refusal: the socketless mode for tests and `make fuzz`. The bytes arrive in
    /// reads of at most `readSize`.
    package static func readRequests(from bytes: [UInt8], limits: ServerLimits, readSize: Int = 65536) -> [RequestReading] {
        let connection = BytesConnection(bytes: bytes, readSize: max(1, readSize))
        var reader = RequestReader(limits: limits, connection: connection) { _ in }
        var readings: [RequestReading] = []
        while true {
            let reading = reader.next()
            readings.append(reading)
            guard case .request(_, let keepAlive) = reading, keepAlive else { return readings }
        }
    }
}

/// Bytes given up front, as a connection.
private final class BytesConnection: ServerConnection {
    private let bytes: [UInt8]
    private let readSize: Int
    private var offset = 0

    init(bytes: [UInt8], readSize: Int) {
        self.bytes = bytes
        self.readSize = readSize
    }

    var clientSubject: String? { nil }

    func read(into buffer: inout [UInt8]) -> Bool {
        guard offset < bytes.count else { return false }
        let end = min(bytes.count, offset + readSize)
        buffer.append(contentsOf: bytes[offset..<end])
        offset = end
        return true
    }

    func write(_ bytes: [UInt8]) -> Bool { true }
}
