/* Unit tests for the cache: responses are built by hand, time is an argument.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "stubborn/cache.h"
#include "stubborn/rng.h"
#include "stubborn/wire.h"
#include "unit.h"

#define T0 1000000ULL /* an arbitrary monotonic start, not 0 */
#define BIG (1u << 20)

static size_t name_wire(const char *, uint8_t *);
static size_t put_header(
    uint8_t *, uint16_t, uint16_t, uint16_t, uint16_t, uint16_t);
static size_t build_a(uint8_t *, const char *, unsigned, const uint32_t *);
static size_t build_nxdomain(uint8_t *, const char *, uint32_t);
static size_t build_nodata(uint8_t *, const char *, uint32_t);
static size_t key_for(uint8_t *, const char *, uint16_t, unsigned);
static void check_same_but_ttl(
    const uint8_t *, const uint8_t *, size_t, uint32_t);
static struct cache *new_cache(uint64_t, unsigned, uint32_t);
static void *smoke_thread(void *);
static void walk_cb(void *, const uint8_t *, size_t, const uint8_t *, size_t,
    uint32_t, uint64_t);
static uint64_t mono_ms(void);
static Suite *make_suite(void);

/* "www.example" -> 3www7example0 */
static size_t
name_wire(const char *text, uint8_t *out)
{
	size_t o = 0;

	while (*text != '\0') {
		const char *dot = strchr(text, '.');
		size_t l = dot ? (size_t)(dot - text) : strlen(text);

		out[o++] = (uint8_t)l;
		memcpy(out + o, text, l);
		o += l;
		text += l;
		if (*text == '.')
			text++;
	}
	out[o++] = 0;
	return o;
}

static size_t
put_header(uint8_t *m, uint16_t flags, uint16_t qd, uint16_t an, uint16_t ns,
    uint16_t ar)
{
	wire_put16(m, 0xbeef);
	wire_put16(m + 2, flags);
	wire_put16(m + 4, qd);
	wire_put16(m + 6, an);
	wire_put16(m + 8, ns);
	wire_put16(m + 10, ar);
	return WIRE_HDR_LEN;
}

/* A response with one question and n A records (owner: pointer to it). */
static size_t
build_a(uint8_t *m, const char *qname, unsigned n, const uint32_t *ttls)
{
	size_t o =
	    put_header(m, WIRE_QR | WIRE_RD | WIRE_RA, 1, (uint16_t)n, 0, 0);

	o += name_wire(qname, m + o);
	wire_put16(m + o, WIRE_TYPE_A);
	wire_put16(m + o + 2, WIRE_CLASS_IN);
	o += 4;
	for (unsigned i = 0; i < n; i++) {
		wire_put16(m + o, 0xc00c);
		wire_put16(m + o + 2, WIRE_TYPE_A);
		wire_put16(m + o + 4, WIRE_CLASS_IN);
		wire_put32(m + o + 6, ttls[i]);
		wire_put16(m + o + 10, 4);
		m[o + 12] = 192;
		m[o + 13] = 0;
		m[o + 14] = 2;
		m[o + 15] = (uint8_t)i;
		o += 16;
	}
	return o;
}

/* NXDOMAIN with the zone's SOA in the authority section. */
static size_t
build_nxdomain(uint8_t *m, const char *qname, uint32_t soa_ttl)
{
	size_t o = put_header(
	    m, WIRE_QR | WIRE_RD | WIRE_RA | WIRE_RCODE_NXDOMAIN, 1, 0, 1, 0);
	size_t rdlen_off;

	o += name_wire(qname, m + o);
	wire_put16(m + o, WIRE_TYPE_A);
	wire_put16(m + o + 2, WIRE_CLASS_IN);
	o += 4;
	o += name_wire("example", m + o);
	wire_put16(m + o, WIRE_TYPE_SOA);
	wire_put16(m + o + 2, WIRE_CLASS_IN);
	wire_put32(m + o + 4, soa_ttl);
	rdlen_off = o + 8;
	o += 10;
	o += name_wire("ns.example", m + o);
	o += name_wire("hostmaster.example", m + o);
	for (int i = 0; i < 5; i++, o += 4)
		wire_put32(m + o, 1000 + (uint32_t)i);
	wire_put16(m + rdlen_off, (uint16_t)(o - rdlen_off - 2));
	return o;
}

static size_t
key_for(uint8_t *key, const char *qname, uint16_t qtype, unsigned flags)
{
	uint8_t name[WIRE_NAME_MAX];
	size_t nlen = name_wire(qname, name);

	return cache_make_key(key, name, nlen, qtype, WIRE_CLASS_IN, flags);
}

/* got must be orig with ID 0 and every non-OPT TTL equal to ttl. */
static void
check_same_but_ttl(
    const uint8_t *orig, const uint8_t *got, size_t len, uint32_t ttl)
{
	uint8_t want[WIRE_MSG_MAX];
	struct wire_iter it;
	struct wire_rr rr;

	memcpy(want, orig, len);
	wire_put16(want, 0);
	ck_assert_int_eq(wire_iter_init(&it, want, len), 0);
	while (wire_iter_next(&it, &rr) == 1)
		if (rr.type != WIRE_TYPE_OPT)
			wire_put32(want + rr.type_off + 4, ttl);
	ck_assert_mem_eq(got, want, len);
}

/* The non-OPT records of got carry exactly these TTLs, in order. */
static void
check_rr_ttls(const uint8_t *got, size_t len, const uint32_t *ttls, size_t n)
{
	struct wire_iter it;
	struct wire_rr rr;
	size_t i = 0;

	ck_assert_int_eq(wire_iter_init(&it, got, len), 0);
	while (wire_iter_next(&it, &rr) == 1) {
		if (rr.type == WIRE_TYPE_OPT)
			continue;
		ck_assert_uint_lt(i, n);
		ck_assert_uint_eq(rr.ttl, ttls[i]);
		i++;
	}
	ck_assert_uint_eq(i, n);
}

static struct cache *
new_cache(uint64_t max_bytes, unsigned shards, uint32_t stale_max_age_s)
{
	struct cache *c;

	ck_assert_int_eq(rng_init(), 0);
	c = cache_new(max_bytes, shards, stale_max_age_s);
	ck_assert_ptr_nonnull(c);
	return c;
}

START_TEST(test_store_lookup_roundtrip)
{
	struct cache *c = new_cache(BIG, 4, 3600);
	uint32_t ttls[3] = {5, 77, 123456};
	uint8_t resp[512], out[512], key[CACHE_KEY_MAX];
	size_t len = build_a(resp, "www.example", 3, ttls), out_len = 0;
	size_t klen = key_for(key, "www.example", WIRE_TYPE_A, 0);
	struct cache_hit hit;

	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 300, T0), 0);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0, 30, out, sizeof(out),
			     &out_len, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(out_len, len);
	ck_assert_uint_eq(WIRE_ID(out), 0);
	/*
	 * Each record keeps its own TTL to count down from (issue 12): none
	 * below the entry's, so the 5 and the 77 are raised to 300.
	 */
	check_rr_ttls(out, len, (const uint32_t[]){300, 300, 123456}, 3);
	ck_assert_uint_eq(hit.ttl, 300);
	ck_assert_uint_eq(hit.ttl_left, 300);
	ck_assert_uint_eq(hit.stale_s, 0);
	ck_assert_uint_eq(hit.rcode, WIRE_RCODE_NOERROR);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 100500, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_FRESH);
	check_rr_ttls(out, len, (const uint32_t[]){200, 200, 123356}, 3);
	/* Stale: every record gets the stale TTL. */
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 300000, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_STALE);
	check_rr_ttls(out, len, (const uint32_t[]){30, 30, 30}, 3);
	/* More than a week, or the high bit (RFC 8767 4): capped. */
	ttls[2] = 0x80000001u;
	len = build_a(resp, "www.example", 3, ttls);
	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 300, T0), 0);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0, 30, out, sizeof(out),
			     &out_len, &hit),
	    CACHE_FRESH);
	check_rr_ttls(out, len, (const uint32_t[]){300, 300, 300}, 3);
	cache_free(c);
}
END_TEST

