/*
 * fuzz_key.c - the text parsers behind storage keys: device classes
 * (mithril_device_parse), sizes (mithril_parse_size), input specs
 * (mithril_key_add_input_text), toolchain text, addresses (mithril_unhex,
 * mithril_addr_valid), then the canonical encoding (mi_key_encode) and the
 * storage key of whatever was accepted.
 *
 * Input: lines. Line 1 is a device, line 2 a size, line 3 an address,
 * line 4 a toolchain, every further line an input spec.
 * Properties checked: a device that parses formats back to text that
 * parses to the same device; a storage key is 64 lowercase hex; encoding
 * twice gives the same bytes.
 */
#include "fuzz_common.h"
#include "internal.h"

static char *
next_line(char **p)
{
    char *line = *p, *nl;

    if (!line) {
        return NULL;
    }
    nl = strchr(line, '\n');
    if (nl) {
        *nl = '\0';
        *p = nl + 1;
    } else {
        *p = NULL;
    }
    return line;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t graph[32] = {1, 2, 3};
    char *text = fuzz_strndup(data, size);
    char *p = text, *line, buf[64], out[MITHRIL_HEX_SIZE];
    mithril_device dev, again;
    mithril_key *k = NULL;
    uint8_t *enc1 = NULL, *enc2 = NULL, raw[32];
    size_t n1, n2;
    uint64_t bytes;
    int have_dev = 0;

    line = next_line(&p);
    if (line && mithril_device_parse(line, &dev) == 0) {
        have_dev = 1;
        if (mithril_device_format(&dev, buf, sizeof(buf)) == 0) {
            if (mithril_device_parse(buf, &again) != 0 ||
                again.kind != dev.kind || again.cc_major != dev.cc_major ||
                again.cc_minor != dev.cc_minor ||
                strcmp(again.isa, dev.isa) != 0) {
                abort();
            }
        }
    }
    line = next_line(&p);
    if (line) {
        (void)mithril_parse_size(line, &bytes);
    }
    line = next_line(&p);
    if (line) {
        if (mithril_unhex(line, raw, 32) == 0 && !mithril_addr_valid(line)) {
            abort();
        }
    }
    if (mithril_key_new(graph, &k) != 0) {
        abort();
    }
    line = next_line(&p);
    if (line) {
        (void)mithril_key_set_toolchain(k, line);
    }
    while ((line = next_line(&p)) != NULL) {
        (void)mithril_key_add_input_text(k, line);
    }
    if (have_dev && mithril_key_set_device(k, &dev) == 0) {
        if (mithril_key_storage(k, out) == 0 && !mithril_addr_valid(out)) {
            abort();
        }
        if (mi_key_encode(k, &enc1, &n1) == 0 &&
            mi_key_encode(k, &enc2, &n2) == 0) {
            if (n1 != n2 || memcmp(enc1, enc2, n1) != 0) {
                abort();
            }
        }
    }
    free(enc1);
    free(enc2);
    mithril_key_free(k);
    free(text);
    return 0;
}
