/* utf8.h - strict UTF-8 validation (RFC 3629), shared by the format readers and writers.
 *
 * Valid means: every sequence is the shortest encoding of a Unicode scalar value, that is
 *   - no overlong forms ("\xC0\xAF" for '/', "\xE0\x80\x80" for U+0000, ...),
 *   - no UTF-16 surrogates U+D800..U+DFFF ("\xED\xA0\x80"),
 *   - nothing above U+10FFFF ("\xF4\x90\x80\x80", and lead bytes F5..FF),
 *   - no sequence cut short ("\xE2\x82" at the end, or followed by a non-continuation byte),
 *   - no continuation byte (80..BF) where a character should start.
 * U+0000 (a zero byte) is valid UTF-8 and is accepted here; callers that keep a string as a C
 * string (GGUF keys and tensor names) reject zero bytes themselves.
 */
#ifndef SLMC_UTF8_H
#define SLMC_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Length of the longest valid prefix of s[0..len): len when all of it is valid UTF-8,
 * otherwise the index of the first byte that does not start a valid sequence (the offset
 * to name in an error message). */
size_t utf8_valid_prefix(const void *s, size_t len);

/* true when s[0..len) is valid UTF-8. */
bool utf8_valid(const void *s, size_t len);

#endif
