/*
 * capture.c - torch's working folder to entries and back.
 *
 * The working folder (work_dir) holds "inductor/" (TORCHINDUCTOR_CACHE_DIR)
 * and "triton/" (TRITON_CACHE_DIR). It is a view of the store: capture turns
 * each torch cache entry found there into one index entry, restore writes
 * entries back as files. Granularity (paths relative to work_dir):
 *
 *   inductor/fxgraph/<xx>/<key>/...       one entry per FX graph key folder
 *   inductor/aotautograd/<key>/...        one entry per AOTAutograd key
 *   inductor/<xx>/<stem>.<ext...>         one entry per stem (.py, .cpp,
 *                                         .so, .best_config of one key)
 *   inductor/<xx>/<folder>/...            one entry per folder
 *   inductor/triton/<n>/<key>/...         one entry per Triton kernel
 *   triton/<key>/..., triton/<n>/<key>/.. one entry per Triton kernel
 *   inductor/<other>/.../<file>           one entry per file
 *
 * Never captured: names starting with '.' (torch's ".<pid>.<tid>.tmp",
 * our ".mtmp.*"), "*.tmp", "*.lock", "lock", Triton's "tmp.pid_*" folders,
 * inductor/locks and inductor/gcc, symlinks, anything outside those two
 * top folders.
 *
 * Entry key: "w1/<tc>/<entry path>", tc = first 16 hex characters of
 * BLAKE3(toolchain text); a path too long for a key (or with bytes a key
 * cannot hold) becomes "w1/<tc>/h/<BLAKE3 hex of the path>". Item names
 * are paths relative to work_dir. meta: "tc=<tc> kind=<kind>
 * toolchain=<text, spaces as ';'>", kind one of fxgraph, aotautograd,
 * code, triton, other.
 *
 * Invariants:
 *  - Capture only adds: an entry's new manifest is the union of what the
 *    index holds and what the folder holds now (a file present in both
 *    takes the folder's version when it changed). A file counts as
 *    unchanged when its name and size match and its mtime is not newer
 *    than the entry; restore stamps the files it writes with the entry's
 *    creation time so that a restored folder captures as unchanged.
 *    Triton group files (__grp__*.json) compare by name only, since
 *    restore rewrites their paths.
 *  - Restore writes nothing outside work_dir: names are checked (relative,
 *    no "." / ".." / empty component) and every folder on the way is
 *    opened with O_NOFOLLOW, so a symlink component rejects the entry.
 *  - Restore shows an entry whole or not at all: each missing file is
 *    written to a temp name beside its final place; only when every file
 *    of the entry is written are they renamed into place (group files
 *    last). A blob that vanished or failed verification drops the entry
 *    (counted as skipped) and its temp files.
 *
 * Limitation: capture cannot tell which toolchain wrote a file, so a
 * working folder shared by two toolchains has the other's files recorded
 * under both tags (extra index entries; the blobs are shared).
 * Limitation: restored files are not fsynced (the folder is a view); a
 * crash can leave a short file, which the next restore sees by its size
 * and rewrites, but damage that keeps the size is not detected there.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CAP_MAX_DEPTH 16  /* folder depth below work_dir walked */
#define CAP_MAX_COMPS 32  /* path components considered by the rules */
#define CAP_KEY_MAX   512 /* index key limit */
#define CAP_TC_LEN    16
#define CAP_THREADS   4 /* capture workers at most */
#define GRP_PREFIX    "__grp__"

/* ------------------------------------------------------------------------ */
/* Names and the granularity rules                                          */
/* ------------------------------------------------------------------------ */

void
mi_capture_tag(const char *toolchain, char tc[CAP_TC_LEN + 1])
{
    uint8_t digest[MITHRIL_BLAKE3_OUT_LEN];
    char hex[MITHRIL_HEX_SIZE];

    mithril_blake3_hash(toolchain, strlen(toolchain), digest);
    mithril_hex(digest, sizeof(digest), hex);
    memcpy(tc, hex, CAP_TC_LEN);
    tc[CAP_TC_LEN] = '\0';
}

static int
has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* 1 for a name torch or we use while writing, or for locking. */
static int
ignored_name(const char *name)
{
    return name[0] == '.' || has_suffix(name, ".tmp") ||
           has_suffix(name, ".lock") || strcmp(name, "lock") == 0 ||
           strncmp(name, "tmp.pid_", 8) == 0;
}

static int
all_digits(const char *s)
{
    if (!*s) {
        return 0;
    }
    for (; *s; s++) {
        if (*s < '0' || *s > '9') {
            return 0;
        }
    }
    return 1;
}

/*
 * 1 if name is a safe relative path: not empty, not absolute, no empty,
 * "." or ".." component, no control characters.
 */
static int
safe_name(const char *name)
{
    const char *p = name, *end;
    size_t len;

    if (!*name || *name == '/' || strlen(name) >= PATH_MAX) {
        return 0;
    }
    for (; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            return 0;
        }
    }
    p = name;
    for (;;) {
        end = strchr(p, '/');
        len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.') ||
            (len == 2 && p[0] == '.' && p[1] == '.')) {
            return 0;
        }
        if (!end) {
            return 1;
        }
        p = end + 1;
    }
}

/* 1 if folder rel (relative to work_dir) is not worth walking into. */
static int
pruned_dir(const char *rel, int depth, const char *name)
{
    if (ignored_name(name)) {
        return 1;
    }
    if (depth == 0) {
        return strcmp(name, "inductor") != 0 && strcmp(name, "triton") != 0;
    }
    return strcmp(rel, "inductor/locks") == 0 ||
           strcmp(rel, "inductor/gcc") == 0;
}

