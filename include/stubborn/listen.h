/*
 * listen: the client-facing sockets of one worker (UDP and TCP on every
 * configured address, SO_REUSEPORT so each worker has its own) and the
 * per-query pipeline: parse -> cache -> forward.
 */
#ifndef STUBBORN_LISTEN_H
#define STUBBORN_LISTEN_H

#include <stddef.h>

struct event_base;
struct config;
struct cache;
struct forward;
struct metrics_worker;
struct ratelimit;
struct listen;

/* Per-client limits shared by every worker's listener (may be NULL). */
struct listen_limits {
	struct ratelimit *miss; /* queries that need an upstream */
	struct ratelimit *hit;  /* cache hits (cache-qps) */
};

/*
 * Opens and binds every listen address on base.  On failure returns NULL
 * and writes one line naming the address and the cause into err; *errnum
 * gets the errno (EADDRINUSE, EACCES, ...).  cfg, fwd, cache and met must
 * outlive the listener.
 */
struct listen *listen_new(struct event_base *base, const struct config *cfg,
    struct forward *fwd, struct cache *cache, struct metrics_worker *met,
    const struct listen_limits *limits, char *err, size_t errlen, int *errnum);

/*
 * Checks that no other process holds any listen address, by binding each
 * (UDP and TCP) once without SO_REUSEPORT and closing it again: the worker
 * sockets share ports through SO_REUSEPORT, which would otherwise let a
 * second stubborn silently split the traffic with the first.  Returns 0, or
 * -errno with err naming the address.
 */
int listen_probe(const struct config *cfg, char *err, size_t errlen);

/*
 * Stops reading new queries: closes the listening sockets; TCP connections
 * close once their in-flight queries are answered.
 */
void listen_stop(struct listen *l);

/* Number of client TCP connections still open. */
size_t listen_tcp_open(const struct listen *l);

/* Closes everything and frees l; NULL is fine. */
void listen_free(struct listen *l);

#endif
