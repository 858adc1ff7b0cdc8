/*
 * key.c - cache keys. A key names one compiled graph for one situation: the
 * graph's 32-byte hash, its inputs (dtype and shape each, a dynamic
 * dimension written as such rather than as the size seen), the device
 * class, and the toolchain fingerprint text the caller supplies.
 *
 * The storage key is BLAKE3 in derive_key mode, context
 * "mithril-cache 2026 storage key v1", over this canonical encoding
 * (docs/KEYS.md is the full description; integers little-endian):
 *
 *   "MKEY"  u8 version (1)  graph[32]
 *   u32 n_inputs, then per input in the order added:
 *       u32 len, dtype (canonical lowercase name)  u32 ndim  i64 dims[ndim]
 *   u8 device kind  u32 cc_major  u32 cc_minor  u32 len, isa
 *   u64 len, toolchain
 *
 * Invariants:
 *  - Every field has an explicit length or a fixed size, so two different
 *    keys never encode to the same bytes.
 *  - Aliases are resolved before encoding (float -> float32, ...), so equal
 *    meanings give equal keys; unknown dtypes are refused.
 *  - Nothing about the machine or process enters the encoding (no host,
 *    user, path, pid or device index): the same inputs give the same key
 *    everywhere.
 */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MI_KEY_MAGIC         "MKEY"
#define MI_KEY_VERSION       1
#define MI_KEY_CONTEXT       "mithril-cache 2026 storage key v1"
#define MI_KEY_MAX_INPUTS    4096
#define MI_KEY_MAX_TOOLCHAIN (64 * 1024)
#define MI_DTYPE_MAX         24

struct mi_key_input {
    char dtype[MI_DTYPE_MAX];
    uint32_t ndim;
    int64_t dims[MITHRIL_MAX_DIMS];
};

struct mithril_key {
    uint8_t graph[32];
    struct mi_key_input *inputs;
    size_t n_inputs;
    size_t cap_inputs;
    mithril_device device;
    int has_device;
    char *toolchain;
};

/* Canonical dtype names (torch's spelling), then accepted aliases. */
static const char *const dtype_names[] = {
    "bool",           "uint8",
    "int8",           "int16",
    "int32",          "int64",
    "uint16",         "uint32",
    "uint64",         "float16",
    "bfloat16",       "float32",
    "float64",        "complex32",
    "complex64",      "complex128",
    "float8_e4m3fn",  "float8_e4m3fnuz",
    "float8_e5m2",    "float8_e5m2fnuz",
    "float8_e8m0fnu", "float4_e2m1fn_x2",
    "qint8",          "quint8",
    "qint32",         "quint4x2",
    "quint2x4",       "int1",
    "int2",           "int3",
    "int4",           "int5",
    "int6",           "int7",
    "uint1",          "uint2",
    "uint3",          "uint4",
    "uint5",          "uint6",
    "uint7",          "bits1x8",
    "bits2x4",        "bits4x2",
    "bits8",          "bits16",
};

static const struct {
    const char *alias;
    const char *name;
} dtype_aliases[] = {
    {"float", "float32"},      {"double", "float64"},  {"half", "float16"},
    {"long", "int64"},         {"int", "int32"},       {"short", "int16"},
    {"char", "int8"},          {"byte", "uint8"},      {"cfloat", "complex64"},
    {"cdouble", "complex128"}, {"chalf", "complex32"}, {"fp16", "float16"},
    {"fp32", "float32"},       {"fp64", "float64"},    {"bf16", "bfloat16"},
};

/*
 * Resolve a dtype spelling of len bytes to its canonical name: case does
 * not matter and a "torch." prefix is dropped. NULL if unknown.
 */
static const char *
dtype_canonical(const char *text, size_t len)
{
    char low[MI_DTYPE_MAX + 8];
    const char *p = low;
    size_t i;

    if (len == 0 || len >= sizeof(low)) {
        return NULL;
    }
    for (i = 0; i < len; i++) {
        if (text[i] == '\0') {
            return NULL;
        }
        low[i] = (char)tolower((unsigned char)text[i]);
    }
    low[len] = '\0';
    if (!strncmp(p, "torch.", 6)) {
        p += 6;
    }
    for (i = 0; i < sizeof(dtype_names) / sizeof(dtype_names[0]); i++) {
        if (!strcmp(p, dtype_names[i])) {
            return dtype_names[i];
        }
    }
    for (i = 0; i < sizeof(dtype_aliases) / sizeof(dtype_aliases[0]); i++) {
        if (!strcmp(p, dtype_aliases[i].alias)) {
            return dtype_aliases[i].name;
        }
    }
    return NULL;
}

