/* OpenSSL for Swift: the headers, and one-line shims for macros Swift cannot call. */
#ifndef METACRYPT_COPENSSL_H
#define METACRYPT_COPENSSL_H

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

void mc_openssl_free(void *ptr);
EVP_PKEY *mc_evp_pkey_generate_ec(const char *curve);
EVP_PKEY *mc_evp_pkey_generate_named(const char *type);
int mc_evp_cipher_ctx_set_ivlen(EVP_CIPHER_CTX *ctx, int len);
int mc_evp_cipher_ctx_get_tag(EVP_CIPHER_CTX *ctx, int len, void *tag);
int mc_evp_cipher_ctx_set_tag(EVP_CIPHER_CTX *ctx, int len, void *tag);
long mc_bio_get_mem_data(BIO *bio, char **data);
void mc_openssl_secure_clear_free(void *ptr, size_t len);
int mc_evp_pkey_keypair_selection(void);
int mc_evp_pkey_public_key_selection(void);
EVP_PKEY *mc_evp_pkey_generate_rsa(size_t bits);
GENERAL_NAMES *mc_general_names_new(void);
int mc_general_names_push(GENERAL_NAMES *names, GENERAL_NAME *name);
int mc_general_names_count(const GENERAL_NAMES *names);
GENERAL_NAME *mc_general_names_value(const GENERAL_NAMES *names, int i);
void mc_x509_extensions_free(STACK_OF(X509_EXTENSION) *exts);
unsigned long mc_xn_flag_rfc2253(void);

#endif
