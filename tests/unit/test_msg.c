/*
 * Unit tests for msg: classification of upstream answers, built by hand,
 * every outcome asserted exactly; and, over the committed fuzz corpora of
 * upstream answers, agreement with ldns's reading of the same message
 * (the classifier this one replaced on the hot path): same kind, RCODE,
 * TC, cacheability and TTL whenever both accept a message; a message ldns
 * cannot parse is refused here too, unless it holds a type whose RDATA
 * msg leaves opaque (ldns knows the layout of a hundred types).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <ldns/ldns.h>

#include "stubborn/msg.h"
#include "stubborn/wire.h"
#include "pkt.h"
#include "unit.h"

static const struct msg_policy pol = {5, 86400, 3600};

static void pkt_init(struct pkt *, uint16_t, uint16_t, uint16_t, uint16_t);
static void pkt_name(struct pkt *, const char *);
static void pkt_rr(struct pkt *, uint16_t, uint32_t, const void *, uint16_t);
static void pkt_soa(struct pkt *, uint32_t, uint32_t);
static void pkt_opt(struct pkt *, uint8_t);
static int classify(const struct pkt *, struct msg_info *);
static int ldns_reference(
    const uint8_t *, size_t, const struct msg_policy *, struct msg_info *);
static bool opaque_types(const uint8_t *, size_t);
static Suite *make_suite(void);

/* Header and the question www.example.com/A/IN. */
static void
pkt_init(struct pkt *p, uint16_t flags, uint16_t an, uint16_t ns, uint16_t ar)
{
	memset(p->b, 0, sizeof(p->b));
	wire_put16(p->b, 0x4242);
	wire_put16(p->b + 2, (uint16_t)(WIRE_QR | flags));
	wire_put16(p->b + 4, 1);
	wire_put16(p->b + 6, an);
	wire_put16(p->b + 8, ns);
	wire_put16(p->b + 10, ar);
	p->len = WIRE_HDR_LEN;
	pkt_name(p, "www.example.com");
	pkt_u16(p, WIRE_TYPE_A);
	pkt_u16(p, WIRE_CLASS_IN);
}

static void
pkt_name(struct pkt *p, const char *text)
{
	uint8_t n[WIRE_NAME_MAX];
	int len = wire_name_from_text(text, n);

	ck_assert_int_gt(len, 0);
	pkt_raw(p, n, (size_t)len);
}

/* A record owned by the question's name (a pointer to offset 12). */
static void
pkt_rr(struct pkt *p, uint16_t type, uint32_t ttl, const void *rdata,
    uint16_t rdlen)
{
	pkt_u16(p, 0xc00c);
	pkt_u16(p, type);
	pkt_u16(p, WIRE_CLASS_IN);
	pkt_u32(p, ttl);
	pkt_u16(p, rdlen);
	pkt_raw(p, rdata, rdlen);
}

/* example.com SOA with TTL ttl and MINIMUM minimum. */
static void
pkt_soa(struct pkt *p, uint32_t ttl, uint32_t minimum)
{
	uint8_t rd[64];
	size_t n = 0;
	int l;

	l = wire_name_from_text("ns.example.com", rd);
	n += (size_t)l;
	l = wire_name_from_text("host.example.com", rd + n);
	n += (size_t)l;
	for (int i = 0; i < 4; i++, n += 4)
		wire_put32(rd + n, 1000u + (unsigned)i);
	wire_put32(rd + n, minimum);
	n += 4;
	pkt_u16(p, 0xc010); /* example.com, inside the question's name */
	pkt_u16(p, WIRE_TYPE_SOA);
	pkt_u16(p, WIRE_CLASS_IN);
	pkt_u32(p, ttl);
	pkt_u16(p, (uint16_t)n);
	pkt_raw(p, rd, n);
}

/* An OPT with extended RCODE bits ext. */
static void
pkt_opt(struct pkt *p, uint8_t ext)
{
	uint8_t b[11] = {0, 0, WIRE_TYPE_OPT, 0x04, 0xd0, ext, 0, 0, 0, 0, 0};

	pkt_raw(p, b, sizeof(b));
}

static int
classify(const struct pkt *p, struct msg_info *info)
{
	return msg_classify(p->b, p->len, &pol, info);
}

static const uint8_t addr[4] = {192, 0, 2, 1};

