#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <sodium.h>

#include "stubborn/cache.h"
#include "stubborn/clock.h"
#include "stubborn/config.h"
#include "stubborn/cookie.h"
#include "stubborn/forward.h"
#include "stubborn/log.h"
#include "stubborn/metrics.h"
#include "stubborn/msg.h"
#include "stubborn/rng.h"
#include "stubborn/upstream.h"
#include "stubborn/wire.h"

#define FWD_BUCKETS 4096      /* power of two */
#define FWD_MAX_INFLIGHT 8192 /* per worker */
#define FWD_MAX_ZONES (CONFIG_MAX_ZONES + 1)
#define FWD_QBYTES_MAX (WIRE_HDR_LEN + WIRE_NAME_MAX + 4)
#define FWD_BIND_TRIES 8

/* Why the last attempt failed; picks the EDE once every upstream failed. */
enum fail_kind {
	FAIL_NONE = 0,
	FAIL_TIMEOUT,
	FAIL_NETWORK,
	FAIL_RCODE,
	FAIL_MALFORMED,
	FAIL_ALL_DOWN,
	FAIL_SHED, /* upstream rate budget short: not the name's fault */
};

struct fwd_waiter {
	struct fwd_waiter *next;
	struct fwd_client cl;
	struct wire_query q;
	size_t qlen; /* header + question bytes */
	uint8_t qbytes[FWD_QBYTES_MAX];
};

struct fwd_query;

/*
 * One query to one upstream server.  An attempt outlives its query when
 * another attempt answered first (it is "orphaned": q is NULL): its late
 * answer or timeout still tells the pool how the server is doing.
 */
struct fwd_attempt {
	struct forward *f;
	struct fwd_query *q;             /* NULL when orphaned or a probe */
	struct fwd_attempt *qnext;       /* q's attempts */
	struct fwd_attempt *prev, *next; /* every live attempt of f */
	struct upstream_pool *pool;
	unsigned up;
	bool probe;
	bool exact_case; /* 0x20: the reply must echo qname */
	bool edns;       /* sends OPT */
	bool tcp;
	uint16_t id;
	uint8_t qname[WIRE_NAME_MAX]; /* lower-cased */
	size_t qname_len;
	uint16_t qtype, qclass, qflags;
	bool do_bit;
	uint64_t sent_ms;
	/*
	 * Event lifetimes: ev_read/fd and bev belong to the current transport
	 * and are freed by transport_close(); ev_timer (the attempt deadline)
	 * is freed with the attempt.  All deletions are idempotent.
	 */
	int fd;
	struct event *ev_read;
	struct bufferevent *bev;
	struct event *ev_timer;
};

struct fwd_query {
	struct forward *f;
	struct fwd_query *hnext;     /* bucket chain */
	struct fwd_query *dead_next; /* reap list, once finished */
	uint64_t hash;
	uint8_t key[CACHE_KEY_MAX];
	size_t klen;
	uint8_t qname[WIRE_NAME_MAX]; /* lower-cased */
	size_t qname_len;
	uint16_t qtype, qclass, qflags;
	bool do_bit;
	bool cacheable;
	struct fwd_waiter *waiters;
	unsigned nwaiters;
	struct upstream_pool *pool;
	struct fwd_attempt *attempts; /* still waiting for an answer */
	unsigned active;
	uint32_t tried; /* bit per server already asked */
	enum fail_kind fail;
	struct event *ev_hedge; /* freed by query_free */
	struct event *ev_stale; /* stale-client-timeout; freed by
				   query_free */
	enum upstream_prio prio;
	bool stale_armed;
	bool stale_served; /* waiters got stale: now a refresh */
	bool done;
};

struct forward {
	struct event_base *base;
	const struct config *cfg;
	struct cache *cache;
	struct metrics_worker *met;
	struct msg_policy policy;
	struct fwd_zone zones[FWD_MAX_ZONES];
	size_t nzones;
	uint8_t neg_zones[CONFIG_MAX_ZONES]
			 [WIRE_NAME_MAX]; /* stale-on-negative */
	size_t neg_zone_len[CONFIG_MAX_ZONES];
	size_t n_neg_zones;
	size_t inflight;
	struct fwd_query *buckets[FWD_BUCKETS];
	uint8_t hash_key[crypto_shorthash_KEYBYTES];
	struct fwd_query *dead;
	struct fwd_attempt *attempts; /* every live attempt */
	struct event *ev_reap;
	bool draining;
	void (*drain_done)(void *);
	void *drain_arg;
	struct event *ev_drain;
	uint8_t buf[WIRE_MSG_MAX + 512]; /* scratch for replies */
};

static struct fwd_query *table_find(
    struct forward *f, uint64_t h, const uint8_t *key, size_t klen);
static void table_remove(struct forward *f, struct fwd_query *q);
static int add_waiter(struct fwd_query *q, const uint8_t *query,
    const struct wire_query *wq, const struct fwd_client *cl);
static struct upstream_pool *pool_for(
    struct forward *f, const uint8_t *qname, size_t len);
static int launch(struct fwd_query *q, bool retry);
static void start(struct fwd_query *q);
static struct fwd_attempt *attempt_new(struct forward *f,
    struct upstream_pool *pool, unsigned up, const uint8_t *qname,
    size_t qname_len, uint16_t qtype, uint16_t qclass, uint16_t qflags,
    bool do_bit);
static int attempt_send(struct fwd_attempt *a);
static void attempt_fail(struct fwd_attempt *a, enum fail_kind why);
static void attempt_free(struct fwd_attempt *a);
static void transport_close(struct fwd_attempt *a);
static int send_udp(struct fwd_attempt *a);
static int send_tcp(struct fwd_attempt *a);
static int build_upstream_query(
    struct fwd_attempt *a, uint8_t *out, size_t cap);