/*
 * The entry that owns file rel: writes the entry's path (a prefix of rel,
 * or rel up to its stem) to out and returns its kind; NULL when the file
 * is never captured.
 */
static const char *
entry_of(const char *rel, char *out, size_t n)
{
    char buf[PATH_MAX];
    char *comp[CAP_MAX_COMPS];
    size_t nc = 0, keep, i;
    const char *kind;
    char *p, *dot, *save = NULL;

    if (!safe_name(rel) || strlen(rel) >= sizeof(buf)) {
        return NULL;
    }
    memcpy(buf, rel, strlen(rel) + 1);
    for (p = strtok_r(buf, "/", &save); p; p = strtok_r(NULL, "/", &save)) {
        if (nc == CAP_MAX_COMPS || ignored_name(p)) {
            return NULL;
        }
        comp[nc++] = p;
    }
    if (nc < 2) {
        return NULL;
    }
    if (strcmp(comp[0], "triton") == 0) {
        /* triton/<key>/file, or triton/<n>/<key>/file */
        keep = all_digits(comp[1]) && nc >= 4 ? 3 : 2;
        kind = "triton";
        if (nc <= keep) {
            keep = nc;
            kind = "other";
        }
    } else if (strcmp(comp[0], "inductor") != 0 || nc < 3) {
        /* A file directly in inductor/ is left alone as well. */
        return NULL;
    } else if (strcmp(comp[1], "locks") == 0 || strcmp(comp[1], "gcc") == 0) {
        return NULL;
    } else if (strcmp(comp[1], "fxgraph") == 0 && nc >= 5) {
        keep = 4;
        kind = "fxgraph";
    } else if (strcmp(comp[1], "aotautograd") == 0 && nc >= 4) {
        keep = 3;
        kind = "aotautograd";
    } else if (strcmp(comp[1], "triton") == 0 && nc >= 5) {
        keep = 4;
        kind = "triton";
    } else if (strlen(comp[1]) == 2 && nc == 3) {
        /* inductor/<xx>/<stem>.<ext>: cut the name at its first dot. */
        dot = strchr(comp[2], '.');
        if (dot && dot != comp[2]) {
            *dot = '\0';
        }
        keep = 3;
        kind = "code";
    } else if (strlen(comp[1]) == 2) {
        keep = 3;
        kind = "code";
    } else {
        keep = nc;
        kind = "other";
    }
    out[0] = '\0';
    for (i = 0; i < keep; i++) {
        if (strlen(out) + strlen(comp[i]) + 2 > n) {
            return NULL;
        }
        if (i) {
            strcat(out, "/");
        }
        strcat(out, comp[i]);
    }
    return kind;
}

/* The index key of entry path ent for tag tc into key (CAP_KEY_MAX + 1). */
static void
entry_key(const char *tc, const char *ent, char *key)
{
    uint8_t digest[MITHRIL_BLAKE3_OUT_LEN];
    char hex[MITHRIL_HEX_SIZE];
    const char *p;
    int plain = strlen(ent) + CAP_TC_LEN + 4 <= CAP_KEY_MAX;

    for (p = ent; plain && *p; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
            plain = 0;
        }
    }
    if (plain) {
        snprintf(key, CAP_KEY_MAX + 1, "w1/%s/%s", tc, ent);
        return;
    }
    mithril_blake3_hash(ent, strlen(ent), digest);
    mithril_hex(digest, sizeof(digest), hex);
    snprintf(key, CAP_KEY_MAX + 1, "w1/%s/h/%s", tc, hex);
}

static int
is_group_file(const char *name)
{
    const char *base = strrchr(name, '/');

    base = base ? base + 1 : name;
    return strncmp(base, GRP_PREFIX, strlen(GRP_PREFIX)) == 0 &&
           has_suffix(base, ".json");
}