START_TEST(answer_lowest_ttl)
{
	struct pkt p;
	struct msg_info i;

	pkt_init(&p, 0, 2, 1, 0);
	pkt_rr(&p, WIRE_TYPE_A, 300, addr, 4);
	pkt_rr(&p, WIRE_TYPE_A, 100, addr, 4);
	pkt_soa(&p, 50, 9999);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert_int_eq(i.kind, MSG_ANSWER);
	ck_assert_int_eq(i.rcode, 0);
	ck_assert(!i.tc);
	ck_assert(i.cacheable);
	/* Authority counts too (RFC 2181 5.2 applied to the message). */
	ck_assert_uint_eq(i.ttl, 50);
}
END_TEST

START_TEST(answer_ttl_bounds)
{
	struct pkt p;
	struct msg_info i;

	pkt_init(&p, 0, 1, 0, 0);
	pkt_rr(&p, WIRE_TYPE_A, 2, addr, 4);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert_uint_eq(i.ttl, 5); /* min_ttl */
	pkt_init(&p, 0, 1, 0, 0);
	pkt_rr(&p, WIRE_TYPE_A, 999999, addr, 4);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert_uint_eq(i.ttl, 86400); /* max_ttl */
	/* RFC 8767 4: the high bit means large, not negative. */
	pkt_init(&p, 0, 1, 0, 0);
	pkt_rr(&p, WIRE_TYPE_A, 0x80000001u, addr, 4);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert_uint_eq(i.ttl, 86400);
	ck_assert(i.cacheable);
	/* TTL 0: this transaction only. */
	pkt_init(&p, 0, 1, 0, 0);
	pkt_rr(&p, WIRE_TYPE_A, 0, addr, 4);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert_int_eq(i.kind, MSG_ANSWER);
	ck_assert(!i.cacheable);
}
END_TEST

START_TEST(negative_ttls)
{
	struct pkt p;
	struct msg_info i;

	pkt_init(&p, WIRE_RCODE_NXDOMAIN, 0, 1, 0);
	pkt_soa(&p, 3600, 60);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert_int_eq(i.kind, MSG_NXDOMAIN);
	ck_assert(i.cacheable);
	ck_assert_uint_eq(i.ttl, 60);
	pkt_init(&p, 0, 0, 1, 0);
	pkt_soa(&p, 30, 7200);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert_int_eq(i.kind, MSG_NODATA);
	ck_assert_uint_eq(i.ttl, 30);
	/* Capped by max_negative_ttl. */
	pkt_init(&p, 0, 0, 1, 0);
	pkt_soa(&p, 99999, 99999);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert_uint_eq(i.ttl, 3600);
	/* No SOA, no negative caching (RFC 2308 5). */
	pkt_init(&p, WIRE_RCODE_NXDOMAIN, 0, 0, 0);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert_int_eq(i.kind, MSG_NXDOMAIN);
	ck_assert(!i.cacheable);
}
END_TEST

START_TEST(rcodes_tc_and_extended)
{
	struct pkt p;
	struct msg_info i;

	pkt_init(&p, WIRE_RCODE_SERVFAIL, 0, 0, 0);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert_int_eq(i.kind, MSG_SERVFAIL);
	pkt_init(&p, WIRE_RCODE_REFUSED, 0, 0, 0);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert_int_eq(i.kind, MSG_REFUSED);
	pkt_init(&p, 9, 0, 0, 0);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert_int_eq(i.kind, MSG_OTHER);
	/* Truncated: classified, never cacheable. */
	pkt_init(&p, WIRE_TC, 1, 0, 0);
	pkt_rr(&p, WIRE_TYPE_A, 300, addr, 4);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert(i.tc);
	ck_assert(!i.cacheable);
	/* BADVERS: RCODE 0 with extended bits 1 in the OPT. */
	pkt_init(&p, 0, 0, 0, 1);
	pkt_opt(&p, 1);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert_uint_eq(i.rcode, 16);
	ck_assert_int_eq(i.kind, MSG_OTHER);
	/* An OPT does not count as an answer TTL. */
	pkt_init(&p, 0, 1, 0, 1);
	pkt_rr(&p, WIRE_TYPE_A, 300, addr, 4);
	pkt_opt(&p, 0);
	ck_assert_int_eq(classify(&p, &i), 0);
	ck_assert_uint_eq(i.ttl, 300);
}
END_TEST

