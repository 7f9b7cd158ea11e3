import ConnectorCore
import Foundation
import IntegrationModel
import Policy
import X509

/// The device's desired state with certificates read: from the revision (server certificates)
/// and from the device itself (client containers, which never enter git).
public struct ResolvedDesiredState: Sendable {
    public let values: [DesiredKey: (value: ResolvedValue, source: SourceLocation)]
    public let policies: [String]
}

/// Compares desired and actual state and plans the change, ordered by the agent's rules.
public enum Reconciler {
    /// Makes the desired state concrete: reads each server certificate from the revision and each
    /// client container from the device. Throws `PolicyProblems` naming the policy line of
    /// every certificate that is missing, not a certificate, or whose password is wrong.
    /// Relative device paths (client containers, password files) are taken from `deviceDirectory`.
    public static func resolve(_ desired: DesiredState, revision: PolicyRevision, deviceDirectory: URL) throws -> ResolvedDesiredState {
        var values: [DesiredKey: (value: ResolvedValue, source: SourceLocation)] = [:]
        var problems: [PolicyProblem] = []
        for (key, sourced) in desired.values {
            switch sourced.value {
            case .setting(let value):
                values[key] = (.setting(value), sourced.source)
            case .serverCertificate(let path):
                do {
                    let (certificate, bytes) = try revision.certificate(at: path)
                    values[key] = (.serverCertificate(certificate, bytes: bytes, path: path), sourced.source)
                } catch let error as CertificateFileError {
                    problems.append(PolicyProblem(sourced.source, "\(key): \(error.message(path: path, commit: revision.commit))"))
                }
            case .clientCertificate(let reference):
                switch readClientContainer(reference, deviceDirectory: deviceDirectory) {
                case .success(let resolved): values[key] = (resolved, sourced.source)
                case .failure(let message): problems.append(PolicyProblem(sourced.source, "\(key): \(message)"))
                }
            }
        }
        if !problems.isEmpty { throw PolicyProblems(problems) }
        return ResolvedDesiredState(values: values, policies: desired.policies)
    }

    private enum ContainerRead { case success(ResolvedValue), failure(String) }

    private static func readClientContainer(_ reference: ClientCertificateReference, deviceDirectory: URL) -> ContainerRead {
        func onDevice(_ path: String) -> String {
            path.hasPrefix("/") ? path : deviceDirectory.appendingPathComponent(path).path
        }
        guard let container = FileManager.default.contents(atPath: onDevice(reference.file)) else {
            return .failure("client container \(reference.file) cannot be read on this device (missing or not readable)")
        }
        var password = ""
        if let passwordFile = reference.passwordFile {
            guard let data = FileManager.default.contents(atPath: onDevice(passwordFile)) else {
                return .failure("password file \(passwordFile) cannot be read on this device (missing or not readable)")
            }
            password = String(decoding: data, as: UTF8.self)
            while password.hasSuffix("\n") || password.hasSuffix("\r") { password.removeLast() }
        }
        do {
            let parsed = try ClientContainer(pkcs12: Array(container), password: password)
            return .success(.clientCertificate(parsed.certificate, container: Array(container), password: password, file: reference.file))
        } catch X509Error.wrongPassword {
            let origin = reference.passwordFile.map { "the password in \($0)" } ?? "an empty password (no passwordFile given)"
            return .failure("client container \(reference.file) does not open with \(origin): wrong password")
        } catch {
            return .failure("client container \(reference.file): \(error)")
        }
    }

