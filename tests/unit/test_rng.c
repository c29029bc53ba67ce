/*
 * Unit tests for rng: values in range and all of them reachable, a forked
 * child that does not repeat its parent's buffered values, the seeded
 * stream that scenario tests replay, and the table hash: the SipHash code
 * with 2-4 rounds gives libsodium's SipHash-2-4 for every length, so with
 * 1-3 it is SipHash-1-3.
 */
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "stubborn/rng.h"
#include "unit.h"

static Suite *make_suite(void);

START_TEST(uniform_in_range)
{
	unsigned seen[7] = {0};

	ck_assert_int_eq(rng_init(), 0);
	ck_assert_uint_eq(rng_uniform(0), 0);
	ck_assert_uint_eq(rng_uniform(1), 0);
	for (int i = 0; i < 70000; i++) {
		uint32_t v = rng_uniform(7);
		ck_assert_uint_lt(v, 7);
		seen[v]++;
	}
	/* 10000 expected each; 9000 is more than 10 deviations away. */
	for (int i = 0; i < 7; i++)
		ck_assert_uint_gt(seen[i], 9000);
	for (int i = 0; i < 1000; i++)
		ck_assert_uint_ge(rng_port(), 1024);
}
END_TEST

START_TEST(fork_does_not_repeat)
{
	uint8_t mine[16], theirs[16];
	int fds[2];
	pid_t pid;
	int st;

	ck_assert_int_eq(rng_init(), 0);
	(void)rng_id(); /* the buffer is filled now */
	ck_assert_int_eq(pipe(fds), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		rng_bytes(theirs, sizeof(theirs));
		_exit(write(fds[1], theirs, sizeof(theirs)) ==
			    (ssize_t)sizeof(theirs)
			? 0
			: 1);
	}
	rng_bytes(mine, sizeof(mine));
	ck_assert_int_eq(
	    read(fds[0], theirs, sizeof(theirs)), (ssize_t)sizeof(theirs));
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ck_assert(memcmp(mine, theirs, sizeof(mine)) != 0);
	close(fds[0]);
	close(fds[1]);
}
END_TEST

START_TEST(seeded_replays)
{
	uint32_t a[8], b[8];

	ck_assert_int_eq(rng_init(), 0);
	rng_seed_for_tests(42);
	for (int i = 0; i < 8; i++)
		a[i] = rng_uniform(1000000);
	rng_seed_for_tests(42);
	for (int i = 0; i < 8; i++)
		b[i] = rng_uniform(1000000);
	ck_assert(memcmp(a, b, sizeof(a)) == 0);
}
END_TEST

START_TEST(siphash_matches_libsodium)
{
	uint8_t key[RNG_HASH_KEY], in[64], out[crypto_shorthash_BYTES];

	ck_assert_int_eq(rng_init(), 0);
	for (int round = 0; round < 20; round++) {
		rng_bytes(key, sizeof(key));
		rng_bytes(in, sizeof(in));
		for (size_t len = 0; len <= sizeof(in); len++) {
			uint64_t want = 0;
			crypto_shorthash(out, in, len, key);
			for (int i = 7; i >= 0; i--)
				want = want << 8 | out[i];
			ck_assert_uint_eq(
			    rng_siphash(key, in, len, 2, 4), want);
			ck_assert_uint_eq(rng_hash(key, in, len),
			    rng_siphash(key, in, len, 1, 3));
		}
	}
	/* Fewer rounds, another function. */
	key[0] ^= 1;
	ck_assert_uint_ne(rng_hash(key, in, 8), rng_siphash(key, in, 8, 2, 4));
}
END_TEST

static Suite *
make_suite(void)
{
	Suite *s = suite_create("rng");
	TCase *tc = tcase_create("values");

	tcase_add_test(tc, uniform_in_range);
	tcase_add_test(tc, fork_does_not_repeat);
	tcase_add_test(tc, seeded_replays);
	tcase_add_test(tc, siphash_matches_libsodium);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(make_suite)
