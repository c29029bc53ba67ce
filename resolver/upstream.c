#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "stubborn/log.h"
#include "stubborn/upstream.h"

/* RFC 6298 gains: alpha 1/8, beta 1/4; RTO = SRTT + 4 * RTTVAR. */
#define RTT_ALPHA 0.125
#define RTT_BETA 0.25
/* The budget counts thousandths of a retry, so 10% of 100 is exactly 10. */
#define BUDGET_UNIT 1000
#define BUDGET_MAX (200 * BUDGET_UNIT)

struct server {
	struct config_upstream up;
	bool sampled;
	double srtt;   /* ms */
	double rttvar; /* ms */
	uint32_t outstanding;
	enum upstream_circuit circuit;
	uint32_t fails;         /* consecutive failures */
	uint32_t successes;     /* in half-open */
	uint32_t backoff_ms;    /* current probe backoff while open */
	uint64_t next_probe_ms; /* open/half-open: when to probe next */
	bool probe_pending;
	uint32_t probe_rnd; /* jitter for the backoff after this probe */
	uint64_t last_sent_ms;
	int64_t rate_tokens;    /* BUDGET_UNITs; upstream-qps bucket */
	uint64_t rate_ms;       /* last refill; 0 before the first */
	uint64_t ramp_start_ms; /* circuit closed at: slow start from here */
	uint64_t last_ok_ms;    /* last usable answer (probe or query) */
	uint64_t last_fail_ms;
	const char *last_fail; /* a static string */
	uint64_t queries, answers, timeouts, errors, probes, probe_answers;
};

/*
 * A circuit change, logged once the pool lock is released: a slow stderr
 * must not hold up every worker picking a server.
 */
struct circuit_note {
	bool changed;
	enum upstream_circuit to;
	const char *up; /* the server's text: as long-lived as the pool */
	const char *why;
	uint32_t fails;
	uint32_t backoff_ms;
};

struct upstream_pool {
	pthread_mutex_t lock;
	char name[64];
	struct upstream_params p;
	size_t n;
	unsigned rr;            /* round-robin cursor */
	int64_t tokens;         /* retry budget, in BUDGET_UNITs */
	uint64_t slow_until_ms; /* see upstream_mark_slow */
	uint64_t tokens_ms;     /* last floor refill; 0 before the first */
	uint64_t recovered_ms;  /* a server's circuit last closed again */
	struct server s[UPSTREAM_MAX];
};

static uint32_t rto_of(
    const struct upstream_pool *pool, const struct server *s);
static double score(const struct upstream_pool *pool, const struct server *s);
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
static bool rate_allows(struct upstream_pool *pool, struct server *s,
    enum upstream_prio prio, uint64_t now);
static uint64_t ramp_rate(
    const struct upstream_pool *pool, const struct server *s, uint64_t now);
static int64_t ramp_burst(
    const struct upstream_pool *pool, const struct server *s, uint64_t now);

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
	pool->tokens = (int64_t)p->budget_floor * BUDGET_UNIT;
	for (size_t i = 0; i < n; i++)
		pool->s[i].up = ups[i];
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