int
mithril_key_new(const uint8_t graph_hash[32], mithril_key **out)
{
    mithril_key *k;

    if (!graph_hash || !out) {
        return MITHRIL_EINVAL;
    }
    k = calloc(1, sizeof(*k));
    if (!k) {
        return -ENOMEM;
    }
    memcpy(k->graph, graph_hash, 32);
    *out = k;
    return 0;
}

void
mithril_key_free(mithril_key *k)
{
    if (!k) {
        return;
    }
    free(k->inputs);
    free(k->toolchain);
    free(k);
}

int
mithril_key_add_input(mithril_key *k, const char *dtype, const int64_t *dims,
                      size_t ndim)
{
    const char *name;
    struct mi_key_input *in, *grown;
    size_t i, cap;

    if (!k || !dtype || ndim > MITHRIL_MAX_DIMS || (ndim && !dims)) {
        return MITHRIL_EINVAL;
    }
    name = dtype_canonical(dtype, strlen(dtype));
    if (!name) {
        return MITHRIL_EINVAL;
    }
    for (i = 0; i < ndim; i++) {
        if (dims[i] < 0 && dims[i] != MITHRIL_DIM_DYNAMIC) {
            return MITHRIL_EINVAL;
        }
    }
    if (k->n_inputs >= MI_KEY_MAX_INPUTS) {
        return MITHRIL_ETOOBIG;
    }
    if (k->n_inputs == k->cap_inputs) {
        cap = k->cap_inputs ? k->cap_inputs * 2 : 4;
        grown = realloc(k->inputs, cap * sizeof(*grown));
        if (!grown) {
            return -ENOMEM;
        }
        k->inputs = grown;
        k->cap_inputs = cap;
    }
    in = &k->inputs[k->n_inputs];
    memset(in, 0, sizeof(*in));
    strcpy(in->dtype, name);
    in->ndim = (uint32_t)ndim;
    if (ndim) {
        memcpy(in->dims, dims, ndim * sizeof(dims[0]));
    }
    k->n_inputs++;
    return 0;
}

/* One dimension: "?" or decimal digits within int64. */
static int
parse_dim(const char *s, size_t len, int64_t *out)
{
    int64_t v = 0;
    size_t i;

    if (len == 1 && s[0] == '?') {
        *out = MITHRIL_DIM_DYNAMIC;
        return 0;
    }
    if (len == 0) {
        return MITHRIL_EINVAL;
    }
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return MITHRIL_EINVAL;
        }
        if (v > (INT64_MAX - (s[i] - '0')) / 10) {
            return MITHRIL_EINVAL;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int
mithril_key_add_input_text(mithril_key *k, const char *spec)
{
    int64_t dims[MITHRIL_MAX_DIMS];
    char dtype[MI_DTYPE_MAX + 8];
    const char *colon, *p, *end;
    size_t ndim = 0;
    int rc;

    if (!k || !spec) {
        return MITHRIL_EINVAL;
    }
    colon = strchr(spec, ':');
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof(dtype)) {
        return MITHRIL_EINVAL;
    }
    memcpy(dtype, spec, (size_t)(colon - spec));
    dtype[colon - spec] = '\0';

    /* "DTYPE:" is a scalar; otherwise comma-separated dims, none empty. */
    p = colon + 1;
    while (*p) {
        end = strchr(p, ',');
        if (!end) {
            end = p + strlen(p);
        }
        if (ndim == MITHRIL_MAX_DIMS) {
            return MITHRIL_EINVAL;
        }
        rc = parse_dim(p, (size_t)(end - p), &dims[ndim]);
        if (rc < 0) {
            return rc;
        }
        ndim++;
        if (*end == ',' && end[1] == '\0') {
            return MITHRIL_EINVAL;
        }
        p = *end ? end + 1 : end;
    }
    return mithril_key_add_input(k, dtype, dims, ndim);
}

