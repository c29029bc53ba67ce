/*
 * libFuzzer target for the path an upstream answer takes (forward.c
 * handle_reply() and finish_answer(), then listen.c reply_cached()): the
 * input is an upstream response.  It is classified (msg_classify), its OPT
 * stripped and, when cacheable, its TTLs set (wire), stored in a small cache
 * and looked up fresh and stale (cache); then each of those three messages
 * is made into the reply for several clients (with and without EDNS, with
 * cookies, different letter case) at the UDP limits 512 and 1232 and the TCP
 * limit (wire_make_reply, cookie_attach).  Every reply is checked against
 * what a client must be able to rely on; a violated invariant aborts.
 *
 * The client's question is the response's own (as reply_matches() demands
 * in forward.c), with its letter case changed; a response whose question
 * does not parse is paired with a fixed query and only checked for memory
 * safety, as forward.c would drop it.
 *
 * Build: make build-fuzz/fuzz_msg
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stubborn/cache.h"
#include "stubborn/cookie.h"
#include "stubborn/msg.h"
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
#define STALE_TTL 30
#define STALE_MAX 86400
#define EDNS_SIZE 1232
#define NVARIANTS 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A client query made for the response, parsed, with its peer. */
struct client {
	uint8_t pkt[WIRE_HDR_LEN + WIRE_NAME_MAX + 4 + 11 + 4 + 40];
	size_t len;
	struct wire_query q;
	struct sockaddr_storage peer;
};

/* One message a client may be answered from, and the TTL it must carry. */
struct source {
	const uint8_t *msg;
	size_t len;
	int ede; /* EDE the listener adds (stale), or -1 */
	const char *text;
	size_t cap; /* the reply buffer's capacity */
};

static const struct msg_policy policies[4] = {
    {0, 86400, 3600},                /* the defaults */
    {300, 3600, 60}, {0, 604800, 0}, /* negative answers never cached */
    {86400, 86400, 86400},           /* min-ttl = max-ttl */
};

static const size_t limits[] = {512, 1232, WIRE_MSG_MAX};

static const uint8_t fixed_qname[] = "\4fuzz\7example";

/* Scratch space; static to keep the stack small. */
static uint8_t resp[WIRE_MSG_MAX + 1];
static uint8_t hit_fresh[WIRE_MSG_MAX + 1];
static uint8_t hit_stale[WIRE_MSG_MAX + 1];
static uint8_t want[WIRE_MSG_MAX + 1];
static uint8_t out[2 * WIRE_MSG_MAX + 2048];

static void check_info(const uint8_t *data, size_t size,
    const struct msg_policy *pol, int rc, const struct msg_info *info);
static bool walk_clean(
    const uint8_t *msg, size_t len, unsigned *nopt, struct wire_rr *last);
static void check_ttls(const uint8_t *msg, size_t len, uint32_t ttl);
static bool names_read_ttls(const uint8_t *msg, size_t len);
static void expect_copy(
    const uint8_t *msg, size_t len, uint32_t ttl, uint8_t *dst);
static bool make_client(struct client *c, int variant, const uint8_t *qname,
    size_t qname_len, uint16_t qtype, uint16_t qclass, bool v6);
static void answer(
    const struct source *src, const struct client *c, bool strict);
static void check_reply(const uint8_t *r, size_t n, size_t base_n, size_t limit,
    const struct source *src, const struct client *c);

static void
check_info(const uint8_t *data, size_t size, const struct msg_policy *pol,
    int rc, const struct msg_info *info)
{
	CHECK(rc == 0 || rc == -EBADMSG);
	CHECK((rc < 0) == (info->kind == MSG_MALFORMED));
	if (rc < 0) {
		CHECK(!info->cacheable);
		return;
	}
	CHECK(size >= WIRE_HDR_LEN);
	CHECK(info->tc == ((WIRE_FLAGS(data) & WIRE_TC) != 0));
	CHECK((info->rcode & 0xf) == WIRE_RCODE(WIRE_FLAGS(data)));
	CHECK(info->rcode <= 0xfff);
	if (info->rcode == WIRE_RCODE_NOERROR)
		CHECK(info->kind ==
		    (WIRE_ANCOUNT(data) > 0 ? MSG_ANSWER : MSG_NODATA));
	if (!info->cacheable)
		return;
	CHECK(!info->tc);
	CHECK(info->ttl > 0 && info->ttl <= pol->max_ttl);
	CHECK(info->kind == MSG_ANSWER || info->kind == MSG_NODATA ||
	    info->kind == MSG_NXDOMAIN);
	if (info->kind == MSG_ANSWER)
		CHECK(info->ttl >= pol->min_ttl);
	else
		CHECK(info->ttl <= pol->max_negative_ttl);
}

