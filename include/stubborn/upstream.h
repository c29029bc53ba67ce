/*
 * upstream: the health of a pool of upstream servers, and which one to ask.
 *
 * Per server: a smoothed RTT and its variance (Jacobson/Karels, RFC 6298)
 * giving a retransmit timeout, the queries outstanding, and a circuit:
 * closed -> open after consecutive failures -> half-open once a probe is
 * answered -> closed after successes.  Open circuits are probed with
 * exponential backoff and jitter; idle closed servers are probed too, so
 * their RTT stays current.  A retry budget bounds hedges and retries to a
 * share of the queries sent plus a small floor, so an outage never
 * multiplies upstream load.
 *
 * The module decides; it never sends.  Time (now, in ms) and randomness are
 * arguments.  A pool is shared by every worker, and the query path takes
 * no lock: picking a server, counting a query and recording an answer from
 * a healthy server are atomic operations (the counters are kept per
 * thread and summed when read); circuit changes, failures and probes,
 * which are rare, take the pool's mutex.
 */
#ifndef STUBBORN_UPSTREAM_H
#define STUBBORN_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stubborn/config.h"

#define UPSTREAM_MAX CONFIG_MAX_UPSTREAM

enum upstream_policy {
	UPSTREAM_FASTEST = 0, /* best expected latency, a little exploration */
	UPSTREAM_SEQUENTIAL,  /* first usable in configured order */
	UPSTREAM_ROUND_ROBIN, /* rotate over usable servers */
	UPSTREAM_RANDOM,      /* uniform over usable servers */
};

enum upstream_circuit {
	UPSTREAM_CLOSED = 0,
	UPSTREAM_OPEN,
	UPSTREAM_HALF_OPEN,
};

enum upstream_outcome {
	UPSTREAM_OK = 0, /* a usable answer (NOERROR, NXDOMAIN, ...) */
	UPSTREAM_TIMEOUT,
	UPSTREAM_REFUSED_NET, /* ICMP unreachable, TCP reset */
	UPSTREAM_RCODE,       /* SERVFAIL, REFUSED, FORMERR */
	UPSTREAM_MALFORMED,   /* garbage, mismatched beyond repair */
};

struct upstream_params {
	enum upstream_policy policy;
	uint32_t rto_min_ms;       /* floor of the retransmit timeout */
	uint32_t rto_max_ms;       /* ceiling, normally upstream-timeout */
	uint32_t rto_initial_ms;   /* before the first sample */
	uint32_t explore_permille; /* share of picks that go to others */
	uint32_t open_after;       /* consecutive failures that open */
	uint32_t close_after;      /* successes in half-open that close */
	uint32_t probe_min_ms;     /* first probe delay after opening */
	uint32_t probe_max_ms;     /* backoff ceiling */
	uint32_t idle_probe_ms;    /* probe a closed server unused this long */
	uint32_t budget_percent;   /* retries+hedges per 100 queries */
	uint32_t budget_floor;     /* retries+hedges per second, always */
	uint32_t qps;              /* queries per second per server, 0 = any */
	uint32_t max_outstanding;  /* per server, 0 = any */
	uint32_t ramp_ms;          /* slow start after a circuit closes */
};

/*
 * Who wants the query: when a server's rate budget runs short, background
 * work is shed first so a client miss is never starved (issue: retry storms).
 */
enum upstream_prio {
	UPSTREAM_PRIO_CLIENT = 0, /* a client waits, nothing else to give */
	UPSTREAM_PRIO_STALE,      /* a client waits, a stale answer exists */
	UPSTREAM_PRIO_BACKGROUND, /* refresh-ahead, keep-warm */
};

/* upstream_pick results below 0 */
#define UPSTREAM_NONE_USABLE (-1) /* every circuit open (or excluded) */
#define UPSTREAM_NONE_BUDGET (-2) /* usable, but over their rate budget */

/* What /metrics shows for one server. */
struct upstream_stats {
	enum upstream_circuit circuit;
	uint32_t srtt_us;
	uint32_t rto_ms;
	uint32_t outstanding;
	uint64_t queries, answers, timeouts, errors; /* probes not counted */
	uint64_t probes, probe_answers;
	uint64_t last_ok_ms; /* last usable answer, 0 if none yet */
	uint32_t rttvar_us;
	uint64_t last_fail_ms;  /* last failure, 0 if none yet */
	const char *last_fail;  /* its reason: "timeout", ... ("" if none) */
	uint32_t rate_tokens;   /* queries its rate bucket allows now */
	uint32_t budget_tokens; /* the pool's retries and hedges left */
};

struct upstream_pool;