int
mi_capture_key_for_path(const char *work_dir, const char *path,
                        const char *toolchain, char *key, size_t n)
{
    char ent[PATH_MAX], k[CAP_KEY_MAX + 1], tc[CAP_TC_LEN + 1];
    size_t wlen;

    if (!work_dir || !path || !toolchain || !key) {
        return MITHRIL_EINVAL;
    }
    wlen = strlen(work_dir);
    while (wlen > 1 && work_dir[wlen - 1] == '/') {
        wlen--;
    }
    if (path[0] == '/') {
        if (strncmp(path, work_dir, wlen) != 0 || path[wlen] != '/') {
            return MITHRIL_ENOTFOUND;
        }
        path += wlen + 1;
    }
    if (!entry_of(path, ent, sizeof(ent))) {
        return MITHRIL_ENOTFOUND;
    }
    mi_capture_tag(toolchain, tc);
    entry_key(tc, ent, k);
    if (strlen(k) >= n) {
        return MITHRIL_ETOOBIG;
    }
    memcpy(key, k, strlen(k) + 1);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Capture                                                                  */
/* ------------------------------------------------------------------------ */

struct cap_file {
    char *rel;
    char *ent; /* entry path */
    const char *kind;
    uint64_t size;
    int64_t mtime_ns;
    uint32_t mode;
};

struct cap_list {
    struct cap_file *v;
    size_t n, cap;
};

static void
cap_list_release(struct cap_list *l)
{
    size_t i;

    for (i = 0; i < l->n; i++) {
        free(l->v[i].rel);
        free(l->v[i].ent);
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static int
cap_list_add(struct cap_list *l, const char *rel, const struct stat *st)
{
    char ent[PATH_MAX];
    const char *kind = entry_of(rel, ent, sizeof(ent));
    struct cap_file *f, *nv;
    size_t ncap;

    if (!kind) {
        return 0;
    }
    if (l->n == l->cap) {
        ncap = l->cap ? l->cap * 2 : 64;
        nv = realloc(l->v, ncap * sizeof(*nv));
        if (!nv) {
            return -ENOMEM;
        }
        l->v = nv;
        l->cap = ncap;
    }
    f = &l->v[l->n];
    f->rel = strdup(rel);
    f->ent = strdup(ent);
    if (!f->rel || !f->ent) {
        free(f->rel);
        free(f->ent);
        return -ENOMEM;
    }
    f->kind = kind;
    f->size = (uint64_t)st->st_size;
    f->mtime_ns =
        (int64_t)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
    f->mode = st->st_mode & 0777;
    l->n++;
    return 0;
}

/*
 * Walk folder fd (relative path rel, rel_len bytes) depth first, adding
 * the files capture keeps. Takes ownership of fd. Depth is bounded, so
 * the recursion is too.
 */
static int
walk(int fd, char *rel, size_t rel_len, int depth, struct cap_list *l)
{
    DIR *d = fdopendir(fd);
    struct dirent *de;
    struct stat st;
    size_t nlen;
    int sub, rc = 0;

    if (!d) {
        rc = mi_log_errno("fdopendir", rel);
        close(fd);
        return rc;
    }
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
            continue;
        }
        nlen = strlen(de->d_name);
        if (rel_len + nlen + 2 >= PATH_MAX) {
            continue;
        }
        if (rel_len) {
            rel[rel_len] = '/';
            memcpy(rel + rel_len + 1, de->d_name, nlen + 1);
        } else {
            memcpy(rel, de->d_name, nlen + 1);
        }
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            continue; /* gone since readdir: torch removed a temp file */
        }
        if (S_ISDIR(st.st_mode)) {
            if (depth + 1 >= CAP_MAX_DEPTH ||
                pruned_dir(rel, depth, de->d_name)) {
                continue;
            }
            sub = openat(dirfd(d), de->d_name,
                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                continue;
            }
            rc = walk(sub, rel, strlen(rel), depth + 1, l);
        } else if (S_ISREG(st.st_mode) && depth > 0) {
            rc = cap_list_add(l, rel, &st);
        }
        if (rc < 0) {
            break;
        }
    }
    rel[rel_len] = '\0';
    closedir(d);
    return rc;
}

static int
cmp_file(const void *a, const void *b)
{
    const struct cap_file *x = a, *y = b;
    int c = strcmp(x->ent, y->ent);

    return c ? c : strcmp(x->rel, y->rel);
}

static int
cmp_item(const void *a, const void *b)
{
    const mithril_item *x = a, *y = b;

    return strcmp(x->name, y->name);
}

/*
 * Store the file work_dir/rel as a blob; its size and mode into item.
 * MITHRIL_ENOTFOUND when the file itself cannot be read (gone, replaced
 * by a symlink or a folder, no permission): the caller skips it. Other
 * failures are the store's.
 */
static int
put_one(mithril_store *s, const char *work_dir, const char *rel,
        mithril_item *item)
{
    char path[PATH_MAX];
    struct stat st;
    int fd, rc;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", work_dir, rel) >=
        sizeof(path)) {
        return MITHRIL_ENOTFOUND;
    }
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) {
            mi_log(MITHRIL_LOG_INFO, "capture: cannot read '%s': %s", path,
                   strerror(errno));
        }
        return MITHRIL_ENOTFOUND;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return MITHRIL_ENOTFOUND;
    }
    rc = mithril_store_put_fd(s, fd, item->addr);
    close(fd);
    if (rc < 0) {
        return rc;
    }
    item->size = (uint64_t)st.st_size;
    item->mode = st.st_mode & 0777;
    return 0;
}

static void
make_meta(char *meta, size_t n, const char *tc, const char *kind,
          const char *toolchain)
{
    size_t i, len;

    len = (size_t)snprintf(meta, n, "tc=%s kind=%s toolchain=", tc, kind);
    for (i = 0; toolchain[i] && len + 1 < n; i++, len++) {
        meta[len] =
            (toolchain[i] == ' ' || toolchain[i] == '\t') ? ';' : toolchain[i];
    }
    meta[len < n ? len : n - 1] = '\0';
}

/*
 * Capture the files v[0..n) that share one entry. Merges with what the
 * index already holds under the key; skips when nothing changed.
 */
