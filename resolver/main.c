/*
 * main: CLI, start-up order, signals (reload, drain), the periodic jobs
 * (snapshots, cookie secrets, resolv-conf), metrics and shutdown.  The only
 * place that calls exit(): 2 for bad config or flags, 1 when start-up
 * fails, 0 after a clean drain.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <linux/capability.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "stubborn/cache.h"
#include "stubborn/clock.h"
#include "stubborn/config.h"
#include "stubborn/control.h"
#include "stubborn/cookie.h"
#include "stubborn/listen.h"
#include "stubborn/log.h"
#include "stubborn/metrics.h"
#include "stubborn/pipeline.h"
#include "stubborn/ratelimit.h"
#include "stubborn/rng.h"
#include "stubborn/route.h"
#include "stubborn/snapshot.h"
#include "stubborn/upconn.h"
#include "stubborn/upstream.h"
#include "stubborn/wire.h"
#include "stubborn/worker.h"

#define CACHE_SHARDS 64
#define MAX_SOCKS (CONFIG_MAX_LISTEN * 64 * 2)
/* How often the resolv-conf file is looked at for changes. */
#define RESOLV_POLL_MS 1000

struct daemon {
	int argc;
	char **argv;
	struct config cfg; /* as started: the settings a reload cannot change */
	struct route *route; /* the current generation; main's reference */
	uint64_t gen;
	struct cache *cache;
	struct metrics *metrics;
	struct pipeline_limits limits;
	struct listen_sock socks[MAX_SOCKS];
	unsigned sock_worker[MAX_SOCKS]; /* which worker reads socks[i] */
	size_t nsocks;
	struct worker **workers;
	unsigned n_workers;
	struct event_base *base;
	pthread_t loader; /* loads the snapshot after listening */
	bool loader_started;
	pthread_t saver; /* an interval save, off the main thread */
	_Atomic bool saving;
	_Atomic bool save_again; /* asked for while a save was writing */
	bool saver_started;
	bool handed_over; /* the snapshot file is the successor's now */
	struct event *ev_snapshot; /* periodic save */
	struct event *ev_resolv;   /* polls resolv-conf */
	struct stat resolv_st;     /* as last seen */
	bool resolv_seen;
	uint64_t reloads_ok, reloads_failed;
	uint64_t last_reload_s; /* wall clock of the last good (re)load */
	struct control *control;
	int takeover_conn;     /* to the daemon we took over from, or -1 */
	char load_from[1024];  /* the cache file to load at start */
	bool load_is_handover; /* ... written for us: removed once loaded */
	int metrics_fd;        /* inherited metrics socket, or -1 */
	uid_t uid;             /* who we run as once privileges drop */
	gid_t gid;
	const char *user;
};

static void term_cb(evutil_socket_t sig, short what, void *arg);
static void hup_cb(evutil_socket_t sig, short what, void *arg);
static int reload(struct daemon *d, const char *why, char *msg, size_t cap);
static bool wants_tls(const struct config *c);
static int reload_failed(
    struct daemon *d, const char *why, const char *err, char *msg, size_t cap);
static void notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int inherited_fds(
    struct daemon *d, int *fds, int max, char *err, size_t errlen);
static int adopt(struct daemon *d, int fd);
static int find_user(struct daemon *d, char *err, size_t errlen);
static int drop_privileges(struct daemon *d, char *err, size_t errlen);
static int check_writable(
    const char *file, const char *what, char *err, size_t errlen);
static int start_control(struct daemon *d, char *err, size_t errlen);
static void warn_restart_only(
    const struct config *old, const struct config *cfg);
static void resolv_cb(evutil_socket_t fd, short what, void *arg);
static bool resolv_changed(struct daemon *d);
static void extra_metrics(void *arg, struct evbuffer *out);
static void upstream_metrics(struct daemon *d, struct evbuffer *out);
static void transport_metrics(struct daemon *d, struct evbuffer *out);
static bool is_ready(void *arg);
static int open_sockets(struct daemon *d, int *fds, int nfds);
static void close_sockets(struct daemon *d);
static int start_workers(struct daemon *d);
static void stop_workers(struct daemon *d);
static void *load_snapshot(void *arg);
static void save_snapshot(struct daemon *d, const char *why);
static void *save_thread(void *arg);
static void snapshot_cb(evutil_socket_t fd, short what, void *arg);
static int start_snapshots(struct daemon *d);
static int make_limits(struct daemon *d);
static void cookie_cb(evutil_socket_t fd, short what, void *arg);
static void log_startup(const struct daemon *d);

static void
term_cb(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;

	log_info("main", "signal received, draining signal=%d", (int)sig);
	notify("STOPPING=1");
	event_base_loopexit(d->base, NULL);
}

/*
 * systemd's readiness protocol (sd_notify), a datagram to NOTIFY_SOCKET:
 * a dozen lines, so no library for it.  A missing socket is no error.
 */
static void
notify(const char *fmt, ...)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun;
	char msg[256];
	socklen_t len;
	va_list ap;
	int fd;

	if (path == NULL || (path[0] != '/' && path[0] != '@') ||
	    strlen(path) >= sizeof(sun.sun_path))
		return;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path));
	if (path[0] == '@')
		sun.sun_path[0] = '\0'; /* the abstract namespace */
	len =
	    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	(void)sendto(
	    fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sun, len);
	close(fd);
}

static void
hup_cb(evutil_socket_t sig, short what, void *arg)
{
	char msg[1200];

	(void)reload(arg, "SIGHUP", msg, sizeof(msg));
}

