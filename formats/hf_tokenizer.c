/* hf_tokenizer.c - Hugging Face tokenizer files <-> tokenizer.ggml.* keys.
 *
 * Read top to bottom:
 *   1. key names and a few JSON helpers
 *   2. `vocab`: a token table (text, score, type) built up and then stored into a meta
 *   3. SentencePiece tokenizer.model: a small protobuf reader, then the SPM -> meta mapping
 *   4. tokenizer.json: byte-level BPE ("gpt2") and byte-fallback BPE ("llama")
 *   5. tokenizer_config.json / config.json: special token ids, add_bos/add_eos, chat template
 *   6. hf_tokenizer_load: which files of a folder are read, in which order
 *   7. writing: tokenizer.model (protobuf), tokenizer.json, tokenizer_config.json,
 *      special_tokens_map.json
 *
 * The mapping follows llama.cpp's convert_hf_to_gguf.py (see docs/formats-tokenizer.md for
 * where and why we differ).
 */
#include "hf_tokenizer.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"
#include "utf8.h"

/* ==== 1. keys and JSON helpers ============================================================ */

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_PRE "tokenizer.ggml.pre"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_MERGES "tokenizer.ggml.merges"
#define KEY_ADD_BOS "tokenizer.ggml.add_bos_token"
#define KEY_ADD_EOS "tokenizer.ggml.add_eos_token"
#define KEY_ADD_PREFIX "tokenizer.ggml.add_space_prefix"
#define KEY_CHAT_TEMPLATE "tokenizer.chat_template"

/* Score llama.cpp gives padding tokens of a SentencePiece vocabulary, and every token of a
 * vocabulary read from a byte-fallback tokenizer.json (LlamaHfVocab.get_token_score). */
#define PAD_SCORE (-10000.0f)
#define HF_FAST_SCORE (-1000.0f)

/* The special tokens llama.cpp's SpecialVocab looks for, in its order: the name used in
 * tokenizer_config.json ("<name>_token") and config.json ("<name>_token_id"), and the GGUF key. */
static const struct {
    const char *name;
    const char *key;
} SPECIALS[] = {
    {"bos", "tokenizer.ggml.bos_token_id"},
    {"eos", "tokenizer.ggml.eos_token_id"},
    {"unk", "tokenizer.ggml.unknown_token_id"},
    {"sep", "tokenizer.ggml.seperator_token_id"}, /* sic: llama.cpp's spelling */
    {"pad", "tokenizer.ggml.padding_token_id"},
    {"mask", "tokenizer.ggml.mask_token_id"},
};
#define N_SPECIALS (sizeof SPECIALS / sizeof SPECIALS[0])

/* Parse JSON text into an object. Integers are decoded as doubles because real configs carry
 * integers jansson cannot hold (Llama 3's "model_max_length": 1e30 written as an integer);
 * json_int() below turns integral values back into integers. */
static int json_parse_object(const char *text, size_t len, const char *name, json_t **out, slmc_err *err) {
    json_error_t jerr;
    *out = NULL;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
    if (!root)
        return slmc_fail(err, name, "invalid JSON at line %d column %d (byte %d): %s", jerr.line,
                         jerr.column, jerr.position, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return slmc_fail(err, name, "the top-level JSON value is not an object");
    }
    *out = root;
    return 0;
}

/* An integral JSON number (integer, or a double without fraction within +-2^53) as int64. */
static bool json_int(const json_t *v, int64_t *out) {
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d >= -9007199254740992.0 && d <= 9007199254740992.0 && d == floor(d)) {
            *out = (int64_t)d;
            return true;
        }
    }
    return false;
}

/* Object member as a string (NULL when absent or not a string). */
static const char *json_str(const json_t *obj, const char *key) {
    return json_string_value(json_object_get(obj, key));
}

/* true when obj[key] is JSON true (absent or anything else: false). */
static bool json_flag(const json_t *obj, const char *key) {
    return json_is_true(json_object_get(obj, key));
}

/* ==== 2. the token table ================================================================== */

typedef struct vocab {
    uint64_t n;        /* number of tokens (ids 0..n-1) */
    const char **text; /* [n] token bytes: borrowed (input buffer, JSON, a meta) or owned[i] */
    uint64_t *len;     /* [n] byte length of text[i] */
    float *score;      /* [n] scores ("llama" vocabularies only) */
    int32_t *type;     /* [n] TOKTYPE_*, 0 while the id is a hole */
    char **owned;      /* [n] malloc'd texts we made (padding, rewritten tokens) or NULL */
    uint64_t cap;      /* allocated entries */
} vocab;

static void vocab_free(vocab *v) {
    if (v->owned)
        for (uint64_t i = 0; i < v->n; i++) free(v->owned[i]);
    free(v->text);
    free(v->len);
    free(v->score);
    free(v->type);
    free(v->owned);
    memset(v, 0, sizeof *v);
}

/* Grow (never shrink) to n tokens; new entries are empty holes. 0 or -1 (out of memory). */
static int vocab_resize(vocab *v, uint64_t n) {
    if (n <= v->n) return 0;
    if (n > v->cap) {
        uint64_t cap = v->cap ? v->cap : 256;
        while (cap < n) cap *= 2;
        if (cap > SIZE_MAX / sizeof(char *)) return -1;
        const char **text = realloc(v->text, cap * sizeof *text);
        if (text) v->text = text;
        uint64_t *len = realloc(v->len, cap * sizeof *len);
        if (len) v->len = len;
        float *score = realloc(v->score, cap * sizeof *score);
        if (score) v->score = score;
        int32_t *type = realloc(v->type, cap * sizeof *type);
        if (type) v->type = type;
        char **owned = realloc(v->owned, cap * sizeof *owned);
        if (owned) v->owned = owned;
        if (!text || !len || !score || !type || !owned) return -1;
        v->cap = cap;
    }
    for (uint64_t i = v->n; i < n; i++) {
        v->text[i] = "";
        v->len[i] = 0;
        v->score[i] = 0.0f;
        v->type[i] = 0;
        v->owned[i] = NULL;
    }
    v->n = n;
    return 0;
}

/* Give token i a text we allocated (taking ownership of s, also on failure). */
static void vocab_set_owned(vocab *v, uint64_t i, char *s, uint64_t len) {
    free(v->owned[i]);
    v->owned[i] = s;
    v->text[i] = s;
    v->len[i] = len;
}

/* Fill every hole with llama.cpp's padding token "[PAD{i}]" (UNUSED). */
static int vocab_fill_holes(vocab *v) {
    for (uint64_t i = 0; i < v->n; i++) {
        if (v->type[i] != 0) continue;
        char *s = malloc(32);
        if (!s) return -1;
        int k = snprintf(s, 32, "[PAD%llu]", (unsigned long long)i);
        vocab_set_owned(v, i, s, (uint64_t)k);
        v->type[i] = TOKTYPE_UNUSED;
        v->score[i] = PAD_SCORE;
    }
    return 0;
}

/* Store tokens, (scores,) token_type into kv, replacing existing keys in place. */
static int vocab_store(meta *kv, const vocab *v, bool with_scores, const char *name, slmc_err *err) {
    if (meta_set_arr_str(kv, KEY_TOKENS, v->n, v->text, v->len) != 0 ||
        (with_scores && meta_set_arr(kv, KEY_SCORES, GGUF_F32, v->n, v->score) != 0) ||
        meta_set_arr(kv, KEY_TYPES, GGUF_I32, v->n, v->type) != 0)
        return slmc_fail(err, name, "out of memory storing %llu tokens", (unsigned long long)v->n);
    if (!with_scores) meta_remove(kv, KEY_SCORES);
    return 0;
}

/* Load the token table of kv (texts borrowed from kv: do not modify kv's tokens while v lives).
 * *has_scores tells whether kv had scores (else they read as 0). */
static int vocab_from_meta(vocab *v, const meta *kv, bool *has_scores, const char *name, slmc_err *err) {
    memset(v, 0, sizeof *v);
    uint64_t n = 0, ns = 0, nt = 0;
    const meta_str *toks = meta_get_arr(kv, KEY_TOKENS, GGUF_STR, &n);
    if (!toks) return slmc_fail(err, name, "%s is missing or not a string array", KEY_TOKENS);
    const float *scores = meta_get_arr(kv, KEY_SCORES, GGUF_F32, &ns);
    const int32_t *types = meta_get_arr(kv, KEY_TYPES, GGUF_I32, &nt);
    if (scores && ns != n)
        return slmc_fail(err, name, "%s has %llu entries for %llu tokens", KEY_SCORES,
                         (unsigned long long)ns, (unsigned long long)n);
    if (types && nt != n)
        return slmc_fail(err, name, "%s has %llu entries for %llu tokens", KEY_TYPES,
                         (unsigned long long)nt, (unsigned long long)n);
    if (vocab_resize(v, n) != 0) {
        vocab_free(v);
        return slmc_fail(err, name, "out of memory for %llu tokens", (unsigned long long)n);
    }
    for (uint64_t i = 0; i < n; i++) {
        v->text[i] = toks[i].s;
        v->len[i] = toks[i].len;
        v->score[i] = scores ? scores[i] : 0.0f;
        v->type[i] = types ? types[i] : TOKTYPE_NORMAL;
    }
    *has_scores = scores != NULL;
    return 0;
}

