/*
 * blake3_sse41.c - BLAKE3 with SSE4.1 (built with -msse4.1; called only
 * after blake3.c has seen SSE4.1 on this CPU).
 *
 * Two shapes of the same compression function:
 *  - one block at a time, the 4x4 state held as four rows in four
 *    registers: a column step works on whole rows, then rows 1..3 are
 *    rotated by one, two and three lanes so that the diagonals line up as
 *    columns, and rotated back after the diagonal step; the message
 *    words move into each round's order by a few shuffles (permute_msg);
 *  - four inputs at once (hash_many), "transposed": register i holds
 *    state word i of all four inputs, so every step of G is one
 *    instruction for the four; message words are transposed the same way
 *    as they are loaded, and no shuffles are needed between rounds.
 * Rotations by 16 and 8 bits are byte shuffles; by 12 and 7, shift pairs.
 */
#include "blake3_impl.h"

#include <immintrin.h>

static inline __m128i
loadu(const uint8_t *p)
{
    return _mm_loadu_si128((const __m128i *)p);
}

static inline void
storeu(uint8_t *p, __m128i v)
{
    _mm_storeu_si128((__m128i *)p, v);
}

static inline __m128i
vadd(__m128i a, __m128i b)
{
    return _mm_add_epi32(a, b);
}

static inline __m128i
vxor(__m128i a, __m128i b)
{
    return _mm_xor_si128(a, b);
}

static inline __m128i
rot16(__m128i x)
{
    return _mm_shuffle_epi8(
        x, _mm_set_epi8(13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2));
}

static inline __m128i
rot12(__m128i x)
{
    return _mm_or_si128(_mm_srli_epi32(x, 12), _mm_slli_epi32(x, 20));
}

static inline __m128i
rot8(__m128i x)
{
    return _mm_shuffle_epi8(
        x, _mm_set_epi8(12, 15, 14, 13, 8, 11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1));
}

static inline __m128i
rot7(__m128i x)
{
    return _mm_or_si128(_mm_srli_epi32(x, 7), _mm_slli_epi32(x, 25));
}

/* ---- one block: the rows form ---- */

/* G on four columns at once; mx and my hold each column's two words. */
static inline void
g_rows(__m128i *r0, __m128i *r1, __m128i *r2, __m128i *r3, __m128i mx,
       __m128i my)
{
    *r0 = vadd(vadd(*r0, *r1), mx);
    *r3 = rot16(vxor(*r3, *r0));
    *r2 = vadd(*r2, *r3);
    *r1 = rot12(vxor(*r1, *r2));
    *r0 = vadd(vadd(*r0, *r1), my);
    *r3 = rot8(vxor(*r3, *r0));
    *r2 = vadd(*r2, *r3);
    *r1 = rot7(vxor(*r1, *r2));
}

/* Two words of a and two of b, as _mm_shuffle_ps picks them. */
#define SHUF2(a, b, imm)                                                       \
    _mm_castps_si128(                                                          \
        _mm_shuffle_ps(_mm_castsi128_ps(a), _mm_castsi128_ps(b), (imm)))

/*
 * The message words of the next round from this round's. A round takes
 * its words as four vectors: x and y of the column step, z and w of the
 * diagonal step, that is words (0,2,4,6), (1,3,5,7), (8,10,12,14) and
 * (9,11,13,15) in the round's order. Each round's order is the last one's
 * under the fixed permutation of the specification, which moves
 * x' = (x1, y1, y3, x2), y' = (x3, z1, x0, w2), z' = (y0, z2, w0, w3),
 * w' = (w1, y2, z3, z0).
 */
static inline void
permute_msg(__m128i *x, __m128i *y, __m128i *z, __m128i *w)
{
    __m128i nx, ny, nz, nw, t;

    t = SHUF2(*x, *y, _MM_SHUFFLE(3, 1, 2, 1)); /* x1 x2 y1 y3 */
    nx = _mm_shuffle_epi32(t, _MM_SHUFFLE(1, 3, 2, 0));
    t = SHUF2(*x, *w, _MM_SHUFFLE(2, 2, 0, 3));        /* x3 x0 w2 w2 */
    t = _mm_shuffle_epi32(t, _MM_SHUFFLE(3, 1, 1, 0)); /* x3 .. x0 w2 */
    ny = _mm_blend_epi16(t, *z, 0x0C);
    t = SHUF2(*z, *w, _MM_SHUFFLE(3, 0, 2, 0)); /* z0 z2 w0 w3 */
    nz = _mm_blend_epi16(t, *y, 0x03);
    t = SHUF2(*w, *y, _MM_SHUFFLE(2, 0, 0, 1)); /* w1 w0 y0 y2 */
    nw = SHUF2(t, *z, _MM_SHUFFLE(0, 3, 3, 0));
    *x = nx;
    *y = ny;
    *z = nz;
    *w = nw;
}

