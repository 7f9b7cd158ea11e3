// swift-tools-version:6.0
import PackageDescription

/// Tether: a GitOps controller for an endpoint agent's threat-platform integrations.
/// C libraries come from Debian's -dev packages (see scripts/install-deps); each is
/// wrapped by exactly one Swift module that owns its handles.
let package = Package(
    name: "Tether",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "tether", targets: ["tether"]),
        .executable(name: "tether-fetch", targets: ["tether-fetch"]),
        .executable(name: "platform-sim", targets: ["platform-sim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // C libraries as system-library targets.
        .systemLibrary(name: "CGit2", pkgConfig: "libgit2", providers: [.apt(["libgit2-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // Non-variadic wrappers and macros Swift cannot import.
        .target(name: "CCurlShims", dependencies: ["CCurl"]),
        .target(name: "CGit2Shims", dependencies: ["CGit2"]),
        .target(name: "COpenSSLShims", dependencies: ["COpenSSL"]),
        .target(name: "CProcessShims"),
        // Tether's release and commit, stamped by `make package` (scripts/package).
        .target(name: "CTetherVersion"),
        // The kernel interfaces the sensors read: the netlink process connector and fanotify.
        .target(name: "CSensorShims"),
        // Running a program as a child with a deadline (tether-fetch, kesl-control).
        .target(name: "ChildProcess", dependencies: ["CProcessShims"]),

        // One Swift module per C library.
        .target(name: "GitSource", dependencies: ["CGit2", "CGit2Shims"]),
        .target(name: "X509", dependencies: ["COpenSSL", "COpenSSLShims"]),
        .target(name: "HTTPServer"),
        .target(name: "HTTPTransport", dependencies: ["CCurl", "CCurlShims"]),
        .target(name: "SQLiteDB", dependencies: ["CSQLite"]),

        // The domain.
        .target(name: "IntegrationModel"),
        .target(name: "Policy", dependencies: ["IntegrationModel", "Yams"]),
        // The agent: its state, rules and snapshot behind a protocol (AgentInterface); the embedded
        // agent's SQLite store (EmbeddedAgent); its network side, the connectors (ConnectorCore).
        .target(name: "AgentInterface", dependencies: ["IntegrationModel", "X509"]),
        // What every backend keeps of Tether's own work: the applied state and the change log.
        .target(name: "AgentRecords", dependencies: ["AgentInterface", "SQLiteDB"]),
        .target(name: "EmbeddedAgent", dependencies: ["AgentInterface", "AgentRecords", "IntegrationModel", "SQLiteDB", "X509"]),
        // The vendor's agent, driven through its command line kesl-control (docs/architecture.md, "The vendor's agent").
        .target(name: "KESLAgent", dependencies: ["AgentInterface", "AgentRecords", "ChildProcess", "IntegrationModel", "SQLiteDB", "X509"]),
        // The embedded agent's sensors: processes, network connections and file changes from Linux itself.
        .target(name: "Sensors", dependencies: ["CSensorShims", "IntegrationModel", "X509"]),
        // The wire format the connectors and the platform share (docs/wire-format.md), as Codable types.
        .target(name: "WireFormat", dependencies: ["IntegrationModel"]),
        .target(name: "ConnectorCore", dependencies: ["AgentInterface", "EmbeddedAgent", "IntegrationModel", "Sensors", "SQLiteDB", "X509", "HTTPTransport", "WireFormat"]),
        // Where policies come from: revision, mirror, fetch, verification, anti-rollback.
        .target(name: "PolicySource", dependencies: ["ChildProcess", "GitSource", "Policy", "X509"]),
        // The pure planner: desired × actual × last applied → findings and ordered steps.
        .target(name: "Planner", dependencies: ["AgentInterface", "IntegrationModel", "Policy", "X509"]),
        // The orchestration: one pipeline from revision to recorded apply, history, restore points, health window.
        .target(name: "Reconciler", dependencies: ["Planner", "AgentInterface", "EmbeddedAgent", "KESLAgent", "ConnectorCore", "IntegrationModel", "Policy", "PolicySource", "SQLiteDB", "X509"]),
        .target(name: "Reports", dependencies: ["ConnectorCore", "IntegrationModel", "Planner", "Policy", "PolicySource", "Reconciler"]),
        .target(name: "Controller", dependencies: [
            "Reconciler", "Planner", "PolicySource", "AgentInterface", "EmbeddedAgent", "KESLAgent", "ConnectorCore", "GitSource", "Sensors", "X509", "Policy",
            "IntegrationModel", "HTTPServer", "HTTPTransport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "TetherCLI", dependencies: [
            "IntegrationModel", "Policy", "PolicySource", "AgentInterface", "EmbeddedAgent", "KESLAgent", "ConnectorCore", "Planner", "Reconciler", "Reports",
            "CTetherVersion", "GitSource", "HTTPTransport", "Sensors", "SQLiteDB", "WireFormat", "X509", "Controller", "Yams",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "tether", dependencies: ["TetherCLI"]),
        // One mirror fetch in a process tether can kill (docs/architecture.md, "Fetching"): small, no full Foundation.
        .executableTarget(name: "tether-fetch", dependencies: ["GitSource", "CProcessShims"]),

        // The local platform: a real HTTPS server on loopback for tests, the demo and trying policies.
        // TLS under HTTPServer and a certificate authority, over X509's OpenSSL: never linked into tether.
        .target(name: "PlatformTLS", dependencies: ["HTTPServer", "X509", "COpenSSL", "COpenSSLShims"]),
        .target(name: "PlatformSim", dependencies: ["HTTPServer", "IntegrationModel", "PlatformTLS", "WireFormat", "X509"]),
        .executableTarget(name: "platform-sim", dependencies: ["PlatformSim", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // make bench: connector throughput and queue write rates.
        .executableTarget(name: "tether-bench", dependencies: ["Controller", "ConnectorCore", "EmbeddedAgent", "PlatformSim", "IntegrationModel", "PolicySource", "Sensors",
                                                            .product(name: "Logging", package: "swift-log")]),
        // make fuzz: libFuzzer targets for the policy decoder and the health endpoint's request reader.
        .target(name: "FuzzSupport"),
        .executableTarget(name: "fuzz-policy", dependencies: ["FuzzSupport", "Policy"]),
        .executableTarget(name: "fuzz-http-request", dependencies: ["FuzzSupport", "HTTPServer"]),

        // Test support: real git repositories, a test PKI and TLS peers on loopback. One test target per module.
        .target(name: "TetherTestSupport", dependencies: ["HTTPServer", "PlatformTLS"]),
        .testTarget(name: "X509Tests", dependencies: ["X509", "TetherTestSupport"]),
        .testTarget(name: "GitSourceTests", dependencies: ["GitSource", "X509", "TetherTestSupport"]),
        .testTarget(name: "HTTPTransportTests", dependencies: ["HTTPTransport", "TetherTestSupport"]),
        .testTarget(name: "HTTPServerTests", dependencies: ["HTTPServer", "TetherTestSupport"]),
        .testTarget(name: "KESLAgentTests", dependencies: ["KESLAgent", "AgentInterface", "ChildProcess", "IntegrationModel", "TetherTestSupport"]),
        .testTarget(name: "SQLiteDBTests", dependencies: ["SQLiteDB"]),
        .testTarget(name: "SensorsTests", dependencies: ["Sensors", "IntegrationModel"]),
        .testTarget(name: "WireFormatTests", dependencies: ["WireFormat", "IntegrationModel"]),
        .testTarget(name: "IntegrationModelTests", dependencies: ["IntegrationModel"]),
        .testTarget(name: "PolicyTests", dependencies: ["Policy", "IntegrationModel"]),
        .testTarget(name: "PlannerTests", dependencies: ["Planner", "AgentInterface", "IntegrationModel", "Policy", "PlatformTLS", "X509"]),
        .testTarget(name: "EmbeddedAgentTests", dependencies: ["EmbeddedAgent", "AgentInterface", "IntegrationModel", "TetherTestSupport"]),
        .testTarget(name: "ConnectorCoreTests", dependencies: ["ConnectorCore", "EmbeddedAgent", "AgentInterface", "PlatformSim", "IntegrationModel", "WireFormat", "X509", "TetherTestSupport"]),
        .testTarget(name: "TetherCLITests", dependencies: [
            "TetherCLI", "AgentInterface", "EmbeddedAgent", "ConnectorCore", "PolicySource", "Planner", "Reconciler", "IntegrationModel",
            "PlatformSim", "Controller", "GitSource", "SQLiteDB", "WireFormat", "X509", "TetherTestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
    ]
)