/* Id of the first token of kv whose text is s (len bytes), or -1. */
static int64_t find_token(const meta *kv, const char *s, size_t len) {
    uint64_t n = 0;
    const meta_str *toks = meta_get_arr(kv, KEY_TOKENS, GGUF_STR, &n);
    if (!toks) return -1;
    for (uint64_t i = 0; i < n; i++)
        if (toks[i].len == len && memcmp(toks[i].s, s, len) == 0) return (int64_t)i;
    return -1;
}

/* llama.cpp's does_token_look_special: added tokens that behave as control tokens even when
 * their tokenizer does not mark them special. */
static bool looks_special(const char *s, size_t len) {
    static const char *const exact[] = {"<pad>", "<mask>", "<2mass>", "[@BOS@]"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strlen(exact[i]) == len && memcmp(s, exact[i], len) == 0) return true;
#define STARTS(p) (len >= strlen(p) && memcmp(s, p, strlen(p)) == 0)
#define ENDS(p) (len >= strlen(p) && memcmp(s + len - strlen(p), p, strlen(p)) == 0)
    if (STARTS("<|") && ENDS("|>") && len >= 4) return true;
    if (STARTS("<\xef\xbd\x9c") && ENDS("\xef\xbd\x9c>") && len >= 8) return true; /* <｜...｜> */
    if (STARTS("<unused") && ENDS(">")) return true;
#undef STARTS
#undef ENDS
    return false;
}

/* ==== 3. SentencePiece tokenizer.model ==================================================== */

/* A protobuf message being read: wire format is a sequence of (key varint = field << 3 | wire
 * type, value); wire type 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32. */
typedef struct pb {
    const uint8_t *p;  /* message bytes [len] */
    size_t len;        /* message length */
    size_t pos;        /* read position within the message */
    size_t base;       /* file offset of p[0], for messages */
    const char *name;  /* file name, for messages */
} pb;

static unsigned long long pb_off(const pb *r) { return (unsigned long long)(r->base + r->pos); }

static int pb_varint(pb *r, uint64_t *out, slmc_err *err) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->pos >= r->len)
            return slmc_fail(err, r->name, "truncated varint at offset %llu", pb_off(r));
        uint8_t b = r->p[r->pos++];
        if (shift == 63 && (b & 0x7e))
            return slmc_fail(err, r->name, "varint overflows 64 bits at offset %llu", pb_off(r) - 1);
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return slmc_fail(err, r->name, "varint longer than 10 bytes at offset %llu", pb_off(r));
}

/* Read a field key. */
static int pb_key(pb *r, uint64_t *field, int *wire, slmc_err *err) {
    size_t at = r->pos;
    uint64_t key;
    if (pb_varint(r, &key, err) != 0) return -1;
    *field = key >> 3;
    *wire = (int)(key & 7);
    if (*field == 0)
        return slmc_fail(err, r->name, "invalid protobuf field number 0 at offset %llu",
                         (unsigned long long)(r->base + at));
    return 0;
}

/* Read a length-delimited value as a sub-message (or bytes). */
static int pb_sub(pb *r, pb *sub, slmc_err *err) {
    uint64_t n;
    if (pb_varint(r, &n, err) != 0) return -1;
    if (n > r->len - r->pos)
        return slmc_fail(err, r->name, "length %llu at offset %llu runs past the end of its message (%llu bytes left)",
                         (unsigned long long)n, pb_off(r), (unsigned long long)(r->len - r->pos));
    sub->p = r->p + r->pos;
    sub->len = (size_t)n;
    sub->pos = 0;
    sub->base = r->base + r->pos;
    sub->name = r->name;
    r->pos += (size_t)n;
    return 0;
}

static int pb_fixed32(pb *r, uint32_t *out, slmc_err *err) {
    if (r->len - r->pos < 4) return slmc_fail(err, r->name, "truncated fixed32 at offset %llu", pb_off(r));
    const uint8_t *b = r->p + r->pos;
    *out = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    r->pos += 4;
    return 0;
}

/* Skip a value of an unknown field. */
static int pb_skip(pb *r, int wire, slmc_err *err) {
    uint64_t v;
    pb sub;
    switch (wire) {
    case 0: return pb_varint(r, &v, err);
    case 2: return pb_sub(r, &sub, err);
    case 1:
    case 5: {
        size_t n = wire == 1 ? 8 : 4;
        if (r->len - r->pos < n) return slmc_fail(err, r->name, "truncated fixed value at offset %llu", pb_off(r));
        r->pos += n;
        return 0;
    }
    default:
        return slmc_fail(err, r->name, "unsupported protobuf wire type %d at offset %llu", wire, pb_off(r));
    }
}

/* A known field must come with the wire type its schema gives it. */
static int pb_expect(const pb *r, uint64_t field, int wire, int want, slmc_err *err) {
    if (wire == want) return 0;
    return slmc_fail(err, r->name, "field %llu has wire type %d, expected %d (offset %llu)",
                     (unsigned long long)field, wire, want, pb_off(r));
}

/* One SentencePiece message {1: piece, 2: score, 3: type} appended to v. */
static int spm_read_piece(pb *m, vocab *v, slmc_err *err) {
    uint64_t id = v->n;
    if (vocab_resize(v, id + 1) != 0) return slmc_fail(err, m->name, "out of memory for piece %llu", (unsigned long long)id);
    bool have_text = false;
    v->type[id] = TOKTYPE_NORMAL;
    while (m->pos < m->len) {
        uint64_t field, x;
        int wire;
        if (pb_key(m, &field, &wire, err) != 0) return -1;
        if (field == 1) {
            pb s;
            if (pb_expect(m, field, wire, 2, err) != 0 || pb_sub(m, &s, err) != 0) return -1;
            v->text[id] = (const char *)s.p;
            v->len[id] = s.len;
            have_text = true;
        } else if (field == 2) {
            uint32_t bits = 0;
            if (pb_expect(m, field, wire, 5, err) != 0 || pb_fixed32(m, &bits, err) != 0) return -1;
            memcpy(&v->score[id], &bits, 4);
        } else if (field == 3) {
            if (pb_expect(m, field, wire, 0, err) != 0 || pb_varint(m, &x, err) != 0) return -1;
            if (x < TOKTYPE_NORMAL || x > TOKTYPE_BYTE)
                return slmc_fail(err, m->name, "piece %llu has invalid type %llu (offset %llu)",
                                 (unsigned long long)id, (unsigned long long)x, pb_off(m));
            /* SentencePiece and llama.cpp number the types alike. (llama.cpp's converter turns
             * USER_DEFINED pieces into NORMAL; we keep them, see docs/formats-tokenizer.md.) */
            v->type[id] = (int32_t)x;
        } else if (pb_skip(m, wire, err) != 0) {
            return -1;
        }
    }
    if (!have_text)
        return slmc_fail(err, m->name, "piece %llu has no text (message ending at offset %llu)",
                         (unsigned long long)id, pb_off(m));
    return 0;
}

/* The TrainerSpec fields we look at. */
typedef struct spm_trainer {
    uint64_t model_type; /* 1 UNIGRAM (default), 2 BPE, 3 WORD, 4 CHAR */
} spm_trainer;

static int spm_read_trainer(pb *m, spm_trainer *t, slmc_err *err) {
    while (m->pos < m->len) {
        uint64_t field;
        int wire;
        if (pb_key(m, &field, &wire, err) != 0) return -1;
        if (field == 3) {
            if (pb_expect(m, field, wire, 0, err) != 0 || pb_varint(m, &t->model_type, err) != 0) return -1;
        } else if (pb_skip(m, wire, err) != 0) {
            return -1;
        }
    }
    return 0;
}

int hf_tokenizer_parse_spm(meta *kv, const uint8_t *buf, size_t len, const char *name, slmc_err *err) {
    pb r = {buf, len, 0, 0, name};
    vocab v = {0};
    spm_trainer trainer = {1};
    while (r.pos < r.len) {
        uint64_t field;
        int wire;
        pb sub;
        if (pb_key(&r, &field, &wire, err) != 0) goto fail;
        if (field == 1 || field == 2) {
            if (pb_expect(&r, field, wire, 2, err) != 0 || pb_sub(&r, &sub, err) != 0) goto fail;
            if (field == 1 && spm_read_piece(&sub, &v, err) != 0) goto fail;
            if (field == 2 && spm_read_trainer(&sub, &trainer, err) != 0) goto fail;
        } else if (pb_skip(&r, wire, err) != 0) {
            goto fail;
        }
    }
    if (v.n == 0) {
        slmc_fail(err, name, "no SentencePiece pieces (not a tokenizer.model?)");
        goto fail;
    }
    /* llama.cpp's "llama" tokenizer merges by score, which reproduces UNIGRAM and BPE models;
     * WORD and CHAR models split differently. */
    if (trainer.model_type != 1 && trainer.model_type != 2) {
        slmc_fail(err, name, "SentencePiece model type %llu is not supported (only UNIGRAM 1 and BPE 2)",
                  (unsigned long long)trainer.model_type);
        goto fail;
    }
    meta_remove(kv, KEY_MERGES);
    if (meta_set_str(kv, KEY_MODEL, "llama") != 0 || meta_set_str(kv, KEY_PRE, "default") != 0) {
        slmc_fail(err, name, "out of memory");
        goto fail;
    }
    if (vocab_store(kv, &v, true, name, err) != 0) goto fail;
    vocab_free(&v);
    return 0;
fail:
    vocab_free(&v);
    return -1;
}

