import Foundation
import GitSource
import TetherTestSupport
import Testing
import X509

/// Commits signed by `git commit -S` with `gpg.format=ssh` (ssh-keygen signs), verified natively.
@Suite("SSH commit signatures")
struct SignatureTests {
    /// A key made with ssh-keygen; returns the private key path and the public key line.
    private func key(_ type: [String], in directory: TemporaryDirectory, name: String) throws -> (path: String, publicKey: String) {
        let path = directory.url.appendingPathComponent(name).path
        let made = try runProgram("ssh-keygen", ["-q", "-N", "", "-C", name, "-f", path] + type)
        guard made.status == 0 else { throw FixtureError("ssh-keygen: \(made.output)") }
        return (path, try String(contentsOfFile: path + ".pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    private func signedCommit(_ fixture: GitFixture, key: String, file: String) throws -> String {
        try fixture.directory.write(file, "x\n")
        try fixture.git("add", "-A")
        try fixture.git("-c", "user.name=Signer", "-c", "user.email=signer@tether.invalid", "-c", "gpg.format=ssh",
                        "-c", "user.signingkey=\(key)", "commit", "-q", "-S", "-m", "Signed \(file)")
        return try fixture.git("rev-parse", "HEAD").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("Ed25519, ECDSA (P-256, P-384) and RSA signatures verify against the allowed signers", arguments: [
        ["-t", "ed25519"], ["-t", "ecdsa", "-b", "256"], ["-t", "ecdsa", "-b", "384"], ["-t", "rsa", "-b", "2048"],
    ])
    func keyTypes(type: [String]) throws {
        let keys = try TemporaryDirectory()
        let signer = try key(type, in: keys, name: "alice")
        let fixture = try GitFixture()
        let id = try signedCommit(fixture, key: signer.path, file: "a.yaml")
        let repository = try GitRepository(path: fixture.path)
        let signature = try #require(try repository.signature(of: try repository.resolve(id)))
        let allowed = SSHSignature.allowedSigners("alice@example.com namespaces=\"git\" \(signer.publicKey)\n")
        let verdict = SSHSignature.verify(armored: signature.signature, payload: signature.signedData, allowed: allowed)
        guard case .verified(let principal, let key) = verdict else {
            Issue.record("expected verified, got \(verdict)")
            return
        }
        #expect(principal == "alice@example.com")
        let expected = try runProgram("ssh-keygen", ["-l", "-f", signer.path + ".pub"]).output.split(separator: " ")[1]
        #expect(key == String(expected))
    }

    @Test("valid-after, valid-before and namespaces hold as git verify-commit holds them, at the commit's time, and a refusal names the option and the date")
    func allowedSignerOptions() throws {
        let keys = try TemporaryDirectory()
        let alice = try key(["-t", "ed25519"], in: keys, name: "alice")
        let fixture = try GitFixture()
        try fixture.directory.write("a.yaml", "x\n")
        try fixture.git("add", "-A")
        // Committed on 2024-06-01 at 12:00:00 UTC (1717243200).
        let made = try runProgram("git", ["-C", fixture.path, "-c", "user.name=Signer", "-c", "user.email=signer@tether.invalid", "-c", "gpg.format=ssh",
                                          "-c", "user.signingkey=\(alice.path)", "commit", "-q", "-S", "-m", "Signed"],
                                  environment: ["GIT_COMMITTER_DATE": "2024-06-01T12:00:00Z", "GIT_AUTHOR_DATE": "2024-06-01T12:00:00Z"])
        #expect(made.status == 0, "\(made.output)")
        let id = try fixture.git("rev-parse", "HEAD").trimmingCharacters(in: .whitespacesAndNewlines)
        let repository = try GitRepository(path: fixture.path)
        let commit = try repository.resolve(id)
        #expect(commit.committedAt == 1_717_243_200)
        let signature = try #require(try repository.signature(of: commit))
        let cases: [(options: String, refusal: String?)] = [
            ("valid-before=\"20200101\"", "valid-before=\"20200101\""),
            ("valid-after=\"20300101\"", "valid-after=\"20300101\""),
            ("valid-after=\"20200101\",valid-before=\"20300101\"", nil),
            ("valid-before=\"20240601120000Z\"", nil),
            ("valid-before=\"20240601115959Z\"", "expired"),
            ("valid-after=\"20240601120000Z\"", nil),
            ("valid-after=\"20240601120001Z\"", "not yet valid"),
            ("namespaces=\"file\"", "namespaces=\"file\""),
            ("namespaces=\"file,git\"", nil),
            ("namespaces=\"g*\"", nil),
            ("namespaces=\"*,!git\"", "limits it to namespaces"),
            // A typo, a repeat or an empty range makes the line unusable, never the key wider.
            ("namespace=\"file\"", "do not list"),
            ("namespaces=\"file\",namespaces=\"git\"", "do not list"),
            ("valid-after=\"20300101\",valid-before=\"20200101\"", "do not list"),
        ]
        for (index, (options, refusal)) in cases.enumerated() {
            let line = "alice@example.com \(options) \(alice.publicKey)\n"
            let file = try keys.write("allowed-\(index)", line)
            let git = try runProgram("git", ["-C", fixture.path, "-c", "gpg.ssh.allowedSignersFile=\(file)", "verify-commit", id])
            let verdict = SSHSignature.verify(armored: signature.signature, payload: signature.signedData,
                                              allowed: SSHSignature.allowedSigners(line), at: commit.committedAt)
            #expect(verdict.isTrusted == (git.status == 0), "\(options): git says \(git.status), Tether \(verdict)")
            if let refusal {
                #expect(verdict.description.contains(refusal), "\(options): \(verdict)")
                #expect(!options.hasPrefix("valid") || refusal == "do not list" || verdict.description.contains("the commit was made at 2024-06-01 12:00:00 UTC"), "\(options): \(verdict)")
            } else {
                #expect(verdict.isTrusted, "\(options): \(verdict)")
            }
        }
        let expired = SSHSignature.verify(armored: signature.signature, payload: signature.signedData,
                                          allowed: SSHSignature.allowedSigners("alice@example.com valid-before=\"20200101Z\" \(alice.publicKey)\n"), at: commit.committedAt)
        #expect(expired.description.hasSuffix("but its allowed-signers entry (alice@example.com) says valid-before=\"20200101Z\" (2020-01-01 00:00:00 UTC) and the commit was made at 2024-06-01 12:00:00 UTC: expired"), "\(expired)")
        #expect(SSHSignature.allowedSigners("alice@example.com valid-before=\"2020\" \(alice.publicKey)\n").isEmpty, "a date ssh-keygen cannot read makes the line unusable")
    }

    @Test("A commit signed with a user certificate verifies through its CA's cert-authority entry, as git verify-commit decides, for each case")
    func certificates() throws {
        let keys = try TemporaryDirectory()
        let authority = try key(["-t", "ed25519"], in: keys, name: "ca")
        let other = try key(["-t", "ed25519"], in: keys, name: "other-ca")
        let user = try key(["-t", "ed25519"], in: keys, name: "alice")
        // A certificate file per case, each signed by ssh-keygen as a CA would.
        func certificate(_ name: String, _ options: [String], signer: String = authority.path) throws -> String {
            let base = keys.url.appendingPathComponent("cert-" + name).path
            try FileManager.default.copyItem(atPath: user.path, toPath: base)
            try FileManager.default.copyItem(atPath: user.path + ".pub", toPath: base + ".pub")
            let signed = try runProgram("ssh-keygen", ["-q", "-s", signer, "-I", "\(name)-id"] + options + [base + ".pub"])
            guard signed.status == 0 else { throw FixtureError("ssh-keygen -s: \(signed.output)") }
            return base + "-cert.pub"
        }
        let cases: [(name: String, options: [String], signer: String, line: String, trusted: Bool, says: String)] = [
            ("good", ["-n", "alice@example.com", "-V", "-1d:+1d"], authority.path, "alice@example.com cert-authority \(authority.publicKey)", true, "signed by alice@example.com"),
            ("wildcard", ["-n", "alice@example.com"], authority.path, "*@example.com cert-authority \(authority.publicKey)", true, "signed by alice@example.com"),
            ("other-principal", ["-n", "bob@example.com"], authority.path, "alice@example.com cert-authority \(authority.publicKey)", false, "principals (bob@example.com)"),
            ("expired", ["-n", "alice@example.com", "-V", "20200101:20200201"], authority.path, "alice@example.com cert-authority \(authority.publicKey)", false, "expired"),
            ("host", ["-h", "-n", "alice@example.com"], authority.path, "alice@example.com cert-authority \(authority.publicKey)", false, "host certificate"),
            ("other-ca", ["-n", "alice@example.com"], other.path, "alice@example.com cert-authority \(authority.publicKey)", false, "which the allowed signers do not list"),
            ("not-marked-ca", ["-n", "alice@example.com"], authority.path, "alice@example.com \(authority.publicKey)", false, "which the allowed signers do not list"),
            ("ca-namespace", ["-n", "alice@example.com"], authority.path, "alice@example.com cert-authority,namespaces=\"file\" \(authority.publicKey)", false, "namespaces=\"file\""),
        ]
        for (index, entry) in cases.enumerated() {
            let fixture = try GitFixture()
            let id = try signedCommit(fixture, key: try certificate(entry.name, entry.options, signer: entry.signer), file: "\(index).yaml")
            let repository = try GitRepository(path: fixture.path)
            let commit = try repository.resolve(id)
            let signature = try #require(try repository.signature(of: commit))
            let file = try keys.write("allowed-\(entry.name)", entry.line + "\n")
            let git = try runProgram("git", ["-C", fixture.path, "-c", "gpg.ssh.allowedSignersFile=\(file)", "verify-commit", id])
            let verdict = SSHSignature.verify(armored: signature.signature, payload: signature.signedData,
                                              allowed: SSHSignature.allowedSigners(entry.line + "\n"), at: commit.committedAt)
            #expect(verdict.isTrusted == entry.trusted, "\(entry.name): \(verdict)")
            #expect(verdict.isTrusted == (git.status == 0), "\(entry.name): git says \(git.status) (\(git.output)), Tether \(verdict)")
            #expect(verdict.description.contains(entry.says), "\(entry.name): \(verdict)")
        }
    }

    @Test("Unsigned, unknown signers and tampered commits are told apart")
    func refusals() throws {
        let keys = try TemporaryDirectory()
        let alice = try key(["-t", "ed25519"], in: keys, name: "alice")
        let mallory = try key(["-t", "ed25519"], in: keys, name: "mallory")
        let allowed = SSHSignature.allowedSigners("alice@example.com \(alice.publicKey)\n")
        let fixture = try GitFixture()
        let unsigned = try fixture.commit(["a.yaml": "a\n"])
        let byMallory = try signedCommit(fixture, key: mallory.path, file: "b.yaml")
        let repository = try GitRepository(path: fixture.path)
        #expect(try repository.signature(of: try repository.resolve(unsigned)) == nil)

        let signature = try #require(try repository.signature(of: try repository.resolve(byMallory)))
        let verdict = SSHSignature.verify(armored: signature.signature, payload: signature.signedData, allowed: allowed)
        guard case .unknownSigner = verdict else {
            Issue.record("expected unknownSigner, got \(verdict)")
            return
        }
        // The same signature over changed content does not verify.
        var tampered = signature.signedData
        tampered[tampered.count - 2] ^= 0x01
        guard case .invalid = SSHSignature.verify(armored: signature.signature, payload: tampered, allowed: allowed) else {
            Issue.record("a tampered payload verified")
            return
        }
        // A key allowed only for another namespace does not count for git, and the refusal says so.
        let fileOnly = SSHSignature.allowedSigners("mallory@example.com namespaces=\"file\" \(mallory.publicKey)\n")
        guard case .notAllowed(_, let reason) = SSHSignature.verify(armored: signature.signature, payload: signature.signedData, allowed: fileOnly) else {
            Issue.record("a key outside its namespaces verified")
            return
        }
        #expect(reason.contains("limits it to namespaces=\"file\", not git"), "\(reason)")
    }
}
