/*
 * test_blake3.c - BLAKE3 against the shared test vectors, in every mode,
 * at full extended length and at 32 bytes, one-shot, streamed in many
 * split patterns, and through finalize_seek; then every implementation
 * against the portable one on large random inputs, and hash_many alone
 * across the 2^32 chunk-counter carry. Each implementation this CPU can
 * run is forced in turn. Also the MITHRIL_BLAKE3_IMPL cap (in fresh
 * processes) and the hex helpers.
 *
 * The vectors file is tests/vectors/blake3.json under MITHRIL_SOURCE_DIR
 * (ctest sets it): the official BLAKE3 vectors, kept in the tree so a clone
 * tests itself wherever it lies. It is read by a small reader made for its
 * fixed layout.
 */
#include "check.h"

#include "blake3_impl.h"
#include "mithril/mithril.h"

#include <stdint.h>

#define MAX_CASES 64
#define MAX_OUT   256

struct vcase {
    size_t input_len;
    char hash[2 * MAX_OUT + 1];
    char keyed[2 * MAX_OUT + 1];
    char derive[2 * MAX_OUT + 1];
};

static struct vcase cases[MAX_CASES];
static size_t n_cases;
static char vkey[64];
static char vcontext[128];

static const char *const impls[] = {"portable", "sse41", "avx2", "avx512"};
static const char *cur_impl = "portable";

/* ---- the vectors file ---- */

static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (!f) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return NULL;
    }
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Copy the string value after "name": at or after p; returns past it. */
static const char *
json_string(const char *p, const char *name, char *out, size_t cap)
{
    char pat[64];
    const char *q, *end;

    snprintf(pat, sizeof(pat), "\"%s\":", name);
    q = strstr(p, pat);
    if (!q) {
        return NULL;
    }
    q = strchr(q + strlen(pat), '"');
    if (!q) {
        return NULL;
    }
    q++;
    end = strchr(q, '"');
    if (!end || (size_t)(end - q) >= cap) {
        return NULL;
    }
    memcpy(out, q, (size_t)(end - q));
    out[end - q] = '\0';
    return end + 1;
}

static int
load_vectors(void)
{
    const char *src = getenv("MITHRIL_SOURCE_DIR");
    char path[4096];
    char *text = NULL;
    const char *p;

    if (src) {
        snprintf(path, sizeof(path), "%s/tests/vectors/blake3.json", src);
        text = slurp(path);
    }
    if (!text) {
        fprintf(stderr, "tests/vectors/blake3.json not found "
                        "(is MITHRIL_SOURCE_DIR set?)\n");
        return -1;
    }
    p = json_string(text, "key", vkey, sizeof(vkey));
    CHECK(p != NULL);
    p = json_string(text, "context_string", vcontext, sizeof(vcontext));
    CHECK(p != NULL);
    while (p && (p = strstr(p, "\"input_len\":")) && n_cases < MAX_CASES) {
        struct vcase *c = &cases[n_cases];

        c->input_len = strtoul(p + strlen("\"input_len\":"), NULL, 10);
        p = json_string(p, "hash", c->hash, sizeof(c->hash));
        if (p) {
            p = json_string(p, "keyed_hash", c->keyed, sizeof(c->keyed));
        }
        if (p) {
            p = json_string(p, "derive_key", c->derive, sizeof(c->derive));
        }
        CHECK(p != NULL);
        if (p) {
            n_cases++;
        }
    }
    free(text);
    return n_cases > 0 ? 0 : -1;
}

/* ---- helpers ---- */

