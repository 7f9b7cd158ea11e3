import FoundationEssentials
import MQTT
import Logging
import PolicySource
import Primitives

// `tether run --notify`: a broker's message that a ref moved makes the next cycle come sooner,
// after a random delay within the spread, so a fleet does not arrive at once. Nothing else is
// taken from it: the cycle reads the revision from git (or, with --bundle-url, from the
// published bundles) and vouches for it as always. docs/architecture.md, "Push: notifications
// and bundles".

/// Where the controller listens, and how it spreads its look.
package struct NotifySettings: Sendable {
    package var address: MQTTAddress
    package var tls: MQTTTLS?
    /// A message starts a cycle after a random delay of up to this many seconds.
    package var spread: TimeInterval
    /// Seconds of silence after which the broker and the controller take the link for dead.
    package var keepalive: Int
    /// The MQTT client id: unique per endpoint (a second client with the same id pushes the first off).
    package var clientID: String

    package init(address: MQTTAddress, tls: MQTTTLS?, spread: TimeInterval = 10, keepalive: Int = 60, clientID: String) {
        self.address = address
        self.tls = tls
        self.spread = spread
        self.keepalive = keepalive
        self.clientID = clientID
    }
}

/// A message that made (or will make) a cycle look sooner, and when it arrived.
struct Notice: Sendable {
    let revision: PublishedRevision
    let arrivedAt: Date
}

/// What became of one message, as the log and `tether_notify_messages_total` say it.
enum NoticeOutcome: String, CaseIterable {
    /// A cycle is due within the spread.
    case scheduled
    /// A cycle was already due; this message replaced the one waiting.
    case coalesced
    /// The commit is the one applied: nothing to do (the retained message, on every connection).
    case current
    /// About another ref.
    case ignored
    /// Not a publication message, or larger than a message may be.
    case malformed
    /// Its commit was reconciled (status only; the histogram counts these).
    case applied
    /// Its commit was refused by the cycle (unsigned, not descending from the applied one) or
    /// is not what the ref holds.
    case refused
}

