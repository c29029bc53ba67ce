/*
 * libFuzzer target for wire: the input is a client query or any DNS
 * message.  Every function is run on it (or on copies of it) and the
 * results are checked against the contracts in wire.h; a violated invariant
 * aborts.  ASan/UBSan catch reads and writes out of bounds.
 *
 * Build: clang -std=gnu11 -g -O1 -D_GNU_SOURCE -Iinclude \
 *     -fsanitize=fuzzer,address,undefined tests/fuzz/fuzz_wire.c \
 *     resolver/wire.c -o fuzz_wire
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stubborn/wire.h"

#include "fuzz.h"

/* The OPT a reply builder is asked for: size, EDE code and text. */
#define EDNS(size, ede, text)                                                  \
	(&(struct wire_edns){                                                  \
	    .udp_size = (size), .ede_code = (ede), .ede_text = (text)})

#define FUZZ_CAP 65536
#define CANARY 0xa5
#define TEXT_MAX (4 * WIRE_NAME_MAX + 16)

static int rcode_for(enum wire_verdict v);
static bool canary_intact(const uint8_t *buf, size_t from, size_t n);
static unsigned check_walk(const uint8_t *msg, size_t len, bool *clean,
    size_t *end, unsigned *opts_in_ar, struct wire_rr *last_opt);
static void check_name_text(const uint8_t *name, size_t len);
static void fuzz_parse(const uint8_t *data, size_t size, struct wire_query *q,
    enum wire_verdict *v);
static void fuzz_error(const uint8_t *data, size_t size,
    const struct wire_query *q, enum wire_verdict v);
static void fuzz_reply(
    const uint8_t *data, size_t size, const struct wire_query *q);
static void check_reply(const uint8_t *r, size_t n, size_t limit,
    const uint8_t *data, const struct wire_query *q);
static void fuzz_build_query(const struct wire_query *q, const uint8_t *data);
static void fuzz_iter(const uint8_t *data, size_t size);
static void fuzz_strip(const uint8_t *data, size_t size);
static void fuzz_set_ttls(const uint8_t *data, size_t size);
static void fuzz_names(const uint8_t *data, size_t size);
static void fuzz_text(const uint8_t *data, size_t size);

/* Scratch space; static to keep the stack small. */
static uint8_t buf[FUZZ_CAP + 64];
static uint8_t buf2[FUZZ_CAP + 64];

static int
rcode_for(enum wire_verdict v)
{
	switch (v) {
	case WIRE_ACCEPT:
		return WIRE_RCODE_SERVFAIL;
	case WIRE_FORMERR:
		return WIRE_RCODE_FORMERR;
	case WIRE_NOTIMP:
		return WIRE_RCODE_NOTIMP;
	case WIRE_BADVERS:
		return WIRE_RCODE_BADVERS;
	case WIRE_REFUSED:
		return WIRE_RCODE_REFUSED;
	case WIRE_DROP:
		break;
	}
	return -1;
}

static bool
canary_intact(const uint8_t *b, size_t from, size_t n)
{
	for (size_t i = from; i < from + n; i++)
		if (b[i] != CANARY)
			return false;
	return true;
}

/*
 * Walks msg with wire_iter and checks each record.  Returns the number of
 * records read; *clean tells whether the walk ended without an error, *end
 * where the iterator stopped.
 */
