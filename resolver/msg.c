#include <errno.h>
#include <string.h>

#include <ldns/ldns.h>

#include "stubborn/msg.h"
#include "stubborn/wire.h"

#define TTL_HIGH_BIT 0x80000000u
#define TYPE_PTR 12
#define TYPE_MX 15
#define TYPE_TXT 16
#define TYPE_SRV 33
#define TYPE_DNAME 39
#define SOA_FIXED 20 /* serial, refresh, retry, expire, minimum */

/* What one walk over the records learns. */
struct walk {
	uint32_t min_ttl; /* lowest TTL of answer and authority */
	bool have_soa;    /* an SOA in the authority section */
	uint32_t soa_ttl; /* the first one's TTL */
	uint32_t soa_min; /* and its MINIMUM */
	bool have_opt;    /* an OPT in the additional section */
	uint8_t opt_ext;  /* the first one's extended RCODE bits */
};

static uint32_t clamp_ttl(uint32_t ttl, const struct msg_policy *pol);
static bool name_within(
    const uint8_t *m, size_t len, size_t off, size_t end, size_t *next);
static bool rdata_ok(const uint8_t *m, size_t len, const struct wire_rr *rr);
static int walk_records(const uint8_t *m, size_t len, struct walk *w);
static uint32_t negative_ttl(
    const struct walk *w, const struct msg_policy *pol);

static const char *const kind_names[] = {
    "answer",
    "nodata",
    "nxdomain",
    "servfail",
    "refused",
    "formerr",
    "notimp",
    "other",
    "malformed",
};

const char *
msg_kind_name(enum msg_kind kind)
{
	if ((unsigned)kind >= sizeof(kind_names) / sizeof(kind_names[0]))
		return "unknown";
	return kind_names[kind];
}

static uint32_t
clamp_ttl(uint32_t ttl, const struct msg_policy *pol)
{
	if (ttl & TTL_HIGH_BIT)
		return pol->max_ttl;
	return ttl > pol->max_ttl ? pol->max_ttl : ttl;
}

/* A sane (possibly compressed) name at off that ends by end. */
static bool
name_within(const uint8_t *m, size_t len, size_t off, size_t end, size_t *next)
{
	return off < end && wire_skip_name(m, len, off, next) == 0 &&
	    *next <= end;
}

/*
 * RDATA that clients parse must hold what its type says: the addresses
 * their size, the names sane (they are followed, compression and all),
 * nothing left over.  Other types are opaque bytes to us and to most
 * stub resolvers.
 */
static bool
rdata_ok(const uint8_t *m, size_t len, const struct wire_rr *rr)
{
	size_t off = rr->rdata_off, end = rr->end, next = 0;

	switch (rr->type) {
	case WIRE_TYPE_A:
		return rr->rdlen == 4;
	case WIRE_TYPE_AAAA:
		return rr->rdlen == 16;
	case WIRE_TYPE_NS:
	case WIRE_TYPE_CNAME:
	case TYPE_PTR:
	case TYPE_DNAME:
		return name_within(m, len, off, end, &next) && next == end;
	case TYPE_MX:
		return rr->rdlen > 2 &&
		    name_within(m, len, off + 2, end, &next) && next == end;
	case TYPE_SRV:
		return rr->rdlen > 6 &&
		    name_within(m, len, off + 6, end, &next) && next == end;
	case WIRE_TYPE_SOA:
		return name_within(m, len, off, end, &next) &&
		    name_within(m, len, next, end, &next) &&
		    next + SOA_FIXED == end;
	case TYPE_TXT:
		/* One or more <character-string>s, exactly. */
		if (rr->rdlen == 0)
			return false;
		while (off < end)
			off += (size_t)m[off] + 1;
		return off == end;
	default:
		return true;
	}
}

/* One pass over every record: checks it and gathers *w.  0 or -EBADMSG. */
static int
walk_records(const uint8_t *m, size_t len, struct walk *w)
{
	struct wire_iter it;
	struct wire_rr rr;
	int r;

	memset(w, 0, sizeof(*w));
	w->min_ttl = 0xffffffffu;
	if (wire_iter_init(&it, m, len) < 0)
		return -EBADMSG;
	while ((r = wire_iter_next(&it, &rr)) == 1) {
		uint32_t t = rr.ttl;
		if (!rdata_ok(m, len, &rr))
			return -EBADMSG;
		if (rr.type == WIRE_TYPE_OPT) {
			/* One, in the additional section (RFC 6891 6.1.1). */
			if (rr.section != 3 || w->have_opt)
				return -EBADMSG;
			w->have_opt = true;
			w->opt_ext = (uint8_t)(rr.ttl >> 24);
			continue;
		}
		if (rr.section == 3)
			continue;
		if (rr.section == 2 && rr.type == WIRE_TYPE_SOA &&
		    !w->have_soa) {
			w->have_soa = true;
			w->soa_ttl = rr.ttl;
			w->soa_min = wire_u32(m + rr.end - 4);
		}
		/* RFC 8767 4: a high-bit TTL is large and positive, not 0. */
		if (t & TTL_HIGH_BIT)
			t = 0x7fffffffu;
		if (t < w->min_ttl)
			w->min_ttl = t;
	}
	return r < 0 ? -EBADMSG : 0;
}

