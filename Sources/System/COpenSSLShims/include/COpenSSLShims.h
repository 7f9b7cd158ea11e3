#ifndef TETHER_OPENSSL_SHIMS_H
#define TETHER_OPENSSL_SHIMS_H
#include <openssl/bio.h>
#include <openssl/x509.h>

/// OpenSSL (libssl, and libcrypto with it) is loaded when a process first calls it (dlopen;
/// loader.c, written by scripts/c-forwarders), not at start. Returns NULL once loaded, else why
/// not (a static string). Safe from any thread; loads once. Every OpenSSL function Tether calls
/// loads it first if need be (a process that cannot load it ends with the reason, status 127).
const char *tether_openssl_load(void);
/// Whether it is loaded (nothing is loaded by asking).
int tether_openssl_loaded(void);
/// The loaded library's handle, for dlsym (NULL when it cannot be loaded).
void *tether_openssl_library(void);
/// Loads it, or ends the process with the reason (status 127).
void tether_openssl_require(void);

/// BIO_get_mem_data (a macro): the memory BIO's bytes and their count.
long tether_bio_mem_data(BIO *bio, const char **data);
/// XN_FLAG_RFC2253 (a composite macro).
unsigned long tether_xn_flag_rfc2253(void);
/// OPENSSL_free (a macro).
void tether_openssl_free(void *pointer);
/// sk_X509_pop_free(stack, X509_free) (a macro in OpenSSL 3).
void tether_x509_stack_free(STACK_OF(X509) *stack);
/// Loads the "default" and "legacy" providers once, so old PKCS#12 files (RC2, 3DES) open.
/// Returns 1 when the default provider is available.
int tether_load_providers(void);
#include <openssl/ssl.h>
/// SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) (a macro).
int tether_ssl_ctx_require_tls12(SSL_CTX *context);
#endif
