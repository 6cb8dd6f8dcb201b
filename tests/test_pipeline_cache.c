/* test_pipeline_cache.c - the pipeline's shared step cache: key locks (exclusive, released
 * when the holder dies, even of SIGKILL; waiting on them), entry metadata as the commit mark,
 * temporary names and the removal of stale temporaries, and result records that give back
 * the very doubles they stored.
 * (pipeline/cache.h, pipeline/record.h, linked from libslmc.a)
 */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "formats/fileio.h"
#include "pipeline/cache.h"
#include "pipeline/record.h"
#include "testutil.h"

/* Two made-up step keys (64 hex digits). */
static const char *KEY_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *KEY_B = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static char *in_dir(const char *dir, const char *name) {
    char *p = path_join(dir, name);
    ck_assert_ptr_nonnull(p);
    return p;
}

static void touch(const char *dir, const char *name, const char *text) {
    char *p = in_dir(dir, name);
    ck_assert_int_eq(write_bytes(p, text, strlen(text)), 0);
    free(p);
}

static bool exists(const char *dir, const char *name) {
    char *p = in_dir(dir, name);
    struct stat st;
    bool ok = lstat(p, &st) == 0;
    free(p);
    return ok;
}

/* Hidden entries in dir (temporaries), "." and ".." aside. */
static int count_hidden(const char *dir) {
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] == '.' && strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A child process that takes KEY_A's lock, says so on the pipe, and then sleeps `ms` (or
 * forever, ms < 0) before exiting. Returns its pid once it holds the lock. */
static pid_t child_holding_lock(const char *dir, int ms) {
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        pl_lock lk;
        if (pl_lock_try(dir, KEY_A, &lk, NULL, NULL) != 0) _exit(2);
        if (write(fds[1], "x", 1) != 1) _exit(3);
        if (ms < 0) for (;;) pause();
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        _exit(0); /* the lock goes with the process */
    }
    char c;
    close(fds[1]);
    ck_assert_int_eq(read(fds[0], &c, 1), 1);
    close(fds[0]);
    return pid;
}

/* ---- owners ----------------------------------------------------------------------------- */

START_TEST(owner_is_this_process) {
    pl_owner o;
    pl_owner_self(&o);
    ck_assert_int_eq(o.pid, (long)getpid());
    ck_assert(o.host[0]);
    for (const char *s = o.host; *s; s++) ck_assert(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *s));
    char buf[128], want[128];
    snprintf(want, sizeof want, "pid %ld on host %s", o.pid, o.host);
    ck_assert_str_eq(pl_owner_str(&o, buf, sizeof buf), want);
    pl_owner none = {0};
    ck_assert_str_eq(pl_owner_str(&none, buf, sizeof buf), "an unknown process");
}
END_TEST

/* ---- locks ------------------------------------------------------------------------------ */

START_TEST(lock_is_exclusive_and_names_its_holder) {
    char *dir = tmpdir_make();
    pl_lock a, b;
    pl_owner holder;
    slmc_err err = {{0}};
    ck_assert_int_eq(pl_lock_try(dir, KEY_A, &a, NULL, &err), 0);
    ck_assert_int_ge(a.fd, 0);
    /* a second open file is a second claimant, even in the same process */
    ck_assert_int_eq(pl_lock_try(dir, KEY_A, &b, &holder, &err), 1);
    ck_assert_int_eq(b.fd, -1);
    ck_assert_int_eq(holder.pid, (long)getpid());
    ck_assert(holder.host[0]);
    /* another key is another lock */
    ck_assert_int_eq(pl_lock_try(dir, KEY_B, &b, NULL, &err), 0);
    pl_lock_release(&b);
    pl_lock_release(&a);
    ck_assert_int_eq(a.fd, -1);
    pl_lock_release(&a); /* twice is harmless */
    ck_assert_int_eq(pl_lock_try(dir, KEY_A, &b, NULL, &err), 0);
    pl_lock_release(&b);
    tmpdir_remove(dir);
}
END_TEST

START_TEST(lock_of_a_killed_holder_is_free) {
    char *dir = tmpdir_make();
    pid_t pid = child_holding_lock(dir, -1);
    pl_lock lk;
    pl_owner holder;
    ck_assert_int_eq(pl_lock_try(dir, KEY_A, &lk, &holder, NULL), 1);
    ck_assert_int_eq(holder.pid, (long)pid);
    kill(pid, SIGKILL); /* no cleanup runs: the kernel drops the lock with the process */
    ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
    ck_assert_int_eq(pl_lock_try(dir, KEY_A, &lk, NULL, NULL), 0);
    pl_lock_release(&lk);
    tmpdir_remove(dir);
}
END_TEST

