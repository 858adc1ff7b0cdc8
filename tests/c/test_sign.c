/*
 * test_sign.c - the wire encoding of entries and its signature: round
 * trips, strict parsing, the signing key derivation (checked against an
 * independent computation with the public BLAKE3 calls), rejection of
 * unsigned, tampered and unsafely named entries, and the rejected counter.
 */
#include "check.h"
#include "sign.h"

static mithril_store *
open_store(char **dir)
{
    mithril_store *s = NULL;

    *dir = check_tmpdir();
    CHECK_EQ_INT(mithril_store_open(
                     *dir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG, &s),
                 0);
    return s;
}

static void
item_init(mithril_item *it, const char *name, uint64_t size, char fill)
{
    it->name = (char *)name;
    it->size = size;
    it->mode = 0644;
    memset(it->addr, fill, 64);
    it->addr[64] = '\0';
}

static uint64_t
rejected(mithril_store *s)
{
    mithril_stats st;

    memset(&st, 0, sizeof(st));
    CHECK_EQ_INT(mithril_stats_get(s, &st), 0);
    return st.rejected;
}

static void
test_round_trip(void)
{
    char *dir;
    mithril_store *s = open_store(&dir);
    mithril_item items[2];
    struct mi_buf b = {0};
    struct mi_wire w;

    item_init(&items[0], "inductor/fx/a b\nc", 12, 'a');
    item_init(&items[1], "triton/0/k/x.so", 1u << 30, 'b');
    items[1].mode = 0755;
    CHECK_EQ_INT(
        mi_wire_encode(s, "w1/0123456789abcdef/x", "tc=0123 k=v", items, 2, &b),
        0);
    CHECK_EQ_INT(mi_wire_decode(b.data, b.len, &w), 0);
    CHECK_EQ_STR(w.key, "w1/0123456789abcdef/x");
    CHECK_EQ_STR(w.meta, "tc=0123 k=v");
    CHECK_EQ_INT(w.n_items, 2);
    CHECK_EQ_STR(w.items[0].name, "inductor/fx/a b\nc");
    CHECK_EQ_INT(w.items[1].size, 1u << 30);
    CHECK_EQ_INT(w.items[1].mode, 0755);
    CHECK_EQ_INT(w.has_sig, 0);
    CHECK_EQ_INT(mi_wire_accept(s, &w, "test"), 0);
    mi_wire_release(&w);

    /* Every strict prefix and a trailing byte are malformed. */
    {
        size_t n;
        int bad = 0;

        for (n = 0; n < b.len; n++) {
            if (mi_wire_decode(b.data, n, &w) == 0) {
                mi_wire_release(&w);
                bad++;
            }
        }
        CHECK_EQ_INT(bad, 0);
        mi_buf_append(&b, "x", 1);
        CHECK_EQ_INT(mi_wire_decode(b.data, b.len, &w), MITHRIL_EFORMAT);
    }
    mi_buf_release(&b);
    mithril_store_close(s);
    check_rmrf(dir);
    free(dir);
}

