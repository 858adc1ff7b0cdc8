/*
 * cmd_run.c - mithril run, capture and restore: torch's working folder
 * through the store.
 *
 *   mithril run [--work-dir DIR] [--toolchain TEXT] [-v] [--] CMD ARGS...
 *   mithril capture [--work-dir DIR] [--toolchain TEXT] [--json]
 *   mithril restore [--work-dir DIR] [--toolchain TEXT | --all] [--json]
 *
 * run: restore this toolchain's entries into the working folder, run CMD
 * with TORCHINDUCTOR_CACHE_DIR=<work>/inductor, TRITON_CACHE_DIR=
 * <work>/triton, MITHRIL_WORK_DIR, MITHRIL_DIR and MITHRIL_TOOLCHAIN set,
 * then capture what it wrote, whether it succeeded, failed or was killed,
 * and exit with its status (a child killed by a signal kills us with the
 * same signal). SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to mithril by
 * another process are passed on to CMD; those the terminal sends reach
 * CMD directly (same process group), so they are not sent twice. The
 * store is closed while CMD runs. Caching never stops CMD from running:
 * a store that cannot be opened, or a failed restore or capture, is a
 * warning. MITHRIL_DISABLE=1 runs CMD unchanged (exec, no fork).
 *
 * Toolchain text (must equal python/mithril_cache/toolchain.py byte for
 * byte): --toolchain, else $MITHRIL_TOOLCHAIN, else "torch=<v> triton=<v>
 * python=<maj.min>" printed by a snippet run in CMD's interpreter (when
 * CMD is named python*) or python3 on PATH, using importlib.metadata and
 * never importing torch, followed by " device=<class>" from
 * mithril_device_detect.
 *
 * Limitation: capture and restore without --toolchain or
 * $MITHRIL_TOOLCHAIN ask python3 on PATH, which may not be the
 * interpreter that ran torch.
 *
 * Working folder: --work-dir, else $MITHRIL_WORK_DIR, else <store>/work;
 * made absolute before it is handed to CMD.
 *
 * Precompiled headers: torch 2.13 builds a ~150 MB precompiled header for
 * its C++ kernels on every process's first CPU compile, even when the
 * kernel's .so is already there, and keeps it outside its cache folder
 * (<tempdir>/torchinductor_<user>/precompiled_headers). On a fresh machine
 * or under another user name that rebuild costs more than the whole warm
 * start, so run sets TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS=0 unless
 * the environment already sets it. Kernel cache keys do not depend on it.
 *
 * Vector ISA probe: Inductor's cpp.vec_isa_ok is part of torch's FX graph
 * keys, and enable() sets TORCHINDUCTOR_VEC_ISA_OK=1 once the store holds
 * an entry isa1/<blake3> recording that torch's probe passed (meta
 * vec_isa_ok=1). run sets it the same way, so its children and enable()
 * processes share graphs: only on x86-64 Linux with a CPU device class,
 * only when the environment does not set it, and only when the entry
 * whose key run recomputes as _vec_isa_ok() does (toolchain text; $CXX and
 * g++ as shutil.which finds them, with real path, size and mtime; the ISAs
 * torch advertises, read from /proc/cpuinfo's flags) says the probe
 * passed. Any input that cannot be read leaves the knob alone, and so
 * does a store primed by a process that set cpp.cxx in code (its key
 * differs): torch then probes, as without mithril.
 */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOOLCHAIN_MAX 512

#define OPT_WORK_DIR  2000
#define OPT_TOOLCHAIN 2001
#define OPT_ALL       2002
#define OPT_JSON      2003

/*
 * The snippet printing the first three fields. Same rules as
 * mithril_cache/toolchain.py: distribution versions from
 * importlib.metadata ("none" if absent), triton then pytorch-triton.
 */
static const char toolchain_snippet[] =
    "import importlib.metadata as m, sys\n"
    "def v(*names):\n"
    "    for n in names:\n"
    "        try:\n"
    "            return m.version(n)\n"
    "        except m.PackageNotFoundError:\n"
    "            pass\n"
    "    return 'none'\n"
    "sys.stdout.write('torch=%s triton=%s python=%d.%d' % (v('torch'), "
    "v('triton', 'pytorch-triton'), sys.version_info[0], "
    "sys.version_info[1]))\n";

