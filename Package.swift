// swift-tools-version:6.1
import PackageDescription

/// Tether: a GitOps controller for an endpoint agent's threat-platform integrations.
///
/// `Sources/` holds one folder per layer, in the order the data flows (docs/architecture.md
/// opens with the same picture); this file lists them in that order. A module depends only on
/// modules of its own or an earlier layer. C libraries come from Debian's -dev packages (see
/// scripts/install-deps); each is wrapped by exactly one Swift module that owns its handles.

/// A library target in `Sources/LAYER/NAME`.
func module(_ name: String, in layer: String, _ dependencies: [Target.Dependency] = []) -> Target {
    .target(name: name, dependencies: dependencies, path: "Sources/\(layer)/\(name)", swiftSettings: swiftSettings)
}

/// Generic types are instantiated through their metadata accessors, not by demangling their
/// names: a name's generic requirements cost the runtime a scan of every protocol conformance
/// in the binary, at each type's first use (docs/architecture.md, "What an endpoint pays").
/// Every configuration, so that the tests run the code that ships.
let swiftSettings: [SwiftSetting] = [.unsafeFlags(["-Xfrontend", "-disable-concrete-type-metadata-mangled-name-accessors"])]

/// A C library found with pkg-config, its module map in `Sources/System/NAME`.
func systemLibrary(_ name: String, pkgConfig: String, apt: String) -> Target {
    .systemLibrary(name: name, path: "Sources/System/\(name)", pkgConfig: pkgConfig, providers: [.apt([apt])])
}

/// A program in `Sources/LAYER/NAME`.
func program(_ name: String, in layer: String, _ dependencies: [Target.Dependency]) -> Target {
    .executableTarget(name: name, dependencies: dependencies, path: "Sources/\(layer)/\(name)", swiftSettings: swiftSettings)
}

/// The tests of a module of `layer`, in `Tests/LAYER/NAMETests`.
func tests(_ name: String, in layer: String, _ dependencies: [Target.Dependency]) -> Target {
    .testTarget(name: name, dependencies: dependencies, path: "Tests/\(layer)/\(name)")
}

