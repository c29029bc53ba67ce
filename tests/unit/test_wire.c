/*
 * Unit tests for wire: every message is built by hand, byte by byte, and
 * every outcome is asserted exactly (verdicts, offsets, bytes).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "stubborn/wire.h"

/* The OPT a reply builder is asked for: size, EDE code and text. */
#define EDNS(size, ede, text)                                                  \
	(&(struct wire_edns){                                                  \
	    .udp_size = (size), .ede_code = (ede), .ede_text = (text)})
#include "pkt.h"
#include "unit.h"

static size_t enc_name(const char *, uint8_t *);
static size_t long_name(uint8_t *, size_t);
static void pkt_init(
    struct pkt *, uint16_t, uint16_t, uint16_t, uint16_t, uint16_t, uint16_t);
static size_t pkt_name(struct pkt *, const char *);
static size_t pkt_question(struct pkt *, const char *, uint16_t, uint16_t);
static size_t pkt_opt(struct pkt *, uint16_t, uint8_t, uint8_t, uint16_t);
static void pkt_option(struct pkt *, uint16_t, const void *, uint16_t);
static void pkt_opt_done(struct pkt *, size_t);
static void pkt_rr_fixed(struct pkt *, uint16_t, uint16_t, uint32_t, uint16_t);
static void pkt_a(struct pkt *, uint16_t, uint32_t, uint8_t);
static void pkt_count(struct pkt *, int, uint16_t);
static void make_query(struct pkt *, uint16_t, uint16_t, const char *, uint16_t,
    bool, uint16_t, bool);
static void make_response(
    struct pkt *, uint16_t, const char *, uint16_t, unsigned);
static enum wire_verdict parse(const struct pkt *, struct wire_query *);
static Suite *make_suite(void);

/* "www.example.com" or "www.example.com." -> 3www7example3com0; "." -> 0 */
static size_t
enc_name(const char *text, uint8_t *out)
{
	size_t o = 0;

	if (strcmp(text, ".") == 0) {
		out[0] = 0;
		return 1;
	}
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

/* An uncompressed name of exactly total wire bytes (labels of 'a'..'z'). */
static size_t
long_name(uint8_t *out, size_t total)
{
	size_t o = 0, left = total - 1;
	char c = 'a';

	while (left > 0) {
		size_t l = left - 1 > 63 ? 63 : left - 1;

		if (left - (l + 1) == 1)
			l--;
		out[o++] = (uint8_t)l;
		memset(out + o, c, l);
		o += l;
		left -= l + 1;
		c = c == 'z' ? 'a' : (char)(c + 1);
	}
	out[o++] = 0;
	return o;
}

static void
pkt_init(struct pkt *p, uint16_t id, uint16_t flags, uint16_t qd, uint16_t an,
    uint16_t ns, uint16_t ar)
{
	memset(p->b, 0xee, sizeof(p->b));
	wire_put16(p->b, id);
	wire_put16(p->b + 2, flags);
	wire_put16(p->b + 4, qd);
	wire_put16(p->b + 6, an);
	wire_put16(p->b + 8, ns);
	wire_put16(p->b + 10, ar);
	p->len = WIRE_HDR_LEN;
}

/* Appends an uncompressed name; returns its offset. */
static size_t
pkt_name(struct pkt *p, const char *text)
{
	uint8_t n[300];
	size_t off = p->len;

	pkt_raw(p, n, enc_name(text, n));
	return off;
}

/* Appends a question; returns the offset just past it. */
static size_t
pkt_question(struct pkt *p, const char *name, uint16_t qtype, uint16_t qclass)
{
	pkt_name(p, name);
	pkt_u16(p, qtype);
	pkt_u16(p, qclass);
	return p->len;
}

/* Appends an OPT RR header with RDLENGTH 0; returns RDLENGTH's offset. */
static size_t
pkt_opt(
    struct pkt *p, uint16_t size, uint8_t ext, uint8_t version, uint16_t flags)
{
	size_t rdlen_off;

	pkt_u8(p, 0);
	pkt_u16(p, WIRE_TYPE_OPT);
	pkt_u16(p, size);
	pkt_u8(p, ext);
	pkt_u8(p, version);
	pkt_u16(p, flags);
	rdlen_off = p->len;
	pkt_u16(p, 0);
	return rdlen_off;
}

static void
pkt_option(struct pkt *p, uint16_t code, const void *data, uint16_t len)
{
	pkt_u16(p, code);
	pkt_u16(p, len);
	if (len > 0)
		pkt_raw(p, data, len);
}

/* Sets the OPT's RDLENGTH to cover everything appended since pkt_opt(). */
static void
pkt_opt_done(struct pkt *p, size_t rdlen_off)
{
	wire_put16(p->b + rdlen_off, (uint16_t)(p->len - rdlen_off - 2));
}

static void
pkt_rr_fixed(
    struct pkt *p, uint16_t type, uint16_t rclass, uint32_t ttl, uint16_t rdlen)
{
	pkt_u16(p, type);
	pkt_u16(p, rclass);
	pkt_u32(p, ttl);
	pkt_u16(p, rdlen);
}

/* An A record owned by a pointer to owner_off, address 192.0.2.last. */
static void
pkt_a(struct pkt *p, uint16_t owner_off, uint32_t ttl, uint8_t last)
{
	const uint8_t addr[4] = {192, 0, 2, last};

	pkt_u16(p, (uint16_t)(0xc000 | owner_off));
	pkt_rr_fixed(p, WIRE_TYPE_A, WIRE_CLASS_IN, ttl, 4);
	pkt_raw(p, addr, 4);
}

/* idx: 0 QD, 1 AN, 2 NS, 3 AR */
static void
pkt_count(struct pkt *p, int idx, uint16_t v)
{
	wire_put16(p->b + 4 + 2 * idx, v);
}

static void
make_query(struct pkt *p, uint16_t id, uint16_t flags, const char *name,
    uint16_t qtype, bool edns, uint16_t size, bool do_bit)
{
	pkt_init(p, id, flags, 1, 0, 0, edns ? 1 : 0);
	pkt_question(p, name, qtype, WIRE_CLASS_IN);
	if (edns)
		pkt_opt(p, size, 0, 0, do_bit ? WIRE_EDNS_DO : 0);
}

/*
 * An upstream-style response: QR|AA|AD|RD|RA|Z set, ID 0x1111, the question,
 * and n A records owned by a pointer to the question name.
 */
static void
make_response(
    struct pkt *p, uint16_t rcode, const char *name, uint16_t qtype, unsigned n)
{
	pkt_init(p, 0x1111,
	    (uint16_t)(WIRE_QR | WIRE_AA | WIRE_AD | WIRE_RD | WIRE_RA |
		WIRE_Z | rcode),
	    1, (uint16_t)n, 0, 0);
	pkt_question(p, name, qtype, WIRE_CLASS_IN);
	for (unsigned i = 0; i < n; i++)
		pkt_a(p, WIRE_HDR_LEN, 300, (uint8_t)i);
}

static enum wire_verdict
parse(const struct pkt *p, struct wire_query *q)
{
	return wire_parse_query(p->b, p->len, q);
}

/* ---- wire_parse_query ---------------------------------------------------- */

START_TEST(t_pq_valid_a_no_opt)
{
	struct pkt p;
	struct wire_query q;
	uint8_t want[64];
	size_t wl = enc_name("www.Example.com", want);

	make_query(&p, 0x1234, WIRE_RD | WIRE_CD, "www.Example.com",
	    WIRE_TYPE_A, false, 0, false);
	ck_assert_uint_eq(p.len, 33);
	ck_assert_int_eq(parse(&p, &q), WIRE_ACCEPT);
	ck_assert_uint_eq(q.id, 0x1234);
	ck_assert_uint_eq(q.flags, WIRE_RD | WIRE_CD);
	ck_assert_uint_eq(q.q.name_off, 12);
	ck_assert_uint_eq(q.q.name_len, 17);
	ck_assert_uint_eq(wl, 17);
	ck_assert_mem_eq(p.b + q.q.name_off, want, wl);
	ck_assert_uint_eq(q.q.qtype, WIRE_TYPE_A);
	ck_assert_uint_eq(q.q.qclass, WIRE_CLASS_IN);
	ck_assert_uint_eq(q.q.end, 33);
	ck_assert(!q.has_opt);
	ck_assert_uint_eq(q.udp_size, 0);
	ck_assert(!q.do_bit);
	ck_assert(!q.has_cookie);
	ck_assert(!q.keepalive);
}
END_TEST

START_TEST(t_pq_valid_a_opt)
{
	struct pkt p;
	struct wire_query q;

	make_query(&p, 0xfffe, WIRE_RD, "example.org", WIRE_TYPE_AAAA, true,
	    1232, true);
	ck_assert_uint_eq(p.len, 12 + 13 + 4 + 11);
	ck_assert_int_eq(parse(&p, &q), WIRE_ACCEPT);
	ck_assert_uint_eq(q.id, 0xfffe);
	ck_assert_uint_eq(q.flags, WIRE_RD);
	ck_assert_uint_eq(q.q.name_off, 12);
	ck_assert_uint_eq(q.q.name_len, 13);
	ck_assert_uint_eq(q.q.qtype, WIRE_TYPE_AAAA);
	ck_assert_uint_eq(q.q.qclass, WIRE_CLASS_IN);
	ck_assert_uint_eq(q.q.end, 29);
	ck_assert(q.has_opt);
	ck_assert_uint_eq(q.udp_size, 1232);
	ck_assert_uint_eq(q.edns_version, 0);
	ck_assert(q.do_bit);
	ck_assert(!q.has_cookie);
	ck_assert_uint_eq(q.cookie_len, 0);

	/* Same without DO; the size is kept as sent, even below 512. */
	make_query(&p, 1, 0, "example.org", WIRE_TYPE_A, true, 100, false);
	ck_assert_int_eq(parse(&p, &q), WIRE_ACCEPT);
	ck_assert(q.has_opt);
	ck_assert(!q.do_bit);
	ck_assert_uint_eq(q.udp_size, 100);
}
END_TEST

START_TEST(t_pq_too_short)
{
	struct pkt p;
	struct wire_query q;

	make_query(&p, 7, WIRE_RD, "example.com", WIRE_TYPE_A, false, 0, false);
	for (size_t n = 0; n < WIRE_HDR_LEN; n++)
		ck_assert_int_eq(wire_parse_query(p.b, n, &q), WIRE_DROP);
}
END_TEST

START_TEST(t_pq_header_only)
{
	struct pkt p;
	struct wire_query q;

	pkt_init(&p, 0x4242, WIRE_RD, 0, 0, 0, 0);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
	ck_assert_uint_eq(q.id, 0x4242);
	ck_assert_uint_eq(q.q.end, 0);

	/* QDCOUNT 1 but nothing after the header. */
	pkt_count(&p, 0, 1);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
	ck_assert_uint_eq(q.q.end, 0);
}
END_TEST

START_TEST(t_pq_qdcount2)
{
	struct pkt p;
	struct wire_query q;

	pkt_init(&p, 1, 0, 2, 0, 0, 0);
	pkt_question(&p, "a.example", WIRE_TYPE_A, WIRE_CLASS_IN);
	pkt_question(&p, "b.example", WIRE_TYPE_A, WIRE_CLASS_IN);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
	ck_assert_uint_eq(q.q.end, 0);
}
END_TEST

START_TEST(t_pq_qr_set)
{
	struct pkt p;
	struct wire_query q;

	make_query(&p, 1, WIRE_QR | WIRE_RD, "example.com", WIRE_TYPE_A, true,
	    1232, false);
	ck_assert_int_eq(parse(&p, &q), WIRE_DROP);
	/* QR wins over everything else, a bad opcode included. */
	make_query(&p, 1, WIRE_QR | (5 << 11), "example.com", WIRE_TYPE_A,
	    false, 0, false);
	ck_assert_int_eq(parse(&p, &q), WIRE_DROP);
}
END_TEST

START_TEST(t_pq_opcodes)
{
	static const unsigned ops[] = {1, 2, 5, 15};
	struct pkt p;
	struct wire_query q;

	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		make_query(&p, 9, (uint16_t)(ops[i] << 11 | WIRE_RD),
		    "example.com", WIRE_TYPE_SOA, false, 0, false);
		ck_assert_int_eq(parse(&p, &q), WIRE_NOTIMP);
		ck_assert_uint_eq(q.id, 9);
		ck_assert_uint_eq(WIRE_OPCODE(q.flags), ops[i]);
	}
	/* Opcode 0 is QUERY. */
	make_query(&p, 9, 0, "example.com", WIRE_TYPE_SOA, false, 0, false);
	ck_assert_int_eq(parse(&p, &q), WIRE_ACCEPT);
}
END_TEST

START_TEST(t_pq_compressed_qname)
{
	static const uint8_t ptr_name[] = {3, 'w', 'w', 'w', 0xc0, 0x0c};
	static const uint8_t self[] = {0xc0, 0x0c};
	struct pkt p;
	struct wire_query q;

	/* A label then a pointer back to the start of the name: a loop. */
	pkt_init(&p, 1, 0, 1, 0, 0, 0);
	pkt_raw(&p, ptr_name, sizeof(ptr_name));
	pkt_u16(&p, WIRE_TYPE_A);
	pkt_u16(&p, WIRE_CLASS_IN);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
	ck_assert_uint_eq(q.q.end, 0);

	/* The qname is just a pointer to itself. */
	pkt_init(&p, 1, 0, 1, 0, 0, 0);
	pkt_raw(&p, self, sizeof(self));
	pkt_u16(&p, WIRE_TYPE_A);
	pkt_u16(&p, WIRE_CLASS_IN);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
	ck_assert_uint_eq(q.q.end, 0);
}
END_TEST

