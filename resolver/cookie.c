#include <netinet/in.h>
#include <sodium.h>
#include <stdatomic.h>
#include <string.h>

#include "stubborn/cookie.h"
#include "stubborn/wire.h"

#define COOKIE_VERSION 1
#define COOKIE_MAX_AGE_S 3600  /* RFC 9018 4.3: older is invalid */
#define COOKIE_MAX_AHEAD_S 300 /* and so is more than 5 min ahead */

/*
 * Three slots: current makes cookies, the one before it still validates,
 * and rotation writes the third, which no reader has looked at for an hour
 * (two slots would have the writer overwrite the one readers still check).
 * The index is published with release after the slot is written.
 */
#define COOKIE_SLOTS 3
static unsigned char secrets[COOKIE_SLOTS][crypto_shorthash_KEYBYTES];
static _Atomic unsigned current;

static void hash_cookie(const unsigned char *secret, const uint8_t *cc,
    const uint8_t *head, const struct sockaddr_storage *peer, uint8_t *out);

void
cookie_init(void)
{
	for (unsigned i = 0; i < COOKIE_SLOTS; i++)
		randombytes_buf(secrets[i], sizeof(secrets[i]));
	atomic_store(&current, 0);
}

void
cookie_rotate(void)
{
	unsigned next = (atomic_load(&current) + 1) % COOKIE_SLOTS;

	randombytes_buf(secrets[next], sizeof(secrets[next]));
	atomic_store_explicit(&current, next, memory_order_release);
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
	hash_cookie(
	    secrets[atomic_load_explicit(&current, memory_order_acquire)], cc,
	    out, peer, out + 8);
}

bool
cookie_valid_query(const struct wire_query *q,
    const struct sockaddr_storage *peer, uint32_t now)
{
	const uint8_t *sc = q->cookie + COOKIE_CLIENT_LEN;
	unsigned cur = atomic_load_explicit(&current, memory_order_acquire);
	uint32_t ts;
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
	for (unsigned i = 0; i < 2; i++) {
		unsigned slot = (cur + COOKIE_SLOTS - i) % COOKIE_SLOTS;
		hash_cookie(secrets[slot], q->cookie, sc, peer, h);
		if (sodium_memcmp(h, sc + 8, 8) == 0)
			return true;
	}
	return false;
}

size_t
cookie_reply_option(const struct wire_query *q,
    const struct sockaddr_storage *peer, uint32_t now_s, uint8_t *out)
{
	if (!q->has_cookie || !q->has_opt)
		return 0;
	memcpy(out, q->cookie, COOKIE_CLIENT_LEN);
	cookie_make(q->cookie, peer, now_s, out + COOKIE_CLIENT_LEN);
	return COOKIE_CLIENT_LEN + COOKIE_SERVER_LEN;
}
