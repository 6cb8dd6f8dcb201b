/* test_comm.c - comm/: the sum over units is the same tree, hence the same bits, however the
 * units are shared among ranks. The ranks are played in one process (comm with mpi false):
 * each rank's sum takes its share, and rank 0 joins the others' subtrees in rank order, as
 * comm_sum_finish does with the pieces MPI brings it. tests/e2e/mpi.sh runs the real thing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "testutil.h"

#define LEN 5

/* Units of very different sizes, so that the order of the additions shows in the bits. */
static void unit_values(int64_t u, float *v) {
    for (int i = 0; i < LEN; i++) {
        double x = sin((double)(u * 7 + i) * 1.3) * pow(10.0, (double)((u * 3 + i) % 9) - 4);
        v[i] = (float)x;
    }
}

/* The definition: the perfect tree over [lo, lo + width) with the units >= n left out. */
static int tree_ref(int64_t lo, int64_t width, int64_t n, float *out) {
    if (lo >= n) return 0;
    if (width == 1) {
        unit_values(lo, out);
        return 1;
    }
    float a[LEN], b[LEN];
    int ha = tree_ref(lo, width / 2, n, a), hb = tree_ref(lo + width / 2, width / 2, n, b);
    for (int i = 0; i < LEN; i++) out[i] = hb ? a[i] + b[i] : a[i];
    return ha;
}

/* The sum as n_ranks ranks compute it. */
static void sum_as_ranks(int64_t n, int n_ranks, float *out) {
    comm cs[8];
    comm_sum s[8];
    slmc_err err;
    for (int r = 0; r < n_ranks; r++) {
        cs[r] = (comm){r, n_ranks, false};
        ck_assert_int_eq(comm_sum_init(&s[r], &cs[r], COMM_F32, LEN, n, &err), 0);
        for (int64_t u = s[r].lo; u < s[r].hi; u++) {
            float v[LEN];
            unit_values(u, v);
            CK_ASSERT_QUIET(comm_sum_add(&s[r], v, &err) == 0, "comm_sum_add: %s", err.msg);
        }
    }
    for (int r = 1; r < n_ranks; r++) comm_sum_take(&s[0], &s[r]);
    ck_assert_msg(comm_sum_finish(&s[0], out, &err) == 0, "%s", err.msg);
    for (int r = 0; r < n_ranks; r++) comm_sum_free(&s[r]);
}

START_TEST(test_tree_any_split) {
    int left_fold_differs = 0;
    for (int64_t n = 0; n <= 70; n++) {
        float ref[LEN] = {0};
        int64_t width = 1;
        while (width < n) width *= 2;
        tree_ref(0, width, n, ref);
        for (int ranks = 1; ranks <= 8; ranks++) {
            float got[LEN];
            sum_as_ranks(n, ranks, got);
            CK_ASSERT_QUIET(memcmp(got, ref, sizeof ref) == 0, "n = %lld on %d ranks: not the tree's bits",
                          (long long)n, ranks);
        }
        /* the tree is not the plain left-to-right sum: the test would not see a wrong order */
        float fold[LEN] = {0}, v[LEN];
        for (int64_t u = 0; u < n; u++) {
            unit_values(u, v);
            for (int i = 0; i < LEN; i++) fold[i] += v[i];
        }
        if (memcmp(fold, ref, sizeof ref) != 0) left_fold_differs++;
    }
    ck_assert_int_gt(left_fold_differs, 10);
}
END_TEST

