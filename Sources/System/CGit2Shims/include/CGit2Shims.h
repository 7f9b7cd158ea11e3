#ifndef TETHER_GIT2_SHIMS_H
#define TETHER_GIT2_SHIMS_H
#include <git2.h>

/// git_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, file, path) (a variadic function):
/// the CA bundle libgit2 trusts for https remotes.
int tether_git_set_ssl_cert_locations(const char *file, const char *path);

/// git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, level, path): where libgit2 looks for the
/// configuration of one level (system, XDG, global); "" looks nowhere.
int tether_git_set_search_path(int level, const char *path);

/// git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, enabled): whether opening a repository
/// owned by another user is refused (libgit2's "dubious ownership").
int tether_git_set_owner_validation(int enabled);
#endif
