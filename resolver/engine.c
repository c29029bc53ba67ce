#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "stubborn/attempt.h"
#include "stubborn/cache.h"
#include "stubborn/check.h"
#include "stubborn/clock.h"
#include "stubborn/engine.h"
#include "stubborn/inflight.h"
#include "stubborn/log.h"
#include "stubborn/metrics.h"
#include "stubborn/msg.h"
#include "stubborn/reply.h"
#include "stubborn/rng.h"
#include "stubborn/route.h"
#include "stubborn/timer.h"
#include "stubborn/upstream.h"
#include "stubborn/wire.h"

#define ENGINE_MAX_INFLIGHT 8192 /* questions per worker */
/* Finished queries kept for reuse: a miss then allocates nothing. */
#define ENGINE_SPARE_MAX 256
/* How often the prober asks the pools whether a server needs a probe. */
#define ENGINE_PROBE_TICK_MS 100
/* How often the prober checks the keep-warm names. */
#define ENGINE_KEEP_WARM_TICK_MS 1000
/* Keep-warm refreshes at the latest this share of the TTL before expiry. */
#define ENGINE_KEEP_WARM_PERCENT 10

/* One question in flight and the clients waiting for it. */
struct fq {
	struct inflight_entry ie; /* key: the question (coalescing) */
	struct engine *eng;
	struct route *route; /* the generation it began under: a reference */
	struct race race;
	uint8_t skey[CACHE_KEY_MAX]; /* where its expired answer lives */
	size_t sklen;
	bool cacheable;
	bool stale_served; /* its waiters got stale: now a refresh */
	bool done;
	struct timer stale; /* stale-client-timeout; stopped by finish */
	struct fq *dead_next;
};

struct engine {
	struct engine_env env;
	struct route *route; /* for new queries: a reference */
	struct timer_heap timers;
	struct attempt_ctx actx;
	struct inflight table;
	struct fq *dead;  /* finished, freed by the reap timer */
	struct fq *spare; /* freed, for the next queries */
	unsigned n_spare;
	struct timer reap;       /* armed at "now" by query_finish */
	struct timer probe_tick; /* prober only */
	struct timer warm_tick;  /* prober only */
	bool draining;
	void (*drain_done)(void *);
	void *drain_arg;
	struct timer drain;               /* armed once nothing is in flight */
	uint8_t buf[WIRE_MSG_MAX + 1024]; /* replies are made here */
};

#define FQ_OF_RACE(r) ((struct fq *)((char *)(r)-offsetof(struct fq, race)))
#define FQ_OF_STALE(t) ((struct fq *)((char *)(t)-offsetof(struct fq, stale)))
#define ENGINE_OF(t, field)                                                    \
	((struct engine *)((char *)(t)-offsetof(struct engine, field)))

static void arm(struct engine *e, struct timer *t, uint64_t at);
static struct fq *fq_new(struct engine *e, uint64_t h, const uint8_t *key,
    size_t klen, const uint8_t *qname, size_t qname_len, uint16_t qtype,
    uint16_t qclass, uint16_t qflags, bool do_bit);
static void fq_free(struct fq *q);
static void query_finish(struct fq *q, uint64_t now);
static struct waiter *query_detach(struct fq *q, uint64_t now);
static void start(struct fq *q, uint64_t now);
static void arm_stale(struct fq *q, uint64_t now);
static void stale_cb(struct timer *t, uint64_t now);
static bool answer_stale(struct fq *q, struct waiter *ws, uint64_t now);
static bool negative_guard(
    struct fq *q, const struct msg_info *info, uint64_t now);
static void race_answer_cb(struct race *r, uint8_t *m, size_t len,
    const struct msg_info *info, uint64_t now);
static void race_fail_cb(struct race *r, enum attempt_fail why, uint64_t now);
static void finish_answer(struct fq *q, uint8_t *m, size_t len,
    const struct msg_info *info, uint64_t now);
