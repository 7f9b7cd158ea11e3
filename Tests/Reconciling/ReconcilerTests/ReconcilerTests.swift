import AgentInterface
import Foundation
import GitSource
import IntegrationModel
import Planner
import PolicySource
import Reconciler
import SQLiteDB
import TetherTestSupport
import Testing

/// A policy repository, an in-memory agent and a history on disk: the reconciler's use case
/// without the command line, sockets or the embedded agent.
private struct Bench {
    let repo: GitFixture
    let state: TemporaryDirectory
    let agent = MemoryAgent()
    let session: AgentSession
    var warnings: [String] = []

    static let policy = """
        apiVersion: tether/v1
        kind: IntegrationPolicy
        metadata:
          name: base
        spec:
          behaviorDetection: true
          edr:
            port: 9443
            synchronizationPeriod: 7
          sandbox:
            queueSize: 700
          observe: [sandbox.queueSize]
        """

    init(policy: String = Bench.policy) throws {
        repo = try GitFixture()
        try repo.commit(["policies/base.yaml": policy])
        state = try TemporaryDirectory("tether-reconciler")
        session = AgentSession(backend: agent, history: try History(stateDirectory: state.url), stateDirectory: state.url)
    }

    /// The revision at `main`, compared by `driver` with the in-memory agent (or `other`).
    func compare(_ driver: Driver, labels: [String: String] = [:], with other: AgentSession? = nil) throws -> Reconciliation {
        let repository = try GitRepository(path: repo.path)
        return try driver.compare(SourceSpec(repository: repo.path, ref: "main", path: "policies"), repository: repository, session: other ?? session,
                                  labels: labels, host: "bench", warnExpiryDays: 30, prune: false)
    }
}

@Suite("The reconciler, against an in-memory agent")
struct ReconcilerTests {
    @Test("An apply changes the agent in one transaction, records it after the backend's commit, and leaves what a fresh plan would find")
    func applyAndWhatRemains() throws {
        let bench = try Bench()
        let driver = Driver(gate: .standard) { _ in }
        let comparison = try bench.compare(driver)
        #expect(!comparison.plan.isEmpty)
        let outcome = try comparison.apply(actor: "test")
        #expect(outcome.failure == nil && outcome.changed)
        #expect(bench.agent.commits.count == 1 && bench.agent.commits[0].hasPrefix("test "), "\(bench.agent.commits)")
        #expect(bench.agent.current.int(SettingPath.edr.port) == 9443)
        #expect(bench.agent.applied.revision == comparison.revision.commit.id)
        let entries = try bench.session.history.entries()
        #expect(entries.map(\.kind) == [.apply] && entries.map(\.result) == [.applied])
        // The drift report after an apply comes from the plan made under the lock, without planning
        // again: it must say what a fresh comparison says.
        let remaining = try #require(outcome.remaining?.plan)
        #expect(outcome.remaining?.applied.revision == comparison.revision.commit.id, "the report after it shows the new last applied revision")
        let fresh = try bench.compare(driver).plan
        func summary(_ plan: Plan) -> [String] { plan.findings.map { "\($0.key) \($0.kind.rawValue)" }.sorted() }
        #expect(summary(remaining) == summary(fresh), "remaining \(summary(remaining)), fresh \(summary(fresh))")
        #expect(remaining.steps.isEmpty && fresh.steps.isEmpty)
        #expect(summary(fresh).contains("sandbox.queueSize pending"), "observed, so never corrected: \(summary(fresh))")
    }

    @Test("With the embedded agent, what an apply leaves (its plan without what it corrected) is what a fresh comparison finds")
    func embeddedRemains() throws {
        let bench = try Bench()
        let session = try AgentSession(AgentChoice(), stateDirectory: bench.state.url.appendingPathComponent("embedded"))
        let driver = Driver(gate: .standard) { _ in }
        let outcome = try bench.compare(driver, with: session).apply(actor: "test")
        let remaining = try #require(outcome.remaining)
        let fresh = try bench.compare(driver, with: session)
        func summary(_ plan: Plan) -> [String] { plan.findings.map { "\($0.key) \($0.kind.rawValue) \($0.actual)" }.sorted() }
        #expect(summary(remaining.plan) == summary(fresh.plan))
        #expect(remaining.applied.revision == fresh.applied.revision && remaining.applied.values == fresh.applied.values)
        #expect(fresh.plan.isEmpty)
    }

    @Test("--health-window on a backend without Tether's connectors is refused before anything changes, naming the option and the backend")
    func healthWindowRefused() throws {
        let bench = try Bench()
        let comparison = try bench.compare(Driver(gate: .standard) { _ in })
        #expect {
            try comparison.apply(actor: "test", healthWindow: 30)
        } throws: { error in
            "\(error)".contains("--health-window needs connectors that Tether runs, and an in-memory agent has none")
        }
        #expect(bench.agent.commits.isEmpty && bench.agent.current.int(SettingPath.edr.port) != 9443)
        #expect(try bench.session.history.entries().isEmpty)
    }

    @Test("A history that cannot be written after the backend committed: changed, not recorded; kept and recorded at the next open")
    func historyAfterCommit() throws {
        let bench = try Bench()
        let comparison = try bench.compare(Driver(gate: .standard) { _ in })
        let file = bench.state.url.appendingPathComponent(History.fileName).path
        try Database(path: file).execute("CREATE TRIGGER full BEFORE INSERT ON history BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;")
        let outcome = try comparison.apply(actor: "test")
        #expect(outcome.changed, "the backend committed")
        #expect(outcome.failure?.contains("the agent was changed, but the history entry could not be written") == true, "\(outcome.failure ?? "")")
        #expect(outcome.failure?.contains("nothing was changed") == false)
        #expect(bench.agent.current.int(SettingPath.edr.port) == 9443)
        try Database(path: file).execute("DROP TRIGGER full")
        let reopened = try History(stateDirectory: bench.state.url)
        #expect(try reopened.entries().map(\.result) == [.applied], "recorded at the next open")
        #expect(try reopened.appliedRevisions() == [comparison.revision.commit.id])
    }

    @Test("The driver warns about labels once per revision and labels, and again when either changes")
    func labelWarningsOnce() throws {
        let bench = try Bench(policy: Bench.policy.replacingOccurrences(of: "spec:\n", with: "spec:\n  selector:\n    matchLabels: {env: prod}\n"))
        var warnings: [String] = []
        let driver = Driver(gate: .standard) { warnings.append($0) }
        _ = try bench.compare(driver, labels: ["env": "prdo"])
        _ = try bench.compare(driver, labels: ["env": "prdo"])
        #expect(warnings.count == 1 && warnings[0].contains("prod"), "\(warnings)")
        _ = try bench.compare(driver, labels: ["env": "prod", "team": "a"])
        #expect(warnings.count == 2 && warnings[1].contains("team"), "\(warnings)")
    }

    @Test("A revision that does not descend from the one applied is refused by the driver, and nothing changes")
    func rollbackRefused() throws {
        var bench = try Bench()
        let driver = Driver(gate: .standard) { _ in }
        let first = try bench.compare(driver)
        _ = try first.apply(actor: "test")
        try bench.repo.git("checkout", "-q", "--orphan", "other")
        try bench.repo.commit(["policies/base.yaml": Bench.policy.replacingOccurrences(of: "9443", with: "9444")])
        try bench.repo.git("branch", "-f", "main", "other")
        bench.warnings = []
        #expect(throws: RevisionRefused.self) { try bench.compare(driver) }
        #expect(bench.agent.current.int(SettingPath.edr.port) == 9443 && bench.agent.commits.count == 1)
    }
}
