/*
 * device.c - device classes: the part of a cache key that says which
 * machines may run a compiled artifact. A class is "cpu" (any CPU),
 * "cpu:<isa>" (a CPU with at least that vector ISA level), "cuda" (any CUDA
 * device) or "cuda:MAJOR.MINOR" (a CUDA compute capability).
 *
 * Invariants:
 *  - Text is canonical: mithril_device_parse accepts exactly what
 *    mithril_device_format writes, so parse(format(d)) == d and
 *    format(parse(t)) == t for every accepted t.
 *  - The ISA names form a closed list (isa_names below); an unknown name is
 *    refused, so a typo never produces a key nobody else computes.
 *  - Detection never fails for lack of CUDA: no driver, no device or any
 *    driver error falls back to cpu:<isa>. The driver is reached through
 *    dlopen, so libmithril has no link-time dependency on CUDA.
 *  - Both the ISA level and the detected class are computed once per
 *    process (pthread_once) and cached.
 */
#include "internal.h"

#include <ctype.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

/* The architecture's own name, reported when no ISA level applies. */
#if defined(__x86_64__)
#define MI_ARCH_NAME "x86_64"
#elif defined(__i386__)
#define MI_ARCH_NAME "i386"
#elif defined(__aarch64__)
#define MI_ARCH_NAME "aarch64"
#elif defined(__arm__)
#define MI_ARCH_NAME "arm"
#elif defined(__riscv) && __riscv_xlen == 64
#define MI_ARCH_NAME "riscv64"
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define MI_ARCH_NAME "ppc64le"
#elif defined(__powerpc64__)
#define MI_ARCH_NAME "ppc64"
#elif defined(__s390x__)
#define MI_ARCH_NAME "s390x"
#elif defined(__loongarch64)
#define MI_ARCH_NAME "loongarch64"
#else
#define MI_ARCH_NAME "unknown"
#endif

/*
 * Every ISA name a device class may carry. x86-64 levels first (highest
 * first), then AArch64, then bare architecture names.
 */
static const char *const isa_names[] = {
    "avx512",  "avx2",  "sse42",   "x86_64",      "i386",
    "sve",     "neon",  "aarch64", "arm",         "riscv64",
    "ppc64le", "ppc64", "s390x",   "loongarch64", "unknown",
};

static int
isa_known(const char *name)
{
    size_t i;

    for (i = 0; i < sizeof(isa_names) / sizeof(isa_names[0]); i++) {
        if (!strcmp(name, isa_names[i])) {
            return 1;
        }
    }
    return 0;
}

/* ---- CPU ISA level ---- */

#if defined(__x86_64__) || defined(__i386__)
/* XCR0: which register states the OS saves on context switch. */
static uint64_t
read_xcr0(void)
{
    uint32_t lo, hi;

    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static const char *
detect_isa(void)
{
    unsigned a, b, c, d;
    unsigned b7 = 0;
    uint64_t xcr0 = 0;
    int sse42, avx, fma, osxsave, avx2, ymm_os, zmm_os, avx512;

    if (!__get_cpuid(1, &a, &b, &c, &d)) {
        return MI_ARCH_NAME;
    }
    sse42 = (c >> 20) & 1;
    fma = (c >> 12) & 1;
    osxsave = (c >> 27) & 1;
    avx = (c >> 28) & 1;
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b7, c, d);
    }
    if (osxsave) {
        xcr0 = read_xcr0();
    }
    /* XMM and YMM state (bits 1, 2); opmask, ZMM_Hi256, Hi16_ZMM (5-7). */
    ymm_os = (xcr0 & 0x6) == 0x6;
    zmm_os = ymm_os && (xcr0 & 0xe0) == 0xe0;
    avx2 = avx && fma && ymm_os && ((b7 >> 5) & 1);
    /* AVX512F (16), DQ (17), BW (30), VL (31). */
    avx512 = avx2 && zmm_os && ((b7 >> 16) & 1) && ((b7 >> 17) & 1) &&
             ((b7 >> 30) & 1) && ((b7 >> 31) & 1);
    if (avx512) {
        return "avx512";
    }
    if (avx2) {
        return "avx2";
    }
    if (sse42) {
        return "sse42";
    }
    return MI_ARCH_NAME;
}
#elif defined(__aarch64__) && defined(__linux__)
static const char *
detect_isa(void)
{
    unsigned long hw = getauxval(AT_HWCAP);

    /* HWCAP_SVE is bit 22, HWCAP_ASIMD bit 1 (asm/hwcap.h). */
    if (hw & (1UL << 22)) {
        return "sve";
    }
    if (hw & (1UL << 1)) {
        return "neon";
    }
    return MI_ARCH_NAME;
}
#else
static const char *
detect_isa(void)
{
    return MI_ARCH_NAME;
}
#endif