static uint32_t
rto_of(const struct upstream_pool *pool, const struct server *s)
{
	double rto;

	if (!s->sampled)
		return pool->p.rto_initial_ms;
	rto = s->srtt + 4.0 * s->rttvar;
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
score(const struct upstream_pool *pool, const struct server *s)
{
	double base = s->sampled ? s->srtt + 2.0 * s->rttvar
				 : (double)pool->p.rto_initial_ms;

	return base * (1.0 + (double)s->outstanding / 64.0);
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
	if (s->circuit == c)
		return;
	if (c == UPSTREAM_OPEN) {
		/*
		 * Reopening from half-open, or soon after closing, means it
		 * is not really back: keep backing off instead of restarting.
		 */
		bool flapping = s->circuit == UPSTREAM_HALF_OPEN ||
		    (s->ramp_start_ms != 0 && now < s->ramp_start_ms + 10000);
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
		s->fails = 0;
		pool->recovered_ms = now;
		/* Back from an outage: ramp the rate up instead of a burst. */
		s->ramp_start_ms = now;
		if (pool->p.qps > 0) {
			/* A full (small) slow-start bucket: the first refreshes
			 * of stale names go out at once, the rest ramp. */
			s->rate_ms = now;
			s->rate_tokens = ramp_burst(pool, s, now);
		}
	}
	s->circuit = c;
	s->probe_pending = false;
	note->changed = true;
	note->to = c;
	note->up = s->up.text;
	note->why = why;
	note->fails = s->fails;
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
 * Refills the server's rate bucket.  For ramp_ms after its circuit closed
 * the rate starts at a tenth and doubles every ramp_ms/4 (slow start), so a
 * recovered upstream is not hit by the whole backlog at once.
 */
/*
 * The rate now: for ramp_ms after its circuit closed it starts at a tenth
 * and doubles every ramp_ms/4 (slow start), so a recovered upstream is not
 * hit by the whole backlog at once.
 */
static uint64_t
ramp_rate(
    const struct upstream_pool *pool, const struct server *s, uint64_t now)
{
	uint64_t rate = pool->p.qps, since = now - s->ramp_start_ms;

	if (s->ramp_start_ms != 0 && now >= s->ramp_start_ms &&
	    since < pool->p.ramp_ms) {
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

static void
rate_refill(struct upstream_pool *pool, struct server *s, uint64_t now)
{
	int64_t cap;

	if (s->rate_ms == 0) {
		s->rate_ms = now;
		s->rate_tokens = rate_burst(pool);
		return;
	}
	if (now <= s->rate_ms)
		return;
	s->rate_tokens += (int64_t)((now - s->rate_ms) *
	    ramp_rate(pool, s, now) * BUDGET_UNIT / 1000);
	cap = ramp_burst(pool, s, now);
	if (s->rate_tokens > cap)
		s->rate_tokens = cap;
	s->rate_ms = now;
}

static bool
rate_allows(struct upstream_pool *pool, struct server *s,
    enum upstream_prio prio, uint64_t now)
{
	int64_t need = BUDGET_UNIT, burst;

	if (pool->p.max_outstanding > 0 &&
	    s->outstanding >= pool->p.max_outstanding &&
	    !(prio == UPSTREAM_PRIO_CLIENT &&
		s->outstanding <
		    pool->p.max_outstanding + pool->p.max_outstanding / 4))
		return false;
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
	return s->rate_tokens >= need;
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
		if ((exclude >> i) & 1 || s->circuit != UPSTREAM_CLOSED)
			continue;
		if (strict && !s->sampled && s->outstanding > 0)
			continue;
		if (!rate_allows(pool, s, prio, now)) {
			*budget_short = true;
			continue;
		}
		cand[nc++] = (int)i;
		double sc = score(pool, s);
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
	pthread_mutex_lock(&pool->lock);
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
			    pool->s[i].circuit == UPSTREAM_HALF_OPEN) {
				pick = (int)i;
				break;
			}
		if (pick < 0 && budget_short)
			pick = UPSTREAM_NONE_BUDGET;
		pthread_mutex_unlock(&pool->lock);
		return pick;
	}
	switch (pool->p.policy) {
	case UPSTREAM_SEQUENTIAL:
		pick = cand[0];
		break;
	case UPSTREAM_ROUND_ROBIN:
		pick = cand[pool->rr++ % (unsigned)nc];
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
	pthread_mutex_unlock(&pool->lock);
	return pick;
}

uint32_t
upstream_rto(struct upstream_pool *pool, unsigned idx)
{
	uint32_t r;

	pthread_mutex_lock(&pool->lock);
	r = rto_of(pool, &pool->s[idx]);
	pthread_mutex_unlock(&pool->lock);
	return r;
}

uint32_t
upstream_best_rto(struct upstream_pool *pool)
{
	uint32_t best = 0;
	bool found = false;

	pthread_mutex_lock(&pool->lock);
	for (size_t i = 0; i < pool->n; i++) {
		const struct server *s = &pool->s[i];
		if (s->circuit != UPSTREAM_CLOSED || !s->sampled)
			continue;
		uint32_t r = rto_of(pool, s);
		if (!found || r < best)
			best = r;
		found = true;
	}
	if (!found)
		best = pool->p.rto_initial_ms;
	pthread_mutex_unlock(&pool->lock);
	return best;
}

void
upstream_sent(struct upstream_pool *pool, unsigned idx, uint64_t now)
{
	pthread_mutex_lock(&pool->lock);
	pool->s[idx].outstanding++;
	pool->s[idx].queries++;
	pool->s[idx].last_sent_ms = now;
	if (pool->p.qps > 0) {
		rate_refill(pool, &pool->s[idx], now);
		pool->s[idx].rate_tokens -= BUDGET_UNIT;
	}
	pthread_mutex_unlock(&pool->lock);
}

void
upstream_done(struct upstream_pool *pool, unsigned idx,
    enum upstream_outcome outcome, uint32_t rtt_ms, bool probe, uint64_t now)
{
	struct server *s = &pool->s[idx];
	struct circuit_note note = {0};
	uint32_t rnd;

	pthread_mutex_lock(&pool->lock);
	/* Servers failing in the same millisecond still spread their probes. */
	rnd =
	    probe ? s->probe_rnd : (uint32_t)(now * 2654435761u) ^ s->probe_rnd;
	if (!probe && s->outstanding > 0)
		s->outstanding--;
	if (probe)
		s->probes++;
	if (outcome == UPSTREAM_OK) {
		double r = rtt_ms;
		s->last_ok_ms = now;
		if (probe)
			s->probe_answers++;
		else
			s->answers++;
		pool->slow_until_ms = 0;
		if (!s->sampled) {
			s->srtt = r;
			s->rttvar = r / 2;
			s->sampled = true;
		} else {
			double d = s->srtt - r;
			s->rttvar = (1 - RTT_BETA) * s->rttvar +
			    RTT_BETA * (d < 0 ? -d : d);
			s->srtt = (1 - RTT_ALPHA) * s->srtt + RTT_ALPHA * r;
		}
		s->fails = 0;
		if (s->circuit == UPSTREAM_OPEN)
			set_circuit(pool, s, UPSTREAM_HALF_OPEN,
			    "probe answered", now, rnd, &note);
		else if (s->circuit == UPSTREAM_HALF_OPEN &&
		    ++s->successes >= pool->p.close_after)
			set_circuit(pool, s, UPSTREAM_CLOSED, "answers again",
			    now, rnd, &note);
		if (probe)
			s->probe_pending = false;
		pthread_mutex_unlock(&pool->lock);
		log_circuit(pool, &note);
		return;
	}
	/* Per-server counters add up: queries = answers + timeouts + errors
	 * + outstanding; probes are counted on their own. */
	{
		static const char *const reason[] = {
		    "ok", "timeout", "unreachable", "error-rcode", "malformed"};
		s->last_fail_ms = now;
		s->last_fail = reason[outcome];
	}
	if (!probe && outcome == UPSTREAM_TIMEOUT)
		s->timeouts++;
	else if (!probe)
		s->errors++;
	s->fails++;
	if (probe)
		s->probe_pending = false;
	if (s->circuit == UPSTREAM_HALF_OPEN ||
	    (s->circuit == UPSTREAM_CLOSED && s->fails >= pool->p.open_after)) {
		static const char *const why[] = {
		    "ok", "timeout", "unreachable", "error-rcode", "malformed"};
		set_circuit(
		    pool, s, UPSTREAM_OPEN, why[outcome], now, rnd, &note);
	} else if (s->circuit == UPSTREAM_OPEN && probe) {
		/* Still down: back off further. */
		s->backoff_ms = s->backoff_ms * 2 > pool->p.probe_max_ms
		    ? pool->p.probe_max_ms
		    : s->backoff_ms * 2;
		s->next_probe_ms = now + jitter(s->backoff_ms, rnd);
	}
	pthread_mutex_unlock(&pool->lock);
	log_circuit(pool, &note);
}

bool
upstream_budget_take(struct upstream_pool *pool, uint64_t now)
{
	bool ok = false;

	pthread_mutex_lock(&pool->lock);
	if (pool->tokens_ms == 0) {
		pool->tokens_ms = now;
	} else if (now > pool->tokens_ms) {
		/* The floor: budget_floor retries per second, whatever the
		 * load. */
		pool->tokens += (int64_t)((now - pool->tokens_ms) *
		    pool->p.budget_floor * BUDGET_UNIT / 1000);
		pool->tokens_ms = now;
	}
	if (pool->tokens > BUDGET_MAX)
		pool->tokens = BUDGET_MAX;
	if (pool->tokens >= BUDGET_UNIT) {
		pool->tokens -= BUDGET_UNIT;
		ok = true;
	}
	pthread_mutex_unlock(&pool->lock);
	return ok;
}

void
upstream_budget_earn(struct upstream_pool *pool)
{
	pthread_mutex_lock(&pool->lock);
	pool->tokens += (int64_t)pool->p.budget_percent * BUDGET_UNIT / 100;
	if (pool->tokens > BUDGET_MAX)
		pool->tokens = BUDGET_MAX;
	pthread_mutex_unlock(&pool->lock);
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
		switch (s->circuit) {
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
			if (now >= s->last_sent_ms + pool->p.idle_probe_ms)
				due = (int)i;
			break;
		}
		if (due >= 0) {
			s->probe_pending = true;
			s->probe_rnd = rnd;
			s->last_sent_ms = now;
		}
	}
	pthread_mutex_unlock(&pool->lock);
	return due;
}

void
upstream_mark_slow(struct upstream_pool *pool, uint64_t until_ms)
{
	pthread_mutex_lock(&pool->lock);
	if (pool->slow_until_ms < until_ms)
		pool->slow_until_ms = until_ms;
	pthread_mutex_unlock(&pool->lock);
}

bool
upstream_is_slow(struct upstream_pool *pool, uint64_t now)
{
	bool slow;

	pthread_mutex_lock(&pool->lock);
	slow = now < pool->slow_until_ms;
	pthread_mutex_unlock(&pool->lock);
	return slow;
}

bool
upstream_any_usable(struct upstream_pool *pool)
{
	bool any = false;

	pthread_mutex_lock(&pool->lock);
	for (size_t i = 0; i < pool->n; i++)
		if (pool->s[i].circuit != UPSTREAM_OPEN)
			any = true;
	pthread_mutex_unlock(&pool->lock);
	return any;
}

void
upstream_get_stats(
    struct upstream_pool *pool, unsigned idx, struct upstream_stats *out)
{
	const struct server *s = &pool->s[idx];

	pthread_mutex_lock(&pool->lock);
	out->circuit = s->circuit;
	out->srtt_us = s->sampled ? (uint32_t)(s->srtt * 1000.0) : 0;
	out->rto_ms = rto_of(pool, s);
	out->outstanding = s->outstanding;
	out->queries = s->queries;
	out->answers = s->answers;
	out->timeouts = s->timeouts;
	out->errors = s->errors;
	out->probes = s->probes;
	out->probe_answers = s->probe_answers;
	out->last_ok_ms = s->last_ok_ms;
	out->rttvar_us = s->sampled ? (uint32_t)(s->rttvar * 1000.0) : 0;
	out->last_fail_ms = s->last_fail_ms;
	out->last_fail = s->last_fail ? s->last_fail : "";
	out->rate_tokens = pool->p.qps == 0 ? UINT32_MAX
	    : s->rate_tokens > 0 ? (uint32_t)(s->rate_tokens / BUDGET_UNIT)
				 : 0;
	out->budget_tokens =
	    pool->tokens > 0 ? (uint32_t)(pool->tokens / BUDGET_UNIT) : 0;
	pthread_mutex_unlock(&pool->lock);
}

void
upstream_inherit(struct upstream_pool *pool, struct upstream_pool *old)
{
	pthread_mutex_lock(&old->lock);
	for (size_t i = 0; i < pool->n; i++) {
		struct server *s = &pool->s[i];
		for (size_t j = 0; j < old->n; j++) {
			if (strcmp(old->s[j].up.text, s->up.text) != 0)
				continue;
			*s = old->s[j];
			/* Its queries in flight are the old pool's to count. */
			s->outstanding = 0;
			s->probe_pending = false;
			break;
		}
	}
	pool->tokens = old->tokens;
	pool->tokens_ms = old->tokens_ms;
	pool->slow_until_ms = old->slow_until_ms;
	pool->recovered_ms = old->recovered_ms;
	pool->rr = old->rr;
	pthread_mutex_unlock(&old->lock);
}

uint64_t
upstream_recovered_ms(struct upstream_pool *pool)
{
	uint64_t t;

	pthread_mutex_lock(&pool->lock);
	t = pool->recovered_ms;
	pthread_mutex_unlock(&pool->lock);
	return t;
}