static bool reply_matches(struct fwd_attempt *a, const uint8_t *m, size_t len);
static void handle_reply(struct fwd_attempt *a, uint8_t *m, size_t len);
static void arm_hedge(struct fwd_query *q, uint32_t ms);
static void finish_answer(
    struct fwd_query *q, uint8_t *m, size_t len, const struct msg_info *info);
static void finish_servfail(struct fwd_query *q);
static void query_finish(struct fwd_query *q);
static struct fwd_waiter *query_detach(struct fwd_query *q);
static void free_waiters(struct fwd_waiter *w);
static void query_free(struct fwd_query *q);
static void udp_read_cb(evutil_socket_t fd, short what, void *arg);
static void timeout_cb(evutil_socket_t fd, short what, void *arg);
static void hedge_cb(evutil_socket_t fd, short what, void *arg);
static void tcp_read_cb(struct bufferevent *bev, void *arg);
static void tcp_event_cb(struct bufferevent *bev, short what, void *arg);
static void reap_cb(evutil_socket_t fd, short what, void *arg);
static void drain_cb(evutil_socket_t fd, short what, void *arg);
static void check_drained(struct forward *f);
static enum upstream_outcome outcome_of(enum fail_kind why);
static void randomize_case(uint8_t *name, size_t len);
static struct fwd_query *query_new(struct forward *f, uint64_t h,
    const uint8_t *key, size_t klen, const uint8_t *qname, size_t qname_len,
    uint16_t qtype, uint16_t qclass, uint16_t qflags, bool do_bit);
static void arm_stale(struct fwd_query *q);
static void stale_cb(evutil_socket_t fd, short what, void *arg);
static bool answer_stale(struct fwd_query *q, struct fwd_waiter *ws);
static bool negative_guard(struct fwd_query *q, const struct msg_info *info);

struct forward *
forward_new(struct event_base *base, const struct config *cfg,
    struct cache *cache, struct metrics_worker *met,
    const struct fwd_zone *zones, size_t nzones)
{
	struct forward *f;

	if (nzones == 0 || nzones > FWD_MAX_ZONES)
		return NULL;
	f = calloc(1, sizeof(*f));
	if (f == NULL)
		return NULL;
	f->base = base;
	f->cfg = cfg;
	f->cache = cache;
	f->met = met;
	f->policy.min_ttl = cfg->min_ttl;
	f->policy.max_ttl = cfg->max_ttl;
	f->policy.max_negative_ttl = cfg->max_negative_ttl;
	memcpy(f->zones, zones, nzones * sizeof(*zones));
	f->nzones = nzones;
	for (size_t i = 0; i < cfg->n_stale_on_negative; i++) {
		int n = wire_name_from_text(
		    cfg->stale_on_negative[i], f->neg_zones[f->n_neg_zones]);
		if (n > 0) {
			wire_name_lower(
			    f->neg_zones[f->n_neg_zones], (size_t)n);
			f->neg_zone_len[f->n_neg_zones++] = (size_t)n;
		}
	}
	rng_bytes(f->hash_key, sizeof(f->hash_key));
	f->ev_reap = event_new(base, -1, 0, reap_cb, f);
	f->ev_drain = event_new(base, -1, 0, drain_cb, f);
	if (f->ev_reap == NULL || f->ev_drain == NULL) {
		forward_free(f);
		return NULL;
	}
	return f;
}

void
forward_free(struct forward *f)
{
	if (f == NULL)
		return;
	for (size_t b = 0; b < FWD_BUCKETS; b++)
		while (f->buckets[b] != NULL)
			query_finish(f->buckets[b]);
	reap_cb(-1, 0, f);
	while (f->attempts != NULL)
		attempt_free(f->attempts);
	if (f->ev_reap)
		event_free(f->ev_reap);
	if (f->ev_drain)
		event_free(f->ev_drain);
	free(f);
}

size_t
forward_inflight(const struct forward *f)
{
	return f->inflight;
}

void
forward_drain(struct forward *f, void (*done)(void *arg), void *arg)
{
	f->draining = true;
	f->drain_done = done;
	f->drain_arg = arg;
	check_drained(f);
}

static void
check_drained(struct forward *f)
{
	if (f->draining && f->inflight == 0 && f->drain_done != NULL)
		event_active(f->ev_drain, 0, 0);
}

static void
drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct forward *f = arg;
	void (*done)(void *) = f->drain_done;

	f->drain_done = NULL;
	if (done)
		done(f->drain_arg);
}

static struct fwd_query *
table_find(struct forward *f, uint64_t h, const uint8_t *key, size_t klen)
{
	for (struct fwd_query *q = f->buckets[h & (FWD_BUCKETS - 1)]; q;
	     q = q->hnext)
		if (q->hash == h && q->klen == klen &&
		    memcmp(q->key, key, klen) == 0)
			return q;
	return NULL;
}

static void
table_remove(struct forward *f, struct fwd_query *q)
{
	struct fwd_query **pp = &f->buckets[q->hash & (FWD_BUCKETS - 1)];

	for (; *pp != NULL; pp = &(*pp)->hnext) {
		if (*pp == q) {
			*pp = q->hnext;
			q->hnext = NULL;
			f->inflight--;
			return;
		}
	}
}

static struct upstream_pool *
pool_for(struct forward *f, const uint8_t *qname, size_t len)
{
	size_t best = 0;

	/* Longest suffix wins; zones[0] is the root and matches everything. */
	for (size_t i = 1; i < f->nzones; i++)
		if (f->zones[i].len > f->zones[best].len &&
		    wire_name_in_zone(
			qname, len, f->zones[i].name, f->zones[i].len))
			best = i;
	return f->zones[best].pool;
}

