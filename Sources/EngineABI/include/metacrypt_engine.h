/*
 * metacrypt_engine.h -- the Metacrypt engine ABI.
 *
 * This header is the whole contract between the Metacrypt host (the server)
 * and an engine: a shared object the host loads with dlopen() and talks to
 * only through the two tables declared here. It is plain C99 so that an
 * engine may be written in any language that can export a C symbol.
 *
 * Naming
 *   Types and functions start with mc_, constants with MC_. A member added
 *   after version 1.0 carries a comment naming the version that added it.
 *
 * Compatibility promise
 *   MC_ABI_VERSION is (major << 16) | minor.
 *   - A new major version breaks compatibility: the host refuses an engine
 *     built for another major version, and says so.
 *   - A new minor version only appends: members at the end of a table or
 *     struct, new error codes, new flag bits, new route table fields. Nothing
 *     is ever reordered, removed or given a new meaning.
 *   - Every table and struct that crosses starts with its own size. Before
 *     using a member added in a later minor version, check that `size` is
 *     large enough to contain it (MC_HAS_MEMBER below).
 *
 * Entry point
 *   An engine exports exactly one symbol, MC_ENGINE_ENTRY_SYMBOL:
 *
 *     const mc_engine *metacrypt_engine_v1(uint32_t host_abi_version,
 *                                          const mc_host *host);
 *
 *   It returns the engine's table, or NULL if it cannot work with this host
 *   (for example, a host too old for a member it needs). The host pointer
 *   and everything it points to stays valid until the process exits. The
 *   returned table must likewise stay valid: engines are never unloaded.
 *
 * Ownership
 *   Whoever allocates frees. Memory the engine hands to the host (route
 *   table, response bodies, reason strings) is released by the host calling
 *   the engine's `release`; memory the host hands to the engine (stored
 *   values, key lists, reason strings) is released by the engine calling the
 *   host's `release`. Both `release` functions wipe before freeing, so they
 *   are safe for secrets. Input pointers are borrowed for the call only.
 *
 * Errors
 *   Functions return MC_OK (0) or a negative MC_ERR_* code. On failure a
 *   function may set its `reason` out-parameter to a NUL-terminated UTF-8
 *   message, allocated by the side that returns it. A reason names the
 *   offending value where that helps the caller, but never contains secrets.
 *   A caller initialises its result to MC_ERR_INTERNAL, so a path that
 *   forgets to set one fails closed.
 *
 * Threads
 *   `handle` may be called from many threads at once, for one mount or
 *   several. For a given mount, the host never runs `unseal`, `seal` or
 *   `mount_free` while a `handle` call for that mount is in progress, and
 *   never runs two of them at once. The host's functions are thread-safe.
 *
 * Strings
 *   Names (mount names, operations, roles) are NUL-terminated UTF-8. Storage
 *   keys and payloads are pointer plus length, so that a stray NUL byte can
 *   be detected rather than silently truncating a key.
 */
#ifndef METACRYPT_ENGINE_H
#define METACRYPT_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MC_ABI_VERSION_MAJOR 1
#define MC_ABI_VERSION_MINOR 1
/* (MC_ABI_VERSION_MAJOR << 16) | MC_ABI_VERSION_MINOR, spelled out so that
 * every language's C importer sees a plain constant. */
#define MC_ABI_VERSION 0x00010001
#define MC_ABI_MAJOR(v) ((uint32_t)(v) >> 16)
#define MC_ABI_MINOR(v) ((uint32_t)(v) & 0xffffu)

#define MC_ENGINE_ENTRY_SYMBOL "metacrypt_engine_v1"

/* True when a table of the given size includes `member`. */
#define MC_HAS_MEMBER(table, type, member) \
    ((table)->size >= offsetof(type, member) + sizeof(((type *)0)->member))

