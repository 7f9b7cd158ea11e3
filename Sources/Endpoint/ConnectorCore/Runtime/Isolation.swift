import AgentInterface
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Firewall
import IntegrationModel
import Primitives
import SQLiteDB
import WireFormat

/// The network isolation the platform ordered, and what the kernel enforces of it, as
/// `tether agent status` and `isolation-status` show them.
package struct IsolationStatus: Sendable {
    /// The platform (or nobody since) ordered it and no one lifted it.
    package let active: Bool
    package let since: Date?
    /// When it lifts by itself.
    package let until: Date?
    /// Traffic still allowed while isolated, as the platform sent it.
    package let exclusions: [Command.Exclusion]
    /// What Tether's nftables table allows: the platform's endpoints, then the exclusions.
    package let allowed: [AllowedTraffic]
    /// Tether's table is in the kernel as written (read back now); false while active means
    /// the isolation is asked but not in force, and `problem` says why.
    package let enforced: Bool
    /// The kernel's table could be read here; false (not root, another network namespace) means
    /// `enforced` is unknown, not false.
    package let checked: Bool
    package let problem: String?
    /// How often the table had to be put back after something removed or changed it, and when last.
    package let reasserted: Int
    package let reassertedAt: Date?
    package let commandId: String?
    /// Who lifted it last (`auto-off timer`, `tether agent isolation-off`, a command id).
    package let liftedBy: String?
}

/// Network isolation carried out in the kernel (docs/architecture.md, "Network isolation"):
/// the record in `runtime.db` first, then Tether's nftables table, read back before it counts.
/// Needs the connectors' store and the firewall; the agent's settings only to work out the
/// platform's endpoints for a new isolation, so a recorded one can be put back at start even
/// when the agent cannot be opened.
struct IsolationKeeper {
    let store: RuntimeStore
    let firewall: Firewall
    /// The state directory (its isolation lock).
    let directory: URL
    let clock: @Sendable () -> Date
    /// The agent's settings, when the agent is open.
    let agentState: (() throws -> AgentState)?

    /// The isolation row as stored, every column, to put back when a new isolation fails.
    private static let isolationColumns = "active, since, until, exclusions, command_id, lifted_by, allowed, listing, table_written, problem, reasserted, reasserted_at, generation"

    /// Runs `body` holding the state directory's isolation lock: a `tether agent isolation-off`
    /// and a controller putting the table back never interleave between the record and the kernel.
    /// A lock file that cannot be opened does not stop a lift or an isolation: it runs unlocked.
    private func withIsolationLock<T>(_ body: () -> T) -> T {
        withLockFile(directory.appending(path: ConnectorRuntime.isolationLockFileName).path, body) ?? body()
    }

    /// What an isolation allows: the platform's endpoints (the addresses in `known` for a name
    /// resolved before), then each exclusion.
    private func allowedTraffic(for exclusions: [Command.Exclusion], known: [AllowedTraffic] = []) throws(FirewallError) -> [AllowedTraffic] {
        try platformTraffic(known: known) + exclusions.enumerated().map { index, exclusion throws(FirewallError) in
            try Self.allowedTraffic(exclusion, number: index + 1)
        }
    }

