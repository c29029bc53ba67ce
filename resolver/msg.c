#include <errno.h>
#include <string.h>

#include <ldns/ldns.h>

#include "stubborn/msg.h"

#define TTL_HIGH_BIT 0x80000000u

static uint32_t clamp_ttl(uint32_t ttl, const struct msg_policy *pol);
static bool negative_ttl(
    const ldns_pkt *pkt, const struct msg_policy *pol, uint32_t *ttl);
static uint32_t min_section_ttl(const ldns_rr_list *list, uint32_t ttl);

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

static uint32_t
min_section_ttl(const ldns_rr_list *list, uint32_t ttl)
{
	for (size_t i = 0; i < ldns_rr_list_rr_count(list); i++) {
		const ldns_rr *rr = ldns_rr_list_rr(list, i);
		uint32_t t = ldns_rr_ttl(rr);
		if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_OPT)
			continue;
		/* RFC 8767 4: a high-bit TTL is large and positive, not 0. */
		if (t & TTL_HIGH_BIT)
			t = 0x7fffffffu;
		if (t < ttl)
			ttl = t;
	}
	return ttl;
}

static bool
negative_ttl(const ldns_pkt *pkt, const struct msg_policy *pol, uint32_t *ttl)
{
	const ldns_rr_list *auth = ldns_pkt_authority(pkt);

	for (size_t i = 0; i < ldns_rr_list_rr_count(auth); i++) {
		const ldns_rr *rr = ldns_rr_list_rr(auth, i);
		if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_SOA ||
		    ldns_rr_rd_count(rr) < 7)
			continue;
		uint32_t soa_ttl = ldns_rr_ttl(rr);
		uint32_t minimum = ldns_rdf2native_int32(ldns_rr_rdf(rr, 6));
		uint32_t t = soa_ttl < minimum ? soa_ttl : minimum;
		if (t & TTL_HIGH_BIT)
			t = pol->max_negative_ttl;
		*ttl = t > pol->max_negative_ttl ? pol->max_negative_ttl : t;
		if (*ttl > pol->max_ttl)
			*ttl = pol->max_ttl;
		return true;
	}
	return false;
}

int
msg_classify(const uint8_t *resp, size_t len, const struct msg_policy *pol,
    struct msg_info *out)
{
	ldns_pkt *pkt = NULL;
	uint32_t ttl;

	memset(out, 0, sizeof(*out));
	/* ldns_wire2pkt allocates *pkt; freed below with ldns_pkt_free. */
	if (ldns_wire2pkt(&pkt, resp, len) != LDNS_STATUS_OK) {
		out->kind = MSG_MALFORMED;
		return -EBADMSG;
	}
	out->tc = ldns_pkt_tc(pkt);
	out->rcode = (uint16_t)(ldns_pkt_get_rcode(pkt) |
	    ((uint16_t)ldns_pkt_edns_extended_rcode(pkt) << 4));
	switch (out->rcode) {
	case LDNS_RCODE_NOERROR:
		out->kind = ldns_pkt_ancount(pkt) > 0 ? MSG_ANSWER : MSG_NODATA;
		break;
	case LDNS_RCODE_NXDOMAIN:
		out->kind = MSG_NXDOMAIN;
		break;
	case LDNS_RCODE_SERVFAIL:
		out->kind = MSG_SERVFAIL;
		break;
	case LDNS_RCODE_REFUSED:
		out->kind = MSG_REFUSED;
		break;
	case LDNS_RCODE_FORMERR:
		out->kind = MSG_FORMERR;
		break;
	case LDNS_RCODE_NOTIMPL:
		out->kind = MSG_NOTIMP;
		break;
	default:
		out->kind = MSG_OTHER;
		break;
	}
	if (out->tc)
		goto done;
	if (out->kind == MSG_ANSWER) {
		ttl = min_section_ttl(ldns_pkt_answer(pkt), 0xffffffffu);
		ttl = min_section_ttl(ldns_pkt_authority(pkt), ttl);
		ttl = clamp_ttl(ttl, pol);
		/* TTL 0 means "this transaction only" (RFC 1035 3.2.1). */
		if (ttl > 0 && ttl < pol->min_ttl)
			ttl = pol->min_ttl;
		out->ttl = ttl;
		out->cacheable = ttl > 0;
	} else if (out->kind == MSG_NODATA || out->kind == MSG_NXDOMAIN) {
		out->cacheable =
		    negative_ttl(pkt, pol, &out->ttl) && out->ttl > 0;
	}
done:
	ldns_pkt_free(pkt);
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
