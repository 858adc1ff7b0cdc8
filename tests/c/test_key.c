/*
 * test_key.c - cache keys, device classes and size parsing: the canonical
 * encoding checked byte for byte against docs/KEYS.md, a pinned
 * known-answer key so the encoding cannot drift silently, sensitivity of
 * the key to every field, and rejection of malformed text.
 */
#include "check.h"
#include "internal.h"

#include <stdint.h>

static const uint8_t graph_a[32] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
    0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
    0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
};

/*
 * A key from text parts: inputs is a ';'-separated list of "DTYPE:DIMS"
 * (NULL for none). Returns the storage key's hex in out, or a negative
 * code from the first call that failed.
 */
static int
key_hex(const uint8_t *graph, const char *inputs, const char *device,
        const char *toolchain, char out[MITHRIL_HEX_SIZE])
{
    mithril_key *k = NULL;
    mithril_device d;
    char buf[512], *spec, *save = NULL;
    int rc;

    rc = mithril_key_new(graph, &k);
    if (rc < 0) {
        return rc;
    }
    if (inputs) {
        snprintf(buf, sizeof(buf), "%s", inputs);
        for (spec = strtok_r(buf, ";", &save); spec;
             spec = strtok_r(NULL, ";", &save)) {
            rc = mithril_key_add_input_text(k, spec);
            if (rc < 0) {
                goto out;
            }
        }
    }
    if (device) {
        rc = mithril_device_parse(device, &d);
        if (rc == 0) {
            rc = mithril_key_set_device(k, &d);
        }
        if (rc < 0) {
            goto out;
        }
    }
    if (toolchain) {
        rc = mithril_key_set_toolchain(k, toolchain);
        if (rc < 0) {
            goto out;
        }
    }
    rc = mithril_key_storage(k, out);

out:
    mithril_key_free(k);
    return rc;
}

#define BASE_INPUTS "float32:8,16;int64:?,128"
#define BASE_DEVICE "cuda:8.0"
#define BASE_TOOL   "torch=2.13 triton=3.5 python=3.12 cuda=12.8"

static void
test_deterministic(void)
{
    char a[MITHRIL_HEX_SIZE], b[MITHRIL_HEX_SIZE];

    CHECK_EQ_INT(key_hex(graph_a, BASE_INPUTS, BASE_DEVICE, BASE_TOOL, a), 0);
    CHECK_EQ_INT(key_hex(graph_a, BASE_INPUTS, BASE_DEVICE, BASE_TOOL, b), 0);
    CHECK_EQ_STR(a, b);
    CHECK(mithril_addr_valid(a));
}

/* Each variant differs from the base in one field and must change it. */
static void
test_every_field_matters(void)
{
    static const struct {
        const char *inputs, *device, *tool;
    } v[] = {
        {"float32:9,16;int64:?,128", BASE_DEVICE, BASE_TOOL},
        {"float32:8,17;int64:?,128", BASE_DEVICE, BASE_TOOL},
        {"float32:8,16;int64:?,129", BASE_DEVICE, BASE_TOOL},
        {"float32:8,16;int64:1,128", BASE_DEVICE, BASE_TOOL},
        {"float32:?,16;int64:?,128", BASE_DEVICE, BASE_TOOL},
        {"float32:8,16;int64:0,128", BASE_DEVICE, BASE_TOOL},
        {"float16:8,16;int64:?,128", BASE_DEVICE, BASE_TOOL},
        {"float32:8,16;int32:?,128", BASE_DEVICE, BASE_TOOL},
        {"float32:8,16,1;int64:?,128", BASE_DEVICE, BASE_TOOL},
        {"float32:8;int64:?,128", BASE_DEVICE, BASE_TOOL},
        {"float32:;int64:?,128", BASE_DEVICE, BASE_TOOL},
        {"int64:?,128;float32:8,16", BASE_DEVICE, BASE_TOOL},
        {"float32:8,16", BASE_DEVICE, BASE_TOOL},
        {"float32:8,16;int64:?,128;float32:8,16", BASE_DEVICE, BASE_TOOL},
        {NULL, BASE_DEVICE, BASE_TOOL},
        {BASE_INPUTS, "cuda:8.6", BASE_TOOL},
        {BASE_INPUTS, "cuda:9.0", BASE_TOOL},
        {BASE_INPUTS, "cuda", BASE_TOOL},
        {BASE_INPUTS, "cpu", BASE_TOOL},
        {BASE_INPUTS, "cpu:avx2", BASE_TOOL},
        {BASE_INPUTS, "cpu:avx512", BASE_TOOL},
        {BASE_INPUTS, BASE_DEVICE, "torch=2.13 triton=3.5 python=3.12"},
        {BASE_INPUTS, BASE_DEVICE, ""},
        {BASE_INPUTS, BASE_DEVICE, NULL},
    };
    char base[MITHRIL_HEX_SIZE], seen[64][MITHRIL_HEX_SIZE];
    size_t i, j, n = sizeof(v) / sizeof(v[0]);
    uint8_t graph_b[32];

    CHECK_EQ_INT(key_hex(graph_a, BASE_INPUTS, BASE_DEVICE, BASE_TOOL, base),
                 0);
    for (i = 0; i < n; i++) {
        CHECK_EQ_INT(
            key_hex(graph_a, v[i].inputs, v[i].device, v[i].tool, seen[i]), 0);
        if (!strcmp(seen[i], base)) {
            fprintf(stderr, "variant %zu did not change the key\n", i);
        }
        CHECK(strcmp(seen[i], base) != 0);
    }
    /* No two variants collide either (except "" vs unset toolchain). */
    for (i = 0; i < n; i++) {
        for (j = i + 1; j < n; j++) {
            if (v[i].tool && v[j].tool) {
                CHECK(strcmp(seen[i], seen[j]) != 0);
            }
        }
    }
    CHECK_EQ_STR(seen[n - 2], seen[n - 1]);

    /* The graph hash: flip one bit of its last byte. */
    memcpy(graph_b, graph_a, 32);
    graph_b[31] ^= 1;
    CHECK_EQ_INT(key_hex(graph_b, BASE_INPUTS, BASE_DEVICE, BASE_TOOL, seen[n]),
                 0);
    CHECK(strcmp(seen[n], base) != 0);
}

