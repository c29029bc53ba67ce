/*
 * xport: how an upstream attempt reaches its server.  The engine hands a
 * request, embedded in its attempt, to a transport; the transport calls
 * done exactly once for each request it accepted and that was not
 * cancelled, never from inside send.  Timeouts are the engine's: it cancels
 * a request it stops waiting for.
 *
 * The daemon's transport (xnet) uses per-worker UDP sockets and persistent
 * TCP/TLS connections; the scenario tests script one.
 */
#ifndef STUBBORN_XPORT_H
#define STUBBORN_XPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stubborn/config.h"

struct xport_req;

/*
 * An answer msg (len bytes, the transport's buffer: valid, and writable,
 * during the call only) that carries r's ID and came from r's server; or,
 * msg NULL, an error err: -ECONNREFUSED (unreachable, reset), -ECONNRESET,
 * -EPROTO (TLS or DNSCrypt verification), ...  now is when it arrived.
 * Returns true when r is finished, false when the answer is not r's after
 * all (a wrong question: a spoof or a stray) and r keeps waiting.  After an
 * error r is finished whatever it returns.
 */
typedef bool (*xport_done_fn)(
    struct xport_req *r, uint8_t *msg, size_t len, int err, uint64_t now);

struct xport_req {
	xport_done_fn done;
	const struct config_upstream *srv;
	bool tcp;    /* a stream (TCP) even where UDP is the default */
	uint16_t id; /* the message ID the query carries */
	/* The transport's own state; the engine leaves it alone. */
	struct xport_req *next; /* its table or queue */
	void *owner;            /* the socket or connection holding it */
	void *stream;           /* a stream of its own (TCP), if any */
};

struct xport_ops {
	/*
	 * Sends msg (len bytes, a DNS query without length prefix) to
	 * r->srv.  Returns 0 (done will come) or a negative errno (it will
	 * not).
	 */
	int (*send)(
	    void *ctx, struct xport_req *r, const uint8_t *msg, size_t len);
	/* r is abandoned: done will not be called.  Idempotent. */
	void (*cancel)(void *ctx, struct xport_req *r);
};

struct xport {
	const struct xport_ops *ops;
	void *ctx;
};

#endif
