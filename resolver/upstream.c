#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "stubborn/log.h"
#include "stubborn/upstream.h"

/* RFC 6298 gains: alpha 1/8, beta 1/4; RTO = SRTT + 4 * RTTVAR. */
/* The budget counts thousandths of a retry, so 10% of 100 is exactly 10. */
#define BUDGET_UNIT 1000
#define BUDGET_MAX (200 * BUDGET_UNIT)
/* Threads with counters of their own; more share them (still atomic). */
#define SLOTS 16
/* last_sent_ms is written at most this often (it only times idle probes). */
#define SENT_STAMP_MS 50

/*
 * The RTT estimate in one word, so a reader sees a consistent pair and a
 * writer replaces it with one compare-and-swap: RTT_SAMPLED, SRTT in
 * microseconds (bits 32..62), RTTVAR in microseconds (bits 0..31).
 */
#define RTT_SAMPLED (1ull << 63)
#define RTT_SRTT(v) ((uint32_t)(((v) >> 32) & 0x7fffffffu))
#define RTT_VAR(v) ((uint32_t)(v))

/*
 * What the query path reads and writes is atomic, so picking a server and
 * recording an answer take no lock; the circuit's transitions, the probes
 * and the failure bookkeeping are rare and stay under the pool's mutex
 * (fields marked L).  Writers of atomics outside the mutex: marked A.
 */
struct server {
	struct config_upstream up;
	_Atomic uint64_t rtt;          /* A: see RTT_SAMPLED */
	_Atomic int circuit;           /* L (read anywhere) */
	_Atomic uint32_t fails;        /* L: consecutive failures */
	_Atomic uint64_t last_ok_ms;   /* A: last usable answer */
	_Atomic uint64_t last_sent_ms; /* A */
	_Atomic int64_t rate_tokens; /* A: BUDGET_UNITs; upstream-qps bucket */
	_Atomic uint64_t rate_ms;    /* A: last refill; 0 before the first */
	_Atomic uint64_t ramp_start_ms; /* L: circuit closed at: slow start */
	uint32_t successes;             /* L: in half-open */
	uint32_t backoff_ms;    /* L: current probe backoff while open */
	uint64_t next_probe_ms; /* L: open/half-open: next probe */
	bool probe_pending;     /* L */
	uint32_t probe_rnd;     /* L: jitter for the next backoff */
	uint64_t last_fail_ms;  /* L */
	const char *last_fail;  /* L: a static string */
	uint64_t probes, probe_answers; /* L */
};

/*
 * A circuit change, logged once the pool lock is released: a slow stderr
 * must not hold up every worker that needs the lock.
 */
struct circuit_note {
	bool changed;
	enum upstream_circuit to;
	const char *up; /* the server's text: as long-lived as the pool */
	const char *why;
	uint32_t fails;
	uint32_t backoff_ms;
};

/* One thread's counts for one server (summed on reading). */
struct counts {
	_Atomic int64_t outstanding; /* sent, not yet done (probes aside) */
	_Atomic uint64_t queries, answers, timeouts, errors;
};

/* A thread's counts for every server: a cache line of its own. */
struct slot {
	struct counts c[UPSTREAM_MAX];
} __attribute__((aligned(64)));

struct upstream_pool {
	pthread_mutex_t lock;
	char name[64];
	struct upstream_params p;
	size_t n;
	_Atomic unsigned rr;            /* round-robin cursor */
	_Atomic int64_t tokens;         /* retry budget, in BUDGET_UNITs */
	_Atomic uint64_t tokens_ms;     /* last floor refill; 0 before */
	_Atomic uint64_t slow_until_ms; /* see upstream_mark_slow */
	_Atomic uint64_t recovered_ms;  /* a circuit last closed again */
	struct server s[UPSTREAM_MAX];
	struct slot slots[SLOTS];
};

/* Which slot this thread counts in: 1 + index, 0 before its first count. */
static _Atomic unsigned slots_taken;
static __thread unsigned my_slot;

static struct counts *counts_of(struct upstream_pool *pool, unsigned idx);
static unsigned slots_used(void);
static int64_t outstanding_of(struct upstream_pool *pool, unsigned idx);
static void add_capped(_Atomic int64_t *v, int64_t add, int64_t cap);
static void rtt_update(struct server *s, uint32_t rtt_ms);
static uint32_t rto_of(
    const struct upstream_pool *pool, const struct server *s);
