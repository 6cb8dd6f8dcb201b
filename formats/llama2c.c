/* llama2c.c - read a llama2.c checkpoint (and its tokenizer) into the model view.
 *
 * The tokenizer is llama2.c's own tokenizer.bin or a SentencePiece tokenizer.model (as many
 * llama2.c-derived repositories ship it); the file's first bytes tell which (see
 * looks_like_spm). A tokenizer.model is read by hf_tokenizer_parse_spm, the reader the
 * Hugging Face path uses, so both give the same vocabulary.
 *
 * The checkpoint is mapped and never copied: every tensor of the view points into the
 * mapping. Names, shapes, order and metadata follow what llama.cpp's
 * convert-llama2c-to-ggml writes, with two deliberate differences (see docs/formats-llama2c.md):
 *   - llama.context_length is the checkpoint's own seq_len (the converter writes 128);
 *   - a shared classifier stays shared: there is no output.weight (the converter writes a
 *     copy of token_embd.weight under that name).
 */
#include "llama2c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"
#include "hf_tokenizer.h"
#include "codec/types.h"
#include "utf8.h"

#define L2C_HEADER_BYTES 28          /* 7 int32 */
#define L2C_NEW_MAGIC 0x616b3432u    /* "ak42": llama2.c's versioned exports (not this format) */

/* The 7 int32 of the header, as written by llama2.c's export (legacy version 0). */
typedef struct l2c_header {
    int32_t dim;        /* transformer width */
    int32_t hidden_dim; /* feed-forward width */
    int32_t n_layers;   /* blocks */
    int32_t n_heads;    /* query heads */
    int32_t n_kv_heads; /* key/value heads (n_heads / n_kv_heads queries share one) */
    int32_t vocab_size; /* tokens; negative when a separate classifier wcls follows */
    int32_t seq_len;    /* maximum context the model was trained for */
} l2c_header;

/* Byte offsets of every section of the file, computed from the header. */
typedef struct l2c_layout {
    int64_t n_vocab;    /* |vocab_size| */
    int64_t kv_dim;     /* dim * n_kv_heads / n_heads */
    int64_t head_size;  /* dim / n_heads */
    bool shared;        /* vocab_size > 0: the classifier is token_embedding */
    uint64_t token_embd, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final;
    uint64_t freq_cis;  /* freq_cis_real then freq_cis_imag, skipped */
    uint64_t wcls;      /* only when !shared */
    uint64_t end;       /* expected file size */
} l2c_layout;

/* The reader's state the model keeps alive: the mapping the tensors point into. */
typedef struct l2c_src {
    mapped_file map;
} l2c_src;

static void free_l2c_src(void *p) {
    l2c_src *s = p;
    unmap_file(&s->map);
    free(s);
}