/* ==== 4. tokenizer.json =================================================================== */

/* Byte-level BPE pre-tokenizers we recognize by their Split regex. llama.cpp instead encodes a
 * fixed text with the HF tokenizer and matches a hash of the ids; the regex is what makes those
 * tokenizations differ, so recognizing it gives the same answer without running a tokenizer.
 * Entries with detect false are names other families give the same regex (llama.cpp's hash tells
 * them apart by vocabulary; hf_tokenizer_load picks them by the model family). */
#define RE_HF_LLAMA3 \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_HF_QWEN2 \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* o200k (GPT-4o; Phi-4-mini), as tokenizer.json holds it (llama.cpp's "gpt-4o") */
#define RE_HF_O200K_WORD(a, b) "[^\\r\\n\\p{L}\\p{N}]?" a b "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
#define RE_HF_UPPER "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]"
#define RE_HF_LOWER "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]"
#define RE_HF_O200K                                                                            \
    RE_HF_O200K_WORD(RE_HF_UPPER "*", RE_HF_LOWER "+") "|" RE_HF_O200K_WORD(RE_HF_UPPER "+", RE_HF_LOWER "*") \
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const struct {
    const char *pre;   /* tokenizer.ggml.pre */
    const char *regex; /* the Split pattern's "Regex" string as tokenizer.json holds it */
    bool detect;       /* the name this regex is recognized as */
} PRE_REGEXES[] = {
    {"llama-bpe", RE_HF_LLAMA3, true},
    {"qwen2", RE_HF_QWEN2, true},
    {"stablelm2", RE_HF_QWEN2, false}, /* StableLM 2's Arcade100k: Qwen2's pattern */
    {"gpt-4o", RE_HF_O200K, true},
};
#define N_PRE_REGEXES (sizeof PRE_REGEXES / sizeof PRE_REGEXES[0])

/* GPT-2's own pre-tokenizer: a bare ByteLevel with its built-in regex. Phi-2 (the CodeGen
 * tokenizer) has the same one; llama.cpp calls it "phi-2". */
#define PRE_GPT2 "gpt-2"
#define PRE_PHI2 "phi-2"
/* Digits(individual_digits) then ByteLevel with its GPT-2 regex: SmolLM 1/2 (and StarCoder;
 * llama.cpp gives both the same two regexes). */
#define PRE_SMOLLM "smollm"

static bool is_type(const json_t *p, const char *type) {
    const char *t = json_str(p, "type");
    return t && strcmp(t, type) == 0;
}

static bool is_byte_level(const json_t *p) { return is_type(p, "ByteLevel"); }

/* A ByteLevel pre-tokenizer that splits with its own (GPT-2) regex: use_regex true or absent. */
static bool byte_level_splits(const json_t *p) {
    const json_t *use_regex = json_object_get(p, "use_regex");
    return is_byte_level(p) && (!use_regex || json_is_true(use_regex));
}

/* tokenizer.ggml.pre for a pre_tokenizer object, or NULL when not recognized. */
static const char *detect_pre(const json_t *pt) {
    if (!json_is_object(pt)) return NULL;
    /* A bare ByteLevel splitting with its own (GPT-2) regex. */
    if (is_byte_level(pt)) return byte_level_splits(pt) ? PRE_GPT2 : NULL;
    if (!is_type(pt, "Sequence")) return NULL;
    const json_t *list = json_object_get(pt, "pretokenizers");
    /* Sequence [Digits(individual_digits), ByteLevel(use_regex)] as SmolLM has. */
    if (json_array_size(list) == 2 && is_type(json_array_get(list, 0), "Digits") &&
        json_is_true(json_object_get(json_array_get(list, 0), "individual_digits")) &&
        byte_level_splits(json_array_get(list, 1)))
        return PRE_SMOLLM;
    /* Sequence [Split(regex), ByteLevel(use_regex false)] as Llama 3 and Qwen2 have. */
    const char *regex = NULL;
    bool byte_level = false;
    size_t i;
    const json_t *p;
    json_array_foreach(list, i, p) {
        if (is_type(p, "Split") && !regex) regex = json_str(json_object_get(p, "pattern"), "Regex");
        if (is_byte_level(p)) byte_level = true;
    }
    if (!regex || !byte_level) return NULL;
    for (size_t k = 0; k < N_PRE_REGEXES; k++)
        if (PRE_REGEXES[k].detect && strcmp(regex, PRE_REGEXES[k].regex) == 0) return PRE_REGEXES[k].pre;
    return NULL;
}

static const char *pre_regex(const char *pre) {
    for (size_t k = 0; k < N_PRE_REGEXES; k++)
        if (strcmp(pre, PRE_REGEXES[k].pre) == 0) return PRE_REGEXES[k].regex;
    return NULL;
}

/* Replace every "▁" (U+2581) by a space: llama.cpp pre-normalizes non-special added tokens so. */
static char *replace_spm_space(const char *s, size_t len, uint64_t *out_len) {
    char *d = malloc(len + 1);
    if (!d) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        if (len - i >= 3 && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
            d[k++] = ' ';
            i += 3;
        } else {
            d[k++] = s[i++];
        }
    }
    d[k] = '\0';
    *out_len = k;
    return d;
}

/* "<0xXX>" with two hex digits: a SentencePiece byte-fallback piece. */
static bool is_byte_token(const char *s, size_t len) {
    return len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' && isxdigit((unsigned char)s[3]) &&
           isxdigit((unsigned char)s[4]);
}

/* Highest id tolerated past the number of entries: a few holes (ids never assigned) become
 * "[PAD{i}]" tokens, but a huge id must not make us allocate a huge table. */
#define MAX_ID_SLACK 4096

/* The vocabulary of a tokenizer.json: model.vocab (text -> id) then added_tokens at their ids.
 * gpt2: added tokens are CONTROL when special (or looking special), else USER_DEFINED;
 * llama (byte fallback): as llama.cpp's LlamaHfVocab, <0xXX> is BYTE, special added tokens
 * CONTROL, other added tokens beyond the base vocabulary USER_DEFINED, every score -1000. */
static int json_read_vocab(const json_t *root, bool spm_style, vocab *v, const char *name, slmc_err *err) {
    const json_t *model = json_object_get(root, "model");
    const json_t *jvocab = json_object_get(model, "vocab");
    const json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(jvocab)) return slmc_fail(err, name, "model.vocab is missing or not an object");
    if (added && !json_is_array(added) && !json_is_null(added))
        return slmc_fail(err, name, "added_tokens is not an array");
    uint64_t entries = json_object_size(jvocab) + json_array_size(added);
    uint64_t limit = entries + MAX_ID_SLACK;

    const char *key;
    size_t key_len;
    json_t *val;
    json_object_keylen_foreach((json_t *)jvocab, key, key_len, val) {
        int64_t id;
        if (!json_int(val, &id) || id < 0 || (uint64_t)id >= limit)
            return slmc_fail(err, name, "model.vocab: token \"%.60s\" has id out of range (must be 0..%llu)",
                             key, (unsigned long long)limit - 1);
        if (vocab_resize(v, (uint64_t)id + 1) != 0) return slmc_fail(err, name, "out of memory");
        if (v->type[id] != 0)
            return slmc_fail(err, name, "model.vocab: id %lld is given to both \"%.60s\" and \"%.60s\"",
                             (long long)id, v->text[id], key);
        v->text[id] = key;
        v->len[id] = key_len;
        v->type[id] = TOKTYPE_NORMAL;
        v->score[id] = HF_FAST_SCORE;
        if (spm_style && is_byte_token(key, key_len)) v->type[id] = TOKTYPE_BYTE;
    }
    uint64_t base_n = v->n; /* ids below this belong to the base vocabulary */

    size_t i;
    const json_t *a;
    json_array_foreach(added, i, a) {
        const json_t *jc = json_object_get(a, "content");
        int64_t id;
        if (!json_is_string(jc) || !json_int(json_object_get(a, "id"), &id))
            return slmc_fail(err, name, "added_tokens[%zu] needs an integer id and a string content", i);
        const char *content = json_string_value(jc);
        size_t clen = json_string_length(jc);
        if (id < 0 || (uint64_t)id >= limit)
            return slmc_fail(err, name, "added_tokens[%zu] \"%.60s\": id %lld out of range (must be 0..%llu)",
                             i, content, (long long)id, (unsigned long long)limit - 1);
        if (vocab_resize(v, (uint64_t)id + 1) != 0) return slmc_fail(err, name, "out of memory");
        if (v->type[id] != 0 && (v->len[id] != clen || memcmp(v->text[id], content, clen) != 0))
            return slmc_fail(err, name, "added_tokens[%zu]: id %lld is given to both \"%.60s\" and \"%.60s\"",
                             i, (long long)id, v->text[id], content);
        bool special = json_flag(a, "special");
        if (v->type[id] == 0) { /* not in model.vocab */
            v->text[id] = content;
            v->len[id] = clen;
            v->score[id] = HF_FAST_SCORE;
        }
        if (spm_style) {
            if (special) v->type[id] = TOKTYPE_CONTROL;
            else if ((uint64_t)id >= base_n) v->type[id] = TOKTYPE_USER_DEFINED;
        } else if (special || looks_special(content, clen)) {
            v->type[id] = TOKTYPE_CONTROL;
        } else {
            uint64_t nl;
            char *s = replace_spm_space(content, clen, &nl);
            if (!s) return slmc_fail(err, name, "out of memory");
            vocab_set_owned(v, (uint64_t)id, s, nl);
            v->type[id] = TOKTYPE_USER_DEFINED;
        }
    }
    if (v->n == 0) return slmc_fail(err, name, "model.vocab is empty");
    if (vocab_fill_holes(v) != 0) return slmc_fail(err, name, "out of memory");
    return 0;
}