START_TEST(t_pq_label_type_bits)
{
	static const uint8_t types[] = {0x40, 0x80};
	struct pkt p;
	struct wire_query q;

	for (size_t i = 0; i < sizeof(types); i++) {
		pkt_init(&p, 1, 0, 1, 0, 0, 0);
		pkt_u8(&p, 3);
		pkt_raw(&p, "www", 3);
		pkt_u8(&p, (uint8_t)(types[i] | 1)); /* 0x41 / 0x81 */
		pkt_u8(&p, 'x');
		pkt_u8(&p, 0);
		pkt_u16(&p, WIRE_TYPE_A);
		pkt_u16(&p, WIRE_CLASS_IN);
		ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
		ck_assert_uint_eq(q.q.end, 0);
	}
}
END_TEST

START_TEST(t_pq_name_length)
{
	struct pkt p;
	struct wire_query q;
	uint8_t name[300];

	/* 255 bytes is the maximum... */
	ck_assert_uint_eq(long_name(name, 255), 255);
	pkt_init(&p, 1, 0, 1, 0, 0, 0);
	pkt_raw(&p, name, 255);
	pkt_u16(&p, WIRE_TYPE_A);
	pkt_u16(&p, WIRE_CLASS_IN);
	ck_assert_int_eq(parse(&p, &q), WIRE_ACCEPT);
	ck_assert_uint_eq(q.q.name_len, 255);
	ck_assert_uint_eq(q.q.end, 12 + 255 + 4);

	/* ...256 is one too many... */
	ck_assert_uint_eq(long_name(name, 256), 256);
	pkt_init(&p, 1, 0, 1, 0, 0, 0);
	pkt_raw(&p, name, 256);
	pkt_u16(&p, WIRE_TYPE_A);
	pkt_u16(&p, WIRE_CLASS_IN);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
	ck_assert_uint_eq(q.q.end, 0);

	/* ...and four 63-byte labels (257) as well. */
	pkt_init(&p, 1, 0, 1, 0, 0, 0);
	for (int i = 0; i < 4; i++) {
		pkt_u8(&p, 63);
		memset(name, 'q', 63);
		pkt_raw(&p, name, 63);
	}
	pkt_u8(&p, 0);
	pkt_u16(&p, WIRE_TYPE_A);
	pkt_u16(&p, WIRE_CLASS_IN);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
}
END_TEST

START_TEST(t_pq_truncated_question)
{
	struct pkt p;
	struct wire_query q;

	make_query(
	    &p, 1, WIRE_RD, "www.example.com", WIRE_TYPE_A, false, 0, false);
	ck_assert_int_eq(parse(&p, &q), WIRE_ACCEPT);
	for (size_t n = WIRE_HDR_LEN; n < p.len; n++) {
		ck_assert_int_eq(wire_parse_query(p.b, n, &q), WIRE_FORMERR);
		ck_assert_uint_eq(q.q.end, 0);
	}
}
END_TEST

START_TEST(t_pq_truncated_opt)
{
	struct pkt p;
	struct wire_query q;
	size_t qend;

	make_query(
	    &p, 1, WIRE_RD, "example.com", WIRE_TYPE_A, true, 1232, false);
	qend = 12 + 13 + 4;
	for (size_t n = qend; n < p.len; n++) {
		ck_assert_int_eq(wire_parse_query(p.b, n, &q), WIRE_FORMERR);
		/* The question parsed, so it can be echoed. */
		ck_assert_uint_eq(q.q.end, qend);
	}
}
END_TEST

START_TEST(t_pq_two_opts)
{
	struct pkt p;
	struct wire_query q;

	make_query(&p, 1, 0, "example.com", WIRE_TYPE_A, true, 1232, false);
	pkt_opt(&p, 1232, 0, 0, 0);
	pkt_count(&p, 3, 2);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
	ck_assert_uint_eq(q.q.end, 29);
}
END_TEST

START_TEST(t_pq_opt_nonroot_owner)
{
	struct pkt p;
	struct wire_query q;

	pkt_init(&p, 1, 0, 1, 0, 0, 1);
	pkt_question(&p, "example.com", WIRE_TYPE_A, WIRE_CLASS_IN);
	pkt_name(&p, "example.com");
	pkt_rr_fixed(&p, WIRE_TYPE_OPT, 1232, 0, 0);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);

	/* A compressed owner is not the root either. */
	pkt_init(&p, 1, 0, 1, 0, 0, 1);
	pkt_question(&p, "example.com", WIRE_TYPE_A, WIRE_CLASS_IN);
	pkt_u16(&p, 0xc00c);
	pkt_rr_fixed(&p, WIRE_TYPE_OPT, 1232, 0, 0);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
}
END_TEST

START_TEST(t_pq_records_outside_additional)
{
	struct pkt p;
	struct wire_query q;

	/* OPT in the answer section. */
	pkt_init(&p, 1, 0, 1, 1, 0, 0);
	pkt_question(&p, "example.com", WIRE_TYPE_A, WIRE_CLASS_IN);
	pkt_opt(&p, 1232, 0, 0, 0);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
	ck_assert_uint_eq(q.q.end, 29);

	/* OPT in the authority section. */
	pkt_count(&p, 1, 0);
	pkt_count(&p, 2, 1);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);

	/* A plain A record in the answer section of a query. */
	pkt_init(&p, 1, 0, 1, 1, 0, 0);
	pkt_question(&p, "example.com", WIRE_TYPE_A, WIRE_CLASS_IN);
	pkt_a(&p, 12, 60, 1);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
}
END_TEST

START_TEST(t_pq_option_overrun)
{
	static const uint8_t junk[4] = {1, 2, 3, 4};
	struct pkt p;
	struct wire_query q;
	size_t rd;

	/* The option claims 8 bytes, the RDATA holds 4. */
	make_query(&p, 1, 0, "example.com", WIRE_TYPE_A, false, 0, false);
	pkt_count(&p, 3, 1);
	rd = pkt_opt(&p, 1232, 0, 0, 0);
	pkt_u16(&p, 100);
	pkt_u16(&p, 8);
	pkt_raw(&p, junk, 4);
	pkt_opt_done(&p, rd);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);

	/* Three bytes of RDATA: not even an option header. */
	make_query(&p, 1, 0, "example.com", WIRE_TYPE_A, false, 0, false);
	pkt_count(&p, 3, 1);
	rd = pkt_opt(&p, 1232, 0, 0, 0);
	pkt_raw(&p, junk, 3);
	pkt_opt_done(&p, rd);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);

	/* The option fits the message but not the RDATA (a second RR). */
	make_query(&p, 1, 0, "example.com", WIRE_TYPE_A, false, 0, false);
	pkt_count(&p, 3, 2);
	rd = pkt_opt(&p, 1232, 0, 0, 0);
	pkt_u16(&p, 100);
	pkt_u16(&p, 15);
	pkt_opt_done(&p, rd);
	pkt_a(&p, 12, 60, 1);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
}
END_TEST

START_TEST(t_pq_cookie_bad_lengths)
{
	static const uint16_t lens[] = {0, 1, 7, 9, 15, 41};
	uint8_t cookie[48];
	struct pkt p;
	struct wire_query q;
	size_t rd;

	memset(cookie, 0xab, sizeof(cookie));
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		make_query(
		    &p, 1, 0, "example.com", WIRE_TYPE_A, false, 0, false);
		pkt_count(&p, 3, 1);
		rd = pkt_opt(&p, 1232, 0, 0, 0);
		pkt_option(&p, WIRE_OPT_COOKIE, cookie, lens[i]);
		pkt_opt_done(&p, rd);
		ck_assert_msg(parse(&p, &q) == WIRE_FORMERR,
		    "cookie length %u accepted", lens[i]);
	}
}
END_TEST

START_TEST(t_pq_cookie_good_lengths)
{
	static const uint16_t lens[] = {8, 16, 24, 40};
	uint8_t cookie[40];
	struct pkt p;
	struct wire_query q;
	size_t rd;

	for (size_t i = 0; i < sizeof(cookie); i++)
		cookie[i] = (uint8_t)(0x10 + i);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		make_query(
		    &p, 1, 0, "example.com", WIRE_TYPE_A, false, 0, false);
		pkt_count(&p, 3, 1);
		rd = pkt_opt(&p, 4096, 0, 0, WIRE_EDNS_DO);
		pkt_option(&p, WIRE_OPT_COOKIE, cookie, lens[i]);
		pkt_opt_done(&p, rd);
		ck_assert_int_eq(parse(&p, &q), WIRE_ACCEPT);
		ck_assert(q.has_opt);
		ck_assert(q.has_cookie);
		ck_assert_uint_eq(q.cookie_len, lens[i]);
		ck_assert_mem_eq(q.cookie, cookie, lens[i]);
		ck_assert_uint_eq(q.udp_size, 4096);
		ck_assert(q.do_bit);
	}
}
END_TEST

START_TEST(t_pq_badvers)
{
	struct pkt p;
	struct wire_query q;

	pkt_init(&p, 0x77, WIRE_RD, 1, 0, 0, 1);
	pkt_question(&p, "example.com", WIRE_TYPE_SOA, WIRE_CLASS_IN);
	pkt_opt(&p, 1232, 0, 1, WIRE_EDNS_DO);
	ck_assert_int_eq(parse(&p, &q), WIRE_BADVERS);
	ck_assert(q.has_opt);
	ck_assert_uint_eq(q.edns_version, 1);
	ck_assert(q.do_bit);
	ck_assert_uint_eq(q.q.end, 29);

	pkt_init(&p, 0x77, 0, 1, 0, 0, 1);
	pkt_question(&p, "example.com", WIRE_TYPE_A, WIRE_CLASS_IN);
	pkt_opt(&p, 512, 0, 255, 0);
	ck_assert_int_eq(parse(&p, &q), WIRE_BADVERS);
	ck_assert_uint_eq(q.edns_version, 255);
}
END_TEST

START_TEST(t_pq_xfr_refused)
{
	struct pkt p;
	struct wire_query q;

	make_query(&p, 5, 0, "example.com", WIRE_TYPE_AXFR, false, 0, false);
	ck_assert_int_eq(parse(&p, &q), WIRE_REFUSED);
	ck_assert_uint_eq(q.q.end, 29);
	ck_assert_uint_eq(q.q.qtype, WIRE_TYPE_AXFR);
	make_query(&p, 5, 0, "example.com", WIRE_TYPE_IXFR, true, 1232, false);
	ck_assert_int_eq(parse(&p, &q), WIRE_REFUSED);
	ck_assert(q.has_opt);
	/* ANY and unknown types are forwarded, not refused (RFC 8906). */
	make_query(&p, 5, 0, "example.com", WIRE_TYPE_ANY, false, 0, false);
	ck_assert_int_eq(parse(&p, &q), WIRE_ACCEPT);
	make_query(&p, 5, 0, "example.com", 65280, false, 0, false);
	ck_assert_int_eq(parse(&p, &q), WIRE_ACCEPT);
}
END_TEST

START_TEST(t_pq_trailing_garbage)
{
	struct pkt p;
	struct wire_query q;

	make_query(&p, 1, 0, "example.com", WIRE_TYPE_A, false, 0, false);
	pkt_u8(&p, 0);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
	ck_assert_uint_eq(q.q.end, 29);

	make_query(&p, 1, 0, "example.com", WIRE_TYPE_A, true, 1232, false);
	pkt_u32(&p, 0xdeadbeef);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);

	/* An ARCOUNT of 0 with an OPT after the question is garbage too. */
	make_query(&p, 1, 0, "example.com", WIRE_TYPE_A, true, 1232, false);
	pkt_count(&p, 3, 0);
	ck_assert_int_eq(parse(&p, &q), WIRE_FORMERR);
}
END_TEST

START_TEST(t_pq_unknown_option_ignored)
{
	static const uint8_t data[5] = {9, 8, 7, 6, 5};
	struct pkt p;
	struct wire_query q;
	size_t rd;

	make_query(&p, 1, WIRE_RD, "example.com", WIRE_TYPE_A, false, 0, false);
	pkt_count(&p, 3, 1);
	/* Unknown flag 0x40 in the OPT's Z bits, options 100 and 65001. */
	rd = pkt_opt(&p, 1232, 0, 0, 0x0040);
	pkt_option(&p, 100, data, sizeof(data));
	pkt_option(&p, 65001, NULL, 0);
	pkt_opt_done(&p, rd);
	ck_assert_int_eq(parse(&p, &q), WIRE_ACCEPT);
	ck_assert(q.has_opt);
	ck_assert(!q.do_bit);
	ck_assert(!q.has_cookie);
	ck_assert(!q.keepalive);
	ck_assert_uint_eq(q.udp_size, 1232);
}
END_TEST

