import Foundation
import TetherTestSupport
import Testing

@Suite("tether --version")
struct VersionTests {
    @Test("--version names Tether's release and the libgit2, libcurl, OpenSSL and SQLite it runs with")
    func version() {
        let result = tether(["--version"])
        #expect(result.code == 0)
        let line = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(line.range(of: #"^tether \d+\.\d+\.\d+(-dev)? \((commit [0-9a-f]{12}, )?libgit2 \d+\.\d+\.\d+, libcurl \d+\.\d+\.\d+, OpenSSL \d+\.\d+\.\d+.*, SQLite 3\.\d+\.\d+\)$"#,
                           options: .regularExpression) != nil, "\(line)")
    }

    @Test("A build from a checkout says the VERSION file's release with -dev (make package stamps the release and commit from git)")
    func checkoutVersion() throws {
        let release = try String(contentsOf: repositoryRoot.appendingPathComponent("VERSION"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(tether(["--version"]).stdout.hasPrefix("tether \(release)-dev ("))
    }
}
