/*
 * blake3_avx2.c - BLAKE3 hash_many on eight inputs at once with AVX2
 * (built with -mavx2; called only after blake3.c has seen AVX2 on this
 * CPU and OS). Single blocks use the SSE4.1 row form, which every AVX2
 * CPU also runs.
 *
 * The state is transposed: register i holds state word i of all eight
 * inputs, so each step of G is one instruction for the eight. On x86-64
 * the rounds are inline assembly (see below for why), and the blocks of
 * a chunk run back to back in one asm loop with the chaining values kept
 * in registers. Message words are transposed as they are loaded
 * (load_msg8), a chunk's worth ahead of the rounds; the chaining values
 * go back input-major by one 8x8 transpose at the end. Two to seven inputs
 * left over still take the eight-lane path; a single one goes to SSE4.1.
 */
#include "blake3_impl.h"

#include <immintrin.h>

static inline __m256i
loadu(const uint8_t *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

/* 16 bytes at lo in the low half, 16 bytes at hi in the high half. */
static inline __m256i
load2x128(const uint8_t *lo, const uint8_t *hi)
{
    return _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)lo)),
        _mm_loadu_si128((const __m128i *)hi), 1);
}

static inline void
storeu(uint8_t *p, __m256i v)
{
    _mm256_storeu_si256((__m256i *)p, v);
}

static inline __m256i
vadd(__m256i a, __m256i b)
{
    return _mm256_add_epi32(a, b);
}

static inline __m256i
vxor(__m256i a, __m256i b)
{
    return _mm256_xor_si256(a, b);
}

static const uint8_t rot16_mask[32] __attribute__((aligned(32))) = {
    2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13,
    2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13};
static const uint8_t rot8_mask[32] __attribute__((aligned(32))) = {
    1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12,
    1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12};

static inline __m256i
rot16(__m256i x)
{
    return _mm256_shuffle_epi8(x, _mm256_set_epi8(13, 12, 15, 14, 9, 8, 11, 10,
                                                  5, 4, 7, 6, 1, 0, 3, 2, 13,
                                                  12, 15, 14, 9, 8, 11, 10, 5,
                                                  4, 7, 6, 1, 0, 3, 2));
}

static inline __m256i
rot12(__m256i x)
{
    return _mm256_or_si256(_mm256_srli_epi32(x, 12), _mm256_slli_epi32(x, 20));
}

static inline __m256i
rot8(__m256i x)
{
    return _mm256_shuffle_epi8(x, _mm256_set_epi8(12, 15, 14, 13, 8, 11, 10, 9,
                                                  4, 7, 6, 5, 0, 3, 2, 1, 12,
                                                  15, 14, 13, 8, 11, 10, 9, 4,
                                                  7, 6, 5, 0, 3, 2, 1));
}

static inline __m256i
rot7(__m256i x)
{
    return _mm256_or_si256(_mm256_srli_epi32(x, 7), _mm256_slli_epi32(x, 25));
}

/* Transpose eight rows of eight words in place. */
MI_B3_INLINE void
transpose8(__m256i v[8])
{
    __m256i ab0145 = _mm256_unpacklo_epi32(v[0], v[1]);
    __m256i ab2367 = _mm256_unpackhi_epi32(v[0], v[1]);
    __m256i cd0145 = _mm256_unpacklo_epi32(v[2], v[3]);
    __m256i cd2367 = _mm256_unpackhi_epi32(v[2], v[3]);
    __m256i ef0145 = _mm256_unpacklo_epi32(v[4], v[5]);
    __m256i ef2367 = _mm256_unpackhi_epi32(v[4], v[5]);
    __m256i gh0145 = _mm256_unpacklo_epi32(v[6], v[7]);
    __m256i gh2367 = _mm256_unpackhi_epi32(v[6], v[7]);
    __m256i abcd04 = _mm256_unpacklo_epi64(ab0145, cd0145);
    __m256i abcd15 = _mm256_unpackhi_epi64(ab0145, cd0145);
    __m256i abcd26 = _mm256_unpacklo_epi64(ab2367, cd2367);
    __m256i abcd37 = _mm256_unpackhi_epi64(ab2367, cd2367);
    __m256i efgh04 = _mm256_unpacklo_epi64(ef0145, gh0145);
    __m256i efgh15 = _mm256_unpackhi_epi64(ef0145, gh0145);
    __m256i efgh26 = _mm256_unpacklo_epi64(ef2367, gh2367);
    __m256i efgh37 = _mm256_unpackhi_epi64(ef2367, gh2367);

    /* Low 128-bit halves hold words 0-3, high halves words 4-7. */
    v[0] = _mm256_permute2x128_si256(abcd04, efgh04, 0x20);
    v[1] = _mm256_permute2x128_si256(abcd15, efgh15, 0x20);
    v[2] = _mm256_permute2x128_si256(abcd26, efgh26, 0x20);
    v[3] = _mm256_permute2x128_si256(abcd37, efgh37, 0x20);
    v[4] = _mm256_permute2x128_si256(abcd04, efgh04, 0x31);
    v[5] = _mm256_permute2x128_si256(abcd15, efgh15, 0x31);
    v[6] = _mm256_permute2x128_si256(abcd26, efgh26, 0x31);
    v[7] = _mm256_permute2x128_si256(abcd37, efgh37, 0x31);
}