static pthread_once_t isa_once = PTHREAD_ONCE_INIT;
static const char *isa_cached;

static void
isa_init(void)
{
    isa_cached = detect_isa();
}

const char *
mithril_cpu_isa(void)
{
    pthread_once(&isa_once, isa_init);
    return isa_cached;
}

/* ---- parsing and formatting ---- */

/*
 * A canonical decimal 0..999 from *p: digits only, no sign, no leading
 * zero (except "0" itself). Advances *p; -1 if malformed.
 */
static int
parse_small_uint(const char **p)
{
    const char *s = *p;
    int v = 0, n = 0;

    while (isdigit((unsigned char)s[n])) {
        if (n == 3) {
            return -1;
        }
        v = v * 10 + (s[n] - '0');
        n++;
    }
    if (n == 0 || (n > 1 && s[0] == '0')) {
        return -1;
    }
    *p = s + n;
    return v;
}

int
mithril_device_parse(const char *text, mithril_device *out)
{
    mithril_device d;
    const char *p;
    int major, minor;

    if (!text || !out) {
        return MITHRIL_EINVAL;
    }
    memset(&d, 0, sizeof(d));
    if (!strcmp(text, "cpu")) {
        d.kind = MITHRIL_DEVICE_CPU;
    } else if (!strncmp(text, "cpu:", 4)) {
        if (strlen(text + 4) >= sizeof(d.isa) || !isa_known(text + 4)) {
            return MITHRIL_EINVAL;
        }
        d.kind = MITHRIL_DEVICE_CPU;
        strcpy(d.isa, text + 4);
    } else if (!strcmp(text, "cuda")) {
        d.kind = MITHRIL_DEVICE_CUDA_ANY;
    } else if (!strncmp(text, "cuda:", 5)) {
        p = text + 5;
        major = parse_small_uint(&p);
        if (major < 1 || *p != '.') {
            return MITHRIL_EINVAL;
        }
        p++;
        minor = parse_small_uint(&p);
        if (minor < 0 || *p != '\0') {
            return MITHRIL_EINVAL;
        }
        d.kind = MITHRIL_DEVICE_CUDA_CC;
        d.cc_major = major;
        d.cc_minor = minor;
    } else {
        return MITHRIL_EINVAL;
    }
    *out = d;
    return 0;
}

/* 0 if d is a class this module could have produced, else EINVAL. */
static int
device_check(const mithril_device *d)
{
    if (!d) {
        return MITHRIL_EINVAL;
    }
    switch (d->kind) {
    case MITHRIL_DEVICE_CPU:
        if (memchr(d->isa, '\0', sizeof(d->isa)) == NULL) {
            return MITHRIL_EINVAL;
        }
        if (d->isa[0] && !isa_known(d->isa)) {
            return MITHRIL_EINVAL;
        }
        return 0;
    case MITHRIL_DEVICE_CUDA_ANY:
        return 0;
    case MITHRIL_DEVICE_CUDA_CC:
        if (d->cc_major < 1 || d->cc_major > 999 || d->cc_minor < 0 ||
            d->cc_minor > 999) {
            return MITHRIL_EINVAL;
        }
        return 0;
    default:
        return MITHRIL_EINVAL;
    }
}