static void
test_aliases_are_canonical(void)
{
    char a[MITHRIL_HEX_SIZE], b[MITHRIL_HEX_SIZE];

    CHECK_EQ_INT(key_hex(graph_a, "float32:4;float16:2;int64:1;bfloat16:3",
                         "cpu", "", a),
                 0);
    CHECK_EQ_INT(key_hex(graph_a, "float:4;half:2;long:1;BF16:3", "cpu", "", b),
                 0);
    CHECK_EQ_STR(a, b);
    CHECK_EQ_INT(key_hex(graph_a,
                         "torch.float32:4;Float16:2;torch.long:1;"
                         "torch.bfloat16:3",
                         "cpu", "", b),
                 0);
    CHECK_EQ_STR(a, b);
    CHECK_EQ_INT(
        key_hex(graph_a, "double:1;int:1;short:1;bool:1", "cpu", "", a), 0);
    CHECK_EQ_INT(
        key_hex(graph_a, "float64:1;int32:1;int16:1;bool:1", "cpu", "", b), 0);
    CHECK_EQ_STR(a, b);
}

/* The encoding, written out by hand from docs/KEYS.md. */
static void
test_encoding_by_hand(void)
{
    static const uint8_t want[] = {
        'M',
        'K',
        'E',
        'Y',
        1,
        /* graph */
        0x00,
        0x01,
        0x02,
        0x03,
        0x04,
        0x05,
        0x06,
        0x07,
        0x08,
        0x09,
        0x0a,
        0x0b,
        0x0c,
        0x0d,
        0x0e,
        0x0f,
        0x10,
        0x11,
        0x12,
        0x13,
        0x14,
        0x15,
        0x16,
        0x17,
        0x18,
        0x19,
        0x1a,
        0x1b,
        0x1c,
        0x1d,
        0x1e,
        0x1f,
        /* two inputs */
        2,
        0,
        0,
        0,
        /* "float32", 2 dims: 8, dynamic */
        7,
        0,
        0,
        0,
        'f',
        'l',
        'o',
        'a',
        't',
        '3',
        '2',
        2,
        0,
        0,
        0,
        8,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        /* "int64", scalar */
        5,
        0,
        0,
        0,
        'i',
        'n',
        't',
        '6',
        '4',
        0,
        0,
        0,
        0,
        /* device: cuda cc 9.0, no isa */
        3,
        9,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        /* toolchain "t=1" */
        3,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        't',
        '=',
        '1',
    };
    static const uint8_t want_cpu_tail[] = {
        1,   0,   0,   0,   0, 0, 0, 0, 0, 4, 0, 0, 0,
        'a', 'v', 'x', '2', 0, 0, 0, 0, 0, 0, 0, 0,
    };
    mithril_key *k = NULL;
    mithril_device d;
    uint8_t *enc = NULL;
    size_t len = 0;
    const int64_t dims[2] = {8, MITHRIL_DIM_DYNAMIC};

    CHECK_EQ_INT(mithril_key_new(graph_a, &k), 0);
    CHECK_EQ_INT(mithril_key_add_input(k, "float", dims, 2), 0);
    CHECK_EQ_INT(mithril_key_add_input_text(k, "long:"), 0);
    CHECK_EQ_INT(mi_key_encode(k, &enc, &len), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_device_parse("cuda:9.0", &d), 0);
    CHECK_EQ_INT(mithril_key_set_device(k, &d), 0);
    CHECK_EQ_INT(mithril_key_set_toolchain(k, "t=1"), 0);
    CHECK_EQ_INT(mi_key_encode(k, &enc, &len), 0);
    CHECK_EQ_INT(len, sizeof(want));
    CHECK(len == sizeof(want) && memcmp(enc, want, len) == 0);
    free(enc);

    /* A CPU class with an ISA, and no toolchain at all. */
    mithril_key_free(k);
    CHECK_EQ_INT(mithril_key_new(graph_a, &k), 0);
    CHECK_EQ_INT(mithril_device_parse("cpu:avx2", &d), 0);
    CHECK_EQ_INT(mithril_key_set_device(k, &d), 0);
    CHECK_EQ_INT(mi_key_encode(k, &enc, &len), 0);
    CHECK_EQ_INT(len, 4 + 1 + 32 + 4 + sizeof(want_cpu_tail));
    CHECK(len == 41 + sizeof(want_cpu_tail) &&
          memcmp(enc + 41, want_cpu_tail, sizeof(want_cpu_tail)) == 0);
    CHECK(memcmp(enc + 37, "\0\0\0\0", 4) == 0);
    free(enc);
    mithril_key_free(k);
}