/* Result codes. The host maps each to an HTTP status (shown). */
#define MC_OK                   0
#define MC_ERR_INTERNAL        -1  /* 500: a bug; never the caller's fault */
#define MC_ERR_INVALID         -2  /* 400: bad input */
#define MC_ERR_NOT_FOUND       -3  /* 404 */
#define MC_ERR_EXISTS          -4  /* 409: already exists */
#define MC_ERR_DENIED          -5  /* 403: policy or role refused */
#define MC_ERR_SEALED          -6  /* 503: keys are not available */
#define MC_ERR_TOO_LARGE       -7  /* 413 */
#define MC_ERR_UNSUPPORTED     -8  /* 400: understood but not supported */
#define MC_ERR_NO_MEMORY       -9  /* 500 */
#define MC_ERR_STORAGE        -10  /* 500: the storage backend failed */
#define MC_ERR_CONFLICT       -11  /* 409: state does not allow this now */
#define MC_ERR_LIMIT          -12  /* 429: a quota or rate limit */
#define MC_ERR_BAD_KEY        -13  /* 400: a storage key the host refused */

/* Log levels for mc_host.log. */
#define MC_LOG_ERROR 1
#define MC_LOG_WARN  2
#define MC_LOG_INFO  3
#define MC_LOG_DEBUG 4

/* Flags for mc_host.storage_put. */
#define MC_PUT_CREATE_ONLY 0x1u /* fail with MC_ERR_EXISTS if key exists */

/* Storage keys: at most this many bytes, in segments separated by '/'. */
#define MC_STORAGE_KEY_MAX 512

/* mc_caller.flags */
#define MC_CALLER_ADMIN 0x1u

/* The identity the host authenticated for a request. */
typedef struct mc_caller {
    uint32_t size;              /* sizeof(mc_caller) as built by the host */
    const char *name;           /* normalised user name; "" if anonymous */
    const char *const *roles;   /* role names */
    size_t role_count;
    uint32_t flags;             /* MC_CALLER_* */
} mc_caller;

/* A mounted instance of an engine, as given to mount_init. */
typedef struct mc_mount {
    uint32_t size;
    const char *name;           /* the mount name, e.g. "transit" */
    const char *type;           /* the engine type, e.g. "transit" */
    const uint8_t *config;      /* JSON object given when mounting */
    size_t config_len;
    void *host_mount;           /* pass to the host's storage and log calls */
} mc_mount;

/* One request, routed by the host from the engine's route table. */
typedef struct mc_request {
    uint32_t size;
    const char *operation;      /* the route's "operation" */
    const char *method;         /* HTTP method, e.g. "POST" */
    const char *request_id;
    const mc_caller *caller;
    const uint8_t *params;      /* JSON object: path parameters */
    size_t params_len;
    const uint8_t *query;       /* JSON object: query string arguments */
    size_t query_len;
    const uint8_t *body;        /* request body; JSON unless empty */
    size_t body_len;
    const char *accept;         /* the Accept header, or "" */
    void *host_request;         /* pass to mc_host.policy_check */
} mc_request;

/* The engine fills this in on MC_OK. */
typedef struct mc_response {
    uint32_t size;
    int status;                 /* HTTP status; 0 means 200 */
    uint8_t *body;              /* engine-allocated; released by the host */
    size_t body_len;
    const char *content_type;   /* static string, or NULL for JSON */
} mc_response;

