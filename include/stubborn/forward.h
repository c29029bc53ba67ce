/*
 * forward: one worker's in-flight table.  A miss joins an identical query
 * already in flight (coalescing) or starts one: a fresh random ID and source
 * port per upstream query, replies matched on address, port, ID and question
 * (RFC 5452), TC -> TCP, FORMERR to EDNS -> plain DNS, timeouts and errors ->
 * the next upstream, and once all failed SERVFAIL with an Extended DNS Error.
 * Good answers go into the cache and to every waiter.
 */
#ifndef STUBBORN_FORWARD_H
#define STUBBORN_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "stubborn/wire.h"

struct event_base;
struct config;
struct cache;
struct metrics_worker;
struct upstream_pool;
struct forward;
struct fwd_client;

/* A zone and the pool that serves it; zone "." (wire "\0") is the default. */
struct fwd_zone {
	uint8_t name[WIRE_NAME_MAX]; /* wire form, lower-case */
	size_t len;
	struct upstream_pool *pool;
};

/*
 * Delivers a reply to a client, or (msg NULL) tells its owner that no reply
 * will come.  Called exactly once per accepted waiter.
 */
typedef void (*fwd_reply_fn)(
    const struct fwd_client *cl, const uint8_t *msg, size_t len);

/* Who asked, as the listener knows it; copied by forward_query. */
struct fwd_client {
	fwd_reply_fn reply;
	size_t max_len;               /* reply size limit (UDP: client size) */
	int fd;                       /* UDP: the socket the query came in on */
	struct sockaddr_storage peer; /* UDP/TCP: the client address */
	socklen_t peer_len;
	void *conn; /* TCP: the listener's connection */
	bool tcp;
};

/*
 * A forwarder on base.  zones (n >= 1, zones[0] the root) map names to
 * upstream pools by longest suffix; the array is copied, the pools, cfg,
 * cache and met must outlive the forwarder.  NULL on ENOMEM.
 */
struct forward *forward_new(struct event_base *base, const struct config *cfg,
    struct cache *cache, struct metrics_worker *met,
    const struct fwd_zone *zones, size_t nzones);

/*
 * Sends a health probe (qname/qtype in wire form) to server idx of pool and
 * reports its outcome to the pool: any well-formed matching reply counts as
 * alive.  Returns 0 or -errno (reported to the pool as a failure too).
 */
int forward_probe(struct forward *f, struct upstream_pool *pool, unsigned idx,
    const uint8_t *qname, size_t qname_len, uint16_t qtype);

/*
 * Releases every in-flight query; waiters are told no reply will come
 * (reply(cl, NULL, 0)).  NULL is fine.
 */
void forward_free(struct forward *f);

/* forward_query flags */
#define FWD_HAVE_STALE 0x1 /* the cache holds an expired answer */

/*
 * Resolves the client query (query, len, parsed as *q) under cache key
 * key/klen.  On 0 the forwarder owns the waiter and will call cl->reply
 * exactly once: with the upstream's answer, or (FWD_HAVE_STALE) with the
 * stale one once stale-client-timeout passed or resolution failed, or with
 * SERVFAIL.  -EAGAIN (only with FWD_HAVE_STALE): answer stale now, the
 * upstreams are known to be down or slow.  -EBUSY: the in-flight table or
 * the query's waiter list is full, -ESHUTDOWN: draining, -ENOMEM; the
 * caller answers (SERVFAIL or stale) itself.
 */
int forward_query(struct forward *f, const uint8_t *query, size_t len,
    const struct wire_query *q, const uint8_t *key, size_t klen,
    const struct fwd_client *cl, unsigned flags);

/* forward_refresh flag (beside CACHE_KEY_DO/CD): a stale answer was served */
#define FWD_REFRESH_STALE 0x100

/*
 * Refreshes key in the background (no client waits): refresh-ahead,
 * keep-warm, or (FWD_REFRESH_STALE) a name just answered stale.  qname is
 * wire form; flags carry CACHE_KEY_DO/CD.  Nothing happens if the key is
 * already in flight.  Returns 0 (in flight), -EAGAIN when nothing could be
 * sent (shed, every circuit open) or -errno.
 */
int forward_refresh(struct forward *f, const uint8_t *key, size_t klen,
    const uint8_t *qname, size_t qname_len, uint16_t qtype, uint16_t qclass,
    unsigned flags);

/* Number of queries in flight. */
size_t forward_inflight(const struct forward *f);

/*
 * Stops taking queries; done(arg) runs (from the event loop) once nothing is
 * in flight, at once if nothing is.
 */
void forward_drain(struct forward *f, void (*done)(void *arg), void *arg);

#endif
