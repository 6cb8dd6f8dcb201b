/* tokenizer.c - text -> token ids the way llama.cpp's llama-vocab.cpp does it (see tokenizer.h).
 *
 * The pipeline for one call of tokenizer_encode:
 *
 *   text ──> cut out special tokens (fragments: raw text | token id)
 *        ──> SPM ("llama"): each text fragment: " " prefix, spaces -> "▁", then merge adjacent
 *                           symbols by best token score; characters left over become <0xXX> bytes
 *        ──> BPE ("gpt2"):  each text fragment: split into words by the pre-tokenizer regexes
 *                           (PCRE2), map each word's bytes to GPT-2's byte-level characters,
 *                           then merge adjacent symbols by lowest merge rank
 *
 * Both merge loops use a priority queue of candidate pairs ("bigrams") over a linked list of
 * symbols, exactly like llama.cpp's llm_tokenizer_spm_session / llm_tokenizer_bpe_session, with
 * the same tie-breaking (leftmost first), so ids come out identical. Token texts and merge pairs
 * are found through open-addressing hash maps over spans of the input, so no string is built
 * per lookup.
 */
#include "eval/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- token attributes: llama.cpp's llama_token_attr bits ------------------------------------ */

enum {
    ATTR_UNDEFINED = 0,
    ATTR_UNKNOWN = 1 << 0,
    ATTR_UNUSED = 1 << 1,
    ATTR_NORMAL = 1 << 2,
    ATTR_CONTROL = 1 << 3,
    ATTR_USER_DEFINED = 1 << 4,
    ATTR_BYTE = 1 << 5,
    ATTR_LSTRIP = 1 << 7,
    ATTR_RSTRIP = 1 << 8,
};

/* tokenizer.ggml.token_type values (llama_token_type) -> attribute bits. */
static uint32_t attr_of_type(int32_t type) {
    switch (type) {
    case 1: return ATTR_NORMAL;
    case 2: return ATTR_UNKNOWN;
    case 3: return ATTR_CONTROL;
    case 4: return ATTR_USER_DEFINED;
    case 5: return ATTR_UNUSED;
    case 6: return ATTR_BYTE;
    default: return ATTR_UNDEFINED;
    }
}

#define KEY_PREFIX "tokenizer.ggml."
#define RE_MAX 4          /* most regexes one pre-tokenizer applies in sequence */
#define SPACE_ESC "\xe2\x96\x81" /* U+2581 "▁", SentencePiece's visible space */

/* ---- small helpers ------------------------------------------------------------------------- */

/* Bytes [off, off+len) of some arena. */
typedef struct span {
    uint32_t off;
    uint32_t len;
} span;

/* Make *p hold at least `need` elements of `size` bytes (doubling). 0 or -1. */
static int grow(void **p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * size);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* C-locale isspace, as llama.cpp's special-token lstrip/rstrip uses. */
static bool is_c_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Length of the UTF-8 sequence a lead byte announces, by its high nibble; stray continuation
 * bytes count as 1 (llama.cpp's unicode_len_utf8). */
static size_t utf8_len(unsigned char c) {
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

/* Decode one code point at s[*i] the way llama.cpp's unicode_cpt_from_utf8 does (the lead byte
 * decides the length, continuation bytes must be 10xxxxxx; overlong forms pass). An invalid
 * sequence yields U+FFFD and consumes one byte, as unicode_cpts_from_utf8 does. */
static uint32_t utf8_decode(const unsigned char *s, size_t n, size_t *i) {
    size_t k = *i;
    unsigned char c = s[k];
    int extra;
    uint32_t cp = 0;
    if (!(c & 0x80)) {
        *i = k + 1;
        return c;
    }
    if (!(c & 0x40)) extra = -1;
    else if (!(c & 0x20)) extra = 1, cp = c & 0x1f;
    else if (!(c & 0x10)) extra = 2, cp = c & 0x0f;
    else if (!(c & 0x08)) extra = 3, cp = c & 0x07;
    else extra = -1;
    if (extra < 0 || k + (size_t)extra >= n) {
        *i = k + 1;
        return 0xFFFD;
    }
    for (int j = 1; j <= extra; j++) {
        if ((s[k + j] & 0xc0) != 0x80) {
            *i = k + 1;
            return 0xFFFD;
        }
        cp = (cp << 6) | (s[k + j] & 0x3f);
    }
    *i = k + 1 + (size_t)extra;
    return cp;
}

/* Encode a code point (up to 0x1FFFFF) as UTF-8 into out[4]; returns the byte count. */
static size_t utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* ---- GPT-2 byte-level alphabet ------------------------------------------------------------- */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * are given the code points 256, 257, ... in byte order, so every byte is a visible character. */
typedef struct byte_level {
    char utf8[256][2];     /* UTF-8 of the character standing for byte b (1 or 2 bytes) */
    uint8_t len[256];      /* its length */
    int16_t byte_of[324];  /* inverse: code point -> byte, -1 when none */
} byte_level;

static void byte_level_init(byte_level *bl) {
    for (int i = 0; i < 324; i++) bl->byte_of[i] = -1;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        uint32_t cp = printable ? (uint32_t)b : (uint32_t)next++;
        char tmp[4];
        bl->len[b] = (uint8_t)utf8_encode(cp, tmp);
        memcpy(bl->utf8[b], tmp, bl->len[b]);
        bl->byte_of[cp] = (int16_t)b;
    }
}

/* ---- string -> id hash map ----------------------------------------------------------------- */

/* Open addressing with linear probing. Keys are not copied: key i is the bytes
 * arena[keys[i]] (tokens: the token text; merges: first and second part concatenated, split
 * after splits[i] bytes, so a merge pair is looked up straight from two adjacent symbols). */
typedef struct str_map {
    uint32_t *slot;          /* [cap] id + 1 stored in the slot; 0 = empty */
    uint32_t *hash;          /* [cap] hash of that slot's key, to skip most byte compares */
    size_t cap;              /* power of two, at least twice the number of keys */
    const char *arena;       /* key bytes */
    const span *keys;        /* [id] where key id lives in arena */
    const uint32_t *splits;  /* [id] first-part length (merges), NULL for plain strings */
} str_map;

/* FNV-1a, seeded with the split so "ab"+"c" and "a"+"bc" hash apart. */
static uint32_t hash_bytes(const char *s, size_t n, uint32_t split) {
    uint32_t h = 2166136261u ^ (split * 0x9E3779B1u);
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

static int str_map_init(str_map *m, size_t n_keys, const char *arena, const span *keys, const uint32_t *splits) {
    memset(m, 0, sizeof *m);
    m->cap = 16;
    while (m->cap < 2 * n_keys) m->cap *= 2;
    m->slot = calloc(m->cap, sizeof *m->slot);
    m->hash = malloc(m->cap * sizeof *m->hash);
    if (!m->slot || !m->hash) return -1;
    m->arena = arena;
    m->keys = keys;
    m->splits = splits;
    return 0;
}

static void str_map_free(str_map *m) {
    free(m->slot);
    free(m->hash);
    memset(m, 0, sizeof *m);
}

/* Slot where key (s, n, split) is, or the empty slot where it would go. */
static size_t str_map_probe(const str_map *m, const char *s, size_t n, uint32_t split, uint32_t h) {
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint32_t v = m->slot[i];
        if (v == 0) return i;
        if (m->hash[i] != h) continue;
        const span *k = &m->keys[v - 1];
        if (k->len == n && (!m->splits || m->splits[v - 1] == split) && memcmp(m->arena + k->off, s, n) == 0)
            return i;
    }
}

/* Id of the key, or -1. */
static int32_t str_map_get(const str_map *m, const char *s, size_t n, uint32_t split) {
    uint32_t h = hash_bytes(s, n, split);
    uint32_t v = m->slot[str_map_probe(m, s, n, split, h)];
    return v ? (int32_t)(v - 1) : -1;
}

/* Add key `id` (its bytes are already in the arena). Returns -1 when added, or the id that
 * already holds an equal key (the map is unchanged then). */
static int32_t str_map_add(str_map *m, uint32_t id) {
    const span *k = &m->keys[id];
    const char *s = m->arena + k->off;
    uint32_t split = m->splits ? m->splits[id] : 0;
    uint32_t h = hash_bytes(s, k->len, split);
    size_t i = str_map_probe(m, s, k->len, split, h);
    if (m->slot[i]) return (int32_t)(m->slot[i] - 1);
    m->slot[i] = id + 1;
    m->hash[i] = h;
    return -1;
}

/* ---- pre-tokenizers (BPE) ------------------------------------------------------------------ */

/* The regexes of llama.cpp's llm_tokenizer_bpe for each tokenizer.ggml.pre, applied in order
 * (each one splits the pieces the previous one left). llama.cpp rewrites "(?i:'s|...)" as
 * "'[sS]|..." so the contractions are ASCII-only; we use its rewritten forms. */
#define RE_LLAMA3                                                                              \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                               \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
/* o200k (GPT-4o, Phi-4-mini) in llama.cpp's rewritten form: its "[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"
 * and "[\p{Ll}\p{Lm}\p{Lo}\p{M}]" become "a letter that is not a-z" and "a letter that is not A-Z",
 * so a non-ASCII letter counts as both cases, as it does in llama.cpp. */
#define RE_CONTRACTIONS_OPT "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
#define RE_GPT4O                                                                                       \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+" RE_CONTRACTIONS_OPT "|"       \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*" RE_CONTRACTIONS_OPT "|"       \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct pre_def {
    const char *names;          /* "|name|name|" values of tokenizer.ggml.pre */
    const char *regex[RE_MAX];  /* applied in order, unused entries NULL */
    bool ignore_merges;         /* a word that is a whole token is taken as is (Llama 3) */
    bool add_bos;               /* llama.cpp's default for add_bos_token */
} pre_def;

