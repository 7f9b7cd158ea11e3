import AgentInterface
import FoundationEssentials
import IntegrationModel
import Planner
import Policy
import PolicySource
import X509

/// Makes a revision's desired state concrete for this device.
package enum DesiredStateResolver {
    /// Makes the desired state concrete: reads each server certificate from the revision and each
    /// client container from the device. Throws `PolicyProblems` naming the policy line of every
    /// server certificate that is missing or not a certificate; client containers that cannot be
    /// read here are kept as `unresolved`, with the reason.
    /// Relative device paths (client containers, password files) are taken from `deviceDirectory`.
    package static func resolve(_ desired: DesiredState, revision: PolicyRevision, deviceDirectory: URL) throws -> ResolvedDesiredState {
        var values: [DesiredKey: (value: ResolvedValue, source: SourceLocation)] = [:]
        var unresolved: [DesiredKey: (reason: String, source: SourceLocation)] = [:]
        var problems: [PolicyProblem] = []
        for (key, sourced) in desired.values where desired.mode(key) != .ignore {
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
                case .failure(let message): unresolved[key] = (message, sourced.source)
                }
            }
        }
        if !problems.isEmpty { throw PolicyProblems(problems) }
        return ResolvedDesiredState(values: values, policies: desired.policies, unresolved: unresolved,
                                    modes: desired.modes, exceptions: desired.exceptions)
    }

    private enum ContainerRead { case success(ResolvedValue), failure(String) }

    private static func readClientContainer(_ reference: ClientCertificateReference, deviceDirectory: URL) -> ContainerRead {
        let container: [UInt8]
        var password = ""
        do {
            container = try DeviceFiles.read(reference.file, stateDirectory: deviceDirectory)
        } catch {
            return .failure("client container \(error)")
        }
        if let passwordFile = reference.passwordFile {
            do {
                password = try DeviceFiles.readSecret(passwordFile, stateDirectory: deviceDirectory)
            } catch {
                return .failure("password file \(error)")
            }
        }
        do {
            let parsed = try ClientContainer(pkcs12: container, password: password)
            return .success(.clientCertificate(parsed.certificate, container: container,
                                               password: reference.passwordFile.map(ContainerPassword.file) ?? .none, file: reference.file))
        } catch X509Error.wrongPassword {
            let origin = reference.passwordFile.map { "the password in \($0)" } ?? "an empty password (no passwordFile given)"
            return .failure("client container \(reference.file) does not open with \(origin): wrong password")
        } catch {
            return .failure("client container \(reference.file): \(error)")
        }
    }
}
