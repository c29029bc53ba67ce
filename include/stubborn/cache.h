/*
 * cache: a sharded table of response bytes, keyed by the lower-cased qname,
 * qtype, qclass and the DO/CD bits, hashed with SipHash-1-3 (rng_hash) under a
 * random key so clients cannot aim at one bucket.
 *
 * Stored responses carry no OPT (it is per hop) and get ID 0; a lookup
 * copies the bytes out under the shard lock with every TTL rewritten to the
 * time left, so callers never hold pointers into shared memory and a hit
 * allocates nothing.  Each shard has a byte budget (max_bytes / shards) and
 * evicts its least recently used entries first; expired entries are kept for
 * stale_max_age seconds so serve-stale can use them, then dropped.
 * Thread-safe: one mutex per shard.
 */
#ifndef STUBBORN_CACHE_H
#define STUBBORN_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stubborn/wire.h"

#define CACHE_KEY_MAX (WIRE_NAME_MAX + 5)
#define CACHE_KEY_DO 0x1
#define CACHE_KEY_CD 0x2

struct cache;

enum cache_result {
	CACHE_MISS = 0,
	CACHE_FRESH,  /* within its TTL */
	CACHE_STALE,  /* expired, but within stale_max_age */
	CACHE_FAILED, /* no data, and resolution failed recently: hold off */
};

struct cache_hit {
	uint32_t ttl_left;      /* seconds of TTL left (0 when stale) */
	uint32_t stale_s;       /* seconds since expiry (0 when fresh) */
	uint32_t ttl;           /* the TTL it was stored with */
	uint8_t rcode;          /* RCODE of the stored response */
	bool positive;          /* NOERROR with records in the answer section */
	uint32_t age_s;         /* seconds since it was stored */
	uint64_t hold_until_ms; /* do not ask upstream before (0: no hold) */
	uint64_t hold_since_ms; /* when that hold was placed */
	uint64_t neg_since_ms;  /* first negative answer seen for this
				   positive entry (stale-on-negative), or 0 */
};

struct cache_stats {
	uint64_t entries;
	uint64_t bytes;
	uint64_t hits;
	uint64_t stale_hits;
	uint64_t misses;
	uint64_t stores;
	uint64_t evictions;
	uint64_t failed_hits; /* lookups of held failures (RFC 9520) */
};

/*
 * Writes the cache key for a question into key (>= CACHE_KEY_MAX bytes):
 * the lower-cased wire name, qtype, qclass and flags (CACHE_KEY_*).
 * Returns the key length.  qname_len <= WIRE_NAME_MAX.
 */
size_t cache_make_key(uint8_t *key, const uint8_t *qname, size_t qname_len,
    uint16_t qtype, uint16_t qclass, unsigned flags);

/*
 * A cache of at most max_bytes (entries plus their bookkeeping), split into
 * shards (rounded up to a power of two, >= 1).  Returns NULL on ENOMEM.
 */
struct cache *cache_new(
    uint64_t max_bytes, unsigned shards, uint32_t stale_max_age_s);

/* Keep expired entries this long from now on (a reload; any thread). */
void cache_set_stale_max_age(struct cache *c, uint32_t stale_max_age_s);

/* Frees the cache and every entry; NULL is fine. */
void cache_free(struct cache *c);

/*
 * Stores a copy of resp (a whole DNS message without OPT) under key for ttl
 * seconds from now_ms, replacing any entry with that key and evicting least
 * recently used entries of the shard to stay in budget.  Each RR keeps its
 * own TTL from resp to count down from, raised to ttl where it is lower (no
 * record expires before the entry) and capped at a week.  Returns 0,
 * -EBADMSG (resp does not parse), -E2BIG (larger than a shard's budget),
 * -EINVAL (ttl 0) or -ENOMEM.
 */
int cache_store(struct cache *c, const uint8_t *key, size_t klen,
    const uint8_t *resp, size_t len, uint32_t ttl, uint64_t now_ms);

/*
 * As cache_store, but only when key has no entry yet (-EEXIST otherwise):
 * a snapshot loaded while serving must not replace newer answers or holds.
 */
int cache_store_new(struct cache *c, const uint8_t *key, size_t klen,
    const uint8_t *resp, size_t len, uint32_t ttl, uint64_t now_ms);

