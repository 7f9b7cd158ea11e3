import FoundationEssentials

/// Files on the device that policies name (client containers, password files). Policies come
/// from git, so a path in one must not reach any file the agent can read: relative paths are
/// taken from the state directory, and every path must lie below the state directory,
/// /etc/tether, or a folder listed in $TETHER_DEVICE_FILES (colon-separated).
package enum DeviceFiles {
    package struct Refused: Error, CustomStringConvertible {
        package let description: String
    }

    /// The folders device files may come from.
    package static func allowedFolders(stateDirectory: URL) -> [String] {
        var folders = [stateDirectory.standardizedFileURL.path, "/etc/tether"]
        if let extra = ProcessInfo.processInfo.environment["TETHER_DEVICE_FILES"] {
            folders += extra.split(separator: ":").map { URL(fileURLWithPath: String($0)).standardizedFileURL.path }
        }
        return folders
    }

    /// The absolute path of a device file, or why it is refused.
    package static func locate(_ path: String, stateDirectory: URL) throws -> String {
        let url = path.hasPrefix("/") ? URL(fileURLWithPath: path) : stateDirectory.appending(path: path)
        let resolved = url.standardizedFileURL.resolvingSymlinksInPath().path
        let folders = allowedFolders(stateDirectory: stateDirectory)
        guard folders.contains(where: { resolved == $0 || resolved.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") }) else {
            throw Refused(description: "\(path) is outside the folders device files may come from (\(folders.joined(separator: ", ")); add one to $TETHER_DEVICE_FILES)")
        }
        return resolved
    }

    /// A device file's bytes.
    package static func read(_ path: String, stateDirectory: URL) throws -> [UInt8] {
        let located = try locate(path, stateDirectory: stateDirectory)
        guard let data = FileManager.default.contents(atPath: located) else {
            throw Refused(description: "\(path) cannot be read on this device (missing or not readable)")
        }
        return Array(data)
    }

    /// A secret kept in a device file (a password, a token): the text without trailing line breaks.
    package static func readSecret(_ path: String, stateDirectory: URL) throws -> String {
        var text = String(decoding: try read(path, stateDirectory: stateDirectory), as: UTF8.self)
        while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
        return text
    }
}