    /// Isolates the endpoint in the kernel (docs/architecture.md, "Network isolation"): the
    /// order is written down first, then Tether's nftables table, then read back; the result is
    /// `applied` only when the kernel holds what was written. A new isolation that cannot be put
    /// in force leaves the one in force before as it was.
    func isolate(_ command: Command, id: String) -> (String, String) {
        let exclusions = command.exclusions ?? []
        if let duration = command.durationSeconds, duration <= 0 {
            return ("rejected", "durationSeconds \(duration) is not a positive number of seconds; nothing changed")
        }
        return withIsolationLock {
            let previous = try? store.database.query("SELECT \(Self.isolationColumns) FROM isolation WHERE id = 1").first
            let wasActive = previous?[0].integer == 1
            // While isolated DNS is blocked: the platform's names keep the addresses allowed before.
            let known = wasActive ? (previous?[6].text).flatMap { try? Wire.decode([AllowedTraffic].self, from: Array($0.utf8)) } ?? [] : []
            let allowed: [AllowedTraffic]
            do throws(FirewallError) {
                allowed = try allowedTraffic(for: exclusions, known: known)
            } catch .invalid(let reason) {
                return ("rejected", "\(reason); nothing changed")
            } catch {
                return ("failed", "\(error); nothing changed")
            }
            let now = clock()
            let until = command.durationSeconds.map { now.addingTimeInterval(TimeInterval($0)) }
            let generation = Int64((previous?[12].integer ?? 0) % 255 + 1)
            do {
                // Written down before the kernel is touched: a kill in between is finished at the next start.
                try store.database.query("""
                    INSERT INTO isolation (id, active, since, until, exclusions, command_id, lifted_by, allowed, listing, table_written, problem, generation)
                    VALUES (1, 1, ?, ?, ?, ?, NULL, ?, NULL, 1, NULL, ?)
                    ON CONFLICT(id) DO UPDATE SET active = 1, since = excluded.since, until = excluded.until, exclusions = excluded.exclusions,
                        command_id = excluded.command_id, lifted_by = NULL, allowed = excluded.allowed, listing = NULL, table_written = 1,
                        problem = NULL, generation = excluded.generation
                    """, [.real(now.timeIntervalSince1970), until.map { .real($0.timeIntervalSince1970) } ?? .null,
                          .text(String(decoding: Wire.encode(exclusions), as: UTF8.self)), .text(id),
                          .text(String(decoding: Wire.encode(allowed), as: UTF8.self)), .integer(generation)])
            } catch {
                return ("failed", "\(error); nothing changed")
            }
            do {
                let listing = try firewall.isolate(allowing: allowed, generation: UInt8(generation))
                try store.database.query("UPDATE isolation SET listing = ? WHERE id = 1", [.text(listing)])
            } catch {
                if wasActive, let previous {
                    // The isolation in force before stays: its record back, and its table (nft's
                    // transaction left it untouched, unless the new one was written but read back wrong).
                    _ = try? store.database.query("""
                        UPDATE isolation SET active = ?, since = ?, until = ?, exclusions = ?, command_id = ?, lifted_by = ?, allowed = ?,
                            listing = ?, table_written = ?, problem = ?, reasserted = ?, reasserted_at = ?, generation = ? WHERE id = 1
                        """, Array(previous.prefix(13)))
                    let restored = (previous[6].text).flatMap { try? Wire.decode([AllowedTraffic].self, from: Array($0.utf8)) } ?? []
                    if let listing = try? firewall.isolate(allowing: restored, generation: UInt8(clamping: previous[12].integer ?? 1)) {
                        _ = try? store.database.query("UPDATE isolation SET listing = ? WHERE id = 1", [.text(listing)])
                    }
                    return ("failed", "the new isolation is not in force: \(error); the isolation in force before stays")
                }
                // Not in force: recorded as such, and whatever part of a table exists goes.
                _ = try? store.database.query("UPDATE isolation SET active = 0, lifted_by = ?, problem = ? WHERE id = 1",
                                              [.text("not enforced"), .text("\(error)")])
                if (try? firewall.lift()) != nil { _ = try? store.database.query("UPDATE isolation SET table_written = 0 WHERE id = 1") }
                return ("failed", "network isolation is not in force: \(error)")
            }
            let timer = command.durationSeconds.map { " for \($0) s" } ?? " until lifted"
            let platform = allowed.count - exclusions.count
            return ("applied", "network isolated\(timer) in the kernel (nftables table \(Firewall.table)): "
                    + "\(platform) platform address\(platform == 1 ? "" : "es") and \(exclusions.count) exclusion\(exclusions.count == 1 ? "" : "s") allowed")
        }
    }

