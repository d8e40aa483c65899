/* GNU libmicrohttpd for Swift, with the few shims Swift cannot do itself:
 * the variadic start and info calls, and a GnuTLS certificate callback whose
 * credentials can be replaced while the daemon runs (SIGHUP reload). */
#ifndef METACRYPT_CMICROHTTPD_H
#define METACRYPT_CMICROHTTPD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <microhttpd.h>

/* MHD_start_daemon with an option array (MHD_OPTION_ARRAY). */
struct MHD_Daemon *mc_mhd_start(unsigned int flags,
                                MHD_AccessHandlerCallback handler, void *cls,
                                struct MHD_OptionItem *options);

/* An unescape callback that leaves text as it arrived: the API decodes the
 * path segment by segment itself, so that %2F, %00 and friends cannot change
 * how a path splits or where it ends. */
void *mc_mhd_identity_unescape_callback(void);

/* The listening port of a running daemon, or 0. */
uint16_t mc_mhd_bound_port(struct MHD_Daemon *daemon);

/* An MHD_NotifyConnectionCallback that sets TCP_NODELAY on new connections,
 * so a header and body written separately never wait for Nagle's timer. */
void *mc_mhd_nodelay_callback(void);

/* Replace the TLS certificate chain and private key (both PEM). Handshakes
 * that start afterwards use the new ones; connections already open are not
 * touched. Returns 0, or a negative GnuTLS error code. */
int mc_tls_set_credentials(const char *cert_pem, size_t cert_len,
                           const char *key_pem, size_t key_len);

/* The GnuTLS certificate callback for MHD_OPTION_HTTPS_CERT_CALLBACK. */
void *mc_tls_certificate_callback(void);

/* A human-readable message for a GnuTLS error code. */
const char *mc_tls_strerror(int code);

#endif
