import ArgumentParser
import Foundation
import Reconciler

/// `tether fetch-mirror`: not for people. The controller and the commands run one fetch per
/// child process (see docs/architecture.md, "Fetching"), so that a fetch stuck on the network
/// can be killed with everything it holds.
struct FetchMirrorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fetch-mirror",
        abstract: "Run one mirror fetch for tether itself (a request on standard input, the answer on standard output).",
        shouldDisplay: false)

    func run() throws {
        let input = Array(FileHandle.standardInput.readDataToEndOfFile())
        let response = MirrorFetcher.serve(input)
        let data = (try? JSONEncoder().encode(response)) ?? Data()
        FileHandle.standardOutput.write(data)
        if response.error != nil { throw ExitCode(1) }
    }

    /// `tether` itself: this process when it is tether, else the tether built beside it (a test
    /// runner in the build folder).
    static var executable: String {
        let current = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let url = URL(fileURLWithPath: current)
        if url.lastPathComponent == "tether" { return current }
        return url.deletingLastPathComponent().appendingPathComponent("tether").path
    }
}
