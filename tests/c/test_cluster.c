/*
 * test_cluster.c - the Redis Cluster slot map: key slots (CRC16 and hash
 * tags, against the values a real cluster node gives for the same keys),
 * loading a CLUSTER SLOTS reply, routing by it, and replies of the wrong
 * shape refused with the map left as it was.
 */
#include "check.h"
#include "cluster.h"
#include "internal.h"

static void
test_slots(void)
{
    /* CLUSTER KEYSLOT of a real redis-server 7.0 for the same keys. */
    CHECK_EQ_INT(mi_cluster_slot("foo", 3), 12182);
    CHECK_EQ_INT(mi_cluster_slot("bar", 3), 5061);
    CHECK_EQ_INT(mi_cluster_slot("123456789", 9), 12739);
    CHECK_EQ_INT(mi_cluster_slot("mithril:entries", 15), 12642);
    CHECK_EQ_INT(mi_cluster_slot("", 0), 0);
    /* Hash tags: the first {...} that is not empty decides. */
    CHECK_EQ_INT(mi_cluster_slot("{user1000}.following", 20),
                 mi_cluster_slot("user1000", 8));
    CHECK_EQ_INT(mi_cluster_slot("{user1000}.followers", 20),
                 mi_cluster_slot("user1000", 8));
    CHECK_EQ_INT(mi_cluster_slot("foo{bar}{zap}", 13),
                 mi_cluster_slot("bar", 3));
    CHECK_EQ_INT(mi_cluster_slot("foo{{bar}}zap", 13),
                 mi_cluster_slot("{bar", 4));
    CHECK_EQ_INT(mi_cluster_slot("foo{}{bar}", 10), 8363);
    CHECK_EQ_INT(mi_cluster_slot("foo{bar", 7), mi_cluster_slot("foo{bar", 7));
    /* Only len bytes count. */
    CHECK_EQ_INT(mi_cluster_slot("foozzz", 3), 12182);
}

/* Reply builders: a CLUSTER SLOTS reply is nested arrays. */
static redisReply *
r_int(long long v)
{
    redisReply *r = calloc(1, sizeof(*r));

    r->type = REDIS_REPLY_INTEGER;
    r->integer = v;
    return r;
}

static redisReply *
r_str(const char *s)
{
    redisReply *r = calloc(1, sizeof(*r));

    r->type = REDIS_REPLY_STRING;
    r->str = strdup(s);
    r->len = strlen(s);
    return r;
}

static redisReply *
r_arr(size_t n, redisReply **el)
{
    redisReply *r = calloc(1, sizeof(*r));
    size_t i;

    r->type = REDIS_REPLY_ARRAY;
    r->elements = n;
    r->element = calloc(n ? n : 1, sizeof(*r->element));
    for (i = 0; i < n; i++) {
        r->element[i] = el[i];
    }
    return r;
}

static redisReply *
range(long long a, long long b, const char *host, long long port)
{
    redisReply *who[3] = {r_str(host), r_int(port), r_str("node-id")};
    redisReply *el[3] = {r_int(a), r_int(b), r_arr(3, who)};

    return r_arr(3, el);
}

