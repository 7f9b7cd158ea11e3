#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` holding an exclusive flock on the file at `path` (made, 0600, when missing; a
/// link there is refused): every process that takes the same file waits for the others. With
/// `wait` false, nil when another process holds it; nil as well when the file cannot be opened
/// or locked, and `body` has not run.
func withLockFile<T>(_ path: String, wait: Bool = true, _ body: () -> T) -> T? {
    let fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    while flock(fd, wait ? LOCK_EX : LOCK_EX | LOCK_NB) != 0 {
        guard errno == EINTR else { return nil }
    }
    return body()
}
