/*
 * fuzz_cluster.c - a cluster's CLUSTER SLOTS reply, which comes from the
 * network and so is untrusted: RESP bytes parsed by hiredis's reader, then
 * loaded into a slot map (mi_cluster_load), then keys routed by it.
 *
 * Input: RESP bytes; the first reply they hold is the CLUSTER SLOTS reply,
 * and the whole input is also used as keys for routing.
 * Properties checked: a load either succeeds (the map is on, its
 * generation grew by one) or refuses the reply with EFORMAT and changes
 * nothing; every key's slot is below 16,384; every key routes to a node
 * whose address the map can give, with a port in 1..65535.
 */
#include "fuzz_common.h"
#include "cluster.h"
#include "internal.h"

#include <hiredis/hiredis.h>

static void
check_routes(struct mi_cluster *m, const uint8_t *data, size_t size)
{
    char host[256];
    size_t i;
    int node;
    int port;

    for (i = 0; i <= size; i += 1 + size / 8) {
        const char *key = (const char *)data + i;
        size_t len = size - i;

        if (mi_cluster_slot(key, len) >= MI_CL_SLOTS) {
            abort();
        }
        node = mi_cluster_node_for(m, key, len);
        if (mi_cluster_node(m, node, host, sizeof(host), &port) != 0 ||
            port < 1 || port > 65535) {
            abort();
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mi_cluster *m = mi_cluster_new("127.0.0.1", 6379);
    redisReader *rd = redisReaderCreate();
    void *reply = NULL;
    int on;
    int rc;

    if (!m || !rd) {
        abort();
    }
    mi_reader_bound(rd); /* as every connection of remote.c is */
    if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK &&
        redisReaderGetReply(rd, &reply) == REDIS_OK && reply) {
        rc = mi_cluster_load(m, reply, "10.0.0.9");
        on = mi_cluster_on(m);
        if (rc == 0 ? !on || mi_cluster_gen(m) != 1
                    : rc != MITHRIL_EFORMAT || on || mi_cluster_gen(m) != 0) {
            abort();
        }
        /* Loading the same reply again only moves the generation. */
        if (rc == 0 && (mi_cluster_load(m, reply, "10.0.0.9") != 0 ||
                        mi_cluster_gen(m) != 2)) {
            abort();
        }
        freeReplyObject(reply);
    }
    check_routes(m, data, size);
    redisReaderFree(rd);
    mi_cluster_free(m);
    return 0;
}
