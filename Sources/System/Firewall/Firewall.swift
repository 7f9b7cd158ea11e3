import CNFTablesShims
import FoundationEssentials

/// Network isolation as an nftables table of Tether's own, driven in-process through
/// libnftables (docs/architecture.md, "Network isolation"). Every change is one nft
/// transaction: the table is replaced whole or not at all, and read back before it counts.
package struct Firewall: Sendable {
    /// The table Tether owns; nothing else of the ruleset is touched.
    package static let table = "tether_isolation"
    /// The conntrack mark's top byte carries the isolation's generation on every flow it
    /// allowed, so its replies and later packets pass; flows opened before the isolation, or
    /// allowed by an earlier one (whose generation differs), do not.
    package static let generationMask: UInt32 = 0xff00_0000

    /// The network namespace to act in (a path such as /run/netns/NAME); nil for the process's own.
    package let networkNamespace: String?

    package init(networkNamespace: String? = nil) {
        self.networkNamespace = networkNamespace
    }

    /// What is enforced now.
    package enum Enforcement: Sendable, Equatable {
        /// Tether's table is absent.
        case absent
        /// Tether's table is present; `listing` is nftables' JSON of it, to compare later reads against.
        case present(listing: String)
    }

    /// Isolates: drops every packet in and out on every interface but loopback, except
    /// `allowed` and their replies. `generation` (1–255) tells this isolation's flows from an
    /// earlier one's; putting the same isolation back keeps it. Returns the table's listing as
    /// read back, which matched.
    @discardableResult
    package func isolate(allowing allowed: [AllowedTraffic], generation: UInt8) throws(FirewallError) -> String {
        let (script, expected) = Self.render(allowed, generation: generation)
        try run(script, json: false)
        guard case .present(let listing) = try enforcement() else {
            throw .mismatch("the table \(Self.table) is missing right after it was written")
        }
        try Self.verify(listing, expected: expected)
        return listing
    }

    /// Removes Tether's table (nothing happens when it is absent).
    package func lift() throws(FirewallError) {
        try run("add table inet \(Self.table)\ndelete table inet \(Self.table)\n", json: false)
    }

    /// Reads Tether's table back.
    package func enforcement() throws(FirewallError) -> Enforcement {
        do {
            return .present(listing: try run("list table inet \(Self.table)\n", json: true))
        } catch .refused(let text) where text.contains("No such file or directory") {
            return .absent
        }
    }

    // MARK: - The table

    /// The chains and the comments of their rules, in order, as written.
    typealias Expected = [String: [String]]

    /// The nft script that replaces Tether's table, and what reading it back must show.
    static func render(_ allowed: [AllowedTraffic], generation: UInt8) -> (script: String, expected: Expected) {
        let mask = "0x" + String(generationMask, radix: 16)
        let mark = "0x" + String(UInt32(max(generation, 1)) << 24, radix: 16)
        let replies = "ct mark and \(mask) == \(mark) accept"
        // Neighbour discovery only on the link (hop limit 255, which a router never forwards),
        // and the multicast listener reports switches need to keep delivering it.
        var chains: [(name: String, rules: [(text: String, comment: String)])] = [
            ("input", [("iifname \"lo\" accept", "loopback"),
                       (replies, "replies and later packets of allowed flows"),
                       ("ip6 hoplimit 255 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, nd-redirect } accept",
                        "IPv6 neighbour discovery on the link")]),
            ("output", [("oifname \"lo\" accept", "loopback"),
                        (replies, "replies and later packets of allowed flows"),
                        ("ip6 hoplimit 255 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept",
                         "IPv6 neighbour discovery on the link"),
                        ("ip6 daddr ff02::16 icmpv6 type { mld-listener-report, mld2-listener-report } accept",
                         "IPv6 multicast listener reports")]),
            ("forward", []),
        ]
        for traffic in allowed {
            let statement = "ct mark set ct mark and 0x\(String(~generationMask, radix: 16)) or \(mark) accept"
            if traffic.direction != .inbound {
                chains[1].rules.append((match(traffic, outbound: true) + statement, comment(traffic)))
            }
            if traffic.direction != .outbound {
                chains[0].rules.append((match(traffic, outbound: false) + statement, comment(traffic)))
            }
        }
        // add + delete + define in one transaction: whatever was there (or nothing) is replaced whole.
        var script = "add table inet \(table)\ndelete table inet \(table)\ntable inet \(table) {\n"
        for chain in chains {
            script += "  chain \(chain.name) {\n    type filter hook \(chain.name) priority filter; policy drop;\n"
            for rule in chain.rules { script += "    \(rule.text) comment \"\(rule.comment)\"\n" }
            script += "  }\n"
        }
        script += "}\n"
        return (script, Dictionary(uniqueKeysWithValues: chains.map { ($0.name, $0.rules.map(\.comment)) }))
    }

    /// The match part of one allowed flow's rule, seen from the chain of `outbound` or inbound.
    private static func match(_ traffic: AllowedTraffic, outbound: Bool) -> String {
        var text = ""
        if let remote = traffic.remote {
            text += "\(remote.family == .ipv4 ? "ip" : "ip6") \(outbound ? "daddr" : "saddr") \(remote) "
        }
        let ports = !traffic.localPorts.isEmpty || !traffic.remotePorts.isEmpty
        if let number = traffic.ipProtocol {
            text += "meta l4proto \(number) "
        } else if ports {
            text += "meta l4proto { 6, 17, 132, 136 } "
        }
        func set(_ ranges: [PortRange]) -> String { ranges.count == 1 ? ranges[0].description : "{ \(ranges.map(\.description).joined(separator: ", ")) }" }
        let (here, there) = outbound ? ("sport", "dport") : ("dport", "sport")
        if !traffic.localPorts.isEmpty { text += "th \(here) \(set(traffic.localPorts)) " }
        if !traffic.remotePorts.isEmpty { text += "th \(there) \(set(traffic.remotePorts)) " }
        return text
    }

    /// A rule's comment: why it is there, in characters nft keeps as they are.
    private static func comment(_ traffic: AllowedTraffic) -> String {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .:/,()-_[]")
        return String(("allow " + traffic.summary).map { allowed.contains($0) ? $0 : "_" }.prefix(120))
    }

    // MARK: - Reading back

    private struct Listing: Decodable {
        struct Item: Decodable {
            let chain: Chain?
            let rule: Rule?
        }
        struct Chain: Decodable {
            let name: String
            let hook: String?
            let policy: String?
        }
        struct Rule: Decodable {
            let chain: String
            let comment: String?
        }
        let nftables: [Item]
    }

    /// Checks a listing shows exactly the chains, policies and rules written.
    static func verify(_ listing: String, expected: Expected) throws(FirewallError) {
        let decoded: Listing
        do {
            decoded = try JSONDecoder().decode(Listing.self, from: Data(listing.utf8))
        } catch {
            throw .mismatch("nftables' listing of \(table) cannot be read: \(error)")
        }
        let chains = decoded.nftables.compactMap(\.chain)
        guard Set(chains.map(\.name)) == Set(expected.keys), chains.count == expected.count else {
            throw .mismatch("\(table) has the chains \(chains.map(\.name).sorted()), not \(expected.keys.sorted())")
        }
        for chain in chains {
            guard chain.hook == chain.name, chain.policy == "drop" else {
                throw .mismatch("\(table)'s chain \(chain.name) hooks \(chain.hook ?? "nothing") with policy \(chain.policy ?? "none"), not \(chain.name) with drop")
            }
            let comments = decoded.nftables.compactMap(\.rule).filter { $0.chain == chain.name }.map { $0.comment ?? "(a rule without comment)" }
            guard comments == expected[chain.name] else {
                throw .mismatch("\(table)'s chain \(chain.name) holds \(comments.count) rules that differ from the \(expected[chain.name]?.count ?? 0) written")
            }
        }
    }

    // MARK: - libnftables

    /// Runs a script as one transaction; returns what nft printed.
    @discardableResult
    private func run(_ script: String, json: Bool) throws(FirewallError) -> String {
        var output: UnsafeMutablePointer<CChar>?
        var error: UnsafeMutablePointer<CChar>?
        let status = tether_nft_run(networkNamespace, script, json ? 1 : 0, &output, &error)
        defer {
            tether_nft_free(output)
            tether_nft_free(error)
        }
        let printed = output.map { String(cString: $0) } ?? ""
        let complaint = error.map { String(cString: $0) } ?? ""
        if status == -1 { throw .unavailable(complaint) }
        guard status == 0 else { throw Self.classify(complaint) }
        return printed
    }

    /// nft's complaint, as what a person can act on.
    private static func classify(_ complaint: String) -> FirewallError {
        // nft repeats the offending script line under its message: the first line says it.
        let first = complaint.split(separator: "\n").first.map(String.init) ?? "nftables failed"
        if complaint.contains("Operation not permitted") {
            return .unavailable("nftables refused: Tether lacks CAP_NET_ADMIN (\(first))")
        }
        if complaint.contains("Protocol not supported") || complaint.contains("Address family not supported") {
            return .unavailable("the kernel has no nftables support (\(first))")
        }
        return .refused(first)
    }
}