static int
add_waiter(struct fwd_query *q, const uint8_t *query,
    const struct wire_query *wq, const struct fwd_client *cl)
{
	struct fwd_waiter *w;

	/*
	 * A client repeating its own query (same transport, address and ID)
	 * is already waiting: the retry costs nothing, and it gets one reply.
	 */
	for (w = q->waiters; w != NULL; w = w->next) {
		if (w->q.id == wq->id && w->cl.tcp == cl->tcp &&
		    w->cl.conn == cl->conn && w->cl.peer_len == cl->peer_len &&
		    memcmp(&w->cl.peer, &cl->peer, cl->peer_len) == 0)
			return -EALREADY;
	}
	if (q->nwaiters >= q->f->cfg->max_waiters || wq->q.end > FWD_QBYTES_MAX)
		return -EBUSY;
	w = malloc(sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	w->cl = *cl;
	w->q = *wq;
	w->qlen = wq->q.end;
	memcpy(w->qbytes, query, w->qlen);
	w->next = q->waiters;
	q->waiters = w;
	q->nwaiters++;
	return 0;
}

static struct fwd_query *
query_new(struct forward *f, uint64_t h, const uint8_t *key, size_t klen,
    const uint8_t *qname, size_t qname_len, uint16_t qtype, uint16_t qclass,
    uint16_t qflags, bool do_bit)
{
	struct fwd_query *q;

	if (f->inflight >= FWD_MAX_INFLIGHT) {
		metrics_inc(f->met, MET_INFLIGHT_OVERFLOW);
		return NULL;
	}
	q = calloc(1, sizeof(*q));
	if (q == NULL)
		return NULL;
	q->f = f;
	q->hash = h;
	memcpy(q->key, key, klen);
	q->klen = klen;
	memcpy(q->qname, qname, qname_len);
	q->qname_len = qname_len;
	wire_name_lower(q->qname, q->qname_len);
	q->qtype = qtype;
	q->qclass = qclass;
	q->qflags = qflags;
	q->do_bit = do_bit;
	/* RFC 8482 answers to ANY differ by server and moment: not cached. */
	q->cacheable = qtype != WIRE_TYPE_ANY;
	q->pool = pool_for(f, q->qname, q->qname_len);
	q->ev_hedge = evtimer_new(f->base, hedge_cb, q);
	q->ev_stale = evtimer_new(f->base, stale_cb, q);
	if (q->ev_hedge == NULL || q->ev_stale == NULL) {
		if (q->ev_hedge)
			event_free(q->ev_hedge);
		if (q->ev_stale)
			event_free(q->ev_stale);
		free(q);
		return NULL;
	}
	q->hnext = f->buckets[h & (FWD_BUCKETS - 1)];
	f->buckets[h & (FWD_BUCKETS - 1)] = q;
	f->inflight++;
	return q;
}

int
forward_query(struct forward *f, const uint8_t *query, size_t len,
    const struct wire_query *wq, const uint8_t *key, size_t klen,
    const struct fwd_client *cl, unsigned flags)
{
	uint64_t h;
	struct fwd_query *q;
	int r;

	(void)len;
	if (f->draining)
		return -ESHUTDOWN;
	if (klen > CACHE_KEY_MAX || wq->q.name_len > WIRE_NAME_MAX)
		return -EINVAL;
	crypto_shorthash((unsigned char *)&h, key, klen, f->hash_key);
	q = table_find(f, h, key, klen);
	if (q != NULL) {
		/* Its waiters already got the stale answer: so does this one.
		 */
		if ((flags & FWD_HAVE_STALE) && q->stale_served)
			return -EAGAIN;
		r = add_waiter(q, query, wq, cl);
		if (r == -EALREADY) {
			cl->reply(cl, NULL, 0);
			return 0;
		}
		if (r == 0) {
			metrics_inc(f->met, MET_COALESCED);
			if (flags & FWD_HAVE_STALE)
				arm_stale(q);
			else
				q->prio = UPSTREAM_PRIO_CLIENT;
		}
		return r;
	}
	if (flags & FWD_HAVE_STALE) {
		struct upstream_pool *pool =
		    pool_for(f, query + wq->q.name_off, wq->q.name_len);
		uint64_t now = clock_now_ms();
		/* Every circuit open: stale now, not a timeout known to come.
		 */
		if (!upstream_any_usable(pool))
			return -EAGAIN;
		/*
		 * Another client just waited for this pool in vain: stale now,
		 * and one refresh in the background notices the recovery.
		 */
		if (upstream_is_slow(pool, now)) {
			if (forward_refresh(f, key, klen,
				query + wq->q.name_off, wq->q.name_len,
				wq->q.qtype, wq->q.qclass,
				key[klen - 1] | FWD_REFRESH_STALE) == 0)
				cache_hold(f->cache, key, klen,
				    now +
					(uint64_t)f->cfg->stale_recheck * 1000);
			return -EAGAIN;
		}
	}
	q = query_new(f, h, key, klen, query + wq->q.name_off, wq->q.name_len,
	    wq->q.qtype, wq->q.qclass, wq->flags & WIRE_CD, wq->do_bit);
	if (q == NULL)
		return -EBUSY;
	if (add_waiter(q, query, wq, cl) < 0) {
		/* Not answerable by us: let the query run as a refresh. */
		q->prio = UPSTREAM_PRIO_BACKGROUND;
		start(q);
		return -ENOMEM;
	}
	if (flags & FWD_HAVE_STALE)
		arm_stale(q);
	q->prio = (flags & FWD_HAVE_STALE) ? UPSTREAM_PRIO_STALE
					   : UPSTREAM_PRIO_CLIENT;
	start(q);
	/*
	 * One refresh of stale data at a time for the whole process: the
	 * other workers answer stale meanwhile.  Success replaces the entry
	 * (and the hold); failure sets stale-recheck.  A query that could not
	 * start (shed, every circuit open) holds nothing.
	 */
	if ((flags & FWD_HAVE_STALE) && !q->done)
		cache_hold(f->cache, key, klen,
		    clock_now_ms() + (uint64_t)f->cfg->stale_recheck * 1000);
	return 0;
}

int
forward_refresh(struct forward *f, const uint8_t *key, size_t klen,
    const uint8_t *qname, size_t qname_len, uint16_t qtype, uint16_t qclass,
    unsigned flags)
{
	uint64_t h;
	struct fwd_query *q;

	if (f->draining)
		return -ESHUTDOWN;
	if (klen > CACHE_KEY_MAX || qname_len > WIRE_NAME_MAX)
		return -EINVAL;
	crypto_shorthash((unsigned char *)&h, key, klen, f->hash_key);
	if (table_find(f, h, key, klen) != NULL)
		return 0;
	q = query_new(f, h, key, klen, qname, qname_len, qtype, qclass,
	    (flags & CACHE_KEY_CD) ? WIRE_CD : 0, (flags & CACHE_KEY_DO) != 0);
	if (q == NULL)
		return -EBUSY;
	metrics_inc(f->met, MET_REFRESHES);
	q->prio = (flags & FWD_REFRESH_STALE) ? UPSTREAM_PRIO_STALE
					      : UPSTREAM_PRIO_BACKGROUND;
	start(q);
	/* Shed, or every circuit open: nothing went out. */
	return q->done ? -EAGAIN : 0;
}

static void
arm_stale(struct fwd_query *q)
{
	uint32_t ms = q->f->cfg->stale_client_timeout_ms;
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	if (q->stale_armed || !q->f->cfg->serve_stale)
		return;
	q->stale_armed = true;
	evtimer_add(q->ev_stale, &tv);
}

/*
 * No upstream answered within stale-client-timeout: the waiters get the
 * stale answer now (RFC 8767 5), and the query goes on as a refresh.
 */
static void
stale_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fwd_query *q = arg;
	struct fwd_waiter *ws = q->waiters;

	if (q->done || ws == NULL)
		return;
	upstream_mark_slow(q->pool,
	    clock_now_ms() + (uint64_t)q->f->cfg->stale_recheck * 1000);
	q->waiters = NULL;
	q->nwaiters = 0;
	if (!answer_stale(q, ws)) {
		/* The entry went away meanwhile: keep waiting for upstream. */
		q->waiters = ws;
		for (struct fwd_waiter *w = ws; w != NULL; w = w->next)
			q->nwaiters++;
		return;
	}
	q->stale_served = true;
	free_waiters(ws);
}

