/*
 * cache: sharded table of response bytes (see include/stubborn/cache.h).
 *
 * Each entry is one allocation: header, TTL offsets, key, response.  The TTL
 * offsets are found once at store time so that a lookup is a memcpy plus a
 * few 4-byte patches, with no parsing and no allocation under the lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "stubborn/cache.h"
#include "stubborn/rng.h"
#include "stubborn/wire.h"

/*
 * One bucket per this many bytes of budget.  A typical entry (header, key,
 * a response of a hundred or two bytes) is about this size, so chains stay
 * short while the table is fixed: it never grows, so no rehash ever runs
 * under a shard lock, and it costs about 3% of the budget.
 */
#define CACHE_BYTES_PER_BUCKET 256
#define CACHE_MAX_BUCKETS (1u << 30)
/* Shard and bucket come from disjoint halves of the 64-bit hash. */
#define CACHE_MAX_SHARDS (1u << 16)
/* Shards are padded apart so that two workers' locks do not share a line. */
#define CACHE_LINE 64
/* The longest TTL a record keeps (max-ttl's ceiling). */
#define CACHE_TTL_MAX 604800

struct entry {
	struct entry *hnext; /* bucket chain */
	struct entry *prev;  /* LRU neighbour towards the most recently used */
	struct entry *next;  /* LRU neighbour towards the least recently used */
	uint64_t hash;
	uint64_t stored_ms;
	size_t size; /* the whole allocation: what the budget counts */
	uint32_t ttl;
	uint16_t klen;
	uint16_t len;
	uint16_t noff;
	uint8_t rcode;
	bool positive;
	uint32_t fail_s; /* current failure hold length (RFC 9520) */
	uint64_t hold_until_ms;
	uint64_t hold_since_ms; /* when the current hold was placed */
	uint64_t neg_since_ms;
	uint16_t off[]; /* noff TTL offsets, then key, then response */
};

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
	uint64_t budget;                  /* per shard, for entries */
	_Atomic uint32_t stale_max_age_s; /* changed by a reload */
	unsigned char hkey[crypto_shorthash_KEYBYTES];
};

static uint64_t cache_hash(const struct cache *, const uint8_t *, size_t);
static struct shard *shard_of(const struct cache *, uint64_t);
static struct entry **bucket_of(struct shard *, uint64_t);
static int shard_init(struct shard *, size_t);
static void shard_fini(struct shard *);
static struct entry *shard_find(
    struct shard *, uint64_t, const uint8_t *, size_t);
static void shard_insert(struct shard *, struct entry *);
static void shard_unlink(struct shard *, struct entry *);
static void lru_unlink(struct shard *, struct entry *);
static void lru_push_front(struct shard *, struct entry *);
static int scan_ttls(const uint8_t *, size_t, uint16_t *, size_t *);
static bool in_ttl(const uint16_t *, size_t, size_t);
static bool names_avoid_ttls(const uint8_t *, size_t, const uint16_t *, size_t);
static struct entry *entry_new(const uint8_t *, size_t, const uint8_t *, size_t,
    size_t, uint32_t, uint64_t);
static uint8_t *entry_key(struct entry *);
static uint8_t *entry_resp(struct entry *);
static enum cache_result entry_age(
    const struct entry *, uint64_t, uint32_t, struct cache_hit *);
static void entry_copy_out(struct entry *, uint8_t *, bool, uint32_t, uint32_t);
static void free_chain(struct entry *);
static int store(struct cache *, const uint8_t *, size_t, const uint8_t *,
    size_t, uint32_t, uint64_t, bool);

