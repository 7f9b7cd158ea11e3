import ConnectorCore
import EmbeddedAgent
import Foundation
import IntegrationModel
import PlatformSim

// make bench, part two: telemetry through EDR to the local platform over mutual TLS, and the
// durable queue's write rate. Everything on 127.0.0.1, in one process; prints figures.

func measure(_ body: () throws -> Void) rethrows -> Double {
    let start = Date()
    try body()
    return Date().timeIntervalSince(start)
}

func rate(_ count: Int, _ seconds: Double) -> String {
    String(format: "%9.0f /s  (%d in %.2f s)", Double(count) / seconds, count, seconds)
}

let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tether-bench-\(UUID().uuidString.prefix(8))")
defer { try? FileManager.default.removeItem(at: directory) }
let pki = try PlatformPKI.create()
let platform = try PlatformSimulator(pki: pki, requireClientCertificate: true)
let agent = try Agent(stateDirectory: directory.path)
let runtime = try ConnectorRuntime(agent: agent, queueLimit: 1_000_000)
try agent.transaction(actor: "bench") {
    try agent.set(SettingPath.edr.port, to: .int(platform.port))
    try agent.set(SettingPath.edr.requestCountLimits, to: .bool(false))
    try agent.addServerCertificate(.edr, bytes: Array(pki.serverCertificatePEM.utf8), source: "bench")
    try Data("pw\n".utf8).write(to: directory.appendingPathComponent("client.pass"))
    try agent.addClientCertificate(.edr, pkcs12: try pki.issueClient(commonName: "bench", password: "pw"), password: .file("client.pass"), source: "bench")
    try agent.set(SettingPath.edr.mutualAuthentication, to: .bool(true))
    try agent.start(.edr)
}

func events(_ count: Int) -> [TelemetryEvent] {
    (0..<count).map { TelemetryEvent(type: TelemetryEvent.sensorTypes[$0 % 6], detail: ["path": "/usr/bin/tool-\($0 % 97)", "pid": String($0)]) }
}

print("Connector core, on 127.0.0.1 (platform-sim in-process, mutual TLS, EC P-256):\n")
let single = events(2_000)
let one = try measure { for event in single { try runtime.record([event]) } }
print("queue: one event per transaction      " + rate(single.count, one))
let batch = events(100_000)
let many = try measure { try runtime.record(batch) }
print("queue: 100,000 events in one call     " + rate(batch.count, many))
let depth = single.count + batch.count
var outcome: SyncOutcome?
let send = measure { outcome = runtime.sync(.edr) }
guard let outcome, outcome.succeeded else { fatalError("sync failed: \(outcome?.summary ?? "")") }
print("EDR telemetry sent over mutual TLS    " + rate(depth, send) + "  [\(outcome.summary)]")
let events = platform.events()
print("platform received                     \(events.count) events, in order: \(events.map(\.seq) == events.map(\.seq).sorted())")
let syncs = 200
let syncTime = measure { for _ in 0..<syncs { _ = runtime.sync(.edr) } }
print(String(format: "EDR sync round trips (new TLS session each) %7.1f ms each (%d syncs)", syncTime / Double(syncs) * 1000, syncs))