static const pre_def PRE_DEFS[] = {
    {"|llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0|lfm2|", {RE_LLAMA3}, true, true},
    {"|dbrx|smaug-bpe|", {RE_LLAMA3}, false, false},
    {"|qwen2|deepseek-r1-qwen|megrez|stablelm2|hunyuan|", {RE_QWEN2}, false, false},
    {"|gpt-2|phi-2|jina-es|jina-de|gigachat|jina-v2-es|jina-v2-de|a.x-4.0|mellum|mpt|olmo|jais|exaone4|"
     "trillion|granite-docling|",
     {RE_GPT2},
     false,
     false},
    {"|starcoder|refact|command-r|smollm|codeshell|exaone|minerva-7b|", {"\\p{N}", RE_GPT2}, false, false},
    {"|gpt-4o|llama4|", {RE_GPT4O}, false, false},
    {"|falcon|", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}, false, false},
    /* no or "default" pre-tokenizer */
    {"|default|", {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, false, false},
};

static const pre_def *find_pre(const char *name) {
    char pat[128];
    if (strlen(name) + 3 > sizeof pat) return NULL;
    snprintf(pat, sizeof pat, "|%s|", name);
    for (size_t i = 0; i < sizeof PRE_DEFS / sizeof PRE_DEFS[0]; i++)
        if (strstr(PRE_DEFS[i].names, pat)) return &PRE_DEFS[i];
    return NULL;
}

/* ---- the tokenizer ------------------------------------------------------------------------- */

typedef enum tok_kind { TOK_SPM, TOK_BPE } tok_kind;

struct tokenizer {
    tok_kind kind;              /* SPM ("llama") or BPE ("gpt2") */
    uint32_t n_vocab;           /* tokens */
    char *text;                 /* every token text, NUL-separated */
    span *tok;                  /* [n_vocab] token text in `text` */
    float *score;               /* [n_vocab] SPM merge priority (0 without scores) */
    uint32_t *attr;             /* [n_vocab] ATTR_* bits */
    str_map ids;                /* token text -> id */

    char *merge_text;           /* BPE: every merge's two parts, concatenated */
    span *merge;                /* [n_merges] */
    uint32_t *merge_split;      /* [n_merges] length of the first part */
    uint32_t n_merges;
    str_map ranks;              /* (first, second) -> rank (merge index) */

    int32_t *special;           /* ids cut out of the text before tokenizing, longest first */
    uint32_t n_special;

    char *piece_text;           /* token_to_piece of every token, concatenated */
    span *piece;                /* [n_vocab] */
    size_t max_piece;

    int32_t bos, eos, unk;      /* special ids, -1 when unset */
    int32_t *eog;               /* ids that end generation (llama.cpp's special_eog_ids), ascending */
    uint32_t n_eog;
    bool add_bos, add_eos;      /* add_special adds BOS / EOS */
    bool add_space_prefix;      /* SPM: prefix text (after a special token too) with a space */
    bool ignore_merges;         /* BPE: whole-word tokens skip merging */
    int32_t byte_tok[256];      /* SPM byte fallback: id of "<0xXX>" (or the byte itself), -1 */
    bool spm_word_split;        /* SPM: no token has "▁" after another character (see spm_tokenize) */
    bool spm_one_queue;         /* SPM: merge in one queue anyway (tokenizer_set_word_split) */

    pcre2_code *re[RE_MAX];     /* BPE pre-tokenizer regexes, NULL-terminated */
    int n_re;
    byte_level bl;              /* BPE byte-level alphabet */
};

void tokenizer_free(tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->tok);
    free(t->score);
    free(t->attr);
    str_map_free(&t->ids);
    free(t->merge_text);
    free(t->merge);
    free(t->merge_split);
    str_map_free(&t->ranks);
    free(t->special);
    free(t->eog);
    free(t->piece_text);
    free(t->piece);
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    free(t);
}

static int32_t token_id(const tokenizer *t, const char *s, size_t n) { return str_map_get(&t->ids, s, n, 0); }
static const char *tok_text(const tokenizer *t, int32_t id) { return t->text + t->tok[id].off; }

/* ---- creation ------------------------------------------------------------------------------ */

/* Copy the token texts into one arena and index them. Empty texts become "[EMPTY_i]" and a
 * text given twice is an error, as in llama.cpp's vocabulary loader. */