/* Fills *p with the defaults (policy fastest, rto 10..rto_max, ...). */
void upstream_params_default(struct upstream_params *p, uint32_t rto_max_ms);

/*
 * A pool of n (1..UPSTREAM_MAX) servers named by addrs (copied); name is the
 * zone it serves, for logs.  NULL on ENOMEM or bad n.
 */
struct upstream_pool *upstream_pool_new(const char *name,
    const struct config_upstream *ups, size_t n,
    const struct upstream_params *p);

void upstream_pool_free(struct upstream_pool *pool);

size_t upstream_count(const struct upstream_pool *pool);

/* The server's address (valid as long as the pool). */
const struct config_upstream *upstream_addr(
    const struct upstream_pool *pool, unsigned idx);

/*
 * Chooses a server for a new attempt, skipping those whose bit is set in
 * exclude, those at max_outstanding, and those whose rate budget is too low
 * for prio (background work needs half a bucket, stale refreshes a quarter,
 * client misses one token).  rnd is a fresh random 32-bit value.  Returns
 * the index, UPSTREAM_NONE_USABLE when no server is usable (every one open
 * or excluded: fail fast), or UPSTREAM_NONE_BUDGET when usable servers are
 * all over budget (shed).
 * *explore is set when the pick is an exploration (not the best server), so
 * the caller hedges at the best server's RTO rather than the pick's.
 */
int upstream_pick(struct upstream_pool *pool, uint32_t exclude, uint64_t now,
    uint32_t rnd, enum upstream_prio prio, bool *explore);

/* The retransmit timeout of idx (ms): when to hedge an attempt to it. */
uint32_t upstream_rto(struct upstream_pool *pool, unsigned idx);

/* The lowest RTO among closed servers (ms), or rto_initial if none. */
uint32_t upstream_best_rto(struct upstream_pool *pool);

/* A query was sent to idx (counts it outstanding, spends a rate token). */
void upstream_sent(struct upstream_pool *pool, unsigned idx, uint64_t now);

/*
 * The attempt to idx ended with outcome after rtt_ms (for UPSTREAM_OK).
 * Updates the RTT estimate and the circuit; logs circuit changes.
 * probe marks health-check queries (their answers close circuits but do
 * not count as traffic).  A query's upstream_done comes from the thread
 * that called upstream_sent for it (its outstanding count is per thread).
 */
void upstream_done(struct upstream_pool *pool, unsigned idx,
    enum upstream_outcome outcome, uint32_t rtt_ms, bool probe, uint64_t now);

/*
 * Takes one retry or hedge from the budget.  Returns false (and takes
 * nothing) when the budget is spent.  Every upstream_sent of a first
 * attempt adds budget_percent/100 of a token.
 */
bool upstream_budget_take(struct upstream_pool *pool, uint64_t now);

/* Every first attempt earns budget_percent/100 of a retry token. */
void upstream_budget_earn(struct upstream_pool *pool);

/*
 * Returns the index of a server that needs a health probe now (an open
 * circuit whose backoff ran out, a half-open one, or a closed one idle for
 * idle_probe_ms), marking the probe as sent; -1 when none does.  rnd jitters
 * the next backoff.  Call repeatedly until -1.
 */
int upstream_probe_due(struct upstream_pool *pool, uint64_t now, uint32_t rnd);

/*
 * Marks the pool slow until until_ms: a client just waited
 * stale-client-timeout for it in vain.  While slow, clients with a stale
 * answer get it at once (one refresh per name still goes out); any usable
 * answer from the pool ends it.
 */
void upstream_mark_slow(struct upstream_pool *pool, uint64_t until_ms);

bool upstream_is_slow(struct upstream_pool *pool, uint64_t now);

/* True when at least one server's circuit is not open. */
bool upstream_any_usable(struct upstream_pool *pool);

void upstream_get_stats(
    struct upstream_pool *pool, unsigned idx, struct upstream_stats *out);

/* "closed", "open", "half-open". */
const char *upstream_circuit_name(enum upstream_circuit c);

/* "fastest", ... ; and the reverse (-EINVAL for unknown names). */
const char *upstream_policy_name(enum upstream_policy p);

int upstream_policy_parse(const char *s);

/*
 * Gives pool's servers the state old had for the same server (same text):
 * RTT estimate, circuit and its backoff, rate bucket, counters; and the
 * pool's retry budget.  For a reload: health survives it.
 */
void upstream_inherit(struct upstream_pool *pool, struct upstream_pool *old);

/*
 * When a server's circuit last closed again (0: never): holds placed on
 * names before then were placed while the pool was down, and a name held
 * stale since then can be refreshed at once.
 */
uint64_t upstream_recovered_ms(struct upstream_pool *pool);

#endif
