/*
 * Unit tests for the upstream pool: time (now, in ms) and randomness (rnd)
 * are always explicit arguments; nothing sleeps or reads a clock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "stubborn/config.h"
#include "stubborn/log.h"
#include "stubborn/upstream.h"
#include "unit.h"

#define T0 1000000ULL   /* an arbitrary monotonic start, not 0 */
#define NO_EXPLORE 999u /* rnd % 1000 == 999: never below explore_permille */
#define BUDGET_CAP 200  /* BUDGET_MAX_TOKENS in resolver/upstream.c */

static void quiet(void);
static struct upstream_params params(void);
static struct upstream_pool *new_pool(size_t, const struct upstream_params *);
static void sample(struct upstream_pool *, unsigned, uint32_t, uint64_t);
static void fail_q(
    struct upstream_pool *, unsigned, enum upstream_outcome, uint64_t);
static void open_server(struct upstream_pool *, unsigned, uint64_t);
static enum upstream_circuit circuit(struct upstream_pool *, unsigned);
static int pick(struct upstream_pool *, uint32_t, uint64_t, uint32_t);
static unsigned drain_budget(struct upstream_pool *, uint64_t);
static Suite *make_suite(void);

/* Circuit changes log at warn/info; keep the test output readable. */
static void
quiet(void)
{
	log_set_level(LOG_LEVEL_ERROR);
}

/* Defaults for a 1000 ms upstream timeout; tests then change fields. */
static struct upstream_params
params(void)
{
	struct upstream_params p;

	upstream_params_default(&p, 1000);
	return p;
}

/* n servers 127.0.0.1:5301, :5302, ... */
static struct upstream_pool *
new_pool(size_t n, const struct upstream_params *p)
{
	struct config_upstream addrs[UPSTREAM_MAX];
	struct upstream_pool *pool;
	char text[32], why[128];

	ck_assert_uint_le(n, UPSTREAM_MAX);
	for (size_t i = 0; i < n; i++) {
		snprintf(text, sizeof(text), "127.0.0.1:%zu", 5301 + i);
		ck_assert_int_eq(
		    config_parse_upstream(text, &addrs[i], why, sizeof(why)),
		    0);
	}
	pool = upstream_pool_new("test.", addrs, n, p);
	ck_assert_ptr_nonnull(pool);
	return pool;
}

/* One query to idx answered after rtt_ms. */
static void
sample(struct upstream_pool *pool, unsigned idx, uint32_t rtt_ms, uint64_t now)
{
	upstream_sent(pool, idx, now);
	upstream_done(pool, idx, UPSTREAM_OK, rtt_ms, false, now + rtt_ms);
}

/* One query to idx that ended in outcome at now. */
static void
fail_q(struct upstream_pool *pool, unsigned idx, enum upstream_outcome outcome,
    uint64_t now)
{
	upstream_sent(pool, idx, now);
	upstream_done(pool, idx, outcome, 0, false, now);
}

/* open_after timeouts at now: the circuit of idx opens. */
static void
open_server(struct upstream_pool *pool, unsigned idx, uint64_t now)
{
	struct upstream_stats st;

	for (int i = 0; i < 64 && circuit(pool, idx) != UPSTREAM_OPEN; i++)
		fail_q(pool, idx, UPSTREAM_TIMEOUT, now);
	upstream_get_stats(pool, idx, &st);
	ck_assert_int_eq(st.circuit, UPSTREAM_OPEN);
}

static enum upstream_circuit
circuit(struct upstream_pool *pool, unsigned idx)
{
	struct upstream_stats st;

	upstream_get_stats(pool, idx, &st);
	return st.circuit;
}

static int
pick(struct upstream_pool *pool, uint32_t exclude, uint64_t now, uint32_t rnd)
{
	bool explore = true;
	int r = upstream_pick(
	    pool, exclude, now, rnd, UPSTREAM_PRIO_CLIENT, &explore);

	return r;
}

/* Takes until refused (bounded); returns how many were granted. */
static unsigned
drain_budget(struct upstream_pool *pool, uint64_t now)
{
	unsigned n = 0;

	while (n < 100000 && upstream_budget_take(pool, now))
		n++;
	return n;
}

/* ---- RTT estimator and RTO ---- */

START_TEST(test_rto_initial_before_samples)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	struct upstream_stats st;

	ck_assert_uint_eq(p.rto_initial_ms, 200);
	ck_assert_uint_eq(p.rto_max_ms, 1000);
	p.rto_initial_ms = 333;
	pool = new_pool(2, &p);
	ck_assert_uint_eq(upstream_rto(pool, 0), 333);
	ck_assert_uint_eq(upstream_rto(pool, 1), 333);
	ck_assert_uint_eq(upstream_best_rto(pool), 333);
	upstream_get_stats(pool, 0, &st);
	ck_assert_uint_eq(st.srtt_us, 0);
	ck_assert_uint_eq(st.rto_ms, 333);
	ck_assert_int_eq(st.circuit, UPSTREAM_CLOSED);
	/* A failure is not a sample. */
	fail_q(pool, 0, UPSTREAM_TIMEOUT, T0);
	ck_assert_uint_eq(upstream_rto(pool, 0), 333);
	upstream_pool_free(pool);

	/* The default initial RTO never exceeds the ceiling. */
	upstream_params_default(&p, 150);
	ck_assert_uint_eq(p.rto_initial_ms, 150);
	ck_assert_uint_eq(p.rto_max_ms, 150);
}
END_TEST

START_TEST(test_rtt_first_sample)
{
	struct upstream_params p = params();
	struct upstream_pool *pool = new_pool(1, &p);
	struct upstream_stats st;

	sample(pool, 0, 100, T0);
	upstream_get_stats(pool, 0, &st);
	/* srtt = 100, rttvar = 50, RTO = 100 + 4 * 50. */
	ck_assert_uint_eq(st.srtt_us, 100000);
	ck_assert_uint_eq(st.rto_ms, 300);
	ck_assert_uint_eq(upstream_rto(pool, 0), 300);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_rtt_following_samples)
{
	struct upstream_params p = params();
	struct upstream_pool *pool = new_pool(3, &p);
	struct upstream_stats st;

	/* Slower: err 100; rttvar 37.5 + 25 = 62.5, srtt 87.5 + 25 = 112.5. */
	sample(pool, 0, 100, T0);
	sample(pool, 0, 200, T0 + 1000);
	upstream_get_stats(pool, 0, &st);
	ck_assert_uint_eq(st.srtt_us, 112500);
	ck_assert_uint_eq(st.rto_ms, 362); /* 112.5 + 250 */

	/* Same: rttvar shrinks by 1/4, srtt stays. */
	sample(pool, 1, 100, T0);
	sample(pool, 1, 100, T0 + 1000);
	upstream_get_stats(pool, 1, &st);
	ck_assert_uint_eq(st.srtt_us, 100000);
	ck_assert_uint_eq(st.rto_ms, 250); /* 100 + 4 * 37.5 */

	/* Faster: err 80; rttvar 37.5 + 20 = 57.5, srtt 87.5 + 2.5 = 90. */
	sample(pool, 2, 100, T0);
	sample(pool, 2, 20, T0 + 1000);
	upstream_get_stats(pool, 2, &st);
	ck_assert_uint_eq(st.srtt_us, 90000);
	ck_assert_uint_eq(st.rto_ms, 320); /* 90 + 230 */

	/* A third sample uses the updated values (rttvar from the old srtt). */
	sample(pool, 2, 90, T0 + 2000);
	upstream_get_stats(pool, 2, &st);
	ck_assert_uint_eq(st.srtt_us, 90000);
	/* rttvar = 0.75 * 57.5 + 0 = 43.125; RTO = 90 + 172.5. */
	ck_assert_uint_eq(st.rto_ms, 262);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_rtt_converges)
{
	struct upstream_params p = params();
	struct upstream_pool *pool = new_pool(1, &p);
	struct upstream_stats st;

	sample(pool, 0, 400, T0);
	for (int i = 0; i < 200; i++)
		sample(pool, 0, 40, T0 + 1000 + (uint64_t)i);
	upstream_get_stats(pool, 0, &st);
	ck_assert_uint_ge(st.srtt_us, 39900);
	ck_assert_uint_le(st.srtt_us, 40100);
	/* rttvar decays to ~0: RTO approaches srtt. */
	ck_assert_uint_ge(st.rto_ms, 40);
	ck_assert_uint_le(st.rto_ms, 41);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_rto_clamped)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	struct upstream_stats st;

	p.rto_min_ms = 25;
	p.rto_max_ms = 700;
	pool = new_pool(2, &p);
	/* 1 + 4 * 0.5 = 3 ms: raised to the floor. */
	sample(pool, 0, 1, T0);
	ck_assert_uint_eq(upstream_rto(pool, 0), 25);
	upstream_get_stats(pool, 0, &st);
	ck_assert_uint_eq(st.srtt_us, 1000);
	ck_assert_uint_eq(st.rto_ms, 25);
	/* 600 + 4 * 300 = 1800 ms: cut to the ceiling. */
	sample(pool, 1, 600, T0);
	ck_assert_uint_eq(upstream_rto(pool, 1), 700);
	upstream_get_stats(pool, 1, &st);
	ck_assert_uint_eq(st.srtt_us, 600000);
	ck_assert_uint_eq(st.rto_ms, 700);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_best_rto)
{
	struct upstream_params p = params();
	struct upstream_pool *pool = new_pool(3, &p);

	ck_assert_uint_eq(upstream_best_rto(pool), p.rto_initial_ms);
	sample(pool, 0, 50, T0);  /* RTO 150 */
	sample(pool, 1, 20, T0);  /* RTO 60 */
	sample(pool, 2, 100, T0); /* RTO 300 */
	ck_assert_uint_eq(upstream_best_rto(pool), 60);
	/* Only closed servers count. */
	open_server(pool, 1, T0 + 10);
	ck_assert_uint_eq(upstream_best_rto(pool), 150);
	open_server(pool, 0, T0 + 10);
	open_server(pool, 2, T0 + 10);
	ck_assert_uint_eq(upstream_best_rto(pool), p.rto_initial_ms);
	upstream_pool_free(pool);
}
END_TEST