static int load_tokens(tokenizer *t, const meta_str *s, uint64_t n, slmc_err *err) {
    if (n == 0) return slmc_fail(err, NULL, KEY_PREFIX "tokens is empty");
    if (n > INT32_MAX) return slmc_fail(err, NULL, KEY_PREFIX "tokens has %llu entries (too many)", (unsigned long long)n);
    size_t bytes = 0;
    for (uint64_t i = 0; i < n; i++) bytes += (s[i].len ? s[i].len : 32) + 1;
    if (bytes > UINT32_MAX) return slmc_fail(err, NULL, KEY_PREFIX "tokens: texts too large (%zu bytes)", bytes);
    t->n_vocab = (uint32_t)n;
    t->text = malloc(bytes);
    t->tok = malloc(n * sizeof *t->tok);
    t->attr = malloc(n * sizeof *t->attr);
    t->score = calloc(n, sizeof *t->score);
    if (!t->text || !t->tok || !t->attr || !t->score) return slmc_fail(err, NULL, "out of memory for %llu tokens", (unsigned long long)n);
    size_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        size_t len = s[i].len;
        if (len) memcpy(t->text + off, s[i].s, len);
        else len = (size_t)snprintf(t->text + off, 32, "[EMPTY_%llu]", (unsigned long long)i);
        t->text[off + len] = 0;
        t->tok[i] = (span){(uint32_t)off, (uint32_t)len};
        off += len + 1;
    }
    if (str_map_init(&t->ids, n, t->text, t->tok, NULL) != 0) return slmc_fail(err, NULL, "out of memory for the token map");
    for (uint32_t i = 0; i < n; i++) {
        int32_t dup = str_map_add(&t->ids, i);
        if (dup >= 0)
            return slmc_fail(err, NULL, KEY_PREFIX "tokens: duplicate token \"%.64s\" has ids %d and %u", tok_text(t, (int32_t)i),
                             dup, i);
    }
    return 0;
}

/* tokenizer.ggml.scores (f32, or i32 as llama.cpp also accepts) and token_type. */
static int load_scores_types(tokenizer *t, const meta *kv, slmc_err *err) {
    const meta_kv *k = meta_find(kv, KEY_PREFIX "scores");
    if (k) {
        if (k->type != GGUF_ARR || (k->elem != GGUF_F32 && k->elem != GGUF_I32))
            return slmc_fail(err, NULL, KEY_PREFIX "scores must be an f32 array");
        if (k->n != t->n_vocab)
            return slmc_fail(err, NULL, KEY_PREFIX "scores has %llu entries but tokens has %u", (unsigned long long)k->n,
                             t->n_vocab);
        for (uint32_t i = 0; i < t->n_vocab; i++) {
            if (k->elem == GGUF_F32) memcpy(&t->score[i], (const char *)k->v.arr + 4 * (size_t)i, 4);
            else {
                int32_t v;
                memcpy(&v, (const char *)k->v.arr + 4 * (size_t)i, 4);
                t->score[i] = (float)v;
            }
        }
    }
    k = meta_find(kv, KEY_PREFIX "token_type");
    if (k) {
        if (k->type != GGUF_ARR || k->elem != GGUF_I32) return slmc_fail(err, NULL, KEY_PREFIX "token_type must be an i32 array");
        if (k->n != t->n_vocab)
            return slmc_fail(err, NULL, KEY_PREFIX "token_type has %llu entries but tokens has %u", (unsigned long long)k->n,
                             t->n_vocab);
    }
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        int32_t type = 1;
        if (k) memcpy(&type, (const char *)k->v.arr + 4 * (size_t)i, 4);
        t->attr[i] = attr_of_type(type);
    }
    return 0;
}

/* tokenizer.ggml.merges: strings "first second", split at the first space after the first
 * byte; rank = index. A pair given twice keeps its first rank (llama.cpp's map emplace). */
static int load_merges(tokenizer *t, const meta *kv, slmc_err *err) {
    const meta_kv *k = meta_find(kv, KEY_PREFIX "merges");
    if (!k) return slmc_fail(err, NULL, KEY_PREFIX "merges is missing (needed by a gpt2 tokenizer)");
    if (k->type != GGUF_ARR || k->elem != GGUF_STR) return slmc_fail(err, NULL, KEY_PREFIX "merges must be a string array");
    if (k->n > INT32_MAX) return slmc_fail(err, NULL, KEY_PREFIX "merges has too many entries");
    const meta_str *s = k->v.arr;
    size_t bytes = 1;
    for (uint64_t i = 0; i < k->n; i++) bytes += s[i].len;
    if (bytes > UINT32_MAX) return slmc_fail(err, NULL, KEY_PREFIX "merges too large");
    t->n_merges = (uint32_t)k->n;
    t->merge_text = malloc(bytes);
    t->merge = malloc((k->n + 1) * sizeof *t->merge);
    t->merge_split = malloc((k->n + 1) * sizeof *t->merge_split);
    if (!t->merge_text || !t->merge || !t->merge_split) return slmc_fail(err, NULL, "out of memory for the merges");
    if (str_map_init(&t->ranks, k->n, t->merge_text, t->merge, t->merge_split) != 0)
        return slmc_fail(err, NULL, "out of memory for the merge map");
    size_t off = 0;
    for (uint32_t i = 0; i < t->n_merges; i++) {
        const char *w = s[i].s;
        size_t n = s[i].len, sp = 0;
        for (size_t j = 1; j < n; j++)
            if (w[j] == ' ') {
                sp = j;
                break;
            }
        size_t first = 0, second = 0; /* no space: llama.cpp stores the pair ("", "") */
        if (sp) {
            first = sp;
            second = n - sp - 1;
            memcpy(t->merge_text + off, w, first);
            memcpy(t->merge_text + off + first, w + sp + 1, second);
        }
        t->merge[i] = (span){(uint32_t)off, (uint32_t)(first + second)};
        t->merge_split[i] = (uint32_t)first;
        off += first + second;
        (void)str_map_add(&t->ranks, i);
    }
    return 0;
}

/* A special id key: value when set and in range, else the default (itself disabled when out of
 * range), as llama.cpp does. */
static int32_t special_id(const tokenizer *t, const meta *kv, const char *key, int32_t def) {
    if (def >= 0 && (uint32_t)def >= t->n_vocab) def = -1;
    uint64_t v;
    if (meta_get_u64(kv, key, &v) && v < t->n_vocab) return (int32_t)v;
    return def;
}

/* Token texts llama.cpp forces to CONTROL because they end generation or mark infill
 * (llama_vocab::impl::load's EOT/EOG/FIM text lists). */
static const char *const CONTROL_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>" /* DeepSeek */,
    "[e~[",
    /* FIM prefix/suffix/middle/pad/repo/file-separator tokens */
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "\xe2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>",
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>", "\xe2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>",
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>", "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>",
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>",
    "<reponame>", "<|file_sep|>",
};