START_TEST(test_ttl_countdown)
{
	struct cache *c = new_cache(BIG, 1, 3600);
	uint32_t ttls[2] = {300, 300};
	uint8_t resp[512], out[512], key[CACHE_KEY_MAX];
	size_t len = build_a(resp, "a.example", 2, ttls), out_len;
	size_t klen = key_for(key, "a.example", WIRE_TYPE_A, 0);
	struct cache_hit hit;

	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 300, T0), 0);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 1500, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(hit.ttl_left, 299);
	check_same_but_ttl(resp, out, len, 299);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 299900, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(hit.ttl_left, 1);
	check_same_but_ttl(resp, out, len, 1);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 300000, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_STALE);
	ck_assert_uint_eq(hit.ttl_left, 0);
	ck_assert_uint_eq(hit.stale_s, 0);
	check_same_but_ttl(resp, out, len, 30);
	/* A clock read before the store (another worker) is age 0. */
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 - 5, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(hit.ttl_left, 300);
	cache_free(c);
}
END_TEST

START_TEST(test_stale_rewrites_every_rr)
{
	struct cache *c = new_cache(BIG, 2, 600);
	uint32_t ttls[4] = {1, 2, 3, 4};
	uint8_t resp[512], out[512], key[CACHE_KEY_MAX];
	size_t len = build_a(resp, "s.example", 4, ttls), out_len;
	size_t klen = key_for(key, "s.example", WIRE_TYPE_A, 0);
	struct cache_hit hit;

	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), 0);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 60000 + 12345, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_STALE);
	ck_assert_uint_eq(out_len, len);
	ck_assert_uint_eq(hit.stale_s, 12);
	ck_assert_uint_eq(hit.ttl_left, 0);
	ck_assert_uint_eq(hit.ttl, 60);
	check_same_but_ttl(resp, out, len, 30);
	/* Last millisecond of stale_max_age still serves. */
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 60000 + 599999, 7, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_STALE);
	ck_assert_uint_eq(hit.stale_s, 599);
	check_same_but_ttl(resp, out, len, 7);
	cache_free(c);
}
END_TEST

START_TEST(test_past_stale_max_age_removed)
{
	struct cache *c = new_cache(BIG, 1, 100);
	uint32_t ttls[1] = {60};
	uint8_t resp[512], out[512], key[CACHE_KEY_MAX], key2[CACHE_KEY_MAX];
	size_t len = build_a(resp, "old.example", 1, ttls), out_len = 99;
	size_t klen = key_for(key, "old.example", WIRE_TYPE_A, 0);
	size_t klen2 = key_for(key2, "other.example", WIRE_TYPE_A, 0);
	struct cache_stats st;
	struct cache_hit hit;

	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), 0);
	ck_assert_int_eq(cache_store(c, key2, klen2, resp, len, 60, T0), 0);
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 2);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 160000, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_MISS);
	ck_assert_uint_eq(out_len, 0);
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 1);
	ck_assert_uint_eq(st.misses, 1);
	/* Gone for good: even an earlier clock no longer finds it. */
	ck_assert_int_eq(cache_lookup(c, key, klen, T0, 30, out, sizeof(out),
			     &out_len, &hit),
	    CACHE_MISS);
	ck_assert(!cache_remove(c, key, klen));
	ck_assert(cache_remove(c, key2, klen2));
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 0);
	ck_assert_uint_eq(st.bytes, 0);
	cache_free(c);
}
END_TEST

START_TEST(test_nxdomain_soa)
{
	struct cache *c = new_cache(BIG, 1, 3600);
	uint8_t resp[512], out[512], key[CACHE_KEY_MAX];
	size_t len = build_nxdomain(resp, "nope.example", 900), out_len;
	size_t klen = key_for(key, "nope.example", WIRE_TYPE_A, 0);
	struct cache_hit hit;

	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 900, T0), 0);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 100999, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(hit.rcode, WIRE_RCODE_NXDOMAIN);
	ck_assert_uint_eq(hit.ttl_left, 800);
	ck_assert_uint_eq(out_len, len);
	check_same_but_ttl(resp, out, len, 800);
	cache_free(c);
}
END_TEST

START_TEST(test_opt_ttl_untouched)
{
	struct cache *c = new_cache(BIG, 1, 3600);
	uint32_t ttls[1] = {60};
	uint8_t resp[512], out[512], key[CACHE_KEY_MAX];
	size_t len = build_a(resp, "o.example", 1, ttls), out_len;
	size_t klen = key_for(key, "o.example", WIRE_TYPE_A, 0);
	struct cache_hit hit;

	/* OPT is not supposed to be stored, but must never be rewritten. */
	wire_put16(resp + 10, 1);
	resp[len] = 0;
	wire_put16(resp + len + 1, WIRE_TYPE_OPT);
	wire_put16(resp + len + 3, 1232);
	wire_put32(resp + len + 5, WIRE_EDNS_DO);
	wire_put16(resp + len + 9, 0);
	len += 11;
	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), 0);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0, 30, out, sizeof(out),
			     &out_len, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(out_len, len);
	ck_assert_uint_eq(wire_u32(out + len - 6), WIRE_EDNS_DO);
	check_same_but_ttl(resp, out, len, 60);
	cache_free(c);
}
END_TEST

START_TEST(test_key_case_insensitive)
{
	uint8_t k1[CACHE_KEY_MAX], k2[CACHE_KEY_MAX], name[WIRE_NAME_MAX];
	uint8_t lower[WIRE_NAME_MAX];
	size_t l1 = key_for(k1, "WwW.ExAmple", WIRE_TYPE_A, 0);
	size_t l2 = key_for(k2, "www.example", WIRE_TYPE_A, 0);
	char label[66];
	size_t nlen;

	ck_assert_uint_eq(l1, l2);
	ck_assert_uint_eq(l1, 13 + 5);
	ck_assert_mem_eq(k1, k2, l1);
	ck_assert_uint_eq(wire_u16(k1 + 13), WIRE_TYPE_A);
	ck_assert_uint_eq(wire_u16(k1 + 15), WIRE_CLASS_IN);
	ck_assert_uint_eq(k1[17], 0);

	/* A label of length 65 has length byte 'A': it must stay 0x41. */
	memset(label, 'Q', 65);
	label[65] = '\0';
	nlen = name_wire(label, name);
	ck_assert_uint_eq(name[0], 'A');
	l1 = cache_make_key(k1, name, nlen, WIRE_TYPE_A, WIRE_CLASS_IN, 0);
	memcpy(lower, name, nlen);
	memset(lower + 1, 'q', 65);
	l2 = cache_make_key(k2, lower, nlen, WIRE_TYPE_A, WIRE_CLASS_IN, 0);
	ck_assert_uint_eq(l1, l2);
	ck_assert_uint_eq(k1[0], 'A');
	ck_assert_mem_eq(k1, k2, l1);
	/* Only A-Z fold: other bytes (here 0xC4, '@', '[') are kept. */
	name[0] = 3;
	name[1] = 0xc4;
	name[2] = '@';
	name[3] = '[';
	name[4] = 0;
	l1 = cache_make_key(k1, name, 5, WIRE_TYPE_A, WIRE_CLASS_IN, 0);
	ck_assert_mem_eq(k1, name, 5);
	ck_assert_uint_eq(l1, 10);
}
END_TEST