/* Settings that need the process restarted: named in a warning. */
static void
warn_restart_only(const struct config *old, const struct config *cfg)
{
	char list[512] = "";
	size_t o = 0;
	bool listen_same = old->n_listen == cfg->n_listen;

	for (size_t i = 0; listen_same && i < cfg->n_listen; i++)
		listen_same =
		    strcmp(old->listen[i].text, cfg->listen[i].text) == 0;
#define CHANGED(cond, name)                                                    \
	do {                                                                   \
		if ((cond) && o < sizeof(list))                                \
			o += (size_t)snprintf(list + o, sizeof(list) - o,      \
			    "%s%s", o ? "," : "", name);                       \
	} while (0)
	CHANGED(!listen_same, "listen");
	CHANGED(old->workers != cfg->workers, "workers");
	CHANGED(old->metrics_on != cfg->metrics_on ||
		strcmp(old->metrics.text, cfg->metrics.text) != 0,
	    "metrics");
	CHANGED(old->cache_size != cfg->cache_size, "cache-size");
	CHANGED(old->ratelimit_clients != cfg->ratelimit_clients,
	    "ratelimit-clients");
	CHANGED(strcmp(old->snapshot, cfg->snapshot) != 0, "snapshot");
	CHANGED(strcmp(old->control_socket, cfg->control_socket) != 0,
	    "control-socket");
	CHANGED(strcmp(old->user, cfg->user) != 0, "user");
#undef CHANGED
	if (o > 0)
		log_warn("main",
		    "reload: these settings change only with a restart; the "
		    "running values stay settings=%s",
		    list);
}

/*
 * Loads the config again (and resolv-conf, when the upstreams come from
 * it).  A file that does not load leaves everything as it is; one that
 * does becomes a new route every worker switches to, while queries in
 * flight finish on theirs and the cache stays.  msg (cap) gets the outcome:
 * the generation, or the error with its file:line.  Returns 0 or -1.
 */
/*
 * Whether the CA store matters: a tls:// server anywhere, or a CA file
 * named (checked even unused, so that a typo shows before it matters).
 */
static bool
wants_tls(const struct config *c)
{
	if (c->tls_ca_file[0] != '\0')
		return true;
	for (size_t i = 0; i < c->n_upstream; i++)
		if (c->upstream[i].proto == CONFIG_PROTO_TLS)
			return true;
	for (size_t z = 0; z < c->n_zones; z++)
		for (size_t i = 0; i < c->zones[z].n_upstream; i++)
			if (c->zones[z].upstream[i].proto == CONFIG_PROTO_TLS)
				return true;
	return false;
}

/* A reload that did not take: the running configuration stays. */
static int
reload_failed(
    struct daemon *d, const char *why, const char *err, char *msg, size_t cap)
{
	d->reloads_failed++;
	log_error("main",
	    "reload failed, the running configuration stays when=%s "
	    "error=\"%s\"",
	    why, err);
	snprintf(msg, cap, "%s", err);
	notify("READY=1");
	return -1;
}

static int
reload(struct daemon *d, const char *why, char *msg, size_t cap)
{
	static struct config next;
	char err[1024];
	struct route *r;

	notify("RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)(clock_now_us() - (1ull << 32) * 1000));
	switch (config_load(&next, d->argc, d->argv, err, sizeof(err))) {
	case CONFIG_RUN:
		break;
	default:
		return reload_failed(d, why, err, msg, cap);
	}
	if (wants_tls(&next) &&
	    upconn_check_ca(next.tls_ca_file, err, sizeof(err)) < 0) {
		return reload_failed(d, why, err, msg, cap);
	}
	warn_restart_only(&d->cfg, &next);
	/* What only a restart changes keeps its running value. */
	next.workers = d->cfg.workers;
	next.n_listen = d->cfg.n_listen;
	memcpy(next.listen, d->cfg.listen, sizeof(next.listen));
	r = route_new(&next, d->route, ++d->gen, err, sizeof(err));
	if (r == NULL) {
		return reload_failed(d, why, err, msg, cap);
	}
	for (unsigned i = 0; i < d->n_workers; i++)
		worker_set_route(d->workers[i], r);
	route_unref(d->route);
	d->route = r;
	log_set_level((enum log_level)next.log_level);
	cache_set_stale_max_age(
	    d->cache, next.serve_stale ? next.stale_max_age : 0);
	d->reloads_ok++;
	d->last_reload_s = clock_wall_s();
	if (next.resolv_fallback)
		log_info("main",
		    "resolv-conf lists only our own addresses; using "
		    "systemd-resolved's servers file=%s",
		    CONFIG_RESOLVED_CONF);
	log_info("main",
	    "configuration reloaded when=%s generation=%llu upstreams=%zu "
	    "zones=%zu",
	    why, (unsigned long long)d->gen, next.n_upstream, next.n_zones);
	if (d->ev_snapshot != NULL && next.snapshot_interval > 0) {
		struct timeval tv = {next.snapshot_interval, 0};
		event_add(d->ev_snapshot, &tv);
	}
	snprintf(msg, cap, "generation %llu", (unsigned long long)d->gen);
	notify("READY=1");
	return 0;
}

/* The file's identity and time: a rewrite (in place or by rename) shows. */
static bool
resolv_changed(struct daemon *d)
{
	struct stat st;
	bool changed;

	if (stat(d->route->cfg.resolv_conf, &st) < 0)
		memset(&st, 0, sizeof(st));
	changed = d->resolv_seen &&
	    (st.st_ino != d->resolv_st.st_ino ||
		st.st_dev != d->resolv_st.st_dev ||
		st.st_size != d->resolv_st.st_size ||
		st.st_mtim.tv_sec != d->resolv_st.st_mtim.tv_sec ||
		st.st_mtim.tv_nsec != d->resolv_st.st_mtim.tv_nsec);
	d->resolv_st = st;
	d->resolv_seen = true;
	return changed;
}

/*
 * Upstreams that come from resolv-conf follow it: DHCP, a VPN or
 * NetworkManager rewrite it, and new queries go to the new servers
 * within a second or two, no signal needed.
 */
static void
resolv_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;

	if (!d->route->cfg.upstream_from_resolv) {
		d->resolv_seen = false;
		return;
	}
	if (resolv_changed(d)) {
		char msg[1200];
		log_info("main", "resolv-conf changed, reloading file=%s",
		    d->route->cfg.resolv_conf);
		(void)reload(d, "resolv-conf", msg, sizeof(msg));
		(void)resolv_changed(d);
	}
}

