import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address with a prefix length: `10.0.0.7`, `10.0.0.0/8`, `2001:db8::/32`.
package struct IPPrefix: Sendable, Equatable, Hashable, Codable, CustomStringConvertible {
    package enum Family: String, Sendable, Codable { case ipv4, ipv6 }

    package let family: Family
    /// The network's address in canonical form (host bits cleared).
    package let address: String
    package let length: Int

    /// Parses an address with an optional `/length`; nil when it is not one.
    package init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let host = String(parts[0])
        var bytes = [UInt8](repeating: 0, count: 16)
        let family: Family
        var mapped = false
        if inet_pton(AF_INET, host, &bytes) == 1 {
            family = .ipv4
        } else if inet_pton(AF_INET6, host, &bytes) == 1 {
            // ::ffff:a.b.c.d is an IPv4 address: an ip6 rule would never see its packets.
            mapped = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff
            if mapped { bytes = Array(bytes[12..<16]) + [UInt8](repeating: 0, count: 12) }
            family = mapped ? .ipv4 : .ipv6
        } else {
            return nil
        }
        let width = family == .ipv4 ? 32 : 128
        var length = width
        if parts.count == 2 {
            guard parts[1].allSatisfy({ $0.isASCII && $0.isNumber }), let parsed = Int(parts[1]) else { return nil }
            let given = mapped ? parsed - 96 : parsed
            guard (0...width).contains(given) else { return nil }
            length = given
        }
        // Clear the host bits, so 10.0.0.7/8 means the network 10.0.0.0/8 as nft would read it.
        for bit in length..<width { bytes[bit / 8] &= ~(UInt8(0x80) >> UInt8(bit % 8)) }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(family == .ipv4 ? AF_INET : AF_INET6, bytes, &text, socklen_t(text.count)) != nil else { return nil }
        self.family = family
        self.address = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        self.length = length
    }

    /// One address (all its bits count).
    package var isHost: Bool { length == (family == .ipv4 ? 32 : 128) }

    package var description: String { isHost ? address : "\(address)/\(length)" }

    /// Kept as its text, and parsed again when read: what reaches an nft script is always an address.
    package init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = IPPrefix(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "'\(text)' is not an address"))
        }
        self = parsed
    }

    package func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// An inclusive range of ports.
package struct PortRange: Sendable, Equatable, Hashable, Codable, CustomStringConvertible {
    package let from: UInt16
    package let to: UInt16

    package init?(from: Int, to: Int) {
        guard (0...65535).contains(from), (0...65535).contains(to), from <= to else { return nil }
        self.from = UInt16(from)
        self.to = UInt16(to)
    }

    package var description: String { from == to ? "\(from)" : "\(from)-\(to)" }

    private enum CodingKeys: String, CodingKey { case from, to }

    /// Checked again when read, as when made.
    package init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        guard let range = PortRange(from: try container.decode(Int.self, forKey: .from), to: try container.decode(Int.self, forKey: .to)) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a port range"))
        }
        self = range
    }
}