/* Every byte value, at every position of an 8-byte word and past it. */
START_TEST(test_key_folds_only_letters)
{
	uint8_t name[WIRE_NAME_MAX], key[CACHE_KEY_MAX];

	for (unsigned at = 1; at <= 11; at++) {
		for (unsigned b = 0; b < 256; b++) {
			size_t klen;
			name[0] = 11;
			memset(name + 1, 'x', 11);
			name[at] = (uint8_t)b;
			name[12] = 0;
			klen = cache_make_key(
			    key, name, 13, WIRE_TYPE_A, WIRE_CLASS_IN, 0);
			ck_assert_uint_eq(klen, 18);
			ck_assert_uint_eq(key[0], 11);
			ck_assert_uint_eq(
			    key[at], b >= 'A' && b <= 'Z' ? b + 32 : b);
			ck_assert_uint_eq(key[at == 1 ? 2 : 1], 'x');
			ck_assert_uint_eq(key[12], 0);
		}
	}
}
END_TEST

START_TEST(test_key_flags_and_type_differ)
{
	struct cache *c = new_cache(BIG, 4, 3600);
	uint32_t ttls[2] = {60, 60};
	uint8_t resp[512], out[512], key[4][CACHE_KEY_MAX];
	size_t klen[4], len, out_len;
	unsigned flags[4] = {
	    0, CACHE_KEY_DO, CACHE_KEY_CD, CACHE_KEY_DO | CACHE_KEY_CD};
	struct cache_hit hit;

	for (int i = 0; i < 4; i++)
		klen[i] = key_for(key[i], "f.example", WIRE_TYPE_A, flags[i]);
	for (int i = 0; i < 4; i++)
		for (int j = i + 1; j < 4; j++)
			ck_assert(memcmp(key[i], key[j], klen[i]) != 0);
	len = build_a(resp, "f.example", 2, ttls);
	ck_assert_int_eq(cache_store(c, key[1], klen[1], resp, len, 60, T0), 0);
	ck_assert_int_eq(cache_lookup(c, key[0], klen[0], T0, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_MISS);
	ck_assert_int_eq(cache_lookup(c, key[2], klen[2], T0, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_MISS);
	ck_assert_int_eq(cache_lookup(c, key[1], klen[1], T0, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_FRESH);
	klen[0] = key_for(key[0], "f.example", WIRE_TYPE_AAAA, CACHE_KEY_DO);
	ck_assert_int_eq(cache_lookup(c, key[0], klen[0], T0, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_MISS);
	cache_free(c);
}
END_TEST

START_TEST(test_replace_same_key)
{
	struct cache *c = new_cache(BIG, 1, 3600);
	uint32_t ttls[3] = {60, 60, 60};
	uint8_t r1[512], r2[512], out[512], key[CACHE_KEY_MAX];
	size_t l1 = build_a(r1, "r.example", 1, ttls);
	size_t l2 = build_a(r2, "r.example", 3, ttls), out_len;
	size_t klen = key_for(key, "r.example", WIRE_TYPE_A, 0);
	struct cache_stats st, st1;
	struct cache_hit hit;

	ck_assert_int_eq(cache_store(c, key, klen, r1, l1, 60, T0), 0);
	cache_get_stats(c, &st1);
	ck_assert_int_eq(cache_store(c, key, klen, r2, l2, 120, T0 + 1000), 0);
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 1);
	ck_assert_uint_eq(st.stores, 2);
	ck_assert_uint_eq(st.evictions, 0);
	ck_assert_uint_eq(
	    st.bytes, st1.bytes + (l2 - l1) + 2 * sizeof(uint16_t));
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 1000, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(out_len, l2);
	ck_assert_uint_eq(hit.ttl, 120);
	check_same_but_ttl(r2, out, l2, 120);
	cache_free(c);
}
END_TEST

START_TEST(test_eviction_keeps_recently_used)
{
	const uint64_t max = 16384;
	struct cache *c = new_cache(max, 1, 3600);
	uint32_t ttls[4] = {60, 60, 60, 60};
	uint8_t resp[512], out[512], key[CACHE_KEY_MAX], hot[CACHE_KEY_MAX];
	size_t len, out_len, hlen = key_for(hot, "hot.example", WIRE_TYPE_A, 0);
	struct cache_stats st;
	struct cache_hit hit;
	char name[64];

	len = build_a(resp, "hot.example", 4, ttls);
	ck_assert_int_eq(cache_store(c, hot, hlen, resp, len, 600, T0), 0);
	for (int i = 0; i < 500; i++) {
		size_t klen;

		snprintf(name, sizeof(name), "n%d.example", i);
		klen = key_for(key, name, WIRE_TYPE_A, 0);
		len = build_a(resp, name, 4, ttls);
		ck_assert_int_eq(
		    cache_store(c, key, klen, resp, len, 600, T0 + (uint64_t)i),
		    0);
		ck_assert_int_eq(cache_lookup(c, hot, hlen, T0 + (uint64_t)i,
				     30, out, sizeof(out), &out_len, &hit),
		    CACHE_FRESH);
		cache_get_stats(c, &st);
		ck_assert_uint_le(st.bytes, max);
	}
	cache_get_stats(c, &st);
	ck_assert_uint_gt(st.evictions, 400);
	ck_assert_uint_eq(st.entries + st.evictions, 501);
	/* The newest survive, the oldest untouched ones went first. */
	for (int i = 0; i < 500; i++) {
		size_t klen;

		snprintf(name, sizeof(name), "n%d.example", i);
		klen = key_for(key, name, WIRE_TYPE_A, 0);
		ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 1000, 30, out,
				     sizeof(out), &out_len, &hit),
		    i >= (int)(500 - (st.entries - 1)) ? CACHE_FRESH
						       : CACHE_MISS);
	}
	cache_free(c);
}
END_TEST

START_TEST(test_too_big)
{
	static uint32_t ttls[500];
	static uint8_t resp[8192];
	struct cache *c = new_cache(8192, 1, 3600);
	struct cache *c4 = new_cache(16384, 4, 3600);
	uint8_t key[CACHE_KEY_MAX];
	size_t klen = key_for(key, "big.example", WIRE_TYPE_A, 0), len;
	struct cache_stats st;

	len = build_a(resp, "big.example", 500, ttls);
	ck_assert_uint_gt(len, 8000);
	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), -E2BIG);
	/* Fits max_bytes, not a quarter of it: the shard budget counts. */
	len = build_a(resp, "big.example", 300, ttls);
	ck_assert_uint_lt(len, 16384 / 2);
	ck_assert_uint_gt(len, 16384 / 4);
	ck_assert_int_eq(cache_store(c4, key, klen, resp, len, 60, T0), -E2BIG);
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 0);
	ck_assert_uint_eq(st.stores, 0);
	cache_free(c);
	cache_free(c4);
}
END_TEST

START_TEST(test_bad_messages)
{
	struct cache *c = new_cache(BIG, 1, 3600);
	uint32_t ttls[3] = {60, 60, 60};
	uint8_t resp[512], key[CACHE_KEY_MAX];
	size_t klen = key_for(key, "t.example", WIRE_TYPE_A, 0);
	size_t len = build_a(resp, "t.example", 3, ttls);
	struct cache_stats st;

	/* ANCOUNT overruns the records that are there. */
	wire_put16(resp + 6, 4);
	ck_assert_int_eq(
	    cache_store(c, key, klen, resp, len, 60, T0), -EBADMSG);
	wire_put16(resp + 6, 3);
	/* Cut inside the last RDATA. */
	ck_assert_int_eq(
	    cache_store(c, key, klen, resp, len - 1, 60, T0), -EBADMSG);
	/* Trailing bytes nobody parsed. */
	resp[len] = 0;
	ck_assert_int_eq(
	    cache_store(c, key, klen, resp, len + 1, 60, T0), -EBADMSG);
	ck_assert_int_eq(cache_store(c, key, klen, resp, 11, 60, T0), -EBADMSG);
	ck_assert_int_eq(cache_store(c, key, klen, resp, 0, 60, T0), -EBADMSG);
	/* TTL 0 means "do not cache"; a caller storing it is a bug. */
	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 0, T0), -EINVAL);
	ck_assert_int_eq(cache_store(c, key, 0, resp, len, 60, T0), -EINVAL);
	ck_assert_int_eq(
	    cache_store(c, key, CACHE_KEY_MAX + 1, resp, len, 60, T0), -EINVAL);
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 0);
	ck_assert_uint_eq(st.stores, 0);
	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), 0);
	cache_free(c);
}
END_TEST

