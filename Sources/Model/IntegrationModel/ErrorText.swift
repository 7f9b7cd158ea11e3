import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// An error as a person reads it: a file operation's error as the system's reason and the
/// path ("No such file or directory: /x/y"), anything else as it describes itself.
package func reason(of error: any Error) -> String {
    if let error = error as? CocoaError {
        let path = error.filePath.map { ": \($0)" } ?? ""
        if let posix = error.underlying as? POSIXError { return String(cString: strerror(posix.code.rawValue)) + path }
        return "file operation failed (\(error.code.rawValue))" + path
    }
    if let error = error as? POSIXError { return String(cString: strerror(error.code.rawValue)) }
    return "\(error)"
}
