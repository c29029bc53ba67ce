/*
 * cache: sharded table of response bytes (see include/stubborn/cache.h).
 *
 * Each entry is one allocation: header, TTL offsets, key, response.  The TTL
 * offsets are found once at store time so that a lookup is a memcpy plus a
 * few 4-byte patches, with no parsing and no allocation under the lock.
 *
 * Memory per entry is what a node-local cache is judged by, so the header
 * is 50 bytes: holds and failure backoffs, which few entries ever have,
 * are appended to the entry only when it gets one (the entry is moved to a
 * larger allocation); and when the key is the response's own question
 * (the usual case: lower-case name, its class), only the key's type and
 * flags are kept, the name is compared where it lies in the response.
 * Each shard's bucket table grows with its entries instead of being sized
 * for the whole budget up front.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "stubborn/cache.h"
#include "stubborn/rng.h"
#include "stubborn/wire.h"

/* A new shard's buckets; the table doubles once entries outnumber them. */
#define CACHE_MIN_BUCKETS 16
#define CACHE_MAX_BUCKETS (1u << 30)
/* Shard and bucket come from disjoint halves of the 64-bit hash. */
#define CACHE_MAX_SHARDS (1u << 16)
/* Shards are padded apart so that two workers' locks do not share a line. */
#define CACHE_LINE 64
/* The longest TTL a record keeps (max-ttl's ceiling). */
#define CACHE_TTL_MAX 604800
/* TTL offsets found on the stack; longer answers take a second pass. */
#define CACHE_SCAN_STACK 128

/* entry.bits: the RCODE in the low four bits, and */
#define ENTRY_RCODE 0x0f
#define ENTRY_POSITIVE 0x10 /* NOERROR with records in the answer section */
#define ENTRY_QKEY 0x20     /* the key is the question: see key_equal() */
#define ENTRY_HELD 0x40     /* a struct hold follows the response */
#define ENTRY_KLEN_HI 0x80  /* klen is klen_lo + 256 */

/* A hold on an entry (RFC 9520 failures, stale refreshes, negatives). */
struct hold {
	uint64_t until_ms;
	uint64_t since_ms;     /* when the current hold was placed */
	uint64_t neg_since_ms; /* stale-on-negative: first negative answer */
	uint32_t fail_s;       /* current failure hold length */
};

/*
 * The allocation: this header, noff TTL offsets, the key (unless
 * ENTRY_QKEY), the response, and with ENTRY_HELD a struct hold at the next
 * multiple of 8 (every failure entry has one).  Nobody keeps a pointer to
 * an entry outside its shard's lock, so it may move.
 */
struct entry {
	struct entry *hnext; /* bucket chain */
	struct entry *prev;  /* LRU neighbour towards the most recently used */
	struct entry *next;  /* LRU neighbour towards the least recently used */
	uint64_t stored_ms;
	uint32_t hash_hi; /* the hash's high half: the bucket, a first check */
	uint32_t ttl;
	uint16_t len;
	uint16_t noff;
	uint16_t ktype; /* ENTRY_QKEY: the key's type (0 for NXDOMAIN's) */
	uint8_t kflags; /* ENTRY_QKEY: the key's flags byte */
	uint8_t klen_lo;
	uint8_t bits;
	uint16_t off[];
};

#define ENTRY_HDR offsetof(struct entry, off)

struct shard {
	pthread_mutex_t lock;
	struct entry **buckets;
	size_t mask;        /* bucket count - 1 */
	struct entry *head; /* most recently used */
	struct entry *tail; /* least recently used: evicted first */
	uint64_t entries;
	uint64_t bytes; /* sum of entry sizes */
	uint64_t hits;
	uint64_t stale_hits;
	uint64_t misses;
	uint64_t stores;
	uint64_t evictions;
	uint64_t failed_hits;
} __attribute__((aligned(CACHE_LINE)));

struct cache {
	struct shard *shards;
	unsigned nshards;
	uint64_t budget;                  /* per shard: entries and table */
	_Atomic uint32_t stale_max_age_s; /* changed by a reload */
	uint8_t hkey[RNG_HASH_KEY];
};

static uint64_t cache_hash(const struct cache *, const uint8_t *, size_t);
static struct shard *shard_of(const struct cache *, uint64_t);
static struct entry **bucket_of(struct shard *, uint32_t);
static int shard_init(struct shard *);
static void shard_fini(struct shard *);
static uint64_t shard_used(const struct shard *);
static void shard_grow(struct cache *, struct shard *);
static struct entry *shard_find(
    struct shard *, uint64_t, const uint8_t *, size_t);
static void shard_insert(struct cache *, struct shard *, struct entry *);
static void shard_unlink(struct shard *, struct entry *);
static struct entry *shard_evict(
    struct cache *, struct shard *, size_t, struct entry *);
static void lru_unlink(struct shard *, struct entry *);
static void lru_push_front(struct shard *, struct entry *);
static int scan_ttls(const uint8_t *, size_t, uint16_t *, size_t, size_t *);
static bool range_in_ttl(const uint16_t *, size_t, size_t, size_t);
static bool owner_avoids_ttls(
    const uint8_t *, size_t, const uint16_t *, size_t);
