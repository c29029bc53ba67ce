/*
 * libFuzzer target for the listener's client-query path without sockets
 * (listen.c process(), answer_or_forward(), answer_error(), over_limit(),
 * reply_cached()): the input is a client query.  It is parsed
 * (wire_parse_query); every verdict is answered as the listener would, over
 * UDP (the client's size limit) and TCP: errors with wire_build_error, an
 * accepted query from the cache (cache_make_key, cache_lookup fresh and
 * stale, wire_make_reply) and, for the listener's other answers to it
 * (failure hold, rate limit, shutdown), with wire_build_error too; then
 * cookie_attach.  Cookies are checked with cookie_valid_query.  Every reply
 * is checked against what a client must be able to rely on; a violated
 * invariant aborts.
 *
 * The cache holds one fixed entry (fuzz.example A, 40 records: over 512
 * bytes) and, per input, an answer made for the query's own question.
 *
 * Build: make build-fuzz/fuzz_query
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stubborn/cache.h"
#include "stubborn/clock.h"
#include "stubborn/cookie.h"
#include "stubborn/rng.h"
#include "stubborn/wire.h"

/* The OPT a reply builder is asked for: size, EDE code and text. */
#define EDNS(size, ede, text)                                                  \
	(&(struct wire_edns){                                                 \
	    .udp_size = (size), .ede_code = (ede), .ede_text = (text)})

