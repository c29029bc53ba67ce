/*
 * main: CLI, start-up order, signals and shutdown.  The only place that
 * calls exit(): 2 for bad config or flags, 1 when start-up fails, 0 after a
 * clean drain.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "stubborn/cache.h"
#include "stubborn/clock.h"
#include "stubborn/config.h"
#include "stubborn/cookie.h"
#include "stubborn/listen.h"
#include "stubborn/log.h"
#include "stubborn/metrics.h"
#include "stubborn/ratelimit.h"
#include "stubborn/rng.h"
#include "stubborn/snapshot.h"
#include "stubborn/upstream.h"
#include "stubborn/wire.h"
#include "stubborn/worker.h"

#define CACHE_SHARDS 64

struct daemon {
	struct config cfg;
	pthread_t loader; /* loads the snapshot after listening */
	bool loader_started;
	struct event *ev_snapshot; /* periodic save, freed at exit */
	struct fwd_zone zones[CONFIG_MAX_ZONES + 1];
	size_t nzones;
	struct worker_shared shared;
	struct cache *cache;
	struct metrics *metrics;
	struct worker **workers;
	unsigned n_workers;
	struct event_base *base;
};

static void signal_cb(evutil_socket_t sig, short what, void *arg);
static void extra_metrics(void *arg, struct evbuffer *out);
static int build_pools(struct daemon *d, char *err, size_t errlen);
static void free_pools(struct daemon *d);
static void *load_snapshot(void *arg);
static void save_snapshot(struct daemon *d, const char *why);
static void snapshot_cb(evutil_socket_t fd, short what, void *arg);
static int start_snapshots(struct daemon *d);
static int make_limits(struct daemon *d);
static void cookie_cb(evutil_socket_t fd, short what, void *arg);
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

/* Per-server health, labelled by zone and server address. */
static void
upstream_metrics(struct daemon *d, struct evbuffer *out)
{
	static const char *const help[][3] = {
	    {"upstream_server_queries_total", "counter",
		"Queries sent to the server (probes excluded)."},
	    {"upstream_server_answers_total", "counter",
		"Usable answers from the server."},
	    {"upstream_server_timeouts_total", "counter",
		"Queries the server did not answer in time."},
	    {"upstream_server_errors_total", "counter",
		"SERVFAIL/REFUSED/unreachable/malformed from the server."},
	    {"upstream_server_rtt_seconds", "gauge",
		"Smoothed round-trip time estimate."},
	    {"upstream_server_rto_seconds", "gauge",
		"Retransmit (hedge) timeout."},
	    {"upstream_server_outstanding", "gauge",
		"Queries waiting for the server."},
	    {"upstream_server_circuit", "gauge",
		"Circuit state: 0 closed, 1 open, 2 half-open."},
	};
	char zone[WIRE_NAME_MAX * 4 + 8];

	for (size_t m = 0; m < sizeof(help) / sizeof(help[0]); m++) {
		evbuffer_add_printf(out,
		    "# HELP stubborn_%s %s\n# TYPE stubborn_%s %s\n",
		    help[m][0], help[m][2], help[m][0], help[m][1]);
		for (size_t z = 0; z < d->nzones; z++) {
			struct upstream_pool *pool = d->zones[z].pool;
			wire_name_text(d->zones[z].name, d->zones[z].len, zone,
			    sizeof(zone));
			for (unsigned i = 0; i < upstream_count(pool); i++) {
				struct upstream_stats st;
				upstream_get_stats(pool, i, &st);
				evbuffer_add_printf(out,
				    "stubborn_%s{zone=\"%s\",server=\"%s\"} ",
				    help[m][0], zone,
				    upstream_addr(pool, i)->text);
				switch (m) {
				case 0:
					evbuffer_add_printf(out, "%llu\n",
					    (unsigned long long)st.queries);
					break;
				case 1:
					evbuffer_add_printf(out, "%llu\n",
					    (unsigned long long)st.answers);
					break;
				case 2:
					evbuffer_add_printf(out, "%llu\n",
					    (unsigned long long)st.timeouts);
					break;
				case 3:
					evbuffer_add_printf(out, "%llu\n",
					    (unsigned long long)st.errors);
					break;
				case 4:
					evbuffer_add_printf(
					    out, "%.6f\n", st.srtt_us / 1e6);
					break;
				case 5:
					evbuffer_add_printf(
					    out, "%.3f\n", st.rto_ms / 1e3);
					break;
				case 6:
					evbuffer_add_printf(
					    out, "%u\n", st.outstanding);
					break;
				default:
					evbuffer_add_printf(
					    out, "%d\n", (int)st.circuit);
					break;
				}
			}
		}
	}
}

