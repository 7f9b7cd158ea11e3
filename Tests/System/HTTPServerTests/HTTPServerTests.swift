import Foundation
import HTTPServer
import TetherTestSupport
import Testing

@Suite("The HTTP server's framing, as an API server reads it")
struct HTTPServerTests {
    /// A server that answers each request with its method, path and body.
    private func echoServer() throws -> HTTPServer {
        try HTTPServer { request in
            ServerResponse(status: 200, contentType: "text/plain", body: Array("\(request.method) \(request.path) \(request.text)|".utf8))
        }
    }

    @Test("A chunked body with extensions and trailers is decoded, and the request after it on the same connection is served")
    func chunkedThenPipelined() throws {
        let server = try echoServer()
        defer { server.stop() }
        let request = "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n"
            + "POST /b HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nfg"
        let response = try httpExchange(port: server.port, Array(request.utf8), timeout: 5)
        #expect(response.status == 200)
        #expect(response.body.contains("POST /a abcde|"))
        #expect(response.body.contains("POST /b fg|"))
    }

    @Test("Framing that could smuggle a request, or a chunk line without end, is refused with 400")
    func ambiguousFraming() throws {
        let server = try echoServer()
        defer { server.stop() }
        for request in ["POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                        "POST /a HTTP/1.1\r\nTransfer-Encoding: notchunked\r\n\r\n",
                        "POST /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
                        "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + String(repeating: "f", count: 10_000)] {
            #expect(try httpExchange(port: server.port, Array(request.utf8), timeout: 5).status == 400, "\(request.prefix(60).debugDescription)")
        }
    }
}
