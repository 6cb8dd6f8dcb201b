/* test_recipe.c - the pipeline's recipe parser (every error path), SHA-256 against FIPS 180-4's
 * examples, and the gates and reports.
 * (pipeline/recipe.h, pipeline/sha256.h, pipeline/report.h, linked from libslmc.a)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pipeline/recipe.h"
#include "pipeline/report.h"
#include "pipeline/sha256.h"
#include "testutil.h"

/* ---- SHA-256 ----------------------------------------------------------------------------- */

START_TEST(sha256_fips_examples) {
    char hex[65];
    sha256_buf_hex("abc", 3, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_buf_hex("", 0, hex);
    ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 448 bits: padding spills */
    sha256_buf_hex(two, strlen(two), hex);
    ck_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* one million 'a', fed in uneven pieces to exercise the partial-block path */
    char *a = malloc(1000000);
    ck_assert_ptr_nonnull(a);
    memset(a, 'a', 1000000);
    sha256_ctx c;
    uint8_t d[32];
    sha256_init(&c);
    size_t off = 0, step = 1;
    while (off < 1000000) {
        size_t n = step < 1000000 - off ? step : 1000000 - off;
        sha256_update(&c, a + off, n);
        off += n;
        step = step * 3 % 997 + 1;
    }
    sha256_final(&c, d);
    sha256_hex(d, hex);
    ck_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}
END_TEST

/* ---- valid recipes ----------------------------------------------------------------------- */

static const char *FULL =
    "# a full recipe\n"
    "name: demo\n"
    "source: models/base-hf\n"
    "threads: 4\n"
    "eval:\n"
    "  text: eval.txt\n"
    "  ctx: 128\n"
    "  chunks: 8\n"
    "gates:\n"
    "  max_ppl_increase: 25%\n"
    "  max_kld: 0.5\n"
    "variants:\n"
    "  - name: q\n"
    "    steps:\n"
    "      - convert: {outtype: f16}\n"
    "      - imatrix: {text: calib.txt, chunks: 4, ctx: 64}\n"
    "      - quantize:\n"
    "          types: [q4_k_m, Q8_0, Q5_K]\n"
    "          pure: yes\n"
    "    gates:\n"
    "      max_size: 4MB\n"
    "      Q4_K_M: {max_kld: 1.5, min_same_top: 60%}\n"
    "  - name: small\n"
    "    steps:\n"
    "      - prune: {calib: calib.txt, ffn: 0.75, heads: 4}\n"
    "      - distill: {data: /abs/train.txt, steps: 20, lr: 1e-3, reverse_kl: false}\n"
    "      - quantize: {types: Q4_0}\n"
    "      - eval: {text: other.txt}\n"
    "  - name: f16\n"
    "    steps:\n"
    "      - convert\n";

START_TEST(parses_full_recipe) {
    recipe r;
    slmc_err err = {{0}};
    int rc = recipe_parse(&r, "dir/sub/r.yaml", FULL, strlen(FULL), &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    ck_assert_str_eq(r.name, "demo");
    ck_assert_str_eq(r.source, "dir/sub/models/base-hf"); /* relative to the recipe's folder */
    ck_assert_str_eq(r.source_text, "models/base-hf");
    ck_assert_int_eq(r.threads, 4);
    ck_assert(r.has_eval);
    ck_assert_str_eq(recipe_step_value(&r.eval, "text"), "dir/sub/eval.txt");
    ck_assert_str_eq(recipe_step_value(&r.eval, "ctx"), "128");
    ck_assert_int_eq(r.n_variants, 3);

    const recipe_variant *q = &r.variants[0];
    ck_assert_str_eq(q->name, "q");
    ck_assert_int_eq(q->n_steps, 3);
    ck_assert_int_eq(q->steps[0].kind, RS_CONVERT);
    ck_assert_int_eq(q->steps[1].kind, RS_IMATRIX);
    ck_assert_int_eq(q->steps[1].line, 16);
    /* options are stored in the table's order, not the file's: text, ctx, chunks */
    ck_assert_str_eq(q->steps[1].opts[0].spec->key, "text");
    ck_assert_str_eq(q->steps[1].opts[1].spec->key, "ctx");
    ck_assert_str_eq(q->steps[1].opts[2].spec->key, "chunks");
    const recipe_opt *types = recipe_variant_types(q);
    ck_assert_int_eq(types->n_values, 3);
    ck_assert_str_eq(types->values[0], "Q4_K_M"); /* canonical names, aliases resolved */
    ck_assert_str_eq(types->values[1], "Q8_0");
    ck_assert_str_eq(types->values[2], "Q5_K_M");
    ck_assert_str_eq(recipe_step_value(&q->steps[2], "pure"), "true");
    /* gates: recipe-level, overridden per variant, then per type */
    ck_assert(fabs(q->gates.max_ppl_increase - 25.0) < 1e-12);
    ck_assert(fabs(q->gates.max_kld - 0.5) < 1e-12);
    ck_assert(q->gates.has_max_size && q->gates.max_size == 4000000);
    const recipe_gates *g4 = recipe_gates_for(q, "Q4_K_M");
    ck_assert(fabs(g4->max_kld - 1.5) < 1e-12);
    ck_assert(fabs(g4->min_same_top - 0.6) < 1e-12);
    ck_assert(g4->has_max_size && g4->max_size == 4000000);
    ck_assert(fabs(g4->max_ppl_increase - 25.0) < 1e-12);
    const recipe_gates *g8 = recipe_gates_for(q, "Q8_0");
    ck_assert(fabs(g8->max_kld - 0.5) < 1e-12 && isnan(g8->min_same_top));
    ck_assert_ptr_eq(recipe_variant_eval(&r, q), &r.eval);

    const recipe_variant *s = &r.variants[1];
    ck_assert_int_eq(s->n_steps, 4);
    ck_assert_str_eq(recipe_step_value(&s->steps[0], "ffn"), "0.75");
    ck_assert_str_eq(recipe_step_value(&s->steps[1], "data"), "/abs/train.txt"); /* absolute stays */
    ck_assert_str_eq(recipe_step_value(&s->steps[1], "reverse_kl"), "false");
    ck_assert_str_eq(recipe_step_value(&s->steps[1], "lr"), "1e-3");
    const recipe_step *ev = recipe_variant_eval(&r, s);
    ck_assert_ptr_eq(ev, &s->steps[3]);
    ck_assert_str_eq(recipe_step_value(ev, "text"), "dir/sub/other.txt");

    const recipe_variant *f = &r.variants[2];
    ck_assert_int_eq(f->n_steps, 1);
    ck_assert_int_eq(f->steps[0].kind, RS_CONVERT);
    ck_assert_int_eq(f->steps[0].n_opts, 0);
    ck_assert_ptr_null(recipe_variant_types(f));
    recipe_free(&r);
}
END_TEST

START_TEST(steps_form_is_one_variant_named_after_the_file) {
    const char *y = "source: m.gguf\nsteps:\n  - quantize: {types: 'Q4_0,Q8_0'}\n";
    recipe r;
    slmc_err err = {{0}};
    ck_assert_msg(recipe_parse(&r, "/x/my recipe.v2.yaml", y, strlen(y), &err) == 0, "%s", err.msg);
    ck_assert_str_eq(r.name, "my_recipe.v2");
    ck_assert_str_eq(r.source, "/x/m.gguf");
    ck_assert_int_eq(r.n_variants, 1);
    ck_assert_str_eq(r.variants[0].name, "my_recipe.v2");
    const recipe_opt *t = recipe_variant_types(&r.variants[0]);
    ck_assert_int_eq(t->n_values, 2);
    ck_assert_str_eq(t->values[1], "Q8_0");
    ck_assert(!r.has_eval);
    ck_assert(!recipe_gates_any(&r.variants[0].gates));
    recipe_free(&r);
}
END_TEST

START_TEST(parses_sizes) {
    uint64_t n;
    ck_assert(recipe_parse_size("4MB", &n) && n == 4000000);
    ck_assert(recipe_parse_size("1.5GiB", &n) && n == 1610612736ull);
    ck_assert(recipe_parse_size("123", &n) && n == 123);
    ck_assert(recipe_parse_size("2 kb", &n) && n == 2000);
    ck_assert(!recipe_parse_size("4XB", &n));
    ck_assert(!recipe_parse_size("-1", &n));
    ck_assert(!recipe_parse_size("", &n));
}
END_TEST

/* ---- every error path -------------------------------------------------------------------- */

typedef struct bad_case {
    const char *yaml;
    const char *msg; /* the whole expected message */
} bad_case;

static const bad_case BAD[] = {
    {"", "r.yaml:1: the recipe is empty"},
    {"source: [a\n", "r.yaml:2: did not find expected ',' or ']' while parsing a flow sequence"},
    {"- a\n- b\n", "r.yaml:1: a recipe must be a mapping (key: value lines)"},
    {"source: m\nsource: n\nsteps: []\n", "r.yaml:2: a recipe: duplicate key 'source'"},
    {"source: m\nsteps: []\n---\nsource: n\n", "r.yaml:4: a recipe is one YAML document ('---' starts a second)"},
    {"source: m\nstep: []\n", "r.yaml:2: unknown key 'step' (keys: name, source, tokenizer, threads, eval, gates, steps, variants)"},
    {"steps: []\n", "r.yaml:1: a recipe needs 'source:' (the model to compress)"},
    {"source: \"\"\nsteps: []\n", "r.yaml:1: source is empty"},
    {"source: [a]\nsteps: []\n", "r.yaml:1: source must be a single value, not a list"},
    {"source: \"a\\0b\"\nsteps: []\n", "r.yaml:1: source contains a NUL byte"},
    {"source: m\n", "r.yaml:1: a recipe needs 'steps:' or 'variants:'"},
    {"source: m\nsteps: []\nvariants: []\n", "r.yaml:3: give 'steps:' (one variant) or 'variants:', not both"},
    {"name: a/b\nsource: m\nsteps: []\n", "r.yaml:1: name 'a/b' may use only letters, digits, '.', '_' and '-'"},
    {"source: m\nthreads: 0\nsteps: []\n", "r.yaml:2: threads must be 1..4096, not '0'"},
    {"source: m\nsteps: {a: 1}\n", "r.yaml:2: steps must be a list ('- quantize: {...}' lines)"},
    {"source: m\nsteps:\n  - compress\n", "r.yaml:3: unknown step 'compress' (steps: convert, imatrix, prune, distill, quantize, eval)"},
    {"source: m\nsteps:\n  - {convert: {}, prune: {}}\n",
     "r.yaml:3: a step is one 'kind: options' pair, e.g. '- quantize: {types: [Q4_K_M]}' (found 2 keys)"},
    {"source: m\nsteps:\n  - [convert]\n", "r.yaml:3: a step must be 'kind: options', not a list"},
    {"source: m\nsteps:\n  - quantize: {typs: [Q4_0]}\n",
     "r.yaml:3: quantize: unknown option 'typs' (options: types, imatrix, pure, leave_output_tensor, output_tensor_type, "
     "token_embedding_type, tensor_type, method, calib, ctx, chunks, damp)"},
    {"source: m\nsteps:\n  - quantize\n", "r.yaml:3: quantize needs the option 'types'"},
    {"source: m\nsteps:\n  - quantize: {pure: true}\n", "r.yaml:3: quantize needs the option 'types'"},
    {"source: m\nsteps:\n  - quantize: {types: [Q4_0, Q9_K]}\n",
     "r.yaml:3: quantize: unknown type 'Q9_K' (the mixes of slmc quantize --help)"},
    {"source: m\nsteps:\n  - quantize: {types: [iq2_m, IQ2_M]}\n", "r.yaml:3: quantize: type IQ2_M is listed twice"},
    {"source: m\nsteps:\n  - quantize: {types: [Q4_K, Q4_K_M]}\n", "r.yaml:3: quantize: type Q4_K_M is listed twice"},
    {"source: m\nsteps:\n  - quantize: {types: []}\n", "r.yaml:3: quantize: types is an empty list"},
    {"source: m\nsteps:\n  - quantize: {types: [Q4_0], tensor_type: []}\n", "r.yaml:3: quantize: tensor_type is an empty list"},
    {"source: m\nsteps:\n  - quantize: {types: [Q4_0], pure: maybe}\n", "r.yaml:3: quantize: pure must be true or false, not 'maybe'"},
    {"source: m\nsteps:\n  - quantize: {types: [Q4_0], ctx: -5}\n", "r.yaml:3: quantize: ctx must be a whole number >= 0, not '-5'"},
    {"source: m\nsteps:\n  - quantize: {types: [Q4_0], damp: lots}\n", "r.yaml:3: quantize: damp must be a number, not 'lots'"},
    {"source: m\nsteps:\n  - quantize: {types: [Q4_0], method: awq}\n", "r.yaml:3: quantize: method must be one of plain|gptq, not 'awq'"},
    {"source: m\nsteps:\n  - prune: {ffn: half}\n", "r.yaml:3: prune: ffn must be a count (512, 11M) or a fraction (0.75), not 'half'"},
    {"source: m\nsteps:\n  - convert: {outtype: {a: 1}}\n", "r.yaml:3: convert: outtype must be a single value, not a mapping"},
    {"source: m\nsteps:\n  - convert: [a]\n", "r.yaml:3: convert options must be a mapping (key: value lines)"},
    {"source: m\nsteps:\n  - distill: {steps: 5}\n", "r.yaml:3: distill needs the option 'data'"},
    {"source: m\nsteps:\n  - quantize: {types: Q4_0}\n  - convert\n",
     "r.yaml:4: variant 'r': convert after quantize (quantize is the last step, before an optional eval)"},
    {"source: m\nsteps:\n  - eval: {text: t}\n  - quantize: {types: Q4_0}\n", "r.yaml:4: variant 'r': eval must be the last step"},
    {"source: m\nsteps:\n  - imatrix: {text: t}\n  - prune: {ffn: 0.5}\n  - quantize: {types: Q4_0}\n",
     "r.yaml:4: variant 'r': prune changes the model after the imatrix at line 3; put imatrix after it"},
    {"source: m\nsteps:\n  - imatrix: {text: t}\n  - imatrix: {text: t}\n  - quantize: {types: Q4_0}\n",
     "r.yaml:4: variant 'r': a second imatrix step"},
    {"source: m\nsteps:\n  - imatrix: {text: t}\n", "r.yaml:3: variant 'r': imatrix without a quantize step to use it"},
    {"source: m\ngates: {max_kld: 1}\nsteps: []\n", "r.yaml:2: gates need eval settings (add an 'eval:' section)"},
    {"source: m\neval: {ctx: 5}\nsteps: []\n", "r.yaml:2: eval needs the option 'text'"},
    {"source: m\neval: 5\nsteps: []\n", "r.yaml:2: eval must be a mapping (key: value lines)"},
    {"source: m\neval: {text: t}\ngates: {max_kld: -1}\nsteps: []\n", "r.yaml:3: gates: max_kld must be a number >= 0, not '-1'"},
    {"source: m\neval: {text: t}\ngates: {max_ppl_increase: lots}\nsteps: []\n",
     "r.yaml:3: gates: max_ppl_increase must be a percentage >= 0 (5 or 5%), not 'lots'"},
    {"source: m\neval: {text: t}\ngates: {min_same_top: 120%}\nsteps: []\n",
     "r.yaml:3: gates: min_same_top must be between 0 and 1 (or 0% and 100%), not '120%'"},
    {"source: m\neval: {text: t}\ngates: {max_size: big}\nsteps: []\n",
     "r.yaml:3: gates: max_size must be a size (4MB, 1.5GiB, bytes), not 'big'"},
    {"source: m\neval: {text: t}\ngates: {max_speed: 1}\nsteps: []\n",
     "r.yaml:3: gates: unknown gate 'max_speed' (gates: max_ppl_increase, max_kld, min_same_top, max_size; per-type gates go in a variant)"},
    {"source: m\nvariants: {a: 1}\n", "r.yaml:2: variants must be a list ('- name: ...' entries)"},
    {"source: m\nvariants: []\n", "r.yaml:2: variants is an empty list"},
    {"source: m\nvariants:\n  - steps: []\n", "r.yaml:3: a variant needs a name"},
    {"source: m\nvariants:\n  - name: .hidden\n", "r.yaml:3: variant name '.hidden' may use only letters, digits, '.', '_' and '-' (not first '.')"},
    {"source: m\nvariants:\n  - name: a\n    step: []\n", "r.yaml:4: variant: unknown key 'step' (keys: name, steps, gates)"},
    {"source: m\nvariants:\n  - name: a\n  - name: a\n", "r.yaml:4: a second variant named 'a'"},
    {"source: m\nvariants:\n  - name: a-Q4_0\n  - name: a\n    steps: [{quantize: {types: Q4_0}}]\n",
     "r.yaml:4: variants 'a-Q4_0' and 'a' both write a-Q4_0.gguf"},
    {"source: m\nvariants:\n  - name: a\n    gates: {max_kld: 1}\n",
     "r.yaml:4: variant 'a' has gates but no eval settings (add an 'eval:' section)"},
    {"source: m\neval: {text: t}\nvariants:\n  - name: a\n    steps: [{quantize: {types: Q4_0}}]\n    gates: {Q8_0: {max_kld: 1}}\n",
     "r.yaml:6: gates: variant 'a' does not quantize to Q8_0"},
    {"source: m\neval: {text: t}\nvariants:\n  - name: a\n    steps: [{quantize: {types: Q4_0}}]\n    gates: {Q4_0: {max_kb: 1}}\n",
     "r.yaml:6: gates: Q4_0: unknown gate 'max_kb' (gates: max_ppl_increase, max_kld, min_same_top, max_size)"},
    {"source: m\neval: {text: t}\nvariants:\n  - name: a\n    steps: [{quantize: {types: Q4_0}}]\n    gates: {Q4_0: 3}\n",
     "r.yaml:6: gates: Q4_0 must be a mapping (key: value lines)"},
    {"source: m\neval: {text: t}\nvariants:\n  - name: a\n    gates: {foo: 3}\n",
     "r.yaml:5: gates: unknown gate 'foo' (gates: max_ppl_increase, max_kld, min_same_top, max_size, or a quantize type)"},
    {"source: m\nsteps: [{quantize: {types: Q4_0}}]\n? [a]\n: b\n", "r.yaml:3: a recipe: keys must be plain names"},
    {"source: &a [*a]\nsteps: []\n", "r.yaml:1: source must be a single value, not a list"},
};

START_TEST(every_error_names_file_and_line) {
    for (size_t i = 0; i < sizeof BAD / sizeof *BAD; i++) {
        recipe r;
        slmc_err err = {{0}};
        int rc = recipe_parse(&r, "r.yaml", BAD[i].yaml, strlen(BAD[i].yaml), &err);
        ck_assert_msg(rc == -1, "case %zu parsed: %s", i, BAD[i].yaml);
        ck_assert_msg(strcmp(err.msg, BAD[i].msg) == 0, "case %zu:\n  got      %s\n  expected %s", i, err.msg, BAD[i].msg);
        ck_assert_ptr_null(r.variants); /* left empty */
        recipe_free(&r);
    }
}
END_TEST

START_TEST(load_reports_missing_file) {
    recipe r;
    slmc_err err = {{0}};
    ck_assert_int_eq(recipe_load(&r, "/nonexistent/r.yaml", &err), -1);
    ck_assert_msg(strncmp(err.msg, "/nonexistent/r.yaml: ", 21) == 0, "%s", err.msg);
}
END_TEST

/* ---- gates and reports ------------------------------------------------------------------- */

static pl_result result(const char *name, uint64_t size, double ppl, double kld, double same) {
    pl_result x;
    memset(&x, 0, sizeof x);
    snprintf(x.name, sizeof x.name, "%s", name);
    x.variant = "v";
    x.size = size;
    x.n_params = 1000000;
    x.bpw = 8.0 * (double)size / 1e6;
    x.has_eval = true;
    x.ppl = ppl;
    x.ppl_increase = 100.0 * (ppl / 10.0 - 1.0);
    x.kld = kld;
    x.same_top = same;
    x.gates = recipe_gates_none();
    return x;
}

START_TEST(gates_and_reports) {
    pl_result res[3] = {result("v-Q8_0", 1100000, 10.1, 0.01, 0.95), result("v-Q2_K", 400000, 14.0, 0.9, 0.6),
                        result("v-F16", 2000000, 10.0, 0.0, 1.0)};
    res[0].gates.max_kld = 0.05;
    res[0].gates.max_ppl_increase = 2;
    res[1].gates.max_kld = 0.5;
    res[1].gates.max_ppl_increase = 20;
    res[1].gates.min_same_top = 0.7;
    res[1].gates.max_size = 300000;
    res[1].gates.has_max_size = true;
    pl_report rep = {.name = "t", .source = "m-hf", .source_size = 2000000, .source_params = 1000000, .has_eval = true,
                     .source_ppl = 10.0, .source_ppl_stderr = 0.5, .eval_text = "e.txt", .eval_ctx = 128, .eval_chunks = 4,
                     .results = res, .n_results = 3};
    pl_report_gate(&rep);
    ck_assert(res[0].pass && res[0].gated);
    ck_assert(!res[1].pass);
    ck_assert_str_eq(res[1].failed, "PPL +40.00% > +20%; KLD 0.9000 > 0.5; same top 60.00% < 70%; size 400.00 kB > 300.00 kB");
    ck_assert(res[2].pass && !res[2].gated);
    ck_assert(!rep.pass);

    char *md = pl_report_markdown(&rep);
    ck_assert_ptr_nonnull(md);
    ck_assert_msg(strstr(md, "| v-Q8_0 | 1.10 MB | 8.80 | 10.1000 ± 0.0000 | +1.00% | 0.010000 | 95.00% | ✅ pass |\n"), "%s", md);
    ck_assert(strstr(md, "| v-Q2_K | 400.00 kB | 3.20 | 14.0000 ± 0.0000 | +40.00% | 0.900000 | 60.00% | ❌ PPL +40.00% > +20%;"));
    ck_assert(strstr(md, "| v-F16 | 2.00 MB | 16.00 | 10.0000 ± 0.0000 | +0.00% | 0.000000 | 100.00% | no gates |\n"));
    ck_assert(strstr(md, "**1 of 2 gated variants fail their gates.**"));
    ck_assert(strstr(md, "Source `m-hf`: 2.00 MB, 1000000 parameters, PPL 10.0000 ± 0.5000 on `e.txt` (context 128, 4 chunks)."));
    free(md);

    char *svg = pl_report_svg(&rep);
    ck_assert_ptr_nonnull(svg);
    ck_assert(strncmp(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\"", 39) == 0);
    ck_assert(strstr(svg, "class=\"fail\"><title>v-Q2_K: 0.400 MB, PPL 14</title>"));
    ck_assert(strstr(svg, "class=\"pass\"><title>v-Q8_0: 1.100 MB, KLD 0.01</title>"));
    ck_assert(strstr(svg, "class=\"none\"><title>v-F16"));
    ck_assert(strcmp(svg + strlen(svg) - 7, "</svg>\n") == 0);
    free(svg);

    json_t *j = pl_report_json(&rep);
    ck_assert_ptr_nonnull(j);
    ck_assert(json_is_false(json_object_get(j, "pass")));
    json_t *v1 = json_array_get(json_object_get(j, "variants"), 1);
    ck_assert_str_eq(json_string_value(json_object_get(v1, "name")), "v-Q2_K");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(v1, "gates"), "max_size")), 300000);
    ck_assert(fabs(json_real_value(json_object_get(v1, "ppl_increase_pct")) - 40.0) < 1e-9);
    json_decref(j);
}
END_TEST

