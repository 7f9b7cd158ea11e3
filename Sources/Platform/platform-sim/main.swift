import ArgumentParser
import Foundation
import PlatformSim

/// `platform-sim`: a local targeted-attack platform on loopback for tests, the demo and trying
/// policies before production.
struct PlatformSimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "platform-sim",
        abstract: "Run a local targeted-attack platform (EDR, NDR, Sandbox scanner API) over HTTPS on 127.0.0.1.",
        discussion: """
            On first start it makes a test CA and a server certificate for localhost, 127.0.0.1 and ::1 in --dir (ca.pem, server.pem and their keys) and reuses them afterwards. Pin server.pem (or ca.pem) in your policies. With --client-certificate NAME it also issues NAME.p12 (password in NAME.pass) for mutual TLS. Every request it receives is appended to --dir/received.jsonl; each event batch is logged with its events counted by type, and GET /sim/events gives the totals by integration and type. The wire format is in docs/wire-format.md. Queue a response command with
              curl --cacert DIR/ca.pem -d '{"type":"execution-prevention","rules":[]}' https://127.0.0.1:PORT/sim/commands
            (with --control-port, in plain HTTP at that port: curl -H "X-Sim-Token: $(cat DIR/control.token)" -d '…' http://127.0.0.1:CONTROL/sim/commands).
            A network-isolation command is carried out for real by the agent that receives it: its machine is cut off (loopback and the platform stay reachable) until it lifts, or `tether agent isolation-off`. Stops on Ctrl-C.
            """)

    @Option(help: "The port on 127.0.0.1 (0: any free port, printed at start).")
    var port: Int = 8443

    @Option(help: ArgumentHelp("Where the PKI, issued client containers and the record of requests live.", valueName: "dir"))
    var dir: String = ".platform-sim"

    @Flag(help: "Require a client certificate issued by the platform's CA (mutual TLS).")
    var requireClientCertificate = false

    @Option(help: ArgumentHelp("Issue a client container NAME.p12 (and NAME.pass) from the platform's CA, then serve.", valueName: "name"))
    var clientCertificate: [String] = []

    @Option(help: ArgumentHelp("Also serve /sim/commands and /sim/events in plain HTTP on 127.0.0.1 at this port, for scripts without a client certificate; requests must send X-Sim-Token with the contents of DIR/control.token.", valueName: "port"))
    var controlPort: Int?

    func run() throws {
        // Keys and client containers are the owner's alone from the moment they exist.
        umask(0o077)
        let directory = URL(fileURLWithPath: dir, isDirectory: true)
        let pki = try PlatformPKI.loadOrCreate(in: directory)
        for name in clientCertificate {
            let password = UUID().uuidString
            let container = try pki.issueClient(commonName: name, password: password)
            try Data(container).write(to: directory.appending(path: "\(name).p12"))
            try (password + "\n").write(to: directory.appending(path: "\(name).pass"), atomically: true, encoding: .utf8)
            chmod(directory.appending(path: "\(name).p12").path, 0o600)
            chmod(directory.appending(path: "\(name).pass").path, 0o600)
        }
        let platform = try PlatformSimulator(pki: pki, requireClientCertificate: requireClientCertificate, port: port,
                                             recordFile: directory.appending(path: "received.jsonl")) { line in
            print("\(Date().formatted(.iso8601)) \(line)")
            fflush(nil)
        }
        print("platform-sim listening on https://127.0.0.1:\(platform.port) (mutual TLS \(requireClientCertificate ? "required" : "off")); PKI in \(directory.path)")
        if let controlPort {
            // The token in a file only this user may read; requests without it are refused.
            let token = UUID().uuidString
            let tokenFile = directory.appending(path: "control.token")
            try (token + "\n").write(to: tokenFile, atomically: true, encoding: .utf8)
            chmod(tokenFile.path, 0o600)
            print("platform-sim control on http://127.0.0.1:\(try platform.serveControl(port: controlPort, token: token))/sim/commands "
                  + "(send X-Sim-Token: the contents of \(tokenFile.path))")
        }
        fflush(nil)
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
        while true { sleep(3600) }
    }
}

PlatformSimCommand.main()
