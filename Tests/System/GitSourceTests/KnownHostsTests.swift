import Foundation
@testable import GitSource
import TetherTestSupport
import Testing

@Suite("known_hosts as OpenSSH reads it")
struct KnownHostsTests {
    private func hostKey(in directory: TemporaryDirectory, _ name: String) throws -> (line: String, blob: [UInt8]) {
        let path = directory.url.appendingPathComponent(name).path
        #expect(try runProgram("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path]).status == 0)
        let fields = try String(contentsOfFile: path + ".pub", encoding: .utf8).split(separator: " ")
        return ("\(fields[0]) \(fields[1])", Array(try #require(Data(base64Encoded: String(fields[1])))))
    }

    @Test("SHA-1 and HMAC-SHA1 give the standard answers")
    func digests() {
        #expect(SHA1.digest(Array("abc".utf8)).map { String(format: "%02x", $0) }.joined() == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(SHA1.digest([]).map { String(format: "%02x", $0) }.joined() == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        // RFC 2202, test case 2.
        #expect(SHA1.hmac(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8)).map { String(format: "%02x", $0) }.joined()
                == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
    }

    @Test("Plain, hashed, [host]:port, wildcard and negated entries match exactly what ssh-keygen -F finds")
    func sameAsSSHKeygen() throws {
        let directory = try TemporaryDirectory()
        let key = try hostKey(in: directory, "host")
        let plain = try directory.write("known_hosts", """
            host1.example.org \(key.line)
            [host2.example.org]:2222 \(key.line)
            *.wild.example.org,!bad.wild.example.org \(key.line)
            h?st.example.org \(key.line)
            Upper.Example.org \(key.line)

            """)
        let hashed = try directory.write("hashed_known_hosts", try String(contentsOfFile: plain, encoding: .utf8))
        #expect(try runProgram("ssh-keygen", ["-q", "-H", "-f", hashed]).status == 0)
        #expect(try String(contentsOfFile: hashed, encoding: .utf8).contains("|1|"), "ssh-keygen -H hashed the plain names")
        let names: [(String, Int)] = [("host1.example.org", 22), ("host2.example.org", 2222), ("host2.example.org", 22), ("host1.example.org", 2222),
                                      ("a.wild.example.org", 22), ("bad.wild.example.org", 22), ("hast.example.org", 22), ("haast.example.org", 22),
                                      ("upper.example.org", 22), ("nothing.example.org", 22)]
        for file in [plain, hashed] {
            for (host, port) in names {
                let name = port == 22 ? host : "[\(host)]:\(port)"
                let found = try runProgram("ssh-keygen", ["-F", name, "-f", file]).status == 0
                let verdict = KnownHosts.check(host: host, port: port, key: key.blob, file: file)
                #expect((verdict == .trusted) == found, "\(name) in \(file): ssh-keygen \(found), Tether \(verdict)")
            }
        }
    }

    @Test("Another key, a key of another type, a revoked key and a CA key are refused, each saying why")
    func refusals() throws {
        let directory = try TemporaryDirectory()
        let key = try hostKey(in: directory, "host")
        let other = try hostKey(in: directory, "other")
        let changed = try directory.write("changed", "git.example.org \(other.line)\n")
        guard case .refused(let reason) = KnownHosts.check(host: "git.example.org", port: 22, key: key.blob, file: changed) else {
            Issue.record("another key was trusted"); return
        }
        #expect(reason.contains("presented a key that is not the one in"))
        let base64 = key.line.split(separator: " ")[1]
        let wrongType = try directory.write("wrong-type", "git.example.org ssh-rsa \(base64)\n")
        #expect(KnownHosts.check(host: "git.example.org", port: 22, key: key.blob, file: wrongType) != .trusted, "the type is part of the key")
        let revoked = try directory.write("revoked", "git.example.org \(key.line)\n@revoked * \(key.line)\n")
        #expect(KnownHosts.check(host: "git.example.org", port: 22, key: key.blob, file: revoked)
                == .refused("ssh host git.example.org presented a key that \(revoked) marks @revoked"))
        let authority = try directory.write("authority", "@cert-authority *.example.org \(key.line)\n")
        guard case .refused(let why) = KnownHosts.check(host: "git.example.org", port: 22, key: key.blob, file: authority) else {
            Issue.record("a CA key was taken for the host's key"); return
        }
        #expect(why.contains("@cert-authority"))
        // CR LF line ends (a file edited on Windows): every line is still read, @revoked included.
        let crlf = try directory.write("crlf", "# hosts\r\ngit.example.org \(key.line)\r\n@revoked * \(key.line)\r\n")
        #expect(KnownHosts.check(host: "git.example.org", port: 22, key: key.blob, file: crlf) != .trusted, "the @revoked line counts")
        // libgit2 hands an IPv6 host over in brackets; known_hosts writes it bare.
        let ipv6 = try directory.write("ipv6", "::1 \(key.line)\n")
        #expect(KnownHosts.check(host: "[::1]", port: 22, key: key.blob, file: ipv6) == .trusted)
        #expect(KnownHosts.check(host: "git.example.org", port: 22, key: key.blob, file: nil)
                == .refused("ssh host git.example.org cannot be checked: give a known_hosts file (--known-hosts)"))
    }

    @Test("The ssh port comes from the URL: 22 unless ssh:// names another")
    func ports() {
        #expect(KnownHosts.sshPort(of: "ssh://git@example.org/repo.git") == 22)
        #expect(KnownHosts.sshPort(of: "ssh://git@example.org:2222/repo.git") == 2222)
        #expect(KnownHosts.sshPort(of: "ssh://[::1]:2200/repo.git") == 2200)
        #expect(KnownHosts.sshPort(of: "ssh://[::1]/repo.git") == 22)
        #expect(KnownHosts.sshPort(of: "git@example.org:repo.git") == 22)
        #expect(KnownHosts.sshPort(of: "[git@example.org:2222]:repo.git") == 2222)
        #expect(KnownHosts.sshPort(of: "[::1]:repo.git") == 22)
    }
}