static unsigned
check_walk(const uint8_t *msg, size_t len, bool *clean, size_t *end,
    unsigned *opts_in_ar, struct wire_rr *last_opt)
{
	struct wire_iter it;
	struct wire_rr rr;
	unsigned n = 0, total;
	int prev_section = 1, r;
	size_t prev_end;

	*clean = false;
	*end = 0;
	*opts_in_ar = 0;
	if (wire_iter_init(&it, msg, len) < 0)
		return 0;
	CHECK(len >= WIRE_HDR_LEN);
	CHECK(it.off >= WIRE_HDR_LEN && it.off <= len);
	total =
	    (unsigned)WIRE_ANCOUNT(msg) + WIRE_NSCOUNT(msg) + WIRE_ARCOUNT(msg);
	prev_end = it.off;
	while ((r = wire_iter_next(&it, &rr)) == 1) {
		uint8_t name[WIRE_NAME_MAX];
		size_t next;
		int nl;

		n++;
		CHECK(n <= total);
		CHECK(rr.section >= prev_section && rr.section <= 3);
		prev_section = rr.section;
		CHECK(rr.off == prev_end);
		CHECK(rr.type_off > rr.off);
		CHECK(rr.rdata_off == rr.type_off + 10);
		CHECK(rr.end == rr.rdata_off + rr.rdlen);
		CHECK(rr.end <= len);
		CHECK(rr.type == wire_u16(msg + rr.type_off));
		CHECK(rr.rclass == wire_u16(msg + rr.type_off + 2));
		CHECK(rr.ttl == wire_u32(msg + rr.type_off + 4));
		CHECK(rr.rdlen == wire_u16(msg + rr.type_off + 8));
		CHECK(wire_skip_name(msg, len, rr.off, &next) == 0);
		CHECK(next == rr.type_off);
#ifndef FUZZ_WIRE_LENIENT
		/* What the iterator skipped can be expanded (wire.h rules). */
		nl = wire_read_name(msg, len, rr.off, name, true);
		CHECK(nl >= 1 && nl <= WIRE_NAME_MAX);
#else
		(void)name;
		(void)nl;
#endif
		if (rr.section == 3 && rr.type == WIRE_TYPE_OPT) {
			++*opts_in_ar;
			if (last_opt != NULL)
				*last_opt = rr;
		}
		prev_end = rr.end;
	}
	CHECK(r == 0 || r == -EBADMSG);
	if (r == 0) {
		CHECK(n == total);
		*clean = true;
	}
	*end = prev_end;
	return n;
}

/* Presentation form and back: the same name, byte for byte. */
static void
check_name_text(const uint8_t *name, size_t len)
{
	char text[TEXT_MAX];
	uint8_t back[WIRE_NAME_MAX + 1];
	int r;

	wire_name_text(name, len, text, sizeof(text));
	CHECK(strlen(text) < sizeof(text));
#ifndef FUZZ_WIRE_LENIENT
	r = wire_name_from_text(text, back);
	CHECK(r == (int)len);
	CHECK(memcmp(back, name, len) == 0);
#else
	(void)r;
	(void)back;
#endif
}

static void
fuzz_parse(const uint8_t *data, size_t size, struct wire_query *q,
    enum wire_verdict *v)
{
	*v = wire_parse_query(data, size, q);
	CHECK(*v >= WIRE_ACCEPT && *v <= WIRE_REFUSED);
	if (size < WIRE_HDR_LEN) {
		CHECK(*v == WIRE_DROP);
		return;
	}
	CHECK(q->id == WIRE_ID(data));
	CHECK(q->flags == WIRE_FLAGS(data));
	if (q->flags & WIRE_QR)
		CHECK(*v == WIRE_DROP);
	if (q->q.end != 0) {
		uint8_t name[WIRE_NAME_MAX];

		CHECK(q->q.name_off == WIRE_HDR_LEN);
		CHECK(q->q.name_len >= 1 && q->q.name_len <= WIRE_NAME_MAX);
		CHECK(q->q.end == WIRE_HDR_LEN + q->q.name_len + 4);
		CHECK(q->q.end <= size);
		CHECK(data[WIRE_HDR_LEN + q->q.name_len - 1] == 0);
		CHECK(wire_read_name(data, size, WIRE_HDR_LEN, name, false) ==
		    (int)q->q.name_len);
		CHECK(memcmp(name, data + WIRE_HDR_LEN, q->q.name_len) == 0);
	}
	if (q->has_cookie)
		CHECK(q->has_opt &&
		    (q->cookie_len == 8 ||
			(q->cookie_len >= 16 && q->cookie_len <= 40)));
	if (*v == WIRE_ACCEPT || *v == WIRE_BADVERS || *v == WIRE_REFUSED) {
		CHECK(q->q.end != 0);
		CHECK(WIRE_QDCOUNT(data) == 1);
		CHECK(WIRE_ANCOUNT(data) == 0 && WIRE_NSCOUNT(data) == 0);
		CHECK(WIRE_OPCODE(q->flags) == 0);
	}
	if (*v == WIRE_ACCEPT) {
		CHECK(!q->has_opt || q->edns_version == 0);
		CHECK(q->q.qtype != WIRE_TYPE_AXFR &&
		    q->q.qtype != WIRE_TYPE_IXFR);
	}
	if (*v == WIRE_BADVERS)
		CHECK(q->has_opt && q->edns_version > 0);
}

