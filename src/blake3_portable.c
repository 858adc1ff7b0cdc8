/*
 * blake3_portable.c - the BLAKE3 compression function in plain C, and a
 * hash_many that runs it on one input after another. It is the reference
 * every SIMD file is tested against and the fallback on any CPU.
 *
 * State layout: v[0..3] the chaining value's first half, v[4..7] its
 * second half, v[8..11] the first four IV words, v[12..15] the counter's
 * low and high words, the block length and the flags. Seven rounds, each a
 * column step then a diagonal step, with the message words taken in the
 * order mi_b3_schedule gives for that round.
 */
#include "blake3_impl.h"

const uint32_t mi_b3_iv[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
                              0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};

/* Round r uses message word schedule[r][i] where round 0 uses word i. */
const uint8_t mi_b3_schedule[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

static inline uint32_t
rotr32(uint32_t w, unsigned c)
{
    return (w >> c) | (w << (32 - c));
}

static inline void
g(uint32_t *v, int a, int b, int c, int d, uint32_t x, uint32_t y)
{
    v[a] = v[a] + v[b] + x;
    v[d] = rotr32(v[d] ^ v[a], 16);
    v[c] = v[c] + v[d];
    v[b] = rotr32(v[b] ^ v[c], 12);
    v[a] = v[a] + v[b] + y;
    v[d] = rotr32(v[d] ^ v[a], 8);
    v[c] = v[c] + v[d];
    v[b] = rotr32(v[b] ^ v[c], 7);
}

static inline void
round_fn(uint32_t v[16], const uint32_t m[16], const uint8_t *s)
{
    g(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
    g(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
    g(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
    g(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
    g(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
    g(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
    g(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
    g(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
}

/* Run the seven rounds; v is left un-finalized (no feed-forward). */
static inline void
compress_core(uint32_t v[16], const uint32_t cv[8], const uint8_t block[64],
              uint8_t block_len, uint64_t counter, uint8_t flags)
{
    uint32_t m[16];
    int i;

    for (i = 0; i < 16; i++) {
        m[i] = mi_b3_load32(block + 4 * i);
    }
    for (i = 0; i < 8; i++) {
        v[i] = cv[i];
    }
    v[8] = mi_b3_iv[0];
    v[9] = mi_b3_iv[1];
    v[10] = mi_b3_iv[2];
    v[11] = mi_b3_iv[3];
    v[12] = (uint32_t)counter;
    v[13] = (uint32_t)(counter >> 32);
    v[14] = block_len;
    v[15] = flags;
    for (i = 0; i < 7; i++) {
        round_fn(v, m, mi_b3_schedule[i]);
    }
}

void
mi_b3_compress_in_place_portable(uint32_t cv[8], const uint8_t block[64],
                                 uint8_t block_len, uint64_t counter,
                                 uint8_t flags)
{
    uint32_t v[16];
    int i;

    compress_core(v, cv, block, block_len, counter, flags);
    for (i = 0; i < 8; i++) {
        cv[i] = v[i] ^ v[i + 8];
    }
}

void
mi_b3_compress_xof_portable(const uint32_t cv[8], const uint8_t block[64],
                            uint8_t block_len, uint64_t counter, uint8_t flags,
                            uint8_t out[64])
{
    uint32_t v[16];
    int i;

    compress_core(v, cv, block, block_len, counter, flags);
    for (i = 0; i < 8; i++) {
        mi_b3_store32(out + 4 * i, v[i] ^ v[i + 8]);
        mi_b3_store32(out + 32 + 4 * i, v[i + 8] ^ cv[i]);
    }
}

/* One input of `blocks` blocks into one chaining value at out. */
static void
hash_one(const uint8_t *input, size_t blocks, const uint32_t key[8],
         uint64_t counter, uint8_t flags, uint8_t flags_start,
         uint8_t flags_end, uint8_t out[32])
{
    uint32_t cv[8];
    uint8_t block_flags = flags | flags_start;

    memcpy(cv, key, sizeof(cv));
    while (blocks > 0) {
        if (blocks == 1) {
            block_flags |= flags_end;
        }
        mi_b3_compress_in_place_portable(cv, input, MI_B3_BLOCK_LEN, counter,
                                         block_flags);
        input += MI_B3_BLOCK_LEN;
        blocks--;
        block_flags = flags;
    }
    mi_b3_store_cv(out, cv);
}

void
mi_b3_hash_many_portable(const uint8_t *const *inputs, size_t n, size_t blocks,
                         const uint32_t key[8], uint64_t counter,
                         int increment_counter, uint8_t flags,
                         uint8_t flags_start, uint8_t flags_end, uint8_t *out)
{
    size_t i;

    for (i = 0; i < n; i++) {
        hash_one(inputs[i], blocks, key, counter, flags, flags_start, flags_end,
                 out + i * MI_B3_OUT_LEN);
        if (increment_counter) {
            counter++;
        }
    }
}
