#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "stubborn/config.h"
#include "stubborn/forward.h"
#include "stubborn/listen.h"
#include "stubborn/log.h"
#include "stubborn/worker.h"

/* Time left after the last answer for TCP replies to leave the buffers. */
#define WORKER_FLUSH_MS 100

struct worker {
	unsigned idx;
	const struct config *cfg;
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

struct worker *
worker_new(unsigned idx, const struct config *cfg, struct cache *cache,
    struct metrics_worker *met, char *err, size_t errlen, int *errnum)
{
	struct worker *w = calloc(1, sizeof(*w));

	*errnum = ENOMEM;
	if (w == NULL)
		goto nomem;
	w->idx = idx;
	w->cfg = cfg;
	w->base = event_base_new();
	if (w->base == NULL)
		goto nomem;
	w->fwd = forward_new(w->base, cfg, cache, met);
	w->ev_stop = event_new(w->base, -1, 0, stop_cb, w);
	w->ev_deadline = evtimer_new(w->base, deadline_cb, w);
	if (w->fwd == NULL || w->ev_stop == NULL || w->ev_deadline == NULL)
		goto nomem;
	w->lis = listen_new(w->base, cfg, w->fwd, cache, met, err, errlen,
	    errnum);
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
	listen_stop(w->lis);
	tv.tv_sec = w->cfg->shutdown_timeout_ms / 1000;
	tv.tv_usec = (w->cfg->shutdown_timeout_ms % 1000) * 1000;
	evtimer_add(w->ev_deadline, &tv);
	forward_drain(w->fwd, drained, w);
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

	log_warn("worker", "shutdown timeout: dropping queries still in flight worker=%u inflight=%zu",
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
	if (w->base)
		event_base_free(w->base);
	free(w);
}
