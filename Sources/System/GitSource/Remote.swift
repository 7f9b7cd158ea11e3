import Synchronization
internal import CGit2
internal import CGit2Shims
import Primitives

/// How to authenticate to a remote. Secrets come from files or the environment, never from
/// the command line, and never appear in errors.
package struct RemoteCredentials: Sendable, Equatable {
    /// For https: the user name (a token alone works with any user name, e.g. "git").
    package var username: String?
    /// For https: the password or token.
    package var password: String?
    /// For ssh: the private key file, and its passphrase when it has one.
    package var sshPrivateKey: String?
    package var sshPassphrase: String?
    /// For ssh: an OpenSSH known_hosts file; the server's key must be listed for its host.
    package var knownHosts: String?

    /// Where the password came from, for errors (`--git-password-file /etc/tether/token`,
    /// `$TETHER_GIT_TOKEN`); never the secret itself.
    package var passwordSource: String?

    package init(username: String? = nil, password: String? = nil, sshPrivateKey: String? = nil,
                sshPassphrase: String? = nil, knownHosts: String? = nil, passwordSource: String? = nil) {
        self.passwordSource = passwordSource
        self.username = username
        self.password = password
        self.sshPrivateKey = sshPrivateKey
        self.sshPassphrase = sshPassphrase
        self.knownHosts = knownHosts
    }

    package static let none = RemoteCredentials()
}

/// What a mirror update did.
package struct MirrorUpdate: Sendable {
    /// Whether objects were fetched (false when the remote's refs had not moved).
    package let fetched: Bool
    /// Whether the mirror had to be made anew (missing or corrupted).
    package let rebuilt: Bool
    /// Bytes received from the remote by the fetch (0 when nothing was fetched).
    package let bytesReceived: Int

    package init(fetched: Bool, rebuilt: Bool, bytesReceived: Int) {
        self.fetched = fetched
        self.rebuilt = rebuilt
        self.bytesReceived = bytesReceived
    }
}

/// State the C callbacks share with Swift: credentials, what went wrong, what was received.
private final class CallbackContext {
    let credentials: RemoteCredentials
    var attempts = 0
    var refusal: String?
    var receivedBytes = 0
    /// On the monotonic clock (`PlainFiles.monotonicSeconds`).
    let deadline: Double

    /// The ssh port of the remote, for `[host]:port` entries of known_hosts.
    let sshPort: Int

    init(credentials: RemoteCredentials, timeout: Double, url: String) {
        self.credentials = credentials
        sshPort = KnownHosts.sshPort(of: url)
        deadline = PlainFiles.monotonicSeconds() + timeout
    }
}

extension GitRepository {
    /// The URL without a password (`https://user:token@host/x` → `https://user@host/x`), for
    /// anything people or logs read.
    package static func redacted(_ url: String) -> String {
        guard let scheme = url.firstRange(ofText: "://"), let at = url[scheme.upperBound...].firstIndex(of: "@") else { return url }
        let userinfo = url[scheme.upperBound..<at]
        guard let colon = userinfo.firstIndex(of: ":") else { return url }
        return String(url[..<colon]) + String(url[at...])
    }

    /// Trusts the CA bundle in `file` for https remotes (libgit2 with mbedTLS does not read
    /// OpenSSL's store). Process-wide.
    package static func trustCertificates(inFile file: String) throws {
        _ = libraryReady
        guard tether_git_set_ssl_cert_locations(file, nil) == 0 else {
            throw GitError.last(.other, "cannot use \(file) as the CA bundle for https remotes")
        }
        trusted.withLock { $0 = file }
    }

    /// The system CA bundle libgit2 asked for at start and was put off (nil where libgit2 does
    /// not use mbedTLS), and whether a bundle has been read since: the first http(s) remote
    /// reads it, or `trustCertificates(inFile:)` sets another.
    package static var systemCertificates: (file: String?, loaded: Bool) {
        _ = libraryReady
        var loaded: Int32 = 0
        let file = tether_git_deferred_certificates(&loaded).map { String(cString: $0) }
        return (file, loaded != 0)
    }

