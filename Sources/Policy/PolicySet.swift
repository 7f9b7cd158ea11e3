import Dispatch
import Foundation
import IntegrationModel

/// The desired state for one device: each managed key, its value and the policy line that set it.
public struct DesiredState: Sendable {
    public let values: [DesiredKey: Sourced<DesiredValue>]
    /// The policies that selected this device, highest priority first.
    public let policies: [String]
    /// Keys marked `observe` or `ignore` by any selected policy (`ignore` wins over `observe`).
    public let modes: [DesiredKey: Sourced<FieldMode>]
    /// Exceptions of the selected policies, by key (the highest-priority policy's first).
    public let exceptions: [DesiredKey: PolicyException]

    public init(values: [DesiredKey: Sourced<DesiredValue>], policies: [String],
                modes: [DesiredKey: Sourced<FieldMode>] = [:], exceptions: [DesiredKey: PolicyException] = [:]) {
        self.values = values
        self.policies = policies
        self.modes = modes
        self.exceptions = exceptions
    }

    /// The authority over `key`.
    public func mode(_ key: DesiredKey) -> FieldMode { modes[key]?.value ?? .enforce }

    /// The desired setting at `path`, when a policy manages it.
    public func setting(_ path: SettingPath) -> SettingValue? {
        if case .setting(let value)? = values[.setting(path)]?.value { return value }
        return nil
    }
}

/// All policies of one revision.
public struct PolicySet: Sendable {
    public let policies: [IntegrationPolicy]

    /// Every problem found while decoding (empty when all files are valid). Policies with
    /// problems in some fields keep their valid fields, so later checks still see them.
    public let problems: [PolicyProblem]

    /// Decodes every file and checks that policy names are unique, keeping every problem found.
    public init(decoding files: [(path: String, contents: [UInt8])]) {
        let decoded = PolicySet.decodeConcurrently(files)
        var policies: [IntegrationPolicy] = []
        var problems: [PolicyProblem] = []
        for result in decoded {
            policies += result.policies
            problems += result.problems
        }
        var firstByName: [String: IntegrationPolicy] = [:]
        for policy in policies {
            if let earlier = firstByName[policy.name] {
                problems.append(PolicyProblem(policy.location,
                    "policy name '\(policy.name)' is already used at \(earlier.location.shortDescription): names must be unique in the repository"))
            } else {
                firstByName[policy.name] = policy
            }
        }
        self.policies = policies
        self.problems = problems
    }

    /// Decodes files on every core; results keep the files' order.
    private static func decodeConcurrently(_ files: [(path: String, contents: [UInt8])]) -> [(policies: [IntegrationPolicy], problems: [PolicyProblem])] {
        let chunkCount = files.count < 64 ? 1 : ProcessInfo.processInfo.activeProcessorCount * 4
        let chunkSize = (files.count + chunkCount - 1) / max(chunkCount, 1)
        let results = ResultSlots(count: files.count)
        DispatchQueue.concurrentPerform(iterations: chunkCount) { chunk in
            let start = chunk * chunkSize
            guard start < files.count else { return }
            for index in start..<min(start + chunkSize, files.count) {
                results.store(PolicyDecoder.decode(file: files[index].path, contents: files[index].contents), at: index)
            }
        }
        return results.values
    }

    /// Decodes every file; throws `PolicyProblems` with every problem when any file is invalid.
    public init(files: [(path: String, contents: [UInt8])]) throws {
        self.init(decoding: files)
        if !problems.isEmpty { throw PolicyProblems(problems) }
    }