/*
 * Message word w of the eight inputs' block at offset off, for every w.
 * Each quarter of the block (4 words) is loaded 16 bytes per input, input
 * j in the low half of a register and input j + 4 in the high half, so
 * that a 4x4 transpose inside each half finishes the job: no shuffle has
 * to cross the halves.
 */
MI_B3_INLINE void
load_msg8(const uint8_t *const *in, size_t off, __m256i m[16])
{
    __m256i r0, r1, r2, r3, ab01, ab23, cd01, cd23;
    size_t q;

    /* Two blocks ahead: inputs that come from DRAM arrive in time. */
    for (q = 0; q < 8; q++) {
        _mm_prefetch((const char *)(in[q] + off + 128), _MM_HINT_T0);
    }
    for (q = 0; q < 4; q++) {
        r0 = load2x128(in[0] + off + 16 * q, in[4] + off + 16 * q);
        r1 = load2x128(in[1] + off + 16 * q, in[5] + off + 16 * q);
        r2 = load2x128(in[2] + off + 16 * q, in[6] + off + 16 * q);
        r3 = load2x128(in[3] + off + 16 * q, in[7] + off + 16 * q);
        ab01 = _mm256_unpacklo_epi32(r0, r1);
        ab23 = _mm256_unpackhi_epi32(r0, r1);
        cd01 = _mm256_unpacklo_epi32(r2, r3);
        cd23 = _mm256_unpackhi_epi32(r2, r3);
        m[4 * q] = _mm256_unpacklo_epi64(ab01, cd01);
        m[4 * q + 1] = _mm256_unpackhi_epi64(ab01, cd01);
        m[4 * q + 2] = _mm256_unpacklo_epi64(ab23, cd23);
        m[4 * q + 3] = _mm256_unpackhi_epi64(ab23, cd23);
    }
}

/*
 * The seven rounds of one block for eight inputs, in inline assembly:
 * at -O2 the compiler spills parts of the state in the middle of G's
 * dependency chains (the state alone fills all sixteen registers), which
 * costs about a fifth of the speed. Here the state stays in ymm0..ymm15
 * (v0..v15) except v8, which lives in a stack slot (read by memory
 * operands) so that ymm8 is free as the one temporary the rotations need
 * (a mask for the 16- and 8-bit ones, the shifted half for the 12- and
 * 7-bit ones). Message words are memory operands. Each half-round is
 * written so that its first G is the one whose c is v8.
 */
/* clang-format off */
#define A_S_(x) #x
#define A_S(x) A_S_(x)
#define A_Y(n) "%%ymm" A_S(n)
#define A_ADDM(k, a) "vpaddd " A_S(k) "*32(%[m]), " A_Y(a) ", " A_Y(a) "\n\t"
#define A_ADD(src, dst) "vpaddd " A_Y(src) ", " A_Y(dst) ", " A_Y(dst) "\n\t"
#define A_XOR(src, dst) "vpxor " A_Y(src) ", " A_Y(dst) ", " A_Y(dst) "\n\t"
#define A_SHUF(mask, dst) "vpshufb %[" mask "], " A_Y(dst) ", " A_Y(dst) "\n\t"
#define A_SRL8(n, src) "vpsrld $" #n ", " A_Y(src) ", %%ymm8\n\t"
#define A_SLL(n, dst) "vpslld $" #n ", " A_Y(dst) ", " A_Y(dst) "\n\t"
#define A_OR8(dst) "vpor %%ymm8, " A_Y(dst) ", " A_Y(dst) "\n\t"
#define A_ROT(dst, n, left) A_SRL8(n, dst) A_SLL(left, dst) A_OR8(dst)
#define A_PARK "vmovdqa %%ymm8, (%[t])\n\t"
#define A_UNPARK "vmovdqa (%[t]), %%ymm8\n\t"

