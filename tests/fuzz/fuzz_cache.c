/*
 * fuzz_cache: the input is an upstream response.  Whatever the bytes, the
 * cache must store exactly what the wire iterator accepts, and a lookup must
 * give back the input with only the ID and the TTL fields changed.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stubborn/cache.h"
#include "stubborn/rng.h"
#include "stubborn/wire.h"

#include "fuzz.h"

#define T0 1000000ULL
#define TTL 60
#define STALE_MAX 3600

static bool parses_fully(const uint8_t *, size_t);
static bool reads_ttl(const uint8_t *, size_t);
static void expect(const uint8_t *, size_t, bool, uint32_t, uint8_t *);
static void check_lookup(struct cache *, const uint8_t *, size_t,
    const uint8_t *, size_t, uint64_t, enum cache_result);

static uint8_t out[65536];
static uint8_t want[65536];

/* The same rule the cache promises: every byte belongs to a parsed RR. */
static bool
parses_fully(const uint8_t *msg, size_t len)
{
	struct wire_iter it;
	struct wire_rr rr;
	size_t end;
	int rc;

	if (len < WIRE_HDR_LEN || len > WIRE_MSG_MAX ||
	    wire_iter_init(&it, msg, len) < 0)
		return false;
	end = it.off;
	while ((rc = wire_iter_next(&it, &rr)) == 1)
		end = rr.end;
	return rc == 0 && end == len && !reads_ttl(msg, len);
}

/*
 * True if an owner name is read through a TTL field (a compression pointer
 * into one): lookups rewrite TTLs, so the cache refuses such a message.
 */
static bool
reads_ttl(const uint8_t *msg, size_t len)
{
	static bool is_ttl[65536];
	struct wire_iter it;
	struct wire_rr rr;

	memset(is_ttl, 0, len);
	if (wire_iter_init(&it, msg, len) < 0)
		return false;
	while (wire_iter_next(&it, &rr) == 1)
		if (rr.type != WIRE_TYPE_OPT)
			memset(is_ttl + rr.type_off + 4, 1, 4);
	if (wire_iter_init(&it, msg, len) < 0)
		return false;
	while (wire_iter_next(&it, &rr) == 1) {
		size_t o = rr.off;

		while (msg[o] != 0) {
			if ((msg[o] & 0xc0) == 0xc0) {
				if (is_ttl[o] || is_ttl[o + 1])
					return true;
				o = ((size_t)(msg[o] & 0x3f) << 8) | msg[o + 1];
				continue;
			}
			for (size_t i = 0; i <= msg[o]; i++)
				if (is_ttl[o + i])
					return true;
			o += (size_t)msg[o] + 1;
		}
		if (is_ttl[o])
			return true;
	}
	return false;
}

/*
 * msg with ID 0 and every non-OPT TTL as a lookup gives it: stale, the
 * stale TTL; fresh, the record's own (raised to the entry's, or the
 * entry's when over a week) minus the age.
 */
static void
expect(const uint8_t *msg, size_t len, bool fresh, uint32_t age_s, uint8_t *buf)
{
	struct wire_iter it;
	struct wire_rr rr;

	memcpy(buf, msg, len);
	wire_put16(buf, 0);
	if (wire_iter_init(&it, buf, len) < 0)
		abort();
	while (wire_iter_next(&it, &rr) == 1) {
		uint32_t own = rr.ttl < TTL || rr.ttl > 604800 ? TTL : rr.ttl;
		if (rr.type != WIRE_TYPE_OPT)
			wire_put32(
			    buf + rr.type_off + 4, fresh ? own - age_s : 30);
	}
}

static void
check_lookup(struct cache *c, const uint8_t *key, size_t klen,
    const uint8_t *data, size_t size, uint64_t now_ms, enum cache_result want_r)
{
	struct cache_hit hit;
	size_t out_len = 0;

	if (cache_lookup(c, key, klen, now_ms, 30, out, sizeof(out), &out_len,
		&hit) != want_r)
		abort();
	if (want_r == CACHE_MISS)
		return;
	if (out_len != size || hit.ttl != TTL ||
	    hit.rcode != WIRE_RCODE(WIRE_FLAGS(data)))
		abort();
	expect(data, size, want_r == CACHE_FRESH,
	    (uint32_t)((now_ms - T0) / 1000), want);
	if (memcmp(out, want, size) != 0)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cache *c;
	uint8_t key[CACHE_KEY_MAX];
	static const uint8_t qname[] = "\4fuzz\7example";
	size_t klen, out_len;
	struct cache_stats st;
	struct cache_hit hit;
	int rc;

	if (c == NULL) {
		if (rng_init() < 0)
			abort();
		c = cache_new(1 << 20, 1, STALE_MAX);
		if (c == NULL)
			abort();
	}
	klen = cache_make_key(
	    key, qname, sizeof(qname), WIRE_TYPE_A, WIRE_CLASS_IN, 0);
	(void)cache_remove(c, key, klen);

	rc = cache_store(c, key, klen, data, size, TTL, T0);
	if ((rc == 0) != parses_fully(data, size))
		abort();
	if (rc != 0) {
		if (rc != -EBADMSG)
			abort();
		check_lookup(c, key, klen, data, size, T0, CACHE_MISS);
		return 0;
	}
	/* Storing again replaces, never duplicates. */
	if (cache_store(c, key, klen, data, size, TTL, T0) != 0)
		abort();
	cache_get_stats(c, &st);
	if (st.entries != 1)
		abort();

	check_lookup(c, key, klen, data, size, T0 + 1500, CACHE_FRESH);
	if (cache_lookup(c, key, klen, T0, 30, out, size - 1, &out_len, &hit) !=
	    CACHE_MISS)
		abort();
	check_lookup(
	    c, key, klen, data, size, T0 + TTL * 1000 + 5, CACHE_STALE);
	check_lookup(c, key, klen, data, size, T0 + (TTL + STALE_MAX) * 1000,
	    CACHE_MISS);
	cache_get_stats(c, &st);
	if (st.entries != 0 || st.bytes != 0)
		abort();
	return 0;
}
