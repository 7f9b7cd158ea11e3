#include "COpenSSLShims.h"
#include <openssl/crypto.h>
#include <openssl/provider.h>
#include <pthread.h>

long tether_bio_mem_data(BIO *bio, const char **data) {
    char *pointer = NULL;
    long count = BIO_get_mem_data(bio, &pointer);
    *data = pointer;
    return count;
}

unsigned long tether_xn_flag_rfc2253(void) { return XN_FLAG_RFC2253; }

void tether_openssl_free(void *pointer) { OPENSSL_free(pointer); }

void tether_x509_stack_free(STACK_OF(X509) *stack) { sk_X509_pop_free(stack, X509_free); }

static pthread_once_t providers_once = PTHREAD_ONCE_INIT;
static int providers_ok = 0;

static void load_providers(void) {
    OSSL_PROVIDER *base = OSSL_PROVIDER_load(NULL, "default");
    OSSL_PROVIDER_load(NULL, "legacy"); /* optional: absent on some systems */
    providers_ok = base != NULL;
}

int tether_load_providers(void) {
    pthread_once(&providers_once, load_providers);
    return providers_ok;
}

int tether_ssl_ctx_require_tls12(SSL_CTX *context) {
    return (int)SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
}
