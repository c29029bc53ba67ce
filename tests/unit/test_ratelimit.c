/*
 * Unit tests for the per-client token buckets: time (now, in ms) is always
 * an explicit argument; nothing sleeps or reads a clock.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "stubborn/ratelimit.h"
#include "unit.h"

#define T0 1000000ULL /* an arbitrary monotonic start, not 0 */
#define TABLE 512     /* a power of two: the table holds exactly this */

static const uint8_t KEY[16] = {
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

static struct ratelimit *new_rl(size_t n);
static size_t prefix_of(
    const char *ip, unsigned v4_bits, unsigned v6_bits, uint8_t *out);
static enum ratelimit_verdict check_ip(struct ratelimit *rl, const char *ip,
    unsigned v4_bits, uint32_t rate, uint32_t burst, uint64_t now);
static unsigned passes(struct ratelimit *rl, const char *ip, uint32_t rate,
    uint32_t burst, uint64_t now, unsigned tries);
static void client_n(unsigned i, char *buf, size_t len);
static void *thread_main(void *arg);
static Suite *make_suite(void);

static struct ratelimit *
new_rl(size_t n)
{
	struct ratelimit *rl = ratelimit_new(n, KEY);

	ck_assert_ptr_nonnull(rl);
	return rl;
}

/* The prefix of a numeric IPv4 or IPv6 address (port 53). */
static size_t
prefix_of(const char *ip, unsigned v4_bits, unsigned v6_bits, uint8_t *out)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(53);
		ck_assert_int_eq(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons(53);
		ck_assert_int_eq(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
	}
	return ratelimit_prefix(
	    (const struct sockaddr *)&ss, v4_bits, v6_bits, out);
}

static enum ratelimit_verdict
check_ip(struct ratelimit *rl, const char *ip, unsigned v4_bits, uint32_t rate,
    uint32_t burst, uint64_t now)
{
	uint8_t p[17];
	size_t n = prefix_of(ip, v4_bits, 56, p);

	return ratelimit_check(rl, p, n, rate, burst, now);
}

/* How many of tries checks at now pass, for ip as /32. */
static unsigned
passes(struct ratelimit *rl, const char *ip, uint32_t rate, uint32_t burst,
    uint64_t now, unsigned tries)
{
	unsigned n = 0;

	for (unsigned i = 0; i < tries; i++)
		if (check_ip(rl, ip, 32, rate, burst, now) == RATELIMIT_PASS)
			n++;
	return n;
}

/* Distinct client addresses 10.x.y.z for i < 2^24. */
static void
client_n(unsigned i, char *buf, size_t len)
{
	snprintf(
	    buf, len, "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
}

START_TEST(test_new_client_starts_full)
{
	struct ratelimit *rl = new_rl(TABLE);

	/* burst 5: five at once, at the same millisecond, then limited. */
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(
		    check_ip(rl, "192.0.2.1", 32, 1, 5, T0), RATELIMIT_PASS);
	ck_assert_int_eq(
	    check_ip(rl, "192.0.2.1", 32, 1, 5, T0), RATELIMIT_LIMITED_FIRST);
	ratelimit_free(rl);
}
END_TEST

START_TEST(test_refills_at_rate)
{
	struct ratelimit *rl = new_rl(TABLE);

	/* 10 a second: one token every 100 ms. */
	ck_assert_uint_eq(passes(rl, "192.0.2.1", 10, 10, T0, 20), 10);
	ck_assert_int_eq(
	    check_ip(rl, "192.0.2.1", 32, 10, 10, T0 + 99), RATELIMIT_LIMITED);
	ck_assert_int_eq(
	    check_ip(rl, "192.0.2.1", 32, 10, 10, T0 + 100), RATELIMIT_PASS);
	ck_assert_int_eq(check_ip(rl, "192.0.2.1", 32, 10, 10, T0 + 100),
	    RATELIMIT_LIMITED_FIRST);
	/* Half a second: five more. */
	ck_assert_uint_eq(passes(rl, "192.0.2.1", 10, 10, T0 + 600, 20), 5);
	/* Fractions add up across checks: 3 x 40 ms = 1.2 tokens. */
	ck_assert_int_eq(
	    check_ip(rl, "192.0.2.1", 32, 10, 10, T0 + 640), RATELIMIT_LIMITED);
	ck_assert_int_eq(
	    check_ip(rl, "192.0.2.1", 32, 10, 10, T0 + 680), RATELIMIT_LIMITED);
	ck_assert_int_eq(
	    check_ip(rl, "192.0.2.1", 32, 10, 10, T0 + 720), RATELIMIT_PASS);
	ratelimit_free(rl);
}
END_TEST

START_TEST(test_refill_capped_at_burst)
{
	struct ratelimit *rl = new_rl(TABLE);

	ck_assert_uint_eq(passes(rl, "192.0.2.1", 100, 3, T0, 10), 3);
	/* An hour idle earns 360000 tokens; the bucket holds 3. */
	ck_assert_uint_eq(passes(rl, "192.0.2.1", 100, 3, T0 + 3600000, 10), 3);
	ratelimit_free(rl);
}
END_TEST

START_TEST(test_limited_first_only_on_transition)
{
	struct ratelimit *rl = new_rl(TABLE);
	const char *c = "198.51.100.7";

	ck_assert_int_eq(check_ip(rl, c, 32, 1, 1, T0), RATELIMIT_PASS);
	ck_assert_int_eq(
	    check_ip(rl, c, 32, 1, 1, T0), RATELIMIT_LIMITED_FIRST);
	ck_assert_int_eq(check_ip(rl, c, 32, 1, 1, T0 + 10), RATELIMIT_LIMITED);
	ck_assert_int_eq(
	    check_ip(rl, c, 32, 1, 1, T0 + 500), RATELIMIT_LIMITED);
	/* Back under the limit, then over again: FIRST once more. */
	ck_assert_int_eq(check_ip(rl, c, 32, 1, 1, T0 + 1000), RATELIMIT_PASS);
	ck_assert_int_eq(
	    check_ip(rl, c, 32, 1, 1, T0 + 1000), RATELIMIT_LIMITED_FIRST);
	ck_assert_int_eq(
	    check_ip(rl, c, 32, 1, 1, T0 + 1001), RATELIMIT_LIMITED);
	ratelimit_free(rl);
}
END_TEST

START_TEST(test_rate_zero_is_unlimited)
{
	struct ratelimit *rl = new_rl(TABLE);

	ck_assert_uint_eq(passes(rl, "192.0.2.1", 0, 1, T0, 10000), 10000);
	ck_assert_uint_eq(passes(rl, "192.0.2.1", 0, 0, T0, 100), 100);
	/* Nothing is tracked for an unlimited check. */
	ck_assert_uint_eq(ratelimit_tracked(rl), 0);
	ratelimit_free(rl);
}
END_TEST

START_TEST(test_time_going_backwards)
{
	struct ratelimit *rl = new_rl(TABLE);

	ck_assert_uint_eq(passes(rl, "192.0.2.1", 10, 2, T0 + 5000, 5), 2);
	/* An earlier now refills nothing (and does not wrap around). */
	ck_assert_int_eq(
	    check_ip(rl, "192.0.2.1", 32, 10, 2, T0), RATELIMIT_LIMITED);
	ck_assert_int_eq(
	    check_ip(rl, "192.0.2.1", 32, 10, 2, T0 + 5050), RATELIMIT_LIMITED);
	ck_assert_int_eq(
	    check_ip(rl, "192.0.2.1", 32, 10, 2, T0 + 5100), RATELIMIT_PASS);
	ratelimit_free(rl);
}
END_TEST

START_TEST(test_prefix_v4_24_groups)
{
	uint8_t a[17], b[17], c[17];
	static const uint8_t want[5] = {4, 1, 2, 3, 0};
	struct ratelimit *rl = new_rl(TABLE);

	ck_assert_uint_eq(prefix_of("1.2.3.4", 24, 56, a), 5);
	ck_assert_uint_eq(prefix_of("1.2.3.99", 24, 56, b), 5);
	ck_assert_uint_eq(prefix_of("1.2.4.4", 24, 56, c), 5);
	ck_assert_mem_eq(a, want, 5);
	ck_assert_mem_eq(a, b, 5);
	ck_assert(memcmp(a, c, 5) != 0);
	/* One bucket for the /24: 1.2.3.99 finds it drained by 1.2.3.4. */
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(
		    check_ip(rl, "1.2.3.4", 24, 1, 4, T0), RATELIMIT_PASS);
	ck_assert_int_eq(
	    check_ip(rl, "1.2.3.99", 24, 1, 4, T0), RATELIMIT_LIMITED_FIRST);
	ck_assert_int_eq(check_ip(rl, "1.2.4.4", 24, 1, 4, T0), RATELIMIT_PASS);
	ratelimit_free(rl);
}
END_TEST

START_TEST(test_prefix_v4_32_separates)
{
	uint8_t a[17], b[17];
	static const uint8_t want[5] = {4, 1, 2, 3, 4};
	struct ratelimit *rl = new_rl(TABLE);

	ck_assert_uint_eq(prefix_of("1.2.3.4", 32, 56, a), 5);
	ck_assert_uint_eq(prefix_of("1.2.3.99", 32, 56, b), 5);
	ck_assert_mem_eq(a, want, 5);
	ck_assert(memcmp(a, b, 5) != 0);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(
		    check_ip(rl, "1.2.3.4", 32, 1, 4, T0), RATELIMIT_PASS);
	ck_assert_int_eq(
	    check_ip(rl, "1.2.3.4", 32, 1, 4, T0), RATELIMIT_LIMITED_FIRST);
	ck_assert_int_eq(
	    check_ip(rl, "1.2.3.99", 32, 1, 4, T0), RATELIMIT_PASS);
	ratelimit_free(rl);
}
END_TEST

START_TEST(test_prefix_odd_lengths)
{
	uint8_t a[17], b[17], c[17];
	static const uint8_t want[5] = {4, 10, 1, 16, 0};

	/* /20: the low 4 bits of the third byte go. */
	prefix_of("10.1.31.5", 20, 56, a);
	prefix_of("10.1.16.1", 20, 56, b);
	prefix_of("10.1.32.1", 20, 56, c);
	ck_assert_mem_eq(a, want, 5);
	ck_assert_mem_eq(a, b, 5);
	ck_assert(memcmp(a, c, 5) != 0);
	/* Out-of-range lengths are clamped to the whole address. */
	prefix_of("10.1.31.5", 99, 56, a);
	prefix_of("10.1.31.6", 99, 56, b);
	ck_assert(memcmp(a, b, 5) != 0);
}
END_TEST

START_TEST(test_prefix_v6_56)
{
	uint8_t a[17], b[17], c[17], d[17];
	static const uint8_t want[17] = {6, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0x12};
	struct ratelimit *rl = new_rl(TABLE);

	ck_assert_uint_eq(prefix_of("2001:db8:0:1200::1", 32, 56, a), 17);
	ck_assert_uint_eq(
	    prefix_of("2001:db8:0:12ff:ffff:ffff:ffff:2", 32, 56, b), 17);
	ck_assert_uint_eq(prefix_of("2001:db8:0:1300::1", 32, 56, c), 17);
	ck_assert_mem_eq(a, want, 17);
	ck_assert_mem_eq(a, b, 17);
	ck_assert(memcmp(a, c, 17) != 0);
	/* /128 separates the two addresses of one /56. */
	prefix_of("2001:db8:0:1200::1", 32, 128, a);
	prefix_of("2001:db8:0:1200::2", 32, 128, d);
	ck_assert(memcmp(a, d, 17) != 0);
	/* The limiter: one bucket for the /56. */
	prefix_of("2001:db8:0:1200::1", 32, 56, a);
	ck_assert_int_eq(ratelimit_check(rl, a, 17, 1, 2, T0), RATELIMIT_PASS);
	ck_assert_int_eq(ratelimit_check(rl, b, 17, 1, 2, T0), RATELIMIT_PASS);
	ck_assert_int_eq(
	    ratelimit_check(rl, a, 17, 1, 2, T0), RATELIMIT_LIMITED_FIRST);
	ck_assert_int_eq(ratelimit_check(rl, c, 17, 1, 2, T0), RATELIMIT_PASS);
	ratelimit_free(rl);
}
END_TEST

START_TEST(test_families_differ)
{
	uint8_t a[17], b[17];

	/* ::102:304 and 1.2.3.4 share no bucket: the family byte differs. */
	ck_assert_uint_ne(prefix_of("1.2.3.4", 32, 128, a),
	    prefix_of("::102:304", 32, 128, b));
	ck_assert_uint_ne(a[0], b[0]);
}
END_TEST

START_TEST(test_clients_independent)
{
	struct ratelimit *rl = new_rl(TABLE);
	char ip[32];

	ck_assert_uint_eq(passes(rl, "203.0.113.1", 1, 10, T0, 50), 10);
	/* 50 other clients, each with its own full bucket. */
	for (unsigned i = 0; i < 50; i++) {
		client_n(i, ip, sizeof(ip));
		ck_assert_uint_eq(passes(rl, ip, 1, 10, T0, 12), 10);
	}
	/* ... and the first one is still drained. */
	ck_assert_int_eq(
	    check_ip(rl, "203.0.113.1", 32, 1, 10, T0), RATELIMIT_LIMITED);
	ratelimit_free(rl);
}
END_TEST

/*
 * 8192 clients through a 512-slot table: the table forgets the least
 * recently seen.  "recent" is drained at T0 and checked with every new
 * client, so it is never the least recently seen and keeps its (empty)
 * bucket; "old" is drained at T0 and never seen again, so it is forgotten
 * and starts full.  Rate 1, burst 1000: remembered, either has earned about
 * one token by the end; forgotten, 1000.
 */
START_TEST(test_table_full_forgets_least_recent)
{
	struct ratelimit *rl = new_rl(TABLE);
	char ip[32];
	uint64_t now = T0;

	ck_assert_uint_eq(passes(rl, "192.0.2.1", 1, 1000, T0, 1001), 1000);
	ck_assert_uint_eq(passes(rl, "192.0.2.2", 1, 1000, T0, 1001), 1000);
	for (unsigned i = 0; i < 16 * TABLE; i++) {
		now = T0 + 1 + i / 8;
		client_n(i, ip, sizeof(ip));
		ck_assert_int_eq(
		    check_ip(rl, ip, 32, 1, 1000, now), RATELIMIT_PASS);
		(void)check_ip(rl, "192.0.2.1", 32, 1, 1000, now);
		ck_assert_uint_le(ratelimit_tracked(rl), TABLE);
	}
	ck_assert_uint_le(passes(rl, "192.0.2.1", 1, 1000, now, 20), 1);
	ck_assert_uint_eq(passes(rl, "192.0.2.2", 1, 1000, now, 20), 20);
	ratelimit_free(rl);
}
END_TEST

START_TEST(test_tracked_bounded)
{
	struct ratelimit *rl = new_rl(TABLE);
	char ip[32];

	ck_assert_uint_eq(ratelimit_tracked(rl), 0);
	for (unsigned i = 0; i < 40; i++) {
		client_n(i, ip, sizeof(ip));
		(void)check_ip(rl, ip, 32, 10, 10, T0);
	}
	ck_assert_uint_eq(ratelimit_tracked(rl), 40);
	/* The same clients again: no new entries. */
	for (unsigned i = 0; i < 40; i++) {
		client_n(i, ip, sizeof(ip));
		(void)check_ip(rl, ip, 32, 10, 10, T0 + 1);
	}
	ck_assert_uint_eq(ratelimit_tracked(rl), 40);
	for (unsigned i = 40; i < 20000; i++) {
		client_n(i, ip, sizeof(ip));
		(void)check_ip(rl, ip, 32, 10, 10, T0 + 2 + i);
	}
	ck_assert_uint_le(ratelimit_tracked(rl), TABLE);
	/* 20000 clients hashed into 64 groups of 8: every slot is used. */
	ck_assert_uint_eq(ratelimit_tracked(rl), TABLE);
	ratelimit_free(rl);

	/* A bigger table is rounded up to a power of two, never beyond. */
	rl = new_rl(3000);
	for (unsigned i = 0; i < 50000; i++) {
		client_n(i, ip, sizeof(ip));
		(void)check_ip(rl, ip, 32, 10, 10, T0 + i);
	}
	ck_assert_uint_le(ratelimit_tracked(rl), 4096);
	ck_assert_uint_ge(ratelimit_tracked(rl), 3000);
	ratelimit_free(rl);
}
END_TEST

START_TEST(test_new_edges)
{
	ck_assert_ptr_null(ratelimit_new(0, KEY));
	ratelimit_free(NULL);
}
END_TEST

/*
 * Threads: every thread takes from one shared bucket and from its own, all
 * at the same now (no refill): exactly burst tokens come out of each bucket
 * however the threads interleave.
 */
#define NTHREADS 4
#define SHARED_BURST 100000
#define OWN_BURST 300

struct thr {
	struct ratelimit *rl;
	unsigned id;
	unsigned shared_pass;
	unsigned own_pass;
	unsigned firsts;
};

static void *
thread_main(void *arg)
{
	struct thr *t = arg;
	char own[32];

	snprintf(own, sizeof(own), "172.16.0.%u", t->id + 1);
	for (unsigned i = 0; i < 50000; i++) {
		enum ratelimit_verdict v =
		    check_ip(t->rl, "192.0.2.200", 32, 1, SHARED_BURST, T0);
		if (v == RATELIMIT_PASS)
			t->shared_pass++;
		else if (v == RATELIMIT_LIMITED_FIRST)
			t->firsts++;
		if (i % 8 == 0 &&
		    check_ip(t->rl, own, 32, 1, OWN_BURST, T0) ==
			RATELIMIT_PASS)
			t->own_pass++;
	}
	return NULL;
}

START_TEST(test_threads)
{
	struct ratelimit *rl = new_rl(TABLE);
	pthread_t th[NTHREADS];
	struct thr t[NTHREADS];
	unsigned shared = 0, firsts = 0;

	memset(t, 0, sizeof(t));
	for (unsigned i = 0; i < NTHREADS; i++) {
		t[i].rl = rl;
		t[i].id = i;
		ck_assert_int_eq(
		    pthread_create(&th[i], NULL, thread_main, &t[i]), 0);
	}
	for (unsigned i = 0; i < NTHREADS; i++)
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
	for (unsigned i = 0; i < NTHREADS; i++) {
		shared += t[i].shared_pass;
		firsts += t[i].firsts;
		ck_assert_uint_eq(t[i].own_pass, OWN_BURST);
	}
	ck_assert_uint_eq(shared, SHARED_BURST);
	ck_assert_uint_eq(firsts, 1);
	ck_assert_uint_eq(ratelimit_tracked(rl), NTHREADS + 1);
	ratelimit_free(rl);
}
END_TEST

static Suite *
make_suite(void)
{
	Suite *s = suite_create("ratelimit");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_new_client_starts_full);
	tcase_add_test(tc, test_refills_at_rate);
	tcase_add_test(tc, test_refill_capped_at_burst);
	tcase_add_test(tc, test_limited_first_only_on_transition);
	tcase_add_test(tc, test_rate_zero_is_unlimited);
	tcase_add_test(tc, test_time_going_backwards);
	tcase_add_test(tc, test_prefix_v4_24_groups);
	tcase_add_test(tc, test_prefix_v4_32_separates);
	tcase_add_test(tc, test_prefix_odd_lengths);
	tcase_add_test(tc, test_prefix_v6_56);
	tcase_add_test(tc, test_families_differ);
	tcase_add_test(tc, test_clients_independent);
	tcase_add_test(tc, test_table_full_forgets_least_recent);
	tcase_add_test(tc, test_tracked_bounded);
	tcase_add_test(tc, test_new_edges);
	tcase_add_test(tc, test_threads);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(make_suite)