START_TEST(test_out_too_small)
{
	struct cache *c = new_cache(BIG, 1, 3600);
	uint32_t ttls[2] = {60, 60};
	uint8_t resp[512], out[512], key[CACHE_KEY_MAX];
	size_t len = build_a(resp, "small.example", 2, ttls), out_len = 1;
	size_t klen = key_for(key, "small.example", WIRE_TYPE_A, 0);
	struct cache_stats st;
	struct cache_hit hit;

	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), 0);
	memset(out, 0xaa, sizeof(out));
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0, 30, out, len - 1, &out_len, &hit),
	    CACHE_MISS);
	ck_assert_uint_eq(out_len, 0);
	ck_assert_uint_eq(out[0], 0xaa);
	/* Still there: a small buffer is the caller's problem, not the entry's.
	 */
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0, 30, out, len, &out_len, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(out_len, len);
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.misses, 1);
	ck_assert_uint_eq(st.hits, 1);
	ck_assert_uint_eq(st.entries, 1);
	cache_free(c);
}
END_TEST

START_TEST(test_stats_counters)
{
	struct cache *c = new_cache(BIG, 8, 100);
	uint32_t ttls[1] = {60};
	uint8_t resp[512], out[512], key[CACHE_KEY_MAX];
	size_t len, out_len, klen, bytes = 0;
	struct cache_stats st;
	struct cache_hit hit;
	char name[32];

	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "c%d.example", i);
		klen = key_for(key, name, WIRE_TYPE_A, 0);
		len = build_a(resp, name, 1, ttls);
		ck_assert_int_eq(cache_store(c, key, klen, resp, len,
				     (uint32_t)(11 + i), T0),
		    0);
	}
	/* At +20 s: c0..c9 (TTL <= 20) stale, c10..c19 fresh; two each. */
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "c%d.example", i);
		klen = key_for(key, name, WIRE_TYPE_A, 0);
		len = build_a(resp, name, 1, ttls);
		for (int n = 0; n < 2; n++)
			ck_assert_int_eq(
			    cache_lookup(c, key, klen, T0 + 20000, 30, out,
				sizeof(out), &out_len, &hit),
			    i < 10 ? CACHE_STALE : CACHE_FRESH);
		bytes += len + klen + 1 * sizeof(uint16_t);
	}
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "absent%d.example", i);
		klen = key_for(key, name, WIRE_TYPE_A, 0);
		ck_assert_int_eq(cache_lookup(c, key, klen, T0, 30, out,
				     sizeof(out), &out_len, &hit),
		    CACHE_MISS);
	}
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 20);
	ck_assert_uint_eq(st.stores, 20);
	ck_assert_uint_eq(st.hits, 20);
	ck_assert_uint_eq(st.stale_hits, 20);
	ck_assert_uint_eq(st.misses, 5);
	ck_assert_uint_eq(st.evictions, 0);
	/* Every byte is accounted, header included. */
	ck_assert_uint_gt(st.bytes, bytes);
	ck_assert_uint_lt(st.bytes, bytes + 20 * 128);
	/* At +200 s all are past stale_max_age 100: misses and removed. */
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "c%d.example", i);
		klen = key_for(key, name, WIRE_TYPE_A, 0);
		ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 200000, 30,
				     out, sizeof(out), &out_len, &hit),
		    CACHE_MISS);
	}
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 0);
	ck_assert_uint_eq(st.bytes, 0);
	ck_assert_uint_eq(st.misses, 25);
	cache_free(c);
}
END_TEST

START_TEST(test_new_and_free_edges)
{
	struct cache *c;
	struct cache_stats st;
	uint32_t ttls[1] = {60};
	uint8_t resp[512], key[CACHE_KEY_MAX];
	size_t len = build_a(resp, "e.example", 1, ttls);
	size_t klen = key_for(key, "e.example", WIRE_TYPE_A, 0);

	cache_free(NULL);
	/* 0 and 3 shards round up to 1 and 4; all must work. */
	c = new_cache(BIG, 0, 0);
	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), 0);
	cache_free(c);
	c = new_cache(BIG, 3, 0);
	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), 0);
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 1);
	cache_free(c);
	/* A zero budget caches nothing but does not break. */
	c = new_cache(0, 1, 0);
	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), -E2BIG);
	cache_free(c);
}
END_TEST

/* Concurrency smoke test: many threads, few keys, a small budget. */
#define SMOKE_THREADS 4
#define SMOKE_KEYS 64
#define SMOKE_MAX_ITERS 400000
#define SMOKE_MS 500

struct smoke {
	struct cache *c;
	unsigned seed;
	uint64_t lookups;
	uint64_t stores;
	uint64_t found;
	int bad;
};

static uint64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void *
smoke_thread(void *arg)
{
	struct smoke *sm = arg;
	uint32_t ttls[8] = {60, 60, 60, 60, 60, 60, 60, 60};
	uint8_t resp[512], out[512], key[CACHE_KEY_MAX];
	uint64_t end = mono_ms() + SMOKE_MS;
	struct cache_hit hit;
	char name[32];

	for (int i = 0; i < SMOKE_MAX_ITERS; i++) {
		unsigned k = (unsigned)rand_r(&sm->seed) % SMOKE_KEYS;
		unsigned nrr = k % 8 + 1;
		size_t klen, len, out_len;
		enum cache_result r;

		if ((i & 1023) == 0 && mono_ms() >= end)
			break;
		snprintf(name, sizeof(name), "k%u.example", k);
		klen = key_for(key, name, WIRE_TYPE_A, 0);
		len = build_a(resp, name, nrr, ttls);
		if (rand_r(&sm->seed) % 4 == 0) {
			if (cache_store(sm->c, key, klen, resp, len, 60,
				T0 + (uint64_t)(i % 1000)) != 0)
				sm->bad++;
			sm->stores++;
			continue;
		}
		/* Within a second of the stores: always fresh. */
		r = cache_lookup(sm->c, key, klen, T0 + 1000, 30, out,
		    sizeof(out), &out_len, &hit);
		sm->lookups++;
		if (r == CACHE_MISS)
			continue;
		sm->found++;
		/* The bytes must be exactly this key's response. */
		if (r != CACHE_FRESH || out_len != len || WIRE_ID(out) != 0 ||
		    memcmp(out + 2, resp + 2, len - 2 - nrr * 16) != 0)
			sm->bad++;
	}
	return NULL;
}

START_TEST(test_threads_smoke)
{
	struct cache *c = new_cache(8192, 4, 3600);
	struct smoke sm[SMOKE_THREADS];
	pthread_t tid[SMOKE_THREADS];
	uint64_t lookups = 0, stores = 0, found = 0;
	struct cache_stats st;

	for (int i = 0; i < SMOKE_THREADS; i++) {
		memset(&sm[i], 0, sizeof(sm[i]));
		sm[i].c = c;
		sm[i].seed = (unsigned)i * 7919 + 1;
		ck_assert_int_eq(
		    pthread_create(&tid[i], NULL, smoke_thread, &sm[i]), 0);
	}
	for (int i = 0; i < SMOKE_THREADS; i++) {
		pthread_join(tid[i], NULL);
		ck_assert_int_eq(sm[i].bad, 0);
		lookups += sm[i].lookups;
		stores += sm[i].stores;
		found += sm[i].found;
	}
	cache_get_stats(c, &st);
	ck_assert_uint_gt(lookups, 1000);
	ck_assert_uint_gt(found, 0);
	ck_assert_uint_eq(st.hits + st.stale_hits + st.misses, lookups);
	ck_assert_uint_eq(st.hits + st.stale_hits, found);
	ck_assert_uint_eq(st.stores, stores);
	ck_assert_uint_gt(st.evictions, 0);
	ck_assert_uint_le(st.bytes, 8192);
	ck_assert_uint_le(st.entries, SMOKE_KEYS);
	cache_free(c);
}
END_TEST