static volatile sig_atomic_t child_pid;
static volatile sig_atomic_t pending_sig;

static int
env_disabled(void)
{
    const char *v = getenv("MITHRIL_DISABLE");

    return v && *v && strcmp(v, "0") != 0;
}

/* 1 if the program name's last component starts with "python". */
static int
is_python(const char *prog)
{
    const char *base = strrchr(prog, '/');

    base = base ? base + 1 : prog;
    return strncmp(base, "python", 6) == 0;
}

/* Run python -c snippet; its stdout (trimmed) into out. 0 or -1. */
static int
python_fields(const char *python, char *out, size_t n)
{
    int fds[2], status;
    size_t len = 0;
    ssize_t r;
    pid_t pid;

    if (pipe(fds) < 0) {
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execlp(python, python, "-c", toolchain_snippet, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    while (len + 1 < n) {
        r = read(fds[0], out + len, n - 1 - len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        len += (size_t)r;
    }
    close(fds[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    out[len] = '\0';
    while (len && (out[len - 1] == '\n' || out[len - 1] == '\r')) {
        out[--len] = '\0';
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        strncmp(out, "torch=", 6) != 0) {
        return -1;
    }
    return 0;
}

/*
 * The toolchain text: flag, environment, or computed with the python that
 * will run (prog, when it is one) or python3.
 */
int
cli_toolchain_text(const char *flag, const char *prog, char *out, size_t n)
{
    char fields[TOOLCHAIN_MAX], dev[32];
    mithril_device d;
    const char *env = getenv("MITHRIL_TOOLCHAIN");
    int rc;

    if (flag || (env && *env)) {
        snprintf(out, n, "%s", flag ? flag : env);
        return 0;
    }
    if (python_fields(prog && is_python(prog) ? prog : "python3", fields,
                      sizeof(fields)) < 0) {
        fprintf(stderr, "mithril: warning: cannot ask python for the torch "
                        "version; entries are tagged torch=none\n");
        snprintf(fields, sizeof(fields),
                 "torch=none triton=none "
                 "python=none");
    }
    rc = mithril_device_detect(&d);
    if (rc == 0) {
        rc = mithril_device_format(&d, dev, sizeof(dev));
    }
    if (rc < 0) {
        snprintf(dev, sizeof(dev), "cpu");
    }
    if ((size_t)snprintf(out, n, "%s device=%s", fields, dev) >= n) {
        return MITHRIL_ETOOBIG;
    }
    return 0;
}

/* mkdir -p, folders made 0700; 0 or -errno. */
static int
make_dirs(const char *path)
{
    char buf[PATH_MAX];
    size_t i, len = strlen(path);

    if (len == 0 || len >= sizeof(buf)) {
        return -ENAMETOOLONG;
    }
    memcpy(buf, path, len + 1);
    for (i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') {
            continue;
        }
        buf[i] = '\0';
        if (mkdir(buf, 0700) < 0 && errno != EEXIST) {
            return -errno;
        }
        buf[i] = path[i];
    }
    return 0;
}

/* The working folder, absolute, created if missing. */
static int
work_dir_path(const char *flag, mithril_store *s, char *out)
{
    char path[PATH_MAX];
    const char *env = getenv("MITHRIL_WORK_DIR");
    int rc;

    if (flag) {
        snprintf(path, sizeof(path), "%s", flag);
    } else if (env && *env) {
        snprintf(path, sizeof(path), "%s", env);
    } else {
        snprintf(path, sizeof(path), "%s/work", mithril_store_dir(s));
    }
    rc = make_dirs(path);
    if (rc < 0) {
        return rc;
    }
    if (!realpath(path, out)) {
        return -errno;
    }
    return 0;
}

static void
print_result(const char *what, const mithril_sync_result *r, int json)
{
    if (json) {
        printf("{\"entries\": %llu, \"files\": %llu, \"bytes\": %llu, "
               "\"skipped\": %llu, \"rejected\": %llu}\n",
               (unsigned long long)r->entries, (unsigned long long)r->files,
               (unsigned long long)r->bytes, (unsigned long long)r->skipped,
               (unsigned long long)r->rejected);
        return;
    }
    if (what) {
        fprintf(stderr,
                "mithril: %s: entries %llu files %llu bytes %llu "
                "skipped %llu rejected %llu\n",
                what, (unsigned long long)r->entries,
                (unsigned long long)r->files, (unsigned long long)r->bytes,
                (unsigned long long)r->skipped,
                (unsigned long long)r->rejected);
        return;
    }
    printf("entries %llu\nfiles %llu\nbytes %llu\nskipped %llu\n"
           "rejected %llu\n",
           (unsigned long long)r->entries, (unsigned long long)r->files,
           (unsigned long long)r->bytes, (unsigned long long)r->skipped,
           (unsigned long long)r->rejected);
}

/* ---- mithril run ---- */

static void
forward_signal(int sig, siginfo_t *info, void *uctx)
{
    (void)uctx;
    /* A terminal's signal (si_code > 0) reached the child already. */
    if (info && info->si_code > 0) {
        return;
    }
    if (child_pid > 0) {
        kill((pid_t)child_pid, sig);
    } else {
        pending_sig = sig;
    }
}

static void
install_forwarding(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    struct sigaction sa;
    size_t i;

    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = forward_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        sigaction(sigs[i], &sa, NULL);
    }
}

/* Exit the way the child did. */
static int
exit_like(int status)
{
    struct rlimit no_core = {0, 0};
    sigset_t set;
    int sig;

    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }
    if (!WIFSIGNALED(status)) {
        return CLI_FAIL;
    }
    sig = WTERMSIG(status);
    fflush(NULL);
    /* The child already dumped core if it was going to; we do not. */
    setrlimit(RLIMIT_CORE, &no_core);
    signal(sig, SIG_DFL);
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
    return 128 + sig;
}

static void
exec_or_die(char **cmd)
{
    execvp(cmd[0], cmd);
    fprintf(stderr, "mithril: error: cannot run '%s': %s\n", cmd[0],
            strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
}

/* ---- the vector ISA verdict enable() keeps (_enable.py, _vec_isa_ok) ---- */

#if defined(__linux__) && defined(__x86_64__)

/* _access_check of shutil.which: exists, executable, not a folder. */
static int
is_program(const char *path)
{
    struct stat st;

    return access(path, X_OK) == 0 && stat(path, &st) == 0 &&
           !S_ISDIR(st.st_mode);
}

/* shutil.which(name) of Python 3.11 on POSIX into out; 0 or -1. */
static int
which(const char *name, char *out, size_t n)
{
    char dirs[4096];
    const char *path = getenv("PATH");
    char *dir, *next;
    size_t len;
    int w;

    if (strchr(name, '/')) {
        snprintf(out, n, "%s", name);
        return is_program(out) ? 0 : -1;
    }
    if (!path) {
        if (confstr(_CS_PATH, dirs, sizeof(dirs)) == 0) {
            snprintf(dirs, sizeof(dirs), "/bin:/usr/bin");
        }
    } else if ((size_t)snprintf(dirs, sizeof(dirs), "%s", path) >=
               sizeof(dirs)) {
        return -1;
    }
    for (dir = dirs; dir && *dirs; dir = next) {
        next = strchr(dir, ':');
        if (next) {
            *next++ = '\0';
        }
        /* An empty entry is the current folder, as os.path.join makes it. */
        len = strlen(dir);
        w = snprintf(out, n, "%s%s%s", dir,
                     len && dir[len - 1] != '/' ? "/" : "", name);
        if (w > 0 && (size_t)w < n && is_program(out)) {
            return 0;
        }
    }
    return -1;
}

/*
 * _compiler_identity(): "name=realpath:size:mtime_ns" for $CXX and for
 * Inductor's default cpp.cxx (None, then $CXX or g++), space-separated.
 */
static int
compiler_identity(char *out, size_t n)
{
    const char *cxx = getenv("CXX");
    const char *names[2];
    char found[PATH_MAX], real[PATH_MAX];
    size_t i, len = 0;
    struct stat st;
    int w;

    names[0] = cxx;
    names[1] = cxx ? cxx : "g++";
    out[0] = '\0';
    for (i = 0; i < 2; i++) {
        if (!names[i] || !*names[i] ||
            which(names[i], found, sizeof(found)) < 0) {
            continue;
        }
        if (!realpath(found, real) || stat(real, &st) < 0) {
            return -1;
        }
        w = snprintf(out + len, n - len, "%s%s=%s:%lld:%lld", len ? " " : "",
                     names[i], real, (long long)st.st_size,
                     (long long)st.st_mtim.tv_sec * 1000000000LL +
                         st.st_mtim.tv_nsec);
        if (w < 0 || (size_t)w >= n - len) {
            return -1;
        }
        len += (size_t)w;
    }
    return 0;
}

/* 1 if word is one of the space-separated words of list. */
static int
has_word(const char *list, const char *word)
{
    size_t wl = strlen(word);
    const char *p = list;

    while ((p = strstr(p, word)) != NULL) {
        if ((p == list || p[-1] == ' ') && (p[wl] == ' ' || p[wl] == '\0')) {
            return 1;
        }
        p += wl;
    }
    return 0;
}

/*
 * The ISAs torch advertises here (x86_isa_checker() matched against
 * supported_vec_isa_list, sorted, ';'-joined), from the kernel's CPU flags,
 * which it clears for state the OS does not enable. 0 or -1.
 */
static int
advertised_isas(char *out, size_t n)
{
    static const char *const isas[] = {"avx2", "avx512", "avx512 avx512_vnni",
                                       "avx512 avx512_vnni amx_tile"};
    char line[8192];
    const char *flags = NULL;
    int avx512, have[4];
    size_t i, len = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");

    if (!f) {
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "flags", 5) == 0 && strchr(line, ':')) {
            line[strcspn(line, "\n")] = '\0';
            flags = strchr(line, ':') + 1;
            break;
        }
    }
    fclose(f);
    if (!flags) {
        return -1;
    }
    avx512 = has_word(flags, "avx512f") && has_word(flags, "avx512dq") &&
             has_word(flags, "avx512bw") && has_word(flags, "avx512vl");
    have[0] = has_word(flags, "avx2");
    have[1] = avx512;
    have[2] = avx512 && has_word(flags, "avx512_vnni");
    have[3] = have[2] && has_word(flags, "amx_tile");
    out[0] = '\0';
    for (i = 0; i < 4; i++) {
        if (have[i]) {
            len += (size_t)snprintf(out + len, n - len, "%s%s", len ? ";" : "",
                                    isas[i]);
        }
    }
    return 0;
}

/*
 * 1 when the store records that torch's vector ISA probe passed for this
 * toolchain, compiler and CPU (entry isa1/<blake3>, meta vec_isa_ok=1),
 * on a CPU device class; 0 otherwise, and whenever any input is unsure.
 */
static int
vec_isa_known_ok(mithril_store *s, const char *tc)
{
    char text[4 * PATH_MAX], cc[3 * PATH_MAX], isas[128], dev[32];
    char key[8 + MITHRIL_HEX_SIZE], hex[MITHRIL_HEX_SIZE];
    uint8_t digest[MITHRIL_BLAKE3_OUT_LEN];
    mithril_entry *e = NULL;
    mithril_device d;
    int n, ok;

    if (mithril_device_detect(&d) < 0 ||
        mithril_device_format(&d, dev, sizeof(dev)) < 0 ||
        strncmp(dev, "cpu", 3) != 0) {
        return 0;
    }
    if (compiler_identity(cc, sizeof(cc)) < 0 ||
        advertised_isas(isas, sizeof(isas)) < 0 || !*isas) {
        return 0;
    }
    n = snprintf(text, sizeof(text), "mithril vec isa v1\n%s\n%s\n%s\n", tc, cc,
                 isas);
    if (n < 0 || (size_t)n >= sizeof(text)) {
        return 0;
    }
    mithril_blake3_hash(text, (size_t)n, digest);
    mithril_hex(digest, sizeof(digest), hex);
    snprintf(key, sizeof(key), "isa1/%s", hex);
    if (mithril_entry_peek(s, key, &e) < 0) {
        return 0;
    }
    ok = has_word(e->meta, "vec_isa_ok=1");
    mithril_entry_free(e);
    return ok;
}

#else

static int
vec_isa_known_ok(mithril_store *s, const char *tc)
{
    (void)s;
    (void)tc;
    return 0;
}

#endif

static int
set_child_env(const char *work, const char *store_dir, const char *tc,
              int vec_isa_ok)
{
    char path[PATH_MAX + 16];

    snprintf(path, sizeof(path), "%s/inductor", work);
    if (setenv("TORCHINDUCTOR_CACHE_DIR", path, 1) < 0) {
        return -errno;
    }
    snprintf(path, sizeof(path), "%s/triton", work);
    if (setenv("TRITON_CACHE_DIR", path, 1) < 0 ||
        setenv("MITHRIL_WORK_DIR", work, 1) < 0 ||
        setenv("MITHRIL_DIR", store_dir, 1) < 0 ||
        setenv("MITHRIL_TOOLCHAIN", tc, 1) < 0 ||
        setenv("TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS", "0", 0) < 0) {
        return -errno;
    }
    if (vec_isa_ok && setenv("TORCHINDUCTOR_VEC_ISA_OK", "1", 0) < 0) {
        return -errno;
    }
    return 0;
}

/* Restore before the run; the store is closed on return. */
static int
prepare(const char *work_flag, const char *tc_flag, char **cmd, int verbose,
        char *work, char *store_dir, char *tc, int *vec_isa_ok)
{
    mithril_sync_result r;
    mithril_store *s = cli_open_store(MITHRIL_OPEN_CREATE);
    int rc;

    if (!s) {
        return -1;
    }
    if (!realpath(mithril_store_dir(s), store_dir)) {
        snprintf(store_dir, PATH_MAX, "%s", mithril_store_dir(s));
    }
    rc = work_dir_path(work_flag, s, work);
    if (rc < 0) {
        cli_error("cannot make the working folder", work_flag ? work_flag : "",
                  rc);
        goto out;
    }
    rc = cli_toolchain_text(tc_flag, cmd[0], tc, TOOLCHAIN_MAX);
    if (rc < 0) {
        cli_error("toolchain text too long", "", rc);
        goto out;
    }
    if (!getenv("TORCHINDUCTOR_VEC_ISA_OK")) {
        *vec_isa_ok = vec_isa_known_ok(s, tc);
    }
    rc = mithril_restore(s, work, tc, &r);
    if (rc < 0) {
        cli_error("restore failed", work, rc);
    } else if (verbose) {
        print_result("restore", &r, 0);
    }
    rc = 0;
out:
    mithril_store_close(s);
    return rc;
}

static void
capture_after(const char *work, const char *tc, int verbose)
{
    mithril_sync_result r;
    mithril_store *s = cli_open_store(MITHRIL_OPEN_CREATE);
    int rc;

    if (!s) {
        return;
    }
    rc = mithril_capture(s, work, tc, &r);
    if (rc < 0) {
        cli_error("capture failed", work, rc);
    } else if (verbose) {
        print_result("capture", &r, 0);
    }
    mithril_store_close(s);
}

int
cmd_run(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"work-dir", required_argument, 0, OPT_WORK_DIR},
        {"toolchain", required_argument, 0, OPT_TOOLCHAIN},
        {"verbose", no_argument, 0, 'v'},
        CLI_COMMON_OPTIONS,
        {0, 0, 0, 0},
    };
    char work[PATH_MAX], store_dir[PATH_MAX], tc[TOOLCHAIN_MAX];
    const char *work_flag = NULL, *tc_flag = NULL;
    char **cmd;
    int opt, verbose = 0, status = 0, vec_isa_ok = 0;
    pid_t pid, w;

    while ((opt = getopt_long(argc, argv, "+vqh", longopts, NULL)) != -1) {
        if (opt == OPT_WORK_DIR) {
            work_flag = optarg;
        } else if (opt == OPT_TOOLCHAIN) {
            tc_flag = optarg;
        } else if (opt == 'v') {
            verbose = 1;
        } else if (opt == 'h') {
            printf("usage: mithril run [--work-dir DIR] [--toolchain TEXT] "
                   "[-v] [--] CMD ARGS...\n"
                   "Run CMD with torch's caches in the working folder, "
                   "restored from the store\nbefore and captured after. "
                   "MITHRIL_DISABLE=1 runs CMD unchanged.\n");
            return CLI_OK;
        } else if (!cli_common_opt(opt, optarg)) {
            return cli_usage("run", "unknown option");
        }
    }
    if (optind >= argc) {
        return cli_usage("run", "missing the command to run");
    }
    cmd = argv + optind;
    if (env_disabled()) {
        exec_or_die(cmd);
    }

    if (prepare(work_flag, tc_flag, cmd, verbose, work, store_dir, tc,
                &vec_isa_ok) < 0 ||
        set_child_env(work, store_dir, tc, vec_isa_ok) < 0) {
        fprintf(stderr,
                "mithril: warning: running '%s' without the "
                "cache\n",
                cmd[0]);
        exec_or_die(cmd);
    }

    install_forwarding();
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "mithril: error: fork: %s\n", strerror(errno));
        return CLI_FAIL;
    }
    if (pid == 0) {
        exec_or_die(cmd);
    }
    child_pid = pid;
    if (pending_sig) {
        kill(pid, pending_sig);
    }
    while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
    }
    if (w < 0) {
        fprintf(stderr, "mithril: error: waitpid: %s\n", strerror(errno));
        status = 0;
    }
    child_pid = 0;
    capture_after(work, tc, verbose);
    return exit_like(status);
}

