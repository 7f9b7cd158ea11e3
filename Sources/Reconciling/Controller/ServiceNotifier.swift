import FoundationEssentials
#if canImport(Glibc)
import Glibc
import Primitives
#endif

/// systemd's notification protocol (sd_notify): newline-separated `KEY=VALUE` datagrams on the
/// Unix socket `$NOTIFY_SOCKET` names (a path, or `@name` in the abstract namespace). With
/// `Type=notify`, `READY=1` tells systemd the service is up; with `WatchdogSec=`, `WATCHDOG=1`
/// must come more often than that; `STATUS=` is what `systemctl status` shows; `STOPPING=1`
/// that it is shutting down. Without `$NOTIFY_SOCKET` nothing is sent.
package final class ServiceNotifier {
    private let fd: Int32
    private var address = sockaddr_un()
    private let length: socklen_t

    /// Nil when not started by a service manager (no `$NOTIFY_SOCKET`) or the socket cannot be made.
    package init?(socketPath: String? = ProcessEnvironment.value("NOTIFY_SOCKET")) {
        guard let path = socketPath, !path.isEmpty else { return nil }
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }  // the abstract namespace
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { return nil }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in bytes.enumerated() { buffer[index] = byte }
        }
        length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
    }

    deinit { close(fd) }

    /// Sends one notification; false when it could not be sent.
    @discardableResult
    package func send(_ fields: [String: String]) -> Bool {
        // STATUS= is one line: a message with line breaks would start a new field.
        let text = fields.sorted { $0.key < $1.key }
            .map { "\($0.key)=\($0.value.replacingAll("\n", with: " "))" }.joined(separator: "\n")
        let bytes = Array(text.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL), $0, length) }
        }
        return sent == bytes.count
    }
}
