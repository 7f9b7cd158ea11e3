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

    @Test("tether and tether-fetch link none of the libraries loaded on first use, and --version loads none of them; the versions it prints are the built-with ones")
    func librariesLoadedOnFirstUse() throws {
        let lazy = ["libgit2", "libcurl", "libssl", "libcrypto", "libsqlite3", "libyaml", "libmosquitto", "libnftables", "libbpf"]
        for program in ["tether", "tether-fetch"] {
            let path = repositoryRoot.appending(path: ".build/debug/\(program)").path
            let needed = try runProgram("readelf", ["-d", path]).output.split(separator: "\n").filter { $0.contains("(NEEDED)") }
            #expect(!needed.isEmpty, "readelf lists the libraries \(program) needs")
            for library in lazy {
                #expect(!needed.contains { $0.contains("[\(library)") }, "\(program) names \(library) as needed: \(needed)")
            }
        }
        // The dynamic loader's own account of what the process opened.
        let traced = try runProgram("/usr/bin/env", ["LD_DEBUG=files", tetherExecutable, "--version"])
        #expect(traced.status == 0)
        let opened = traced.output.split(separator: "\n").filter { $0.contains("file=") && $0.contains("[0];  needed by") }
        #expect(!opened.isEmpty, "LD_DEBUG=files shows what was opened: \(traced.output.prefix(300))")
        for library in lazy {
            #expect(!traced.output.contains("file=\(library)"), "tether --version loaded \(library)")
        }
    }

    @Test("Opening a repository leaves libssh2 and OpenSSL unstarted: libgit2's and libssh2's own calls to start libssh2 come to Tether's libssh2_init, which puts the start off")
    func sshStartPutOff() throws {
        let env = try Environment()
        let traced = try runProgram("/usr/bin/env", ["LD_DEBUG=bindings", tetherExecutable, "validate", "--repo", env.repo.path])
        #expect(traced.status == 0, "\(traced.output.suffix(500))")
        let bindings = traced.output.split(separator: "\n").filter { $0.contains("symbol `libssh2_init'") }
        for library in ["libgit2.so", "libssh2.so"] {
            #expect(bindings.contains { $0.contains("/\(library)") && $0.contains("to \(tetherExecutable) [0]") },
                    "\(library)'s libssh2_init is not Tether's: \(bindings)")
        }
    }
}