/// Messages waiting for a cycle, and the broker link's state. Messages arrive on libmosquitto's
/// thread and cycles take them on the loop's: every member is behind one lock.
package final class NotificationInbox: @unchecked Sendable {
    private let lock = Lock()
    /// The message waiting for a cycle, and when that cycle is due.
    private var pending: (notice: Notice, due: Date)?
    private var linkState: (up: Bool, detail: String, since: Date)
    private var last: (notice: Notice, outcome: NoticeOutcome)?
    private var statusChanged = false
    private var linkReported = false
    /// When a cycle last took a message: the next notified cycle comes `minimumGap` later at
    /// the earliest, so a broker cannot set how often an endpoint (and its git host) works.
    private var lastTaken: Date?
    /// Commits whose messages were refused lately: the same message again (a retained one, at
    /// every reconnection) schedules nothing.
    private var refused: [String] = []
    static let refusedKept = 64
    let settings: NotifySettings

    init(settings: NotifySettings, now: Date) {
        self.settings = settings
        linkState = (false, "connecting", now)
    }

    /// When a cycle is due for a waiting message; nil when none waits.
    package var due: Date? { lock.withLock { pending?.due } }

    /// The least time between two cycles that messages start.
    var minimumGap: TimeInterval { max(1, settings.spread / 2) }

    /// Takes the message waiting, if any: the cycle starting now answers it.
    func take(now: Date) -> Notice? {
        lock.withLock {
            defer { pending = nil }
            if pending != nil { lastTaken = now }
            return pending?.notice
        }
    }

    /// Files a message for `wanted` (the ref `--ref` names), given the commit applied now.
    func receive(_ message: MQTTMessage, wanted: String?, applied: String?, now: Date) -> (NoticeOutcome, String) {
        guard message.topic == settings.address.topic else {
            return (.malformed, "a message on another topic than \(settings.address.topic) was dropped")
        }
        guard message.payload.count == message.size, !message.payload.isEmpty else {
            return (.malformed, "a message of \(message.size) bytes on \(message.topic) was dropped (at most \(MQTTClient.maximumPayloadBytes))")
        }
        let revision: PublishedRevision
        do {
            revision = try PublishedRevision(message: message.payload)
        } catch {
            return (.malformed, "a message on \(message.topic) was dropped: \(error)")
        }
        let notice = Notice(revision: revision, arrivedAt: now)
        let short = revision.commit.prefix(12)
        guard revision.concerns(wanted) else {
            record(notice, .ignored)
            return (.ignored, "\(revision.ref) moved to \(short); this controller follows \(wanted ?? "HEAD")")
        }
        if revision.commit == applied {
            record(notice, .current)
            return (.current, "\(revision.ref) is at \(short), the applied revision: nothing to do")
        }
        return lock.withLock {
            if refused.contains(revision.commit) {
                last = (notice, .refused)
                return (.refused, "\(revision.ref) at \(short) was refused already: nothing to do")
            }
            if let waiting = pending {
                // One cycle answers both; the wait is counted from the first message.
                pending = (Notice(revision: revision, arrivedAt: waiting.notice.arrivedAt), waiting.due)
                last = (notice, .coalesced)
                return (.coalesced, "\(revision.ref) moved to \(short) (published \(revision.publishedAt)); a look is already due in \(Self.seconds(waiting.due.timeIntervalSince(now)))")
            }
            let spread = settings.spread > 0 ? Double.random(in: 0...settings.spread) : 0
            let due = max(now.addingTimeInterval(spread), lastTaken.map { $0.addingTimeInterval(minimumGap) } ?? now)
            pending = (notice, due)
            last = (notice, .scheduled)
            return (.scheduled, "\(revision.ref) moved to \(short) (published \(revision.publishedAt)); looking in \(Self.seconds(due.timeIntervalSince(now)))")
        }
    }

    /// Notes what became of `notice` for `tether status`; a refused commit is remembered.
    func record(_ notice: Notice, _ outcome: NoticeOutcome) {
        lock.withLock {
            last = (notice, outcome)
            if outcome == .refused, !refused.contains(notice.revision.commit) {
                refused.append(notice.revision.commit)
                if refused.count > Self.refusedKept { refused.removeFirst() }
            }
        }
    }

    /// Notes the link's new state; returns whether it changed (up or down), or is the first
    /// report (a broker unreachable from the start is said once, too).
    func linkChanged(_ link: MQTTLink, now: Date) -> Bool {
        lock.withLock {
            let wasUp = linkState.up
            let first = !linkReported
            linkReported = true
            switch link {
            case .connected: linkState = (true, "connected", now)
            case .down(let why): linkState = (false, why, linkState.up ? now : linkState.since)
            }
            let changed = first || linkState.up != wasUp
            statusChanged = statusChanged || changed
            return changed
        }
    }

    /// Whether the link changed since the status file was last written (the loop writes it again).
    func takeStatusChange() -> Bool {
        lock.withLock {
            defer { statusChanged = false }
            return statusChanged
        }
    }

    /// The link and the last message, for the status file.
    var status: ControllerStatus.Notifications {
        lock.withLock {
            ControllerStatus.Notifications(
                broker: settings.address.description, connected: linkState.up, detail: linkState.detail, since: linkState.since,
                lastMessage: last.map { .init(ref: $0.notice.revision.ref, commit: $0.notice.revision.commit, arrivedAt: $0.notice.arrivedAt, outcome: $0.outcome.rawValue) })
        }
    }

    /// Whether the broker link is up (subscribed).
    package var isConnected: Bool { lock.withLock { linkState.up } }

    /// Subscribes to the broker on libmosquitto's thread: each message is filed (and logged with
    /// what became of it), and a scheduled one wakes the loop. `wanted` is the ref followed.
    package func listen(controller: Controller, wanted: String?, logger: Logger, wake: @escaping @Sendable () -> Void) throws -> MQTTClient {
        let client = try MQTTClient(address: settings.address, tls: settings.tls, clientID: settings.clientID)
        let metrics = controller.metrics
        try client.listen(keepalive: settings.keepalive, onMessage: { [self] message in
            let (outcome, text) = receive(message, wanted: wanted, applied: metrics.lastAppliedRevision, now: Date())
            metrics.notified(outcome)
            switch outcome {
            case .malformed: logger.warning("notification: \(text)")
            case .ignored, .current: logger.debug("notification: \(text)")
            default: logger.info("notification: \(text)")
            }
            if outcome == .scheduled { wake() }
        }, onLink: { [self] link in
            guard linkChanged(link, now: Date()) else { return }
            metrics.notifyLink(up: link == .connected)
            switch link {
            case .connected: logger.info("notifications: subscribed to \(settings.address)")
            case .down(let why): logger.warning("notifications: \(why); retrying with back-off (the interval still applies)")
            }
            wake()
        })
        return client
    }

    private static func seconds(_ value: TimeInterval) -> String {
        "\((max(0, value) * 10).rounded() / 10) s"
    }
}
