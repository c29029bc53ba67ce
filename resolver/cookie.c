#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <string.h>

#include "stubborn/cookie.h"
#include "stubborn/wire.h"

#define COOKIE_VERSION 1
#define COOKIE_MAX_AGE_S 3600  /* RFC 9018 4.3: older is invalid */
#define COOKIE_MAX_AHEAD_S 300 /* and so is more than 5 min ahead */
#define KEY_BYTES crypto_shorthash_KEYBYTES

/*
 * Two secrets: [0] makes cookies, [1] (the one before) still validates.
 * Workers read them for every query with a cookie while main rotates them,
 * as often as it likes: a sequence count, odd while a rotation writes,
 * tells a reader that its copy may mix two secrets, and it copies again.
 * Readers store nothing shared (no locked instruction, no cache line moving
 * between workers), and the key words are atomics so that a copy thrown
 * away is no data race.  The writer's word stores are release, so a reader
 * that sees one new word also sees the odd count stored before it; the
 * reader's word loads are acquire, so its second look at the count comes
 * after them.
 */
#define KEY_WORDS (KEY_BYTES / sizeof(uint64_t))
_Static_assert(KEY_BYTES % sizeof(uint64_t) == 0, "whole words");
static _Atomic unsigned seq;
static _Atomic uint64_t secrets[2][KEY_WORDS];
static pthread_mutex_t rotating = PTHREAD_MUTEX_INITIALIZER;

static void put_secrets(const uint64_t *cur, const uint64_t *prev);
static void read_secrets(unsigned n, unsigned char (*out)[KEY_BYTES]);
static void hash_cookie(const unsigned char *key, const uint8_t *cc,
    const uint8_t *head, const struct sockaddr_storage *peer, uint8_t *out);

/* Writers hold the rotation lock: one at a time. */
static void
put_secrets(const uint64_t *cur, const uint64_t *prev)
{
	unsigned s = atomic_load_explicit(&seq, memory_order_relaxed);

	atomic_store_explicit(&seq, s + 1, memory_order_relaxed);
	for (size_t i = 0; i < KEY_WORDS; i++) {
		atomic_store_explicit(
		    &secrets[1][i], prev[i], memory_order_release);
		atomic_store_explicit(
		    &secrets[0][i], cur[i], memory_order_release);
	}
	atomic_store_explicit(&seq, s + 2, memory_order_release);
}

/* Copies secrets [0, n) as they were between two rotations. */
static void
read_secrets(unsigned n, unsigned char (*out)[KEY_BYTES])
{
	uint64_t w[2][KEY_WORDS];
	unsigned before, after;

	do {
		before = atomic_load_explicit(&seq, memory_order_acquire);
		for (unsigned k = 0; k < n; k++)
			for (size_t i = 0; i < KEY_WORDS; i++)
				w[k][i] = atomic_load_explicit(
				    &secrets[k][i], memory_order_acquire);
		after = atomic_load_explicit(&seq, memory_order_relaxed);
	} while ((before & 1) != 0 || before != after);
	memcpy(out, w, n * sizeof(w[0]));
}

void
cookie_init(void)
{
	uint64_t cur[KEY_WORDS], prev[KEY_WORDS];

	randombytes_buf(cur, sizeof(cur));
	randombytes_buf(prev, sizeof(prev));
	pthread_mutex_lock(&rotating);
	put_secrets(cur, prev);
	pthread_mutex_unlock(&rotating);
	sodium_memzero(cur, sizeof(cur));
	sodium_memzero(prev, sizeof(prev));
}

void
cookie_rotate(void)
{
	uint64_t fresh[KEY_WORDS], cur[KEY_WORDS];

	randombytes_buf(fresh, sizeof(fresh));
	pthread_mutex_lock(&rotating);
	for (size_t i = 0; i < KEY_WORDS; i++)
		cur[i] =
		    atomic_load_explicit(&secrets[0][i], memory_order_relaxed);
	put_secrets(fresh, cur);
	pthread_mutex_unlock(&rotating);
	sodium_memzero(fresh, sizeof(fresh));
	sodium_memzero(cur, sizeof(cur));
}

static void
hash_cookie(const unsigned char *key, const uint8_t *cc, const uint8_t *head,
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
	crypto_shorthash(out, in, n, key);
}

void
cookie_make(const uint8_t *cc, const struct sockaddr_storage *peer,
    uint32_t now_s, uint8_t *out)
{
	unsigned char key[1][KEY_BYTES];

	out[0] = COOKIE_VERSION;
	out[1] = out[2] = out[3] = 0;
	wire_put32(out + 4, now_s);
	read_secrets(1, key);
	hash_cookie(key[0], cc, out, peer, out + 8);
}

bool
cookie_valid_query(const struct wire_query *q,
    const struct sockaddr_storage *peer, uint32_t now)
{
	const uint8_t *sc = q->cookie + COOKIE_CLIENT_LEN;
	unsigned char keys[2][KEY_BYTES];
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
	read_secrets(2, keys);
	for (unsigned k = 0; k < 2; k++) {
		hash_cookie(keys[k], q->cookie, sc, peer, h);
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
