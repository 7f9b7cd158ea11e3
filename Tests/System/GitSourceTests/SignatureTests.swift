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
        // A key allowed only for another namespace does not count for git.
        let fileOnly = SSHSignature.allowedSigners("mallory@example.com namespaces=\"file\" \(mallory.publicKey)\n")
        guard case .unknownSigner = SSHSignature.verify(armored: signature.signature, payload: signature.signedData, allowed: fileOnly) else {
            Issue.record("a key outside its namespaces verified")
            return
        }
    }
}
