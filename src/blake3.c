/*
 * blake3.c - the BLAKE3 hasher: the three modes (hash, keyed_hash,
 * derive_key), streaming update, extendable output with seek, and the
 * choice of compression implementation at run time.
 *
 * The tree. Input is cut into 1024-byte chunks; each chunk is hashed
 * block by block into a chaining value (CV); CVs are joined pairwise by
 * parent nodes into one binary tree whose left subtrees are always full
 * (a power of two of chunks). The root node alone gets the ROOT flag.
 *
 * The CV stack invariant. After an update, cv_stack holds the CVs of the
 * complete subtrees hashed so far, largest first, with their sizes in
 * chunks the binary digits of chunk_counter; the last CV pushed may stay
 * unmerged until more input shows that it is not the root (so there are
 * at most popcount(chunk_counter) + 1 entries, 55 at 2^64 bytes). The
 * chunk in progress lives in cv/buf/blocks_compressed; buf holds at most
 * one block, and a full buffered block is compressed only once more input
 * arrives, because the last block of a chunk needs CHUNK_END.
 *
 * Speed. An update that covers whole subtrees hashes them wide: the
 * chunks of a subtree go to the implementation's hash_many several at a
 * time (4 with SSE4.1, 8 with AVX2, 16 with AVX-512), then the parents level by
 * level the same way, down to two CVs that are pushed on the stack.
 */
#include "blake3_impl.h"

#include <stdlib.h>
#include <string.h>

/* ---- choosing the implementation ---- */

static const struct mi_b3_ops ops_portable = {
    "portable", 1, mi_b3_compress_in_place_portable,
    mi_b3_compress_xof_portable, mi_b3_hash_many_portable};

static const struct mi_b3_ops ops_sse41 = {
    "sse41", 4, mi_b3_compress_in_place_sse41, mi_b3_compress_xof_sse41,
    mi_b3_hash_many_sse41};

static const struct mi_b3_ops ops_avx2 = {
    "avx2", 8, mi_b3_compress_in_place_sse41, mi_b3_compress_xof_sse41,
    mi_b3_hash_many_avx2};

static const struct mi_b3_ops ops_avx512 = {
    "avx512", 16, mi_b3_compress_in_place_sse41, mi_b3_compress_xof_sse41,
    mi_b3_hash_many_avx512};

/*
 * Ordered from the least to the most capable; each needs what the one
 * before it needs.
 */
static const struct mi_b3_ops *const all_ops[] = {
    &ops_portable,
    &ops_sse41,
    &ops_avx2,
    &ops_avx512,
};
#define N_OPS (sizeof(all_ops) / sizeof(all_ops[0]))

static const struct mi_b3_ops *chosen_ops;

/*
 * 1 when this CPU can run ops. The compiler's CPU check reads cpuid and,
 * for AVX2 and AVX-512, also xgetbv, so it is false when the OS does not
 * save the 256-bit (or the 512-bit and mask) registers.
 */
static int
cpu_can_run(const struct mi_b3_ops *ops)
{
    __builtin_cpu_init();
    if (ops == &ops_portable) {
        return 1;
    }
    if (ops == &ops_sse41) {
        return __builtin_cpu_supports("sse4.1");
    }
    if (ops == &ops_avx2) {
        return __builtin_cpu_supports("sse4.1") &&
               __builtin_cpu_supports("avx2");
    }
    if (ops == &ops_avx512) {
        return __builtin_cpu_supports("sse4.1") &&
               __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("avx512f");
    }
    return 0;
}

static const struct mi_b3_ops *
choose_ops(void)
{
    const char *cap = getenv("MITHRIL_BLAKE3_IMPL");
    const struct mi_b3_ops *best = &ops_portable;
    size_t i;

    for (i = 0; i < N_OPS; i++) {
        if (!cpu_can_run(all_ops[i])) {
            break;
        }
        best = all_ops[i];
        if (cap && strcmp(cap, all_ops[i]->name) == 0) {
            break;
        }
    }
    return best;
}

const struct mi_b3_ops *
mi_b3_ops(void)
{
    const struct mi_b3_ops *ops =
        __atomic_load_n(&chosen_ops, __ATOMIC_ACQUIRE);

    /* Racing threads compute the same answer; any one store will do. */
    if (!ops) {
        ops = choose_ops();
        __atomic_store_n(&chosen_ops, ops, __ATOMIC_RELEASE);
    }
    return ops;
}