/* ---- mithril capture / restore ---- */

static int
sync_command(int argc, char **argv, int is_capture)
{
    static const struct option longopts[] = {
        {"work-dir", required_argument, 0, OPT_WORK_DIR},
        {"toolchain", required_argument, 0, OPT_TOOLCHAIN},
        {"all", no_argument, 0, OPT_ALL},
        {"json", no_argument, 0, OPT_JSON},
        CLI_COMMON_OPTIONS,
        {0, 0, 0, 0},
    };
    const char *name = is_capture ? "capture" : "restore";
    const char *work_flag = NULL, *tc_flag = NULL;
    char work[PATH_MAX], tc[TOOLCHAIN_MAX];
    mithril_sync_result r;
    mithril_store *s;
    int opt, all = 0, json = 0, rc;

    while ((opt = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
        if (opt == OPT_WORK_DIR) {
            work_flag = optarg;
        } else if (opt == OPT_TOOLCHAIN) {
            tc_flag = optarg;
        } else if (opt == OPT_ALL && !is_capture) {
            all = 1;
        } else if (opt == OPT_JSON) {
            json = 1;
        } else if (opt == 'h') {
            printf("usage: mithril %s [--work-dir DIR] [--toolchain TEXT]%s "
                   "[--json]\n%s\n",
                   name, is_capture ? "" : " [--all]",
                   is_capture ? "Record what torch wrote in the working "
                                "folder as entries of the store."
                              : "Write the toolchain's entries (--all: "
                                "every torch entry) into the working "
                                "folder.");
            return CLI_OK;
        } else if (!cli_common_opt(opt, optarg)) {
            return cli_usage(name, "unknown option");
        }
    }
    if (optind < argc) {
        return cli_usage(name, "unexpected argument '%s'", argv[optind]);
    }
    if (all && tc_flag) {
        return cli_usage(name, "--all and --toolchain exclude each other");
    }
    s = cli_open_store(MITHRIL_OPEN_CREATE);
    if (!s) {
        return CLI_FAIL;
    }
    rc = work_dir_path(work_flag, s, work);
    if (rc < 0) {
        cli_error("cannot make the working folder", work_flag ? work_flag : "",
                  rc);
        goto out;
    }
    if (!all) {
        rc = cli_toolchain_text(tc_flag, NULL, tc, sizeof(tc));
        if (rc < 0) {
            cli_error("toolchain text too long", "", rc);
            goto out;
        }
    }
    if (is_capture) {
        rc = mithril_capture(s, work, tc, &r);
    } else {
        rc = mithril_restore(s, work, all ? NULL : tc, &r);
    }
    if (rc < 0) {
        cli_error(is_capture ? "capture failed" : "restore failed", work, rc);
        goto out;
    }
    if (!cli.quiet) {
        print_result(NULL, &r, json);
    }
out:
    mithril_store_close(s);
    return cli_exit_for(rc);
}

int
cmd_capture(int argc, char **argv)
{
    return sync_command(argc, argv, 1);
}

int
cmd_restore(int argc, char **argv)
{
    return sync_command(argc, argv, 0);
}