/* RFC 2308 5: min(SOA TTL, SOA MINIMUM), within the caps. */
static uint32_t
negative_ttl(const struct walk *w, const struct msg_policy *pol)
{
	uint32_t t = w->soa_ttl < w->soa_min ? w->soa_ttl : w->soa_min;

	if (t & TTL_HIGH_BIT)
		t = pol->max_negative_ttl;
	if (t > pol->max_negative_ttl)
		t = pol->max_negative_ttl;
	return t > pol->max_ttl ? pol->max_ttl : t;
}

int
msg_classify(const uint8_t *resp, size_t len, const struct msg_policy *pol,
    struct msg_info *out)
{
	struct walk w;
	uint16_t flags;
	uint32_t ttl;

	memset(out, 0, sizeof(*out));
	if (len < WIRE_HDR_LEN || walk_records(resp, len, &w) < 0) {
		out->kind = MSG_MALFORMED;
		return -EBADMSG;
	}
	flags = WIRE_FLAGS(resp);
	out->tc = (flags & WIRE_TC) != 0;
	out->rcode = (uint16_t)(WIRE_RCODE(flags) | ((uint16_t)w.opt_ext << 4));
	switch (out->rcode) {
	case WIRE_RCODE_NOERROR:
		out->kind = WIRE_ANCOUNT(resp) > 0 ? MSG_ANSWER : MSG_NODATA;
		break;
	case WIRE_RCODE_NXDOMAIN:
		out->kind = MSG_NXDOMAIN;
		break;
	case WIRE_RCODE_SERVFAIL:
		out->kind = MSG_SERVFAIL;
		break;
	case WIRE_RCODE_REFUSED:
		out->kind = MSG_REFUSED;
		break;
	case WIRE_RCODE_FORMERR:
		out->kind = MSG_FORMERR;
		break;
	case WIRE_RCODE_NOTIMP:
		out->kind = MSG_NOTIMP;
		break;
	default:
		out->kind = MSG_OTHER;
		break;
	}
	if (out->tc)
		return 0;
	if (out->kind == MSG_ANSWER) {
		ttl = clamp_ttl(w.min_ttl, pol);
		/* TTL 0 means "this transaction only" (RFC 1035 3.2.1). */
		if (ttl > 0 && ttl < pol->min_ttl)
			ttl = pol->min_ttl;
		out->ttl = ttl;
		out->cacheable = ttl > 0;
	} else if ((out->kind == MSG_NODATA || out->kind == MSG_NXDOMAIN) &&
	    w.have_soa) {
		out->ttl = negative_ttl(&w, pol);
		out->cacheable = out->ttl > 0;
	}
	return 0;
}

int
msg_records_text(const uint8_t *resp, size_t len, char *out, size_t cap)
{
	ldns_pkt *pkt = NULL;
	size_t used = 0;
	ldns_pkt_section secs[] = {LDNS_SECTION_ANSWER, LDNS_SECTION_AUTHORITY};

	if (cap == 0)
		return -ENOSPC;
	out[0] = '\0';
	/* ldns_wire2pkt allocates pkt: freed below with ldns_pkt_free. */
	if (ldns_wire2pkt(&pkt, resp, len) != LDNS_STATUS_OK)
		return -EBADMSG;
	for (size_t s = 0; s < sizeof(secs) / sizeof(secs[0]); s++) {
		ldns_rr_list *l = ldns_pkt_get_section_clone(pkt, secs[s]);
		for (size_t i = 0; l != NULL && i < ldns_rr_list_rr_count(l);
		     i++) {
			/* ldns_rr2str returns a malloc'ed string: freed here.
			 */
			char *t = ldns_rr2str(ldns_rr_list_rr(l, i));
			size_t n = t ? strlen(t) : 0;
			if (t != NULL && used + n < cap) {
				memcpy(out + used, t, n + 1);
				used += n;
			}
			free(t);
		}
		ldns_rr_list_deep_free(l);
	}
	ldns_pkt_free(pkt);
	return (int)used;
}
