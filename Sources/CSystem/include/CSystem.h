/* System calls Swift cannot reach through Glibc: malloc tuning from <malloc.h>. */
#ifndef METACRYPT_CSYSTEM_H
#define METACRYPT_CSYSTEM_H
#include <stddef.h>

/* mallopt(M_MMAP_THRESHOLD, bytes): allocations of at least `bytes` are
 * mapped and unmapped on their own. Returns 1 on success. */
int mc_set_mmap_threshold(size_t bytes);
#endif