/*
 * Answers every waiter in ws with the cache's expired copy: TTL stale-ttl,
 * EDE 3 (19 for NXDOMAIN).  False, answering nobody, when there is none.
 */
static bool
answer_stale(struct fwd_query *q, struct fwd_waiter *ws)
{
	struct forward *f = q->f;
	struct cache_hit hit;
	uint8_t *m = f->buf, *out = f->buf + WIRE_MSG_MAX / 2;
	size_t n;
	enum cache_result r;

	if (!f->cfg->serve_stale)
		return false;
	r = cache_lookup(f->cache, q->key, q->klen, clock_now_ms(),
	    f->cfg->stale_ttl, m, WIRE_MSG_MAX / 2, &n, &hit);
	if (r != CACHE_STALE && r != CACHE_FRESH)
		return false;
	if (r == CACHE_FRESH)
		wire_set_ttls(m, n, f->cfg->stale_ttl);
	for (struct fwd_waiter *w = ws; w != NULL; w = w->next) {
		int len;
		memcpy(out, m, n);
		len = wire_make_reply(out, n, WIRE_MSG_MAX / 2, w->cl.max_len,
		    w->qbytes, &w->q, f->cfg->edns_buffer_size,
		    hit.rcode == WIRE_RCODE_NXDOMAIN ? WIRE_EDE_STALE_NXDOMAIN
						     : WIRE_EDE_STALE,
		    "stale answer");
		metrics_inc(f->met, MET_STALE_ANSWERS);
		if (len >= 0)
			len = (int)cookie_attach(out, (size_t)len,
			    WIRE_MSG_MAX / 2, w->cl.max_len, &w->q,
			    &w->cl.peer);
		w->cl.reply(
		    &w->cl, len < 0 ? NULL : out, len < 0 ? 0 : (size_t)len);
		w->cl.reply = NULL;
	}
	return true;
}

/*
 * stale-on-negative: under a listed zone, a name with a cached positive
 * answer that now gets NXDOMAIN/NODATA keeps its positive answer (served
 * stale) for stale-on-negative-window, rechecked every stale-recheck.
 * True when the negative answer was held back and the waiters answered.
 */
static bool
negative_guard(struct fwd_query *q, const struct msg_info *info)
{
	struct forward *f = q->f;
	const struct config *cfg = f->cfg;
	uint64_t now = clock_now_ms(), since;
	char name[WIRE_NAME_MAX * 4 + 8];
	bool listed = false;
	struct fwd_waiter *ws;

	if (info->kind != MSG_NXDOMAIN && info->kind != MSG_NODATA)
		return false;
	for (size_t i = 0; i < f->n_neg_zones && !listed; i++)
		listed = wire_name_in_zone(q->qname, q->qname_len,
		    f->neg_zones[i], f->neg_zone_len[i]);
	if (!listed)
		return false;
	since = cache_note_negative(f->cache, q->key, q->klen, now,
	    now + (uint64_t)cfg->stale_recheck * 1000);
	if (since == 0 ||
	    now - since >= (uint64_t)cfg->stale_on_negative_window * 1000)
		return false;
	log_warn("forward",
	    "negative answer held back, serving the last positive one "
	    "qname=\"%s\" qtype=%u rcode=%s held_s=%llu",
	    wire_name_text(q->qname, q->qname_len, name, sizeof(name)),
	    q->qtype, msg_kind_name(info->kind),
	    (unsigned long long)((now - since) / 1000));
	ws = q->waiters;
	q->waiters = NULL;
	q->nwaiters = 0;
	if (ws != NULL && !answer_stale(q, ws)) {
		q->waiters = ws;
		return false;
	}
	free_waiters(ws);
	query_finish(q);
	return true;
}

static void
arm_hedge(struct fwd_query *q, uint32_t ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	evtimer_add(q->ev_hedge, &tv);
}

