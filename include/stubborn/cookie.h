/*
 * cookie: DNS server cookies (RFC 7873) in the interoperable format of
 * RFC 9018: version 1, three reserved bytes, a 32-bit timestamp and an
 * 8-byte SipHash-2-4 of client cookie | version | reserved | timestamp |
 * client address, keyed with a secret that rotates (the previous one is
 * still accepted).  A client that returns a valid server cookie is known not
 * to be spoofing its address, so it may get a higher query limit.
 *
 * The secret is process-wide: cookie_init once before the workers start;
 * cookie_rotate from any thread, however often, while workers make and check
 * cookies (they never see half a secret).
 */
#ifndef STUBBORN_COOKIE_H
#define STUBBORN_COOKIE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "stubborn/wire.h"

#define COOKIE_CLIENT_LEN 8
#define COOKIE_SERVER_LEN 16

/* Draws the first secret. */
void cookie_init(void);

/* Draws a new secret; cookies made with the one before stay valid. */
void cookie_rotate(void);

/*
 * Writes the 16-byte server cookie for client cookie cc (8 bytes) from peer
 * at wall-clock time now_s into out.
 */
void cookie_make(const uint8_t *cc, const struct sockaddr_storage *peer,
    uint32_t now_s, uint8_t *out);

/*
 * True when the query carries a server cookie that this server made for
 * this client cookie and address, no more than an hour before the
 * wall-clock time now_s and no more than five minutes ahead (RFC 9018 4.3).
 */
bool cookie_valid_query(const struct wire_query *q,
    const struct sockaddr_storage *peer, uint32_t now_s);

/*
 * Writes the COOKIE option data for a reply to q (client cookie + a fresh
 * server cookie from peer at wall-clock now_s) into out (>= 24 bytes) and
 * returns its length, or 0 when q carried no cookie.
 */
size_t cookie_reply_option(const struct wire_query *q,
    const struct sockaddr_storage *peer, uint32_t now_s, uint8_t *out);

#endif