/* model.merges as "a b" strings. Entries are strings "a b" or (transformers >= 4.45) pairs
 * ["a", "b"]; a space inside a pair's part is written as U+0120, as llama.cpp does. */
static int json_store_merges(meta *kv, const json_t *merges, const char *name, slmc_err *err) {
    size_t n = json_array_size(merges);
    const char **strs = calloc(n ? n : 1, sizeof *strs);
    uint64_t *lens = calloc(n ? n : 1, sizeof *lens);
    char **owned = calloc(n ? n : 1, sizeof *owned);
    int rc = -1;
    if (!strs || !lens || !owned) {
        slmc_fail(err, name, "out of memory for %zu merges", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(merges, i);
        if (json_is_string(m)) {
            strs[i] = json_string_value(m);
            lens[i] = json_string_length(m);
            continue;
        }
        const json_t *l = json_array_get(m, 0), *r = json_array_get(m, 1);
        if (!json_is_array(m) || json_array_size(m) != 2 || !json_is_string(l) || !json_is_string(r)) {
            slmc_fail(err, name, "model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", i);
            goto done;
        }
        size_t ll = json_string_length(l), rl = json_string_length(r);
        char *s = malloc(2 * (ll + rl) + 2); /* each space may grow to 2 bytes */
        if (!s) {
            slmc_fail(err, name, "out of memory");
            goto done;
        }
        size_t k = 0;
        for (int part = 0; part < 2; part++) {
            const char *p = json_string_value(part ? r : l);
            size_t pl = part ? rl : ll;
            if (part) s[k++] = ' ';
            for (size_t j = 0; j < pl; j++) {
                if (p[j] == ' ') {
                    s[k++] = (char)0xc4;
                    s[k++] = (char)0xa0;
                } else {
                    s[k++] = p[j];
                }
            }
        }
        owned[i] = s;
        strs[i] = s;
        lens[i] = k;
    }
    if (meta_set_arr_str(kv, KEY_MERGES, n, strs, lens) != 0) {
        slmc_fail(err, name, "out of memory storing %zu merges", n);
        goto done;
    }
    rc = 0;
done:
    if (owned)
        for (size_t i = 0; i < n; i++) free(owned[i]);
    free(owned);
    free(strs);
    free(lens);
    return rc;
}

int hf_tokenizer_parse_json(meta *kv, const char *json, size_t len, const char *name, slmc_err *err) {
    json_t *root;
    if (json_parse_object(json, len, name, &root, err) != 0) return -1;
    vocab v = {0};
    int rc = -1;
    const json_t *model = json_object_get(root, "model");
    const char *mtype = json_str(model, "type");
    if (!json_is_object(model) || !mtype) {
        slmc_fail(err, name, "no model.type (not a tokenizer.json?)");
        goto done;
    }
    if (strcmp(mtype, "BPE") != 0) {
        slmc_fail(err, name, "tokenizer model type \"%s\" is not supported (only BPE)", mtype);
        goto done;
    }
    if (json_flag(model, "byte_fallback")) {
        /* Llama-2 style "fast" tokenizer: a SentencePiece vocabulary ("llama"). */
        if (json_read_vocab(root, true, &v, name, err) != 0) goto done;
        meta_remove(kv, KEY_MERGES);
        if (meta_set_str(kv, KEY_MODEL, "llama") != 0 || meta_set_str(kv, KEY_PRE, "default") != 0) {
            slmc_fail(err, name, "out of memory");
            goto done;
        }
        if (vocab_store(kv, &v, true, name, err) != 0) goto done;
        rc = 0;
        goto done;
    }
    /* Byte-level BPE ("gpt2"): the pre-tokenizer decides tokenizer.ggml.pre. */
    const char *pre = detect_pre(json_object_get(root, "pre_tokenizer"));
    if (!pre) {
        slmc_fail(err, name, "BPE pre-tokenizer not recognized (known: the llama-bpe, qwen2, gpt-4o, gpt-2 and smollm pre-tokenizers)");
        goto done;
    }
    const json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges)) {
        slmc_fail(err, name, "model.merges is missing or not an array");
        goto done;
    }
    if (json_read_vocab(root, false, &v, name, err) != 0) goto done;
    /* Built aside and copied in at the end, so a bad merge leaves kv untouched. */
    meta tmp;
    meta_init(&tmp);
    if (meta_set_str(&tmp, KEY_MODEL, "gpt2") != 0 || meta_set_str(&tmp, KEY_PRE, pre) != 0)
        slmc_fail(err, name, "out of memory");
    else if (vocab_store(&tmp, &v, false, name, err) == 0 && json_store_merges(&tmp, merges, name, err) == 0)
        rc = 0;
    for (size_t i = 0; rc == 0 && i < tmp.n; i++)
        if (meta_set_kv(kv, &tmp.kv[i]) != 0) rc = slmc_fail(err, name, "out of memory");
    if (rc == 0) meta_remove(kv, KEY_SCORES);
    meta_free(&tmp);
done:
    vocab_free(&v);
    json_decref(root);
    return rc;
}

int hf_tokenizer_pad_vocab(meta *kv, int64_t n_vocab, slmc_err *err) {
    uint64_t n = 0;
    if (!meta_get_arr(kv, KEY_TOKENS, GGUF_STR, &n) || n_vocab <= 0 || (uint64_t)n_vocab <= n) return 0;
    vocab v;
    bool has_scores;
    if (vocab_from_meta(&v, kv, &has_scores, NULL, err) != 0) return -1;
    int rc = -1;
    if (vocab_resize(&v, (uint64_t)n_vocab) != 0 || vocab_fill_holes(&v) != 0)
        slmc_fail(err, NULL, "out of memory padding the vocabulary to %lld tokens", (long long)n_vocab);
    else
        rc = vocab_store(kv, &v, has_scores, NULL, err);
    vocab_free(&v);
    return rc;
}

/* ==== 5. tokenizer_config.json and config.json ============================================ */

/* Set `key` to the id of token text `entry` ("<s>" or {"content": "<s>", ...}) when found. */
static int set_special_from_text(meta *kv, const char *key, const json_t *entry) {
    if (json_is_object(entry)) entry = json_object_get(entry, "content");
    if (!json_is_string(entry)) return 0;
    int64_t id = find_token(kv, json_string_value(entry), json_string_length(entry));
    if (id < 0) return 0;
    return meta_set_u32(kv, key, (uint32_t)id);
}

/* How the added tokens of a SentencePiece vocabulary are typed:
 *   ADDED_SPM  (_create_vocab_sentencepiece): CONTROL when special or looking special, else
 *              USER_DEFINED with "▁" made a space;
 *   ADDED_PHI3 (Phi3MiniModel.set_vocab): CONTROL when special, else USER_DEFINED, text as is;
 *   ADDED_NONE: added_tokens_decoder is not applied (a byte-fallback tokenizer.json, as
 *              llama.cpp's LlamaHfVocab, or a gpt2 vocabulary). */
typedef enum added_rule { ADDED_NONE, ADDED_SPM, ADDED_PHI3 } added_rule;

/* Give token id the text c (cl bytes), score -1000 and the type rule and special choose. */
static int set_added_token(vocab *v, uint64_t id, const char *c, size_t cl, bool special, added_rule rule) {
    uint64_t nl = cl;
    char *s;
    if (special || (rule == ADDED_SPM && looks_special(c, cl))) {
        v->type[id] = TOKTYPE_CONTROL;
    } else {
        v->type[id] = TOKTYPE_USER_DEFINED;
        if (rule == ADDED_SPM) {
            s = replace_spm_space(c, cl, &nl);
            if (!s) return -1;
            vocab_set_owned(v, id, s, nl);
            v->score[id] = HF_FAST_SCORE;
            return 0;
        }
    }
    s = malloc(cl + 1);
    if (!s) return -1;
    memcpy(s, c, cl);
    s[cl] = '\0';
    vocab_set_owned(v, id, s, nl);
    v->score[id] = HF_FAST_SCORE;
    return 0;
}

/* added_tokens_decoder {"id": {"content", "special"}} of a SentencePiece vocabulary: each listed
 * id takes that text and score -1000, typed by rule. Ids beyond the vocabulary are skipped. */