/* ---- selection ---- */

START_TEST(test_fastest_picks_lowest_srtt)
{
	struct upstream_params p = params();
	struct upstream_pool *pool = new_pool(3, &p);
	bool explore = true;

	sample(pool, 0, 80, T0);
	sample(pool, 1, 10, T0);
	sample(pool, 2, 40, T0);
	/* Every rnd with rnd % 1000 >= explore_permille (30) picks the best. */
	for (uint32_t r = 30; r < 5000; r += 7) {
		if (r % 1000 < 30)
			continue;
		ck_assert_int_eq(upstream_pick(pool, 0, T0 + 100, r,
				     UPSTREAM_PRIO_CLIENT, &explore),
		    1);
		ck_assert(!explore);
	}
	/* The boundary: exactly explore_permille does not explore. */
	ck_assert_int_eq(upstream_pick(pool, 0, T0 + 100, 30,
			     UPSTREAM_PRIO_CLIENT, &explore),
	    1);
	ck_assert(!explore);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_fastest_explores)
{
	struct upstream_params p = params();
	struct upstream_pool *pool = new_pool(3, &p);
	bool explore = false;
	int got;

	sample(pool, 0, 80, T0);
	sample(pool, 1, 10, T0);
	sample(pool, 2, 40, T0);
	/* rnd % 1000 < 30: another server, and *explore says so. */
	for (uint32_t r = 0; r < 30; r++) {
		got = upstream_pick(
		    pool, 0, T0 + 100, r, UPSTREAM_PRIO_CLIENT, &explore);
		ck_assert(got == 0 || got == 2);
		ck_assert(explore);
	}
	/* (rnd / 1000) chooses among the others: both get explored. */
	ck_assert_int_eq(
	    upstream_pick(pool, 0, T0 + 100, 5, UPSTREAM_PRIO_CLIENT, &explore),
	    0);
	ck_assert(explore);
	ck_assert_int_eq(upstream_pick(pool, 0, T0 + 100, 1005,
			     UPSTREAM_PRIO_CLIENT, &explore),
	    2);
	ck_assert(explore);
	ck_assert_int_eq(upstream_pick(pool, 0, T0 + 100, 2005,
			     UPSTREAM_PRIO_CLIENT, &explore),
	    0);
	ck_assert(explore);

	/* With explore_permille 0 the best is always picked. */
	upstream_pool_free(pool);
	p.explore_permille = 0;
	pool = new_pool(2, &p);
	sample(pool, 0, 80, T0);
	sample(pool, 1, 10, T0);
	for (uint32_t r = 0; r < 2000; r++) {
		ck_assert_int_eq(upstream_pick(pool, 0, T0 + 100, r,
				     UPSTREAM_PRIO_CLIENT, &explore),
		    1);
		ck_assert(!explore);
	}
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_fastest_explore_needs_another)
{
	struct upstream_params p = params();
	struct upstream_pool *pool = new_pool(2, &p);
	bool explore = true;

	sample(pool, 0, 80, T0);
	sample(pool, 1, 10, T0);
	/* The only other server is excluded: no exploration possible. */
	ck_assert_int_eq(
	    upstream_pick(pool, 1u << 0, T0, 5, UPSTREAM_PRIO_CLIENT, &explore),
	    1);
	ck_assert(!explore);
	/* Or open. */
	open_server(pool, 0, T0);
	ck_assert_int_eq(
	    upstream_pick(pool, 0, T0, 5, UPSTREAM_PRIO_CLIENT, &explore), 1);
	ck_assert(!explore);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_fastest_outstanding_spreads_load)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;

	p.explore_permille = 0;
	pool = new_pool(2, &p);
	sample(pool, 0, 10, T0); /* score 10 + 2 * 5 = 20 */
	sample(pool, 1, 11, T0); /* score 11 + 2 * 5.5 = 22 */
	ck_assert_int_eq(pick(pool, 0, T0 + 100, NO_EXPLORE), 0);
	/* Queries waiting on the faster one make the other the better bet. */
	for (int i = 0; i < 16; i++)
		upstream_sent(pool, 0, T0 + 100);
	ck_assert_int_eq(pick(pool, 0, T0 + 100, NO_EXPLORE), 1);
	for (int i = 0; i < 16; i++)
		upstream_done(pool, 0, UPSTREAM_OK, 10, false, T0 + 110);
	ck_assert_int_eq(pick(pool, 0, T0 + 200, NO_EXPLORE), 0);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_exclude_mask)
{
	struct upstream_params p = params();
	struct upstream_pool *pool = new_pool(3, &p);
	bool explore = true;

	sample(pool, 0, 10, T0);
	sample(pool, 1, 20, T0);
	sample(pool, 2, 40, T0);
	ck_assert_int_eq(upstream_pick(pool, 0, T0, NO_EXPLORE,
			     UPSTREAM_PRIO_CLIENT, &explore),
	    0);
	ck_assert(!explore);
	ck_assert_int_eq(upstream_pick(pool, 1u << 0, T0, NO_EXPLORE,
			     UPSTREAM_PRIO_CLIENT, &explore),
	    1);
	ck_assert(!explore);
	ck_assert_int_eq(pick(pool, (1u << 0) | (1u << 1), T0, NO_EXPLORE), 2);
	/* Exploration never lands on an excluded server. */
	for (uint32_t r = 0; r < 30; r++)
		ck_assert_int_eq(pick(pool, 1u << 1, T0, r + 1000 * r), 2);
	/* Everything excluded: fail fast. */
	ck_assert_int_eq(upstream_pick(pool, 0x7, T0, NO_EXPLORE,
			     UPSTREAM_PRIO_CLIENT, &explore),
	    -1);
	ck_assert(!explore);
	ck_assert_int_eq(pick(pool, 0xffffffffu, T0, 5), -1);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_exclude_mask_high_bits)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	uint32_t all_but_last = (1u << (UPSTREAM_MAX - 1)) - 1;

	p.policy = UPSTREAM_SEQUENTIAL;
	pool = new_pool(UPSTREAM_MAX, &p);
	ck_assert_uint_eq(upstream_count(pool), UPSTREAM_MAX);
	ck_assert_int_eq(pick(pool, all_but_last, T0, 0), UPSTREAM_MAX - 1);
	ck_assert_int_eq(
	    pick(pool, all_but_last | (1u << (UPSTREAM_MAX - 1)), T0, 0), -1);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_unsampled_one_at_a_time)
{
	struct upstream_params p = params();
	struct upstream_pool *pool = new_pool(2, &p);

	/* Nothing known: the first, then (0 is being measured) the second. */
	ck_assert_int_eq(pick(pool, 0, T0, NO_EXPLORE), 0);
	upstream_sent(pool, 0, T0);
	ck_assert_int_eq(pick(pool, 0, T0, NO_EXPLORE), 1);
	upstream_sent(pool, 1, T0);
	/* Both being measured: still a server rather than failing. */
	ck_assert_int_ge(pick(pool, 0, T0, NO_EXPLORE), 0);
	upstream_pool_free(pool);

	/*
	 * Even when the other server scores worse (slow: 300 + 2 * 150 > the
	 * unsampled server's rto_initial 200), the unsampled one with a query
	 * outstanding is skipped.
	 */
	pool = new_pool(2, &p);
	sample(pool, 1, 300, T0);
	ck_assert_int_eq(pick(pool, 0, T0 + 400, NO_EXPLORE), 0);
	upstream_sent(pool, 0, T0 + 400);
	ck_assert_int_eq(pick(pool, 0, T0 + 400, NO_EXPLORE), 1);
	/* Unless it is the only one left. */
	ck_assert_int_eq(pick(pool, 1u << 1, T0 + 400, NO_EXPLORE), 0);
	/* Once answered it is measured and competes normally again. */
	upstream_done(pool, 0, UPSTREAM_OK, 30, false, T0 + 430);
	ck_assert_int_eq(pick(pool, 0, T0 + 500, NO_EXPLORE), 0);
	upstream_pool_free(pool);

	/* A pool of one: always that server. */
	pool = new_pool(1, &p);
	upstream_sent(pool, 0, T0);
	upstream_sent(pool, 0, T0);
	ck_assert_int_eq(pick(pool, 0, T0, NO_EXPLORE), 0);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_policy_sequential)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	bool explore = true;

	p.policy = UPSTREAM_SEQUENTIAL;
	pool = new_pool(3, &p);
	/* Configured order wins over speed; rnd plays no part. */
	sample(pool, 0, 300, T0);
	sample(pool, 1, 5, T0);
	sample(pool, 2, 5, T0);
	for (uint32_t r = 0; r < 2000; r += 3) {
		ck_assert_int_eq(upstream_pick(pool, 0, T0 + 500, r,
				     UPSTREAM_PRIO_CLIENT, &explore),
		    0);
		ck_assert(!explore);
	}
	ck_assert_int_eq(pick(pool, 1u << 0, T0 + 500, 0), 1);
	open_server(pool, 0, T0 + 500);
	ck_assert_int_eq(pick(pool, 0, T0 + 500, 0), 1);
	ck_assert_int_eq(pick(pool, 1u << 1, T0 + 500, 0), 2);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_policy_round_robin)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	int counts[3] = {0, 0, 0};

	p.policy = UPSTREAM_ROUND_ROBIN;
	pool = new_pool(3, &p);
	sample(pool, 0, 300, T0);
	sample(pool, 1, 5, T0);
	for (int i = 0; i < 9; i++) {
		int got = pick(pool, 0, T0 + 500, 0);
		ck_assert_int_ge(got, 0);
		ck_assert_int_lt(got, 3);
		counts[got]++;
		/* Consecutive picks differ. */
		ck_assert_int_eq(got, i % 3);
	}
	ck_assert_int_eq(counts[0], 3);
	ck_assert_int_eq(counts[1], 3);
	ck_assert_int_eq(counts[2], 3);
	/* An open server drops out of the rotation. */
	open_server(pool, 1, T0 + 500);
	for (int i = 0; i < 8; i++) {
		int got = pick(pool, 0, T0 + 600, 0);
		int next = pick(pool, 0, T0 + 600, 0);
		ck_assert(got == 0 || got == 2);
		ck_assert(next == 0 || next == 2);
		ck_assert_int_ne(got, next);
	}
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_policy_random)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	int counts[3] = {0, 0, 0};

	p.policy = UPSTREAM_RANDOM;
	pool = new_pool(3, &p);
	sample(pool, 0, 300, T0);
	sample(pool, 1, 5, T0);
	sample(pool, 2, 50, T0);
	/* Uniform over the usable servers: rnd % 3. */
	ck_assert_int_eq(pick(pool, 0, T0 + 500, 0), 0);
	ck_assert_int_eq(pick(pool, 0, T0 + 500, 1), 1);
	ck_assert_int_eq(pick(pool, 0, T0 + 500, 2), 2);
	for (uint32_t r = 0; r < 3000; r++)
		counts[pick(pool, 0, T0 + 500, r)]++;
	ck_assert_int_eq(counts[0], 1000);
	ck_assert_int_eq(counts[1], 1000);
	ck_assert_int_eq(counts[2], 1000);
	/* Over the usable ones only. */
	open_server(pool, 1, T0 + 500);
	for (uint32_t r = 0; r < 100; r++) {
		int got = pick(pool, 0, T0 + 600, r);
		ck_assert(got == 0 || got == 2);
	}
	ck_assert_int_eq(pick(pool, 1u << 0, T0 + 600, 12345), 2);
	upstream_pool_free(pool);
}
END_TEST