const struct mi_b3_ops *
mi_b3_ops_named(const char *name)
{
    size_t i;

    for (i = 0; i < N_OPS; i++) {
        if (strcmp(name, all_ops[i]->name) == 0) {
            return cpu_can_run(all_ops[i]) ? all_ops[i] : NULL;
        }
    }
    return NULL;
}

int
mi_b3_force_impl(const char *name)
{
    const struct mi_b3_ops *ops = mi_b3_ops_named(name);

    if (!ops) {
        return MITHRIL_EINVAL;
    }
    __atomic_store_n(&chosen_ops, ops, __ATOMIC_RELEASE);
    return 0;
}

const char *
mithril_blake3_impl(void)
{
    return mi_b3_ops()->name;
}

/* ---- outputs: a node not yet compressed, so it can become the root ---- */

struct output {
    uint32_t cv[8];
    uint8_t block[MI_B3_BLOCK_LEN];
    uint8_t block_len;
    uint64_t counter;
    uint8_t flags;
};

static void
output_cv(const struct mi_b3_ops *ops, const struct output *o, uint8_t out[32])
{
    uint32_t cv[8];

    memcpy(cv, o->cv, sizeof(cv));
    ops->compress_in_place(cv, o->block, o->block_len, o->counter, o->flags);
    mi_b3_store_cv(out, cv);
}

static void
output_root_bytes(const struct mi_b3_ops *ops, const struct output *o,
                  uint64_t seek, uint8_t *out, size_t out_len)
{
    uint64_t counter = seek / MI_B3_BLOCK_LEN;
    size_t skip = (size_t)(seek % MI_B3_BLOCK_LEN);
    uint8_t block[MI_B3_BLOCK_LEN];
    size_t take;

    while (out_len > 0) {
        ops->compress_xof(o->cv, o->block, o->block_len, counter,
                          o->flags | MI_B3_ROOT, block);
        take = MI_B3_BLOCK_LEN - skip;
        if (take > out_len) {
            take = out_len;
        }
        memcpy(out, block + skip, take);
        out += take;
        out_len -= take;
        skip = 0;
        counter++;
    }
}

static void
parent_output(struct output *o, const uint8_t block[64], const uint32_t key[8],
              uint8_t flags)
{
    memcpy(o->cv, key, sizeof(o->cv));
    memcpy(o->block, block, MI_B3_BLOCK_LEN);
    o->block_len = MI_B3_BLOCK_LEN;
    o->counter = 0;
    o->flags = flags | MI_B3_PARENT;
}

/* ---- the chunk in progress ---- */

static size_t
chunk_len(const mithril_blake3 *h)
{
    return (size_t)h->blocks_compressed * MI_B3_BLOCK_LEN + h->buf_len;
}

static uint8_t
chunk_start_flag(const mithril_blake3 *h)
{
    return h->blocks_compressed == 0 ? MI_B3_CHUNK_START : 0;
}

static void
chunk_reset(mithril_blake3 *h, uint64_t counter)
{
    memcpy(h->cv, h->key, sizeof(h->cv));
    h->chunk_counter = counter;
    h->blocks_compressed = 0;
    h->buf_len = 0;
}

/* Add len bytes, never more than the chunk has room for. */
static void
chunk_update(const struct mi_b3_ops *ops, mithril_blake3 *h, const uint8_t *in,
             size_t len)
{
    size_t take;

    if (h->buf_len > 0) {
        take = MI_B3_BLOCK_LEN - h->buf_len;
        if (take > len) {
            take = len;
        }
        memcpy(h->buf + h->buf_len, in, take);
        h->buf_len += (uint8_t)take;
        in += take;
        len -= take;
        if (len == 0) {
            return;
        }
        ops->compress_in_place(h->cv, h->buf, MI_B3_BLOCK_LEN, h->chunk_counter,
                               h->flags | chunk_start_flag(h));
        h->blocks_compressed++;
        h->buf_len = 0;
    }
    while (len > MI_B3_BLOCK_LEN) {
        ops->compress_in_place(h->cv, in, MI_B3_BLOCK_LEN, h->chunk_counter,
                               h->flags | chunk_start_flag(h));
        h->blocks_compressed++;
        in += MI_B3_BLOCK_LEN;
        len -= MI_B3_BLOCK_LEN;
    }
    memcpy(h->buf, in, len);
    h->buf_len = (uint8_t)len;
}