START_TEST(t_pq_keepalive_and_cookie)
{
	uint8_t cookie[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	struct pkt p;
	struct wire_query q;
	size_t rd;

	make_query(&p, 1, 0, "example.com", WIRE_TYPE_A, false, 0, false);
	pkt_count(&p, 3, 1);
	rd = pkt_opt(&p, 1232, 0, 0, 0);
	pkt_option(&p, WIRE_OPT_KEEPALIVE, NULL, 0);
	pkt_option(&p, WIRE_OPT_COOKIE, cookie, 8);
	pkt_opt_done(&p, rd);
	ck_assert_int_eq(parse(&p, &q), WIRE_ACCEPT);
	ck_assert(q.keepalive);
	ck_assert(q.has_cookie);
	ck_assert_uint_eq(q.cookie_len, 8);
	ck_assert_mem_eq(q.cookie, cookie, 8);
}
END_TEST

START_TEST(t_read_question)
{
	struct pkt p;
	struct wire_question wq;

	make_query(&p, 1, 0, "a.b", WIRE_TYPE_NS, false, 0, false);
	ck_assert_int_eq(wire_read_question(p.b, p.len, &wq), 0);
	ck_assert_uint_eq(wq.name_off, 12);
	ck_assert_uint_eq(wq.name_len, 5);
	ck_assert_uint_eq(wq.qtype, WIRE_TYPE_NS);
	ck_assert_uint_eq(wq.qclass, WIRE_CLASS_IN);
	ck_assert_uint_eq(wq.end, 21);
	ck_assert_int_eq(wire_read_question(p.b, p.len - 1, &wq), -EBADMSG);
	ck_assert_uint_eq(wq.end, 0);
	ck_assert_int_eq(wire_read_question(p.b, 11, &wq), -EBADMSG);
	pkt_count(&p, 0, 0);
	ck_assert_int_eq(wire_read_question(p.b, p.len, &wq), -EBADMSG);
}
END_TEST

/* ---- wire_skip_name / wire_read_name ------------------------------------- */

START_TEST(t_skip_name_plain_and_compressed)
{
	struct pkt p;
	size_t next = 0, www;

	make_response(&p, 0, "example.com", WIRE_TYPE_A, 0);
	ck_assert_int_eq(wire_skip_name(p.b, p.len, 12, &next), 0);
	ck_assert_uint_eq(next, 25);
	/* "www" + pointer to 12: next is after the pointer, not the target. */
	www = p.len;
	pkt_u8(&p, 3);
	pkt_raw(&p, "www", 3);
	pkt_u16(&p, 0xc00c);
	ck_assert_int_eq(wire_skip_name(p.b, p.len, www, &next), 0);
	ck_assert_uint_eq(next, www + 6);
	/* A bare pointer to the "www" name. */
	pkt_u16(&p, (uint16_t)(0xc000 | www));
	ck_assert_int_eq(wire_skip_name(p.b, p.len, www + 6, &next), 0);
	ck_assert_uint_eq(next, www + 8);
	/* The root name. */
	pkt_u8(&p, 0);
	ck_assert_int_eq(wire_skip_name(p.b, p.len, www + 8, &next), 0);
	ck_assert_uint_eq(next, www + 9);
}
END_TEST

START_TEST(t_skip_name_truncated)
{
	struct pkt p;
	size_t next = 12345;

	make_response(&p, 0, "example.com", WIRE_TYPE_A, 0);
	/* Offset at or past the end. */
	ck_assert_int_eq(wire_skip_name(p.b, p.len, p.len, &next), -EBADMSG);
	ck_assert_int_eq(
	    wire_skip_name(p.b, p.len, p.len + 10, &next), -EBADMSG);
	/* Every prefix of the name is cut short. */
	for (size_t n = 12; n < 25; n++)
		ck_assert_int_eq(wire_skip_name(p.b, n, 12, &next), -EBADMSG);
	/* Half a pointer. */
	pkt_u8(&p, 0xc0);
	ck_assert_int_eq(
	    wire_skip_name(p.b, p.len, p.len - 1, &next), -EBADMSG);
	/* Label types 01 and 10. */
	p.b[p.len - 1] = 0x41;
	pkt_u8(&p, 'x');
	pkt_u8(&p, 0);
	ck_assert_int_eq(
	    wire_skip_name(p.b, p.len, p.len - 3, &next), -EBADMSG);
	p.b[p.len - 3] = 0x81;
	ck_assert_int_eq(
	    wire_skip_name(p.b, p.len, p.len - 3, &next), -EBADMSG);
}
END_TEST

START_TEST(t_skip_name_too_long)
{
	struct pkt p;
	uint8_t name[300];
	size_t next;

	pkt_init(&p, 0, 0, 0, 0, 0, 0);
	pkt_raw(&p, name, long_name(name, 255));
	ck_assert_int_eq(wire_skip_name(p.b, p.len, 12, &next), 0);
	ck_assert_uint_eq(next, 12 + 255);
	pkt_init(&p, 0, 0, 0, 0, 0, 0);
	pkt_raw(&p, name, long_name(name, 256));
	ck_assert_int_eq(wire_skip_name(p.b, p.len, 12, &next), -EBADMSG);
}
END_TEST

/*
 * wire.h: "Pointers must point to an earlier offset than the one being read;
 * at most 128 jumps."  A name that cannot be expanded must not be skipped
 * either, or wire_iter accepts records whose owners wire_read_name rejects.
 */
START_TEST(t_skip_name_self_pointer)
{
	struct pkt p;
	size_t next = 0;

	make_response(&p, 0, "example.com", WIRE_TYPE_A, 0);
	/* At offset 29: a pointer to 29. */
	pkt_u16(&p, 0xc000 | 29);
	ck_assert_int_eq(wire_skip_name(p.b, p.len, 29, &next), -EBADMSG);
}
END_TEST

START_TEST(t_skip_name_pointer_loop)
{
	struct pkt p;
	size_t next = 0;

	/* 12: "www" -> 12 (label then a pointer back to its own start). */
	pkt_init(&p, 0, WIRE_QR, 0, 0, 0, 0);
	pkt_u8(&p, 3);
	pkt_raw(&p, "www", 3);
	pkt_u16(&p, 0xc00c);
	ck_assert_int_eq(wire_skip_name(p.b, p.len, 12, &next), -EBADMSG);

	/* 12: -> 14, 14: -> 12 (two pointers to each other). */
	pkt_init(&p, 0, WIRE_QR, 0, 0, 0, 0);
	pkt_u16(&p, 0xc000 | 14);
	pkt_u16(&p, 0xc000 | 12);
	ck_assert_int_eq(wire_skip_name(p.b, p.len, 12, &next), -EBADMSG);
	ck_assert_int_eq(wire_skip_name(p.b, p.len, 14, &next), -EBADMSG);
}
END_TEST

START_TEST(t_skip_name_forward_pointer)
{
	struct pkt p;
	size_t next = 0;

	/* 12: -> 14, 14: root.  Forward, though the target is a fine name. */
	pkt_init(&p, 0, WIRE_QR, 0, 0, 0, 0);
	pkt_u16(&p, 0xc000 | 14);
	pkt_u8(&p, 0);
	ck_assert_int_eq(wire_skip_name(p.b, p.len, 12, &next), -EBADMSG);
	/* A pointer past the end of the message. */
	pkt_init(&p, 0, WIRE_QR, 0, 0, 0, 0);
	pkt_u16(&p, 0xc000 | 0x3fff);
	ck_assert_int_eq(wire_skip_name(p.b, p.len, 12, &next), -EBADMSG);
}
END_TEST

/*
 * What a pointer leads to must end before the pointer: here the label at 20
 * (length 5) runs over the pointer at 22 that points to it.
 */
START_TEST(t_name_pointer_overlap)
{
	static const uint8_t m[] = {
	    0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 'a', 'b', 'c', 0, 0xee,
	    0xee, 0xee,                 /* 12: abc. */
	    5, 'x', 0xc0, 20, 'y', 'z', /* 20: label over 22 */
	    0,                          /* 26 */
	};
	uint8_t out[WIRE_NAME_MAX];
	size_t next = 0;

	ck_assert_int_eq(wire_read_name(m, sizeof(m), 12, out, false), 5);
	ck_assert_int_eq(
	    wire_read_name(m, sizeof(m), 22, out, false), -EBADMSG);
	ck_assert_int_eq(wire_skip_name(m, sizeof(m), 22, &next), -EBADMSG);
}
END_TEST

/*
 * Found by fuzz_wire: the question name is a pointer into the header whose
 * 32-byte label runs past the last record into trailing junk.  Stripping the
 * junk must not leave a message whose names no longer parse.
 */
START_TEST(t_strip_keeps_names_valid)
{
	static const uint8_t m[] = {
	    0x20,
	    0x00,
	    0x81,
	    0x80,
	    0x00,
	    0x01,
	    0x00,
	    0x00,
	    0x00,
	    0x01,
	    0x00,
	    0x00,
	    0xc0,
	    0x00,
	    0x1c,
	    0x02,
	    0x20,
	    0x04,
	    0x00,
	    0x35,
	    0x00,
	    0x00,
	    0x29,
	    0x04,
	    0xc9,
	    0x0a,
	    0x00,
	    0x00,
	    0x00,
	    0x80,
	    0x00,
	    0x00,
	    0x00,
	    0x00,
	    0x11,
	};
	uint8_t b[sizeof(m)], out[WIRE_NAME_MAX], ext;
	struct wire_iter it;
	struct wire_rr rr;
	int n, r;

	memcpy(b, m, sizeof(m));
	n = wire_strip_opt(b, sizeof(b), &ext);
	if (n < 0) {
		ck_assert_int_eq(n, -EBADMSG);
		return;
	}
	ck_assert_int_ge(wire_read_name(b, (size_t)n, 12, out, false), 1);
	ck_assert_int_eq(wire_iter_init(&it, b, (size_t)n), 0);
	while ((r = wire_iter_next(&it, &rr)) == 1)
		ck_assert_int_ge(
		    wire_read_name(b, (size_t)n, rr.off, out, false), 1);
	ck_assert_int_eq(r, 0);
}
END_TEST

START_TEST(t_read_name_compressed)
{
	struct pkt p;
	uint8_t out[WIRE_NAME_MAX], want[64];
	size_t www, bare, wl;

	make_response(&p, 0, "Example.COM", WIRE_TYPE_A, 0);
	www = p.len;
	pkt_u8(&p, 3);
	pkt_raw(&p, "WwW", 3);
	pkt_u16(&p, 0xc00c);
	bare = p.len;
	pkt_u16(&p, (uint16_t)(0xc000 | www));

	wl = enc_name("WwW.Example.COM", want);
	ck_assert_int_eq(wire_read_name(p.b, p.len, www, out, false), (int)wl);
	ck_assert_mem_eq(out, want, wl);
	/* Two jumps: bare -> www -> 12. */
	memset(out, 0, sizeof(out));
	ck_assert_int_eq(wire_read_name(p.b, p.len, bare, out, false), (int)wl);
	ck_assert_mem_eq(out, want, wl);
	/* Lower-cased on request, labels only. */
	wl = enc_name("www.example.com", want);
	ck_assert_int_eq(wire_read_name(p.b, p.len, bare, out, true), (int)wl);
	ck_assert_mem_eq(out, want, wl);
	/* The plain question name. */
	wl = enc_name("example.com", want);
	ck_assert_int_eq(wire_read_name(p.b, p.len, 12, out, true), (int)wl);
	ck_assert_mem_eq(out, want, wl);
}
END_TEST

START_TEST(t_read_name_loops)
{
	struct pkt p;
	uint8_t out[WIRE_NAME_MAX];

	/* Self-pointer. */
	pkt_init(&p, 0, WIRE_QR, 0, 0, 0, 0);
	pkt_u16(&p, 0xc00c);
	ck_assert_int_eq(wire_read_name(p.b, p.len, 12, out, false), -EBADMSG);
	/* A label then a pointer to the label. */
	pkt_init(&p, 0, WIRE_QR, 0, 0, 0, 0);
	pkt_u8(&p, 3);
	pkt_raw(&p, "www", 3);
	pkt_u16(&p, 0xc00c);
	ck_assert_int_eq(wire_read_name(p.b, p.len, 12, out, false), -EBADMSG);
	/* Two pointers to each other. */
	pkt_init(&p, 0, WIRE_QR, 0, 0, 0, 0);
	pkt_u16(&p, 0xc000 | 14);
	pkt_u16(&p, 0xc000 | 12);
	ck_assert_int_eq(wire_read_name(p.b, p.len, 12, out, false), -EBADMSG);
	ck_assert_int_eq(wire_read_name(p.b, p.len, 14, out, false), -EBADMSG);
	/* Forward pointer, valid target. */
	pkt_init(&p, 0, WIRE_QR, 0, 0, 0, 0);
	pkt_u16(&p, 0xc000 | 14);
	pkt_u8(&p, 0);
	ck_assert_int_eq(wire_read_name(p.b, p.len, 12, out, false), -EBADMSG);
	ck_assert_int_eq(wire_read_name(p.b, p.len, 14, out, false), 1);
	/* Pointer out of the message. */
	pkt_init(&p, 0, WIRE_QR, 0, 0, 0, 0);
	pkt_u16(&p, 0xffff);
	ck_assert_int_eq(wire_read_name(p.b, p.len, 12, out, false), -EBADMSG);
	/* Half a pointer. */
	ck_assert_int_eq(wire_read_name(p.b, 13, 12, out, false), -EBADMSG);
}
END_TEST

START_TEST(t_read_name_bad_labels)
{
	struct pkt p;
	uint8_t out[WIRE_NAME_MAX];

	pkt_init(&p, 0, WIRE_QR, 0, 0, 0, 0);
	pkt_u8(&p, 0x41);
	pkt_u8(&p, 'x');
	pkt_u8(&p, 0);
	ck_assert_int_eq(wire_read_name(p.b, p.len, 12, out, false), -EBADMSG);
	p.b[12] = 0x81;
	ck_assert_int_eq(wire_read_name(p.b, p.len, 12, out, false), -EBADMSG);
	/* A label running past the end. */
	p.b[12] = 5;
	ck_assert_int_eq(wire_read_name(p.b, p.len, 12, out, false), -EBADMSG);
	/* No root label before the end. */
	p.b[12] = 1;
	ck_assert_int_eq(
	    wire_read_name(p.b, p.len - 1, 12, out, false), -EBADMSG);
	ck_assert_int_eq(wire_read_name(p.b, p.len, 12, out, false), 3);
}
END_TEST

START_TEST(t_read_name_too_long)
{
	struct pkt p;
	uint8_t out[WIRE_NAME_MAX + 16], lbl[64], name[300];
	size_t a, b;

	/* 201 bytes at 12, then 53+1 and 54+1 byte labels pointing to it. */
	pkt_init(&p, 0, WIRE_QR, 0, 0, 0, 0);
	pkt_raw(&p, name, long_name(name, 201));
	memset(lbl, 'z', sizeof(lbl));
	a = p.len;
	pkt_u8(&p, 53);
	pkt_raw(&p, lbl, 53);
	pkt_u16(&p, 0xc00c);
	b = p.len;
	pkt_u8(&p, 54);
	pkt_raw(&p, lbl, 54);
	pkt_u16(&p, 0xc00c);
	memset(out, 0x5a, sizeof(out));
	ck_assert_int_eq(wire_read_name(p.b, p.len, a, out, false), 255);
	ck_assert_uint_eq(out[0], 53);
	ck_assert_uint_eq(out[254], 0);
	ck_assert_uint_eq(out[255], 0x5a);
	ck_assert_int_eq(wire_read_name(p.b, p.len, b, out, false), -EBADMSG);
}
END_TEST

/* ---- wire_iter ----------------------------------------------------------- */

START_TEST(t_iter_sections)
{
	static const uint8_t cname[6] = {3, 'w', 'w', 'w', 0xc0, 0x0c};
	static const uint8_t ns[5] = {2, 'n', 's', 0xc0, 0x0c};
	static const uint8_t addr[4] = {192, 0, 2, 1};
	struct pkt p;
	struct wire_iter it;
	struct wire_rr rr;
	uint8_t out[WIRE_NAME_MAX], want[64];
	size_t wl;

	pkt_init(&p, 1, WIRE_QR | WIRE_RD | WIRE_RA, 1, 2, 1, 1);
	pkt_question(&p, "example.com", WIRE_TYPE_A, WIRE_CLASS_IN);
	ck_assert_uint_eq(p.len, 29);
	pkt_u16(&p, 0xc00c); /* 29 */
	pkt_rr_fixed(&p, WIRE_TYPE_CNAME, WIRE_CLASS_IN, 300, 6);
	pkt_raw(&p, cname, 6);    /* 41..47 */
	pkt_u16(&p, 0xc000 | 41); /* 47 */
	pkt_rr_fixed(&p, WIRE_TYPE_A, WIRE_CLASS_IN, 60, 4);
	pkt_raw(&p, addr, 4); /* 59..63 */
	pkt_u16(&p, 0xc00c);  /* 63 */
	pkt_rr_fixed(&p, WIRE_TYPE_NS, WIRE_CLASS_IN, 0x7fffffff, 5);
	pkt_raw(&p, ns, 5);       /* 75..80 */
	pkt_u16(&p, 0xc000 | 75); /* 80 */
	pkt_rr_fixed(&p, WIRE_TYPE_A, WIRE_CLASS_IN, 7200, 4);
	pkt_raw(&p, addr, 4); /* 92..96 */
	ck_assert_uint_eq(p.len, 96);

	ck_assert_int_eq(wire_iter_init(&it, p.b, p.len), 0);
	ck_assert_uint_eq(it.off, 29);

	ck_assert_int_eq(wire_iter_next(&it, &rr), 1);
	ck_assert_int_eq(rr.section, 1);
	ck_assert_uint_eq(rr.off, 29);
	ck_assert_uint_eq(rr.type_off, 31);
	ck_assert_uint_eq(rr.type, WIRE_TYPE_CNAME);
	ck_assert_uint_eq(rr.rclass, WIRE_CLASS_IN);
	ck_assert_uint_eq(rr.ttl, 300);
	ck_assert_uint_eq(wire_u32(p.b + rr.type_off + 4), 300);
	ck_assert_uint_eq(rr.rdlen, 6);
	ck_assert_uint_eq(rr.rdata_off, 41);
	ck_assert_uint_eq(rr.end, 47);

	ck_assert_int_eq(wire_iter_next(&it, &rr), 1);
	ck_assert_int_eq(rr.section, 1);
	ck_assert_uint_eq(rr.off, 47);
	ck_assert_uint_eq(rr.type_off, 49);
	ck_assert_uint_eq(rr.type, WIRE_TYPE_A);
	ck_assert_uint_eq(rr.ttl, 60);
	ck_assert_uint_eq(rr.rdlen, 4);
	ck_assert_uint_eq(rr.rdata_off, 59);
	ck_assert_uint_eq(rr.end, 63);
	/* Its owner expands through two pointers. */
	wl = enc_name("www.example.com", want);
	ck_assert_int_eq(
	    wire_read_name(p.b, p.len, rr.off, out, false), (int)wl);
	ck_assert_mem_eq(out, want, wl);

	ck_assert_int_eq(wire_iter_next(&it, &rr), 1);
	ck_assert_int_eq(rr.section, 2);
	ck_assert_uint_eq(rr.off, 63);
	ck_assert_uint_eq(rr.type_off, 65);
	ck_assert_uint_eq(rr.type, WIRE_TYPE_NS);
	ck_assert_uint_eq(rr.ttl, 0x7fffffff);
	ck_assert_uint_eq(rr.rdlen, 5);
	ck_assert_uint_eq(rr.rdata_off, 75);
	ck_assert_uint_eq(rr.end, 80);

	ck_assert_int_eq(wire_iter_next(&it, &rr), 1);
	ck_assert_int_eq(rr.section, 3);
	ck_assert_uint_eq(rr.off, 80);
	ck_assert_uint_eq(rr.type_off, 82);
	ck_assert_uint_eq(rr.ttl, 7200);
	ck_assert_uint_eq(rr.rdata_off, 92);
	ck_assert_uint_eq(rr.end, 96);

	ck_assert_int_eq(wire_iter_next(&it, &rr), 0);
	ck_assert_int_eq(wire_iter_next(&it, &rr), 0);
}
END_TEST

START_TEST(t_iter_skips_empty_sections)
{
	struct pkt p;
	struct wire_iter it;
	struct wire_rr rr;

	/* Only an additional record. */
	pkt_init(&p, 1, WIRE_QR, 1, 0, 0, 1);
	pkt_question(&p, "example.com", WIRE_TYPE_A, WIRE_CLASS_IN);
	pkt_a(&p, 12, 1, 1);
	ck_assert_int_eq(wire_iter_init(&it, p.b, p.len), 0);
	ck_assert_int_eq(wire_iter_next(&it, &rr), 1);
	ck_assert_int_eq(rr.section, 3);
	ck_assert_int_eq(wire_iter_next(&it, &rr), 0);

	/* No records at all; QDCOUNT 0. */
	pkt_init(&p, 1, WIRE_QR, 0, 0, 0, 0);
	ck_assert_int_eq(wire_iter_init(&it, p.b, p.len), 0);
	ck_assert_uint_eq(it.off, 12);
	ck_assert_int_eq(wire_iter_next(&it, &rr), 0);
}
END_TEST

START_TEST(t_iter_overrun)
{
	struct pkt p;
	struct wire_iter it;
	struct wire_rr rr;

	/* ANCOUNT 3, two records present. */
	make_response(&p, 0, "example.com", WIRE_TYPE_A, 2);
	pkt_count(&p, 1, 3);
	ck_assert_int_eq(wire_iter_init(&it, p.b, p.len), 0);
	ck_assert_int_eq(wire_iter_next(&it, &rr), 1);
	ck_assert_int_eq(wire_iter_next(&it, &rr), 1);
	ck_assert_int_eq(wire_iter_next(&it, &rr), -EBADMSG);

	/* ARCOUNT 65535 on a small message. */
	make_response(&p, 0, "example.com", WIRE_TYPE_A, 1);
	pkt_count(&p, 3, 0xffff);
	ck_assert_int_eq(wire_iter_init(&it, p.b, p.len), 0);
	ck_assert_int_eq(wire_iter_next(&it, &rr), 1);
	ck_assert_int_eq(wire_iter_next(&it, &rr), -EBADMSG);

	/* RDLENGTH past the end: every cut of the last record fails. */
	make_response(&p, 0, "example.com", WIRE_TYPE_A, 2);
	for (size_t n = 45; n < p.len; n++) {
		ck_assert_int_eq(wire_iter_init(&it, p.b, n), 0);
		ck_assert_int_eq(wire_iter_next(&it, &rr), 1);
		ck_assert_int_eq(wire_iter_next(&it, &rr), -EBADMSG);
	}

	/* Question cut short. */
	ck_assert_int_eq(wire_iter_init(&it, p.b, 27), -EBADMSG);
	ck_assert_int_eq(wire_iter_init(&it, p.b, 11), -EBADMSG);
}
END_TEST

/* ---- wire_build_query ---------------------------------------------------- */

START_TEST(t_build_query_roundtrip_plain)
{
	uint8_t out[512], name[64];
	size_t nl = enc_name("WWW.example.NET", name);
	struct wire_query q;
	int n;

	n = wire_build_query(out, sizeof(out), 0xabcd,
	    WIRE_QR | WIRE_AA | WIRE_RD | WIRE_CD | WIRE_AD, name, nl,
	    WIRE_TYPE_AAAA, WIRE_CLASS_IN, 0, true);
	ck_assert_int_eq(n, (int)(12 + nl + 4));
	/* RD, CD and AD (asking for AD back, RFC 6840 5.7) only. */
	ck_assert_uint_eq(WIRE_FLAGS(out), WIRE_RD | WIRE_CD | WIRE_AD);
	ck_assert_uint_eq(WIRE_QDCOUNT(out), 1);
	ck_assert_uint_eq(WIRE_ANCOUNT(out), 0);
	ck_assert_uint_eq(WIRE_NSCOUNT(out), 0);
	ck_assert_uint_eq(WIRE_ARCOUNT(out), 0);
	ck_assert_int_eq(wire_parse_query(out, (size_t)n, &q), WIRE_ACCEPT);
	ck_assert_uint_eq(q.id, 0xabcd);
	ck_assert_uint_eq(q.flags, WIRE_RD | WIRE_CD | WIRE_AD);
	ck_assert_uint_eq(q.q.name_len, nl);
	ck_assert_mem_eq(out + q.q.name_off, name, nl);
	ck_assert_uint_eq(q.q.qtype, WIRE_TYPE_AAAA);
	ck_assert_uint_eq(q.q.qclass, WIRE_CLASS_IN);
	ck_assert(!q.has_opt);
	ck_assert(!q.do_bit);
}
END_TEST

START_TEST(t_build_query_roundtrip_edns)
{
	static const uint8_t opt_do[11] = {
	    0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0};
	uint8_t out[512], name[64];
	size_t nl = enc_name("example.com", name);
	struct wire_query q;
	int n;

	n = wire_build_query(out, sizeof(out), 7, 0, name, nl, WIRE_TYPE_A,
	    WIRE_CLASS_IN, 1232, true);
	ck_assert_int_eq(n, (int)(12 + nl + 4 + 11));
	ck_assert_uint_eq(WIRE_ARCOUNT(out), 1);
	ck_assert_mem_eq(out + 12 + nl + 4, opt_do, 11);
	ck_assert_int_eq(wire_parse_query(out, (size_t)n, &q), WIRE_ACCEPT);
	ck_assert_uint_eq(q.flags, 0);
	ck_assert(q.has_opt);
	ck_assert_uint_eq(q.udp_size, 1232);
	ck_assert_uint_eq(q.edns_version, 0);
	ck_assert(q.do_bit);

	n = wire_build_query(out, sizeof(out), 7, WIRE_RD, name, nl,
	    WIRE_TYPE_A, WIRE_CLASS_IN, 4096, false);
	ck_assert_int_eq(n, (int)(12 + nl + 4 + 11));
	ck_assert_int_eq(wire_parse_query(out, (size_t)n, &q), WIRE_ACCEPT);
	ck_assert(q.has_opt);
	ck_assert_uint_eq(q.udp_size, 4096);
	ck_assert(!q.do_bit);
	ck_assert_uint_eq(q.flags, WIRE_RD);
}
END_TEST

START_TEST(t_build_query_nospace)
{
	uint8_t out[64], name[64];
	size_t nl = enc_name("example.com", name);

	ck_assert_int_eq(
	    wire_build_query(out, 11, 1, 0, name, nl, 1, 1, 0, false), -ENOSPC);
	ck_assert_int_eq(
	    wire_build_query(out, 12 + nl + 3, 1, 0, name, nl, 1, 1, 0, false),
	    -ENOSPC);
	ck_assert_int_eq(
	    wire_build_query(out, 12 + nl + 4, 1, 0, name, nl, 1, 1, 0, false),
	    (int)(12 + nl + 4));
	ck_assert_int_eq(wire_build_query(out, 12 + nl + 4 + 10, 1, 0, name, nl,
			     1, 1, 1232, false),
	    -ENOSPC);
	ck_assert_int_eq(wire_build_query(out, 12 + nl + 4 + 11, 1, 0, name, nl,
			     1, 1, 1232, false),
	    (int)(12 + nl + 4 + 11));
}
END_TEST

/* ---- wire_append_opt ----------------------------------------------------- */

START_TEST(t_append_opt_ede_bytes)
{
	static const char text[] = "no upstream";
	static const uint8_t want[] = {
	    0x00, /* root owner */
	    0x00,
	    0x29, /* OPT */
	    0x04,
	    0xd0, /* 1232 */
	    0x01,
	    0x00, /* ext rcode 1, version 0 */
	    0x80,
	    0x00, /* DO */
	    0x00,
	    0x11, /* RDLENGTH 4 + 2 + 11 = 17 */
	    0x00,
	    0x0f, /* EDE */
	    0x00,
	    0x0d, /* 2 + 11 */
	    0x00,
	    0x16, /* 22 */
	    'n',
	    'o',
	    ' ',
	    'u',
	    'p',
	    's',
	    't',
	    'r',
	    'e',
	    'a',
	    'm',
	};
	struct pkt p;
	int n;

	make_response(&p, WIRE_RCODE_SERVFAIL, "example.com", WIRE_TYPE_A, 0);
	pkt_count(&p, 3, 2); /* pretend two records were already there */
	memset(p.b + p.len, 0xee, 64);
	n = wire_append_opt(p.b, p.len, sizeof(p.b), 1232, 1, true,
	    WIRE_EDE_NO_REACHABLE_AUTHORITY, text);
	ck_assert_int_eq(n, (int)(p.len + sizeof(want)));
	ck_assert_mem_eq(p.b + p.len, want, sizeof(want));
	ck_assert_uint_eq(p.b[n], 0xee);
	ck_assert_uint_eq(WIRE_ARCOUNT(p.b), 3);
	/* Nothing else in the header moved. */
	ck_assert_uint_eq(WIRE_ID(p.b), 0x1111);
	ck_assert_uint_eq(WIRE_QDCOUNT(p.b), 1);
	ck_assert_uint_eq(WIRE_ANCOUNT(p.b), 0);
}
END_TEST

START_TEST(t_append_opt_variants)
{
	static const uint8_t plain[] = {
	    0, 0, 0x29, 0x02, 0x00, 0, 0, 0, 0, 0, 0};
	static const uint8_t ede_notext[] = {
	    0, 0, 0x29, 0x10, 0x00, 0, 0, 0, 0, 0, 6, 0, 15, 0, 2, 0, 3};
	static const uint8_t ede_empty[] = {
	    0, 0, 0x29, 0x10, 0x00, 0, 0, 0, 0, 0, 6, 0, 15, 0, 2, 0, 0};
	struct pkt p;
	struct wire_query q;
	int n;

	/* No EDE: an 11-byte OPT, ARCOUNT 0 -> 1; a parseable query results. */
	make_query(&p, 3, 0, "example.com", WIRE_TYPE_A, false, 0, false);
	n = wire_append_opt(
	    p.b, p.len, sizeof(p.b), 512, 0, false, -1, "ignored");
	ck_assert_int_eq(n, 29 + 11);
	ck_assert_mem_eq(p.b + 29, plain, sizeof(plain));
	ck_assert_uint_eq(WIRE_ARCOUNT(p.b), 1);
	ck_assert_int_eq(wire_parse_query(p.b, (size_t)n, &q), WIRE_ACCEPT);
	ck_assert(q.has_opt);
	ck_assert_uint_eq(q.udp_size, 512);

	/* EDE 3 with NULL text, and EDE 0 with "" text. */
	make_query(&p, 3, 0, "example.com", WIRE_TYPE_A, false, 0, false);
	n = wire_append_opt(
	    p.b, p.len, sizeof(p.b), 4096, 0, false, WIRE_EDE_STALE, NULL);
	ck_assert_int_eq(n, 29 + (int)sizeof(ede_notext));
	ck_assert_mem_eq(p.b + 29, ede_notext, sizeof(ede_notext));
	make_query(&p, 3, 0, "example.com", WIRE_TYPE_A, false, 0, false);
	n = wire_append_opt(
	    p.b, p.len, sizeof(p.b), 4096, 0, false, WIRE_EDE_OTHER, "");
	ck_assert_int_eq(n, 29 + (int)sizeof(ede_empty));
	ck_assert_mem_eq(p.b + 29, ede_empty, sizeof(ede_empty));
}
END_TEST

START_TEST(t_append_opt_nospace)
{
	struct pkt p;
	uint8_t before[64];

	make_query(&p, 3, 0, "example.com", WIRE_TYPE_A, false, 0, false);
	memcpy(before, p.b, 29);
	ck_assert_int_eq(
	    wire_append_opt(p.b, 29, 39, 1232, 0, false, -1, NULL), -ENOSPC);
	ck_assert_uint_eq(WIRE_ARCOUNT(p.b), 0);
	ck_assert_int_eq(wire_append_opt(p.b, 29, 29 + 11 + 6 + 4, 1232, 0,
			     false, 18, "abcde"),
	    -ENOSPC);
	ck_assert_mem_eq(p.b, before, 29);
	ck_assert_int_eq(wire_append_opt(p.b, 29, 29 + 11 + 6 + 5, 1232, 0,
			     false, 18, "abcde"),
	    29 + 11 + 6 + 5);
	ck_assert_uint_eq(WIRE_ARCOUNT(p.b), 1);
	/* Less than a header is not a message. */
	ck_assert_int_eq(
	    wire_append_opt(p.b, 5, sizeof(p.b), 1232, 0, false, -1, NULL),
	    -ENOSPC);
}
END_TEST

/* ---- wire_strip_opt ------------------------------------------------------ */

START_TEST(t_strip_opt_last)
{
	struct pkt p;
	uint8_t ext = 0xaa;
	size_t before;

	make_response(&p, 0, "example.com", WIRE_TYPE_A, 2);
	before = p.len;
	pkt_count(&p, 3, 1);
	pkt_opt(&p, 1232, 0x01, 0, WIRE_EDNS_DO);
	ck_assert_int_eq(wire_strip_opt(p.b, p.len, &ext), (int)before);
	ck_assert_uint_eq(ext, 1);
	ck_assert_uint_eq(WIRE_ARCOUNT(p.b), 0);
	ck_assert_uint_eq(WIRE_ANCOUNT(p.b), 2);

	/* Ext rcode 0 too, with options in the OPT. */
	make_response(&p, 0, "example.com", WIRE_TYPE_A, 1);
	before = p.len;
	pkt_count(&p, 3, 1);
	{
		size_t rd = pkt_opt(&p, 1232, 0, 0, 0);
		uint8_t c[8] = {0};

		pkt_option(&p, WIRE_OPT_COOKIE, c, 8);
		pkt_opt_done(&p, rd);
	}
	ext = 0xaa;
	ck_assert_int_eq(wire_strip_opt(p.b, p.len, &ext), (int)before);
	ck_assert_uint_eq(ext, 0);
	ck_assert_uint_eq(WIRE_ARCOUNT(p.b), 0);
}
END_TEST

START_TEST(t_strip_opt_followed_by_rr)
{
	struct pkt p;
	uint8_t ext = 0xaa;
	size_t keep_end;

	/* AR: A, OPT, A.  The first A stays, OPT and the second A go. */
	make_response(&p, 0, "example.com", WIRE_TYPE_A, 1);
	pkt_count(&p, 3, 3);
	pkt_a(&p, 12, 60, 7);
	keep_end = p.len;
	pkt_opt(&p, 1232, 0x02, 0, 0);
	pkt_a(&p, 12, 60, 8);
	ck_assert_int_eq(wire_strip_opt(p.b, p.len, &ext), (int)keep_end);
	ck_assert_uint_eq(ext, 2);
	ck_assert_uint_eq(WIRE_ARCOUNT(p.b), 1);
	ck_assert_uint_eq(WIRE_ANCOUNT(p.b), 1);
	/* OPT first, then an A: ARCOUNT 0. */
	make_response(&p, 0, "example.com", WIRE_TYPE_A, 1);
	keep_end = p.len;
	pkt_count(&p, 3, 2);
	pkt_opt(&p, 1232, 0, 0, 0);
	pkt_a(&p, 12, 60, 8);
	ck_assert_int_eq(wire_strip_opt(p.b, p.len, &ext), (int)keep_end);
	ck_assert_uint_eq(ext, 0);
	ck_assert_uint_eq(WIRE_ARCOUNT(p.b), 0);
}
END_TEST

START_TEST(t_strip_opt_none)
{
	struct pkt p, orig;
	uint8_t ext = 0xaa;

	make_response(&p, 0, "example.com", WIRE_TYPE_A, 2);
	pkt_count(&p, 3, 1);
	pkt_a(&p, 12, 60, 9);
	orig = p;
	ck_assert_int_eq(wire_strip_opt(p.b, p.len, &ext), (int)p.len);
	ck_assert_uint_eq(ext, 0);
	ck_assert_mem_eq(p.b, orig.b, p.len);

	/* An OPT outside the additional section is not the message's OPT. */
	make_response(&p, 0, "example.com", WIRE_TYPE_A, 0);
	pkt_count(&p, 2, 1);
	pkt_opt(&p, 1232, 0x05, 0, 0);
	orig = p;
	ck_assert_int_eq(wire_strip_opt(p.b, p.len, &ext), (int)p.len);
	ck_assert_uint_eq(ext, 0);
	ck_assert_mem_eq(p.b, orig.b, p.len);
}
END_TEST

/* Strip and clamp in one walk: what stays is clamped, what goes is cut. */
START_TEST(t_strip_opt_clamp)
{
	struct pkt p;
	uint8_t ext = 0xaa;
	size_t ttl_off[4], keep_end;

	make_response(&p, 0, "example.com", WIRE_TYPE_A, 0);
	pkt_count(&p, 1, 3);
	pkt_count(&p, 3, 3);
	ttl_off[0] = p.len + 6;
	pkt_a(&p, WIRE_HDR_LEN, 5, 1);
	ttl_off[1] = p.len + 6;
	pkt_a(&p, WIRE_HDR_LEN, 100000, 2);
	ttl_off[2] = p.len + 6;
	pkt_a(&p, WIRE_HDR_LEN, 0x80000001u, 3);
	ttl_off[3] = p.len + 6;
	pkt_a(&p, WIRE_HDR_LEN, 7, 4);
	keep_end = p.len;
	pkt_opt(&p, 1232, 0x03, 0, 0);
	pkt_a(&p, WIRE_HDR_LEN, 9, 5);
	ck_assert_int_eq(
	    wire_strip_opt_clamp(p.b, p.len, &ext, 30, 3600), (int)keep_end);
	ck_assert_uint_eq(ext, 3);
	ck_assert_uint_eq(WIRE_ARCOUNT(p.b), 1);
	ck_assert_uint_eq(wire_u32(p.b + ttl_off[0]), 30);
	ck_assert_uint_eq(wire_u32(p.b + ttl_off[1]), 3600);
	ck_assert_uint_eq(wire_u32(p.b + ttl_off[2]), 3600);
	ck_assert_uint_eq(wire_u32(p.b + ttl_off[3]), 30);
	/* Malformed: the counts overrun the message. */
	make_response(&p, 0, "example.com", WIRE_TYPE_A, 1);
	pkt_count(&p, 3, 2);
	ck_assert_int_eq(
	    wire_strip_opt_clamp(p.b, p.len, &ext, 30, 3600), -EBADMSG);
}
END_TEST

START_TEST(t_strip_opt_trailing_junk)
{
	struct pkt p;
	uint8_t ext = 0xaa;
	size_t end;

	make_response(&p, 0, "example.com", WIRE_TYPE_A, 1);
	end = p.len;
	pkt_u32(&p, 0x01020304);
	ck_assert_int_eq(wire_strip_opt(p.b, p.len, &ext), (int)end);
	ck_assert_uint_eq(ext, 0);
	ck_assert_uint_eq(WIRE_ANCOUNT(p.b), 1);

	/* Malformed: the record count overruns the message. */
	make_response(&p, 0, "example.com", WIRE_TYPE_A, 1);
	pkt_count(&p, 3, 2);
	ck_assert_int_eq(wire_strip_opt(p.b, p.len, &ext), -EBADMSG);
	ck_assert_int_eq(wire_strip_opt(p.b, 11, &ext), -EBADMSG);
}
END_TEST

START_TEST(t_set_ttls)
{
	struct pkt p, orig;
	struct wire_iter it;
	struct wire_rr rr;
	unsigned seen = 0;

	/* AN: 2 A, NS: 1 A, AR: OPT then A. */
	make_response(&p, 0, "example.com", WIRE_TYPE_A, 2);
	pkt_count(&p, 2, 1);
	pkt_count(&p, 3, 2);
	pkt_a(&p, 12, 7, 3);
	pkt_opt(&p, 1232, 0x01, 0, WIRE_EDNS_DO);
	pkt_a(&p, 12, 0xffffffff, 4);
	orig = p;
	ck_assert_int_eq(wire_set_ttls(p.b, p.len, 42), 0);
	ck_assert_int_eq(wire_iter_init(&it, p.b, p.len), 0);
	while (wire_iter_next(&it, &rr) == 1) {
		if (rr.type == WIRE_TYPE_OPT) {
			/* The OPT's TTL is ext rcode, version and flags. */
			ck_assert_uint_eq(rr.ttl, 0x01008000);
			continue;
		}
		ck_assert_uint_eq(rr.ttl, 42);
		/* Only the TTL bytes changed. */
		memcpy(orig.b + rr.type_off + 4, p.b + rr.type_off + 4, 4);
		seen++;
	}
	ck_assert_uint_eq(seen, 4);
	ck_assert_mem_eq(p.b, orig.b, p.len);

	/* Malformed: ANCOUNT past the end. */
	make_response(&p, 0, "example.com", WIRE_TYPE_A, 1);
	pkt_count(&p, 1, 2);
	ck_assert_int_eq(wire_set_ttls(p.b, p.len, 42), -EBADMSG);
	ck_assert_int_eq(wire_set_ttls(p.b, 11, 42), -EBADMSG);
}
END_TEST

/*
 * Found by fuzz_wire: the second owner points to offset 24, and the name
 * there runs through the first record's TTL.  Rewriting that TTL changes
 * the name; wire_set_ttls() must then not report success for a message
 * whose names no longer parse.
 */
START_TEST(t_set_ttls_name_through_ttl)
{
	struct pkt p;
	struct wire_iter it;
	struct wire_rr rr;
	uint8_t out[WIRE_NAME_MAX];
	int r;

	pkt_init(&p, 1, WIRE_QR, 1, 2, 0, 0);
	pkt_question(&p, "a", WIRE_TYPE_A, WIRE_CLASS_IN); /* 12..19 */
	pkt_a(&p, 12, 3600, 1);                            /* TTL 25..28 */
	pkt_u16(&p, 0xc000 | 24);                          /* 35 */
	pkt_rr_fixed(&p, WIRE_TYPE_A, WIRE_CLASS_IN, 60, 4);
	pkt_u32(&p, 0xc0000202);
	/* Before: 24 is "\001" label 0x00, then the root at 26. */
	ck_assert_int_eq(wire_read_name(p.b, p.len, 35, out, false), 3);
	r = wire_set_ttls(p.b, p.len, 0x00400000);
	if (r < 0) {
		ck_assert_int_eq(r, -EBADMSG);
		return;
	}
	ck_assert_int_eq(wire_iter_init(&it, p.b, p.len), 0);
	while ((r = wire_iter_next(&it, &rr)) == 1)
		ck_assert_int_ge(
		    wire_read_name(p.b, p.len, rr.off, out, false), 1);
	ck_assert_int_eq(r, 0);
}
END_TEST

/* ---- wire_make_reply ----------------------------------------------------- */

START_TEST(t_make_reply_basic_edns)
{
	static const uint8_t opt[11] = {
	    0, 0, 0x29, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0};
	struct pkt cq, r, orig;
	struct wire_query q;
	int n;

	make_query(&cq, 0xbeef, WIRE_RD | WIRE_CD, "WwW.ExAmPlE.cOm",
	    WIRE_TYPE_A, true, 4096, true);
	ck_assert_int_eq(parse(&cq, &q), WIRE_ACCEPT);
	make_response(
	    &r, WIRE_RCODE_NOERROR, "www.example.com", WIRE_TYPE_A, 2);
	orig = r;
	n = wire_make_reply(r.b, r.len, sizeof(r.b), 1232, cq.b, &q, false,
	    EDNS(1232, -1, NULL));
	ck_assert_int_eq(n, (int)(orig.len + 11));
	ck_assert_uint_eq(WIRE_ID(r.b), 0xbeef);
	ck_assert_uint_eq(
	    WIRE_FLAGS(r.b), WIRE_QR | WIRE_RA | WIRE_RD | WIRE_CD);
	ck_assert_uint_eq(WIRE_QDCOUNT(r.b), 1);
	ck_assert_uint_eq(WIRE_ANCOUNT(r.b), 2);
	ck_assert_uint_eq(WIRE_NSCOUNT(r.b), 0);
	ck_assert_uint_eq(WIRE_ARCOUNT(r.b), 1);
	/* The client's letter case, byte for byte. */
	ck_assert_mem_eq(r.b + 12, cq.b + 12, q.q.end - 12);
	/* Records untouched. */
	ck_assert_mem_eq(r.b + q.q.end, orig.b + q.q.end, orig.len - q.q.end);
	ck_assert_mem_eq(r.b + orig.len, opt, 11);
}
END_TEST

START_TEST(t_make_reply_flags_from_client)
{
	struct pkt cq, r;
	struct wire_query q;
	int n;

	/* Client sent RD=0, CD=0; the stored response had RD, AA, AD, Z. */
	make_query(&cq, 0x0102, 0, "example.com", WIRE_TYPE_A, false, 0, false);
	ck_assert_int_eq(parse(&cq, &q), WIRE_ACCEPT);
	make_response(&r, WIRE_RCODE_NXDOMAIN, "example.com", WIRE_TYPE_A, 0);
	wire_put16(r.b + 2, (uint16_t)(WIRE_FLAGS(r.b) | WIRE_CD | WIRE_TC));
	n = wire_make_reply(r.b, r.len, sizeof(r.b), 512, cq.b, &q, false,
	    EDNS(1232, WIRE_EDE_STALE, "ignored: no OPT"));
	/* No OPT in the query: none in the reply, EDE or not. */
	ck_assert_int_eq(n, (int)r.len);
	ck_assert_uint_eq(WIRE_ID(r.b), 0x0102);
	ck_assert_uint_eq(
	    WIRE_FLAGS(r.b), WIRE_QR | WIRE_RA | WIRE_RCODE_NXDOMAIN);
	ck_assert_uint_eq(WIRE_ARCOUNT(r.b), 0);
}
END_TEST

START_TEST(t_make_reply_ede)
{
	static const uint8_t tail[] = {0, 0, 0x29, 0x04, 0xd0, 0, 0, 0, 0, 0,
	    10, 0, 15, 0, 6, 0, 3, 's', 't', 'a', 'l'};
	struct pkt cq, r;
	struct wire_query q;
	size_t len;
	int n;

	make_query(
	    &cq, 9, WIRE_RD, "example.com", WIRE_TYPE_A, true, 1232, false);
	ck_assert_int_eq(parse(&cq, &q), WIRE_ACCEPT);
	make_response(&r, 0, "example.com", WIRE_TYPE_A, 1);
	len = r.len;
	n = wire_make_reply(r.b, r.len, sizeof(r.b), 1232, cq.b, &q, false,
	    EDNS(1232, WIRE_EDE_STALE, "stal"));
	ck_assert_int_eq(n, (int)(len + sizeof(tail)));
	ck_assert_mem_eq(r.b + len, tail, sizeof(tail));
	ck_assert_uint_eq(WIRE_ARCOUNT(r.b), 1);
	ck_assert_uint_eq(WIRE_FLAGS(r.b) & WIRE_TC, 0);

	/* No room for the EDE: the OPT goes without it. */
	make_response(&r, 0, "example.com", WIRE_TYPE_A, 1);
	n = wire_make_reply(r.b, r.len, len + 11, 1232, cq.b, &q, false,
	    EDNS(1232, WIRE_EDE_STALE, "stal"));
	ck_assert_int_eq(n, (int)(len + 11));
	ck_assert_mem_eq(r.b + len, tail, 9);
	ck_assert_uint_eq(wire_u16(r.b + len + 9), 0);
	ck_assert_uint_eq(WIRE_ANCOUNT(r.b), 1);
	ck_assert_uint_eq(WIRE_FLAGS(r.b) & WIRE_TC, 0);
}
END_TEST

START_TEST(t_make_reply_truncates_no_edns)
{
	struct pkt cq, r;
	struct wire_query q;
	size_t limit;
	int n;

	make_query(
	    &cq, 0x5555, WIRE_RD, "Example.com", WIRE_TYPE_A, false, 0, false);
	ck_assert_int_eq(parse(&cq, &q), WIRE_ACCEPT);
	limit = wire_udp_limit(&q, 1232);
	ck_assert_uint_eq(limit, 512);
	/* 29 + 31 * 16 = 525 > 512. */
	make_response(&r, 0, "example.com", WIRE_TYPE_A, 31);
	pkt_count(&r, 2, 0);
	ck_assert_uint_eq(r.len, 525);
	n = wire_make_reply(r.b, r.len, sizeof(r.b), limit, cq.b, &q, false,
	    EDNS(1232, -1, NULL));
	ck_assert_int_eq(n, 29);
	ck_assert_uint_eq(WIRE_ID(r.b), 0x5555);
	ck_assert_uint_eq(
	    WIRE_FLAGS(r.b), WIRE_QR | WIRE_RA | WIRE_RD | WIRE_TC);
	ck_assert_uint_eq(WIRE_QDCOUNT(r.b), 1);
	ck_assert_uint_eq(WIRE_ANCOUNT(r.b), 0);
	ck_assert_uint_eq(WIRE_NSCOUNT(r.b), 0);
	ck_assert_uint_eq(WIRE_ARCOUNT(r.b), 0);
	ck_assert_mem_eq(r.b + 12, cq.b + 12, 17);

	/* 29 + 30 * 16 = 509 fits. */
	make_response(&r, 0, "example.com", WIRE_TYPE_A, 30);
	n = wire_make_reply(r.b, r.len, sizeof(r.b), limit, cq.b, &q, false,
	    EDNS(1232, -1, NULL));
	ck_assert_int_eq(n, 509);
	ck_assert_uint_eq(WIRE_FLAGS(r.b) & WIRE_TC, 0);
	ck_assert_uint_eq(WIRE_ANCOUNT(r.b), 30);
}
END_TEST

START_TEST(t_make_reply_truncates_edns)
{
	static const uint8_t opt[11] = {
	    0, 0, 0x29, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0};
	struct pkt cq, r;
	struct wire_query q;
	size_t limit, len;
	int n;

	make_query(
	    &cq, 0x6666, WIRE_CD, "example.com", WIRE_TYPE_A, true, 4096, true);
	ck_assert_int_eq(parse(&cq, &q), WIRE_ACCEPT);
	limit = wire_udp_limit(&q, 1232);
	ck_assert_uint_eq(limit, 1232);

	/* Exactly at the limit with the OPT: no truncation. */
	make_response(&r, 0, "example.com", WIRE_TYPE_A, 74);
	r.len += 8; /* 29 + 74 * 16 + 8 + 11 = 1232: pad the last rdata */
	wire_put16(r.b + r.len - 8 - 4 - 2, 12);
	len = r.len;
	ck_assert_uint_eq(len + 11, 1232);
	n = wire_make_reply(r.b, r.len, sizeof(r.b), limit, cq.b, &q, false,
	    EDNS(1232, -1, NULL));
	ck_assert_int_eq(n, 1232);
	ck_assert_uint_eq(WIRE_FLAGS(r.b) & WIRE_TC, 0);

	/* One byte over: header + question + OPT, TC=1, EDE dropped. */
	make_response(&r, 0, "example.com", WIRE_TYPE_A, 74);
	r.len += 9;
	wire_put16(r.b + r.len - 9 - 4 - 2, 13);
	n = wire_make_reply(r.b, r.len, sizeof(r.b), limit, cq.b, &q, false,
	    EDNS(1232, WIRE_EDE_STALE, "stale"));
	ck_assert_int_eq(n, 29 + 11);
	ck_assert_uint_eq(WIRE_ID(r.b), 0x6666);
	ck_assert_uint_eq(
	    WIRE_FLAGS(r.b), WIRE_QR | WIRE_RA | WIRE_CD | WIRE_TC);
	ck_assert_uint_eq(WIRE_QDCOUNT(r.b), 1);
	ck_assert_uint_eq(WIRE_ANCOUNT(r.b), 0);
	ck_assert_uint_eq(WIRE_NSCOUNT(r.b), 0);
	ck_assert_uint_eq(WIRE_ARCOUNT(r.b), 1);
	ck_assert_mem_eq(r.b + 29, opt, 11);
}
END_TEST

/* Fits without the EDE but not with it: EDE dropped, no TC (RFC 8914 3). */
START_TEST(t_make_reply_drops_ede_before_tc)
{
	struct pkt cq, r;
	struct wire_query q;
	size_t len;
	int n;

	make_query(
	    &cq, 0x7777, WIRE_RD, "example.com", WIRE_TYPE_A, true, 512, false);
	ck_assert_int_eq(parse(&cq, &q), WIRE_ACCEPT);
	/* 29 + 29 * 16 = 493; + OPT 11 = 504 <= 512; + EDE(5 text) 11 more. */
	make_response(&r, 0, "example.com", WIRE_TYPE_A, 29);
	len = r.len;
	ck_assert_uint_eq(len, 493);
	n = wire_make_reply(r.b, r.len, sizeof(r.b), 512, cq.b, &q, false,
	    EDNS(1232, WIRE_EDE_STALE, "stale"));
	ck_assert_int_eq(n, (int)(len + 11));
	ck_assert_uint_eq(WIRE_FLAGS(r.b) & WIRE_TC, 0);
	ck_assert_uint_eq(WIRE_ANCOUNT(r.b), 29);
	ck_assert_uint_eq(WIRE_ARCOUNT(r.b), 1);
	ck_assert_uint_eq(wire_u16(r.b + len + 9), 0);
}
END_TEST

START_TEST(t_make_reply_errors)
{
	struct pkt cq, r;
	struct wire_query q;

	make_query(&cq, 1, 0, "example.com", WIRE_TYPE_A, true, 1232, false);
	ck_assert_int_eq(parse(&cq, &q), WIRE_ACCEPT);
	make_response(&r, 0, "example.com", WIRE_TYPE_A, 0);
	/* Shorter than the question. */
	ck_assert_int_eq(wire_make_reply(r.b, 28, sizeof(r.b), 512, cq.b, &q,
			     false, EDNS(1232, -1, NULL)),
	    -EBADMSG);
	/* No room even for the OPT of a TC reply. */
	ck_assert_int_eq(wire_make_reply(r.b, r.len, r.len + 10, 512, cq.b, &q,
			     false, EDNS(1232, -1, NULL)),
	    -ENOSPC);
}
END_TEST

/* ---- wire_build_error ---------------------------------------------------- */

START_TEST(t_build_error_formerr_question)
{
	struct pkt cq;
	struct wire_query q;
	uint8_t out[512];
	int n;

	/* Trailing garbage: FORMERR, but the question parsed and is echoed. */
	make_query(&cq, 0x2222, WIRE_RD | WIRE_CD | WIRE_AD, "Example.com",
	    15 /* MX */, false, 0, false);
	pkt_u8(&cq, 0xff);
	ck_assert_int_eq(parse(&cq, &q), WIRE_FORMERR);
	memset(out, 0xee, sizeof(out));
	n = wire_build_error(out, sizeof(out), cq.b, cq.len, &q,
	    WIRE_RCODE_FORMERR, EDNS(1232, -1, NULL));
	ck_assert_int_eq(n, 29);
	ck_assert_uint_eq(WIRE_ID(out), 0x2222);
	ck_assert_uint_eq(WIRE_FLAGS(out),
	    WIRE_QR | WIRE_RA | WIRE_RD | WIRE_CD | WIRE_RCODE_FORMERR);
	ck_assert_uint_eq(WIRE_QDCOUNT(out), 1);
	ck_assert_uint_eq(WIRE_ANCOUNT(out), 0);
	ck_assert_uint_eq(WIRE_NSCOUNT(out), 0);
	ck_assert_uint_eq(WIRE_ARCOUNT(out), 0);
	ck_assert_mem_eq(out + 12, cq.b + 12, 17);
	ck_assert_uint_eq(out[29], 0xee);
}
END_TEST

START_TEST(t_build_error_formerr_no_question)
{
	struct pkt cq;
	struct wire_query q;
	uint8_t out[512];
	int n;

	pkt_init(&cq, 0x3333, WIRE_RD, 0, 0, 0, 0);
	ck_assert_int_eq(parse(&cq, &q), WIRE_FORMERR);
	n = wire_build_error(out, sizeof(out), cq.b, cq.len, &q,
	    WIRE_RCODE_FORMERR, EDNS(1232, -1, NULL));
	ck_assert_int_eq(n, 12);
	ck_assert_uint_eq(WIRE_ID(out), 0x3333);
	ck_assert_uint_eq(
	    WIRE_FLAGS(out), WIRE_QR | WIRE_RA | WIRE_RD | WIRE_RCODE_FORMERR);
	ck_assert_uint_eq(WIRE_QDCOUNT(out), 0);
	ck_assert_uint_eq(WIRE_ARCOUNT(out), 0);

	/* A qname with a pointer: no question to echo. */
	pkt_init(&cq, 0x3334, 0, 1, 0, 0, 0);
	pkt_u16(&cq, 0xc00c);
	pkt_u16(&cq, 1);
	pkt_u16(&cq, 1);
	ck_assert_int_eq(parse(&cq, &q), WIRE_FORMERR);
	n = wire_build_error(out, sizeof(out), cq.b, cq.len, &q,
	    WIRE_RCODE_FORMERR, EDNS(1232, -1, NULL));
	ck_assert_int_eq(n, 12);
	ck_assert_uint_eq(WIRE_QDCOUNT(out), 0);
	ck_assert_uint_eq(WIRE_ID(out), 0x3334);

	/* NOTIMP for opcode 5: the opcode and the question are echoed. */
	make_query(&cq, 0x3335, (uint16_t)(5 << 11 | WIRE_RD), "example.com",
	    WIRE_TYPE_SOA, false, 0, false);
	ck_assert_int_eq(parse(&cq, &q), WIRE_NOTIMP);
	n = wire_build_error(out, sizeof(out), cq.b, cq.len, &q,
	    WIRE_RCODE_NOTIMP, EDNS(1232, -1, NULL));
	ck_assert_int_eq(n, 12 + 13 + 4);
	ck_assert_uint_eq(WIRE_QDCOUNT(out), 1);
	ck_assert_uint_eq(WIRE_ARCOUNT(out), 0);
	ck_assert_uint_eq(WIRE_FLAGS(out),
	    (5 << 11) | WIRE_QR | WIRE_RA | WIRE_RD | WIRE_RCODE_NOTIMP);

	/* NOTIMP to a query with EDNS carries an OPT (RFC 6891 7). */
	make_query(&cq, 0x3336, (uint16_t)(2 << 11), "example.com",
	    WIRE_TYPE_SOA, true, 1232, true);
	ck_assert_int_eq(parse(&cq, &q), WIRE_NOTIMP);
	ck_assert(q.has_opt);
	n = wire_build_error(out, sizeof(out), cq.b, cq.len, &q,
	    WIRE_RCODE_NOTIMP, EDNS(1232, -1, NULL));
	ck_assert_int_eq(n, 12 + 13 + 4 + 11);
	ck_assert_uint_eq(WIRE_ARCOUNT(out), 1);
}
END_TEST

START_TEST(t_build_error_badvers)
{
	static const uint8_t opt[11] = {
	    0, 0, 0x29, 0x04, 0xd0, 0x01, 0x00, 0x80, 0, 0, 0};
	struct pkt cq;
	struct wire_query q;
	uint8_t out[512];
	int n;

	pkt_init(&cq, 0x4444, WIRE_RD, 1, 0, 0, 1);
	pkt_question(&cq, "example.com", WIRE_TYPE_SOA, WIRE_CLASS_IN);
	pkt_opt(&cq, 4096, 0, 1, WIRE_EDNS_DO);
	ck_assert_int_eq(parse(&cq, &q), WIRE_BADVERS);
	n = wire_build_error(out, sizeof(out), cq.b, cq.len, &q,
	    WIRE_RCODE_BADVERS, EDNS(1232, -1, NULL));
	ck_assert_int_eq(n, 29 + 11);
	ck_assert_uint_eq(WIRE_ID(out), 0x4444);
	/* 16 = ext 1 << 4 | 0: the header's low bits are 0 (NOERROR). */
	ck_assert_uint_eq(WIRE_FLAGS(out), WIRE_QR | WIRE_RA | WIRE_RD);
	ck_assert_uint_eq(WIRE_RCODE(WIRE_FLAGS(out)), 0);
	ck_assert_uint_eq(WIRE_QDCOUNT(out), 1);
	ck_assert_uint_eq(WIRE_ANCOUNT(out), 0);
	ck_assert_uint_eq(WIRE_ARCOUNT(out), 1);
	ck_assert_mem_eq(out + 12, cq.b + 12, 17);
	/* Version 0 in the reply, DO echoed. */
	ck_assert_mem_eq(out + 29, opt, 11);
}
END_TEST

START_TEST(t_build_error_ede)
{
	static const char text[] = "all upstreams down";
	struct pkt cq;
	struct wire_query q;
	uint8_t out[512];
	size_t o;
	int n;

	make_query(&cq, 0x5151, WIRE_RD, "example.com", WIRE_TYPE_A, true, 1232,
	    false);
	ck_assert_int_eq(parse(&cq, &q), WIRE_ACCEPT);
	n = wire_build_error(out, sizeof(out), cq.b, cq.len, &q,
	    WIRE_RCODE_SERVFAIL,
	    EDNS(1232, WIRE_EDE_NO_REACHABLE_AUTHORITY, text));
	ck_assert_int_eq(n, (int)(29 + 11 + 6 + strlen(text)));
	ck_assert_uint_eq(
	    WIRE_FLAGS(out), WIRE_QR | WIRE_RA | WIRE_RD | WIRE_RCODE_SERVFAIL);
	ck_assert_uint_eq(WIRE_ARCOUNT(out), 1);
	o = 29;
	ck_assert_uint_eq(out[o], 0);
	ck_assert_uint_eq(wire_u16(out + o + 1), WIRE_TYPE_OPT);
	ck_assert_uint_eq(wire_u16(out + o + 3), 1232);
	ck_assert_uint_eq(wire_u32(out + o + 5), 0);
	ck_assert_uint_eq(wire_u16(out + o + 9), 6 + strlen(text));
	ck_assert_uint_eq(wire_u16(out + o + 11), WIRE_OPT_EDE);
	ck_assert_uint_eq(wire_u16(out + o + 13), 2 + strlen(text));
	ck_assert_uint_eq(wire_u16(out + o + 15), 22);
	ck_assert_mem_eq(out + o + 17, text, strlen(text));

	/* BADVERS with EDE as well. */
	pkt_init(&cq, 0x5152, 0, 1, 0, 0, 1);
	pkt_question(&cq, "example.com", WIRE_TYPE_A, WIRE_CLASS_IN);
	pkt_opt(&cq, 1232, 0, 1, 0);
	ck_assert_int_eq(parse(&cq, &q), WIRE_BADVERS);
	n = wire_build_error(out, sizeof(out), cq.b, cq.len, &q,
	    WIRE_RCODE_BADVERS, EDNS(1232, WIRE_EDE_NOT_SUPPORTED, NULL));
	ck_assert_int_eq(n, 29 + 11 + 6);
	ck_assert_uint_eq(out[29 + 5], 1);
	ck_assert_uint_eq(out[29 + 6], 0);
	ck_assert_uint_eq(wire_u16(out + 29 + 15), WIRE_EDE_NOT_SUPPORTED);
}
END_TEST

START_TEST(t_build_error_nospace)
{
	struct pkt cq;
	struct wire_query q;
	uint8_t out[64];

	make_query(&cq, 1, 0, "example.com", WIRE_TYPE_A, true, 1232, false);
	ck_assert_int_eq(parse(&cq, &q), WIRE_ACCEPT);
	ck_assert_int_eq(wire_build_error(out, 11, cq.b, cq.len, &q,
			     WIRE_RCODE_SERVFAIL, EDNS(1232, -1, NULL)),
	    -ENOSPC);
	ck_assert_int_eq(wire_build_error(out, 29 + 10, cq.b, cq.len, &q,
			     WIRE_RCODE_SERVFAIL, EDNS(1232, -1, NULL)),
	    -ENOSPC);
	ck_assert_int_eq(wire_build_error(out, 29 + 11, cq.b, cq.len, &q,
			     WIRE_RCODE_SERVFAIL, EDNS(1232, -1, NULL)),
	    40);
}
END_TEST

/* ---- wire_udp_limit ------------------------------------------------------ */

START_TEST(t_udp_limit)
{
	struct wire_query q;

	memset(&q, 0, sizeof(q));
	q.udp_size = 4096;
	ck_assert_uint_eq(wire_udp_limit(&q, 1232), 512);
	q.has_opt = true;
	ck_assert_uint_eq(wire_udp_limit(&q, 1232), 1232);
	ck_assert_uint_eq(wire_udp_limit(&q, 1400), 1400);
	ck_assert_uint_eq(wire_udp_limit(&q, 65535), 4096);
	q.udp_size = 100;
	ck_assert_uint_eq(wire_udp_limit(&q, 1232), 512);
	q.udp_size = 0;
	ck_assert_uint_eq(wire_udp_limit(&q, 1232), 512);
	q.udp_size = 512;
	ck_assert_uint_eq(wire_udp_limit(&q, 1232), 512);
	q.udp_size = 600;
	ck_assert_uint_eq(wire_udp_limit(&q, 1232), 600);
	q.udp_size = 1232;
	ck_assert_uint_eq(wire_udp_limit(&q, 1232), 1232);
}
END_TEST

/* ---- names --------------------------------------------------------------- */

START_TEST(t_name_text)
{
	uint8_t n[64];
	char out[300];

	wire_name_text(n, enc_name("www.Example.com", n), out, sizeof(out));
	ck_assert_str_eq(out, "www.Example.com.");
	n[0] = 0;
	ck_assert_str_eq(wire_name_text(n, 1, out, sizeof(out)), ".");
	ck_assert_str_eq(wire_name_text(n, 0, out, sizeof(out)), ".");
}
END_TEST

START_TEST(t_name_text_escaping)
{
	static const uint8_t n[] = {3, 'a', '.', 'b', 2, '\\', '"', 1, ' ', 1,
	    0x00, 1, 0xff, 1, 0x7f, 0};
	char out[300];

	wire_name_text(n, sizeof(n), out, sizeof(out));
	ck_assert_str_eq(out, "a\\.b.\\\\\\\".\\032.\\000.\\255.\\127.");
}
END_TEST

START_TEST(t_name_text_small_buffer)
{
	uint8_t n[300];
	char out[64];
	size_t nl = long_name(n, 255);

	for (size_t cap = 0; cap < 40; cap++) {
		memset(out, 'Z', sizeof(out));
		wire_name_text(n, nl, out, cap);
		if (cap > 0)
			ck_assert_uint_lt(strlen(out), cap);
		ck_assert_int_eq(out[cap], 'Z');
	}
	/* Escapes are not cut in half. */
	{
		static const uint8_t e[] = {3, 0x01, 0x02, 0x03, 0};

		memset(out, 'Z', sizeof(out));
		wire_name_text(e, sizeof(e), out, 8);
		ck_assert_str_eq(out, "\\001");
		ck_assert_int_eq(out[8], 'Z');
	}
}
END_TEST

START_TEST(t_name_from_text)
{
	uint8_t out[WIRE_NAME_MAX], want[64];
	size_t wl = enc_name("www.Example.com", want);

	memset(out, 0xee, sizeof(out));
	ck_assert_int_eq(wire_name_from_text("www.Example.com", out), (int)wl);
	ck_assert_mem_eq(out, want, wl);
	memset(out, 0xee, sizeof(out));
	ck_assert_int_eq(wire_name_from_text("www.Example.com.", out), (int)wl);
	ck_assert_mem_eq(out, want, wl);
	memset(out, 0xee, sizeof(out));
	ck_assert_int_eq(wire_name_from_text(".", out), 1);
	ck_assert_uint_eq(out[0], 0);
	ck_assert_int_eq(wire_name_from_text("a", out), 3);
	ck_assert_uint_eq(out[0], 1);
	ck_assert_uint_eq(out[1], 'a');
	ck_assert_uint_eq(out[2], 0);
}
END_TEST

START_TEST(t_name_from_text_invalid)
{
	static const char *const bad[] = {
	    "", "..", "a..b", ".a", "a.b..", "..a"};
	uint8_t out[WIRE_NAME_MAX + 8];
	char label[80];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(wire_name_from_text(bad[i], out) == -EINVAL,
		    "\"%s\" accepted", bad[i]);
	/* 63-byte label fine, 64 not, in any position. */
	memset(label, 'x', 63);
	label[63] = '\0';
	ck_assert_int_eq(wire_name_from_text(label, out), 65);
	memset(label, 'x', 64);
	label[64] = '\0';
	ck_assert_int_eq(wire_name_from_text(label, out), -EINVAL);
	strcpy(label + 64, ".com");
	ck_assert_int_eq(wire_name_from_text(label, out), -EINVAL);
	memcpy(label, "com.", 4);
	memset(label + 4, 'x', 64);
	strcpy(label + 68, ".");
	ck_assert_int_eq(wire_name_from_text(label, out), -EINVAL);
}
END_TEST

START_TEST(t_name_from_text_length)
{
	uint8_t w[300], out[WIRE_NAME_MAX + 8];
	char text[300];

	/* 255 in wire form: accepted; 256: rejected (with or without dot). */
	for (size_t total = 250; total <= 258; total++) {
		size_t nl = long_name(w, total);
		int r;

		wire_name_text(w, nl, text, sizeof(text));
		r = wire_name_from_text(text, out);
		if (total <= 255) {
			ck_assert_int_eq(r, (int)total);
			ck_assert_mem_eq(out, w, total);
		} else {
			ck_assert_msg(
			    r == -EINVAL, "%zu-byte name: %d", total, r);
		}
		text[strlen(text) - 1] = '\0';
		r = wire_name_from_text(text, out);
		ck_assert_int_eq(r, total <= 255 ? (int)total : -EINVAL);
	}
}
END_TEST

START_TEST(t_name_text_roundtrip)
{
	static const char *const names[] = {"example.com.", "a.b.c.d.e.",
	    "xn--bcher-kva.example.", "_dmarc.Example.ORG.", "*.example."};
	uint8_t w[WIRE_NAME_MAX];
	char out[1100];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int n = wire_name_from_text(names[i], w);

		ck_assert_int_gt(n, 0);
		wire_name_text(w, (size_t)n, out, sizeof(out));
		ck_assert_str_eq(out, names[i]);
	}
}
END_TEST