    /// The CA bundle given to `trustCertificates(inFile:)`, if any (a fetch in a child process needs it too).
    package static var trustedCertificateFile: String? { trusted.withLock { $0 } }
    private static let trusted = Mutex<String?>(nil)

    /// Brings the mirror at `mirrorPath` up to date with `url`: asks the remote for its refs
    /// first and fetches only when one moved. A missing or corrupted mirror is made anew.
    /// `timeout` bounds the transfer (checked as data arrives).
    package static func updateMirror(url: String, at mirrorPath: String, credentials: RemoteCredentials = .none,
                                    timeout: Double = 60) throws -> (GitRepository, MirrorUpdate) {
        try updateMirror(url: url, at: mirrorPath, credentials: credentials, timeout: timeout, retried: false)
    }

    private static func updateMirror(url: String, at mirrorPath: String, credentials: RemoteCredentials,
                                     timeout: Double, retried: Bool) throws -> (GitRepository, MirrorUpdate) {
        _ = libraryReady
        var rebuilt = false
        var repository: OpaquePointer?
        if git_repository_open_bare(&repository, mirrorPath) != 0 || repository == nil || !isHealthy(repository!) {
            if let repository { git_repository_free(repository) }
            repository = nil
            git_error_clear()
            rebuilt = PlainFiles.exists(mirrorPath)
            PlainFiles.removeTree(mirrorPath)
            try PlainFiles.createFolders(mirrorPath)
            // Under the lock that keeps libgit2's process-wide owner check steady (SafeDirectory).
            guard SafeDirectory.lock.withLock({ git_repository_init(&repository, mirrorPath, 1) }) == 0, repository != nil else {
                throw GitError.last(.other, "cannot create a mirror at \(mirrorPath)")
            }
        }
        let mirror = GitRepository(handle: repository!, location: mirrorPath)
        do {
            let update = try mirror.sync(url: url, credentials: credentials, timeout: timeout)
            return (mirror, MirrorUpdate(fetched: update.fetched, rebuilt: rebuilt, bytesReceived: update.bytes))
        } catch let error as GitError where !rebuilt && !retried && error.kind == .corrupted {
            PlainFiles.removeTree(mirrorPath)
            let (fresh, update) = try updateMirror(url: url, at: mirrorPath, credentials: credentials, timeout: timeout, retried: true)
            return (fresh, MirrorUpdate(fetched: update.fetched, rebuilt: true, bytesReceived: update.bytesReceived))
        }
    }

    /// A mirror whose branches point at readable commits and whose tags point at readable objects.
    private static func isHealthy(_ repository: OpaquePointer) -> Bool {
        var iterator: OpaquePointer?
        guard git_reference_iterator_new(&iterator, repository) == 0, let iterator else { return false }
        defer { git_reference_iterator_free(iterator) }
        var reference: OpaquePointer?
        while git_reference_next(&reference, iterator) == 0, let current = reference {
            defer { git_reference_free(current) }
            let isBranch = String(cString: git_reference_name(current)).hasPrefix("refs/heads/")
            var object: OpaquePointer?
            guard git_reference_peel(&object, current, isBranch ? GIT_OBJECT_COMMIT : GIT_OBJECT_ANY) == 0, let object else { return false }
            var ok = true
            if isBranch {
                var tree: OpaquePointer?
                ok = git_commit_tree(&tree, object) == 0
                if let tree { git_tree_free(tree) }
            }
            git_object_free(object)
            if !ok { return false }
        }
        git_error_clear()
        return true
    }