    /// Compares every managed key with the agent and plans the steps that make them equal.
    /// Throws `PolicyProblems` when the desired state cannot hold on this agent (a task that
    /// must run lacks a precondition), naming the policy line that asks for it.
    public static func plan(desired: ResolvedDesiredState, actual: AgentState) throws -> Plan {
        var findings: [Finding] = []
        var target = actual
        for key in desired.values.keys.sorted() {
            let (value, source) = desired.values[key]!
            let lastChange = actual.lastChanges[key.description]
            switch (key, value) {
            case (.setting(let path), .setting(let wanted)):
                let current = actual.value(path)
                if !equivalent(current, wanted, path: path) {
                    findings.append(Finding(key: key, desired: .setting(wanted), actual: .setting(current), source: source, lastChange: lastChange))
                }
                if path.field == "enabled", let integration = path.integration {
                    if wanted == .bool(true) { target.running.insert(integration) } else { target.running.remove(integration) }
                } else {
                    target.settings[path] = wanted
                }
            case (.serverCertificate(let integration), .serverCertificate(let certificate, _, _)):
                let current = actual.serverCertificates[integration]
                if current?.sha256Fingerprint != certificate.sha256Fingerprint {
                    findings.append(Finding(key: key, desired: ReportValue(certificate), actual: ReportValue(current), source: source, lastChange: lastChange))
                }
                target.serverCertificates[integration] = certificate
            case (.clientCertificate(let integration), .clientCertificate(let certificate, _, _, _)):
                let current = actual.clientCertificates[integration]
                if current?.sha256Fingerprint != certificate.sha256Fingerprint {
                    findings.append(Finding(key: key, desired: ReportValue(certificate), actual: ReportValue(current), source: source, lastChange: lastChange))
                }
                target.clientCertificates[integration] = certificate
            default:
                continue
            }
        }

        // The target must hold: every task that will run meets its preconditions.
        var problems: [PolicyProblem] = []
        for integration in target.running.sorted() {
            let unmet = target.unmetPreconditions(integration)
            guard !unmet.isEmpty else { continue }
            let enabledKey = DesiredKey.setting(SettingPath(.integration(integration), "enabled"))
            let source = desired.values[enabledKey]?.source
                ?? findings.first { $0.key.scope == .integration(integration) }?.source
                ?? desired.values.values.map(\.source).first
            guard let source else { continue }
            problems.append(PolicyProblem(source, "\(integration.rawValue): \(integration.displayName) cannot run as declared: " + unmet.joined(separator: "; ")))
        }
        if !problems.isEmpty { throw PolicyProblems(problems) }

        return Plan(findings: findings, steps: orderedSteps(findings: findings, desired: desired, actual: actual, target: target),
                    restarts: restarts(findings: findings, actual: actual, target: target))
    }

    /// Lists compared as sets where order has no meaning (Sandbox servers); otherwise plain equality.
    static func equivalent(_ a: SettingValue, _ b: SettingValue, path: SettingPath) -> Bool {
        if case .endpoints(let left) = a, case .endpoints(let right) = b,
           case .endpoints(ordered: false)? = SettingCatalog.field(path)?.kind {
            return Set(left) == Set(right)
        }
        return a == b
    }

    /// Orders the steps so that each one is valid when it runs:
    /// stop tasks → behaviour detection on → certificates → telemetry off → other settings →
    /// behaviour detection off → start tasks.
    private static func orderedSteps(findings: [Finding], desired: ResolvedDesiredState, actual: AgentState, target: AgentState) -> [PlanStep] {
        var stops: [PlanStep] = [], early: [PlanStep] = [], certificates: [PlanStep] = []
        var loosen: [PlanStep] = [], settings: [PlanStep] = [], late: [PlanStep] = [], starts: [PlanStep] = []
        let behaviorDetection = SettingPath(.app, "behaviorDetection")
        let telemetry = SettingPath(.integration(.edr), "telemetry")
        for finding in findings {
            guard let (value, _) = desired.values[finding.key] else { continue }
            switch (finding.key, value) {
            case (.setting(let path), .setting(let wanted)) where path.field == "enabled":
                guard let integration = path.integration else { continue }
                if wanted == .bool(true) { starts.append(.start(integration)) } else { stops.append(.stop(integration)) }
            case (.setting(let path), .setting(let wanted)):
                let step = PlanStep.set(path, from: actual.value(path), to: wanted)
                if path == behaviorDetection {
                    if wanted == .bool(true) { early.append(step) } else { late.append(step) }
                } else if path == telemetry, wanted == .bool(false) {
                    loosen.append(step)
                } else {
                    settings.append(step)
                }
            case (.serverCertificate(let integration), .serverCertificate(let certificate, let bytes, let path)):
                certificates.append(.pinServerCertificate(integration, certificate, bytes: bytes, path: path))
            case (.clientCertificate(let integration), .clientCertificate(let certificate, let container, let password, let file)):
                certificates.append(.installClientCertificate(integration, certificate, container: container, password: password, file: file))
            default:
                continue
            }
        }
        return stops + early + certificates + loosen + settings + late + starts
    }

    private static func restarts(findings: [Finding], actual: AgentState, target: AgentState) -> [Integration] {
        let modeChanged = findings.contains { $0.key == .setting(SettingPath(.integration(.edr), "mode")) }
        return modeChanged && actual.running.contains(.edr) && target.running.contains(.edr) ? [.edr] : []
    }
}
