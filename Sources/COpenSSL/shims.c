#include "COpenSSL.h"

void mc_openssl_free(void *ptr) { OPENSSL_free(ptr); }

EVP_PKEY *mc_evp_pkey_generate_ec(const char *curve) {
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
}

EVP_PKEY *mc_evp_pkey_generate_named(const char *type) {
    return EVP_PKEY_Q_keygen(NULL, NULL, type);
}

int mc_evp_cipher_ctx_set_ivlen(EVP_CIPHER_CTX *ctx, int len) {
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, len, NULL);
}

int mc_evp_cipher_ctx_get_tag(EVP_CIPHER_CTX *ctx, int len, void *tag) {
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, len, tag);
}

int mc_evp_cipher_ctx_set_tag(EVP_CIPHER_CTX *ctx, int len, void *tag) {
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, len, tag);
}

long mc_bio_get_mem_data(BIO *bio, char **data) {
    return BIO_get_mem_data(bio, data);
}

void mc_openssl_secure_clear_free(void *ptr, size_t len) {
    OPENSSL_secure_clear_free(ptr, len);
}

int mc_evp_pkey_keypair_selection(void) { return EVP_PKEY_KEYPAIR; }

int mc_evp_pkey_public_key_selection(void) { return EVP_PKEY_PUBLIC_KEY; }

EVP_PKEY *mc_evp_pkey_generate_rsa(size_t bits) {
    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", bits);
}

GENERAL_NAMES *mc_general_names_new(void) { return sk_GENERAL_NAME_new_null(); }

int mc_general_names_push(GENERAL_NAMES *names, GENERAL_NAME *name) {
    return sk_GENERAL_NAME_push(names, name);
}

int mc_general_names_count(const GENERAL_NAMES *names) {
    return sk_GENERAL_NAME_num(names);
}

GENERAL_NAME *mc_general_names_value(const GENERAL_NAMES *names, int i) {
    return sk_GENERAL_NAME_value(names, i);
}

void mc_x509_extensions_free(STACK_OF(X509_EXTENSION) *exts) {
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
}

unsigned long mc_xn_flag_rfc2253(void) {
    return XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB;
}
