#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "stubborn/cache.h"
#include "stubborn/clock.h"
#include "stubborn/config.h"
#include "stubborn/forward.h"
#include "stubborn/listen.h"
#include "stubborn/log.h"
#include "stubborn/rng.h"
#include "stubborn/upstream.h"
#include "stubborn/wire.h"
#include "stubborn/worker.h"

/* Time left after the last answer for TCP replies to leave the buffers. */
#define WORKER_FLUSH_MS 100
/* How often worker 0 asks the pools whether a server needs a probe. */
#define WORKER_PROBE_TICK_MS 100
/* How often worker 0 checks the keep-warm names. */
#define WORKER_KEEP_WARM_TICK_MS 1000
/* Keep-warm refreshes at the latest this share of the TTL before expiry. */
#define WORKER_KEEP_WARM_PERCENT 10

struct worker {
	unsigned idx;
	const struct config *cfg;
	const struct worker_shared *sh;
	struct event *ev_probe; /* worker 0 only: periodic, freed with w */
	struct event *ev_warm;  /* worker 0 only: periodic, freed with w */
	pthread_t thread;
	bool started;
	struct event_base *base;
	struct forward *fwd;
	struct listen *lis;
	struct event *ev_stop;     /* activated by worker_stop from main */
	struct event *ev_deadline; /* shutdown-timeout, added by stop_cb */
	bool stopping;
};

static void *worker_main(void *arg);
static void stop_cb(evutil_socket_t fd, short what, void *arg);
static void deadline_cb(evutil_socket_t fd, short what, void *arg);
static void drained(void *arg);
static void probe_cb(evutil_socket_t fd, short what, void *arg);
static void keep_warm_cb(evutil_socket_t fd, short what, void *arg);

struct worker *
worker_new(unsigned idx, const struct worker_shared *sh,
    struct metrics_worker *met, char *err, size_t errlen, int *errnum)
{
	struct worker *w = calloc(1, sizeof(*w));
	const struct config *cfg = sh->cfg;
	struct cache *cache = sh->cache;

	*errnum = ENOMEM;
	if (w == NULL)
		goto nomem;
	w->idx = idx;
	w->cfg = cfg;
	w->sh = sh;
	w->base = event_base_new();
	if (w->base == NULL)
		goto nomem;
	w->fwd = forward_new(w->base, cfg, cache, met, sh->zones, sh->nzones);
	if (idx == 0) {
		struct timeval tv = {0, WORKER_PROBE_TICK_MS * 1000};
		w->ev_probe = event_new(w->base, -1, EV_PERSIST, probe_cb, w);
		if (w->ev_probe == NULL || event_add(w->ev_probe, &tv) < 0)
			goto nomem;
		if (cfg->n_keep_warm > 0) {
			struct timeval wtv = {
			    WORKER_KEEP_WARM_TICK_MS / 1000, 0};
			w->ev_warm =
			    event_new(w->base, -1, EV_PERSIST, keep_warm_cb, w);
			if (w->ev_warm == NULL ||
			    event_add(w->ev_warm, &wtv) < 0)
				goto nomem;
		}
	}
	w->ev_stop = event_new(w->base, -1, 0, stop_cb, w);
	w->ev_deadline = evtimer_new(w->base, deadline_cb, w);
	if (w->fwd == NULL || w->ev_stop == NULL || w->ev_deadline == NULL)
		goto nomem;
	w->lis = listen_new(
	    w->base, cfg, w->fwd, cache, met, &sh->limits, err, errlen, errnum);
	if (w->lis == NULL) {
		worker_free(w);
		return NULL;
	}
	return w;
nomem:
	snprintf(err, errlen, "out of memory creating worker %u", idx);
	worker_free(w);
	return NULL;
}

