#include <errno.h>
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

int
rng_init(void)
{
	return sodium_init() < 0 ? -EIO : 0;
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
	uint32_t v;

	if (upper == 0)
		return 0;
	if (!seeded)
		return randombytes_uniform(upper);
	seeded_bytes(&v, sizeof(v));
	/* Modulo bias is no concern for a test's replay. */
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
		randombytes_buf(buf, len);
}