/* ---- circuit ---- */

START_TEST(test_circuit_opens_after_failures)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;

	p.open_after = 3;
	pool = new_pool(2, &p);
	fail_q(pool, 0, UPSTREAM_TIMEOUT, T0);
	fail_q(pool, 0, UPSTREAM_TIMEOUT, T0 + 1);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_CLOSED);
	fail_q(pool, 0, UPSTREAM_TIMEOUT, T0 + 2);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_OPEN);
	ck_assert_int_eq(circuit(pool, 1), UPSTREAM_CLOSED);
	ck_assert_str_eq(upstream_circuit_name(circuit(pool, 0)), "open");

	/* Every kind of failure counts. */
	fail_q(pool, 1, UPSTREAM_RCODE, T0);
	fail_q(pool, 1, UPSTREAM_REFUSED_NET, T0 + 1);
	ck_assert_int_eq(circuit(pool, 1), UPSTREAM_CLOSED);
	fail_q(pool, 1, UPSTREAM_MALFORMED, T0 + 2);
	ck_assert_int_eq(circuit(pool, 1), UPSTREAM_OPEN);
	upstream_pool_free(pool);

	p.open_after = 5;
	pool = new_pool(1, &p);
	for (int i = 0; i < 4; i++)
		fail_q(pool, 0, UPSTREAM_RCODE, T0 + (uint64_t)i);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_CLOSED);
	fail_q(pool, 0, UPSTREAM_TIMEOUT, T0 + 4);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_OPEN);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_circuit_success_resets_count)
{
	struct upstream_params p = params();
	struct upstream_pool *pool = new_pool(1, &p);

	fail_q(pool, 0, UPSTREAM_TIMEOUT, T0);
	fail_q(pool, 0, UPSTREAM_RCODE, T0 + 1);
	sample(pool, 0, 20, T0 + 2);
	fail_q(pool, 0, UPSTREAM_TIMEOUT, T0 + 30);
	fail_q(pool, 0, UPSTREAM_TIMEOUT, T0 + 31);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_CLOSED);
	fail_q(pool, 0, UPSTREAM_TIMEOUT, T0 + 32);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_OPEN);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_open_server_never_picked)
{
	static const enum upstream_policy pols[] = {UPSTREAM_FASTEST,
	    UPSTREAM_SEQUENTIAL, UPSTREAM_ROUND_ROBIN, UPSTREAM_RANDOM};
	struct upstream_params p = params();

	for (size_t k = 0; k < sizeof(pols) / sizeof(pols[0]); k++) {
		struct upstream_pool *pool;

		p.policy = pols[k];
		pool = new_pool(3, &p);
		sample(pool, 0, 5, T0); /* the fastest ... */
		sample(pool, 1, 50, T0);
		sample(pool, 2, 90, T0);
		open_server(pool, 0, T0 + 100); /* ... is down */
		for (uint32_t r = 0; r < 3000; r += 1)
			ck_assert_int_ne(pick(pool, 0, T0 + 200, r), 0);
		/* The rest excluded: -1, not the open server. */
		ck_assert_int_eq(pick(pool, 0x6, T0 + 200, 0), -1);
		ck_assert(upstream_any_usable(pool));
		upstream_pool_free(pool);
	}
}
END_TEST

START_TEST(test_all_open_fail_fast)
{
	struct upstream_params p = params();
	struct upstream_pool *pool = new_pool(3, &p);
	bool explore = true;

	ck_assert(upstream_any_usable(pool));
	open_server(pool, 0, T0);
	open_server(pool, 1, T0);
	ck_assert(upstream_any_usable(pool));
	open_server(pool, 2, T0);
	ck_assert(!upstream_any_usable(pool));
	for (uint32_t r = 0; r < 2000; r += 13) {
		ck_assert_int_eq(upstream_pick(pool, 0, T0 + 1, r,
				     UPSTREAM_PRIO_CLIENT, &explore),
		    -1);
		ck_assert(!explore);
	}
	upstream_pool_free(pool);
}
END_TEST

/* ---- probes ---- */

