#ifndef TETHER_CURL_SHIMS_H
#define TETHER_CURL_SHIMS_H
#include <curl/curl.h>
#include <stddef.h>

/// Typed, non-variadic wrappers of curl_easy_setopt / curl_easy_getinfo (Swift cannot call variadic C).
CURLcode tether_curl_setopt_long(CURL *handle, CURLoption option, long value);
CURLcode tether_curl_setopt_string(CURL *handle, CURLoption option, const char *value);
CURLcode tether_curl_setopt_pointer(CURL *handle, CURLoption option, void *value);
CURLcode tether_curl_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value);
/// Sets a blob option (CAINFO_BLOB, SSLCERT_BLOB…) with CURL_BLOB_COPY: curl keeps its own copy.
CURLcode tether_curl_setopt_blob(CURL *handle, CURLoption option, const void *data, size_t length);
typedef size_t (*tether_curl_write_callback)(char *data, size_t size, size_t count, void *context);
CURLcode tether_curl_setopt_write_function(CURL *handle, tether_curl_write_callback callback);
CURLcode tether_curl_getinfo_long(CURL *handle, CURLINFO info, long *value);
CURLcode tether_curl_getinfo_off_t(CURL *handle, CURLINFO info, curl_off_t *value);
#endif
