#if canImport(Glibc)
import Glibc
#endif
import Primitives

/// What values a setting accepts.
package enum SettingKind: Sendable, Equatable {
    case bool
    /// An integer within a range, with a unit for people ("seconds", "minutes", "percent", "MB").
    case integer(ClosedRange<Int>, unit: String?)
    /// One of a fixed set of words.
    case choice([String])
    /// An IPv4 or IPv6 address or a host name.
    case host
    /// Free text (empty means "not set").
    case text
    /// A non-empty list of `{address, port}`; `ordered` when order carries meaning (fail-over order).
    case endpoints(ordered: Bool)
    /// A list of absolute folders on the device, compared as a set.
    case paths

    /// A short description for errors and `--help`: "an integer from 1 to 65535".
    package var expectation: String {
        switch self {
        case .bool: return "true or false"
        case .integer(let range, let unit):
            let suffix = unit.map { " (\($0))" } ?? ""
            if range.upperBound == SettingKind.unbounded { return "an integer of at least \(range.lowerBound)\(suffix)" }
            return "an integer from \(range.lowerBound) to \(range.upperBound)\(suffix)"
        case .choice(let words): return "one of " + words.joined(separator: ", ")
        case .host: return "an IPv4 address, an IPv6 address or a host name"
        case .text: return "a string"
        case .endpoints: return "a list of {address, port}"
        case .paths: return "a list of absolute folders such as [/etc, /usr/bin]"
        }
    }

    /// The upper bound used for settings that the vendor only bounds below.
    package static let unbounded = Int(Int32.max)
}

/// One setting: its policy name, the vendor's key, its kind and default.
package struct SettingField: Sendable {
    /// The camelCase name used in policies and reports (`port`).
    package let name: String
    /// The vendor's key (`Port`, `EventTransferSettings.PingPeriod`); nil for the task's running state.
    package let vendorKey: String?
    package let kind: SettingKind
    package let defaultValue: SettingValue
    /// One line for people.
    package let summary: String

    init(_ name: String, _ vendorKey: String?, _ kind: SettingKind, _ defaultValue: SettingValue, _ summary: String) {
        self.name = name
        self.vendorKey = vendorKey
        self.kind = kind
        self.defaultValue = defaultValue
        self.summary = summary
    }

    /// True for `enabled`: stored as whether the task runs, not as a setting.
    package var isTaskState: Bool { name == "enabled" }

    /// Checks a value against the kind; returns a message that says what is expected, or nil.
    package func problem(with value: SettingValue) -> String? {
        switch (kind, value) {
        case (.bool, .bool): return nil
        case (.integer(let range, _), .int(let number)):
            return range.contains(number) ? nil : "\(number) is out of range: expected \(kind.expectation)"
        case (.choice(let words), .string(let word)):
            return words.contains(word) ? nil : "\"\(TerminalText.excerpt(word))\" is not allowed: expected \(kind.expectation)"
        case (.host, .string(let host)):
            return HostName.isValid(host) ? nil : "\"\(TerminalText.excerpt(host))\" is not \(kind.expectation)"
        case (.text, .string): return nil
        case (.endpoints, .endpoints(let list)):
            if list.isEmpty { return "the list is empty: expected at least one {address, port}" }
            for (index, endpoint) in list.enumerated() {
                if !HostName.isValid(endpoint.address) { return "item \(index + 1): \"\(TerminalText.excerpt(endpoint.address))\" is not \(SettingKind.host.expectation)" }
                if !(1...65535).contains(endpoint.port) { return "item \(index + 1): port \(endpoint.port) is out of range: expected an integer from 1 to 65535" }
            }
            return nil
        case (.paths, .paths(let list)):
            return FolderList.problem(list)
        default:
            return "expected \(kind.expectation), found \(TerminalText.excerpt(value.description))"
        }
    }

    /// Parses the text form used on the command line (`Port=8443`, `Endpoints=10.0.0.1:8081,[::1]:8081`).
    package func parse(text: String) -> Result<SettingValue, SettingTextError> {
        let trimmed = text.trimmingWhitespace()
        let value: SettingValue
        switch kind {
        case .bool:
            switch trimmed.lowercased() {
            case "true", "yes", "on", "1": value = .bool(true)
            case "false", "no", "off", "0": value = .bool(false)
            default: return .failure(SettingTextError("\"\(text)\" is not \(kind.expectation)"))
            }
        case .integer:
            guard let number = Int(trimmed) else { return .failure(SettingTextError("\"\(text)\" is not \(kind.expectation)")) }
            value = .int(number)
        case .choice, .host, .text:
            value = .string(trimmed)
        case .endpoints:
            var list: [Endpoint] = []
            for item in trimmed.split(separator: ",") {
                guard let endpoint = Endpoint(text: String(item).trimmingWhitespace()) else {
                    return .failure(SettingTextError("\"\(item)\" is not address:port (write IPv6 addresses as [::1]:8081)"))
                }
                list.append(endpoint)
            }
            value = .endpoints(list)
        case .paths:
            value = .paths(trimmed.split(separator: ",").map { String($0).trimmingWhitespace() })
        }
        if let problem = problem(with: value) { return .failure(SettingTextError(problem)) }
        return .success(value)
    }
}