START_TEST(test_probe_after_backoff)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	uint64_t t1 = T0 + 100;

	p.probe_min_ms = 500;
	p.probe_max_ms = 8000;
	pool = new_pool(1, &p);
	open_server(pool, 0, t1);
	/* The first probe: 500 ms +- 25%, i.e. within [375, 625]. */
	ck_assert_int_eq(upstream_probe_due(pool, t1, 0), -1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 374, 0), -1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 625, 0), 0);
	/* Not again while that probe is pending, however late. */
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 626, 0), -1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 60000, 0), -1);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_OPEN);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_probe_only_open_server_due)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	uint64_t t1 = T0 + 100;

	p.idle_probe_ms = 100000;
	pool = new_pool(3, &p);
	/* All three in use at t1, then 1 goes down. */
	sample(pool, 0, 10, t1);
	sample(pool, 2, 10, t1);
	open_server(pool, 1, t1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 300, 7), -1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 625, 7), 1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 626, 7), -1);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_probe_failure_backs_off)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	uint64_t t1 = T0, t2;

	p.probe_min_ms = 500;
	p.probe_max_ms = 1500;
	pool = new_pool(1, &p);
	open_server(pool, 0, t1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 625, 0), 0);
	/* Still down: the backoff doubles to 1000 -> [750, 1250]. */
	t2 = t1 + 700;
	upstream_done(pool, 0, UPSTREAM_TIMEOUT, 0, true, t2);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_OPEN);
	ck_assert_int_eq(upstream_probe_due(pool, t2 + 749, 0), -1);
	ck_assert_int_eq(upstream_probe_due(pool, t2 + 1250, 0), 0);
	/* Again: 2000, capped at 1500 -> [1125, 1875]. */
	t2 += 1300;
	upstream_done(pool, 0, UPSTREAM_TIMEOUT, 0, true, t2);
	ck_assert_int_eq(upstream_probe_due(pool, t2 + 1124, 0), -1);
	ck_assert_int_eq(upstream_probe_due(pool, t2 + 1875, 0), 0);
	/* And stays capped. */
	t2 += 1900;
	upstream_done(pool, 0, UPSTREAM_REFUSED_NET, 0, true, t2);
	ck_assert_int_eq(upstream_probe_due(pool, t2 + 1124, 0), -1);
	ck_assert_int_eq(upstream_probe_due(pool, t2 + 1875, 0), 0);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_probe_success_half_open_then_closed)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	uint64_t t1 = T0;
	bool explore = true;

	p.close_after = 2;
	pool = new_pool(1, &p);
	open_server(pool, 0, t1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 625, 0), 0);
	upstream_done(pool, 0, UPSTREAM_OK, 15, true, t1 + 640);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_HALF_OPEN);
	ck_assert_str_eq(
	    upstream_circuit_name(UPSTREAM_HALF_OPEN), "half-open");
	/* Half-open is usable: picked when nothing closed is left. */
	ck_assert(upstream_any_usable(pool));
	ck_assert_int_eq(upstream_pick(pool, 0, t1 + 641, NO_EXPLORE,
			     UPSTREAM_PRIO_CLIENT, &explore),
	    0);
	ck_assert(!explore);
	ck_assert_int_eq(pick(pool, 1u << 0, t1 + 641, NO_EXPLORE), -1);
	/* And probed again soon to confirm. */
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 641, 0), 0);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 642, 0), -1);
	upstream_done(pool, 0, UPSTREAM_OK, 15, true, t1 + 660);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_HALF_OPEN);
	upstream_done(pool, 0, UPSTREAM_OK, 15, true, t1 + 1000);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_CLOSED);
	/* Closed again: a fresh run of open_after failures is needed. */
	fail_q(pool, 0, UPSTREAM_TIMEOUT, t1 + 1100);
	fail_q(pool, 0, UPSTREAM_TIMEOUT, t1 + 1101);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_CLOSED);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_half_open_failure_reopens_doubled)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	uint64_t t1 = T0, t2;

	p.probe_min_ms = 500;
	p.probe_max_ms = 800;
	pool = new_pool(1, &p);
	open_server(pool, 0, t1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 625, 0), 0);
	upstream_done(pool, 0, UPSTREAM_OK, 10, true, t1 + 630);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_HALF_OPEN);
	/* One failure in half-open reopens, backoff 1000 capped at 800. */
	t2 = t1 + 700;
	fail_q(pool, 0, UPSTREAM_RCODE, t2);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_OPEN);
	ck_assert(!upstream_any_usable(pool));
	ck_assert_int_eq(pick(pool, 0, t2, NO_EXPLORE), -1);
	ck_assert_int_eq(upstream_probe_due(pool, t2 + 599, 0), -1);
	ck_assert_int_eq(upstream_probe_due(pool, t2 + 1000, 0), 0);
	upstream_pool_free(pool);

	/* Uncapped: 500 doubles to 1000 -> [750, 1250]. */
	p.probe_max_ms = 8000;
	pool = new_pool(1, &p);
	open_server(pool, 0, t1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 625, 0), 0);
	upstream_done(pool, 0, UPSTREAM_OK, 10, true, t1 + 630);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 630, 0), 0);
	upstream_done(pool, 0, UPSTREAM_TIMEOUT, 0, true, t2);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_OPEN);
	ck_assert_int_eq(upstream_probe_due(pool, t2 + 749, 0), -1);
	ck_assert_int_eq(upstream_probe_due(pool, t2 + 1250, 0), 0);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_probe_jitter_uses_rnd)
{
	/*
	 * upstream.h: "rnd jitters the next backoff".  Identical histories
	 * that differ only in the rnd given to upstream_probe_due should not
	 * all get the same next probe time, or probes of servers that failed
	 * together stay in lockstep.
	 */
	static const uint32_t rnds[] = {0, 100, 200, 300, 400, 500};
	struct upstream_params p = params();
	uint64_t due[6], t2 = T0 + 700;
	bool spread = false;

	p.probe_min_ms = 500;
	p.probe_max_ms = 8000;
	for (size_t k = 0; k < 6; k++) {
		struct upstream_pool *pool = new_pool(1, &p);

		open_server(pool, 0, T0);
		ck_assert_int_eq(
		    upstream_probe_due(pool, T0 + 625, rnds[k]), 0);
		upstream_done(pool, 0, UPSTREAM_TIMEOUT, 0, true, t2);
		due[k] = 0;
		for (uint64_t t = t2; t <= t2 + 1250 && due[k] == 0; t++)
			if (upstream_probe_due(pool, t, rnds[k]) == 0)
				due[k] = t;
		/* Whatever the jitter, within 1000 ms +- 25%. */
		ck_assert_uint_ge(due[k], t2 + 750);
		ck_assert_uint_le(due[k], t2 + 1250);
		if (due[k] != due[0])
			spread = true;
		upstream_pool_free(pool);
	}
	ck_assert_msg(spread, "next probe at +%llu ms whatever rnd is",
	    (unsigned long long)(due[0] - t2));
}
END_TEST

START_TEST(test_idle_probe)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	uint64_t t1 = T0;

	p.idle_probe_ms = 10000;
	pool = new_pool(1, &p);
	sample(pool, 0, 20, t1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 9999, 0), -1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 10000, 0), 0);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 10001, 0), -1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 30000, 0), -1);
	/* The probe's answer is a sample and restarts the idle clock. */
	upstream_done(pool, 0, UPSTREAM_OK, 20, true, t1 + 10020);
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_CLOSED);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 19999, 0), -1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 20000, 0), 0);
	upstream_done(pool, 0, UPSTREAM_OK, 20, true, t1 + 20020);
	/* Real traffic restarts it too. */
	upstream_sent(pool, 0, t1 + 25000);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 30000, 0), -1);
	ck_assert_int_eq(upstream_probe_due(pool, t1 + 35000, 0), 0);
	upstream_pool_free(pool);
}
END_TEST

/* ---- budget ---- */

START_TEST(test_budget_floor_start)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;

	p.budget_floor = 10;
	p.budget_percent = 0;
	pool = new_pool(1, &p);
	/* A new pool holds budget_floor tokens, whatever the clock reads. */
	ck_assert_uint_eq(drain_budget(pool, T0), 10);
	ck_assert(!upstream_budget_take(pool, T0));
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_budget_floor_per_second)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;

	p.budget_floor = 10;
	p.budget_percent = 0;
	pool = new_pool(1, &p);
	drain_budget(pool, T0);
	ck_assert(!upstream_budget_take(pool, T0));
	/* 10 per second: one every 100 ms. */
	ck_assert(!upstream_budget_take(pool, T0 + 99));
	ck_assert(upstream_budget_take(pool, T0 + 100));
	ck_assert(!upstream_budget_take(pool, T0 + 100));
	ck_assert_uint_eq(drain_budget(pool, T0 + 1100), 10);
	ck_assert_uint_eq(drain_budget(pool, T0 + 2100), 10);
	/* A refused take takes nothing. */
	for (int i = 0; i < 50; i++)
		ck_assert(!upstream_budget_take(pool, T0 + 2100));
	ck_assert(upstream_budget_take(pool, T0 + 2200));
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_budget_earn)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;

	/* No floor: only earned tokens.  10% of 100 first attempts = 10. */
	p.budget_floor = 0;
	p.budget_percent = 10;
	pool = new_pool(1, &p);
	ck_assert(!upstream_budget_take(pool, T0));
	for (int i = 0; i < 100; i++)
		upstream_budget_earn(pool);
	ck_assert_uint_eq(drain_budget(pool, T0), 10);
	/* 9 earns: not yet a token. */
	for (int i = 0; i < 9; i++)
		upstream_budget_earn(pool);
	ck_assert(!upstream_budget_take(pool, T0));
	upstream_budget_earn(pool);
	ck_assert(upstream_budget_take(pool, T0));
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_budget_earn_exact_fractions)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;

	/* Percentages whose shares are exact in binary. */
	p.budget_floor = 0;
	p.budget_percent = 50;
	pool = new_pool(1, &p);
	for (int i = 0; i < 7; i++)
		upstream_budget_earn(pool);
	ck_assert_uint_eq(drain_budget(pool, T0), 3);
	upstream_budget_earn(pool); /* 0.5 + 0.5 */
	ck_assert_uint_eq(drain_budget(pool, T0), 1);
	upstream_pool_free(pool);

	p.budget_percent = 0;
	pool = new_pool(1, &p);
	for (int i = 0; i < 1000; i++)
		upstream_budget_earn(pool);
	ck_assert(!upstream_budget_take(pool, T0));
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_budget_cap)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;

	p.budget_floor = 0;
	p.budget_percent = 100;
	pool = new_pool(1, &p);
	for (int i = 0; i < 10000; i++)
		upstream_budget_earn(pool);
	ck_assert_uint_eq(drain_budget(pool, T0), BUDGET_CAP);
	upstream_pool_free(pool);

	/* A long quiet spell does not bank floor tokens without bound. */
	p.budget_floor = 10;
	p.budget_percent = 0;
	pool = new_pool(1, &p);
	drain_budget(pool, T0);
	ck_assert_uint_le(drain_budget(pool, T0 + 3600000), BUDGET_CAP);
	upstream_pool_free(pool);
}
END_TEST

