import Foundation
import GitSource
import PolicySource
import Reconciler

/// Everything one controller runs with. What comes from files (labels, `suspend`, allowed
/// signers) is read every cycle; SIGHUP starts a cycle at once.
public struct ControllerConfiguration: Sendable {
    public var source: SourceSpec
    public var stateDirectory: URL
    /// `--label` overrides on top of the state directory's labels file.
    public var labelOverrides: [String: String]
    public var credentials: RemoteCredentials
    public var verify: VerifyMode
    /// An allowed-signers file in ssh-keygen's format.
    public var allowedSigners: String?
    /// Seconds between cycles, and the random share of it added or taken (0.1: ±10 %).
    public var interval: TimeInterval
    public var jitter: Double
    /// The longest wait after repeated errors.
    public var maximumBackoff: TimeInterval
    /// Suspended by flag (the `suspend` file in the state directory also suspends).
    public var suspend: Bool
    public var healthWindow: Double
    public var warnExpiryDays: Int
    /// Bounds one fetch.
    public var fetchTimeout: TimeInterval
    /// Whether the controller also runs the connectors between cycles.
    public var runConnectors: Bool
    /// Whether the embedded agent's sensors run (while telemetry flows; docs/architecture.md, "Sensors").
    public var runSensors = true
    /// An HTTP URL a web server or cache answers for the repository (its static `info/refs`):
    /// asked with If-None-Match before any git connection; 304 means nothing moved.
    public var probeURL: String?
    /// A PEM CA bundle for an https probe URL (as for the git remote).
    public var probeCAFile: String?
    /// Whether released settings are reset to the vendor default.
    public var prune = false
    /// The agent governed: the embedded one (with its connectors) or the vendor's.
    public var agent = AgentChoice()

    public init(source: SourceSpec, stateDirectory: URL, labelOverrides: [String: String] = [:], credentials: RemoteCredentials = .none,
                verify: VerifyMode = .off, allowedSigners: String? = nil, interval: TimeInterval = 300, jitter: Double = 0.1,
                maximumBackoff: TimeInterval = 3600, suspend: Bool = false, healthWindow: Double = 0, warnExpiryDays: Int = 30,
                fetchTimeout: TimeInterval = 60, runConnectors: Bool = true) {
        self.source = source
        self.stateDirectory = stateDirectory
        self.labelOverrides = labelOverrides
        self.credentials = credentials
        self.verify = verify
        self.allowedSigners = allowedSigners
        self.interval = interval
        self.jitter = jitter
        self.maximumBackoff = maximumBackoff
        self.suspend = suspend
        self.healthWindow = healthWindow
        self.warnExpiryDays = warnExpiryDays
        self.fetchTimeout = fetchTimeout
        self.runConnectors = runConnectors
    }

    /// The file whose presence suspends the controller.
    public var suspendFile: URL { stateDirectory.appendingPathComponent("suspend") }
    /// What the controller did last, for `tether status`.
    public var statusFile: URL { stateDirectory.appendingPathComponent("controller.json") }
    public var lockFile: URL { stateDirectory.appendingPathComponent("controller.lock") }
}