/*
 * wire_name_text() writes RFC 1035 escapes ("\." and "\DDD"); reading its
 * output back must give the same wire name.
 */
START_TEST(t_name_text_roundtrip_escapes)
{
	static const uint8_t n[] = {
	    3, 'a', '.', 'b', 2, '\\', 'x', 1, ' ', 3, 'c', 'o', 'm', 0};
	uint8_t w[WIRE_NAME_MAX];
	char out[1100];

	wire_name_text(n, sizeof(n), out, sizeof(out));
	ck_assert_str_eq(out, "a\\.b.\\\\x.\\032.com.");
	ck_assert_int_eq(wire_name_from_text(out, w), (int)sizeof(n));
	ck_assert_mem_eq(w, n, sizeof(n));
}
END_TEST

START_TEST(t_name_from_text_escapes)
{
	static const uint8_t abc[] = {3, 'A', 'b', 'c', 3, 'c', 'o', 'm', 0};
	static const uint8_t dot[] = {3, 'a', '.', 'b', 3, 'c', 'o', 'm', 0};
	static const uint8_t tail[] = {2, 'a', '.', 0};
	static const uint8_t zero[] = {2, 0, 0xff, 0};
	static const char *const bad[] = {
	    "\\256", "\\1", "\\12", "\\1a3", "abc\\", "a.\\", "\\999.com"};
	uint8_t out[WIRE_NAME_MAX];

	ck_assert_int_eq(wire_name_from_text("\\065bc.com", out), sizeof(abc));
	ck_assert_mem_eq(out, abc, sizeof(abc));
	ck_assert_int_eq(wire_name_from_text("\\Abc.com.", out), sizeof(abc));
	ck_assert_mem_eq(out, abc, sizeof(abc));
	ck_assert_int_eq(wire_name_from_text("a\\.b.com", out), sizeof(dot));
	ck_assert_mem_eq(out, dot, sizeof(dot));
	/* An escaped final dot is part of the label, not the root. */
	ck_assert_int_eq(wire_name_from_text("a\\.", out), sizeof(tail));
	ck_assert_mem_eq(out, tail, sizeof(tail));
	ck_assert_int_eq(wire_name_from_text("\\000\\255.", out), sizeof(zero));
	ck_assert_mem_eq(out, zero, sizeof(zero));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(wire_name_from_text(bad[i], out) == -EINVAL,
		    "\"%s\" accepted", bad[i]);
}
END_TEST

