/*
 * blake3_impl.h - what the BLAKE3 files share and nothing else includes
 * (tests and benchmarks excepted): the constants of the specification, the
 * table of one compression-function implementation, and the hook that
 * forces an implementation for tests.
 *
 * Every implementation provides the same three operations, with the same
 * results bit for bit:
 *  - compress_in_place: one block into a chaining value;
 *  - compress_xof: one block into a full 64-byte output block;
 *  - hash_many: n independent inputs of `blocks` blocks each (whole chunks,
 *    or 64-byte parent blocks) into n chaining values, several at once.
 */
#ifndef MITHRIL_BLAKE3_IMPL_H
#define MITHRIL_BLAKE3_IMPL_H

#include "mithril/mithril.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Domain flags of the specification. */
enum {
    MI_B3_CHUNK_START = 1 << 0,
    MI_B3_CHUNK_END = 1 << 1,
    MI_B3_PARENT = 1 << 2,
    MI_B3_ROOT = 1 << 3,
    MI_B3_KEYED_HASH = 1 << 4,
    MI_B3_DERIVE_KEY_CONTEXT = 1 << 5,
    MI_B3_DERIVE_KEY_MATERIAL = 1 << 6,
};

#define MI_B3_BLOCK_LEN MITHRIL_BLAKE3_BLOCK_LEN
#define MI_B3_CHUNK_LEN MITHRIL_BLAKE3_CHUNK_LEN
#define MI_B3_OUT_LEN   MITHRIL_BLAKE3_OUT_LEN
/* The widest hash_many of any implementation here (AVX2: 8 lanes). */
#define MI_B3_MAX_DEGREE 8

extern const uint32_t mi_b3_iv[8];
/* The message word order of each of the 7 rounds. */
extern const uint8_t mi_b3_schedule[7][16];

static inline uint32_t
mi_b3_load32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline void
mi_b3_store32(uint8_t *p, uint32_t w)
{
    p[0] = (uint8_t)w;
    p[1] = (uint8_t)(w >> 8);
    p[2] = (uint8_t)(w >> 16);
    p[3] = (uint8_t)(w >> 24);
}

static inline void
mi_b3_store_cv(uint8_t out[32], const uint32_t cv[8])
{
    int i;

    for (i = 0; i < 8; i++) {
        mi_b3_store32(out + 4 * i, cv[i]);
    }
}

typedef void (*mi_b3_compress_in_place_fn)(uint32_t cv[8],
                                           const uint8_t block[64],
                                           uint8_t block_len, uint64_t counter,
                                           uint8_t flags);
typedef void (*mi_b3_compress_xof_fn)(const uint32_t cv[8],
                                      const uint8_t block[64],
                                      uint8_t block_len, uint64_t counter,
                                      uint8_t flags, uint8_t out[64]);
/*
 * Hash n inputs of `blocks` full blocks each, all under key. Input i uses
 * counter + i when increment_counter, else counter. The first block gets
 * flags | flags_start, the last flags | flags_end. Writes n * 32 bytes.
 */
typedef void (*mi_b3_hash_many_fn)(const uint8_t *const *inputs, size_t n,
                                   size_t blocks, const uint32_t key[8],
                                   uint64_t counter, int increment_counter,
                                   uint8_t flags, uint8_t flags_start,
                                   uint8_t flags_end, uint8_t *out);

struct mi_b3_ops {
    const char *name;
    size_t degree; /* inputs hash_many takes at once, at best */
    mi_b3_compress_in_place_fn compress_in_place;
    mi_b3_compress_xof_fn compress_xof;
    mi_b3_hash_many_fn hash_many;
};

/* blake3_portable.c */
void mi_b3_compress_in_place_portable(uint32_t cv[8], const uint8_t block[64],
                                      uint8_t block_len, uint64_t counter,
                                      uint8_t flags);
void mi_b3_compress_xof_portable(const uint32_t cv[8], const uint8_t block[64],
                                 uint8_t block_len, uint64_t counter,
                                 uint8_t flags, uint8_t out[64]);
void mi_b3_hash_many_portable(const uint8_t *const *inputs, size_t n,
                              size_t blocks, const uint32_t key[8],
                              uint64_t counter, int increment_counter,
                              uint8_t flags, uint8_t flags_start,
                              uint8_t flags_end, uint8_t *out);

/* blake3_sse41.c: only call when the CPU has SSE4.1. */
void mi_b3_compress_in_place_sse41(uint32_t cv[8], const uint8_t block[64],
                                   uint8_t block_len, uint64_t counter,
                                   uint8_t flags);
void mi_b3_compress_xof_sse41(const uint32_t cv[8], const uint8_t block[64],
                              uint8_t block_len, uint64_t counter,
                              uint8_t flags, uint8_t out[64]);
void mi_b3_hash_many_sse41(const uint8_t *const *inputs, size_t n,
                           size_t blocks, const uint32_t key[8],
                           uint64_t counter, int increment_counter,
                           uint8_t flags, uint8_t flags_start,
                           uint8_t flags_end, uint8_t *out);

/* blake3_avx2.c: only call when the CPU has AVX2 (and so SSE4.1). */
void mi_b3_hash_many_avx2(const uint8_t *const *inputs, size_t n, size_t blocks,
                          const uint32_t key[8], uint64_t counter,
                          int increment_counter, uint8_t flags,
                          uint8_t flags_start, uint8_t flags_end, uint8_t *out);

/* blake3.c: the implementation in use (chosen at first use). */
const struct mi_b3_ops *mi_b3_ops(void);
/*
 * The table of the implementation called name ("portable", "sse41",
 * "avx2"), or NULL when unknown or this CPU cannot run it.
 */
const struct mi_b3_ops *mi_b3_ops_named(const char *name);
/*
 * For tests: use the implementation called name from now on, in this
 * process. 0, or MITHRIL_EINVAL when unknown or unsupported here.
 */
int mi_b3_force_impl(const char *name);

#endif /* MITHRIL_BLAKE3_IMPL_H */
