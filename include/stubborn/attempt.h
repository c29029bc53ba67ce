/*
 * attempt: a query's attempts at its zone's upstream servers.  A race runs
 * them for one question: the best server first (the pool decides), the
 * next one too when the first has not answered by its retransmit timeout
 * (hedging) or failed, within the pool's retry budget; each attempt gets a
 * fresh random ID (and letter case with upstream-0x20), falls back to TCP
 * on TC=1 and to plain DNS on FORMERR to EDNS, and counts as a failure of
 * its server on timeout, error RCODE, garbage or unreachability.  The first
 * usable answer ends the race; attempts still out are orphaned and go on
 * measuring their servers.  Health probes are attempts without a race.
 *
 * One worker's attempts share a struct attempt_ctx; nothing here is
 * thread-safe beyond the pools' own locking.  Time is an argument.
 */
#ifndef STUBBORN_ATTEMPT_H
#define STUBBORN_ATTEMPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stubborn/msg.h"
#include "stubborn/route.h"
#include "stubborn/timer.h"
#include "stubborn/upstream.h"
#include "stubborn/wire.h"
#include "stubborn/xport.h"

struct metrics_worker;
struct attempt;

/* Why a race (or its last attempt) failed; picks the EDE of a SERVFAIL. */
enum attempt_fail {
	ATTEMPT_FAIL_NONE = 0,
	ATTEMPT_FAIL_TIMEOUT,
	ATTEMPT_FAIL_NETWORK,
	ATTEMPT_FAIL_RCODE,
	ATTEMPT_FAIL_MALFORMED,
	ATTEMPT_FAIL_ALL_DOWN, /* every circuit open: nothing was sent */
	ATTEMPT_FAIL_SHED,     /* the servers' rate budget was short */
};

/* One worker's attempts: its transport, timers and counters. */
struct attempt_ctx {
	struct timer_heap *timers;
	struct xport xport;
	struct metrics_worker *met;
	void (*rearm)(void *arg, uint64_t at); /* a timer was armed at */
	void *rearm_arg;
	struct attempt *live; /* every attempt not yet freed */
	size_t n_live;
	struct attempt *spare; /* freed attempts kept for reuse */
	size_t n_spare;
};

struct race;

/* The race got its answer: msg (len bytes, OPT included, writable during
 * the call), classified as info. */
typedef void (*race_answer_fn)(struct race *r, uint8_t *msg, size_t len,
    const struct msg_info *info, uint64_t now);
/* Every attempt failed and no further one could start. */
typedef void (*race_fail_fn)(
    struct race *r, enum attempt_fail why, uint64_t now);

/*
 * Embedded in the query that runs it.  The owner fills the question, pool,
 * cfg, prio and callbacks, then calls race_start; it keeps route (and so
 * pool and cfg) alive until race_stop.
 */
struct race {
	struct attempt_ctx *ctx;
	struct route *route;
	struct upstream_pool *pool;
	const struct config *cfg;
	uint8_t qname[WIRE_NAME_MAX]; /* lower-cased wire form */
	size_t qname_len;
	uint16_t qtype, qclass;
	uint16_t qflags; /* CD, as the client asked */
	bool do_bit;
	enum upstream_prio prio;
	race_answer_fn on_answer;
	race_fail_fn on_fail;
	/* The race's own state. */
	struct attempt *attempts; /* waiting for an answer */
	unsigned active;
	uint32_t tried; /* bit per server already asked */
	enum attempt_fail fail;
	uint32_t first_rto; /* RTO of the first server asked, ms */
	struct timer hedge; /* armed by race_start, stopped by race_stop */
	bool running;
};

void attempt_ctx_init(struct attempt_ctx *c, struct timer_heap *timers,
    const struct xport *xport, struct metrics_worker *met);

/* Cancels and frees every attempt (their transport requests included). */
void attempt_ctx_fini(struct attempt_ctx *c);

/*
 * Sends the first attempt of r.  Returns 0: the race runs, and on_answer
 * or on_fail will be called (on_fail even before race_start returns, when
 * every server it could try failed at once, e.g. unreachable); or, with
 * nothing sent and no callback to come, UPSTREAM_NONE_USABLE (every circuit
 * open), UPSTREAM_NONE_BUDGET (shed) or -ENOMEM.
 */
int race_start(struct race *r, uint64_t now);

/*
 * Ends r: no callback comes any more; its attempts still out are orphaned
 * (their answers or timeouts still tell the pool about the servers).
 * Idempotent.
 */
void race_stop(struct race *r);

/*
 * Sends a health probe (probe->name/type) to server idx of pool (a pool of
 * route); its outcome goes to the pool: any well-formed reply but SERVFAIL
 * counts as alive.  Returns 0 or a negative errno (also reported to the
 * pool as a failure).
 */
int attempt_probe(struct attempt_ctx *c, struct route *route,
    struct upstream_pool *pool, unsigned idx, const struct route_name *probe,
    uint64_t now);

#endif