/* Walks msg; true if every byte belongs to a record that parsed. */
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

		/* Owner names expand, as a client's parser needs them to. */
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

static void
check_ttls(const uint8_t *msg, size_t len, uint32_t ttl)
{
	struct wire_iter it;
	struct wire_rr rr;

	CHECK(wire_iter_init(&it, msg, len) == 0);
	while (wire_iter_next(&it, &rr) == 1)
		if (rr.type != WIRE_TYPE_OPT)
			CHECK(rr.ttl == ttl);
}

/*
 * True if some owner name is read through a TTL field (a compression
 * pointer into one): rewriting TTLs, as cache hits do, would change it.
 * msg walks cleanly.
 */
static bool
names_read_ttls(const uint8_t *msg, size_t len)
{
	static uint8_t is_ttl[WIRE_MSG_MAX + 1];
	struct wire_iter it;
	struct wire_rr rr;
	bool hit = false;

	memset(is_ttl, 0, len);
	CHECK(wire_iter_init(&it, msg, len) == 0);
	while (wire_iter_next(&it, &rr) == 1)
		if (rr.type != WIRE_TYPE_OPT)
			memset(is_ttl + rr.type_off + 4, 1, 4);
	CHECK(wire_iter_init(&it, msg, len) == 0);
	while (!hit && wire_iter_next(&it, &rr) == 1) {
		size_t o = rr.off;
		int jumps = 0;

		while (!hit) {
			CHECK(o + 1 < len && ++jumps < 512);
			if ((msg[o] & 0xc0) == 0xc0) {
				hit = is_ttl[o] || is_ttl[o + 1];
				o = ((size_t)(msg[o] & 0x3f) << 8) | msg[o + 1];
				continue;
			}
			for (size_t i = 0; i <= msg[o]; i++)
				hit |= is_ttl[o + i];
			if (msg[o] == 0)
				break;
			o += (size_t)msg[o] + 1;
		}
	}
	return hit;
}

/*
 * What a cache hit must return: msg (as stored) with ID 0 and every
 * non-OPT TTL set to ttl.  The TTL offsets are those of the stored message.
 */
static void
expect_copy(const uint8_t *msg, size_t len, uint32_t ttl, uint8_t *dst)
{
	struct wire_iter it;
	struct wire_rr rr;

	memcpy(dst, msg, len);
	wire_put16(dst, 0);
	CHECK(wire_iter_init(&it, msg, len) == 0);
	while (wire_iter_next(&it, &rr) == 1)
		if (rr.type != WIRE_TYPE_OPT)
			wire_put32(dst + rr.type_off + 4, ttl);
}

/*
 * Client variants: 0 no EDNS; 1 EDNS 1232 DO, 8-byte cookie, case swapped;
 * 2 EDNS 4096, CD, a valid server cookie (24 bytes), lower case; 3 EDNS
 * 512, no cookie, upper case.  Returns false if the listener would not
 * accept the query (zone transfers are refused).
 */