/* The unit tests' recipes serve as fuzzing seeds (fuzz/run.sh sets SLMC_FUZZ_SEEDS). */
START_TEST(save_fuzz_seeds) {
    const char *dir = getenv("SLMC_FUZZ_SEEDS");
    if (!dir) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/recipe", dir);
    mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/recipe/full.yaml", dir);
    ck_assert_int_eq(write_bytes(path, FULL, strlen(FULL)), 0);
    for (size_t i = 0; i < sizeof BAD / sizeof *BAD; i++) {
        snprintf(path, sizeof path, "%s/recipe/bad-%02zu.yaml", dir, i);
        ck_assert_int_eq(write_bytes(path, BAD[i].yaml, strlen(BAD[i].yaml)), 0);
    }
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("recipe");
    TCase *t = tcase_create("core");
    tcase_add_test(t, sha256_fips_examples);
    tcase_add_test(t, parses_full_recipe);
    tcase_add_test(t, steps_form_is_one_variant_named_after_the_file);
    tcase_add_test(t, parses_sizes);
    tcase_add_test(t, every_error_names_file_and_line);
    tcase_add_test(t, load_reports_missing_file);
    tcase_add_test(t, gates_and_reports);
    tcase_add_test(t, save_fuzz_seeds);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return run_suite(suite()); }