/* The attribute fix-ups llama.cpp applies by token text after loading. */
static void fix_attrs(tokenizer *t) {
    for (size_t i = 0; i < sizeof CONTROL_TEXTS / sizeof CONTROL_TEXTS[0]; i++) {
        int32_t id = token_id(t, CONTROL_TEXTS[i], strlen(CONTROL_TEXTS[i]));
        if (id >= 0) t->attr[id] |= ATTR_CONTROL;
    }
    /* control tokens named "...unused..." are unused */
    for (uint32_t i = 0; i < t->n_vocab; i++)
        if ((t->attr[i] & ATTR_CONTROL) && strstr(tok_text(t, (int32_t)i), "unused")) t->attr[i] |= ATTR_UNUSED;
    /* gpt-oss: always rendered, so plain user-defined */
    static const char *const gpt_oss[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"};
    for (size_t i = 0; i < 4; i++) {
        int32_t id = token_id(t, gpt_oss[i], strlen(gpt_oss[i]));
        if (id >= 0) t->attr[id] = ATTR_USER_DEFINED;
    }
    /* o200k_harmony: with <|return|> and <|call|>, "<|end|>" does not end generation */
    int32_t end = token_id(t, "<|end|>", 7);
    if (end >= 0 && token_id(t, "<|return|>", 10) >= 0 && token_id(t, "<|call|>", 8) >= 0) t->attr[end] = ATTR_USER_DEFINED;
}

/* Token texts that end generation (llama_vocab::impl::load's EOG list). */
static const char *const EOG_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
};

/* FIM pad / repo / file-separator tokens also end generation: the id of the key when it is set,
 * else a token found by one of these texts (llama.cpp takes the first its hash map yields; we take
 * the lowest id). */
static const struct {
    const char *key;
    const char *texts[6];
} FIM_EOG[] = {
    {KEY_PREFIX "fim_pad_token_id", {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}},
    {KEY_PREFIX "fim_rep_token_id", {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"}},
    {KEY_PREFIX "fim_sep_token_id", {"<|file_sep|>"}},
};

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* llama.cpp's end-of-generation set: the FIM pad/repo/separator tokens, the EOG texts, and the
 * eos, eot and eom ids. With o200k_harmony's "<|return|>" and "<|call|>", "<|end|>" is left out
 * (fix_attrs made it user-defined). */
static int build_eog(tokenizer *t, const meta *kv, slmc_err *err) {
    size_t cap = sizeof EOG_TEXTS / sizeof EOG_TEXTS[0] + sizeof FIM_EOG / sizeof FIM_EOG[0] + 3;
    t->eog = malloc(cap * sizeof *t->eog);
    if (!t->eog) return slmc_fail(err, NULL, "out of memory for the end-of-generation tokens");
    uint32_t n = 0;
    for (size_t k = 0; k < sizeof FIM_EOG / sizeof FIM_EOG[0]; k++) {
        int32_t id = special_id(t, kv, FIM_EOG[k].key, -1);
        for (size_t j = 0; id < 0 && j < 6 && FIM_EOG[k].texts[j]; j++) {
            int32_t c = token_id(t, FIM_EOG[k].texts[j], strlen(FIM_EOG[k].texts[j]));
            if (c >= 0 && (id < 0 || c < id)) id = c;
        }
        if (id >= 0) t->eog[n++] = id;
    }
    bool harmony = token_id(t, "<|return|>", 10) >= 0 && token_id(t, "<|call|>", 8) >= 0;
    for (size_t i = 0; i < sizeof EOG_TEXTS / sizeof EOG_TEXTS[0]; i++) {
        if (harmony && strcmp(EOG_TEXTS[i], "<|end|>") == 0) continue;
        int32_t id = token_id(t, EOG_TEXTS[i], strlen(EOG_TEXTS[i]));
        if (id >= 0) t->eog[n++] = id; /* fix_attrs made it CONTROL */
    }
    int32_t more[3] = {t->eos, special_id(t, kv, KEY_PREFIX "eot_token_id", -1),
                       special_id(t, kv, KEY_PREFIX "eom_token_id", -1)};
    for (int i = 0; i < 3; i++)
        if (more[i] >= 0) t->eog[n++] = more[i];
    qsort(t->eog, n, sizeof *t->eog, cmp_i32);
    uint32_t u = 0; /* drop duplicates */
    for (uint32_t i = 0; i < n; i++)
        if (u == 0 || t->eog[u - 1] != t->eog[i]) t->eog[u++] = t->eog[i];
    t->n_eog = u;
    return 0;
}

/* The special tokens cut out before tokenizing: control, user-defined and unknown tokens,
 * longest text first (equal lengths by id). */
static int cmp_special(const void *a, const void *b, void *ctx) {
    const tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->tok[x].len != t->tok[y].len) return t->tok[x].len > t->tok[y].len ? -1 : 1;
    return (x > y) - (x < y);
}

static int build_specials(tokenizer *t, const meta *kv, slmc_err *err) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++)
        if (t->attr[i] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) n++;
    t->special = malloc((n ? n : 1) * sizeof *t->special);
    if (!t->special) return slmc_fail(err, NULL, "out of memory for the special tokens");
    n = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++)
        if (t->attr[i] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) t->special[n++] = (int32_t)i;
    t->n_special = n;
    qsort_r(t->special, n, sizeof *t->special, cmp_special, t);

    /* Phi-3 (by general.name): special tokens swallow the whitespace after them, except
     * <unk>, <s> and <|endoftext|>; </s> does too. */
    const char *name = meta_get_str(kv, "general.name");
    if (name) {
        char low[256];
        size_t L = strlen(name) < sizeof low - 1 ? strlen(name) : sizeof low - 1;
        for (size_t i = 0; i < L; i++) low[i] = (char)tolower((unsigned char)name[i]);
        low[L] = 0;
        if (strstr(low, "phi-3") || strstr(low, "phi3")) {
            for (uint32_t i = 0; i < n; i++) t->attr[t->special[i]] |= ATTR_RSTRIP;
            int32_t id = token_id(t, "</s>", 4);
            if (id >= 0) t->attr[id] |= ATTR_RSTRIP;
            static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
            for (size_t i = 0; i < 3; i++) {
                id = token_id(t, keep[i], strlen(keep[i]));
                if (id >= 0) t->attr[id] &= ~(uint32_t)ATTR_RSTRIP;
            }
        }
    }
    return 0;
}

/* Room render_piece may need for token id: each character outside the byte-level alphabet
 * can expand to "[UNK_BYTE_0x" + 8 hex digits + the whole token text + "]". */
static size_t render_bound(const tokenizer *t, int32_t id) {
    size_t n = t->tok[id].len;
    return n * (n + 21) + 32;
}

/* The rendering of token id (llama_token_to_piece with special = true) written to out[],
 * which has room for render_bound(t, id) bytes; returns the bytes written. */