START_TEST(t_name_in_zone)
{
	uint8_t n[300], z[300];
	size_t nl, zl;

	nl = enc_name("example.com", n);
	zl = enc_name("example.com", z);
	ck_assert(wire_name_in_zone(n, nl, z, zl));
	nl = enc_name("www.sub.EXAMPLE.com", n);
	ck_assert(wire_name_in_zone(n, nl, z, zl));
	nl = enc_name("xexample.com", n);
	ck_assert(!wire_name_in_zone(n, nl, z, zl));
	nl = enc_name("www.xexample.com", n);
	ck_assert(!wire_name_in_zone(n, nl, z, zl));
	nl = enc_name("example.org", n);
	ck_assert(!wire_name_in_zone(n, nl, z, zl));
	nl = enc_name("com", n);
	ck_assert(!wire_name_in_zone(n, nl, z, zl));
	/* A label that happens to end in the zone's bytes. */
	nl = enc_name("a.b", n);
	zl = enc_name("b", z);
	ck_assert(wire_name_in_zone(n, nl, z, zl));
	nl = enc_name("ab", n);
	ck_assert(!wire_name_in_zone(n, nl, z, zl));
	/* The root contains everything, itself included. */
	z[0] = 0;
	zl = 1;
	nl = enc_name("www.example.com", n);
	ck_assert(wire_name_in_zone(n, nl, z, zl));
	n[0] = 0;
	ck_assert(wire_name_in_zone(n, 1, z, zl));
	nl = long_name(n, 255);
	ck_assert(wire_name_in_zone(n, nl, z, zl));
	/* Nothing but the root is in a non-root zone. */
	zl = enc_name("com", z);
	ck_assert(!wire_name_in_zone(n, 1, z, zl));
}
END_TEST

