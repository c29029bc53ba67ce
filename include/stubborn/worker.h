/*
 * worker: one thread with its own event_base, listeners (SO_REUSEPORT) and
 * in-flight table.  The cache and the metrics slots are shared.
 */
#ifndef STUBBORN_WORKER_H
#define STUBBORN_WORKER_H

#include <stddef.h>

struct config;
struct cache;
struct metrics_worker;
struct worker;

/*
 * Builds worker idx and binds its sockets in the calling thread, so start-up
 * errors reach main before anything serves.  NULL on failure with err
 * (errlen) naming the cause and *errnum its errno.
 */
struct worker *
worker_new(unsigned idx, const struct config *cfg, struct cache *cache,
    struct metrics_worker *met, char *err, size_t errlen, int *errnum);

/* Starts the thread.  Returns 0 or -errno. */
int
worker_start(struct worker *w);

/*
 * Asks the worker (from any thread) to stop: it stops reading, finishes what
 * is in flight within cfg->shutdown_timeout_ms, then its thread ends.
 */
void
worker_stop(struct worker *w);

/* Waits for the thread to end (after worker_stop). */
void
worker_join(struct worker *w);

/* Frees the worker (joined or never started); NULL is fine. */
void
worker_free(struct worker *w);

#endif
