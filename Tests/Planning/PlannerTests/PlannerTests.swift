import AgentInterface
import Foundation
import IntegrationModel
import Planner
import PlatformTLS
import Policy
import Testing
import X509

/// Certificates for the whole test process, made once in memory.
private enum Certificates {
    static let authority: CertificateAuthority = {
        do { return try CertificateAuthority(commonName: "Planner tests CA", days: 365) } catch { fatalError("\(error)") }
    }()
    static func issue(_ name: String, days: Int) -> Certificate {
        do { return try authority.issue(commonName: name, names: ["127.0.0.1"], days: days).certificate } catch { fatalError("\(error)") }
    }
    static let current = issue("kata-current", days: 365)
    static let next = issue("kata-next", days: 365)
    static let shortLived = issue("kata-short", days: 10)
}

/// The planner's clock in these tests: fixed, so expiry and exceptions never depend on when they run.
private let now = Date()
private let line = SourceLocation(file: "policies/p.yaml", line: 7, column: 5)

/// A desired state from (key, value) pairs, with optional observe modes and exceptions.
private func desired(_ values: [(DesiredKey, ResolvedValue)], observe: [DesiredKey] = [],
                     exceptions: [(DesiredKey, expiresIn: TimeInterval)] = [], unresolved: [DesiredKey] = []) -> ResolvedDesiredState {
    ResolvedDesiredState(
        values: Dictionary(uniqueKeysWithValues: values.map { ($0.0, (value: $0.1, source: line)) }), policies: ["p"],
        unresolved: Dictionary(uniqueKeysWithValues: unresolved.map { ($0, (reason: "the container cannot be read", source: line)) }),
        modes: Dictionary(uniqueKeysWithValues: observe.map { ($0, Sourced(FieldMode.observe, at: line)) }),
        exceptions: Dictionary(uniqueKeysWithValues: exceptions.map {
            ($0.0, PolicyException(key: $0.0, reason: "migration window", expires: now.addingTimeInterval($0.expiresIn),
                                   expiresText: "soon", source: line, policy: "p"))
        }))
}

/// A fresh agent with some settings changed.
private func agent(_ settings: [(SettingPath, SettingValue)] = [], running: Set<Integration> = [],
                   server: [Integration: Certificate] = [:], client: [Integration: (Certificate, ContainerPassword)] = [:]) -> AgentState {
    var state = AgentState.initial
    state.fillDefaults()
    for (path, value) in settings { state.settings[path] = value }
    state.running = running
    state.serverCertificates = server
    state.clientCertificates = client.mapValues(\.0)
    state.clientPasswords = client.mapValues(\.1)
    state.clientContainerDigests = client.mapValues { _ in sha256Hex(containerBytes) }
    return state
}

private let port = DesiredKey.setting(SettingPath.edr.port)
private let edrEnabled = DesiredKey.setting(SettingPath.edr.enabled)
private let telemetry = DesiredKey.setting(SettingPath.edr.telemetry)
private let detection = DesiredKey.setting(SettingPath.behaviorDetection)
private let edrServer = DesiredKey.serverCertificate(.edr)
private func server(_ certificate: Certificate) -> ResolvedValue {
    .serverCertificate(certificate, bytes: certificate.der, path: "certs/kata.pem")
}
private let edrClient = DesiredKey.clientCertificate(.edr)
/// The bytes of the client container the agents in these tests hold.
private let containerBytes: [UInt8] = [1, 2, 3]

/// A client container with its password file.
private func client(_ certificate: Certificate, _ password: ContainerPassword, container: [UInt8] = containerBytes) -> ResolvedValue {
    .clientCertificate(certificate, container: container, password: password, file: "edr-client.p12")
}

/// One row: a situation and the findings (kind by key) and steps the planner must give.
private struct Case: CustomTestStringConvertible, Sendable {
    let name: String
    let desired: ResolvedDesiredState
    let actual: AgentState
    var applied: [DesiredKey: String] = [:]
    let findings: [DesiredKey: FindingKind]
    let steps: [String]
    var testDescription: String { name }
}