START_TEST(malformed)
{
	struct pkt p;
	struct msg_info i;
	uint8_t rd[32];

	/* Counts promise a record that is not there. */
	pkt_init(&p, 0, 1, 0, 0);
	ck_assert_int_eq(classify(&p, &i), -EBADMSG);
	ck_assert_int_eq(i.kind, MSG_MALFORMED);
	/* RDATA running past the end. */
	pkt_init(&p, 0, 1, 0, 0);
	pkt_rr(&p, WIRE_TYPE_A, 300, addr, 4);
	p.len -= 1;
	ck_assert_int_eq(classify(&p, &i), -EBADMSG);
	/* An A of three bytes, an AAAA of four. */
	pkt_init(&p, 0, 1, 0, 0);
	pkt_rr(&p, WIRE_TYPE_A, 300, addr, 3);
	ck_assert_int_eq(classify(&p, &i), -EBADMSG);
	pkt_init(&p, 0, 1, 0, 0);
	pkt_rr(&p, WIRE_TYPE_AAAA, 300, addr, 4);
	ck_assert_int_eq(classify(&p, &i), -EBADMSG);
	/* A CNAME whose target points forward, or past its RDATA. */
	pkt_init(&p, 0, 1, 0, 0);
	wire_put16(rd, 0xc0ff);
	pkt_rr(&p, WIRE_TYPE_CNAME, 300, rd, 2);
	ck_assert_int_eq(classify(&p, &i), -EBADMSG);
	pkt_init(&p, 0, 1, 0, 0);
	rd[0] = 3, memcpy(rd + 1, "www", 3), rd[4] = 0;
	pkt_rr(&p, WIRE_TYPE_CNAME, 300, rd, 3);
	pkt_raw(&p, rd + 3, 2);
	ck_assert_int_eq(classify(&p, &i), -EBADMSG);
	/* A well-formed CNAME (a pointer to the question's name) is fine. */
	pkt_init(&p, 0, 1, 0, 0);
	wire_put16(rd, 0xc00c);
	pkt_rr(&p, WIRE_TYPE_CNAME, 300, rd, 2);
	ck_assert_int_eq(classify(&p, &i), 0);
	/* An SOA without its 20 fixed bytes; a TXT string overrunning. */
	pkt_init(&p, 0, 0, 1, 0);
	rd[0] = 0, rd[1] = 0;
	pkt_rr(&p, WIRE_TYPE_SOA, 300, rd, 2);
	ck_assert_int_eq(classify(&p, &i), -EBADMSG);
	pkt_init(&p, 0, 1, 0, 0);
	rd[0] = 5, memcpy(rd + 1, "abc", 3);
	pkt_rr(&p, 16, 300, rd, 4);
	ck_assert_int_eq(classify(&p, &i), -EBADMSG);
	/* Shorter than a header. */
	ck_assert_int_eq(msg_classify(p.b, 11, &pol, &i), -EBADMSG);
}
END_TEST

/* The classifier msg had before it walked the message with wire. */
static uint32_t
ref_min_ttl(const ldns_rr_list *list, uint32_t ttl)
{
	for (size_t k = 0; k < ldns_rr_list_rr_count(list); k++) {
		const ldns_rr *rr = ldns_rr_list_rr(list, k);
		uint32_t t = ldns_rr_ttl(rr);
		if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_OPT)
			continue;
		if (t & 0x80000000u)
			t = 0x7fffffffu;
		if (t < ttl)
			ttl = t;
	}
	return ttl;
}

static int
ldns_reference(const uint8_t *resp, size_t len, const struct msg_policy *p,
    struct msg_info *out)
{
	ldns_pkt *pkt = NULL;
	uint32_t ttl;

	memset(out, 0, sizeof(*out));
	/* ldns_wire2pkt allocates pkt: freed below with ldns_pkt_free. */
	if (ldns_wire2pkt(&pkt, resp, len) != LDNS_STATUS_OK) {
		out->kind = MSG_MALFORMED;
		return -EBADMSG;
	}
	out->tc = ldns_pkt_tc(pkt);
	out->rcode = (uint16_t)(ldns_pkt_get_rcode(pkt) |
	    ((uint16_t)ldns_pkt_edns_extended_rcode(pkt) << 4));
	switch (out->rcode) {
	case 0:
		out->kind = ldns_pkt_ancount(pkt) > 0 ? MSG_ANSWER : MSG_NODATA;
		break;
	case 1:
		out->kind = MSG_FORMERR;
		break;
	case 2:
		out->kind = MSG_SERVFAIL;
		break;
	case 3:
		out->kind = MSG_NXDOMAIN;
		break;
	case 4:
		out->kind = MSG_NOTIMP;
		break;
	case 5:
		out->kind = MSG_REFUSED;
		break;
	default:
		out->kind = MSG_OTHER;
		break;
	}
	if (!out->tc && out->kind == MSG_ANSWER) {
		ttl = ref_min_ttl(ldns_pkt_answer(pkt), 0xffffffffu);
		ttl = ref_min_ttl(ldns_pkt_authority(pkt), ttl);
		ttl =
		    (ttl & 0x80000000u) || ttl > p->max_ttl ? p->max_ttl : ttl;
		if (ttl > 0 && ttl < p->min_ttl)
			ttl = p->min_ttl;
		out->ttl = ttl;
		out->cacheable = ttl > 0;
	} else if (!out->tc &&
	    (out->kind == MSG_NODATA || out->kind == MSG_NXDOMAIN)) {
		const ldns_rr_list *auth = ldns_pkt_authority(pkt);
		for (size_t k = 0; k < ldns_rr_list_rr_count(auth); k++) {
			const ldns_rr *rr = ldns_rr_list_rr(auth, k);
			if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_SOA ||
			    ldns_rr_rd_count(rr) < 7)
				continue;
			uint32_t a = ldns_rr_ttl(rr);
			uint32_t b = ldns_rdf2native_int32(ldns_rr_rdf(rr, 6));
			uint32_t t = a < b ? a : b;
			if (t & 0x80000000u)
				t = p->max_negative_ttl;
			t = t > p->max_negative_ttl ? p->max_negative_ttl : t;
			out->ttl = t > p->max_ttl ? p->max_ttl : t;
			out->cacheable = out->ttl > 0;
			break;
		}
	}
	ldns_pkt_free(pkt);
	return 0;
}