static int
capture_group(mithril_store *s, const char *work_dir, const char *tc,
              const char *toolchain, const struct cap_file *v, size_t n,
              mithril_sync_result *r)
{
    char key[CAP_KEY_MAX + 1], meta[1024];
    mithril_entry *old = NULL;
    mithril_item *items = NULL, *it;
    size_t i, j, n_items = 0, cap, changed = 0;
    uint64_t bytes = 0;
    int rc, same;

    entry_key(tc, v[0].ent, key);
    rc = mithril_entry_peek(s, key, &old);
    if (rc < 0 && rc != MITHRIL_ENOTFOUND) {
        return rc;
    }
    cap = n + (old ? old->n_items : 0);
    items = calloc(cap ? cap : 1, sizeof(*items));
    if (!items) {
        rc = -ENOMEM;
        goto out;
    }

    /* The folder's files, reusing unchanged items of the old entry. */
    for (i = 0; i < n; i++) {
        it = &items[n_items++];
        it->name = v[i].rel;
        same = 0;
        for (j = 0; old && j < old->n_items; j++) {
            if (strcmp(old->items[j].name, v[i].rel) != 0) {
                continue;
            }
            same =
                (old->items[j].size == v[i].size || is_group_file(v[i].rel)) &&
                v[i].mtime_ns <= old->created_ns;
            if (same) {
                *it = old->items[j];
            }
            break;
        }
        if (same) {
            continue;
        }
        rc = put_one(s, work_dir, v[i].rel, it);
        if (rc == MITHRIL_ENOTFOUND) {
            n_items--; /* removed since the walk, or unreadable */
            rc = 0;
            continue;
        }
        if (rc < 0) {
            mi_log(MITHRIL_LOG_WARN, "capture: cannot store '%s/%s': %s",
                   work_dir, v[i].rel, mithril_strerror(rc));
            goto out;
        }
        changed++;
        bytes += it->size;
    }
    if (!changed) {
        r->skipped++;
        rc = 0;
        goto out;
    }

    /* Files only the old entry lists stay: capture never shrinks one. */
    for (j = 0; old && j < old->n_items; j++) {
        for (i = 0; i < n_items; i++) {
            if (!strcmp(items[i].name, old->items[j].name)) {
                break;
            }
        }
        if (i == n_items) {
            items[n_items++] = old->items[j];
        }
    }
    qsort(items, n_items, sizeof(*items), cmp_item);
    make_meta(meta, sizeof(meta), tc, v[0].kind, toolchain);
    rc = mithril_entry_put(s, key, items, n_items, meta);
    if (rc < 0) {
        mi_log(MITHRIL_LOG_WARN, "capture: cannot record '%s': %s", key,
               mithril_strerror(rc));
        goto out;
    }
    r->entries++;
    r->files += changed;
    r->bytes += bytes;
out:
    free(items);
    if (old) {
        mithril_entry_free(old);
    }
    return rc;
}

/*
 * Entries are captured by up to CAP_THREADS threads: most of the time of
 * a capture is waiting for fsync (blob files, index commits), and those
 * waits overlap. Small captures stay in the calling thread.
 */
struct cap_work {
    mithril_store *s;
    const char *work_dir, *tc, *toolchain;
    const struct cap_list *l;
    const size_t *starts; /* group g is l->v[starts[g] .. starts[g + 1]) */
    size_t n_groups, next;
    pthread_mutex_t mu;
    mithril_sync_result r;
    int rc;
};

static void *
cap_worker(void *arg)
{
    struct cap_work *w = arg;
    mithril_sync_result r;
    size_t g;
    int rc;

    for (;;) {
        pthread_mutex_lock(&w->mu);
        if (w->rc < 0 || w->next >= w->n_groups) {
            pthread_mutex_unlock(&w->mu);
            return NULL;
        }
        g = w->next++;
        pthread_mutex_unlock(&w->mu);

        memset(&r, 0, sizeof(r));
        rc = capture_group(w->s, w->work_dir, w->tc, w->toolchain,
                           &w->l->v[w->starts[g]],
                           w->starts[g + 1] - w->starts[g], &r);
        pthread_mutex_lock(&w->mu);
        w->r.entries += r.entries;
        w->r.files += r.files;
        w->r.bytes += r.bytes;
        w->r.skipped += r.skipped;
        if (rc < 0 && w->rc == 0) {
            w->rc = rc;
        }
        pthread_mutex_unlock(&w->mu);
    }
}

static int
capture_groups(struct cap_work *w)
{
    pthread_t th[CAP_THREADS];
    size_t n_threads = 0, want, i;

    want = w->n_groups >= 16 ? CAP_THREADS : 1;
    while (n_threads + 1 < want &&
           pthread_create(&th[n_threads], NULL, cap_worker, w) == 0) {
        n_threads++;
    }
    cap_worker(w); /* the calling thread works too */
    for (i = 0; i < n_threads; i++) {
        pthread_join(th[i], NULL);
    }
    return w->rc;
}

int
mithril_capture(mithril_store *s, const char *work_dir, const char *toolchain,
                mithril_sync_result *out)
{
    struct cap_list l = {0};
    struct cap_work w;
    char tc[CAP_TC_LEN + 1];
    size_t *starts = NULL;
    char *rel = NULL;
    size_t i, n = 0;
    int fd, rc;

    if (!s || !work_dir || !*work_dir || !toolchain) {
        return MITHRIL_EINVAL;
    }
    memset(&w, 0, sizeof(w));
    mi_capture_tag(toolchain, tc);
    fd = open(work_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            goto done; /* nothing written yet, nothing to capture */
        }
        return mi_log_errno("open", work_dir);
    }
    rel = malloc(PATH_MAX);
    if (!rel) {
        close(fd);
        return -ENOMEM;
    }
    rel[0] = '\0';
    rc = walk(fd, rel, 0, 0, &l);
    if (rc < 0) {
        goto out;
    }
    if (l.n) {
        qsort(l.v, l.n, sizeof(*l.v), cmp_file);
    }

    /* Where each entry's files start in the sorted list. */
    starts = malloc((l.n + 1) * sizeof(*starts));
    if (!starts) {
        rc = -ENOMEM;
        goto out;
    }
    for (i = 0; i < l.n; i++) {
        if (i == 0 || strcmp(l.v[i].ent, l.v[i - 1].ent) != 0) {
            starts[n++] = i;
        }
    }
    starts[n] = l.n;

    w.s = s;
    w.work_dir = work_dir;
    w.tc = tc;
    w.toolchain = toolchain;
    w.l = &l;
    w.starts = starts;
    w.n_groups = n;
    pthread_mutex_init(&w.mu, NULL);
    rc = capture_groups(&w);
    pthread_mutex_destroy(&w.mu);
    if (rc < 0) {
        goto out;
    }
done:
    if (out) {
        *out = w.r;
    }
    rc = 0;
