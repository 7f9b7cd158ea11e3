#ifndef TETHER_GIT2_SHIMS_H
#define TETHER_GIT2_SHIMS_H
#include <git2.h>

/// Loads libgit2 (dlopen of libgit2.so.SOVERSION) and finds the functions Tether calls. Returns
/// NULL once loaded, else why not (a static string). Safe from any thread; loads once.
/// Every git_ function Tether calls loads it first if need be (and a process that cannot load it
/// ends with the reason and status 127, as the dynamic loader ended it when it was linked).
const char *tether_git_load(void);
/// Whether libgit2 is loaded (nothing is loaded by asking).
int tether_git_loaded(void);
/// The loaded libgit2's handle, for dlsym (NULL when it cannot be loaded).
void *tether_git_library(void);
/// Loads libgit2, or ends the process with the reason (status 127).
void tether_git_require(void);

/// git_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, file, path) (a variadic function):
/// the CA bundle libgit2 trusts for https remotes.
int tether_git_set_ssl_cert_locations(const char *file, const char *path);

/// git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, level, path): where libgit2 looks for the
/// configuration of one level (system, XDG, global); "" looks nowhere.
int tether_git_set_search_path(int level, const char *path);

/// git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, enabled): whether opening a repository
/// owned by another user is refused (libgit2's "dubious ownership").
int tether_git_set_owner_validation(int enabled);

/// Loads libgit2, then git_libgit2_init, with libgit2's reading of the system CA bundle (mbedTLS builds parse it
/// there, in every process) put off until tether_git_load_default_certificates, and libssh2's
/// start (with OpenSSL's) until the first ssh session.
int tether_git_init(void);

/// Reads the CA bundle git_libgit2_init would have read, once, unless a bundle was set with
/// tether_git_set_ssl_cert_locations: call it before the first http(s) remote. 0 or -1.
int tether_git_load_default_certificates(void);

/// The bundle git_libgit2_init asked for and was put off (NULL with libgit2 on OpenSSL), and
/// whether some bundle has been read since (1) or not (0).
const char *tether_git_deferred_certificates(int *loaded);
#endif