let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")

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
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // ── System: the C libraries and kernel interfaces, each owned by one Swift module ──
        // libgit2's headers only: CGit2Shims loads the library when a repository is first opened.
        .systemLibrary(name: "CGit2", path: "Sources/System/CGit2", providers: [.apt(["libgit2-dev"])]),
        // OpenSSL's headers only: COpenSSLShims loads libssl (and with it libcrypto) on first use.
        .systemLibrary(name: "COpenSSL", path: "Sources/System/COpenSSL", providers: [.apt(["libssl-dev"])]),
        // libcurl's headers only: CCurlShims loads the library when a transfer first needs it.
        .systemLibrary(name: "CCurl", path: "Sources/System/CCurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        // SQLite's and libyaml's headers only: CSQLiteShims and CYAMLShims load them on first use.
        .systemLibrary(name: "CSQLite", path: "Sources/System/CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CYAML", path: "Sources/System/CYAML", providers: [.apt(["libyaml-dev"])]),
        // Non-variadic wrappers and macros Swift cannot import.
        module("CCurlShims", in: "System", ["CCurl"]),
        // Exports the two mbedTLS functions and libssh2_init it defines, so that libgit2 and its
        // libraries, loaded later, bind to them.
        .target(name: "CGit2Shims", dependencies: ["CGit2", "CLazyLibrary"], path: "Sources/System/CGit2Shims",
                linkerSettings: [.unsafeFlags(["-Xlinker", "--export-dynamic-symbol=mbedtls_x509_crt_parse_file",
                                               "-Xlinker", "--export-dynamic-symbol=mbedtls_x509_crt_parse_path",
                                               "-Xlinker", "--export-dynamic-symbol=libssh2_init"])]),
        module("COpenSSLShims", in: "System", ["COpenSSL", "CLazyLibrary"]),
        // Loading a C library on first use (lazy_library.h), for the loader.c files scripts/c-forwarders writes.
        // The version script is for release builds, which export every symbol (--export-dynamic);
        // a debug build exports none of its own, and the fuzz build must keep exporting ASan's.
        .target(name: "CLazyLibrary", path: "Sources/System/CLazyLibrary", exclude: ["exports.map"],
                linkerSettings: [.unsafeFlags(["-Xlinker", "--version-script=\(Context.packageDirectory)/Sources/System/CLazyLibrary/exports.map"],
                                              .when(configuration: .release))]),
        // SQLite and libyaml, loaded when a process first opens a store or reads YAML.
        module("CSQLiteShims", in: "System", ["CSQLite", "CLazyLibrary"]),
        module("CYAMLShims", in: "System", ["CYAML", "CLazyLibrary"]),
        // libmosquitto, loaded when a process first speaks MQTT (run --notify, publish --notify).
        module("CMQTTShims", in: "System"),
        module("CProcessShims", in: "System"),
        // Tether's release and commit, stamped by `make package` (scripts/package).
        module("CTetherVersion", in: "System"),
        // Locks, threads and the text helpers Foundation's full edition would otherwise bring.
        module("Primitives", in: "System", ["CProcessShims"]),
        // libnftables, loaded when an isolation first needs it, run in a chosen network namespace.
        module("CNFTablesShims", in: "System"),
        // Network isolation as an nftables table of Tether's own (docs/architecture.md, "Network isolation").
        module("Firewall", in: "System", ["CNFTablesShims"]),
        // The kernel interfaces the sensors read: the netlink process connector and fanotify.
        module("CSensorShims", in: "System"),
        // Running a program as a child with a deadline (tether-fetch, kesl-control).
        module("ChildProcess", in: "System", ["CProcessShims"]),
        module("GitSource", in: "System", ["CGit2", "CGit2Shims", "Primitives"]),
        // Notifications through an MQTT broker (docs/architecture.md, "Push: notifications and bundles").
        module("MQTT", in: "System", ["CMQTTShims", "Primitives"]),
        module("X509", in: "System", ["Primitives", "COpenSSL", "COpenSSLShims"]),
        module("HTTPServer", in: "System", ["Primitives"]),
        module("HTTPTransport", in: "System", ["CCurl", "CCurlShims"]),
        module("SQLiteDB", in: "System", ["Primitives", "CSQLite", "CSQLiteShims"]),
        // YAML read into nodes with their places, over libyaml's parser.
        module("YAMLReader", in: "System", ["CYAML", "CYAMLShims"]),

        // ── Model: the settings catalog and the policy language ──
        module("IntegrationModel", in: "Model", ["Primitives"]),
        module("Policy", in: "Model", ["Primitives", "IntegrationModel", "YAMLReader"]),

        // ── Source: where policies come from: revision, mirror, fetch, verification, anti-rollback ──
        module("PolicySource", in: "Source", ["Primitives", "ChildProcess", "GitSource", "IntegrationModel", "Policy", "X509"]),

        // ── Agents: the interface every backend offers, and the backends ──
        module("AgentInterface", in: "Agents", ["Primitives", "IntegrationModel", "X509"]),
        // What every backend keeps of Tether's own work: the applied state and the change log.
        module("AgentRecords", in: "Agents", ["AgentInterface", "IntegrationModel", "SQLiteDB"]),
        module("EmbeddedAgent", in: "Agents", ["Primitives", "AgentInterface", "AgentRecords", "IntegrationModel", "SQLiteDB", "X509"]),
        // The vendor's agent, driven through its command line kesl-control (docs/architecture.md, "The vendor's agent").
        module("KESLAgent", in: "Agents", ["Primitives", "AgentInterface", "AgentRecords", "ChildProcess", "IntegrationModel", "SQLiteDB", "X509"]),

        // ── Endpoint: the embedded agent's sensors, wire format and connectors ──
        // The wire format the connectors and the platform share (docs/wire-format.md), as Codable types.
        module("WireFormat", in: "Endpoint", ["IntegrationModel"]),
        // Its BPF programs (bpf/*.bpf.c) are compiled by the build and embedded (Plugins/BPFPrograms).
        .target(name: "Sensors", dependencies: ["Primitives", "CSensorShims", "IntegrationModel", "WireFormat", "X509"],
                path: "Sources/Endpoint/Sensors", exclude: ["bpf"], swiftSettings: swiftSettings, plugins: ["BPFPrograms"]),
        .plugin(name: "BPFPrograms", capability: .buildTool(), path: "Plugins/BPFPrograms"),
        module("ConnectorCore", in: "Endpoint", ["ChildProcess", "Firewall", "Primitives", "AgentInterface", "EmbeddedAgent", "IntegrationModel", "Sensors", "SQLiteDB", "X509", "HTTPTransport", "WireFormat"]),

        // ── Planning: desired × actual × last applied → findings and ordered steps (pure) ──
        module("Planner", in: "Planning", ["Primitives", "AgentInterface", "IntegrationModel", "Policy", "X509"]),

        // ── Reconciling: one driver from revision to recorded apply; the controller that runs it ──
        module("Reconciler", in: "Reconciling", ["Primitives", "GitSource", "Planner", "AgentInterface", "AgentRecords", "EmbeddedAgent", "KESLAgent", "ConnectorCore", "IntegrationModel", "Policy", "PolicySource", "SQLiteDB", "X509"]),
        module("Controller", in: "Reconciling", [
            "Primitives", "Reconciler", "Planner", "PolicySource", "AgentInterface", "ConnectorCore", "GitSource", "Sensors", "X509", "Policy",
            "IntegrationModel", "HTTPServer", "HTTPTransport", "MQTT", logging,
        ]),

        // ── Reporting: text, JSON, Markdown, HTML, SARIF, JUnit; the fleet view ──
        module("Reports", in: "Reporting", ["Primitives", "ConnectorCore", "Firewall", "IntegrationModel", "Planner", "Policy", "PolicySource", "Reconciler"]),

        // ── Programs: the command line and the small programs beside it ──
        module("TetherCLI", in: "Programs", [
            "Primitives", "IntegrationModel", "Policy", "PolicySource", "AgentInterface", "EmbeddedAgent", "KESLAgent", "ConnectorCore", "Planner", "Reconciler", "Reports",
            "CTetherVersion", "Firewall", "GitSource", "HTTPTransport", "Sensors", "SQLiteDB", "WireFormat", "X509", "Controller", "MQTT", "YAMLReader", argumentParser, logging,
        ]),
        program("tether", in: "Programs", ["TetherCLI"]),
        // One mirror fetch in a process tether can kill (docs/architecture.md, "Fetching"): small, no full Foundation.
        program("tether-fetch", in: "Programs", ["GitSource", "Primitives", "CProcessShims"]),
        // make bench: connector throughput, queue write rates, the idle controller.
        program("tether-bench", in: "Programs", ["Controller", "ConnectorCore", "EmbeddedAgent", "MQTT", "PlatformSim", "IntegrationModel", "PolicySource", "Reconciler", "Sensors", "WireFormat", logging]),

        // ── Platform: the local platform, a real HTTPS server on loopback for tests, the demo and
        // trying policies. TLS under HTTPServer and a certificate authority: never linked into tether ──
        module("PlatformTLS", in: "Platform", ["HTTPServer", "X509", "COpenSSL", "COpenSSLShims"]),
        module("PlatformSim", in: "Platform", ["HTTPServer", "IntegrationModel", "PlatformTLS", "WireFormat", "X509"]),
        program("platform-sim", in: "Platform", ["PlatformSim", argumentParser]),

        // ── Support: test fixtures and fuzzing (make fuzz) ──
        module("TetherTestSupport", in: "Support", ["CProcessShims", "HTTPServer", "PlatformTLS"]),
        module("FuzzSupport", in: "Support"),
        program("fuzz-policy", in: "Support", ["FuzzSupport", "Policy"]),
        program("fuzz-http-request", in: "Support", ["FuzzSupport", "HTTPServer"]),
        program("fuzz-vendor-ini", in: "Support", ["FuzzSupport", "KESLAgent"]),
        program("fuzz-documents", in: "Support", ["FuzzSupport", "AgentInterface", "Reports"]),

        // ── Tests: one target per module with logic, in the layer of the module it tests ──
        tests("X509Tests", in: "System", ["X509", "TetherTestSupport"]),
        tests("GitSourceTests", in: "System", ["GitSource", "X509", "TetherTestSupport"]),
        tests("HTTPTransportTests", in: "System", ["HTTPTransport", "TetherTestSupport"]),
        tests("HTTPServerTests", in: "System", ["HTTPServer", "TetherTestSupport"]),
        tests("MQTTTests", in: "System", ["MQTT", "TetherTestSupport"]),
        tests("SQLiteDBTests", in: "System", ["SQLiteDB"]),
        tests("YAMLReaderTests", in: "System", ["YAMLReader"]),
        tests("IntegrationModelTests", in: "Model", ["IntegrationModel"]),
        tests("PolicyTests", in: "Model", ["Policy", "IntegrationModel"]),
        tests("EmbeddedAgentTests", in: "Agents", ["EmbeddedAgent", "AgentInterface", "IntegrationModel", "TetherTestSupport"]),
        tests("KESLAgentTests", in: "Agents", ["KESLAgent", "AgentInterface", "ChildProcess", "IntegrationModel", "TetherTestSupport"]),
        tests("SensorsTests", in: "Endpoint", ["Sensors", "IntegrationModel", "WireFormat", "X509", "TetherTestSupport"]),
        tests("WireFormatTests", in: "Endpoint", ["WireFormat", "IntegrationModel"]),
        tests("ConnectorCoreTests", in: "Endpoint", ["ConnectorCore", "EmbeddedAgent", "Firewall", "AgentInterface", "PlatformSim", "IntegrationModel", "SQLiteDB", "WireFormat", "X509", "TetherTestSupport"]),
        tests("PlannerTests", in: "Planning", ["Planner", "AgentInterface", "IntegrationModel", "Policy", "PlatformTLS", "X509"]),
        tests("ReconcilerTests", in: "Reconciling", ["Reconciler", "AgentInterface", "GitSource", "IntegrationModel", "Planner", "PolicySource", "SQLiteDB", "X509", "TetherTestSupport"]),
        tests("ControllerTests", in: "Reconciling", ["Controller", "IntegrationModel", "PolicySource", "Reconciler", "TetherTestSupport", logging]),
        tests("TetherCLITests", in: "Programs", [
            "TetherCLI", "AgentInterface", "EmbeddedAgent", "ConnectorCore", "PolicySource", "Planner", "Reconciler", "IntegrationModel",
            "PlatformSim", "Controller", "GitSource", "MQTT", "SQLiteDB", "WireFormat", "X509", "TetherTestSupport", logging,
        ]),
    ]
)