/* ---- RFC 9520 failure holds, stale holds, stale-on-negative, walk ---- */

/* NOERROR without answers (NODATA), with the SOA: not "positive". */
static size_t
build_nodata(uint8_t *m, const char *qname, uint32_t soa_ttl)
{
	size_t len = build_nxdomain(m, qname, soa_ttl);

	wire_put16(m + 2, WIRE_QR | WIRE_RD | WIRE_RA);
	return len;
}

START_TEST(test_fail_without_data_held_then_miss)
{
	struct cache *c = new_cache(BIG, 2, 3600);
	uint8_t out[512], key[CACHE_KEY_MAX];
	size_t klen = key_for(key, "down.example", WIRE_TYPE_A, 0), out_len = 7;
	struct cache_stats st;
	struct cache_hit hit;

	ck_assert_uint_eq(cache_fail(c, key, klen, T0, 1, 300), T0 + 1000);
	memset(out, 0xaa, sizeof(out));
	memset(&hit, 0, sizeof(hit));
	ck_assert_int_eq(cache_lookup(c, key, klen, T0, 30, out, sizeof(out),
			     &out_len, &hit),
	    CACHE_FAILED);
	ck_assert_uint_eq(out_len, 0);
	ck_assert_uint_eq(out[0], 0xaa);
	ck_assert_uint_eq(hit.hold_until_ms, T0 + 1000);
	ck_assert(!hit.positive);
	ck_assert_uint_eq(hit.rcode, WIRE_RCODE_SERVFAIL);
	/* Last millisecond of the hold, then a plain miss. */
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 999, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_FAILED);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 1000, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_MISS);
	ck_assert_uint_eq(out_len, 0);
	ck_assert_uint_eq(hit.hold_until_ms, 0);
	ck_assert_uint_eq(out[0], 0xaa);
	/* Kept a while (to remember the backoff), then dropped for good. */
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 1);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 1000 + 2000, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_MISS);
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 0);
	ck_assert_uint_eq(st.bytes, 0);
	/* Bad keys are refused, not stored. */
	ck_assert_uint_eq(cache_fail(c, key, 0, T0, 1, 300), 0);
	ck_assert_uint_eq(cache_fail(c, key, CACHE_KEY_MAX + 1, T0, 1, 300), 0);
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 0);
	cache_free(c);
}
END_TEST

START_TEST(test_fail_backoff_doubles_and_caps)
{
	struct cache *c = new_cache(BIG, 1, 3600);
	uint8_t key[CACHE_KEY_MAX];
	size_t klen = key_for(key, "flap.example", WIRE_TYPE_A, 0);
	struct cache_hit hit;
	uint64_t t = T0, until;
	const uint64_t want[] = {1000, 2000, 4000, 8000, 8000, 8000};

	/* Each failure comes as the previous hold ends: 1, 2, 4, 8, 8, 8 s. */
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		until = cache_fail(c, key, klen, t, 1, 8);
		ck_assert_uint_eq(until, t + want[i]);
		ck_assert_int_eq(cache_lookup(c, key, klen, until - 1, 30, NULL,
				     0, NULL, &hit),
		    CACHE_FAILED);
		ck_assert_uint_eq(hit.hold_until_ms, until);
		t = until;
	}
	/* Long after the last hold: the failure is new, min again. */
	t += 2 * 8000;
	ck_assert_uint_eq(cache_fail(c, key, klen, t, 1, 8), t + 1000);
	/* min 0 counts as 1; max below min is raised to min. */
	klen = key_for(key, "odd.example", WIRE_TYPE_A, 0);
	ck_assert_uint_eq(cache_fail(c, key, klen, T0, 0, 0), T0 + 1000);
	ck_assert_uint_eq(cache_fail(c, key, klen, T0 + 1000, 0, 0), T0 + 2000);
	klen = key_for(key, "odd2.example", WIRE_TYPE_A, 0);
	ck_assert_uint_eq(cache_fail(c, key, klen, T0, 5, 2), T0 + 5000);
	ck_assert_uint_eq(
	    cache_fail(c, key, klen, T0 + 5000, 5, 2), T0 + 10000);
	cache_free(c);
}
END_TEST

START_TEST(test_store_clears_failure)
{
	struct cache *c = new_cache(BIG, 1, 3600);
	uint32_t ttls[1] = {60};
	uint8_t resp[512], out[512], key[CACHE_KEY_MAX];
	size_t len = build_a(resp, "back.example", 1, ttls), out_len;
	size_t klen = key_for(key, "back.example", WIRE_TYPE_A, 0);
	struct cache_stats st;
	struct cache_hit hit;

	ck_assert_uint_eq(cache_fail(c, key, klen, T0, 1, 300), T0 + 1000);
	ck_assert_uint_eq(
	    cache_fail(c, key, klen, T0 + 1000, 1, 300), T0 + 3000);
	/* An answer arrives while held: it replaces the failure at once. */
	ck_assert_int_eq(
	    cache_store(c, key, klen, resp, len, 60, T0 + 1500), 0);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 1500, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(out_len, len);
	ck_assert_uint_eq(hit.hold_until_ms, 0);
	ck_assert(hit.positive);
	check_same_but_ttl(resp, out, len, 60);
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 1);
	/* The backoff was forgotten too: the next failure starts at min. */
	ck_assert_uint_eq(
	    cache_fail(c, key, klen, T0 + 2000, 1, 300), T0 + 3000);
	/* A store also clears the hold of a data entry. */
	ck_assert_int_eq(
	    cache_store(c, key, klen, resp, len, 60, T0 + 2500), 0);
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0 + 2500, 30, NULL, 0, NULL, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(hit.hold_until_ms, 0);
	cache_free(c);
}
END_TEST

START_TEST(test_fail_keeps_data)
{
	struct cache *c = new_cache(BIG, 1, 3600);
	uint32_t ttls[2] = {60, 60};
	uint8_t resp[512], out[512], key[CACHE_KEY_MAX];
	size_t len = build_a(resp, "kept.example", 2, ttls), out_len;
	size_t klen = key_for(key, "kept.example", WIRE_TYPE_A, 0);
	struct cache_stats st, st0;
	struct cache_hit hit;

	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), 0);
	cache_get_stats(c, &st0);
	/* A refresh failed while still fresh: the data stays and says so. */
	ck_assert_uint_eq(
	    cache_fail(c, key, klen, T0 + 1000, 5, 300), T0 + 6000);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 2000, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(out_len, len);
	ck_assert_uint_eq(hit.ttl_left, 58);
	ck_assert_uint_eq(hit.hold_until_ms, T0 + 6000);
	check_same_but_ttl(resp, out, len, 58);
	/* Expired: stale, still with data and the (new) hold. */
	ck_assert_uint_eq(
	    cache_fail(c, key, klen, T0 + 61000, 5, 300), T0 + 66000);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 62000, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_STALE);
	ck_assert_uint_eq(out_len, len);
	ck_assert_uint_eq(hit.hold_until_ms, T0 + 66000);
	ck_assert(hit.positive);
	check_same_but_ttl(resp, out, len, 30);
	/* Past the hold: still stale data, never CACHE_FAILED. */
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 70000, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_STALE);
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 1);
	ck_assert_uint_eq(st.bytes, st0.bytes);
	ck_assert_uint_eq(st.failed_hits, 0);
	cache_free(c);
}
END_TEST