static bool
make_client(struct client *c, int variant, const uint8_t *qname,
    size_t qname_len, uint16_t qtype, uint16_t qclass, bool v6)
{
	static const uint16_t flags[NVARIANTS] = {
	    WIRE_RD, WIRE_RD | WIRE_Z | WIRE_AD, WIRE_RD | WIRE_CD, 0};
	static const uint16_t sizes[NVARIANTS] = {0, 1232, 4096, 512};
	uint8_t name[WIRE_NAME_MAX], cookie[24];
	size_t cookie_len = 0, off = 0;
	int n;

	memset(c, 0, sizeof(*c));
	if (v6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&c->peer;
		s6->sin6_family = AF_INET6;
		s6->sin6_addr.s6_addr[0] = 0x20;
		s6->sin6_addr.s6_addr[1] = 0x01;
		s6->sin6_addr.s6_addr[15] = (uint8_t)variant;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&c->peer;
		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(0xc0000201u + (uint32_t)variant);
	}
	/* The same name but for letter case: labels only, never lengths. */
	memcpy(name, qname, qname_len);
	while (off < qname_len && name[off] != 0) {
		size_t l = name[off];
		for (size_t i = off + 1; i <= off + l && i < qname_len; i++) {
			uint8_t ch = name[i];
			bool up = ch >= 'A' && ch <= 'Z',
			     lo = ch >= 'a' && ch <= 'z';
			if (variant == 1 && (up || lo))
				ch ^= 0x20;
			else if (variant == 2 && up)
				ch += 'a' - 'A';
			else if (variant == 3 && lo)
				ch -= 'a' - 'A';
			name[i] = ch;
		}
		off += l + 1;
	}
	n = wire_build_query(c->pkt, sizeof(c->pkt),
	    (uint16_t)(0x5150 + variant), flags[variant], name, qname_len,
	    qtype, qclass, sizes[variant], variant == 1);
	CHECK(n > 0);
	/* wire_build_query keeps RD and CD only: add the rest by hand. */
	wire_put16(c->pkt + 2, flags[variant]);
	if (variant == 1) {
		memcpy(cookie, "\x11\x22\x33\x44\x55\x66\x77\x88", 8);
		cookie_len = 8;
	} else if (variant == 2) {
		memcpy(cookie, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
		cookie_make(cookie, &c->peer, 0, cookie + 8);
		cookie_len = 24;
	}
	if (cookie_len > 0) {
		n = wire_add_option(c->pkt, (size_t)n, sizeof(c->pkt),
		    WIRE_OPT_COOKIE, cookie, cookie_len);
		CHECK(n > 0);
	}
	c->len = (size_t)n;
	switch (wire_parse_query(c->pkt, c->len, &c->q)) {
	case WIRE_ACCEPT:
		break;
	case WIRE_REFUSED:
		CHECK(qtype == WIRE_TYPE_AXFR || qtype == WIRE_TYPE_IXFR);
		return false;
	default:
		CHECK(!"a query built from a parsed question is accepted");
	}
	CHECK(c->q.has_opt == (sizes[variant] != 0));
	CHECK(c->q.has_cookie == (cookie_len != 0));
	CHECK(c->q.q.end == WIRE_HDR_LEN + qname_len + 4);
	return true;
}

/* The invariants of one reply, after cookie_attach. */
static void
check_reply(const uint8_t *r, size_t n, size_t base_n, size_t limit,
    const struct source *src, const struct client *c)
{
	const struct wire_query *q = &c->q;
	uint16_t flags = WIRE_FLAGS(r), sflags = WIRE_FLAGS(src->msg);
	size_t qend = q->q.end;
	struct wire_rr last;
	unsigned nopt;

	CHECK(n <= limit);
	CHECK(n >= qend);
	CHECK(walk_clean(r, n, &nopt, &last));
	CHECK(WIRE_ID(r) == q->id);
	CHECK(WIRE_QDCOUNT(r) == 1);
	CHECK(memcmp(r + WIRE_HDR_LEN, c->pkt + WIRE_HDR_LEN,
		  qend - WIRE_HDR_LEN) == 0);
	CHECK(flags & WIRE_QR);
	CHECK(flags & WIRE_RA);
	CHECK(!(flags & (WIRE_AA | WIRE_AD | WIRE_Z)));
	CHECK(
	    (flags & (WIRE_RD | WIRE_CD)) == (q->flags & (WIRE_RD | WIRE_CD)));
	CHECK(WIRE_RCODE(flags) == WIRE_RCODE(sflags));
	CHECK(WIRE_OPCODE(flags) == WIRE_OPCODE(sflags));
	/* The upstream's OPT never reaches the client; ours ends the reply. */
	CHECK(nopt == (q->has_opt ? 1u : 0u));
	if (q->has_opt) {
		CHECK(last.type == WIRE_TYPE_OPT && last.end == n);
		CHECK(r[last.off] == 0);
		CHECK(last.rclass == EDNS_SIZE);
		CHECK((last.ttl & 0xffff7fffu) == 0);
		CHECK(((last.ttl & WIRE_EDNS_DO) != 0) == q->do_bit);
	}
	if (flags & WIRE_TC) {
		CHECK(WIRE_ANCOUNT(r) == 0 && WIRE_NSCOUNT(r) == 0);
		CHECK(WIRE_ARCOUNT(r) == (q->has_opt ? 1 : 0));
		CHECK(base_n == qend + (q->has_opt ? 11 : 0));
		/* Only what did not fit is truncated. */
		CHECK(src->len + (q->has_opt ? 11 : 0) > limit);
	} else {
		CHECK(WIRE_ANCOUNT(r) == WIRE_ANCOUNT(src->msg));
		CHECK(WIRE_NSCOUNT(r) == WIRE_NSCOUNT(src->msg));
		CHECK(WIRE_ARCOUNT(r) ==
		    WIRE_ARCOUNT(src->msg) + (q->has_opt ? 1 : 0));
		/* Every record of the source, byte for byte, then the OPT. */
		CHECK(base_n >= src->len);
		CHECK(memcmp(r + qend, src->msg + qend, src->len - qend) == 0);
		if (!q->has_opt)
			CHECK(base_n == src->len);
		else if (src->ede < 0)
			CHECK(base_n == src->len + 11);
	}
}

/* finish_answer()/reply_cached() for one client and every limit. */
static void
answer(const struct source *src, const struct client *c, bool strict)
{
	const struct wire_query *q = &c->q;

	for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
		size_t limit = limits[i], n;
		int r;

		memcpy(out, src->msg, src->len);
		r = wire_make_reply(out, src->len, src->cap, limit, c->pkt, q, false, EDNS(EDNS_SIZE, src->ede, src->text));
		if (!strict) {
			/* forward.c drops these: memory safety only. */
			CHECK(r < 0 || (size_t)r <= src->cap);
			if (r >= 0)
				(void)cookie_attach(out, (size_t)r, src->cap,
				    limit, q, &c->peer);
			continue;
		}
		CHECK(r >= 0 && (size_t)r <= src->cap);
		n = cookie_attach(out, (size_t)r, src->cap, limit, q, &c->peer);
		if (q->has_cookie && (size_t)r + 4 + 24 <= limit &&
		    (size_t)r + 4 + 24 <= src->cap) {
			CHECK(n == (size_t)r + 4 + 24);
			CHECK(memcmp(out + r + 4, q->cookie, 8) == 0);
		} else {
			CHECK(n == (size_t)r);
		}
		check_reply(out, n, (size_t)r, limit, src, c);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cache *cache;
	const struct msg_policy *pol;
	struct msg_info info;
	struct wire_question wq;
	struct client clients[NVARIANTS];
	bool ok[NVARIANTS];
	const uint8_t *qname = fixed_qname;
	size_t qname_len = sizeof(fixed_qname), rlen = 0;
	uint16_t qtype = WIRE_TYPE_A, qclass = WIRE_CLASS_IN;
	uint8_t key[CACHE_KEY_MAX], ext = 0xff;
	bool matches = false, v6;
	size_t klen;
	int rc, n;

	if (cache == NULL) {
		if (rng_init() < 0)
			abort();
		cookie_init();
		cache = cache_new(1 << 20, 4, STALE_MAX);
		if (cache == NULL)
			abort();
	}
	if (size > WIRE_MSG_MAX)
		return 0;
	pol = &policies[size > 0 ? data[0] & 3 : 0];
	v6 = size > 1 && (data[1] & 1);

	/* handle_reply(): classify. */
	rc = msg_classify(data, size, pol, &info);
	check_info(data, size, pol, rc, &info);

	/* reply_matches(): the question the response must repeat. */
	if (size >= WIRE_HDR_LEN && (WIRE_FLAGS(data) & WIRE_QR) &&
	    WIRE_QDCOUNT(data) == 1 &&
	    wire_read_question(data, size, &wq) == 0) {
		qname = data + wq.name_off;
		qname_len = wq.name_len;
		qtype = wq.qtype;
		qclass = wq.qclass;
		matches = true;
	}
	for (int v = 0; v < NVARIANTS; v++)
		ok[v] = make_client(
		    &clients[v], v, qname, qname_len, qtype, qclass, v6);

	/* finish_answer(): strip the OPT, one TTL for all, store. */
	if (size > 0)
		memcpy(resp, data, size);
	n = wire_strip_opt(resp, size, &ext);
	if (n < 0) {
		CHECK(n == -EBADMSG && ext == 0);
		return 0;
	}
	rlen = (size_t)n;
	CHECK(rlen >= WIRE_HDR_LEN && rlen <= size);
	/*
	 * ext is not compared with info.rcode >> 4: ldns ignores an OPT whose
	 * options do not parse, wire takes its RCODE bits anyway, and
	 * finish_answer() uses neither.
	 */
	if (rc == 0 && info.cacheable) {
		if (wire_set_ttls(resp, rlen, info.ttl) < 0)
			return 0; /* forward.c: SERVFAIL */
		check_ttls(resp, rlen, info.ttl);
	}
	{
		unsigned nopt;
		/* What is stored or sent on must parse, OPT-less. */
		CHECK(walk_clean(resp, rlen, &nopt, NULL) && nopt == 0);
	}

	/* Straight from upstream to every waiting client. */
	for (int v = 0; v < NVARIANTS; v++) {
		struct source s = {resp, rlen, -1, NULL, rlen + 1024};
		if (ok[v])
			answer(&s, &clients[v], matches);
	}
	if (rc < 0 || !info.cacheable || !matches)
		return 0;

	/* The cache, then hits fresh and stale for every client. */
	klen = cache_make_key(key, qname, qname_len, qtype, qclass, 0);
	rc = cache_store(cache, key, klen, resp, rlen, info.ttl, T0);
	/*
	 * The cache may refuse a message whose names read through a TTL (its
	 * hits would not parse); if it takes one, the checks below tell.
	 */
	CHECK(rc == 0 || (rc == -EBADMSG && names_read_ttls(resp, rlen)));
	if (rc < 0)
		return 0;
	{
		struct cache_hit hit;
		size_t flen = 0, slen = 0;
		uint32_t half = info.ttl / 2;
		enum cache_result r;

		r = cache_lookup(cache, key, klen, T0 + half * 1000ull + 1,
		    STALE_TTL, hit_fresh, sizeof(hit_fresh), &flen, &hit);
		CHECK(r == CACHE_FRESH && flen == rlen);
		CHECK(hit.ttl == info.ttl && hit.ttl_left == info.ttl - half);
		CHECK(hit.rcode == WIRE_RCODE(WIRE_FLAGS(resp)));
		expect_copy(resp, rlen, hit.ttl_left, want);
		CHECK(memcmp(hit_fresh, want, rlen) == 0);

		r = cache_lookup(cache, key, klen, T0 + info.ttl * 1000ull + 1,
		    STALE_TTL, hit_stale, sizeof(hit_stale), &slen, &hit);
		CHECK(r == CACHE_STALE && slen == rlen);
		CHECK(hit.ttl_left == 0);
		expect_copy(resp, rlen, STALE_TTL, want);
		CHECK(memcmp(hit_stale, want, rlen) == 0);

		for (int v = 0; v < NVARIANTS; v++) {
			struct source fresh = {
			    hit_fresh, flen, -1, NULL, WIRE_MSG_MAX + 1024};
			struct source stale = {hit_stale, slen,
			    hit.rcode == WIRE_RCODE_NXDOMAIN
				? WIRE_EDE_STALE_NXDOMAIN
				: WIRE_EDE_STALE,
			    "stale answer", WIRE_MSG_MAX + 1024};
			if (!ok[v])
				continue;
			answer(&fresh, &clients[v], true);
			answer(&stale, &clients[v], true);
		}
	}
	return 0;
}