/* ---- per-server rate budget (upstream-qps, max-outstanding, ramp) ---- */

/* One pick at now with prio (NO_EXPLORE); the index or UPSTREAM_NONE_*. */
static int
pick_prio(struct upstream_pool *pool, uint32_t exclude, uint64_t now,
    enum upstream_prio prio)
{
	bool explore = true;

	return upstream_pick(pool, exclude, now, NO_EXPLORE, prio, &explore);
}

/*
 * Picks with prio at now and sends to each pick until a pick fails (at most
 * limit); returns the number sent, *last the failing result.
 */
static unsigned
burst_at(struct upstream_pool *pool, uint64_t now, enum upstream_prio prio,
    unsigned limit, int *last)
{
	unsigned n = 0;
	int r = 0;

	while (n < limit) {
		r = pick_prio(pool, 0, now, prio);
		if (r < 0)
			break;
		upstream_sent(pool, (unsigned)r, now);
		n++;
	}
	if (last)
		*last = n < limit ? r : 0;
	return n;
}

/* Client picks (and sends) in every millisecond of [from, to). */
static unsigned
picks_between(struct upstream_pool *pool, uint64_t from, uint64_t to)
{
	unsigned n = 0;

	for (uint64_t t = from; t < to; t++)
		n += burst_at(pool, t, UPSTREAM_PRIO_CLIENT, 100000, NULL);
	return n;
}

/* Opens idx with failures at now, then probes it closed; returns when. */
static uint64_t
close_server(struct upstream_pool *pool, unsigned idx, uint64_t now)
{
	uint64_t t = now;

	open_server(pool, idx, now);
	for (int i = 0; i < 20000 && circuit(pool, idx) != UPSTREAM_CLOSED;
	     i++, t++) {
		if (upstream_probe_due(pool, t, 0) == (int)idx)
			upstream_done(pool, idx, UPSTREAM_OK, 10, true, t);
	}
	ck_assert_int_eq(circuit(pool, idx), UPSTREAM_CLOSED);
	return t - 1;
}

static struct upstream_params
rate_params(uint32_t qps)
{
	struct upstream_params p = params();

	p.qps = qps;
	p.max_outstanding = 0;
	p.policy = UPSTREAM_SEQUENTIAL;
	return p;
}