/*
 * Pinned known answers, computed once from this implementation after the
 * encoding above was checked by hand (and cross-checked with
 * `b3sum --derive-key` in tests/cli/test_key_cli.py). A change here means
 * every stored key changes: that needs a new encoding version.
 */
static void
test_known_answer(void)
{
    char hex[MITHRIL_HEX_SIZE];

    CHECK_EQ_INT(key_hex(graph_a, "float32:8,?;int64:", "cuda:9.0", "t=1", hex),
                 0);
    CHECK_EQ_STR(
        hex,
        "01d9adff8c1dcf8ebb66bc492b51d209da7c34f18d0520851629b0372220ea64");
    CHECK_EQ_INT(key_hex(graph_a, NULL, "cpu:avx2", NULL, hex), 0);
    CHECK_EQ_STR(
        hex,
        "77cd6cc739b7c2060bc0547387ed8ee0bef178252a31ccb6b5ec49dd6c29c759");
}

static void
test_malformed_inputs(void)
{
    static const char *const bad[] = {
        "float32",
        "float32:8,",
        "float32:,8",
        "float32:8,,16",
        "float32:-1",
        "float32:8,-3",
        "float32:a",
        "float32:8x",
        "float32: 8",
        "float32:8 ",
        ":8",
        "float33:8",
        "complex:8",
        "float32:?1",
        "float32:??",
        "tensor:1",
        "float32:99999999999999999999",
        "float32:9223372036854775808",
        "float32:+8",
        "",
        "float32:1.5",
    };
    char many[4096];
    mithril_key *k = NULL;
    char hex[MITHRIL_HEX_SIZE];
    int64_t dims[MITHRIL_MAX_DIMS + 1];
    size_t i;
    int n;

    CHECK_EQ_INT(mithril_key_new(graph_a, &k), 0);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (mithril_key_add_input_text(k, bad[i]) != MITHRIL_EINVAL) {
            fprintf(stderr, "accepted '%s'\n", bad[i]);
            CHECK(0);
        }
    }
    /* The largest int64 is a valid dimension. */
    CHECK_EQ_INT(mithril_key_add_input_text(k, "float32:9223372036854775807"),
                 0);

    /* MITHRIL_MAX_DIMS dims are fine, one more is not. */
    n = snprintf(many, sizeof(many), "int8:1");
    for (i = 1; i < MITHRIL_MAX_DIMS; i++) {
        n += snprintf(many + n, sizeof(many) - (size_t)n, ",1");
    }
    CHECK_EQ_INT(mithril_key_add_input_text(k, many), 0);
    snprintf(many + n, sizeof(many) - (size_t)n, ",1");
    CHECK_EQ_INT(mithril_key_add_input_text(k, many), MITHRIL_EINVAL);

    for (i = 0; i <= MITHRIL_MAX_DIMS; i++) {
        dims[i] = 2;
    }
    CHECK_EQ_INT(mithril_key_add_input(k, "float32", dims, 65), MITHRIL_EINVAL);
    dims[0] = -2;
    CHECK_EQ_INT(mithril_key_add_input(k, "float32", dims, 1), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_key_add_input(k, "nope", dims + 1, 1), MITHRIL_EINVAL);

    /* No device: no storage key. */
    CHECK_EQ_INT(mithril_key_storage(k, hex), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_key_set_toolchain(k, NULL), MITHRIL_EINVAL);
    mithril_key_free(k);
    CHECK_EQ_INT(mithril_key_new(NULL, &k), MITHRIL_EINVAL);
}

