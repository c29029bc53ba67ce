/*
 * metrics: per-worker counters, summed on scrape, and the /metrics /health
 * /ready endpoints over evhttp.  Each worker writes only its own slot (relaxed
 * atomics, no shared cache line between workers); the scraper reads them all.
 */
#ifndef STUBBORN_METRICS_H
#define STUBBORN_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "stubborn/client.h"

struct event_base;
struct evbuffer;

/* Counter ids; names and help texts live in metrics.c. */
enum metrics_counter {
	MET_QUERIES_UDP = 0,
	MET_QUERIES_TCP,
	MET_CACHE_HITS,
	MET_CACHE_MISSES,
	MET_COALESCED,
	MET_REPLIES_FORMERR,
	MET_REPLIES_NOTIMP,
	MET_REPLIES_BADVERS,
	MET_REPLIES_REFUSED,
	MET_REPLIES_SERVFAIL,
	MET_REPLIES_TRUNCATED,
	MET_DROPPED,
	MET_UPSTREAM_QUERIES,
	MET_UPSTREAM_ANSWERS,
	MET_UPSTREAM_TIMEOUTS,
	MET_UPSTREAM_ERRORS,
	MET_UPSTREAM_MISMATCHED,
	MET_UPSTREAM_MALFORMED,
	MET_UPSTREAM_TCP_FALLBACKS,
	MET_UPSTREAM_EDNS_FALLBACKS,
	MET_TCP_ACCEPTED,
	MET_TCP_REJECTED,
	MET_TCP_IDLE_CLOSED,
	MET_INFLIGHT_OVERFLOW,
	MET_STALE_ANSWERS,
	MET_REFRESHES,
	MET_FAILURE_CACHE_HITS,
	MET_RATELIMITED_REFUSE,
	MET_RATELIMITED_DROP,
	MET_RATELIMITED_TRUNCATE,
	MET_RATELIMITED_STALE,
	MET_SHED_REFRESH_AHEAD,
	MET_SHED_STALE_REFRESH,
	MET_SHED_CLIENT,
	MET_REFUSED_ACL,
	MET_COUNT
};

/* Response-time buckets, seconds: 0.1 ms to 5 s, then +Inf. */
#define METRICS_BUCKETS 15
/* Stale answers are counted per second over the last minute. */
#define METRICS_STALE_WINDOW 60

struct metrics_stale_slot {
	_Atomic uint64_t second; /* which second the slot counts */
	_Atomic uint64_t count;
	_Atomic uint64_t max_age_s; /* oldest answer's seconds past expiry */
};

struct metrics_worker {
	_Atomic uint64_t c[MET_COUNT];
	/* per client_source: bucket counts (last: +Inf), and the sum */
	_Atomic uint64_t hist[CLIENT_SRC_COUNT][METRICS_BUCKETS + 1];
	_Atomic uint64_t hist_sum_us[CLIENT_SRC_COUNT];
	struct metrics_stale_slot stale[METRICS_STALE_WINDOW];
	/* the smallest buffers of the worker's client UDP sockets (gauges) */
	_Atomic uint32_t udp_rcvbuf, udp_sndbuf;
	char pad[64];
};

struct metrics;

/* Writes extra gauge lines (Prometheus text) at scrape time. */
typedef void (*metrics_extra_fn)(void *arg, struct evbuffer *out);
/* True when the daemon is ready to serve (for /ready). */
typedef bool (*metrics_ready_fn)(void *arg);

/* Counters for nworkers workers; NULL on ENOMEM. */
struct metrics *metrics_new(unsigned nworkers);

/* Frees the counters and the HTTP server, if started; NULL is fine. */
void metrics_free(struct metrics *m);

/* The slot of worker i (i < nworkers); valid until metrics_free. */
struct metrics_worker *metrics_worker(struct metrics *m, unsigned i);

static inline void
metrics_inc(struct metrics_worker *w, enum metrics_counter c)
{
	/* Single writer per slot: a relaxed load and store, no locked add. */
	uint64_t v = atomic_load_explicit(&w->c[c], memory_order_relaxed);
	atomic_store_explicit(&w->c[c], v + 1, memory_order_relaxed);
}

/*
 * One of the worker's client UDP sockets has buffers of rcv and snd bytes
 * (as the kernel reports them); /metrics shows the smallest of all.
 */
void metrics_udp_buffers(struct metrics_worker *w, uint32_t rcv, uint32_t snd);

/* Adds n to counter c (one call per batch instead of n). */
static inline void
metrics_add(struct metrics_worker *w, enum metrics_counter c, uint64_t n)
{
	uint64_t v = atomic_load_explicit(&w->c[c], memory_order_relaxed);
	atomic_store_explicit(&w->c[c], v + n, memory_order_relaxed);
}

/* A reply of source src left us us microseconds after its query came. */
void metrics_observe(
    struct metrics_worker *w, enum client_source src, uint64_t us);

/* n replies of source src, each us microseconds after its query. */
void metrics_observe_n(
    struct metrics_worker *w, enum client_source src, uint64_t us, uint64_t n);

/* A stale answer stale_s seconds past its expiry was served at now_s. */
void metrics_stale(struct metrics_worker *w, uint64_t now_s, uint32_t stale_s);

/*
 * Stale answers served in the minute before now_s, and the largest
 * seconds-past-expiry among them.
 */
void metrics_stale_window(
    struct metrics *m, uint64_t now_s, uint64_t *count, uint64_t *max_age_s);

/*
 * The counter whose exposed name (after "stubborn_", labels included, e.g.
 * "shed_total{kind=\"client\"}") is name; -1 when there is none.
 */
int metrics_counter_by_name(const char *name);

/* Sum of one counter over all workers. */
uint64_t metrics_sum(struct metrics *m, enum metrics_counter c);

/*
 * Serves /metrics, /health and /ready on addr with evhttp on base, or on
 * the listening socket inherited (>= 0; it is taken over) from a daemon
 * that handed over or from systemd.  extra and ready may be NULL.  Returns 0,
 * or -errno with err (errlen) naming the cause.
 */
int metrics_start_http(struct metrics *m, struct event_base *base,
    const struct sockaddr *addr, socklen_t alen, int inherited,
    metrics_extra_fn extra, metrics_ready_fn ready, void *arg, char *err,
    size_t errlen);

/* The HTTP listening socket (to hand to a successor), or -1. */
int metrics_http_fd(const struct metrics *m);

/* Appends every counter in Prometheus text format (stubborn_ prefix). */
void metrics_write(struct metrics *m, struct evbuffer *out);

#endif
