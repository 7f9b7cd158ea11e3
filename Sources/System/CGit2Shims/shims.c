#define _GNU_SOURCE
#include "CGit2Shims.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* libgit2 is loaded with dlopen when the first repository is opened, not at start: it and the
 * 13 libraries it brings (mbedTLS, libssh2, Kerberos, PCRE2…) were a third of what `tether
 * --version` paid to start (docs/architecture.md, "What an endpoint pays"). The functions
 * Swift calls keep libgit2's names and prototypes (forwarders.h, written by
 * scripts/git2-forwarders) and call through pointers found once with dlsym. */
static void *library;
static const char *load_error = "libgit2 was not loaded";
static int loaded;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int (*real_libgit2_opts)(int option, ...);

#define FORWARD(result, name, parameters, arguments) static result(*real_##name) parameters;
#define FORWARD_VOID(name, parameters, arguments) static void(*real_##name) parameters;
#include "forwarders.h"
#undef FORWARD
#undef FORWARD_VOID

static void load(void) {
    library = dlopen("libgit2.so." LIBGIT2_SOVERSION, RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        load_error = "libgit2.so." LIBGIT2_SOVERSION " cannot be loaded (install libgit2-" LIBGIT2_SOVERSION ")";
        return;
    }
#define FIND(pointer, name) \
    if ((*(void **)&pointer = dlsym(library, name)) == NULL) { \
        load_error = "libgit2.so." LIBGIT2_SOVERSION " lacks " name; \
        return; \
    }
#define FORWARD(result, name, parameters, arguments) FIND(real_##name, #name)
#define FORWARD_VOID(name, parameters, arguments) FIND(real_##name, #name)
#include "forwarders.h"
    FIND(real_libgit2_opts, "git_libgit2_opts")
#undef FORWARD
#undef FORWARD_VOID
#undef FIND
    load_error = NULL;
    __atomic_store_n(&loaded, 1, __ATOMIC_RELEASE);
}

const char *tether_git_load(void) {
    pthread_once(&load_once, load);
    return load_error;
}

int tether_git_loaded(void) { return __atomic_load_n(&loaded, __ATOMIC_ACQUIRE); }

/// Every forwarder's first step: loads libgit2 if it is not yet. A process that cannot load it
/// ends here, as the dynamic loader ended it when libgit2 was linked: with the reason on
/// standard error and status 127. The package depends on libgit2, so that is a broken install.
static inline void require_library(void) {
    if (__builtin_expect(!__atomic_load_n(&loaded, __ATOMIC_ACQUIRE), 0)) {
        const char *error = tether_git_load();
        if (error != NULL) {
            fprintf(stderr, "tether: %s\n", error);
            _exit(127);
        }
    }
}

#define FORWARD(result, name, parameters, arguments) \
    result name parameters { require_library(); return real_##name arguments; }
#define FORWARD_VOID(name, parameters, arguments) \
    void name parameters { require_library(); real_##name arguments; }
#include "forwarders.h"
#undef FORWARD
#undef FORWARD_VOID

/* libgit2 1.5 built with mbedTLS (Debian's) parses the whole system CA bundle inside
 * git_libgit2_init: about 3 ms and 3.4 MiB in every process that opens a repository, https or
 * not. The two mbedTLS functions it calls for that are defined here too, so that its calls
 * bind to them (an executable's definitions come first in the dynamic linker's lookup): during
 * tether_git_init they only note what was asked, and tether_git_load_default_certificates asks
 * again, through libgit2, before the first http(s) remote. Any other call goes on to mbedTLS. A
 * remote reached without that call would find no CA at all: its TLS fails, never passes. With
 * libgit2 on OpenSSL these functions are simply never called. docs/architecture.md, "What an
 * endpoint pays". */
static int deferring;
static char *deferred_file, *deferred_path;
static int chosen; /* a CA bundle was set explicitly: the defaults are not loaded over it */
static pthread_mutex_t certificates_lock = PTHREAD_MUTEX_INITIALIZER;

typedef int (*tether_parse_function)(void *chain, const char *path);

/// While libgit2 starts, notes `path` in `*deferred` instead; otherwise mbedTLS's own `name`.
static int parse_or_defer(const char *name, char **deferred, void *chain, const char *path) {
    if (deferring) {
        free(*deferred);
        *deferred = path != NULL ? strdup(path) : NULL;
        return 0;
    }
    // libgit2 and its mbedTLS were loaded with RTLD_LOCAL: found through libgit2's handle.
    tether_parse_function real = (tether_parse_function)dlsym(library, name);
    return real != NULL ? real(chain, path) : -1;
}

int mbedtls_x509_crt_parse_file(void *chain, const char *path) {
    return parse_or_defer("mbedtls_x509_crt_parse_file", &deferred_file, chain, path);
}

int mbedtls_x509_crt_parse_path(void *chain, const char *path) {
    return parse_or_defer("mbedtls_x509_crt_parse_path", &deferred_path, chain, path);
}

int tether_git_init(void) {
    require_library();
    deferring = 1;
    int result = git_libgit2_init();
    deferring = 0;
    return result;
}

const char *tether_git_deferred_certificates(int *loaded) {
    pthread_mutex_lock(&certificates_lock);
    *loaded = chosen;
    const char *file = deferred_file != NULL ? deferred_file : deferred_path;
    pthread_mutex_unlock(&certificates_lock);
    return file;
}

int tether_git_load_default_certificates(void) {
    require_library();
    pthread_mutex_lock(&certificates_lock);
    int result = 0;
    if (!chosen && (deferred_file != NULL || deferred_path != NULL)) {
        result = real_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, deferred_file, deferred_path);
        if (result == 0) chosen = 1;
    }
    pthread_mutex_unlock(&certificates_lock);
    return result;
}

int tether_git_set_ssl_cert_locations(const char *file, const char *path) {
    require_library();
    pthread_mutex_lock(&certificates_lock);
    int result = real_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, file, path);
    if (result == 0) chosen = 1;
    pthread_mutex_unlock(&certificates_lock);
    return result;
}

int tether_git_set_search_path(int level, const char *path) {
    require_library();
    return real_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, level, path);
}

int tether_git_set_owner_validation(int enabled) {
    require_library();
    return real_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, enabled);
}