size_t
cache_make_key(uint8_t *key, const uint8_t *qname, size_t qname_len,
    uint16_t qtype, uint16_t qclass, unsigned flags)
{
	size_t pos = 0;

	if (qname_len > WIRE_NAME_MAX)
		qname_len = WIRE_NAME_MAX;
	/*
	 * Walk the labels so that a length byte that happens to be in
	 * 'A'..'Z' (65..90) is never folded; only label bytes are.
	 */
	while (pos < qname_len) {
		size_t llen = qname[pos];

		key[pos] = qname[pos];
		pos++;
		for (size_t i = 0; i < llen && pos < qname_len; i++, pos++) {
			uint8_t ch = qname[pos];

			if (ch >= 'A' && ch <= 'Z')
				ch += 'a' - 'A';
			key[pos] = ch;
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
	uint64_t per_shard, table;
	size_t nbuckets = 1;
	unsigned n = 1, i;

	while (n < shards && n < CACHE_MAX_SHARDS)
		n <<= 1;
	per_shard = max_bytes / n;
	while (nbuckets < per_shard / CACHE_BYTES_PER_BUCKET &&
	    nbuckets < CACHE_MAX_BUCKETS)
		nbuckets <<= 1;
	/* The promise is max_bytes including bookkeeping, tables too. */
	table = nbuckets * sizeof(struct entry *) + sizeof(struct shard);

	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->nshards = n;
	c->budget = per_shard > table ? per_shard - table : 0;
	atomic_init(&c->stale_max_age_s, stale_max_age_s);
	rng_bytes(c->hkey, sizeof(c->hkey));
	c->shards = aligned_alloc(CACHE_LINE, n * sizeof(struct shard));
	if (c->shards == NULL)
		goto free_cache;
	for (i = 0; i < n; i++)
		if (shard_init(&c->shards[i], nbuckets) < 0)
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
	struct entry *e, *old, *dead = NULL;
	struct shard *s;
	size_t noff, size;
	int rc;

	if (ttl == 0 || klen == 0 || klen > CACHE_KEY_MAX)
		return -EINVAL;
	rc = scan_ttls(resp, len, NULL, &noff);
	if (rc < 0)
		return rc;
	size = sizeof(struct entry) + noff * sizeof(uint16_t) + klen + len;
	if (size > c->budget)
		return -E2BIG;
	/* Built before taking the lock: malloc and the copy need no lock. */
	e = entry_new(key, klen, resp, len, noff, ttl, now_ms);
	if (e == NULL)
		return -ENOMEM;
	if (!names_avoid_ttls(resp, len, e->off, e->noff)) {
		free(e);
		return -EBADMSG;
	}
	e->hash = cache_hash(c, key, klen);
	s = shard_of(c, e->hash);

	pthread_mutex_lock(&s->lock);
	old = shard_find(s, e->hash, key, klen);
	if (old != NULL && !replace) {
		pthread_mutex_unlock(&s->lock);
		free(e);
		return -EEXIST;
	}
	if (old != NULL) {
		shard_unlink(s, old);
		old->hnext = dead;
		dead = old;
	}
	/* size <= budget, so this stops before the shard is empty. */
	while (s->bytes + e->size > c->budget && s->tail != NULL) {
		old = s->tail;
		shard_unlink(s, old);
		old->hnext = dead;
		dead = old;
		s->evictions++;
	}
	shard_insert(s, e);
	s->stores++;
	pthread_mutex_unlock(&s->lock);

	free_chain(dead);
	return 0;
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
		free(dead);
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
	uint64_t h = cache_hash(c, key, klen);
	struct shard *s = shard_of(c, h);
	struct entry *e, *fresh = NULL, *dead = NULL;
	uint64_t until;

	if (klen == 0 || klen > CACHE_KEY_MAX)
		return 0;
	if (min_s == 0)
		min_s = 1;
	if (max_s < min_s)
		max_s = min_s;
	/* Allocated outside the lock, in case the key has no entry yet. */
	fresh = entry_new(key, klen, NULL, 0, 0, 0, now_ms);
	if (fresh == NULL)
		return 0;
	fresh->hash = h;
	pthread_mutex_lock(&s->lock);
	e = shard_find(s, h, key, klen);
	if (e == NULL) {
		while (s->bytes + fresh->size > c->budget && s->tail != NULL) {
			struct entry *old = s->tail;
			shard_unlink(s, old);
			old->hnext = dead;
			dead = old;
			s->evictions++;
		}
		shard_insert(s, fresh);
		e = fresh;
		fresh = NULL;
	}
	/* Failing again soon after a hold ended: back off further. */
	if (e->fail_s > 0 &&
	    now_ms < e->hold_until_ms + (uint64_t)e->fail_s * 2000)
		e->fail_s = e->fail_s * 2 > max_s ? max_s : e->fail_s * 2;
	else
		e->fail_s = min_s;
	e->hold_until_ms = now_ms + (uint64_t)e->fail_s * 1000;
	e->hold_since_ms = now_ms;
	until = e->hold_until_ms;
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
	bool held;

	pthread_mutex_lock(&s->lock);
	e = shard_find(s, h, key, klen);
	/* Decided under the lock: once it is released, another worker may
	 * replace or evict the entry and free it. */
	held = e != NULL && e->len > 0;
	if (held && e->hold_until_ms < until_ms) {
		e->hold_until_ms = until_ms;
		e->hold_since_ms = now_ms;
	}
	pthread_mutex_unlock(&s->lock);
	return held;
}

uint64_t
cache_note_negative(struct cache *c, const uint8_t *key, size_t klen,
    uint64_t now_ms, uint64_t hold_until_ms)
{
	uint64_t h = cache_hash(c, key, klen);
	struct shard *s = shard_of(c, h);
	struct entry *e;
	uint64_t since = 0;

	pthread_mutex_lock(&s->lock);
	e = shard_find(s, h, key, klen);
	if (e != NULL && e->positive && e->len > 0) {
		if (e->neg_since_ms == 0)
			e->neg_since_ms = now_ms;
		e->hold_until_ms = hold_until_ms;
		e->hold_since_ms = now_ms;
		since = e->neg_since_ms;
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
		need += sizeof(struct walk_rec) + e->klen + e->len;
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
		rec.hold_until_ms = e->hold_until_ms;
		rec.neg_since_ms = e->neg_since_ms;
		rec.ttl = e->ttl;
		rec.klen = e->klen;
		rec.len = e->len;
		memcpy(buf + o, &rec, sizeof(rec));
		o += sizeof(rec);
		memcpy(buf + o, entry_key(e), e->klen);
		o += e->klen;
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
			prev = e->prev;
			if (!match(arg, entry_key(e), e->klen, e->rcode,
				e->positive, e->len == 0))
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
	free(e);
	return e != NULL;
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
	unsigned char out[crypto_shorthash_BYTES];
	uint64_t h;

	crypto_shorthash(out, key, klen, c->hkey);
	memcpy(&h, out, sizeof(h));
	return h;
}

static struct shard *
shard_of(const struct cache *c, uint64_t hash)
{
	return &c->shards[hash & (c->nshards - 1)];
}

static int
shard_init(struct shard *s, size_t nbuckets)
{
	memset(s, 0, sizeof(*s));
	s->buckets = calloc(nbuckets, sizeof(*s->buckets));
	if (s->buckets == NULL)
		return -ENOMEM;
	s->mask = nbuckets - 1;
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
		free(e);
		e = next;
	}
	free(s->buckets);
	s->buckets = NULL;
	pthread_mutex_destroy(&s->lock);
}

/* The bucket index uses the high half; shard_of() uses the low half. */
static struct entry **
bucket_of(struct shard *s, uint64_t hash)
{
	return &s->buckets[(hash >> 32) & s->mask];
}

static struct entry *
shard_find(struct shard *s, uint64_t hash, const uint8_t *key, size_t klen)
{
	for (struct entry *e = *bucket_of(s, hash); e != NULL; e = e->hnext)
		if (e->hash == hash && e->klen == klen &&
		    memcmp(entry_key(e), key, klen) == 0)
			return e;
	return NULL;
}

static void
shard_insert(struct shard *s, struct entry *e)
{
	struct entry **b = bucket_of(s, e->hash);

	e->hnext = *b;
	*b = e;
	lru_push_front(s, e);
	s->entries++;
	s->bytes += e->size;
}

static void
shard_unlink(struct shard *s, struct entry *e)
{
	struct entry **pp = bucket_of(s, e->hash);

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	e->hnext = NULL;
	lru_unlink(s, e);
	s->entries--;
	s->bytes -= e->size;
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
 * Counts (off == NULL) or records the TTL offsets of every RR but OPT.  The
 * message must parse to its last byte: trailing bytes would be cached and
 * served to clients although no parser ever looked at them.
 */
static int
scan_ttls(const uint8_t *msg, size_t len, uint16_t *off, size_t *n)
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
		if (rr.type == WIRE_TYPE_OPT)
			continue;
		if (off != NULL)
			off[*n] = (uint16_t)(rr.type_off + 4);
		(*n)++;
	}
	if (rc < 0 || end != len)
		return -EBADMSG;
	return 0;
}

/* True if offset o is inside one of the n TTL fields at off (ascending). */
static bool
in_ttl(const uint16_t *off, size_t n, size_t o)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if ((size_t)off[mid] + 4 <= o)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && off[lo] <= o;
}