static uint8_t *
vector_input(size_t len)
{
    uint8_t *in = malloc(len + 1);
    size_t i;

    for (i = 0; i < len; i++) {
        in[i] = (uint8_t)(i % 251);
    }
    return in;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t
rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

enum mode { M_HASH, M_KEYED, M_DERIVE };

static void
init_mode(mithril_blake3 *h, enum mode m)
{
    if (m == M_HASH) {
        mithril_blake3_init(h);
    } else if (m == M_KEYED) {
        mithril_blake3_init_keyed(h, (const uint8_t *)vkey);
    } else {
        mithril_blake3_init_derive_key(h, vcontext);
    }
}

/* Feed in with split sizes chosen by pattern p (see below). */
static void
feed(mithril_blake3 *h, const uint8_t *in, size_t len, int p)
{
    static const size_t fixed[] = {1, 63, 64, 65, 1023, 1024, 1025, 3000};
    size_t off = 0, n;

    while (off < len) {
        if (p < 8) {
            n = fixed[p];
        } else if (p == 8) {
            n = 1 + rng() % 5000; /* random splits, large */
        } else {
            n = 1 + rng() % 130; /* random splits, small */
        }
        if (n > len - off) {
            n = len - off;
        }
        /* An empty update now and then must change nothing. */
        if (rng() % 7 == 0) {
            mithril_blake3_update(h, in + off, 0);
        }
        mithril_blake3_update(h, in + off, n);
        off += n;
    }
}

static void
hex_of(const uint8_t *bin, size_t n, char *out)
{
    mithril_hex(bin, n, out);
}

/* ---- the vector tests, for the implementation in use ---- */

static void
check_case_mode(const struct vcase *c, enum mode m, const char *want)
{
    size_t out_len = strlen(want) / 2;
    uint8_t *in = vector_input(c->input_len);
    uint8_t out[MAX_OUT], seek_out[MAX_OUT];
    char got[2 * MAX_OUT + 1];
    mithril_blake3 h;
    static const uint64_t seeks[] = {1, 31, 32, 63, 64, 65, 100};
    size_t i, p;

    /* One update, full extended length, and the 32-byte prefix. */
    init_mode(&h, m);
    mithril_blake3_update(&h, in, c->input_len);
    mithril_blake3_finalize(&h, out, out_len);
    hex_of(out, out_len, got);
    if (strcmp(got, want) != 0) {
        fprintf(stderr, "[%s] len %zu mode %d: got %s\n", cur_impl,
                c->input_len, (int)m, got);
    }
    CHECK_EQ_STR(got, want);
    memset(out, 0, sizeof(out));
    mithril_blake3_finalize(&h, out, 32);
    hex_of(out, 32, got);
    CHECK(strncmp(got, want, 64) == 0);

    /* finalize_seek agrees with the slice of the full output. */
    for (i = 0; i < sizeof(seeks) / sizeof(seeks[0]); i++) {
        size_t n = out_len - seeks[i];

        mithril_blake3_finalize_seek(&h, seeks[i], seek_out, n);
        hex_of(seek_out, n, got);
        CHECK(strcmp(got, want + 2 * seeks[i]) == 0);
    }

    /* Finalize leaves the hasher as it was: a second one agrees. */
    mithril_blake3_finalize(&h, out, out_len);
    hex_of(out, out_len, got);
    CHECK_EQ_STR(got, want);

    /* Streamed in every split pattern. */
    for (p = 0; p < 10; p++) {
        init_mode(&h, m);
        feed(&h, in, c->input_len, p);
        mithril_blake3_finalize(&h, out, out_len);
        hex_of(out, out_len, got);
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "[%s] len %zu mode %d pattern %zu\n", cur_impl,
                    c->input_len, (int)m, p);
        }
        CHECK_EQ_STR(got, want);
    }

    /* The one-shot digest. */
    if (m == M_HASH) {
        mithril_blake3_hash(in, c->input_len, out);
        hex_of(out, 32, got);
        CHECK(strncmp(got, want, 64) == 0);
    }
    free(in);
}

static void
test_vectors(void)
{
    size_t i;

    CHECK(n_cases >= 30);
    for (i = 0; i < n_cases; i++) {
        check_case_mode(&cases[i], M_HASH, cases[i].hash);
        check_case_mode(&cases[i], M_KEYED, cases[i].keyed);
        check_case_mode(&cases[i], M_DERIVE, cases[i].derive);
    }
}

/* A long output, read in pieces by seek, equals one long finalize. */
static void
test_long_xof(void)
{
    uint8_t *in = vector_input(5000);
    uint8_t full[4096], piece[300];
    mithril_blake3 h;
    uint64_t seek;
    size_t n;

    mithril_blake3_init(&h);
    mithril_blake3_update(&h, in, 5000);
    mithril_blake3_finalize(&h, full, sizeof(full));
    for (seek = 0; seek + 1 < sizeof(full); seek += n) {
        n = 1 + rng() % sizeof(piece);
        if (n > sizeof(full) - seek) {
            n = sizeof(full) - seek;
        }
        mithril_blake3_finalize_seek(&h, seek, piece, n);
        CHECK(memcmp(piece, full + seek, n) == 0);
    }
    free(in);
}

/* ---- every implementation against the portable one ---- */

/* The digest of in by the portable code, whatever is forced now. */
static void
portable_digest(const uint8_t *in, size_t len, uint8_t out[32])
{
    const char *was = mithril_blake3_impl();

    mi_b3_force_impl("portable");
    mithril_blake3_hash(in, len, out);
    mi_b3_force_impl(was);
}

