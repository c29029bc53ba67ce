/*
 * worker: one thread with its own event loop, engine (in-flight table,
 * timers, upstream transport), pipeline and listener.  The cache, the
 * route (configuration and upstream pools) and the per-client limit tables
 * are shared.  Worker 0 also sends the health probes and keep-warm
 * refreshes.
 */
#ifndef STUBBORN_WORKER_H
#define STUBBORN_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stubborn/listen.h"
#include "stubborn/pipeline.h"
#include "stubborn/xnet.h"

struct cache;
struct config_upstream;
struct metrics_worker;
struct route;
struct worker;

/*
 * Builds worker idx serving route (a reference is taken) on the listening
 * sockets socks (n; they stay the caller's), in the calling thread.  NULL
 * on ENOMEM.
 */
struct worker *worker_new(unsigned idx, struct route *route,
    struct cache *cache, const struct pipeline_limits *limits,
    struct metrics_worker *met, const struct listen_sock *socks, size_t n);

/* Starts the thread.  Returns 0 or -errno. */
int worker_start(struct worker *w);

/*
 * Hands the worker a new route (a reload), from any thread: new queries use
 * it once the worker's loop takes it; queries in flight finish on theirs.
 * Takes a reference.
 */
void worker_set_route(struct worker *w, struct route *r);

/*
 * Asks the worker (from any thread) to stop: it stops reading, answers
 * what is in flight within shutdown-timeout, then its thread ends.
 */
void worker_stop(struct worker *w);

/*
 * Adds the worker's transport counters for srv to *st (xnet_get_stats);
 * any thread.  False when the worker never used srv.
 */
bool worker_xnet_stats(
    struct worker *w, const struct config_upstream *srv, struct xnet_stats *st);

/* Waits for the thread to end (after worker_stop). */
void worker_join(struct worker *w);

/* Queries in flight when the thread ended (0 after a complete drain). */
size_t worker_left_inflight(const struct worker *w);

/* Frees the worker (joined or never started); NULL is fine. */
void worker_free(struct worker *w);

#endif