/*
 * Starts one more attempt for q on the best server not yet asked.  Retries
 * and hedges (retry) spend the pool's retry budget.  Returns 0, or why none
 * could start: UPSTREAM_NONE_USABLE, UPSTREAM_NONE_BUDGET (the servers' rate
 * budget), -ENOBUFS (retry budget spent), -ENOMEM.
 */
static int
launch(struct fwd_query *q, bool retry)
{
	struct forward *f = q->f;
	uint64_t now = clock_now_ms();
	struct fwd_attempt *a;
	bool explore;
	int up;

	up = upstream_pick(
	    q->pool, q->tried, now, rng_uniform(UINT32_MAX), q->prio, &explore);
	if (up < 0)
		return up;
	if (retry && !upstream_budget_take(q->pool, now))
		return -ENOBUFS;
	if (!retry)
		upstream_budget_earn(q->pool);
	a = attempt_new(f, q->pool, (unsigned)up, q->qname, q->qname_len,
	    q->qtype, q->qclass, q->qflags, q->do_bit);
	if (a == NULL)
		return -ENOMEM;
	a->q = q;
	a->qnext = q->attempts;
	q->attempts = a;
	q->active++;
	q->tried |= 1u << up;
	upstream_sent(q->pool, a->up, now);
	/*
	 * An exploring pick is hedged at the best server's RTO, so trying a
	 * slower server costs the client almost nothing.
	 */
	if (upstream_count(q->pool) > 1)
		arm_hedge(q,
		    explore ? upstream_best_rto(q->pool)
			    : upstream_rto(q->pool, a->up));
	if (attempt_send(a) < 0)
		attempt_fail(a, FAIL_NETWORK);
	return 0;
}

/* The first attempt of a new query; when none can start, finishes it. */
static void
start(struct fwd_query *q)
{
	static const enum metrics_counter shed[] = {
	    MET_SHED_CLIENT, MET_SHED_STALE_REFRESH, MET_SHED_REFRESH_AHEAD};
	int r = launch(q, false);

	if (r == 0)
		return;
	if (r == UPSTREAM_NONE_BUDGET) {
		metrics_inc(q->f->met, shed[q->prio]);
		q->fail = FAIL_SHED;
	} else {
		/* Every circuit is open: fail fast, the probes keep testing. */
		q->fail = FAIL_ALL_DOWN;
	}
	finish_servfail(q);
}

static void
hedge_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fwd_query *q = arg;

	if (q->done)
		return;
	/* No answer within the RTO: ask the next server as well. */
	(void)launch(q, true);
}

int
forward_probe(struct forward *f, struct upstream_pool *pool, unsigned idx,
    const uint8_t *qname, size_t qname_len, uint16_t qtype)
{
	struct fwd_attempt *a = attempt_new(
	    f, pool, idx, qname, qname_len, qtype, WIRE_CLASS_IN, 0, false);

	if (a == NULL) {
		upstream_done(
		    pool, idx, UPSTREAM_MALFORMED, 0, true, clock_now_ms());
		return -ENOMEM;
	}
	a->probe = true;
	if (attempt_send(a) < 0) {
		attempt_fail(a, FAIL_NETWORK);
		return -ECONNREFUSED;
	}
	return 0;
}

static struct fwd_attempt *
attempt_new(struct forward *f, struct upstream_pool *pool, unsigned up,
    const uint8_t *qname, size_t qname_len, uint16_t qtype, uint16_t qclass,
    uint16_t qflags, bool do_bit)
{
	struct fwd_attempt *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return NULL;
	a->ev_timer = evtimer_new(f->base, timeout_cb, a);
	if (a->ev_timer == NULL) {
		free(a);
		return NULL;
	}
	a->f = f;
	a->pool = pool;
	a->up = up;
	a->fd = -1;
	a->edns = true;
	memcpy(a->qname, qname, qname_len);
	a->qname_len = qname_len;
	if (f->cfg->upstream_0x20) {
		/*
		 * Random letter case (draft-vixie-dnsext-dns0x20): a spoofer
		 * must guess it as well as the ID and port.
		 */
		randomize_case(a->qname, a->qname_len);
		a->exact_case = true;
	}
	a->qtype = qtype;
	a->qclass = qclass;
	a->qflags = qflags;
	a->do_bit = do_bit;
	a->next = f->attempts;
	if (f->attempts)
		f->attempts->prev = a;
	f->attempts = a;
	return a;
}

static void
randomize_case(uint8_t *name, size_t len)
{
	uint8_t bits[WIRE_NAME_MAX / 8 + 1];
	size_t off = 0;

	rng_bytes(bits, sizeof(bits));
	while (off < len && name[off] != 0) {
		size_t l = name[off];
		for (size_t i = off + 1; i <= off + l && i < len; i++) {
			uint8_t c = name[i];
			if (((c >= 'a' && c <= 'z') ||
				(c >= 'A' && c <= 'Z')) &&
			    (bits[i / 8] >> (i % 8)) & 1)
				name[i] = (uint8_t)(c ^ 0x20);
		}
		off += l + 1;
	}
}

/* Sends (or re-sends, after TC or FORMERR) over the current transport. */
static int
attempt_send(struct fwd_attempt *a)
{
	uint32_t ms = a->f->cfg->upstream_timeout_ms;
	struct timeval tv;
	int r;

	transport_close(a);
	a->sent_ms = clock_now_ms();
	r = a->tcp ? send_tcp(a) : send_udp(a);
	if (r < 0)
		return r;
	metrics_inc(a->f->met, MET_UPSTREAM_QUERIES);
	/* TCP needs a handshake and usually carries a big answer. */
	if (a->tcp)
		ms *= 2;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(a->ev_timer, &tv);
	return 0;
}

static int
build_upstream_query(struct fwd_attempt *a, uint8_t *out, size_t cap)
{
	a->id = rng_id();
	return wire_build_query(out, cap, a->id, WIRE_RD | a->qflags, a->qname,
	    a->qname_len, a->qtype, a->qclass,
	    a->edns ? a->f->cfg->edns_buffer_size : 0, a->do_bit);
}