static int apply_added_tokens_decoder(meta *kv, const json_t *dec, added_rule rule, const char *name, slmc_err *err) {
    if (rule == ADDED_NONE || !json_is_object(dec) || json_object_size(dec) == 0) return 0;
    vocab v;
    bool has_scores;
    if (vocab_from_meta(&v, kv, &has_scores, name, err) != 0) return -1;
    int rc = -1;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)dec, key, val) {
        char *end;
        unsigned long long id = strtoull(key, &end, 10);
        const json_t *jc = json_object_get(val, "content");
        if (*key < '0' || *key > '9' || *end || !json_is_string(jc)) {
            slmc_fail(err, name, "added_tokens_decoder: entry \"%.40s\" needs a numeric id and a content", key);
            goto done;
        }
        if (id >= v.n) continue; /* beyond the model's vocabulary: llama.cpp skips it too */
        if (set_added_token(&v, id, json_string_value(jc), json_string_length(jc), json_flag(val, "special"), rule) != 0) {
            slmc_fail(err, name, "out of memory");
            goto done;
        }
    }
    rc = vocab_store(kv, &v, has_scores, name, err);
done:
    vocab_free(&v);
    return rc;
}

/* chat_template: a string, or a list of {"name", "template"} (tokenizer.chat_template for
 * "default", tokenizer.chat_template.NAME for the others). */
static int set_chat_template(meta *kv, const json_t *ct, const char *name, slmc_err *err) {
    if (json_is_string(ct)) {
        if (meta_set_strn(kv, KEY_CHAT_TEMPLATE, json_string_value(ct), json_string_length(ct)) != 0)
            return slmc_fail(err, name, "out of memory");
        return 0;
    }
    size_t i;
    const json_t *t;
    json_array_foreach(ct, i, t) {
        const char *tn = json_str(t, "name");
        const json_t *body = json_object_get(t, "template");
        if (!tn || !json_is_string(body)) continue;
        char key[256];
        if (strcmp(tn, "default") == 0) snprintf(key, sizeof key, "%s", KEY_CHAT_TEMPLATE);
        else snprintf(key, sizeof key, "%s.%s", KEY_CHAT_TEMPLATE, tn);
        if (meta_set_strn(kv, key, json_string_value(body), json_string_length(body)) != 0)
            return slmc_fail(err, name, "out of memory");
    }
    return 0;
}

static int parse_config_json(meta *kv, const char *json, size_t len, const char *name, added_rule rule, slmc_err *err) {
    json_t *root;
    if (json_parse_object(json, len, name, &root, err) != 0) return -1;
    int rc = -1;
    /* Added tokens first, so the special names below resolve against their final texts. */
    if (apply_added_tokens_decoder(kv, json_object_get(root, "added_tokens_decoder"), rule, name, err) != 0)
        goto done;
    for (size_t i = 0; i < N_SPECIALS; i++) {
        char field[32];
        snprintf(field, sizeof field, "%s_token", SPECIALS[i].name);
        if (set_special_from_text(kv, SPECIALS[i].key, json_object_get(root, field)) != 0) {
            slmc_fail(err, name, "out of memory");
            goto done;
        }
    }
    static const struct {
        const char *field, *key;
    } flags[] = {{"add_bos_token", KEY_ADD_BOS}, {"add_eos_token", KEY_ADD_EOS}, {"add_prefix_space", KEY_ADD_PREFIX}};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        const json_t *f = json_object_get(root, flags[i].field);
        if (json_is_boolean(f) && meta_set_bool(kv, flags[i].key, json_is_true(f)) != 0) {
            slmc_fail(err, name, "out of memory");
            goto done;
        }
    }
    if (set_chat_template(kv, json_object_get(root, "chat_template"), name, err) != 0) goto done;
    rc = 0;
done:
    json_decref(root);
    return rc;
}

int hf_tokenizer_parse_config_json(meta *kv, const char *json, size_t len, const char *name, slmc_err *err) {
    const char *model = meta_get_str(kv, KEY_MODEL);
    added_rule rule = model && strcmp(model, "llama") == 0 ? ADDED_SPM : ADDED_NONE;
    return parse_config_json(kv, json, len, name, rule, err);
}

int hf_tokenizer_parse_model_config(meta *kv, const char *json, size_t len, const char *name, slmc_err *err) {
    json_t *root;
    if (json_parse_object(json, len, name, &root, err) != 0) return -1;
    uint64_t n_tokens = 0;
    meta_get_arr(kv, KEY_TOKENS, GGUF_STR, &n_tokens);
    const json_t *text_config = json_object_get(root, "text_config");
    int rc = 0;
    for (size_t i = 0; i < N_SPECIALS && rc == 0; i++) {
        if (meta_find(kv, SPECIALS[i].key)) continue; /* tokenizer_config.json named it */
        char field[32];
        snprintf(field, sizeof field, "%s_token_id", SPECIALS[i].name);
        const json_t *jid = json_object_get(root, field);
        if (!jid) jid = json_object_get(text_config, field);
        int64_t id;
        /* Lists (Llama 3.1's several eos ids) and ids outside the vocabulary are skipped. */
        if (!json_int(jid, &id) || id < 0 || (uint64_t)id >= n_tokens) continue;
        if (meta_set_u32(kv, SPECIALS[i].key, (uint32_t)id) != 0) rc = slmc_fail(err, name, "out of memory");
    }
    json_decref(root);
    return rc;
}

/* ==== 6. a model folder =================================================================== */

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Read dir/file (when it exists) and hand it to parse. *found tells whether it existed. */
typedef int (*text_parser)(meta *kv, const char *text, size_t len, const char *name, slmc_err *err);

static int load_one(meta *kv, const char *dir, const char *file, text_parser parse, bool *found, slmc_err *err) {
    char *path = path_join(dir, file);
    if (!path) return slmc_fail(err, dir, "out of memory");
    *found = file_exists(path);
    int rc = 0;
    if (*found) {
        char *text = NULL;
        size_t len = 0;
        rc = read_small_file(path, HF_TOKENIZER_MAX_FILE, &text, &len, err);
        if (rc == 0) rc = parse(kv, text, len, path, err);
        free(text);
    }
    free(path);
    return rc;
}

/* dir/file parsed as a JSON object into *root (NULL when the file does not exist). */
static int load_json(const char *dir, const char *file, json_t **root, slmc_err *err) {
    *root = NULL;
    char *path = path_join(dir, file);
    if (!path) return slmc_fail(err, dir, "out of memory");
    int rc = 0;
    if (file_exists(path)) {
        char *text = NULL;
        size_t len = 0;
        rc = read_small_file(path, HF_TOKENIZER_MAX_FILE, &text, &len, err);
        if (rc == 0) rc = json_parse_object(text, len, path, root, err);
        free(text);
    }
    free(path);
    return rc;
}

static int parse_spm_text(meta *kv, const char *text, size_t len, const char *name, slmc_err *err) {
    return hf_tokenizer_parse_spm(kv, (const uint8_t *)text, len, name, err);
}

static int parse_jinja(meta *kv, const char *text, size_t len, const char *name, slmc_err *err) {
    if (meta_find(kv, KEY_CHAT_TEMPLATE)) return 0; /* tokenizer_config.json's wins */
    if (meta_set_strn(kv, KEY_CHAT_TEMPLATE, text, len) != 0) return slmc_fail(err, name, "out of memory");
    return 0;
}

/* The model families whose tokenizer llama.cpp's converter treats in its own way (the class that
 * converts them: LlamaModel, Qwen2Model, GemmaModel, Gemma2Model, Gemma3Model, Phi2Model,
 * Phi3MiniModel, StableLMModel). FAM_OTHER: any other or unknown family, read generically. */
typedef enum tok_family {
    FAM_OTHER,
    FAM_LLAMA,
    FAM_QWEN,
    FAM_GEMMA,
    FAM_GEMMA2,
    FAM_GEMMA3,
    FAM_PHI2,
    FAM_PHI3,
    FAM_STABLELM,
} tok_family;

static const struct {
    const char *name; /* a config.json "architectures" class, or a GGUF general.architecture */
    tok_family fam;
} FAMILIES[] = {
    {"LlamaForCausalLM", FAM_LLAMA},     {"LLaMAForCausalLM", FAM_LLAMA},     {"MistralForCausalLM", FAM_LLAMA},
    {"MixtralForCausalLM", FAM_LLAMA},   {"Qwen2ForCausalLM", FAM_QWEN},      {"Qwen3ForCausalLM", FAM_QWEN},
    {"Qwen2MoeForCausalLM", FAM_QWEN},   {"Qwen3MoeForCausalLM", FAM_QWEN},   {"GemmaForCausalLM", FAM_GEMMA},
    {"Gemma2ForCausalLM", FAM_GEMMA2},   {"Gemma3ForCausalLM", FAM_GEMMA3},   {"Gemma3ForConditionalGeneration", FAM_GEMMA3},
    {"PhiForCausalLM", FAM_PHI2},        {"Phi3ForCausalLM", FAM_PHI3},       {"StableLmForCausalLM", FAM_STABLELM},
    {"StableLMEpochForCausalLM", FAM_STABLELM},
    {"llama", FAM_LLAMA},                {"qwen2", FAM_QWEN},                 {"qwen3", FAM_QWEN},
    {"qwen2moe", FAM_QWEN},              {"qwen3moe", FAM_QWEN},              {"gemma", FAM_GEMMA},
    {"gemma2", FAM_GEMMA2},              {"gemma3", FAM_GEMMA3},              {"phi2", FAM_PHI2},
    {"phi3", FAM_PHI3},                  {"stablelm", FAM_STABLELM},
};