out:
    free(starts);
    free(rel);
    cap_list_release(&l);
    return rc;
}

int
mi_capture_put_files(mithril_store *s, const char *key, const char *work_dir,
                     const char *const *names, size_t n, const char *meta,
                     mithril_sync_result *out)
{
    mithril_sync_result r = {0};
    mithril_item *items;
    char ent[PATH_MAX];
    size_t i, k = 0;
    int rc = 0;

    if (!s || !key || !work_dir || (!names && n)) {
        return MITHRIL_EINVAL;
    }
    for (i = 0; i < n; i++) {
        if (!safe_name(names[i])) {
            return MITHRIL_EPATH;
        }
    }
    items = calloc(n ? n : 1, sizeof(*items));
    if (!items) {
        return -ENOMEM;
    }
    for (i = 0; i < n; i++) {
        if (!entry_of(names[i], ent, sizeof(ent))) {
            r.skipped++; /* a temp or lock file, or not torch's */
            continue;
        }
        items[k].name = (char *)names[i];
        rc = put_one(s, work_dir, names[i], &items[k]);
        if (rc == MITHRIL_ENOTFOUND) {
            r.skipped++; /* gone, or not a regular file */
            rc = 0;
            continue;
        }
        if (rc < 0) {
            goto out;
        }
        r.files++;
        r.bytes += items[k].size;
        k++;
    }
    if (k == 0) {
        rc = MITHRIL_ENOTFOUND;
        goto out;
    }
    qsort(items, k, sizeof(*items), cmp_item);
    rc = mithril_entry_put(s, key, items, k, meta);
    if (rc < 0) {
        goto out;
    }
    r.entries = 1;
    if (out) {
        *out = r;
    }
out:
    free(items);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Triton group files                                                       */
/* ------------------------------------------------------------------------ */

/*
 * A group file is JSON {"child_paths": {"<name>": "<absolute path>", ...}}
 * naming files of its own kernel folder by absolute path. grp_rewrite
 * replaces the folder part of each absolute path with newdir and keeps
 * every other value as it was (whitespace between tokens is dropped). It
 * validates the whole document as JSON and refuses (MITHRIL_EFORMAT)
 * anything else.
 */
struct jbuf {
    char *p;
    size_t n, cap;
    int failed;
};

static void
jput(struct jbuf *b, const char *s, size_t n)
{
    char *np;
    size_t ncap;

    if (b->failed) {
        return;
    }
    if (b->n + n + 1 > b->cap) {
        ncap = (b->n + n + 1) * 2;
        np = realloc(b->p, ncap);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

/* Append s as the inside of a JSON string. */
static void
jput_escaped(struct jbuf *b, const char *s)
{
    char esc[8];

    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            esc[0] = '\\';
            esc[1] = *s;
            jput(b, esc, 2);
        } else if ((unsigned char)*s < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", (unsigned char)*s);
            jput(b, esc, 6);
        } else {
            jput(b, s, 1);
        }
    }
}

struct jparse {
    const char *s;
    size_t n, i;
};

static void
jskip_ws(struct jparse *j)
{
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' ||
                           j->s[j->i] == '\n' || j->s[j->i] == '\r')) {
        j->i++;
    }
}

static int
is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
           (c >= 'A' && c <= 'F');
}

/* A string at j->i; on success [*start, *end) is its inside. */
static int
jstring(struct jparse *j, size_t *start, size_t *end)
{
    int k;

    if (j->i >= j->n || j->s[j->i] != '"') {
        return -1;
    }
    *start = ++j->i;
    while (j->i < j->n && j->s[j->i] != '"') {
        if ((unsigned char)j->s[j->i] < 0x20) {
            return -1;
        }
        if (j->s[j->i] == '\\') {
            if (++j->i >= j->n) {
                return -1;
            }
            if (j->s[j->i] == 'u') {
                for (k = 1; k <= 4; k++) {
                    if (j->i + k >= j->n || !is_hex(j->s[j->i + k])) {
                        return -1;
                    }
                }
                j->i += 4;
            } else if (!strchr("\"\\/bfnrt", j->s[j->i])) {
                return -1;
            }
        }
        j->i++;
    }
    if (j->i >= j->n) {
        return -1;
    }
    *end = j->i++;
    return 0;
}

static int
jdigits(struct jparse *j)
{
    size_t from = j->i;

    while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9') {
        j->i++;
    }
    return j->i > from ? 0 : -1;
}

static int
jnumber(struct jparse *j)
{
    if (j->i < j->n && j->s[j->i] == '-') {
        j->i++;
    }
    if (j->i < j->n && j->s[j->i] == '0') {
        j->i++;
    } else if (jdigits(j) < 0) {
        return -1;
    }
    if (j->i < j->n && j->s[j->i] == '.') {
        j->i++;
        if (jdigits(j) < 0) {
            return -1;
        }
    }
    if (j->i < j->n && (j->s[j->i] == 'e' || j->s[j->i] == 'E')) {
        j->i++;
        if (j->i < j->n && (j->s[j->i] == '+' || j->s[j->i] == '-')) {
            j->i++;
        }
        if (jdigits(j) < 0) {
            return -1;
        }
    }
    return 0;
}

/*
 * Parse one value, copying it to b. mode 1: the value is the child_paths
 * object (its string members get rewritten); mode 2: a string member of
 * it. Nesting depth is bounded.
 */