START_TEST(test_hold_never_shortens)
{
	struct cache *c = new_cache(BIG, 1, 3600);
	uint32_t ttls[1] = {60};
	uint8_t resp[512], key[CACHE_KEY_MAX], fkey[CACHE_KEY_MAX];
	size_t len = build_a(resp, "hold.example", 1, ttls);
	size_t klen = key_for(key, "hold.example", WIRE_TYPE_A, 0);
	size_t fklen = key_for(fkey, "nodata-here.example", WIRE_TYPE_A, 0);
	struct cache_stats st;
	struct cache_hit hit;

	/* No entry, or a failure entry without data: nothing to hold. */
	ck_assert(!cache_hold(c, key, klen, T0, T0 + 5000));
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 0);
	ck_assert_uint_eq(cache_fail(c, fkey, fklen, T0, 1, 300), T0 + 1000);
	ck_assert(!cache_hold(c, fkey, fklen, T0, T0 + 9000));
	ck_assert_int_eq(
	    cache_lookup(c, fkey, fklen, T0, 30, NULL, 0, NULL, &hit),
	    CACHE_FAILED);
	ck_assert_uint_eq(hit.hold_until_ms, T0 + 1000);

	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), 0);
	ck_assert(cache_hold(c, key, klen, T0, T0 + 5000));
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0, 30, NULL, 0, NULL, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(hit.hold_until_ms, T0 + 5000);
	ck_assert(cache_hold(c, key, klen, T0 + 1, T0 + 3000));
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0, 30, NULL, 0, NULL, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(hit.hold_until_ms, T0 + 5000);
	ck_assert(cache_hold(c, key, klen, T0 + 2, T0 + 8000));
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0 + 70000, 30, NULL, 0, NULL, &hit),
	    CACHE_STALE);
	ck_assert_uint_eq(hit.hold_until_ms, T0 + 8000);
	/* When the hold was placed: a shorter one did not move it. */
	ck_assert_uint_eq(hit.hold_since_ms, T0 + 2);
	cache_free(c);
}
END_TEST

START_TEST(test_note_negative)
{
	struct cache *c = new_cache(BIG, 1, 3600);
	uint32_t ttls[1] = {60};
	uint8_t resp[512], key[CACHE_KEY_MAX];
	size_t len, klen = key_for(key, "pos.example", WIRE_TYPE_A, 0);
	struct cache_hit hit;

	/* Missing entry. */
	ck_assert_uint_eq(cache_note_negative(c, key, klen, T0, T0 + 1000), 0);
	/* Positive: the first negative answer's time is kept. */
	len = build_a(resp, "pos.example", 1, ttls);
	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), 0);
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0, 30, NULL, 0, NULL, &hit),
	    CACHE_FRESH);
	ck_assert(hit.positive);
	ck_assert_uint_eq(hit.neg_since_ms, 0);
	ck_assert_uint_eq(
	    cache_note_negative(c, key, klen, T0 + 61000, T0 + 62000),
	    T0 + 61000);
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0 + 61500, 30, NULL, 0, NULL, &hit),
	    CACHE_STALE);
	ck_assert_uint_eq(hit.neg_since_ms, T0 + 61000);
	ck_assert_uint_eq(hit.hold_until_ms, T0 + 62000);
	ck_assert(hit.positive);
	ck_assert_uint_eq(
	    cache_note_negative(c, key, klen, T0 + 63000, T0 + 64000),
	    T0 + 61000);
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0 + 63000, 30, NULL, 0, NULL, &hit),
	    CACHE_STALE);
	ck_assert_uint_eq(hit.neg_since_ms, T0 + 61000);
	ck_assert_uint_eq(hit.hold_until_ms, T0 + 64000);
	/* A new positive answer starts over. */
	ck_assert_int_eq(
	    cache_store(c, key, klen, resp, len, 60, T0 + 65000), 0);
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0 + 65000, 30, NULL, 0, NULL, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(hit.neg_since_ms, 0);
	ck_assert_uint_eq(hit.hold_until_ms, 0);

	/* NXDOMAIN and NODATA entries are not positive: 0, untouched. */
	len = build_nxdomain(resp, "pos.example", 60);
	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), 0);
	ck_assert_uint_eq(
	    cache_note_negative(c, key, klen, T0 + 1000, T0 + 2000), 0);
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0 + 1000, 30, NULL, 0, NULL, &hit),
	    CACHE_FRESH);
	ck_assert(!hit.positive);
	ck_assert_uint_eq(hit.neg_since_ms, 0);
	ck_assert_uint_eq(hit.hold_until_ms, 0);
	len = build_nodata(resp, "pos.example", 60);
	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), 0);
	ck_assert_uint_eq(
	    cache_note_negative(c, key, klen, T0 + 1000, T0 + 2000), 0);
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0 + 1000, 30, NULL, 0, NULL, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(hit.rcode, WIRE_RCODE_NOERROR);
	ck_assert(!hit.positive);
	ck_assert_uint_eq(hit.hold_until_ms, 0);
	/* A failure entry (no data) neither. */
	ck_assert(cache_remove(c, key, klen));
	ck_assert_uint_eq(cache_fail(c, key, klen, T0, 1, 300), T0 + 1000);
	ck_assert_uint_eq(
	    cache_note_negative(c, key, klen, T0 + 10, T0 + 5000), 0);
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0 + 10, 30, NULL, 0, NULL, &hit),
	    CACHE_FAILED);
	ck_assert_uint_eq(hit.hold_until_ms, T0 + 1000);
	cache_free(c);
}
END_TEST

START_TEST(test_peek_reports_without_copy)
{
	struct cache *c = new_cache(BIG, 1, 100);
	uint32_t ttls[3] = {60, 60, 60};
	uint8_t resp[512], key[CACHE_KEY_MAX], fkey[CACHE_KEY_MAX];
	size_t len = build_a(resp, "peek.example", 3, ttls), out_len = 99;
	size_t klen = key_for(key, "peek.example", WIRE_TYPE_A, 0);
	size_t fklen = key_for(fkey, "peekfail.example", WIRE_TYPE_A, 0);
	struct cache_stats st;
	struct cache_hit hit;

	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0, 30, NULL, 0, &out_len, &hit),
	    CACHE_MISS);
	ck_assert_uint_eq(out_len, 0);
	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), 0);
	/* cap 0 is no reason for a miss when nothing is copied. */
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0 + 10500, 30, NULL, 0, &out_len, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(hit.ttl, 60);
	ck_assert_uint_eq(hit.ttl_left, 50);
	ck_assert_uint_eq(hit.rcode, WIRE_RCODE_NOERROR);
	ck_assert(hit.positive);
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0 + 75000, 30, NULL, 0, NULL, &hit),
	    CACHE_STALE);
	ck_assert_uint_eq(hit.stale_s, 15);
	/* hit NULL and out_len NULL are fine too. */
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0, 30, NULL, 0, NULL, NULL),
	    CACHE_FRESH);
	ck_assert_uint_eq(cache_fail(c, fkey, fklen, T0, 2, 300), T0 + 2000);
	ck_assert_int_eq(
	    cache_lookup(c, fkey, fklen, T0 + 1, 30, NULL, 0, NULL, &hit),
	    CACHE_FAILED);
	ck_assert_uint_eq(hit.hold_until_ms, T0 + 2000);
	/* A peek leaves the entry as it was: a real lookup still copies it. */
	{
		uint8_t out[512];
		ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 1000, 30, out,
				     sizeof(out), &out_len, &hit),
		    CACHE_FRESH);
		ck_assert_uint_eq(out_len, len);
		check_same_but_ttl(resp, out, len, 59);
	}
	/* Past stale_max_age a peek removes it like any lookup. */
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0 + 161000, 30, NULL, 0, NULL, &hit),
	    CACHE_MISS);
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.entries, 1);
	cache_free(c);
}
END_TEST

struct walk_seen {
	int count;
	int per_name[8];
	int bad;
};