START_TEST(test_rate_burst_then_budget)
{
	struct upstream_params p = rate_params(40);
	struct upstream_pool *pool = new_pool(1, &p);
	int last = 0;

	/* 40 qps: a bucket of max(40 / 4, 10) = 10 tokens, full at first. */
	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_CLIENT, 1000, &last), 10);
	ck_assert_int_eq(last, UPSTREAM_NONE_BUDGET);
	/* Picking does not spend: a refused pick stays refused, no debt. */
	for (int i = 0; i < 20; i++)
		ck_assert_int_eq(pick_prio(pool, 0, T0, UPSTREAM_PRIO_CLIENT),
		    UPSTREAM_NONE_BUDGET);
	/* The server is still usable: this is shedding, not an outage. */
	ck_assert(upstream_any_usable(pool));
	ck_assert_int_eq(circuit(pool, 0), UPSTREAM_CLOSED);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_rate_burst_size)
{
	struct upstream_params p = rate_params(4000);
	struct upstream_pool *pool = new_pool(1, &p);

	/* A quarter second of queries when that is more than 10. */
	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_CLIENT, 100000, NULL), 1000);
	upstream_pool_free(pool);

	/* And never fewer than 10, however low the rate. */
	p = rate_params(1);
	pool = new_pool(1, &p);
	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_CLIENT, 1000, NULL), 10);
	/* 1 qps: the next token after a second. */
	ck_assert_int_eq(pick_prio(pool, 0, T0 + 999, UPSTREAM_PRIO_CLIENT),
	    UPSTREAM_NONE_BUDGET);
	ck_assert_uint_eq(
	    burst_at(pool, T0 + 1000, UPSTREAM_PRIO_CLIENT, 1000, NULL), 1);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_rate_refill)
{
	struct upstream_params p = rate_params(40);
	struct upstream_pool *pool = new_pool(1, &p);
	int last = 0;

	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_CLIENT, 1000, NULL), 10);
	/* 40 qps: a token every 25 ms; +100 ms gives 4. */
	ck_assert_int_eq(pick_prio(pool, 0, T0 + 24, UPSTREAM_PRIO_CLIENT),
	    UPSTREAM_NONE_BUDGET);
	ck_assert_uint_eq(
	    burst_at(pool, T0 + 100, UPSTREAM_PRIO_CLIENT, 1000, &last), 4);
	ck_assert_int_eq(last, UPSTREAM_NONE_BUDGET);
	/* Partial tokens carry over: 10 ms + 15 ms make one. */
	ck_assert_int_eq(pick_prio(pool, 0, T0 + 110, UPSTREAM_PRIO_CLIENT),
	    UPSTREAM_NONE_BUDGET);
	ck_assert_uint_eq(
	    burst_at(pool, T0 + 125, UPSTREAM_PRIO_CLIENT, 1000, NULL), 1);
	/* A long quiet spell refills to the bucket, not beyond. */
	ck_assert_uint_eq(
	    burst_at(pool, T0 + 60000, UPSTREAM_PRIO_CLIENT, 1000, NULL), 10);
	/* A steady second at the limit: 40 sent, give or take the edges. */
	{
		unsigned n = picks_between(pool, T0 + 60001, T0 + 61001);

		ck_assert_uint_ge(n, 39);
		ck_assert_uint_le(n, 41);
	}
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_rate_background_shed_first)
{
	struct upstream_params p = rate_params(40);
	struct upstream_pool *pool = new_pool(1, &p);

	/* Full bucket (10): everybody goes. */
	ck_assert_int_eq(pick_prio(pool, 0, T0, UPSTREAM_PRIO_BACKGROUND), 0);
	ck_assert_int_eq(pick_prio(pool, 0, T0, UPSTREAM_PRIO_STALE), 0);
	ck_assert_int_eq(pick_prio(pool, 0, T0, UPSTREAM_PRIO_CLIENT), 0);
	for (int i = 0; i < 5; i++)
		upstream_sent(pool, 0, T0);
	/* 5 left = half the bucket: background still allowed. */
	ck_assert_int_eq(pick_prio(pool, 0, T0, UPSTREAM_PRIO_BACKGROUND), 0);
	upstream_sent(pool, 0, T0);
	/* 4 left: background is shed, a client miss is not. */
	ck_assert_int_eq(pick_prio(pool, 0, T0, UPSTREAM_PRIO_BACKGROUND),
	    UPSTREAM_NONE_BUDGET);
	ck_assert_int_eq(pick_prio(pool, 0, T0, UPSTREAM_PRIO_STALE), 0);
	ck_assert_int_eq(pick_prio(pool, 0, T0, UPSTREAM_PRIO_CLIENT), 0);
	/* A burst of background work stops at half the bucket. */
	upstream_pool_free(pool);
	pool = new_pool(1, &p);
	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_BACKGROUND, 1000, NULL), 6);
	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_CLIENT, 1000, NULL), 4);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_rate_stale_between)
{
	struct upstream_params p = rate_params(40);
	struct upstream_pool *pool = new_pool(1, &p);

	/* Stale refreshes need a quarter of the bucket: 2.5 tokens. */
	for (int i = 0; i < 7; i++)
		upstream_sent(pool, 0, T0);
	/* 3 left. */
	ck_assert_int_eq(pick_prio(pool, 0, T0, UPSTREAM_PRIO_BACKGROUND),
	    UPSTREAM_NONE_BUDGET);
	ck_assert_int_eq(pick_prio(pool, 0, T0, UPSTREAM_PRIO_STALE), 0);
	upstream_sent(pool, 0, T0);
	/* 2 left: stale shed too, clients still served. */
	ck_assert_int_eq(
	    pick_prio(pool, 0, T0, UPSTREAM_PRIO_STALE), UPSTREAM_NONE_BUDGET);
	ck_assert_int_eq(pick_prio(pool, 0, T0, UPSTREAM_PRIO_CLIENT), 0);
	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_CLIENT, 1000, NULL), 2);
	/* 0 left: nobody.  20 ms later (0.8 token) still nobody. */
	ck_assert_int_eq(pick_prio(pool, 0, T0 + 20, UPSTREAM_PRIO_CLIENT),
	    UPSTREAM_NONE_BUDGET);
	/* +75 ms: 3 tokens; stale yes, background no. */
	ck_assert_int_eq(pick_prio(pool, 0, T0 + 75, UPSTREAM_PRIO_STALE), 0);
	ck_assert_int_eq(pick_prio(pool, 0, T0 + 75, UPSTREAM_PRIO_BACKGROUND),
	    UPSTREAM_NONE_BUDGET);
	/* +125 ms: 5 tokens; background again. */
	ck_assert_int_eq(
	    pick_prio(pool, 0, T0 + 125, UPSTREAM_PRIO_BACKGROUND), 0);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_rate_max_outstanding)
{
	struct upstream_params p = rate_params(0);
	struct upstream_pool *pool;
	int last = 0;

	p.max_outstanding = 8;
	pool = new_pool(1, &p);
	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_BACKGROUND, 1000, &last), 8);
	ck_assert_int_eq(last, UPSTREAM_NONE_BUDGET);
	/* At the cap: background and stale wait... */
	ck_assert_int_eq(
	    pick_prio(pool, 0, T0, UPSTREAM_PRIO_STALE), UPSTREAM_NONE_BUDGET);
	/* ...clients get a 25% margin over it (8 + 2), then they wait too. */
	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_CLIENT, 1000, &last), 2);
	ck_assert_int_eq(last, UPSTREAM_NONE_BUDGET);
	/* The cap counts outstanding queries, not time. */
	ck_assert_int_eq(pick_prio(pool, 0, T0 + 60000, UPSTREAM_PRIO_CLIENT),
	    UPSTREAM_NONE_BUDGET);
	/* Answers free slots: 9 outstanding, a client goes, background not. */
	upstream_done(pool, 0, UPSTREAM_OK, 10, false, T0 + 10);
	ck_assert_int_eq(pick_prio(pool, 0, T0 + 10, UPSTREAM_PRIO_CLIENT), 0);
	ck_assert_int_eq(pick_prio(pool, 0, T0 + 10, UPSTREAM_PRIO_BACKGROUND),
	    UPSTREAM_NONE_BUDGET);
	/* Failures free them too: 7 outstanding, background goes. */
	upstream_done(pool, 0, UPSTREAM_TIMEOUT, 0, false, T0 + 20);
	upstream_done(pool, 0, UPSTREAM_TIMEOUT, 0, false, T0 + 20);
	ck_assert_int_eq(
	    pick_prio(pool, 0, T0 + 20, UPSTREAM_PRIO_BACKGROUND), 0);
	ck_assert_int_eq(pick_prio(pool, 0, T0 + 20, UPSTREAM_PRIO_STALE), 0);
	upstream_pool_free(pool);

	/* A cap of 1: a client margin of 1/4 rounds to none. */
	p.max_outstanding = 1;
	pool = new_pool(1, &p);
	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_CLIENT, 1000, NULL), 1);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_rate_unlimited)
{
	struct upstream_params p = rate_params(0);
	struct upstream_pool *pool = new_pool(1, &p);

	/* qps 0 and max_outstanding 0: no budget at all, for any prio. */
	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_CLIENT, 5000, NULL), 5000);
	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_STALE, 5000, NULL), 5000);
	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_BACKGROUND, 5000, NULL), 5000);
	upstream_pool_free(pool);

	/* Nor a slow start after an outage. */
	p.close_after = 2;
	pool = new_pool(1, &p);
	{
		uint64_t tc = close_server(pool, 0, T0);

		ck_assert_uint_eq(
		    burst_at(pool, tc, UPSTREAM_PRIO_BACKGROUND, 5000, NULL),
		    5000);
	}
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_rate_per_server)
{
	struct upstream_params p = rate_params(40);
	struct upstream_pool *pool = new_pool(2, &p);
	int last = 0;

	/* Measured servers (so neither is held to one query at a time). */
	sample(pool, 0, 10, T0 - 1000);
	sample(pool, 1, 10, T0 - 1000);
	/* Sequential: server 0 until its bucket is empty, then server 1. */
	for (int i = 0; i < 10; i++) {
		ck_assert_int_eq(
		    pick_prio(pool, 0, T0, UPSTREAM_PRIO_CLIENT), 0);
		upstream_sent(pool, 0, T0);
	}
	ck_assert_int_eq(pick_prio(pool, 0, T0, UPSTREAM_PRIO_CLIENT), 1);
	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_CLIENT, 1000, &last), 10);
	ck_assert_int_eq(last, UPSTREAM_NONE_BUDGET);
	/* One token each 25 ms later: server 0 comes first again. */
	ck_assert_int_eq(pick_prio(pool, 0, T0 + 25, UPSTREAM_PRIO_CLIENT), 0);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_rate_none_usable_vs_budget)
{
	struct upstream_params p = rate_params(40);
	struct upstream_pool *pool = new_pool(2, &p);
	int last = 0;

	/* Both open: nothing usable, fail fast. */
	open_server(pool, 0, T0);
	open_server(pool, 1, T0);
	ck_assert_int_eq(pick_prio(pool, 0, T0 + 1, UPSTREAM_PRIO_CLIENT),
	    UPSTREAM_NONE_USABLE);
	ck_assert_int_eq(pick_prio(pool, 0, T0 + 1, UPSTREAM_PRIO_BACKGROUND),
	    UPSTREAM_NONE_USABLE);
	upstream_pool_free(pool);

	/* Server 0 open, server 1 closed but over budget: shed. */
	pool = new_pool(2, &p);
	open_server(pool, 0, T0);
	ck_assert_uint_eq(
	    burst_at(pool, T0, UPSTREAM_PRIO_CLIENT, 1000, &last), 10);
	ck_assert_int_eq(last, UPSTREAM_NONE_BUDGET);
	ck_assert(upstream_any_usable(pool));
	/* Excluding the over-budget server leaves nothing usable. */
	ck_assert_int_eq(pick_prio(pool, 1u << 1, T0, UPSTREAM_PRIO_CLIENT),
	    UPSTREAM_NONE_USABLE);
	upstream_pool_free(pool);

	/* Background shed while a client would go: budget, not usable. */
	pool = new_pool(1, &p);
	for (int i = 0; i < 6; i++)
		upstream_sent(pool, 0, T0);
	ck_assert_int_eq(pick_prio(pool, 0, T0, UPSTREAM_PRIO_BACKGROUND),
	    UPSTREAM_NONE_BUDGET);
	ck_assert_int_eq(pick_prio(pool, 1u << 0, T0, UPSTREAM_PRIO_BACKGROUND),
	    UPSTREAM_NONE_USABLE);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_rate_slow_start_after_close)
{
	struct upstream_params p = rate_params(400);
	struct upstream_pool *pool;
	uint64_t tc;
	unsigned s0, s1, s2, s3, s4, ref;

	/* A server that never failed: 400 a second plus its 100 burst. */
	pool = new_pool(1, &p);
	ref = picks_between(pool, T0, T0 + 1000);
	ck_assert_uint_ge(ref, 490);
	ck_assert_uint_le(ref, 500);
	upstream_pool_free(pool);

	p.ramp_ms = 4000;
	p.close_after = 2;
	pool = new_pool(1, &p);
	tc = close_server(pool, 0, T0);
	/*
	 * Closed at tc: the rate starts at qps/10 = 40 and doubles every
	 * ramp_ms/4 = 1 s; the bucket is scaled down alike (10 tokens at
	 * first, never fewer).
	 */
	ck_assert_uint_eq(
	    burst_at(pool, tc, UPSTREAM_PRIO_CLIENT, 1000, NULL), 10);
	s0 = 10 + picks_between(pool, tc + 1, tc + 1000);
	s1 = picks_between(pool, tc + 1000, tc + 2000);
	s2 = picks_between(pool, tc + 2000, tc + 3000);
	s3 = picks_between(pool, tc + 3000, tc + 4000);
	s4 = picks_between(pool, tc + 4000, tc + 5000);
	ck_assert_msg(s0 >= 45 && s0 <= 52, "first second: %u", s0);
	ck_assert_msg(s1 >= 76 && s1 <= 84, "second second: %u", s1);
	ck_assert_msg(s2 >= 155 && s2 <= 165, "third second: %u", s2);
	ck_assert_msg(s3 >= 315 && s3 <= 325, "fourth second: %u", s3);
	/* Ramp over: the configured rate. */
	ck_assert_msg(s4 >= 395 && s4 <= 405, "after the ramp: %u", s4);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_rate_slow_start_background)
{
	struct upstream_params p = rate_params(400);
	struct upstream_pool *pool;
	uint64_t tc;
	unsigned n;

	p.ramp_ms = 4000;
	p.close_after = 2;
	pool = new_pool(1, &p);
	tc = close_server(pool, 0, T0);
	/*
	 * The shares are of the bucket as it is now: during slow start it is
	 * 10 tokens, so background work still gets its half (not half of 100).
	 */
	n = burst_at(pool, tc, UPSTREAM_PRIO_BACKGROUND, 1000, NULL);
	ck_assert_uint_eq(n, 6);
	ck_assert_uint_eq(
	    burst_at(pool, tc, UPSTREAM_PRIO_STALE, 1000, NULL), 2);
	ck_assert_uint_eq(
	    burst_at(pool, tc, UPSTREAM_PRIO_CLIENT, 1000, NULL), 2);
	upstream_pool_free(pool);
}
END_TEST