    /// The callbacks every remote operation uses: credentials, host key checks, the time limit.
    private static func callbacks(_ payload: UnsafeMutableRawPointer) -> git_remote_callbacks {
        var callbacks = git_remote_callbacks()
        git_remote_init_callbacks(&callbacks, UInt32(GIT_REMOTE_CALLBACKS_VERSION))
        callbacks.payload = payload
        callbacks.credentials = { out, url, usernameFromURL, allowed, payload in
            guard let out, let payload else { return -1 }
            let context = Unmanaged<CallbackContext>.fromOpaque(payload).takeUnretainedValue()
            context.attempts += 1
            guard context.attempts <= 2 else {
                let credentials = context.credentials
                let tried = credentials.sshPrivateKey.map { "the ssh key \($0)" }
                    ?? credentials.passwordSource.map { "the password from \($0)\(credentials.username.map { " for user \($0)" } ?? "")" }
                    ?? "no credentials"
                context.refusal = "the remote refused the credentials (tried \(tried))"
                return -1
            }
            let credentials = context.credentials
            let fromURL = usernameFromURL.map { String(cString: $0) }
            if allowed & GIT_CREDENTIAL_SSH_KEY.rawValue != 0, let key = credentials.sshPrivateKey {
                return git_credential_ssh_key_new(out, credentials.username ?? fromURL ?? "git", nil, key, credentials.sshPassphrase)
            }
            if allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT.rawValue != 0, let password = credentials.password {
                return git_credential_userpass_plaintext_new(out, credentials.username ?? fromURL ?? "git", password)
            }
            if allowed & GIT_CREDENTIAL_USERNAME.rawValue != 0 {
                return git_credential_username_new(out, credentials.username ?? fromURL ?? "git")
            }
            // A password in the URL itself (https://user:token@host/…) was tried before this call: refused.
            let urlText = url.map { String(cString: $0) } ?? ""
            if let scheme = urlText.firstRange(ofText: "://"), let at = urlText[scheme.upperBound...].firstIndex(of: "@"),
               urlText[scheme.upperBound..<at].contains(":") {
                context.refusal = "the remote refused the credentials in the URL\(fromURL.map { " (user \($0))" } ?? ""); give a current token with TETHER_GIT_TOKEN or --git-password-file rather than in the URL"
                return -1
            }
            context.refusal = "the remote asks for credentials and none were given (see --help: TETHER_GIT_TOKEN, --git-password-file, --ssh-key)"
            return -1
        }
        callbacks.certificate_check = { certificate, valid, host, payload in
            guard let certificate, let payload else { return -1 }
            let context = Unmanaged<CallbackContext>.fromOpaque(payload).takeUnretainedValue()
            guard certificate.pointee.cert_type == GIT_CERT_HOSTKEY_LIBSSH2 else {
                return valid != 0 ? 0 : GIT_PASSTHROUGH.rawValue
            }
            let hostName = host.map { String(cString: $0) } ?? ""
            let key = certificate.withMemoryRebound(to: git_cert_hostkey.self, capacity: 1) { hostkey -> [UInt8] in
                guard hostkey.pointee.type.rawValue & GIT_CERT_SSH_RAW.rawValue != 0, let raw = hostkey.pointee.hostkey else { return [] }
                return Array(UnsafeRawBufferPointer(start: raw, count: hostkey.pointee.hostkey_len))
            }
            switch KnownHosts.check(host: hostName, port: context.sshPort, key: key, file: context.credentials.knownHosts) {
            case .trusted: return 0
            case .refused(let reason):
                context.refusal = reason
                return GIT_ECERTIFICATE.rawValue
            }
        }
        callbacks.transfer_progress = { progress, payload in
            guard let progress, let payload else { return 0 }
            let context = Unmanaged<CallbackContext>.fromOpaque(payload).takeUnretainedValue()
            context.receivedBytes = Int(progress.pointee.received_bytes)
            if PlainFiles.monotonicSeconds() > context.deadline {
                context.refusal = "the transfer took longer than its time limit"
                return -1
            }
            return 0
        }

        return callbacks
    }

