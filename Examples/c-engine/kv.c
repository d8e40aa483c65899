/*
 * kv.c -- a tiny Metacrypt engine in plain C: a key-value store.
 *
 * It shows the whole engine ABI: the entry point, the route table, mount
 * state, storage through the host, errors with reasons, and who frees what.
 * docs/engines.md walks through it. Build:
 *
 *   cc -std=c11 -Wall -Wextra -O2 -shared -fPIC \
 *      -I Sources/EngineABI/include -o libkv.so Examples/c-engine/kv.c
 *
 * The test suite also builds variants: -DKV_ABI_VERSION=0x00020000 (an
 * engine for another ABI major) and -DKV_NO_ENTRY (no entry symbol).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metacrypt_engine.h"

#ifndef KV_ABI_VERSION
#define KV_ABI_VERSION MC_ABI_VERSION
#endif

#if defined(__GNUC__)
#define KV_EXPORT __attribute__((visibility("default")))
#else
#define KV_EXPORT
#endif

static const mc_host *host;

struct kv_mount {
    void *host_mount;
};

static const char routes[] =
    "{\"routes\":["
    "{\"operation\":\"read\",\"method\":\"GET\",\"path\":\"data/{key}\","
    "\"access\":\"authenticated\",\"action\":\"read\",\"resource\":\"data/{key}\"},"
    "{\"operation\":\"write\",\"method\":\"PUT\",\"path\":\"data/{key}\","
    "\"access\":\"authenticated\",\"action\":\"write\",\"resource\":\"data/{key}\"},"
    "{\"operation\":\"delete\",\"method\":\"DELETE\",\"path\":\"data/{key}\","
    "\"access\":\"authenticated\",\"action\":\"delete\",\"resource\":\"data/{key}\"},"
    "{\"operation\":\"list\",\"method\":\"GET\",\"path\":\"data\","
    "\"access\":\"authenticated\",\"action\":\"list\",\"resource\":\"data\"},"
    "{\"operation\":\"raw-put\",\"method\":\"POST\",\"path\":\"raw\","
    "\"access\":\"admin\"},"
    "{\"operation\":\"publish\",\"method\":\"PUT\",\"path\":\"public/{key}\","
    "\"access\":\"admin\"},"
    "{\"operation\":\"read-public\",\"method\":\"GET\",\"path\":\"public/{key}\","
    "\"access\":\"public\",\"sealed\":true,\"object\":\"pub/{key}\","
    "\"object_types\":[\"text/plain\",\"application/json\"]}"
    "]}";

/* Engine-side memory: a size header so that release can wipe everything. */
static void *kv_alloc(size_t len) {
    size_t *block = calloc(1, sizeof(size_t) * 2 + len);
    if (block == NULL)
        return NULL;
    block[0] = len;
    return block + 2;
}

static void kv_release(void *ptr) {
    if (ptr == NULL)
        return;
    size_t *block = (size_t *)ptr - 2;
    host->wipe(block, sizeof(size_t) * 2 + block[0]);
    free(block);
}

static char *kv_strdup(const char *text) {
    size_t len = strlen(text);
    char *out = kv_alloc(len + 1);
    if (out != NULL)
        memcpy(out, text, len);
    return out;
}

static int describe(uint8_t **json, size_t *json_len, char **reason) {
    size_t len = sizeof(routes) - 1;
    *json = kv_alloc(len);
    if (*json == NULL) {
        *reason = kv_strdup("out of memory");
        return MC_ERR_NO_MEMORY;
    }
    memcpy(*json, routes, len);
    *json_len = len;
    return MC_OK;
}

static int mount_init(const mc_mount *mount, void **state, char **reason) {
    struct kv_mount *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        *reason = kv_strdup("out of memory");
        return MC_ERR_NO_MEMORY;
    }
    m->host_mount = mount->host_mount;
    *state = m;
    return MC_OK;
}

static int unseal(void *state, char **reason) {
    (void)state;
    (void)reason;
    return MC_OK; /* this engine keeps no keys of its own */
}

static void seal(void *state) { (void)state; }

static void mount_free(void *state) { free(state); }

/* Copies a host-allocated reason into an engine-allocated one. */
static char *pass_reason(char *host_reason, const char *fallback) {
    char *out = kv_strdup(host_reason != NULL ? host_reason : fallback);
    host->release(host_reason);
    return out;
}

/* Extracts the "key" path parameter from the params JSON, which holds
 * exactly the route's parameters: {"key":"..."}. Path parameters are single
 * URL segments the host has already checked; this engine only accepts
 * [A-Za-z0-9._-], so no JSON escapes can occur in a value it accepts. */
static int param_key(const mc_request *req, char *out, size_t cap) {
    static const char field[] = "{\"key\":\"";
    const char *end = (const char *)req->params + req->params_len;
    if (req->params_len < sizeof(field) ||
        memcmp(req->params, field, sizeof(field) - 1) != 0)
        return -1;
    const char *p = (const char *)req->params + sizeof(field) - 1;
    size_t n = 0;
    while (p < end && *p != '"') {
        char c = *p++;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        if (!ok || n + 1 >= cap)
            return -1;
        out[n++] = c;
    }
    out[n] = '\0';
    if (p + 2 != end || p[0] != '"' || p[1] != '}')
        return -1; /* exactly one parameter, nothing after it */
    return n > 0 ? 0 : -1;
}

static int respond(mc_response *resp, int status, const char *body,
                   size_t len) {
    resp->status = status;
    resp->body = kv_alloc(len);
    if (resp->body == NULL)
        return MC_ERR_NO_MEMORY;
    memcpy(resp->body, body, len);
    resp->body_len = len;
    return MC_OK;
}

