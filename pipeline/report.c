/* report.c - gates, and the JSON / Markdown / SVG reports (see report.h). */
#include "pipeline/report.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a growing string ---------------------------------------------------------------- */

typedef struct sbuf {
    char *s;     /* NUL-terminated text, NULL once an allocation failed */
    size_t len;  /* bytes before the NUL */
    size_t cap;
    bool oom;    /* an allocation failed: the result is NULL */
} sbuf;

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) { b->oom = true; return; }
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *s = realloc(b->s, cap);
        if (!s) { b->oom = true; return; }
        b->s = s;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static char *sb_take(sbuf *b) {
    if (b->oom) { free(b->s); return NULL; }
    if (!b->s) return strdup("");
    return b->s;
}

/* "4.21 MB" (decimal units, as `slmc` prints sizes elsewhere). */
static const char *human_size(uint64_t n, char *buf, size_t size) {
    static const char *const unit[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1000.0 && u < 4) { v /= 1000.0; u++; }
    if (u == 0) snprintf(buf, size, "%llu B", (unsigned long long)n);
    else snprintf(buf, size, "%.2f %s", v, unit[u]);
    return buf;
}

/* ---- gates ------------------------------------------------------------------------------ */

static void add_failure(pl_result *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_failure(pl_result *x, const char *fmt, ...) {
    size_t n = strlen(x->failed);
    if (n && n + 2 < sizeof x->failed) { strcat(x->failed, "; "); n += 2; }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->failed + n, sizeof x->failed - n, fmt, ap);
    va_end(ap);
    x->pass = false;
}

