/*
 * ratelimit: token buckets per client prefix, in a table of fixed size.
 *
 * Pure: time is an argument, nothing is allocated after ratelimit_new, and a
 * full table forgets the least recently seen client of the slots it probes.
 * Thread-safe (striped locks), since a client's queries reach every worker.
 */
#ifndef STUBBORN_RATELIMIT_H
#define STUBBORN_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct ratelimit;

/* What one check found. */
enum ratelimit_verdict {
	RATELIMIT_PASS = 0,
	RATELIMIT_LIMITED,       /* over the limit */
	RATELIMIT_LIMITED_FIRST, /* over the limit, and it was not before */
};

/*
 * A table for up to nclients (rounded up to a power of two) client
 * prefixes; hash_key (16 bytes) keys SipHash so clients cannot collide on
 * purpose.  NULL on ENOMEM or nclients 0.
 */
struct ratelimit *ratelimit_new(size_t nclients, const uint8_t *hash_key);

void ratelimit_free(struct ratelimit *rl);

/*
 * Writes the client's prefix of addr (v4: the first v4_bits, v6: the first
 * v6_bits) into out (17 bytes: family byte + address) and returns its length.
 */
size_t ratelimit_prefix(const struct sockaddr *addr, unsigned v4_bits,
    unsigned v6_bits, uint8_t *out);

/*
 * Takes one token from the bucket of prefix (len bytes) at now_ms: rate
 * tokens per second, at most burst in the bucket (a new client starts
 * full).  rate 0 means unlimited.
 */
enum ratelimit_verdict ratelimit_check(struct ratelimit *rl,
    const uint8_t *prefix, size_t len, uint32_t rate, uint32_t burst,
    uint64_t now_ms);

/* Clients currently tracked (for metrics and tests). */
size_t ratelimit_tracked(struct ratelimit *rl);

#endif