    /// The branches and tags a remote advertises (name → object id) and its default branch.
    /// Touches no repository: nothing to lock, nothing to damage when it is abandoned.
    package static func advertisedRefs(url: String, credentials: RemoteCredentials = .none,
                                      timeout: Double = 60) throws -> [String: String] {
        _ = libraryReady
        let context = CallbackContext(credentials: credentials, timeout: timeout, url: url)
        let payload = Unmanaged.passRetained(context)
        defer { payload.release() }
        var callbacks = callbacks(payload.toOpaque())
        return try listRefs(url: url, callbacks: &callbacks, context: context).refs.filter { !$0.key.hasSuffix("^{}") }
    }

    /// The mirror at `path`, when it is healthy and already holds exactly `refs`.
    package static func mirror(at path: String, holding refs: [String: String]) -> GitRepository? {
        _ = libraryReady
        var repository: OpaquePointer?
        guard git_repository_open_bare(&repository, path) == 0, let repository else {
            git_error_clear()
            return nil
        }
        let mirror = GitRepository(handle: repository, location: path)
        guard mirror.localRefs().filter({ $0.key.hasPrefix("refs/heads/") || $0.key.hasPrefix("refs/tags/") }) == refs else { return nil }
        // Every ref is followed to its commit and tree once per mirror, ref set and object store
        // in this process: a fetch changes the refs, a lost or replaced pack the folders' times
        // (and so the walk runs again); a no-change cycle does not pay for it every time.
        let seen = MirrorState(refs: refs, objects: PlainFiles.identity(path + "/objects"), packs: PlainFiles.identity(path + "/objects/pack"))
        if healthyMirrors.withLock({ $0[path] }) != seen {
            guard isHealthy(repository) else { return nil }
            healthyMirrors.withLock { $0[path] = seen }
        }
        return mirror
    }

    /// What a mirror was last found healthy with.
    private struct MirrorState: Equatable {
        let refs: [String: String]
        let objects: [Int]?
        let packs: [Int]?
    }

    /// Each mirror's state when `isHealthy` last passed (`mirror(at:holding:)`).
    private static let healthyMirrors = Mutex<[String: MirrorState]>([:])

    private static func listRefs(url: String, callbacks: inout git_remote_callbacks,
                                 context: CallbackContext) throws -> (refs: [String: String], defaultBranch: String?) {
        let scheme = url.prefix(8).lowercased()
        if scheme.hasPrefix("https://") || scheme.hasPrefix("http://") {
            // Put off at start (tether_git_init): most processes never speak TLS to a git host.
            guard tether_git_load_default_certificates() == 0 else {
                throw GitError.last(.other, "cannot read the system's CA bundle for https remotes (give one with --git-ca-file)")
            }
        }
        // Ask for the refs first, with a detached remote (libgit2 1.5 leaks ~70 KB for every
        // remote it binds to a repository: a no-change cycle must not pay that).
        var probe: OpaquePointer?
        guard git_remote_create_detached(&probe, url) == 0, let remote = probe else {
            throw GitError.last(.fetchFailed, Self.redacted(url))
        }
        defer { git_remote_free(remote) }
        guard git_remote_connect(remote, GIT_DIRECTION_FETCH, &callbacks, nil, nil) == 0 else {
            throw GitRepository.remoteError(context, url: url, action: "cannot reach")
        }
        var heads: UnsafeMutablePointer<UnsafePointer<git_remote_head>?>?
        var count = 0
        guard git_remote_ls(&heads, &count, remote) == 0 else { throw GitRepository.remoteError(context, url: url, action: "cannot list the refs of") }
        var advertised: [String: String] = [:]
        for index in 0..<count {
            guard let head = heads?[index] else { continue }
            let name = String(cString: head.pointee.name)
            guard name.hasPrefix("refs/heads/") || name.hasPrefix("refs/tags/") else { continue }
            var oid = head.pointee.oid
            advertised[name] = oidString(&oid)
        }
        var defaultBranch: String?
        var buffer = git_buf()
        if git_remote_default_branch(&buffer, remote) == 0, let name = buffer.ptr { defaultBranch = String(cString: name) }
        git_buf_dispose(&buffer)
        git_error_clear()
        git_remote_disconnect(remote)

        return (advertised, defaultBranch)
    }

