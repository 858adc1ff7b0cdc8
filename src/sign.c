/*
 * sign.c - trust for entries that cross a machine boundary: the wire
 * encoding of an entry shared by the Redis tier and archives, its keyed
 * BLAKE3 signature, and the checks an entry from outside must pass.
 *
 * Wire encoding (text, version 1; every variable field is length-prefixed
 * so names may hold any byte but NUL):
 *
 *   mithril-entry 1\n
 *   key <len> <key bytes>\n
 *   meta <len> <meta bytes>\n
 *   items <n>\n
 *   item <addr> <size> <mode, octal> <len> <name bytes>\n     (n times)
 *   sig <64 hex>\n                                            (optional)
 *   end\n
 *
 * The canonical encoding is the same text without the sig line; it is what
 * gets signed. A verifier re-encodes what it parsed and checks the
 * signature over that, so no byte outside the parsed fields can ride along.
 *
 * Signing key: BLAKE3 derive_key("mithril-cache 2026 entry signing key v1",
 * secret); signature: keyed BLAKE3 (that key) over the canonical encoding.
 * The secret comes from mithril_store_set_secret, else MITHRIL_SECRET
 * (text) or MITHRIL_SECRET_FILE (a file; one trailing newline dropped),
 * read once per store at first use.
 *
 * Invariant: an entry that fails mi_wire_accept is never recorded; the
 * refusal is logged and counted as "rejected", and callers treat it as a
 * miss.
 */
#include "sign.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SIGN_CONTEXT    "mithril-cache 2026 entry signing key v1"
#define SECRET_FILE_MAX 65536

static pthread_mutex_t secret_mu = PTHREAD_MUTEX_INITIALIZER;