/// A value on the command line that does not fit its setting.
package struct SettingTextError: Error, Sendable, CustomStringConvertible {
    package let description: String
    init(_ description: String) { self.description = description }
}

extension Endpoint {
    /// Parses `host:port` or `[ipv6]:port`.
    package init?(text: String) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let port = Int(portText), !host.isEmpty else { return nil }
        self.init(address: String(host), port: port)
    }
}

/// Every setting Tether manages (README.md, "Settings", lists them for people).
package enum SettingCatalog {
    private static let seconds = "seconds"
    private static let positiveSeconds = SettingKind.integer(1...SettingKind.unbounded, unit: "seconds")
    private static let positive = SettingKind.integer(1...SettingKind.unbounded, unit: nil)
    private static let percent = SettingKind.integer(1...100, unit: "percent")

    /// App-wide settings.
    package static let app: [SettingField] = [
        SettingField("behaviorDetection", "BehaviorDetection", .bool, .bool(true),
                     "Behaviour detection; EDR telemetry exists only while it is on."),
        SettingField("proxy.address", "ProxyAddress", .text, .string(""),
                     "The app-wide proxy (host:port); empty for none."),
        SettingField("proxy.user", "ProxyUser", .text, .string(""),
                     "The proxy user name; empty for none."),
        SettingField("proxy.passwordFile", "ProxyPasswordFile", .text, .string(""),
                     "A file on the device holding the proxy password (never the password itself)."),
    ]

    private static func enabled(_ task: String) -> SettingField {
        SettingField("enabled", nil, .bool, .bool(false), "Whether the \(task) task runs. Integrations are off by default.")
    }

    private static let timeouts: [SettingField] = [
        SettingField("connectionTimeout", "ConnectionTimeout", positiveSeconds, .int(10), "Seconds to wait for a connection."),
        SettingField("requestTimeout", "RequestTimeout", positiveSeconds, .int(10), "Seconds to wait for a response."),
    ]

    private static func eventTransfer(section: String) -> [SettingField] {
        [
            SettingField("maximumDataTransferTime", section + "MaximumDataTransferTime", positiveSeconds, .int(30),
                         "Seconds a telemetry batch may wait before it is sent."),
            SettingField("requestCountLimits", section + "UseRequestCountLimits", .bool, .bool(true),
                         "Whether events are throttled."),
            SettingField("maximumEventsPerHour", section + "MaximumNumberOfEventsInHour", positive, .int(3000),
                         "Events sent per hour at most."),
            SettingField("eventLimitExceededPercentage", section + "EventLimitExceededPercentage", percent, .int(15),
                         "One event type above this share of all events is limited."),
        ]
    }

    private static let useProxy = SettingField("useProxy", "UseProxy", .bool, .bool(true),
                                               "Connect through the app-wide proxy when one is set.")

    /// EDR (task KATAEDR).
    package static let edr: [SettingField] = [enabled("KATAEDR")] + [
        SettingField("mode", "Mode", .choice(["kata", "expert-onprem"]), .string("kata"), "The EDR back-end; one at a time. Changing it restarts the task."),
        SettingField("address", "Address", .host, .string("127.0.0.1"), "The platform's central node."),
        SettingField("port", "Port", .integer(1...65535, unit: nil), .int(443), "The central node's port."),
        SettingField("mutualAuthentication", "UseClientPinnedCertificate", .bool, .bool(false),
                     "Present a client certificate; needs one before the task starts."),
        SettingField("synchronizationPeriod", "SynchronizationPeriod", .integer(1...60, unit: "minutes"), .int(5),
                     "Minutes between sync requests."),
    ] + timeouts + eventTransfer(section: "") + [
        SettingField("telemetry", "EnableTelemetry", .bool, .bool(true), "Send telemetry; needs behaviour detection on."),
        SettingField("fileMonitoring.paths", nil, .paths, .paths(FolderList.defaultFileMonitoring),
                     "Folders (and their subfolders) whose file changes are EDR telemetry."),
        useProxy,
    ]

    /// NDR (task KATANDR).
    package static let ndr: [SettingField] = [enabled("KATANDR")] + [
        SettingField("endpoints", "Endpoints", .endpoints(ordered: true), .endpoints([Endpoint(address: "127.0.0.1", port: 8081)]),
                     "NDR servers, tried in order (fail-over)."),
        SettingField("mutualAuthentication", "UseClientPinnedCertificate", .bool, .bool(false),
                     "Present a client certificate; needs one before the task starts."),
        SettingField("synchronizationPeriod", "SynchronizationPeriod", .integer(1...60, unit: "minutes"), .int(5),
                     "Minutes between sync requests."),
    ] + timeouts + eventTransfer(section: "EventTransferSettings.") + [
        SettingField("maximumEventsInPackage", "EventTransferSettings.MaximumNumberOfEventsInPackage", positive, .int(1024),
                     "Events per package at most."),
        SettingField("pingPeriod", "EventTransferSettings.PingPeriod", positiveSeconds, .int(450), "Seconds between pings."),
        useProxy,
    ]

    /// Sandbox (task KATASandbox).
    package static let sandbox: [SettingField] = [enabled("KATASandbox")] + [
        SettingField("servers", "Servers", .endpoints(ordered: false), .endpoints([Endpoint(address: "127.0.0.1", port: 443)]),
                     "Sandbox scanner servers (compared as a set)."),
        SettingField("mutualAuthentication", "UseClientCertificate", .bool, .bool(false),
                     "Present a client certificate; needs one before the task starts."),
    ] + timeouts + [
        SettingField("queueSize", "SandboxTransferSettings.SandboxQueue", .integer(1...SettingKind.unbounded, unit: "MB"), .int(1024),
                     "Megabytes of objects that may wait on disk to be scanned."),
        useProxy,
    ]

    /// The fields of a scope, in the order people read them.
    package static func fields(_ scope: SettingScope) -> [SettingField] {
        switch scope {
        case .app: return app
        case .integration(.edr): return edr
        case .integration(.ndr): return ndr
        case .integration(.sandbox): return sandbox
        }
    }

    /// Every scope, app-wide first.
    package static let scopes: [SettingScope] = [.app] + Integration.allCases.map { .integration($0) }

    /// The field at a path, if there is one.
    package static func field(_ path: SettingPath) -> SettingField? {
        fields(path.scope).first { $0.name == path.field }
    }

    /// The path a report or a store writes as text (`edr.port`, `behaviorDetection`); nil when
    /// the catalog has no such setting.
    package static func path(named text: String) -> SettingPath? {
        for scope in scopes {
            let prefix = scope.prefix.isEmpty ? "" : scope.prefix + "."
            guard text.hasPrefix(prefix) else { continue }
            let field = String(text.dropFirst(prefix.count))
            if fields(scope).contains(where: { $0.name == field }) { return SettingPath(scope, field) }
        }
        return nil
    }

    /// Finds a field by the vendor's key, case-insensitively; a key without its INI section
    /// (`PingPeriod` for `EventTransferSettings.PingPeriod`) also matches.
    package static func field(vendorKey: String, in scope: SettingScope) -> SettingField? {
        let wanted = vendorKey.lowercased()
        let candidates = fields(scope).filter { $0.vendorKey != nil }
        if let exact = candidates.first(where: { $0.vendorKey!.lowercased() == wanted }) { return exact }
        return candidates.first { $0.vendorKey!.lowercased().split(separator: ".").last.map(String.init) == wanted }
    }

    static func order(of path: SettingPath) -> Int {
        fields(path.scope).firstIndex { $0.name == path.field } ?? Int.max
    }
}

