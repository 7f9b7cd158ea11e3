import Dispatch
import FoundationEssentials
import IntegrationModel
import Primitives

/// The desired state for one device: each managed key, its value and the policy line that set it.
package struct DesiredState: Sendable {
    package let values: [DesiredKey: Sourced<DesiredValue>]
    /// The policies that selected this device, highest priority first.
    package let policies: [String]
    /// Keys marked `observe` or `ignore` by any selected policy (`ignore` wins over `observe`).
    package let modes: [DesiredKey: Sourced<FieldMode>]
    /// Exceptions of the selected policies, by key (the highest-priority policy's first).
    package let exceptions: [DesiredKey: PolicyException]

    package init(values: [DesiredKey: Sourced<DesiredValue>], policies: [String],
                modes: [DesiredKey: Sourced<FieldMode>] = [:], exceptions: [DesiredKey: PolicyException] = [:]) {
        self.values = values
        self.policies = policies
        self.modes = modes
        self.exceptions = exceptions
    }

    /// The authority over `key`.
    package func mode(_ key: DesiredKey) -> FieldMode { modes[key]?.value ?? .enforce }

    /// The desired setting at `path`, when a policy manages it.
    package func setting(_ path: SettingPath) -> SettingValue? {
        if case .setting(let value)? = values[.setting(path)]?.value { return value }
        return nil
    }
}