static void
test_load_and_route(void)
{
    struct mi_cluster *m = mi_cluster_new("10.0.0.1", 7000);
    char host[256];
    int port = 0;
    redisReply *el[3];
    redisReply *rep;

    CHECK(m != NULL);
    /* A plain server: everything goes to node 0, the URL's. */
    CHECK_EQ_INT(mi_cluster_on(m), 0);
    CHECK_EQ_INT(mi_cluster_node_for(m, "foo", 3), 0);
    CHECK_EQ_INT(mi_cluster_gen(m), 0);

    el[0] = range(0, 5460, "10.0.0.1", 7000);
    el[1] = range(5461, 10922, "10.0.0.2", 7001);
    el[2] = range(10923, 16383, "", 7002); /* no name: the replier's host */
    rep = r_arr(3, el);
    CHECK_EQ_INT(mi_cluster_load(m, rep, "10.0.0.9"), 0);
    CHECK_EQ_INT(mi_cluster_on(m), 1);
    CHECK_EQ_INT(mi_cluster_gen(m), 1);
    CHECK_EQ_INT(mi_cluster_node_for(m, "bar", 3), 0); /* 5061: the seed */
    CHECK_EQ_INT(mi_cluster_node_for(m, "foo", 3), 2); /* slot 12182 */
    CHECK_EQ_INT(mi_cluster_node_for(m, "123456789", 9), 2);   /* 12739 */
    CHECK_EQ_INT(mi_cluster_node_for(m, "foo{}{bar}", 10), 1); /* 8363 */
    CHECK_EQ_INT(mi_cluster_node_for(m, "{foo}{bar}", 10), 2);
    CHECK_EQ_INT(mi_cluster_node(m, 1, host, sizeof(host), &port), 0);
    CHECK_EQ_STR(host, "10.0.0.2");
    CHECK_EQ_INT(port, 7001);
    CHECK_EQ_INT(mi_cluster_node(m, 2, host, sizeof(host), &port), 0);
    CHECK_EQ_STR(host, "10.0.0.9");
    CHECK_EQ_INT(port, 7002);
    CHECK_EQ_INT(mi_cluster_node(m, 3, host, sizeof(host), &port), -1);
    CHECK_EQ_INT(mi_cluster_node(m, 0, host, 4, &port), -1); /* too small */
    freeReplyObject(rep);

    /* Slots moved: the same nodes keep their numbers. */
    el[0] = range(0, 16383, "10.0.0.2", 7001);
    rep = r_arr(1, el);
    CHECK_EQ_INT(mi_cluster_load(m, rep, "10.0.0.2"), 0);
    CHECK_EQ_INT(mi_cluster_gen(m), 2);
    CHECK_EQ_INT(mi_cluster_node_for(m, "foo", 3), 1);
    CHECK_EQ_INT(mi_cluster_node(m, 2, host, sizeof(host), &port), 0);
    freeReplyObject(rep);
    mi_cluster_free(m);
}

static void
test_bad_replies(void)
{
    struct mi_cluster *m = mi_cluster_new("h", 1);
    redisReply *el[2];
    redisReply *rep;

    CHECK_EQ_INT(mi_cluster_load(m, NULL, "h"), MITHRIL_EFORMAT);
    rep = r_str("ERR This instance has cluster support disabled");
    CHECK_EQ_INT(mi_cluster_load(m, rep, "h"), MITHRIL_EFORMAT);
    freeReplyObject(rep);
    rep = r_arr(0, NULL); /* a cluster with no slots assigned */
    CHECK_EQ_INT(mi_cluster_load(m, rep, "h"), MITHRIL_EFORMAT);
    freeReplyObject(rep);
    /* One good range and one past the last slot: all refused. */
    el[0] = range(0, 100, "a", 2);
    el[1] = range(200, 16384, "b", 3);
    rep = r_arr(2, el);
    CHECK_EQ_INT(mi_cluster_load(m, rep, "h"), MITHRIL_EFORMAT);
    freeReplyObject(rep);
    el[0] = range(10, 5, "a", 2); /* start after end */
    rep = r_arr(1, el);
    CHECK_EQ_INT(mi_cluster_load(m, rep, "h"), MITHRIL_EFORMAT);
    freeReplyObject(rep);
    el[0] = range(0, 5, "a", 0); /* no port */
    rep = r_arr(1, el);
    CHECK_EQ_INT(mi_cluster_load(m, rep, "h"), MITHRIL_EFORMAT);
    freeReplyObject(rep);
    CHECK_EQ_INT(mi_cluster_on(m), 0);
    CHECK_EQ_INT(mi_cluster_gen(m), 0);
    CHECK_EQ_INT(mi_cluster_node_for(m, "foo", 3), 0);
    mi_cluster_free(m);
}