/* Per-server health, labelled by zone and server address. */
static void
upstream_metrics(struct daemon *d, struct evbuffer *out)
{
	static const char *const help[][3] = {
	    {"upstream_server_queries_total", "counter",
		"Queries sent to the server (probes excluded): answers + "
		"timeouts + errors + outstanding."},
	    {"upstream_server_answers_total", "counter",
		"Usable answers from the server (probes excluded)."},
	    {"upstream_server_timeouts_total", "counter",
		"Queries the server did not answer in time."},
	    {"upstream_server_errors_total", "counter",
		"SERVFAIL/REFUSED/unreachable/malformed from the server."},
	    {"upstream_server_probes_total", "counter",
		"Health probes sent to the server."},
	    {"upstream_server_probe_answers_total", "counter",
		"Health probes the server answered."},
	    {"upstream_server_rtt_seconds", "gauge",
		"Smoothed round-trip time estimate."},
	    {"upstream_server_rto_seconds", "gauge",
		"Retransmit (hedge) timeout."},
	    {"upstream_server_outstanding", "gauge",
		"Queries waiting for the server."},
	    {"upstream_server_circuit", "gauge",
		"Circuit state: 0 closed, 1 open, 2 half-open."},
	    {"upstream_server_last_answer_age_seconds", "gauge",
		"Seconds since the server last answered (a query or a probe); "
		"-1 if it never has."},
	};
	struct route *r = d->route;
	char zone[WIRE_NAME_MAX * 4 + 8];
	uint64_t now = clock_now_ms(), last_ok = 0;

	for (size_t m = 0; m < sizeof(help) / sizeof(help[0]); m++) {
		evbuffer_add_printf(out,
		    "# HELP stubborn_%s %s\n# TYPE stubborn_%s %s\n",
		    help[m][0], help[m][2], help[m][0], help[m][1]);
		for (size_t z = 0; z < r->nzones; z++) {
			struct upstream_pool *pool = r->zones[z].pool;
			wire_name_text(r->zones[z].name, r->zones[z].len, zone,
			    sizeof(zone));
			for (unsigned i = 0; i < upstream_count(pool); i++) {
				struct upstream_stats st;
				upstream_get_stats(pool, i, &st);
				if (st.last_ok_ms > last_ok)
					last_ok = st.last_ok_ms;
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
					evbuffer_add_printf(out, "%llu\n",
					    (unsigned long long)st.probes);
					break;
				case 5:
					evbuffer_add_printf(out, "%llu\n",
					    (unsigned long long)
						st.probe_answers);
					break;
				case 6:
					evbuffer_add_printf(
					    out, "%.6f\n", st.srtt_us / 1e6);
					break;
				case 7:
					evbuffer_add_printf(
					    out, "%.3f\n", st.rto_ms / 1e3);
					break;
				case 8:
					evbuffer_add_printf(
					    out, "%u\n", st.outstanding);
					break;
				case 9:
					evbuffer_add_printf(
					    out, "%d\n", (int)st.circuit);
					break;
				default:
					evbuffer_add_printf(out, "%.3f\n",
					    st.last_ok_ms == 0
						? -1.0
						: (double)(now -
						      st.last_ok_ms) /
						    1e3);
					break;
				}
			}
		}
	}
	evbuffer_add_printf(out,
	    "# HELP stubborn_upstream_last_answer_age_seconds Seconds since "
	    "any upstream last answered; -1 if none has.  Rising while clients "
	    "are answered: an outage is being absorbed.\n"
	    "# TYPE stubborn_upstream_last_answer_age_seconds gauge\n"
	    "stubborn_upstream_last_answer_age_seconds %.3f\n",
	    last_ok == 0 ? -1.0 : (double)(now - last_ok) / 1e3);
}

/*
 * Per server and transport: what its connections cost (opened, reused,
 * handshakes) and when its certificate runs out, summed over the workers.
 */
static void
transport_metrics(struct daemon *d, struct evbuffer *out)
{
	static const char *const help[][3] = {
	    {"upstream_connections_opened_total", "counter",
		"Connections opened to the server (TCP, DNS-over-TLS, "
		"DNSCrypt over TCP)."},
	    {"upstream_connect_failures_total", "counter",
		"Connections that could not be opened."},
	    {"upstream_connection_queries_total", "counter",
		"Queries written on connections."},
	    {"upstream_connection_reused_queries_total", "counter",
		"Queries written on a connection that had carried an "
		"earlier one."},
	    {"upstream_handshakes_total", "counter",
		"Connections established (for TLS: handshake done)."},
	    {"upstream_handshake_seconds_total", "counter",
		"Time from connect to ready, summed over handshakes."},
	    {"upstream_handshake_failures_total", "counter",
		"TLS handshakes that failed (certificate verification "
		"included)."},
	    {"upstream_tls_resumptions_total", "counter",
		"TLS handshakes that resumed a session."},
	    {"upstream_dnscrypt_cert_fetches_total", "counter",
		"DNSCrypt certificate queries sent."},
	    {"upstream_dnscrypt_cert_failures_total", "counter",
		"DNSCrypt certificate queries that gave no valid "
		"certificate."},
	    {"upstream_dnscrypt_rejected_total", "counter",
		"DNSCrypt answers dropped: forged, corrupt or for another "
		"key."},
	    {"upstream_certificate_expiry_timestamp_seconds", "gauge",
		"When the server's TLS or DNSCrypt certificate in use "
		"expires (Unix time)."},
	};
	static const char *const transport[] = {
	    "udp", "tcp", "tls", "dnscrypt"};
	const struct config_upstream
	    *srv[CONFIG_MAX_ZONES * CONFIG_MAX_UPSTREAM + CONFIG_MAX_UPSTREAM];
	struct xnet_stats st[sizeof(srv) / sizeof(srv[0])];
	size_t n = 0;
	struct route *r = d->route;

	for (size_t z = 0; z < r->nzones; z++) {
		struct upstream_pool *pool = r->zones[z].pool;
		for (unsigned i = 0; i < upstream_count(pool); i++) {
			const struct config_upstream *u =
			    upstream_addr(pool, i);
			bool used = false;
			size_t k;
			for (k = 0; k < n; k++)
				if (strcmp(srv[k]->text, u->text) == 0)
					break;
			if (k < n || n == sizeof(srv) / sizeof(srv[0]))
				continue;
			memset(&st[n], 0, sizeof(st[n]));
			for (unsigned w = 0; w < d->n_workers; w++)
				used |=
				    worker_xnet_stats(d->workers[w], u, &st[n]);
			/* Plain UDP servers that never fell back to TCP have
			 * nothing to show here. */
			if (used)
				srv[n++] = u;
		}
	}
	for (size_t m = 0; m < sizeof(help) / sizeof(help[0]); m++) {
		evbuffer_add_printf(out,
		    "# HELP stubborn_%s %s\n# TYPE stubborn_%s %s\n",
		    help[m][0], help[m][2], help[m][0], help[m][1]);
		for (size_t k = 0; k < n; k++) {
			const struct xnet_stats *t = &st[k];
			uint64_t v[] = {t->conns_opened, t->connect_failures,
			    t->stream_queries, t->stream_reused, t->handshakes,
			    0, t->handshake_failures, t->resumed,
			    t->cert_fetches, t->cert_failures, t->dc_rejected};
			int proto = srv[k]->proto;
			if (m == 11 && t->cert_not_after == 0)
				continue;
			if (m >= 8 && m <= 10 && proto != CONFIG_PROTO_DNSCRYPT)
				continue;
			if (m == 7 && proto != CONFIG_PROTO_TLS)
				continue;
			evbuffer_add_printf(out,
			    "stubborn_%s{server=\"%s\",transport=\"%s\"} ",
			    help[m][0], srv[k]->text,
			    transport[proto >= 0 && proto <= 3 ? proto : 0]);
			if (m == 5)
				evbuffer_add_printf(
				    out, "%.3f\n", t->handshake_ms_sum / 1e3);
			else if (m == 11)
				evbuffer_add_printf(out, "%lld\n",
				    (long long)t->cert_not_after);
			else
				evbuffer_add_printf(
				    out, "%llu\n", (unsigned long long)v[m]);
		}
	}
}