START_TEST(t_name_equal_and_lower)
{
	uint8_t a[64], b[64];
	size_t al, bl;

	al = enc_name("WWW.Example.COM", a);
	bl = enc_name("www.example.com", b);
	ck_assert(wire_name_equal(a, al, b, bl));
	ck_assert(wire_name_equal(b, bl, a, al));
	bl = enc_name("www.example.co", b);
	ck_assert(!wire_name_equal(a, al, b, bl));
	bl = enc_name("www.exbmple.com", b);
	ck_assert(!wire_name_equal(a, al, b, bl));
	/* Same bytes, different label split. */
	al = enc_name("ab.c", a);
	bl = enc_name("a.bc", b);
	ck_assert(!wire_name_equal(a, al, b, bl));
	/* '@' (0x40) and '`' (0x60), '[' and '{' are not letters. */
	al = enc_name("@[", a);
	bl = enc_name("`{", b);
	ck_assert(!wire_name_equal(a, al, b, bl));

	al = enc_name("WwW.ExAmPlE.CoM", a);
	wire_name_lower(a, al);
	bl = enc_name("www.example.com", b);
	ck_assert_mem_eq(a, b, bl);
	/* Non-letters stay as they are. */
	al = enc_name("A-Z_0.@[`{", a);
	wire_name_lower(a, al);
	bl = enc_name("a-z_0.@[`{", b);
	ck_assert_uint_eq(al, bl);
	ck_assert_mem_eq(a, b, bl);
}
END_TEST

