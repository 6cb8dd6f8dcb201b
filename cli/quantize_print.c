/* quantize_print.c - what `slmc quantize` prints from a quantize_result (quantize_print.h):
 * the dry run's plan, the size target's choice, the size table and its JSON. */
#include "quantize_print.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/types.h"

static void print_plan(const model *m, const char *mix, const int *types) {
    printf("plan for %s:\n  %-36s %-20s %-6s -> %-6s %12s\n", mix, "tensor", "shape", "from", "to", "bytes");
    uint64_t *order = model_gguf_order(m);
    for (uint64_t k = 0; k < m->n_tensors; k++) {
        uint64_t i = order ? order[k] : k;
        const model_tensor *t = &m->tensors[i];
        char shape[64];
        printf("  %-36s %-20s %-6s -> %-6s %12" PRIu64 "\n", t->name, cli_shape_str(t, "x", shape, sizeof shape),
               type_name(t->type), type_name(types[i]), quantize_tensor_bytes(t, types[i]));
    }
    free(order);
}

/* The size target's choice (per tensor: type, bytes, estimated error), then the totals. */
void quantize_print_fit(const quantize_result *r) {
    const fit_table *tab = &r->fit;
    const uint64_t budget = r->fit_budget, got = r->fit_res.bytes;
    char hb[32], hr[32];
    printf("fit to %s of tensor data (%.4f bpw over %" PRIu64 " parameters):\n", cli_human_bytes(budget, hb, sizeof hb),
           r->fit_budget_bpw, tab->params);
    printf("  %-36s %-6s %12s %12s\n", "tensor", "type", "bytes", "est. error");
    for (size_t k = 0; k < tab->n; k++) {
        const fit_tensor *ft = &tab->t[k];
        int ch = r->fit_choice[k];
        printf("  %-36s %-6s %12" PRIu64 " %12.4g\n", r->m.tensors[ft->ti].name, type_name(ft->types[ch]), ft->bytes[ch], ft->err[ch]);
    }
    printf("  fixed (not chosen) tensors: %" PRIu64 " bytes\n", tab->fixed_bytes);
    printf("  achieved: %s (%" PRIu64 " bytes, %.2f%% of the budget), %.4f bpw, est. error %.6g\n",
           cli_human_bytes(got, hr, sizeof hr), got, 100.0 * (double)got / (double)budget, r->fit_res.bpw, r->fit_res.err);
    if (r->fit_unfilled)
        printf("  note: the largest types give only %" PRIu64 " bytes; the budget cannot be filled\n", fit_max_bytes(tab));
}

static json_t *fit_json(const quantize_result *r) {
    json_t *o = json_pack("{s:I, s:I, s:f, s:f}", "budget_bytes", (json_int_t)r->fit_budget, "bytes",
                          (json_int_t)r->fit_res.bytes, "bpw", r->fit_res.bpw, "est_error", r->fit_res.err);
    json_t *per = json_object();
    for (size_t k = 0; k < r->fit.n; k++) {
        const fit_tensor *ft = &r->fit.t[k];
        int ch = r->fit_choice[k];
        json_object_set_new(per, r->m.tensors[ft->ti].name, json_pack("{s:s, s:I, s:f}", "type", type_name(ft->types[ch]),
                                                                      "bytes", (json_int_t)ft->bytes[ch], "est_error", ft->err[ch]));
    }
    json_object_set_new(o, "tensors", per);
    return o;
}

/* An array with one object per output: {type, output, bytes, params, bpw, tensors_per_type,
 * seconds}, then the fit, and the plan (dry run) or GPTQ's mode. */
void quantize_print_json(const quantize_run_opts *o, const quantize_result *r) {
    json_t *arr = json_array(), *fit = r->fitted ? fit_json(r) : NULL;
    for (int g = 0; g < r->n_outputs; g++) {
        const quantize_output *out = &r->outputs[g];
        const quant_stats *s = &out->stats;
        json_t *j = json_pack("{s:s, s:s?, s:I, s:I, s:f}", "type", out->label, "output", out->path, "bytes", (json_int_t)s->bytes,
                              "params", (json_int_t)s->params, "bpw", quantize_output_bpw(out));
        json_t *per = json_object();
        for (int t = 0; t < GGML_TYPE_COUNT; t++)
            if (s->n_by_type[t]) json_object_set_new(per, type_name(t), json_integer((json_int_t)s->n_by_type[t]));
        json_object_set_new(j, "tensors_per_type", per);
        json_object_set_new(j, "seconds", json_real(s->seconds));
        if (fit && strcmp(out->label, QUANTIZE_FIT) == 0) json_object_set(j, "fit", fit);
        if (o->dry_run) {
            json_t *plan = json_object();
            for (uint64_t i = 0; i < r->m.n_tensors; i++) json_object_set_new(plan, r->m.tensors[i].name, json_string(type_name(out->types[i])));
            json_object_set_new(j, "plan", plan);
        } else if (r->gptq) {
            json_object_set_new(j, "method", json_string("gptq"));
            json_object_set_new(j, "gptq_mode", json_string(quantize_gptq_mode_name(r->gptq_mode)));
        }
        json_array_append_new(arr, j);
    }
    cli_print_json(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(fit);
}

/* Per output: the plan (dry run), then mix, path, size, bits per weight, tensors per type. */
void quantize_print_text(const quantize_run_opts *o, const quantize_result *r) {
    for (int g = 0; g < r->n_outputs; g++) {
        const quantize_output *out = &r->outputs[g];
        const quant_stats *s = &out->stats;
        char hb[32];
        if (o->dry_run) print_plan(&r->m, out->label, out->types);
        printf("%-8s %-40s %10s %6.2f bpw ", out->label, o->dry_run ? "(dry run)" : out->path,
               cli_human_bytes(s->bytes, hb, sizeof hb), quantize_output_bpw(out));
        const char *sep = "";
        for (int t = 0; t < GGML_TYPE_COUNT; t++)
            if (s->n_by_type[t]) { printf("%s%s:%" PRIu64, sep, type_name(t), s->n_by_type[t]); sep = " "; }
        printf("\n");
    }
    if (o->dry_run) return;
    printf("%.2fs\n", r->seconds);
    const gptq_calib_info *gi = &r->gptq_info;
    if (r->gptq)
        printf("gptq: %d chunks of %d tokens, %d forward passes; %.2fs collecting Hessians, %.2fs quantizing\n", gi->chunks,
               gi->n_ctx, gi->passes, gi->collect_seconds, gi->quant_seconds);
}
