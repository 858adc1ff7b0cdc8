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
/* The widest hash_many of any implementation here (AVX-512: 16 lanes). */
#define MI_B3_MAX_DEGREE 16

/*
 * Defined here, not in one .c file, so that each implementation sees the
 * values at compile time: with the rounds unrolled, every message index
 * is a constant and the message words can stay in registers.
 */
static const uint32_t mi_b3_iv[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372,
                                     0xA54FF53A, 0x510E527F, 0x9B05688C,
                                     0x1F83D9AB, 0x5BE0CD19};

/* Round r takes message word mi_b3_schedule[r][i] where round 0 takes i. */
static const uint8_t mi_b3_schedule[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

/*
 * The seven rounds, on state variables v0..v15 declared by the caller and
 * message words m[0..15], with the caller's MI_B3_ADD, MI_B3_XOR and
 * MI_B3_ROT16/12/8/7 (scalar words, or vectors of one word of several
 * inputs). Named variables rather than an array, and literal message
 * indices, so that the compiler keeps the state in registers at -O2.
 */
#define MI_B3_G(a, b, c, d, x, y)                                              \
    do {                                                                       \
        a = MI_B3_ADD(MI_B3_ADD(a, b), x);                                     \
        d = MI_B3_ROT16(MI_B3_XOR(d, a));                                      \
        c = MI_B3_ADD(c, d);                                                   \
        b = MI_B3_ROT12(MI_B3_XOR(b, c));                                      \
        a = MI_B3_ADD(MI_B3_ADD(a, b), y);                                     \
        d = MI_B3_ROT8(MI_B3_XOR(d, a));                                       \
        c = MI_B3_ADD(c, d);                                                   \
        b = MI_B3_ROT7(MI_B3_XOR(b, c));                                       \
    } while (0)

#define MI_B3_ROUND(m, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12,  \
                    s13, s14, s15)                                             \
    do {                                                                       \
        MI_B3_G(v0, v4, v8, v12, m[s0], m[s1]);                                \
        MI_B3_G(v1, v5, v9, v13, m[s2], m[s3]);                                \
        MI_B3_G(v2, v6, v10, v14, m[s4], m[s5]);                               \
        MI_B3_G(v3, v7, v11, v15, m[s6], m[s7]);                               \
        MI_B3_G(v0, v5, v10, v15, m[s8], m[s9]);                               \
        MI_B3_G(v1, v6, v11, v12, m[s10], m[s11]);                             \
        MI_B3_G(v2, v7, v8, v13, m[s12], m[s13]);                              \
        MI_B3_G(v3, v4, v9, v14, m[s14], m[s15]);                              \
    } while (0)

/*
 * The same round with the four G's of each step interleaved: one line of
 * work for the four columns (or diagonals) at a time, so vector code has
 * four independent chains in flight with few temporaries.
 */