static void finish_servfail(struct fq *q, enum attempt_fail why, uint64_t now);
static void reply_to_of(
    const struct fq *q, const struct waiter *w, struct reply_to *to);
static bool keep_ad(const struct config *cfg, const struct wire_query *q);
static size_t name_key(const struct fq *q, uint8_t *out);
static void reap_cb(struct timer *t, uint64_t now);
static void drain_cb(struct timer *t, uint64_t now);
static void probe_cb(struct timer *t, uint64_t now);
static void warm_cb(struct timer *t, uint64_t now);
static void check_drained(struct engine *e, uint64_t now);

static void
arm(struct engine *e, struct timer *t, uint64_t at)
{
	if (timer_set(&e->timers, t, at) == 0 && e->env.rearm != NULL)
		e->env.rearm(e->env.rearm_arg, at);
}

struct engine *
engine_new(const struct engine_env *env, struct route *route, uint64_t now)
{
	struct engine *e = calloc(1, sizeof(*e));

	if (e == NULL)
		return NULL;
	e->env = *env;
	e->route = route;
	route_ref(route);
	timer_heap_init(&e->timers);
	attempt_ctx_init(&e->actx, &e->timers, &env->xport, env->met);
	e->actx.rearm = env->rearm;
	e->actx.rearm_arg = env->rearm_arg;
	inflight_init(&e->table);
	timer_init(&e->reap, reap_cb);
	timer_init(&e->drain, drain_cb);
	timer_init(&e->probe_tick, probe_cb);
	timer_init(&e->warm_tick, warm_cb);
	if (env->prober) {
		arm(e, &e->probe_tick, now + ENGINE_PROBE_TICK_MS);
		arm(e, &e->warm_tick, now + ENGINE_KEEP_WARM_TICK_MS);
	}
	return e;
}

void
engine_free(struct engine *e)
{
	if (e == NULL)
		return;
	for (size_t b = 0; b < INFLIGHT_BUCKETS; b++)
		while (e->table.buckets[b] != NULL)
			query_finish((struct fq *)e->table.buckets[b], 0);
	reap_cb(&e->reap, 0);
	while (e->spare != NULL) {
		struct fq *q = e->spare;
		e->spare = q->dead_next;
		free(q);
	}
	inflight_fini(&e->table);
	attempt_ctx_fini(&e->actx);
	timer_heap_fini(&e->timers);
	route_unref(e->route);
	free(e);
}

void
engine_set_route(struct engine *e, struct route *r)
{
	route_ref(r);
	route_unref(e->route);
	e->route = r;
}

struct route *
engine_route(const struct engine *e)
{
	return e->route;
}

uint64_t
engine_next_timer(const struct engine *e)
{
	return timer_next(&e->timers);
}

void
engine_run_timers(struct engine *e, uint64_t now)
{
	timer_run(&e->timers, now);
}

size_t
engine_inflight(const struct engine *e)
{
	return e->table.count;
}

void
engine_drain(struct engine *e, void (*done)(void *arg), void *arg, uint64_t now)
{
	e->draining = true;
	e->drain_done = done;
	e->drain_arg = arg;
	timer_stop(&e->timers, &e->probe_tick);
	timer_stop(&e->timers, &e->warm_tick);
	check_drained(e, now);
}

static void
check_drained(struct engine *e, uint64_t now)
{
	if (e->draining && e->table.count == 0 && e->drain_done != NULL)
		arm(e, &e->drain, now);
}

static void
drain_cb(struct timer *t, uint64_t now)
{
	struct engine *e = ENGINE_OF(t, drain);
	void (*done)(void *) = e->drain_done;

	e->drain_done = NULL;
	if (done)
		done(e->drain_arg);
}

