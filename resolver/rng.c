#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include <sodium.h>

#include "stubborn/rng.h"

/*
 * Tests that replay a scenario need the same "random" choices each run:
 * with a seed set, bytes come from a ChaCha20 stream of that seed (one
 * thread only).  The daemon never sets one.
 */
static bool seeded;
static uint8_t seed_key[randombytes_SEEDBYTES];
static uint64_t seed_block;
static uint8_t seed_buf[256];
static size_t seed_used = sizeof(seed_buf);

static void
seeded_bytes(void *buf, size_t len)
{
	uint8_t *out = buf;

	while (len > 0) {
		size_t n;
		if (seed_used == sizeof(seed_buf)) {
			uint8_t k[randombytes_SEEDBYTES];
			crypto_generichash(k, sizeof(k),
			    (const uint8_t *)&seed_block, sizeof(seed_block),
			    seed_key, sizeof(seed_key));
			randombytes_buf_deterministic(
			    seed_buf, sizeof(seed_buf), k);
			seed_block++;
			seed_used = 0;
		}
		n = sizeof(seed_buf) - seed_used;
		if (n > len)
			n = len;
		memcpy(out, seed_buf + seed_used, n);
		seed_used += n;
		out += n;
		len -= n;
	}
}

/*
 * libsodium's generator asks the kernel (getrandom) on every call, and a
 * miss needs four or five values (ID, source port, server pick, letter
 * case): each thread draws RNG_POOL bytes at a time and hands them out,
 * wiping each value as it goes.  Larger requests (keys) go straight to
 * libsodium.
 */
#define RNG_POOL 512
static __thread uint8_t pool[RNG_POOL];
static __thread size_t pool_left;

static void
pool_bytes(void *buf, size_t len)
{
	size_t at;

	if (len > RNG_POOL / 4) {
		randombytes_buf(buf, len);
		return;
	}
	if (pool_left < len) {
		randombytes_buf(pool, sizeof(pool));
		pool_left = sizeof(pool);
	}
	at = sizeof(pool) - pool_left;
	memcpy(buf, pool + at, len);
	/* A value handed out is not left behind for anyone to read later. */
	memset(pool + at, 0, len);
	pool_left -= len;
}

/* A child of fork must not repeat the parent's values. */
static void
forget_cb(void)
{
	sodium_memzero(pool, sizeof(pool));
	pool_left = 0;
}

static void
register_once(void)
{
	(void)pthread_atfork(NULL, NULL, forget_cb);
}

int
rng_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	if (sodium_init() < 0)
		return -EIO;
	return pthread_once(&once, register_once) != 0 ? -EIO : 0;
}

void
rng_seed_for_tests(uint64_t seed)
{
	memset(seed_key, 0, sizeof(seed_key));
	memcpy(seed_key, &seed, sizeof(seed));
	seed_block = 0;
	seed_used = sizeof(seed_buf);
	seeded = true;
}

uint32_t
rng_uniform(uint32_t upper)
{
	uint32_t v, min;

	if (upper == 0)
		return 0;
	if (seeded) {
		seeded_bytes(&v, sizeof(v));
		/* Modulo bias is no concern for a test's replay. */
		return v % upper;
	}
	if (upper < 2)
		return 0;
	/* As randombytes_uniform: values below 2^32 mod upper are redrawn,
	 * so every result is equally likely. */
	min = (1U + ~upper) % upper;
	do
		pool_bytes(&v, sizeof(v));
	while (v < min);
	return v % upper;
}

uint16_t
rng_id(void)
{
	return (uint16_t)rng_uniform(65536);
}

uint16_t
rng_port(void)
{
	return (uint16_t)(1024 + rng_uniform(65536 - 1024));
}

void
rng_bytes(void *buf, size_t len)
{
	if (seeded)
		seeded_bytes(buf, len);
	else
		pool_bytes(buf, len);
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
	do {                                                                   \
		v0 += v1;                                                      \
		v1 = ROTL(v1, 13);                                             \
		v1 ^= v0;                                                      \
		v0 = ROTL(v0, 32);                                             \
		v2 += v3;                                                      \
		v3 = ROTL(v3, 16);                                             \
		v3 ^= v2;                                                      \
		v0 += v3;                                                      \
		v3 = ROTL(v3, 21);                                             \
		v3 ^= v0;                                                      \
		v2 += v1;                                                      \
		v1 = ROTL(v1, 17);                                             \
		v1 ^= v2;                                                      \
		v2 = ROTL(v2, 32);                                             \
	} while (0)

static inline uint64_t
le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

/* The reference SipHash-c-d, so the compiler can unroll fixed c and d. */
static inline uint64_t
siphash(
    const uint8_t *key, const uint8_t *in, size_t len, unsigned c, unsigned d)
{
	uint64_t k0 = le64(key), k1 = le64(key + 8);
	uint64_t v0 = 0x736f6d6570736575ull ^ k0;
	uint64_t v1 = 0x646f72616e646f6dull ^ k1;
	uint64_t v2 = 0x6c7967656e657261ull ^ k0;
	uint64_t v3 = 0x7465646279746573ull ^ k1;
	uint64_t b = (uint64_t)len << 56, m;
	size_t left = len & 7;
	const uint8_t *end = in + (len - left);

	for (; in != end; in += 8) {
		m = le64(in);
		v3 ^= m;
		for (unsigned i = 0; i < c; i++)
			SIPROUND;
		v0 ^= m;
	}
	if (left > 0) {
		uint8_t tail[8] = {0};
		memcpy(tail, in, left);
		b |= le64(tail);
	}
	v3 ^= b;
	for (unsigned i = 0; i < c; i++)
		SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	for (unsigned i = 0; i < d; i++)
		SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t
rng_siphash(const uint8_t key[RNG_HASH_KEY], const void *in, size_t len,
    unsigned c, unsigned d)
{
	return siphash(key, in, len, c, d);
}

uint64_t
rng_hash(const uint8_t key[RNG_HASH_KEY], const void *in, size_t len)
{
	return siphash(key, in, len, 1, 3);
}
