#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>

#include "stubborn/log.h"
#include "stubborn/metrics.h"

struct metrics {
	unsigned nworkers;
	int fd; /* the HTTP listening socket, or -1; owned by http */
	struct metrics_worker *w;
	struct evhttp *http;
	metrics_extra_fn extra;
	metrics_ready_fn ready;
	void *arg;
};

struct counter_desc {
	const char *name;
	const char *help;
};

/* Indexed by enum metrics_counter; the labels group related counters. */
static const struct counter_desc counters[MET_COUNT] = {
    [MET_QUERIES_UDP] = {"queries_total{transport=\"udp\"}",
	"Client queries received."},
    [MET_QUERIES_TCP] = {"queries_total{transport=\"tcp\"}", NULL},
    [MET_CACHE_HITS] = {"cache_hits_total",
	"Queries answered from fresh cache entries."},
    [MET_CACHE_MISSES] = {"cache_misses_total",
	"Queries that needed an upstream."},
    [MET_COALESCED] = {"coalesced_total",
	"Queries that joined an identical in-flight query."},
    [MET_REPLIES_FORMERR] = {"replies_total{rcode=\"formerr\"}",
	"Error replies sent to clients, by RCODE."},
    [MET_REPLIES_NOTIMP] = {"replies_total{rcode=\"notimp\"}", NULL},
    [MET_REPLIES_BADVERS] = {"replies_total{rcode=\"badvers\"}", NULL},
    [MET_REPLIES_REFUSED] = {"replies_total{rcode=\"refused\"}", NULL},
    [MET_REPLIES_SERVFAIL] = {"replies_total{rcode=\"servfail\"}", NULL},
    [MET_REPLIES_TRUNCATED] = {"replies_truncated_total",
	"UDP replies sent with TC=1."},
    [MET_DROPPED] = {"dropped_total",
	"Client packets dropped without reply (short, QR=1)."},
    [MET_UPSTREAM_QUERIES] = {"upstream_queries_total",
	"Queries sent to upstreams."},
    [MET_UPSTREAM_ANSWERS] = {"upstream_answers_total",
	"Valid upstream answers."},
    [MET_UPSTREAM_TIMEOUTS] = {"upstream_timeouts_total",
	"Upstream queries that timed out."},
    [MET_UPSTREAM_ERRORS] = {"upstream_errors_total",
	"Upstream SERVFAIL/REFUSED/network errors."},
    [MET_UPSTREAM_MISMATCHED] = {"upstream_mismatched_total",
	"Upstream replies dropped: wrong ID or question."},
    [MET_UPSTREAM_MALFORMED] = {"upstream_malformed_total",
	"Upstream replies that did not parse."},
    [MET_UPSTREAM_TCP_FALLBACKS] = {"upstream_tcp_fallbacks_total",
	"Truncated upstream answers retried over TCP."},
    [MET_UPSTREAM_EDNS_FALLBACKS] = {"upstream_edns_fallbacks_total",
	"Queries retried without EDNS after FORMERR."},
    [MET_TCP_ACCEPTED] = {"tcp_connections_total",
	"Client TCP connections accepted."},
    [MET_TCP_REJECTED] = {"tcp_rejected_total",
	"Client TCP connections closed at the limit."},
    [MET_TCP_IDLE_CLOSED] = {"tcp_idle_closed_total",
	"Client TCP connections closed when idle."},
    [MET_INFLIGHT_OVERFLOW] = {"inflight_overflow_total",
	"Queries refused because the in-flight table was full."},
    [MET_STALE_ANSWERS] = {"stale_answers_total",
	"Expired answers served (RFC 8767), EDE 3/19."},
    [MET_REFRESHES] = {"refreshes_total",
	"Background refreshes started (refresh-ahead, keep-warm)."},
    [MET_RATELIMITED_REFUSE] = {"ratelimited_total{action=\"refuse\"}",
	"Client queries over their limit, by action."},
    [MET_RATELIMITED_DROP] = {"ratelimited_total{action=\"drop\"}", NULL},
    [MET_RATELIMITED_TRUNCATE] = {"ratelimited_total{action=\"truncate\"}",
	NULL},
    [MET_RATELIMITED_STALE] = {"ratelimited_total{action=\"stale\"}", NULL},
    [MET_SHED_REFRESH_AHEAD] = {"shed_total{kind=\"refresh_ahead\"}",
	"Upstream work not started because the upstream budget was short, by "
	"kind."},
    [MET_SHED_STALE_REFRESH] = {"shed_total{kind=\"stale_refresh\"}", NULL},
    [MET_SHED_CLIENT] = {"shed_total{kind=\"client\"}", NULL},
    [MET_FAILURE_CACHE_HITS] = {"failure_cache_hits_total",
	"Queries answered SERVFAIL from the failure cache (RFC 9520), EDE 13."},
    [MET_REFUSED_ACL] = {"acl_refused_total",
	"Queries from clients outside allow, answered REFUSED (EDE 18)."},
};

/* Upper bounds of the response-time buckets, microseconds. */
static const uint64_t bucket_us[METRICS_BUCKETS] = {100, 250, 500, 1000, 2500,
    5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
    5000000};
