#ifndef TETHER_CURL_SHIMS_H
#define TETHER_CURL_SHIMS_H
#include <curl/curl.h>
#include <stddef.h>

/// libcurl is loaded when the first transfer needs it (dlopen of libcurl.so.4), not at start:
/// with its 30-odd libraries it is most of what every tether process paid to start
/// (docs/architecture.md, "What an endpoint pays"). Returns NULL once loaded, else why not
/// (a static string). Safe to call from any thread; loads once.
const char *tether_curl_load(void);
/// Whether libcurl is loaded (nothing is loaded by asking).
int tether_curl_loaded(void);

/// libcurl's functions, through the loaded library: call tether_curl_load() first.
CURLcode tether_curl_global_init(long flags);
CURL *tether_curl_easy_init(void);
void tether_curl_easy_cleanup(CURL *handle);
CURLcode tether_curl_easy_perform(CURL *handle);
const char *tether_curl_easy_strerror(CURLcode code);
CURLHcode tether_curl_easy_header(CURL *handle, const char *name, size_t index, unsigned int origin, int request, struct curl_header **header);
struct curl_slist *tether_curl_slist_append(struct curl_slist *list, const char *text);
void tether_curl_slist_free_all(struct curl_slist *list);
const char *tether_curl_version(void);

/// Typed, non-variadic wrappers of curl_easy_setopt / curl_easy_getinfo (Swift cannot call variadic C).
CURLcode tether_curl_setopt_long(CURL *handle, CURLoption option, long value);
CURLcode tether_curl_setopt_string(CURL *handle, CURLoption option, const char *value);
CURLcode tether_curl_setopt_pointer(CURL *handle, CURLoption option, void *value);
CURLcode tether_curl_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value);
/// Sets a blob option (CAINFO_BLOB, SSLCERT_BLOB…) with CURL_BLOB_COPY: curl keeps its own copy.
CURLcode tether_curl_setopt_blob(CURL *handle, CURLoption option, const void *data, size_t length);
typedef size_t (*tether_curl_write_callback)(char *data, size_t size, size_t count, void *context);
CURLcode tether_curl_setopt_write_function(CURL *handle, tether_curl_write_callback callback);
/// The request body's source, read as it is sent (CURLOPT_READFUNCTION; its context is CURLOPT_READDATA).
typedef size_t (*tether_curl_read_callback)(char *buffer, size_t size, size_t count, void *context);
CURLcode tether_curl_setopt_read_function(CURL *handle, tether_curl_read_callback callback);
CURLcode tether_curl_setopt_off_t(CURL *handle, CURLoption option, curl_off_t value);
CURLcode tether_curl_getinfo_long(CURL *handle, CURLINFO info, long *value);
CURLcode tether_curl_getinfo_off_t(CURL *handle, CURLINFO info, curl_off_t *value);
#endif
