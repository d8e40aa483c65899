#include "CSystem.h"

#include <malloc.h>

int mc_set_mmap_threshold(size_t bytes) {
    return mallopt(M_MMAP_THRESHOLD, (int)bytes);
}