static void
chunk_output(const mithril_blake3 *h, struct output *o)
{
    memcpy(o->cv, h->cv, sizeof(o->cv));
    memcpy(o->block, h->buf, h->buf_len);
    memset(o->block + h->buf_len, 0, MI_B3_BLOCK_LEN - h->buf_len);
    o->block_len = h->buf_len;
    o->counter = h->chunk_counter;
    o->flags = h->flags | chunk_start_flag(h) | MI_B3_CHUNK_END;
}

/* The CV of one whole chunk (or a final partial one) hashed on its own. */
static void
lone_chunk_cv(const struct mi_b3_ops *ops, const uint8_t *in, size_t len,
              const uint32_t key[8], uint64_t counter, uint8_t flags,
              uint8_t out[32])
{
    mithril_blake3 c;
    struct output o;

    memcpy(c.key, key, sizeof(c.key));
    c.flags = flags;
    chunk_reset(&c, counter);
    chunk_update(ops, &c, in, len);
    chunk_output(&c, &o);
    output_cv(ops, &o, out);
}

/* ---- wide subtrees ---- */

/*
 * Hash the chunks of in (at most ops->degree of them; the last may be
 * partial) into CVs at out; returns how many.
 */
static size_t
chunks_parallel(const struct mi_b3_ops *ops, const uint8_t *in, size_t len,
                const uint32_t key[8], uint64_t counter, uint8_t flags,
                uint8_t *out)
{
    const uint8_t *inputs[MI_B3_MAX_DEGREE];
    size_t n = 0;

    while (len >= MI_B3_CHUNK_LEN) {
        inputs[n++] = in;
        in += MI_B3_CHUNK_LEN;
        len -= MI_B3_CHUNK_LEN;
    }
    ops->hash_many(inputs, n, MI_B3_CHUNK_LEN / MI_B3_BLOCK_LEN, key, counter,
                   1, flags, MI_B3_CHUNK_START, MI_B3_CHUNK_END, out);
    if (len > 0) {
        lone_chunk_cv(ops, in, len, key, counter + n, flags,
                      out + n * MI_B3_OUT_LEN);
        n++;
    }
    return n;
}

/*
 * Join n CVs pairwise into parent CVs at out (an odd last CV is carried
 * up as it is); returns how many. n is at most 2 * MI_B3_MAX_DEGREE.
 */
static size_t
parents_parallel(const struct mi_b3_ops *ops, const uint8_t *cvs, size_t n,
                 const uint32_t key[8], uint8_t flags, uint8_t *out)
{
    const uint8_t *inputs[MI_B3_MAX_DEGREE];
    size_t pairs = n / 2;
    size_t i;

    for (i = 0; i < pairs; i++) {
        inputs[i] = cvs + 2 * i * MI_B3_OUT_LEN;
    }
    ops->hash_many(inputs, pairs, 1, key, 0, 0, flags | MI_B3_PARENT, 0, 0,
                   out);
    if (n % 2) {
        memcpy(out + pairs * MI_B3_OUT_LEN, cvs + 2 * pairs * MI_B3_OUT_LEN,
               MI_B3_OUT_LEN);
        return pairs + 1;
    }
    return pairs;
}

/* The largest power of two, at most n (n > 0). */
static uint64_t
pow2_floor(uint64_t n)
{
    return (uint64_t)1 << (63 - __builtin_clzll(n));
}

/*
 * Hash a subtree of len > 0 bytes, starting at chunk counter, into at most
 * max(degree, 2) CVs at out (exactly that many when the subtree holds at
 * least degree chunks, so that a left subtree's CVs and its sibling's lie
 * side by side); returns how many.
 */