    /// The platform's endpoints the running connectors use (through the proxy when they use
    /// one), resolved now, or taken from `known` for a name resolved before: DNS is blocked
    /// while isolated, so addresses are fixed when the isolation starts.
    private func platformTraffic(known: [AllowedTraffic] = []) throws(FirewallError) -> [AllowedTraffic] {
        let state: AgentState
        do {
            guard let agentState else { throw AgentError.store("the agent cannot be opened") }
            state = try agentState()
        } catch {
            throw .invalid("the agent's settings cannot be read: \(error)")
        }
        var endpoints: [(Endpoint, String)] = []
        for integration in state.running.sorted() {
            let proxy = state.string(SettingPath.proxy.address)
            if state.bool(SettingPath.common(integration).useProxy), !proxy.isEmpty {
                guard let endpoint = Self.proxyEndpoint(proxy) else { throw .invalid("proxy.address '\(proxy)' has no host") }
                endpoints.append((endpoint, "proxy of \(integration.displayName)"))
                continue
            }
            switch integration {
            case .edr:
                endpoints.append((Endpoint(address: state.string(SettingPath.edr.address), port: state.int(SettingPath.edr.port)), "platform EDR"))
            case .ndr:
                if case .endpoints(let list) = state.value(SettingPath.ndr.endpoints) { endpoints += list.map { ($0, "platform NDR") } }
            case .sandbox:
                if case .endpoints(let list) = state.value(SettingPath.sandbox.servers) { endpoints += list.map { ($0, "platform Sandbox") } }
            }
        }
        var traffic: [AllowedTraffic] = []
        for (endpoint, reason) in endpoints {
            guard let port = PortRange(from: endpoint.port, to: endpoint.port) else { throw .invalid("\(reason): \(endpoint.port) is not a port") }
            let before = known.filter { $0.host == endpoint.address && $0.remotePorts == [port] }.compactMap(\.remote)
            for address in before.isEmpty ? try IPPrefix.resolve(endpoint.address) : before {
                // One rule per address and port, however many connectors use it.
                guard !traffic.contains(where: { $0.remote == address && $0.remotePorts == [port] }) else { continue }
                traffic.append(try AllowedTraffic(direction: .outbound, ipProtocol: 6, remote: address, remotePorts: [port],
                                                  reason: "\(reason) \(endpoint.address)", host: endpoint.address))
            }
        }
        return traffic
    }

