/*
 * cluster.h - Redis Cluster routing for remote.c: which node serves a key.
 * Private to the library. No I/O here: remote.c fetches CLUSTER SLOTS and
 * hands the reply over.
 */
#ifndef MITHRIL_CLUSTER_H
#define MITHRIL_CLUSTER_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#define MI_CL_SLOTS 16384
#define MI_CL_NODES 64 /* nodes a map can name; more are not routed to */

/*
 * The slot map of one remote, shared by its connections and safe to use
 * from many threads. Node 0 is the server the URL names; until a redirect
 * has been seen every key maps to it (a plain server). Nodes are only ever
 * added, so a node number stays valid for the life of the map.
 */
struct mi_cluster;

struct mi_cluster *mi_cluster_new(const char *host, int port);
void mi_cluster_free(struct mi_cluster *m);

/* The slot of a key: CRC16 (XMODEM) of it, or of its {hash tag}, mod 16384. */
unsigned mi_cluster_slot(const char *key, size_t len);

/* 1 once the map came from a cluster (mi_cluster_load), else 0. */
int mi_cluster_on(struct mi_cluster *m);

/* The node serving key (0 while the map is off). */
int mi_cluster_node_for(struct mi_cluster *m, const char *key, size_t len);

/* Node i's address into host (n bytes) and *port; 0, or -1 if unknown. */
int mi_cluster_node(struct mi_cluster *m, int i, char *host, size_t n,
                    int *port);

/* The map's generation: it grows at each load. */
uint64_t mi_cluster_gen(struct mi_cluster *m);

/*
 * Load a CLUSTER SLOTS reply (its_host: the host the reply came from,
 * standing in for a node whose address is empty). Turns the map on.
 * 0, or MITHRIL_EFORMAT for a reply of another shape (nothing changed).
 */
int mi_cluster_load(struct mi_cluster *m, const redisReply *slots,
                    const char *its_host);

#endif