static void
test_large_random(void)
{
    static const size_t sizes[] = {4095,
                                   4097,
                                   8 * 1024 + 1,
                                   15 * 1024,
                                   16 * 1024,
                                   17 * 1024 + 3,
                                   31 * 1024 + 1,
                                   33 * 1024,
                                   65 * 1024,
                                   129 * 1024 + 5,
                                   1024 * 1024,
                                   1024 * 1024 + 12345,
                                   3 * 1024 * 1024 - 1};
    size_t max = 3 * 1024 * 1024;
    uint8_t *in = malloc(max);
    uint8_t want[32], got[32];
    mithril_blake3 h;
    size_t i, j;

    for (i = 0; i < max; i++) {
        in[i] = (uint8_t)rng();
    }
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        portable_digest(in, sizes[i], want);
        mithril_blake3_hash(in, sizes[i], got);
        CHECK(memcmp(got, want, 32) == 0);
        for (j = 7; j < 10; j++) {
            mithril_blake3_init(&h);
            feed(&h, in, sizes[i], (int)j);
            mithril_blake3_finalize(&h, got, 32);
            CHECK(memcmp(got, want, 32) == 0);
        }
    }
    free(in);
}

/* hash_many of the forced implementation against the portable one. */
static void
test_hash_many(void)
{
    const struct mi_b3_ops *ops = mi_b3_ops();
    const uint8_t *inputs[40];
    uint8_t *data = malloc(40 * 1024);
    uint8_t want[40 * 32], got[40 * 32];
    uint32_t key[8];
    static const uint64_t counters[] = {0, 5, 0xFFFFFFFDull, 0xFFFFFFFFull,
                                        0x1FFFFFFF9ull};
    size_t i, c, n, inc;

    for (i = 0; i < 40 * 1024; i++) {
        data[i] = (uint8_t)rng();
    }
    for (i = 0; i < 8; i++) {
        key[i] = (uint32_t)rng();
    }
    for (i = 0; i < 40; i++) {
        inputs[i] = data + ((i * 7) % 40) * 1024;
    }
    for (c = 0; c < sizeof(counters) / sizeof(counters[0]); c++) {
        for (n = 0; n <= 40; n += (n < 18 ? 1 : 11)) {
            for (inc = 0; inc < 2; inc++) {
                mi_b3_hash_many_portable(
                    inputs, n, 16, key, counters[c], (int)inc, MI_B3_KEYED_HASH,
                    MI_B3_CHUNK_START, MI_B3_CHUNK_END, want);
                ops->hash_many(inputs, n, 16, key, counters[c], (int)inc,
                               MI_B3_KEYED_HASH, MI_B3_CHUNK_START,
                               MI_B3_CHUNK_END, got);
                CHECK(memcmp(got, want, n * 32) == 0);
                mi_b3_hash_many_portable(inputs, n, 1, key, counters[c],
                                         (int)inc, MI_B3_PARENT, 0, 0, want);
                ops->hash_many(inputs, n, 1, key, counters[c], (int)inc,
                               MI_B3_PARENT, 0, 0, got);
                CHECK(memcmp(got, want, n * 32) == 0);
            }
        }
    }
    free(data);
}

/* Single-block compression of the forced implementation. */
static void
test_compress(void)
{
    const struct mi_b3_ops *ops = mi_b3_ops();
    uint8_t block[64], want[64], got[64];
    uint32_t cv[8], cv2[8];
    int t, i;

    for (t = 0; t < 200; t++) {
        uint64_t counter = rng();
        uint8_t len = (uint8_t)(rng() % 65);
        uint8_t flags = (uint8_t)(rng() % 128);

        for (i = 0; i < 64; i++) {
            block[i] = (uint8_t)rng();
        }
        for (i = 0; i < 8; i++) {
            cv[i] = (uint32_t)rng();
        }
        mi_b3_compress_xof_portable(cv, block, len, counter, flags, want);
        ops->compress_xof(cv, block, len, counter, flags, got);
        CHECK(memcmp(got, want, 64) == 0);
        memcpy(cv2, cv, sizeof(cv));
        mi_b3_compress_in_place_portable(cv, block, len, counter, flags);
        ops->compress_in_place(cv2, block, len, counter, flags);
        CHECK(memcmp(cv, cv2, sizeof(cv)) == 0);
    }
}

/* ---- implementation choice and hex ---- */

static void
test_impl_names(void)
{
    const char *name = mithril_blake3_impl();

    CHECK(!strcmp(name, "portable") || !strcmp(name, "sse41") ||
          !strcmp(name, "avx2") || !strcmp(name, "avx512"));
    CHECK(mi_b3_ops_named("portable") != NULL);
    CHECK(mi_b3_ops_named("no-such") == NULL);
    CHECK_EQ_INT(mi_b3_force_impl("no-such"), MITHRIL_EINVAL);
}