    /// `host:port`, `[v6]:port` or a URL's host and port (without one, curl's default: 443 for
    /// an `https://` proxy, 1080 otherwise).
    static func proxyEndpoint(_ text: String) -> Endpoint? {
        var rest = Substring(text)
        var port = 1080
        if let scheme = rest.firstRange(ofText: "://") {
            if rest[..<scheme.lowerBound].equalsIgnoringCase("https") { port = 443 }
            rest = rest[scheme.upperBound...]
        }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        var host = rest
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") { port = Int(after.dropFirst()) ?? -1 }
        } else if let colon = rest.lastIndex(of: ":"), rest.firstIndex(of: ":") == colon {
            host = rest[..<colon]
            port = Int(rest[rest.index(after: colon)...]) ?? -1
        }
        guard !host.isEmpty, (1...65535).contains(port) else { return nil }
        return Endpoint(address: String(host), port: port)
    }

    /// One of the platform's exclusions as the firewall allows it; `.invalid` says which and what is wrong.
    static func allowedTraffic(_ exclusion: Command.Exclusion, number: Int) throws(FirewallError) -> AllowedTraffic {
        let name = "exclusion \(number)"
        if let unknown = exclusion.unknownFields.first {
            throw .invalid("\(name): '\(TerminalText.excerpt(unknown))' is not a field of an exclusion (\(Command.Exclusion.fieldNames.joined(separator: ", ")))")
        }
        guard let direction = AllowedTraffic.Direction(rawValue: exclusion.direction ?? "both") else {
            throw .invalid("\(name): direction '\(TerminalText.excerpt(exclusion.direction ?? ""))' is not inbound, outbound or both")
        }
        var ipProtocol: UInt8?
        if let number = exclusion.protocol {
            guard (0...255).contains(number) else { throw .invalid("\(name): protocol \(number) is not an IP protocol number (0-255)") }
            ipProtocol = UInt8(number)
        }
        var remote: IPPrefix?
        if let text = exclusion.remoteAddress ?? exclusion.address {
            guard let prefix = IPPrefix(text) else {
                throw .invalid("\(name): '\(TerminalText.excerpt(text))' is not an IPv4 or IPv6 address (with an optional /prefix); names are not resolved while isolated")
            }
            remote = prefix
        }
        func ranges(_ list: [Command.Exclusion.Ports]?, _ field: String) throws(FirewallError) -> [PortRange] {
            var result: [PortRange] = []
            for entry in list ?? [] {
                guard let range = PortRange(from: entry.fromPort, to: entry.toPort) else {
                    throw .invalid("\(name): \(field) \(entry.fromPort)-\(entry.toPort) is not a port range (0-65535, from ≤ to)")
                }
                result.append(range)
            }
            return result
        }
        var remotePorts = try ranges(exclusion.remotePorts, "remotePorts")
        if let port = exclusion.port {
            guard let range = PortRange(from: port, to: port) else { throw .invalid("\(name): \(port) is not a port") }
            remotePorts.append(range)
        }
        return try AllowedTraffic(direction: direction, ipProtocol: ipProtocol, remote: remote,
                                  localPorts: try ranges(exclusion.localPorts, "localPorts"), remotePorts: remotePorts, reason: name)
    }

    /// Lifts the isolation (an operator's `tether agent isolation-off`, the auto-off timer, or a
    /// command): written down first, then the table removed (whatever the record says, so a
    /// lost or reset store cannot leave the machine cut off), so a kill in between cannot bring
    /// an isolation back that someone lifted.
    @discardableResult
    package func liftIsolation(by who: String) -> (String, String) {
        withIsolationLock {
            do {
                let row = try store.database.query("SELECT active, table_written FROM isolation WHERE id = 1").first
                let active = row?[0].integer == 1
                try store.database.query("UPDATE isolation SET active = 0, lifted_by = ? WHERE id = 1 AND active = 1", [.text(who)])
                do {
                    try firewall.lift()
                } catch where !active && row?[1].integer != 1 {
                    // Nothing was ever written, and nftables cannot be reached: nothing to remove.
                    return ("applied", "no isolation was active")
                }
                try store.database.query("UPDATE isolation SET table_written = 0, listing = NULL WHERE id = 1")
                return ("applied", active ? "isolation lifted by \(who)" : "no isolation was active")
            } catch {
                return ("failed", "the isolation is recorded as lifted, but \(error)")
            }
        }
    }

    /// Makes the kernel hold what the store says (at start, and on every tick while isolated):
    /// an isolation whose timer ran out is lifted, a lifted one's leftover table removed, and a
    /// table someone removed or changed while isolated is put back and counted. Returns what it
    /// had to do, for the log; nil when the kernel already matched.
    @discardableResult
    package func enforceIsolation() -> String? {
        expireIsolation()
        guard let first = try? store.database.query("SELECT active, table_written FROM isolation WHERE id = 1").first,
              first[0].integer == 1 || first[1].integer == 1 else { return nil }
        guard first[0].integer == 1 else {
            return liftIsolation(by: "a lift interrupted before the table was removed").1
        }
        return withIsolationLock { () -> String? in
            guard let row = try? store.database.query("SELECT active, allowed, listing, exclusions, generation FROM isolation WHERE id = 1").first,
                  row[0].integer == 1 else { return nil }
            let generation = UInt8(clamping: max(row[4].integer ?? 1, 1))
            var allowed: [AllowedTraffic]
            if let stored = row[1].text, let decoded = try? Wire.decode([AllowedTraffic].self, from: Array(stored.utf8)) {
                allowed = decoded
            } else {
                // Ordered under a release that only recorded isolations: work out what to allow now.
                do {
                    let exclusions = try Wire.decode([Command.Exclusion].self, from: Array((row[3].text ?? "[]").utf8))
                    allowed = try allowedTraffic(for: exclusions)
                    try store.database.query("UPDATE isolation SET allowed = ?, table_written = 1, generation = ? WHERE id = 1",
                                             [.text(String(decoding: Wire.encode(allowed), as: UTF8.self)), .integer(Int64(generation))])
                } catch {
                    _ = try? store.database.query("UPDATE isolation SET problem = ? WHERE id = 1", [.text("\(error)")])
                    return "the recorded isolation cannot be put in force: \(error)"
                }
            }
            let found: String
            do {
                if case .present(let listing) = try firewall.enforcement(), listing == row[2].text { return nil }
                found = row[2].text == nil ? "the isolation was not in the kernel yet (interrupted, or ordered before this boot)"
                    : "Tether's nftables table was removed or changed"
            } catch {
                _ = try? store.database.query("UPDATE isolation SET problem = ? WHERE id = 1", [.text("\(error)")])
                return "the isolation cannot be checked: \(error)"
            }
            do {
                let listing = try firewall.isolate(allowing: allowed, generation: generation)
                try store.database.query("""
                    UPDATE isolation SET listing = ?, problem = NULL, reasserted = reasserted + ?, reasserted_at = ? WHERE id = 1
                    """, [.text(listing), .integer(row[2].text == nil ? 0 : 1), .real(clock().timeIntervalSince1970)])
                return "\(found); isolation put back"
            } catch {
                _ = try? store.database.query("UPDATE isolation SET problem = ? WHERE id = 1", [.text("\(error)")])
                return "\(found), and it cannot be put back: \(error)"
            }
        }
    }

    /// The isolation as ordered, and what the kernel holds of it (read back now while active).
    package func isolationStatus() throws -> IsolationStatus {
        expireIsolation()
        let row: [SQLValue]?
        do {
            row = try store.database.query("""
                SELECT active, since, until, exclusions, command_id, lifted_by, allowed, listing, problem, reasserted, reasserted_at
                FROM isolation WHERE id = 1
                """).first
        } catch {
            throw AgentError.store("runtime.db: \(error)")
        }
        guard let row else {
            return IsolationStatus(active: false, since: nil, until: nil, exclusions: [], allowed: [], enforced: false, checked: true,
                                   problem: nil, reasserted: 0, reassertedAt: nil, commandId: nil, liftedBy: nil)
        }
        let exclusions: [Command.Exclusion]
        let allowed: [AllowedTraffic]
        do {
            exclusions = try Wire.decode([Command.Exclusion].self, from: Array((row[3].text ?? "[]").utf8))
            allowed = try Wire.decode([AllowedTraffic].self, from: Array((row[6].text ?? "[]").utf8))
        } catch {
            throw AgentError.store("runtime.db: the isolation's exclusions cannot be read: \(error)")
        }
        let active = row[0].integer == 1
        var enforced = false
        var checked = true
        var problem: String?
        if active {
            do {
                if case .present(let listing) = try firewall.enforcement(), listing == row[7].text {
                    enforced = true
                } else {
                    problem = row[8].text ?? "Tether's nftables table is missing or changed; the controller puts it back"
                }
            } catch {
                checked = false
                problem = "\(error)"
            }
        }
        return IsolationStatus(active: active, since: row[1].real.map { Date(timeIntervalSince1970: $0) },
                               until: row[2].real.map { Date(timeIntervalSince1970: $0) }, exclusions: exclusions, allowed: allowed,
                               enforced: enforced, checked: checked, problem: problem, reasserted: Int(row[9].integer ?? 0),
                               reassertedAt: row[10].real.map { Date(timeIntervalSince1970: $0) }, commandId: row[4].text, liftedBy: row[5].text)
    }

    /// Lifts an isolation whose auto-off time has come (the table goes too).
    func expireIsolation() {
        guard let due = try? store.database.query("SELECT 1 FROM isolation WHERE id = 1 AND active = 1 AND until IS NOT NULL AND until <= ?",
                                                  [.real(clock().timeIntervalSince1970)]), !due.isEmpty else { return }
        liftIsolation(by: "auto-off timer")
    }

    /// While isolated, the platform's names as curl must reach them without DNS
    /// (`HOST:PORT:ADDRESS,…`, TransportConfiguration.fixedAddresses); empty otherwise.
    func isolatedAddresses() -> [String] {
        guard let row = try? store.database.query("SELECT allowed FROM isolation WHERE id = 1 AND active = 1").first,
              let text = row[0].text, let allowed = try? Wire.decode([AllowedTraffic].self, from: Array(text.utf8)) else { return [] }
        var byName: [(name: String, addresses: [String])] = []
        for traffic in allowed {
            guard let host = traffic.host, let remote = traffic.remote, let port = traffic.remotePorts.first, IPPrefix(host) == nil else { continue }
            let name = "\(host):\(port.from)"
            let address = remote.family == .ipv6 ? "[\(remote.address)]" : remote.address
            if let index = byName.firstIndex(where: { $0.name == name }) {
                byName[index].addresses.append(address)
            } else {
                byName.append((name, [address]))
            }
        }
        return byName.map { "\($0.name):\($0.addresses.joined(separator: ","))" }
    }
}