int
mithril_device_format(const mithril_device *d, char *buf, size_t n)
{
    char tmp[32];
    int rc = device_check(d);

    if (rc < 0 || !buf) {
        return MITHRIL_EINVAL;
    }
    if (d->kind == MITHRIL_DEVICE_CPU) {
        snprintf(tmp, sizeof(tmp), d->isa[0] ? "cpu:%s" : "cpu", d->isa);
    } else if (d->kind == MITHRIL_DEVICE_CUDA_ANY) {
        snprintf(tmp, sizeof(tmp), "cuda");
    } else {
        snprintf(tmp, sizeof(tmp), "cuda:%d.%d", d->cc_major, d->cc_minor);
    }
    if (strlen(tmp) >= n) {
        return MITHRIL_ETOOBIG;
    }
    memcpy(buf, tmp, strlen(tmp) + 1);
    return 0;
}

/* ---- detection ---- */

/* The few driver entry points used, declared with their C types. */
typedef int (*cu_init_fn)(unsigned int flags);
typedef int (*cu_device_get_fn)(int *device, int ordinal);
typedef int (*cu_device_get_attribute_fn)(int *value, int attrib, int dev);

#define MI_CU_CC_MAJOR 75 /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR */
#define MI_CU_CC_MINOR 76 /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR */

/*
 * Ask the CUDA driver for device 0's compute capability. 0 and *major,
 * *minor on success; -1 when there is no usable driver or device. The
 * library stays loaded after a successful cuInit: unloading a driver that
 * started its threads is not safe.
 */
static int
cuda_cc(int *major, int *minor)
{
    void *lib;
    cu_init_fn cu_init;
    cu_device_get_fn cu_device_get;
    cu_device_get_attribute_fn cu_attr;
    int dev = 0, ma = 0, mi = 0, rc;

    lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        mi_log(MITHRIL_LOG_DEBUG, "no CUDA driver (libcuda.so.1): cpu only");
        return -1;
    }
    cu_init = (cu_init_fn)dlsym(lib, "cuInit");
    cu_device_get = (cu_device_get_fn)dlsym(lib, "cuDeviceGet");
    cu_attr = (cu_device_get_attribute_fn)dlsym(lib, "cuDeviceGetAttribute");
    if (!cu_init || !cu_device_get || !cu_attr) {
        mi_log(MITHRIL_LOG_DEBUG, "CUDA driver lacks entry points: cpu only");
        dlclose(lib);
        return -1;
    }
    rc = cu_init(0);
    if (rc != 0) {
        mi_log(MITHRIL_LOG_DEBUG, "cuInit failed (%d): cpu only", rc);
        return -1;
    }
    rc = cu_device_get(&dev, 0);
    if (rc == 0) {
        rc = cu_attr(&ma, MI_CU_CC_MAJOR, dev);
    }
    if (rc == 0) {
        rc = cu_attr(&mi, MI_CU_CC_MINOR, dev);
    }
    if (rc != 0 || ma < 1 || ma > 999 || mi < 0 || mi > 999) {
        mi_log(MITHRIL_LOG_DEBUG, "no CUDA device 0 (%d): cpu only", rc);
        return -1;
    }
    *major = ma;
    *minor = mi;
    return 0;
}

static pthread_once_t detect_once = PTHREAD_ONCE_INIT;
static mithril_device detected;

static void
detect_init(void)
{
    int major, minor;

    memset(&detected, 0, sizeof(detected));
    if (cuda_cc(&major, &minor) == 0) {
        detected.kind = MITHRIL_DEVICE_CUDA_CC;
        detected.cc_major = major;
        detected.cc_minor = minor;
        return;
    }
    detected.kind = MITHRIL_DEVICE_CPU;
    snprintf(detected.isa, sizeof(detected.isa), "%s", mithril_cpu_isa());
}

int
mithril_device_detect(mithril_device *out)
{
    if (!out) {
        return MITHRIL_EINVAL;
    }
    pthread_once(&detect_once, detect_init);
    *out = detected;
    return 0;
}
