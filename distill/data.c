/* data.c - training text: decompression, documents, tokenization, sequences; see data.h. */
#include "distill/data.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#define PIECE_BYTES (32u << 10) /* long texts are tokenized in pieces of about this size, cut at a newline */

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* ---------------------------------------------------------------------------------------
 * reading and decompressing
 * ------------------------------------------------------------------------------------- */

/* A growing byte buffer. */
typedef struct bytes { char *p; size_t n, cap; } bytes;

static int bytes_reserve(bytes *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1 << 20;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int read_gz(const char *path, bytes *b, slmc_err *err) {
    gzFile f = gzopen(path, "rb");
    if (!f) return slmc_fail(err, path, "cannot open");
    for (;;) {
        if (bytes_reserve(b, 1 << 20) != 0) { gzclose(f); return slmc_fail(err, path, "out of memory"); }
        int n = gzread(f, b->p + b->n, 1 << 20);
        if (n < 0) {
            int code;
            const char *msg = gzerror(f, &code);
            slmc_fail(err, path, "gzip data is corrupt after %zu bytes: %s", b->n, msg);
            gzclose(f);
            return -1;
        }
        if (n == 0) break;
        b->n += (size_t)n;
    }
    gzclose(f);
    return 0;
}

static int read_zst(const char *path, bytes *b, slmc_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return slmc_fail(err, path, "cannot open");
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    size_t in_cap = ZSTD_DStreamInSize();
    char *in = malloc(in_cap);
    int rc = -1;
    size_t last = 1; /* ZSTD_decompressStream's hint: 0 once a frame is complete */
    uint64_t consumed = 0;
    if (!dc || !in) { slmc_fail(err, path, "out of memory"); goto done; }
    for (;;) {
        size_t got = fread(in, 1, in_cap, f);
        if (got == 0) break;
        ZSTD_inBuffer ib = {in, got, 0};
        while (ib.pos < ib.size) {
            if (bytes_reserve(b, 1 << 20) != 0) { slmc_fail(err, path, "out of memory"); goto done; }
            ZSTD_outBuffer ob = {b->p + b->n, b->cap - b->n - 1, 0};
            last = ZSTD_decompressStream(dc, &ob, &ib);
            if (ZSTD_isError(last)) {
                slmc_fail(err, path, "zstd data is corrupt at offset %llu: %s",
                          (unsigned long long)(consumed + ib.pos), ZSTD_getErrorName(last));
                goto done;
            }
            b->n += ob.pos;
        }
        consumed += got;
    }
    if (ferror(f)) { slmc_fail(err, path, "read error"); goto done; }
    if (last != 0) { slmc_fail(err, path, "zstd stream is truncated at offset %llu", (unsigned long long)consumed); goto done; }
    rc = 0;
done:
    ZSTD_freeDCtx(dc);
    free(in);
    fclose(f);
    return rc;
}

static int read_plain(const char *path, bytes *b, slmc_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return slmc_fail(err, path, "cannot open");
    for (;;) {
        if (bytes_reserve(b, 1 << 20) != 0) { fclose(f); return slmc_fail(err, path, "out of memory"); }
        size_t n = fread(b->p + b->n, 1, 1 << 20, f);
        b->n += n;
        if (n == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    return bad ? slmc_fail(err, path, "read error after %zu bytes", b->n) : 0;
}

int data_read_file(const char *path, char **out, size_t *len, slmc_err *err) {
    bytes b = {0};
    int rc = ends_with(path, ".gz") ? read_gz(path, &b, err) : ends_with(path, ".zst") ? read_zst(path, &b, err)
                                                                                      : read_plain(path, &b, err);
    if (rc == 0 && bytes_reserve(&b, 0) != 0) rc = slmc_fail(err, path, "out of memory");
    if (rc != 0) { free(b.p); return -1; }
    b.p[b.n] = 0;
    *out = b.p;
    *len = b.n;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * documents and tokenization
 * ------------------------------------------------------------------------------------- */

/* A span of text tokenized on its own; bos: it starts a document. */
typedef struct piece { size_t off, len; bool bos; } piece;
typedef struct pieces { piece *p; size_t n, cap; } pieces;

static int pieces_add(pieces *ps, size_t off, size_t len, bool bos) {
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 256;
        piece *p = realloc(ps->p, cap * sizeof *p);
        if (!p) return -1;
        ps->p = p;
        ps->cap = cap;
    }
    ps->p[ps->n++] = (piece){off, len, bos};
    return 0;
}

/* One document [off, off+len) of buf, cut into pieces at newlines about PIECE_BYTES apart. */
static int add_document(pieces *ps, const char *buf, size_t off, size_t len) {
    bool first = true;
    while (len > 0) {
        size_t n = len;
        if (n > PIECE_BYTES) {
            const char *nl = memchr(buf + off + PIECE_BYTES, '\n', len - PIECE_BYTES);
            n = nl ? (size_t)(nl - (buf + off)) + 1 : len;
        }
        if (pieces_add(ps, off, n, first) != 0) return -1;
        first = false;
        off += n;
        len -= n;
    }
    return 0;
}

/* JSON lines: each line's "text" appended to a new buffer as one document. */
static int jsonl_documents(const char *path, const char *src, size_t n, bytes *texts, pieces *ps, slmc_err *err) {
    size_t line_no = 0;
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(src + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - src) : n;
        line_no++;
        size_t j = i;
        while (j < end && (src[j] == ' ' || src[j] == '\t' || src[j] == '\r')) j++;
        if (j < end) {
            json_error_t jerr;
            json_t *o = json_loadb(src + i, end - i, JSON_REJECT_DUPLICATES, &jerr);
            if (!o) return slmc_fail(err, path, "line %zu: %s at column %d", line_no, jerr.text, jerr.column);
            json_t *t = json_object_get(o, "text");
            if (!json_is_string(t)) {
                json_decref(o);
                return slmc_fail(err, path, "line %zu (byte offset %zu): no string field \"text\"", line_no, i);
            }
            size_t tl = json_string_length(t);
            if (bytes_reserve(texts, tl) != 0) { json_decref(o); return slmc_fail(err, path, "out of memory"); }
            memcpy(texts->p + texts->n, json_string_value(t), tl);
            if (tl > 0 && add_document(ps, texts->p, texts->n, tl) != 0) {
                json_decref(o);
                return slmc_fail(err, path, "out of memory");
            }
            texts->n += tl;
            json_decref(o);
        }
        i = end + 1;
    }
    return 0;
}

static uint64_t fnv1a(const int32_t *x, size_t n) {
    uint64_t h = 1469598103934665603ull;
    const uint8_t *b = (const uint8_t *)x;
    for (size_t i = 0; i < n * sizeof *x; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

int data_load(train_data *d, const char *path, const tokenizer *tok, size_t max_tokens, int n_threads,
              slmc_err *err) {
    return data_load_shared(d, path, tok, max_tokens, n_threads, &comm_solo, err);
}

/* This rank's share of the text's tokens: the file read and cut into pieces (the same on
 * every rank), the pieces [lo, hi) of its share tokenized (BOS before each document) into
 * *mine (malloc'd, *n_mine tokens). */
static int tokenize_share(const char *path, const tokenizer *tok, size_t max_tokens, int n_threads, const comm *c,
                          int32_t **mine, size_t *n_mine, slmc_err *err) {
    *mine = NULL;
    *n_mine = 0;
    char *raw = NULL;
    size_t n_raw = 0;
    if (data_read_file(path, &raw, &n_raw, err) != 0) return -1;
    bytes texts = {0};
    pieces ps = {0};
    int rc = -1;
    int32_t **ids = NULL;
    size_t *n_ids = NULL, n_pieces = 0;
    const char *buf = raw;
    bool jsonl = ends_with(path, ".jsonl") || ends_with(path, ".jsonl.gz") || ends_with(path, ".jsonl.zst");
    if (jsonl) {
        if (jsonl_documents(path, raw, n_raw, &texts, &ps, err) != 0) goto done;
        buf = texts.p;
    } else if (n_raw > 0 && add_document(&ps, raw, 0, n_raw) != 0) {
        slmc_fail(err, path, "out of memory");
        goto done;
    }
    if (ps.n == 0) { slmc_fail(err, path, "holds no text"); goto done; }
    /* with a token budget, only about as many pieces as it needs (~1 token per 3 bytes) */
    n_pieces = ps.n;
    if (max_tokens > 0) {
        size_t bytes_needed = max_tokens * 8, acc = 0;
        for (n_pieces = 0; n_pieces < ps.n && acc < bytes_needed; n_pieces++) acc += ps.p[n_pieces].len;
    }
    /* this rank's share of the pieces (all of them in a job of one) */
    int64_t lo, hi;
    comm_share(c, (int64_t)n_pieces, c->rank, &lo, &hi);
    ids = calloc(n_pieces, sizeof *ids);
    n_ids = calloc(n_pieces, sizeof *n_ids);
    if (!ids || !n_ids) { slmc_fail(err, path, "out of memory"); goto done; }
    const int32_t bos = tokenizer_bos(tok);
    bool failed = false;
    slmc_err first_err = {{0}};
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1)
    for (size_t i = (size_t)lo; i < (size_t)hi; i++) {
        slmc_err e = {{0}};
        if (failed) continue;
        if (tokenizer_encode(tok, buf + ps.p[i].off, ps.p[i].len, false, false, &ids[i], &n_ids[i], &e) != 0) {
#pragma omp critical
            {
                if (!failed) first_err = e;
                failed = true;
            }
        }
    }
    if (failed) {
        *err = first_err;
        slmc_fail_prefix(err, path);
        goto done;
    }
    size_t total = 0;
    for (size_t i = (size_t)lo; i < (size_t)hi; i++) total += n_ids[i] + (ps.p[i].bos && bos >= 0);
    if (!(*mine = malloc(sizeof(int32_t) * (total ? total : 1)))) {
        slmc_fail(err, path, "out of memory for %zu tokens", total);
        goto done;
    }
    for (size_t i = (size_t)lo; i < (size_t)hi; i++) {
        if (ps.p[i].bos && bos >= 0) (*mine)[(*n_mine)++] = bos;
        if (n_ids[i]) memcpy(*mine + *n_mine, ids[i], sizeof(int32_t) * n_ids[i]);
        *n_mine += n_ids[i];
    }
    rc = 0;
done:
    if (ids)
        for (size_t i = 0; i < n_pieces; i++) free(ids[i]);
    free(ids);
    free(n_ids);
    free(ps.p);
    free(texts.p);
    free(raw);
    return rc;
}

int data_load_shared(train_data *d, const char *path, const tokenizer *tok, size_t max_tokens, int n_threads,
                     const comm *c, slmc_err *err) {
    memset(d, 0, sizeof *d);
    int32_t *mine = NULL;
    size_t n_mine = 0;
    int st = tokenize_share(path, tok, max_tokens, n_threads, c, &mine, &n_mine, err);
    /* every rank's tokens in rank order (the text's order): the whole stream on every rank */
    if (comm_agree(c, st, err) != 0 || comm_allgather_i32(c, mine, n_mine, &d->tokens, &d->n_tokens, err) != 0) {
        free(mine);
        data_free(d);
        return -1;
    }
    free(mine);
    if (max_tokens > 0 && d->n_tokens > max_tokens) d->n_tokens = max_tokens;
    d->hash = fnv1a(d->tokens, d->n_tokens);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * sequences
 * ------------------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/* Fisher-Yates over the identity: the order depends only on the RNG state. */
static void shuffle(train_data *d) {
    for (int64_t i = 0; i < d->n_train; i++) d->perm[i] = i;
    for (int64_t i = d->n_train - 1; i > 0; i--) {
        int64_t j = (int64_t)(rng_next(&d->rng) % (uint64_t)(i + 1));
        int64_t t = d->perm[i];
        d->perm[i] = d->perm[j];
        d->perm[j] = t;
    }
    d->pos = 0;
}

int data_split(train_data *d, int T, double valid_frac, uint64_t seed, slmc_err *err) {
    if (T < 1) return slmc_fail(err, NULL, "sequence length %d is not positive", T);
    int64_t n_seq = d->n_tokens > 1 ? (int64_t)((d->n_tokens - 1) / (size_t)T) : 0;
    if (n_seq < 1)
        return slmc_fail(err, NULL, "the text has %zu tokens, fewer than one sequence of %d + 1", d->n_tokens, T);
    int64_t n_valid = valid_frac > 0 ? (int64_t)(n_seq * valid_frac + 0.5) : 0;
    if (valid_frac > 0 && n_valid < 1 && n_seq >= 2) n_valid = 1;
    if (n_valid >= n_seq) n_valid = n_seq - 1;
    d->T = T;
    d->n_valid = n_valid;
    d->n_train = n_seq - n_valid;
    free(d->perm);
    d->perm = malloc(sizeof(int64_t) * (size_t)d->n_train);
    if (!d->perm) return slmc_fail(err, NULL, "out of memory");
    d->rng = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull; /* never 0 for xorshift */
    if (d->rng == 0) d->rng = 1;
    d->epoch = 0;
    shuffle(d);
    return 0;
}

void data_free(train_data *d) {
    free(d->tokens);
    free(d->perm);
    memset(d, 0, sizeof *d);
}

static void copy_seq(const train_data *d, int64_t s, int32_t *inputs, int32_t *targets) {
    const int32_t *src = d->tokens + (size_t)s * (size_t)d->T;
    memcpy(inputs, src, sizeof(int32_t) * (size_t)d->T);
    memcpy(targets, src + 1, sizeof(int32_t) * (size_t)d->T);
}

void data_draw(train_data *d, int64_t n, int64_t *seqs) {
    for (int64_t i = 0; i < n; i++) {
        if (d->pos >= d->n_train) {
            d->epoch++;
            shuffle(d);
        }
        seqs[i] = d->perm[d->pos++];
    }
}

void data_train_seq(const train_data *d, int64_t s, int32_t *inputs, int32_t *targets) { copy_seq(d, s, inputs, targets); }

void data_next_batch(train_data *d, int B, int32_t *inputs, int32_t *targets, int64_t *seqs) {
    for (int b = 0; b < B; b++) {
        int64_t s;
        data_draw(d, 1, &s);
        if (seqs) seqs[b] = s;
        copy_seq(d, s, inputs + (size_t)b * d->T, targets + (size_t)b * d->T);
    }
}

void data_valid_seq(const train_data *d, int64_t i, int32_t *inputs, int32_t *targets) {
    copy_seq(d, d->n_train + i, inputs, targets);
}