static struct fq *
fq_new(struct engine *e, uint64_t h, const uint8_t *key, size_t klen,
    const uint8_t *qname, size_t qname_len, uint16_t qtype, uint16_t qclass,
    uint16_t qflags, bool do_bit)
{
	struct fq *q;
	struct race *r;

	if (e->table.count >= ENGINE_MAX_INFLIGHT) {
		metrics_inc(e->env.met, MET_INFLIGHT_OVERFLOW);
		return NULL;
	}
	if ((q = e->spare) != NULL) {
		e->spare = q->dead_next;
		e->n_spare--;
		memset(q, 0, sizeof(*q));
	} else if ((q = calloc(1, sizeof(*q))) == NULL) {
		return NULL;
	}
	q->eng = e;
	q->route = e->route;
	route_ref(q->route);
	memcpy(q->skey, key, klen);
	q->sklen = klen;
	/* RFC 8482 answers to ANY differ by server and moment: not cached. */
	q->cacheable = qtype != WIRE_TYPE_ANY;
	timer_init(&q->stale, stale_cb);
	r = &q->race;
	r->ctx = &e->actx;
	r->route = q->route;
	r->cfg = &q->route->cfg;
	/* A key begins with its name, lower-cased (cache_make_key). */
	if (qname_len + 5 == klen) {
		memcpy(r->qname, key, qname_len);
	} else {
		memcpy(r->qname, qname, qname_len);
		wire_name_lower(r->qname, qname_len);
	}
	r->qname_len = qname_len;
	r->pool = route_pool_for(q->route, r->qname, r->qname_len);
	r->qtype = qtype;
	r->qclass = qclass;
	r->qflags = qflags;
	r->do_bit = do_bit;
	r->on_answer = race_answer_cb;
	r->on_fail = race_fail_cb;
	timer_init(&r->hedge, NULL);
	inflight_insert(&e->table, &q->ie, h, key, klen);
	return q;
}

static void
fq_free(struct fq *q)
{
	struct engine *e = q->eng;

	race_stop(&q->race);
	timer_stop(&e->timers, &q->stale);
	inflight_free_waiters(&e->table, inflight_take_waiters(&q->ie));
	route_unref(q->route);
	if (e->n_spare < ENGINE_SPARE_MAX) {
		q->dead_next = e->spare;
		e->spare = q;
		e->n_spare++;
	} else {
		free(q);
	}
}

/*
 * Takes q out of the table and stops its race (attempts still out go on
 * measuring their servers); q is freed by the reap timer, outside every
 * callback that may still hold it.
 */
static void
query_finish(struct fq *q, uint64_t now)
{
	struct engine *e = q->eng;

	if (q->done)
		return;
	q->done = true;
	race_stop(&q->race);
	timer_stop(&e->timers, &q->stale);
	inflight_remove(&e->table, &q->ie);
	q->dead_next = e->dead;
	e->dead = q;
	arm(e, &e->reap, now);
	check_drained(e, now);
}

/* Finishes q and hands its waiters to the caller, who answers them. */
static struct waiter *
query_detach(struct fq *q, uint64_t now)
{
	struct waiter *ws = inflight_take_waiters(&q->ie);

	query_finish(q, now);
	return ws;
}

static void
reap_cb(struct timer *t, uint64_t now)
{
	struct engine *e = ENGINE_OF(t, reap);

	while (e->dead != NULL) {
		struct fq *q = e->dead;
		e->dead = q->dead_next;
		fq_free(q);
	}
}

/* The first attempt of a new query; when none can start, finishes it. */
static void
start(struct fq *q, uint64_t now)
{
	static const enum metrics_counter shed[] = {
	    MET_SHED_CLIENT, MET_SHED_STALE_REFRESH, MET_SHED_REFRESH_AHEAD};
	int r = race_start(&q->race, now);

	if (r == 0)
		return;
	if (r == UPSTREAM_NONE_BUDGET) {
		metrics_inc(q->eng->env.met, shed[q->race.prio]);
		finish_servfail(q, ATTEMPT_FAIL_SHED, now);
	} else {
		/* Every circuit is open: fail fast, the probes keep testing. */
		finish_servfail(q, ATTEMPT_FAIL_ALL_DOWN, now);
	}
}

