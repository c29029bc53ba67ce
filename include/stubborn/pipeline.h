/*
 * pipeline: what happens to one client message, whatever socket it came
 * on: parse and validate (wire) -> access control (allow) -> cache ->
 * per-client rate limit -> the engine.  Each step is a named function; the
 * reply, when there is one, goes through the client's callback.
 *
 * One pipeline per worker, over that worker's engine; the cache and the
 * rate-limit tables are shared.  Time is an argument.
 */
#ifndef STUBBORN_PIPELINE_H
#define STUBBORN_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "stubborn/client.h"

struct cache;
struct engine;
struct metrics_worker;
struct ratelimit;
struct pipeline;

/* Per-client limits shared by every worker (either may be NULL). */
struct pipeline_limits {
	struct ratelimit *miss; /* queries that need an upstream */
	struct ratelimit *hit;  /* cache hits (cache-qps) */
};

/*
 * A pipeline feeding engine (whose route gives the configuration).  All
 * arguments must outlive it.  NULL on ENOMEM.
 */
struct pipeline *pipeline_new(struct engine *engine, struct cache *cache,
    struct metrics_worker *met, const struct pipeline_limits *limits);

void pipeline_free(struct pipeline *p);

/*
 * Handles one client message (pkt, len bytes) from cl at now (ms; wall
 * time now_s for cookies).  cl->max_len is set here from the query (UDP)
 * unless cl->tcp.  cl->reply is called exactly once, now or later (msg
 * NULL: no reply, e.g. a dropped packet).
 */
void pipeline_process(struct pipeline *p, const uint8_t *pkt, size_t len,
    struct client *cl, uint64_t now, uint32_t now_s);

#endif
