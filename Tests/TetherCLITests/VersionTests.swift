import Foundation
import Testing

@Suite("tether --version")
struct VersionTests {
    @Test("--version names Tether's release and the libgit2, libcurl, OpenSSL and SQLite it runs with")
    func version() {
        let result = tether(["--version"])
        #expect(result.code == 0)
        let line = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(line.range(of: #"^tether \d+\.\d+\.\d+ \(libgit2 \d+\.\d+\.\d+, libcurl \d+\.\d+\.\d+, OpenSSL \d+\.\d+\.\d+.*, SQLite 3\.\d+\.\d+\)$"#,
                           options: .regularExpression) != nil, "\(line)")
    }
}