static void
fuzz_error(const uint8_t *data, size_t size, const struct wire_query *q,
    enum wire_verdict v)
{
	static const char *const texts[] = {NULL, "", "stubborn", "x"};
	int rcode = rcode_for(v);
	int ede = size % 3 == 0 ? -1 : (int)(data[size - 1] % 30);
	const char *text = texts[size % 4];
	struct wire_rr opt;
	bool clean, want_opt = q->has_opt || rcode > 15;
	size_t end, cap;
	unsigned nrr, opts;
	int n;

	if (rcode < 0)
		return;
	memset(buf, CANARY, FUZZ_CAP + 64);
	n = wire_build_error(
	    buf, FUZZ_CAP, data, size, q, rcode, EDNS(1232, ede, text));
	CHECK(n >= WIRE_HDR_LEN && n <= FUZZ_CAP);
	CHECK(canary_intact(buf, (size_t)n, 64));
	CHECK(WIRE_ID(buf) == q->id);
	CHECK(WIRE_FLAGS(buf) & WIRE_QR);
	CHECK(WIRE_FLAGS(buf) & WIRE_RA);
	CHECK(!(WIRE_FLAGS(buf) & (WIRE_AA | WIRE_TC | WIRE_AD | WIRE_Z)));
	CHECK(WIRE_RCODE(WIRE_FLAGS(buf)) == (rcode & 0xf));
	CHECK((WIRE_FLAGS(buf) & (WIRE_RD | WIRE_CD)) ==
	    (q->flags & (WIRE_RD | WIRE_CD)));
	CHECK(WIRE_ANCOUNT(buf) == 0 && WIRE_NSCOUNT(buf) == 0);
	CHECK(WIRE_ARCOUNT(buf) == (want_opt ? 1 : 0));
	if (WIRE_QDCOUNT(buf) == 1) {
		CHECK(q->q.end != 0);
		CHECK(memcmp(buf + WIRE_HDR_LEN, data + WIRE_HDR_LEN,
			  q->q.end - WIRE_HDR_LEN) == 0);
	} else {
		CHECK(WIRE_QDCOUNT(buf) == 0);
	}
	nrr = check_walk(buf, (size_t)n, &clean, &end, &opts, &opt);
	CHECK(clean && end == (size_t)n);
	CHECK(nrr == (want_opt ? 1u : 0u));
	if (want_opt) {
		CHECK(opts == 1);
		CHECK(buf[opt.off] == 0);
		CHECK(opt.ttl >> 24 == (uint32_t)(rcode >> 4));
		CHECK(((opt.ttl >> 16) & 0xff) == 0);
		CHECK(((opt.ttl & WIRE_EDNS_DO) != 0) == q->do_bit);
		CHECK(opt.rclass == 1232);
	}

	/* Small buffers: -ENOSPC or a result that fits, never a write past. */
	cap = (size_t)data[0] % 96;
	memset(buf, CANARY, 256);
	n = wire_build_error(
	    buf, cap, data, size, q, rcode, EDNS(1232, ede, text));
	CHECK(n == -ENOSPC || (n >= WIRE_HDR_LEN && (size_t)n <= cap));
	CHECK(canary_intact(buf, cap, 64));
}