/*
 * Lookups rewrite every TTL, so no owner name may be read through one (a
 * compression pointer into a TTL field): the name would change, or stop
 * parsing, with the time left.  scan_ttls() has proved every owner name
 * sane (pointers only backwards), so these loops end.
 */
static bool
names_avoid_ttls(const uint8_t *msg, size_t len, const uint16_t *off, size_t n)
{
	struct wire_iter it;
	struct wire_rr rr;

	if (wire_iter_init(&it, msg, len) < 0)
		return false;
	while (wire_iter_next(&it, &rr) == 1) {
		size_t o = rr.off;

		for (;;) {
			uint8_t l = msg[o];

			if (in_ttl(off, n, o))
				return false;
			if ((l & 0xc0) == 0xc0) {
				if (in_ttl(off, n, o + 1))
					return false;
				o = ((size_t)(l & 0x3f) << 8) | msg[o + 1];
				continue;
			}
			if (l == 0)
				break;
			for (size_t i = 1; i <= l; i++)
				if (in_ttl(off, n, o + i))
					return false;
			o += (size_t)l + 1;
		}
	}
	return true;
}

static struct entry *
entry_new(const uint8_t *key, size_t klen, const uint8_t *resp, size_t len,
    size_t noff, uint32_t ttl, uint64_t now_ms)
{
	size_t size =
	    sizeof(struct entry) + noff * sizeof(uint16_t) + klen + len;
	struct entry *e = malloc(size);
	size_t n;

	if (e == NULL)
		return NULL;
	memset(e, 0, sizeof(*e));
	e->size = size;
	e->stored_ms = now_ms;
	e->ttl = ttl;
	e->klen = (uint16_t)klen;
	e->len = (uint16_t)len;
	e->noff = (uint16_t)noff;
	memcpy(entry_key(e), key, klen);
	if (len == 0) {
		/* A failure entry (cache_fail): a key and a hold, no data. */
		e->rcode = WIRE_RCODE_SERVFAIL;
		return e;
	}
	e->rcode = (uint8_t)WIRE_RCODE(WIRE_FLAGS(resp));
	e->positive = e->rcode == WIRE_RCODE_NOERROR && WIRE_ANCOUNT(resp) > 0;
	/* Same message as the counting pass, so the same count. */
	(void)scan_ttls(resp, len, e->off, &n);
	memcpy(entry_resp(e), resp, len);
	/*
	 * No record may run out before the entry does; one claiming more
	 * than a week (or with the high bit set, RFC 8767 4) gets the
	 * entry's TTL.  The engine has clamped them to max-ttl already.
	 */
	for (size_t i = 0; i < n; i++) {
		uint32_t own = wire_u32(entry_resp(e) + e->off[i]);
		if (own < ttl || own > CACHE_TTL_MAX)
			wire_put32(entry_resp(e) + e->off[i], ttl);
	}
	/* IDs are per exchange; every reply gets the client's own. */
	wire_put16(entry_resp(e), 0);
	return e;
}

static uint8_t *
entry_key(struct entry *e)
{
	return (uint8_t *)(e->off + e->noff);
}

static uint8_t *
entry_resp(struct entry *e)
{
	return entry_key(e) + e->klen;
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

	hit->ttl = e->ttl;
	hit->rcode = e->rcode;
	hit->positive = e->positive;
	hit->hold_until_ms = e->hold_until_ms;
	hit->hold_since_ms = e->hold_since_ms;
	hit->neg_since_ms = e->neg_since_ms;
	if (e->len == 0) {
		/*
		 * A failure entry: held, then kept a while longer to remember
		 * the backoff should the next try fail too.
		 */
		if (now_ms < e->hold_until_ms)
			return CACHE_FAILED;
		return now_ms < e->hold_until_ms + (uint64_t)e->fail_s * 2000
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
		free(e);
	}
}