void
mi_buf_release(struct mi_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

static int
buf_reserve(struct mi_buf *b, size_t extra)
{
    size_t want = b->len + extra + 1;
    size_t cap = b->cap ? b->cap : 256;
    char *p;

    if (want <= b->cap) {
        return 0;
    }
    while (cap < want) {
        cap *= 2;
    }
    p = realloc(b->data, cap);
    if (!p) {
        return -ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int
mi_buf_append(struct mi_buf *b, const void *data, size_t n)
{
    int rc = buf_reserve(b, n);

    if (rc < 0) {
        return rc;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int
mi_buf_printf(struct mi_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    int rc;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return MITHRIL_EINVAL;
    }
    rc = buf_reserve(b, (size_t)n);
    if (rc < 0) {
        return rc;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void
mi_wire_release(struct mi_wire *w)
{
    size_t i;

    free(w->key);
    free(w->meta);
    for (i = 0; i < w->n_items && w->items; i++) {
        free(w->items[i].name);
    }
    free(w->items);
    memset(w, 0, sizeof(*w));
}

/* ---- secret ---- */

int
mithril_store_set_secret(mithril_store *s, const void *secret, size_t len)
{
    mithril_blake3 h;

    if (!s || (!secret && len)) {
        return MITHRIL_EINVAL;
    }
    pthread_mutex_lock(&secret_mu);
    __atomic_store_n(&s->secret_loaded, 1, __ATOMIC_RELEASE);
    s->secret_error = 0;
    if (len == 0) {
        memset(s->secret_key, 0, sizeof(s->secret_key));
        s->has_secret = 0;
    } else {
        mithril_blake3_init_derive_key(&h, SIGN_CONTEXT);
        mithril_blake3_update(&h, secret, len);
        mithril_blake3_finalize(&h, s->secret_key, MITHRIL_BLAKE3_KEY_LEN);
        s->has_secret = 1;
    }
    pthread_mutex_unlock(&secret_mu);
    return 0;
}

static int
read_secret_file(const char *path, char **out, size_t *out_len)
{
    char *buf = malloc(SECRET_FILE_MAX + 1);
    ssize_t n;
    int fd;
    int rc = 0;

    if (!buf) {
        return -ENOMEM;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = mi_log_errno("open secret file", path);
        goto out;
    }
    n = mi_read_full(fd, buf, SECRET_FILE_MAX + 1);
    close(fd);
    if (n < 0) {
        rc = (int)n;
        mi_log(MITHRIL_LOG_ERROR, "read secret file '%s': %s", path,
               strerror((int)-n));
        goto out;
    }
    if (n > SECRET_FILE_MAX) {
        mi_log(MITHRIL_LOG_ERROR, "secret file '%s' is over 64 KiB", path);
        rc = MITHRIL_ETOOBIG;
        goto out;
    }
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r') {
            n--;
        }
    }
    *out = buf;
    *out_len = (size_t)n;
    buf = NULL;
out:
    free(buf);
    return rc;
}

/*
 * One thread loads the secret while the others wait (load_mu), and
 * secret_loaded is set only once the secret is in place: a worker of a
 * pull must never see "loaded, no secret" while another is still reading
 * MITHRIL_SECRET_FILE, or it would accept unsigned entries.
 */
static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER;

int
mi_sign_load_env(mithril_store *s)
{
    const char *text;
    const char *path;
    char *file = NULL;
    size_t len = 0;
    int rc = 0;

    pthread_mutex_lock(&load_mu);
    if (__atomic_load_n(&s->secret_loaded, __ATOMIC_ACQUIRE)) {
        pthread_mutex_unlock(&load_mu);
        return 0;
    }
    text = getenv("MITHRIL_SECRET");
    path = getenv("MITHRIL_SECRET_FILE");
    if (s->flags & MITHRIL_OPEN_NO_CONFIG) {
        /* Only the API sets a secret. */
    } else if (text && *text) {
        rc = mithril_store_set_secret(s, text, strlen(text));
    } else if (path && *path) {
        rc = read_secret_file(path, &file, &len);
        if (rc == 0 && len == 0) {
            mi_log(MITHRIL_LOG_ERROR, "secret file '%s' is empty", path);
            rc = MITHRIL_EINVAL;
        }
        if (rc == 0) {
            rc = mithril_store_set_secret(s, file, len);
        }
        if (file) {
            memset(file, 0, len);
        }
        free(file);
    }
    pthread_mutex_lock(&secret_mu);
    if (rc < 0) {
        /* A secret was asked for and cannot be had: fail closed. */
        mi_log(MITHRIL_LOG_ERROR,
               "the secret is configured but unusable: entries from a "
               "remote or an archive are rejected, pushes and exports "
               "refused");
        s->secret_error = 1;
    }
    __atomic_store_n(&s->secret_loaded, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&secret_mu);
    pthread_mutex_unlock(&load_mu);
    return rc;
}

int
mi_sign_has_secret(mithril_store *s)
{
    int on;

    if (!__atomic_load_n(&s->secret_loaded, __ATOMIC_ACQUIRE)) {
        mi_sign_load_env(s);
    }
    pthread_mutex_lock(&secret_mu);
    on = s->secret_error ? MITHRIL_ESIGNATURE : s->has_secret;
    pthread_mutex_unlock(&secret_mu);
    return on;
}

static void
sign_bytes(mithril_store *s, const void *data, size_t len,
           uint8_t out[MITHRIL_BLAKE3_OUT_LEN])
{
    mithril_blake3 h;

    pthread_mutex_lock(&secret_mu);
    mithril_blake3_init_keyed(&h, s->secret_key);
    pthread_mutex_unlock(&secret_mu);
    mithril_blake3_update(&h, data, len);
    mithril_blake3_finalize(&h, out, MITHRIL_BLAKE3_OUT_LEN);
}

/* ---- names and toolchain tags ---- */

int
mi_name_safe(const char *name)
{
    const char *p = name;
    const char *end;
    size_t n;

    if (!name || !*name || *name == '/') {
        return 0;
    }
    while (*p) {
        end = strchr(p, '/');
        n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') ||
            (n == 2 && p[0] == '.' && p[1] == '.')) {
            return 0;
        }
        if (!end) {
            break;
        }
        p = end + 1;
        if (!*p) {
            return 0; /* trailing slash: an empty last component */
        }
    }
    return 1;
}

static int
is_tag(const char *t)
{
    size_t i;

    for (i = 0; i < 16; i++) {
        if (!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f'))) {
            return 0;
        }
    }
    return t[16] == '\0';
}

/* A tag given as such passes through; a toolchain text is hashed as
 * capture tags it (mi_capture_tag). */
void
mi_toolchain_tag(const char *toolchain, char tag[17])
{
    if (strlen(toolchain) == 16 && is_tag(toolchain)) {
        memcpy(tag, toolchain, 17);
        return;
    }
    mi_capture_tag(toolchain, tag);
}

int
mi_meta_tag(const char *meta, char tag[17])
{
    const char *p = meta;

    while (p && *p) {
        while (*p == ' ') {
            p++;
        }
        if (!strncmp(p, "tc=", 3) && strlen(p + 3) >= 16 &&
            (p[19] == ' ' || p[19] == '\0')) {
            memcpy(tag, p + 3, 16);
            tag[16] = '\0';
            if (is_tag(tag)) {
                return 0;
            }
        }
        p = strchr(p, ' ');
    }
    return MITHRIL_ENOTFOUND;
}

int
mi_meta_has_tag(const char *meta, const char *tag)
{
    char t[17];

    return meta && mi_meta_tag(meta, t) == 0 && !strcmp(t, tag);
}

/* ---- encoding ---- */

static int
encode_canonical(const char *key, const char *meta, const mithril_item *items,
                 size_t n_items, struct mi_buf *out)
{
    size_t i;
    int rc;

    if (!meta) {
        meta = "";
    }
    rc = mi_buf_printf(out, "mithril-entry 1\nkey %zu ", strlen(key));
    rc = rc ? rc : mi_buf_printf(out, "%s\nmeta %zu ", key, strlen(meta));
    rc = rc ? rc : mi_buf_printf(out, "%s\nitems %zu\n", meta, n_items);
    for (i = 0; rc == 0 && i < n_items; i++) {
        rc = mi_buf_printf(out, "item %s %llu %o %zu %s\n", items[i].addr,
                           (unsigned long long)items[i].size,
                           (unsigned)items[i].mode, strlen(items[i].name),
                           items[i].name);
    }
    return rc;
}

int
mi_wire_encode(mithril_store *s, const char *key, const char *meta,
               const mithril_item *items, size_t n_items, struct mi_buf *out)
{
    uint8_t sig[MITHRIL_BLAKE3_OUT_LEN];
    char hex[MITHRIL_HEX_SIZE];
    size_t start = out->len;
    int on = mi_sign_has_secret(s);
    int rc;

    if (on < 0) {
        return on;
    }
    rc = encode_canonical(key, meta, items, n_items, out);
    if (rc == 0 && on) {
        sign_bytes(s, out->data + start, out->len - start, sig);
        mithril_hex(sig, sizeof(sig), hex);
        rc = mi_buf_printf(out, "sig %s\n", hex);
    }
    return rc ? rc : mi_buf_printf(out, "end\n");
}

/* A cursor over the encoding being parsed. */
struct cursor {
    const char *p;
    const char *end;
};

static int
take_word(struct cursor *c, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) {
        return MITHRIL_EFORMAT;
    }
    c->p += n;
    return 0;
}

/* An unsigned number in base (8 or 10) followed by one delimiter. */
static int
take_num(struct cursor *c, int base, char delim, uint64_t *out)
{
    uint64_t v = 0;
    int digits = 0;

    while (c->p < c->end && *c->p >= '0' && *c->p < '0' + base) {
        if (v > (UINT64_MAX - 9) / 10) {
            return MITHRIL_EFORMAT;
        }
        v = v * (uint64_t)base + (uint64_t)(*c->p - '0');
        c->p++;
        digits++;
    }
    if (!digits || digits > 20 || c->p >= c->end || *c->p != delim) {
        return MITHRIL_EFORMAT;
    }
    c->p++;
    *out = v;
    return 0;
}

/* "<len> <bytes>\n" into a new NUL-terminated string without NULs. */
static int
take_field(struct cursor *c, size_t max, char **out)
{
    uint64_t n;
    char *s;
    int rc = take_num(c, 10, ' ', &n);

    if (rc < 0) {
        return rc;
    }
    if (n > max || (uint64_t)(c->end - c->p) < n + 1 || c->p[n] != '\n' ||
        memchr(c->p, '\0', n)) {
        return MITHRIL_EFORMAT;
    }
    s = malloc(n + 1);
    if (!s) {
        return -ENOMEM;
    }
    memcpy(s, c->p, n);
    s[n] = '\0';
    c->p += n + 1;
    *out = s;
    return 0;
}

static int
take_item(struct cursor *c, mithril_item *it)
{
    uint64_t size;
    uint64_t mode;
    int rc;

    rc = take_word(c, "item ");
    if (rc < 0 || c->end - c->p < 65 || c->p[64] != ' ') {
        return MITHRIL_EFORMAT;
    }
    memcpy(it->addr, c->p, 64);
    it->addr[64] = '\0';
    if (!mithril_addr_valid(it->addr)) {
        return MITHRIL_EFORMAT;
    }
    c->p += 65;
    rc = take_num(c, 10, ' ', &size);
    rc = rc ? rc : take_num(c, 8, ' ', &mode);
    if (rc < 0 || mode > 07777) {
        return MITHRIL_EFORMAT;
    }
    it->size = size;
    it->mode = (uint32_t)mode;
    return take_field(c, 4096, &it->name);
}

int
mi_wire_decode(const void *data, size_t len, struct mi_wire *out)
{
    struct cursor c = {data, (const char *)data + len};
    struct mi_wire w;
    uint64_t n;
    size_t i;
    int rc;

    memset(&w, 0, sizeof(w));
    rc = take_word(&c, "mithril-entry 1\nkey ");
    rc = rc ? rc : take_field(&c, 512, &w.key);
    rc = rc ? rc : take_word(&c, "meta ");
    rc = rc ? rc : take_field(&c, 65536, &w.meta);
    rc = rc ? rc : take_word(&c, "items ");
    rc = rc ? rc : take_num(&c, 10, '\n', &n);
    if (rc == 0 && (n > 1000000 || n > len / 70)) {
        rc = MITHRIL_EFORMAT;
    }
    if (rc == 0 && n > 0) {
        w.items = calloc((size_t)n, sizeof(*w.items));
        rc = w.items ? 0 : -ENOMEM;
    }
    for (i = 0; rc == 0 && i < n; i++) {
        rc = take_item(&c, &w.items[i]);
        w.n_items = i + 1;
    }
    if (rc == 0 && take_word(&c, "sig ") == 0) {
        if (c.end - c.p < 65 || c.p[64] != '\n') {
            rc = MITHRIL_EFORMAT;
        } else {
            char hex[MITHRIL_HEX_SIZE];

            memcpy(hex, c.p, 64);
            hex[64] = '\0';
            rc = mithril_unhex(hex, w.sig, sizeof(w.sig)) < 0 ? MITHRIL_EFORMAT
                                                              : 0;
            w.has_sig = 1;
            c.p += 65;
        }
    }
    rc = rc ? rc : take_word(&c, "end\n");
    if (rc == 0 && c.p != c.end) {
        rc = MITHRIL_EFORMAT;
    }
    if (rc < 0) {
        mi_wire_release(&w);
        return rc;
    }
    *out = w;
    return 0;
}

int
mi_wire_accept(mithril_store *s, const struct mi_wire *w, const char *where)
{
    struct mi_buf canon = {0};
    uint8_t sig[MITHRIL_BLAKE3_OUT_LEN];
    const char *why = NULL;
    int rc = 0;
    int on;
    size_t i;

    for (i = 0; i < w->n_items; i++) {
        if (!mi_name_safe(w->items[i].name)) {
            why = "unsafe item name";
            rc = MITHRIL_EPATH;
            break;
        }
    }
    on = rc == 0 ? mi_sign_has_secret(s) : 0;
    if (on < 0) {
        why = "the secret is configured but unusable";
        rc = MITHRIL_ESIGNATURE;
    } else if (on) {
        if (!w->has_sig) {
            why = "unsigned";
            rc = MITHRIL_ESIGNATURE;
        } else {
            rc =
                encode_canonical(w->key, w->meta, w->items, w->n_items, &canon);
            if (rc < 0) {
                return rc;
            }
            sign_bytes(s, canon.data, canon.len, sig);
            mi_buf_release(&canon);
            /* Every byte compared: the time taken says nothing useful. */
            {
                uint8_t diff = 0;

                for (i = 0; i < sizeof(sig); i++) {
                    diff |= (uint8_t)(sig[i] ^ w->sig[i]);
                }
                if (diff) {
                    why = "wrong signature";
                    rc = MITHRIL_ESIGNATURE;
                }
            }
        }
    }
    if (rc < 0) {
        mi_log(MITHRIL_LOG_WARN, "rejected entry '%s' from %s: %s", w->key,
               where, why);
        mithril_stats_add(s, MITHRIL_COUNTER_REJECTED, 1);
    }
    return rc;
}