    /// Selects the policies whose selector matches `labels` and merges them field by field:
    /// the highest priority wins; two policies of equal priority that give one key different
    /// values are a problem naming both places.
    public func desiredState(labels: [String: String]) throws -> DesiredState {
        let selected = policies.filter { $0.selects(labels) }.sorted {
            ($0.priority, $1.name) > ($1.priority, $0.name)
        }
        var values: [DesiredKey: Sourced<DesiredValue>] = [:]
        var winners: [DesiredKey: IntegrationPolicy] = [:]
        var problems: [PolicyProblem] = []
        for policy in selected {
            for (key, candidate) in policy.values {
                guard let current = values[key], let owner = winners[key] else {
                    values[key] = candidate
                    winners[key] = policy
                    continue
                }
                if owner.priority == policy.priority && current.value != candidate.value {
                    problems.append(PolicyProblem(candidate.source,
                        "\(key): policies '\(owner.name)' (\(current.source.shortDescription)) and '\(policy.name)' (\(candidate.source.shortDescription)) both have priority \(policy.priority) and set different values (\(current.value) and \(candidate.value)); give one of them a higher priority"))
                }
            }
        }
        if !problems.isEmpty { throw PolicyProblems(problems) }
        var modes: [DesiredKey: Sourced<FieldMode>] = [:]
        var exceptions: [DesiredKey: PolicyException] = [:]
        for (key, owner) in winners where owner.mode == .observe && modes[key] == nil {
            modes[key] = Sourced(.observe, at: owner.location)
        }
        for policy in selected {
            for (key, mode) in policy.modes where modes[key]?.value != .ignore {
                modes[key] = mode
            }
            for exception in policy.exceptions where exceptions[exception.key] == nil {
                exceptions[exception.key] = exception
            }
        }
        return DesiredState(values: values, policies: selected.map(\.name), modes: modes, exceptions: exceptions)
    }
}

extension PolicySet {
    /// Whether a policy of this revision explicitly allows applying it although it does not
    /// descend from the last applied revision.
    public var allowsRollback: Bool { policies.contains { $0.allowRollback } }

    /// Conflicts that some device could hit: two policies of equal priority whose selectors do
    /// not contradict each other (so one device can match both) and that set one key to
    /// different values. Cost stays linear unless policies really disagree.
    public func potentialConflicts() -> [PolicyProblem] {
        struct Entry { let policy: IntegrationPolicy; let value: Sourced<DesiredValue> }
        var buckets: [DesiredKey: [Int: [Entry]]] = [:]
        for policy in policies {
            for (key, value) in policy.values {
                buckets[key, default: [:]][policy.priority, default: []].append(Entry(policy: policy, value: value))
            }
        }
        var problems: [PolicyProblem] = []
        for (key, byPriority) in buckets {
            for (priority, entries) in byPriority where entries.count > 1 {
                let distinct = Set(entries.map(\.value.value))
                guard distinct.count > 1 else { continue }
                for (index, a) in entries.enumerated() {
                    for b in entries[(index + 1)...] where a.value.value != b.value.value && Self.compatible(a.policy, b.policy) {
                        problems.append(PolicyProblem(b.value.source,
                            "\(key): policies '\(a.policy.name)' (\(a.value.source.shortDescription)) and '\(b.policy.name)' (\(b.value.source.shortDescription)) both have priority \(priority), can select the same device and set different values (\(a.value.value) and \(b.value.value)); give one of them a higher priority or disjoint selectors"))
                    }
                }
            }
        }
        return problems
    }

    private static func compatible(_ a: IntegrationPolicy, _ b: IntegrationPolicy) -> Bool {
        a.matchLabels.allSatisfy { key, value in b.matchLabels[key].map { $0 == value } ?? true }
    }
}

/// Fixed slots written by concurrent workers, each slot by exactly one worker.
private final class ResultSlots: @unchecked Sendable {
    private var slots: [(policies: [IntegrationPolicy], problems: [PolicyProblem])]

    init(count: Int) {
        slots = Array(repeating: ([], []), count: count)
    }

    func store(_ value: (policies: [IntegrationPolicy], problems: [PolicyProblem]), at index: Int) {
        slots.withUnsafeMutableBufferPointer { $0[index] = value }
    }

    var values: [(policies: [IntegrationPolicy], problems: [PolicyProblem])] { slots }
}