static tok_family family_by_name(const char *name) {
    for (size_t i = 0; name && i < sizeof FAMILIES / sizeof FAMILIES[0]; i++)
        if (strcmp(name, FAMILIES[i].name) == 0) return FAMILIES[i].fam;
    return FAM_OTHER;
}

/* What the folder's configs say about the tokenizer's family. */
typedef struct family_info {
    tok_family fam;
    int64_t config_vocab; /* config.json "vocab_size" (llama.cpp's hparams), -1 when absent */
    bool gpt2_class;      /* tokenizer_config.json "tokenizer_class" is GPT2Tokenizer (Phi-4) */
} family_info;

/* The family from config.json's first "architectures" class (what llama.cpp's converter goes
 * by), else from general.architecture when the caller already set it. */
static int read_family(const meta *kv, const char *dir, family_info *f, slmc_err *err) {
    f->fam = FAM_OTHER;
    f->config_vocab = -1;
    f->gpt2_class = false;
    json_t *cfg, *tcfg;
    if (load_json(dir, "config.json", &cfg, err) != 0) return -1;
    if (cfg) {
        f->fam = family_by_name(json_string_value(json_array_get(json_object_get(cfg, "architectures"), 0)));
        int64_t n;
        if (json_int(json_object_get(cfg, "vocab_size"), &n)) f->config_vocab = n;
        json_decref(cfg);
    }
    if (f->fam == FAM_OTHER) f->fam = family_by_name(meta_get_str(kv, "general.architecture"));
    if (f->fam != FAM_PHI3) return 0;
    if (load_json(dir, "tokenizer_config.json", &tcfg, err) != 0) return -1;
    const char *cls = json_str(tcfg, "tokenizer_class");
    f->gpt2_class = cls && strcmp(cls, "GPT2Tokenizer") == 0;
    json_decref(tcfg);
    return 0;
}

/* added_tokens.json {"text": id} of a SentencePiece vocabulary (_create_vocab_sentencepiece,
 * Phi3MiniModel): each id below the vocabulary size takes that text, score -1000, USER_DEFINED. */
static int apply_added_tokens_json(meta *kv, const char *dir, slmc_err *err) {
    json_t *root;
    if (load_json(dir, "added_tokens.json", &root, err) != 0) return -1;
    if (!root) return 0;
    vocab v;
    bool has_scores;
    int rc = -1;
    if (vocab_from_meta(&v, kv, &has_scores, dir, err) != 0) {
        json_decref(root);
        return -1;
    }
    const char *key;
    size_t key_len;
    json_t *val;
    json_object_keylen_foreach(root, key, key_len, val) {
        int64_t id;
        if (!json_int(val, &id) || id < 0) {
            slmc_fail(err, dir, "added_tokens.json: \"%.60s\" needs a non-negative integer id", key);
            goto done;
        }
        if ((uint64_t)id >= v.n) continue; /* out of range: llama.cpp ignores it */
        if (set_added_token(&v, (uint64_t)id, key, key_len, false, ADDED_PHI3) != 0) {
            slmc_fail(err, dir, "out of memory");
            goto done;
        }
    }
    rc = vocab_store(kv, &v, has_scores, dir, err);
done:
    vocab_free(&v);
    json_decref(root);
    return rc;
}

/* Phi3MiniModel also types the added_tokens of tokenizer.json: CONTROL when special, else
 * USER_DEFINED, score -1000, text as is. */
static int apply_json_added_tokens(meta *kv, const char *dir, slmc_err *err) {
    json_t *root;
    if (load_json(dir, "tokenizer.json", &root, err) != 0) return -1;
    if (!root) return 0;
    const json_t *added = json_object_get(root, "added_tokens");
    if (json_array_size(added) == 0) {
        json_decref(root);
        return 0;
    }
    vocab v;
    bool has_scores;
    int rc = -1;
    if (vocab_from_meta(&v, kv, &has_scores, dir, err) != 0) {
        json_decref(root);
        return -1;
    }
    size_t i;
    const json_t *a;
    json_array_foreach(added, i, a) {
        const json_t *jc = json_object_get(a, "content");
        int64_t id;
        if (!json_is_string(jc) || !json_int(json_object_get(a, "id"), &id) || id < 0) {
            slmc_fail(err, dir, "tokenizer.json: added_tokens[%zu] needs an integer id and a string content", i);
            goto done;
        }
        if ((uint64_t)id >= v.n) continue;
        if (set_added_token(&v, (uint64_t)id, json_string_value(jc), json_string_length(jc), json_flag(a, "special"),
                            ADDED_PHI3) != 0) {
            slmc_fail(err, dir, "out of memory");
            goto done;
        }
    }
    rc = vocab_store(kv, &v, has_scores, dir, err);
done:
    vocab_free(&v);
    json_decref(root);
    return rc;
}

/* Set a u32 special id when it names a token. */
static int set_id_in_range(meta *kv, const char *key, uint32_t id) {
    uint64_t n = 0;
    meta_get_arr(kv, KEY_TOKENS, GGUF_STR, &n);
    return id < n ? meta_set_u32(kv, key, id) : 0;
}

/* What llama.cpp's converter class of the family writes on top of the generic reading. */
static int apply_family(meta *kv, const family_info *f, slmc_err *err) {
    const char *model = meta_get_str(kv, KEY_MODEL), *pre = meta_get_str(kv, KEY_PRE);
    bool gpt2 = model && strcmp(model, "gpt2") == 0;
    int rc = 0;
    /* Same regexes, the name llama.cpp's hash gives that family's vocabulary. */
    if (gpt2 && pre && f->fam == FAM_PHI2 && strcmp(pre, PRE_GPT2) == 0) rc |= meta_set_str(kv, KEY_PRE, PRE_PHI2);
    if (gpt2 && pre && f->fam == FAM_STABLELM && strcmp(pre, "qwen2") == 0) rc |= meta_set_str(kv, KEY_PRE, "stablelm2");
    switch (f->fam) {
    case FAM_LLAMA: /* LlamaModel.set_vocab */
        if (f->config_vocab == 49152) rc |= meta_set_bool(kv, KEY_ADD_BOS, false); /* SmolLM, small Granite */
        if (f->config_vocab == 32016) rc |= set_id_in_range(kv, "tokenizer.ggml.eot_token_id", 32010); /* CodeLlama */
        break;
    case FAM_GEMMA: /* GemmaModel.set_vocab: <end_of_turn>; its FIM ids have no GGUF key */
        rc |= set_id_in_range(kv, "tokenizer.ggml.eot_token_id", 107);
        /* fall through */
    case FAM_GEMMA2:
    case FAM_GEMMA3:
        if (!gpt2) rc |= meta_set_bool(kv, KEY_ADD_PREFIX, false);
        break;
    case FAM_PHI2: /* Phi2Model.set_gguf_parameters */
        rc |= meta_set_bool(kv, KEY_ADD_BOS, false);
        /* fall through */
    case FAM_QWEN:
    case FAM_PHI3:
    case FAM_STABLELM:
        meta_remove(kv, KEY_ADD_PREFIX); /* only LlamaModel copies add_prefix_space */
        break;
    case FAM_OTHER:
        break;
    }
    if (rc != 0) return slmc_fail(err, NULL, "out of memory");
    return 0;
}