static const char *const bucket_text[METRICS_BUCKETS] = {"0.0001", "0.00025",
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5"};
static const char *const source_text[CLIENT_SRC_COUNT] = {
    "cache", "upstream", "stale", "error"};

static void metrics_cb(struct evhttp_request *req, void *arg);
static void health_cb(struct evhttp_request *req, void *arg);
static void ready_cb(struct evhttp_request *req, void *arg);

struct metrics *
metrics_new(unsigned nworkers)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (m == NULL)
		return NULL;
	m->nworkers = nworkers ? nworkers : 1;
	m->fd = -1;
	m->w = calloc(m->nworkers, sizeof(*m->w));
	if (m->w == NULL) {
		free(m);
		return NULL;
	}
	return m;
}

void
metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	if (m->http)
		evhttp_free(m->http);
	free(m->w);
	free(m);
}

struct metrics_worker *
metrics_worker(struct metrics *m, unsigned i)
{
	return &m->w[i < m->nworkers ? i : 0];
}

int
metrics_counter_by_name(const char *name)
{
	for (int c = 0; c < MET_COUNT; c++)
		if (counters[c].name != NULL &&
		    strcmp(counters[c].name, name) == 0)
			return c;
	return -1;
}

int
metrics_http_fd(const struct metrics *m)
{
	return m->fd;
}

uint64_t
metrics_sum(struct metrics *m, enum metrics_counter c)
{
	uint64_t s = 0;

	for (unsigned i = 0; i < m->nworkers; i++)
		s += atomic_load_explicit(&m->w[i].c[c], memory_order_relaxed);
	return s;
}

static inline void
add_relaxed(_Atomic uint64_t *c, uint64_t v)
{
	/* Single writer per slot: a relaxed load and store, no locked add. */
	atomic_store_explicit(c,
	    atomic_load_explicit(c, memory_order_relaxed) + v,
	    memory_order_relaxed);
}

void
metrics_udp_buffers(struct metrics_worker *w, uint32_t rcv, uint32_t snd)
{
	uint32_t r = atomic_load(&w->udp_rcvbuf),
		 s = atomic_load(&w->udp_sndbuf);

	if (r == 0 || rcv < r)
		atomic_store(&w->udp_rcvbuf, rcv);
	if (s == 0 || snd < s)
		atomic_store(&w->udp_sndbuf, snd);
}

/* The smallest non-zero value of a gauge over the workers, or 0. */
static uint32_t
min_gauge(const struct metrics *m, size_t off)
{
	uint32_t best = 0;

	for (unsigned i = 0; i < m->nworkers; i++) {
		_Atomic uint32_t *g =
		    (_Atomic uint32_t *)((char *)&m->w[i] + off);
		uint32_t v = atomic_load(g);
		if (v != 0 && (best == 0 || v < best))
			best = v;
	}
	return best;
}

void
metrics_observe(struct metrics_worker *w, enum client_source src, uint64_t us)
{
	metrics_observe_n(w, src, us, 1);
}

void
metrics_observe_n(
    struct metrics_worker *w, enum client_source src, uint64_t us, uint64_t n)
{
	size_t b = 0;

	if ((unsigned)src >= CLIENT_SRC_COUNT || n == 0)
		return;
	while (b < METRICS_BUCKETS && us > bucket_us[b])
		b++;
	add_relaxed(&w->hist[src][b], n);
	add_relaxed(&w->hist_sum_us[src], us * n);
}

void
metrics_stale(struct metrics_worker *w, uint64_t now_s, uint32_t stale_s)
{
	struct metrics_stale_slot *sl = &w->stale[now_s % METRICS_STALE_WINDOW];

	if (atomic_load_explicit(&sl->second, memory_order_relaxed) != now_s) {
		/* A new second for this slot: what it held is a minute old. */
		atomic_store_explicit(&sl->count, 0, memory_order_relaxed);
		atomic_store_explicit(&sl->max_age_s, 0, memory_order_relaxed);
		atomic_store_explicit(&sl->second, now_s, memory_order_relaxed);
	}
	add_relaxed(&sl->count, 1);
	if (stale_s >
	    atomic_load_explicit(&sl->max_age_s, memory_order_relaxed))
		atomic_store_explicit(
		    &sl->max_age_s, stale_s, memory_order_relaxed);
}

void
metrics_stale_window(
    struct metrics *m, uint64_t now_s, uint64_t *count, uint64_t *max_age_s)
{
	*count = 0;
	*max_age_s = 0;
	for (unsigned i = 0; i < m->nworkers; i++)
		for (unsigned j = 0; j < METRICS_STALE_WINDOW; j++) {
			struct metrics_stale_slot *sl = &m->w[i].stale[j];
			uint64_t sec = atomic_load_explicit(
			    &sl->second, memory_order_relaxed);
			uint64_t age;
			if (sec + METRICS_STALE_WINDOW <= now_s || sec > now_s)
				continue;
			*count += atomic_load_explicit(
			    &sl->count, memory_order_relaxed);
			age = atomic_load_explicit(
			    &sl->max_age_s, memory_order_relaxed);
			if (age > *max_age_s)
				*max_age_s = age;
		}
}

