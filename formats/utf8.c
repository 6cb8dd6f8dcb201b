/* utf8.c - strict UTF-8 validation (see utf8.h). */
#include "utf8.h"

#include <stdint.h>
#include <string.h>

#define ASCII_MASK 0x8080808080808080ull /* the top bit of each of 8 bytes */

/* Length of the multi-byte sequence starting at s[0] (of `left` bytes), or 0 when it is not a
 * valid one. The lead byte gives the length and the top bits of the code point: 80..BF are
 * continuation bytes, C0 and C1 could only start overlong forms, F5..FF would encode more
 * than U+10FFFF or are not UTF-8 at all. */
static size_t sequence_length(const uint8_t *s, size_t left) {
    /* Smallest code point each length may encode; anything below is an overlong form. */
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    uint8_t lead = s[0];
    size_t n;
    uint32_t cp;
    if (lead >= 0xC2 && lead <= 0xDF) {
        n = 2;
        cp = lead & 0x1F;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        n = 3;
        cp = lead & 0x0F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        n = 4;
        cp = lead & 0x07;
    } else {
        return 0;
    }
    if (left < n) return 0; /* cut short by the end of the string */
    for (size_t k = 1; k < n; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0; /* not a continuation byte */
        cp = cp << 6 | (s[k] & 0x3F);
    }
    if (cp < min_cp[n] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
    return n;
}

size_t utf8_valid_prefix(const void *data, size_t len) {
    const uint8_t *s = data;
    size_t i = 0;
    /* Fast path: most strings (keys, tensor names, many tokens) are ASCII; skip 8 bytes at a
     * time up to the first non-ASCII byte. */
    while (len - i >= 8) {
        uint64_t word;
        memcpy(&word, s + i, 8);
        if (word & ASCII_MASK) break;
        i += 8;
    }
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = sequence_length(s + i, len - i);
        if (n == 0) return i;
        i += n;
    }
    return len;
}

bool utf8_valid(const void *s, size_t len) { return utf8_valid_prefix(s, len) == len; }