int
engine_query(struct engine *e, const uint8_t *query,
    const struct wire_query *wq, const uint8_t *key, size_t klen,
    const uint8_t *skey, size_t sklen, const struct client *cl, unsigned flags,
    uint64_t now)
{
	const struct config *cfg = &e->route->cfg;
	const uint8_t *qname = query + wq->q.name_off;
	uint64_t h;
	struct fq *q;
	int r;

	if (e->draining)
		return -ESHUTDOWN;
	if (klen > CACHE_KEY_MAX || sklen > CACHE_KEY_MAX ||
	    wq->q.name_len > WIRE_NAME_MAX)
		return -EINVAL;
	h = inflight_hash(&e->table, key, klen);
	q = (struct fq *)inflight_find(&e->table, h, key, klen);
	if (q != NULL) {
		/* Its waiters already got the stale answer: so does this one.
		 */
		if ((flags & ENGINE_HAVE_STALE) && q->stale_served)
			return -EAGAIN;
		r = inflight_add_waiter(&e->table, &q->ie, query, wq, cl,
		    q->route->cfg.max_waiters);
		if (r == -EALREADY) {
			cl->reply(cl, NULL, 0, CLIENT_SRC_ERROR);
			return 0;
		}
		if (r == 0) {
			metrics_inc(e->env.met, MET_COALESCED);
			if (flags & ENGINE_HAVE_STALE)
				arm_stale(q, now);
			else
				q->race.prio = UPSTREAM_PRIO_CLIENT;
		}
		return r;
	}
	if (flags & ENGINE_HAVE_STALE) {
		struct upstream_pool *pool =
		    route_pool_for(e->route, qname, wq->q.name_len);
		/* Every circuit open: stale now, not a timeout known to come.
		 */
		if (!upstream_any_usable(pool))
			return -EAGAIN;
		/*
		 * Another client just waited for this pool in vain: stale now,
		 * and one refresh in the background notices the recovery.
		 */
		if (upstream_is_slow(pool, now)) {
			if (engine_refresh(e, key, klen, qname, wq->q.name_len,
				wq->q.qtype, wq->q.qclass,
				key[klen - 1] | ENGINE_REFRESH_STALE, now) == 0)
				cache_hold(e->env.cache, skey, sklen, now,
				    now + (uint64_t)cfg->stale_recheck * 1000);
			return -EAGAIN;
		}
	}
	q = fq_new(e, h, key, klen, qname, wq->q.name_len, wq->q.qtype,
	    wq->q.qclass, wq->flags & WIRE_CD, wq->do_bit);
	if (q == NULL)
		return -EBUSY;
	memcpy(q->skey, skey, sklen);
	q->sklen = sklen;
	if (inflight_add_waiter(
		&e->table, &q->ie, query, wq, cl, cfg->max_waiters) < 0) {
		/* Not answerable by us: let the query run as a refresh. */
		q->race.prio = UPSTREAM_PRIO_BACKGROUND;
		start(q, now);
		return -ENOMEM;
	}
	q->race.prio = (flags & ENGINE_HAVE_STALE) ? UPSTREAM_PRIO_STALE
						   : UPSTREAM_PRIO_CLIENT;
	start(q, now);
	if (q->done)
		return 0;
	if (flags & ENGINE_HAVE_STALE) {
		arm_stale(q, now);
		/*
		 * One refresh of stale data at a time for the whole process:
		 * the other workers answer stale meanwhile.  Success replaces
		 * the entry (and the hold); failure sets stale-recheck.
		 */
		cache_hold(e->env.cache, skey, sklen, now,
		    now + (uint64_t)cfg->stale_recheck * 1000);
	}
	return 0;
}