private let cases: [Case] = [
    Case(name: "in sync: nothing to report or do",
         desired: desired([(port, .setting(.int(443)))]), actual: agent(), findings: [:], steps: []),
    Case(name: "pending: git changed, the agent did not",
         desired: desired([(port, .setting(.int(8443)))]), actual: agent(), applied: [port: "443"],
         findings: [port: .pending], steps: ["set edr.port: 443 → 8443"]),
    Case(name: "pending: never applied before",
         desired: desired([(port, .setting(.int(8443)))]), actual: agent(), findings: [port: .pending], steps: ["set edr.port: 443 → 8443"]),
    Case(name: "drift: the agent changed, git did not",
         desired: desired([(port, .setting(.int(443)))]), actual: agent([(SettingPath.edr.port, .int(9443))]), applied: [port: "443"],
         findings: [port: .drift], steps: ["set edr.port: 9443 → 443"]),
    Case(name: "conflict: both changed",
         desired: desired([(port, .setting(.int(8443)))]), actual: agent([(SettingPath.edr.port, .int(9443))]), applied: [port: "443"],
         findings: [port: .conflict], steps: ["set edr.port: 9443 → 8443"]),
    Case(name: "observe: reported, never corrected",
         desired: desired([(port, .setting(.int(443)))], observe: [port]), actual: agent([(SettingPath.edr.port, .int(9443))]),
         applied: [port: "443"], findings: [port: .drift], steps: []),
    Case(name: "excepted: an active exception accepts the difference",
         desired: desired([(port, .setting(.int(443)))], exceptions: [(port, expiresIn: 86_400)]),
         actual: agent([(SettingPath.edr.port, .int(9443))]), findings: [port: .excepted], steps: []),
    Case(name: "exception-expired: the key is enforced again",
         desired: desired([(port, .setting(.int(443)))], exceptions: [(port, expiresIn: -60)]),
         actual: agent([(SettingPath.edr.port, .int(9443))]), applied: [port: "443"],
         findings: [port: .drift], steps: ["set edr.port: 9443 → 443"]),
    Case(name: "expiring: a certificate within the warning window",
         desired: desired([(edrServer, server(Certificates.shortLived))]), actual: agent(server: [.edr: Certificates.shortLived]),
         findings: [edrServer: .expiring], steps: []),
    Case(name: "unenforceable: a client container that cannot be read blocks every step",
         desired: desired([(port, .setting(.int(8443)))], unresolved: [.clientCertificate(.edr)]), actual: agent(),
         findings: [port: .pending, .clientCertificate(.edr): .unenforceable], steps: []),
    Case(name: "in sync: the same client container with the same password file",
         desired: desired([(edrClient, client(Certificates.current, .file("edr.pass")))]),
         actual: agent(client: [.edr: (Certificates.current, .file("edr.pass"))]), findings: [:], steps: []),
    Case(name: "pending: the same client container, but the policy names another password file",
         desired: desired([(edrClient, client(Certificates.current, .file("new.pass")))]),
         actual: agent(client: [.edr: (Certificates.current, .file("edr.pass"))]),
         applied: [edrClient: "\(Certificates.current.sha256Fingerprint) (password from edr.pass; container sha256 \(sha256Hex(containerBytes).prefix(16)))"],
         findings: [edrClient: .pending], steps: ["install edr client certificate"]),
    Case(name: "pending: the same certificate in another container file (re-exported with a new password at the same paths)",
         desired: desired([(edrClient, client(Certificates.current, .file("edr.pass"), container: [4, 5, 6]))]),
         actual: agent(client: [.edr: (Certificates.current, .file("edr.pass"))]), findings: [edrClient: .pending],
         steps: ["install edr client certificate"]),
    Case(name: "pending, not conflict: a container whose password an earlier release kept is installed again with its file",
         desired: desired([(edrClient, client(Certificates.current, .file("edr.pass")))]),
         actual: agent(client: [.edr: (Certificates.current, .forgotten)]), applied: [edrClient: Certificates.current.sha256Fingerprint],
         findings: [edrClient: .pending], steps: ["install edr client certificate"]),
    Case(name: "unenforceable: a task that cannot start (rule 1, no server certificate)",
         desired: desired([(edrEnabled, .setting(.bool(true)))]), actual: agent(),
         findings: [edrEnabled: .unenforceable], steps: []),
    Case(name: "order: stop, behaviour detection on, certificates, settings, start",
         desired: desired([(edrEnabled, .setting(.bool(true))), (edrServer, server(Certificates.next)), (port, .setting(.int(8443))),
                           (detection, .setting(.bool(true))), (telemetry, .setting(.bool(true)))]),
         actual: agent([(SettingPath.behaviorDetection, .bool(false)), (SettingPath.edr.telemetry, .bool(false))]),
         findings: [edrEnabled: .pending, edrServer: .pending, port: .pending, detection: .pending, telemetry: .pending],
         steps: ["set behaviorDetection: false → true", "pin edr server certificate", "set edr.port: 443 → 8443",
                 "set edr.telemetry: false → true", "start EDR (KATAEDR)"]),
    Case(name: "order: telemetry off before behaviour detection off, while EDR keeps running",
         desired: desired([(detection, .setting(.bool(false))), (telemetry, .setting(.bool(false)))]),
         actual: agent(running: [.edr], server: [.edr: Certificates.current]),
         findings: [detection: .pending, telemetry: .pending],
         steps: ["set edr.telemetry: true → false", "set behaviorDetection: true → false"]),
    Case(name: "order: a running task is stopped before its certificate changes and started after",
         desired: desired([(edrEnabled, .setting(.bool(false))), (edrServer, server(Certificates.next))]),
         actual: agent(running: [.edr], server: [.edr: Certificates.current]),
         findings: [edrEnabled: .pending, edrServer: .pending],
         steps: ["stop EDR (KATAEDR)", "pin edr server certificate"]),
]

