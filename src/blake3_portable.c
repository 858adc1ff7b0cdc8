/*
 * blake3_portable.c - the BLAKE3 compression function in plain C, and a
 * hash_many that runs it on one input after another. It is the reference
 * every SIMD file is tested against and the fallback on any CPU.
 *
 * State layout: v0..v7 the chaining value, v8..v11 the first four IV
 * words, v12..v15 the counter's low and high words, the block length and
 * the flags. Seven rounds (MI_B3_ROUNDS), each a column step then a
 * diagonal step, with the message words in mi_b3_schedule's order.
 */
#include "blake3_impl.h"

static inline uint32_t
rotr32(uint32_t w, unsigned c)
{
    return (w >> c) | (w << (32 - c));
}

#define MI_B3_ADD(a, b) ((a) + (b))
#define MI_B3_XOR(a, b) ((a) ^ (b))
#define MI_B3_ROT16(x)  rotr32(x, 16)
#define MI_B3_ROT12(x)  rotr32(x, 12)
#define MI_B3_ROT8(x)   rotr32(x, 8)
#define MI_B3_ROT7(x)   rotr32(x, 7)

/* Run the seven rounds; out gets the state before the feed-forward. */
MI_B3_INLINE void
compress_core(uint32_t out[16], const uint32_t cv[8], const uint8_t block[64],
              uint8_t block_len, uint64_t counter, uint8_t flags)
{
    uint32_t m[16];
    uint32_t v0 = cv[0], v1 = cv[1], v2 = cv[2], v3 = cv[3];
    uint32_t v4 = cv[4], v5 = cv[5], v6 = cv[6], v7 = cv[7];
    uint32_t v8 = mi_b3_iv[0], v9 = mi_b3_iv[1];
    uint32_t v10 = mi_b3_iv[2], v11 = mi_b3_iv[3];
    uint32_t v12 = (uint32_t)counter, v13 = (uint32_t)(counter >> 32);
    uint32_t v14 = block_len, v15 = flags;
    int i;

    for (i = 0; i < 16; i++) {
        m[i] = mi_b3_load32(block + 4 * i);
    }
    MI_B3_ROUNDS(m);
    out[0] = v0;
    out[1] = v1;
    out[2] = v2;
    out[3] = v3;
    out[4] = v4;
    out[5] = v5;
    out[6] = v6;
    out[7] = v7;
    out[8] = v8;
    out[9] = v9;
    out[10] = v10;
    out[11] = v11;
    out[12] = v12;
    out[13] = v13;
    out[14] = v14;
    out[15] = v15;
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
