/*
 * engine: one worker's query engine above the cache.  It decides what a
 * miss costs and what its clients get: a question already in flight is
 * joined (inflight), a new one is raced at the upstreams (attempt), and the
 * outcome is stored and answered here: the fresh answer; the stale one
 * (RFC 8767) after about one retransmit timeout of a silent upstream or when
 * resolution failed, with holds so a failing name is not asked again at
 * once (stale-recheck; RFC 9520 failure holds); the last positive answer
 * for a guarded name that turned negative; refresh-ahead and keep-warm
 * refreshes; health probes; and the drain at shutdown.
 *
 * The engine owns no socket and reads no clock: upstream I/O goes through a
 * transport (xport.h), replies through each client's callback (client.h),
 * and time comes in as arguments, from a timer heap the caller drives.  The
 * daemon's worker and the scenario tests drive it the same way.
 *
 * Not thread-safe: one engine per worker thread; the cache and the route's
 * pools are shared and locked by themselves.
 */
#ifndef STUBBORN_ENGINE_H
#define STUBBORN_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stubborn/client.h"
#include "stubborn/route.h"
#include "stubborn/wire.h"
#include "stubborn/xport.h"

struct cache;
struct metrics_worker;
struct engine;

struct engine_env {
	struct cache *cache;
	struct metrics_worker *met;
	struct xport xport;
	bool prober; /* sends the health probes and keep-warm refreshes:
			one engine of the process does */
	/*
	 * A timer was armed at at (ms): the caller must call
	 * engine_run_timers no later than then.  May be called often.
	 */
	void (*rearm)(void *arg, uint64_t at);
	void *rearm_arg;
};

/*
 * An engine serving route (it takes a reference).  now starts the probe
 * and keep-warm timers of a prober.  NULL on ENOMEM.
 */
struct engine *engine_new(
    const struct engine_env *env, struct route *route, uint64_t now);

/*
 * Frees the engine; every client still waiting is told no reply will come
 * and every upstream request is cancelled.  NULL is fine.
 */
void engine_free(struct engine *e);

/* New queries use r from now on (a reload); queries in flight finish on
 * the route they began with.  Takes a reference to r. */
void engine_set_route(struct engine *e, struct route *r);

/* The route new queries use (valid until the next engine_set_route). */
struct route *engine_route(const struct engine *e);

/* The earliest armed deadline, or UINT64_MAX. */
uint64_t engine_next_timer(const struct engine *e);

/* Runs every timer due at now. */
void engine_run_timers(struct engine *e, uint64_t now);

/* engine_query flags */
#define ENGINE_HAVE_STALE 0x1 /* the cache holds an expired answer */

/*
 * Resolves the client query (query: at least header and question, parsed
 * as *wq) under cache key key/klen; skey/sklen is where its expired answer
 * lives (key itself, or the name's NXDOMAIN entry).  On 0 the engine owns
 * the waiter and calls cl->reply exactly once: with the upstream's answer,
 * or (ENGINE_HAVE_STALE) the stale one once resolution failed or about an
 * upstream retransmit timeout passed (at most stale-client-timeout), or
 * SERVFAIL.  -EAGAIN (only with ENGINE_HAVE_STALE): answer stale now, the
 * upstreams are down or slow.  -EBUSY: the in-flight table or the query's
 * waiter list is full; -ESHUTDOWN: draining; -ENOMEM: the caller answers
 * (stale or SERVFAIL) itself.
 */
int engine_query(struct engine *e, const uint8_t *query,
    const struct wire_query *wq, const uint8_t *key, size_t klen,
    const uint8_t *skey, size_t sklen, const struct client *cl, unsigned flags,
    uint64_t now);

/* engine_refresh flag (beside CACHE_KEY_DO/CD): a stale answer was served */
#define ENGINE_REFRESH_STALE 0x100

/*
 * Refreshes key in the background (no client waits): refresh-ahead,
 * keep-warm, or (ENGINE_REFRESH_STALE) a name just answered stale.  qname
 * is wire form; flags carry CACHE_KEY_DO/CD.  Nothing happens if the key is
 * already in flight.  Returns 0 (in flight), -EAGAIN when nothing could be
 * sent (shed, every circuit open) or a negative errno.
 */
int engine_refresh(struct engine *e, const uint8_t *key, size_t klen,
    const uint8_t *qname, size_t qname_len, uint16_t qtype, uint16_t qclass,
    unsigned flags, uint64_t now);

/* Questions in flight. */
size_t engine_inflight(const struct engine *e);

/*
 * Stops taking queries (and probing); done(arg) runs from a timer once
 * nothing is in flight, at once if nothing is.
 */
void engine_drain(
    struct engine *e, void (*done)(void *arg), void *arg, uint64_t now);

#endif
