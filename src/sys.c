/*
 * sys.c - the table of system calls the library's write paths go through.
 *
 * Every call that creates, writes, syncs, links, renames or removes a file
 * in the store reaches the kernel through mi_sys, never directly. Tests
 * replace single pointers to simulate a full disk (ENOSPC), an I/O error
 * (EIO) or short writes, then call mi_sys_reset() to restore the libc
 * calls. The table is process wide and is not meant to be changed while
 * other threads use the library.
 */
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static int
sys_open(const char *path, int flags, mode_t mode)
{
    return open(path, flags, mode);
}

static int
sys_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    return openat(dirfd, path, flags, mode);
}

static int
sys_mkdir(const char *path, mode_t mode)
{
    return mkdir(path, mode);
}

static const struct mi_sys mi_sys_defaults = {
    .open = sys_open,
    .openat = sys_openat,
    .write = write,
    .pwrite = pwrite,
    .fsync = fsync,
    .rename = rename,
    .link = link,
    .unlink = unlink,
    .mkdir = sys_mkdir,
    .ftruncate = ftruncate,
};

struct mi_sys mi_sys = {
    .open = sys_open,
    .openat = sys_openat,
    .write = write,
    .pwrite = pwrite,
    .fsync = fsync,
    .rename = rename,
    .link = link,
    .unlink = unlink,
    .mkdir = sys_mkdir,
    .ftruncate = ftruncate,
};

void
mi_sys_reset(void)
{
    mi_sys = mi_sys_defaults;
}