    private func sync(url: String, credentials: RemoteCredentials, timeout: Double) throws -> (fetched: Bool, bytes: Int) {
        let context = CallbackContext(credentials: credentials, timeout: timeout, url: url)
        let payload = Unmanaged.passRetained(context)
        defer { payload.release() }
        var callbacks = Self.callbacks(payload.toOpaque())
        let (advertised, defaultBranch) = try Self.listRefs(url: url, callbacks: &callbacks, context: context)
        let wanted = advertised.filter { !$0.key.hasSuffix("^{}") }
        var fetched = false
        if wanted != localRefs().filter({ $0.key.hasPrefix("refs/heads/") || $0.key.hasPrefix("refs/tags/") }) {
            var bound: OpaquePointer?
            guard git_remote_create_anonymous(&bound, handle, url) == 0, let fetcher = bound else {
                throw GitError.last(.fetchFailed, Self.redacted(url))
            }
            defer { git_remote_free(fetcher) }
            context.attempts = 0
            var options = git_fetch_options()
            git_fetch_options_init(&options, UInt32(GIT_FETCH_OPTIONS_VERSION))
            options.callbacks = callbacks
            options.prune = GIT_FETCH_PRUNE
            options.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE
            let status = withStringArray(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]) { array in
                git_remote_fetch(fetcher, &array, &options, nil)
            }
            guard status == 0 else {
                let message = git_error_last().flatMap { $0.pointee.message.map { String(cString: $0) } } ?? ""
                if message.containsText("object not found") || message.containsText("corrupt") || message.containsText("missing") {
                    throw GitError(.corrupted, "the mirror of \(Self.redacted(url)) is damaged: \(message)")
                }
                throw Self.remoteError(context, url: url, action: "cannot fetch")
            }
            fetched = true
        }
        if let defaultBranch { git_repository_set_head(handle, defaultBranch) }
        return (fetched, fetched ? context.receivedBytes : 0)
    }

    private static func remoteError(_ context: CallbackContext, url: String, action: String) -> GitError {
        var detail = context.refusal ?? git_error_last().flatMap { $0.pointee.message.map { String(cString: $0) } } ?? "unknown libgit2 error"
        git_error_clear()
        if context.refusal == nil, detail.containsText("unexpected http status code: 404") || detail.containsText("unexpected Content-Type")
            || detail.containsText("not found: repository") || detail.containsText("does not appear to be a git repository") {
            detail = "there is no git repository at that address (\(detail)); check --repo"
        }
        return GitError(.fetchFailed, "\(action) \(Self.redacted(url)): \(detail.replacingAll(url, with: Self.redacted(url)))")
    }

    /// The mirror's branches and tags and the commits or tag objects they point at.
    private func localRefs() -> [String: String] {
        var result: [String: String] = [:]
        var iterator: OpaquePointer?
        guard git_reference_iterator_new(&iterator, handle) == 0, let iterator else { return [:] }
        defer { git_reference_iterator_free(iterator) }
        var reference: OpaquePointer?
        while git_reference_next(&reference, iterator) == 0, let current = reference {
            defer { git_reference_free(current) }
            guard let target = git_reference_target(current) else { continue }
            result[String(cString: git_reference_name(current))] = oidString(target)
        }
        git_error_clear()
        return result
    }

    // MARK: - History

    /// The tags matching a glob (`v1.*`), highest version first.
    package func tags(matching pattern: String) -> [String] {
        var names: [String] = []
        var array = git_strarray()
        guard git_tag_list_match(&array, pattern, handle) == 0 else { return [] }
        defer { git_strarray_dispose(&array) }
        for index in 0..<array.count {
            if let name = array.strings[index] { names.append(String(cString: name)) }
        }
        return names.sorted { SemanticVersion($0) > SemanticVersion($1) }
    }

    /// Whether `commit` is `ancestor` or descends from it.
    package func isDescendant(_ commit: GitCommit, of ancestor: String) -> Bool {
        if commit.id == ancestor { return true }
        var a = git_oid()
        var b = git_oid()
        guard git_oid_fromstr(&a, commit.id) == 0, git_oid_fromstr(&b, ancestor) == 0 else { return false }
        let result = git_graph_descendant_of(handle, &a, &b)
        git_error_clear()
        return result == 1
    }

    /// Whether the repository has this commit.
    package func contains(commit id: String) -> Bool {
        var oid = git_oid()
        guard git_oid_fromstr(&oid, id) == 0 else { return false }
        var commit: OpaquePointer?
        defer { if let commit { git_commit_free(commit) } }
        let found = git_commit_lookup(&commit, handle, &oid) == 0
        git_error_clear()
        return found
    }

    /// The commits reachable from `head` but not from `base` (every one since `base`), newest first.
    package func commits(from head: GitCommit, since base: String?) throws -> [GitCommit] {
        var walk: OpaquePointer?
        guard git_revwalk_new(&walk, handle) == 0, let walk else { throw GitError.last(.other, "cannot walk the history") }
        defer { git_revwalk_free(walk) }
        var oid = git_oid()
        git_oid_fromstr(&oid, head.id)
        git_revwalk_push(walk, &oid)
        if let base {
            var hidden = git_oid()
            if git_oid_fromstr(&hidden, base) == 0 { git_revwalk_hide(walk, &hidden) }
        }
        git_error_clear()
        var result: [GitCommit] = []
        var next = git_oid()
        while git_revwalk_next(&next, walk) == 0 {
            var commit: OpaquePointer?
            guard git_commit_lookup(&commit, handle, &next) == 0, let commit else { continue }
            result.append(commitInfo(commit))
            git_commit_free(commit)
        }
        git_error_clear()
        return result
    }

    /// A commit's signature (the `gpgsig` header) and the data it signs; nil for an unsigned commit.
    package func signature(of commit: GitCommit) throws -> (signature: String, signedData: [UInt8])? {
        var oid = git_oid()
        guard git_oid_fromstr(&oid, commit.id) == 0 else { throw GitError(.notFound, "bad commit id \(commit.id)") }
        var signature = git_buf()
        var data = git_buf()
        defer {
            git_buf_dispose(&signature)
            git_buf_dispose(&data)
        }
        let status = git_commit_extract_signature(&signature, &data, handle, &oid, nil)
        if status == GIT_ENOTFOUND.rawValue {
            git_error_clear()
            return nil
        }
        guard status == 0, let signaturePointer = signature.ptr, let dataPointer = data.ptr else {
            throw GitError.last(.other, "cannot read the signature of \(commit.id.prefix(12))")
        }
        return (String(cString: signaturePointer), Array(UnsafeRawBufferPointer(start: dataPointer, count: data.size)))
    }
}

/// A version read from a tag (`v1.2.3`, `1.2`, `v2.0.0-rc.1`), for ordering `--ref v1.*` matches.
struct SemanticVersion: Comparable {
    let numbers: [Int]
    let prerelease: String?

    init(_ tag: String) {
        var text = Substring(tag)
        if text.first == "v" || text.first == "V" { text = text.dropFirst() }
        let parts = text.split(separator: "-", maxSplits: 1)
        numbers = (parts.first ?? "").split(separator: ".").map { Int($0) ?? 0 }
        prerelease = parts.count > 1 ? String(parts[1]) : nil
    }

    static func < (lhs: SemanticVersion, rhs: SemanticVersion) -> Bool {
        for index in 0..<max(lhs.numbers.count, rhs.numbers.count) {
            let a = index < lhs.numbers.count ? lhs.numbers[index] : 0
            let b = index < rhs.numbers.count ? rhs.numbers[index] : 0
            if a != b { return a < b }
        }
        switch (lhs.prerelease, rhs.prerelease) {
        case (nil, nil): return false
        case (nil, _): return false
        case (_, nil): return true
        case (let a?, let b?): return a < b
        }
    }
}