static void
write_histogram(struct metrics *m, struct evbuffer *out)
{
	evbuffer_add_printf(out,
	    "# HELP stubborn_response_seconds Time from a query's arrival to "
	    "its reply, by where the reply came from.\n"
	    "# TYPE stubborn_response_seconds histogram\n");
	for (int src = 0; src < CLIENT_SRC_COUNT; src++) {
		uint64_t cum = 0, sum_us = 0;
		for (unsigned b = 0; b <= METRICS_BUCKETS; b++) {
			for (unsigned i = 0; i < m->nworkers; i++)
				cum +=
				    atomic_load_explicit(&m->w[i].hist[src][b],
					memory_order_relaxed);
			evbuffer_add_printf(out,
			    "stubborn_response_seconds_bucket{source=\"%s\","
			    "le=\"%s\"} %llu\n",
			    source_text[src],
			    b < METRICS_BUCKETS ? bucket_text[b] : "+Inf",
			    (unsigned long long)cum);
		}
		for (unsigned i = 0; i < m->nworkers; i++)
			sum_us += atomic_load_explicit(
			    &m->w[i].hist_sum_us[src], memory_order_relaxed);
		evbuffer_add_printf(out,
		    "stubborn_response_seconds_sum{source=\"%s\"} %.6f\n"
		    "stubborn_response_seconds_count{source=\"%s\"} %llu\n",
		    source_text[src], (double)sum_us / 1e6, source_text[src],
		    (unsigned long long)cum);
	}
}

void
metrics_write(struct metrics *m, struct evbuffer *out)
{
	write_histogram(m, out);
	evbuffer_add_printf(out,
	    "# HELP stubborn_udp_socket_buffer_bytes Buffers of the client UDP "
	    "sockets as the kernel reports them (the smallest socket's); "
	    "queries or replies beyond them are dropped.\n"
	    "# TYPE stubborn_udp_socket_buffer_bytes gauge\n"
	    "stubborn_udp_socket_buffer_bytes{direction=\"receive\"} %u\n"
	    "stubborn_udp_socket_buffer_bytes{direction=\"send\"} %u\n",
	    min_gauge(m, offsetof(struct metrics_worker, udp_rcvbuf)),
	    min_gauge(m, offsetof(struct metrics_worker, udp_sndbuf)));
	for (int c = 0; c < MET_COUNT; c++) {
		const char *name = counters[c].name;
		size_t base = strcspn(name, "{");
		if (counters[c].help) {
			evbuffer_add_printf(out, "# HELP stubborn_%.*s %s\n",
			    (int)base, name, counters[c].help);
			evbuffer_add_printf(out,
			    "# TYPE stubborn_%.*s counter\n", (int)base, name);
		}
		evbuffer_add_printf(out, "stubborn_%s %llu\n", name,
		    (unsigned long long)metrics_sum(
			m, (enum metrics_counter)c));
	}
}

static void
metrics_cb(struct evhttp_request *req, void *arg)
{
	struct metrics *m = arg;
	struct evbuffer *out = evbuffer_new();

	if (out == NULL) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	metrics_write(m, out);
	if (m->extra)
		m->extra(m->arg, out);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "text/plain; version=0.0.4");
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

static void
health_cb(struct evhttp_request *req, void *arg)
{
	struct evbuffer *out = evbuffer_new();

	(void)arg;
	if (out == NULL) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	evbuffer_add_printf(out, "ok\n");
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

static void
ready_cb(struct evhttp_request *req, void *arg)
{
	struct metrics *m = arg;
	struct evbuffer *out = evbuffer_new();
	bool ok = m->ready == NULL || m->ready(m->arg);

	if (out == NULL) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	evbuffer_add_printf(out, ok ? "ready\n" : "not ready\n");
	evhttp_send_reply(
	    req, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", out);
	evbuffer_free(out);
}

int
metrics_start_http(struct metrics *m, struct event_base *base,
    const struct sockaddr *addr, socklen_t alen, int inherited,
    metrics_extra_fn extra, metrics_ready_fn ready, void *arg, char *err,
    size_t errlen)
{
	evutil_socket_t fd = inherited;
	int one = 1, e;

	m->extra = extra;
	m->ready = ready;
	m->arg = arg;
	if (fd < 0) {
		fd = socket(addr->sa_family,
		    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			goto fail;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, addr, alen) < 0 || listen(fd, 64) < 0)
			goto fail;
	}
	evutil_make_socket_nonblocking(fd);
	m->fd = fd;
	m->http = evhttp_new(base);
	if (m->http == NULL || evhttp_accept_socket(m->http, fd) < 0) {
		errno = ENOMEM;
		goto fail;
	}
	evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_cb(m->http, "/metrics", metrics_cb, m);
	evhttp_set_cb(m->http, "/health", health_cb, m);
	evhttp_set_cb(m->http, "/ready", ready_cb, m);
	return 0;
fail:
	e = errno;
	snprintf(err, errlen, "%s", strerror(e));
	if (fd >= 0)
		close(fd);
	return -e;
}
