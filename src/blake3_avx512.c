/*
 * blake3_avx512.c - BLAKE3 hash_many on sixteen inputs at once with
 * AVX-512F (built with -mavx512f; called only after blake3.c has seen
 * AVX-512F on this CPU and the ZMM state enabled by the OS). Single blocks
 * use the SSE4.1 row form, and eight or fewer inputs the AVX2 path, which
 * every AVX-512 CPU also runs.
 *
 * The state is transposed as in the AVX2 file: register i holds state
 * word i of all sixteen inputs. With 32 vector registers the sixteen
 * state words stay in registers in plain C (no spills in G's chains, so
 * no assembly is needed), and the rotations are single instructions
 * (vprord). Each block's sixteen message words are loaded one input per
 * register and turned word-major by one 16x16 transpose; the chaining
 * values go back input-major by the same transpose at the end.
 */
#include "blake3_impl.h"

#include <immintrin.h>

#define MI_B3_ADD(a, b) _mm512_add_epi32(a, b)
#define MI_B3_XOR(a, b) _mm512_xor_si512(a, b)
#define MI_B3_ROT16(x)  _mm512_ror_epi32(x, 16)
#define MI_B3_ROT12(x)  _mm512_ror_epi32(x, 12)
#define MI_B3_ROT8(x)   _mm512_ror_epi32(x, 8)
#define MI_B3_ROT7(x)   _mm512_ror_epi32(x, 7)

/*
 * Transpose sixteen rows of sixteen 32-bit words in place: afterwards
 * v[w] holds word w of every row, row i in lane i.
 */
MI_B3_INLINE void
transpose16(__m512i v[16])
{
    __m512i u[16];
    int g, k;

    /*
     * Within each 128-bit lane L, rows 4g..4g+3: u[4g + k] holds word
     * 4L + k of those four rows.
     */
    for (g = 0; g < 4; g++) {
        __m512i ab_lo = _mm512_unpacklo_epi32(v[4 * g], v[4 * g + 1]);
        __m512i ab_hi = _mm512_unpackhi_epi32(v[4 * g], v[4 * g + 1]);
        __m512i cd_lo = _mm512_unpacklo_epi32(v[4 * g + 2], v[4 * g + 3]);
        __m512i cd_hi = _mm512_unpackhi_epi32(v[4 * g + 2], v[4 * g + 3]);

        u[4 * g] = _mm512_unpacklo_epi64(ab_lo, cd_lo);
        u[4 * g + 1] = _mm512_unpackhi_epi64(ab_lo, cd_lo);
        u[4 * g + 2] = _mm512_unpacklo_epi64(ab_hi, cd_hi);
        u[4 * g + 3] = _mm512_unpackhi_epi64(ab_hi, cd_hi);
    }
    /*
     * Word 4L + k of all rows: lane L of u[k], u[4 + k], u[8 + k] and
     * u[12 + k], gathered by a 4x4 transpose of 128-bit lanes.
     */
    for (k = 0; k < 4; k++) {
        __m512i a = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x44);
        __m512i b = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xEE);
        __m512i c = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x44);
        __m512i d = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xEE);

        v[k] = _mm512_shuffle_i32x4(a, c, 0x88);
        v[4 + k] = _mm512_shuffle_i32x4(a, c, 0xDD);
        v[8 + k] = _mm512_shuffle_i32x4(b, d, 0x88);
        v[12 + k] = _mm512_shuffle_i32x4(b, d, 0xDD);
    }
}

/* Message word w of the sixteen inputs' block at offset off, for every w. */
MI_B3_INLINE void
load_msg16(const uint8_t *const *in, size_t off, __m512i m[16])
{
    int i;

    for (i = 0; i < 16; i++) {
        m[i] = _mm512_loadu_si512((const void *)(in[i] + off));
        /* Two blocks ahead: inputs that come from DRAM arrive in time. */
        _mm_prefetch((const char *)(in[i] + off + 128), _MM_HINT_T0);
    }
    transpose16(m);
}

