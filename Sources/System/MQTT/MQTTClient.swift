internal import CMQTTShims
import Primitives
#if canImport(Glibc)
import Glibc
#endif

/// A broker and a topic: `mqtt://HOST[:PORT]/TOPIC`, or `mqtts://` for TLS (port 1883 and
/// 8883 unless named). The topic is the rest of the path and may hold `/`; wildcards are not a
/// topic to publish on, so they are refused.
package struct MQTTAddress: Sendable, Equatable, CustomStringConvertible {
    package let secure: Bool
    package let host: String
    package let port: Int
    package let topic: String

    package init(parsing text: String) throws(MQTTError) {
        let scheme: Bool
        let rest: Substring
        if text.hasPrefix("mqtt://") {
            (scheme, rest) = (false, text.dropFirst(7))
        } else if text.hasPrefix("mqtts://") {
            (scheme, rest) = (true, text.dropFirst(8))
        } else {
            throw MQTTError("\(text): expected mqtt://HOST:PORT/TOPIC or mqtts://HOST:PORT/TOPIC")
        }
        guard let slash = rest.firstIndex(of: "/") else { throw MQTTError("\(text): no topic (add /TOPIC after the host)") }
        let authority = rest[..<slash]
        let topic = String(rest[rest.index(after: slash)...])
        guard !topic.isEmpty, !topic.contains("+"), !topic.contains("#"), !topic.utf8.contains(0) else {
            throw MQTTError("\(text): the topic must be a plain topic name (no +, # or NUL)")
        }
        guard !authority.contains("@") else { throw MQTTError("\(text): user names and passwords in the URL are not supported") }
        var host = authority
        var port = scheme ? 8883 : 1883
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw MQTTError("\(text): an IPv6 address needs its closing ]") }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                guard let number = Int(after.dropFirst()), (1...65535).contains(number) else { throw MQTTError("\(text): bad port") }
                port = number
            }
        } else if let colon = authority.lastIndex(of: ":") {
            guard let number = Int(authority[authority.index(after: colon)...]), (1...65535).contains(number) else {
                throw MQTTError("\(text): bad port")
            }
            host = authority[..<colon]
            port = number
        }
        guard !host.isEmpty else { throw MQTTError("\(text): no host") }
        self.secure = scheme
        self.host = String(host)
        self.port = port
        self.topic = topic
    }

    package var description: String {
        "\(secure ? "mqtts" : "mqtt")://\(host.contains(":") ? "[\(host)]" : host):\(port)/\(topic)"
    }
}

/// TLS to the broker (`mqtts://`): the CA that issued the broker's certificate (the broker is
/// trusted only with a certificate from it, for the host named), and optionally a client
/// certificate and its key, as the connectors take them.
package struct MQTTTLS: Sendable, Equatable {
    package var caFile: String
    package var certificateFile: String?
    package var keyFile: String?

    package init(caFile: String, certificateFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }
}

package struct MQTTError: Error, CustomStringConvertible, Sendable {
    package let description: String
    package init(_ description: String) { self.description = description }
}

/// A message as it arrived.
package struct MQTTMessage: Sendable {
    package let topic: String
    /// Its bytes; empty when it was larger than `MQTTClient.maximumPayloadBytes` (see `size`).
    package let payload: [UInt8]
    /// How many bytes it had.
    package let size: Int
    /// Whether the broker kept it and sent it on subscribing (the last one published).
    package let retained: Bool
}

/// What happened to the link to the broker.
package enum MQTTLink: Sendable, Equatable {
    /// Connected and subscribed (or about to be).
    case connected
    /// Not connected; why. libmosquitto tries again with back-off.
    case down(String)
}

/// Ends a client's network thread on a thread of its own, so that `stop` can stop waiting.
private final class Stopper: @unchecked Sendable {
    private let handle: OpaquePointer
    private let lock = Lock()
    private var done = false

    init(handle: OpaquePointer) { self.handle = handle }

    func run() {
        _ = tether_mqtt_loop_stop(handle, false)
        lock.withLock { done = true }
    }

    var isDone: Bool { lock.withLock { done } }
}