int
mithril_key_set_device(mithril_key *k, const mithril_device *d)
{
    char text[32];

    if (!k || !d) {
        return MITHRIL_EINVAL;
    }
    /* Formatting validates the class; the text itself is not kept. */
    if (mithril_device_format(d, text, sizeof(text)) < 0) {
        return MITHRIL_EINVAL;
    }
    memset(&k->device, 0, sizeof(k->device));
    k->device.kind = d->kind;
    if (d->kind == MITHRIL_DEVICE_CUDA_CC) {
        k->device.cc_major = d->cc_major;
        k->device.cc_minor = d->cc_minor;
    } else if (d->kind == MITHRIL_DEVICE_CPU) {
        memcpy(k->device.isa, d->isa, sizeof(k->device.isa));
    }
    k->has_device = 1;
    return 0;
}

int
mithril_key_set_toolchain(mithril_key *k, const char *text)
{
    char *copy;
    size_t len;

    if (!k || !text) {
        return MITHRIL_EINVAL;
    }
    len = strlen(text);
    if (len > MI_KEY_MAX_TOOLCHAIN) {
        return MITHRIL_ETOOBIG;
    }
    copy = malloc(len + 1);
    if (!copy) {
        return -ENOMEM;
    }
    memcpy(copy, text, len + 1);
    free(k->toolchain);
    k->toolchain = copy;
    return 0;
}

/* ---- the canonical encoding ---- */

static uint8_t *
put_u32(uint8_t *p, uint32_t v)
{
    int i;

    for (i = 0; i < 4; i++) {
        *p++ = (uint8_t)(v >> (8 * i));
    }
    return p;
}

static uint8_t *
put_u64(uint8_t *p, uint64_t v)
{
    int i;

    for (i = 0; i < 8; i++) {
        *p++ = (uint8_t)(v >> (8 * i));
    }
    return p;
}

static uint8_t *
put_str(uint8_t *p, const char *s, size_t len, int wide)
{
    p = wide ? put_u64(p, len) : put_u32(p, (uint32_t)len);
    memcpy(p, s, len);
    return p + len;
}

int
mi_key_encode(const mithril_key *k, uint8_t **out, size_t *out_len)
{
    const char *tool = k && k->toolchain ? k->toolchain : "";
    size_t tool_len = strlen(tool), isa_len, size, i, j;
    uint8_t *buf, *p;

    if (!k || !out || !out_len || !k->has_device) {
        return MITHRIL_EINVAL;
    }
    isa_len = strlen(k->device.isa);
    size = 4 + 1 + 32 + 4;
    for (i = 0; i < k->n_inputs; i++) {
        size += 4 + strlen(k->inputs[i].dtype) + 4 + 8 * k->inputs[i].ndim;
    }
    size += 1 + 4 + 4 + 4 + isa_len + 8 + tool_len;
    buf = malloc(size);
    if (!buf) {
        return -ENOMEM;
    }

    p = buf;
    memcpy(p, MI_KEY_MAGIC, 4);
    p += 4;
    *p++ = MI_KEY_VERSION;
    memcpy(p, k->graph, 32);
    p += 32;
    p = put_u32(p, (uint32_t)k->n_inputs);
    for (i = 0; i < k->n_inputs; i++) {
        const struct mi_key_input *in = &k->inputs[i];

        p = put_str(p, in->dtype, strlen(in->dtype), 0);
        p = put_u32(p, in->ndim);
        for (j = 0; j < in->ndim; j++) {
            p = put_u64(p, (uint64_t)in->dims[j]);
        }
    }
    *p++ = (uint8_t)k->device.kind;
    p = put_u32(p, (uint32_t)k->device.cc_major);
    p = put_u32(p, (uint32_t)k->device.cc_minor);
    p = put_str(p, k->device.isa, isa_len, 0);
    p = put_str(p, tool, tool_len, 1);

    *out = buf;
    *out_len = (size_t)(p - buf);
    return 0;
}

int
mithril_key_storage(const mithril_key *k, char out[MITHRIL_HEX_SIZE])
{
    mithril_blake3 h;
    uint8_t digest[MITHRIL_BLAKE3_OUT_LEN];
    uint8_t *enc;
    size_t len;
    int rc;

    if (!out) {
        return MITHRIL_EINVAL;
    }
    rc = mi_key_encode(k, &enc, &len);
    if (rc < 0) {
        return rc;
    }
    mithril_blake3_init_derive_key(&h, MI_KEY_CONTEXT);
    mithril_blake3_update(&h, enc, len);
    mithril_blake3_finalize(&h, digest, sizeof(digest));
    free(enc);
    mithril_hex(digest, sizeof(digest), out);
    return 0;
}
