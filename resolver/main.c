/*
 * main: CLI, start-up order, signals and shutdown.  The only place that
 * calls exit(): 2 for bad config or flags, 1 when start-up fails, 0 after a
 * clean drain.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "stubborn/cache.h"
#include "stubborn/config.h"
#include "stubborn/listen.h"
#include "stubborn/log.h"
#include "stubborn/metrics.h"
#include "stubborn/rng.h"
#include "stubborn/worker.h"

#define CACHE_SHARDS 64

struct daemon {
	struct config cfg;
	struct cache *cache;
	struct metrics *metrics;
	struct worker **workers;
	unsigned n_workers;
	struct event_base *base;
};

static void signal_cb(evutil_socket_t sig, short what, void *arg);
static void cache_gauges(void *arg, struct evbuffer *out);
static bool is_ready(void *arg);
static int start_workers(struct daemon *d);
static void stop_workers(struct daemon *d);
static void log_startup(const struct daemon *d);

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;

	log_info("main", "signal received, draining signal=%d", (int)sig);
	event_base_loopexit(d->base, NULL);
}

static void
cache_gauges(void *arg, struct evbuffer *out)
{
	struct daemon *d = arg;
	struct cache_stats st;

	cache_get_stats(d->cache, &st);
	evbuffer_add_printf(out,
	    "# HELP stubborn_cache_entries Entries in the cache.\n"
	    "# TYPE stubborn_cache_entries gauge\n"
	    "stubborn_cache_entries %llu\n"
	    "# HELP stubborn_cache_bytes Bytes used by the cache.\n"
	    "# TYPE stubborn_cache_bytes gauge\n"
	    "stubborn_cache_bytes %llu\n"
	    "# HELP stubborn_cache_evictions_total Entries evicted for space.\n"
	    "# TYPE stubborn_cache_evictions_total counter\n"
	    "stubborn_cache_evictions_total %llu\n",
	    (unsigned long long)st.entries, (unsigned long long)st.bytes,
	    (unsigned long long)st.evictions);
}

static bool
is_ready(void *arg)
{
	struct daemon *d = arg;

	/* Listening, with at least one upstream configured. */
	return d->cfg.n_upstream > 0;
}

static int
start_workers(struct daemon *d)
{
	char err[512];
	int errnum;

	if (listen_probe(&d->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "stubborn: %s\n", err);
		log_error("main", "start-up failed: %s", err);
		return -EADDRINUSE;
	}
	d->workers = calloc(d->cfg.workers, sizeof(*d->workers));
	if (d->workers == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < d->cfg.workers; i++) {
		d->workers[i] = worker_new(i, &d->cfg, d->cache,
		    metrics_worker(d->metrics, i), err, sizeof(err), &errnum);
		if (d->workers[i] == NULL) {
			fprintf(stderr, "stubborn: %s\n", err);
			log_error("main", "start-up failed: %s", err);
			return -errnum;
		}
		d->n_workers++;
	}
	for (unsigned i = 0; i < d->n_workers; i++) {
		int r = worker_start(d->workers[i]);
		if (r < 0) {
			log_error("main", "cannot start worker thread: %s",
			    strerror(-r));
			return r;
		}
	}
	return 0;
}

static void
stop_workers(struct daemon *d)
{
	for (unsigned i = 0; i < d->n_workers; i++)
		worker_stop(d->workers[i]);
	for (unsigned i = 0; i < d->n_workers; i++)
		worker_join(d->workers[i]);
	for (unsigned i = 0; i < d->n_workers; i++)
		worker_free(d->workers[i]);
	free(d->workers);
	d->workers = NULL;
	d->n_workers = 0;
}

static void
log_startup(const struct daemon *d)
{
	char list[1024] = "";
	size_t o = 0;

	for (size_t i = 0; i < d->cfg.n_listen && o < sizeof(list); i++)
		o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s",
		    i ? "," : "", d->cfg.listen[i].text);
	log_info("main", "listening listen=%s workers=%u", list, d->cfg.workers);
	o = 0;
	list[0] = '\0';
	for (size_t i = 0; i < d->cfg.n_upstream && o < sizeof(list); i++)
		o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s",
		    i ? "," : "", d->cfg.upstream[i].text);
	log_info("main", "forwarding upstreams=%s source=%s", list,
	    d->cfg.upstream_from_resolv ? d->cfg.resolv_conf : "config");
}

int
main(int argc, char **argv)
{
	static struct daemon d;
	char err[1024];
	struct event *ev_term = NULL, *ev_int = NULL;
	int rc = 1;

	switch (config_load(&d.cfg, argc, argv, err, sizeof(err))) {
	case CONFIG_EXIT_OK:
		return 0;
	case CONFIG_EXIT_BAD:
		fprintf(stderr, "stubborn: %s\n", err);
		return 2;
	case CONFIG_RUN:
		break;
	}
	if (d.cfg.check_config) {
		config_print(&d.cfg, stdout);
		return 0;
	}
	log_set_level((enum log_level)d.cfg.log_level);
	signal(SIGPIPE, SIG_IGN);
	if (rng_init() < 0 || evthread_use_pthreads() < 0) {
		log_error("main", "cannot initialise libsodium or libevent threads");
		return 1;
	}
	d.cache = cache_new(d.cfg.cache_size, CACHE_SHARDS, 0);
	d.metrics = metrics_new(d.cfg.workers);
	d.base = event_base_new();
	if (d.cache == NULL || d.metrics == NULL || d.base == NULL) {
		log_error("main", "out of memory at start-up");
		goto out;
	}
	if (start_workers(&d) < 0)
		goto out;
	if (d.cfg.metrics_on &&
	    metrics_start_http(d.metrics, d.base,
		(const struct sockaddr *)&d.cfg.metrics.ss, d.cfg.metrics.len,
		cache_gauges, is_ready, &d, err, sizeof(err)) < 0) {
		fprintf(stderr, "stubborn: cannot serve metrics on %s: %s\n",
		    d.cfg.metrics.text, err);
		log_error("main", "cannot serve metrics addr=%s error=\"%s\"",
		    d.cfg.metrics.text, err);
		goto out;
	}
	ev_term = evsignal_new(d.base, SIGTERM, signal_cb, &d);
	ev_int = evsignal_new(d.base, SIGINT, signal_cb, &d);
	if (ev_term == NULL || ev_int == NULL || evsignal_add(ev_term, NULL) < 0 ||
	    evsignal_add(ev_int, NULL) < 0)
		goto out;
	log_startup(&d);
	event_base_loop(d.base, EVLOOP_NO_EXIT_ON_EMPTY);
	rc = 0;
out:
	stop_workers(&d);
	if (ev_term)
		event_free(ev_term);
	if (ev_int)
		event_free(ev_int);
	metrics_free(d.metrics);
	if (d.base)
		event_base_free(d.base);
	cache_free(d.cache);
	if (rc == 0)
		log_info("main", "stopped");
	return rc;
}