#define MI_B3_G4(a0, b0, c0, d0, a1, b1, c1, d1, a2, b2, c2, d2, a3, b3, c3,   \
                 d3, x0, x1, x2, x3, y0, y1, y2, y3)                           \
    do {                                                                       \
        a0 = MI_B3_ADD(MI_B3_ADD(a0, b0), x0);                                 \
        a1 = MI_B3_ADD(MI_B3_ADD(a1, b1), x1);                                 \
        a2 = MI_B3_ADD(MI_B3_ADD(a2, b2), x2);                                 \
        a3 = MI_B3_ADD(MI_B3_ADD(a3, b3), x3);                                 \
        d0 = MI_B3_ROT16(MI_B3_XOR(d0, a0));                                   \
        d1 = MI_B3_ROT16(MI_B3_XOR(d1, a1));                                   \
        d2 = MI_B3_ROT16(MI_B3_XOR(d2, a2));                                   \
        d3 = MI_B3_ROT16(MI_B3_XOR(d3, a3));                                   \
        c0 = MI_B3_ADD(c0, d0);                                                \
        c1 = MI_B3_ADD(c1, d1);                                                \
        c2 = MI_B3_ADD(c2, d2);                                                \
        c3 = MI_B3_ADD(c3, d3);                                                \
        b0 = MI_B3_ROT12(MI_B3_XOR(b0, c0));                                   \
        b1 = MI_B3_ROT12(MI_B3_XOR(b1, c1));                                   \
        b2 = MI_B3_ROT12(MI_B3_XOR(b2, c2));                                   \
        b3 = MI_B3_ROT12(MI_B3_XOR(b3, c3));                                   \
        a0 = MI_B3_ADD(MI_B3_ADD(a0, b0), y0);                                 \
        a1 = MI_B3_ADD(MI_B3_ADD(a1, b1), y1);                                 \
        a2 = MI_B3_ADD(MI_B3_ADD(a2, b2), y2);                                 \
        a3 = MI_B3_ADD(MI_B3_ADD(a3, b3), y3);                                 \
        d0 = MI_B3_ROT8(MI_B3_XOR(d0, a0));                                    \
        d1 = MI_B3_ROT8(MI_B3_XOR(d1, a1));                                    \
        d2 = MI_B3_ROT8(MI_B3_XOR(d2, a2));                                    \
        d3 = MI_B3_ROT8(MI_B3_XOR(d3, a3));                                    \
        c0 = MI_B3_ADD(c0, d0);                                                \
        c1 = MI_B3_ADD(c1, d1);                                                \
        c2 = MI_B3_ADD(c2, d2);                                                \
        c3 = MI_B3_ADD(c3, d3);                                                \
        b0 = MI_B3_ROT7(MI_B3_XOR(b0, c0));                                    \
        b1 = MI_B3_ROT7(MI_B3_XOR(b1, c1));                                    \
        b2 = MI_B3_ROT7(MI_B3_XOR(b2, c2));                                    \
        b3 = MI_B3_ROT7(MI_B3_XOR(b3, c3));                                    \
    } while (0)

#define MI_B3_ROUND_WIDE(m, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11,  \
                         s12, s13, s14, s15)                                   \
    do {                                                                       \
        MI_B3_G4(v0, v4, v8, v12, v1, v5, v9, v13, v2, v6, v10, v14, v3, v7,   \
                 v11, v15, m[s0], m[s2], m[s4], m[s6], m[s1], m[s3], m[s5],    \
                 m[s7]);                                                       \
        MI_B3_G4(v0, v5, v10, v15, v1, v6, v11, v12, v2, v7, v8, v13, v3, v4,  \
                 v9, v14, m[s8], m[s10], m[s12], m[s14], m[s9], m[s11],        \
                 m[s13], m[s15]);                                              \
    } while (0)

/* The rows of mi_b3_schedule, written out. */
#define MI_B3_ROUNDS(m)      MI_B3_ROUNDS_WITH(MI_B3_ROUND, m)
#define MI_B3_ROUNDS_WIDE(m) MI_B3_ROUNDS_WITH(MI_B3_ROUND_WIDE, m)
#define MI_B3_ROUNDS_WITH(MI_B3_ROUND, m)                                      \
    do {                                                                       \
        MI_B3_ROUND(m, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);  \
        MI_B3_ROUND(m, 2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8);  \
        MI_B3_ROUND(m, 3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1);  \
        MI_B3_ROUND(m, 10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6);  \
        MI_B3_ROUND(m, 12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4);  \
        MI_B3_ROUND(m, 9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7);  \
        MI_B3_ROUND(m, 11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13);  \
    } while (0)

/* For the hot inner functions, which -O2 might otherwise leave calls. */
#define MI_B3_INLINE static inline __attribute__((always_inline))

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

/* blake3_avx512.c: only call when the CPU has AVX-512F (and so AVX2). */
void mi_b3_hash_many_avx512(const uint8_t *const *inputs, size_t n,
                            size_t blocks, const uint32_t key[8],
                            uint64_t counter, int increment_counter,
                            uint8_t flags, uint8_t flags_start,
                            uint8_t flags_end, uint8_t *out);

/* blake3.c: the implementation in use (chosen at first use). */
const struct mi_b3_ops *mi_b3_ops(void);
/*
 * The table of the implementation called name ("portable", "sse41",
 * "avx2", "avx512"), or NULL when unknown or this CPU cannot run it.
 */
const struct mi_b3_ops *mi_b3_ops_named(const char *name);
/*
 * For tests: use the implementation called name from now on, in this
 * process. 0, or MITHRIL_EINVAL when unknown or unsupported here.
 */
int mi_b3_force_impl(const char *name);

#endif /* MITHRIL_BLAKE3_IMPL_H */