extension ConnectorRuntime {
    /// The isolation lock in the state directory; it exists once an isolation was ever ordered
    /// or lifted there, so a device that never had one pays nothing to check at start.
    package static let isolationLockFileName = "isolation.lock"

    /// Whether an isolation may be recorded in `stateDirectory` (its lock file exists).
    package static func mayHoldIsolation(_ stateDirectory: URL) -> Bool {
        FileManager.default.fileExists(atPath: stateDirectory.appending(path: isolationLockFileName).path)
    }

    /// The isolation over this runtime's store, firewall and agent.
    var isolation: IsolationKeeper {
        IsolationKeeper(store: store, firewall: firewall, directory: directory, clock: clock, agentState: { [agent] in try agent.state() })
    }

    /// The isolation as ordered, and what the kernel holds of it (read back now while active).
    package func isolationStatus() throws -> IsolationStatus { try isolation.isolationStatus() }

    /// Lifts the isolation (an operator's `tether agent isolation-off`, the auto-off timer, or a command).
    @discardableResult
    package func liftIsolation(by who: String) -> (String, String) { isolation.liftIsolation(by: who) }

    /// Makes the kernel hold what the store says; what it had to do, or nil.
    @discardableResult
    package func enforceIsolation() -> String? { isolation.enforceIsolation() }

    func expireIsolation() { isolation.expireIsolation() }

    func isolatedAddresses() -> [String] { isolation.isolatedAddresses() }

    func isolate(_ command: Command, id: String) -> (String, String) { isolation.isolate(command, id: id) }

    /// Puts a recorded isolation back in the kernel (or lifts an expired one) from the state
    /// directory's `runtime.db` alone, for a controller whose agent cannot be opened: a
    /// rebooted machine the platform isolated stays isolated. Nil when there is no such store
    /// or nothing to do; else what was done, for the log.
    package static func enforceRecordedIsolation(stateDirectory: URL, firewall: Firewall = Firewall()) -> String? {
        guard mayHoldIsolation(stateDirectory), FileManager.default.fileExists(atPath: stateDirectory.appending(path: storeFileName).path),
              let store = try? RuntimeStore(directory: stateDirectory, queueLimit: 1) else { return nil }
        return IsolationKeeper(store: store, firewall: firewall, directory: stateDirectory, clock: { Date() }, agentState: nil).enforceIsolation()
    }
}
