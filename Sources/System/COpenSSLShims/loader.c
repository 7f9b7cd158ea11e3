/* Written by scripts/c-forwarders: OpenSSL, loaded with dlopen when a process first calls
 * it (lazy_library.h, in CLazyLibrary). Do not edit; run the script again. */
#include "COpenSSLShims.h"
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define LAZY_NAME "OpenSSL"
#define LAZY_SONAME "libssl.so.3"
#define LAZY_PACKAGE "libssl3"
#define LAZY_PREFIX openssl
#define FUNCTIONS(FORWARD, FORWARD_VOID) \
    FORWARD(int, ASN1_INTEGER_set, (ASN1_INTEGER *a, long v), (a, v)) \
    FORWARD(BIGNUM *, ASN1_INTEGER_to_BN, (const ASN1_INTEGER *ai, BIGNUM *bn), (ai, bn)) \
    FORWARD(int, ASN1_TIME_to_tm, (const ASN1_TIME *s, struct tm *tm), (s, tm)) \
    FORWARD(long, BIO_ctrl, (BIO *bp, int cmd, long larg, void *parg), (bp, cmd, larg, parg)) \
    FORWARD(int, BIO_free, (BIO *a), (a)) \
    FORWARD(BIO *, BIO_new, (const BIO_METHOD *type), (type)) \
    FORWARD(BIO *, BIO_new_mem_buf, (const void *buf, int len), (buf, len)) \
    FORWARD(const BIO_METHOD *, BIO_s_mem, (void), ()) \
    FORWARD(char *, BN_bn2hex, (const BIGNUM *a), (a)) \
    FORWARD_VOID(BN_free, (BIGNUM *a), (a)) \
    FORWARD_VOID(CRYPTO_free, (void *ptr, const char *file, int line), (ptr, file, line)) \
    FORWARD_VOID(ERR_error_string_n, (unsigned long e, char *buf, size_t len), (e, buf, len)) \
    FORWARD(unsigned long, ERR_get_error, (void), ()) \
    FORWARD(int, EVP_Digest, (const void *data, size_t count, unsigned char *md, unsigned int *size, const EVP_MD *type, ENGINE *impl), (data, count, md, size, type, impl)) \
    FORWARD(int, EVP_DigestFinal_ex, (EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s), (ctx, md, s)) \
    FORWARD(int, EVP_DigestInit_ex, (EVP_MD_CTX *ctx, const EVP_MD *type, ENGINE *impl), (ctx, type, impl)) \
    FORWARD(int, EVP_DigestUpdate, (EVP_MD_CTX *ctx, const void *d, size_t cnt), (ctx, d, cnt)) \
    FORWARD(int, EVP_DigestVerify, (EVP_MD_CTX *ctx, const unsigned char *sigret, size_t siglen, const unsigned char *tbs, size_t tbslen), (ctx, sigret, siglen, tbs, tbslen)) \
    FORWARD(int, EVP_DigestVerifyInit, (EVP_MD_CTX *ctx, EVP_PKEY_CTX **pctx, const EVP_MD *type, ENGINE *e, EVP_PKEY *pkey), (ctx, pctx, type, e, pkey)) \
    FORWARD_VOID(EVP_MD_CTX_free, (EVP_MD_CTX *ctx), (ctx)) \
    FORWARD(EVP_MD_CTX *, EVP_MD_CTX_new, (void), ()) \
    FORWARD_VOID(EVP_PKEY_CTX_free, (EVP_PKEY_CTX *ctx), (ctx)) \
    FORWARD(EVP_PKEY_CTX *, EVP_PKEY_CTX_new_from_name, (OSSL_LIB_CTX *libctx, const char *name, const char *propquery), (libctx, name, propquery)) \
    FORWARD(int, EVP_PKEY_CTX_set_group_name, (EVP_PKEY_CTX *ctx, const char *name), (ctx, name)) \
    FORWARD_VOID(EVP_PKEY_free, (EVP_PKEY *pkey), (pkey)) \
    FORWARD(int, EVP_PKEY_generate, (EVP_PKEY_CTX *ctx, EVP_PKEY **ppkey), (ctx, ppkey)) \
    FORWARD(int, EVP_PKEY_keygen_init, (EVP_PKEY_CTX *ctx), (ctx)) \
    FORWARD(EVP_PKEY *, EVP_PKEY_new_raw_public_key, (int type, ENGINE *e, const unsigned char *pub, size_t len), (type, e, pub, len)) \
    FORWARD(const EVP_MD *, EVP_md5, (void), ()) \
    FORWARD(const EVP_MD *, EVP_sha256, (void), ()) \
    FORWARD(const EVP_MD *, EVP_sha384, (void), ()) \
    FORWARD(const EVP_MD *, EVP_sha512, (void), ()) \
    FORWARD(int, OBJ_txt2nid, (const char *s), (s)) \
    FORWARD(int, OPENSSL_sk_num, (const OPENSSL_STACK * a0), (a0)) \
    FORWARD_VOID(OPENSSL_sk_pop_free, (OPENSSL_STACK *st, void (*func)(void *)), (st, func)) \
    FORWARD(OSSL_PROVIDER *, OSSL_PROVIDER_load, (OSSL_LIB_CTX * a0, const char *name), (a0, name)) \
    FORWARD(const char *, OpenSSL_version, (int type), (type)) \
    FORWARD(EVP_PKEY *, PEM_read_bio_PrivateKey, (BIO *out, EVP_PKEY **x, pem_password_cb *cb, void *u), (out, x, cb, u)) \
    FORWARD(X509 *, PEM_read_bio_X509, (BIO *out, X509 **x, pem_password_cb *cb, void *u), (out, x, cb, u)) \
    FORWARD(int, PEM_write_bio_PrivateKey, (BIO *out, const EVP_PKEY *x, const EVP_CIPHER *enc, const unsigned char *kstr, int klen, pem_password_cb *cb, void *u), (out, x, enc, kstr, klen, cb, u)) \
    FORWARD(int, PEM_write_bio_X509, (BIO *out, const X509 *x), (out, x)) \
    FORWARD(PKCS12 *, PKCS12_create, (const char *pass, const char *name, EVP_PKEY *pkey, X509 *cert, struct stack_st_X509 *ca, int nid_key, int nid_cert, int iter, int mac_iter, int keytype), (pass, name, pkey, cert, ca, nid_key, nid_cert, iter, mac_iter, keytype)) \
    FORWARD_VOID(PKCS12_free, (PKCS12 *a), (a)) \
    FORWARD(int, PKCS12_parse, (PKCS12 *p12, const char *pass, EVP_PKEY **pkey, X509 **cert, struct stack_st_X509 **ca), (p12, pass, pkey, cert, ca)) \
    FORWARD(int, PKCS12_verify_mac, (PKCS12 *p12, const char *pass, int passlen), (p12, pass, passlen)) \
    FORWARD(long, SSL_CTX_ctrl, (SSL_CTX *ctx, int cmd, long larg, void *parg), (ctx, cmd, larg, parg)) \
    FORWARD_VOID(SSL_CTX_free, (SSL_CTX * a0), (a0)) \
    FORWARD(X509_STORE *, SSL_CTX_get_cert_store, (const SSL_CTX * a0), (a0)) \
    FORWARD(SSL_CTX *, SSL_CTX_new, (const SSL_METHOD *meth), (meth)) \
    FORWARD_VOID(SSL_CTX_set_verify, (SSL_CTX *ctx, int mode, SSL_verify_cb callback), (ctx, mode, callback)) \
    FORWARD(int, SSL_CTX_use_PrivateKey, (SSL_CTX *ctx, EVP_PKEY *pkey), (ctx, pkey)) \
    FORWARD(int, SSL_CTX_use_certificate, (SSL_CTX *ctx, X509 *x), (ctx, x)) \
    FORWARD(int, SSL_accept, (SSL *ssl), (ssl)) \
    FORWARD_VOID(SSL_free, (SSL *ssl), (ssl)) \
    FORWARD(X509 *, SSL_get1_peer_certificate, (const SSL *s), (s)) \
    FORWARD(SSL *, SSL_new, (SSL_CTX *ctx), (ctx)) \
    FORWARD(int, SSL_read, (SSL *ssl, void *buf, int num), (ssl, buf, num)) \
    FORWARD(int, SSL_set_fd, (SSL *s, int fd), (s, fd)) \
    FORWARD(int, SSL_shutdown, (SSL *s), (s)) \
    FORWARD(int, SSL_write, (SSL *ssl, const void *buf, int num), (ssl, buf, num)) \
    FORWARD(const SSL_METHOD *, TLS_server_method, (void), ()) \
    FORWARD(X509_EXTENSION *, X509V3_EXT_conf_nid, (struct lhash_st_CONF_VALUE *conf, X509V3_CTX *ctx, int ext_nid, const char *value), (conf, ctx, ext_nid, value)) \
    FORWARD_VOID(X509V3_set_ctx, (X509V3_CTX *ctx, X509 *issuer, X509 *subject, X509_REQ *req, X509_CRL *crl, int flags), (ctx, issuer, subject, req, crl, flags)) \
    FORWARD_VOID(X509_EXTENSION_free, (X509_EXTENSION *a), (a)) \
    FORWARD(int, X509_NAME_add_entry_by_txt, (X509_NAME *name, const char *field, int type, const unsigned char *bytes, int len, int loc, int set), (name, field, type, bytes, len, loc, set)) \
    FORWARD(char *, X509_NAME_oneline, (const X509_NAME *a, char *buf, int size), (a, buf, size)) \
    FORWARD(int, X509_NAME_print_ex, (BIO *out, const X509_NAME *nm, int indent, unsigned long flags), (out, nm, indent, flags)) \
    FORWARD(int, X509_STORE_add_cert, (X509_STORE *ctx, X509 *x), (ctx, x)) \
    FORWARD(int, X509_add_ext, (X509 *x, X509_EXTENSION *ex, int loc), (x, ex, loc)) \
    FORWARD(int, X509_check_private_key, (const X509 *x509, const EVP_PKEY *pkey), (x509, pkey)) \
    FORWARD(int, X509_digest, (const X509 *data, const EVP_MD *type, unsigned char *md, unsigned int *len), (data, type, md, len)) \
    FORWARD_VOID(X509_free, (X509 *a), (a)) \
    FORWARD(const ASN1_TIME *, X509_get0_notAfter, (const X509 *x), (x)) \
    FORWARD(const ASN1_TIME *, X509_get0_notBefore, (const X509 *x), (x)) \
    FORWARD(const ASN1_INTEGER *, X509_get0_serialNumber, (const X509 *x), (x)) \
    FORWARD(X509_NAME *, X509_get_issuer_name, (const X509 *a), (a)) \
    FORWARD(ASN1_INTEGER *, X509_get_serialNumber, (X509 *x), (x)) \
    FORWARD(X509_NAME *, X509_get_subject_name, (const X509 *a), (a)) \
    FORWARD(ASN1_TIME *, X509_getm_notAfter, (const X509 *x), (x)) \
    FORWARD(ASN1_TIME *, X509_getm_notBefore, (const X509 *x), (x)) \
    FORWARD(ASN1_TIME *, X509_gmtime_adj, (ASN1_TIME *s, long adj), (s, adj)) \
    FORWARD(X509 *, X509_new, (void), ()) \
    FORWARD(int, X509_set_issuer_name, (X509 *x, const X509_NAME *name), (x, name)) \
    FORWARD(int, X509_set_pubkey, (X509 *x, EVP_PKEY *pkey), (x, pkey)) \
    FORWARD(int, X509_set_version, (X509 *x, long version), (x, version)) \
    FORWARD(int, X509_sign, (X509 *x, EVP_PKEY *pkey, const EVP_MD *md), (x, pkey, md)) \
    FORWARD(PKCS12 *, d2i_PKCS12, (PKCS12 **a, const unsigned char **in, long len), (a, in, len)) \
    FORWARD(EVP_PKEY *, d2i_PUBKEY, (EVP_PKEY **a, const unsigned char **in, long len), (a, in, len)) \
    FORWARD(EVP_PKEY *, d2i_PublicKey, (int type, EVP_PKEY **a, const unsigned char **pp, long length), (type, a, pp, length)) \
    FORWARD(X509 *, d2i_X509, (X509 **a, const unsigned char **in, long len), (a, in, len)) \
    FORWARD(int, i2d_PKCS12, (const PKCS12 *a, unsigned char **out), (a, out)) \
    FORWARD(int, i2d_X509, (const X509 *a, unsigned char **out), (a, out))

#include <lazy_library.h>