static void
test_device_round_trip(void)
{
    static const char *const good[] = {
        "cpu",      "cpu:avx512", "cpu:avx2",  "cpu:sse42", "cpu:x86_64",
        "cpu:neon", "cpu:sve",    "cuda",      "cuda:7.5",  "cuda:8.0",
        "cuda:8.6", "cuda:9.0",   "cuda:10.0", "cuda:12.1", "cuda:120.10",
    };
    static const char *const bad[] = {
        "cuda:8",      "cuda:x.y",   "gpu",       "cpu:avx3",  "cpu:",
        "cuda:",       "cuda:8.0x",  "cpu:avx2 ", " cpu",      "CPU",
        "cuda:08.0",   "cuda:8.",    "cuda:.0",   "cuda:0.0",  "",
        "cuda:8.0.1",  "cuda:-8.0",  "cuda:+8.0", "cuda:8.00", "cpu:AVX2",
        "cuda:1000.0", "cpu:avx2:x", "cudaa",     "cpu0",
    };
    mithril_device d, e;
    char buf[32];
    size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        CHECK_EQ_INT(mithril_device_parse(good[i], &d), 0);
        CHECK_EQ_INT(mithril_device_format(&d, buf, sizeof(buf)), 0);
        CHECK_EQ_STR(buf, good[i]);
        CHECK_EQ_INT(mithril_device_parse(buf, &e), 0);
        CHECK(memcmp(&d, &e, sizeof(d)) == 0);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (mithril_device_parse(bad[i], &d) != MITHRIL_EINVAL) {
            fprintf(stderr, "accepted device '%s'\n", bad[i]);
            CHECK(0);
        }
    }
    CHECK_EQ_INT(mithril_device_parse("cuda:12.1", &d), 0);
    CHECK_EQ_INT(d.kind, MITHRIL_DEVICE_CUDA_CC);
    CHECK_EQ_INT(d.cc_major, 12);
    CHECK_EQ_INT(d.cc_minor, 1);
    CHECK_EQ_INT(mithril_device_format(&d, buf, 9), MITHRIL_ETOOBIG);
    CHECK_EQ_INT(mithril_device_format(&d, buf, 10), 0);
    d.kind = 7;
    CHECK_EQ_INT(mithril_device_format(&d, buf, sizeof(buf)), MITHRIL_EINVAL);
}

static void
test_detect(void)
{
    mithril_device d, e;
    char buf[32], want[32];
    const char *isa = mithril_cpu_isa();

    CHECK(isa && isa[0]);
    CHECK(isa == mithril_cpu_isa());
    snprintf(want, sizeof(want), "cpu:%s", isa);
    CHECK_EQ_INT(mithril_device_parse(want, &d), 0);

    CHECK_EQ_INT(mithril_device_detect(&d), 0);
    CHECK_EQ_INT(mithril_device_detect(&e), 0);
    CHECK(memcmp(&d, &e, sizeof(d)) == 0);
    CHECK_EQ_INT(mithril_device_format(&d, buf, sizeof(buf)), 0);
    printf("detected %s (cpu isa %s)\n", buf, isa);
    if (d.kind == MITHRIL_DEVICE_CPU) {
        CHECK_EQ_STR(buf, want);
    } else {
        CHECK_EQ_INT(d.kind, MITHRIL_DEVICE_CUDA_CC);
    }
}

