/*
 * Unit tests for DNS server cookies (RFC 7873, RFC 9018): what validates,
 * what does not, and rotation racing the workers that make and check
 * cookies.  Wall-clock times are explicit arguments.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "stubborn/cookie.h"
#include "stubborn/rng.h"
#include "unit.h"

#define NOW 1700000000u /* an arbitrary wall-clock second */
#define CHECKERS 3
#define CHECKS 20000

static void peer_v4(struct sockaddr_storage *ss, const char *ip);
static void query_with(struct wire_query *q, const uint8_t *cc,
    const struct sockaddr_storage *peer, uint32_t made_s);
static void setup(void);
static Suite *make_suite(void);

/* Each test starts from fresh secrets. */
static void
setup(void)
{
	ck_assert_int_eq(rng_init(), 0);
	cookie_init();
}

static void
peer_v4(struct sockaddr_storage *ss, const char *ip)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;

	memset(ss, 0, sizeof(*ss));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(5353);
	ck_assert_int_eq(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
}

/* A query carrying client cookie cc and the server cookie made for peer. */
static void
query_with(struct wire_query *q, const uint8_t *cc,
    const struct sockaddr_storage *peer, uint32_t made_s)
{
	memset(q, 0, sizeof(*q));
	q->has_opt = true;
	q->has_cookie = true;
	q->cookie_len = COOKIE_CLIENT_LEN + COOKIE_SERVER_LEN;
	memcpy(q->cookie, cc, COOKIE_CLIENT_LEN);
	cookie_make(cc, peer, made_s, q->cookie + COOKIE_CLIENT_LEN);
}

START_TEST(test_valid_for_its_client_only)
{
	static const uint8_t cc[COOKIE_CLIENT_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};
	struct sockaddr_storage a, b;
	struct wire_query q;

	peer_v4(&a, "192.0.2.1");
	peer_v4(&b, "192.0.2.2");
	query_with(&q, cc, &a, NOW);
	ck_assert(cookie_valid_query(&q, &a, NOW));
	ck_assert(cookie_valid_query(&q, &a, NOW + 3600));
	ck_assert(!cookie_valid_query(&q, &a, NOW + 3601));
	ck_assert(cookie_valid_query(&q, &a, NOW - 300));
	ck_assert(!cookie_valid_query(&q, &a, NOW - 301));
	ck_assert(!cookie_valid_query(&q, &b, NOW));
	q.cookie[0] ^= 1; /* another client cookie */
	ck_assert(!cookie_valid_query(&q, &a, NOW));
}
END_TEST

START_TEST(test_rotation_keeps_the_previous_secret)
{
	static const uint8_t cc[COOKIE_CLIENT_LEN] = {8, 7, 6, 5, 4, 3, 2, 1};
	struct sockaddr_storage a;
	struct wire_query q;

	peer_v4(&a, "192.0.2.1");
	query_with(&q, cc, &a, NOW);
	cookie_rotate();
	ck_assert(cookie_valid_query(&q, &a, NOW));
	cookie_rotate();
	ck_assert(!cookie_valid_query(&q, &a, NOW));
}
END_TEST

/*
 * Checkers run at most this many checks ahead of two per rotation, so the
 * rotations keep up however the threads are scheduled.
 */
#define AHEAD 8

struct checker {
	_Atomic unsigned *rotations;
	_Atomic unsigned *progress; /* checks made, all checkers */
	unsigned id;
	unsigned checked; /* with no rotation finishing in between */
	unsigned rejected;
};

/*
 * Makes a cookie and checks it at once, as a worker does for a client that
 * returns it.  When no rotation finished in between, at most one began and
 * the secret that made it is still current or previous: the cookie must
 * validate.  A secret read half old and half new would fail it.
 */
static void *
checker_main(void *arg)
{
	struct checker *c = arg;
	uint8_t cc[COOKIE_CLIENT_LEN] = {0};
	struct sockaddr_storage peer;
	struct wire_query q;

	peer_v4(&peer, "198.51.100.7");
	for (unsigned i = 0; i < CHECKS; i++) {
		unsigned before;
		bool ok;
		while ((before = atomic_load(c->rotations)) * 2 + AHEAD <
		    atomic_load_explicit(c->progress, memory_order_relaxed))
			sched_yield();
		cc[0] = (uint8_t)c->id;
		memcpy(cc + 4, &i, sizeof(i));
		query_with(&q, cc, &peer, NOW);
		ok = cookie_valid_query(&q, &peer, NOW);
		atomic_fetch_add_explicit(c->progress, 1, memory_order_relaxed);
		if (atomic_load(c->rotations) != before)
			continue;
		c->checked++;
		if (!ok)
			c->rejected++;
	}
	return NULL;
}

START_TEST(test_rotation_races_checkers)
{
	_Atomic unsigned rotations, progress;
	struct checker c[CHECKERS];
	pthread_t th[CHECKERS];
	unsigned checked = 0, last = 0, now;

	atomic_init(&rotations, 0);
	atomic_init(&progress, 0);
	memset(c, 0, sizeof(c));
	for (unsigned i = 0; i < CHECKERS; i++) {
		c[i].rotations = &rotations;
		c[i].progress = &progress;
		c[i].id = i;
		ck_assert_int_eq(
		    pthread_create(&th[i], NULL, checker_main, &c[i]), 0);
	}
	/*
	 * This thread rotates meanwhile, far more often than hourly: after
	 * every other check, and whenever the checkers wait for it, until they
	 * are done.  Relaxed: the pacing must not order the checkers' reads of
	 * a secret before its next rewrite, or ThreadSanitizer could not see a
	 * race there.
	 */
	while ((now = atomic_load_explicit(&progress, memory_order_relaxed)) <
	    CHECKERS * CHECKS) {
		if (now - last < 2 &&
		    atomic_load(&rotations) * 2 + AHEAD >= now) {
			sched_yield();
			continue;
		}
		cookie_rotate();
		atomic_fetch_add(&rotations, 1);
		last = now;
	}
	for (unsigned i = 0; i < CHECKERS; i++) {
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
		ck_assert_uint_eq(c[i].rejected, 0);
		checked += c[i].checked;
	}
	/* They did race, and some checks ran between two rotations. */
	ck_assert_uint_ge(
	    atomic_load(&rotations) * 2 + AHEAD + CHECKERS, CHECKERS * CHECKS);
	ck_assert_uint_gt(checked, 0);
}
END_TEST

static Suite *
make_suite(void)
{
	Suite *s = suite_create("cookie");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_valid_for_its_client_only);
	tcase_add_test(tc, test_rotation_keeps_the_previous_secret);
	tcase_add_test(tc, test_rotation_races_checkers);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(make_suite)