/* ---- bookkeeping ---- */

START_TEST(test_outstanding)
{
	struct upstream_params p = params();
	struct upstream_pool *pool = new_pool(2, &p);
	struct upstream_stats st;

	upstream_sent(pool, 0, T0);
	upstream_sent(pool, 0, T0);
	upstream_sent(pool, 1, T0);
	upstream_get_stats(pool, 0, &st);
	ck_assert_uint_eq(st.outstanding, 2);
	upstream_get_stats(pool, 1, &st);
	ck_assert_uint_eq(st.outstanding, 1);
	/* Probes are not traffic: their completion leaves the count. */
	upstream_done(pool, 0, UPSTREAM_OK, 10, true, T0 + 10);
	upstream_done(pool, 0, UPSTREAM_TIMEOUT, 0, true, T0 + 10);
	upstream_get_stats(pool, 0, &st);
	ck_assert_uint_eq(st.outstanding, 2);
	upstream_done(pool, 0, UPSTREAM_OK, 10, false, T0 + 10);
	upstream_get_stats(pool, 0, &st);
	ck_assert_uint_eq(st.outstanding, 1);
	upstream_done(pool, 0, UPSTREAM_TIMEOUT, 0, false, T0 + 1000);
	upstream_get_stats(pool, 0, &st);
	ck_assert_uint_eq(st.outstanding, 0);
	/* Never below zero. */
	upstream_done(pool, 0, UPSTREAM_RCODE, 0, false, T0 + 1000);
	upstream_get_stats(pool, 0, &st);
	ck_assert_uint_eq(st.outstanding, 0);
	upstream_get_stats(pool, 1, &st);
	ck_assert_uint_eq(st.outstanding, 1);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_stats_counters)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	struct upstream_stats st;

	p.open_after = 100;
	pool = new_pool(2, &p);
	upstream_get_stats(pool, 0, &st);
	ck_assert_uint_eq(st.queries, 0);
	ck_assert_uint_eq(st.answers, 0);
	ck_assert_uint_eq(st.timeouts, 0);
	ck_assert_uint_eq(st.errors, 0);
	ck_assert_uint_eq(st.outstanding, 0);
	sample(pool, 0, 10, T0);
	sample(pool, 0, 10, T0 + 100);
	fail_q(pool, 0, UPSTREAM_TIMEOUT, T0 + 200);
	fail_q(pool, 0, UPSTREAM_RCODE, T0 + 300);
	fail_q(pool, 0, UPSTREAM_REFUSED_NET, T0 + 400);
	fail_q(pool, 0, UPSTREAM_MALFORMED, T0 + 500);
	upstream_sent(pool, 0, T0 + 600);
	upstream_get_stats(pool, 0, &st);
	ck_assert_uint_eq(st.queries, 7);
	ck_assert_uint_eq(st.answers, 2);
	ck_assert_uint_eq(st.timeouts, 1);
	ck_assert_uint_eq(st.errors, 3);
	ck_assert_uint_eq(st.outstanding, 1);
	ck_assert_int_eq(st.circuit, UPSTREAM_CLOSED);
	/* Per server. */
	upstream_get_stats(pool, 1, &st);
	ck_assert_uint_eq(st.queries, 0);
	ck_assert_uint_eq(st.answers, 0);
	upstream_pool_free(pool);
}
END_TEST

#define POOL_THREADS 3
#define POOL_ITERS 20000

/* One worker's share of the traffic: its own clock, its own randomness. */
struct pool_worker {
	struct upstream_pool *pool;
	unsigned seed;
	bool prober; /* worker 0 probes, as in the daemon */
	unsigned sent[UPSTREAM_MAX];
	unsigned probes[UPSTREAM_MAX];
};

static void *
pool_worker_main(void *arg)
{
	struct pool_worker *w = arg;
	uint64_t now = T0;

	for (unsigned i = 0; i < POOL_ITERS; i++) {
		uint32_t rnd = (uint32_t)rand_r(&w->seed);
		bool explore;
		int idx = upstream_pick(w->pool, 0, now, rnd,
		    (enum upstream_prio)(rnd % 3), &explore);
		now += 1 + rnd % 3;
		if (w->prober) {
			int due = upstream_probe_due(w->pool, now, rnd);
			if (due >= 0) {
				w->probes[due]++;
				/* Server 2 never answers; the others do. */
				upstream_done(w->pool, (unsigned)due,
				    due == 2 ? UPSTREAM_TIMEOUT : UPSTREAM_OK,
				    5, true, now);
			}
		}
		if (idx < 0)
			continue;
		upstream_sent(w->pool, (unsigned)idx, now);
		w->sent[idx]++;
		if (rnd % 7 == 0 && upstream_budget_take(w->pool, now))
			upstream_budget_earn(w->pool);
		/* Server 1 flaps: a run of failures opens it now and then. */
		upstream_done(w->pool, (unsigned)idx,
		    idx == 2 || (idx == 1 && (i / 64) % 3 == 0)
			? UPSTREAM_TIMEOUT
			: UPSTREAM_OK,
		    1 + rnd % 20, false, now + 1 + rnd % 20);
	}
	return NULL;
}

/*
 * Workers picking and reporting on one pool while main reads its stats for
 * /metrics and builds a reload's pool from it: the counters of every server
 * add up, and nothing is outstanding once every query is done.
 */
START_TEST(test_threads_share_a_pool)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	struct pool_worker w[POOL_THREADS];
	pthread_t th[POOL_THREADS];
	unsigned reads = 0;

	p.qps = 100000;
	pool = new_pool(3, &p);
	memset(w, 0, sizeof(w));
	for (unsigned i = 0; i < POOL_THREADS; i++) {
		w[i].pool = pool;
		w[i].seed = 7 + i;
		w[i].prober = i == 0;
		ck_assert_int_eq(
		    pthread_create(&th[i], NULL, pool_worker_main, &w[i]), 0);
	}
	/* Main's side, until the first worker is done (bounded by its work). */
	while (pthread_tryjoin_np(th[0], NULL) != 0) {
		struct upstream_pool *next = new_pool(3, &p);
		struct upstream_stats st;
		for (unsigned i = 0; i < 3; i++)
			upstream_get_stats(pool, i, &st);
		(void)upstream_best_rto(pool);
		(void)upstream_any_usable(pool);
		(void)upstream_recovered_ms(pool);
		upstream_inherit(next, pool);
		upstream_pool_free(next);
		reads++;
	}
	for (unsigned i = 1; i < POOL_THREADS; i++)
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
	ck_assert_uint_gt(reads, 0);
	for (unsigned s = 0; s < 3; s++) {
		struct upstream_stats st;
		unsigned sent = 0, probes = 0;
		for (unsigned i = 0; i < POOL_THREADS; i++) {
			sent += w[i].sent[s];
			probes += w[i].probes[s];
		}
		upstream_get_stats(pool, s, &st);
		ck_assert_uint_eq(st.outstanding, 0);
		ck_assert_uint_eq(st.queries, sent);
		ck_assert_uint_eq(st.answers + st.timeouts + st.errors, sent);
		ck_assert_uint_eq(st.probes, probes);
	}
	/* The silent server was found out and left to the probes. */
	{
		struct upstream_stats st;
		upstream_get_stats(pool, 2, &st);
		ck_assert_int_ne(st.circuit, UPSTREAM_CLOSED);
		ck_assert_uint_gt(st.probes, 0);
	}
	upstream_pool_free(pool);
}
END_TEST

/*
 * Workers pick, send and record answers with no lock: concurrently, every
 * query is still counted once, none stays outstanding, the estimate stays
 * within the samples, and the retry budget never goes negative.
 */
#define LF_THREADS 4
#define LF_ROUNDS 20000

struct lf_run {
	struct upstream_pool *pool;
	unsigned id;
	unsigned taken;
};

