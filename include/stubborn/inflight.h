/*
 * inflight: one worker's table of questions in flight upstream, and the
 * clients waiting on each (coalescing).  While a question is in flight, the
 * same question from other clients joins it: each waiter keeps its own ID,
 * letter case and EDNS framing, and a client repeating its own query (same
 * transport, address, connection and ID) is already waiting and costs
 * nothing.  Entries are embedded in their owner's query state.
 *
 * Not thread-safe: one table per worker.
 */
#ifndef STUBBORN_INFLIGHT_H
#define STUBBORN_INFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stubborn/cache.h"
#include "stubborn/client.h"
#include "stubborn/rng.h"
#include "stubborn/wire.h"

#define INFLIGHT_BUCKETS 4096 /* a power of two */
#define INFLIGHT_QBYTES_MAX (WIRE_HDR_LEN + WIRE_NAME_MAX + 4)

/* A client waiting for an answer. */
struct waiter {
	struct waiter *next;
	struct client cl;
	struct wire_query q;
	size_t qlen; /* header + question bytes in qbytes */
	uint8_t qbytes[INFLIGHT_QBYTES_MAX];
};

/* A question in flight; embedded in the engine's query. */
struct inflight_entry {
	struct inflight_entry *hnext; /* bucket chain */
	uint64_t hash;
	uint8_t key[CACHE_KEY_MAX];
	size_t klen;
	struct waiter *waiters;
	unsigned nwaiters;
	bool linked;
};

struct inflight {
	struct inflight_entry *buckets[INFLIGHT_BUCKETS];
	size_t count;
	uint8_t hash_key[RNG_HASH_KEY];
	struct waiter *spare; /* freed waiters kept for the next queries */
	unsigned n_spare;
};

/* An empty table with a random hash key. */
void inflight_init(struct inflight *t);

/* Frees the spare waiters (the table must hold no entry any more). */
void inflight_fini(struct inflight *t);

/* The table's hash of a cache key. */
uint64_t inflight_hash(
    const struct inflight *t, const uint8_t *key, size_t klen);

/* The entry in flight for key (hash h), or NULL. */
struct inflight_entry *inflight_find(
    struct inflight *t, uint64_t h, const uint8_t *key, size_t klen);

/* Links e under key (klen <= CACHE_KEY_MAX), hash h.  e has no waiters. */
void inflight_insert(struct inflight *t, struct inflight_entry *e, uint64_t h,
    const uint8_t *key, size_t klen);

/* Unlinks e; a no-op when it is not linked. */
void inflight_remove(struct inflight *t, struct inflight_entry *e);

/*
 * Adds a client (query bytes, parsed as wq) to e's waiters (e in t).
 * Returns 0, -EALREADY (the same client already waits with this ID: a
 * retry), -EBUSY (max waiters reached, or the question is too long to
 * keep) or -ENOMEM.
 */
int inflight_add_waiter(struct inflight *t, struct inflight_entry *e,
    const uint8_t *query, const struct wire_query *wq, const struct client *cl,
    unsigned max_waiters);

/* Detaches and returns e's waiters (the caller answers them). */
struct waiter *inflight_take_waiters(struct inflight_entry *e);

/* Gives e back a list taken from it. */
void inflight_restore_waiters(struct inflight_entry *e, struct waiter *ws);

/*
 * Frees a list of waiters taken from t's entries (kept for reuse, up to a
 * bound); each one still owed a reply (cl.reply not cleared by whoever
 * answered it) is told that none will come.
 */
void inflight_free_waiters(struct inflight *t, struct waiter *ws);

#endif