/* The invariants of a reply made by wire_make_reply(). */
static void
check_reply(const uint8_t *r, size_t n, size_t limit, const uint8_t *data,
    const struct wire_query *q)
{
	uint16_t flags = WIRE_FLAGS(r);
	struct wire_rr opt;
	bool clean;
	size_t end;
	unsigned opts;

	CHECK(WIRE_ID(r) == q->id);
	CHECK(flags & WIRE_QR);
	CHECK(flags & WIRE_RA);
	CHECK(!(flags & (WIRE_AA | WIRE_AD | WIRE_Z)));
	CHECK(
	    (flags & (WIRE_RD | WIRE_CD)) == (q->flags & (WIRE_RD | WIRE_CD)));
	CHECK(WIRE_QDCOUNT(r) == 1);
	CHECK(memcmp(r + WIRE_HDR_LEN, data + WIRE_HDR_LEN,
		  q->q.end - WIRE_HDR_LEN) == 0);
	if (flags & WIRE_TC) {
		CHECK(WIRE_ANCOUNT(r) == 0 && WIRE_NSCOUNT(r) == 0);
		CHECK(WIRE_ARCOUNT(r) == (q->has_opt ? 1 : 0));
		CHECK(n == q->q.end + (q->has_opt ? 11 : 0));
	} else {
		CHECK(n <= limit);
	}
	check_walk(r, n, &clean, &end, &opts, &opt);
	CHECK(clean && end == n);
	CHECK(opts == (q->has_opt ? 1u : 0u));
	if (q->has_opt) {
		/* Appended last: the final record. */
		CHECK(opt.end == n);
		CHECK(((opt.ttl >> 16) & 0xff) == 0);
		CHECK(((opt.ttl & WIRE_EDNS_DO) != 0) == q->do_bit);
		CHECK(opt.rclass == 1232);
		if (flags & WIRE_TC)
			CHECK(opt.rdlen == 0);
	}
}

static void
fuzz_reply(const uint8_t *data, size_t size, const struct wire_query *q)
{
	int ede = size % 2 == 0 ? -1 : WIRE_EDE_STALE;
	uint8_t ext = 0xff;
	size_t limit, cap;
	int len, n;

	/* The query, OPT stripped, stands in for a stored response. */
	memcpy(buf, data, size);
	len = wire_strip_opt(buf, size, &ext);
	CHECK(len >= (int)q->q.end && len <= (int)size);
	CHECK(q->has_opt || ext == 0);
	memcpy(buf2, buf, (size_t)len);

	memset(buf + len, CANARY, FUZZ_CAP + 64 - (size_t)len);
	n = wire_make_reply(buf, (size_t)len, FUZZ_CAP, 512, data, q, false,
	    EDNS(1232, ede, "serve-stale"));
	CHECK(n >= 0 && n <= FUZZ_CAP);
	CHECK(canary_intact(buf, FUZZ_CAP, 64));
	check_reply(buf, (size_t)n, 512, data, q);

	/* A tight limit (TC path) and a tight capacity (ENOSPC path). */
	limit = q->q.end + (size_t)data[size - 1] % 48;
	cap = (size_t)len + (size_t)data[size / 2] % 40;
	memcpy(buf, buf2, (size_t)len);
	memset(buf + len, CANARY, FUZZ_CAP + 64 - (size_t)len);
	n = wire_make_reply(buf, (size_t)len, cap, limit, data, q, false,
	    EDNS(1232, ede, "serve-stale"));
	CHECK(n == -ENOSPC || (n >= 0 && (size_t)n <= cap));
	CHECK(canary_intact(buf, cap, 64));
	if (n >= 0)
		check_reply(buf, (size_t)n, limit, data, q);
	else
		CHECK(q->has_opt && cap < q->q.end + 11);
}

