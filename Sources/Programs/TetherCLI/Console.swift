import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import IntegrationModel
import Primitives

/// Where commands write. Tests swap it per task to read what a command printed.
package final class Console: @unchecked Sendable {
    private let writeOut: @Sendable (String) -> Void
    private let writeError: @Sendable (String) -> Void
    /// Whether standard output is a terminal a person reads (colour, progress): not when
    /// `NO_COLOR` is set to anything, nor with `TERM=dumb`.
    package let isTerminal: Bool

    package init(isTerminal: Bool, out: @escaping @Sendable (String) -> Void, error: @escaping @Sendable (String) -> Void) {
        self.isTerminal = isTerminal
        self.writeOut = out
        self.writeError = error
    }

    /// The process's standard output and error.
    package static let standard = Console(
        isTerminal: isatty(STDOUT_FILENO) == 1 && (ProcessEnvironment.value("NO_COLOR") ?? "").isEmpty
            && ProcessEnvironment.value("TERM") != "dumb",
        out: { writeAll($0, to: STDOUT_FILENO) },
        error: { writeAll($0, to: STDERR_FILENO) })

    @TaskLocal package static var current: Console = .standard

    /// Writes to standard output; adds a newline unless the text ends with one. Every control
    /// character is shown escaped (`\x1b`), whatever it came from.
    static func out(_ text: String) {
        let safe = TerminalText.escaped(text)
        current.writeOut(safe.hasSuffix("\n") ? safe : safe + "\n")
    }

    /// Writes text rendered from `StyledText` (escaped already, with Tether's colours) as it is.
    static func out(rendered text: String) {
        current.writeOut(text.hasSuffix("\n") ? text : text + "\n")
    }

    /// Writes to standard error, escaped the same way; adds a newline unless the text ends with one.
    static func error(_ text: String) {
        let safe = TerminalText.escaped(text)
        current.writeError(safe.hasSuffix("\n") ? safe : safe + "\n")
    }
}

/// Collects what a command prints, for tests.
package final class CapturedConsole: @unchecked Sendable {
    private let lock = Lock()
    private var outText = ""
    private var errorText = ""

    package init() {}

    package var stdout: String { lock.withLock { outText } }
    package var stderr: String { lock.withLock { errorText } }

    package var console: Console {
        Console(isTerminal: false,
                out: { [self] text in lock.withLock { outText += text } },
                error: { [self] text in lock.withLock { errorText += text } })
    }
}
