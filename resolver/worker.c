#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "stubborn/clock.h"
#include "stubborn/engine.h"
#include "stubborn/listen.h"
#include "stubborn/log.h"
#include "stubborn/pipeline.h"
#include "stubborn/route.h"
#include "stubborn/timer.h"
#include "stubborn/worker.h"
#include "stubborn/xnet.h"

/* Time left after the last answer for TCP replies to leave the buffers. */
#define WORKER_FLUSH_MS 100

struct worker {
	unsigned idx;
	pthread_t thread;
	bool started;
	struct event_base *base;
	struct xnet *xnet;
	struct engine *engine;
	struct pipeline *pipeline;
	struct listen *lis;
	struct event *ev_timer;    /* the engine's earliest deadline; freed with
				      the worker */
	uint64_t timer_at;         /* what ev_timer is armed for (UINT64_MAX:
				      nothing) */
	struct event *ev_stop;     /* activated by worker_stop from main */
	struct event *ev_deadline; /* shutdown-timeout, added by stop_cb */
	struct event *ev_route;    /* activated by worker_set_route */
	pthread_mutex_t route_lock; /* guards next_route */
	struct route *next_route;
	bool stopping;
	size_t left;
};

static void *worker_main(void *arg);
static void rearm(void *arg, uint64_t at);
static void timer_cb(evutil_socket_t fd, short what, void *arg);
static void stop_cb(evutil_socket_t fd, short what, void *arg);
static void route_cb(evutil_socket_t fd, short what, void *arg);
static void deadline_cb(evutil_socket_t fd, short what, void *arg);
static void drained(void *arg);

struct worker *
worker_new(unsigned idx, struct route *route, struct cache *cache,
    const struct pipeline_limits *limits, struct metrics_worker *met,
    const struct listen_sock *socks, size_t n)
{
	struct worker *w = calloc(1, sizeof(*w));
	struct engine_env env;

	if (w == NULL)
		return NULL;
	w->idx = idx;
	w->timer_at = UINT64_MAX;
	pthread_mutex_init(&w->route_lock, NULL);
	w->base = event_base_new();
	if (w->base == NULL)
		goto fail;
	w->ev_timer = evtimer_new(w->base, timer_cb, w);
	w->ev_stop = event_new(w->base, -1, 0, stop_cb, w);
	w->ev_route = event_new(w->base, -1, 0, route_cb, w);
	w->ev_deadline = evtimer_new(w->base, deadline_cb, w);
	w->xnet = xnet_new(w->base, met);
	if (w->ev_timer == NULL || w->ev_stop == NULL || w->ev_route == NULL ||
	    w->ev_deadline == NULL || w->xnet == NULL)
		goto fail;
	{
		char err[256];
		if (xnet_set_config(w->xnet, &route->cfg, err, sizeof(err)) <
		    0) {
			log_error("worker", "%s", err);
			goto fail;
		}
	}
	memset(&env, 0, sizeof(env));
	env.cache = cache;
	env.met = met;
	env.xport = xnet_xport(w->xnet);
	/* One worker probes, so N workers do not multiply the probes. */
	env.prober = idx == 0;
	env.rearm = rearm;
	env.rearm_arg = w;
	w->engine = engine_new(&env, route, clock_now_ms());
	if (w->engine == NULL)
		goto fail;
	w->pipeline = pipeline_new(w->engine, cache, met, limits);
	if (w->pipeline == NULL)
		goto fail;
	w->lis = listen_new(w->base, w->pipeline, w->engine, met, socks, n);
	if (w->lis == NULL)
		goto fail;
	return w;
fail:
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
	w->left = engine_inflight(w->engine);
	return NULL;
}

/* The engine armed a timer at at: make sure the loop wakes up by then. */
static void
rearm(void *arg, uint64_t at)
{
	struct worker *w = arg;
	uint64_t now;
	struct timeval tv;

	if (at >= w->timer_at)
		return;
	now = clock_now_ms();
	w->timer_at = at;
	at = at > now ? at - now : 0;
	tv.tv_sec = (time_t)(at / 1000);
	tv.tv_usec = (suseconds_t)(at % 1000) * 1000;
	evtimer_add(w->ev_timer, &tv);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	uint64_t next;

	w->timer_at = UINT64_MAX;
	engine_run_timers(w->engine, clock_now_ms());
	next = engine_next_timer(w->engine);
	if (next != UINT64_MAX)
		rearm(w, next);
}

void
worker_set_route(struct worker *w, struct route *r)
{
	struct route *old;

	route_ref(r);
	pthread_mutex_lock(&w->route_lock);
	old = w->next_route;
	w->next_route = r;
	pthread_mutex_unlock(&w->route_lock);
	route_unref(old);
	/* event_active is thread-safe once evthread_use_pthreads() ran. */
	event_active(w->ev_route, 0, 0);
}

static void
route_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct route *r;

	pthread_mutex_lock(&w->route_lock);
	r = w->next_route;
	w->next_route = NULL;
	pthread_mutex_unlock(&w->route_lock);
	if (r == NULL)
		return;
	{
		char err[256];
		/* main checked the CA file before the reload: rare. */
		if (xnet_set_config(w->xnet, &r->cfg, err, sizeof(err)) < 0)
			log_error("worker", "%s; the previous one stays", err);
	}
	engine_set_route(w->engine, r);
	route_unref(r);
}

void
worker_stop(struct worker *w)
{
	event_active(w->ev_stop, 0, 0);
}

static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	uint32_t ms = engine_route(w->engine)->cfg.shutdown_timeout_ms;
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	if (w->stopping)
		return;
	w->stopping = true;
	listen_stop(w->lis);
	evtimer_add(w->ev_deadline, &tv);
	engine_drain(w->engine, drained, w, clock_now_ms());
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
	    w->idx, engine_inflight(w->engine));
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

size_t
worker_left_inflight(const struct worker *w)
{
	return w->left;
}

void
worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	if (w->lis)
		listen_stop(w->lis);
	/* The engine releases its TCP waiters before the listener goes, and
	 * cancels its upstream requests before the transport goes. */
	engine_free(w->engine);
	listen_free(w->lis);
	pipeline_free(w->pipeline);
	xnet_free(w->xnet);
	route_unref(w->next_route);
	if (w->ev_timer)
		event_free(w->ev_timer);
	if (w->ev_stop)
		event_free(w->ev_stop);
	if (w->ev_route)
		event_free(w->ev_route);
	if (w->ev_deadline)
		event_free(w->ev_deadline);
	if (w->base)
		event_base_free(w->base);
	pthread_mutex_destroy(&w->route_lock);
	free(w);
}

bool
worker_xnet_stats(
    struct worker *w, const struct config_upstream *srv, struct xnet_stats *st)
{
	return xnet_get_stats(w->xnet, srv, st);
}