static void
fuzz_build_query(const struct wire_query *q, const uint8_t *data)
{
	struct wire_query q2;
	uint16_t size = q->has_opt ? q->udp_size : 0;
	int n;

	n = wire_build_query(buf, FUZZ_CAP, q->id, q->flags,
	    data + q->q.name_off, q->q.name_len, q->q.qtype, q->q.qclass, size,
	    q->do_bit);
	CHECK(n == (int)(q->q.end + (size > 0 ? 11 : 0)));
	CHECK(wire_parse_query(buf, (size_t)n, &q2) == WIRE_ACCEPT);
	CHECK(q2.id == q->id);
	/* AD in a query asks for AD back (RFC 6840 5.7): kept with RD, CD. */
	CHECK(q2.flags == (q->flags & (WIRE_RD | WIRE_CD | WIRE_AD)));
	CHECK(q2.q.end == q->q.end && q2.q.qtype == q->q.qtype &&
	    q2.q.qclass == q->q.qclass);
	CHECK(memcmp(buf, data, 2) == 0);
	CHECK(memcmp(buf + WIRE_HDR_LEN, data + WIRE_HDR_LEN,
		  q->q.end - WIRE_HDR_LEN) == 0);
	CHECK(q2.has_opt == (size > 0));
	if (size > 0) {
		CHECK(q2.udp_size == size);
		CHECK(q2.do_bit == q->do_bit);
	}
}

static void
fuzz_iter(const uint8_t *data, size_t size)
{
	bool clean;
	size_t end;
	unsigned opts;

	check_walk(data, size, &clean, &end, &opts, NULL);
}

static void
fuzz_strip(const uint8_t *data, size_t size)
{
	struct wire_rr opt;
	bool clean, clean2;
	size_t end, end2;
	unsigned opts, opts2, nrr, nrr2;
	uint8_t ext = 0xff, ext2 = 0xff;
	int n, n2;

	nrr = check_walk(data, size, &clean, &end, &opts, &opt);
	memcpy(buf, data, size);
	n = wire_strip_opt(buf, size, &ext);
	if (n < 0) {
		CHECK(n == -EBADMSG);
		CHECK(ext == 0);
		CHECK(!clean);
		return;
	}
	CHECK(n >= WIRE_HDR_LEN && (size_t)n <= size);
	CHECK(memcmp(buf, data, 10) == 0);
	CHECK(memcmp(buf + WIRE_HDR_LEN, data + WIRE_HDR_LEN,
		  (size_t)n - WIRE_HDR_LEN) == 0);
	CHECK(WIRE_ARCOUNT(buf) <= WIRE_ARCOUNT(data));
	if (clean && opts == 0) {
		/* Nothing to strip: all records kept, junk after them cut. */
		CHECK((size_t)n == end && ext == 0);
		CHECK(WIRE_ARCOUNT(buf) == WIRE_ARCOUNT(data));
	}
	/* What is left walks cleanly, without an OPT in the additional. */
	nrr2 = check_walk(buf, (size_t)n, &clean2, &end2, &opts2, NULL);
	CHECK(clean2 && end2 == (size_t)n && opts2 == 0);
	CHECK(nrr2 <= nrr);
	/* Stripping is idempotent. */
	n2 = wire_strip_opt(buf, (size_t)n, &ext2);
	CHECK(n2 == n && ext2 == 0);
}

/*
 * wire_set_ttls() writes while it walks, and a name may (pathologically)
 * point into an earlier record's TTL, so its verdict is about the message
 * it leaves behind: compare with rewriting every TTL first, then walking.
 */