static void
hash16(const uint8_t *const *in, size_t blocks, const uint32_t key[8],
       uint64_t counter, int increment_counter, uint8_t flags,
       uint8_t flags_start, uint8_t flags_end, uint8_t *out)
{
    __m512i h[16], m[16], counter_lo, counter_hi;
    uint32_t lo[16], hi[16];
    uint8_t block_flags = flags | flags_start;
    size_t b;
    int i;

    for (i = 0; i < 16; i++) {
        uint64_t c = counter + (increment_counter ? (uint64_t)i : 0);

        lo[i] = (uint32_t)c;
        hi[i] = (uint32_t)(c >> 32);
    }
    counter_lo = _mm512_loadu_si512((const void *)lo);
    counter_hi = _mm512_loadu_si512((const void *)hi);
    for (i = 0; i < 8; i++) {
        h[i] = _mm512_set1_epi32((int)key[i]);
    }

    for (b = 0; b < blocks; b++) {
        __m512i v0 = h[0], v1 = h[1], v2 = h[2], v3 = h[3];
        __m512i v4 = h[4], v5 = h[5], v6 = h[6], v7 = h[7];
        __m512i v8 = _mm512_set1_epi32((int)mi_b3_iv[0]);
        __m512i v9 = _mm512_set1_epi32((int)mi_b3_iv[1]);
        __m512i v10 = _mm512_set1_epi32((int)mi_b3_iv[2]);
        __m512i v11 = _mm512_set1_epi32((int)mi_b3_iv[3]);
        __m512i v12 = counter_lo, v13 = counter_hi;
        __m512i v14 = _mm512_set1_epi32(MI_B3_BLOCK_LEN);
        __m512i v15;

        if (b + 1 == blocks) {
            block_flags |= flags_end;
        }
        v15 = _mm512_set1_epi32(block_flags);
        block_flags = flags;
        load_msg16(in, b * MI_B3_BLOCK_LEN, m);
        MI_B3_ROUNDS_WIDE(m);
        h[0] = _mm512_xor_si512(v0, v8);
        h[1] = _mm512_xor_si512(v1, v9);
        h[2] = _mm512_xor_si512(v2, v10);
        h[3] = _mm512_xor_si512(v3, v11);
        h[4] = _mm512_xor_si512(v4, v12);
        h[5] = _mm512_xor_si512(v5, v13);
        h[6] = _mm512_xor_si512(v6, v14);
        h[7] = _mm512_xor_si512(v7, v15);
    }

    /* Back to input-major: row i's first eight words are input i's CV. */
    for (i = 8; i < 16; i++) {
        h[i] = _mm512_setzero_si512();
    }
    transpose16(h);
    for (i = 0; i < 16; i++) {
        _mm256_storeu_si256((__m256i *)(out + i * MI_B3_OUT_LEN),
                            _mm512_castsi512_si256(h[i]));
    }
}

void
mi_b3_hash_many_avx512(const uint8_t *const *inputs, size_t n, size_t blocks,
                       const uint32_t key[8], uint64_t counter,
                       int increment_counter, uint8_t flags,
                       uint8_t flags_start, uint8_t flags_end, uint8_t *out)
{
    while (n >= 16) {
        hash16(inputs, blocks, key, counter, increment_counter, flags,
               flags_start, flags_end, out);
        if (increment_counter) {
            counter += 16;
        }
        inputs += 16;
        n -= 16;
        out += 16 * MI_B3_OUT_LEN;
    }

    /*
     * Nine to fifteen left: sixteen lanes with the spare ones repeating
     * the first input (their results are dropped), one pass instead of
     * two of the AVX2 path.
     */
    if (n > 8) {
        const uint8_t *lanes[16];
        uint8_t cvs[16 * MI_B3_OUT_LEN];
        size_t i;

        for (i = 0; i < 16; i++) {
            lanes[i] = inputs[i < n ? i : 0];
        }
        hash16(lanes, blocks, key, counter, increment_counter, flags,
               flags_start, flags_end, cvs);
        memcpy(out, cvs, n * MI_B3_OUT_LEN);
        return;
    }
    mi_b3_hash_many_avx2(inputs, n, blocks, key, counter, increment_counter,
                         flags, flags_start, flags_end, out);
}