/// All policies of one revision.
package struct PolicySet: Sendable {
    package let policies: [IntegrationPolicy]

    /// Every problem found while decoding (empty when all files are valid). Policies with
    /// problems in some fields keep their valid fields, so later checks still see them.
    package let problems: [PolicyProblem]

    /// Decodes every file and checks that policy names are unique, keeping every problem found.
    package init(decoding files: [(path: String, contents: [UInt8])]) {
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
    package init(files: [(path: String, contents: [UInt8])]) throws {
        self.init(decoding: files)
        if !problems.isEmpty { throw PolicyProblems(problems) }
    }

    /// Selects the policies whose selector matches `labels` and merges them field by field:
    /// the highest priority wins; two policies of equal priority that give one key different
    /// values are a problem naming both places.
    package func desiredState(labels: [String: String]) throws -> DesiredState {
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
    /// What a reviewer or operator should know about a device's labels against this revision's
    /// selectors: a label no selector uses, and a value no selector names for its key (with the
    /// closest one — `env=prdo` against `env: prod`).
    package func labelWarnings(_ labels: [String: String]) -> [String] {
        var values: [String: Set<String>] = [:]
        for policy in policies {
            for (key, value) in policy.matchLabels { values[key, default: []].insert(value) }
        }
        var warnings: [String] = []
        for (key, value) in labels.sorted(by: { $0.key < $1.key }) {
            guard let known = values[key] else {
                warnings.append("the label \(key)=\(value) is used by no policy's selector\(Suggestion.hint(for: key, among: Array(values.keys)).replacingAll("did you mean '", with: "did you mean the key '"))")
                continue
            }
            if !known.contains(value) {
                let hint = Suggestion.closest(to: value, among: Array(known)).map { "; did you mean \(key)=\($0)?" } ?? ""
                warnings.append("the label \(key)=\(value) matches no policy's selector (they name \(key)=\(known.sorted().joined(separator: ", ")))\(hint)")
            }
        }
        return warnings
    }

    /// Whether a policy of this revision explicitly allows applying it although it does not
    /// descend from the last applied revision.
    package var allowsRollback: Bool { policies.contains { $0.allowRollback } }

    /// Conflicts that some device could hit: two policies of equal priority whose selectors do
    /// not contradict each other (so one device can match both) and that set one key to
    /// different values. Linear unless policies really disagree: candidates are partitioned by
    /// the label that tells most of them apart (see `conflictingPairs`). Policies of different
    /// priorities never conflict, so policies are first put in priority order (no hashing), and
    /// only a priority that two or more share has its keys compared.
    package func potentialConflicts() -> [PolicyProblem] {
        let byPriority = policies.indices.sorted { (policies[$0].priority, $0) < (policies[$1].priority, $1) }
        var problems: [PolicyProblem] = []
        var start = 0
        while start < byPriority.count {
            let priority = policies[byPriority[start]].priority
            var end = start + 1
            while end < byPriority.count, policies[byPriority[end]].priority == priority { end += 1 }
            defer { start = end }
            guard end - start > 1 else { continue }
            var buckets: [DesiredKey: [ConflictCandidate]] = [:]
            for order in byPriority[start..<end] {
                let policy = policies[order]
                for (key, value) in policy.values {
                    buckets[key, default: []].append(ConflictCandidate(order: order, policy: policy, value: value))
                }
            }
            for (key, entries) in buckets where entries.count > 1 {
                guard Set(entries.map(\.value.value)).count > 1 else { continue }
                for (a, b) in Self.conflictingPairs(entries, labels: Set(entries.flatMap { $0.policy.matchLabels.keys })) {
                    problems.append(PolicyProblem(b.value.source,
                        "\(key): policies '\(a.policy.name)' (\(a.value.source.shortDescription)) and '\(b.policy.name)' (\(b.value.source.shortDescription)) both have priority \(priority), can select the same device and set different values (\(a.value.value) and \(b.value.value)); give one of them a higher priority or disjoint selectors"))
                }
            }
        }
        return problems
    }

    /// One policy's value for a key, with the policy's place in the repository.
    struct ConflictCandidate {
        let order: Int
        let policy: IntegrationPolicy
        let value: Sourced<DesiredValue>
    }

    /// Pairs (earlier, later) that differ in value and whose selectors can both match one device.
    /// Policies that require different values of one label never match one device, so the
    /// candidates are split by the label with the most distinct values: each group is compared
    /// within itself and with those that do not name that label. Small groups, or groups no
    /// label splits, are compared pair by pair.
    static func conflictingPairs(_ entries: [ConflictCandidate], labels: Set<String>) -> [(ConflictCandidate, ConflictCandidate)] {
        func ordered(_ a: ConflictCandidate, _ b: ConflictCandidate) -> (ConflictCandidate, ConflictCandidate) { a.order < b.order ? (a, b) : (b, a) }
        func pairs(_ left: [ConflictCandidate], _ right: [ConflictCandidate]?) -> [(ConflictCandidate, ConflictCandidate)] {
            var found: [(ConflictCandidate, ConflictCandidate)] = []
            for (index, a) in left.enumerated() {
                for b in right ?? Array(left[(index + 1)...]) where a.value.value != b.value.value && compatible(a.policy, b.policy) {
                    found.append(ordered(a, b))
                }
            }
            return found
        }
        var best: (label: String, groups: [String: [ConflictCandidate]], rest: [ConflictCandidate])?
        if entries.count > 16 {
            for label in labels {
                var groups: [String: [ConflictCandidate]] = [:]
                var rest: [ConflictCandidate] = []
                for entry in entries {
                    if let value = entry.policy.matchLabels[label] { groups[value, default: []].append(entry) } else { rest.append(entry) }
                }
                if groups.count > 1, groups.count > best?.groups.count ?? 1 { best = (label, groups, rest) }
            }
        }
        guard let best else { return pairs(entries, nil) }
        var remaining = labels
        remaining.remove(best.label)
        var found = conflictingPairs(best.rest, labels: remaining)
        for group in best.groups.values {
            found += conflictingPairs(group, labels: remaining)
            found += pairs(group, best.rest)
        }
        return found.sorted { ($0.0.order, $0.1.order) < ($1.0.order, $1.1.order) }
    }

    private static func compatible(_ a: IntegrationPolicy, _ b: IntegrationPolicy) -> Bool {
        a.matchLabels.allSatisfy { key, value in b.matchLabels[key].map { $0 == value } ?? true }
    }
}

/// Fixed slots written by concurrent workers, each slot by exactly one worker. The storage is
/// allocated once and never moves: writing to an Array from several threads at once (even
/// through `withUnsafeMutableBufferPointer`, which begins a mutation of the whole array) is a
/// data race that corrupted the heap with thousands of files.
private final class ResultSlots: @unchecked Sendable {
    typealias Slot = (policies: [IntegrationPolicy], problems: [PolicyProblem])
    private let slots: UnsafeMutableBufferPointer<Slot>

    init(count: Int) {
        slots = .allocate(capacity: count)
        slots.initialize(repeating: ([], []))
    }

    deinit {
        slots.deinitialize()
        slots.deallocate()
    }

    func store(_ value: Slot, at index: Int) {
        slots[index] = value
    }

    var values: [Slot] { Array(slots) }
}