static void
test_signature(void)
{
    const char *secret = "correct horse battery staple";
    char *dir;
    char *dir2;
    mithril_store *s = open_store(&dir);
    mithril_store *t = open_store(&dir2);
    mithril_item it;
    struct mi_buf b = {0};
    struct mi_buf canon = {0};
    struct mi_wire w;
    uint8_t key[32];
    uint8_t mac[32];
    char hex[MITHRIL_HEX_SIZE];
    mithril_blake3 h;
    char *p;
    uint64_t before;

    item_init(&it, "a/b", 3, 'c');
    CHECK_EQ_INT(mithril_store_set_secret(s, secret, strlen(secret)), 0);
    CHECK_EQ_INT(mi_wire_encode(s, "k", "tc=x", &it, 1, &b), 0);
    CHECK(strstr(b.data, "\nsig ") != NULL);

    /* The signature is keyed BLAKE3 over the text before "sig ". */
    mithril_blake3_init_derive_key(&h,
                                   "mithril-cache 2026 entry signing key v1");
    mithril_blake3_update(&h, secret, strlen(secret));
    mithril_blake3_finalize(&h, key, sizeof(key));
    p = strstr(b.data, "sig ");
    mithril_blake3_init_keyed(&h, key);
    mithril_blake3_update(&h, b.data, (size_t)(p - b.data));
    mithril_blake3_finalize(&h, mac, sizeof(mac));
    mithril_hex(mac, sizeof(mac), hex);
    CHECK(strncmp(p + 4, hex, 64) == 0);

    /* Same secret: accepted. */
    CHECK_EQ_INT(mithril_store_set_secret(t, secret, strlen(secret)), 0);
    CHECK_EQ_INT(mi_wire_decode(b.data, b.len, &w), 0);
    CHECK_EQ_INT(w.has_sig, 1);
    before = rejected(t);
    CHECK_EQ_INT(mi_wire_accept(t, &w, "test"), 0);
    mi_wire_release(&w);

    /* A changed meta byte: rejected and counted. */
    p = strstr(b.data, "tc=x");
    p[3] = 'y';
    CHECK_EQ_INT(mi_wire_decode(b.data, b.len, &w), 0);
    CHECK_EQ_INT(mi_wire_accept(t, &w, "test"), MITHRIL_ESIGNATURE);
    CHECK_EQ_INT(rejected(t), before + 1);
    mi_wire_release(&w);

    /* Another secret: rejected. */
    p[3] = 'x';
    CHECK_EQ_INT(mithril_store_set_secret(t, "other", 5), 0);
    CHECK_EQ_INT(mi_wire_decode(b.data, b.len, &w), 0);
    CHECK_EQ_INT(mi_wire_accept(t, &w, "test"), MITHRIL_ESIGNATURE);
    mi_wire_release(&w);

    /* Unsigned while a secret is set: rejected; no secret: accepted. */
    CHECK_EQ_INT(mithril_store_set_secret(s, NULL, 0), 0);
    CHECK_EQ_INT(mi_wire_encode(s, "k", "tc=x", &it, 1, &canon), 0);
    CHECK(strstr(canon.data, "\nsig ") == NULL);
    CHECK_EQ_INT(mi_wire_decode(canon.data, canon.len, &w), 0);
    CHECK_EQ_INT(mi_wire_accept(t, &w, "test"), MITHRIL_ESIGNATURE);
    CHECK_EQ_INT(mi_wire_accept(s, &w, "test"), 0);
    mi_wire_release(&w);
    CHECK_EQ_INT(rejected(t), before + 3);

    mi_buf_release(&b);
    mi_buf_release(&canon);
    mithril_store_close(s);
    mithril_store_close(t);
    check_rmrf(dir);
    check_rmrf(dir2);
    free(dir);
    free(dir2);
}

static void
test_names(void)
{
    static const char *const bad[] = {"",       "/etc/passwd", "../x",
                                      "a/../b", "a//b",        "a/",
                                      "./a",    "a/.",         "a/.."};
    static const char *const good[] = {"a", "a/b", "a/.b", "..a/b", "a/b.."};
    char *dir;
    mithril_store *s = open_store(&dir);
    mithril_item it;
    struct mi_buf b = {0};
    struct mi_wire w;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_EQ_INT(mi_name_safe(bad[i]), 0);
    }
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        CHECK_EQ_INT(mi_name_safe(good[i]), 1);
    }
    item_init(&it, "../../.bashrc", 1, 'd');
    CHECK_EQ_INT(mi_wire_encode(s, "k", "", &it, 1, &b), 0);
    CHECK_EQ_INT(mi_wire_decode(b.data, b.len, &w), 0);
    CHECK_EQ_INT(mi_wire_accept(s, &w, "test"), MITHRIL_EPATH);
    CHECK_EQ_INT(rejected(s), 1);
    mi_wire_release(&w);
    mi_buf_release(&b);
    mithril_store_close(s);
    check_rmrf(dir);
    free(dir);
}

