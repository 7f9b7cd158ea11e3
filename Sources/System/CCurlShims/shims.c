#include "CCurlShims.h"
#include <dlfcn.h>
#include <pthread.h>

/// The functions Tether calls, looked up once in the loaded libcurl.
static struct {
    CURLcode (*global_init)(long);
    CURL *(*easy_init)(void);
    void (*easy_cleanup)(CURL *);
    CURLcode (*easy_perform)(CURL *);
    const char *(*easy_strerror)(CURLcode);
    CURLHcode (*easy_header)(CURL *, const char *, size_t, unsigned int, int, struct curl_header **);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
    char *(*version)(void);
} curl;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static const char *load_error = "libcurl was not loaded";
static int loaded = 0;

static void load(void) {
    // The soname Debian's libcurl4 (OpenSSL flavour) installs; the package depends on it.
    void *library = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        load_error = "libcurl.so.4 cannot be loaded (install libcurl4)";
        return;
    }
#define FIND(field, name) \
    if ((*(void **)&curl.field = dlsym(library, name)) == NULL) { \
        load_error = "libcurl.so.4 lacks " name " (libcurl 7.84 or later is needed)"; \
        dlclose(library); \
        return; \
    }
    FIND(global_init, "curl_global_init")
    FIND(easy_init, "curl_easy_init")
    FIND(easy_cleanup, "curl_easy_cleanup")
    FIND(easy_perform, "curl_easy_perform")
    FIND(easy_strerror, "curl_easy_strerror")
    FIND(easy_header, "curl_easy_header")
    FIND(easy_setopt, "curl_easy_setopt")
    FIND(easy_getinfo, "curl_easy_getinfo")
    FIND(slist_append, "curl_slist_append")
    FIND(slist_free_all, "curl_slist_free_all")
    FIND(version, "curl_version")
#undef FIND
    if (curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        load_error = "libcurl could not initialise (curl_global_init failed)";
        return;
    }
    load_error = NULL;
    __atomic_store_n(&loaded, 1, __ATOMIC_RELEASE);
}

const char *tether_curl_load(void) {
    pthread_once(&load_once, load);
    return load_error;
}

int tether_curl_loaded(void) { return __atomic_load_n(&loaded, __ATOMIC_ACQUIRE); }

CURLcode tether_curl_global_init(long flags) { return curl.global_init(flags); }
CURL *tether_curl_easy_init(void) { return curl.easy_init(); }
void tether_curl_easy_cleanup(CURL *handle) { curl.easy_cleanup(handle); }
CURLcode tether_curl_easy_perform(CURL *handle) { return curl.easy_perform(handle); }
const char *tether_curl_easy_strerror(CURLcode code) { return curl.easy_strerror(code); }
CURLHcode tether_curl_easy_header(CURL *handle, const char *name, size_t index, unsigned int origin, int request, struct curl_header **header) {
    return curl.easy_header(handle, name, index, origin, request, header);
}
struct curl_slist *tether_curl_slist_append(struct curl_slist *list, const char *text) { return curl.slist_append(list, text); }
void tether_curl_slist_free_all(struct curl_slist *list) { curl.slist_free_all(list); }
const char *tether_curl_version(void) { return curl.version(); }

CURLcode tether_curl_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl.easy_setopt(handle, option, value);
}
CURLcode tether_curl_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl.easy_setopt(handle, option, value);
}
CURLcode tether_curl_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl.easy_setopt(handle, option, value);
}
CURLcode tether_curl_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) {
    return curl.easy_setopt(handle, option, value);
}
CURLcode tether_curl_setopt_blob(CURL *handle, CURLoption option, const void *data, size_t length) {
    struct curl_blob blob;
    blob.data = (void *)data;
    blob.len = length;
    blob.flags = CURL_BLOB_COPY;
    return curl.easy_setopt(handle, option, &blob);
}
CURLcode tether_curl_setopt_write_function(CURL *handle, tether_curl_write_callback callback) {
    return curl.easy_setopt(handle, CURLOPT_WRITEFUNCTION, callback);
}
CURLcode tether_curl_setopt_read_function(CURL *handle, tether_curl_read_callback callback) {
    return curl.easy_setopt(handle, CURLOPT_READFUNCTION, callback);
}
CURLcode tether_curl_setopt_off_t(CURL *handle, CURLoption option, curl_off_t value) {
    return curl.easy_setopt(handle, option, value);
}
CURLcode tether_curl_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl.easy_getinfo(handle, info, value);
}
CURLcode tether_curl_getinfo_off_t(CURL *handle, CURLINFO info, curl_off_t *value) {
    return curl.easy_getinfo(handle, info, value);
}
