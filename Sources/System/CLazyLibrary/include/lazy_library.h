/* A C library loaded with dlopen when a process first calls it, not at start
 * (docs/architecture.md, "What an endpoint pays"). Included once by each shim's loader.c,
 * which scripts/c-forwarders writes: it defines LAZY_NAME (for messages), LAZY_SONAME,
 * LAZY_PACKAGE, LAZY_PREFIX (tether_<prefix>_load…) and FUNCTIONS(FORWARD, FORWARD_VOID), the
 * functions Tether calls with the library's own names and prototypes. Each becomes a function
 * that calls through a pointer found once with dlsym. A release build exports the executable's
 * symbols (--export-dynamic); exports.map keeps these out of its dynamic symbol table, so that
 * libraries loaded later bind their own calls (libcrypto's to itself) to the library. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#define LAZY_JOIN(a, b, c) a##b##c
#define LAZY_FUNCTION(prefix, suffix) LAZY_JOIN(tether_, prefix, suffix)

static void *library;
static const char *load_error = LAZY_NAME " was not loaded";
static int loaded;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

#define POINTER(result, name, parameters, arguments) static result(*real_##name) parameters;
#define POINTER_VOID(name, parameters, arguments) static void(*real_##name) parameters;
FUNCTIONS(POINTER, POINTER_VOID)

static void load(void) {
    library = dlopen(LAZY_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        load_error = LAZY_SONAME " cannot be loaded (install " LAZY_PACKAGE ")";
        return;
    }
#define FIND(result, name, parameters, arguments) \
    if ((*(void **)&real_##name = dlsym(library, #name)) == NULL) { \
        load_error = LAZY_SONAME " lacks " #name; \
        return; \
    }
#define FIND_VOID(name, parameters, arguments) FIND(void, name, parameters, arguments)
    FUNCTIONS(FIND, FIND_VOID)
    load_error = NULL;
    __atomic_store_n(&loaded, 1, __ATOMIC_RELEASE);
}

const char *LAZY_FUNCTION(LAZY_PREFIX, _load)(void) {
    pthread_once(&load_once, load);
    return load_error;
}

int LAZY_FUNCTION(LAZY_PREFIX, _loaded)(void) { return __atomic_load_n(&loaded, __ATOMIC_ACQUIRE); }

void *LAZY_FUNCTION(LAZY_PREFIX, _library)(void) { return LAZY_FUNCTION(LAZY_PREFIX, _load)() == NULL ? library : NULL; }

/* Every forwarder's first step: loads the library if it is not yet. A process that cannot
 * load it ends here, as the dynamic loader ended it when the library was linked: with the
 * reason on standard error and status 127. The package depends on it: a broken install. */
void LAZY_FUNCTION(LAZY_PREFIX, _require)(void) {
    if (__builtin_expect(!__atomic_load_n(&loaded, __ATOMIC_ACQUIRE), 0)) {
        const char *error = LAZY_FUNCTION(LAZY_PREFIX, _load)();
        if (error != NULL) {
            fprintf(stderr, "tether: %s\n", error);
            _exit(127);
        }
    }
}

#define DEFINE(result, name, parameters, arguments) \
    result name parameters { LAZY_FUNCTION(LAZY_PREFIX, _require)(); return real_##name arguments; }
#define DEFINE_VOID(name, parameters, arguments) \
    void name parameters { LAZY_FUNCTION(LAZY_PREFIX, _require)(); real_##name arguments; }
FUNCTIONS(DEFINE, DEFINE_VOID)
