#define _GNU_SOURCE
#include "CGit2Shims.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* libgit2 itself is loaded on first use by loader.c (written by scripts/c-forwarders). Its one
 * variadic function is called here with fixed arguments, found in the loaded library. */
typedef int (*tether_libgit2_opts_function)(int option, ...);

static tether_libgit2_opts_function libgit2_opts(void) {
    tether_git_require();
    return (tether_libgit2_opts_function)dlsym(tether_git_library(), "git_libgit2_opts");
}

/* libgit2 1.5 built with mbedTLS (Debian's) parses the whole system CA bundle inside
 * git_libgit2_init: about 3 ms and 3.4 MiB in every process that opens a repository, https or
 * not. The two mbedTLS functions it calls for that are defined here too, so that its calls
 * bind to them (an executable's definitions come first in the dynamic linker's lookup): during
 * tether_git_init they only note what was asked, and tether_git_load_default_certificates asks
 * again, through libgit2, before the first http(s) remote. Any other call goes on to mbedTLS. A
 * remote reached without that call would find no CA at all: its TLS fails, never passes. With
 * libgit2 on OpenSSL these functions are simply never called. docs/architecture.md, "What an
 * endpoint pays". */
static int deferring; /* set while tether_git_init runs; read from any thread */
static char *deferred_file, *deferred_path;
static int chosen; /* a CA bundle was set explicitly: the defaults are not loaded over it */
static pthread_mutex_t certificates_lock = PTHREAD_MUTEX_INITIALIZER;

typedef int (*tether_parse_function)(void *chain, const char *path);

/// mbedTLS's own `name`, found once through libgit2's handle (libgit2 and its mbedTLS were
/// loaded with RTLD_LOCAL); NULL when there is none. Never dlsym(NULL, …): that is the global
/// scope, where the name is the function calling this.
static tether_parse_function real_parse(const char *name, tether_parse_function *cache) {
    tether_parse_function found = __atomic_load_n(cache, __ATOMIC_ACQUIRE);
    if (found == NULL) {
        void *library = tether_git_library();
        found = library != NULL ? (tether_parse_function)dlsym(library, name) : NULL;
        __atomic_store_n(cache, found, __ATOMIC_RELEASE);
    }
    return found;
}

/// While libgit2 starts, notes `path` in `*deferred` instead; otherwise mbedTLS's own `name`.
static int parse_or_defer(const char *name, tether_parse_function *cache, char **deferred, void *chain, const char *path) {
    if (__atomic_load_n(&deferring, __ATOMIC_ACQUIRE)) {
        free(*deferred);
        *deferred = path != NULL ? strdup(path) : NULL;
        return 0;
    }
    tether_parse_function real = real_parse(name, cache);
    return real != NULL ? real(chain, path) : -1;
}

static tether_parse_function real_parse_file, real_parse_path;

int mbedtls_x509_crt_parse_file(void *chain, const char *path) {
    return parse_or_defer("mbedtls_x509_crt_parse_file", &real_parse_file, &deferred_file, chain, path);
}

int mbedtls_x509_crt_parse_path(void *chain, const char *path) {
    return parse_or_defer("mbedtls_x509_crt_parse_path", &real_parse_path, &deferred_path, chain, path);
}

/* git_libgit2_init also starts libssh2 (libssh2_init), and libssh2 starts OpenSSL's libcrypto
 * there: its engines and every cipher and digest, 0.24 ms and 1.6 MiB in every process that
 * opens a repository, though only ssh remotes use them. Put off the same way: during
 * tether_git_init the call only returns. libssh2 makes it itself when the first session is made
 * (libssh2_session_init_ex starts the library if it has not been started, through its own PLT,
 * so the call comes here, and goes on to libssh2); libssh2_exit does nothing for a library never
 * started. Any other caller (libcurl's curl_global_init) goes straight on to libssh2's own,
 * found in the libssh2 its caller already loaded: nothing is loaded to find it. */
typedef int (*tether_ssh_init_function)(int flags);
static tether_ssh_init_function real_ssh_init;

int libssh2_init(int flags) {
    if (__atomic_load_n(&deferring, __ATOMIC_ACQUIRE)) return 0;
    tether_ssh_init_function real = __atomic_load_n(&real_ssh_init, __ATOMIC_ACQUIRE);
    if (real == NULL) {
        void *library = dlopen("libssh2.so.1", RTLD_NOW | RTLD_NOLOAD);
        if (library == NULL) return -1;
        /* The handle's own scope: libssh2 and its libraries, not this executable. */
        real = (tether_ssh_init_function)dlsym(library, "libssh2_init");
        dlclose(library); /* its caller keeps it loaded */
        if (real == NULL) return -1;
        __atomic_store_n(&real_ssh_init, real, __ATOMIC_RELEASE);
    }
    return real(flags);
}

int tether_git_init(void) {
    tether_git_require();
    __atomic_store_n(&deferring, 1, __ATOMIC_RELEASE);
    int result = git_libgit2_init();
    __atomic_store_n(&deferring, 0, __ATOMIC_RELEASE);
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
    tether_git_require();
    pthread_mutex_lock(&certificates_lock);
    int result = 0;
    if (!chosen && (deferred_file != NULL || deferred_path != NULL)) {
        result = libgit2_opts()(GIT_OPT_SET_SSL_CERT_LOCATIONS, deferred_file, deferred_path);
        if (result == 0) chosen = 1;
    }
    pthread_mutex_unlock(&certificates_lock);
    return result;
}

int tether_git_set_ssl_cert_locations(const char *file, const char *path) {
    tether_git_require();
    pthread_mutex_lock(&certificates_lock);
    int result = libgit2_opts()(GIT_OPT_SET_SSL_CERT_LOCATIONS, file, path);
    if (result == 0) chosen = 1;
    pthread_mutex_unlock(&certificates_lock);
    return result;
}

int tether_git_set_search_path(int level, const char *path) {
    tether_git_require();
    return libgit2_opts()(GIT_OPT_SET_SEARCH_PATH, level, path);
}

int tether_git_set_owner_validation(int enabled) {
    tether_git_require();
    return libgit2_opts()(GIT_OPT_SET_OWNER_VALIDATION, enabled);
}
