import ArgumentParser
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import GitSource
import IntegrationModel
import MQTT
import PolicySource

/// The broker options `run` and `publish` share.
struct NotifyOptions: ParsableArguments {
    @Option(name: .customLong("notify"), help: ArgumentHelp("An MQTT broker and topic: mqtt://HOST:PORT/TOPIC, or mqtts://… for TLS.", valueName: "url"))
    var url: String?

    @Option(name: .customLong("notify-ca"), help: ArgumentHelp("With mqtts: the PEM CA that issued the broker's certificate (the only one trusted).", valueName: "file"))
    var caFile: String?

    @Option(name: .customLong("notify-cert"), help: ArgumentHelp("With mqtts: a client certificate (PEM), when the broker asks for one.", valueName: "file"))
    var certificateFile: String?

    @Option(name: .customLong("notify-key"), help: ArgumentHelp("The client certificate's private key (PEM, not encrypted).", valueName: "file"))
    var keyFile: String?

    /// The broker's address, checked; nil without --notify.
    func address() throws -> MQTTAddress? {
        guard let url else { return nil }
        do {
            let address = try MQTTAddress(parsing: url)
            if address.secure && caFile == nil {
                throw ValidationError("--notify \(url) is mqtts: name the broker's CA with --notify-ca FILE")
            }
            if !address.secure && (caFile != nil || certificateFile != nil) {
                throw ValidationError("--notify-ca and --notify-cert need an mqtts:// broker, not \(url)")
            }
            return address
        } catch let error as MQTTError {
            throw ValidationError("--notify: \(error.description)")
        }
    }

    func validate() throws {
        _ = try address()
        if (certificateFile == nil) != (keyFile == nil) {
            throw ValidationError("--notify-cert and --notify-key go together: name both or neither")
        }
        if url == nil && (caFile != nil || certificateFile != nil) {
            throw ValidationError("--notify-ca, --notify-cert and --notify-key need --notify mqtts://HOST:PORT/TOPIC")
        }
    }

    /// The TLS settings for an mqtts broker.
    var tls: MQTTTLS? { caFile.map { MQTTTLS(caFile: $0, certificateFile: certificateFile, keyFile: keyFile) } }
}

/// `tether publish`
struct PublishCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Publish a ref as static files (a ref index and git bundles) and, with --notify, tell controllers through an MQTT broker.",
        discussion: """
            Run by CI after a merge, or by the git server's hook. It writes into the --out folder, which any web server, CDN or object store can serve as it is:

              info/refs                        the ref index (what --probe-url reads)
              bundles/<commit>.bundle          every object of the commit
              bundles/<from>-<commit>.bundle   what a controller at an earlier published commit lacks (the last --deltas of them)
              tether/published                 the commits published so far

            Bundles are written before the index that names them, each through a temporary file renamed into place, so a reader never sees half a file. With --notify, the broker then keeps the message {repository, ref, commit, bundle, publishedAt, signature} on the topic (retained, QoS 1): controllers running `tether run --notify` on that topic look at once (after a random delay within their --notify-spread) instead of at their next interval. With --sign-key the message is signed, and controllers with --bundle-url then read the commit from its bundle instead of asking git (an unsigned message only makes them ask git sooner).

            Neither the broker nor the folder is trusted: a controller still verifies every revision (--verify, anti-rollback) before it reads a file of it.

            Examples:
              tether publish --repo . --ref main --out /srv/www/policies
              tether publish --repo /srv/git/policies.git --ref main --out /srv/www/policies --notify mqtt://broker.example:1883/tether/policies --sign-key /etc/ci/publish-key
            """)

    @Option(help: ArgumentHelp("The repository: a local path (a CI checkout, or a git server's bare repository).", valueName: "path"))
    var repo: String = "."

    @Option(help: ArgumentHelp("The branch or tag to publish (default: the branch HEAD points at).", valueName: "ref"))
    var ref: String = "HEAD"

    @Option(help: ArgumentHelp("The folder to write (made if missing).", valueName: "folder"))
    var out: String

    @Option(help: ArgumentHelp("How many earlier published commits get a bundle of just what they lack.", valueName: "count"))
    var deltas: Int = Publication.defaultDeltas

    @Option(name: .customLong("sign-key"), help: ArgumentHelp("Sign the message with this SSH key (a private key, or a public key whose private half the ssh-agent holds), as git signs commits; controllers with --bundle-url take a commit from a bundle only when an allowed signer signed its message.", valueName: "file"))
    var signKey: String?

    @OptionGroup var notify: NotifyOptions

    @Option(name: .customLong("notify-timeout"), help: ArgumentHelp("Seconds to reach the broker and have the message acknowledged.", valueName: "seconds"))
    var notifyTimeout: Double = 30

    func validate() throws {
        if signKey != nil && notify.url == nil { throw ValidationError("--sign-key signs the message --notify sends: add --notify mqtt://HOST:PORT/TOPIC") }
        if GitRepository.isRemote(repo) {
            throw ValidationError("--repo \(GitRepository.redacted(repo)): publish reads a local repository; run it in a checkout or in the git server's repository")
        }
        guard (0...1000).contains(deltas) else { throw ValidationError("--deltas must be between 0 and 1000") }
        guard notifyTimeout > 0 else { throw ValidationError("--notify-timeout must be more than 0 seconds") }
    }

    func run() throws {
        let repository: GitRepository
        let refName: String
        let commit: GitCommit
        do {
            repository = try GitRepository(path: repo)
            refName = try repository.referenceName(ref)
            commit = try repository.resolve(refName)
        } catch let error as GitError {
            throw CommandError("error: \(error.message)")
        }
        let summary: PublicationSummary
        do {
            summary = try Publication.publish(repository: repository, ref: refName, commit: commit, into: out, deltas: deltas)
        } catch let error as SourceError {
            throw CommandError("error: \(error.message)")
        } catch {
            throw CommandError("error: \(error)")
        }
        Console.out("published \(refName) at \(commit.id.prefix(12)) (\"\(commit.summary)\") into \(out)\(summary.unchanged ? " (it was already there)" : "")")
        for file in summary.written {
            Console.out("  \(file.path)  \(Self.size(file.bytes))")
        }
        Console.out("  info/refs")
        guard let address = try notify.address() else { return }
        var message = PublishedRevision(repository: GitRepository.redacted(repo), ref: refName, commit: commit.id, bundle: summary.fullBundle,
                                        publishedAt: Timestamp.string(Date()))
        if let signKey {
            do { try message.sign(keyFile: signKey) } catch { throw CommandError("error: the files are published, but the message was not sent: \(error)") }
        }
        do {
            let client = try MQTTClient(address: address, tls: notify.tls, clientID: "tether-publish-\(getpid())")
            try client.publishRetained(message.message, timeout: notifyTimeout)
        } catch {
            throw CommandError("error: the files are published, but the broker was not told: \(error.description)\nRun the same command again to retry; the files are kept.")
        }
        Console.out("notified \(address) (retained, QoS 1)")
    }

    static func size(_ bytes: Int) -> String {
        bytes < 1024 ? "\(bytes) bytes" : bytes < 1 << 20 ? "\((Double(bytes) / 1024 * 10).rounded() / 10) KiB" : "\((Double(bytes) / 1048576 * 10).rounded() / 10) MiB"
    }
}