static void
extra_metrics(void *arg, struct evbuffer *out)
{
	struct daemon *d = arg;
	struct cache_stats st;
	uint64_t stale_n, stale_age;

	upstream_metrics(d, out);
	transport_metrics(d, out);
	cache_get_stats(d->cache, &st);
	metrics_stale_window(d->metrics, clock_wall_s(), &stale_n, &stale_age);
	evbuffer_add_printf(out,
	    "# HELP stubborn_cache_entries Entries in the cache.\n"
	    "# TYPE stubborn_cache_entries gauge\n"
	    "stubborn_cache_entries %llu\n"
	    "# HELP stubborn_cache_bytes Bytes used by the cache.\n"
	    "# TYPE stubborn_cache_bytes gauge\n"
	    "stubborn_cache_bytes %llu\n"
	    "# HELP stubborn_cache_evictions_total Entries evicted for space.\n"
	    "# TYPE stubborn_cache_evictions_total counter\n"
	    "stubborn_cache_evictions_total %llu\n"
	    "# HELP stubborn_stale_answers_last_minute Stale answers served in "
	    "the last 60 seconds.\n"
	    "# TYPE stubborn_stale_answers_last_minute gauge\n"
	    "stubborn_stale_answers_last_minute %llu\n"
	    "# HELP stubborn_stale_answer_max_age_seconds Seconds past expiry "
	    "of the oldest stale answer served in the last 60 seconds.\n"
	    "# TYPE stubborn_stale_answer_max_age_seconds gauge\n"
	    "stubborn_stale_answer_max_age_seconds %llu\n"
	    "# HELP stubborn_reloads_total Configuration reloads, by result.\n"
	    "# TYPE stubborn_reloads_total counter\n"
	    "stubborn_reloads_total{result=\"ok\"} %llu\n"
	    "stubborn_reloads_total{result=\"failed\"} %llu\n"
	    "# HELP stubborn_config_last_reload_success_timestamp_seconds "
	    "When the running configuration was loaded.\n"
	    "# TYPE stubborn_config_last_reload_success_timestamp_seconds "
	    "gauge\n"
	    "stubborn_config_last_reload_success_timestamp_seconds %llu\n"
	    "# HELP stubborn_build_info Version and build of the running "
	    "binary.\n"
	    "# TYPE stubborn_build_info gauge\n"
	    "stubborn_build_info{version=\"%s\"} 1\n",
	    (unsigned long long)st.entries, (unsigned long long)st.bytes,
	    (unsigned long long)st.evictions, (unsigned long long)stale_n,
	    (unsigned long long)stale_age, (unsigned long long)d->reloads_ok,
	    (unsigned long long)d->reloads_failed,
	    (unsigned long long)d->last_reload_s, config_version());
}

static bool
is_ready(void *arg)
{
	struct daemon *d = arg;
	struct cache_stats st;

	/* Listening, and an upstream usable or the cache holding answers. */
	for (size_t z = 0; z < d->route->nzones; z++)
		if (upstream_any_usable(d->route->zones[z].pool))
			return true;
	cache_get_stats(d->cache, &st);
	return st.entries > 0;
}

/*
 * Listening sockets we did not open: from the daemon we take over from
 * (control-socket), else from systemd (LISTEN_FDS, sd_listen_fds: fds 3
 * on, when LISTEN_PID is ours).  Returns how many, or a negative errno
 * when a daemon is running on the control socket and the handover failed.
 */