START_TEST(test_f64_and_share) {
    /* doubles: 1e16 + 1 + ... loses the ones one way and not the other */
    const int64_t n = 6;
    double vals[6] = {1e16, 1, 1, 1, 1, -1e16};
    double want = ((1e16 + 1) + (1.0 + 1.0)) + (1.0 + -1e16); /* the tree of 6: ((01)(23))(45) */
    for (int ranks = 1; ranks <= 4; ranks++) {
        comm cs[4];
        comm_sum s[4];
        slmc_err err;
        for (int r = 0; r < ranks; r++) {
            cs[r] = (comm){r, ranks, false};
            ck_assert_int_eq(comm_sum_init(&s[r], &cs[r], COMM_F64, 1, n, &err), 0);
            for (int64_t u = s[r].lo; u < s[r].hi; u++) ck_assert_int_eq(comm_sum_add(&s[r], &vals[u], &err), 0);
        }
        for (int r = 1; r < ranks; r++) comm_sum_take(&s[0], &s[r]);
        double got = -1;
        ck_assert_int_eq(comm_sum_finish(&s[0], &got, &err), 0);
        ck_assert(memcmp(&got, &want, sizeof got) == 0);
        for (int r = 0; r < ranks; r++) comm_sum_free(&s[r]);
    }
    /* shares: contiguous, in rank order, sizes differing by at most one */
    for (int size = 1; size <= 5; size++)
        for (int64_t total = 0; total < 13; total++) {
            comm c = {0, size, false};
            int64_t next = 0;
            for (int r = 0; r < size; r++) {
                int64_t lo, hi;
                comm_share(&c, total, r, &lo, &hi);
                ck_assert_int_eq(lo, next);
                ck_assert(hi - lo == total / size || hi - lo == total / size + 1);
                next = hi;
            }
            ck_assert_int_eq(next, total);
        }
}
END_TEST

START_TEST(test_misuse_refused) {
    comm c = {1, 3, false};
    comm_sum s;
    slmc_err err;
    float v[LEN] = {0}, out[LEN];
    ck_assert_int_eq(comm_sum_init(&s, &c, COMM_F32, LEN, 7, &err), 0); /* rank 1 owns [3, 5) */
    ck_assert_int_eq(s.lo, 3);
    ck_assert_int_eq(s.hi, 5);
    ck_assert_int_eq(comm_sum_add(&s, v, &err), 0);
    ck_assert_int_eq(comm_sum_finish(&s, out, &err), -1); /* one unit short */
    ck_assert_ptr_nonnull(strstr(err.msg, "after 1 of its 2 units"));
    ck_assert_int_eq(comm_sum_add(&s, v, &err), 0);
    ck_assert_int_eq(comm_sum_add(&s, v, &err), -1); /* past the share */
    ck_assert_ptr_nonnull(strstr(err.msg, "past its share [3, 5)"));
    comm_sum_free(&s);
    ck_assert_int_eq(comm_sum_init(&s, &c, COMM_F32, LEN, -1, &err), -1);
    /* a job of one: agreement is the status itself */
    ck_assert_int_eq(comm_agree(&comm_solo, 0, &err), 0);
    ck_assert_int_eq(comm_agree(&comm_solo, -1, &err), -1);
    int any = 0;
    ck_assert_int_eq(comm_any(&comm_solo, 5, &any, &err), 0);
    ck_assert_int_eq(any, 1);
    int32_t mine[3] = {1, 2, 3}, *all = NULL;
    size_t n_all = 0;
    ck_assert_int_eq(comm_allgather_i32(&comm_solo, mine, 3, &all, &n_all, &err), 0);
    ck_assert(n_all == 3 && all[2] == 3);
    free(all);
    void *bytes = NULL;
    ck_assert_int_eq(comm_allgather(&comm_solo, "abc", 3, &bytes, &n_all, &err), 0);
    ck_assert(n_all == 3 && memcmp(bytes, "abc", 3) == 0);
    free(bytes);
    /* a job of one keeps root's buffer as it is */
    char text[] = "root";
    void *buf = text;
    size_t len = 4;
    ck_assert_int_eq(comm_bcast_alloc(&comm_solo, &buf, &len, 0, &err), 0);
    ck_assert(buf == text && len == 4);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("comm");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_tree_any_split);
    tcase_add_test(tc, test_f64_and_share);
    tcase_add_test(tc, test_misuse_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