int
worker_start(struct worker *w)
{
	int r = pthread_create(&w->thread, NULL, worker_main, w);

	if (r != 0)
		return -r;
	w->started = true;
	return 0;
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

void
worker_stop(struct worker *w)
{
	/* event_active is thread-safe once evthread_use_pthreads() ran. */
	event_active(w->ev_stop, 0, 0);
}

static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct timeval tv;

	if (w->stopping)
		return;
	w->stopping = true;
	if (w->ev_probe)
		event_del(w->ev_probe);
	if (w->ev_warm)
		event_del(w->ev_warm);
	listen_stop(w->lis);
	tv.tv_sec = w->cfg->shutdown_timeout_ms / 1000;
	tv.tv_usec = (w->cfg->shutdown_timeout_ms % 1000) * 1000;
	evtimer_add(w->ev_deadline, &tv);
	forward_drain(w->fwd, drained, w);
}

/*
 * One worker sends every probe, so N workers do not multiply them; the
 * pools decide who is due (open circuits with backoff, idle servers).
 */
static void
probe_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	const struct worker_shared *sh = w->sh;
	uint64_t now = clock_now_ms();

	if (w->stopping)
		return;
	for (size_t z = 0; z < sh->nzones; z++) {
		int idx;
		while ((idx = upstream_probe_due(sh->zones[z].pool, now,
			    rng_uniform(UINT32_MAX))) >= 0)
			forward_probe(w->fwd, sh->zones[z].pool, (unsigned)idx,
			    sh->probe_name, sh->probe_len, sh->probe_type);
	}
}

/*
 * keep-warm: names critical to the node are refreshed before they expire
 * even when no client asks, so an outage finds them in the cache.
 */
static void
keep_warm_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	const struct config *cfg = w->cfg;
	uint64_t now = clock_now_ms();
	uint32_t pct = cfg->refresh_ahead > WORKER_KEEP_WARM_PERCENT
	    ? cfg->refresh_ahead
	    : WORKER_KEEP_WARM_PERCENT;

	if (w->stopping)
		return;
	for (size_t i = 0; i < cfg->n_keep_warm; i++) {
		uint8_t name[WIRE_NAME_MAX], key[CACHE_KEY_MAX];
		struct cache_hit hit;
		enum cache_result r;
		size_t klen;
		int n = wire_name_from_text(cfg->keep_warm[i].name, name);

		if (n < 0)
			continue;
		klen = cache_make_key(key, name, (size_t)n,
		    cfg->keep_warm[i].type, WIRE_CLASS_IN, 0);
		r = cache_lookup(w->sh->cache, key, klen, now, cfg->stale_ttl,
		    NULL, 0, NULL, &hit);
		if (hit.hold_until_ms > now)
			continue;
		/* TTL left is in whole seconds and this runs every second. */
		if (r == CACHE_FRESH && hit.ttl_left > 1 &&
		    (uint64_t)hit.ttl_left * 100 > (uint64_t)hit.ttl * pct)
			continue;
		forward_refresh(w->fwd, key, klen, name, (size_t)n,
		    cfg->keep_warm[i].type, WIRE_CLASS_IN, 0);
	}
}

static void
drained(void *arg)
{
	struct worker *w = arg;
	struct timeval tv = {0, WORKER_FLUSH_MS * 1000};

	event_base_loopexit(w->base, &tv);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	log_warn("worker",
	    "shutdown timeout: dropping queries still in flight worker=%u "
	    "inflight=%zu",
	    w->idx, forward_inflight(w->fwd));
	event_base_loopexit(w->base, NULL);
}

void
worker_join(struct worker *w)
{
	if (w->started) {
		pthread_join(w->thread, NULL);
		w->started = false;
	}
}

void
worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	if (w->lis)
		listen_stop(w->lis);
	/* The forwarder releases its TCP waiters before the listener goes. */
	forward_free(w->fwd);
	listen_free(w->lis);
	if (w->ev_stop)
		event_free(w->ev_stop);
	if (w->ev_deadline)
		event_free(w->ev_deadline);
	if (w->ev_probe)
		event_free(w->ev_probe);
	if (w->ev_warm)
		event_free(w->ev_warm);
	if (w->base)
		event_base_free(w->base);
	free(w);
}