static int32_t load_i32(const uint8_t *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

static float load_f32(const uint8_t *p) {
    int32_t v = load_i32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

static void parse_header(const uint8_t *p, l2c_header *h) {
    h->dim = load_i32(p);
    h->hidden_dim = load_i32(p + 4);
    h->n_layers = load_i32(p + 8);
    h->n_heads = load_i32(p + 12);
    h->n_kv_heads = load_i32(p + 16);
    h->vocab_size = load_i32(p + 20);
    h->seq_len = load_i32(p + 24);
}

/* Advance the cursor past a section of n_floats F32 values; false on overflow. */
static bool section(uint64_t *cursor, uint64_t *start, uint64_t n_floats) {
    uint64_t bytes;
    if (__builtin_mul_overflow(n_floats, (uint64_t)4, &bytes)) return false;
    *start = *cursor;
    return !__builtin_add_overflow(*cursor, bytes, cursor);
}

/* Product of up to three non-negative factors; false on overflow. */
static bool mul3(uint64_t a, uint64_t b, uint64_t c, uint64_t *out) {
    uint64_t ab;
    return !__builtin_mul_overflow(a, b, &ab) && !__builtin_mul_overflow(ab, c, out);
}

/* Check the header's values and compute where each section lives. */
static int plan_layout(const l2c_header *h, l2c_layout *lo, const char *path, slmc_err *err) {
    memset(lo, 0, sizeof *lo);
    const struct { const char *name; int32_t v; } dims[] = {
        {"dim", h->dim}, {"hidden_dim", h->hidden_dim}, {"n_layers", h->n_layers},
        {"n_heads", h->n_heads}, {"n_kv_heads", h->n_kv_heads}, {"seq_len", h->seq_len},
    };
    for (size_t i = 0; i < sizeof dims / sizeof *dims; i++)
        if (dims[i].v <= 0)
            return slmc_fail(err, path, "llama2.c header: %s must be positive, got %d", dims[i].name, dims[i].v);
    if (h->vocab_size == 0 || h->vocab_size == INT32_MIN)
        return slmc_fail(err, path, "llama2.c header: bad vocab_size %d", h->vocab_size);
    if (h->dim % h->n_heads != 0)
        return slmc_fail(err, path, "llama2.c header: n_heads %d does not divide dim %d", h->n_heads, h->dim);
    if (h->n_heads % h->n_kv_heads != 0)
        return slmc_fail(err, path, "llama2.c header: n_kv_heads %d does not divide n_heads %d",
                         h->n_kv_heads, h->n_heads);
    lo->head_size = h->dim / h->n_heads;
    if (lo->head_size % 2 != 0)
        return slmc_fail(err, path, "llama2.c header: head size %lld (dim / n_heads) is odd; RoPE needs pairs",
                         (long long)lo->head_size);
    lo->shared = h->vocab_size > 0;
    lo->n_vocab = h->vocab_size > 0 ? h->vocab_size : -(int64_t)h->vocab_size;
    lo->kv_dim = (int64_t)h->dim * h->n_kv_heads / h->n_heads;

    uint64_t dim = (uint64_t)h->dim, hid = (uint64_t)h->hidden_dim, L = (uint64_t)h->n_layers;
    uint64_t kv = (uint64_t)lo->kv_dim, V = (uint64_t)lo->n_vocab;
    uint64_t n_emb, n_norms, n_wq, n_wkv, n_ffn, n_freq;
    bool ok = mul3(V, dim, 1, &n_emb) && mul3(L, dim, 1, &n_norms) && mul3(L, dim, dim, &n_wq) &&
              mul3(L, kv, dim, &n_wkv) && mul3(L, hid, dim, &n_ffn) &&
              mul3((uint64_t)h->seq_len, (uint64_t)lo->head_size / 2, 1, &n_freq);
    uint64_t cur = L2C_HEADER_BYTES, unused;
    ok = ok && section(&cur, &lo->token_embd, n_emb) && section(&cur, &lo->rms_att, n_norms) &&
         section(&cur, &lo->wq, n_wq) && section(&cur, &lo->wk, n_wkv) && section(&cur, &lo->wv, n_wkv) &&
         section(&cur, &lo->wo, n_wq) && section(&cur, &lo->rms_ffn, n_norms) &&
         section(&cur, &lo->w1, n_ffn) && section(&cur, &lo->w2, n_ffn) && section(&cur, &lo->w3, n_ffn) &&
         section(&cur, &lo->rms_final, dim) && section(&cur, &lo->freq_cis, n_freq) &&
         section(&cur, &unused, n_freq);
    if (ok && !lo->shared) ok = section(&cur, &lo->wcls, n_emb);
    if (!ok) return slmc_fail(err, path, "llama2.c header: dimensions overflow a 64-bit file size");
    lo->end = cur;
    return 0;
}

/* The size check, with a message giving both sizes. */
static int check_size(const l2c_header *h, const l2c_layout *lo, uint64_t size, const char *path, slmc_err *err) {
    if (size == lo->end) return 0;
    return slmc_fail(err, path,
                     "file is %llu bytes but its llama2.c header (dim %d, hidden_dim %d, n_layers %d, n_heads %d, "
                     "n_kv_heads %d, vocab_size %d, seq_len %d) implies %llu bytes (%s classifier)%s",
                     (unsigned long long)size, h->dim, h->hidden_dim, h->n_layers, h->n_heads, h->n_kv_heads,
                     h->vocab_size, h->seq_len, (unsigned long long)lo->end, lo->shared ? "shared" : "separate",
                     size < lo->end ? ": truncated?" : "");
}

int llama2c_probe(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    uint8_t buf[L2C_HEADER_BYTES];
    struct stat st;
    bool ok = fread(buf, 1, sizeof buf, f) == sizeof buf && fstat(fileno(f), &st) == 0;
    fclose(f);
    if (!ok) return 0;
    l2c_header h;
    l2c_layout lo;
    parse_header(buf, &h);
    return plan_layout(&h, &lo, path, NULL) == 0 && (uint64_t)st.st_size == lo.end;
}

/* ---------------------------------------------------------------------------------------
 * Tensors
 * ------------------------------------------------------------------------------------- */

/* Append one F32 tensor of shape ne0 x ne1 (ne1 = 0 for a vector) pointing at base+off. */
static int add_tensor(model *m, const char *name, int64_t ne0, int64_t ne1, const uint8_t *base,
                      uint64_t off, slmc_err *err) {
    model_tensor *t = &m->tensors[m->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return slmc_fail(err, m->path, "out of memory");
    t->type = GGML_TYPE_F32;
    t->n_dims = ne1 > 0 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 > 0 ? ne1 : 1;
    t->ne[2] = t->ne[3] = 1;
    t->nbytes = (uint64_t)ne0 * (uint64_t)t->ne[1] * 4;
    t->data = base + off;
    t->qk_heads = 0; /* llama2.c rows are already in llama.cpp's interleaved RoPE order */
    m->n_tensors++;
    return 0;
}

/* The tensors in the order llama.cpp's converter writes them. Layer l of a stacked
 * section [L][rows][cols] starts l*rows*cols floats into it. */
static int add_tensors(model *m, const l2c_header *h, const l2c_layout *lo, const uint8_t *base, slmc_err *err) {
    const int64_t dim = h->dim, hid = h->hidden_dim, kv = lo->kv_dim, L = h->n_layers;
    uint64_t n = 2 + (lo->shared ? 0 : 1) + 9 * (uint64_t)L;
    m->tensors = calloc(n, sizeof *m->tensors);
    if (!m->tensors) return slmc_fail(err, m->path, "out of memory");
    if (add_tensor(m, "token_embd.weight", dim, lo->n_vocab, base, lo->token_embd, err) ||
        add_tensor(m, "output_norm.weight", dim, 0, base, lo->rms_final, err) ||
        (!lo->shared && add_tensor(m, "output.weight", dim, lo->n_vocab, base, lo->wcls, err)))
        return -1;
    for (int64_t l = 0; l < L; l++) {
        char nm[64];
        const uint64_t ul = (uint64_t)l, f = 4; /* bytes per float */
#define ADD(suffix, ne0, ne1, off)                                                  \
        (snprintf(nm, sizeof nm, "blk.%lld." suffix, (long long)l),                 \
         add_tensor(m, nm, ne0, ne1, base, off, err))
        if (ADD("attn_q.weight", dim, dim, lo->wq + ul * dim * dim * f) ||
            ADD("attn_k.weight", dim, kv, lo->wk + ul * kv * dim * f) ||
            ADD("attn_v.weight", dim, kv, lo->wv + ul * kv * dim * f) ||
            ADD("attn_output.weight", dim, dim, lo->wo + ul * dim * dim * f) ||
            ADD("attn_norm.weight", dim, 0, lo->rms_att + ul * dim * f) ||
            ADD("ffn_gate.weight", dim, hid, lo->w1 + ul * hid * dim * f) ||
            ADD("ffn_down.weight", hid, dim, lo->w2 + ul * dim * hid * f) ||
            ADD("ffn_up.weight", dim, hid, lo->w3 + ul * hid * dim * f) ||
            ADD("ffn_norm.weight", dim, 0, lo->rms_ffn + ul * dim * f))
            return -1;
#undef ADD
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Tokenizer
 * ------------------------------------------------------------------------------------- */

#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES "tokenizer.ggml.token_type"

/* The special token ids written to tokenizer.ggml.*_token_id. */
typedef struct l2c_special {
    uint32_t unk, bos, eos;
} l2c_special;

/* What llama.cpp's llama2.c converter always writes, and what llama.cpp assumes for a "llama"
 * vocabulary without these keys. */
static const l2c_special L2C_FIXED_IDS = {0, 1, 2};

/* Walk the token records once: check each fits in the file and count them. */
static int count_tokens(const mapped_file *mf, const char *path, int64_t *count, slmc_err *err) {
    if (mf->size < 4)
        return slmc_fail(err, path, "too short for a llama2.c tokenizer (%llu bytes, need 4 for max_token_length)",
                         (unsigned long long)mf->size);
    uint64_t pos = 4;
    int64_t n = 0;
    while (pos < mf->size) {
        if (mf->size - pos < 8)
            return slmc_fail(err, path, "truncated: token %lld at offset %llu needs 8 bytes (score, length), %llu left",
                             (long long)n, (unsigned long long)pos, (unsigned long long)(mf->size - pos));
        int32_t len = load_i32(mf->data + pos + 4);
        if (len < 0)
            return slmc_fail(err, path, "token %lld at offset %llu has negative length %d", (long long)n,
                             (unsigned long long)pos, len);
        if ((uint64_t)len > mf->size - pos - 8)
            return slmc_fail(err, path, "token %lld at offset %llu: length %d runs past the end of the file (%llu bytes left)",
                             (long long)n, (unsigned long long)pos, len, (unsigned long long)(mf->size - pos - 8));
        pos += 8 + (uint64_t)len;
        n++;
    }
    *count = n;
    return 0;
}

/* Token text and type as llama.cpp's converter makes them from a llama2.c vocabulary:
 * ids 0, 1, 2 become "<unk>", "<s>", "</s>" (tok512.bin stores "\n<s>\n" there); an empty
 * text is CONTROL; a text that sscanf reads as "<0x%2hhX" is BYTE; every space becomes
 * U+2581 "▁" as in SentencePiece vocabularies. Returns a malloc'd text or NULL. */
static char *convert_token(int64_t id, const uint8_t *raw, uint64_t len, uint64_t *out_len, int32_t *type) {
    static const char *const fixed[3] = {"<unk>", "<s>", "</s>"};
    static const int32_t fixed_type[3] = {TOKTYPE_UNKNOWN, TOKTYPE_CONTROL, TOKTYPE_CONTROL};
    char *text;
    if (id < 3) {
        *type = fixed_type[id];
        *out_len = strlen(fixed[id]);
        return strdup(fixed[id]);
    }
    /* a NUL-terminated copy, so sscanf stops where the converter's c_str() would */
    char *plain = malloc(len + 1);
    if (!plain) return NULL;
    memcpy(plain, raw, len);
    plain[len] = '\0';
    unsigned char byte_val;
    if (len == 0) *type = TOKTYPE_CONTROL;
    else if (sscanf(plain, "<0x%2hhX", &byte_val) == 1) *type = TOKTYPE_BYTE;
    else *type = TOKTYPE_NORMAL;

    uint64_t spaces = 0;
    for (uint64_t i = 0; i < len; i++) spaces += raw[i] == ' ';
    text = malloc(len + 2 * spaces + 1);
    if (!text) { free(plain); return NULL; }
    uint64_t o = 0;
    for (uint64_t i = 0; i < len; i++) {
        if (raw[i] == ' ') { memcpy(text + o, "\xe2\x96\x81", 3); o += 3; }
        else text[o++] = (char)raw[i];
    }
    text[o] = '\0';
    *out_len = o;
    free(plain);
    return text;
}

/* Read tokenizer.bin (mapped in mf) into the tokenizer.ggml.tokens / scores / token_type arrays. */
static int read_tokenizer_bin(model *m, const mapped_file *mf, const char *path, int64_t n_vocab, slmc_err *err) {
    int64_t count;
    if (count_tokens(mf, path, &count, err) != 0) return -1;
    if (count != n_vocab)
        return slmc_fail(err, path, "holds %lld tokens but the model's vocab_size is %lld",
                         (long long)count, (long long)n_vocab);
    char **texts = calloc((size_t)n_vocab, sizeof *texts);
    uint64_t *lens = calloc((size_t)n_vocab, sizeof *lens);
    float *scores = calloc((size_t)n_vocab, sizeof *scores);
    int32_t *types = calloc((size_t)n_vocab, sizeof *types);
    int rc = -1;
    if (!texts || !lens || !scores || !types) { slmc_fail(err, path, "out of memory"); goto done; }
    uint64_t pos = 4;
    for (int64_t i = 0; i < n_vocab; i++) {
        scores[i] = load_f32(mf->data + pos);
        uint64_t len = (uint64_t)load_i32(mf->data + pos + 4);
        /* GGUF strings are UTF-8: refuse here rather than write a file no reader accepts */
        if (i >= 3 && !utf8_valid(mf->data + pos + 8, len)) {
            slmc_fail(err, path, "token %lld at offset %llu is not valid UTF-8", (long long)i,
                      (unsigned long long)(pos + 8));
            goto done;
        }
        texts[i] = convert_token(i, mf->data + pos + 8, len, &lens[i], &types[i]);
        if (!texts[i]) { slmc_fail(err, path, "out of memory"); goto done; }
        pos += 8 + len;
    }
    if (meta_set_arr_str(&m->kv, KEY_TOKENS, (uint64_t)n_vocab, (const char *const *)texts, lens) ||
        meta_set_arr(&m->kv, KEY_SCORES, GGUF_F32, (uint64_t)n_vocab, scores) ||
        meta_set_arr(&m->kv, KEY_TYPES, GGUF_I32, (uint64_t)n_vocab, types)) {
        slmc_fail(err, path, "out of memory");
        goto done;
    }
    rc = 0;
done:
    if (texts)
        for (int64_t i = 0; i < n_vocab; i++) free(texts[i]);
    free(texts);
    free(lens);
    free(scores);
    free(types);
    return rc;
}

/* Id of the first token whose text is `text` and whose type is `type`, or -1. */
static int64_t find_piece(const meta_str *tokens, const int32_t *types, uint64_t n, const char *text, int32_t type) {
    for (uint64_t i = 0; i < n; i++)
        if (types[i] == type && tokens[i].len == strlen(text) && memcmp(tokens[i].s, text, tokens[i].len) == 0)
            return (int64_t)i;
    return -1;
}

/* The special ids of a SentencePiece vocabulary, found where SentencePiece itself finds them
 * with its default settings (and where the HF reader finds them through tokenizer_config.json's
 * "<unk>", "<s>", "</s>"): the UNKNOWN piece "<unk>", the CONTROL pieces "<s>" and "</s>".
 * One that is missing keeps llama.cpp's fixed id. For Llama-2's tokenizer.model (and llama2.c's
 * own trained ones) this gives 0, 1, 2, the converter's values. */
static l2c_special spm_special_ids(const meta_str *tokens, const int32_t *types, uint64_t n) {
    l2c_special ids = L2C_FIXED_IDS;
    int64_t unk = find_piece(tokens, types, n, "<unk>", TOKTYPE_UNKNOWN);
    int64_t bos = find_piece(tokens, types, n, "<s>", TOKTYPE_CONTROL);
    int64_t eos = find_piece(tokens, types, n, "</s>", TOKTYPE_CONTROL);
    if (unk >= 0) ids.unk = (uint32_t)unk;
    if (bos >= 0) ids.bos = (uint32_t)bos;
    if (eos >= 0) ids.eos = (uint32_t)eos;
    return ids;
}

/* Read a SentencePiece tokenizer.model (mapped in mf) with the Hugging Face path's reader, so
 * tokens, scores and token types are exactly what converting a HF folder with this file gives,
 * and copy the three arrays into the model's metadata, where tokenizer.bin's would go. */
static int read_tokenizer_spm(model *m, const mapped_file *mf, const char *path, int64_t n_vocab, l2c_special *ids,
                              slmc_err *err) {
    meta spm;
    meta_init(&spm);
    int rc = -1;
    slmc_err cause = {{0}};
    if (hf_tokenizer_parse_spm(&spm, mf->data, mf->size, NULL, &cause) != 0) {
        slmc_fail(err, path, "read as a SentencePiece tokenizer.model (it starts like one): %s", cause.msg);
        goto done;
    }
    /* hf_tokenizer_parse_spm sets tokens, scores and token_type, all n long */
    uint64_t n = 0, n_types = 0;
    const meta_str *tokens = meta_get_arr(&spm, KEY_TOKENS, GGUF_STR, &n);
    const int32_t *types = meta_get_arr(&spm, KEY_TYPES, GGUF_I32, &n_types);
    if (!tokens || !types || n_types != n || !meta_find(&spm, KEY_SCORES)) {
        slmc_fail(err, path, "internal error: the SentencePiece reader returned no complete vocabulary");
        goto done;
    }
    if (n != (uint64_t)n_vocab) {
        slmc_fail(err, path, "SentencePiece tokenizer.model holds %llu pieces but the model's vocab_size is %lld",
                  (unsigned long long)n, (long long)n_vocab);
        goto done;
    }
    *ids = spm_special_ids(tokens, types, n);
    const char *const keys[] = {KEY_TOKENS, KEY_SCORES, KEY_TYPES};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        if (meta_set_kv(&m->kv, meta_find(&spm, keys[k])) != 0) {
            slmc_fail(err, path, "out of memory");
            goto done;
        }
    }
    rc = 0;
done:
    meta_free(&spm);
    return rc;
}

/* Whether a tokenizer file is a SentencePiece tokenizer.model rather than a tokenizer.bin,
 * decided by its first bytes.
 *
 * A tokenizer.model is a protobuf ModelProto. Every writer of one (SentencePiece's C++ and
 * Python protobuf code, and hf_tokenizer_build_spm) writes fields in field-number order, so it
 * starts with field 1 (the first piece, length-delimited: key byte 0x0A), that message's
 * length as a varint, then the piece's own field 1 (its text: 0x0A again).
 * A tokenizer.bin starts with its int32 max_token_length, little-endian. Its first byte can be
 * 0x0A (a length of 10), but for any length below 65536 its third and fourth bytes are 0, and
 * the byte after the "varint" (the second byte, or the third when the second has its high bit
 * set) is then 0, never 0x0A. So the two cannot be confused.
 *
 * Why look rather than try one parser and fall back to the other: each file is then read by
 * the reader for its format, and a damaged file gets that reader's error (a truncated
 * tokenizer.bin says which token runs past the end, a truncated tokenizer.model where its
 * protobuf breaks), instead of the error of the reader that happened to run last. */
static bool looks_like_spm(const uint8_t *p, size_t size) {
    if (size < 3 || p[0] != 0x0A) return false;
    size_t i = 1; /* the length varint: bytes with the high bit set continue it */
    while (i < size && i < 11 && (p[i] & 0x80)) i++;
    return i + 1 < size && p[i + 1] == 0x0A;
}

/* Read the tokenizer file, whichever of the two formats it is, into the tokenizer.ggml.tokens /
 * scores / token_type arrays; *ids receives the special ids to write. */
static int read_tokenizer(model *m, const char *path, int64_t n_vocab, l2c_special *ids, slmc_err *err) {
    mapped_file mf;
    if (map_file(&mf, path, err) != 0) return -1;
    int rc;
    if (looks_like_spm(mf.data, mf.size)) {
        rc = read_tokenizer_spm(m, &mf, path, n_vocab, ids, err);
    } else {
        *ids = L2C_FIXED_IDS; /* convert_token put <unk>, <s>, </s> there */
        rc = read_tokenizer_bin(m, &mf, path, n_vocab, err);
    }
    unmap_file(&mf);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * Metadata and opening
 * ------------------------------------------------------------------------------------- */

/* The keys after the tokenizer arrays, in the converter's order (the same keys whichever
 * tokenizer file was read). */
static int add_meta(model *m, const l2c_header *h, const l2c_layout *lo, const l2c_special *ids) {
    int rc = 0;
    rc |= meta_set_str(&m->kv, "tokenizer.ggml.model", "llama");
    rc |= meta_set_str(&m->kv, "general.architecture", "llama");
    rc |= meta_set_str(&m->kv, "general.name", "llama");
    rc |= meta_set_u32(&m->kv, "tokenizer.ggml.unknown_token_id", ids->unk);
    rc |= meta_set_u32(&m->kv, "tokenizer.ggml.bos_token_id", ids->bos);
    rc |= meta_set_u32(&m->kv, "tokenizer.ggml.eos_token_id", ids->eos);
    rc |= meta_set_u32(&m->kv, "tokenizer.ggml.seperator_token_id", UINT32_MAX); /* (sic) llama.cpp's key */
    rc |= meta_set_u32(&m->kv, "tokenizer.ggml.padding_token_id", UINT32_MAX);
    rc |= meta_set_u32(&m->kv, "llama.context_length", (uint32_t)h->seq_len); /* the converter: 128 */
    rc |= meta_set_u32(&m->kv, "llama.embedding_length", (uint32_t)h->dim);
    rc |= meta_set_u32(&m->kv, "llama.feed_forward_length", (uint32_t)h->hidden_dim);
    rc |= meta_set_u32(&m->kv, "llama.attention.head_count", (uint32_t)h->n_heads);
    rc |= meta_set_u32(&m->kv, "llama.attention.head_count_kv", (uint32_t)h->n_kv_heads);
    rc |= meta_set_u32(&m->kv, "llama.block_count", (uint32_t)h->n_layers);
    rc |= meta_set_u32(&m->kv, "llama.rope.dimension_count", (uint32_t)lo->head_size);
    rc |= meta_set_f32(&m->kv, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    /* Not written by llama.cpp's llama2.c converter, but by its HF converter for every
     * SentencePiece vocabulary: with it, llama2.c -> GGUF and llama2.c -> GGUF -> HF -> GGUF
     * give the same file. */
    rc |= meta_set_str(&m->kv, "tokenizer.ggml.pre", "default");
    return rc ? -1 : 0;
}

static int open_into(model *m, const char *path, const char *tokenizer_path, slmc_err *err) {
    l2c_src *src = calloc(1, sizeof *src);
    if (!src) return slmc_fail(err, path, "out of memory");
    if (map_file(&src->map, path, err) != 0) { free(src); return -1; }
    m->src = src;
    m->free_src = free_l2c_src;
    const mapped_file *mf = &src->map;

    if (mf->size < L2C_HEADER_BYTES)
        return slmc_fail(err, path, "too short for a llama2.c header (%llu bytes, need %d)",
                         (unsigned long long)mf->size, L2C_HEADER_BYTES);
    if ((uint32_t)load_i32(mf->data) == L2C_NEW_MAGIC)
        return slmc_fail(err, path, "a versioned llama2.c export (magic \"ak42\", version %d): only the legacy "
                         "format run.c reads (export.py --version 0) is supported", load_i32(mf->data + 4));
    l2c_header h;
    l2c_layout lo;
    parse_header(mf->data, &h);
    if (plan_layout(&h, &lo, path, err) != 0) return -1;
    if (check_size(&h, &lo, mf->size, path, err) != 0) return -1;

    l2c_special ids;
    if (read_tokenizer(m, tokenizer_path, lo.n_vocab, &ids, err) != 0) return -1;
    if (add_meta(m, &h, &lo, &ids) != 0) return slmc_fail(err, path, "out of memory");
    if (add_tensors(m, &h, &lo, mf->data, err) != 0) return -1;
    if (model_config_from_meta(m, err) != 0) return -1;
    m->cfg.tied_output = lo.shared; /* also what model_config_from_meta infers: no output.weight */
    return 0;
}

int llama2c_open(model *m, const char *path, const char *tokenizer_path, slmc_err *err) {
    memset(m, 0, sizeof *m);
    meta_init(&m->kv);
    m->format = MODEL_LLAMA2C;
    m->path = strdup(path);
    if (!m->path) return slmc_fail(err, path, "out of memory");
    if (!tokenizer_path) {
        model_close(m);
        return slmc_fail(err, path, "a llama2.c checkpoint needs its tokenizer (tokenizer.bin or tokenizer.model)");
    }
    if (open_into(m, path, tokenizer_path, err) != 0) {
        model_close(m);
        return -1;
    }
    return 0;
}
