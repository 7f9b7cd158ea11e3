#if canImport(Glibc)
import Glibc
#endif

/// This process's environment, one variable at a time.
package enum ProcessEnvironment {
    /// The variable's value, or nil when it is not set. `ProcessInfo.processInfo.environment`
    /// builds a dictionary of every variable on each call; a starting process asks for a few.
    package static func value(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}
