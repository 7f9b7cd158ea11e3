import FoundationEssentials
import GitSource
import PolicySource
import Reconciler

/// Everything one controller runs with. What comes from files (labels, `suspend`, allowed
/// signers) is read every cycle; SIGHUP starts a cycle at once.
package struct ControllerConfiguration: Sendable {
    package var source: SourceSpec
    package var stateDirectory: URL
    /// `--label` overrides on top of the state directory's labels file.
    package var labelOverrides: [String: String]
    package var credentials: RemoteCredentials
    package var verify: VerifyMode
    /// An allowed-signers file in ssh-keygen's format.
    package var allowedSigners: String?
    /// Seconds between cycles, and the random share of it added or taken (0.1: ±10 %).
    package var interval: TimeInterval
    package var jitter: Double
    /// The longest wait after repeated errors.
    package var maximumBackoff: TimeInterval
    /// Suspended by flag (the `suspend` file in the state directory also suspends).
    package var suspend: Bool
    package var healthWindow: Double
    package var warnExpiryDays: Int
    /// Bounds one fetch.
    package var fetchTimeout: TimeInterval
    /// Whether the controller also runs the connectors between cycles.
    package var runConnectors: Bool
    /// Whether the embedded agent's sensors run (while telemetry flows; docs/architecture.md, "Sensors").
    package var runSensors = true
    /// An HTTP URL a web server or cache answers for the repository (its static `info/refs`):
    /// asked with If-None-Match before any git connection; 304 means nothing moved.
    package var probeURL: String?
    /// A PEM CA bundle for an https probe URL (as for the git remote).
    package var probeCAFile: String?
    /// `--notify`: the broker whose messages make a cycle come sooner.
    package var notify: NotifySettings?
    /// `--bundle-url`: where `tether publish` put the bundles a notified commit is read from.
    package var bundleURL: String?
    /// Whether released settings are reset to the vendor default.
    package var prune = false
    /// Whether anything reads the metrics (`/metrics`, a textfile): without a reader, a cycle
    /// does not read the connectors' store for its telemetry counts.
    package var metricsRead = true
    /// The agent governed: the embedded one (with its connectors) or the vendor's.
    package var agent = AgentChoice()

    package init(source: SourceSpec, stateDirectory: URL, labelOverrides: [String: String] = [:], credentials: RemoteCredentials = .none,
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
    package var suspendFile: URL { stateDirectory.appending(path: "suspend") }
    /// What the controller did last, for `tether status`.
    package var statusFile: URL { stateDirectory.appending(path: "controller.json") }
    package var lockFile: URL { stateDirectory.appending(path: "controller.lock") }
}