static int handle(void *state, const mc_request *req, mc_response *resp,
                  char **reason) {
    struct kv_mount *m = state;
    int rc = MC_ERR_INTERNAL; /* fail closed if a path forgets to set it */
    char *host_reason = NULL;
    char key[128 + 5];

    if (strcmp(req->operation, "raw-put") == 0) {
        /* Passes the body, unchecked, as a storage key: the host must
         * refuse anything that could leave the mount. */
        rc = host->storage_put(m->host_mount, (const char *)req->body,
                               req->body_len, (const uint8_t *)"x", 1, 0,
                               &host_reason);
        if (rc != MC_OK) {
            *reason = pass_reason(host_reason, "storage refused the key");
            return rc;
        }
        return respond(resp, 200, "{\"stored\":true}", 15);
    }

    if (strcmp(req->operation, "list") == 0) {
        char *keys = NULL;
        size_t keys_len = 0;
        rc = host->storage_list(m->host_mount, "data/", 5, &keys, &keys_len,
                                &host_reason);
        if (rc != MC_OK) {
            *reason = pass_reason(host_reason, "list failed");
            return rc;
        }
        /* {"keys":["a","b"]}: keys are validated printable ASCII; quotes
         * and backslashes cannot occur in names this engine writes. */
        size_t cap = keys_len * 2 + 32, n = 0;
        char *out = kv_alloc(cap);
        if (out == NULL) {
            host->release(keys);
            return MC_ERR_NO_MEMORY;
        }
        n += (size_t)snprintf(out, cap, "{\"keys\":[");
        for (size_t i = 0; i < keys_len;) {
            size_t len = strlen(keys + i);
            n += (size_t)snprintf(out + n, cap - n, "%s\"%s\"",
                                  i == 0 ? "" : ",", keys + i + 5);
            i += len + 1;
        }
        n += (size_t)snprintf(out + n, cap - n, "]}");
        host->release(keys);
        resp->status = 200;
        resp->body = (uint8_t *)out;
        resp->body_len = n;
        return MC_OK;
    }

    memcpy(key, "data/", 5);
    if (param_key(req, key + 5, sizeof(key) - 5) != 0) {
        *reason = kv_strdup("the key must be 1-127 of A-Z a-z 0-9 . _ -");
        return MC_ERR_INVALID;
    }

    if (strcmp(req->operation, "publish") == 0) {
        /* ABI 1.1: a public object, in two content types. The host serves
         * it for the read-public route, even while sealed; this engine
         * never sees those requests. */
        if (!MC_HAS_MEMBER(host, mc_host, public_put)) {
            *reason = kv_strdup("the host predates ABI 1.1");
            return MC_ERR_UNSUPPORTED;
        }
        char name[sizeof(key)];
        memcpy(name, "pub/", 4);
        strcpy(name + 4, key + 5);
        rc = host->public_put(m->host_mount, name, strlen(name), req->body,
                              req->body_len, "text/plain", &host_reason);
        if (rc == MC_OK)
            rc = host->public_put(m->host_mount, name, strlen(name),
                                  (const uint8_t *)"{\"published\":true}", 18,
                                  "application/json", &host_reason);
        if (rc != MC_OK) {
            *reason = pass_reason(host_reason, "publish failed");
            return rc;
        }
        return respond(resp, 204, "", 0);
    }

    if (strcmp(req->operation, "write") == 0) {
        if (req->body_len == 0 || req->body[0] != '{') {
            *reason = kv_strdup("the body must be a JSON object");
            return MC_ERR_INVALID;
        }
        rc = host->storage_put(m->host_mount, key, strlen(key), req->body,
                               req->body_len, 0, &host_reason);
        if (rc != MC_OK) {
            *reason = pass_reason(host_reason, "write failed");
            return rc;
        }
        return respond(resp, 204, "", 0);
    }

    if (strcmp(req->operation, "read") == 0) {
        uint8_t *value = NULL;
        size_t value_len = 0;
        rc = host->storage_get(m->host_mount, key, strlen(key), &value,
                               &value_len, &host_reason);
        if (rc != MC_OK) {
            *reason = pass_reason(host_reason, "read failed");
            return rc;
        }
        rc = respond(resp, 200, (const char *)value, value_len);
        host->release(value); /* host memory goes back to the host */
        return rc;
    }

    if (strcmp(req->operation, "delete") == 0) {
        rc = host->storage_delete(m->host_mount, key, strlen(key),
                                  &host_reason);
        if (rc != MC_OK) {
            *reason = pass_reason(host_reason, "delete failed");
            return rc;
        }
        return respond(resp, 204, "", 0);
    }

    *reason = kv_strdup("unknown operation");
    return MC_ERR_UNSUPPORTED;
}

#if defined(__GNUC__)
__attribute__((unused))
#endif
static const mc_engine engine = {
    .size = sizeof(mc_engine),
    .abi_version = KV_ABI_VERSION,
    .name = "kv",
    .version = "1.0.0",
    .describe = describe,
    .mount_init = mount_init,
    .unseal = unseal,
    .seal = seal,
    .handle = handle,
    .mount_free = mount_free,
    .release = kv_release,
};

#ifndef KV_NO_ENTRY
KV_EXPORT const mc_engine *metacrypt_engine_v1(uint32_t host_abi_version,
                                               const mc_host *h) {
    /* Any 1.x host: the 1.0 members are required, later ones are checked
     * with MC_HAS_MEMBER where they are used (public_put, from 1.1). */
    if (MC_ABI_MAJOR(host_abi_version) != MC_ABI_VERSION_MAJOR ||
        h == NULL || h->size < offsetof(mc_host, public_put))
        return NULL;
    host = h;
    return &engine;
}
#else
KV_EXPORT int kv_not_an_engine(void) { return 0; }
#endif