static void
test_secret_env(void)
{
    char *dir = check_tmpdir();
    char path[4200];
    mithril_store *s = NULL;
    mithril_store *t = NULL;
    mithril_item it;
    struct mi_buf a = {0};
    struct mi_buf b = {0};
    FILE *f;

    /* MITHRIL_SECRET_FILE with a trailing newline equals MITHRIL_SECRET. */
    snprintf(path, sizeof(path), "%s/secret", dir);
    f = fopen(path, "w");
    fputs("s3cret\n", f);
    fclose(f);
    item_init(&it, "x", 1, 'e');
    setenv("MITHRIL_SECRET", "s3cret", 1);
    CHECK_EQ_INT(mithril_store_open(dir, MITHRIL_OPEN_CREATE, &s), 0);
    CHECK_EQ_INT(mi_wire_encode(s, "k", "", &it, 1, &a), 0);
    unsetenv("MITHRIL_SECRET");
    setenv("MITHRIL_SECRET_FILE", path, 1);
    CHECK_EQ_INT(mithril_store_open(dir, MITHRIL_OPEN_CREATE, &t), 0);
    CHECK_EQ_INT(mi_wire_encode(t, "k", "", &it, 1, &b), 0);
    unsetenv("MITHRIL_SECRET_FILE");
    CHECK(strstr(a.data, "sig ") != NULL);
    CHECK_EQ_STR(a.data, b.data);
    mi_buf_release(&a);
    mi_buf_release(&b);
    mithril_store_close(s);
    mithril_store_close(t);
    check_rmrf(dir);
    free(dir);
}

/* A secret file that cannot be read: trust nothing, sign nothing. */
static void
test_secret_unusable(void)
{
    char *dir = check_tmpdir();
    char path[4200];
    mithril_store *s = NULL;
    mithril_store *t = NULL;
    mithril_item it;
    struct mi_wire w;
    struct mi_buf b = {0};

    item_init(&it, "x", 1, 'e');
    CHECK_EQ_INT(mithril_store_open(dir, MITHRIL_OPEN_CREATE, &t), 0);
    CHECK_EQ_INT(mi_wire_encode(t, "k", "", &it, 1, &b), 0); /* unsigned */
    snprintf(path, sizeof(path), "%s/no-such-secret", dir);
    setenv("MITHRIL_SECRET_FILE", path, 1);
    CHECK_EQ_INT(mithril_store_open(dir, MITHRIL_OPEN_CREATE, &s), 0);
    CHECK_EQ_INT(mi_sign_has_secret(s), MITHRIL_ESIGNATURE);
    unsetenv("MITHRIL_SECRET_FILE");
    CHECK_EQ_INT(mi_wire_decode(b.data, b.len, &w), 0);
    CHECK_EQ_INT(mi_wire_accept(s, &w, "test"), MITHRIL_ESIGNATURE);
    CHECK_EQ_INT(rejected(s), 1);
    mi_wire_release(&w);
    mi_buf_release(&b);
    CHECK_EQ_INT(mi_wire_encode(s, "k", "", &it, 1, &b), MITHRIL_ESIGNATURE);
    mi_buf_release(&b);
    /* Setting a secret through the API clears the error. */
    CHECK_EQ_INT(mithril_store_set_secret(s, "k1", 2), 0);
    CHECK_EQ_INT(mi_sign_has_secret(s), 1);
    mithril_store_close(s);
    mithril_store_close(t);
    check_rmrf(dir);
    free(dir);
}

static void
test_tags(void)
{
    char tag[17];
    uint8_t d[32];
    char hex[MITHRIL_HEX_SIZE];
    const char *text = "torch=2.13.0+cpu triton=none python=3.11 "
                       "device=cpu:avx2";

    mi_toolchain_tag("0123456789abcdef", tag);
    CHECK_EQ_STR(tag, "0123456789abcdef");
    mi_toolchain_tag(text, tag);
    mithril_blake3_hash(text, strlen(text), d);
    mithril_hex(d, 32, hex);
    hex[16] = '\0';
    CHECK_EQ_STR(tag, hex);
    CHECK(mi_meta_has_tag("tc=0123456789abcdef kind=code", "0123456789abcdef"));
    CHECK(mi_meta_has_tag("kind=code tc=0123456789abcdef", "0123456789abcdef"));
    CHECK(
        !mi_meta_has_tag("tc=0123456789abcdef0 kind=code", "0123456789abcdef"));
    CHECK(!mi_meta_has_tag("xtc=0123456789abcdef", "0123456789abcdef"));
    CHECK(!mi_meta_has_tag("", "0123456789abcdef"));
}

int
main(void)
{
    RUN(test_round_trip);
    RUN(test_signature);
    RUN(test_names);
    RUN(test_secret_env);
    RUN(test_secret_unusable);
    RUN(test_tags);
    return check_report();
}
