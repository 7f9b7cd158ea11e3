internal import CSensorShims
import Dispatch
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Primitives

/// The bounded buffer between the sensors' threads and the telemetry queue: sensors never wait
/// on a disk or on the controller, and when the buffer is full an event is dropped and counted
/// by type, never queued without bound.
package final class SensorBuffer: @unchecked Sendable {
    /// Events held at most.
    package let capacity: Int
    private let lock = Lock()
    private var events: [SensorEvent] = []
    private var seen: [String: Int] = [:]
    private var dropped: [String: Int] = [:]

    package init(capacity: Int = 20_000) {
        self.capacity = capacity
        events.reserveCapacity(min(capacity, 4096))
    }

    /// What was taken out at once: the events in order, and how many of each type were seen and
    /// dropped (over capacity) since the last drain.
    package struct Drained: Sendable {
        package let events: [SensorEvent]
        package let seen: [String: Int]
        package let dropped: [String: Int]
    }

    /// Adds an event; false when the buffer was full and the event was dropped.
    @discardableResult
    package func push(_ event: SensorEvent) -> Bool {
        let type = event.type.rawValue
        lock.lock()
        defer { lock.unlock() }
        seen[type, default: 0] += 1
        guard events.count < capacity else {
            dropped[type, default: 0] += 1
            return false
        }
        events.append(event)
        return true
    }

    /// Takes everything out.
    package func drain() -> Drained {
        lock.lock()
        defer { lock.unlock() }
        let drained = Drained(events: events, seen: seen, dropped: dropped)
        events.removeAll(keepingCapacity: true)
        seen.removeAll()
        dropped.removeAll()
        return drained
    }
}

/// A sensor's thread: runs `body` until `stop()`, which waits for it to end. `body` checks
/// `isStopping` at least every quarter second.
final class SensorThread: @unchecked Sendable {
    private let lock = Lock()
    private var stopping = false
    private let finished = DispatchSemaphore(value: 0)

    init(name: String, body: @escaping @Sendable (SensorThread) -> Void) {
        Threads.start(name: name, stackSize: 1 << 20) { [self] in
            body(self)
            finished.signal()
        }
    }

    var isStopping: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopping
    }

    /// Asks the thread to end and waits until it has, at most `seconds`; false when it has not
    /// (a read blocked in the kernel, on a hung file system say): it is left to end by itself.
    @discardableResult
    func stop(within seconds: Double = 3) -> Bool {
        lock.lock()
        let first = !stopping
        stopping = true
        lock.unlock()
        guard first else { return true }
        return finished.wait(timeout: .now() + seconds) == .success
    }

    /// After a read that did not fill its buffer, waits a moment so that the next read takes a
    /// batch: under load a sensor wakes some 40 times a second instead of once per record (a
    /// context switch each), at the price of 25 ms of latency. The kernel queues meanwhile (the
    /// process connector's socket holds 8 MiB; fanotify and inotify 16,384 records).
    static func gather(received: Int, of capacity: Int) {
        if received < capacity { usleep(25_000) }
    }

    /// Sleeps up to `seconds`, waking early when asked to stop.
    func sleep(_ seconds: TimeInterval) {
        let deadline = Date().addingTimeInterval(seconds)
        while !isStopping, deadline.timeIntervalSinceNow > 0 {
            Threads.sleep(seconds: min(0.25, deadline.timeIntervalSinceNow))
        }
    }
}
