#include "CMicroHTTPD.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>

struct MHD_Daemon *mc_mhd_start(unsigned int flags,
                                MHD_AccessHandlerCallback handler, void *cls,
                                struct MHD_OptionItem *options) {
    return MHD_start_daemon(flags, 0, NULL, NULL, handler, cls,
                            MHD_OPTION_ARRAY, options, MHD_OPTION_END);
}

uint16_t mc_mhd_bound_port(struct MHD_Daemon *daemon) {
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info == NULL ? 0 : info->port;
}

static size_t identity_unescape(void *cls, struct MHD_Connection *connection,
                                char *text) {
    (void)cls;
    (void)connection;
    return strlen(text);
}

void *mc_mhd_identity_unescape_callback(void) {
    return (void *)&identity_unescape;
}

static void nodelay(void *cls, struct MHD_Connection *connection,
                    void **socket_context,
                    enum MHD_ConnectionNotificationCode code) {
    (void)cls;
    (void)socket_context;
    if (code != MHD_CONNECTION_NOTIFY_STARTED)
        return;
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(
        connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info == NULL)
        return;
    int on = 1;
    (void)setsockopt(info->connect_fd, IPPROTO_TCP, TCP_NODELAY, &on,
                     sizeof(on));
}

void *mc_mhd_nodelay_callback(void) { return (void *)&nodelay; }

/*
 * TLS credentials. A reload builds a complete new set and swaps a pointer
 * under a mutex. Old sets are kept, not freed: a handshake that began
 * before the swap may still be reading one, and GnuTLS gives no signal for
 * when it is done. A reload is an operator action, so the cost is a few
 * kilobytes per SIGHUP for the life of the process.
 */
struct credentials {
    gnutls_pcert_st certs[16];
    unsigned int count;
    gnutls_privkey_t key;
    struct credentials *previous;
};

static pthread_mutex_t credentials_lock = PTHREAD_MUTEX_INITIALIZER;
static struct credentials *current_credentials;

int mc_tls_set_credentials(const char *cert_pem, size_t cert_len,
                           const char *key_pem, size_t key_len) {
    struct credentials *fresh = calloc(1, sizeof(*fresh));
    if (fresh == NULL)
        return GNUTLS_E_MEMORY_ERROR;

    gnutls_datum_t certs = {(unsigned char *)cert_pem, (unsigned int)cert_len};
    fresh->count = sizeof(fresh->certs) / sizeof(fresh->certs[0]);
    int rc = gnutls_pcert_list_import_x509_raw(
        fresh->certs, &fresh->count, &certs, GNUTLS_X509_FMT_PEM, 0);
    if (rc < 0) {
        free(fresh);
        return rc;
    }

    gnutls_datum_t key = {(unsigned char *)key_pem, (unsigned int)key_len};
    rc = gnutls_privkey_init(&fresh->key);
    if (rc >= 0)
        rc = gnutls_privkey_import_x509_raw(fresh->key, &key,
                                            GNUTLS_X509_FMT_PEM, NULL, 0);
    if (rc < 0) {
        for (unsigned int i = 0; i < fresh->count; i++)
            gnutls_pcert_deinit(&fresh->certs[i]);
        if (fresh->key != NULL)
            gnutls_privkey_deinit(fresh->key);
        free(fresh);
        return rc;
    }

    pthread_mutex_lock(&credentials_lock);
    fresh->previous = current_credentials;
    current_credentials = fresh;
    pthread_mutex_unlock(&credentials_lock);
    return 0;
}

static int retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_dn,
                    int nreqs, const gnutls_pk_algorithm_t *pk_algos,
                    int pk_algos_length, gnutls_pcert_st **pcert,
                    unsigned int *pcert_length, gnutls_privkey_t *pkey) {
    (void)session;
    (void)req_ca_dn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    pthread_mutex_lock(&credentials_lock);
    struct credentials *c = current_credentials;
    pthread_mutex_unlock(&credentials_lock);
    if (c == NULL)
        return -1;
    *pcert = c->certs;
    *pcert_length = c->count;
    *pkey = c->key;
    return 0;
}

void *mc_tls_certificate_callback(void) { return (void *)&retrieve; }

const char *mc_tls_strerror(int code) { return gnutls_strerror(code); }
