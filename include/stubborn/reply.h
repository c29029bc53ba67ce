/*
 * reply: the one place where a reply to a client is made, whatever the
 * outcome (cache hit, upstream answer, stale answer, error, rate limit):
 * ID, exact question bytes, flags, OPT with EDE and the server cookie, the
 * client's size limit and TC=1 when over it.  The OPT is built once with
 * all its options, never found again by walking the message.
 */
#ifndef STUBBORN_REPLY_H
#define STUBBORN_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "stubborn/wire.h"

/* Who the reply is for. */
struct reply_to {
	const uint8_t *query;                /* the client's message (header and
						question at least) */
	size_t qlen;                         /* bytes readable at query */
	const struct wire_query *q;          /* as wire_parse_query filled it */
	size_t limit;                        /* largest reply it takes */
	const struct sockaddr_storage *peer; /* for its server cookie */
	uint16_t edns_size;                  /* our buffer size, in its OPT */
	uint32_t now_s; /* wall clock, for the server cookie */
};

/*
 * Makes the response in buf (len bytes, OPT stripped: a cache entry or an
 * upstream answer) into the reply for to, in place (cap bytes).  ede < 0:
 * none.  keep_ad passes the response's AD bit on.  Returns the length, or
 * -EBADMSG (the response's question is not the client's) / -ENOSPC.
 */
int reply_answer(uint8_t *buf, size_t len, size_t cap,
    const struct reply_to *to, int ede, const char *ede_text, bool keep_ad);

/*
 * Writes a reply with rcode and no records (the question if it parsed) into
 * out (cap bytes).  FORMERR carries no server cookie: a malformed one may
 * be why.  Returns the length or -ENOSPC.
 */
int reply_error(uint8_t *out, size_t cap, const struct reply_to *to, int rcode,
    int ede, const char *ede_text);

/*
 * An empty NOERROR reply with TC=1 (rate limiting by truncation: a genuine
 * client retries over TCP).  Returns the length or -ENOSPC.
 */
int reply_truncated(uint8_t *out, size_t cap, const struct reply_to *to);

#endif