static void
test_hex(void)
{
    uint8_t bin[4] = {0x00, 0x9a, 0xff, 0x10};
    uint8_t out[4] = {1, 2, 3, 4};
    char text[9];

    mithril_hex(bin, 4, text);
    CHECK_EQ_STR(text, "009aff10");
    CHECK_EQ_INT(mithril_unhex("009aff10", out, 4), 0);
    CHECK(memcmp(out, bin, 4) == 0);

    /* Failures leave out untouched. */
    memset(out, 7, sizeof(out));
    CHECK_EQ_INT(mithril_unhex("009AFF10", out, 4), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_unhex("009aff1", out, 4), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_unhex("009aff100", out, 4), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_unhex("009aff1g", out, 4), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_unhex(" 09aff10", out, 4), MITHRIL_EINVAL);
    CHECK(out[0] == 7 && out[3] == 7);
    CHECK_EQ_INT(mithril_unhex("", out, 0), 0);
    mithril_hex(bin, 0, text);
    CHECK_EQ_STR(text, "");

    CHECK(mithril_addr_valid("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7"
                             "cc9a93cae41f3262"));
    CHECK(!mithril_addr_valid("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b"
                              "7cc9a93cae41f326"));
    CHECK(!mithril_addr_valid("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b"
                              "7cc9a93cae41f32622"));
    CHECK(!mithril_addr_valid("AF1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b"
                              "7cc9a93cae41f3262"));
    CHECK(!mithril_addr_valid(""));
    CHECK(!mithril_addr_valid(NULL));
}

/* Path of this program, for the re-run below. */
static const char *self_path;

/* The first line a fresh run of this program prints with env and args. */
static void
child_line(const char *env, const char *args, char *out, size_t n)
{
    char cmd[4200];
    FILE *p;

    snprintf(cmd, sizeof(cmd), "%s '%s' %s", env, self_path, args);
    out[0] = '\0';
    p = popen(cmd, "r");
    if (!p) {
        return;
    }
    if (!fgets(out, (int)n, p)) {
        out[0] = '\0';
    }
    out[strcspn(out, "\n")] = '\0';
    pclose(p);
}

/* The implementation a fresh process picks with MITHRIL_BLAKE3_IMPL=cap. */
static void
impl_under_cap(const char *cap, char *out, size_t n)
{
    char env[128];

    snprintf(env, sizeof(env), "MITHRIL_BLAKE3_IMPL=%s", cap);
    child_line(env, "--print-impl", out, n);
}

/*
 * 1 when a fresh process can run the implementation called name. Asked of
 * a child, not answered here: under valgrind this process sees fewer CPU
 * features (no AVX-512) than the untraced children it starts.
 */
static int
child_can_run(const char *name)
{
    char args[128], got[8];

    snprintf(args, sizeof(args), "--can-run %s", name);
    child_line("", args, got, sizeof(got));
    return strcmp(got, "1") == 0;
}

/* The environment caps the choice, never above what the CPU runs. */
static void
test_env_cap(void)
{
    const char *best = "portable";
    int can[sizeof(impls) / sizeof(impls[0])];
    char got[64];
    size_t i;

    for (i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
        can[i] = child_can_run(impls[i]);
        if (can[i]) {
            best = impls[i];
        }
    }
    CHECK(can[0]);
    for (i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
        impl_under_cap(impls[i], got, sizeof(got));
        CHECK_EQ_STR(got, can[i] ? impls[i] : best);
    }
    impl_under_cap("no-such", got, sizeof(got));
    CHECK_EQ_STR(got, best);
    impl_under_cap("", got, sizeof(got));
    CHECK_EQ_STR(got, best);
}

int
main(int argc, char **argv)
{
    size_t i;

    if (argc == 2 && strcmp(argv[1], "--print-impl") == 0) {
        printf("%s\n", mithril_blake3_impl());
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--can-run") == 0) {
        printf("%d\n", mi_b3_ops_named(argv[2]) != NULL);
        return 0;
    }
    self_path = argv[0];

    CHECK(load_vectors() == 0);
    printf("%zu vector cases\n", n_cases);
    RUN(test_impl_names);
    RUN(test_hex);
    RUN(test_env_cap);
    printf("blake3 default implementation: %s\n", mithril_blake3_impl());
    for (i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
        if (mi_b3_force_impl(impls[i]) != 0) {
            printf("skip %s (not supported here)\n", impls[i]);
            continue;
        }
        cur_impl = impls[i];
        CHECK_EQ_STR(mithril_blake3_impl(), impls[i]);
        printf("implementation %s\n", impls[i]);
        RUN(test_compress);
        RUN(test_hash_many);
        RUN(test_vectors);
        RUN(test_long_xof);
        RUN(test_large_random);
    }
    return check_report();
}