static inline void
compress_rows(__m128i rows[4], const uint32_t cv[8], const uint8_t block[64],
              uint8_t block_len, uint64_t counter, uint8_t flags)
{
    __m128i r0 = loadu((const uint8_t *)cv);
    __m128i r1 = loadu((const uint8_t *)(cv + 4));
    __m128i r2 = loadu((const uint8_t *)mi_b3_iv);
    __m128i r3 =
        _mm_setr_epi32((int)(uint32_t)counter, (int)(uint32_t)(counter >> 32),
                       block_len, flags);
    __m128i q0 = loadu(block), q1 = loadu(block + 16);
    __m128i q2 = loadu(block + 32), q3 = loadu(block + 48);
    __m128i x = SHUF2(q0, q1, _MM_SHUFFLE(2, 0, 2, 0));
    __m128i y = SHUF2(q0, q1, _MM_SHUFFLE(3, 1, 3, 1));
    __m128i z = SHUF2(q2, q3, _MM_SHUFFLE(2, 0, 2, 0));
    __m128i w = SHUF2(q2, q3, _MM_SHUFFLE(3, 1, 3, 1));
    int r;

    for (r = 0; r < 7; r++) {
        if (r > 0) {
            permute_msg(&x, &y, &z, &w);
        }
        g_rows(&r0, &r1, &r2, &r3, x, y);
        /* Line the diagonals up as columns. */
        r1 = _mm_shuffle_epi32(r1, 0x39);
        r2 = _mm_shuffle_epi32(r2, 0x4E);
        r3 = _mm_shuffle_epi32(r3, 0x93);
        g_rows(&r0, &r1, &r2, &r3, z, w);
        r1 = _mm_shuffle_epi32(r1, 0x93);
        r2 = _mm_shuffle_epi32(r2, 0x4E);
        r3 = _mm_shuffle_epi32(r3, 0x39);
    }
    rows[0] = r0;
    rows[1] = r1;
    rows[2] = r2;
    rows[3] = r3;
}

void
mi_b3_compress_in_place_sse41(uint32_t cv[8], const uint8_t block[64],
                              uint8_t block_len, uint64_t counter,
                              uint8_t flags)
{
    __m128i rows[4];

    compress_rows(rows, cv, block, block_len, counter, flags);
    storeu((uint8_t *)cv, vxor(rows[0], rows[2]));
    storeu((uint8_t *)(cv + 4), vxor(rows[1], rows[3]));
}

void
mi_b3_compress_xof_sse41(const uint32_t cv[8], const uint8_t block[64],
                         uint8_t block_len, uint64_t counter, uint8_t flags,
                         uint8_t out[64])
{
    __m128i rows[4];

    compress_rows(rows, cv, block, block_len, counter, flags);
    storeu(out, vxor(rows[0], rows[2]));
    storeu(out + 16, vxor(rows[1], rows[3]));
    storeu(out + 32, vxor(rows[2], loadu((const uint8_t *)cv)));
    storeu(out + 48, vxor(rows[3], loadu((const uint8_t *)(cv + 4))));
}

/* ---- four inputs at once: the transposed form ---- */

/* Transpose four rows of four words in place. */
MI_B3_INLINE void
transpose4(__m128i v[4])
{
    __m128i ab01 = _mm_unpacklo_epi32(v[0], v[1]);
    __m128i ab23 = _mm_unpackhi_epi32(v[0], v[1]);
    __m128i cd01 = _mm_unpacklo_epi32(v[2], v[3]);
    __m128i cd23 = _mm_unpackhi_epi32(v[2], v[3]);

    v[0] = _mm_unpacklo_epi64(ab01, cd01);
    v[1] = _mm_unpackhi_epi64(ab01, cd01);
    v[2] = _mm_unpacklo_epi64(ab23, cd23);
    v[3] = _mm_unpackhi_epi64(ab23, cd23);
}

/* Message word w of the four inputs' block at offset off, for every w. */
MI_B3_INLINE void
load_msg4(const uint8_t *const *in, size_t off, __m128i m[16])
{
    int q, j;

    /* Four blocks ahead, for inputs that come from DRAM. */
    for (j = 0; j < 4; j++) {
        _mm_prefetch((const char *)(in[j] + off + 256), _MM_HINT_T0);
    }
    for (q = 0; q < 4; q++) {
        for (j = 0; j < 4; j++) {
            m[4 * q + j] = loadu(in[j] + off + 16 * q);
        }
        transpose4(&m[4 * q]);
    }
}

