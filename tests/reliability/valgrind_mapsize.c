/*
 * valgrind_mapsize.c - a preload shim for `make valgrind` only: caps the
 * LMDB map size a process asks for at 16 GiB. valgrind cannot reserve the
 * 64 GiB map the index asks for (mdb_env_open fails with EINVAL under it),
 * which would stop every test that opens the index before it tests
 * anything. The cap changes nothing else: the test stores are tiny.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <lmdb.h>
#include <stddef.h>

#define CAP ((size_t)16 << 30)

int
mdb_env_set_mapsize(MDB_env *env, size_t size)
{
    static int (*real)(MDB_env *, size_t);

    if (!real) {
        real =
            (int (*)(MDB_env *, size_t))dlsym(RTLD_NEXT, "mdb_env_set_mapsize");
    }
    return real(env, size > CAP ? CAP : size);
}