START_TEST(lock_wait_blocks_until_the_holder_is_gone) {
    char *dir = tmpdir_make();
    double t0 = now();
    pid_t pid = child_holding_lock(dir, 300);
    pl_lock lk;
    slmc_err err = {{0}};
    ck_assert_int_eq(pl_lock_wait(dir, KEY_A, &lk, NULL, &err), 0);
    ck_assert_msg(now() - t0 >= 0.25, "took the lock after %.3f s, while the child held it 0.3 s", now() - t0);
    pl_lock_release(&lk);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    tmpdir_remove(dir);
}
END_TEST

START_TEST(lock_wait_ends_on_stop) {
    char *dir = tmpdir_make();
    pl_lock held, lk;
    slmc_err err = {{0}};
    ck_assert_int_eq(pl_lock_try(dir, KEY_A, &held, NULL, &err), 0);
    volatile sig_atomic_t stop = 1;
    ck_assert_int_eq(pl_lock_wait(dir, KEY_A, &lk, &stop, &err), -1);
    ck_assert_msg(strstr(err.msg, "interrupted"), "%s", err.msg);
    ck_assert_int_eq(lk.fd, -1);
    pl_lock_release(&held);
    tmpdir_remove(dir);
}
END_TEST

START_TEST(lock_in_a_missing_folder_names_it) {
    pl_lock lk;
    slmc_err err = {{0}};
    ck_assert_int_eq(pl_lock_try("/nonexistent-slmc-cache", KEY_A, &lk, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "/nonexistent-slmc-cache/") && strstr(err.msg, ".lock: cannot open the lock file"), "%s",
                  err.msg);
}
END_TEST

/* ---- entries ---------------------------------------------------------------------------- */

START_TEST(entry_is_complete_only_once_committed) {
    char *dir = tmpdir_make();
    const char *exts[2] = {".eval.json", ".logits.h5"};
    char name[2][128];
    for (int i = 0; i < 2; i++) snprintf(name[i], sizeof name[i], "%s%s", KEY_A, exts[i]);
    touch(dir, name[0], "{}\n");
    touch(dir, name[1], "logits");
    /* the files alone are not an entry: a writer may have died before committing */
    ck_assert(!pl_entry_complete(dir, KEY_A, exts, 2, NULL));
    slmc_err err = {{0}};
    ck_assert_int_eq(pl_entry_commit(dir, KEY_A, exts, 2, "eval [source]", 1.5, &err), 0);
    pl_entry_info info;
    ck_assert(pl_entry_complete(dir, KEY_A, exts, 2, &info));
    ck_assert_int_eq(info.by.pid, (long)getpid());
    pl_owner self;
    pl_owner_self(&self);
    ck_assert_str_eq(info.by.host, self.host);
    ck_assert_str_eq(info.step, "eval [source]");
    ck_assert(fabs(info.seconds - 1.5) < 1e-9);
    /* a file of another size than the metadata says (truncated, or replaced) */
    touch(dir, name[1], "logit");
    ck_assert(!pl_entry_complete(dir, KEY_A, exts, 2, NULL));
    touch(dir, name[1], "logits");
    ck_assert(pl_entry_complete(dir, KEY_A, exts, 2, NULL));
    /* a missing file */
    char *p = in_dir(dir, name[0]);
    unlink(p);
    free(p);
    ck_assert(!pl_entry_complete(dir, KEY_A, exts, 2, NULL));
    /* metadata of another key under this name */
    char meta_a[128], meta_b[128];
    snprintf(meta_a, sizeof meta_a, "%s.meta.json", KEY_A);
    snprintf(meta_b, sizeof meta_b, "%s.meta.json", KEY_B);
    char *pa = in_dir(dir, meta_a), *pb = in_dir(dir, meta_b);
    ck_assert_int_eq(rename(pa, pb), 0);
    char bname[128];
    snprintf(bname, sizeof bname, "%s.logits.h5", KEY_B);
    touch(dir, bname, "logits");
    const char *ext1[1] = {".logits.h5"};
    ck_assert(!pl_entry_complete(dir, KEY_B, ext1, 1, NULL));
    free(pa);
    free(pb);
    /* the commit left no temporary behind */
    ck_assert_int_eq(count_hidden(dir), 0);
    tmpdir_remove(dir);
}
END_TEST