/* The host's table, given to the entry point. */
typedef struct mc_host {
    uint32_t size;
    uint32_t abi_version;

    /* 1.0: memory. alloc returns zeroed memory or NULL; release wipes and
     * frees memory from alloc or returned by any host function. */
    void *(*alloc)(size_t len);
    void (*release)(void *ptr);
    /* 1.0: wipe memory in a way the compiler cannot elide. */
    void (*wipe)(void *ptr, size_t len);
    /* 1.0: cryptographically secure random bytes. MC_OK or an error. */
    int (*random)(void *out, size_t len);
    /* 1.0: log a message; host_mount may be NULL. Never log secrets. */
    void (*log)(void *host_mount, int level, const char *msg, size_t len);

    /* 1.0: the mount's storage, scoped to engine/<type>/<mount>/ and
     * encrypted with the mount's key. Keys are validated by the host
     * (MC_ERR_BAD_KEY): printable ASCII without spaces, at most
     * MC_STORAGE_KEY_MAX bytes, segments separated by '/', no empty,
     * "." or ".." segment, no leading or trailing '/'.
     * storage_get returns MC_ERR_NOT_FOUND when the key is absent;
     * *value is released with release(). */
    int (*storage_get)(void *host_mount, const char *key, size_t key_len,
                       uint8_t **value, size_t *value_len, char **reason);
    int (*storage_put)(void *host_mount, const char *key, size_t key_len,
                       const uint8_t *value, size_t value_len, uint32_t flags,
                       char **reason);
    int (*storage_delete)(void *host_mount, const char *key, size_t key_len,
                          char **reason);
    /* 1.0: keys under prefix ("" for all), relative to the mount, sorted,
     * each followed by a NUL byte, in one buffer released with release().
     * A prefix that is not empty must end in '/'. */
    int (*storage_list)(void *host_mount, const char *prefix,
                        size_t prefix_len, char **keys, size_t *keys_len,
                        char **reason);

    /* 1.0: may the request's caller perform action on resource? resource
     * is relative to the mount; the host prefixes "<type>/<mount>/".
     * MC_OK if allowed, MC_ERR_DENIED if not, another code on error. */
    int (*policy_check)(void *host_request, const char *action,
                        const char *resource, char **reason);

    /* 1.1: public objects. Non-secret bytes -- a CA certificate, a CRL, a
     * KRL -- stored in plaintext beside the mount and served by the host
     * itself, sealed or not, for routes that declare "object" (see
     * docs/engines.md). name follows the storage key rules; content_type is
     * a media type such as "application/pkix-crl". An object may be stored
     * in several content types; public_delete removes every one of them.
     * Never put a secret here: public objects are not encrypted. */
    int (*public_put)(void *host_mount, const char *name, size_t name_len,
                      const uint8_t *value, size_t value_len,
                      const char *content_type, char **reason);
    int (*public_delete)(void *host_mount, const char *name, size_t name_len,
                         char **reason);
} mc_host;

/* The engine's table, returned by the entry point. */
typedef struct mc_engine {
    uint32_t size;
    uint32_t abi_version;       /* the version the engine was built for */

    /* 1.0: identity. Static strings. name is the engine type: lowercase
     * letters, digits and '-', e.g. "transit". */
    const char *name;
    const char *version;

    /* 1.0: the route table as JSON (see docs/engines.md), engine-allocated.
     * {"routes":[{"operation":"get","method":"GET","path":"data/{key}",
     *   "access":"authenticated","action":"read","resource":"data/{key}",
     *   "sealed":false}]} */
    int (*describe)(uint8_t **json, size_t *json_len, char **reason);

    /* 1.0: create the engine's state for a mount. Called while the host is
     * unsealed; storage may be used. */
    int (*mount_init)(const mc_mount *mount, void **state, char **reason);
    /* 1.0: the barrier was unsealed: load keys from storage. */
    int (*unseal)(void *state, char **reason);
    /* 1.0: the barrier is being sealed: wipe every key held in memory. */
    void (*seal)(void *state);
    /* 1.0: serve one request. */
    int (*handle)(void *state, const mc_request *request,
                  mc_response *response, char **reason);
    /* 1.0: the mount is going away (after seal): free the state. */
    void (*mount_free)(void *state);
    /* 1.0: wipe and free memory the engine returned to the host. */
    void (*release)(void *ptr);
} mc_engine;

/* The type of the entry point. */
typedef const mc_engine *(*mc_engine_entry_fn)(uint32_t host_abi_version,
                                               const mc_host *host);

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(MC_ABI_VERSION ==
                   ((MC_ABI_VERSION_MAJOR << 16) | MC_ABI_VERSION_MINOR),
               "MC_ABI_VERSION must match its parts");
#endif

#ifdef __cplusplus
}
#endif

#endif /* METACRYPT_ENGINE_H */