static void
test_parse_size(void)
{
    static const struct {
        const char *text;
        uint64_t want;
    } good[] = {
        {"123", 123},
        {"0", 0},
        {"64K", 64ULL << 10},
        {"500M", 500ULL << 20},
        {"10G", 10ULL << 30},
        {"1.5G", 3ULL << 29},
        {"2T", 2ULL << 40},
        {"10g", 10ULL << 30},
        {"10GB", 10ULL << 30},
        {"10GiB", 10ULL << 30},
        {"10gib", 10ULL << 30},
        {"64kb", 64ULL << 10},
        {"123B", 123},
        {"0.5K", 512},
        {"18446744073709551615", UINT64_MAX},
        {"15E", 15ULL << 60},
    };
    static const char *const bad[] = {
        "",
        "-1",
        "-1G",
        "G",
        "10X",
        "10 G",
        " 10G",
        "10G ",
        "1.G",
        ".5G",
        "1.5",
        "10iB",
        "10Gi",
        "10GBB",
        "1e9",
        "0x10",
        "16E",
        "18446744073709551616",
        "99999999999999999999999",
        "10GiBs",
        "+5M",
    };
    uint64_t v;
    size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = 7;
        CHECK_EQ_INT(mithril_parse_size(good[i].text, &v), 0);
        if (v != good[i].want) {
            fprintf(stderr, "parse_size(%s) = %llu\n", good[i].text,
                    (unsigned long long)v);
            CHECK(0);
        }
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 7;
        if (mithril_parse_size(bad[i], &v) != MITHRIL_EINVAL) {
            fprintf(stderr, "accepted size '%s'\n", bad[i]);
            CHECK(0);
        }
        CHECK(v == 7);
    }
}

/* xorshift64: a fixed sequence, so a failure can be replayed. */
static uint64_t
next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

/*
 * Random text built from the tokens the parsers care about: nothing may
 * crash, and whatever is accepted must come back unchanged where the
 * format is canonical (device classes).
 */
static void
test_random_text(void)
{
    static const char *const tokens[] = {
        "cpu",   "cuda", ":", ":", ".",  ".",  ",",
        ",",     "?",    "0", "1", "8",  "12", "9",
        "avx2",  "neon", "x", " ", "-",  "+",  "float32",
        "int64", "half", "G", "K", "iB", "B",  "99999999999",
    };
    uint64_t state = 0x9e3779b97f4a7c15ULL, size;
    char text[64], back[32];
    mithril_device d;
    mithril_key *k = NULL;
    int i, j, n, len, dev_ok = 0, input_ok = 0, size_ok = 0;
    const char *t;

    CHECK_EQ_INT(mithril_key_new(graph_a, &k), 0);
    for (i = 0; i < 200000; i++) {
        len = 0;
        n = (int)(next_random(&state) % 6);
        for (j = 0; j < n; j++) {
            t = tokens[next_random(&state) %
                       (sizeof(tokens) / sizeof(tokens[0]))];
            if (len + strlen(t) >= sizeof(text)) {
                break;
            }
            memcpy(text + len, t, strlen(t));
            len += (int)strlen(t);
        }
        text[len] = '\0';
        if (mithril_device_parse(text, &d) == 0) {
            dev_ok++;
            CHECK_EQ_INT(mithril_device_format(&d, back, sizeof(back)), 0);
            CHECK_EQ_STR(back, text);
        }
        if (mithril_parse_size(text, &size) == 0) {
            size_ok++;
            CHECK(strchr(text, '-') == NULL && strchr(text, ' ') == NULL);
        }
        if (mithril_key_add_input_text(k, text) == 0) {
            input_ok++;
            CHECK(strchr(text, ':') != NULL);
            CHECK(strchr(text, '-') == NULL && strchr(text, ' ') == NULL);
        }
        if (i % 1000 == 0) {
            mithril_key_free(k);
            k = NULL;
            CHECK_EQ_INT(mithril_key_new(graph_a, &k), 0);
        }
    }
    mithril_key_free(k);
    printf("random texts accepted: %d devices, %d sizes, %d inputs\n", dev_ok,
           size_ok, input_ok);
    CHECK(dev_ok > 0 && size_ok > 0 && input_ok > 0);
}

int
main(void)
{
    RUN(test_deterministic);
    RUN(test_every_field_matters);
    RUN(test_aliases_are_canonical);
    RUN(test_encoding_by_hand);
    RUN(test_known_answer);
    RUN(test_malformed_inputs);
    RUN(test_device_round_trip);
    RUN(test_detect);
    RUN(test_parse_size);
    RUN(test_random_text);
    return check_report();
}