double pl_json_num(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

void pl_result_set_eval(pl_result *x, const json_t *eval, double source_ppl, double source_ppl_stderr) {
    x->has_eval = eval != NULL;
    x->ppl = pl_json_num(eval, "ppl");
    x->ppl_stderr = pl_json_num(eval, "ppl_stderr");
    x->kld = pl_json_num(eval, "kld_mean");
    x->kld_stderr = pl_json_num(eval, "kld_stderr");
    x->same_top = pl_json_num(eval, "same_top_p");
    x->source_ppl = eval ? source_ppl : NAN;
    x->source_ppl_stderr = eval ? source_ppl_stderr : NAN;
    x->ppl_increase = 100.0 * (x->ppl / x->source_ppl - 1.0);
}

void pl_report_gate(pl_report *r) {
    r->pass = true;
    for (int i = 0; i < r->n_results; i++) {
        pl_result *x = &r->results[i];
        const recipe_gates *g = &x->gates;
        x->gated = recipe_gates_any(g);
        x->pass = true;
        x->failed[0] = '\0';
        if (!isnan(g->max_ppl_increase) && !(x->has_eval && x->ppl_increase <= g->max_ppl_increase))
            add_failure(x, "PPL +%.2f%% > +%g%%", x->ppl_increase, g->max_ppl_increase);
        if (!isnan(g->max_kld) && !(x->has_eval && x->kld <= g->max_kld))
            add_failure(x, "KLD %.4f > %g", x->kld, g->max_kld);
        if (!isnan(g->min_same_top) && !(x->has_eval && x->same_top >= g->min_same_top))
            add_failure(x, "same top %.2f%% < %g%%", 100.0 * x->same_top, 100.0 * g->min_same_top);
        if (g->has_max_size && x->size > g->max_size) {
            char a[32], b[32];
            add_failure(x, "size %s > %s", human_size(x->size, a, sizeof a), human_size(g->max_size, b, sizeof b));
        }
        if (!x->pass) r->pass = false;
    }
}

/* ---- JSON ------------------------------------------------------------------------------- */

/* A number, or null when it is not finite (no measurement). */
static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *gates_json(const recipe_gates *g) {
    json_t *o = json_object();
    if (!o) return NULL;
    if (!isnan(g->max_ppl_increase)) json_object_set_new(o, "max_ppl_increase", json_real(g->max_ppl_increase));
    if (!isnan(g->max_kld)) json_object_set_new(o, "max_kld", json_real(g->max_kld));
    if (!isnan(g->min_same_top)) json_object_set_new(o, "min_same_top", json_real(g->min_same_top));
    if (g->has_max_size) json_object_set_new(o, "max_size", json_integer((json_int_t)g->max_size));
    return o;
}

json_t *pl_report_json(const pl_report *r) {
    json_t *root = json_object(), *src = json_object(), *arr = json_array();
    if (!root || !src || !arr) { json_decref(root); json_decref(src); json_decref(arr); return NULL; }
    json_object_set_new(root, "recipe", json_string(r->name));
    json_object_set_new(src, "path", json_string(r->source));
    json_object_set_new(src, "size", json_integer((json_int_t)r->source_size));
    json_object_set_new(src, "n_params", json_integer((json_int_t)r->source_params));
    if (r->has_eval) {
        json_object_set_new(src, "ppl", num(r->source_ppl));
        json_object_set_new(src, "ppl_stderr", num(r->source_ppl_stderr));
    }
    json_object_set_new(root, "source", src);
    if (r->has_eval) {
        json_t *ev = json_object();
        if (ev) {
            json_object_set_new(ev, "text", json_string(r->eval_text));
            json_object_set_new(ev, "ctx", r->eval_ctx ? json_integer(r->eval_ctx) : json_null());
            json_object_set_new(ev, "chunks", r->eval_chunks ? json_integer(r->eval_chunks) : json_null());
            json_object_set_new(root, "eval", ev);
        }
    }
    for (int i = 0; i < r->n_results; i++) {
        const pl_result *x = &r->results[i];
        json_t *o = json_object();
        if (!o) continue;
        json_object_set_new(o, "name", json_string(x->name));
        json_object_set_new(o, "variant", json_string(x->variant));
        json_object_set_new(o, "type", x->type ? json_string(x->type) : json_null());
        json_object_set_new(o, "file", x->file[0] ? json_string(x->file) : json_null());
        json_object_set_new(o, "key", json_string(x->key));
        json_object_set_new(o, "size", json_integer((json_int_t)x->size));
        json_object_set_new(o, "n_params", json_integer((json_int_t)x->n_params));
        json_object_set_new(o, "bpw", num(x->bpw));
        if (x->has_eval) {
            json_object_set_new(o, "ppl", num(x->ppl));
            json_object_set_new(o, "ppl_stderr", num(x->ppl_stderr));
            json_object_set_new(o, "ppl_increase_pct", num(x->ppl_increase));
            json_object_set_new(o, "kld_mean", num(x->kld));
            json_object_set_new(o, "kld_stderr", num(x->kld_stderr));
            json_object_set_new(o, "same_top_p", num(x->same_top));
        }
        json_object_set_new(o, "gates", gates_json(&x->gates));
        json_object_set_new(o, "pass", json_boolean(x->pass));
        if (!x->pass) json_object_set_new(o, "failed", json_string(x->failed));
        json_array_append_new(arr, o);
    }
    json_object_set_new(root, "variants", arr);
    json_object_set_new(root, "pass", json_boolean(r->pass));
    return root;
}

/* ---- Markdown --------------------------------------------------------------------------- */

char *pl_report_markdown(const pl_report *r) {
    sbuf b = {0};
    char s1[32];
    sb_printf(&b, "## slmc pipeline: %s\n\n", r->name);
    sb_printf(&b, "Source `%s`: %s, %llu parameters", r->source, human_size(r->source_size, s1, sizeof s1),
              (unsigned long long)r->source_params);
    if (r->has_eval) {
        sb_printf(&b, ", PPL %.4f ± %.4f on `%s`", r->source_ppl, r->source_ppl_stderr, r->eval_text);
        if (r->eval_ctx) sb_printf(&b, " (context %d", r->eval_ctx);
        if (r->eval_ctx && r->eval_chunks) sb_printf(&b, ", %d chunks)", r->eval_chunks);
        else if (r->eval_ctx) sb_printf(&b, ")");
    }
    sb_printf(&b, ".\n\n");
    sb_printf(&b, "| variant | size | bpw | PPL | ΔPPL | KLD | same top | gates |\n");
    sb_printf(&b, "|---|---:|---:|---:|---:|---:|---:|---|\n");
    int n_pass = 0, n_gated = 0;
    for (int i = 0; i < r->n_results; i++) {
        const pl_result *x = &r->results[i];
        sb_printf(&b, "| %s | %s | %.2f | ", x->name, human_size(x->size, s1, sizeof s1), x->bpw);
        if (x->has_eval)
            sb_printf(&b, "%.4f ± %.4f | %+.2f%% | %.6f | %.2f%% | ", x->ppl, x->ppl_stderr, x->ppl_increase, x->kld,
                      100.0 * x->same_top);
        else
            sb_printf(&b, "– | – | – | – | ");
        if (!x->gated) sb_printf(&b, "no gates |\n");
        else if (x->pass) sb_printf(&b, "✅ pass |\n");
        else sb_printf(&b, "❌ %s |\n", x->failed);
        n_gated += x->gated;
        n_pass += x->gated && x->pass;
    }
    if (n_gated == 0) sb_printf(&b, "\nNo gates.\n");
    else if (r->pass) sb_printf(&b, "\n**All %d gated variants pass.**\n", n_gated);
    else sb_printf(&b, "\n**%d of %d gated variants fail their gates.**\n", n_gated - n_pass, n_gated);
    return sb_take(&b);
}

/* ---- SVG -------------------------------------------------------------------------------- */

/* Chart geometry (pixels). Two panels side by side share the x axis (file size, MB). */
enum { SVG_W = 980, SVG_H = 440, PANEL_W = 400, PANEL_H = 300, LEFT = 70, TOP = 70, GAP = 90 };

/* A "nice" step (1, 2 or 5 times a power of ten) giving about 5 ticks over span. */
static double nice_step(double span) {
    if (!(span > 0)) return 1;
    double raw = span / 5, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

/* Axis range [lo, hi] padded to whole steps, always containing the data and not empty. */
static void axis_range(double mn, double mx, double *lo, double *hi, double *step) {
    if (!(mx > mn)) { mn = mn - (fabs(mn) > 0 ? fabs(mn) * 0.1 : 1); mx = mx + (fabs(mx) > 0 ? fabs(mx) * 0.1 : 1); }
    *step = nice_step(mx - mn);
    *lo = floor(mn / *step) * *step;
    *hi = ceil(mx / *step) * *step;
    if (*hi <= *lo) *hi = *lo + *step;
}

/* XML text escaping for names written into the SVG. */
static void sb_xml(sbuf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '<') sb_printf(b, "&lt;");
        else if (*s == '>') sb_printf(b, "&gt;");
        else if (*s == '&') sb_printf(b, "&amp;");
        else if (*s == '"') sb_printf(b, "&quot;");
        else sb_printf(b, "%c", *s);
    }
}