static Suite *
make_suite(void)
{
	Suite *s = suite_create("wire");
	TCase *tc = tcase_create("parse_query");

	tcase_add_test(tc, t_pq_valid_a_no_opt);
	tcase_add_test(tc, t_pq_valid_a_opt);
	tcase_add_test(tc, t_pq_too_short);
	tcase_add_test(tc, t_pq_header_only);
	tcase_add_test(tc, t_pq_qdcount2);
	tcase_add_test(tc, t_pq_qr_set);
	tcase_add_test(tc, t_pq_opcodes);
	tcase_add_test(tc, t_pq_compressed_qname);
	tcase_add_test(tc, t_pq_label_type_bits);
	tcase_add_test(tc, t_pq_name_length);
	tcase_add_test(tc, t_pq_truncated_question);
	tcase_add_test(tc, t_pq_truncated_opt);
	tcase_add_test(tc, t_pq_two_opts);
	tcase_add_test(tc, t_pq_opt_nonroot_owner);
	tcase_add_test(tc, t_pq_records_outside_additional);
	tcase_add_test(tc, t_pq_option_overrun);
	tcase_add_test(tc, t_pq_cookie_bad_lengths);
	tcase_add_test(tc, t_pq_cookie_good_lengths);
	tcase_add_test(tc, t_pq_badvers);
	tcase_add_test(tc, t_pq_xfr_refused);
	tcase_add_test(tc, t_pq_trailing_garbage);
	tcase_add_test(tc, t_pq_unknown_option_ignored);
	tcase_add_test(tc, t_pq_keepalive_and_cookie);
	tcase_add_test(tc, t_read_question);
	suite_add_tcase(s, tc);

	tc = tcase_create("names_in_messages");
	tcase_add_test(tc, t_skip_name_plain_and_compressed);
	tcase_add_test(tc, t_skip_name_truncated);
	tcase_add_test(tc, t_skip_name_too_long);
	tcase_add_test(tc, t_skip_name_self_pointer);
	tcase_add_test(tc, t_skip_name_pointer_loop);
	tcase_add_test(tc, t_skip_name_forward_pointer);
	tcase_add_test(tc, t_name_pointer_overlap);
	tcase_add_test(tc, t_read_name_compressed);
	tcase_add_test(tc, t_read_name_loops);
	tcase_add_test(tc, t_read_name_bad_labels);
	tcase_add_test(tc, t_read_name_too_long);
	suite_add_tcase(s, tc);

	tc = tcase_create("iter");
	tcase_add_test(tc, t_iter_sections);
	tcase_add_test(tc, t_iter_skips_empty_sections);
	tcase_add_test(tc, t_iter_overrun);
	suite_add_tcase(s, tc);

	tc = tcase_create("build");
	tcase_add_test(tc, t_build_query_roundtrip_plain);
	tcase_add_test(tc, t_build_query_roundtrip_edns);
	tcase_add_test(tc, t_build_query_nospace);
	tcase_add_test(tc, t_append_opt_ede_bytes);
	tcase_add_test(tc, t_append_opt_variants);
	tcase_add_test(tc, t_append_opt_nospace);
	tcase_add_test(tc, t_strip_opt_last);
	tcase_add_test(tc, t_strip_opt_followed_by_rr);
	tcase_add_test(tc, t_strip_opt_none);
	tcase_add_test(tc, t_strip_opt_trailing_junk);
	tcase_add_test(tc, t_strip_opt_clamp);
	tcase_add_test(tc, t_strip_keeps_names_valid);
	tcase_add_test(tc, t_set_ttls);
	tcase_add_test(tc, t_set_ttls_name_through_ttl);
	suite_add_tcase(s, tc);

	tc = tcase_create("reply");
	tcase_add_test(tc, t_make_reply_basic_edns);
	tcase_add_test(tc, t_make_reply_flags_from_client);
	tcase_add_test(tc, t_make_reply_ede);
	tcase_add_test(tc, t_make_reply_drops_ede_before_tc);
	tcase_add_test(tc, t_make_reply_truncates_no_edns);
	tcase_add_test(tc, t_make_reply_truncates_edns);
	tcase_add_test(tc, t_make_reply_errors);
	tcase_add_test(tc, t_build_error_formerr_question);
	tcase_add_test(tc, t_build_error_formerr_no_question);
	tcase_add_test(tc, t_build_error_badvers);
	tcase_add_test(tc, t_build_error_ede);
	tcase_add_test(tc, t_build_error_nospace);
	tcase_add_test(tc, t_udp_limit);
	suite_add_tcase(s, tc);

	tc = tcase_create("name_text");
	tcase_add_test(tc, t_name_text);
	tcase_add_test(tc, t_name_text_escaping);
	tcase_add_test(tc, t_name_text_small_buffer);
	tcase_add_test(tc, t_name_from_text);
	tcase_add_test(tc, t_name_from_text_invalid);
	tcase_add_test(tc, t_name_from_text_length);
	tcase_add_test(tc, t_name_text_roundtrip);
	tcase_add_test(tc, t_name_text_roundtrip_escapes);
	tcase_add_test(tc, t_name_from_text_escapes);
	tcase_add_test(tc, t_name_in_zone);
	tcase_add_test(tc, t_name_equal_and_lower);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(make_suite)
