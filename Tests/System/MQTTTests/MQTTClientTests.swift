import Foundation
import MQTT
import TetherTestSupport
import Testing

@Suite("MQTT through libmosquitto, against mosquitto on loopback", .serialized)
struct MQTTClientTests {
    /// A client listening on `address` (keepalive 10 s, back-off up to 60 s), and what it receives.
    private func listen(_ address: MQTTAddress, tls: MQTTTLS?, as clientID: String) throws -> (MQTTClient, LockedMessages) {
        let received = LockedMessages()
        let listener = try MQTTClient(address: address, tls: tls, clientID: clientID)
        try listener.listen(keepalive: 10, maximumBackoff: 60, onMessage: { received.append($0) }, onLink: { received.link($0) })
        return (listener, received)
    }

    @Test("Broker URLs: scheme, host, port, topic; what is not one is refused saying what to type")
    func addresses() throws {
        let plain = try MQTTAddress(parsing: "mqtt://127.0.0.1:1884/tether/policies")
        #expect(plain.host == "127.0.0.1" && plain.port == 1884 && plain.topic == "tether/policies" && !plain.secure)
        let secure = try MQTTAddress(parsing: "mqtts://[::1]/fleet")
        #expect(secure.host == "::1" && secure.port == 8883 && secure.secure && secure.description == "mqtts://[::1]:8883/fleet")
        #expect(try MQTTAddress(parsing: "mqtt://broker/t").port == 1883)
        for (bad, says) in [("http://broker/t", "expected mqtt://HOST:PORT/TOPIC"), ("mqtt://broker", "no topic"),
                            ("mqtt://broker/a/#", "plain topic name"), ("mqtt://broker:99999/t", "bad port"),
                            ("mqtt://user:secret@broker/t", "not supported"), ("mqtt:///t", "no host")] {
            #expect(throws: MQTTError.self, "\(bad)") { try MQTTAddress(parsing: bad) }
            do { _ = try MQTTAddress(parsing: bad) } catch { #expect(error.description.contains(says), "\(bad): \(error)") }
        }
    }

    @Test("A retained message reaches a client that subscribes later, with its bytes; an oversized one arrives empty with its size")
    func retainedAndOversized() throws {
        let broker = try MQTTBroker()
        let address = try MQTTAddress(parsing: broker.url("t/one"))
        try MQTTClient(address: address, tls: nil, clientID: "publisher").publishRetained(Array("first".utf8), timeout: 10)
        let (listener, received) = try listen(address, tls: nil, as: "listener")
        #expect(received.waitFor { $0.count == 1 })
        #expect(received.messages.first.map { String(decoding: $0.payload, as: UTF8.self) } == "first")
        #expect(received.messages.first?.retained == true)
        #expect(received.links.first == .connected)
        let large = [UInt8](repeating: 65, count: MQTTClient.maximumPayloadBytes + 1)
        try MQTTClient(address: address, tls: nil, clientID: "publisher-2").publishRetained(large, timeout: 10)
        #expect(received.waitFor { $0.count == 2 })
        #expect(received.messages.last?.payload.isEmpty == true && received.messages.last?.size == large.count)
        listener.stop()
    }

    @Test("mqtts: with the pinned CA and a client certificate the message arrives; without the certificate, or trusting another CA, nothing does and the reason is given")
    func tls() throws {
        let pki = TestPKI.shared
        let broker = try MQTTBroker(tls: pki)
        let address = try MQTTAddress(parsing: broker.url("t/secure"))
        let client = MQTTTLS(caFile: pki.path("ca.pem"), certificateFile: pki.path("client.pem"), keyFile: pki.path("client.key"))
        try MQTTClient(address: address, tls: client, clientID: "secure-publisher").publishRetained(Array("sealed".utf8), timeout: 10)
        let (listener, received) = try listen(address, tls: client, as: "secure-listener")
        #expect(received.waitFor { $0.count == 1 })
        #expect(received.messages.first.map { String(decoding: $0.payload, as: UTF8.self) } == "sealed")
        listener.stop()

        // No client certificate: the broker refuses the handshake.
        do {
            try MQTTClient(address: address, tls: MQTTTLS(caFile: pki.path("ca.pem")), clientID: "no-certificate")
                .publishRetained([1], timeout: 5)
            Issue.record("published without a client certificate")
        } catch {
            #expect(error.description.contains("127.0.0.1:\(broker.port)"), "\(error)")
        }
        // Another CA pinned: the broker's certificate is not trusted.
        let other = try TestPKI()
        do {
            try MQTTClient(address: address, tls: MQTTTLS(caFile: other.path("ca.pem"), certificateFile: pki.path("client.pem"), keyFile: pki.path("client.key")),
                           clientID: "other-ca").publishRetained([1], timeout: 5)
            Issue.record("published to a broker whose certificate another CA issued")
        } catch {
            #expect(error.description.contains("127.0.0.1:\(broker.port)"), "\(error)")
        }
        // mqtts without a CA is refused before any connection.
        #expect(throws: MQTTError.self) { try MQTTClient(address: address, tls: nil, clientID: "no-ca") }
    }

    @Test("A listener whose broker is gone stops at once, in its back-off or not")
    func stopsWhileRetrying() throws {
        let broker = try MQTTBroker()
        let (listener, received) = try listen(try MQTTAddress(parsing: broker.url("t")), tls: nil, as: "retrying")
        #expect(received.waitForLinks { $0.contains(.connected) })
        broker.stop()
        #expect(received.waitForLinks { $0.count >= 2 })
        Thread.sleep(forTimeInterval: 3)  // into the back-off between attempts
        let started = Date()
        listener.stop()
        #expect(Date().timeIntervalSince(started) < 2, "stopped in \(Date().timeIntervalSince(started)) s")
    }

    @Test("Publishing to a broker that is not there fails in time, naming it")
    func unreachable() throws {
        let port = try freePort()
        let client = try MQTTClient(address: try MQTTAddress(parsing: "mqtt://127.0.0.1:\(port)/t"), tls: nil, clientID: "nobody")
        do {
            try client.publishRetained([1], timeout: 3)
            Issue.record("published to nothing")
        } catch {
            #expect(error.description.contains("cannot reach the broker at mqtt://127.0.0.1:\(port)/t"))
        }
    }
}

/// Messages and link changes as a listener's thread delivers them.
private final class LockedMessages: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [MQTTMessage] = []
    private var storedLinks: [MQTTLink] = []

    func append(_ message: MQTTMessage) { lock.withLock { stored.append(message) } }
    func link(_ link: MQTTLink) { lock.withLock { storedLinks.append(link) } }
    var messages: [MQTTMessage] { lock.withLock { stored } }
    var links: [MQTTLink] { lock.withLock { storedLinks } }

    func waitForLinks(seconds: Double = 10, _ condition: ([MQTTLink]) -> Bool) -> Bool {
        Self.wait(seconds: seconds) { condition(links) }
    }

    func waitFor(seconds: Double = 10, _ condition: ([MQTTMessage]) -> Bool) -> Bool {
        Self.wait(seconds: seconds) { condition(messages) }
    }

    private static func wait(seconds: Double, _ holds: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if holds() { return true }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return holds()
    }
}