#define MI_B3_ADD(a, b) vadd(a, b)
#define MI_B3_XOR(a, b) vxor(a, b)
#define MI_B3_ROT16(x)  rot16(x)
#define MI_B3_ROT12(x)  rot12(x)
#define MI_B3_ROT8(x)   rot8(x)
#define MI_B3_ROT7(x)   rot7(x)

static void
hash4(const uint8_t *const *in, size_t blocks, const uint32_t key[8],
      uint64_t counter, int increment_counter, uint8_t flags,
      uint8_t flags_start, uint8_t flags_end, uint8_t *out)
{
    __m128i h[8], m[16];
    __m128i v0, v1, v2, v3, v4, v5, v6, v7;
    __m128i v8, v9, v10, v11, v12, v13, v14, v15;
    uint64_t c[4];
    uint8_t block_flags = flags | flags_start;
    __m128i vlo, vhi;
    size_t b;
    int i;

    for (i = 0; i < 4; i++) {
        c[i] = counter + (increment_counter ? (uint64_t)i : 0);
    }
    vlo = _mm_setr_epi32((int)(uint32_t)c[0], (int)(uint32_t)c[1],
                         (int)(uint32_t)c[2], (int)(uint32_t)c[3]);
    vhi = _mm_setr_epi32(
        (int)(uint32_t)(c[0] >> 32), (int)(uint32_t)(c[1] >> 32),
        (int)(uint32_t)(c[2] >> 32), (int)(uint32_t)(c[3] >> 32));
    for (i = 0; i < 8; i++) {
        h[i] = _mm_set1_epi32((int)key[i]);
    }
    for (b = 0; b < blocks; b++) {
        if (b + 1 == blocks) {
            block_flags |= flags_end;
        }
        load_msg4(in, b * MI_B3_BLOCK_LEN, m);
        v0 = h[0];
        v1 = h[1];
        v2 = h[2];
        v3 = h[3];
        v4 = h[4];
        v5 = h[5];
        v6 = h[6];
        v7 = h[7];
        v8 = _mm_set1_epi32((int)mi_b3_iv[0]);
        v9 = _mm_set1_epi32((int)mi_b3_iv[1]);
        v10 = _mm_set1_epi32((int)mi_b3_iv[2]);
        v11 = _mm_set1_epi32((int)mi_b3_iv[3]);
        v12 = vlo;
        v13 = vhi;
        v14 = _mm_set1_epi32(MI_B3_BLOCK_LEN);
        v15 = _mm_set1_epi32(block_flags);
        MI_B3_ROUNDS_WIDE(m);
        h[0] = vxor(v0, v8);
        h[1] = vxor(v1, v9);
        h[2] = vxor(v2, v10);
        h[3] = vxor(v3, v11);
        h[4] = vxor(v4, v12);
        h[5] = vxor(v5, v13);
        h[6] = vxor(v6, v14);
        h[7] = vxor(v7, v15);
        block_flags = flags;
    }

    /* Back from word-major to input-major: 32 bytes per input. */
    transpose4(&h[0]);
    transpose4(&h[4]);
    for (i = 0; i < 4; i++) {
        storeu(out + i * MI_B3_OUT_LEN, h[i]);
        storeu(out + i * MI_B3_OUT_LEN + 16, h[4 + i]);
    }
}

void
mi_b3_hash_many_sse41(const uint8_t *const *inputs, size_t n, size_t blocks,
                      const uint32_t key[8], uint64_t counter,
                      int increment_counter, uint8_t flags, uint8_t flags_start,
                      uint8_t flags_end, uint8_t *out)
{
    while (n >= 4) {
        hash4(inputs, blocks, key, counter, increment_counter, flags,
              flags_start, flags_end, out);
        if (increment_counter) {
            counter += 4;
        }
        inputs += 4;
        n -= 4;
        out += 4 * MI_B3_OUT_LEN;
    }

    /* The rest one at a time, a block at a time. */
    while (n > 0) {
        uint32_t cv[8];
        uint8_t block_flags = flags | flags_start;
        size_t b;

        memcpy(cv, key, sizeof(cv));
        for (b = 0; b < blocks; b++) {
            if (b + 1 == blocks) {
                block_flags |= flags_end;
            }
            mi_b3_compress_in_place_sse41(cv, inputs[0] + b * MI_B3_BLOCK_LEN,
                                          MI_B3_BLOCK_LEN, counter,
                                          block_flags);
            block_flags = flags;
        }
        mi_b3_store_cv(out, cv);
        if (increment_counter) {
            counter++;
        }
        inputs++;
        n--;
        out += MI_B3_OUT_LEN;
    }
}