/*
 * Four G's; the first has c = v8, which lives in the park slot and is
 * read there by a memory operand. The rotation mask is loaded once into
 * ymm8 for the four byte shuffles of each step.
 */
#define A_MASK(mask) "vmovdqa %[" mask "], %%ymm8\n\t"
#define A_SHUFR(dst) "vpshufb %%ymm8, " A_Y(dst) ", " A_Y(dst) "\n\t"
#define A_ADDC8(d) "vpaddd (%[t]), " A_Y(d) ", %%ymm8\n\t"
#define A_HALF(a0, b0, d0, a1, b1, c1, d1, a2, b2, c2, d2, a3, b3, c3, d3,   \
               x0, x1, x2, x3, y0, y1, y2, y3)                                \
    A_ADDM(x0, a0) A_ADDM(x1, a1) A_ADDM(x2, a2) A_ADDM(x3, a3)               \
    A_ADD(b0, a0) A_ADD(b1, a1) A_ADD(b2, a2) A_ADD(b3, a3)                   \
    A_XOR(a0, d0) A_XOR(a1, d1) A_XOR(a2, d2) A_XOR(a3, d3)                   \
    A_MASK("r16")                                                             \
    A_SHUFR(d0) A_SHUFR(d1) A_SHUFR(d2) A_SHUFR(d3)                           \
    A_ADDC8(d0) A_ADD(d1, c1) A_ADD(d2, c2) A_ADD(d3, c3)                     \
    A_XOR(8, b0) A_XOR(c1, b1) A_XOR(c2, b2) A_XOR(c3, b3)                    \
    A_PARK                                                                    \
    A_ROT(b0, 12, 20) A_ROT(b1, 12, 20) A_ROT(b2, 12, 20) A_ROT(b3, 12, 20)   \
    A_ADDM(y0, a0) A_ADDM(y1, a1) A_ADDM(y2, a2) A_ADDM(y3, a3)               \
    A_ADD(b0, a0) A_ADD(b1, a1) A_ADD(b2, a2) A_ADD(b3, a3)                   \
    A_XOR(a0, d0) A_XOR(a1, d1) A_XOR(a2, d2) A_XOR(a3, d3)                   \
    A_MASK("r8")                                                              \
    A_SHUFR(d0) A_SHUFR(d1) A_SHUFR(d2) A_SHUFR(d3)                           \
    A_ADDC8(d0) A_ADD(d1, c1) A_ADD(d2, c2) A_ADD(d3, c3)                     \
    A_XOR(8, b0) A_XOR(c1, b1) A_XOR(c2, b2) A_XOR(c3, b3)                    \
    A_PARK                                                                    \
    A_ROT(b0, 7, 25) A_ROT(b1, 7, 25) A_ROT(b2, 7, 25) A_ROT(b3, 7, 25)

/* One round: columns (0,4,8,12)..., then diagonals, (2,7,8,13) first. */
#define A_ROUND(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12,       \
                s13, s14, s15)                                                \
    A_HALF(0, 4, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,                 \
           s0, s2, s4, s6, s1, s3, s5, s7)                                    \
    A_HALF(2, 7, 13, 0, 5, 10, 15, 1, 6, 11, 12, 3, 4, 9, 14,                 \
           s12, s8, s10, s14, s13, s9, s11, s15)

/*
 * The chaining values stay in v0..v7 from block to block. Each block
 * starts v8..v14 from init (v8 into the park slot) and v15 from its flag
 * vector, and ends with v0..7 ^= v8..15; then m and f move to the next
 * block's message and flags.
 */