static int
jvalue(struct jparse *j, struct jbuf *b, const char *newdir, int mode,
       int depth)
{
    static const char *const lit[] = {"true", "false", "null"};
    size_t from, start, end, k, last;
    char close_ch;
    int child;

    jskip_ws(j);
    if (j->i >= j->n || depth > 64) {
        return -1;
    }
    from = j->i;
    switch (j->s[j->i]) {
    case '{':
    case '[':
        close_ch = j->s[from] == '{' ? '}' : ']';
        jput(b, &j->s[j->i], 1);
        j->i++;
        jskip_ws(j);
        if (j->i < j->n && j->s[j->i] == close_ch) {
            jput(b, &j->s[j->i], 1);
            j->i++;
            return 0;
        }
        for (;;) {
            child = 0;
            if (close_ch == '}') {
                jskip_ws(j);
                if (jstring(j, &start, &end) < 0) {
                    return -1;
                }
                jput(b, &j->s[start - 1], end - start + 2);
                if (mode == 1) {
                    child = 2;
                } else if (depth == 0 && end - start == 11 &&
                           !memcmp(&j->s[start], "child_paths", 11)) {
                    child = 1;
                }
                jskip_ws(j);
                if (j->i >= j->n || j->s[j->i] != ':') {
                    return -1;
                }
                jput(b, ":", 1);
                j->i++;
            }
            if (jvalue(j, b, newdir, child, depth + 1) < 0) {
                return -1;
            }
            jskip_ws(j);
            if (j->i < j->n && j->s[j->i] == ',') {
                jput(b, ",", 1);
                j->i++;
                continue;
            }
            if (j->i < j->n && j->s[j->i] == close_ch) {
                jput(b, &j->s[j->i], 1);
                j->i++;
                return 0;
            }
            return -1;
        }
    case '"':
        if (jstring(j, &start, &end) < 0) {
            return -1;
        }
        if (mode != 2 || end == start || j->s[start] != '/') {
            jput(b, &j->s[from], j->i - from);
            return 0;
        }
        /* An absolute path: keep its last component, new folder. */
        last = start;
        for (k = start; k < end; k++) {
            if (j->s[k] == '/') {
                last = k + 1;
            }
        }
        jput(b, "\"", 1);
        jput_escaped(b, newdir);
        jput(b, "/", 1);
        jput(b, &j->s[last], end - last);
        jput(b, "\"", 1);
        return 0;
    case 't':
    case 'f':
    case 'n':
        for (k = 0; k < 3; k++) {
            if (j->n - j->i >= strlen(lit[k]) &&
                !memcmp(&j->s[j->i], lit[k], strlen(lit[k]))) {
                j->i += strlen(lit[k]);
                jput(b, &j->s[from], j->i - from);
                return 0;
            }
        }
        return -1;
    default:
        if (jnumber(j) < 0) {
            return -1;
        }
        jput(b, &j->s[from], j->i - from);
        return 0;
    }
}

