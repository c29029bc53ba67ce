/* timer: the heap of deadlines the engine's timers live in. */
#include <stdlib.h>

#include <check.h>

#include "stubborn/timer.h"
#include "unit.h"

static uint64_t fired[64];
static size_t nfired;
static struct timer_heap *cur_heap;
static struct timer *rearm_me;

static void
record(struct timer *t, uint64_t now)
{
	fired[nfired++] = t->at * 1000 + now % 1000;
}

START_TEST(test_order_and_stop)
{
	struct timer_heap h;
	struct timer t[20];
	uint64_t prev = 0;

	timer_heap_init(&h);
	nfired = 0;
	ck_assert_uint_eq(timer_next(&h), TIMER_NONE);
	/* Deadlines in a scrambled order, a few equal. */
	for (int i = 0; i < 20; i++) {
		timer_init(&t[i], record);
		ck_assert(!timer_armed(&t[i]));
		ck_assert_int_eq(
		    timer_set(&h, &t[i], (uint64_t)((i * 7) % 13) + 100), 0);
		ck_assert(timer_armed(&t[i]));
	}
	ck_assert_uint_eq(timer_next(&h), 100);
	/* Stopping (twice is fine) and moving. */
	timer_stop(&h, &t[3]);
	timer_stop(&h, &t[3]);
	ck_assert(!timer_armed(&t[3]));
	ck_assert_int_eq(timer_set(&h, &t[5], 50), 0);
	ck_assert_uint_eq(timer_next(&h), 50);
	ck_assert_int_eq(timer_set(&h, &t[5], 500), 0);
	ck_assert_uint_eq(timer_run(&h, 99), 0);
	ck_assert_uint_eq(timer_run(&h, 112), 18);
	for (size_t i = 0; i < nfired; i++) {
		ck_assert_uint_ge(fired[i], prev);
		prev = fired[i];
	}
	ck_assert_uint_eq(timer_next(&h), 500);
	ck_assert_uint_eq(timer_run(&h, 1000), 1);
	ck_assert_uint_eq(timer_next(&h), TIMER_NONE);
	timer_heap_fini(&h);
}
END_TEST

/* A timer's fn may arm timers: one due now runs in the same call. */
static void
chain(struct timer *t, uint64_t now)
{
	nfired++;
	if (rearm_me != NULL) {
		struct timer *n = rearm_me;
		rearm_me = NULL;
		ck_assert_int_eq(timer_set(cur_heap, n, now), 0);
	}
	(void)t;
}

START_TEST(test_rearm_from_callback)
{
	struct timer_heap h;
	struct timer a, b;

	timer_heap_init(&h);
	cur_heap = &h;
	nfired = 0;
	timer_init(&a, chain);
	timer_init(&b, chain);
	ck_assert_int_eq(timer_set(&h, &a, 10), 0);
	rearm_me = &b;
	ck_assert_uint_eq(timer_run(&h, 10), 2);
	ck_assert_uint_eq(nfired, 2);
	ck_assert(!timer_armed(&a) && !timer_armed(&b));
	timer_heap_fini(&h);
}
END_TEST

/* Many timers: the heap grows; stopping from the middle keeps order. */
START_TEST(test_many)
{
	struct timer_heap h;
	static struct timer t[5000];
	uint64_t last = 0;
	size_t ran;

	timer_heap_init(&h);
	for (unsigned i = 0; i < 5000; i++) {
		timer_init(&t[i], record);
		ck_assert_int_eq(
		    timer_set(&h, &t[i], (uint64_t)((i * 7919u) % 5000u)), 0);
	}
	for (unsigned i = 0; i < 5000; i += 3)
		timer_stop(&h, &t[i]);
	while (timer_next(&h) != TIMER_NONE) {
		uint64_t n = timer_next(&h);
		ck_assert_uint_ge(n, last);
		last = n;
		nfired = 0;
		ran = timer_run(&h, n);
		ck_assert_uint_ge(ran, 1);
	}
	timer_heap_fini(&h);
}
END_TEST

static Suite *
make_suite(void)
{
	Suite *s = suite_create("timer");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_order_and_stop);
	tcase_add_test(tc, test_rearm_from_callback);
	tcase_add_test(tc, test_many);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(make_suite)
