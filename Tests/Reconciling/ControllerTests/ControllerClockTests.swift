@testable import Controller
import Foundation
import Logging
import PolicySource
import Reconciler
import TetherTestSupport
import Testing

/// A clock tests move by hand.
private final class TestClock: @unchecked Sendable {
    var now: Date
    init(_ now: Date) { self.now = now }
}

private let policy = """
    apiVersion: tether/v1
    kind: IntegrationPolicy
    metadata:
      name: base
    spec:
      edr:
        port: 9443
    """

/// A controller on a local repository and a state directory of its own, with `clock`.
private func controller(_ repo: GitFixture, state: TemporaryDirectory, clock: TestClock, interval: Double = 300) -> Controller {
    var configuration = ControllerConfiguration(source: SourceSpec(repository: repo.path, ref: "main", path: "policies"), stateDirectory: state.url,
                                                interval: interval, runConnectors: false)
    configuration.runSensors = false
    return Controller(configuration: configuration, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }, clock: { clock.now })
}

@Suite("The controller, with a clock of the test's")
struct ControllerClockTests {
    @Test("A cycle's start and duration are the controller's clock's, and tether status's file says so")
    func cycleTimes() throws {
        let repo = try GitFixture()
        try repo.commit(["policies/base.yaml": policy])
        let state = try TemporaryDirectory("tether-controller")
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let result = controller(repo, state: state, clock: clock).runCycle()
        #expect(result.condition == .ready && result.reason == .applied, "\(result.message)")
        #expect(result.startedAt == clock.now && result.duration == 0)
        let status = try #require(ControllerStatus.read(state.url.appendingPathComponent("controller.json")))
        #expect(status.lastCycle.at == clock.now && status.lastCycle.reason == "applied")
    }

    @Test("A refused rollback says how long ago the last verified revision was committed, by the controller's clock")
    func rollbackAge() throws {
        let repo = try GitFixture()
        try repo.commit(["policies/base.yaml": policy])
        let state = try TemporaryDirectory("tether-controller")
        let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
        let first = controller(repo, state: state, clock: clock)
        first.configuration.verify = .off
        #expect(first.runCycle().condition == .ready)
        try repo.git("checkout", "-q", "--orphan", "other")
        try repo.commit(["policies/base.yaml": policy.replacingOccurrences(of: "9443", with: "9444")])
        try repo.git("branch", "-f", "main", "other")
        clock.now = clock.now.addingTimeInterval(3 * 86_400)
        let refused = first.runCycle()
        #expect(refused.condition == .stalled && refused.reason == .rollbackRefused, "\(refused.message)")
        #expect(refused.startedAt == clock.now)
    }

    @Test("After failures the wait doubles from 5 s up to --max-backoff; otherwise it is the interval within its jitter")
    func backoff() throws {
        let repo = try GitFixture()
        let state = try TemporaryDirectory("tether-controller")
        let subject = controller(repo, state: state, clock: TestClock(Date()))
        subject.configuration.maximumBackoff = 30
        let loop = ControllerLoop(controller: subject, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        #expect((1...5).map { loop.delay(afterFailures: $0) } == [5, 10, 20, 30, 30])
        for _ in 0..<100 { #expect((270...330).contains(loop.delay(afterFailures: 0))) }
    }

    @Test("A wake ends the wait at once; without one, the wait lasts until its deadline")
    func wakeup() {
        let wakeup = Wakeup()
        wakeup.wake()
        let started = Date()
        wakeup.wait(until: Date().addingTimeInterval(30))
        #expect(Date().timeIntervalSince(started) < 5, "woken, not waiting 30 s")
        let again = Date()
        wakeup.wait(until: Date().addingTimeInterval(0.2))
        #expect(Date().timeIntervalSince(again) >= 0.19, "the wake was used up: the next wait runs to its deadline")
    }
}