int hf_tokenizer_load(meta *kv, const char *dir, int64_t n_vocab, slmc_err *err) {
    family_info fam;
    if (read_family(kv, dir, &fam, err) != 0) return -1;

    /* tokenizer.model first, as llama.cpp's LlamaModel.set_vocab does: with a SentencePiece
     * model present its real piece scores are used (a tokenizer.json only gives -1000). Some
     * repositories keep a non-SentencePiece "tokenizer.model" (tiktoken text) beside their
     * tokenizer.json: when it does not parse and tokenizer.json exists, tokenizer.json is used.
     * Phi-4 (Phi3ForCausalLM with a GPT2Tokenizer) goes straight to tokenizer.json. */
    bool have_spm = false, have_json;
    char *json_path = path_join(dir, "tokenizer.json");
    if (!json_path) return slmc_fail(err, dir, "out of memory");
    bool json_exists = file_exists(json_path);
    free(json_path);

    slmc_err spm_err = {{0}};
    int rc = 0;
    if (!(fam.gpt2_class && json_exists)) rc = load_one(kv, dir, "tokenizer.model", parse_spm_text, &have_spm, &spm_err);
    if (have_spm && rc != 0 && !json_exists) {
        if (err) *err = spm_err;
        return -1;
    }
    bool from_spm = have_spm && rc == 0;
    if (!from_spm) {
        if (load_one(kv, dir, "tokenizer.json", hf_tokenizer_parse_json, &have_json, err) != 0) return -1;
        if (!have_json) return 0; /* no tokenizer files: nothing to set */
    }
    if (hf_tokenizer_pad_vocab(kv, n_vocab, err) != 0) return slmc_fail_prefix(err, dir);
    if (from_spm && apply_added_tokens_json(kv, dir, err) != 0) return -1;

    /* tokenizer_config.json's added_tokens_decoder applies to a tokenizer.model vocabulary
     * (a byte-fallback tokenizer.json is read as llama.cpp's LlamaHfVocab, which ignores it). */
    added_rule rule = !from_spm ? ADDED_NONE : fam.fam == FAM_PHI3 ? ADDED_PHI3 : ADDED_SPM;
    char *cfg_path = path_join(dir, "tokenizer_config.json");
    if (!cfg_path) return slmc_fail(err, dir, "out of memory");
    rc = 0;
    if (file_exists(cfg_path)) {
        char *text = NULL;
        size_t len = 0;
        rc = read_small_file(cfg_path, HF_TOKENIZER_MAX_FILE, &text, &len, err);
        if (rc == 0) rc = parse_config_json(kv, text, len, cfg_path, rule, err);
        free(text);
    }
    free(cfg_path);
    if (rc != 0) return -1;
    if (from_spm && fam.fam == FAM_PHI3 && apply_json_added_tokens(kv, dir, err) != 0) return -1;

    bool found;
    if (load_one(kv, dir, "chat_template.jinja", parse_jinja, &found, err) != 0 ||
        load_one(kv, dir, "config.json", hf_tokenizer_parse_model_config, &found, err) != 0)
        return -1;
    if (apply_family(kv, &fam, err) != 0) return slmc_fail_prefix(err, dir);
    return 0;
}

/* ==== 7. writing ========================================================================== */

/* A growable byte buffer. */
typedef struct bytes {
    uint8_t *p;  /* [len] */
    size_t len;  /* bytes used */
    size_t cap;  /* bytes allocated */
    bool oom;    /* an append failed: the content is incomplete */
} bytes;

static void b_put(bytes *b, const void *data, size_t n) {
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void b_varint(bytes *b, uint64_t v) {
    uint8_t tmp[10];
    size_t n = 0;
    do {
        tmp[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) tmp[n] |= 0x80;
        n++;
    } while (v);
    b_put(b, tmp, n);
}

static void b_tag(bytes *b, uint32_t field, int wire) { b_varint(b, (uint64_t)field << 3 | (uint64_t)wire); }

static void b_len_field(bytes *b, uint32_t field, const void *data, size_t n) {
    b_tag(b, field, 2);
    b_varint(b, n);
    b_put(b, data, n);
}

/* An int32 protobuf field: negative values are sign-extended to 64 bits (10 bytes). */
static void b_int32_field(bytes *b, uint32_t field, int32_t v) {
    b_tag(b, field, 0);
    b_varint(b, (uint64_t)(int64_t)v);
}

/* A special token id of kv that names a token, or -1. */
static int64_t special_id(const meta *kv, const char *key, uint64_t n_tokens) {
    uint64_t id;
    if (!meta_get_u64(kv, key, &id) || id >= n_tokens) return -1;
    return (int64_t)id;
}

int hf_tokenizer_build_spm(const meta *kv, uint8_t **out, size_t *out_len, slmc_err *err) {
    *out = NULL;
    *out_len = 0;
    vocab v;
    bool has_scores;
    if (vocab_from_meta(&v, kv, &has_scores, NULL, err) != 0) return -1;
    bytes b = {0}, sub = {0};
    bool any_byte = false;
    int64_t first_unk = -1;
    /* ModelProto.pieces (1): SentencePiece {1 piece, 2 score, 3 type (NORMAL is the default)} */
    for (uint64_t i = 0; i < v.n; i++) {
        if (v.type[i] < TOKTYPE_NORMAL || v.type[i] > TOKTYPE_BYTE) {
            vocab_free(&v);
            free(b.p);
            return slmc_fail(err, NULL, "token %llu has type %d, which SentencePiece cannot store",
                             (unsigned long long)i, (int)v.type[i]);
        }
        any_byte |= v.type[i] == TOKTYPE_BYTE;
        if (v.type[i] == TOKTYPE_UNKNOWN && first_unk < 0) first_unk = (int64_t)i;
        sub.len = 0;
        uint32_t bits;
        memcpy(&bits, &v.score[i], 4);
        uint8_t le[4] = {(uint8_t)bits, (uint8_t)(bits >> 8), (uint8_t)(bits >> 16), (uint8_t)(bits >> 24)};
        b_len_field(&sub, 1, v.text[i], v.len[i]);
        b_tag(&sub, 2, 5);
        b_put(&sub, le, 4);
        if (v.type[i] != TOKTYPE_NORMAL) {
            b_tag(&sub, 3, 0);
            b_varint(&sub, (uint64_t)v.type[i]);
        }
        if (sub.oom) break;
        b_len_field(&b, 1, sub.p, sub.len);
    }
    /* ModelProto.trainer_spec (2): BPE, the special ids and their pieces (SentencePiece looks
     * the special tokens up by piece text, default "<unk>", "<s>", "</s>", "<pad>"). */
    static const struct {
        const char *key;
        uint32_t id_field, piece_field;
    } ids[] = {
        {"tokenizer.ggml.unknown_token_id", 40, 45},
        {"tokenizer.ggml.bos_token_id", 41, 46},
        {"tokenizer.ggml.eos_token_id", 42, 47},
        {"tokenizer.ggml.padding_token_id", 43, 48},
    };
    sub.len = 0;
    b_tag(&sub, 3, 0);
    b_varint(&sub, 2); /* model_type BPE */
    b_tag(&sub, 4, 0);
    b_varint(&sub, v.n); /* vocab_size */
    if (any_byte) {
        b_tag(&sub, 35, 0);
        b_varint(&sub, 1); /* byte_fallback */
    }
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
        int64_t id = special_id(kv, ids[k].key, v.n);
        if (k == 0 && id < 0) id = first_unk >= 0 ? first_unk : 0;
        b_int32_field(&sub, ids[k].id_field, (int32_t)id);
        if (id >= 0) b_len_field(&sub, ids[k].piece_field, v.text[id], v.len[id]);
    }
    b_len_field(&b, 2, sub.p, sub.len);
    /* ModelProto.normalizer_spec (3): no normalization, "▁" for spaces, a dummy prefix unless
     * tokenizer.ggml.add_space_prefix says otherwise (Llama-2's settings). */
    bool add_prefix = true;
    meta_get_bool(kv, KEY_ADD_PREFIX, &add_prefix);
    sub.len = 0;
    b_len_field(&sub, 1, "identity", 8);
    b_tag(&sub, 3, 0);
    b_varint(&sub, add_prefix ? 1 : 0); /* add_dummy_prefix */
    b_tag(&sub, 4, 0);
    b_varint(&sub, 0); /* remove_extra_whitespaces */
    b_tag(&sub, 5, 0);
    b_varint(&sub, 1); /* escape_whitespaces */
    b_len_field(&b, 3, sub.p, sub.len);

    bool oom = b.oom || sub.oom;
    free(sub.p);
    vocab_free(&v);
    if (oom) {
        free(b.p);
        return slmc_fail(err, NULL, "out of memory building tokenizer.model");
    }
    *out = b.p;
    *out_len = b.len;
    return 0;
}

/* Write data to dir/file atomically. */
static int write_file(const char *dir, const char *file, const void *data, size_t len, slmc_err *err) {
    char *path = path_join(dir, file);
    if (!path) return slmc_fail(err, dir, "out of memory");
    atomic_file af;
    int rc = af_open(&af, path, err);
    if (rc == 0) rc = af_write(&af, data, len, err);
    if (rc == 0) rc = af_commit(&af, err);
    if (rc != 0) af_abort(&af);
    free(path);
    return rc;
}

/* Dump a JSON value (indent 2, UTF-8 as is, key order kept) to dir/file. Steals root. */
static int write_json(const char *dir, const char *file, json_t *root, slmc_err *err) {
    if (!root) return slmc_fail(err, dir, "out of memory building %s", file);
    char *text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    if (!text) return slmc_fail(err, dir, "cannot serialize %s (out of memory or invalid UTF-8)", file);
    size_t len = strlen(text);
    int rc = write_file(dir, file, text, len, err);
    free(text);
    return rc;
}

/* obj[key] = value, stealing value; false when anything is NULL or fails. */
static bool jset(json_t *obj, const char *key, json_t *value) {
    return obj && value && json_object_set_new(obj, key, value) == 0;
}

/* A token's text as a JSON string (NULL when not valid UTF-8). */
static json_t *jtok(const vocab *v, uint64_t i) { return json_stringn(v->text[i], v->len[i]); }

/* The tokenizer.json of a "gpt2" vocabulary: NORMAL (and other non-added) tokens in
 * model.vocab, CONTROL / USER_DEFINED tokens in added_tokens (special = CONTROL), llama.cpp's
 * "[PAD{i}]" fill left out (the reader recreates it). */