/// A connection to an MQTT broker through libmosquitto (QoS 1; a clean session). Owns its
/// handle and frees it in `deinit`. `listen` runs libmosquitto's own network thread, which
/// reconnects with exponential back-off; `publishRetained` is a blocking one-shot.
package final class MQTTClient: @unchecked Sendable {
    private let handle: OpaquePointer
    package let address: MQTTAddress
    private let lock = Lock()
    private var handlers = Handlers()

    private struct Handlers {
        var onMessage: (@Sendable (MQTTMessage) -> Void)?
        var onLink: (@Sendable (MQTTLink) -> Void)?
        var subscribe = false
        var acknowledged: Set<Int32> = []
        var connectResult: Int32?
        /// Whether libmosquitto's network thread runs (set and read on both threads).
        var looping = false
        /// The network thread did not end in time at `stop`: the handle is never freed.
        var abandoned = false
    }

    /// The most of a message payload handed on; a longer one arrives empty, with its size.
    package static let maximumPayloadBytes = 16 << 10

    /// A client for `address`, with the TLS it needs when the address is `mqtts://`.
    package init(address: MQTTAddress, tls: MQTTTLS?, clientID: String) throws(MQTTError) {
        if let problem = tether_mqtt_load() { throw MQTTError(String(cString: problem)) }
        guard let handle = tether_mqtt_new(clientID, true, nil) else { throw MQTTError("libmosquitto could not make a client") }
        self.handle = handle
        self.address = address
        // Every property is set from here on: a throw below runs deinit, which frees the handle.
        if address.secure {
            guard let tls else {
                throw MQTTError("\(address): mqtts needs the broker's CA (--notify-ca FILE)")
            }
            let code = tether_mqtt_tls_set(handle, tls.caFile, tls.certificateFile, tls.keyFile)
            guard code == 0 else {
                throw MQTTError("\(address): TLS settings refused (\(Self.text(code))): check --notify-ca, --notify-cert and --notify-key")
            }
        }
        let context = Unmanaged.passUnretained(self).toOpaque()
        tether_mqtt_user_data_set(handle, context)
        tether_mqtt_callbacks_set(handle, { _, context, code in
            MQTTClient.from(context)?.connected(code)
        }, { _, context, code in
            MQTTClient.from(context)?.disconnected(code)
        }, { _, context, message in
            guard let message else { return }
            MQTTClient.from(context)?.received(message.pointee)
        }, { _, context, mid in
            MQTTClient.from(context)?.withHandlers { _ = $0.acknowledged.insert(mid) }
        })
    }

    deinit {
        stop()
        if !withHandlers({ $0.abandoned }) { tether_mqtt_destroy(handle) }
    }

    private func withHandlers<T>(_ body: (inout Handlers) -> T) -> T {
        lock.withLock { body(&handlers) }
    }

    private static func from(_ context: UnsafeMutableRawPointer?) -> MQTTClient? {
        context.map { Unmanaged<MQTTClient>.fromOpaque($0).takeUnretainedValue() }
    }

    private static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    static func text(_ code: Int32) -> String { String(cString: tether_mqtt_strerror(code)) }

    /// Connects in the background and subscribes to the address's topic at every connection
    /// (QoS 1, so the broker sends the retained message each time), calling `onMessage` for each
    /// message and `onLink` when the link comes up or goes down. Reconnects after 1 s, doubling
    /// up to `maximumBackoff`. `keepalive` seconds of silence make the broker (and libmosquitto)
    /// take the link for dead.
    package func listen(keepalive: Int, maximumBackoff: Int = 60, onMessage: @escaping @Sendable (MQTTMessage) -> Void,
                        onLink: @escaping @Sendable (MQTTLink) -> Void) throws(MQTTError) {
        withHandlers {
            $0.onMessage = onMessage
            $0.onLink = onLink
            $0.subscribe = true
        }
        _ = tether_mqtt_reconnect_delay_set(handle, 1, UInt32(max(1, maximumBackoff)), true)
        var code = tether_mqtt_connect_async(handle, address.host, Int32(address.port), Int32(keepalive))
        if code != 0 {
            // Not reachable now (no route, refused): the network thread keeps trying.
            onLink(.down("\(address): \(Self.text(code))"))
        }
        code = tether_mqtt_loop_start(handle)
        guard code == 0 else { throw MQTTError("\(address): libmosquitto's network thread did not start (\(Self.text(code)))") }
        withHandlers { $0.looping = true }
    }

    /// Disconnects and ends the network thread, waiting at most `timeout` seconds: a thread
    /// inside a blocking connect (a broker whose packets are dropped) is left to end with the
    /// process, and the client, which it still uses, is then never freed.
    package func stop(timeout: Double = 2) {
        guard withHandlers({ handlers in
            defer { handlers.looping = false }
            return handlers.looping
        }) else { return }
        _ = tether_mqtt_disconnect(handle)
        let stopper = Stopper(handle: handle)
        Threads.start(name: "mqtt-stop") { stopper.run() }
        let deadline = Self.now() + timeout
        while !stopper.isDone && Self.now() < deadline { Threads.sleep(seconds: 0.005) }
        if !stopper.isDone {
            withHandlers { $0.abandoned = true }
            _ = Unmanaged.passRetained(self)  // its thread calls back into it: kept for the process's life
        }
    }

    /// Connects, publishes `payload` on the address's topic as the retained message (QoS 1),
    /// waits for the broker's acknowledgement, and disconnects; within `timeout` seconds.
    package func publishRetained(_ payload: [UInt8], keepalive: Int = 30, timeout: Double) throws(MQTTError) {
        let deadline = Self.now() + timeout
        var code = tether_mqtt_connect(handle, address.host, Int32(address.port), Int32(keepalive))
        guard code == 0 else { throw MQTTError("cannot reach the broker at \(address): \(Self.text(code))") }
        defer { _ = tether_mqtt_disconnect(handle) }
        // The CONNACK first: a broker that refuses the client says so here.
        while withHandlers({ $0.connectResult }) == nil {
            guard Self.now() < deadline else { throw MQTTError("the broker at \(address) did not accept the connection within \(timeout) s") }
            code = tether_mqtt_loop(handle, 100)
            guard code == 0 else { throw MQTTError("the link to \(address) failed: \(Self.text(code))") }
        }
        if let refused = withHandlers({ $0.connectResult }), refused != 0 {
            throw MQTTError("the broker at \(address) refused the connection: \(String(cString: tether_mqtt_connack_string(refused)))")
        }
        var mid: Int32 = 0
        code = payload.withUnsafeBytes { tether_mqtt_publish(handle, &mid, address.topic, Int32($0.count), $0.baseAddress, 1, true) }
        guard code == 0 else { throw MQTTError("cannot publish on \(address): \(Self.text(code))") }
        while !withHandlers({ $0.acknowledged.contains(mid) }) {
            guard Self.now() < deadline else { throw MQTTError("the broker at \(address) did not acknowledge the message within \(timeout) s") }
            code = tether_mqtt_loop(handle, 100)
            guard code == 0 else { throw MQTTError("the link to \(address) failed before the broker acknowledged: \(Self.text(code))") }
        }
    }

    private func connected(_ code: Int32) {
        let handlers = withHandlers { handlers in
            handlers.connectResult = code
            return handlers
        }
        guard handlers.subscribe else { return }
        guard code == 0 else {
            handlers.onLink?(.down("\(address) refused the connection: \(String(cString: tether_mqtt_connack_string(code)))"))
            return
        }
        var mid: Int32 = 0
        let subscribed = tether_mqtt_subscribe(handle, &mid, address.topic, 1)
        handlers.onLink?(subscribed == 0 ? .connected : .down("\(address): cannot subscribe (\(Self.text(subscribed)))"))
    }

    private func disconnected(_ code: Int32) {
        let handlers = withHandlers { $0 }
        guard handlers.subscribe, handlers.looping else { return }
        handlers.onLink?(.down("\(address): the link was lost (\(code == 0 ? "closed" : Self.text(code)))"))
    }

    private func received(_ message: mosquitto_message) {
        let handlers = withHandlers { $0 }
        guard let onMessage = handlers.onMessage, let topic = message.topic else { return }
        let length = Int(message.payloadlen)
        let payload = length > 0 && length <= Self.maximumPayloadBytes && message.payload != nil
            ? Array(UnsafeRawBufferPointer(start: message.payload, count: length)) : []
        onMessage(MQTTMessage(topic: String(cString: topic), payload: payload, size: length, retained: message.retain))
    }
}