static int
send_udp(struct fwd_attempt *a)
{
	const struct config_addr *up = &upstream_addr(a->pool, a->up)->addr;
	uint8_t pkt[FWD_QBYTES_MAX + 64];
	int n, fd, r = -1;

	fd = socket(
	    up->ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A random source port (RFC 5452 9.2); the kernel's pick if all busy.
	 */
	for (int i = 0; i < FWD_BIND_TRIES && r < 0; i++) {
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof(ss));
		ss.ss_family = up->ss.ss_family;
		if (ss.ss_family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port =
			    htons(rng_port());
		else
			((struct sockaddr_in6 *)&ss)->sin6_port =
			    htons(rng_port());
		r = bind(fd, (struct sockaddr *)&ss, up->len);
	}
	/* connect() makes the kernel drop datagrams from any other source. */
	if (connect(fd, (const struct sockaddr *)&up->ss, up->len) < 0)
		goto fail;
	n = build_upstream_query(a, pkt, sizeof(pkt));
	if (n < 0 || send(fd, pkt, (size_t)n, 0) != n)
		goto fail;
	a->ev_read =
	    event_new(a->f->base, fd, EV_READ | EV_PERSIST, udp_read_cb, a);
	if (a->ev_read == NULL || event_add(a->ev_read, NULL) < 0)
		goto fail;
	a->fd = fd;
	return 0;
fail:
	r = errno ? -errno : -EIO;
	if (a->ev_read) {
		event_free(a->ev_read);
		a->ev_read = NULL;
	}
	close(fd);
	return r;
}

static int
send_tcp(struct fwd_attempt *a)
{
	const struct config_addr *up = &upstream_addr(a->pool, a->up)->addr;
	uint8_t pkt[FWD_QBYTES_MAX + 64 + 2];
	int n;

	a->bev = bufferevent_socket_new(a->f->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (a->bev == NULL)
		return -ENOMEM;
	n = build_upstream_query(a, pkt + 2, sizeof(pkt) - 2);
	if (n < 0)
		return n;
	wire_put16(pkt, (uint16_t)n);
	bufferevent_setcb(a->bev, tcp_read_cb, NULL, tcp_event_cb, a);
	/* Length and message in one write (RFC 7766 8). */
	if (bufferevent_write(a->bev, pkt, (size_t)n + 2) < 0 ||
	    bufferevent_socket_connect(
		a->bev, (const struct sockaddr *)&up->ss, (int)up->len) < 0)
		return -ECONNREFUSED;
	bufferevent_enable(a->bev, EV_READ | EV_WRITE);
	return 0;
}

static void
transport_close(struct fwd_attempt *a)
{
	if (a->ev_read != NULL) {
		event_free(a->ev_read);
		a->ev_read = NULL;
	}
	if (a->fd >= 0) {
		close(a->fd);
		a->fd = -1;
	}
	if (a->bev != NULL) {
		bufferevent_free(a->bev);
		a->bev = NULL;
	}
	if (a->ev_timer != NULL)
		evtimer_del(a->ev_timer);
}

/* Unlinks a from its query (if any) and from f, and frees it. */
static void
attempt_free(struct fwd_attempt *a)
{
	struct forward *f = a->f;

	transport_close(a);
	if (a->ev_timer != NULL)
		event_free(a->ev_timer);
	if (a->q != NULL) {
		struct fwd_attempt **pp = &a->q->attempts;
		for (; *pp != NULL; pp = &(*pp)->qnext)
			if (*pp == a) {
				*pp = a->qnext;
				break;
			}
		a->q->active--;
	}
	if (a->prev)
		a->prev->next = a->next;
	else
		f->attempts = a->next;
	if (a->next)
		a->next->prev = a->prev;
	free(a);
}

static enum upstream_outcome
outcome_of(enum fail_kind why)
{
	switch (why) {
	case FAIL_TIMEOUT:
		return UPSTREAM_TIMEOUT;
	case FAIL_NETWORK:
		return UPSTREAM_REFUSED_NET;
	case FAIL_RCODE:
		return UPSTREAM_RCODE;
	default:
		return UPSTREAM_MALFORMED;
	}
}

/*
 * The attempt failed: the pool learns it, and a query left with nothing in
 * flight tries the next server (within the budget) or gets SERVFAIL.
 */
static void
attempt_fail(struct fwd_attempt *a, enum fail_kind why)
{
	struct fwd_query *q = a->q;
	char name[WIRE_NAME_MAX * 4 + 8];
	static const char *const why_text[] = {"none", "timeout", "network",
	    "rcode", "malformed", "all-down", "shed"};

	log_debug("forward",
	    "upstream attempt failed up=%s reason=%s qname=\"%s\" probe=%d",
	    upstream_addr(a->pool, a->up)->text, why_text[why],
	    wire_name_text(a->qname, a->qname_len, name, sizeof(name)),
	    (int)a->probe);
	upstream_done(
	    a->pool, a->up, outcome_of(why), 0, a->probe, clock_now_ms());
	attempt_free(a);
	if (q == NULL || q->done)
		return;
	q->fail = why;
	if (q->active > 0)
		return;
	evtimer_del(q->ev_hedge);
	if (launch(q, true) < 0)
		finish_servfail(q);
}

static bool
reply_matches(struct fwd_attempt *a, const uint8_t *m, size_t len)
{
	struct wire_question wq;

	if (len < WIRE_HDR_LEN || WIRE_ID(m) != a->id ||
	    !(WIRE_FLAGS(m) & WIRE_QR))
		return false;
	/* FORMERR may come without the question (RFC 6891 7). */
	if (WIRE_QDCOUNT(m) == 0 &&
	    WIRE_RCODE(WIRE_FLAGS(m)) == WIRE_RCODE_FORMERR)
		return true;
	if (WIRE_QDCOUNT(m) != 1 || wire_read_question(m, len, &wq) < 0)
		return false;
	if (wq.qtype != a->qtype || wq.qclass != a->qclass)
		return false;
	if (a->exact_case)
		return wq.name_len == a->qname_len &&
		    memcmp(m + wq.name_off, a->qname, a->qname_len) == 0;
	return wire_name_equal(
	    m + wq.name_off, wq.name_len, a->qname, a->qname_len);
}

static void
udp_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fwd_attempt *a = arg;
	uint8_t *m = a->f->buf;
	ssize_t n;

	for (int i = 0; i < 16; i++) {
		n = recv(fd, m, WIRE_MSG_MAX, 0);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			/* ICMP port or host unreachable: fail now, not at RTO.
			 */
			metrics_inc(a->f->met, MET_UPSTREAM_ERRORS);
			attempt_fail(a, FAIL_NETWORK);
			return;
		}
		if (!reply_matches(a, m, (size_t)n)) {
			metrics_inc(a->f->met, MET_UPSTREAM_MISMATCHED);
			continue;
		}
		handle_reply(a, m, (size_t)n);
		return;
	}
}