/* One panel: axes, ticks, grid, a dashed reference line (the source) and the points. */
static void svg_panel(sbuf *b, const pl_report *r, int x0, const char *title, bool kld) {
    double xmn = INFINITY, xmx = -INFINITY, ymn = INFINITY, ymx = -INFINITY;
    for (int i = 0; i < r->n_results; i++) {
        const pl_result *x = &r->results[i];
        if (!x->has_eval) continue;
        double xv = (double)x->size / 1e6, yv = kld ? x->kld : x->ppl;
        if (!isfinite(yv)) continue;
        xmn = fmin(xmn, xv); xmx = fmax(xmx, xv); ymn = fmin(ymn, yv); ymx = fmax(ymx, yv);
    }
    double ref = kld ? 0.0 : r->source_ppl;
    if (isfinite(ref)) { ymn = fmin(ymn, ref); ymx = fmax(ymx, ref); }
    if (!isfinite(xmn)) { xmn = 0; xmx = 1; }
    if (!isfinite(ymn)) { ymn = 0; ymx = 1; }
    /* A margin so points at the extremes do not sit on the frame. */
    double xpad = 0.08 * (xmx > xmn ? xmx - xmn : fabs(xmx) + 1e-9), ypad = 0.08 * (ymx > ymn ? ymx - ymn : fabs(ymx) + 1e-9);
    xmn -= xpad; xmx += xpad; ymn -= ypad; ymx += ypad;
    if (kld || ymn < 0) ymn = fmax(0, ymn);
    if (xmn < 0) xmn = 0;
    double xlo, xhi, xs, ylo, yhi, ys;
    axis_range(xmn, xmx, &xlo, &xhi, &xs);
    axis_range(ymn, ymx, &ylo, &yhi, &ys);
#define PX(v) (x0 + (double)PANEL_W * ((v) - xlo) / (xhi - xlo))
#define PY(v) (TOP + PANEL_H - (double)PANEL_H * ((v) - ylo) / (yhi - ylo))
    sb_printf(b, "<g>\n<text x=\"%d\" y=\"%d\" class=\"title\">%s</text>\n", x0, TOP - 12, title);
    sb_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"frame\"/>\n", x0, TOP, PANEL_W, PANEL_H);
    for (int k = 0; k <= 40; k++) { /* x ticks */
        double v = xlo + k * xs;
        if (v > xhi + xs * 1e-9) break;
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"grid\"/>", PX(v), TOP, PX(v), TOP + PANEL_H);
        sb_printf(b, "<text x=\"%.1f\" y=\"%d\" class=\"tick\" text-anchor=\"middle\">%g</text>\n", PX(v), TOP + PANEL_H + 16, v);
    }
    for (int k = 0; k <= 40; k++) { /* y ticks */
        double v = ylo + k * ys;
        if (v > yhi + ys * 1e-9) break;
        sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"grid\"/>", x0, PY(v), x0 + PANEL_W, PY(v));
        sb_printf(b, "<text x=\"%d\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">%g</text>\n", x0 - 6, PY(v) + 4, v);
    }
    sb_printf(b, "<text x=\"%d\" y=\"%d\" class=\"label\" text-anchor=\"middle\">file size (MB)</text>\n",
              x0 + PANEL_W / 2, TOP + PANEL_H + 36);
    if (isfinite(ref) && !kld) {
        sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"ref\"/>", x0, PY(ref), x0 + PANEL_W, PY(ref));
        sb_printf(b, "<text x=\"%d\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">source</text>\n", x0 + PANEL_W - 4, PY(ref) - 4);
    }
    for (int i = 0; i < r->n_results; i++) {
        const pl_result *x = &r->results[i];
        double yv = kld ? x->kld : x->ppl;
        if (!x->has_eval || !isfinite(yv)) continue;
        const char *cls = !x->gated ? "none" : x->pass ? "pass" : "fail";
        double px = PX((double)x->size / 1e6), py = PY(yv);
        sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" class=\"%s\"><title>", px, py, cls);
        sb_xml(b, x->name);
        sb_printf(b, ": %.3f MB, %s %.6g</title></circle>", (double)x->size / 1e6, kld ? "KLD" : "PPL", yv);
        bool right = px > x0 + 0.7 * PANEL_W; /* labels near the right edge go to the left of the point */
        sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" class=\"point\" text-anchor=\"%s\">", right ? px - 7 : px + 7,
                  py - 6 - 11.0 * (i % 2), right ? "end" : "start");
        sb_xml(b, x->name);
        sb_printf(b, "</text>\n");
    }
    sb_printf(b, "</g>\n");
#undef PX
#undef PY
}

char *pl_report_svg(const pl_report *r) {
    sbuf b = {0};
    sb_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                  "font-family=\"sans-serif\" font-size=\"12\">\n", SVG_W, SVG_H, SVG_W, SVG_H);
    sb_printf(&b, "<style>.frame{fill:none;stroke:#333}.grid{stroke:#ddd}.ref{stroke:#555;stroke-dasharray:6 4}"
                  ".title{font-size:14px;font-weight:bold}.tick{fill:#444;font-size:11px}.label{fill:#222}"
                  ".point{fill:#222;font-size:10px}.pass{fill:#2a9d3a}.fail{fill:#d62828}.none{fill:#3366cc}</style>\n");
    sb_printf(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    sb_printf(&b, "<text x=\"%d\" y=\"24\" class=\"title\">slmc pipeline: ", LEFT);
    sb_xml(&b, r->name);
    sb_printf(&b, " (green: gates pass, red: a gate fails, blue: no gates)</text>\n");
    svg_panel(&b, r, LEFT, "perplexity", false);
    svg_panel(&b, r, LEFT + PANEL_W + GAP, "mean KL divergence from the source", true);
    sb_printf(&b, "</svg>\n");
    return sb_take(&b);
}