/* True when a record's RDATA is one msg does not look into. */
static bool
opaque_types(const uint8_t *m, size_t len)
{
	static const uint16_t known[] = {WIRE_TYPE_A, WIRE_TYPE_AAAA,
	    WIRE_TYPE_NS, WIRE_TYPE_CNAME, 12, 39, 15, 33, WIRE_TYPE_SOA, 16,
	    WIRE_TYPE_OPT};
	struct wire_iter it;
	struct wire_rr rr;

	if (wire_iter_init(&it, m, len) < 0)
		return false;
	while (wire_iter_next(&it, &rr) == 1) {
		bool k = false;
		for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			k = k || rr.type == known[i];
		if (!k)
			return true;
	}
	return false;
}

/* Every committed corpus input that is an upstream answer. */
START_TEST(agrees_with_ldns)
{
	static const char *const dirs[] = {
	    "tests/fuzz/corpus/msg", "tests/fuzz/corpus/wire"};
	static uint8_t buf[WIRE_MSG_MAX];
	unsigned files = 0, both = 0;

	for (size_t d = 0; d < sizeof(dirs) / sizeof(dirs[0]); d++) {
		DIR *dir = opendir(dirs[d]);
		struct dirent *de;

		ck_assert_msg(dir != NULL, "%s: %s (run from the repository)",
		    dirs[d], strerror(errno));
		while ((de = readdir(dir)) != NULL) {
			char path[512];
			struct msg_info a, b;
			FILE *f;
			size_t n;
			int ra, rb;

			if (de->d_name[0] == '.')
				continue;
			snprintf(
			    path, sizeof(path), "%s/%s", dirs[d], de->d_name);
			f = fopen(path, "rb");
			ck_assert_msg(f != NULL, "%s", path);
			n = fread(buf, 1, sizeof(buf), f);
			fclose(f);
			files++;
			ra = msg_classify(buf, n, &pol, &a);
			rb = ldns_reference(buf, n, &pol, &b);
			/* What ldns cannot parse is no answer here either,
			 * but for RDATA msg does not look into. */
			if (rb < 0) {
				ck_assert_msg(ra < 0 || opaque_types(buf, n),
				    "%s: accepted", path);
				continue;
			}
			if (ra < 0)
				continue; /* stricter about RDATA: allowed */
			both++;
			ck_assert_msg(a.kind == b.kind && a.rcode == b.rcode &&
				a.tc == b.tc && a.cacheable == b.cacheable &&
				a.ttl == b.ttl,
			    "%s: kind %d/%d rcode %u/%u tc %d/%d cacheable "
			    "%d/%d ttl %u/%u",
			    path, a.kind, b.kind, a.rcode, b.rcode, a.tc, b.tc,
			    a.cacheable, b.cacheable, a.ttl, b.ttl);
		}
		closedir(dir);
	}
	/* The corpora hold dozens of answers: an empty walk is a failure. */
	ck_assert_uint_ge(files, 50);
	ck_assert_uint_ge(both, 30);
}
END_TEST

static Suite *
make_suite(void)
{
	Suite *s = suite_create("msg");
	TCase *tc = tcase_create("classify");

	tcase_add_test(tc, answer_lowest_ttl);
	tcase_add_test(tc, answer_ttl_bounds);
	tcase_add_test(tc, negative_ttls);
	tcase_add_test(tc, rcodes_tc_and_extended);
	tcase_add_test(tc, malformed);
	tcase_add_test(tc, agrees_with_ldns);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(make_suite)