static void
tcp_read_cb(struct bufferevent *bev, void *arg)
{
	struct fwd_attempt *a = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	uint8_t lenb[2];
	size_t mlen;

	for (;;) {
		if (evbuffer_copyout(in, lenb, 2) < 2)
			return;
		mlen = wire_u16(lenb);
		if (evbuffer_get_length(in) < mlen + 2)
			return;
		evbuffer_drain(in, 2);
		evbuffer_remove(in, a->f->buf, mlen);
		if (reply_matches(a, a->f->buf, mlen)) {
			handle_reply(a, a->f->buf, mlen);
			return;
		}
		metrics_inc(a->f->met, MET_UPSTREAM_MISMATCHED);
	}
}

static void
tcp_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct fwd_attempt *a = arg;

	if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
		metrics_inc(a->f->met, MET_UPSTREAM_ERRORS);
		attempt_fail(a, FAIL_NETWORK);
	}
}

static void
timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fwd_attempt *a = arg;

	metrics_inc(a->f->met, MET_UPSTREAM_TIMEOUTS);
	attempt_fail(a, FAIL_TIMEOUT);
}

static void
handle_reply(struct fwd_attempt *a, uint8_t *m, size_t len)
{
	struct forward *f = a->f;
	struct fwd_query *q = a->q;
	struct msg_info info;
	uint64_t now = clock_now_ms();
	uint32_t rtt = (uint32_t)(now - a->sent_ms);

	if (msg_classify(m, len, &f->policy, &info) < 0) {
		metrics_inc(f->met, MET_UPSTREAM_MALFORMED);
		attempt_fail(a, FAIL_MALFORMED);
		return;
	}
	if (a->probe) {
		/*
		 * Any well-formed reply shows the server is alive (a REFUSED
		 * for the root is policy, not sickness), except SERVFAIL: a
		 * server failing every query would otherwise flap back in.
		 */
		if (info.kind == MSG_SERVFAIL) {
			attempt_fail(a, FAIL_RCODE);
			return;
		}
		upstream_done(a->pool, a->up, UPSTREAM_OK, rtt, true, now);
		attempt_free(a);
		return;
	}
	if (info.tc && !a->tcp) {
		metrics_inc(f->met, MET_UPSTREAM_TCP_FALLBACKS);
		a->tcp = true;
		if (attempt_send(a) < 0)
			attempt_fail(a, FAIL_NETWORK);
		return;
	}
	if (info.kind == MSG_FORMERR && a->edns) {
		/* An old server that rejects EDNS: ask it again without. */
		metrics_inc(f->met, MET_UPSTREAM_EDNS_FALLBACKS);
		a->edns = false;
		if (attempt_send(a) < 0)
			attempt_fail(a, FAIL_NETWORK);
		return;
	}
	/*
	 * Error RCODEs, extended RCODEs (the OPT carrying them is per hop and
	 * stripped: BADVERS would reach the client as NOERROR) and answers
	 * without a question (nothing to answer a client with) all fail this
	 * server, and the query moves on.
	 */
	if (info.kind == MSG_SERVFAIL || info.kind == MSG_REFUSED ||
	    info.kind == MSG_FORMERR || info.rcode > 15) {
		metrics_inc(f->met, MET_UPSTREAM_ERRORS);
		attempt_fail(a, FAIL_RCODE);
		return;
	}
	if (WIRE_QDCOUNT(m) != 1) {
		metrics_inc(f->met, MET_UPSTREAM_MALFORMED);
		attempt_fail(a, FAIL_MALFORMED);
		return;
	}
	metrics_inc(f->met, MET_UPSTREAM_ANSWERS);
	upstream_done(a->pool, a->up, UPSTREAM_OK, rtt, false, now);
	if (q == NULL || q->done) {
		/* A late answer to a hedged query: measured, then dropped. */
		attempt_free(a);
		return;
	}
	finish_answer(q, m, len, &info);
	/* finish_answer orphaned every attempt of q, a included. */
	attempt_free(a);
}

static void
finish_answer(
    struct fwd_query *q, uint8_t *m, size_t len, const struct msg_info *info)
{
	struct forward *f = q->f;
	uint8_t ext;
	int n = wire_strip_opt(m, len, &ext);
	uint8_t *out = f->buf + WIRE_MSG_MAX / 2;
	struct fwd_waiter *ws;

