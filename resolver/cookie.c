#include <netinet/in.h>
#include <sodium.h>
#include <stdatomic.h>
#include <string.h>

#include "stubborn/clock.h"
#include "stubborn/cookie.h"
#include "stubborn/wire.h"

#define COOKIE_VERSION 1
#define COOKIE_MAX_AGE_S 3600  /* RFC 9018 4.3: older is invalid */
#define COOKIE_MAX_AHEAD_S 300 /* and so is more than 5 min ahead */

/*
 * Two secrets; current names the one used to make cookies.  Rotation
 * overwrites the other one, hourly at most, long after any reader of it
 * finished with it.
 */
static unsigned char secrets[2][crypto_shorthash_KEYBYTES];
static _Atomic unsigned current;

static void hash_cookie(const unsigned char *secret, const uint8_t *cc,
    const uint8_t *head, const struct sockaddr_storage *peer, uint8_t *out);

void
cookie_init(void)
{
	randombytes_buf(secrets[0], sizeof(secrets[0]));
	randombytes_buf(secrets[1], sizeof(secrets[1]));
	atomic_store(&current, 0);
}

void
cookie_rotate(void)
{
	unsigned next = atomic_load(&current) ^ 1;

	randombytes_buf(secrets[next], sizeof(secrets[next]));
	atomic_store(&current, next);
}

static void
hash_cookie(const unsigned char *secret, const uint8_t *cc, const uint8_t *head,
    const struct sockaddr_storage *peer, uint8_t *out)
{
	uint8_t in[COOKIE_CLIENT_LEN + 8 + 16];
	size_t n = 0;

	memcpy(in, cc, COOKIE_CLIENT_LEN);
	n += COOKIE_CLIENT_LEN;
	memcpy(in + n, head, 8); /* version, reserved, timestamp */
	n += 8;
	if (peer->ss_family == AF_INET6) {
		memcpy(in + n, &((const struct sockaddr_in6 *)peer)->sin6_addr,
		    16);
		n += 16;
	} else {
		memcpy(
		    in + n, &((const struct sockaddr_in *)peer)->sin_addr, 4);
		n += 4;
	}
	crypto_shorthash(out, in, n, secret);
}

void
cookie_make(const uint8_t *cc, const struct sockaddr_storage *peer,
    uint32_t now_s, uint8_t *out)
{
	out[0] = COOKIE_VERSION;
	out[1] = out[2] = out[3] = 0;
	wire_put32(out + 4, now_s);
	hash_cookie(secrets[atomic_load(&current)], cc, out, peer, out + 8);
}

bool
cookie_valid_query(
    const struct wire_query *q, const struct sockaddr_storage *peer)
{
	const uint8_t *sc = q->cookie + COOKIE_CLIENT_LEN;
	uint32_t now = (uint32_t)clock_wall_s(), ts;
	uint8_t h[8];

	if (!q->has_cookie ||
	    q->cookie_len != COOKIE_CLIENT_LEN + COOKIE_SERVER_LEN ||
	    sc[0] != COOKIE_VERSION)
		return false;
	ts = wire_u32(sc + 4);
	/* Serial-number arithmetic: the clock may wrap in 2106. */
	if ((int32_t)(now - ts) > COOKIE_MAX_AGE_S ||
	    (int32_t)(ts - now) > COOKIE_MAX_AHEAD_S)
		return false;
	for (int i = 0; i < 2; i++) {
		hash_cookie(secrets[i], q->cookie, sc, peer, h);
		if (sodium_memcmp(h, sc + 8, 8) == 0)
			return true;
	}
	return false;
}

size_t
cookie_attach(uint8_t *buf, size_t len, size_t cap, size_t limit,
    const struct wire_query *q, const struct sockaddr_storage *peer)
{
	uint8_t opt[COOKIE_CLIENT_LEN + COOKIE_SERVER_LEN];
	int n;

	if (!q->has_cookie || !q->has_opt)
		return len;
	memcpy(opt, q->cookie, COOKIE_CLIENT_LEN);
	cookie_make(
	    q->cookie, peer, (uint32_t)clock_wall_s(), opt + COOKIE_CLIENT_LEN);
	/*
	 * Within the limit or not at all: wire_add_option leaves buf alone
	 * when it fails, but not when it succeeds past the limit.
	 */
	n = wire_add_option(buf, len, cap < limit ? cap : limit,
	    WIRE_OPT_COOKIE, opt, sizeof(opt));
	if (n < 0)
		return len;
	return (size_t)n;
}