int
engine_refresh(struct engine *e, const uint8_t *key, size_t klen,
    const uint8_t *qname, size_t qname_len, uint16_t qtype, uint16_t qclass,
    unsigned flags, uint64_t now)
{
	uint64_t h;
	struct fq *q;

	if (e->draining)
		return -ESHUTDOWN;
	if (klen > CACHE_KEY_MAX || qname_len > WIRE_NAME_MAX)
		return -EINVAL;
	h = inflight_hash(&e->table, key, klen);
	if (inflight_find(&e->table, h, key, klen) != NULL)
		return 0;
	q = fq_new(e, h, key, klen, qname, qname_len, qtype, qclass,
	    (flags & CACHE_KEY_CD) ? WIRE_CD : 0, (flags & CACHE_KEY_DO) != 0);
	if (q == NULL)
		return -EBUSY;
	metrics_inc(e->env.met, MET_REFRESHES);
	q->race.prio = (flags & ENGINE_REFRESH_STALE)
	    ? UPSTREAM_PRIO_STALE
	    : UPSTREAM_PRIO_BACKGROUND;
	start(q, now);
	/* Shed, or every circuit open: nothing went out. */
	return q->done ? -EAGAIN : 0;
}

/*
 * The client gets its stale answer once the upstream has been silent for
 * about one retransmit timeout of the server asked (when its RTT is known),
 * at most stale-client-timeout.
 */
static void
arm_stale(struct fq *q, uint64_t now)
{
	const struct config *cfg = &q->route->cfg;
	uint32_t ms = cfg->stale_client_timeout_ms;

	if (timer_armed(&q->stale) || !cfg->serve_stale || q->done)
		return;
	if (q->race.first_rto > 0 && q->race.first_rto < ms)
		ms = q->race.first_rto;
	arm(q->eng, &q->stale, now + ms);
}

/*
 * No upstream answered in time: the waiters get the stale answer now (RFC
 * 8767 5), and the query goes on as a refresh.
 */
static void
stale_cb(struct timer *t, uint64_t now)
{
	struct fq *q = FQ_OF_STALE(t);
	struct waiter *ws;

	if (q->done || q->ie.waiters == NULL)
		return;
	upstream_mark_slow(
	    q->race.pool, now + (uint64_t)q->route->cfg.stale_recheck * 1000);
	ws = inflight_take_waiters(&q->ie);
	if (!answer_stale(q, ws, now)) {
		/* The entry went away meanwhile: keep waiting for upstream. */
		inflight_restore_waiters(&q->ie, ws);
		return;
	}
	q->stale_served = true;
	inflight_free_waiters(&q->eng->table, ws);
}

static bool
keep_ad(const struct config *cfg, const struct wire_query *q)
{
	/* RFC 6840 5.7: AD only for clients that ask with DO or AD. */
	return cfg->trust_upstream_ad && (q->do_bit || (q->flags & WIRE_AD));
}

static void
reply_to_of(const struct fq *q, const struct waiter *w, struct reply_to *to)
{
	to->query = w->qbytes;
	to->qlen = w->qlen;
	to->q = &w->q;
	to->limit = w->cl.max_len;
	to->peer = &w->cl.peer;
	to->edns_size = q->route->cfg.edns_buffer_size;
	to->now_s = (uint32_t)clock_wall_s();
}

/*
 * Answers every waiter in ws with the cache's expired copy: TTL stale-ttl,
 * EDE 3 (19 for NXDOMAIN).  False, answering nobody, when there is none.
 */
