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