static size_t render_piece(const tokenizer *t, int32_t id, char *out) {
    const char *s = tok_text(t, id);
    size_t n = t->tok[id].len;
    uint32_t a = t->attr[id];
    if (a & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED)) {
        memcpy(out, s, n);
        return n;
    }
    if (a & ATTR_NORMAL) {
        size_t o = 0;
        if (t->kind == TOK_SPM) { /* "▁" -> " " */
            for (size_t i = 0; i < n;) {
                if (i + 3 <= n && memcmp(s + i, SPACE_ESC, 3) == 0) {
                    out[o++] = ' ';
                    i += 3;
                } else out[o++] = s[i++];
            }
            return o;
        }
        /* byte-level characters -> bytes; a character outside the alphabet is shown as
         * "[UNK_BYTE_0x<its utf8 in hex><token text>]" as llama_decode_text does */
        for (size_t i = 0; i < n;) {
            uint32_t cp = utf8_decode((const unsigned char *)s, n, &i);
            if (cp < 324 && t->bl.byte_of[cp] >= 0) {
                out[o++] = (char)t->bl.byte_of[cp];
                continue;
            }
            char u[4];
            size_t ul = utf8_encode(cp, u);
            o += (size_t)sprintf(out + o, "[UNK_BYTE_0x");
            for (size_t j = 0; j < ul; j++) o += (size_t)sprintf(out + o, "%02x", (unsigned)(uint8_t)u[j]);
            memcpy(out + o, s, n);
            o += n;
            out[o++] = ']';
        }
        return o;
    }
    if (a & ATTR_BYTE) { /* "<0xXX>": the two hex digits after "<0x" */
        char hex[3] = {n > 3 ? s[3] : 0, n > 4 ? s[4] : 0, 0};
        out[0] = (char)strtol(hex, NULL, 16);
        return 1;
    }
    return 0; /* unused / undefined types render as nothing */
}

/* Render every token once (llama.cpp caches token_to_piece the same way). */
static int build_pieces(tokenizer *t, slmc_err *err) {
    char *tmp = NULL;  /* one rendering, before it is appended */
    size_t cap_tmp = 0, cap_text = 0, off = 0;
    int rc = 0;
    t->piece = malloc(t->n_vocab * sizeof *t->piece);
    if (!t->piece) return slmc_fail(err, NULL, "out of memory for the token pieces");
    for (uint32_t i = 0; i < t->n_vocab && rc == 0; i++) {
        if (grow((void **)&tmp, &cap_tmp, render_bound(t, (int32_t)i), 1) != 0) {
            rc = slmc_fail(err, NULL, "out of memory for the token pieces");
            break;
        }
        size_t n = render_piece(t, (int32_t)i, tmp);
        if (off + n > UINT32_MAX) rc = slmc_fail(err, NULL, "token pieces exceed 4 GiB");
        else if (grow((void **)&t->piece_text, &cap_text, off + n + 1, 1) != 0)
            rc = slmc_fail(err, NULL, "out of memory for the token pieces");
        else {
            memcpy(t->piece_text + off, tmp, n);
            t->piece[i] = (span){(uint32_t)off, (uint32_t)n};
            if (n > t->max_piece) t->max_piece = n;
            off += n;
        }
    }
    free(tmp);
    return rc;
}

static int compile_regexes(tokenizer *t, const pre_def *pre, slmc_err *err) {
    for (int i = 0; i < RE_MAX && pre->regex[i]; i++) {
        int code;
        PCRE2_SIZE at;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pre->regex[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
        if (!re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof msg);
            return slmc_fail(err, NULL, "pre-tokenizer regex %d: %s at offset %zu", i, (const char *)msg, (size_t)at);
        }
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up; the interpreter is used without it */
        t->re[t->n_re++] = re;
    }
    return 0;
}

/* Model-type defaults, then the keys (llama_vocab::impl::load). */
static int load_config(tokenizer *t, const meta *kv, const char *model, slmc_err *err) {
    const pre_def *pre = NULL;
    if (strcmp(model, "llama") == 0) {
        t->kind = TOK_SPM;
        t->bos = special_id(t, kv, KEY_PREFIX "bos_token_id", 1);
        t->eos = special_id(t, kv, KEY_PREFIX "eos_token_id", 2);
        t->unk = special_id(t, kv, KEY_PREFIX "unknown_token_id", 0);
        t->add_bos = true;
        t->add_space_prefix = true;
    } else if (strcmp(model, "gpt2") == 0) {
        t->kind = TOK_BPE;
        const char *name = meta_get_str(kv, KEY_PREFIX "pre");
        pre = find_pre(name ? name : "default");
        if (!pre) return slmc_fail(err, NULL, KEY_PREFIX "pre \"%s\" is not a supported pre-tokenizer", name);
        t->bos = special_id(t, kv, KEY_PREFIX "bos_token_id", 11);
        t->eos = special_id(t, kv, KEY_PREFIX "eos_token_id", 11);
        t->unk = special_id(t, kv, KEY_PREFIX "unknown_token_id", -1);
        t->add_bos = pre->add_bos;
        t->ignore_merges = pre->ignore_merges;
        t->add_space_prefix = false;
    } else {
        return slmc_fail(err, NULL, KEY_PREFIX "model \"%s\" is not supported (llama, gpt2)", model);
    }
    (void)meta_get_bool(kv, KEY_PREFIX "add_space_prefix", &t->add_space_prefix);
    (void)meta_get_bool(kv, KEY_PREFIX "add_bos_token", &t->add_bos);
    (void)meta_get_bool(kv, KEY_PREFIX "add_eos_token", &t->add_eos);
    if (t->add_bos && t->bos < 0) return slmc_fail(err, NULL, KEY_PREFIX "add_bos_token is true, but bos_token_id is not set");
    if (t->add_eos && t->eos < 0) return slmc_fail(err, NULL, KEY_PREFIX "add_eos_token is true, but eos_token_id is not set");

    if (t->kind == TOK_BPE) {
        if (load_merges(t, kv, err) != 0) return -1;
        byte_level_init(&t->bl);
        if (compile_regexes(t, pre, err) != 0) return -1;
    } else {
        /* byte fallback: "<0xXX>", else the byte itself as a token */
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            int32_t id = token_id(t, name, 6);
            if (id < 0) {
                char c = (char)b;
                id = token_id(t, &c, 1);
            }
            t->byte_tok[b] = id;
        }
        /* Whether a "▁" that follows another character can start an independent word: only when
         * no token holds a "▁" right after a character other than "▁" (Llama's vocabularies) */
        t->spm_word_split = true;
        for (uint32_t i = 0; i < t->n_vocab && t->spm_word_split; i++) {
            const char *x = t->text + t->tok[i].off;
            for (uint32_t j = 1; j + 3 <= t->tok[i].len; j++)
                if (memcmp(x + j, SPACE_ESC, 3) == 0 && (j < 3 || memcmp(x + j - 3, SPACE_ESC, 3) != 0)) {
                    t->spm_word_split = false;
                    break;
                }
        }
    }
    return 0;
}

bool tokenizer_set_word_split(tokenizer *t, bool on) {
    t->spm_one_queue = !on;
    return t->kind == TOK_SPM && t->spm_word_split && on;
}

int tokenizer_create(tokenizer **out, const meta *kv, slmc_err *err) {
    *out = NULL;
    const char *model = meta_get_str(kv, KEY_PREFIX "model");
    if (!model) return slmc_fail(err, NULL, KEY_PREFIX "model is missing");
    uint64_t n = 0;
    const meta_kv *k = meta_find(kv, KEY_PREFIX "tokens");
    if (!k) return slmc_fail(err, NULL, KEY_PREFIX "tokens is missing");
    if (k->type != GGUF_ARR || k->elem != GGUF_STR) return slmc_fail(err, NULL, KEY_PREFIX "tokens must be a string array");
    n = k->n;

    tokenizer *t = calloc(1, sizeof *t);
    if (!t) return slmc_fail(err, NULL, "out of memory");
    if (load_tokens(t, k->v.arr, n, err) != 0 || load_scores_types(t, kv, err) != 0 || load_config(t, kv, model, err) != 0)
        goto fail;
    fix_attrs(t);
    if (build_eog(t, kv, err) != 0 || build_specials(t, kv, err) != 0 || build_pieces(t, err) != 0) goto fail;
    *out = t;
    return 0;
fail:
    tokenizer_free(t);
    return -1;
}