#define A_LOAD_H                                                              \
    "vmovdqa 0*32(%[h]), %%ymm0\n\t" "vmovdqa 1*32(%[h]), %%ymm1\n\t"          \
    "vmovdqa 2*32(%[h]), %%ymm2\n\t" "vmovdqa 3*32(%[h]), %%ymm3\n\t"          \
    "vmovdqa 4*32(%[h]), %%ymm4\n\t" "vmovdqa 5*32(%[h]), %%ymm5\n\t"          \
    "vmovdqa 6*32(%[h]), %%ymm6\n\t" "vmovdqa 7*32(%[h]), %%ymm7\n\t"
#define A_LOAD_INIT                                                           \
    "vmovdqa 0*32(%[i]), %%ymm8\n\t" A_PARK                                   \
    "vmovdqa 1*32(%[i]), %%ymm9\n\t" "vmovdqa 2*32(%[i]), %%ymm10\n\t"         \
    "vmovdqa 3*32(%[i]), %%ymm11\n\t" "vmovdqa 4*32(%[i]), %%ymm12\n\t"        \
    "vmovdqa 5*32(%[i]), %%ymm13\n\t" "vmovdqa 6*32(%[i]), %%ymm14\n\t"        \
    "vmovdqa (%[f]), %%ymm15\n\t"
#define A_FEED                                                                \
    A_UNPARK A_XOR(8, 0) A_XOR(9, 1) A_XOR(10, 2) A_XOR(11, 3)                \
    A_XOR(12, 4) A_XOR(13, 5) A_XOR(14, 6) A_XOR(15, 7)                       \
    "add $512, %[m]\n\t" "add $32, %[f]\n\t" "dec %[n]\n\t"
#define A_STORE_H                                                             \
    "vmovdqa %%ymm0, 0*32(%[h])\n\t" "vmovdqa %%ymm1, 1*32(%[h])\n\t"          \
    "vmovdqa %%ymm2, 2*32(%[h])\n\t" "vmovdqa %%ymm3, 3*32(%[h])\n\t"          \
    "vmovdqa %%ymm4, 4*32(%[h])\n\t" "vmovdqa %%ymm5, 5*32(%[h])\n\t"          \
    "vmovdqa %%ymm6, 6*32(%[h])\n\t" "vmovdqa %%ymm7, 7*32(%[h])\n\t"
/* The rows of mi_b3_schedule. */
#define A_ROUNDS                                                              \
    A_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)             \
    A_ROUND(2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)             \
    A_ROUND(3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1)             \
    A_ROUND(10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6)             \
    A_ROUND(12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4)             \
    A_ROUND(9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7)             \
    A_ROUND(11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13)
/* clang-format on */

/*
 * Compress n > 0 blocks in a row: block j has the transposed message
 * m[16 * j ..] and the flag vector f[j]; init[0..6] are v8..v14 at the
 * start of every block. h[8] holds the chaining values in and out.
 */
#if defined(__x86_64__) && !defined(MITHRIL_B3_NO_ASM)
static void
compress8_blocks(__m256i h[8], const __m256i *m, const __m256i init[7],
                 const __m256i *f, size_t n)
{
    __m256i park;

    __asm__ volatile(A_LOAD_H "1:\n\t" A_LOAD_INIT A_ROUNDS A_FEED
                              "jnz 1b\n\t" A_STORE_H
                     : [m] "+r"(m), [f] "+r"(f), [n] "+r"(n)
                     : [h] "r"(h), [i] "r"(init), [t] "r"(&park),
                       [r16] "m"(rot16_mask), [r8] "m"(rot8_mask)
                     : "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",
                       "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
                       "xmm12", "xmm13", "xmm14", "xmm15");
}

#else
/* The same in C: for 32-bit x86 (eight vector registers), and to test. */
#define MI_B3_ADD(a, b) vadd(a, b)
#define MI_B3_XOR(a, b) vxor(a, b)
#define MI_B3_ROT16(x)  rot16(x)
#define MI_B3_ROT12(x)  rot12(x)
#define MI_B3_ROT8(x)   rot8(x)
#define MI_B3_ROT7(x)   rot7(x)