static double score(struct upstream_pool *pool, unsigned idx);
static void set_circuit(struct upstream_pool *pool, struct server *s,
    enum upstream_circuit c, const char *why, uint64_t now, uint32_t rnd,
    struct circuit_note *note);
static void log_circuit(
    const struct upstream_pool *pool, const struct circuit_note *note);
static uint32_t jitter(uint32_t ms, uint32_t rnd);
static int candidates(struct upstream_pool *pool, uint32_t exclude, bool strict,
    enum upstream_prio prio, uint64_t now, int *cand, int *best,
    bool *budget_short);
static int64_t rate_burst(const struct upstream_pool *pool);
static void rate_refill(
    struct upstream_pool *pool, struct server *s, uint64_t now);
static bool rate_allows(struct upstream_pool *pool, unsigned idx,
    enum upstream_prio prio, uint64_t now);
static uint64_t ramp_rate(
    const struct upstream_pool *pool, const struct server *s, uint64_t now);
static int64_t ramp_burst(
    const struct upstream_pool *pool, const struct server *s, uint64_t now);
static void done_locked(struct upstream_pool *pool, unsigned idx,
    enum upstream_outcome outcome, uint32_t rtt_ms, bool probe, uint64_t now,
    struct circuit_note *note);
static uint64_t sum_counts(
    struct upstream_pool *pool, unsigned idx, size_t field);
static void count(_Atomic uint64_t *c);

static const char *const circuit_names[] = {"closed", "open", "half-open"};
static const char *const policy_names[] = {
    "fastest", "sequential", "round-robin", "random"};

const char *
upstream_circuit_name(enum upstream_circuit c)
{
	return (unsigned)c < 3 ? circuit_names[c] : "unknown";
}

const char *
upstream_policy_name(enum upstream_policy p)
{
	return (unsigned)p < 4 ? policy_names[p] : "unknown";
}

int
upstream_policy_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcasecmp(s, policy_names[i]) == 0)
			return i;
	return -EINVAL;
}

void
upstream_params_default(struct upstream_params *p, uint32_t rto_max_ms)
{
	memset(p, 0, sizeof(*p));
	p->policy = UPSTREAM_FASTEST;
	p->rto_min_ms = 10;
	p->rto_max_ms = rto_max_ms;
	p->rto_initial_ms = rto_max_ms < 200 ? rto_max_ms : 200;
	p->explore_permille = 30;
	p->open_after = 3;
	p->close_after = 2;
	p->probe_min_ms = 500;
	p->probe_max_ms = 8000;
	p->idle_probe_ms = 10000;
	p->budget_percent = 10;
	p->budget_floor = 10;
	p->qps = 0;
	p->max_outstanding = 0;
	p->ramp_ms = 4000;
}

struct upstream_pool *
upstream_pool_new(const char *name, const struct config_upstream *ups, size_t n,
    const struct upstream_params *p)
{
	struct upstream_pool *pool;

	if (n == 0 || n > UPSTREAM_MAX)
		return NULL;
	pool = calloc(1, sizeof(*pool));
	if (pool == NULL)
		return NULL;
	if (pthread_mutex_init(&pool->lock, NULL) != 0) {
		free(pool);
		return NULL;
	}
	snprintf(pool->name, sizeof(pool->name), "%s", name);
	pool->p = *p;
	pool->n = n;
	atomic_init(&pool->tokens, (int64_t)p->budget_floor * BUDGET_UNIT);
	for (size_t i = 0; i < n; i++) {
		pool->s[i].up = ups[i];
		/* Full from the start: workers that reach a new server at
		 * the same moment must not see an empty bucket while the
		 * first of them starts the refill clock. */
		atomic_init(&pool->s[i].rate_tokens, rate_burst(pool));
	}
	return pool;
}

void
upstream_pool_free(struct upstream_pool *pool)
{
	if (pool == NULL)
		return;
	pthread_mutex_destroy(&pool->lock);
	free(pool);
}

size_t
upstream_count(const struct upstream_pool *pool)
{
	return pool->n;
}

const struct config_upstream *
upstream_addr(const struct upstream_pool *pool, unsigned idx)
{
	return &pool->s[idx].up;
}

static unsigned
slots_used(void)
{
	unsigned n = atomic_load_explicit(&slots_taken, memory_order_relaxed);

	return n < SLOTS ? n : SLOTS;
}

