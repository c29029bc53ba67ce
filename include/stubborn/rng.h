/*
 * rng: all randomness comes from libsodium (a CSPRNG), because upstream query
 * IDs and source ports are the only defence against off-path spoofing
 * (RFC 5452).  Small values come from a per-thread buffer of the CSPRNG's
 * output, refilled with one system call per 512 bytes.
 */
#ifndef STUBBORN_RNG_H
#define STUBBORN_RNG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Initialises libsodium (and makes a forked child forget the buffered
 * values); returns 0 or -EIO.  Call once before threads.
 */
int rng_init(void);

/* Uniform in [0, upper); upper 0 returns 0. */
uint32_t rng_uniform(uint32_t upper);

/* A fresh 16-bit DNS message ID. */
uint16_t rng_id(void);

/* A source port uniform in [1024, 65535]. */
uint16_t rng_port(void);

/*
 * Tests only: from now on every value comes from a deterministic stream of
 * seed, so a scenario replays identically.  Single-threaded use only.
 */
void rng_seed_for_tests(uint64_t seed);

/* Fills buf with random bytes (hash keys, secrets). */
void rng_bytes(void *buf, size_t len);

#define RNG_HASH_KEY 16

/*
 * The keyed hash of the daemon's tables (cache, in-flight queries):
 * SipHash-1-3 of len bytes at in under key (rng_bytes makes keys), so
 * clients cannot aim many names at one bucket.  SipHash-1-3 is the
 * variant hash tables use (Rust, CPython); a lookup hashes every query.
 */
uint64_t rng_hash(const uint8_t key[RNG_HASH_KEY], const void *in, size_t len);

/* SipHash-c-d, the same code with other round counts (2-4: libsodium's). */
uint64_t rng_siphash(const uint8_t key[RNG_HASH_KEY], const void *in,
    size_t len, unsigned c, unsigned d);

#endif