	/* The client sees the TTLs that later cache hits count down from. */
	if (n < 0 ||
	    (info->cacheable && wire_set_ttls(m, (size_t)n, info->ttl) < 0)) {
		metrics_inc(f->met, MET_UPSTREAM_MALFORMED);
		q->fail = FAIL_MALFORMED;
		finish_servfail(q);
		return;
	}
	if (negative_guard(q, info))
		return;
	/* TC over TCP would be a lie we must not cache. */
	if (q->cacheable && info->cacheable && !info->tc)
		cache_store(f->cache, q->key, q->klen, m, (size_t)n, info->ttl,
		    clock_now_ms());
	if ((size_t)n > WIRE_MSG_MAX / 2 - 1024) {
		/* Too big for the second half of buf: move to the heap. */
		out = malloc((size_t)n + 1024);
		if (out == NULL) {
			finish_servfail(q);
			return;
		}
	}
	/*
	 * Detached first: a reply may let a TCP client send more queries at
	 * once, and those must not join a query that is already answered.
	 */
	ws = query_detach(q);
	for (struct fwd_waiter *w = ws; w != NULL; w = w->next) {
		int r;
		memcpy(out, m, (size_t)n);
		r = wire_make_reply(out, (size_t)n, (size_t)n + 1024,
		    w->cl.max_len, w->qbytes, &w->q, f->cfg->edns_buffer_size,
		    -1, NULL);
		if (r >= 0 && (WIRE_FLAGS(out) & WIRE_TC))
			metrics_inc(f->met, MET_REPLIES_TRUNCATED);
		if (r >= 0)
			r = (int)cookie_attach(out, (size_t)r, (size_t)n + 1024,
			    w->cl.max_len, &w->q, &w->cl.peer);
		w->cl.reply(&w->cl, r < 0 ? NULL : out, r < 0 ? 0 : (size_t)r);
		w->cl.reply = NULL;
	}
	if (out != f->buf + WIRE_MSG_MAX / 2)
		free(out);
	free_waiters(ws);
}

static void
finish_servfail(struct fwd_query *q)
{
	struct forward *f = q->f;
	int ede = q->fail == FAIL_NETWORK ? WIRE_EDE_NETWORK_ERROR
	    : q->fail == FAIL_SHED        ? WIRE_EDE_OTHER
					  : WIRE_EDE_NO_REACHABLE_AUTHORITY;
	const char *text;
	char name[WIRE_NAME_MAX * 4 + 8];
	struct fwd_waiter *ws;
	bool held;

	switch (q->fail) {
	case FAIL_TIMEOUT:
		text = "no upstream answered in time";
		break;
	case FAIL_NETWORK:
		text = "upstream unreachable";
		break;
	case FAIL_ALL_DOWN:
		text = "every upstream is down";
		break;
	case FAIL_SHED:
		text = "upstream query budget exhausted";
		break;
	default:
		text = "every upstream failed";
		break;
	}
	log_debug("forward",
	    "resolution failed qname=\"%s\" qtype=%u reason=\"%s\"",
	    wire_name_text(q->qname, q->qname_len, name, sizeof(name)),
	    q->qtype, text);
	/*
	 * Not asked upstream again for a while (RFC 9520, RFC 8767 recheck):
	 * stale-recheck when stale data can be served meanwhile, else a hold
	 * from 1 s doubling up to 5 min.
	 */
	ws = query_detach(q);
	/* Shed or every circuit open: nothing learnt about this name. */
	held = q->fail != FAIL_ALL_DOWN && q->fail != FAIL_SHED;
	if (answer_stale(q, ws)) {
		if (held)
			cache_fail(f->cache, q->key, q->klen, clock_now_ms(),
			    f->cfg->stale_recheck, f->cfg->stale_recheck);
		free_waiters(ws);
		return;
	}
	if (held)
		cache_fail(f->cache, q->key, q->klen, clock_now_ms(),
		    f->cfg->failure_hold_min, f->cfg->failure_hold_max);
	for (struct fwd_waiter *w = ws; w != NULL; w = w->next) {
		int r = wire_build_error(f->buf, sizeof(f->buf), w->qbytes,
		    w->qlen, &w->q, WIRE_RCODE_SERVFAIL,
		    f->cfg->edns_buffer_size, ede, text);
		metrics_inc(f->met, MET_REPLIES_SERVFAIL);
		if (r >= 0)
			r = (int)cookie_attach(f->buf, (size_t)r,
			    sizeof(f->buf), w->cl.max_len, &w->q, &w->cl.peer);
		w->cl.reply(
		    &w->cl, r < 0 ? NULL : f->buf, r < 0 ? 0 : (size_t)r);
		w->cl.reply = NULL;
	}
	free_waiters(ws);
}

/* Finishes q and hands its waiters to the caller, who answers them. */
static struct fwd_waiter *
query_detach(struct fwd_query *q)
{
	struct fwd_waiter *ws = q->waiters;

	q->waiters = NULL;
	q->nwaiters = 0;
	query_finish(q);
	return ws;
}

static void
free_waiters(struct fwd_waiter *w)
{
	struct fwd_waiter *next;

	for (; w != NULL; w = next) {
		next = w->next;
		/* A waiter never answered is told so, exactly once. */
		if (w->cl.reply != NULL)
			w->cl.reply(&w->cl, NULL, 0);
		free(w);
	}
}

/*
 * Takes q out of the table, orphans its attempts (they go on measuring the
 * servers) and queues q for freeing outside its callbacks.
 */
static void
query_finish(struct fwd_query *q)
{
	struct forward *f = q->f;

	if (q->done)
		return;
	q->done = true;
	evtimer_del(q->ev_hedge);
	evtimer_del(q->ev_stale);
	while (q->attempts != NULL) {
		struct fwd_attempt *a = q->attempts;
		q->attempts = a->qnext;
		a->qnext = NULL;
		a->q = NULL;
	}
	q->active = 0;
	table_remove(f, q);
	q->dead_next = f->dead;
	f->dead = q;
	event_active(f->ev_reap, 0, 0);
	check_drained(f);
}

static void
query_free(struct fwd_query *q)
{
	if (q->ev_hedge != NULL) {
		event_free(q->ev_hedge);
		q->ev_hedge = NULL;
	}
	if (q->ev_stale != NULL) {
		event_free(q->ev_stale);
		q->ev_stale = NULL;
	}
	free_waiters(q->waiters);
	free(q);
}

static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct forward *f = arg;

	while (f->dead != NULL) {
		struct fwd_query *q = f->dead;
		f->dead = q->dead_next;
		query_free(q);
	}
}
