#if canImport(Glibc)
import Glibc
#endif
internal import CProcessShims

/// Threads of Tether's own, over pthreads (detached: each signals its own end where someone
/// waits for it).
package enum Threads {
    /// Starts `body` on a new detached thread named `name` (at most 15 bytes show in `ps`),
    /// with `stackSize` bytes of stack (0: the system's default).
    package static func start(name: String, stackSize: Int = 0, _ body: @escaping @Sendable () -> Void) {
        final class Box {
            let name: String
            let body: @Sendable () -> Void
            init(name: String, body: @escaping @Sendable () -> Void) {
                self.name = name
                self.body = body
            }
        }
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        if stackSize > 0 { pthread_attr_setstacksize(&attributes, stackSize) }
        let box = Unmanaged.passRetained(Box(name: name, body: body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, &attributes, { context in
            let box = Unmanaged<Box>.fromOpaque(context!).takeRetainedValue()
            nameThisThread(box.name)
            box.body()
            return nil
        }, box)
        precondition(result == 0, "pthread_create failed with \(result)")
    }

    /// Sleeps the calling thread for `seconds` (nothing for zero or less).
    package static func sleep(seconds: Double) {
        guard seconds > 0 else { return }
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
        var remaining = timespec()
        while nanosleep(&request, &remaining) == -1 && errno == EINTR { request = remaining }
    }
}

/// Names the calling thread as `ps -L`, `top -H` and a debugger show it (15 bytes at most).
package func nameThisThread(_ name: String) {
    tether_name_thread(name)
}

/// Writes all of `text` to the descriptor, resuming after interruptions; stops at an error
/// (a closed pipe: the reader is gone). Whether everything was written.
@discardableResult
package func writeAll(_ text: String, to descriptor: Int32) -> Bool {
    writeAll(Array(text.utf8), to: descriptor)
}

/// Writes all of `bytes` to the descriptor, resuming after interruptions; stops at an error
/// (`errno` says which). Whether everything was written.
@discardableResult
package func writeAll(_ bytes: [UInt8], to descriptor: Int32) -> Bool {
    var bytes = bytes[...]
    while !bytes.isEmpty {
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        if written < 0 && errno == EINTR { continue }
        guard written > 0 else { return false }
        bytes = bytes.dropFirst(written)
    }
    return true
}

/// Reads the descriptor to its end, resuming after interruptions: nil on an error, and at most
/// `limit` + 1 bytes, so that a caller can tell input over its limit.
package func readAll(_ descriptor: Int32, limit: Int = .max) -> [UInt8]? {
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while bytes.count <= limit {
        let room = limit - bytes.count  // one byte past the limit tells over from at
        let count = read(descriptor, &buffer, room >= buffer.count ? buffer.count : room + 1)
        if count < 0 && errno == EINTR { continue }
        if count < 0 { return nil }
        if count == 0 { break }
        bytes += buffer[0..<count]
    }
    return bytes
}
