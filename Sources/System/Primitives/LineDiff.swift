/// The difference between two texts as a unified diff (`diff -u`, what `git apply` and review
/// tools read): `---`/`+++` headers, then hunks with `context` unchanged lines around changes.
/// Empty when the texts are equal. Lines are matched by a longest common subsequence; texts
/// too large for that (over 16 million line pairs) show as one hunk that replaces everything.
package func unifiedDiff(from old: String, to new: String, oldName: String, newName: String, context: Int = 3) -> String {
    guard old != new else { return "" }
    let before = lines(of: old)
    let after = lines(of: new)
    // Each line of both texts, in order: kept (in both), removed (only before) or added.
    enum Step { case kept(Int, Int), removed(Int), added(Int) }
    var steps: [Step] = []
    if before.count * after.count <= 16_000_000 {
        // lengths[i][j]: the longest common subsequence of before[i...] and after[j...].
        let width = after.count + 1
        var lengths = [Int32](repeating: 0, count: (before.count + 1) * width)
        for i in stride(from: before.count - 1, through: 0, by: -1) {
            for j in stride(from: after.count - 1, through: 0, by: -1) {
                lengths[i * width + j] = before[i] == after[j] ? lengths[(i + 1) * width + j + 1] + 1
                    : max(lengths[(i + 1) * width + j], lengths[i * width + j + 1])
            }
        }
        var i = 0
        var j = 0
        while i < before.count || j < after.count {
            if i < before.count, j < after.count, before[i] == after[j] {
                steps.append(.kept(i, j))
                i += 1
                j += 1
            } else if i < before.count && (j == after.count || lengths[(i + 1) * width + j] >= lengths[i * width + j + 1]) {
                steps.append(.removed(i))
                i += 1
            } else {
                steps.append(.added(j))
                j += 1
            }
        }
    } else {
        steps = before.indices.map { .removed($0) } + after.indices.map { .added($0) }
    }
    var output = "--- \(oldName)\n+++ \(newName)\n"
    let changed = steps.indices.filter { if case .kept = steps[$0] { return false } else { return true } }
    var index = 0
    while index < changed.count {
        // A hunk: changes closer than twice the context share one.
        var last = index
        while last + 1 < changed.count, changed[last + 1] - changed[last] <= 2 * context + 1 { last += 1 }
        let lower = max(0, changed[index] - context)
        let upper = min(steps.count, changed[last] + context + 1)
        var oldStart = 0, newStart = 0, oldCount = 0, newCount = 0
        var body = ""
        // Where the hunk starts in each text: the first line it shows, or the line it follows.
        var oldLine = 0, newLine = 0
        for step in steps[..<lower] {
            switch step {
            case .kept: oldLine += 1; newLine += 1
            case .removed: oldLine += 1
            case .added: newLine += 1
            }
        }
        oldStart = oldLine
        newStart = newLine
        for step in steps[lower..<upper] {
            switch step {
            case .kept(let i, _): body += " " + shown(before[i]); oldCount += 1; newCount += 1
            case .removed(let i): body += "-" + shown(before[i]); oldCount += 1
            case .added(let j): body += "+" + shown(after[j]); newCount += 1
            }
        }
        func range(_ start: Int, _ count: Int) -> String {
            count == 1 ? "\(start + 1)" : "\(count == 0 ? start : start + 1),\(count)"
        }
        output += "@@ -\(range(oldStart, oldCount)) +\(range(newStart, newCount)) @@\n" + body
        index = last + 1
    }
    return output
}

/// The lines of a text, without their line feeds. A last line without one is marked with a NUL
/// (so it never equals the same text with a line feed) that `shown` turns into diff's note.
private func lines(of text: String) -> [String] {
    var result = text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    if result.last?.isEmpty == true {
        result.removeLast()
    } else if let last = result.last {
        result[result.count - 1] = last + "\u{0}"
    }
    return result
}

/// A line as a diff shows it.
private func shown(_ line: String) -> String {
    line.hasSuffix("\u{0}") ? String(line.dropLast()) + "\n\\ No newline at end of file\n" : line + "\n"
}
