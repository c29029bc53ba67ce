/*
 * worker: one thread with its own event_base, listeners (SO_REUSEPORT) and
 * in-flight table.  The cache and the metrics slots are shared.
 */
#ifndef STUBBORN_WORKER_H
#define STUBBORN_WORKER_H

#include <stddef.h>

#include <stdbool.h>
#include <stdint.h>

#include "stubborn/forward.h"
#include "stubborn/listen.h"

struct config;
struct cache;
struct metrics_worker;
struct worker;

/* What every worker shares: the zones' pools and the health probe. */
struct worker_shared {
	const struct config *cfg;
	struct cache *cache;
	const struct fwd_zone *zones; /* zones[0] is the root */
	size_t nzones;
	uint8_t probe_name[WIRE_NAME_MAX];
	size_t probe_len;
	uint16_t probe_type;
	struct listen_limits limits; /* per-client buckets, shared */
};

/*
 * Builds worker idx and binds its sockets in the calling thread, so start-up
 * errors reach main before anything serves.  Worker 0 also sends the health
 * probes the pools ask for.  sh must outlive the worker.  NULL on failure
 * with err (errlen) naming the cause and *errnum its errno.
 */
struct worker *worker_new(unsigned idx, const struct worker_shared *sh,
    struct metrics_worker *met, char *err, size_t errlen, int *errnum);

/* Starts the thread.  Returns 0 or -errno. */
int worker_start(struct worker *w);

/*
 * Asks the worker (from any thread) to stop: it stops reading, finishes what
 * is in flight within cfg->shutdown_timeout_ms, then its thread ends.
 */
void worker_stop(struct worker *w);

/* Waits for the thread to end (after worker_stop). */
void worker_join(struct worker *w);

/* Frees the worker (joined or never started); NULL is fine. */
void worker_free(struct worker *w);

#endif