/* ---- per-call working memory --------------------------------------------------------------- */

/* One symbol of a merge loop: a run of bytes of the text, linked to its neighbours. */
typedef struct symbol {
    int32_t prev, next;  /* neighbour indices, -1 at the ends */
    uint32_t off;        /* first byte in the text being merged */
    uint32_t n;          /* bytes; 0 once merged into its left neighbour */
} symbol;

/* A candidate merge of two adjacent symbols. Popped smallest key first, then leftmost. */
typedef struct bigram {
    double key;          /* SPM: -score of the merged token; BPE: merge rank */
    int32_t left, right; /* symbol indices */
    uint32_t size;       /* bytes of the pair when queued: stale entries no longer match */
} bigram;

/* A piece of the input after special tokens are cut out. */
typedef struct fragment {
    int32_t token;       /* a special token id, or -1 for raw text */
    size_t off, len;     /* raw text: its bytes in the input */
} fragment;

typedef struct work {
    int32_t *ids;        /* output */
    size_t n_ids, cap_ids;
    char *buf;           /* the fragment being tokenized, normalized */
    size_t cap_buf;
    char *word;          /* BPE: one word in byte-level characters */
    size_t cap_word;
    symbol *sym;
    size_t cap_sym;
    bigram *heap;
    size_t n_heap, cap_heap;
    span *range, *range2; /* BPE: words found by the pre-tokenizer (offsets in buf) */
    size_t n_range, cap_range, n_range2, cap_range2;
    fragment *frag, *frag2;
    size_t n_frag, cap_frag, n_frag2, cap_frag2;
    pcre2_match_data *md;
} work;

static void work_free(work *w) {
    free(w->buf);
    free(w->word);
    free(w->sym);
    free(w->heap);
    free(w->range);
    free(w->range2);
    free(w->frag);
    free(w->frag2);
    if (w->md) pcre2_match_data_free(w->md);
}

static int push_id(work *w, int32_t id) {
    if (grow((void **)&w->ids, &w->cap_ids, w->n_ids + 1, sizeof *w->ids) != 0) return -1;
    w->ids[w->n_ids++] = id;
    return 0;
}

static bool bigram_less(const bigram *a, const bigram *b) {
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static int heap_push(work *w, bigram b) {
    if (grow((void **)&w->heap, &w->cap_heap, w->n_heap + 1, sizeof *w->heap) != 0) return -1;
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_less(&b, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = b;
    return 0;
}

static bigram heap_pop(work *w) {
    bigram top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bigram_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!bigram_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

/* Split s[0, n) into symbols of one UTF-8 character each (by lead byte). Returns the count or -1. */
static int64_t make_symbols(work *w, const char *s, size_t n) {
    if (grow((void **)&w->sym, &w->cap_sym, n, sizeof *w->sym) != 0) return -1;
    int64_t k = 0;
    for (size_t off = 0; off < n;) {
        size_t l = utf8_len((unsigned char)s[off]);
        if (l > n - off) l = n - off;
        w->sym[k] = (symbol){(int32_t)k - 1, off + l == n ? -1 : (int32_t)k + 1, (uint32_t)off, (uint32_t)l};
        off += l;
        k++;
    }
    return k;
}

/* Merge the pair at the top of the queue if it is still current; returns the left index or -1. */
static int32_t apply_bigram(work *w, bigram b) {
    symbol *l = &w->sym[b.left], *r = &w->sym[b.right];
    if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) return -1;
    l->n += r->n;
    r->n = 0;
    l->next = r->next;
    if (r->next >= 0) w->sym[r->next].prev = b.left;
    return b.left;
}

/* ---- SPM ----------------------------------------------------------------------------------- */

/* Queue (left, right) when their concatenation is a token, by that token's score. */
static int spm_try_pair(const tokenizer *t, work *w, const char *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return 0;
    uint32_t size = w->sym[left].n + w->sym[right].n;
    int32_t id = token_id(t, s + w->sym[left].off, size);
    if (id < 0) return 0;
    return heap_push(w, (bigram){-(double)t->score[id], left, right, size});
}

/* llm_tokenizer_spm_session::tokenize over s[0, n) (already escaped). A symbol left that is no
 * token becomes its bytes' <0xXX> tokens. (llama.cpp's rev_merge re-split never fires: every
 * merged symbol is a token by construction.) */
static int spm_tokenize_piece(const tokenizer *t, work *w, const char *s, size_t n, slmc_err *err) {
    int64_t ns = make_symbols(w, s, n);
    if (ns < 0) return slmc_fail(err, NULL, "out of memory");
    w->n_heap = 0;
    for (int64_t i = 1; i < ns; i++)
        if (spm_try_pair(t, w, s, (int32_t)i - 1, (int32_t)i) != 0) return slmc_fail(err, NULL, "out of memory");
    while (w->n_heap) {
        int32_t left = apply_bigram(w, heap_pop(w));
        if (left < 0) continue;
        if (spm_try_pair(t, w, s, w->sym[left].prev, left) != 0 || spm_try_pair(t, w, s, left, w->sym[left].next) != 0)
            return slmc_fail(err, NULL, "out of memory");
    }
    for (int32_t i = ns ? 0 : -1; i != -1; i = w->sym[i].next) {
        const symbol *y = &w->sym[i];
        int32_t id = token_id(t, s + y->off, y->n);
        if (id >= 0) {
            if (push_id(w, id) != 0) return slmc_fail(err, NULL, "out of memory");
            continue;
        }
        for (uint32_t j = 0; j < y->n; j++) {
            uint8_t b = (uint8_t)s[y->off + j];
            if (t->byte_tok[b] < 0) return slmc_fail(err, NULL, "byte 0x%02X has no token (no <0x%02X> in the vocabulary)", b, b);
            if (push_id(w, t->byte_tok[b]) != 0) return slmc_fail(err, NULL, "out of memory");
        }
    }
    return 0;
}

/* The same over s[0, n), word by word when the vocabulary allows: llama.cpp merges over the
 * whole text in one queue, but a merge joins two neighbours into a token, and when no token
 * holds "▁" right after another character, no merge ever joins the character before such a "▁"
 * to it. So the text falls apart into independent words there, each merged in the same order
 * as in the one queue (highest score first, leftmost on ties), with the same tokens; a small
 * queue per word stays in cache where one queue over the whole text does not. */
static int spm_tokenize(const tokenizer *t, work *w, const char *s, size_t n, slmc_err *err) {
    if (!t->spm_word_split || t->spm_one_queue) return spm_tokenize_piece(t, w, s, n, err);
    /* walk the symbols as make_symbols cuts them (by lead byte, also in invalid UTF-8) */
    size_t start = 0, prev = 0;
    for (size_t off = 0; off < n;) {
        if (off > 0 && n - off >= 3 && memcmp(s + off, SPACE_ESC, 3) == 0 &&
            !(off - prev == 3 && memcmp(s + prev, SPACE_ESC, 3) == 0)) {
            if (spm_tokenize_piece(t, w, s + start, off - start, err) != 0) return -1;
            start = off;
        }
        size_t l = utf8_len((unsigned char)s[off]);
        if (l > n - off) l = n - off;
        prev = off;
        off += l;
    }
    return spm_tokenize_piece(t, w, s + start, n - start, err);
}

/* One SPM text fragment: optional " " prefix, then every " " becomes "▁". */
static int spm_fragment(const tokenizer *t, work *w, const char *s, size_t n, bool prefix, slmc_err *err) {
    if (grow((void **)&w->buf, &w->cap_buf, 3 * (n + 1), 1) != 0) return slmc_fail(err, NULL, "out of memory");
    size_t o = 0;
    if (prefix) {
        memcpy(w->buf, SPACE_ESC, 3);
        o = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(w->buf + o, SPACE_ESC, 3);
            o += 3;
        } else w->buf[o++] = s[i];
    }
    if (o > INT32_MAX) return slmc_fail(err, NULL, "text too long (%zu bytes)", o);
    return spm_tokenize(t, w, w->buf, o, err);
}

/* ---- BPE ----------------------------------------------------------------------------------- */

/* Rewrite s[0, n) into w->buf as valid UTF-8, decoding as llama.cpp does (invalid bytes become
 * U+FFFD; overlong forms are re-encoded canonically), so PCRE2 can skip its UTF check. Code
 * points PCRE2 cannot hold (surrogates, above U+10FFFF) also become U+FFFD. Returns the length. */
static int64_t sanitize_utf8(work *w, const char *s, size_t n) {
    if (grow((void **)&w->buf, &w->cap_buf, 3 * n + 1, 1) != 0) return -1;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (!((unsigned char)s[i] & 0x80)) { /* ASCII fast path */
            w->buf[o++] = s[i++];
            continue;
        }
        uint32_t cp = utf8_decode((const unsigned char *)s, n, &i);
        if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) cp = 0xFFFD;
        o += utf8_encode(cp, w->buf + o);
    }
    return (int64_t)o;
}

