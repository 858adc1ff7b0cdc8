/*
 * hex.c - lowercase hexadecimal, the one text form of addresses and keys.
 *
 * Only lowercase is accepted on input, so that one digest has exactly one
 * spelling and addresses can be compared (and used as file names) as
 * plain strings.
 */
#include "mithril/mithril.h"

#include <string.h>

static const char hex_digits[16] = "0123456789abcdef";

/* The value of a lowercase hex digit, or -1. */
static int
hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

void
mithril_hex(const uint8_t *bin, size_t n, char *out)
{
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = hex_digits[bin[i] >> 4];
        out[2 * i + 1] = hex_digits[bin[i] & 15];
    }
    out[2 * n] = '\0';
}

int
mithril_unhex(const char *hex, uint8_t *out, size_t n)
{
    size_t i;

    if (!hex || !out) {
        return MITHRIL_EINVAL;
    }

    /* Check everything first: out is written only on success. */
    for (i = 0; i < 2 * n; i++) {
        if (hex_value(hex[i]) < 0) {
            return MITHRIL_EINVAL;
        }
    }
    if (hex[2 * n] != '\0') {
        return MITHRIL_EINVAL;
    }
    for (i = 0; i < n; i++) {
        out[i] =
            (uint8_t)(hex_value(hex[2 * i]) << 4 | hex_value(hex[2 * i + 1]));
    }
    return 0;
}

int
mithril_addr_valid(const char *text)
{
    size_t i;

    if (!text) {
        return 0;
    }
    for (i = 0; i < 2 * MITHRIL_BLAKE3_OUT_LEN; i++) {
        if (hex_value(text[i]) < 0) {
            return 0;
        }
    }
    return text[i] == '\0';
}