static int
grp_rewrite(const char *in, size_t n, const char *newdir, char **out,
            size_t *out_n)
{
    struct jparse j = {in, n, 0};
    struct jbuf b = {0};

    jskip_ws(&j);
    if (j.i >= j.n || in[j.i] != '{' || jvalue(&j, &b, newdir, 0, 0) < 0) {
        free(b.p);
        return MITHRIL_EFORMAT;
    }
    jskip_ws(&j);
    if (j.i != j.n) {
        free(b.p);
        return MITHRIL_EFORMAT;
    }
    if (b.failed) {
        free(b.p);
        return -ENOMEM;
    }
    *out = b.p;
    *out_n = b.n;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Restore                                                                  */
/* ------------------------------------------------------------------------ */

struct rs_dir {
    char *rel; /* folder relative to work_dir ("" for work_dir) */
    int fd;
};

struct rs_pending {
    int dirfd;
    char tmp[64];
    const char *base;
    int group;
    uint64_t size;
};

struct rs_ctx {
    mithril_store *s;
    const char *work_dir;
    char abs_dir[PATH_MAX]; /* work_dir made absolute */
    int work_fd;
    mithril_sync_result r;
    struct rs_dir *dirs;
    size_t n_dirs;
    unsigned long counter;
};

static void
rs_close_dirs(struct rs_ctx *c)
{
    size_t i;

    for (i = 0; i < c->n_dirs; i++) {
        close(c->dirs[i].fd);
        free(c->dirs[i].rel);
    }
    free(c->dirs);
    c->dirs = NULL;
    c->n_dirs = 0;
}

/*
 * Open (creating) folder rel below work_dir without following any
 * symlink. MITHRIL_EPATH if a component is a symlink or not a folder.
 * The fd stays owned by the context.
 */
static int
rs_open_dir(struct rs_ctx *c, const char *rel, int *fd_out)
{
    char buf[PATH_MAX];
    struct rs_dir *nd;
    char *comp, *save = NULL;
    int fd, next, rc;
    size_t i;

    for (i = 0; i < c->n_dirs; i++) {
        if (!strcmp(c->dirs[i].rel, rel)) {
            *fd_out = c->dirs[i].fd;
            return 0;
        }
    }
    snprintf(buf, sizeof(buf), "%s", rel);
    fd = dup(c->work_fd);
    if (fd < 0) {
        return -errno;
    }
    for (comp = strtok_r(buf, "/", &save); comp;
         comp = strtok_r(NULL, "/", &save)) {
        next =
            openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0 && errno == ENOENT) {
            if (mkdirat(fd, comp, 0755) < 0 && errno != EEXIST) {
                rc = -errno;
                close(fd);
                return rc;
            }
            next = openat(fd, comp,
                          O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (next < 0) {
            rc = (errno == ELOOP || errno == ENOTDIR) ? MITHRIL_EPATH : -errno;
            close(fd);
            return rc;
        }
        close(fd);
        fd = next;
    }
    nd = realloc(c->dirs, (c->n_dirs + 1) * sizeof(*nd));
    if (!nd) {
        close(fd);
        return -ENOMEM;
    }
    c->dirs = nd;
    c->dirs[c->n_dirs].rel = strdup(rel);
    if (!c->dirs[c->n_dirs].rel) {
        close(fd);
        return -ENOMEM;
    }
    c->dirs[c->n_dirs++].fd = fd;
    *fd_out = fd;
    return 0;
}

/* Write the content of item it into the open temp file fd. */
static int
rs_fill(struct rs_ctx *c, const mithril_item *it, const char *folder, int fd,
        int group)
{
    char newdir[2 * PATH_MAX + 2];
    void *data = NULL;
    char *text = NULL;
    size_t n = 0, tn;
    int rc;

    if (!group) {
        return mithril_store_get_fd(c->s, it->addr, fd);
    }
    rc = mithril_store_get(c->s, it->addr, &data, &n);
    if (rc < 0) {
        return rc;
    }
    snprintf(newdir, sizeof(newdir), "%s%s%s", c->abs_dir, *folder ? "/" : "",
             folder);
    if (grp_rewrite(data, n, newdir, &text, &tn) == 0) {
        rc = mi_write_all(fd, text, tn);
        free(text);
    } else {
        /* Not the JSON we know: leave it as it was made. */
        mi_log(MITHRIL_LOG_DEBUG, "restore: group file '%s' kept as is",
               it->name);
        rc = mi_write_all(fd, data, n);
    }
    mithril_free(data);
    return rc;
}

/*
 * Write one missing file of an entry to a temp name beside its place.
 * Returns 1 with *p filled when a temp file was written, 0 when the file
 * is already there, negative on failure.
 */
static int
rs_stage(struct rs_ctx *c, const mithril_entry *e, const mithril_item *it,
         struct rs_pending *p)
{
    char folder[PATH_MAX];
    const char *slash = strrchr(it->name, '/');
    struct timespec ts[2];
    struct stat st;
    int dfd = -1, fd, rc, group = is_group_file(it->name);

    if (slash) {
        memcpy(folder, it->name, (size_t)(slash - it->name));
        folder[slash - it->name] = '\0';
    } else {
        folder[0] = '\0';
    }
    rc = rs_open_dir(c, folder, &dfd);
    if (rc < 0) {
        return rc;
    }
    p->base = slash ? slash + 1 : it->name;
    if (fstatat(dfd, p->base, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG(st.st_mode) && (group || (uint64_t)st.st_size == it->size)) {
        return 0;
    }
    snprintf(p->tmp, sizeof(p->tmp), ".mtmp.%ld.r%lu", (long)getpid(),
             ++c->counter);
    fd = mi_sys.openat(dfd, p->tmp,
                       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                       0600);
    if (fd < 0) {
        return -errno;
    }
    rc = rs_fill(c, it, folder, fd, group);
    if (rc == 0 && fchmod(fd, it->mode & 0777) < 0) {
        rc = -errno;
    }
    if (rc == 0) {
        /* Stamp it as old as the entry: capture then sees no change. */
        ts[0].tv_sec = ts[1].tv_sec = e->created_ns / 1000000000LL;
        ts[0].tv_nsec = ts[1].tv_nsec = e->created_ns % 1000000000LL;
        if (e->created_ns <= 0) {
            ts[0].tv_nsec = ts[1].tv_nsec = UTIME_NOW;
        }
        futimens(fd, ts);
    }
    close(fd);
    if (rc < 0) {
        unlinkat(dfd, p->tmp, 0);
        return rc;
    }
    p->dirfd = dfd;
    p->group = group;
    p->size = it->size;
    return 1;
}

/* Materialize one entry; counts go to c->r. Fails only on bad input. */
static int
rs_entry(struct rs_ctx *c, const mithril_entry *e)
{
    struct rs_pending *pend = NULL;
    size_t i, n = 0;
    uint64_t bytes = 0;
    int rc = 0, pass;

    for (i = 0; i < e->n_items; i++) {
        if (!safe_name(e->items[i].name)) {
            mi_log(MITHRIL_LOG_WARN, "restore: unsafe name '%s' in '%s'",
                   e->items[i].name, e->key);
            rc = MITHRIL_EPATH;
            goto out;
        }
    }
    pend = calloc(e->n_items ? e->n_items : 1, sizeof(*pend));
    if (!pend) {
        rc = -ENOMEM;
        goto out;
    }
    for (i = 0; i < e->n_items; i++) {
        rc = rs_stage(c, e, &e->items[i], &pend[n]);
        if (rc < 0) {
            mi_log(rc == MITHRIL_EPATH ? MITHRIL_LOG_WARN : MITHRIL_LOG_INFO,
                   "restore: '%s' of '%s': %s", e->items[i].name, e->key,
                   mithril_strerror(rc));
            goto out;
        }
        n += (size_t)rc;
    }

    /* Every file is written: publish, group files last. */
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < n; i++) {
            if (pend[i].group != pass || !pend[i].tmp[0]) {
                continue;
            }
            if (renameat(pend[i].dirfd, pend[i].tmp, pend[i].dirfd,
                         pend[i].base) < 0) {
                rc = mi_log_errno("renameat", pend[i].base);
                goto out;
            }
            pend[i].tmp[0] = '\0';
            bytes += pend[i].size;
        }
    }
    rc = 0;
out:
    for (i = 0; pend && i < n; i++) {
        if (pend[i].tmp[0]) {
            unlinkat(pend[i].dirfd, pend[i].tmp, 0);
        }
    }
    if (rc == MITHRIL_EPATH) {
        c->r.rejected++;
        mithril_stats_add(c->s, MITHRIL_COUNTER_REJECTED, 1);
    } else if (rc < 0 || n == 0) {
        c->r.skipped++;
    } else {
        c->r.entries++;
        c->r.files += n;
        c->r.bytes += bytes;
    }
    free(pend);
    rs_close_dirs(c);
    return rc == -ENOMEM ? rc : 0;
}

static int
rs_begin(struct rs_ctx *c, mithril_store *s, const char *work_dir)
{
    int rc;

    memset(c, 0, sizeof(*c));
    c->s = s;
    c->work_dir = work_dir;
    rc = mi_mkdirs(work_dir, 0700);
    if (rc < 0) {
        mi_log(MITHRIL_LOG_ERROR, "restore: cannot make '%s': %s", work_dir,
               mithril_strerror(rc));
        return rc;
    }
    c->work_fd = open(work_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (c->work_fd < 0) {
        return mi_log_errno("open", work_dir);
    }
    if (!realpath(work_dir, c->abs_dir)) {
        rc = mi_log_errno("realpath", work_dir);
        close(c->work_fd);
        return rc;
    }
    return 0;
}

/* 1 if meta carries the token "tc=<tc>" (any tc when tc is NULL). */
static int
meta_has_tc(const char *meta, const char *tc)
{
    const char *p = meta;
    size_t n;

    while (p && *p) {
        while (*p == ' ') {
            p++;
        }
        n = strcspn(p, " ");
        if (n > 3 && !strncmp(p, "tc=", 3)) {
            if (!tc || (n - 3 == strlen(tc) && !strncmp(p + 3, tc, n - 3))) {
                return 1;
            }
        }
        p += n;
    }
    return 0;
}

struct rs_keys {
    const char *tc;
    char **v;
    size_t n, cap;
    uint64_t other_tc;
    int failed;
};

static int
collect_key(const mithril_entry *e, void *ctx)
{
    struct rs_keys *k = ctx;
    char **nv;

    if (!meta_has_tc(e->meta, k->tc)) {
        if (meta_has_tc(e->meta, NULL)) {
            k->other_tc++;
        }
        return 0;
    }
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 64;
        nv = realloc(k->v, k->cap * sizeof(*nv));
        if (!nv) {
            k->failed = 1;
            return 1;
        }
        k->v = nv;
    }
    k->v[k->n] = strdup(e->key);
    if (!k->v[k->n]) {
        k->failed = 1;
        return 1;
    }
    k->n++;
    return 0;
}

int
mithril_restore(mithril_store *s, const char *work_dir, const char *toolchain,
                mithril_sync_result *out)
{
    struct rs_keys keys = {0};
    struct rs_ctx c;
    mithril_entry *e;
    char tc[CAP_TC_LEN + 1];
    size_t i;
    int rc;

    if (!s || !work_dir || !*work_dir) {
        return MITHRIL_EINVAL;
    }
    if (toolchain) {
        mi_capture_tag(toolchain, tc);
        keys.tc = tc;
    }

    /*
     * With a remote, first fetch this toolchain's entries the local store
     * lacks, so a fresh machine starts warm. A dead remote costs at most
     * its breaker's budget and turns into local misses. A pull this
     * handle just made (enable() pulls, then restores) is not repeated.
     */
    if (toolchain && (s->remote || s->remote_url) &&
        !mi_remote_pulled_recently(s, toolchain)) {
        mithril_sync_result pulled;

        if (mithril_remote_pull(s, toolchain, NULL, NULL, &pulled) == 0) {
            mi_log(MITHRIL_LOG_DEBUG, "restore: pulled %llu entries",
                   (unsigned long long)pulled.entries);
        }
    }

    /*
     * Collect the keys first: restoring reads blobs and may quarantine
     * one, which must not happen inside the index's iteration.
     */
    rc = mithril_entry_foreach(s, collect_key, &keys);
    if (rc < 0 || keys.failed) {
        rc = rc < 0 ? rc : -ENOMEM;
        goto out_keys;
    }
    rc = rs_begin(&c, s, work_dir);
    if (rc < 0) {
        goto out_keys;
    }
    c.r.skipped = keys.other_tc;
    for (i = 0; i < keys.n; i++) {
        rc = mithril_entry_peek(s, keys.v[i], &e);
        if (rc == MITHRIL_ENOTFOUND) {
            continue; /* evicted meanwhile */
        }
        if (rc < 0) {
            break;
        }
        rc = rs_entry(&c, e);
        mithril_entry_free(e);
        if (rc < 0) {
            break;
        }
    }
    close(c.work_fd);
    if (rc >= 0 || rc == MITHRIL_ENOTFOUND) {
        rc = 0;
        if (out) {
            *out = c.r;
        }
    }
out_keys:
    for (i = 0; i < keys.n; i++) {
        free(keys.v[i]);
    }
    free(keys.v);
    return rc;
}

int
mithril_restore_entry(mithril_store *s, const char *work_dir, const char *key,
                      mithril_sync_result *out)
{
    mithril_entry *e;
    struct rs_ctx c;
    int rc;

    if (!s || !work_dir || !*work_dir || !key) {
        return MITHRIL_EINVAL;
    }
    rc = mithril_entry_get(s, key, &e);
    if (rc < 0) {
        return rc;
    }
    rc = rs_begin(&c, s, work_dir);
    if (rc == 0) {
        rc = rs_entry(&c, e);
        close(c.work_fd);
    }
    mithril_entry_free(e);
    if (rc == 0 && out) {
        *out = c.r;
    }
    return rc;
}