static json_t *build_bpe_json(const meta *kv, const vocab *v, const char *pre, slmc_err *err) {
    const char *regex = pre_regex(pre);
    bool bare = strcmp(pre, PRE_GPT2) == 0 || strcmp(pre, PRE_PHI2) == 0, digits = strcmp(pre, PRE_SMOLLM) == 0;
    if (!regex && !bare && !digits) {
        slmc_fail(err, NULL, "tokenizer.ggml.pre \"%s\" cannot be written as a tokenizer.json pre-tokenizer", pre);
        return NULL;
    }
    json_t *root = json_object(), *jvocab = json_object(), *added = json_array(), *jmerges = json_array();
    bool ok = root && jvocab && added && jmerges;
    bool reported = false; /* err already says what is wrong */
    char pad[32];
    for (uint64_t i = 0; ok && i < v->n; i++) {
        int32_t t = v->type[i];
        int k = snprintf(pad, sizeof pad, "[PAD%llu]", (unsigned long long)i);
        if (t == TOKTYPE_UNUSED && v->len[i] == (uint64_t)k && memcmp(v->text[i], pad, (size_t)k) == 0) continue;
        if (!utf8_valid(v->text[i], (size_t)v->len[i])) {
            slmc_fail(err, NULL, "token %llu is not valid UTF-8, tokenizer.json cannot hold it", (unsigned long long)i);
            json_decref(root);
            json_decref(jvocab);
            json_decref(added);
            json_decref(jmerges);
            return NULL;
        }
        if (t == TOKTYPE_CONTROL || t == TOKTYPE_USER_DEFINED) {
            json_t *a = json_object();
            ok = jset(a, "id", json_integer((json_int_t)i)) && jset(a, "content", jtok(v, i)) &&
                 jset(a, "single_word", json_false()) && jset(a, "lstrip", json_false()) &&
                 jset(a, "rstrip", json_false()) && jset(a, "normalized", json_boolean(t != TOKTYPE_CONTROL)) &&
                 jset(a, "special", json_boolean(t == TOKTYPE_CONTROL)) && json_array_append_new(added, a) == 0;
            continue;
        }
        if (json_object_getn(jvocab, v->text[i], v->len[i])) {
            slmc_fail(err, NULL, "token %llu \"%.60s\" appears twice in the vocabulary", (unsigned long long)i, v->text[i]);
            ok = false;
            reported = true;
            break;
        }
        ok = json_object_setn_new(jvocab, v->text[i], v->len[i], json_integer((json_int_t)i)) == 0;
    }
    uint64_t nm = 0;
    const meta_str *merges = meta_get_arr(kv, KEY_MERGES, GGUF_STR, &nm);
    for (uint64_t i = 0; ok && i < nm; i++) {
        /* "a b" -> ["a", "b"]: byte-level tokens hold no spaces, so the first space splits. */
        const char *sp = memchr(merges[i].s, ' ', merges[i].len);
        if (!sp) {
            slmc_fail(err, NULL, "merge %llu \"%.60s\" has no space", (unsigned long long)i, merges[i].s);
            ok = false;
            reported = true;
            break;
        }
        size_t ll = (size_t)(sp - merges[i].s);
        json_t *pair = json_pack("[s#s#]", merges[i].s, (int)ll, sp + 1, (int)(merges[i].len - ll - 1));
        ok = pair && json_array_append_new(jmerges, pair) == 0;
    }
    if (!ok) {
        if (!reported) slmc_fail(err, NULL, "out of memory building tokenizer.json");
        json_decref(root);
        json_decref(jvocab);
        json_decref(added);
        json_decref(jmerges);
        return NULL;
    }
    /* The pre-tokenizer as HF writes it for this regex; GPT-2's is a bare ByteLevel, SmolLM's
     * splits digits before it. */
    json_t *pt;
    if (digits)
        pt = json_pack("{s:s, s:[{s:s, s:b}, {s:s, s:b, s:b, s:b}]}", "type", "Sequence", "pretokenizers", "type",
                       "Digits", "individual_digits", 1, "type", "ByteLevel", "add_prefix_space", 0,
                       "trim_offsets", 1, "use_regex", 1);
    else if (regex)
        pt = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}", "type", "Sequence",
                       "pretokenizers", "type", "Split", "pattern", "Regex", regex, "behavior", "Isolated",
                       "invert", 0, "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                       "use_regex", 0);
    else
        pt = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                       "use_regex", 1);
    json_t *model = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                              "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                              "byte_fallback", 0, "ignore_merges", strcmp(pre, "llama-bpe") == 0, "vocab", jvocab,
                              "merges", jmerges);
    ok = jset(root, "version", json_string("1.0")) && jset(root, "truncation", json_null()) &&
         jset(root, "padding", json_null()) && jset(root, "added_tokens", added) &&
         jset(root, "normalizer", strcmp(pre, "qwen2") == 0 ? json_pack("{s:s}", "type", "NFC") : json_null()) &&
         jset(root, "pre_tokenizer", pt) &&
         jset(root, "post_processor",
              json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 0,
                        "use_regex", 1)) &&
         jset(root, "decoder",
              json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1,
                        "use_regex", 1)) &&
         jset(root, "model", model);
    if (!ok) {
        json_decref(root);
        slmc_fail(err, NULL, "out of memory building tokenizer.json");
        return NULL;
    }
    return root;
}

/* tokenizer_config.json and special_tokens_map.json. */
static int write_configs(const meta *kv, const vocab *v, bool is_llama, const char *dir, slmc_err *err) {
    json_t *cfg = json_object(), *map = json_object();
    bool ok = cfg && map;
    static const char *const flags[][2] = {{"add_bos_token", KEY_ADD_BOS}, {"add_eos_token", KEY_ADD_EOS},
                                           {"add_prefix_space", KEY_ADD_PREFIX}};
    for (size_t i = 0; ok && i < 3; i++) {
        bool f;
        if (meta_get_bool(kv, flags[i][1], &f)) ok = jset(cfg, flags[i][0], json_boolean(f));
    }
    for (size_t i = 0; ok && i < N_SPECIALS; i++) {
        char field[32];
        snprintf(field, sizeof field, "%s_token", SPECIALS[i].name);
        int64_t id = special_id(kv, SPECIALS[i].key, v->n);
        if (id < 0) {
            /* HF writes null for Llama's unset pad token; others are simply absent. */
            if (is_llama && strcmp(SPECIALS[i].name, "pad") == 0) ok = jset(cfg, field, json_null());
            continue;
        }
        json_t *s = jtok(v, (uint64_t)id);
        if (!s) {
            json_decref(cfg);
            json_decref(map);
            return slmc_fail(err, dir, "special token %lld is not valid UTF-8", (long long)id);
        }
        ok = jset(cfg, field, json_copy(s)) && jset(map, field, s);
    }
    if (ok && is_llama) ok = jset(cfg, "legacy", json_true()) && jset(cfg, "sp_model_kwargs", json_object());
    if (ok)
        ok = jset(cfg, "tokenizer_class", json_string(is_llama ? "LlamaTokenizer" : "PreTrainedTokenizerFast")) &&
             jset(cfg, "clean_up_tokenization_spaces", json_false());
    const char *ct = meta_get_str(kv, KEY_CHAT_TEMPLATE);
    if (ok && ct) {
        const meta_kv *e = meta_find(kv, KEY_CHAT_TEMPLATE);
        ok = jset(cfg, "chat_template", json_stringn(ct, e->v.str.len));
    }
    if (!ok) {
        json_decref(cfg);
        json_decref(map);
        return slmc_fail(err, dir, "out of memory building tokenizer_config.json");
    }
    if (write_json(dir, "tokenizer_config.json", cfg, err) != 0) {
        json_decref(map);
        return -1;
    }
    return write_json(dir, "special_tokens_map.json", map, err);
}

int hf_tokenizer_write(const meta *kv, const char *dir, slmc_err *err) {
    const char *model = meta_get_str(kv, KEY_MODEL);
    if (!model && !meta_find(kv, KEY_TOKENS)) return 0; /* no tokenizer */
    if (!model) return slmc_fail(err, dir, "%s present without %s", KEY_TOKENS, KEY_MODEL);
    bool is_llama = strcmp(model, "llama") == 0;
    if (!is_llama && strcmp(model, "gpt2") != 0)
        return slmc_fail(err, dir, "tokenizer model \"%s\" cannot be written as Hugging Face files (only llama and gpt2)", model);
    vocab v;
    bool has_scores;
    if (vocab_from_meta(&v, kv, &has_scores, dir, err) != 0) return -1;
    int rc = -1;
    if (is_llama) {
        uint8_t *buf;
        size_t len;
        if (hf_tokenizer_build_spm(kv, &buf, &len, err) != 0) {
            slmc_fail_prefix(err, dir);
            goto done;
        }
        rc = write_file(dir, "tokenizer.model", buf, len, err);
        free(buf);
    } else {
        const char *pre = meta_get_str(kv, KEY_PRE);
        json_t *root = build_bpe_json(kv, &v, pre ? pre : PRE_GPT2, err);
        if (!root) {
            slmc_fail_prefix(err, dir);
            goto done;
        }
        rc = write_json(dir, "tokenizer.json", root, err);
    }
    if (rc == 0) rc = write_configs(kv, &v, is_llama, dir, err);
done:
    vocab_free(&v);
    return rc;
}