static void
fuzz_set_ttls(const uint8_t *data, size_t size)
{
	struct wire_iter it;
	struct wire_rr rr;
	bool clean, sim_clean;
	size_t end;
	unsigned opts;
	int r;

	check_walk(data, size, &clean, &end, &opts, NULL);
	memcpy(buf, data, size);
	r = wire_set_ttls(buf, size, 0x01020304);
	CHECK(r == 0 || r == -EBADMSG);
	if (clean) {
		/* The layout does not depend on TTLs: rewrite, then walk. */
		memcpy(buf2, data, size);
		CHECK(wire_iter_init(&it, data, size) == 0);
		while (wire_iter_next(&it, &rr) == 1)
			if (rr.type != WIRE_TYPE_OPT)
				wire_put32(buf2 + rr.type_off + 4, 0x01020304);
		check_walk(buf2, size, &sim_clean, &end, &opts, NULL);
		CHECK((r == 0) == sim_clean);
		if (r == 0)
			CHECK(memcmp(buf, buf2, size) == 0);
	}
	if (r < 0)
		return;
	/* Exactly the TTLs of the non-OPT records changed. */
	check_walk(buf, size, &clean, &end, &opts, NULL);
	CHECK(clean);
	memcpy(buf2, data, size);
	CHECK(wire_iter_init(&it, buf, size) == 0);
	while (wire_iter_next(&it, &rr) == 1) {
		if (rr.type == WIRE_TYPE_OPT)
			continue;
		CHECK(rr.ttl == 0x01020304);
		wire_put32(buf2 + rr.type_off + 4, 0x01020304);
	}
	CHECK(memcmp(buf, buf2, size) == 0);
}

static void
fuzz_names(const uint8_t *data, size_t size)
{
	size_t top = size < 64 ? size : 64;

	for (size_t off = 0; off < top; off++) {
		uint8_t a[WIRE_NAME_MAX + 1], b[WIRE_NAME_MAX + 1];
		uint8_t root = 0;
		size_t next = 0;
		int ra, rb, rs;

		ra = wire_read_name(data, size, off, a, false);
		rb = wire_read_name(data, size, off, b, true);
		rs = wire_skip_name(data, size, off, &next);
		CHECK(ra == rb);
		CHECK(rs == 0 || rs == -EBADMSG);
		if (ra < 0) {
			CHECK(ra == -EBADMSG);
#ifndef FUZZ_WIRE_LENIENT
			CHECK(rs < 0);
#endif
			continue;
		}
		CHECK(ra >= 1 && ra <= WIRE_NAME_MAX);
		CHECK(a[ra - 1] == 0);
		CHECK(rs == 0);
		CHECK(next > off && next <= size);
		CHECK(wire_name_equal(a, (size_t)ra, b, (size_t)rb));
		wire_name_lower(a, (size_t)ra);
		CHECK(memcmp(a, b, (size_t)ra) == 0);
		CHECK(wire_name_in_zone(a, (size_t)ra, b, (size_t)rb));
		CHECK(wire_name_in_zone(a, (size_t)ra, &root, 1));
		CHECK(!wire_name_in_zone(&root, 1, a, (size_t)ra) || ra == 1);
		if (ra > 1) {
			/* The parent (first label off) is a zone a is in. */
			size_t l = (size_t)a[0] + 1;

			CHECK(wire_name_in_zone(
			    a, (size_t)ra, a + l, (size_t)ra - l));
			CHECK(!wire_name_in_zone(
			    a + l, (size_t)ra - l, a, (size_t)ra));
		}
		check_name_text(a, (size_t)ra);
	}
}

/* The input as presentation text. */
static void
fuzz_text(const uint8_t *data, size_t size)
{
	char text[TEXT_MAX];
	uint8_t w[WIRE_NAME_MAX + 1];
	int n;

	if (size >= sizeof(text))
		return;
	memcpy(text, data, size);
	text[size] = '\0';
	n = wire_name_from_text(text, w);
	CHECK(n == -EINVAL || (n >= 1 && n <= WIRE_NAME_MAX));
	if (n > 0) {
		CHECK(w[n - 1] == 0);
		check_name_text(w, (size_t)n);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_query q;
	enum wire_verdict v;

	if (size > WIRE_MSG_MAX)
		return 0;
	fuzz_parse(data, size, &q, &v);
	if (v != WIRE_DROP)
		fuzz_error(data, size, &q, v);
	if (v == WIRE_ACCEPT) {
		fuzz_reply(data, size, &q);
		fuzz_build_query(&q, data);
	}
	fuzz_iter(data, size);
	fuzz_strip(data, size);
	fuzz_set_ttls(data, size);
	fuzz_names(data, size);
	fuzz_text(data, size);
	return 0;
}
