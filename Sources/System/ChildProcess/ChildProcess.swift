import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
internal import CProcessShims

/// How a child process ended: its exit status (or 128 + the signal that ended it) and what it
/// wrote.
package struct ChildOutcome: Sendable {
    package let status: Int32
    package let standardOutput: [UInt8]
    package let standardError: [UInt8]

    package var output: String { String(decoding: standardOutput, as: UTF8.self) }
    package var errorOutput: String { String(decoding: standardError, as: UTF8.self) }
}

/// Why a child process could not be run to its end.
package enum ChildProcessError: Error, Sendable, CustomStringConvertible {
    /// It could not be started (missing, not executable, out of processes).
    case cannotStart(String)
    /// It did not end by its deadline and was killed.
    case timedOut(seconds: Double)
    /// It wrote more than the limit and was killed.
    case tooMuchOutput(limit: Int)

    package var description: String {
        switch self {
        case .cannotStart(let reason): return "cannot start it: \(reason)"
        case .timedOut(let seconds): return "it did not finish within \(Int(seconds.rounded(.up))) s and was stopped"
        case .tooMuchOutput(let limit): return "it wrote more than \(limit / 1024) KiB and was stopped"
        }
    }
}

/// Runs a program as a child: `input` on its standard input, its standard output and error
/// collected until it ends, killed after `timeout` seconds. The child inherits no descriptor of this
/// process but the three, and starts with default signal handling. One place for tether-fetch
/// and kesl-control.
package enum ChildProcess {
    /// A pipe whose ends are not inherited by other children this process starts.
    private static func makePipe() throws(ChildProcessError) -> (read: Int32, write: Int32) {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { throw .cannotStart(String(cString: strerror(errno))) }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        return (ends[0], ends[1])
    }

    /// Runs `executable`. `environment` replaces this process's environment when given.
    /// `heldOpen`, when given, is a descriptor the child keeps (as its descriptor 3): a lock
    /// passed this way stays held until the child exits, even when this process is killed first.
    package static func run(_ executable: String, _ arguments: [String], input: [UInt8] = [], timeout: TimeInterval,
                           outputLimit: Int = 1 << 20, environment: [String: String]? = nil,
                           heldOpen: Int32? = nil) throws(ChildProcessError) -> ChildOutcome {
        let deadline = Date().addingTimeInterval(timeout)
        let toChild = try makePipe()
        guard let fromChild = try? makePipe() else {
            close(toChild.read); close(toChild.write)
            throw .cannotStart(String(cString: strerror(errno)))
        }
        guard let errorsFromChild = try? makePipe() else {
            close(toChild.read); close(toChild.write); close(fromChild.read); close(fromChild.write)
            throw .cannotStart(String(cString: strerror(errno)))
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, toChild.read, STDIN_FILENO)
        posix_spawn_file_actions_adddup2(&actions, fromChild.write, STDOUT_FILENO)
        posix_spawn_file_actions_adddup2(&actions, errorsFromChild.write, STDERR_FILENO)
        if let heldOpen { posix_spawn_file_actions_adddup2(&actions, heldOpen, 3) }
        // Nothing else of this process goes with the child (the controller's lock, its /metrics
        // listener, other connections): a child that outlives this process must hold none of them.
        tether_spawn_close_from(&actions, heldOpen == nil ? 3 : 4)
        // The child starts with no signal blocked and SIGPIPE (ignored here) back to its default.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let envp: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer { envp?.forEach { free($0) } }
        var pid: pid_t = 0
        let status = envp.map { posix_spawn(&pid, executable, &actions, &attributes, argv, $0) }
            ?? posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        close(toChild.read)
        close(fromChild.write)
        close(errorsFromChild.write)
        guard status == 0 else {
            close(toChild.write); close(fromChild.read); close(errorsFromChild.read)
            throw .cannotStart(String(cString: strerror(status)))
        }
        defer {
            close(fromChild.read)
            close(errorsFromChild.read)
        }
        // A child that ends without reading all of its input must not kill this process.
        signal(SIGPIPE, SIG_IGN)
        var pending = input[...]
        if pending.isEmpty { close(toChild.write) }
        var inputOpen = !pending.isEmpty
        var output: [UInt8] = []
        var errors: [UInt8] = []
        var open: [Int32: Bool] = [fromChild.read: true, errorsFromChild.read: true]
        var buffer = [UInt8](repeating: 0, count: 16384)
        var failure: ChildProcessError?
        var ended: Int32 = 0
        var exited = false
        /// Reads what is ready on the open outputs, waiting at most `milliseconds`.
        func pump(_ milliseconds: Int32) {
            var descriptors = open.filter(\.value).keys.sorted().map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if inputOpen { descriptors.append(pollfd(fd: toChild.write, events: Int16(POLLOUT), revents: 0)) }
            // Outputs closed: the child is ending (or hangs on without them). Wait briefly between
            // checks for its exit rather than a whole poll interval, which every call would pay.
            guard !descriptors.isEmpty else { usleep(UInt32(min(milliseconds, 2)) * 1000); return }
            let ready = poll(&descriptors, nfds_t(descriptors.count), milliseconds)
            guard ready > 0 else { return }
            for descriptor in descriptors where descriptor.revents != 0 {
                if descriptor.fd == toChild.write {
                    let written = pending.withUnsafeBytes { write(toChild.write, $0.baseAddress, min($0.count, 4096)) }
                    if written > 0 { pending = pending.dropFirst(written) }
                    if written < 0 && errno == EINTR { continue }
                    if written <= 0 || pending.isEmpty {
                        close(toChild.write)
                        inputOpen = false
                    }
                    continue
                }
                let count = read(descriptor.fd, &buffer, buffer.count)
                if count < 0 && errno == EINTR { continue }
                if count <= 0 {
                    open[descriptor.fd] = false
                    continue
                }
                if descriptor.fd == fromChild.read { output += buffer[0..<count] } else { errors += buffer[0..<count] }
                if output.count + errors.count > outputLimit { failure = .tooMuchOutput(limit: outputLimit) }
            }
        }
        // Until the child exits (its outputs may stay open in a process it started), then what is
        // left in the pipes; everything within the deadline.
        while !exited {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 {
                failure = .timedOut(seconds: timeout)
                break
            }
            pump(Int32(min(remaining * 1000, 100).rounded(.up)))
            if failure != nil { break }
            let waited = waitpid(pid, &ended, WNOHANG)
            if waited == pid { exited = true }
            if waited < 0 && errno != EINTR { exited = true }
        }
        if failure == nil {
            while open.values.contains(true), failure == nil, deadline.timeIntervalSinceNow > 0 {
                let before = output.count + errors.count
                pump(open.values.contains(true) ? 50 : 0)
                if output.count + errors.count == before { break }
            }
        }
        if inputOpen { close(toChild.write) }
        if !exited {
            kill(pid, SIGKILL)
            while waitpid(pid, &ended, 0) < 0 && errno == EINTR {}
        }
        if let failure { throw failure }
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift cannot import.
        let signalNumber = ended & 0x7f
        let exitStatus = signalNumber == 0 ? (ended >> 8) & 0xff : 128 + signalNumber
        return ChildOutcome(status: exitStatus, standardOutput: output, standardError: errors)
    }
}