static size_t
subtree_wide(const struct mi_b3_ops *ops, const uint8_t *in, size_t len,
             const uint32_t key[8], uint64_t counter, uint8_t flags,
             uint8_t *out)
{
    uint8_t cvs[2 * MI_B3_MAX_DEGREE * MI_B3_OUT_LEN];
    size_t degree = ops->degree;
    size_t left_len, left_n, right_n;

    if (len <= degree * MI_B3_CHUNK_LEN) {
        return chunks_parallel(ops, in, len, key, counter, flags, out);
    }

    /* The left subtree: the most whole chunks, a power of two, < len. */
    left_len =
        (size_t)pow2_floor((len - 1) / MI_B3_CHUNK_LEN) * MI_B3_CHUNK_LEN;
    if (degree < 2) {
        degree = 2;
    }
    left_n = subtree_wide(ops, in, left_len, key, counter, flags, cvs);
    right_n = subtree_wide(ops, in + left_len, len - left_len, key,
                           counter + left_len / MI_B3_CHUNK_LEN, flags,
                           cvs + (left_n == 1 ? 1 : degree) * MI_B3_OUT_LEN);
    if (left_n == 1) {
        memcpy(out, cvs, 2 * MI_B3_OUT_LEN);
        return 2;
    }
    return parents_parallel(ops, cvs, left_n + right_n, key, flags, out);
}

/*
 * Hash a subtree of at least two whole chunks down to its two children's
 * CVs (64 bytes at out); the parent itself is left to the stack, since it
 * may turn out to be the root.
 */
static void
subtree_to_children(const struct mi_b3_ops *ops, const uint8_t *in, size_t len,
                    const uint32_t key[8], uint64_t counter, uint8_t flags,
                    uint8_t out[64])
{
    uint8_t cvs[MI_B3_MAX_DEGREE * MI_B3_OUT_LEN];
    uint8_t next[MI_B3_MAX_DEGREE * MI_B3_OUT_LEN];
    size_t n;

    n = subtree_wide(ops, in, len, key, counter, flags, cvs);
    while (n > 2) {
        n = parents_parallel(ops, cvs, n, key, flags, next);
        memcpy(cvs, next, n * MI_B3_OUT_LEN);
    }
    memcpy(out, cvs, 2 * MI_B3_OUT_LEN);
}

/* ---- the CV stack ---- */

/* Merge until the stack holds popcount(total_chunks) entries. */
static void
stack_merge(const struct mi_b3_ops *ops, mithril_blake3 *h,
            uint64_t total_chunks)
{
    size_t keep = (size_t)__builtin_popcountll(total_chunks);
    uint8_t *top;
    uint32_t cv[8];

    while (h->cv_stack_len > keep) {
        top = h->cv_stack + (h->cv_stack_len - 2) * MI_B3_OUT_LEN;
        memcpy(cv, h->key, sizeof(cv));
        ops->compress_in_place(cv, top, MI_B3_BLOCK_LEN, 0,
                               h->flags | MI_B3_PARENT);
        mi_b3_store_cv(top, cv);
        h->cv_stack_len--;
    }
}

/* Push the CV of the subtree that starts at chunk `counter`. */
static void
stack_push(const struct mi_b3_ops *ops, mithril_blake3 *h, const uint8_t cv[32],
           uint64_t counter)
{
    stack_merge(ops, h, counter);
    memcpy(h->cv_stack + h->cv_stack_len * MI_B3_OUT_LEN, cv, MI_B3_OUT_LEN);
    h->cv_stack_len++;
}

/* ---- the public hasher ---- */

static void
hasher_init(mithril_blake3 *h, const uint32_t key[8], uint8_t flags)
{
    memcpy(h->key, key, sizeof(h->key));
    h->flags = flags;
    h->cv_stack_len = 0;
    memset(h->buf, 0, sizeof(h->buf));
    chunk_reset(h, 0);
}

void
mithril_blake3_init(mithril_blake3 *h)
{
    hasher_init(h, mi_b3_iv, 0);
}

void
mithril_blake3_init_keyed(mithril_blake3 *h,
                          const uint8_t key[MITHRIL_BLAKE3_KEY_LEN])
{
    uint32_t words[8];
    int i;

    for (i = 0; i < 8; i++) {
        words[i] = mi_b3_load32(key + 4 * i);
    }
    hasher_init(h, words, MI_B3_KEYED_HASH);
}

void
mithril_blake3_init_derive_key(mithril_blake3 *h, const char *context)
{
    mithril_blake3 ctx;
    uint8_t context_key[MI_B3_OUT_LEN];
    uint32_t words[8];
    int i;

    hasher_init(&ctx, mi_b3_iv, MI_B3_DERIVE_KEY_CONTEXT);
    mithril_blake3_update(&ctx, context, strlen(context));
    mithril_blake3_finalize(&ctx, context_key, sizeof(context_key));
    for (i = 0; i < 8; i++) {
        words[i] = mi_b3_load32(context_key + 4 * i);
    }
    hasher_init(h, words, MI_B3_DERIVE_KEY_MATERIAL);
}