static void *
lf_thread(void *arg)
{
	struct lf_run *r = arg;

	for (unsigned i = 0; i < LF_ROUNDS; i++) {
		uint64_t now = T0 + i / 16;
		bool explore;
		int up = upstream_pick(r->pool, 0, now, i * 2654435761u + r->id,
		    UPSTREAM_PRIO_CLIENT, &explore);
		if (up < 0)
			continue;
		upstream_budget_earn(r->pool);
		upstream_sent(r->pool, (unsigned)up, now);
		(void)upstream_rto(r->pool, (unsigned)up);
		upstream_done(r->pool, (unsigned)up, UPSTREAM_OK,
		    10 + (i + r->id) % 20, false, now + 1);
		if ((i & 7) == 0 && upstream_budget_take(r->pool, now))
			r->taken++;
	}
	return NULL;
}

START_TEST(test_threads_lock_free_counts)
{
	struct upstream_params p = params();
	struct upstream_pool *pool;
	struct lf_run runs[LF_THREADS];
	pthread_t tid[LF_THREADS];
	struct upstream_stats st;
	uint64_t queries = 0, answers = 0;

	p.qps = 1000000;
	pool = new_pool(3, &p);
	for (unsigned t = 0; t < LF_THREADS; t++) {
		runs[t].pool = pool;
		runs[t].id = t;
		runs[t].taken = 0;
		ck_assert_int_eq(
		    pthread_create(&tid[t], NULL, lf_thread, &runs[t]), 0);
	}
	for (unsigned t = 0; t < LF_THREADS; t++)
		pthread_join(tid[t], NULL);
	for (unsigned i = 0; i < 3; i++) {
		upstream_get_stats(pool, i, &st);
		queries += st.queries;
		answers += st.answers;
		ck_assert_uint_eq(st.outstanding, 0);
		ck_assert_int_eq(st.circuit, UPSTREAM_CLOSED);
		if (st.queries > 0) {
			ck_assert_uint_ge(st.srtt_us, 10000);
			ck_assert_uint_le(st.srtt_us, 29000);
		}
	}
	ck_assert_uint_eq(queries, (uint64_t)LF_THREADS * LF_ROUNDS);
	ck_assert_uint_eq(answers, queries);
	ck_assert_uint_le(st.budget_tokens, BUDGET_CAP);
	upstream_pool_free(pool);
}
END_TEST

START_TEST(test_policy_names)
{
	static const enum upstream_policy pols[] = {UPSTREAM_FASTEST,
	    UPSTREAM_SEQUENTIAL, UPSTREAM_ROUND_ROBIN, UPSTREAM_RANDOM};

	for (size_t i = 0; i < sizeof(pols) / sizeof(pols[0]); i++)
		ck_assert_int_eq(
		    upstream_policy_parse(upstream_policy_name(pols[i])),
		    (int)pols[i]);
	ck_assert_str_eq(upstream_policy_name(UPSTREAM_FASTEST), "fastest");
	ck_assert_str_eq(
	    upstream_policy_name(UPSTREAM_SEQUENTIAL), "sequential");
	ck_assert_str_eq(
	    upstream_policy_name(UPSTREAM_ROUND_ROBIN), "round-robin");
	ck_assert_str_eq(upstream_policy_name(UPSTREAM_RANDOM), "random");
	ck_assert_int_eq(
	    upstream_policy_parse("Round-Robin"), UPSTREAM_ROUND_ROBIN);
	ck_assert_int_eq(upstream_policy_parse("bogus"), -EINVAL);
	ck_assert_int_eq(upstream_policy_parse(""), -EINVAL);
	ck_assert_int_eq(upstream_policy_parse("fastest "), -EINVAL);
	/* The config constants match the enum. */
	ck_assert_int_eq(CONFIG_POLICY_FASTEST, UPSTREAM_FASTEST);
	ck_assert_int_eq(CONFIG_POLICY_SEQUENTIAL, UPSTREAM_SEQUENTIAL);
	ck_assert_int_eq(CONFIG_POLICY_ROUND_ROBIN, UPSTREAM_ROUND_ROBIN);
	ck_assert_int_eq(CONFIG_POLICY_RANDOM, UPSTREAM_RANDOM);
	ck_assert_str_eq(upstream_circuit_name(UPSTREAM_CLOSED), "closed");
	ck_assert_str_eq(upstream_circuit_name(UPSTREAM_OPEN), "open");
	ck_assert_str_eq(
	    upstream_circuit_name(UPSTREAM_HALF_OPEN), "half-open");
}
END_TEST

START_TEST(test_pool_new_edges)
{
	struct upstream_params p = params();
	struct config_upstream addrs[UPSTREAM_MAX + 1];
	struct upstream_pool *pool;
	char why[128];

	for (size_t i = 0; i <= UPSTREAM_MAX; i++)
		ck_assert_int_eq(config_parse_upstream("127.0.0.1:5301",
				     &addrs[i], why, sizeof(why)),
		    0);
	ck_assert_ptr_null(upstream_pool_new("test.", addrs, 0, &p));
	ck_assert_ptr_null(
	    upstream_pool_new("test.", addrs, UPSTREAM_MAX + 1, &p));
	pool = upstream_pool_new("test.", addrs, UPSTREAM_MAX, &p);
	ck_assert_ptr_nonnull(pool);
	ck_assert_uint_eq(upstream_count(pool), UPSTREAM_MAX);
	upstream_pool_free(pool);
	upstream_pool_free(NULL);

	/* Addresses are copied. */
	ck_assert_int_eq(config_parse_upstream(
			     "127.0.0.1:5301", &addrs[0], why, sizeof(why)),
	    0);
	ck_assert_int_eq(
	    config_parse_upstream("[::1]:5302", &addrs[1], why, sizeof(why)),
	    0);
	pool = upstream_pool_new("test.", addrs, 2, &p);
	ck_assert_ptr_nonnull(pool);
	memset(addrs, 0, sizeof(addrs));
	ck_assert_uint_eq(upstream_count(pool), 2);
	ck_assert_str_eq(upstream_addr(pool, 0)->text, "127.0.0.1:5301");
	ck_assert_str_eq(upstream_addr(pool, 1)->text, "[::1]:5302");
	upstream_pool_free(pool);
}
END_TEST

static Suite *
make_suite(void)
{
	Suite *s = suite_create("upstream");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_unchecked_fixture(tc, quiet, NULL);
	tcase_add_test(tc, test_rto_initial_before_samples);
	tcase_add_test(tc, test_rtt_first_sample);
	tcase_add_test(tc, test_rtt_following_samples);
	tcase_add_test(tc, test_rtt_converges);
	tcase_add_test(tc, test_rto_clamped);
	tcase_add_test(tc, test_best_rto);
	tcase_add_test(tc, test_fastest_picks_lowest_srtt);
	tcase_add_test(tc, test_fastest_explores);
	tcase_add_test(tc, test_fastest_explore_needs_another);
	tcase_add_test(tc, test_fastest_outstanding_spreads_load);
	tcase_add_test(tc, test_exclude_mask);
	tcase_add_test(tc, test_exclude_mask_high_bits);
	tcase_add_test(tc, test_unsampled_one_at_a_time);
	tcase_add_test(tc, test_policy_sequential);
	tcase_add_test(tc, test_policy_round_robin);
	tcase_add_test(tc, test_policy_random);
	tcase_add_test(tc, test_circuit_opens_after_failures);
	tcase_add_test(tc, test_circuit_success_resets_count);
	tcase_add_test(tc, test_open_server_never_picked);
	tcase_add_test(tc, test_all_open_fail_fast);
	tcase_add_test(tc, test_probe_after_backoff);
	tcase_add_test(tc, test_probe_only_open_server_due);
	tcase_add_test(tc, test_probe_failure_backs_off);
	tcase_add_test(tc, test_probe_success_half_open_then_closed);
	tcase_add_test(tc, test_half_open_failure_reopens_doubled);
	tcase_add_test(tc, test_probe_jitter_uses_rnd);
	tcase_add_test(tc, test_idle_probe);
	tcase_add_test(tc, test_budget_floor_start);
	tcase_add_test(tc, test_budget_floor_per_second);
	tcase_add_test(tc, test_budget_earn);
	tcase_add_test(tc, test_budget_earn_exact_fractions);
	tcase_add_test(tc, test_budget_cap);
	tcase_add_test(tc, test_rate_burst_then_budget);
	tcase_add_test(tc, test_rate_burst_size);
	tcase_add_test(tc, test_rate_refill);
	tcase_add_test(tc, test_rate_background_shed_first);
	tcase_add_test(tc, test_rate_stale_between);
	tcase_add_test(tc, test_rate_max_outstanding);
	tcase_add_test(tc, test_rate_unlimited);
	tcase_add_test(tc, test_rate_per_server);
	tcase_add_test(tc, test_rate_none_usable_vs_budget);
	tcase_add_test(tc, test_rate_slow_start_after_close);
	tcase_add_test(tc, test_rate_slow_start_background);
	tcase_add_test(tc, test_outstanding);
	tcase_add_test(tc, test_stats_counters);
	tcase_add_test(tc, test_threads_share_a_pool);
	tcase_add_test(tc, test_threads_lock_free_counts);
	tcase_add_test(tc, test_policy_names);
	tcase_add_test(tc, test_pool_new_edges);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(make_suite)
