/// "Did you mean …?" for misspelt names.
package enum Suggestion {
    /// The candidate closest to `word` by edit distance, when close enough to be a likely typo.
    /// A candidate whose length differs from the word's by more than the distance accepted is
    /// never compared: the edit distance is at least that difference. So a hostile 1 MB word
    /// costs one pass over it, not a comparison with every candidate.
    package static func closest(to word: String, among candidates: [String]) -> String? {
        // Scalars, not characters: combining marks cannot make a long word look short.
        let length = word.unicodeScalars.count
        let accepted = max(2, length / 3)
        let shortest = candidates.map(\.count).min() ?? 0
        let longest = candidates.map(\.count).max() ?? 0
        guard length <= longest + accepted, length + accepted >= shortest else { return nil }
        let lowered = Array(word.lowercased())
        var best: (candidate: String, distance: Int)?
        for candidate in candidates where abs(candidate.count - length) <= min(accepted, (best?.distance ?? Int.max) - 1) {
            let distance = editDistance(lowered, Array(candidate.lowercased()))
            if distance < (best?.distance ?? Int.max) { best = (candidate, distance) }
        }
        guard let best, best.distance <= accepted else { return nil }
        return best.candidate
    }

    /// " (did you mean `x`?)" or "".
    package static func hint(for word: String, among candidates: [String]) -> String {
        closest(to: word, among: candidates).map { "; did you mean '\($0)'?" } ?? ""
    }

    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
