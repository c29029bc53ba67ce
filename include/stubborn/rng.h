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

#endif