static void
walk_cb(void *arg, const uint8_t *key, size_t klen, const uint8_t *resp,
    size_t len, uint32_t ttl, uint64_t stored_ms)
{
	struct walk_seen *ws = arg;
	uint8_t want[512], wkey[CACHE_KEY_MAX];
	uint32_t ttls[8] = {200, 200, 200, 200, 200, 200, 200, 200};
	char name[32];
	int i;

	ws->count++;
	/* Key "w<i>.example": which one, from the first label. */
	if (klen < 3 || key[1] != 'w' || key[2] < '0' || key[2] > '7') {
		ws->bad++;
		return;
	}
	i = key[2] - '0';
	ws->per_name[i]++;
	snprintf(name, sizeof(name), "w%d.example", i);
	if (klen != key_for(wkey, name, WIRE_TYPE_A, 0) ||
	    memcmp(key, wkey, klen) != 0)
		ws->bad++;
	if (len != build_a(want, name, (unsigned)i + 1, ttls))
		ws->bad++;
	wire_put16(want, 0);
	if (len <= sizeof(want) && memcmp(resp, want, len) != 0)
		ws->bad++;
	if (ttl != 100 + (uint32_t)i || stored_ms != T0 + (uint64_t)i)
		ws->bad++;
}

START_TEST(test_walk_visits_data_once)
{
	struct cache *c = new_cache(BIG, 4, 3600);
	/* Above every entry's TTL: stored as given. */
	uint32_t ttls[8] = {200, 200, 200, 200, 200, 200, 200, 200};
	uint8_t resp[512], key[CACHE_KEY_MAX];
	size_t len, klen;
	struct walk_seen ws;
	char name[32];

	memset(&ws, 0, sizeof(ws));
	cache_walk(c, walk_cb, &ws);
	ck_assert_int_eq(ws.count, 0);
	for (int i = 0; i < 8; i++) {
		snprintf(name, sizeof(name), "w%d.example", i);
		klen = key_for(key, name, WIRE_TYPE_A, 0);
		len = build_a(resp, name, (unsigned)i + 1, ttls);
		ck_assert_int_eq(cache_store(c, key, klen, resp, len,
				     100 + (uint32_t)i, T0 + (uint64_t)i),
		    0);
	}
	/* Failure entries are not data: never walked. */
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "f%d.example", i);
		klen = key_for(key, name, WIRE_TYPE_A, 0);
		ck_assert_uint_ne(cache_fail(c, key, klen, T0, 1, 300), 0);
	}
	/* A failure on a data entry keeps it: walked, once. */
	klen = key_for(key, "w3.example", WIRE_TYPE_A, 0);
	ck_assert_uint_ne(cache_fail(c, key, klen, T0 + 500, 1, 300), 0);
	ck_assert(cache_hold(c, key, klen, T0, T0 + 9000));
	memset(&ws, 0, sizeof(ws));
	cache_walk(c, walk_cb, &ws);
	ck_assert_int_eq(ws.bad, 0);
	ck_assert_int_eq(ws.count, 8);
	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(ws.per_name[i], 1);
	/* A removed one is gone from the walk. */
	klen = key_for(key, "w5.example", WIRE_TYPE_A, 0);
	ck_assert(cache_remove(c, key, klen));
	memset(&ws, 0, sizeof(ws));
	cache_walk(c, walk_cb, &ws);
	ck_assert_int_eq(ws.count, 7);
	ck_assert_int_eq(ws.per_name[5], 0);
	cache_free(c);
}
END_TEST

/*
 * Memory per entry is what a node-local cache is compared on: a one-record
 * answer costs its bytes and a small header, the key not stored again when
 * it is the answer's own question.  A question in another letter case
 * (upstream-0x20) is kept with its key, and found and copied out as is.
 */
START_TEST(test_entry_overhead)
{
	struct cache *c = new_cache(BIG, 4, 3600);
	uint32_t ttls[1] = {60};
	uint8_t resp[512], out[512], key[CACHE_KEY_MAX];
	size_t len, klen, out_len, sum = 0;
	struct cache_stats st, st0;
	struct cache_hit hit;
	char name[32];

	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "n%d.example", i);
		klen = key_for(key, name, WIRE_TYPE_A, CACHE_KEY_DO);
		len = build_a(resp, name, 1, ttls);
		ck_assert_int_eq(
		    cache_store(c, key, klen, resp, len, 60, T0), 0);
		sum += len;
	}
	cache_get_stats(c, &st0);
	ck_assert_uint_eq(st0.entries, 1000);
	ck_assert_uint_le(st0.bytes, sum + 1000 * 56);
	for (int i = 0; i < 1000; i += 97) {
		snprintf(name, sizeof(name), "n%d.example", i);
		klen = key_for(key, name, WIRE_TYPE_A, CACHE_KEY_DO);
		ck_assert_int_eq(cache_lookup(c, key, klen, T0, 30, out,
				     sizeof(out), &out_len, &hit),
		    CACHE_FRESH);
		/* The flags byte and the type are part of the key. */
		klen = key_for(key, name, WIRE_TYPE_A, 0);
		ck_assert_int_eq(cache_lookup(c, key, klen, T0, 30, out,
				     sizeof(out), &out_len, &hit),
		    CACHE_MISS);
		klen = key_for(key, name, WIRE_TYPE_AAAA, CACHE_KEY_DO);
		ck_assert_int_eq(cache_lookup(c, key, klen, T0, 30, out,
				     sizeof(out), &out_len, &hit),
		    CACHE_MISS);
	}
	/* Mixed case in the question: stored with its key, served as is. */
	klen = key_for(key, "mixed.example", WIRE_TYPE_A, 0);
	len = build_a(resp, "MiXeD.example", 1, ttls);
	ck_assert_int_eq(cache_store(c, key, klen, resp, len, 60, T0), 0);
	cache_get_stats(c, &st);
	ck_assert_uint_ge(st.bytes - st0.bytes, len + klen);
	ck_assert_int_eq(cache_lookup(c, key, klen, T0, 30, out, sizeof(out),
			     &out_len, &hit),
	    CACHE_FRESH);
	ck_assert_uint_eq(out_len, len);
	check_same_but_ttl(resp, out, len, 60);
	cache_free(c);
}
END_TEST

START_TEST(test_failed_hits_stats)
{
	struct cache *c = new_cache(BIG, 4, 3600);
	uint32_t ttls[1] = {60};
	uint8_t resp[512], out[512], key[CACHE_KEY_MAX], dkey[CACHE_KEY_MAX];
	size_t klen = key_for(key, "sf.example", WIRE_TYPE_A, 0), out_len;
	size_t dklen = key_for(dkey, "data.example", WIRE_TYPE_A, 0);
	size_t len = build_a(resp, "data.example", 1, ttls);
	struct cache_stats st;
	struct cache_hit hit;

	ck_assert_uint_ne(cache_fail(c, key, klen, T0, 2, 300), 0);
	ck_assert_int_eq(cache_store(c, dkey, dklen, resp, len, 60, T0), 0);
	ck_assert_uint_ne(cache_fail(c, dkey, dklen, T0, 2, 300), 0);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 100, 30, out,
				     sizeof(out), &out_len, &hit),
		    CACHE_FAILED);
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0 + 200, 30, NULL, 0, NULL, &hit),
	    CACHE_FAILED);
	/* A held data entry is a hit, not a failed hit. */
	ck_assert_int_eq(cache_lookup(c, dkey, dklen, T0 + 100, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_FRESH);
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.failed_hits, 4);
	ck_assert_uint_eq(st.hits, 1);
	ck_assert_uint_eq(st.stale_hits, 0);
	ck_assert_uint_eq(st.misses, 0);
	ck_assert_uint_eq(st.entries, 2);
	ck_assert_uint_eq(st.stores, 1);
	/* After the hold: a miss, not a failed hit. */
	ck_assert_int_eq(cache_lookup(c, key, klen, T0 + 2000, 30, out,
			     sizeof(out), &out_len, &hit),
	    CACHE_MISS);
	cache_get_stats(c, &st);
	ck_assert_uint_eq(st.failed_hits, 4);
	ck_assert_uint_eq(st.misses, 1);
	cache_free(c);
}
END_TEST