/* ---- temporaries ------------------------------------------------------------------------- */

START_TEST(temporary_names_carry_their_key) {
    char key[65], name[300];
    snprintf(name, sizeof name, ".tmp-%s-build-host-7-12345-AbC123", KEY_B);
    ck_assert(pl_temp_key(name, key));
    ck_assert_str_eq(key, KEY_B);
    snprintf(name, sizeof name, ".%s.eval.json.tmp-Xy12Zq", KEY_A);
    ck_assert(pl_temp_key(name, key));
    ck_assert_str_eq(key, KEY_A);
    snprintf(name, sizeof name, "%s.gguf", KEY_A); /* an entry */
    ck_assert(!pl_temp_key(name, key));
    snprintf(name, sizeof name, "%s.lock", KEY_A);
    ck_assert(!pl_temp_key(name, key));
    ck_assert(!pl_temp_key(".tmp-1234-abcdef", key)); /* no key in it */
    ck_assert(!pl_temp_key(".tmp-", key));
    ck_assert(!pl_temp_key(".hidden", key));
    snprintf(name, sizeof name, ".tmp-%.63sg-x", KEY_A); /* not hex */
    ck_assert(!pl_temp_key(name, key));

    char *dir = tmpdir_make();
    slmc_err err = {{0}};
    char *t = pl_temp_dir(dir, KEY_A, &err);
    ck_assert_msg(t, "%s", err.msg);
    const char *base = strrchr(t, '/') + 1;
    pl_owner self;
    pl_owner_self(&self);
    char want[300];
    snprintf(want, sizeof want, ".tmp-%s-%s-%ld-", KEY_A, self.host, self.pid);
    ck_assert_msg(strncmp(base, want, strlen(want)) == 0, "%s", base);
    ck_assert(pl_temp_key(base, key));
    ck_assert_str_eq(key, KEY_A);
    ck_assert(is_dir(t));
    free(t);
    tmpdir_remove(dir);
}
END_TEST

START_TEST(stale_temporaries_go_live_ones_stay) {
    char *dir = tmpdir_make();
    char live[300], live_file[300], dead[300], dead_file[300], entry[128];
    snprintf(live, sizeof live, ".tmp-%s-otherhost-99-aaaaaa", KEY_A);
    snprintf(live_file, sizeof live_file, ".%s.eval.json.tmp-bbbbbb", KEY_A);
    snprintf(dead, sizeof dead, ".tmp-%s-otherhost-98-cccccc", KEY_B);
    snprintf(dead_file, sizeof dead_file, ".%s.meta.json.tmp-dddddd", KEY_B);
    snprintf(entry, sizeof entry, "%s.gguf", KEY_B);
    char *p = in_dir(dir, live);
    ck_assert_int_eq(mkdir(p, 0777), 0);
    free(p);
    p = in_dir(dir, dead);
    ck_assert_int_eq(mkdir(p, 0777), 0);
    free(p);
    char *inner = in_dir(dir, dead);
    touch(inner, "out.gguf", "partial"); /* a folder with files in it */
    free(inner);
    touch(dir, live_file, "x");
    touch(dir, dead_file, "x");
    touch(dir, entry, "model");
    touch(dir, ".keep", "not ours");
    /* KEY_A's lock is held by another process (a host elsewhere, as far as names go) */
    pid_t pid = child_holding_lock(dir, -1);
    pl_remove_stale_temps(dir);
    ck_assert(exists(dir, live));
    ck_assert(exists(dir, live_file));
    ck_assert(!exists(dir, dead));
    ck_assert(!exists(dir, dead_file));
    ck_assert(exists(dir, entry));
    ck_assert(exists(dir, ".keep"));
    /* once its writer is dead, the rest goes too */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    pl_remove_stale_temps(dir);
    ck_assert(!exists(dir, live));
    ck_assert(!exists(dir, live_file));
    ck_assert(exists(dir, entry));
    tmpdir_remove(dir);
}
END_TEST

START_TEST(key_temporaries_of_one_key) {
    char *dir = tmpdir_make();
    char a[300], b[300];
    snprintf(a, sizeof a, ".tmp-%s-h-1-aaaaaa", KEY_A);
    snprintf(b, sizeof b, ".%s.gguf.tmp-bbbbbb", KEY_B);
    touch(dir, a, "x");
    touch(dir, b, "x");
    pl_remove_key_temps(dir, KEY_A);
    ck_assert(!exists(dir, a));
    ck_assert(exists(dir, b));
    tmpdir_remove(dir);
}
END_TEST