static void
test_node_table_full(void)
{
    struct mi_cluster *m = mi_cluster_new("seed", 1);
    redisReply *el[MI_CL_NODES + 1];
    redisReply *rep;
    char host[32];
    int port;
    int i;

    /* One slot range per node, more nodes than the table holds. */
    for (i = 0; i <= MI_CL_NODES; i++) {
        snprintf(host, sizeof(host), "n%d", i);
        el[i] = range(i, i, host, 100 + i);
    }
    rep = r_arr(MI_CL_NODES + 1, el);
    CHECK_EQ_INT(mi_cluster_load(m, rep, "seed"), 0);
    freeReplyObject(rep);
    /* Node 0 is the seed; n0..n62 got 1..63; n63 and n64 did not fit. */
    CHECK_EQ_INT(mi_cluster_node(m, MI_CL_NODES - 1, host, sizeof(host), &port),
                 0);
    CHECK_EQ_STR(host, "n62");
    CHECK_EQ_INT(mi_cluster_node(m, MI_CL_NODES, host, sizeof(host), &port),
                 -1);
    mi_cluster_free(m);
}

/*
 * A reader bounded by mi_reader_bound refuses an array header longer than
 * MI_REPLY_MAX_ELEMENTS (hiredis would allocate its element table from the
 * header alone: 4 GiB for this one) and still parses arrays up to it.
 */
static void
test_reader_bound(void)
{
    static const char huge[] = "*3\r\n*3\r\n:0\r\n:5460\r\n*555555553\r\n";
    static const char ok[] = "*2\r\n:7\r\n$2\r\nhi\r\n";
    char head[32];
    redisReader *rd = redisReaderCreate();
    redisReply *rep = NULL;
    int n;

    CHECK(rd != NULL);
    mi_reader_bound(rd);
    CHECK_EQ_INT(redisReaderFeed(rd, huge, sizeof(huge) - 1), REDIS_OK);
    CHECK_EQ_INT(redisReaderGetReply(rd, (void **)&rep), REDIS_ERR);
    CHECK(rep == NULL);
    CHECK_EQ_INT(rd->err, REDIS_ERR_OOM);
    redisReaderFree(rd);

    rd = redisReaderCreate();
    mi_reader_bound(rd);
    CHECK_EQ_INT(redisReaderFeed(rd, ok, sizeof(ok) - 1), REDIS_OK);
    CHECK_EQ_INT(redisReaderGetReply(rd, (void **)&rep), REDIS_OK);
    CHECK(rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
          rep->element[0]->integer == 7);
    freeReplyObject(rep);
    rep = NULL;
    /* The bound itself is allowed, one more is not. */
    n = snprintf(head, sizeof(head), "*%d\r\n", MI_REPLY_MAX_ELEMENTS);
    CHECK_EQ_INT(redisReaderFeed(rd, head, (size_t)n), REDIS_OK);
    CHECK_EQ_INT(redisReaderGetReply(rd, (void **)&rep), REDIS_OK);
    CHECK(rep == NULL); /* waiting for the elements */
    CHECK_EQ_INT(rd->err, 0);
    redisReaderFree(rd);

    rd = redisReaderCreate();
    mi_reader_bound(rd);
    n = snprintf(head, sizeof(head), "*%d\r\n", MI_REPLY_MAX_ELEMENTS + 1);
    CHECK_EQ_INT(redisReaderFeed(rd, head, (size_t)n), REDIS_OK);
    CHECK_EQ_INT(redisReaderGetReply(rd, (void **)&rep), REDIS_ERR);
    CHECK_EQ_INT(rd->err, REDIS_ERR_OOM);
    redisReaderFree(rd);
}

int
main(void)
{
    RUN(test_slots);
    RUN(test_load_and_route);
    RUN(test_bad_replies);
    RUN(test_node_table_full);
    RUN(test_reader_bound);
    return check_report();
}