START_TEST(test_fail_entries_in_budget)
{
	const uint64_t max = 16384;
	struct cache *c = new_cache(max, 1, 3600);
	uint8_t key[CACHE_KEY_MAX];
	struct cache_stats st;
	char name[64];
	size_t klen;

	/* Failure entries count against the budget and are evicted LRU. */
	for (int i = 0; i < 2000; i++) {
		snprintf(name, sizeof(name), "fail%d.example", i);
		klen = key_for(key, name, WIRE_TYPE_A, 0);
		ck_assert_uint_ne(cache_fail(c, key, klen, T0, 1, 300), 0);
		cache_get_stats(c, &st);
		ck_assert_uint_le(st.bytes, max);
	}
	cache_get_stats(c, &st);
	ck_assert_uint_gt(st.evictions, 0);
	ck_assert_uint_eq(st.entries + st.evictions, 2000);
	/* The newest is still held. */
	ck_assert_int_eq(
	    cache_lookup(c, key, klen, T0, 30, NULL, 0, NULL, NULL),
	    CACHE_FAILED);
	cache_free(c);
}
END_TEST

/* What the main thread does while workers serve: snapshots, dumps, flushes. */
struct admin {
	struct cache *c;
	_Atomic int *stop;
	unsigned walks;
	unsigned walked;
	unsigned removed;
	int bad;
};

/* Every entry a walk shows is one smoke key's whole response, never torn. */
static void
admin_walk_cb(void *arg, const struct cache_walk_entry *e)
{
	struct admin *a = arg;
	uint32_t ttls[8] = {60, 60, 60, 60, 60, 60, 60, 60};
	uint8_t want[512], wkey[CACHE_KEY_MAX];
	char name[32];
	unsigned k;
	size_t len;

	a->walked++;
	/* A held failure without data: one of the admin's own "f" names. */
	if (e->len == 0) {
		if (e->klen < 3 || e->key[1] != 'f' || e->hold_until_ms == 0)
			a->bad++;
		return;
	}
	if (e->klen < 3 || e->key[1] != 'k' ||
	    sscanf((const char *)e->key + 2, "%u", &k) != 1 ||
	    k >= SMOKE_KEYS) {
		a->bad++;
		return;
	}
	snprintf(name, sizeof(name), "k%u.example", k);
	len = build_a(want, name, k % 8 + 1, ttls);
	wire_put16(want, 0);
	if (e->klen != key_for(wkey, name, WIRE_TYPE_A, 0) ||
	    memcmp(e->key, wkey, e->klen) != 0 || e->len != len ||
	    memcmp(e->resp, want, len) != 0 || e->ttl != 60)
		a->bad++;
}

/* Flushes the keys whose number ends in 3, like "flush" of a few names. */
static bool
admin_match_cb(void *arg, const uint8_t *key, size_t klen, uint8_t rcode,
    bool positive, bool failure)
{
	(void)arg;
	(void)rcode;
	(void)positive;
	(void)failure;
	return klen > 3 && key[1] == 'k' && key[key[0]] == '3';
}

static void *
admin_thread(void *arg)
{
	struct admin *a = arg;
	uint8_t key[CACHE_KEY_MAX];
	struct cache_stats st;
	char name[32];

	while (!atomic_load(a->stop)) {
		size_t klen;
		if (cache_walk_full(a->c, admin_walk_cb, a) != 0)
			a->bad++;
		a->walks++;
		a->removed +=
		    (unsigned)cache_remove_if(a->c, admin_match_cb, a);
		cache_get_stats(a->c, &st);
		if (st.bytes > 8192)
			a->bad++;
		/* Failures and holds of other names share the shards. */
		snprintf(name, sizeof(name), "f%u.example", a->walks % 16);
		klen = key_for(key, name, WIRE_TYPE_A, 0);
		(void)cache_fail(a->c, key, klen, T0 + a->walks, 1, 8);
		(void)cache_hold(a->c, key, klen, T0 + a->walks, T0 + 5000);
	}
	return NULL;
}

/*
 * Workers storing and looking up while another thread walks the cache (a
 * snapshot, a dump), flushes and places holds: every thread's view stays
 * whole, and the counters add up.
 */
START_TEST(test_threads_walk_and_flush)
{
	struct cache *c = new_cache(8192, 4, 3600);
	struct smoke sm[SMOKE_THREADS - 1];
	pthread_t tid[SMOKE_THREADS - 1], at;
	struct admin a;
	_Atomic int stop;
	uint64_t lookups = 0;
	struct cache_stats st;

	atomic_init(&stop, 0);
	memset(&a, 0, sizeof(a));
	a.c = c;
	a.stop = &stop;
	ck_assert_int_eq(pthread_create(&at, NULL, admin_thread, &a), 0);
	for (int i = 0; i < SMOKE_THREADS - 1; i++) {
		memset(&sm[i], 0, sizeof(sm[i]));
		sm[i].c = c;
		sm[i].seed = (unsigned)i * 104729 + 3;
		ck_assert_int_eq(
		    pthread_create(&tid[i], NULL, smoke_thread, &sm[i]), 0);
	}
	for (int i = 0; i < SMOKE_THREADS - 1; i++) {
		pthread_join(tid[i], NULL);
		ck_assert_int_eq(sm[i].bad, 0);
		lookups += sm[i].lookups;
	}
	atomic_store(&stop, 1);
	pthread_join(at, NULL);
	ck_assert_int_eq(a.bad, 0);
	ck_assert_uint_gt(a.walks, 0);
	cache_get_stats(c, &st);
	ck_assert_uint_gt(lookups, 1000);
	/* Lookups by the workers; failures and holds never count as one. */
	ck_assert_uint_eq(
	    st.hits + st.stale_hits + st.misses + st.failed_hits, lookups);
	ck_assert_uint_le(st.bytes, 8192);
	cache_free(c);
}
END_TEST

static Suite *
make_suite(void)
{
	Suite *s = suite_create("cache");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_store_lookup_roundtrip);
	tcase_add_test(tc, test_ttl_countdown);
	tcase_add_test(tc, test_stale_rewrites_every_rr);
	tcase_add_test(tc, test_past_stale_max_age_removed);
	tcase_add_test(tc, test_nxdomain_soa);
	tcase_add_test(tc, test_opt_ttl_untouched);
	tcase_add_test(tc, test_key_case_insensitive);
	tcase_add_test(tc, test_key_folds_only_letters);
	tcase_add_test(tc, test_key_flags_and_type_differ);
	tcase_add_test(tc, test_replace_same_key);
	tcase_add_test(tc, test_eviction_keeps_recently_used);
	tcase_add_test(tc, test_too_big);
	tcase_add_test(tc, test_bad_messages);
	tcase_add_test(tc, test_out_too_small);
	tcase_add_test(tc, test_stats_counters);
	tcase_add_test(tc, test_new_and_free_edges);
	tcase_add_test(tc, test_threads_smoke);
	tcase_add_test(tc, test_threads_walk_and_flush);
	tcase_add_test(tc, test_fail_without_data_held_then_miss);
	tcase_add_test(tc, test_fail_backoff_doubles_and_caps);
	tcase_add_test(tc, test_store_clears_failure);
	tcase_add_test(tc, test_fail_keeps_data);
	tcase_add_test(tc, test_hold_never_shortens);
	tcase_add_test(tc, test_note_negative);
	tcase_add_test(tc, test_peek_reports_without_copy);
	tcase_add_test(tc, test_walk_visits_data_once);
	tcase_add_test(tc, test_failed_hits_stats);
	tcase_add_test(tc, test_fail_entries_in_budget);
	tcase_add_test(tc, test_entry_overhead);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(make_suite)
