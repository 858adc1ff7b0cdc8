/*
 * test_stats.c - the shared counters: adds from several processes at once
 * sum exactly; hits and misses follow lookups; zero clears events but not
 * sizes; bad counters and an unknown file format are refused.
 */
#include "check.h"
#include "index.h"

#include <fcntl.h>
#include <sys/wait.h>

#define PROCS 6
#define ADDS  20000

static char *dir;

static mithril_store *
open_store(void)
{
    mithril_store *s = NULL;
    int rc = mithril_store_open(
        dir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG, &s);

    if (rc < 0) {
        fprintf(stderr, "open %s: %s\n", dir, mithril_strerror(rc));
        exit(2);
    }
    return s;
}

static void
test_processes_add_up(void)
{
    mithril_store *s = open_store();
    mithril_stats st;
    pid_t pids[PROCS];
    int i, status;

    CHECK_EQ_INT(mithril_stats_zero(s), 0);
    mithril_store_close(s);
    for (i = 0; i < PROCS; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            mithril_store *c = open_store();
            int j, bad = 0;

            for (j = 0; j < ADDS; j++) {
                bad += mithril_stats_add(c, MITHRIL_COUNTER_GRAPH_HIT, 1) < 0;
                bad +=
                    mithril_stats_add(c, MITHRIL_COUNTER_REMOTE_ERROR, 2) < 0;
                mi_stats_add(c, MI_C_MISSES, 1);
            }
            mithril_store_close(c);
            _exit(bad ? 1 : 0);
        }
    }
    for (i = 0; i < PROCS; i++) {
        CHECK(waitpid(pids[i], &status, 0) == pids[i]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    s = open_store();
    CHECK_EQ_INT(mithril_stats_get(s, &st), 0);
    CHECK_EQ_INT(st.graph_hits, PROCS * ADDS);
    CHECK_EQ_INT(st.remote_errors, 2 * PROCS * ADDS);
    CHECK_EQ_INT(st.misses, PROCS * ADDS);
    CHECK_EQ_INT(st.graph_misses, 0);
    CHECK_EQ_INT(st.rejected, 0);
    mithril_store_close(s);
}

static void
test_threads_of_one_process(void)
{
    /* Two handles of one process share the file and the shard. */
    mithril_store *a = open_store(), *b = open_store();
    mithril_stats st;

    CHECK_EQ_INT(mithril_stats_zero(a), 0);
    CHECK_EQ_INT(mithril_stats_add(a, MITHRIL_COUNTER_REJECTED, 3), 0);
    CHECK_EQ_INT(mithril_stats_add(b, MITHRIL_COUNTER_REJECTED, 4), 0);
    CHECK_EQ_INT(mithril_stats_add(b, MITHRIL_COUNTER_REMOTE_HIT, 5), 0);
    CHECK_EQ_INT(mithril_stats_add(b, MITHRIL_COUNTER_REMOTE_MISS, 6), 0);
    CHECK_EQ_INT(mithril_stats_add(b, MITHRIL_COUNTER_GRAPH_MISS, 7), 0);
    CHECK_EQ_INT(mithril_stats_add(a, 99, 1), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_stats_add(a, -1, 1), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_stats_get(a, &st), 0);
    CHECK_EQ_INT(st.rejected, 7);
    CHECK_EQ_INT(st.remote_hits, 5);
    CHECK_EQ_INT(st.remote_misses, 6);
    CHECK_EQ_INT(st.graph_misses, 7);
    mithril_store_close(a);
    mithril_store_close(b);
}

static void
test_hits_misses_zero(void)
{
    mithril_store *s = open_store();
    mithril_entry *e = NULL;
    mithril_stats st;
    mithril_item it;

    CHECK_EQ_INT(mithril_stats_zero(s), 0);
    CHECK_EQ_INT(mithril_store_put(s, "stats blob", 10, it.addr), 0);
    it.name = "b";
    it.size = 10;
    it.mode = 0644;
    CHECK_EQ_INT(mithril_entry_put(s, "k-stats", &it, 1, NULL), 0);
    CHECK_EQ_INT(mithril_entry_get(s, "k-stats", &e), 0);
    mithril_entry_free(e);
    CHECK_EQ_INT(mithril_entry_get(s, "k-stats", &e), 0);
    mithril_entry_free(e);
    CHECK_EQ_INT(mithril_entry_get(s, "k-nope", &e), MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(mithril_entry_peek(s, "k-stats", &e), 0); /* not counted */
    mithril_entry_free(e);
    CHECK_EQ_INT(mithril_stats_get(s, &st), 0);
    CHECK_EQ_INT(st.hits, 2);
    CHECK_EQ_INT(st.misses, 1);
    CHECK(st.puts >= 1);
    CHECK_EQ_INT(st.entries, 1);
    CHECK_EQ_INT(st.blobs, 1);
    CHECK_EQ_INT(st.logical_bytes, 10);
    CHECK(st.size_bytes >= 10);
    CHECK(st.max_size_bytes > 0);

    CHECK_EQ_INT(mithril_stats_zero(s), 0);
    CHECK_EQ_INT(mithril_stats_get(s, &st), 0);
    CHECK_EQ_INT(st.hits + st.misses + st.puts + st.evictions, 0);
    CHECK_EQ_INT(st.entries, 1); /* sizes are not events */
    CHECK_EQ_INT(st.logical_bytes, 10);
    mithril_store_set_max_size(s, 12345);
    CHECK_EQ_INT(mithril_stats_get(s, &st), 0);
    CHECK_EQ_INT(st.max_size_bytes, 12345);
    CHECK_EQ_INT(mithril_store_clear(s), 0);
    mithril_store_close(s);
}

static void
test_unknown_format(void)
{
    mithril_store *s;
    mithril_stats st;
    char path[4200];
    int fd;

    snprintf(path, sizeof(path), "%s/stats", dir);
    fd = open(path, O_WRONLY);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, "\x07", 1, 8) == 1); /* version 7 */
    close(fd);
    s = open_store();
    CHECK_EQ_INT(mithril_stats_get(s, &st), MITHRIL_EFORMAT);
    mithril_store_close(s);
}

int
main(void)
{
    dir = check_tmpdir();
    RUN(test_processes_add_up);
    RUN(test_threads_of_one_process);
    RUN(test_hits_misses_zero);
    RUN(test_unknown_format);
    check_rmrf(dir);
    free(dir);
    return check_report();
}