/* Apply the pre-tokenizer regexes in turn: each splits every current piece into its matches
 * and the gaps between them (llama.cpp's unicode_regex_split keeps unmatched text as pieces). */
static int regex_split(const tokenizer *t, work *w, const char *s, size_t n, slmc_err *err) {
    w->n_range = 0;
    if (grow((void **)&w->range, &w->cap_range, 1, sizeof *w->range) != 0) return slmc_fail(err, NULL, "out of memory");
    w->range[w->n_range++] = (span){0, (uint32_t)n};
    for (int k = 0; k < t->n_re; k++) {
        if (w->md) pcre2_match_data_free(w->md);
        w->md = pcre2_match_data_create_from_pattern(t->re[k], NULL);
        if (!w->md) return slmc_fail(err, NULL, "out of memory");
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
        w->n_range2 = 0;
        for (size_t r = 0; r < w->n_range; r++) {
            /* the subject is the piece alone, so lookaheads do not see past it */
            PCRE2_SPTR subj = (PCRE2_SPTR)(s + w->range[r].off);
            size_t len = w->range[r].len, pos = 0;
            while (pos < len) {
                uint32_t opts = PCRE2_NO_UTF_CHECK;
                int rc = pcre2_match(t->re[k], subj, len, pos, opts, w->md, NULL);
                if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* a huge input: the interpreter copes */
                    rc = pcre2_match(t->re[k], subj, len, pos, opts | PCRE2_NO_JIT, w->md, NULL);
                if (rc == PCRE2_ERROR_NOMATCH) break;
                if (rc < 0) {
                    PCRE2_UCHAR msg[256];
                    pcre2_get_error_message(rc, msg, sizeof msg);
                    return slmc_fail(err, NULL, "pre-tokenizer regex failed at byte %zu: %s", (size_t)w->range[r].off + pos,
                                     (const char *)msg);
                }
                size_t ms = ov[0], me = ov[1];
                if (me == ms) { /* an empty match adds no piece: step over one character */
                    if (ms >= len) break;
                    pos = ms + utf8_len(subj[ms]);
                    continue;
                }
                if (grow((void **)&w->range2, &w->cap_range2, w->n_range2 + 2, sizeof *w->range2) != 0)
                    return slmc_fail(err, NULL, "out of memory");
                if (ms > pos) w->range2[w->n_range2++] = (span){w->range[r].off + (uint32_t)pos, (uint32_t)(ms - pos)};
                w->range2[w->n_range2++] = (span){w->range[r].off + (uint32_t)ms, (uint32_t)(me - ms)};
                pos = me;
            }
            if (pos < len) {
                if (grow((void **)&w->range2, &w->cap_range2, w->n_range2 + 1, sizeof *w->range2) != 0)
                    return slmc_fail(err, NULL, "out of memory");
                w->range2[w->n_range2++] = (span){w->range[r].off + (uint32_t)pos, (uint32_t)(len - pos)};
            }
        }
        span *tmp = w->range;
        w->range = w->range2;
        w->range2 = tmp;
        size_t c = w->cap_range;
        w->cap_range = w->cap_range2;
        w->cap_range2 = c;
        w->n_range = w->n_range2;
    }
    return 0;
}

/* Queue (left, right) when the pair is a merge, by its rank. */
static int bpe_try_pair(const tokenizer *t, work *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return 0;
    const symbol *l = &w->sym[left], *r = &w->sym[right];
    int32_t rank = str_map_get(&t->ranks, w->word + l->off, l->n + r->n, l->n);
    if (rank < 0) return 0;
    return heap_push(w, (bigram){(double)rank, left, right, l->n + r->n});
}

/* One pre-tokenized word s[0, n): byte-level characters, then merges by rank
 * (llm_tokenizer_bpe_session::tokenize for one word). */
static int bpe_word(const tokenizer *t, work *w, const char *s, size_t n, slmc_err *err) {
    if (grow((void **)&w->word, &w->cap_word, 2 * n + 1, 1) != 0) return slmc_fail(err, NULL, "out of memory");
    size_t wn = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        memcpy(w->word + wn, t->bl.utf8[b], t->bl.len[b]);
        wn += t->bl.len[b];
    }
    if (t->ignore_merges) {
        int32_t id = token_id(t, w->word, wn);
        if (id >= 0) return push_id(w, id) == 0 ? 0 : slmc_fail(err, NULL, "out of memory");
    }
    int64_t ns = make_symbols(w, w->word, wn);
    if (ns < 0) return slmc_fail(err, NULL, "out of memory");
    w->n_heap = 0;
    for (int64_t i = 1; i < ns; i++)
        if (bpe_try_pair(t, w, (int32_t)i - 1, (int32_t)i) != 0) return slmc_fail(err, NULL, "out of memory");
    while (w->n_heap) {
        int32_t left = apply_bigram(w, heap_pop(w));
        if (left < 0) continue;
        if (bpe_try_pair(t, w, w->sym[left].prev, left) != 0 || bpe_try_pair(t, w, left, w->sym[left].next) != 0)
            return slmc_fail(err, NULL, "out of memory");
    }
    for (int32_t i = ns ? 0 : -1; i != -1; i = w->sym[i].next) {
        const symbol *y = &w->sym[i];
        int32_t id = token_id(t, w->word + y->off, y->n);
        if (id >= 0) {
            if (push_id(w, id) != 0) return slmc_fail(err, NULL, "out of memory");
            continue;
        }
        /* not a token: llama.cpp looks each single byte of the symbol up and keeps those found */
        for (uint32_t j = 0; j < y->n; j++) {
            int32_t b = token_id(t, w->word + y->off + j, 1);
            if (b >= 0 && push_id(w, b) != 0) return slmc_fail(err, NULL, "out of memory");
        }
    }
    return 0;
}

