/*
 * fuzz_redis.c - replies from a Redis remote: a read-through miss asks
 * the remote for an entry and its blobs, and everything it gets back is
 * parsed (RESP by hiredis, then the entry's encoding, the blob headers,
 * raw, zstd and chunked payloads by remote.c).
 *
 * remote.c exposes no reply decoder, so this target goes through the
 * public path: a server thread inside the fuzzer listens on a loopback
 * port and answers every connection with the fuzzed bytes as its whole
 * reply stream, then closes. Each input opens the store with that remote
 * (a fresh breaker) and looks up the key "fuzz/key".
 *
 * Properties checked: whatever the replies, the lookup returns a hit or a
 * miss (never another error); a hit's items all have safe names and
 * their blobs read back with verification on; verify then finds nothing
 * corrupt; a store with a secret never records an unsigned entry.
 */
#include "fuzz_common.h"
#include "sign.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

static int listen_fd = -1;
static int port;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static uint8_t *reply;
static size_t reply_len;
static unsigned long accepted, served;
static char plain_dir[PATH_MAX], signed_dir[PATH_MAX], url[64];
static unsigned long runs;

static void *
server(void *arg)
{
    (void)arg;
    for (;;) {
        uint8_t *copy, sink[4096];
        size_t n, off = 0;
        ssize_t w;
        int fd = accept(listen_fd, NULL, NULL);

        if (fd < 0) {
            continue;
        }
        pthread_mutex_lock(&mu);
        accepted++;
        n = reply_len;
        copy = malloc(n ? n : 1);
        if (copy && n) {
            memcpy(copy, reply, n);
        }
        pthread_mutex_unlock(&mu);
        while (copy && off < n) {
            w = send(fd, copy + off, n - off, MSG_NOSIGNAL);
            if (w <= 0) {
                break;
            }
            off += (size_t)w;
        }
        shutdown(fd, SHUT_WR);
        while (recv(fd, sink, sizeof(sink), 0) > 0) {
        }
        close(fd);
        free(copy);
        pthread_mutex_lock(&mu);
        served++;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static void
start_server(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    pthread_t th;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, len) < 0 ||
        listen(listen_fd, 16) < 0 ||
        getsockname(listen_fd, (struct sockaddr *)&a, &len) < 0) {
        abort();
    }
    port = ntohs(a.sin_port);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    if (pthread_create(&th, NULL, server, NULL) != 0) {
        abort();
    }
    pthread_detach(th);
}

static void
lookup(const char *dir, int with_secret)
{
    mithril_store *s = NULL;
    mithril_entry *e = NULL;
    mithril_verify_result v;
    void *data;
    size_t len, i;
    int rc;

    if (mithril_store_open(dir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG,
                           &s) != 0) {
        abort();
    }
    if (with_secret && mithril_store_set_secret(s, "fuzz-secret", 11) != 0) {
        abort();
    }
    if (mithril_store_set_remote(s, url, 1) != 0) {
        abort();
    }
    rc = mithril_entry_get(s, "fuzz/key", &e);
    if (rc != 0 && rc != MITHRIL_ENOTFOUND) {
        abort(); /* a remote's answer became a local error */
    }
    if (rc == 0) {
        if (with_secret && !e->is_signed) {
            abort();
        }
        for (i = 0; i < e->n_items; i++) {
            if (!mi_name_safe(e->items[i].name)) {
                abort();
            }
            if (mithril_store_get(s, e->items[i].addr, &data, &len) == 0) {
                if (len != e->items[i].size) {
                    abort();
                }
                mithril_free(data);
            }
        }
        mithril_entry_free(e);
        mithril_entry_delete(s, "fuzz/key");
        if (mithril_store_verify(s, NULL, NULL, &v) != 0 || v.blobs_corrupt) {
            abort();
        }
    }
    mithril_store_close(s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mithril_store *s;

    if (listen_fd < 0) {
        signal(SIGPIPE, SIG_IGN);
        start_server();
        snprintf(plain_dir, sizeof(plain_dir), "%s/plain", fuzz_scratch());
        snprintf(signed_dir, sizeof(signed_dir), "%s/signed", fuzz_scratch());
    }
    pthread_mutex_lock(&mu);
    reply = (uint8_t *)data;
    reply_len = size;
    pthread_mutex_unlock(&mu);

    lookup(plain_dir, 0);
    lookup(signed_dir, 1);

    /* Every connection made has been answered before data goes away. */
    pthread_mutex_lock(&mu);
    while (served != accepted) {
        pthread_cond_wait(&cond, &mu);
    }
    reply = NULL;
    reply_len = 0;
    pthread_mutex_unlock(&mu);

    if (++runs % 256 == 0) {
        if (mithril_store_open(plain_dir, MITHRIL_OPEN_NO_CONFIG, &s) == 0) {
            mithril_store_clear(s);
            mithril_store_close(s);
        }
        if (mithril_store_open(signed_dir, MITHRIL_OPEN_NO_CONFIG, &s) == 0) {
            mithril_store_clear(s);
            mithril_store_close(s);
        }
    }
    return 0;
}