static int
inherited_fds(struct daemon *d, int *fds, int max, char *err, size_t errlen)
{
	const char *pid = getenv("LISTEN_PID"), *nfd = getenv("LISTEN_FDS");
	int n = 0;

	d->takeover_conn = -1;
	if (d->cfg.control_socket[0] != '\0') {
		n = control_takeover(d->cfg.control_socket, fds, max,
		    &d->takeover_conn, d->load_from, sizeof(d->load_from), err,
		    errlen);
		if (n < 0)
			return n;
		if (d->takeover_conn >= 0) {
			d->load_is_handover = d->load_from[0] != '\0';
			log_info("main",
			    "taking over from the running daemon "
			    "control_socket=%s sockets=%d cache=%s",
			    d->cfg.control_socket, n,
			    d->load_from[0] ? d->load_from : "-");
			return n;
		}
	}
	if (pid != NULL && nfd != NULL && atol(pid) == (long)getpid()) {
		n = atoi(nfd);
		if (n < 0 || n > max)
			n = 0;
		for (int i = 0; i < n; i++) {
			fds[i] = 3 + i;
			fcntl(fds[i], F_SETFD, FD_CLOEXEC);
		}
		log_info("main", "socket activation sockets=%d", n);
	}
	/* Not for our children, had we any. */
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return n;
}

