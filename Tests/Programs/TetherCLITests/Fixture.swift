import EmbeddedAgent
import Foundation
import PlatformSim
import TetherCLI
import TetherTestSupport
import Testing

/// What one `tether` invocation printed and returned.
struct TetherResult {
    let code: Int32
    let stdout: String
    let stderr: String

    /// stdout parsed as a JSON object.
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(stdout.utf8))) as? [String: Any] ?? [:]
    }
}

/// Runs tether in-process, capturing what it prints.
func tether(_ arguments: [String]) -> TetherResult {
    let capture = CapturedConsole()
    let code = Console.$current.withValue(capture.console) { Tether.run(arguments: arguments) }
    return TetherResult(code: code, stdout: capture.stdout, stderr: capture.stderr)
}

/// A policy repository with a server certificate committed, and a device (state directory)
/// labelled env=prod that holds the client container.
final class Environment: @unchecked Sendable {
    let repo: GitFixture
    let pki: TestPKI
    let state: TemporaryDirectory
    var revision: String

    static let base = """
        apiVersion: tether/v1
        kind: IntegrationPolicy
        metadata:
          name: base
        spec:
          behaviorDetection: true
          edr:
            port: 443
            address: 127.0.0.1
        """

    static let prod = """
        apiVersion: tether/v1
        kind: IntegrationPolicy
        metadata:
          name: prod-edr
        spec:
          priority: 100
          selector:
            matchLabels: {env: prod}
          edr:
            enabled: true
            serverCertificate: certs/kata.pem
            mutualAuthentication: true
            clientCertificate:
              file: edr-client.p12
              passwordFile: edr-client.pass
            synchronizationPeriod: 10
        """

    /// `platform` replaces the test PKI's server certificate and client container with ones
    /// from a platform's CA.
    init(policies: [String: String]? = nil, labels: String = "env=prod\n", platform: PlatformPKI? = nil) throws {
        pki = TestPKI.shared
        repo = try GitFixture()
        state = try TemporaryDirectory("tether-device")
        try state.write("labels", labels)
        if let platform {
            try state.write("edr-client.p12", Data(try platform.issueClient(commonName: "endpoint-cli", password: "cli-pass")))
            try state.write("edr-client.pass", "cli-pass\n")
            try repo.directory.write("certs/kata.pem", platform.serverCertificatePEM)
        } else {
            try state.write("edr-client.p12", try pki.data("edr-client.p12"))
            try state.write("edr-client.pass", try pki.data("edr-client.pass"))
            try repo.directory.write("certs/kata.pem", try pki.data("server.pem"))
        }
        revision = try repo.commit(policies ?? ["policies/base.yaml": Environment.base, "policies/prod.yaml": Environment.prod],
                                   message: "Policies")
    }

    /// The common flags, placed after the subcommand as users write them.
    var flags: [String] { ["--repo", repo.path, "--state-dir", state.path] }

    func run(_ arguments: String...) -> TetherResult { tether(arguments + flags) }

    func agentCommand(_ arguments: String...) -> TetherResult { tether(["agent"] + arguments + ["--state-dir", state.path]) }

    var storePath: String { state.url.appendingPathComponent(Agent.storeFileName).path }

    func storeDigest() throws -> String { try fileDigest(storePath) }
}

/// A self-signed PEM certificate valid between two moments written as OpenSSL wants them
/// (`20200101000000Z`), made by `openssl ca` (which, unlike `req -x509`, takes both dates).
func certificate(validFrom start: String, until end: String) throws -> Data {
    let folder = try TemporaryDirectory()
    try folder.write("ca.cnf", "[ca]\ndefault_ca = old\n[old]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n")
    try folder.write("index.txt", "")
    try folder.write("serial", "01\n")
    for arguments in [["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "k.pem"],
                      ["req", "-new", "-key", "k.pem", "-subj", "/CN=dated", "-out", "r.csr"],
                      ["ca", "-config", "ca.cnf", "-selfsign", "-keyfile", "k.pem", "-in", "r.csr", "-batch",
                       "-startdate", start, "-enddate", end, "-out", "dated.pem"]] {
        let result = try runProgram("openssl", arguments, in: folder.path)
        guard result.status == 0 else { throw FixtureError("openssl \(arguments[0]) failed: \(result.output)") }
    }
    return try Data(contentsOf: folder.url.appendingPathComponent("dated.pem"))
}

/// Runs each test of a suite on a thread of its own rather than on one of Swift's cooperative
/// threads (as many as cores: two here). For suites whose tests mostly wait — on processes,
/// sockets, timeouts, a sensor's next check — so the rest of the run goes on meanwhile. The test
/// stays the same task: its console and its recorded issues are its own.
struct OwnThread: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard testCase != nil else { return try await function() }
        try await withTaskExecutorPreference(ThreadExecutor()) { try await function() }
    }
}

extension Trait where Self == OwnThread {
    /// Each test on a thread of its own (see `OwnThread`).
    static var ownThread: Self { OwnThread() }
}

/// A task executor with a serial queue of its own: jobs run on a thread Dispatch adds for it,
/// not on the cooperative pool.
private final class ThreadExecutor: TaskExecutor, @unchecked Sendable {
    private let queue = DispatchQueue(label: "tether.test.own-thread")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
