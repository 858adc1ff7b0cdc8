/*
 * cluster.c - the slot map of a Redis Cluster: 16,384 hash slots, each
 * served by one node; a key's slot is CRC16 of the key (or of the part
 * between its first '{' and the next '}', when that part is not empty)
 * modulo 16,384, as the cluster specification defines it.
 *
 * remote.c starts every remote as a plain server (node 0, the URL's). The
 * first MOVED answer tells it the server is a cluster node; it then asks
 * that node for CLUSTER SLOTS and loads the reply here, and routes each
 * command by its key from then on. A later MOVED (slots moved between
 * nodes) loads the map again.
 */
#include "cluster.h"

#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct cl_node {
    char host[256];
    int port;
};

struct mi_cluster {
    pthread_mutex_t mu;
    int on;
    uint64_t gen;
    int n;
    struct cl_node node[MI_CL_NODES];
    uint8_t owner[MI_CL_SLOTS]; /* node number per slot */
};

_Static_assert(MI_CL_NODES <= 256, "node numbers fit the owner table");

struct mi_cluster *
mi_cluster_new(const char *host, int port)
{
    struct mi_cluster *m = calloc(1, sizeof(*m));

    if (!m || strlen(host) >= sizeof(m->node[0].host)) {
        free(m);
        return NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    strcpy(m->node[0].host, host);
    m->node[0].port = port;
    m->n = 1;
    return m;
}

void
mi_cluster_free(struct mi_cluster *m)
{
    if (m) {
        pthread_mutex_destroy(&m->mu);
        free(m);
    }
}

/* CRC16-CCITT as the cluster uses it (XMODEM: polynomial 0x1021, 0 init). */
static unsigned
crc16(const unsigned char *p, size_t n)
{
    unsigned crc = 0;
    size_t i;
    int b;

    for (i = 0; i < n; i++) {
        crc ^= (unsigned)p[i] << 8;
        for (b = 0; b < 8; b++) {
            crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
        }
        crc &= 0xffff;
    }
    return crc;
}

unsigned
mi_cluster_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    const char *close;

    if (open) {
        close = memchr(open + 1, '}', len - (size_t)(open + 1 - key));
        if (close && close > open + 1) {
            key = open + 1;
            len = (size_t)(close - key);
        }
    }
    return crc16((const unsigned char *)key, len) & (MI_CL_SLOTS - 1);
}

int
mi_cluster_on(struct mi_cluster *m)
{
    return __atomic_load_n(&m->on, __ATOMIC_ACQUIRE);
}

int
mi_cluster_node_for(struct mi_cluster *m, const char *key, size_t len)
{
    unsigned slot;
    int i;

    if (!mi_cluster_on(m)) {
        return 0;
    }
    slot = mi_cluster_slot(key, len);
    pthread_mutex_lock(&m->mu);
    i = m->owner[slot];
    pthread_mutex_unlock(&m->mu);
    return i;
}

int
mi_cluster_node(struct mi_cluster *m, int i, char *host, size_t n, int *port)
{
    int rc = -1;

    pthread_mutex_lock(&m->mu);
    if (i >= 0 && i < m->n && strlen(m->node[i].host) < n) {
        strcpy(host, m->node[i].host);
        *port = m->node[i].port;
        rc = 0;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

uint64_t
mi_cluster_gen(struct mi_cluster *m)
{
    uint64_t g;

    pthread_mutex_lock(&m->mu);
    g = m->gen;
    pthread_mutex_unlock(&m->mu);
    return g;
}

/* The number of node host:port, added if new; -1 when the table is full. */
static int
node_number(struct mi_cluster *m, const char *host, size_t hlen, int port)
{
    int i;

    for (i = 0; i < m->n; i++) {
        if (m->node[i].port == port && strlen(m->node[i].host) == hlen &&
            memcmp(m->node[i].host, host, hlen) == 0) {
            return i;
        }
    }
    if (m->n == MI_CL_NODES || hlen >= sizeof(m->node[0].host)) {
        return -1;
    }
    memcpy(m->node[m->n].host, host, hlen);
    m->node[m->n].host[hlen] = '\0';
    m->node[m->n].port = port;
    return m->n++;
}

/* One range of a CLUSTER SLOTS reply: start, end, then [host, port, ...]. */
static int
range_ok(const redisReply *r)
{
    const redisReply *who;

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3) {
        return 0;
    }
    who = r->element[2];
    return r->element[0]->type == REDIS_REPLY_INTEGER &&
           r->element[1]->type == REDIS_REPLY_INTEGER &&
           r->element[0]->integer >= 0 &&
           r->element[0]->integer <= r->element[1]->integer &&
           r->element[1]->integer < MI_CL_SLOTS &&
           who->type == REDIS_REPLY_ARRAY && who->elements >= 2 &&
           who->element[0]->type == REDIS_REPLY_STRING &&
           who->element[1]->type == REDIS_REPLY_INTEGER &&
           who->element[1]->integer > 0 && who->element[1]->integer < 65536;
}

int
mi_cluster_load(struct mi_cluster *m, const redisReply *slots,
                const char *its_host)
{
    size_t i;
    long long s;

    if (!slots || slots->type != REDIS_REPLY_ARRAY || slots->elements == 0) {
        return MITHRIL_EFORMAT;
    }
    for (i = 0; i < slots->elements; i++) {
        if (!range_ok(slots->element[i])) {
            return MITHRIL_EFORMAT;
        }
    }
    pthread_mutex_lock(&m->mu);
    for (i = 0; i < slots->elements; i++) {
        const redisReply *r = slots->element[i];
        const redisReply *who = r->element[2];
        const char *host = who->element[0]->str;
        size_t hlen = who->element[0]->len;
        int node;

        if (hlen == 0 || (hlen == 1 && host[0] == '?')) {
            host = its_host; /* the node could not name itself */
            hlen = strlen(its_host);
        }
        node = node_number(m, host, hlen, (int)who->element[1]->integer);
        if (node < 0) {
            continue; /* those slots keep their old owner: a MOVED, later */
        }
        for (s = r->element[0]->integer; s <= r->element[1]->integer; s++) {
            m->owner[s] = (uint8_t)node;
        }
    }
    m->gen++;
    __atomic_store_n(&m->on, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&m->mu);
    return 0;
}