static bool question_is_key(const uint8_t *, size_t, const uint8_t *, size_t);
static struct entry *entry_new(const uint8_t *, size_t, const uint8_t *, size_t,
    const uint16_t *, size_t, uint32_t, uint64_t);
static size_t entry_size(const struct entry *);
static size_t entry_klen(const struct entry *);
static size_t entry_bytes(const struct entry *);
static void entry_free(struct entry *);
static uint8_t *entry_key(struct entry *);
static uint8_t *entry_resp(struct entry *);
static size_t entry_key_copy(struct entry *, uint8_t *);
static bool key_equal(struct entry *, const uint8_t *, size_t);
static struct hold *hold_ptr(struct entry *);
static struct entry *entry_hold(struct shard *, struct entry *);
static enum cache_result entry_age(
    const struct entry *, uint64_t, uint32_t, struct cache_hit *);
static void entry_copy_out(struct entry *, uint8_t *, bool, uint32_t, uint32_t);
static void free_chain(struct entry *);
static int store(struct cache *, const uint8_t *, size_t, const uint8_t *,
    size_t, uint32_t, uint64_t, bool);

/*
 * Folds A-Z to a-z in the 8 bytes of x at once: bytes 0x41..0x5a get bit
 * 0x20, all others (with the high bit set too) stay.
 */
static inline uint64_t
fold8(uint64_t x)
{
	uint64_t low7 = x & 0x7f7f7f7f7f7f7f7full;
	uint64_t ge_a = low7 + 0x3f3f3f3f3f3f3f3full; /* bit 7: >= 'A' */
	uint64_t gt_z = low7 + 0x2525252525252525ull; /* bit 7: > 'Z' */
	uint64_t upper = (ge_a ^ gt_z) & ~x & 0x8080808080808080ull;

	return x | (upper >> 2);
}

size_t
cache_make_key(uint8_t *key, const uint8_t *qname, size_t qname_len,
    uint16_t qtype, uint16_t qclass, unsigned flags)
{
	size_t pos = 0;

	if (qname_len > WIRE_NAME_MAX)
		qname_len = WIRE_NAME_MAX;
	/*
	 * Length bytes of a real name are below 64, never 'A'..'Z': then
	 * the whole name folds eight bytes at a time (every query makes a
	 * key).  Else walk the labels, so a length byte in 65..90 is kept.
	 */
	while (pos < qname_len && qname[pos] < 64 && qname[pos] != 0)
		pos += (size_t)qname[pos] + 1;
	if (pos + 1 == qname_len && qname[pos] == 0) {
		for (pos = 0; pos + 8 <= qname_len; pos += 8) {
			uint64_t x;
			memcpy(&x, qname + pos, 8);
			x = fold8(x);
			memcpy(key + pos, &x, 8);
		}
		for (; pos < qname_len; pos++) {
			uint8_t ch = qname[pos];
			key[pos] =
			    (uint8_t)(ch + (((unsigned)(ch - 'A') < 26u) << 5));
		}
	} else {
		pos = 0;
		while (pos < qname_len) {
			size_t llen = qname[pos], end;

			key[pos] = qname[pos];
			pos++;
			end = pos + llen < qname_len ? pos + llen : qname_len;
			for (; pos < end; pos++) {
				uint8_t ch = qname[pos];
				key[pos] = (uint8_t)(ch +
				    (((unsigned)(ch - 'A') < 26u) << 5));
			}
		}
	}
	wire_put16(key + pos, qtype);
	wire_put16(key + pos + 2, qclass);
	key[pos + 4] = (uint8_t)flags;
	return pos + 5;
}

struct cache *
cache_new(uint64_t max_bytes, unsigned shards, uint32_t stale_max_age_s)
{
	struct cache *c;
	uint64_t per_shard;
	unsigned n = 1, i;

	while (n < shards && n < CACHE_MAX_SHARDS)
		n <<= 1;
	per_shard = max_bytes / n;

	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->nshards = n;
	/* The promise is max_bytes including bookkeeping: the shard itself
	 * here, its bucket table as it grows (shard_used). */
	c->budget = per_shard > sizeof(struct shard)
	    ? per_shard - sizeof(struct shard)
	    : 0;
	atomic_init(&c->stale_max_age_s, stale_max_age_s);
	rng_bytes(c->hkey, sizeof(c->hkey));
	c->shards = aligned_alloc(CACHE_LINE, n * sizeof(struct shard));
	if (c->shards == NULL)
		goto free_cache;
	for (i = 0; i < n; i++)
		if (shard_init(&c->shards[i]) < 0)
			goto free_shards;
	return c;

free_shards:
	while (i-- > 0)
		shard_fini(&c->shards[i]);
	free(c->shards);
free_cache:
	free(c);
	return NULL;
}

void
cache_set_stale_max_age(struct cache *c, uint32_t s)
{
	atomic_store_explicit(&c->stale_max_age_s, s, memory_order_relaxed);
}

void
cache_free(struct cache *c)
{
	if (c == NULL)
		return;
	for (unsigned i = 0; i < c->nshards; i++)
		shard_fini(&c->shards[i]);
	free(c->shards);
	sodium_memzero(c->hkey, sizeof(c->hkey));
	free(c);
}