/*
 * Looks key up at now_ms.  On a fresh or stale hit, copies the response into
 * out (capacity cap) with the ID zero and every TTL (OPT excepted) set to
 * its own stored TTL minus the entry's age (fresh) or to stale_ttl (stale),
 * fills *hit and *out_len, and marks
 * the entry recently used.  An entry expired for longer than stale_max_age is
 * removed and reported as a miss.  A hit that does not fit in cap is a miss.
 * With out NULL nothing is copied: the state alone is reported (a peek).
 * CACHE_FAILED: a held failure without data (see cache_fail); *hit tells
 * until when.
 */
enum cache_result cache_lookup(struct cache *c, const uint8_t *key, size_t klen,
    uint64_t now_ms, uint32_t stale_ttl, uint8_t *out, size_t cap,
    size_t *out_len, struct cache_hit *hit);

/*
 * Records that resolving key failed at now_ms (RFC 9520): the key is held,
 * not to be sent upstream, until the returned time.  The hold starts at
 * min_s and doubles with each failure that follows a hold, up to max_s.  A
 * key without data gets a data-less failure entry (lookups say
 * CACHE_FAILED while held); one with data keeps it (CACHE_STALE or FRESH,
 * with hit->hold_until_ms set).  A successful cache_store clears it all.
 * Returns the hold's end, or 0 on ENOMEM.
 */
uint64_t cache_fail(struct cache *c, const uint8_t *key, size_t klen,
    uint64_t now_ms, uint32_t min_s, uint32_t max_s);

/*
 * Holds a key that has data until until_ms, placed at now_ms (never
 * shortens a hold): while a refresh of stale data is under way, other
 * workers answer stale at once instead of sending the same query.  Returns
 * false when the key has no data entry.
 */
bool cache_hold(struct cache *c, const uint8_t *key, size_t klen,
    uint64_t now_ms, uint64_t until_ms);

/*
 * For a key holding a positive answer: notes that upstream now says
 * NXDOMAIN/NODATA (stale-on-negative), holds the key until hold_until_ms,
 * and returns when the first such answer was seen (now_ms if this is the
 * first).  Returns 0 when the key has no positive answer.
 */
uint64_t cache_note_negative(struct cache *c, const uint8_t *key, size_t klen,
    uint64_t now_ms, uint64_t hold_until_ms);

/*
 * Calls fn for every entry with data, shard by shard, least recently used
 * first.  Each shard is copied under its lock and fn runs on the copy with
 * no lock held (it may be slow, and may call into the cache).  resp has ID
 * 0 and the TTLs it was stored with; stored_ms is on the clock_now_ms()
 * scale.  Returns 0, or -ENOMEM when a shard could not be copied (its
 * entries were skipped).
 */
typedef void (*cache_walk_fn)(void *arg, const uint8_t *key, size_t klen,
    const uint8_t *resp, size_t len, uint32_t ttl, uint64_t stored_ms);

int cache_walk(struct cache *c, cache_walk_fn fn, void *arg);

/* An entry as cache_walk_full shows it (valid during the call). */
struct cache_walk_entry {
	const uint8_t *key;
	size_t klen;
	const uint8_t *resp;
	size_t len;
	uint32_t ttl;
	uint64_t stored_ms;
	uint64_t hold_until_ms; /* 0: not held */
	uint64_t neg_since_ms;  /* stale-on-negative holding it since, or 0 */
};

typedef void (*cache_walk_full_fn)(void *arg, const struct cache_walk_entry *e);

/*
 * cache_walk with every field of the entry, and held failures without data
 * too (len 0, resp not to be read): what stubborn-ctl dump shows.
 */
int cache_walk_full(struct cache *c, cache_walk_full_fn fn, void *arg);

/*
 * Decides under a shard lock whether the entry with key goes: quick, no
 * calls into the cache.  failure: a held failure without data.
 */
typedef bool (*cache_match_fn)(void *arg, const uint8_t *key, size_t klen,
    uint8_t rcode, bool positive, bool failure);

/* Removes every entry match says to.  Returns how many went. */
size_t cache_remove_if(struct cache *c, cache_match_fn match, void *arg);

/* Removes the entry under key, if any.  Returns true if one was removed. */
bool cache_remove(struct cache *c, const uint8_t *key, size_t klen);

/* Sums the shards' counters (each shard read under its lock). */
void cache_get_stats(struct cache *c, struct cache_stats *out);

#endif