#define CHECK(c)                                                               \
	do {                                                                   \
		if (!(c)) {                                                    \
			fprintf(stderr, "%s:%d: invariant failed: %s\n",       \
			    __FILE__, __LINE__, #c);                           \
			abort();                                               \
		}                                                              \
	} while (0)

#define T0 1000000000ull /* cache clock at store time, ms */
#define TTL 300
#define STALE_TTL 30
#define STALE_MAX 86400
#define EDNS_SIZE 1232
#define OUT_CAP (WIRE_MSG_MAX + 1024) /* listen.c: sizeof(l->out) */
#define KEY_SYNTH 0x80                /* key flag of per-input entries */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A message a client may be answered from (listen.c reply_cached). */
struct source {
	const uint8_t *msg;
	size_t len;
	int ede;
	const char *text;
};

static const uint8_t fixed_qname[] = "\4fuzz\7example";

/* Scratch space; static to keep the stack small. */
static uint8_t out[OUT_CAP + 64];
static uint8_t hit[WIRE_MSG_MAX + 1];
static uint8_t synth[WIRE_MSG_MAX + 1];

static bool walk_clean(
    const uint8_t *msg, size_t len, unsigned *nopt, struct wire_rr *last);
static void check_opt(const uint8_t *r, size_t n, const struct wire_rr *opt,
    const struct wire_query *q, int rcode);
static void check_cookie(const uint8_t *r, size_t before, size_t after,
    size_t limit, size_t cap, const struct wire_query *q, bool attach);
static void answer_error(const uint8_t *data, size_t size,
    const struct wire_query *q, int rcode, int ede, const char *text,
    size_t limit, const struct sockaddr_storage *peer, bool tc);
static void check_reply(const uint8_t *r, size_t n, size_t base_n, size_t limit,
    const struct source *src, const uint8_t *data, const struct wire_query *q);
static void reply_cached(const struct source *src, const uint8_t *data,
    const struct wire_query *q, size_t limit,
    const struct sockaddr_storage *peer);
static size_t make_answer(uint8_t *m, const uint8_t *data,
    const struct wire_query *q, unsigned nrr, bool nxdomain);
static void fill_cache(struct cache *c);
static void check_cookies(
    const struct wire_query *q, const struct sockaddr_storage *peer);

static bool
walk_clean(const uint8_t *msg, size_t len, unsigned *nopt, struct wire_rr *last)
{
	struct wire_iter it;
	struct wire_rr rr;
	size_t end;
	int r;

	*nopt = 0;
	if (wire_iter_init(&it, msg, len) < 0)
		return false;
	end = it.off;
	while ((r = wire_iter_next(&it, &rr)) == 1) {
		uint8_t name[WIRE_NAME_MAX];

		if (wire_read_name(msg, len, rr.off, name, false) < 0)
			return false;
		if (rr.type == WIRE_TYPE_OPT && rr.section == 3)
			++*nopt;
		if (last != NULL)
			*last = rr;
		end = rr.end;
	}
	return r == 0 && end == len;
}

/* Our OPT: last, owned by the root, our size, DO echoed, version 0. */
static void
check_opt(const uint8_t *r, size_t n, const struct wire_rr *opt,
    const struct wire_query *q, int rcode)
{
	CHECK(opt->type == WIRE_TYPE_OPT && opt->section == 3);
	CHECK(opt->end == n);
	CHECK(r[opt->off] == 0);
	CHECK(opt->rclass == EDNS_SIZE);
	CHECK(opt->ttl >> 24 == (uint32_t)(rcode >> 4));
	CHECK((opt->ttl & 0x00ff7fffu) == 0);
	CHECK(((opt->ttl & WIRE_EDNS_DO) != 0) == q->do_bit);
}

/* cookie_attach: the client's cookie and a fresh server cookie, or nothing. */
static void
check_cookie(const uint8_t *r, size_t before, size_t after, size_t limit,
    size_t cap, const struct wire_query *q, bool attach)
{
	if (attach && q->has_cookie && q->has_opt && before + 28 <= limit &&
	    before + 28 <= cap) {
		CHECK(after == before + 28);
		CHECK(wire_u16(r + before) == WIRE_OPT_COOKIE);
		CHECK(wire_u16(r + before + 2) == 24);
		CHECK(memcmp(r + before + 4, q->cookie, 8) == 0);
		CHECK(r[before + 12] == 1); /* RFC 9018 version */
	} else {
		CHECK(after == before);
	}
}

/* listen.c answer_error() (and over_limit()'s TC=1 reply when tc). */
static void
answer_error(const uint8_t *data, size_t size, const struct wire_query *q,
    int rcode, int ede, const char *text, size_t limit,
    const struct sockaddr_storage *peer, bool tc)
{
	bool want_opt = q->has_opt || rcode > 15;
	struct wire_rr last;
	unsigned nopt;
	size_t n;
	int r;

	memset(out, 0xa5, sizeof(out));
	r = wire_build_error(out, OUT_CAP, data, size, q, rcode, EDNS(EDNS_SIZE, ede, text));
	CHECK(r >= WIRE_HDR_LEN && r <= OUT_CAP);
	for (size_t i = (size_t)r; i < (size_t)r + 64; i++)
		CHECK(out[i] == 0xa5);
	if (tc)
		wire_put16(out + 2, (uint16_t)(WIRE_FLAGS(out) | WIRE_TC));
	n = (size_t)r;
	/* A malformed cookie is why FORMERR is sent: none goes back then. */
	if (rcode != WIRE_RCODE_FORMERR && !tc)
		n = cookie_attach(out, (size_t)r, OUT_CAP, limit, q, peer);
	check_cookie(out, (size_t)r, n, limit, OUT_CAP, q,
	    rcode != WIRE_RCODE_FORMERR && !tc);

	/* Small enough for any client, and it parses. */
	CHECK(n <= limit);
	CHECK(walk_clean(out, n, &nopt, &last));
	CHECK(WIRE_ID(out) == q->id);
	CHECK(WIRE_FLAGS(out) & WIRE_QR);
	CHECK(WIRE_FLAGS(out) & WIRE_RA);
	CHECK(((WIRE_FLAGS(out) & WIRE_TC) != 0) == tc);
	CHECK(!(WIRE_FLAGS(out) & (WIRE_AA | WIRE_AD | WIRE_Z)));
	CHECK(WIRE_RCODE(WIRE_FLAGS(out)) == (rcode & 0xf));
	CHECK(WIRE_OPCODE(WIRE_FLAGS(out)) == WIRE_OPCODE(q->flags));
	CHECK((WIRE_FLAGS(out) & (WIRE_RD | WIRE_CD)) ==
	    (q->flags & (WIRE_RD | WIRE_CD)));
	CHECK(WIRE_ANCOUNT(out) == 0 && WIRE_NSCOUNT(out) == 0);
	CHECK(WIRE_ARCOUNT(out) == (want_opt ? 1 : 0));
	CHECK(nopt == (want_opt ? 1u : 0u));
	if (WIRE_QDCOUNT(out) == 1) {
		CHECK(q->q.end > WIRE_HDR_LEN && q->q.end <= size);
		CHECK(memcmp(out + WIRE_HDR_LEN, data + WIRE_HDR_LEN,
			  q->q.end - WIRE_HDR_LEN) == 0);
	} else {
		CHECK(WIRE_QDCOUNT(out) == 0);
	}
	if (want_opt)
		check_opt(out, n, &last, q, rcode);
}

/* The invariants of a reply made by reply_cached(), cookie included. */
static void
check_reply(const uint8_t *r, size_t n, size_t base_n, size_t limit,
    const struct source *src, const uint8_t *data, const struct wire_query *q)
{
	uint16_t flags = WIRE_FLAGS(r), sflags = WIRE_FLAGS(src->msg);
	size_t qend = q->q.end;
	struct wire_rr last;
	unsigned nopt;

	CHECK(n <= limit);
	CHECK(walk_clean(r, n, &nopt, &last));
	CHECK(WIRE_ID(r) == q->id);
	CHECK(WIRE_QDCOUNT(r) == 1);
	CHECK(memcmp(r + WIRE_HDR_LEN, data + WIRE_HDR_LEN,
		  qend - WIRE_HDR_LEN) == 0);
	CHECK(flags & WIRE_QR);
	CHECK(flags & WIRE_RA);
	CHECK(!(flags & (WIRE_AA | WIRE_AD | WIRE_Z)));
	CHECK(
	    (flags & (WIRE_RD | WIRE_CD)) == (q->flags & (WIRE_RD | WIRE_CD)));
	CHECK(WIRE_RCODE(flags) == WIRE_RCODE(sflags));
	CHECK(nopt == (q->has_opt ? 1u : 0u));
	if (q->has_opt)
		check_opt(r, n, &last, q, 0);
	if (flags & WIRE_TC) {
		CHECK(WIRE_ANCOUNT(r) == 0 && WIRE_NSCOUNT(r) == 0);
		CHECK(WIRE_ARCOUNT(r) == (q->has_opt ? 1 : 0));
		CHECK(base_n == qend + (q->has_opt ? 11 : 0));
		CHECK(src->len + (q->has_opt ? 11 : 0) > limit);
	} else {
		CHECK(WIRE_ANCOUNT(r) == WIRE_ANCOUNT(src->msg));
		CHECK(WIRE_NSCOUNT(r) == WIRE_NSCOUNT(src->msg));
		CHECK(WIRE_ARCOUNT(r) ==
		    WIRE_ARCOUNT(src->msg) + (q->has_opt ? 1 : 0));
		CHECK(memcmp(r + qend, src->msg + qend, src->len - qend) == 0);
		if (!q->has_opt)
			CHECK(base_n == src->len);
		else if (src->ede < 0)
			CHECK(base_n == src->len + 11);
		else
			CHECK(base_n == src->len + 11 ||
			    base_n == src->len + 11 + 6 + strlen(src->text));
	}
}

static void
reply_cached(const struct source *src, const uint8_t *data,
    const struct wire_query *q, size_t limit,
    const struct sockaddr_storage *peer)
{
	size_t n;
	int r;

	memcpy(out, src->msg, src->len);
	memset(out + src->len, 0xa5, sizeof(out) - src->len);
	r = wire_make_reply(out, src->len, OUT_CAP, limit, data, q, false, EDNS(EDNS_SIZE, src->ede, src->text));
	CHECK(r >= 0 && r <= OUT_CAP);
	n = cookie_attach(out, (size_t)r, OUT_CAP, limit, q, peer);
	check_cookie(out, (size_t)r, n, limit, OUT_CAP, q, true);
	for (size_t i = OUT_CAP; i < sizeof(out); i++)
		CHECK(out[i] == 0xa5);
	check_reply(out, n, (size_t)r, limit, src, data, q);
}

/*
 * An answer for q's own question, as upstream would send it (OPT
 * stripped): nrr records of the query type, or NXDOMAIN with an SOA.
 */
static size_t
make_answer(uint8_t *m, const uint8_t *data, const struct wire_query *q,
    unsigned nrr, bool nxdomain)
{
	size_t n = q->q.end;
	uint16_t rdlen = q->q.qtype == WIRE_TYPE_AAAA ? 16 : 4;

	memcpy(m, data, n);
	wire_put16(m + 2,
	    (uint16_t)(WIRE_QR | WIRE_AA | WIRE_RD | WIRE_RA |
		(nxdomain ? WIRE_RCODE_NXDOMAIN : 0)));
	wire_put16(m + 4, 1);
	wire_put16(m + 6, (uint16_t)(nxdomain ? 0 : nrr));
	wire_put16(m + 8, nxdomain ? 1 : 0);
	wire_put16(m + 10, 0);
	if (nxdomain) {
		static const uint8_t soa_rdata[] =
		    "\2ns\300\14\12hostmaster\300\14"
		    "\0\0\0\1\0\0\16\20\0\0\2\130\0\1\121\200\0\0\0\74";
		/* Owner: the root, or the qname's parent via a pointer. */
		if (m[WIRE_HDR_LEN] != 0) {
			size_t parent = WIRE_HDR_LEN + 1 + m[WIRE_HDR_LEN];
			m[n++] = (uint8_t)(0xc0 | parent >> 8);
			m[n++] = (uint8_t)parent;
		} else {
			m[n++] = 0;
		}
		wire_put16(m + n, WIRE_TYPE_SOA);
		wire_put16(m + n + 2, q->q.qclass);
		wire_put32(m + n + 4, TTL);
		wire_put16(m + n + 8, sizeof(soa_rdata) - 1);
		memcpy(m + n + 10, soa_rdata, sizeof(soa_rdata) - 1);
		return n + 10 + sizeof(soa_rdata) - 1;
	}
	for (unsigned i = 0; i < nrr; i++) {
		m[n] = 0xc0;
		m[n + 1] = WIRE_HDR_LEN;
		wire_put16(m + n + 2, q->q.qtype);
		wire_put16(m + n + 4, q->q.qclass);
		wire_put32(m + n + 6, TTL);
		wire_put16(m + n + 10, rdlen);
		memset(m + n + 12, (int)i, rdlen);
		n += 12 + rdlen;
	}
	return n;
}

/* The one fixed entry: fuzz.example A, 40 records. */
static void
fill_cache(struct cache *c)
{
	static uint8_t q[64];
	struct wire_query wq;
	uint8_t key[CACHE_KEY_MAX];
	size_t klen, n;
	int r;

	r = wire_build_query(q, sizeof(q), 0, WIRE_RD, fixed_qname,
	    sizeof(fixed_qname), WIRE_TYPE_A, WIRE_CLASS_IN, 0, false);
	CHECK(r > 0 && wire_parse_query(q, (size_t)r, &wq) == WIRE_ACCEPT);
	n = make_answer(synth, q, &wq, 40, false);
	CHECK(n > 512);
	klen = cache_make_key(key, fixed_qname, sizeof(fixed_qname),
	    WIRE_TYPE_A, WIRE_CLASS_IN, 0);
	CHECK(cache_store(c, key, klen, synth, n, TTL, T0) == 0);
}

/* Server cookies: ours validate, within the time window, for this peer. */
static void
check_cookies(const struct wire_query *q, const struct sockaddr_storage *peer)
{
	struct wire_query v = *q;
	struct sockaddr_storage other = *peer;
	uint32_t now = (uint32_t)clock_wall_s();

	/* Nobody forges a SipHash under a random secret. */
	CHECK(!cookie_valid_query(q, peer));
	if (!q->has_cookie)
		return;
	v.cookie_len = COOKIE_CLIENT_LEN + COOKIE_SERVER_LEN;
	cookie_make(v.cookie, peer, now, v.cookie + COOKIE_CLIENT_LEN);
	CHECK(cookie_valid_query(&v, peer));
	if (other.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&other)->sin6_addr.s6_addr[3] ^= 1;
	else
		((struct sockaddr_in *)&other)->sin_addr.s_addr ^= htonl(1);
	CHECK(!cookie_valid_query(&v, &other));
	v.cookie[COOKIE_CLIENT_LEN + 8 + (q->id & 7)] ^= 0x10;
	CHECK(!cookie_valid_query(&v, peer));
	cookie_make(v.cookie, peer, now - 3601 - (q->id & 0xff),
	    v.cookie + COOKIE_CLIENT_LEN);
	CHECK(!cookie_valid_query(&v, peer));
	cookie_make(v.cookie, peer, now + 302 + (q->id & 0xff),
	    v.cookie + COOKIE_CLIENT_LEN);
	CHECK(!cookie_valid_query(&v, peer));
	cookie_make(v.cookie, peer, now - 3500, v.cookie + COOKIE_CLIENT_LEN);
	CHECK(cookie_valid_query(&v, peer));
	v.cookie_len = 16;
	CHECK(!cookie_valid_query(&v, peer));
	v.has_cookie = false;
	v.cookie_len = 24;
	CHECK(!cookie_valid_query(&v, peer));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cache *cache;
	struct sockaddr_storage peer;
	struct wire_query q;
	enum wire_verdict v;
	uint8_t key[CACHE_KEY_MAX];
	size_t limits[2], klen, slen;
	unsigned kflags;

	if (cache == NULL) {
		if (rng_init() < 0)
			abort();
		cookie_init();
		cache = cache_new(1 << 20, 4, STALE_MAX);
		if (cache == NULL)
			abort();
		fill_cache(cache);
	}
	if (size > WIRE_MSG_MAX)
		return 0;
	memset(&peer, 0, sizeof(peer));
	if (size > 1 && (data[1] & 1)) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&peer;
		s6->sin6_family = AF_INET6;
		s6->sin6_addr.s6_addr[0] = 0x20;
		s6->sin6_addr.s6_addr[15] = 1;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&peer;
		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(0xc0000201u);
	}

	v = wire_parse_query(data, size, &q);
	CHECK(v >= WIRE_ACCEPT && v <= WIRE_REFUSED);
	/* UDP (the client's size, our edns-buffer-size at most), then TCP. */
	limits[0] = wire_udp_limit(&q, EDNS_SIZE);
	limits[1] = WIRE_MSG_MAX;
	CHECK(limits[0] >= 512 && limits[0] <= EDNS_SIZE);
	CHECK(limits[0] == 512 || q.has_opt);
	if (v == WIRE_DROP) {
		CHECK(size < WIRE_HDR_LEN || (WIRE_FLAGS(data) & WIRE_QR));
		return 0;
	}
	check_cookies(&q, &peer);
	for (int i = 0; i < 2; i++) {
		switch (v) {
		case WIRE_NOTIMP:
			answer_error(data, size, &q, WIRE_RCODE_NOTIMP, -1,
			    NULL, limits[i], &peer, false);
			continue;
		case WIRE_BADVERS:
			answer_error(data, size, &q, WIRE_RCODE_BADVERS, -1,
			    NULL, limits[i], &peer, false);
			continue;
		case WIRE_REFUSED:
			answer_error(data, size, &q, WIRE_RCODE_REFUSED,
			    WIRE_EDE_NOT_SUPPORTED,
			    "zone transfers are not served", limits[i], &peer,
			    false);
			continue;
		case WIRE_FORMERR:
			answer_error(data, size, &q, WIRE_RCODE_FORMERR, -1,
			    NULL, limits[i], &peer, false);
			continue;
		default:
			break;
		}
		/* Accepted: the listener's other answers first. */
		answer_error(data, size, &q, WIRE_RCODE_SERVFAIL,
		    WIRE_EDE_CACHED_ERROR, "recent upstream failure", limits[i],
		    &peer, false);
		answer_error(data, size, &q, WIRE_RCODE_REFUSED, WIRE_EDE_OTHER,
		    "rate limited", limits[i], &peer, false);
		answer_error(data, size, &q, WIRE_RCODE_SERVFAIL,
		    WIRE_EDE_OTHER, "too many queries in flight", limits[i],
		    &peer, false);
		answer_error(data, size, &q, WIRE_RCODE_NOERROR, -1, NULL,
		    limits[i], &peer, true);
	}
	if (v != WIRE_ACCEPT || q.q.qtype == WIRE_TYPE_ANY)
		return 0;

	/* The fixed entry, if this query is for it. */
	kflags = (q.do_bit ? CACHE_KEY_DO : 0) |
	    ((q.flags & WIRE_CD) ? CACHE_KEY_CD : 0);
	klen = cache_make_key(key, data + q.q.name_off, q.q.name_len, q.q.qtype,
	    q.q.qclass, kflags);
	CHECK(klen == q.q.name_len + 5);
	if (cache_lookup(cache, key, klen, T0 + 1000, STALE_TTL, hit,
		sizeof(hit), &slen, NULL) == CACHE_FRESH) {
		struct source s = {hit, slen, -1, NULL};
		CHECK(kflags == 0 && q.q.qtype == WIRE_TYPE_A);
		for (int i = 0; i < 2; i++)
			reply_cached(&s, data, &q, limits[i], &peer);
	}

	/* An answer made for this question: fresh, then stale. */
	{
		unsigned nrr = size > 0 ? data[size - 1] % 96 : 0;
		bool nx = nrr == 95;
		struct cache_hit h;
		enum cache_result r;
		size_t n = make_answer(synth, data, &q, nrr, nx);

		key[klen - 1] |= KEY_SYNTH;
		CHECK(cache_store(cache, key, klen, synth, n, TTL, T0) == 0);
		r = cache_lookup(cache, key, klen, T0 + 1500, STALE_TTL, hit,
		    sizeof(hit), &slen, &h);
		CHECK(r == CACHE_FRESH && slen == n && h.ttl_left == TTL - 1);
		for (int i = 0; i < 2; i++) {
			struct source s = {hit, slen, -1, NULL};
			reply_cached(&s, data, &q, limits[i], &peer);
		}
		r = cache_lookup(cache, key, klen, T0 + TTL * 1000 + 1,
		    STALE_TTL, hit, sizeof(hit), &slen, &h);
		CHECK(r == CACHE_STALE && slen == n);
		for (int i = 0; i < 2; i++) {
			struct source s = {hit, slen,
			    h.rcode == WIRE_RCODE_NXDOMAIN
				? WIRE_EDE_STALE_NXDOMAIN
				: WIRE_EDE_STALE,
			    "stale answer"};
			reply_cached(&s, data, &q, limits[i], &peer);
		}
		CHECK(cache_remove(cache, key, klen));
	}
	return 0;
}