void
mithril_blake3_update(mithril_blake3 *h, const void *data, size_t len)
{
    const struct mi_b3_ops *ops;
    const uint8_t *in = data;
    uint8_t cv[MI_B3_OUT_LEN];
    uint8_t pair[2 * MI_B3_OUT_LEN];
    struct output o;
    uint64_t done, sub_chunks;
    size_t take, sub_len;

    if (len == 0) {
        return;
    }
    ops = mi_b3_ops();

    /* Fill the chunk in progress; once full, more input means push it. */
    if (chunk_len(h) > 0) {
        take = MI_B3_CHUNK_LEN - chunk_len(h);
        if (take > len) {
            take = len;
        }
        chunk_update(ops, h, in, take);
        in += take;
        len -= take;
        if (len == 0) {
            return;
        }
        chunk_output(h, &o);
        output_cv(ops, &o, cv);
        stack_push(ops, h, cv, h->chunk_counter);
        chunk_reset(h, h->chunk_counter + 1);
    }

    /*
     * Whole subtrees while more than a chunk is left: the largest power of
     * two of chunks that fits in the input and is aligned to the chunks
     * already hashed (a subtree must start where its size divides).
     */
    while (len > MI_B3_CHUNK_LEN) {
        sub_len = (size_t)pow2_floor(len);
        done = h->chunk_counter * MI_B3_CHUNK_LEN;
        while (((uint64_t)(sub_len - 1) & done) != 0) {
            sub_len /= 2;
        }
        sub_chunks = sub_len / MI_B3_CHUNK_LEN;
        if (sub_len <= MI_B3_CHUNK_LEN) {
            lone_chunk_cv(ops, in, MI_B3_CHUNK_LEN, h->key, h->chunk_counter,
                          h->flags, cv);
            stack_push(ops, h, cv, h->chunk_counter);
        } else {
            subtree_to_children(ops, in, sub_len, h->key, h->chunk_counter,
                                h->flags, pair);
            stack_push(ops, h, pair, h->chunk_counter);
            stack_push(ops, h, pair + MI_B3_OUT_LEN,
                       h->chunk_counter + sub_chunks / 2);
        }
        h->chunk_counter += sub_chunks;
        in += sub_len;
        len -= sub_len;
    }

    /*
     * The rest (1..1024 bytes) starts a chunk. Input follows every CV on
     * the stack now, so none of them is the root: merge them.
     */
    if (len > 0) {
        chunk_update(ops, h, in, len);
        stack_merge(ops, h, h->chunk_counter);
    }
}

void
mithril_blake3_finalize_seek(const mithril_blake3 *h, uint64_t seek,
                             uint8_t *out, size_t out_len)
{
    const struct mi_b3_ops *ops = mi_b3_ops();
    uint8_t block[MI_B3_BLOCK_LEN];
    struct output o;
    size_t left = 0;

    if (out_len == 0) {
        return;
    }

    /* Fold the stack from the top down into the root node. */
    if (h->cv_stack_len == 0) {
        chunk_output(h, &o);
    } else if (chunk_len(h) > 0) {
        chunk_output(h, &o);
        left = h->cv_stack_len;
    } else {
        left = h->cv_stack_len - 2;
        parent_output(&o, h->cv_stack + left * MI_B3_OUT_LEN, h->key, h->flags);
    }
    if (h->cv_stack_len > 0) {
        while (left > 0) {
            left--;
            memcpy(block, h->cv_stack + left * MI_B3_OUT_LEN, MI_B3_OUT_LEN);
            output_cv(ops, &o, block + MI_B3_OUT_LEN);
            parent_output(&o, block, h->key, h->flags);
        }
    }
    output_root_bytes(ops, &o, seek, out, out_len);
}

void
mithril_blake3_finalize(const mithril_blake3 *h, uint8_t *out, size_t out_len)
{
    mithril_blake3_finalize_seek(h, 0, out, out_len);
}

void
mithril_blake3_hash(const void *data, size_t len,
                    uint8_t out[MITHRIL_BLAKE3_OUT_LEN])
{
    mithril_blake3 h;

    mithril_blake3_init(&h);
    mithril_blake3_update(&h, data, len);
    mithril_blake3_finalize(&h, out, MITHRIL_BLAKE3_OUT_LEN);
}