static bool
same_addr(const struct sockaddr_storage *a, const struct config_addr *b)
{
	if (a->ss_family != b->ss.ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a,
					 *y = (const void *)&b->ss;
		return x->sin_port == y->sin_port &&
		    x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	{
		const struct sockaddr_in6 *x = (const void *)a,
					  *y = (const void *)&b->ss;
		return x->sin6_port == y->sin6_port &&
		    memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
	}
}

/*
 * An inherited socket serves the listen address it is bound to, or the
 * metrics endpoint; one we have no use for is closed.  Returns 1 when
 * adopted, 0 when not.
 */
static int
adopt(struct daemon *d, int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int type;
	socklen_t tlen = sizeof(type);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0)
		goto unused;
	/* systemd passes blocking sockets: one accept() too many would
	 * stop a worker's whole loop. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		goto unused;
	if (type == SOCK_STREAM && d->cfg.metrics_on && d->metrics_fd < 0 &&
	    same_addr(&ss, &d->cfg.metrics)) {
		d->metrics_fd = fd;
		return 1;
	}
	for (size_t i = 0; i < d->cfg.n_listen; i++) {
		struct listen_sock *s;
		if (!same_addr(&ss, &d->cfg.listen[i]) ||
		    (type != SOCK_DGRAM && type != SOCK_STREAM) ||
		    d->nsocks >= MAX_SOCKS)
			continue;
		s = &d->socks[d->nsocks++];
		s->fd = fd;
		s->type = type;
		s->addr = i;
		s->wildcard = config_addr_is_wildcard(&d->cfg.listen[i]);
		return 1;
	}
unused:
	log_warn("main",
	    "an inherited socket serves no listen address; closed fd=%d", fd);
	close(fd);
	return 0;
}

/*
 * One UDP and one TCP socket per listen address and worker (SO_REUSEPORT
 * spreads the load), after a probe without SO_REUSEPORT so that a second
 * daemon on the same address fails instead of splitting the traffic.
 * Addresses served by inherited sockets are not bound again: those are
 * shared by the workers, round robin.
 */
static int
open_sockets(struct daemon *d, int *fds, int nfds)
{
	char err[512];
	int errnum = 0;
	size_t adopted;

	d->metrics_fd = -1;
	for (int i = 0; i < nfds; i++)
		(void)adopt(d, fds[i]);
	adopted = d->nsocks;
	for (size_t i = 0; i < adopted; i++)
		d->sock_worker[i] = (unsigned)(i % d->cfg.workers);
	for (size_t i = 0; i < d->cfg.n_listen; i++) {
		bool have[2] = {false, false};
		for (size_t k = 0; k < adopted; k++)
			if (d->socks[k].addr == i)
				have[d->socks[k].type == SOCK_STREAM] = true;
		for (int k = 0; k < 2; k++) {
			int type = k ? SOCK_STREAM : SOCK_DGRAM;
			struct config_addr *a = &d->cfg.listen[i];
			int fd;
			if (have[k])
				continue;
			fd = listen_open_socket(
			    a, type, false, err, sizeof(err), &errnum);
			if (fd < 0)
				goto fail;
			close(fd);
			for (unsigned w = 0; w < d->cfg.workers; w++) {
				struct listen_sock *s = &d->socks[d->nsocks];
				if (d->nsocks >= MAX_SOCKS)
					break;
				fd = listen_open_socket(
				    a, type, true, err, sizeof(err), &errnum);
				if (fd < 0)
					goto fail;
				s->fd = fd;
				s->type = type;
				s->addr = i;
				s->wildcard = config_addr_is_wildcard(a);
				d->sock_worker[d->nsocks++] = w;
			}
		}
	}
	return 0;
fail:
	fprintf(stderr, "stubborn: %s\n", err);
	log_error("main", "start-up failed: %s", err);
	return -EADDRINUSE;
}

/* The user to run as: user, else stubborn if it exists, else nobody. */
static int
find_user(struct daemon *d, char *err, size_t errlen)
{
	const char *name = d->cfg.user;
	struct passwd *pw;

	if (name[0] == '\0')
		name = getpwnam("stubborn") != NULL ? "stubborn" : "nobody";
	d->user = name;
	d->uid = geteuid();
	d->gid = getegid();
	if (geteuid() != 0 || strcmp(name, "root") == 0)
		return 0;
	pw = getpwnam(name);
	if (pw == NULL) {
		snprintf(err, errlen, "user %s: no such user", name);
		return -ENOENT;
	}
	d->uid = pw->pw_uid;
	d->gid = pw->pw_gid;
	return 0;
}

/*
 * After binding: the user's identity, no supplementary groups, no
 * capabilities (also those a non-root start got as ambient ones, such as
 * CAP_NET_BIND_SERVICE from a unit) and no way to gain privileges again.
 */
static int
drop_privileges(struct daemon *d, char *err, size_t errlen)
{
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct none[2];

	if (geteuid() == 0 && strcmp(d->user, "root") != 0) {
		if (setgroups(0, NULL) < 0 || setgid(d->gid) < 0 ||
		    setuid(d->uid) < 0) {
			snprintf(err, errlen, "cannot become user %s: %s",
			    d->user, strerror(errno));
			return -errno;
		}
		if (setuid(0) == 0) {
			snprintf(
			    err, errlen, "user %s: could regain root", d->user);
			return -EPERM;
		}
	}
	memset(none, 0, sizeof(none));
	(void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	if (geteuid() != 0 && syscall(SYS_capset, &hdr, none) < 0) {
		snprintf(err, errlen, "cannot drop capabilities: %s",
		    strerror(errno));
		return -errno;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		snprintf(err, errlen, "cannot set no-new-privileges: %s",
		    strerror(errno));
		return -errno;
	}
	if (geteuid() == 0)
		log_warn("main", "running as root (user = root)");
	else
		log_info("main", "privileges dropped user=%s uid=%u gid=%u",
		    d->user, (unsigned)geteuid(), (unsigned)getegid());
	return 0;
}

/* The snapshot must stay writable once we run as the user. */
static int
check_writable(const char *file, const char *what, char *err, size_t errlen)
{
	char dir[1024];

	snprintf(dir, sizeof(dir), "%s", file);
	if (access(dirname(dir), W_OK | X_OK) < 0 ||
	    (access(file, F_OK) == 0 && access(file, R_OK | W_OK) < 0)) {
		snprintf(err, errlen,
		    "%s %.900s: not writable as user uid %u (%s): give the "
		    "directory to that user, or another path",
		    what, file, (unsigned)geteuid(), strerror(errno));
		return -EACCES;
	}
	return 0;
}

static void
close_sockets(struct daemon *d)
{
	for (size_t i = 0; i < d->nsocks; i++)
		close(d->socks[i].fd);
	d->nsocks = 0;
}

static int
start_workers(struct daemon *d)
{
	struct listen_sock mine[MAX_SOCKS];

	d->workers = calloc(d->cfg.workers, sizeof(*d->workers));
	if (d->workers == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < d->cfg.workers; i++) {
		size_t n = 0;
		for (size_t k = 0; k < d->nsocks; k++)
			if (d->sock_worker[k] == i)
				mine[n++] = d->socks[k];
		d->workers[i] = worker_new(i, d->route, d->cache, &d->limits,
		    metrics_worker(d->metrics, i), mine, n);
		if (d->workers[i] == NULL) {
			log_error(
			    "main", "out of memory creating worker %u", i);
			return -ENOMEM;
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
	size_t left = 0;

	for (unsigned i = 0; i < d->n_workers; i++)
		worker_stop(d->workers[i]);
	for (unsigned i = 0; i < d->n_workers; i++) {
		worker_join(d->workers[i]);
		left += worker_left_inflight(d->workers[i]);
	}
	for (unsigned i = 0; i < d->n_workers; i++)
		worker_free(d->workers[i]);
	if (d->n_workers > 0)
		log_info("main", "drained unanswered=%zu", left);
	free(d->workers);
	d->workers = NULL;
	d->n_workers = 0;
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

	r = snapshot_load(d->cache, d->load_from, clock_now_ms(),
	    clock_wall_s(), d->cfg.serve_stale ? d->cfg.stale_max_age : 0,
	    &loaded, &skipped, err, sizeof(err));
	if (r == -ENOENT)
		log_info("snapshot", "no snapshot yet file=%s", d->load_from);
	else if (r < 0)
		log_warn("snapshot", "snapshot ignored file=%s error=\"%s\"",
		    d->load_from, err);
	else
		log_info("snapshot",
		    "snapshot loaded file=%s entries=%zu skipped=%zu ms=%llu",
		    d->load_from, loaded, skipped,
		    (unsigned long long)(clock_now_ms() - t0));
	/* A file written for the handover only is ours to remove. */
	if (d->load_is_handover && d->cfg.snapshot[0] == '\0')
		unlink(d->load_from);
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

/*
 * Interval saves write the disk in a thread of their own: the main loop
 * (signals, metrics) and the workers never wait for it.  A save asked for
 * meanwhile (a flush) runs once more after it: the one writing may have
 * copied the flushed entries already.
 */
static void *
save_thread(void *arg)
{
	struct daemon *d = arg;

	for (;;) {
		atomic_store(&d->save_again, false);
		save_snapshot(d, "interval");
		atomic_store(&d->saving, false);
		if (!atomic_load(&d->save_again) ||
		    atomic_exchange(&d->saving, true))
			break;
	}
	return NULL;
}

static void
snapshot_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;

	if (d->handed_over)
		return;
	atomic_store(&d->save_again, true);
	if (atomic_exchange(&d->saving, true))
		return; /* the one writing saves again when done */
	if (d->saver_started)
		pthread_join(d->saver, NULL);
	d->saver_started = pthread_create(&d->saver, NULL, save_thread, d) == 0;
	if (!d->saver_started)
		atomic_store(&d->saving, false);
}

static int
start_snapshots(struct daemon *d)
{
	struct timeval tv = {d->cfg.snapshot_interval, 0};
	int r;

	if (d->load_from[0] == '\0')
		snprintf(
		    d->load_from, sizeof(d->load_from), "%s", d->cfg.snapshot);
	/*
	 * Taking over, the old daemon answers meanwhile: the cache is loaded
	 * before this one reads a query, so it serves warm from the first.
	 * A fresh start has nobody else to answer: it serves at once and
	 * loads behind.
	 */
	if (d->load_from[0] != '\0' && d->takeover_conn >= 0) {
		load_snapshot(d);
	} else if (d->load_from[0] != '\0') {
		r = pthread_create(&d->loader, NULL, load_snapshot, d);
		if (r != 0)
			return -r;
		d->loader_started = true;
	}
	if (d->cfg.snapshot[0] == '\0')
		return 0;
	d->ev_snapshot = event_new(d->base, -1, EV_PERSIST, snapshot_cb, d);
	if (d->ev_snapshot == NULL)
		return -ENOMEM;
	if (d->cfg.snapshot_interval > 0 && event_add(d->ev_snapshot, &tv) < 0)
		return -ENOMEM;
	return 0;
}

/*
 * One table per kind of limit, shared by the workers: fixed memory, sized
 * at start; both exist so a reload can turn either limit on.
 */
static int
make_limits(struct daemon *d)
{
	uint8_t key[16];

	rng_bytes(key, sizeof(key));
	d->limits.miss = ratelimit_new(d->cfg.ratelimit_clients, key);
	d->limits.hit = ratelimit_new(d->cfg.ratelimit_clients, key);
	return d->limits.miss && d->limits.hit ? 0 : -ENOMEM;
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
	if (d->cfg.resolv_fallback)
		log_info("main",
		    "resolv-conf lists only our own addresses; using "
		    "systemd-resolved's servers file=%s",
		    CONFIG_RESOLVED_CONF);
	log_info("main",
	    "forwarding upstreams=%s source=%s policy=%s zones=%zu", list,
	    d->cfg.upstream_from_resolv ? d->cfg.resolv_conf : "config",
	    upstream_policy_name((enum upstream_policy)d->cfg.policy),
	    d->cfg.n_zones);
}

static int
ctl_reload(void *arg, char *msg, size_t cap)
{
	return reload(arg, "control", msg, cap);
}

static void
ctl_stop(void *arg)
{
	struct daemon *d = arg;

	log_info("main", "stop requested over the control socket, draining");
	notify("STOPPING=1");
	event_base_loopexit(d->base, NULL);
}

static struct route *
ctl_route(void *arg)
{
	return ((struct daemon *)arg)->route;
}

static void
ctl_stats(void *arg, struct evbuffer *out)
{
	struct daemon *d = arg;

	metrics_write(d->metrics, out);
	extra_metrics(d, out);
}

/* Flushed entries must not come back from the snapshot at a restart. */
static bool
ctl_flushed(void *arg)
{
	struct daemon *d = arg;

	if (d->cfg.snapshot[0] == '\0')
		return false;
	snapshot_cb(-1, 0, d);
	return true;
}

/*
 * A successor takes over: every listening socket and the metrics one, and
 * the cache written where it can read it (the snapshot file, or one next
 * to the control socket).
 */
static int
ctl_handover(void *arg, int *fds, int max, char *path, size_t cap)
{
	struct daemon *d = arg;
	size_t count = 0;
	int n = 0, rc;

	for (size_t i = 0; i < d->nsocks && n < max; i++)
		fds[n++] = d->socks[i].fd;
	if (metrics_http_fd(d->metrics) >= 0 && n < max)
		fds[n++] = metrics_http_fd(d->metrics);
	if (d->cfg.snapshot[0] != '\0')
		snprintf(path, cap, "%s", d->cfg.snapshot);
	else
		snprintf(path, cap, "%s.cache", d->cfg.control_socket);
	/*
	 * Two saves of one file would both write its temporary: an interval
	 * save still writing is waited for (the main loop with it, as for the
	 * save below).
	 */
	if (d->saver_started) {
		pthread_join(d->saver, NULL);
		d->saver_started = false;
	}
	rc = snapshot_save(
	    d->cache, path, clock_now_ms(), clock_wall_s(), &count);
	if (rc < 0) {
		log_warn("main",
		    "handover: cannot write the cache, the successor starts "
		    "cold file=%s error=\"%s\"",
		    path, strerror(-rc));
		path[0] = '\0';
	} else {
		log_info("main", "handover: cache written file=%s entries=%zu",
		    path, count);
	}
	return n;
}

static void
ctl_handover_done(void *arg)
{
	struct daemon *d = arg;

	/* The successor serves, and saves the snapshot file from now on. */
	d->handed_over = true;
	if (d->ev_snapshot != NULL)
		event_del(d->ev_snapshot);
	notify("STOPPING=1");
	event_base_loopexit(d->base, NULL);
}

/* The most recent failure any worker's transport logged for u. */
static void
ctl_transport_error(
    void *arg, const struct config_upstream *u, char *buf, size_t cap)
{
	struct daemon *d = arg;

	buf[0] = '\0';
	for (unsigned w = 0; w < d->n_workers; w++) {
		struct xnet_stats st;
		memset(&st, 0, sizeof(st));
		if (worker_xnet_stats(d->workers[w], u, &st) &&
		    st.last_error[0] != '\0') {
			snprintf(buf, cap, "%s", st.last_error);
			return;
		}
	}
}

static const struct control_ops ctl_ops = {
    .reload = ctl_reload,
    .stop = ctl_stop,
    .route = ctl_route,
    .stats = ctl_stats,
    .flushed = ctl_flushed,
    .handover = ctl_handover,
    .handover_done = ctl_handover_done,
    .transport_error = ctl_transport_error,
};

/*
 * The control socket's directory, made (and given to the user we will run
 * as) while we may still; a directory that exists is left as it is.
 */
static void
prepare_control_dir(struct daemon *d)
{
	char dir[sizeof(d->cfg.control_socket)];

	if (d->cfg.control_socket[0] == '\0')
		return;
	snprintf(dir, sizeof(dir), "%s", d->cfg.control_socket);
	if (mkdir(dirname(dir), 0755) == 0 && geteuid() == 0)
		(void)chown(dir, d->uid, d->gid);
}

/*
 * The control socket, bound once privileges are dropped, so that the file
 * belongs to the user we run as (mode 0660): no capability needed to hand
 * it over, and its group can use stubborn-ctl.
 */
static int
start_control(struct daemon *d, char *err, size_t errlen)
{
	if (d->cfg.control_socket[0] == '\0')
		return 0;
	d->control = control_new(d->base, d->cfg.control_socket, (uid_t)-1,
	    (gid_t)-1, d->cache, &ctl_ops, d, err, errlen);
	return d->control != NULL ? 0 : -EIO;
}

int
main(int argc, char **argv)
{
	static struct daemon d;
	char err[1024];
	struct event *ev_term = NULL, *ev_int = NULL, *ev_hup = NULL,
		     *ev_cookie = NULL;
	struct timeval hour = {3600, 0};
	struct timeval poll = {RESOLV_POLL_MS / 1000, 0};
	static int fds[CONTROL_MAX_FDS];
	sigset_t sigs;
	int nfds, rc = 1;

	switch (config_load(&d.cfg, argc, argv, err, sizeof(err))) {
	case CONFIG_EXIT_OK:
		return 0;
	case CONFIG_EXIT_BAD:
		fprintf(stderr, "stubborn: %s\n", err);
		return 2;
	case CONFIG_RUN:
		break;
	}
	/* A CA file that does not load is a bad configuration. */
	if (wants_tls(&d.cfg) &&
	    upconn_check_ca(d.cfg.tls_ca_file, err, sizeof(err)) < 0) {
		fprintf(stderr, "stubborn: %s\n", err);
		return 2;
	}
	if (d.cfg.check_config) {
		config_print(&d.cfg, stdout);
		return 0;
	}
	d.argc = argc;
	d.argv = argv;
	d.takeover_conn = -1;
	d.metrics_fd = -1;
	log_set_level((enum log_level)d.cfg.log_level);
	if (find_user(&d, err, sizeof(err)) < 0) {
		fprintf(stderr, "stubborn: %s\n", err);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	/*
	 * A SIGTERM or SIGHUP that comes while we start (a supervisor, a
	 * test that saw the port open) waits until the loop can handle it
	 * instead of killing us.  Every thread started from here inherits the
	 * mask, so the main thread alone takes them once unblocked.
	 */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	if (rng_init() < 0 || evthread_use_pthreads() < 0) {
		log_error(
		    "main", "cannot initialise libsodium or libevent threads");
		return 1;
	}
	d.cache = cache_new(d.cfg.cache_size, CACHE_SHARDS,
	    d.cfg.serve_stale ? d.cfg.stale_max_age : 0);
	cookie_init();
	d.metrics = metrics_new(d.cfg.workers);
	d.base = event_base_new();
	if (d.cache == NULL || d.metrics == NULL || d.base == NULL ||
	    make_limits(&d) < 0) {
		log_error("main", "out of memory at start-up");
		goto out;
	}
	d.gen = 1;
	d.route = route_new(&d.cfg, NULL, d.gen, err, sizeof(err));
	if (d.route == NULL) {
		log_error("main", "start-up failed: %s", err);
		goto out;
	}
	d.last_reload_s = clock_wall_s();
	/* A running daemon hands its sockets over, or systemd passes some. */
	nfds = inherited_fds(&d, fds, CONTROL_MAX_FDS, err, sizeof(err));
	if (nfds < 0) {
		fprintf(stderr, "stubborn: %s\n", err);
		log_error("main", "start-up failed: %s", err);
		goto out;
	}
	if (open_sockets(&d, fds, nfds) < 0)
		goto out;
	if (d.cfg.metrics_on &&
	    metrics_start_http(d.metrics, d.base,
		(const struct sockaddr *)&d.cfg.metrics.ss, d.cfg.metrics.len,
		d.metrics_fd, extra_metrics, is_ready, &d, err,
		sizeof(err)) < 0) {
		fprintf(stderr, "stubborn: cannot serve metrics on %s: %s\n",
		    d.cfg.metrics.text, err);
		log_error("main", "cannot serve metrics addr=%s error=\"%s\"",
		    d.cfg.metrics.text, err);
		goto out;
	}
	prepare_control_dir(&d);
	if (drop_privileges(&d, err, sizeof(err)) < 0 ||
	    start_control(&d, err, sizeof(err)) < 0 ||
	    (d.cfg.snapshot[0] != '\0' &&
		check_writable(d.cfg.snapshot, "snapshot", err, sizeof(err)) <
		    0)) {
		fprintf(stderr, "stubborn: %s\n", err);
		log_error("main", "start-up failed: %s", err);
		goto out;
	}
	if (start_snapshots(&d) < 0) {
		log_error("main", "cannot start the snapshot loader");
		goto out;
	}
	if (start_workers(&d) < 0)
		goto out;
	ev_cookie = event_new(d.base, -1, EV_PERSIST, cookie_cb, &d);
	d.ev_resolv = event_new(d.base, -1, EV_PERSIST, resolv_cb, &d);
	ev_term = evsignal_new(d.base, SIGTERM, term_cb, &d);
	ev_int = evsignal_new(d.base, SIGINT, term_cb, &d);
	ev_hup = evsignal_new(d.base, SIGHUP, hup_cb, &d);
	if (ev_cookie == NULL || event_add(ev_cookie, &hour) < 0 ||
	    d.ev_resolv == NULL || event_add(d.ev_resolv, &poll) < 0 ||
	    ev_term == NULL || ev_int == NULL || ev_hup == NULL ||
	    evsignal_add(ev_term, NULL) < 0 || evsignal_add(ev_int, NULL) < 0 ||
	    evsignal_add(ev_hup, NULL) < 0)
		goto out;
	pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
	(void)resolv_changed(&d);
	log_startup(&d);
	/* We serve: the daemon we took over from may drain now. */
	if (d.takeover_conn >= 0) {
		(void)control_takeover_done(d.takeover_conn);
		d.takeover_conn = -1;
	}
	notify("READY=1\nMAINPID=%ld", (long)getpid());
	event_base_loop(d.base, EVLOOP_NO_EXIT_ON_EMPTY);
	rc = 0;
out:
	/* A takeover that failed here leaves the old daemon serving. */
	if (d.takeover_conn >= 0)
		close(d.takeover_conn);
	control_free(d.control);
	d.control = NULL;
	stop_workers(&d);
	if (d.loader_started)
		pthread_join(d.loader, NULL);
	if (d.saver_started)
		pthread_join(d.saver, NULL);
	if (rc == 0 && d.cfg.snapshot[0] != '\0' && !d.handed_over)
		save_snapshot(&d, "shutdown");
	close_sockets(&d);
	if (d.ev_snapshot)
		event_free(d.ev_snapshot);
	if (d.ev_resolv)
		event_free(d.ev_resolv);
	if (ev_term)
		event_free(ev_term);
	if (ev_int)
		event_free(ev_int);
	if (ev_hup)
		event_free(ev_hup);
	if (ev_cookie)
		event_free(ev_cookie);
	metrics_free(d.metrics);
	route_unref(d.route);
	if (d.base)
		event_base_free(d.base);
	cache_free(d.cache);
	ratelimit_free(d.limits.miss);
	ratelimit_free(d.limits.hit);
	if (rc == 0)
		log_info("main", "stopped");
	return rc;
}