static bool
answer_stale(struct fq *q, struct waiter *ws, uint64_t now)
{
	struct engine *e = q->eng;
	const struct config *cfg = &q->route->cfg;
	struct cache_hit hit;
	uint8_t *m = e->buf, *out = e->buf + WIRE_MSG_MAX / 2;
	size_t n;
	enum cache_result r;

	if (!cfg->serve_stale)
		return false;
	r = cache_lookup(e->env.cache, q->skey, q->sklen, now, cfg->stale_ttl,
	    m, WIRE_MSG_MAX / 2, &n, &hit);
	if (r != CACHE_STALE && r != CACHE_FRESH)
		return false;
	if (r == CACHE_FRESH)
		wire_set_ttls(m, n, cfg->stale_ttl);
	for (struct waiter *w = ws; w != NULL; w = w->next) {
		struct reply_to to;
		int len;
		reply_to_of(q, w, &to);
		memcpy(out, m, n);
		len = reply_answer(out, n, WIRE_MSG_MAX / 2 + 512, &to,
		    hit.rcode == WIRE_RCODE_NXDOMAIN ? WIRE_EDE_STALE_NXDOMAIN
						     : WIRE_EDE_STALE,
		    "stale answer", keep_ad(cfg, &w->q));
		metrics_inc(e->env.met, MET_STALE_ANSWERS);
		metrics_stale(e->env.met, clock_wall_s(), hit.stale_s);
		w->cl.reply(&w->cl, len < 0 ? NULL : out,
		    len < 0 ? 0 : (size_t)len, CLIENT_SRC_STALE);
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
negative_guard(struct fq *q, const struct msg_info *info, uint64_t now)
{
	struct engine *e = q->eng;
	const struct config *cfg = &q->route->cfg;
	uint64_t since;
	char name[WIRE_NAME_MAX * 4 + 8];
	struct waiter *ws;

	if (info->kind != MSG_NXDOMAIN && info->kind != MSG_NODATA)
		return false;
	if (!route_negative_guarded(q->route, q->race.qname, q->race.qname_len))
		return false;
	since = cache_note_negative(e->env.cache, q->ie.key, q->ie.klen, now,
	    now + (uint64_t)cfg->stale_recheck * 1000);
	if (since == 0 ||
	    now - since >= (uint64_t)cfg->stale_on_negative_window * 1000)
		return false;
	log_warn("engine",
	    "negative answer held back, serving the last positive one "
	    "qname=\"%s\" qtype=%u rcode=%s held_s=%llu",
	    wire_name_text(
		q->race.qname, q->race.qname_len, name, sizeof(name)),
	    q->race.qtype, msg_kind_name(info->kind),
	    (unsigned long long)((now - since) / 1000));
	ws = inflight_take_waiters(&q->ie);
	/* The positive answer lives under the question's own key. */
	memcpy(q->skey, q->ie.key, q->ie.klen);
	q->sklen = q->ie.klen;
	if (ws != NULL && !answer_stale(q, ws, now)) {
		inflight_restore_waiters(&q->ie, ws);
		return false;
	}
	inflight_free_waiters(&e->table, ws);
	query_finish(q, now);
	return true;
}

static void
race_answer_cb(struct race *r, uint8_t *m, size_t len,
    const struct msg_info *info, uint64_t now)
{
	finish_answer(FQ_OF_RACE(r), m, len, info, now);
}

static void
race_fail_cb(struct race *r, enum attempt_fail why, uint64_t now)
{
	finish_servfail(FQ_OF_RACE(r), why, now);
}

/* The key an NXDOMAIN is kept under: the name, for every type (qtype 0). */
static size_t
name_key(const struct fq *q, uint8_t *out)
{
	return cache_make_key(out, q->race.qname, q->race.qname_len, 0,
	    q->race.qclass, q->ie.key[q->ie.klen - 1]);
}

static void
finish_answer(struct fq *q, uint8_t *m, size_t len, const struct msg_info *info,
    uint64_t now)
{
	struct engine *e = q->eng;
	const struct config *cfg = &q->route->cfg;
	uint8_t ext, nkey[CACHE_KEY_MAX], *out = e->buf;
	size_t cap = sizeof(e->buf);
	uint32_t ttl = info->ttl;
	struct waiter *ws;
	int n;

	/*
	 * The client sees the TTLs that later cache hits count down from:
	 * each record its own, none below the entry's; a negative answer's
	 * are all its negative TTL (RFC 2308 5).
	 */
	if (info->cacheable)
		n = wire_strip_opt_clamp(m, len, &ext, ttl,
		    info->kind == MSG_ANSWER ? cfg->max_ttl : ttl);
	else
		n = wire_strip_opt(m, len, &ext);
	if (n < 0) {
		metrics_inc(e->env.met, MET_UPSTREAM_MALFORMED);
		finish_servfail(q, ATTEMPT_FAIL_MALFORMED, now);
		return;
	}
	if (negative_guard(q, info, now))
		return;
	/* TC over TCP would be a lie we must not cache. */
	if (q->cacheable && info->cacheable && !info->tc) {
		/*
		 * With upstream-0x20 the question comes back in random case:
		 * lower-cased, it is the cache key and is not stored twice.
		 * Replies carry each client's own question bytes anyway.
		 */
		if (cfg->upstream_0x20 && n > WIRE_HDR_LEN)
			wire_name_lower(
			    m + WIRE_HDR_LEN, (size_t)n - WIRE_HDR_LEN);
		if (info->kind == MSG_NXDOMAIN) {
			/*
			 * NXDOMAIN is about the name (RFC 2308 5): kept once
			 * for every type; an older answer for this type would
			 * shadow it.
			 */
			size_t nk = name_key(q, nkey);
			cache_store(
			    e->env.cache, nkey, nk, m, (size_t)n, ttl, now);
			cache_remove(e->env.cache, q->ie.key, q->ie.klen);
		} else {
			cache_store(e->env.cache, q->ie.key, q->ie.klen, m,
			    (size_t)n, ttl, now);
		}
	}
	if ((size_t)n + 1024 > cap / 2) {
		/* Too big to copy within buf: to the heap. */
		out = malloc((size_t)n + 1024);
		if (out == NULL) {
			finish_servfail(q, ATTEMPT_FAIL_MALFORMED, now);
			return;
		}
		cap = (size_t)n + 1024;
	} else {
		memmove(e->buf + cap / 2, m, (size_t)n);
		m = e->buf + cap / 2;
		cap = cap / 2;
	}
	/*
	 * Detached first: a reply may let a TCP client send more queries at
	 * once, and those must not join a query that is already answered.
	 */
	ws = query_detach(q, now);
	for (struct waiter *w = ws; w != NULL; w = w->next) {
		struct reply_to to;
		int r;
		reply_to_of(q, w, &to);
		memcpy(out, m, (size_t)n);
		r = reply_answer(
		    out, (size_t)n, cap, &to, -1, NULL, keep_ad(cfg, &w->q));
		if (r >= 0 && (WIRE_FLAGS(out) & WIRE_TC))
			metrics_inc(e->env.met, MET_REPLIES_TRUNCATED);
		w->cl.reply(&w->cl, r < 0 ? NULL : out, r < 0 ? 0 : (size_t)r,
		    CLIENT_SRC_UPSTREAM);
		w->cl.reply = NULL;
	}
	if (out != e->buf)
		free(out);
	inflight_free_waiters(&e->table, ws);
}

static void
finish_servfail(struct fq *q, enum attempt_fail why, uint64_t now)
{
	struct engine *e = q->eng;
	const struct config *cfg = &q->route->cfg;
	int ede = why == ATTEMPT_FAIL_NETWORK ? WIRE_EDE_NETWORK_ERROR
	    : why == ATTEMPT_FAIL_SHED        ? WIRE_EDE_OTHER
					      : WIRE_EDE_NO_REACHABLE_AUTHORITY;
	const char *text;
	char name[WIRE_NAME_MAX * 4 + 8];
	struct waiter *ws;
	bool held;

	switch (why) {
	case ATTEMPT_FAIL_TIMEOUT:
		text = "no upstream answered in time";
		break;
	case ATTEMPT_FAIL_NETWORK:
		text = "upstream unreachable";
		break;
	case ATTEMPT_FAIL_ALL_DOWN:
		text = "every upstream is down";
		break;
	case ATTEMPT_FAIL_SHED:
		text = "upstream query budget exhausted";
		break;
	default:
		text = "every upstream failed";
		break;
	}
	log_debug("engine",
	    "resolution failed qname=\"%s\" qtype=%u reason=\"%s\"",
	    wire_name_text(
		q->race.qname, q->race.qname_len, name, sizeof(name)),
	    q->race.qtype, text);
	ws = query_detach(q, now);
	/*
	 * Not asked upstream again for a while (RFC 9520, RFC 8767 recheck):
	 * stale-recheck when stale data can be served meanwhile, else a hold
	 * from 1 s doubling up to 5 min.  Shed, or every circuit open:
	 * nothing was learnt about this name.
	 */
	held = why != ATTEMPT_FAIL_ALL_DOWN && why != ATTEMPT_FAIL_SHED;
	if (answer_stale(q, ws, now)) {
		if (held)
			cache_fail(e->env.cache, q->skey, q->sklen, now,
			    cfg->stale_recheck, cfg->stale_recheck);
		inflight_free_waiters(&e->table, ws);
		return;
	}
	if (held)
		cache_fail(e->env.cache, q->ie.key, q->ie.klen, now,
		    cfg->failure_hold_min, cfg->failure_hold_max);
	for (struct waiter *w = ws; w != NULL; w = w->next) {
		struct reply_to to;
		int r;
		reply_to_of(q, w, &to);
		r = reply_error(e->buf, sizeof(e->buf), &to,
		    WIRE_RCODE_SERVFAIL, ede, text);
		metrics_inc(e->env.met, MET_REPLIES_SERVFAIL);
		w->cl.reply(&w->cl, r < 0 ? NULL : e->buf,
		    r < 0 ? 0 : (size_t)r, CLIENT_SRC_ERROR);
		w->cl.reply = NULL;
	}
	inflight_free_waiters(&e->table, ws);
}

/*
 * One engine sends every probe, so N workers do not multiply them; the
 * pools decide who is due (open circuits with backoff, idle servers).
 */
static void
probe_cb(struct timer *t, uint64_t now)
{
	struct engine *e = ENGINE_OF(t, probe_tick);
	struct route *r = e->route;

	if (e->draining)
		return;
	for (size_t z = 0; z < r->nzones; z++) {
		struct upstream_pool *pool = r->zones[z].pool;
		int idx;
		while ((idx = upstream_probe_due(
			    pool, now, rng_uniform(UINT32_MAX))) >= 0)
			attempt_probe(
			    &e->actx, r, pool, (unsigned)idx, &r->probe, now);
	}
	arm(e, &e->probe_tick, now + ENGINE_PROBE_TICK_MS);
}

/*
 * keep-warm: names critical to the node are refreshed before they expire
 * even when no client asks, so an outage finds them in the cache.
 */
static void
warm_cb(struct timer *t, uint64_t now)
{
	struct engine *e = ENGINE_OF(t, warm_tick);
	struct route *r = e->route;
	const struct config *cfg = &r->cfg;
	uint32_t pct = cfg->refresh_ahead > ENGINE_KEEP_WARM_PERCENT
	    ? cfg->refresh_ahead
	    : ENGINE_KEEP_WARM_PERCENT;

	if (e->draining)
		return;
	for (size_t i = 0; i < r->n_keep_warm; i++) {
		const struct route_name *kw = &r->keep_warm[i];
		uint8_t key[CACHE_KEY_MAX];
		struct cache_hit hit;
		enum cache_result res;
		size_t klen = cache_make_key(
		    key, kw->name, kw->len, kw->type, WIRE_CLASS_IN, 0);

		res = cache_lookup(e->env.cache, key, klen, now, cfg->stale_ttl,
		    NULL, 0, NULL, &hit);
		if (hit.hold_until_ms > now)
			continue;
		/* TTL left is in whole seconds and this runs every second. */
		if (res == CACHE_FRESH && hit.ttl_left > 1 &&
		    (uint64_t)hit.ttl_left * 100 > (uint64_t)hit.ttl * pct)
			continue;
		engine_refresh(e, key, klen, kw->name, kw->len, kw->type,
		    WIRE_CLASS_IN, 0, now);
	}
	arm(e, &e->warm_tick, now + ENGINE_KEEP_WARM_TICK_MS);
}