int
cache_store(struct cache *c, const uint8_t *key, size_t klen,
    const uint8_t *resp, size_t len, uint32_t ttl, uint64_t now_ms)
{
	return store(c, key, klen, resp, len, ttl, now_ms, true);
}

int
cache_store_new(struct cache *c, const uint8_t *key, size_t klen,
    const uint8_t *resp, size_t len, uint32_t ttl, uint64_t now_ms)
{
	return store(c, key, klen, resp, len, ttl, now_ms, false);
}

static int
store(struct cache *c, const uint8_t *key, size_t klen, const uint8_t *resp,
    size_t len, uint32_t ttl, uint64_t now_ms, bool replace)
{
	uint16_t stack_off[CACHE_SCAN_STACK], *off = stack_off;
	struct entry *e, *old, *dead = NULL;
	struct shard *s;
	size_t noff;
	uint64_t h;
	int rc;

	if (ttl == 0 || klen == 0 || klen > CACHE_KEY_MAX)
		return -EINVAL;
	rc = scan_ttls(resp, len, off, CACHE_SCAN_STACK, &noff);
	if (rc == -ENOSPC) {
		/* Hundreds of records: a second pass into the heap. */
		off = malloc(noff * sizeof(*off));
		if (off == NULL)
			return -ENOMEM;
		rc = scan_ttls(resp, len, off, noff, &noff);
	}
	if (rc < 0)
		goto out;
	/* Built before taking the lock: malloc and the copy need no lock. */
	e = entry_new(key, klen, resp, len, off, noff, ttl, now_ms);
	if (e == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	if (entry_size(e) > c->budget) {
		entry_free(e);
		rc = -E2BIG;
		goto out;
	}
	h = cache_hash(c, key, klen);
	e->hash_hi = (uint32_t)(h >> 32);
	s = shard_of(c, h);

	pthread_mutex_lock(&s->lock);
	old = shard_find(s, h, key, klen);
	if (old != NULL && !replace) {
		pthread_mutex_unlock(&s->lock);
		entry_free(e);
		rc = -EEXIST;
		goto out;
	}
	if (old != NULL) {
		shard_unlink(s, old);
		old->hnext = dead;
		dead = old;
	}
	dead = shard_evict(c, s, entry_size(e), dead);
	shard_insert(c, s, e);
	s->stores++;
	pthread_mutex_unlock(&s->lock);

	free_chain(dead);
	rc = 0;
out:
	if (off != stack_off)
		free(off);
	return rc;
}

enum cache_result
cache_lookup(struct cache *c, const uint8_t *key, size_t klen, uint64_t now_ms,
    uint32_t stale_ttl, uint8_t *out, size_t cap, size_t *out_len,
    struct cache_hit *hit)
{
	uint64_t h = cache_hash(c, key, klen);
	struct shard *s = shard_of(c, h);
	struct entry *e, *dead = NULL;
	enum cache_result r = CACHE_MISS;
	struct cache_hit info;

	memset(&info, 0, sizeof(info));
	pthread_mutex_lock(&s->lock);
	e = shard_find(s, h, key, klen);
	if (e != NULL) {
		r = entry_age(e, now_ms,
		    atomic_load_explicit(
			&c->stale_max_age_s, memory_order_relaxed),
		    &info);
		if (r == CACHE_MISS) {
			/* Too old even for serve-stale: nobody can use it. */
			shard_unlink(s, e);
			dead = e;
		} else if (e->len == 0 && r == CACHE_STALE) {
			/* A failure entry past its hold: just a miss. */
			r = CACHE_MISS;
		} else if (out != NULL && e->len > cap) {
			r = CACHE_MISS;
		}
	}
	if (r == CACHE_FAILED) {
		s->failed_hits++;
		pthread_mutex_unlock(&s->lock);
		if (hit != NULL)
			*hit = info;
		if (out_len != NULL)
			*out_len = 0;
		return r;
	}
	if (r == CACHE_MISS) {
		s->misses++;
		pthread_mutex_unlock(&s->lock);
		if (dead != NULL)
			entry_free(dead);
		memset(&info, 0, sizeof(info));
		if (hit != NULL)
			*hit = info;
		if (out_len != NULL)
			*out_len = 0;
		return CACHE_MISS;
	}
	if (out != NULL)
		entry_copy_out(e, out, r == CACHE_FRESH, info.age_s, stale_ttl);
	if (out_len != NULL)
		*out_len = e->len;
	lru_unlink(s, e);
	lru_push_front(s, e);
	if (r == CACHE_FRESH)
		s->hits++;
	else
		s->stale_hits++;
	pthread_mutex_unlock(&s->lock);

	if (hit != NULL)
		*hit = info;
	return r;
}

uint64_t
cache_fail(struct cache *c, const uint8_t *key, size_t klen, uint64_t now_ms,
    uint32_t min_s, uint32_t max_s)
{
	struct entry *e, *fresh = NULL, *dead = NULL;
	struct shard *s;
	struct hold *hd;
	uint64_t h, until = 0;

	/* Checked before the key is read at all. */
	if (klen == 0 || klen > CACHE_KEY_MAX)
		return 0;
	h = cache_hash(c, key, klen);
	s = shard_of(c, h);
	if (min_s == 0)
		min_s = 1;
	if (max_s < min_s)
		max_s = min_s;
	/* Allocated outside the lock, in case the key has no entry yet. */
	fresh = entry_new(key, klen, NULL, 0, NULL, 0, 0, now_ms);
	if (fresh == NULL)
		return 0;
	fresh->hash_hi = (uint32_t)(h >> 32);
	pthread_mutex_lock(&s->lock);
	e = shard_find(s, h, key, klen);
	if (e == NULL) {
		dead = shard_evict(c, s, entry_size(fresh), dead);
		shard_insert(c, s, fresh);
		e = fresh;
		fresh = NULL;
	}
	e = entry_hold(s, e);
	if (e->bits & ENTRY_HELD) {
		hd = hold_ptr(e);
		/* Failing again soon after a hold ended: back off further. */
		if (hd->fail_s > 0 &&
		    now_ms < hd->until_ms + (uint64_t)hd->fail_s * 2000)
			hd->fail_s =
			    hd->fail_s * 2 > max_s ? max_s : hd->fail_s * 2;
		else
			hd->fail_s = min_s;
		hd->until_ms = now_ms + (uint64_t)hd->fail_s * 1000;
		hd->since_ms = now_ms;
		until = hd->until_ms;
	}
	pthread_mutex_unlock(&s->lock);
	free(fresh);
	free_chain(dead);
	return until;
}

bool
cache_hold(struct cache *c, const uint8_t *key, size_t klen, uint64_t now_ms,
    uint64_t until_ms)
{
	uint64_t h = cache_hash(c, key, klen);
	struct shard *s = shard_of(c, h);
	struct entry *e;
	struct hold *hd;
	bool data;

	pthread_mutex_lock(&s->lock);
	e = shard_find(s, h, key, klen);
	data = e != NULL && e->len > 0;
	if (data &&
	    (!(e->bits & ENTRY_HELD) || hold_ptr(e)->until_ms < until_ms)) {
		e = entry_hold(s, e);
		if (e->bits & ENTRY_HELD) {
			hd = hold_ptr(e);
			hd->until_ms = until_ms;
			hd->since_ms = now_ms;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return data;
}

uint64_t
cache_note_negative(struct cache *c, const uint8_t *key, size_t klen,
    uint64_t now_ms, uint64_t hold_until_ms)
{
	uint64_t h = cache_hash(c, key, klen);
	struct shard *s = shard_of(c, h);
	struct entry *e;
	struct hold *hd;
	uint64_t since = 0;

	pthread_mutex_lock(&s->lock);
	e = shard_find(s, h, key, klen);
	if (e != NULL && (e->bits & ENTRY_POSITIVE) && e->len > 0)
		e = entry_hold(s, e);
	if (e != NULL && (e->bits & ENTRY_POSITIVE) && e->len > 0 &&
	    (e->bits & ENTRY_HELD)) {
		hd = hold_ptr(e);
		if (hd->neg_since_ms == 0)
			hd->neg_since_ms = now_ms;
		hd->until_ms = hold_until_ms;
		hd->since_ms = now_ms;
		since = hd->neg_since_ms;
	}
	pthread_mutex_unlock(&s->lock);
	return since;
}

/* One entry as cache_walk copies it out of its shard. */
struct walk_rec {
	uint64_t stored_ms;
	uint64_t hold_until_ms;
	uint64_t neg_since_ms;
	uint32_t ttl;
	uint16_t klen, len;
};

/*
 * Copies a shard's entries, held failures included (least recently used
 * first, so a reload keeps the order) into one allocation under its lock;
 * fn then runs with no lock held, so a slow reader (a snapshot on a slow
 * disk) never stalls the shard's lookups.
 */
static uint8_t *
shard_copy(struct shard *s, size_t *used, bool *nomem)
{
	size_t need = 0, o = 0;
	uint8_t *buf;

	for (struct entry *e = s->tail; e != NULL; e = e->prev)
		need += sizeof(struct walk_rec) + entry_klen(e) + e->len;
	*used = 0;
	if (need == 0)
		return NULL;
	if ((buf = malloc(need)) == NULL) {
		*nomem = true;
		return NULL;
	}
	for (struct entry *e = s->tail; e != NULL; e = e->prev) {
		struct walk_rec rec;
		rec.stored_ms = e->stored_ms;
		rec.hold_until_ms =
		    (e->bits & ENTRY_HELD) ? hold_ptr(e)->until_ms : 0;
		rec.neg_since_ms =
		    (e->bits & ENTRY_HELD) ? hold_ptr(e)->neg_since_ms : 0;
		rec.ttl = e->ttl;
		rec.klen = (uint16_t)entry_klen(e);
		rec.len = e->len;
		memcpy(buf + o, &rec, sizeof(rec));
		o += sizeof(rec);
		o += entry_key_copy(e, buf + o);
		memcpy(buf + o, entry_resp(e), e->len);
		o += e->len;
	}
	*used = o;
	return buf;
}

int
cache_walk_full(struct cache *c, cache_walk_full_fn fn, void *arg)
{
	int rc = 0;

	for (unsigned i = 0; i < c->nshards; i++) {
		struct shard *s = &c->shards[i];
		size_t used, o = 0;
		uint8_t *buf;
		bool nomem = false;

		pthread_mutex_lock(&s->lock);
		buf = shard_copy(s, &used, &nomem);
		pthread_mutex_unlock(&s->lock);
		if (nomem)
			rc = -ENOMEM;
		while (o < used) {
			struct walk_rec rec;
			struct cache_walk_entry we;
			memcpy(&rec, buf + o, sizeof(rec));
			o += sizeof(rec);
			we.key = buf + o;
			we.klen = rec.klen;
			we.resp = buf + o + rec.klen;
			we.len = rec.len;
			we.ttl = rec.ttl;
			we.stored_ms = rec.stored_ms;
			we.hold_until_ms = rec.hold_until_ms;
			we.neg_since_ms = rec.neg_since_ms;
			fn(arg, &we);
			o += (size_t)rec.klen + rec.len;
		}
		free(buf);
	}
	return rc;
}

struct walk_adapter {
	cache_walk_fn fn;
	void *arg;
};

static void
walk_adapt(void *arg, const struct cache_walk_entry *e)
{
	struct walk_adapter *w = arg;

	if (e->len == 0)
		return; /* a held failure: nothing to save or show */
	w->fn(w->arg, e->key, e->klen, e->resp, e->len, e->ttl, e->stored_ms);
}

int
cache_walk(struct cache *c, cache_walk_fn fn, void *arg)
{
	struct walk_adapter w = {fn, arg};

	return cache_walk_full(c, walk_adapt, &w);
}

size_t
cache_remove_if(struct cache *c, cache_match_fn match, void *arg)
{
	size_t removed = 0;

	for (unsigned i = 0; i < c->nshards; i++) {
		struct shard *s = &c->shards[i];
		struct entry *e, *prev, *dead = NULL;

		pthread_mutex_lock(&s->lock);
		for (e = s->tail; e != NULL; e = prev) {
			uint8_t key[CACHE_KEY_MAX];
			prev = e->prev;
			if (!match(arg, key, entry_key_copy(e, key),
				e->bits & ENTRY_RCODE,
				(e->bits & ENTRY_POSITIVE) != 0, e->len == 0))
				continue;
			shard_unlink(s, e);
			e->hnext = dead;
			dead = e;
			removed++;
		}
		pthread_mutex_unlock(&s->lock);
		free_chain(dead);
	}
	return removed;
}

bool
cache_remove(struct cache *c, const uint8_t *key, size_t klen)
{
	uint64_t h = cache_hash(c, key, klen);
	struct shard *s = shard_of(c, h);
	struct entry *e;

	pthread_mutex_lock(&s->lock);
	e = shard_find(s, h, key, klen);
	if (e != NULL)
		shard_unlink(s, e);
	pthread_mutex_unlock(&s->lock);
	if (e == NULL)
		return false;
	entry_free(e);
	return true;
}

void
cache_get_stats(struct cache *c, struct cache_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < c->nshards; i++) {
		struct shard *s = &c->shards[i];

		pthread_mutex_lock(&s->lock);
		out->entries += s->entries;
		out->bytes += s->bytes;
		out->hits += s->hits;
		out->stale_hits += s->stale_hits;
		out->misses += s->misses;
		out->stores += s->stores;
		out->evictions += s->evictions;
		out->failed_hits += s->failed_hits;
		pthread_mutex_unlock(&s->lock);
	}
}

static uint64_t
cache_hash(const struct cache *c, const uint8_t *key, size_t klen)
{
	return rng_hash(c->hkey, key, klen);
}

static struct shard *
shard_of(const struct cache *c, uint64_t hash)
{
	return &c->shards[hash & (c->nshards - 1)];
}

static int
shard_init(struct shard *s)
{
	memset(s, 0, sizeof(*s));
	s->buckets = calloc(CACHE_MIN_BUCKETS, sizeof(*s->buckets));
	if (s->buckets == NULL)
		return -ENOMEM;
	s->mask = CACHE_MIN_BUCKETS - 1;
	if (pthread_mutex_init(&s->lock, NULL) != 0) {
		free(s->buckets);
		return -ENOMEM;
	}
	return 0;
}

static void
shard_fini(struct shard *s)
{
	struct entry *e = s->head, *next;

	while (e != NULL) {
		next = e->next;
		entry_free(e);
		e = next;
	}
	free(s->buckets);
	s->buckets = NULL;
	pthread_mutex_destroy(&s->lock);
}

/* What the shard holds against its budget: entries and bucket table. */
static uint64_t
shard_used(const struct shard *s)
{
	return s->bytes + (s->mask + 1) * sizeof(*s->buckets);
}

/*
 * Doubles the table once entries outnumber buckets, so chains stay short
 * and the table costs a pointer or two per entry, not the budget's worth
 * up front.  This runs under the shard lock, log2(entries) times in the
 * shard's life, and costs one pass over its entries: amortized, one move
 * per store.  Without memory for the bigger table the chains just grow.
 */
static void
shard_grow(struct cache *c, struct shard *s)
{
	size_t n = (s->mask + 1) * 2;
	struct entry **nb;

	if (s->entries <= s->mask + 1 || n > CACHE_MAX_BUCKETS ||
	    n * sizeof(*nb) > c->budget / 8)
		return;
	nb = calloc(n, sizeof(*nb));
	if (nb == NULL)
		return;
	for (size_t b = 0; b <= s->mask; b++) {
		struct entry *e = s->buckets[b], *next;
		for (; e != NULL; e = next) {
			struct entry **to = &nb[e->hash_hi & (n - 1)];
			next = e->hnext;
			e->hnext = *to;
			*to = e;
		}
	}
	free(s->buckets);
	s->buckets = nb;
	s->mask = n - 1;
}

/* The bucket index uses the high half; shard_of() uses the low half. */
static struct entry **
bucket_of(struct shard *s, uint32_t hash_hi)
{
	return &s->buckets[hash_hi & s->mask];
}

static struct entry *
shard_find(struct shard *s, uint64_t hash, const uint8_t *key, size_t klen)
{
	uint32_t hi = (uint32_t)(hash >> 32);

	for (struct entry *e = *bucket_of(s, hi); e != NULL; e = e->hnext)
		if (e->hash_hi == hi && entry_klen(e) == klen &&
		    key_equal(e, key, klen))
			return e;
	return NULL;
}

static void
shard_insert(struct cache *c, struct shard *s, struct entry *e)
{
	struct entry **b = bucket_of(s, e->hash_hi);

	e->hnext = *b;
	*b = e;
	lru_push_front(s, e);
	s->entries++;
	s->bytes += entry_size(e);
	shard_grow(c, s);
}

static void
shard_unlink(struct shard *s, struct entry *e)
{
	struct entry **pp = bucket_of(s, e->hash_hi);

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	e->hnext = NULL;
	lru_unlink(s, e);
	s->entries--;
	s->bytes -= entry_size(e);
}

/*
 * Unlinks least recently used entries until size more bytes fit the
 * budget; returns them chained (on hnext) before dead, to be freed once
 * the lock is released.  size <= budget, so this stops in time.
 */
static struct entry *
shard_evict(struct cache *c, struct shard *s, size_t size, struct entry *dead)
{
	while (shard_used(s) + size > c->budget && s->tail != NULL) {
		struct entry *old = s->tail;
		shard_unlink(s, old);
		old->hnext = dead;
		dead = old;
		s->evictions++;
	}
	return dead;
}

static void
lru_unlink(struct shard *s, struct entry *e)
{
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		s->head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		s->tail = e->prev;
	e->prev = e->next = NULL;
}

static void
lru_push_front(struct shard *s, struct entry *e)
{
	e->prev = NULL;
	e->next = s->head;
	if (s->head != NULL)
		s->head->prev = e;
	else
		s->tail = e;
	s->head = e;
}

/*
 * One pass over the message: records the TTL offset of every RR but OPT
 * into off (cap of them; *n is the count even past cap, then -ENOSPC) and
 * proves that no owner name is read through a TTL field: lookups rewrite
 * every TTL, so such a name would change, or stop parsing, with the time
 * left.  Pointers lead only backwards, so an owner can only reach TTLs of
 * records before it, all recorded by then.  The message must parse to its
 * last byte: trailing bytes would be cached and served to clients
 * although no parser ever looked at them.
 */
static int
scan_ttls(const uint8_t *msg, size_t len, uint16_t *off, size_t cap, size_t *n)
{
	struct wire_iter it;
	struct wire_rr rr;
	size_t end;
	int rc;

	*n = 0;
	if (len < WIRE_HDR_LEN || len > WIRE_MSG_MAX)
		return -EBADMSG;
	if (wire_iter_init(&it, msg, len) < 0)
		return -EBADMSG;
	end = it.off;
	while ((rc = wire_iter_next(&it, &rr)) > 0) {
		end = rr.end;
		if (*n > 0 &&
		    !owner_avoids_ttls(msg, rr.off, off, *n < cap ? *n : cap))
			return -EBADMSG;
		if (rr.type == WIRE_TYPE_OPT)
			continue;
		if (*n < cap)
			off[*n] = (uint16_t)(rr.type_off + 4);
		(*n)++;
	}
	if (rc < 0 || end != len)
		return -EBADMSG;
	return *n > cap ? -ENOSPC : 0;
}

/* True if bytes [lo, hi) overlap one of the n TTL fields at off
 * (ascending). */
static bool
range_in_ttl(const uint16_t *off, size_t n, size_t lo, size_t hi)
{
	size_t a = 0, b = n;

	/* The first field that ends after lo. */
	while (a < b) {
		size_t mid = a + (b - a) / 2;
		if ((size_t)off[mid] + 4 <= lo)
			a = mid + 1;
		else
			b = mid;
	}
	return a < n && off[a] < hi;
}

/*
 * The owner name at o (already proved sane by the iterator: pointers only
 * backwards, so this ends) touches none of the n TTL fields at off.
 */
static bool
owner_avoids_ttls(const uint8_t *msg, size_t o, const uint16_t *off, size_t n)
{
	for (;;) {
		uint8_t l = msg[o];

		if ((l & 0xc0) == 0xc0) {
			if (range_in_ttl(off, n, o, o + 2))
				return false;
			o = ((size_t)(l & 0x3f) << 8) | msg[o + 1];
			continue;
		}
		if (range_in_ttl(off, n, o, o + 1 + (size_t)l))
			return false;
		if (l == 0)
			return true;
		o += (size_t)l + 1;
	}
}

/*
 * True when key (klen bytes) is resp's question as cache_make_key makes
 * it, byte for byte: the name already lower case, the class the same.
 * Its type and flags byte may differ (an NXDOMAIN is kept under type 0).
 */
static bool
question_is_key(
    const uint8_t *resp, size_t len, const uint8_t *key, size_t klen)
{
	struct wire_question q;

	return WIRE_QDCOUNT(resp) == 1 &&
	    wire_read_question(resp, len, &q) == 0 && q.name_len + 5 == klen &&
	    memcmp(resp + q.name_off, key, q.name_len) == 0 &&
	    wire_u16(key + q.name_len + 2) == q.qclass;
}

static struct entry *
entry_new(const uint8_t *key, size_t klen, const uint8_t *resp, size_t len,
    const uint16_t *off, size_t noff, uint32_t ttl, uint64_t now_ms)
{
	bool qkey = len > 0 && question_is_key(resp, len, key, klen);
	size_t size =
	    ENTRY_HDR + noff * sizeof(uint16_t) + (qkey ? 0 : klen) + len;
	struct entry *e;

	/* A failure entry: a key and a hold, no data. */
	if (len == 0)
		size = ((size + 7) & ~(size_t)7) + sizeof(struct hold);
	e = malloc(size);
	if (e == NULL)
		return NULL;
	memset(e, 0, ENTRY_HDR);
	e->stored_ms = now_ms;
	e->ttl = ttl;
	e->klen_lo = (uint8_t)klen;
	e->bits = klen > 0xff ? ENTRY_KLEN_HI : 0;
	e->len = (uint16_t)len;
	e->noff = (uint16_t)noff;
	if (qkey) {
		e->bits |= ENTRY_QKEY;
		e->ktype = wire_u16(key + klen - 5);
		e->kflags = key[klen - 1];
	} else {
		memcpy(entry_key(e), key, klen);
	}
	if (len == 0) {
		e->bits |= ENTRY_HELD | WIRE_RCODE_SERVFAIL;
		memset(hold_ptr(e), 0, sizeof(struct hold));
		return e;
	}
	e->bits |= WIRE_RCODE(WIRE_FLAGS(resp));
	if (WIRE_RCODE(WIRE_FLAGS(resp)) == WIRE_RCODE_NOERROR &&
	    WIRE_ANCOUNT(resp) > 0)
		e->bits |= ENTRY_POSITIVE;
	memcpy(e->off, off, noff * sizeof(uint16_t));
	memcpy(entry_resp(e), resp, len);
	/*
	 * No record may run out before the entry does; one claiming more
	 * than a week (or with the high bit set, RFC 8767 4) gets the
	 * entry's TTL.  The engine has clamped them to max-ttl already.
	 */
	for (size_t i = 0; i < noff; i++) {
		uint32_t own = wire_u32(entry_resp(e) + e->off[i]);
		if (own < ttl || own > CACHE_TTL_MAX)
			wire_put32(entry_resp(e) + e->off[i], ttl);
	}
	/* IDs are per exchange; every reply gets the client's own. */
	wire_put16(entry_resp(e), 0);
	return e;
}

static size_t
entry_klen(const struct entry *e)
{
	return e->klen_lo + ((e->bits & ENTRY_KLEN_HI) ? 256u : 0u);
}

/* Header, offsets, key and response: the allocation without a hold. */
static size_t
entry_bytes(const struct entry *e)
{
	return ENTRY_HDR + e->noff * sizeof(uint16_t) +
	    ((e->bits & ENTRY_QKEY) ? 0 : entry_klen(e)) + e->len;
}

/*
 * What the budget counts: the entry, and a failure entry's hold (a data
 * entry's, rare and temporary, is not counted, so holding never evicts).
 */
static size_t
entry_size(const struct entry *e)
{
	return entry_bytes(e) + (e->len == 0 ? sizeof(struct hold) : 0);
}

static void
entry_free(struct entry *e)
{
	free(e);
}

/* The stored key (not for ENTRY_QKEY entries). */
static uint8_t *
entry_key(struct entry *e)
{
	return (uint8_t *)(e->off + e->noff);
}

static uint8_t *
entry_resp(struct entry *e)
{
	return (uint8_t *)(e->off + e->noff) +
	    ((e->bits & ENTRY_QKEY) ? 0 : entry_klen(e));
}

/* Writes e's key into out (CACHE_KEY_MAX bytes); returns its length. */
static size_t
entry_key_copy(struct entry *e, uint8_t *out)
{
	size_t klen = entry_klen(e), nl = klen - 5;

	if (!(e->bits & ENTRY_QKEY)) {
		memcpy(out, entry_key(e), klen);
		return klen;
	}
	/* Name and class from the question; type and flags our own. */
	memcpy(out, entry_resp(e) + WIRE_HDR_LEN, nl);
	wire_put16(out + nl, e->ktype);
	memcpy(out + nl + 2, entry_resp(e) + WIRE_HDR_LEN + nl + 2, 2);
	out[nl + 4] = e->kflags;
	return klen;
}

/* e's key is key (klen == entry_klen(e)). */
static bool
key_equal(struct entry *e, const uint8_t *key, size_t klen)
{
	const uint8_t *q;
	size_t nl = klen - 5;

	if (!(e->bits & ENTRY_QKEY))
		return memcmp(entry_key(e), key, klen) == 0;
	q = entry_resp(e) + WIRE_HDR_LEN;
	return key[klen - 1] == e->kflags && wire_u16(key + nl) == e->ktype &&
	    memcmp(q, key, nl) == 0 && memcmp(q + nl + 2, key + nl + 2, 2) == 0;
}

/* The hold of an ENTRY_HELD entry. */
static struct hold *
hold_ptr(struct entry *e)
{
	return (
	    struct hold *)((uint8_t *)e + ((entry_bytes(e) + 7) & ~(size_t)7));
}

/*
 * e with a hold (zeroed if new): e itself, or its copy in a larger
 * allocation linked in its place.  Out of memory, e without one.  Holds
 * are rare (failures, stale refreshes, stale-on-negative), so the
 * allocation under the lock is too.
 */
static struct entry *
entry_hold(struct shard *s, struct entry *e)
{
	size_t bytes = entry_bytes(e), at = (bytes + 7) & ~(size_t)7;
	struct entry *n, **pp;

	if (e->bits & ENTRY_HELD)
		return e;
	n = malloc(at + sizeof(struct hold));
	if (n == NULL)
		return e;
	memcpy(n, e, bytes);
	n->bits |= ENTRY_HELD;
	memset((uint8_t *)n + at, 0, sizeof(struct hold));
	for (pp = bucket_of(s, e->hash_hi); *pp != e; pp = &(*pp)->hnext)
		;
	*pp = n;
	if (e->prev != NULL)
		e->prev->next = n;
	else
		s->head = n;
	if (e->next != NULL)
		e->next->prev = n;
	else
		s->tail = n;
	free(e);
	return n;
}

/*
 * Fresh while now < stored + ttl; the TTL left rounds down, and is >= 1
 * while fresh.  A clock reading from before the store (another worker read
 * the monotonic clock a little earlier) counts as age 0.
 */
static enum cache_result
entry_age(const struct entry *e, uint64_t now_ms, uint32_t stale_max_age_s,
    struct cache_hit *hit)
{
	uint64_t life_ms = (uint64_t)e->ttl * 1000;
	uint64_t age_ms = now_ms > e->stored_ms ? now_ms - e->stored_ms : 0;
	uint64_t over_ms;

	const struct hold *hd =
	    (e->bits & ENTRY_HELD) ? hold_ptr((struct entry *)e) : NULL;

	hit->ttl = e->ttl;
	hit->rcode = e->bits & ENTRY_RCODE;
	hit->positive = (e->bits & ENTRY_POSITIVE) != 0;
	hit->hold_until_ms = hd ? hd->until_ms : 0;
	hit->hold_since_ms = hd ? hd->since_ms : 0;
	hit->neg_since_ms = hd ? hd->neg_since_ms : 0;
	if (e->len == 0) {
		/*
		 * A failure entry: held, then kept a while longer to remember
		 * the backoff should the next try fail too.
		 */
		if (hd == NULL || now_ms < hd->until_ms)
			return CACHE_FAILED;
		return now_ms < hd->until_ms + (uint64_t)hd->fail_s * 2000
		    ? CACHE_STALE
		    : CACHE_MISS;
	}
	hit->age_s = (uint32_t)(age_ms / 1000);
	if (age_ms < life_ms) {
		hit->ttl_left = e->ttl - (uint32_t)(age_ms / 1000);
		hit->stale_s = 0;
		return CACHE_FRESH;
	}
	over_ms = age_ms - life_ms;
	if (over_ms < (uint64_t)stale_max_age_s * 1000) {
		hit->ttl_left = 0;
		hit->stale_s = (uint32_t)(over_ms / 1000);
		return CACHE_STALE;
	}
	return CACHE_MISS;
}

/*
 * Each record counts down from its own TTL (a day-long CNAME in front of a
 * minute-long A keeps its day), the entry expiring with the shortest; a
 * stale copy gives every record the stale TTL.
 */
static void
entry_copy_out(struct entry *e, uint8_t *out, bool fresh, uint32_t age_s,
    uint32_t stale_ttl)
{
	memcpy(out, entry_resp(e), e->len);
	for (size_t i = 0; i < e->noff; i++) {
		uint32_t own = wire_u32(out + e->off[i]);
		wire_put32(out + e->off[i],
		    !fresh            ? stale_ttl
			: own > age_s ? own - age_s
				      : 0);
	}
}

static void
free_chain(struct entry *e)
{
	struct entry *next;

	for (; e != NULL; e = next) {
		next = e->hnext;
		entry_free(e);
	}
}
