import Foundation
import TetherTestSupport
import Testing

/// examples/prometheus: the alerting rules and the dashboard a fleet's operators import.
@Suite("Prometheus rules and Grafana dashboard")
struct PrometheusTests {
    let folder = repositoryRoot.appendingPathComponent("examples/prometheus")

    @Test("promtool accepts the alerting rules, and its unit tests show each alert firing when it should and not before")
    func rules() throws {
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool"), "make test installs promtool (Debian's prometheus)")
        let check = try runProgram("/usr/bin/promtool", ["check", "rules", "tether-alerts.yml"], in: folder.path)
        #expect(check.status == 0 && check.output.contains("SUCCESS: 7 rules found"), "\(check.output)")
        let test = try runProgram("/usr/bin/promtool", ["test", "rules", "tether-alerts.test.yml"], in: folder.path)
        #expect(test.status == 0, "\(test.output)")
    }

    @Test("Every metric the rules and the dashboard name is one a controller serves")
    func metricNames() throws {
        let env = try Environment()
        let textfile = env.state.url.appendingPathComponent("tether.prom").path
        #expect(tether(["run", "--once", "--textfile", textfile] + env.flags).code == 0)
        let served = Set(try String(contentsOfFile: textfile, encoding: .utf8).split(separator: "\n")
            .filter { $0.hasPrefix("# TYPE ") }.map { String($0.split(separator: " ")[2]) })
        #expect(served.contains("tether_connector_running") && served.contains("tether_telemetry_events_total"), "\(served.sorted())")
        for file in ["tether-alerts.yml", "tether-alerts.test.yml", "tether-dashboard.json"] {
            let text = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
            let named = Set(text.matches(of: /tether_[a-z_]+/).map { String($0.output) }
                .filter { !["tether_alerts", "tether_fleet"].contains($0) }
                .map { name in ["_bucket", "_sum", "_count"].reduce(name) { $0.hasSuffix($1) && served.contains(String($0.dropLast($1.count))) ? String($0.dropLast($1.count)) : $0 } })
            #expect(!named.isEmpty)
            #expect(named.isSubset(of: served), "\(file) names metrics no controller serves: \(named.subtracting(served).sorted())")
        }
        let dashboard = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("tether-dashboard.json"))) as? [String: Any]
        #expect((dashboard?["panels"] as? [[String: Any]])?.count == 12)
    }
}
