#include <errno.h>
#include <string.h>

#include "stubborn/cookie.h"
#include "stubborn/reply.h"
#include "stubborn/wire.h"

#define REPLY_COOKIE_MAX 24

static void edns_for(const struct reply_to *to, int ede, const char *text,
    bool cookie, uint8_t *ck, struct wire_edns *e);

static void
edns_for(const struct reply_to *to, int ede, const char *text, bool cookie,
    uint8_t *ck, struct wire_edns *e)
{
	memset(e, 0, sizeof(*e));
	e->udp_size = to->edns_size;
	e->do_bit = to->q->do_bit;
	e->ede_code = ede;
	e->ede_text = text;
	e->cookie_len =
	    cookie ? cookie_reply_option(to->q, to->peer, to->now_s, ck) : 0;
	e->cookie = e->cookie_len ? ck : NULL;
}

int
reply_answer(uint8_t *buf, size_t len, size_t cap, const struct reply_to *to,
    int ede, const char *ede_text, bool keep_ad)
{
	uint8_t ck[REPLY_COOKIE_MAX];
	struct wire_edns e;

	if (to->q->q.end > to->qlen)
		return -EBADMSG;
	edns_for(to, ede, ede_text, true, ck, &e);
	return wire_make_reply(
	    buf, len, cap, to->limit, to->query, to->q, keep_ad, &e);
}

int
reply_error(uint8_t *out, size_t cap, const struct reply_to *to, int rcode,
    int ede, const char *ede_text)
{
	uint8_t ck[REPLY_COOKIE_MAX];
	struct wire_edns e;

	edns_for(to, ede, ede_text, rcode != WIRE_RCODE_FORMERR, ck, &e);
	/* Header, question and a short EDE stay under 512 bytes. */
	return wire_build_error(
	    out, cap, to->query, to->qlen, to->q, rcode, &e);
}

int
reply_truncated(uint8_t *out, size_t cap, const struct reply_to *to)
{
	int n = reply_error(out, cap, to, WIRE_RCODE_NOERROR, -1, NULL);

	if (n >= 0)
		wire_put16(out + 2, (uint16_t)(WIRE_FLAGS(out) | WIRE_TC));
	return n;
}