/// Traffic that still flows while the endpoint is isolated: a platform endpoint, or one of the
/// platform's exclusions. Replies of an allowed flow are allowed with it.
package struct AllowedTraffic: Sendable, Equatable, Codable {
    /// Who opens the flow: `outbound` flows start here, `inbound` ones at the remote side.
    package enum Direction: String, Sendable, Codable, CaseIterable { case inbound, outbound, both }

    package let direction: Direction
    /// The IP protocol number (6 TCP, 17 UDP…); nil for any.
    package let ipProtocol: UInt8?
    /// The remote side; nil for any address.
    package let remote: IPPrefix?
    package let localPorts: [PortRange]
    package let remotePorts: [PortRange]
    /// Why it is allowed, shown in the rule's comment (`platform EDR`, `exclusion 2`).
    package let reason: String
    /// The name `remote` was resolved from (a platform endpoint's host): while isolated, the
    /// connectors reach that name at this address without DNS.
    package let host: String?

    /// The IP protocols that carry ports: TCP, UDP, SCTP and UDP-Lite.
    package static let protocolsWithPorts: Set<UInt8> = [6, 17, 132, 136]

    /// Fails with what is wrong (ports on a protocol that has none).
    /// Fails with what is wrong: ports on a protocol that has none, or nothing that limits the
    /// traffic at all (which would allow everything: lift the isolation instead).
    package init(direction: Direction, ipProtocol: UInt8? = nil, remote: IPPrefix? = nil,
                 localPorts: [PortRange] = [], remotePorts: [PortRange] = [], reason: String, host: String? = nil) throws(FirewallError) {
        if let ipProtocol, !(localPorts.isEmpty && remotePorts.isEmpty), !Self.protocolsWithPorts.contains(ipProtocol) {
            throw .invalid("\(reason): IP protocol \(ipProtocol) has no ports; ports need protocol 6 (TCP), 17 (UDP), 132 (SCTP) or 136 (UDP-Lite)")
        }
        if ipProtocol == nil, remote == nil, localPorts.isEmpty, remotePorts.isEmpty {
            throw .invalid("\(reason) names no remote address, protocol or port, so it would allow every packet; "
                           + "give remoteAddress (0.0.0.0/0 or ::/0 for any), protocol or ports")
        }
        self.direction = direction
        self.ipProtocol = ipProtocol
        self.remote = remote
        self.localPorts = localPorts
        self.remotePorts = remotePorts
        self.reason = reason
        self.host = host
    }

    private enum CodingKeys: String, CodingKey { case direction, ipProtocol, remote, localPorts, remotePorts, reason, host }

    /// Read back from a store through the same checks as when made.
    package init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        do {
            try self.init(direction: try container.decode(Direction.self, forKey: .direction),
                          ipProtocol: try container.decodeIfPresent(UInt8.self, forKey: .ipProtocol),
                          remote: try container.decodeIfPresent(IPPrefix.self, forKey: .remote),
                          localPorts: try container.decode([PortRange].self, forKey: .localPorts),
                          remotePorts: try container.decode([PortRange].self, forKey: .remotePorts),
                          reason: try container.decode(String.self, forKey: .reason),
                          host: try container.decodeIfPresent(String.self, forKey: .host))
        } catch let error as FirewallError {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    /// For people: `outbound tcp to 10.0.0.2 port 443 (platform EDR)`.
    package var summary: String {
        var parts = [direction.rawValue]
        if let ipProtocol { parts.append(Self.protocolName(ipProtocol)) }
        let side = direction == .inbound ? "from" : direction == .outbound ? "to" : "with"
        parts.append("\(side) \(remote?.description ?? "any address")")
        if !remotePorts.isEmpty { parts.append("remote port \(remotePorts.map(\.description).joined(separator: ","))") }
        if !localPorts.isEmpty { parts.append("local port \(localPorts.map(\.description).joined(separator: ","))") }
        return parts.joined(separator: " ") + " (\(reason))"
    }

    static func protocolName(_ number: UInt8) -> String {
        switch number {
        case 1: "icmp"
        case 6: "tcp"
        case 17: "udp"
        case 58: "icmpv6"
        case 132: "sctp"
        case 136: "udplite"
        default: "protocol \(number)"
        }
    }
}

/// Why the firewall could not do what was asked.
package enum FirewallError: Error, Equatable, CustomStringConvertible {
    /// A rule Tether was given cannot be expressed (ports without a port protocol).
    case invalid(String)
    /// nftables cannot be used here: no library, no kernel support, no CAP_NET_ADMIN.
    case unavailable(String)
    /// nftables refused the transaction; nothing was changed.
    case refused(String)
    /// The table read back is not what was written.
    case mismatch(String)

    package var description: String {
        switch self {
        case .invalid(let text), .unavailable(let text), .refused(let text), .mismatch(let text): text
        }
    }
}

extension IPPrefix {
    /// Every address `host` (a name or an address) resolves to now, IPv4 and IPv6.
    package static func resolve(_ host: String) throws(FirewallError) -> [IPPrefix] {
        if let literal = IPPrefix(host), literal.isHost { return [literal] }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0, let first = list else {
            throw .unavailable("\(host) cannot be resolved: \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(first) }
        var found: [IPPrefix] = []
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(current.pointee.ai_addr, current.pointee.ai_addrlen, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST) == 0,
               let prefix = IPPrefix(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)),
               !found.contains(prefix) {
                found.append(prefix)
            }
            entry = current.pointee.ai_next
        }
        return found
    }
}