static void
extra_metrics(void *arg, struct evbuffer *out)
{
	struct daemon *d = arg;
	struct cache_stats st;

	upstream_metrics(d, out);
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

	struct cache_stats st;

	/* Listening, and an upstream usable or the cache holding answers. */
	for (size_t z = 0; z < d->nzones; z++)
		if (upstream_any_usable(d->zones[z].pool))
			return true;
	cache_get_stats(d->cache, &st);
	return st.entries > 0;
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
	d->shared.cfg = &d->cfg;
	d->shared.cache = d->cache;
	d->shared.zones = d->zones;
	d->shared.nzones = d->nzones;
	for (unsigned i = 0; i < d->cfg.workers; i++) {
		d->workers[i] = worker_new(i, &d->shared,
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

/* The root zone from the upstreams, then one pool per forward-zone. */
static int
build_pools(struct daemon *d, char *err, size_t errlen)
{
	struct upstream_params p;
	int n;

	upstream_params_default(&p, d->cfg.upstream_timeout_ms);
	p.policy = (enum upstream_policy)d->cfg.policy;
	p.budget_percent = d->cfg.retry_budget;
	p.open_after = d->cfg.circuit_failures;
	p.probe_max_ms = d->cfg.probe_max_interval_ms;
	/*
	 * While stale answers stand in for an upstream, its recovery must be
	 * noticed well within stale-recheck: probe at least twice per recheck.
	 */
	if (d->cfg.serve_stale && d->cfg.stale_recheck * 500 < p.probe_max_ms)
		p.probe_max_ms = d->cfg.stale_recheck * 500;
	if (p.probe_min_ms > p.probe_max_ms)
		p.probe_min_ms = p.probe_max_ms;
	p.qps = d->cfg.upstream_qps;
	p.max_outstanding = d->cfg.upstream_max_outstanding;
	d->zones[0].name[0] = 0;
	d->zones[0].len = 1;
	d->zones[0].pool =
	    upstream_pool_new(".", d->cfg.upstream, d->cfg.n_upstream, &p);
	if (d->zones[0].pool == NULL)
		goto nomem;
	d->nzones = 1;
	for (size_t i = 0; i < d->cfg.n_zones; i++) {
		const struct config_zone *cz = &d->cfg.zones[i];
		struct fwd_zone *z = &d->zones[d->nzones];
		n = wire_name_from_text(cz->name, z->name);
		if (n < 0) {
			snprintf(
			    err, errlen, "forward-zone %s: bad name", cz->name);
			return -EINVAL;
		}
		z->len = (size_t)n;
		wire_name_lower(z->name, z->len);
		z->pool = upstream_pool_new(
		    cz->name, cz->upstream, cz->n_upstream, &p);
		if (z->pool == NULL)
			goto nomem;
		d->nzones++;
	}
	n = wire_name_from_text(d->cfg.health_check_name, d->shared.probe_name);
	if (n < 0) {
		snprintf(err, errlen, "health-check-name %s: bad name",
		    d->cfg.health_check_name);
		return -EINVAL;
	}
	d->shared.probe_len = (size_t)n;
	d->shared.probe_type = d->cfg.health_check_type;
	return 0;
nomem:
	snprintf(err, errlen, "out of memory creating upstream pools");
	return -ENOMEM;
}

static void
free_pools(struct daemon *d)
{
	for (size_t i = 0; i < d->nzones; i++)
		upstream_pool_free(d->zones[i].pool);
	d->nzones = 0;
}

/*
 * Runs in its own thread once the sockets are serving: a large snapshot
 * must not delay listening, and the cache is thread-safe.
 */
static void *
load_snapshot(void *arg)
{
	struct daemon *d = arg;
	uint64_t t0 = clock_now_ms();
	size_t loaded = 0, skipped = 0;
	char err[256] = "";
	int r;

	r = snapshot_load(d->cache, d->cfg.snapshot, clock_now_ms(),
	    clock_wall_s(), d->cfg.serve_stale ? d->cfg.stale_max_age : 0,
	    &loaded, &skipped, err, sizeof(err));
	if (r == -ENOENT)
		log_info(
		    "snapshot", "no snapshot yet file=%s", d->cfg.snapshot);
	else if (r < 0)
		log_warn("snapshot", "snapshot ignored file=%s error=\"%s\"",
		    d->cfg.snapshot, err);
	else
		log_info("snapshot",
		    "snapshot loaded file=%s entries=%zu skipped=%zu ms=%llu",
		    d->cfg.snapshot, loaded, skipped,
		    (unsigned long long)(clock_now_ms() - t0));
	return NULL;
}

static void
save_snapshot(struct daemon *d, const char *why)
{
	uint64_t t0 = clock_now_ms();
	size_t n = 0;
	int r = snapshot_save(
	    d->cache, d->cfg.snapshot, clock_now_ms(), clock_wall_s(), &n);

	if (r < 0)
		log_error("snapshot",
		    "cannot save the cache file=%s error=\"%s\" when=%s",
		    d->cfg.snapshot, strerror(-r), why);
	else
		log_info("snapshot",
		    "cache saved file=%s entries=%zu ms=%llu when=%s",
		    d->cfg.snapshot, n,
		    (unsigned long long)(clock_now_ms() - t0), why);
}

static void
snapshot_cb(evutil_socket_t fd, short what, void *arg)
{
	save_snapshot(arg, "interval");
}

static int
start_snapshots(struct daemon *d)
{
	struct timeval tv = {d->cfg.snapshot_interval, 0};
	int r;

	if (d->cfg.snapshot[0] == '\0')
		return 0;
	r = pthread_create(&d->loader, NULL, load_snapshot, d);
	if (r != 0)
		return -r;
	d->loader_started = true;
	if (d->cfg.snapshot_interval == 0)
		return 0;
	d->ev_snapshot = event_new(d->base, -1, EV_PERSIST, snapshot_cb, d);
	if (d->ev_snapshot == NULL || event_add(d->ev_snapshot, &tv) < 0)
		return -ENOMEM;
	return 0;
}

/* One table per kind of limit, shared by the workers: fixed memory. */
static int
make_limits(struct daemon *d)
{
	uint8_t key[16];

	rng_bytes(key, sizeof(key));
	if (d->cfg.client_qps > 0) {
		d->shared.limits.miss =
		    ratelimit_new(d->cfg.ratelimit_clients, key);
		if (d->shared.limits.miss == NULL)
			return -ENOMEM;
	}
	if (d->cfg.cache_qps > 0) {
		d->shared.limits.hit =
		    ratelimit_new(d->cfg.ratelimit_clients, key);
		if (d->shared.limits.hit == NULL)
			return -ENOMEM;
	}
	return 0;
}

/* Hourly: cookies made with the secret before last stop being valid. */
static void
cookie_cb(evutil_socket_t fd, short what, void *arg)
{
	cookie_rotate();
}

static void
log_startup(const struct daemon *d)
{
	char list[1024] = "";
	size_t o = 0;

	for (size_t i = 0; i < d->cfg.n_listen && o < sizeof(list); i++)
		o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s",
		    i ? "," : "", d->cfg.listen[i].text);
	log_info(
	    "main", "listening listen=%s workers=%u", list, d->cfg.workers);
	o = 0;
	list[0] = '\0';
	for (size_t i = 0; i < d->cfg.n_upstream && o < sizeof(list); i++)
		o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s",
		    i ? "," : "", d->cfg.upstream[i].text);
	log_info("main",
	    "forwarding upstreams=%s source=%s policy=%s zones=%zu", list,
	    d->cfg.upstream_from_resolv ? d->cfg.resolv_conf : "config",
	    upstream_policy_name((enum upstream_policy)d->cfg.policy),
	    d->nzones - 1);
}

int
main(int argc, char **argv)
{
	static struct daemon d;
	char err[1024];
	struct event *ev_term = NULL, *ev_int = NULL, *ev_cookie = NULL;
	struct timeval hour = {3600, 0};
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
		log_error(
		    "main", "cannot initialise libsodium or libevent threads");
		return 1;
	}
	d.cache = cache_new(d.cfg.cache_size, CACHE_SHARDS,
	    d.cfg.serve_stale ? d.cfg.stale_max_age : 0);
	cookie_init();
	if (make_limits(&d) < 0) {
		log_error(
		    "main", "out of memory for the client rate limit tables");
		goto out;
	}
	d.metrics = metrics_new(d.cfg.workers);
	d.base = event_base_new();
	if (d.cache == NULL || d.metrics == NULL || d.base == NULL) {
		log_error("main", "out of memory at start-up");
		goto out;
	}
	if (build_pools(&d, err, sizeof(err)) < 0) {
		log_error("main", "start-up failed: %s", err);
		goto out;
	}
	if (start_workers(&d) < 0)
		goto out;
	if (d.cfg.metrics_on &&
	    metrics_start_http(d.metrics, d.base,
		(const struct sockaddr *)&d.cfg.metrics.ss, d.cfg.metrics.len,
		extra_metrics, is_ready, &d, err, sizeof(err)) < 0) {
		fprintf(stderr, "stubborn: cannot serve metrics on %s: %s\n",
		    d.cfg.metrics.text, err);
		log_error("main", "cannot serve metrics addr=%s error=\"%s\"",
		    d.cfg.metrics.text, err);
		goto out;
	}
	ev_cookie = event_new(d.base, -1, EV_PERSIST, cookie_cb, &d);
	if (ev_cookie == NULL || event_add(ev_cookie, &hour) < 0)
		goto out;
	ev_term = evsignal_new(d.base, SIGTERM, signal_cb, &d);
	ev_int = evsignal_new(d.base, SIGINT, signal_cb, &d);
	if (ev_term == NULL || ev_int == NULL ||
	    evsignal_add(ev_term, NULL) < 0 || evsignal_add(ev_int, NULL) < 0)
		goto out;
	log_startup(&d);
	if (start_snapshots(&d) < 0) {
		log_error("main", "cannot start the snapshot loader");
		goto out;
	}
	event_base_loop(d.base, EVLOOP_NO_EXIT_ON_EMPTY);
	rc = 0;
out:
	stop_workers(&d);
	if (d.loader_started) {
		pthread_join(d.loader, NULL);
		if (rc == 0)
			save_snapshot(&d, "shutdown");
	}
	if (d.ev_snapshot)
		event_free(d.ev_snapshot);
	if (ev_term)
		event_free(ev_term);
	if (ev_int)
		event_free(ev_int);
	if (ev_cookie)
		event_free(ev_cookie);
	metrics_free(d.metrics);
	free_pools(&d);
	if (d.base)
		event_base_free(d.base);
	cache_free(d.cache);
	ratelimit_free(d.shared.limits.miss);
	ratelimit_free(d.shared.limits.hit);
	if (rc == 0)
		log_info("main", "stopped");
	return rc;
}