/* ---- result records ------------------------------------------------------------------------ */

START_TEST(records_give_back_what_they_stored) {
    char *dir = tmpdir_make();
    pl_plan pl = {.cache_dir = dir};
    pl_result in[2], out[2];
    memset(in, 0, sizeof in);
    memset(out, 0, sizeof out);
    snprintf(in[0].key, sizeof in[0].key, "%s", KEY_B);
    in[0].size = 2284192;
    in[0].n_params = 3672320;
    in[0].has_eval = true;
    in[0].ppl = 0.1 + 0.2; /* not a short decimal */
    in[0].ppl_stderr = 1.0 / 3.0;
    in[0].kld = 5e-324;
    in[0].kld_stderr = 1e300;
    in[0].same_top = 0.2444444444;
    in[0].source_ppl = 3318.581143;
    in[0].source_ppl_stderr = NAN; /* stored as null */
    snprintf(in[1].key, sizeof in[1].key, "%s", KEY_A); /* no eval */
    in[1].size = 7;
    in[1].n_params = 0;
    slmc_err err = {{0}};
    ck_assert_int_eq(pl_record_load(&pl, KEY_A, out, 2, &err), 1); /* none yet */
    ck_assert_int_eq(pl_record_store(&pl, KEY_A, "result [v]", in, 2, NULL, &err), 0);
    ck_assert_int_eq(pl_record_load(&pl, KEY_A, out, 2, &err), 0);
    ck_assert_str_eq(out[0].key, KEY_B);
    ck_assert_uint_eq(out[0].size, 2284192);
    ck_assert_uint_eq(out[0].n_params, 3672320);
    ck_assert(out[0].has_eval);
    ck_assert(out[0].ppl == in[0].ppl && out[0].ppl_stderr == in[0].ppl_stderr && out[0].kld == in[0].kld &&
              out[0].kld_stderr == in[0].kld_stderr && out[0].same_top == in[0].same_top &&
              out[0].source_ppl == in[0].source_ppl);
    ck_assert(isnan(out[0].source_ppl_stderr));
    ck_assert(out[0].bpw == 8.0 * 2284192.0 / 3672320.0);
    ck_assert(out[0].ppl_increase == 100.0 * (in[0].ppl / in[0].source_ppl - 1.0));
    ck_assert(!out[1].has_eval && isnan(out[1].bpw) && out[1].size == 7);
    /* a record is stored once: a second store leaves the bytes alone */
    char name[128];
    snprintf(name, sizeof name, "%s.result.json", KEY_A);
    char *p = in_dir(dir, name);
    size_t n1, n2;
    uint8_t *before = slurp(p, &n1);
    in[0].ppl = 1;
    ck_assert_int_eq(pl_record_store(&pl, KEY_A, "result [v]", in, 2, NULL, &err), 0);
    uint8_t *after = slurp(p, &n2);
    ck_assert(n1 == n2 && memcmp(before, after, n1) == 0);
    free(before);
    free(after);
    /* a record of another shape is an error naming it */
    ck_assert_int_eq(pl_record_load(&pl, KEY_A, out, 3, &err), -1);
    ck_assert_msg(strstr(err.msg, name) && strstr(err.msg, "not a result record of 3 outputs"), "%s", err.msg);
    free(p);
    tmpdir_remove(dir);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("pipeline_cache");
    TCase *t = tcase_create("core");
    tcase_add_test(t, owner_is_this_process);
    tcase_add_test(t, lock_is_exclusive_and_names_its_holder);
    tcase_add_test(t, lock_of_a_killed_holder_is_free);
    tcase_add_test(t, lock_wait_blocks_until_the_holder_is_gone);
    tcase_add_test(t, lock_wait_ends_on_stop);
    tcase_add_test(t, lock_in_a_missing_folder_names_it);
    tcase_add_test(t, entry_is_complete_only_once_committed);
    tcase_add_test(t, temporary_names_carry_their_key);
    tcase_add_test(t, stale_temporaries_go_live_ones_stay);
    tcase_add_test(t, key_temporaries_of_one_key);
    tcase_add_test(t, records_give_back_what_they_stored);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return run_suite(suite()); }