static int bpe_fragment(const tokenizer *t, work *w, const char *s, size_t n, slmc_err *err) {
    int64_t m = sanitize_utf8(w, s, n);
    if (m < 0) return slmc_fail(err, NULL, "out of memory");
    if (m > INT32_MAX) return slmc_fail(err, NULL, "text too long (%lld bytes)", (long long)m);
    if (regex_split(t, w, w->buf, (size_t)m, err) != 0) return -1;
    for (size_t r = 0; r < w->n_range; r++)
        if (bpe_word(t, w, w->buf + w->range[r].off, w->range[r].len, err) != 0) return -1;
    return 0;
}

/* ---- special tokens ------------------------------------------------------------------------ */

static int push_frag(fragment **f, size_t *n, size_t *cap, fragment x) {
    if (grow((void **)f, cap, *n + 1, sizeof **f) != 0) return -1;
    (*f)[(*n)++] = x;
    return 0;
}

/* llama_vocab::impl::tokenizer_st_partition: for each special token, longest first, split every
 * raw fragment at each occurrence of its text. Control and unknown tokens only when
 * parse_special; user-defined ones always. LSTRIP/RSTRIP tokens eat the whitespace beside them. */
static int partition(const tokenizer *t, work *w, const char *text, size_t len, bool parse_special) {
    w->n_frag = 0;
    if (len == 0) return 0;
    if (push_frag(&w->frag, &w->n_frag, &w->cap_frag, (fragment){-1, 0, len}) != 0) return -1;
    for (uint32_t si = 0; si < t->n_special; si++) {
        int32_t id = t->special[si];
        uint32_t a = t->attr[id];
        if (!parse_special && (a & (ATTR_CONTROL | ATTR_UNKNOWN))) continue;
        const char *tt = tok_text(t, id);
        size_t tl = t->tok[id].len;
        w->n_frag2 = 0;
        for (size_t fi = 0; fi < w->n_frag; fi++) {
            fragment f = w->frag[fi];
            if (f.token >= 0) {
                if (push_frag(&w->frag2, &w->n_frag2, &w->cap_frag2, f) != 0) return -1;
                continue;
            }
            size_t off = f.off, rem = f.len;
            while (rem > 0) {
                const char *p = memmem(text + off, rem, tt, tl);
                if (!p) {
                    if (push_frag(&w->frag2, &w->n_frag2, &w->cap_frag2, (fragment){-1, off, rem}) != 0) return -1;
                    break;
                }
                size_t m = (size_t)(p - text), left = m - off;
                if (a & ATTR_LSTRIP)
                    while (left > 0 && is_c_space(text[off + left - 1])) left--;
                if (left > 0 && push_frag(&w->frag2, &w->n_frag2, &w->cap_frag2, (fragment){-1, off, left}) != 0) return -1;
                if (push_frag(&w->frag2, &w->n_frag2, &w->cap_frag2, (fragment){id, 0, 0}) != 0) return -1;
                size_t roff = m + tl, rlen = off + rem - roff;
                if (a & ATTR_RSTRIP)
                    while (rlen > 0 && is_c_space(text[roff])) roff++, rlen--;
                off = roff;
                rem = rlen;
            }
        }
        fragment *tmp = w->frag;
        w->frag = w->frag2;
        w->frag2 = tmp;
        size_t c = w->cap_frag;
        w->cap_frag = w->cap_frag2;
        w->cap_frag2 = c;
        w->n_frag = w->n_frag2;
    }
    return 0;
}

/* ---- encode -------------------------------------------------------------------------------- */

static int encode(const tokenizer *t, work *w, const char *text, size_t len, bool add_special, bool parse_special,
                  slmc_err *err) {
    if (partition(t, w, text, len, parse_special) != 0) return slmc_fail(err, NULL, "out of memory");
    if (add_special && t->add_bos && push_id(w, t->bos) != 0) return slmc_fail(err, NULL, "out of memory");
    bool prev_special = true; /* SPM: the first text fragment gets the space prefix */
    for (size_t i = 0; i < w->n_frag; i++) {
        const fragment *f = &w->frag[i];
        if (f->token >= 0) {
            if (push_id(w, f->token) != 0) return slmc_fail(err, NULL, "out of memory");
            prev_special = true;
            continue;
        }
        int rc = t->kind == TOK_SPM ? spm_fragment(t, w, text + f->off, f->len, t->add_space_prefix && prev_special, err)
                                    : bpe_fragment(t, w, text + f->off, f->len, err);
        if (rc != 0) return -1;
        prev_special = false;
    }
    if (add_special && t->add_eos && push_id(w, t->eos) != 0) return slmc_fail(err, NULL, "out of memory");
    return 0;
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special, bool parse_special,
                     int32_t **ids, size_t *n_ids, slmc_err *err) {
    *ids = NULL;
    *n_ids = 0;
    if (len > INT32_MAX / 3) return slmc_fail(err, NULL, "text too long (%zu bytes)", len);
    work w;
    memset(&w, 0, sizeof w);
    int rc = encode(t, &w, text, len, add_special, parse_special, err);
    if (rc == 0) {
        *ids = w.ids;
        *n_ids = w.n_ids;
    } else {
        free(w.ids);
    }
    work_free(&w);
    return rc;
}

/* ---- pieces and accessors ------------------------------------------------------------------ */

int tokenizer_piece(const tokenizer *t, int32_t id, char *buf, size_t cap) {
    if (id < 0 || (uint32_t)id >= t->n_vocab) return -1;
    span p = t->piece[id];
    if (p.len > cap) return -1;
    memcpy(buf, t->piece_text + p.off, p.len);
    return (int)p.len;
}

size_t tokenizer_max_piece(const tokenizer *t) { return t->max_piece; }
int32_t tokenizer_bos(const tokenizer *t) { return t->bos; }
int32_t tokenizer_eos(const tokenizer *t) { return t->eos; }
int64_t tokenizer_n_vocab(const tokenizer *t) { return t->n_vocab; }
bool tokenizer_add_bos(const tokenizer *t) { return t->add_bos; }
bool tokenizer_is_eog(const tokenizer *t, int32_t id) {
    return id >= 0 && bsearch(&id, t->eog, t->n_eog, sizeof *t->eog, cmp_i32) != NULL;
}