@Suite("The planner, on in-memory states")
struct PlannerTests {
    @Test("Every cause and the order of steps", arguments: cases)
    fileprivate func plan(_ row: Case) {
        let applied = AppliedState(values: row.applied,
                                   revision: row.applied.isEmpty ? nil : "0123456789ab", at: now)
        let plan = Planner.plan(desired: row.desired, actual: row.actual, applied: applied, now: now)
        var kinds: [DesiredKey: FindingKind] = [:]
        for finding in plan.findings { kinds[finding.key] = finding.kind }
        #expect(kinds == row.findings)
        #expect(plan.steps.count == row.steps.count, "\(plan.steps.map(\.description))")
        for (step, expected) in zip(plan.steps, row.steps) {
            #expect(step.description.hasPrefix(expected), "\(step.description) is not \(expected)")
        }
    }

    @Test("Released: a key applied before and declared by no policy now stays, and keeps its record; --prune resets it to the vendor default")
    func released() {
        let applied = AppliedState(values: [port: "9443", detection: "true"], revision: "r", at: now)
        let actual = agent([(SettingPath.edr.port, .int(9443))])
        let kept = Planner.plan(desired: desired([(detection, .setting(.bool(true)))]), actual: actual, applied: applied, now: now)
        #expect(kept.findings.map(\.kind) == [.released])
        #expect(kept.findings.first?.reason == "edr.port is no longer managed: stays 9443; the vendor default is 443 (apply --prune resets it)")
        #expect(kept.steps.isEmpty)
        #expect(kept.desiredValues[port] == "9443", "still released next time")
        let pruned = Planner.plan(desired: desired([(detection, .setting(.bool(true)))]), actual: actual, applied: applied, now: now, prune: true)
        #expect(pruned.steps.map(\.description) == ["set edr.port: 9443 → 443"])
        #expect(pruned.desiredValues[port] == nil, "no longer managed once reset")
    }

    @Test("Not yet valid: a certificate whose validity begins after now is reported, with the moment, as an error")
    func notYetValid() {
        let earlier = now.addingTimeInterval(-2 * 86_400)
        let plan = Planner.plan(desired: desired([(edrServer, server(Certificates.current))]),
                                actual: agent(server: [.edr: Certificates.current]), now: earlier)
        #expect(plan.findings.map(\.kind) == [.notYetValid])
        #expect(plan.findings.first?.reason?.hasPrefix("the certificate is not valid until ") == true, "\(plan.findings.first?.reason ?? "")")
        #expect(plan.findings.first?.kind.isProblem == true)
        #expect(plan.steps.isEmpty)
    }

    @Test("Expired: a certificate past its end is reported as expired, with the day")
    func expired() {
        let later = now.addingTimeInterval(20 * 86_400)
        let plan = Planner.plan(desired: desired([(edrServer, server(Certificates.shortLived))]),
                                actual: agent(server: [.edr: Certificates.shortLived]), now: later)
        let finding = plan.findings.first { $0.kind == .expired }
        #expect(finding?.reason?.hasPrefix("the certificate expired on ") == true)
    }

    @Test("Lists compared as sets where order has no meaning, and in order where it has")
    func listOrder() {
        let a = Endpoint(address: "10.0.0.1", port: 443), b = Endpoint(address: "10.0.0.2", port: 443)
        let servers = DesiredKey.setting(SettingPath.sandbox.servers), endpoints = DesiredKey.setting(SettingPath.ndr.endpoints)
        let plan = Planner.plan(desired: desired([(servers, .setting(.endpoints([a, b]))), (endpoints, .setting(.endpoints([a, b])))]),
                                actual: agent([(SettingPath.sandbox.servers, .endpoints([b, a])), (SettingPath.ndr.endpoints, .endpoints([b, a]))]),
                                now: now)
        #expect(plan.findings.map(\.key) == [endpoints], "NDR fail-over order matters; Sandbox servers are a set")
    }

    @Test("What a successful apply records: the desired values, and for observed keys what was applied before")
    func desiredValues() {
        let plan = Planner.plan(desired: desired([(port, .setting(.int(8443))), (telemetry, .setting(.bool(false)))], observe: [telemetry]),
                                actual: agent(), applied: AppliedState(values: [telemetry: "true"], revision: "r", at: now), now: now)
        #expect(plan.desiredValues == [port: "8443", telemetry: "true"])
    }
}
