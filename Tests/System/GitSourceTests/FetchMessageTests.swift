import GitSource
import Testing

@Suite("What tether and tether-fetch exchange")
struct FetchMessageTests {
    @Test("A request with every field, secrets and line breaks included, reads back as it was sent")
    func requestRoundTrip() throws {
        var request = MirrorFetchRequest(url: "https://git.example/policies.git", mirrorPath: "/var/lib/tether/mirror with space",
                                         credentials: RemoteCredentials(username: "git", password: "tok\nen=1", sshPrivateKey: "/k",
                                                                        sshPassphrase: "pass phrase", knownHosts: "/kh", passwordSource: "$TETHER_GIT_TOKEN"),
                                         timeout: 12.5)
        request.certificateAuthorityFile = "/etc/ssl/ca.pem"
        #expect(MirrorFetchRequest(decoding: try #require(request.encoded)) == request)
        let bare = MirrorFetchRequest(url: "file:///r", mirrorPath: "/m", credentials: .none, timeout: 60)
        #expect(MirrorFetchRequest(decoding: try #require(bare.encoded)) == bare)
    }

    @Test("A response with and without an error reads back as it was sent")
    func responseRoundTrip() throws {
        var response = MirrorFetchResponse()
        response.fetched = true
        response.bytesReceived = 4096
        #expect(MirrorFetchResponse(decoding: try #require(response.encoded)) == response)
        response.error = "fetching https://git.example/x failed: refused"
        #expect(MirrorFetchResponse(decoding: try #require(response.encoded)) == response)
    }

    @Test("Anything else is no message: JSON, a field named twice, a cut-off field or end, missing fields, bytes that are not UTF-8, NUL in a value")
    func malformed() throws {
        let good = try #require(MirrorFetchRequest(url: "file:///r", mirrorPath: "/m", credentials: .none, timeout: 60).encoded)
        // Cut short at a field boundary (the end field lost) is no message either.
        let withoutEnd = Array(good.dropLast(5))  // "end", NUL, the empty value, NUL
        #expect(withoutEnd.last == 0 && MirrorFetchRequest(decoding: withoutEnd) == nil)
        // A value no C string can carry is refused, not cut.
        #expect(MirrorFetchRequest(url: "https://host\u{0}.evil/r", mirrorPath: "/m", credentials: .none, timeout: 60).encoded == nil)
        #expect(MirrorFetchRequest(decoding: Array(#"{"url":"file:///r"}"#.utf8)) == nil)
        #expect(MirrorFetchRequest(decoding: good + Array("url\u{0}file:///other\u{0}".utf8)) == nil)
        #expect(MirrorFetchRequest(decoding: Array(good.dropLast())) == nil)
        #expect(MirrorFetchRequest(decoding: Array("url\u{0}file:///r\u{0}".utf8)) == nil)
        #expect(MirrorFetchRequest(decoding: good + [0xFF, 0, 0x41, 0]) == nil)
        #expect(MirrorFetchResponse(decoding: []) == nil)
        #expect(MirrorFetch.serve(Array("garbage".utf8)).error?.contains("not a fetch request") == true)
    }
}