/// Lists of folders on the device, as `edr.fileMonitoring.paths` holds them.
package enum FolderList {
    /// Where programs, configuration and users' and temporary files live.
    package static let defaultFileMonitoring = ["/etc", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/tmp", "/var/tmp", "/root", "/home"]
    /// Folders a list may hold at most.
    package static let limit = 64

    /// Why a list is refused, or nil: each item an absolute, normalised folder of at most 1024
    /// bytes without control characters, no repeats, at most `limit` items.
    package static func problem(_ list: [String]) -> String? {
        if list.isEmpty { return "the list is empty: expected at least one folder (to watch none, turn telemetry off)" }
        if list.count > limit { return "\(list.count) folders: at most \(limit) may be watched" }
        var seen = Set<String>()
        for (index, folder) in list.enumerated() {
            if let problem = problem(folder: folder) { return "item \(index + 1): \(problem)" }
            if !seen.insert(folder).inserted { return "item \(index + 1): \"\(TerminalText.excerpt(folder))\" is listed twice" }
        }
        return nil
    }

    /// Why one folder is refused, or nil.
    package static func problem(folder: String) -> String? {
        guard folder.hasPrefix("/") else { return "\"\(TerminalText.excerpt(folder))\" is not an absolute folder (it must start with /)" }
        if folder.utf8.count > 1024 { return "the folder is longer than 1024 bytes" }
        if folder.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }) {
            return "\"\(TerminalText.excerpt(folder))\" holds a control character"
        }
        let parts = folder.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        if folder != "/" && (folder.hasSuffix("/") || parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." })) {
            return "\"\(TerminalText.excerpt(folder))\" is not normalised: write it without //, /./, /../ or a trailing /"
        }
        return nil
    }
}

/// Checks host names and IP addresses.
package enum HostName {
    /// True for an IPv4 address, an IPv6 address or a DNS host name.
    package static func isValid(_ text: String) -> Bool {
        // By bytes: a valid name or address is ASCII, and anything else fails a test below.
        let bytes = text.utf8
        if bytes.isEmpty || bytes.count > 253 { return false }
        var buffer = [UInt8](repeating: 0, count: 16)
        if inet_pton(AF_INET, text, &buffer) == 1 || inet_pton(AF_INET6, text, &buffer) == 1 { return true }
        let dot = UInt8(ascii: "."), hyphen = UInt8(ascii: "-")
        // Anything of digits and dots that is not a valid IPv4 address is a typo, not a host name.
        if bytes.allSatisfy({ $0.isASCIIDigit || $0 == dot }) { return false }
        return bytes.split(separator: dot, omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.count <= 63 && label.first != hyphen && label.last != hyphen
                && label.allSatisfy { $0.isASCIIDigit || $0 == hyphen || $0.isASCIILetter }
        }
    }
}