static void
compress8_blocks(__m256i h[8], const __m256i *m, const __m256i init[7],
                 const __m256i *f, size_t n)
{
    size_t j;

    for (j = 0; j < n; j++, m += 16) {
        __m256i v0 = h[0], v1 = h[1], v2 = h[2], v3 = h[3];
        __m256i v4 = h[4], v5 = h[5], v6 = h[6], v7 = h[7];
        __m256i v8 = init[0], v9 = init[1], v10 = init[2], v11 = init[3];
        __m256i v12 = init[4], v13 = init[5], v14 = init[6], v15 = f[j];

        MI_B3_ROUNDS_WIDE(m);
        h[0] = vxor(v0, v8);
        h[1] = vxor(v1, v9);
        h[2] = vxor(v2, v10);
        h[3] = vxor(v3, v11);
        h[4] = vxor(v4, v12);
        h[5] = vxor(v5, v13);
        h[6] = vxor(v6, v14);
        h[7] = vxor(v7, v15);
    }
}
#endif

/* Blocks compressed per call of compress8_blocks: a whole chunk. */
#define GROUP 16

static void
hash8(const uint8_t *const *in, size_t blocks, const uint32_t key[8],
      uint64_t counter, int increment_counter, uint8_t flags,
      uint8_t flags_start, uint8_t flags_end, uint8_t *out)
{
    __m256i h[8], m[16 * GROUP], f[GROUP], init[7];
    uint32_t lo[8], hi[8];
    uint8_t block_flags = flags | flags_start;
    size_t b, g, j;
    int i;

    /* v8..v14 at the start of each block; only v15, the flags, varies. */
    for (i = 0; i < 4; i++) {
        init[i] = _mm256_set1_epi32((int)mi_b3_iv[i]);
    }
    for (i = 0; i < 8; i++) {
        uint64_t c = counter + (increment_counter ? (uint64_t)i : 0);

        lo[i] = (uint32_t)c;
        hi[i] = (uint32_t)(c >> 32);
    }
    init[4] = _mm256_loadu_si256((const __m256i *)lo);
    init[5] = _mm256_loadu_si256((const __m256i *)hi);
    init[6] = _mm256_set1_epi32(MI_B3_BLOCK_LEN);
    for (i = 0; i < 8; i++) {
        h[i] = _mm256_set1_epi32((int)key[i]);
    }

    /* Transpose up to a chunk of messages, then compress them in a row. */
    for (b = 0; b < blocks; b += g) {
        g = blocks - b < GROUP ? blocks - b : GROUP;
        for (j = 0; j < g; j++) {
            if (b + j + 1 == blocks) {
                block_flags |= flags_end;
            }
            load_msg8(in, (b + j) * MI_B3_BLOCK_LEN, m + 16 * j);
            f[j] = _mm256_set1_epi32(block_flags);
            block_flags = flags;
        }
        compress8_blocks(h, m, init, f, g);
    }

    /* Back from word-major to input-major: 32 bytes per input. */
    transpose8(h);
    for (i = 0; i < 8; i++) {
        storeu(out + i * MI_B3_OUT_LEN, h[i]);
    }
}

void
mi_b3_hash_many_avx2(const uint8_t *const *inputs, size_t n, size_t blocks,
                     const uint32_t key[8], uint64_t counter,
                     int increment_counter, uint8_t flags, uint8_t flags_start,
                     uint8_t flags_end, uint8_t *out)
{
    while (n >= 8) {
        hash8(inputs, blocks, key, counter, increment_counter, flags,
              flags_start, flags_end, out);
        if (increment_counter) {
            counter += 8;
        }
        inputs += 8;
        n -= 8;
        out += 8 * MI_B3_OUT_LEN;
    }

    /*
     * Two to seven left: eight lanes with the spare ones repeating the
     * first input (their results are dropped) still beat narrower code.
     */
    if (n >= 2) {
        const uint8_t *lanes[8];
        uint8_t cvs[8 * MI_B3_OUT_LEN];
        size_t i;

        for (i = 0; i < 8; i++) {
            lanes[i] = inputs[i < n ? i : 0];
        }
        hash8(lanes, blocks, key, counter, increment_counter, flags,
              flags_start, flags_end, cvs);
        memcpy(out, cvs, n * MI_B3_OUT_LEN);
        return;
    }
    mi_b3_hash_many_sse41(inputs, n, blocks, key, counter, increment_counter,
                          flags, flags_start, flags_end, out);
}