/* This thread's counts for server idx. */
static struct counts *
counts_of(struct upstream_pool *pool, unsigned idx)
{
	if (my_slot == 0)
		my_slot = atomic_fetch_add(&slots_taken, 1) % SLOTS + 1;
	return &pool->slots[my_slot - 1].c[idx];
}

static int64_t
outstanding_of(struct upstream_pool *pool, unsigned idx)
{
	int64_t n = 0;

	for (unsigned t = 0; t < slots_used(); t++)
		n += atomic_load_explicit(
		    &pool->slots[t].c[idx].outstanding, memory_order_relaxed);
	return n > 0 ? n : 0;
}

static uint64_t
sum_counts(struct upstream_pool *pool, unsigned idx, size_t field)
{
	uint64_t n = 0;

	for (unsigned t = 0; t < slots_used(); t++)
		n += atomic_load_explicit(
		    (_Atomic uint64_t *)((char *)&pool->slots[t].c[idx] +
			field),
		    memory_order_relaxed);
	return n;
}

static void
count(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* *v += add, then no more than cap (a racing adder may overshoot briefly,
 * the next one trims). */
static void
add_capped(_Atomic int64_t *v, int64_t add, int64_t cap)
{
	int64_t t = atomic_fetch_add(v, add) + add;

	while (t > cap && !atomic_compare_exchange_weak(v, &t, cap))
		;
}

/* Jacobson/Karels in integer microseconds, one compare-and-swap. */
static void
rtt_update(struct server *s, uint32_t rtt_ms)
{
	uint64_t old = atomic_load(&s->rtt), nv;
	int64_t r = (int64_t)rtt_ms * 1000;

	do {
		int64_t srtt = RTT_SRTT(old), var = RTT_VAR(old), d;
		if (!(old & RTT_SAMPLED)) {
			srtt = r;
			var = r / 2;
		} else {
			d = srtt - r;
			var = (3 * var + (d < 0 ? -d : d)) / 4;
			srtt = (7 * srtt + r) / 8;
		}
		if (srtt > 0x7fffffff)
			srtt = 0x7fffffff;
		if (var > 0xffffffff)
			var = 0xffffffff;
		nv = RTT_SAMPLED | (uint64_t)srtt << 32 | (uint64_t)var;
	} while (!atomic_compare_exchange_weak(&s->rtt, &old, nv));
}

static uint32_t
rto_of(const struct upstream_pool *pool, const struct server *s)
{
	uint64_t v = atomic_load_explicit(&s->rtt, memory_order_relaxed);
	uint64_t rto;

	if (!(v & RTT_SAMPLED))
		return pool->p.rto_initial_ms;
	rto = ((uint64_t)RTT_SRTT(v) + 4 * (uint64_t)RTT_VAR(v)) / 1000;
	if (rto < pool->p.rto_min_ms)
		rto = pool->p.rto_min_ms;
	if (rto > pool->p.rto_max_ms)
		rto = pool->p.rto_max_ms;
	return (uint32_t)rto;
}

/*
 * Expected latency of one more query: the smoothed RTT, inflated by the
 * queries already waiting on the server so load spreads before it queues.
 */
static double
score(struct upstream_pool *pool, unsigned idx)
{
	const struct server *s = &pool->s[idx];
	uint64_t v = atomic_load_explicit(&s->rtt, memory_order_relaxed);
	double base = (v & RTT_SAMPLED)
	    ? (RTT_SRTT(v) + 2.0 * RTT_VAR(v)) / 1000.0
	    : (double)pool->p.rto_initial_ms;

	return base * (1.0 + (double)outstanding_of(pool, idx) / 64.0);
}

static uint32_t
jitter(uint32_t ms, uint32_t rnd)
{
	/* Spread probes of many nodes: +-25%. */
	return ms - ms / 4 + (ms ? rnd % (ms / 2 + 1) : 0);
}

/* Called with the pool lock held; note gets what to log after it. */
static void
set_circuit(struct upstream_pool *pool, struct server *s,
    enum upstream_circuit c, const char *why, uint64_t now, uint32_t rnd,
    struct circuit_note *note)
{
	enum upstream_circuit was = atomic_load(&s->circuit);

	if (was == c)
		return;
	if (c == UPSTREAM_OPEN) {
		uint64_t ramp = atomic_load(&s->ramp_start_ms);
		/*
		 * Reopening from half-open, or soon after closing, means it
		 * is not really back: keep backing off instead of restarting.
		 */
		bool flapping = was == UPSTREAM_HALF_OPEN ||
		    (ramp != 0 && now < ramp + 10000);
		s->backoff_ms = flapping && s->backoff_ms > 0
		    ? (s->backoff_ms * 2 > pool->p.probe_max_ms
			      ? pool->p.probe_max_ms
			      : s->backoff_ms * 2)
		    : pool->p.probe_min_ms;
		s->next_probe_ms = now + jitter(s->backoff_ms, rnd);
	} else if (c == UPSTREAM_HALF_OPEN) {
		s->successes = 0;
		s->next_probe_ms = now;
	} else {
		atomic_store(&s->fails, 0);
		atomic_store(&pool->recovered_ms, now);
		/* Back from an outage: ramp the rate up instead of a burst. */
		atomic_store(&s->ramp_start_ms, now);
		if (pool->p.qps > 0) {
			/* A full (small) slow-start bucket: the first refreshes
			 * of stale names go out at once, the rest ramp. */
			atomic_store(&s->rate_ms, now);
			atomic_store(&s->rate_tokens, ramp_burst(pool, s, now));
		}
	}
	atomic_store(&s->circuit, c);
	s->probe_pending = false;
	note->changed = true;
	note->to = c;
	note->up = s->up.text;
	note->why = why;
	note->fails = (uint32_t)atomic_load(&s->fails);
	note->backoff_ms = s->backoff_ms;
}

/* Called without the pool lock. */
static void
log_circuit(const struct upstream_pool *pool, const struct circuit_note *note)
{
	if (!note->changed)
		return;
	if (note->to == UPSTREAM_OPEN)
		log_warn("upstream",
		    "circuit open zone=%s up=%s reason=%s failures=%u "
		    "next_probe_ms=%u",
		    pool->name, note->up, note->why, note->fails,
		    note->backoff_ms);
	else
		log_info("upstream", "circuit %s zone=%s up=%s reason=%s",
		    upstream_circuit_name(note->to), pool->name, note->up,
		    note->why);
}

/* A quarter second of queries, at least 10: enough for bursts of misses. */
static int64_t
rate_burst(const struct upstream_pool *pool)
{
	int64_t b = pool->p.qps / 4;

	return (b < 10 ? 10 : b) * BUDGET_UNIT;
}

/*
 * The rate now: for ramp_ms after its circuit closed it starts at a tenth
 * and doubles every ramp_ms/4 (slow start), so a recovered upstream is not
 * hit by the whole backlog at once.
 */
static uint64_t
ramp_rate(
    const struct upstream_pool *pool, const struct server *s, uint64_t now)
{
	uint64_t start = atomic_load_explicit(
	    &((struct server *)s)->ramp_start_ms, memory_order_relaxed);
	uint64_t rate = pool->p.qps, since = now - start;

	if (start != 0 && now >= start && since < pool->p.ramp_ms) {
		unsigned steps = (unsigned)(since * 4 / pool->p.ramp_ms);
		uint64_t r = rate / 10 << steps;
		rate = r < rate ? (r ? r : 1) : rate;
	}
	return rate;
}

/* The bucket's size now: the burst, scaled down while ramping. */
static int64_t
ramp_burst(
    const struct upstream_pool *pool, const struct server *s, uint64_t now)
{
	int64_t b = rate_burst(pool);

	if (pool->p.qps == 0)
		return b;
	b = (int64_t)((uint64_t)b * ramp_rate(pool, s, now) / pool->p.qps);
	return b < 10 * BUDGET_UNIT ? 10 * BUDGET_UNIT : b;
}

/*
 * Refills the server's rate bucket for the time since the last refill;
 * of threads refilling at once, the one that moves rate_ms adds.
 */
static void
rate_refill(struct upstream_pool *pool, struct server *s, uint64_t now)
{
	uint64_t last = atomic_load(&s->rate_ms);

	if (last == 0) {
		/* The bucket is full since the pool was made: start the clock.
		 */
		(void)atomic_compare_exchange_strong(&s->rate_ms, &last, now);
		return;
	}
	if (now <= last ||
	    !atomic_compare_exchange_strong(&s->rate_ms, &last, now))
		return;
	add_capped(&s->rate_tokens,
	    (int64_t)((now - last) * ramp_rate(pool, s, now) * BUDGET_UNIT /
		1000),
	    ramp_burst(pool, s, now));
}

static bool
rate_allows(struct upstream_pool *pool, unsigned idx, enum upstream_prio prio,
    uint64_t now)
{
	struct server *s = &pool->s[idx];
	int64_t need = BUDGET_UNIT, burst;

	if (pool->p.max_outstanding > 0) {
		int64_t out = outstanding_of(pool, idx);
		if (out >= pool->p.max_outstanding &&
		    !(prio == UPSTREAM_PRIO_CLIENT &&
			out < pool->p.max_outstanding +
				pool->p.max_outstanding / 4))
			return false;
	}
	if (pool->p.qps == 0)
		return true;
	rate_refill(pool, s, now);
	/*
	 * The shares are of the bucket as it is now: during slow start it is
	 * smaller, and stale refreshes must still get their turn.
	 */
	burst = ramp_burst(pool, s, now);
	if (prio == UPSTREAM_PRIO_BACKGROUND)
		need = burst / 2;
	else if (prio == UPSTREAM_PRIO_STALE)
		need = burst / 4;
	if (need < BUDGET_UNIT)
		need = BUDGET_UNIT;
	return atomic_load(&s->rate_tokens) >= need;
}

/*
 * Collects the servers a new attempt may go to, best first by score: closed
 * circuits, and among them servers we know nothing of only while they have
 * no query outstanding (one at a time measures them) unless strict is
 * false.  Returns the count; *best is the best one.
 */
static int
candidates(struct upstream_pool *pool, uint32_t exclude, bool strict,
    enum upstream_prio prio, uint64_t now, int *cand, int *best,
    bool *budget_short)
{
	double best_score = 0;
	int nc = 0;

	*best = -1;
	for (size_t i = 0; i < pool->n; i++) {
		struct server *s = &pool->s[i];
		if ((exclude >> i) & 1 ||
		    atomic_load_explicit(&s->circuit, memory_order_relaxed) !=
			UPSTREAM_CLOSED)
			continue;
		if (strict && !(atomic_load(&s->rtt) & RTT_SAMPLED) &&
		    outstanding_of(pool, (unsigned)i) > 0)
			continue;
		if (!rate_allows(pool, (unsigned)i, prio, now)) {
			*budget_short = true;
			continue;
		}
		cand[nc++] = (int)i;
		double sc = score(pool, (unsigned)i);
		if (*best < 0 || sc < best_score) {
			*best = (int)i;
			best_score = sc;
		}
	}
	return nc;
}

int
upstream_pick(struct upstream_pool *pool, uint32_t exclude, uint64_t now,
    uint32_t rnd, enum upstream_prio prio, bool *explore)
{
	int best, cand[UPSTREAM_MAX], nc, pick = UPSTREAM_NONE_USABLE;
	bool budget_short = false;

	*explore = false;
	nc = candidates(
	    pool, exclude, true, prio, now, cand, &best, &budget_short);
	if (nc == 0)
		nc = candidates(pool, exclude, false, prio, now, cand, &best,
		    &budget_short);
	if (nc == 0) {
		/* Nothing closed: a half-open server beats failing the query.
		 */
		for (size_t i = 0; i < pool->n; i++)
			if (!((exclude >> i) & 1) &&
			    atomic_load(&pool->s[i].circuit) ==
				UPSTREAM_HALF_OPEN) {
				pick = (int)i;
				break;
			}
		if (pick < 0 && budget_short)
			pick = UPSTREAM_NONE_BUDGET;
		return pick;
	}
	switch (pool->p.policy) {
	case UPSTREAM_SEQUENTIAL:
		pick = cand[0];
		break;
	case UPSTREAM_ROUND_ROBIN:
		pick = cand[atomic_fetch_add_explicit(
				&pool->rr, 1, memory_order_relaxed) %
		    (unsigned)nc];
		break;
	case UPSTREAM_RANDOM:
		pick = cand[rnd % (unsigned)nc];
		break;
	case UPSTREAM_FASTEST:
	default:
		pick = best;
		/*
		 * A small share explores the others, so a server that got
		 * faster or came back is noticed within seconds.
		 */
		if (nc > 1 && (rnd % 1000) < pool->p.explore_permille) {
			int k = (int)((rnd / 1000) % (unsigned)(nc - 1));
			for (int i = 0; i < nc; i++) {
				if (cand[i] == best)
					continue;
				if (k-- == 0) {
					pick = cand[i];
					break;
				}
			}
			*explore = pick != best;
		}
		break;
	}
	return pick;
}

uint32_t
upstream_rto(struct upstream_pool *pool, unsigned idx)
{
	return rto_of(pool, &pool->s[idx]);
}

uint32_t
upstream_best_rto(struct upstream_pool *pool)
{
	uint32_t best = 0;
	bool found = false;

	for (size_t i = 0; i < pool->n; i++) {
		const struct server *s = &pool->s[i];
		if (atomic_load(&s->circuit) != UPSTREAM_CLOSED ||
		    !(atomic_load(&s->rtt) & RTT_SAMPLED))
			continue;
		uint32_t r = rto_of(pool, s);
		if (!found || r < best)
			best = r;
		found = true;
	}
	return found ? best : pool->p.rto_initial_ms;
}

void
upstream_sent(struct upstream_pool *pool, unsigned idx, uint64_t now)
{
	struct server *s = &pool->s[idx];
	struct counts *c = counts_of(pool, idx);

	atomic_fetch_add_explicit(&c->outstanding, 1, memory_order_relaxed);
	count(&c->queries);
	/* A shared line written by every worker: only now and then. */
	if (atomic_load_explicit(&s->last_sent_ms, memory_order_relaxed) +
		SENT_STAMP_MS <=
	    now)
		atomic_store_explicit(
		    &s->last_sent_ms, now, memory_order_relaxed);
	if (pool->p.qps > 0) {
		rate_refill(pool, s, now);
		atomic_fetch_sub(&s->rate_tokens, BUDGET_UNIT);
	}
}

void
upstream_done(struct upstream_pool *pool, unsigned idx,
    enum upstream_outcome outcome, uint32_t rtt_ms, bool probe, uint64_t now)
{
	struct server *s = &pool->s[idx];
	struct counts *c;

	/*
	 * The common case, an answer from a healthy server, changes no
	 * circuit: no lock.  (A failure recorded meanwhile by another worker
	 * is reset by the next answer that finds it.)
	 */
	if (outcome != UPSTREAM_OK || probe ||
	    atomic_load(&s->circuit) != UPSTREAM_CLOSED ||
	    atomic_load(&s->fails) != 0) {
		struct circuit_note note = {0};
		pthread_mutex_lock(&pool->lock);
		done_locked(pool, idx, outcome, rtt_ms, probe, now, &note);
		pthread_mutex_unlock(&pool->lock);
		log_circuit(pool, &note);
		return;
	}
	c = counts_of(pool, idx);
	if (atomic_load_explicit(&c->outstanding, memory_order_relaxed) > 0)
		atomic_fetch_sub_explicit(
		    &c->outstanding, 1, memory_order_relaxed);
	count(&c->answers);
	if (atomic_load_explicit(&s->last_ok_ms, memory_order_relaxed) != now)
		atomic_store_explicit(
		    &s->last_ok_ms, now, memory_order_relaxed);
	if (atomic_load_explicit(&pool->slow_until_ms, memory_order_relaxed))
		atomic_store(&pool->slow_until_ms, 0);
	rtt_update(s, rtt_ms);
}

/* upstream_done for everything that may change the circuit. */
static void
done_locked(struct upstream_pool *pool, unsigned idx,
    enum upstream_outcome outcome, uint32_t rtt_ms, bool probe, uint64_t now,
    struct circuit_note *note)
{
	struct server *s = &pool->s[idx];
	struct counts *c = counts_of(pool, idx);
	enum upstream_circuit circ = atomic_load(&s->circuit);
	/* Servers failing in the same millisecond still spread their probes. */
	uint32_t rnd =
	    probe ? s->probe_rnd : (uint32_t)(now * 2654435761u) ^ s->probe_rnd;
	static const char *const reason[] = {
	    "ok", "timeout", "unreachable", "error-rcode", "malformed"};

	if (!probe &&
	    atomic_load_explicit(&c->outstanding, memory_order_relaxed) > 0)
		atomic_fetch_sub_explicit(
		    &c->outstanding, 1, memory_order_relaxed);
	if (probe)
		s->probes++;
	if (outcome == UPSTREAM_OK) {
		atomic_store(&s->last_ok_ms, now);
		if (probe)
			s->probe_answers++;
		else
			count(&c->answers);
		atomic_store(&pool->slow_until_ms, 0);
		rtt_update(s, rtt_ms);
		atomic_store(&s->fails, 0);
		if (circ == UPSTREAM_OPEN)
			set_circuit(pool, s, UPSTREAM_HALF_OPEN,
			    "probe answered", now, rnd, note);
		else if (circ == UPSTREAM_HALF_OPEN &&
		    ++s->successes >= pool->p.close_after)
			set_circuit(pool, s, UPSTREAM_CLOSED, "answers again",
			    now, rnd, note);
		if (probe)
			s->probe_pending = false;
		return;
	}
	/* Per-server counters add up: queries = answers + timeouts + errors
	 * + outstanding; probes are counted on their own. */
	s->last_fail_ms = now;
	s->last_fail = reason[outcome];
	if (!probe && outcome == UPSTREAM_TIMEOUT)
		count(&c->timeouts);
	else if (!probe)
		count(&c->errors);
	atomic_fetch_add(&s->fails, 1);
	if (probe)
		s->probe_pending = false;
	if (circ == UPSTREAM_HALF_OPEN ||
	    (circ == UPSTREAM_CLOSED &&
		atomic_load(&s->fails) >= pool->p.open_after)) {
		set_circuit(
		    pool, s, UPSTREAM_OPEN, reason[outcome], now, rnd, note);
	} else if (circ == UPSTREAM_OPEN && probe) {
		/* Still down: back off further. */
		s->backoff_ms = s->backoff_ms * 2 > pool->p.probe_max_ms
		    ? pool->p.probe_max_ms
		    : s->backoff_ms * 2;
		s->next_probe_ms = now + jitter(s->backoff_ms, rnd);
	}
}

bool
upstream_budget_take(struct upstream_pool *pool, uint64_t now)
{
	uint64_t last = atomic_load(&pool->tokens_ms);
	int64_t t;

	if (last == 0) {
		atomic_compare_exchange_strong(&pool->tokens_ms, &last, now);
	} else if (now > last &&
	    atomic_compare_exchange_strong(&pool->tokens_ms, &last, now)) {
		/* The floor: budget_floor retries per second, whatever the
		 * load. */
		add_capped(&pool->tokens,
		    (int64_t)((now - last) * pool->p.budget_floor *
			BUDGET_UNIT / 1000),
		    BUDGET_MAX);
	}
	t = atomic_load(&pool->tokens);
	if (t > BUDGET_MAX)
		add_capped(&pool->tokens, 0, BUDGET_MAX);
	t = atomic_load(&pool->tokens);
	while (t >= BUDGET_UNIT)
		if (atomic_compare_exchange_weak(
			&pool->tokens, &t, t - BUDGET_UNIT))
			return true;
	return false;
}

void
upstream_budget_earn(struct upstream_pool *pool)
{
	add_capped(&pool->tokens,
	    (int64_t)pool->p.budget_percent * BUDGET_UNIT / 100, BUDGET_MAX);
}

int
upstream_probe_due(struct upstream_pool *pool, uint64_t now, uint32_t rnd)
{
	int due = -1;

	pthread_mutex_lock(&pool->lock);
	for (size_t i = 0; i < pool->n && due < 0; i++) {
		struct server *s = &pool->s[i];
		if (s->probe_pending)
			continue;
		switch (atomic_load(&s->circuit)) {
		case UPSTREAM_OPEN:
			if (now >= s->next_probe_ms)
				due = (int)i;
			break;
		case UPSTREAM_HALF_OPEN:
			/* Confirm recovery quickly: a probe every 250 ms. */
			if (now >= s->next_probe_ms) {
				due = (int)i;
				s->next_probe_ms = now + 250;
			}
			break;
		case UPSTREAM_CLOSED:
			if (now >= atomic_load(&s->last_sent_ms) +
				pool->p.idle_probe_ms)
				due = (int)i;
			break;
		}
		if (due >= 0) {
			s->probe_pending = true;
			s->probe_rnd = rnd;
			atomic_store(&s->last_sent_ms, now);
		}
	}
	pthread_mutex_unlock(&pool->lock);
	return due;
}

void
upstream_mark_slow(struct upstream_pool *pool, uint64_t until_ms)
{
	uint64_t t = atomic_load(&pool->slow_until_ms);

	while (t < until_ms &&
	    !atomic_compare_exchange_weak(&pool->slow_until_ms, &t, until_ms))
		;
}

bool
upstream_is_slow(struct upstream_pool *pool, uint64_t now)
{
	return now < atomic_load(&pool->slow_until_ms);
}

bool
upstream_any_usable(struct upstream_pool *pool)
{
	for (size_t i = 0; i < pool->n; i++)
		if (atomic_load(&pool->s[i].circuit) != UPSTREAM_OPEN)
			return true;
	return false;
}

void
upstream_get_stats(
    struct upstream_pool *pool, unsigned idx, struct upstream_stats *out)
{
	struct server *s = &pool->s[idx];
	uint64_t v = atomic_load(&s->rtt);
	int64_t rt = atomic_load(&s->rate_tokens),
		bt = atomic_load(&pool->tokens);

	pthread_mutex_lock(&pool->lock);
	out->circuit = atomic_load(&s->circuit);
	out->srtt_us = (v & RTT_SAMPLED) ? RTT_SRTT(v) : 0;
	out->rto_ms = rto_of(pool, s);
	out->outstanding = (uint32_t)outstanding_of(pool, idx);
	out->queries = sum_counts(pool, idx, offsetof(struct counts, queries));
	out->answers = sum_counts(pool, idx, offsetof(struct counts, answers));
	out->timeouts =
	    sum_counts(pool, idx, offsetof(struct counts, timeouts));
	out->errors = sum_counts(pool, idx, offsetof(struct counts, errors));
	out->probes = s->probes;
	out->probe_answers = s->probe_answers;
	out->last_ok_ms = atomic_load(&s->last_ok_ms);
	out->rttvar_us = (v & RTT_SAMPLED) ? RTT_VAR(v) : 0;
	out->last_fail_ms = s->last_fail_ms;
	out->last_fail = s->last_fail ? s->last_fail : "";
	out->rate_tokens = pool->p.qps == 0 ? UINT32_MAX
	    : rt > 0                        ? (uint32_t)(rt / BUDGET_UNIT)
					    : 0;
	out->budget_tokens = bt > 0 ? (uint32_t)(bt / BUDGET_UNIT) : 0;
	pthread_mutex_unlock(&pool->lock);
}

void
upstream_inherit(struct upstream_pool *pool, struct upstream_pool *old)
{
	pthread_mutex_lock(&old->lock);
	for (size_t i = 0; i < pool->n; i++) {
		struct server *s = &pool->s[i];
		for (size_t j = 0; j < old->n; j++) {
			struct server *o = &old->s[j];
			struct counts *c = &pool->slots[0].c[i];
			if (strcmp(o->up.text, s->up.text) != 0)
				continue;
			atomic_store(&s->rtt, atomic_load(&o->rtt));
			atomic_store(&s->circuit, atomic_load(&o->circuit));
			atomic_store(&s->fails, atomic_load(&o->fails));
			atomic_store(
			    &s->last_ok_ms, atomic_load(&o->last_ok_ms));
			atomic_store(
			    &s->last_sent_ms, atomic_load(&o->last_sent_ms));
			atomic_store(
			    &s->rate_tokens, atomic_load(&o->rate_tokens));
			atomic_store(&s->rate_ms, atomic_load(&o->rate_ms));
			atomic_store(
			    &s->ramp_start_ms, atomic_load(&o->ramp_start_ms));
			s->successes = o->successes;
			s->backoff_ms = o->backoff_ms;
			s->next_probe_ms = o->next_probe_ms;
			s->probe_rnd = o->probe_rnd;
			s->last_fail_ms = o->last_fail_ms;
			s->last_fail = o->last_fail;
			s->probes = o->probes;
			s->probe_answers = o->probe_answers;
			/* Its queries in flight are the old pool's to count;
			 * the totals go on in one slot (they are summed). */
			s->probe_pending = false;
			atomic_store(&c->queries,
			    sum_counts(old, (unsigned)j,
				offsetof(struct counts, queries)));
			atomic_store(&c->answers,
			    sum_counts(old, (unsigned)j,
				offsetof(struct counts, answers)));
			atomic_store(&c->timeouts,
			    sum_counts(old, (unsigned)j,
				offsetof(struct counts, timeouts)));
			atomic_store(&c->errors,
			    sum_counts(old, (unsigned)j,
				offsetof(struct counts, errors)));
			break;
		}
	}
	atomic_store(&pool->tokens, atomic_load(&old->tokens));
	atomic_store(&pool->tokens_ms, atomic_load(&old->tokens_ms));
	atomic_store(&pool->slow_until_ms, atomic_load(&old->slow_until_ms));
	atomic_store(&pool->recovered_ms, atomic_load(&old->recovered_ms));
	atomic_store(&pool->rr, atomic_load(&old->rr));
	pthread_mutex_unlock(&old->lock);
}

uint64_t
upstream_recovered_ms(struct upstream_pool *pool)
{
	return atomic_load(&pool->recovered_ms);
}
