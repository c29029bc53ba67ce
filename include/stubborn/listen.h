/*
 * listen: the client-facing sockets of one worker.  UDP is read in batches
 * (recvmmsg) and the replies made during a batch leave together
 * (sendmmsg); TCP connections follow RFC 7766 (pipelining, out-of-order
 * answers, idle timeouts, connection caps).  Every message goes to the
 * worker's pipeline; every reply is timed (the response-time histogram)
 * and, with log-queries, logged.
 *
 * The sockets are opened by main (listen_open_socket), or inherited from
 * systemd or from the stubborn this one takes over from, and handed to the
 * workers; a listener only reads and writes them, so they outlive a
 * worker's drain and can be passed on.
 */
#ifndef STUBBORN_LISTEN_H
#define STUBBORN_LISTEN_H

#include <stdbool.h>
#include <stddef.h>

#include "stubborn/config.h"

struct event_base;
struct engine;
struct metrics_worker;
struct pipeline;
struct listen;

/* A listening socket and what it is for. */
struct listen_sock {
	int fd;
	int type;      /* SOCK_DGRAM or SOCK_STREAM */
	size_t addr;   /* index into cfg->listen */
	bool wildcard; /* bound to 0.0.0.0 or [::]: replies need the address
			  each query was sent to (IP_PKTINFO) */
};

/*
 * Opens, binds and (TCP) listens on a, with SO_REUSEPORT when reuseport,
 * and for a wildcard address asks for each datagram's destination.
 * Returns the fd, or -1 with err naming the address and the cause (and for
 * EADDRINUSE on 127.0.0.53, systemd-resolved) and *errnum set.
 */
int listen_open_socket(const struct config_addr *a, int type, bool reuseport,
    char *err, size_t errlen, int *errnum);

/*
 * Checks that no other process holds any listen address, by binding each
 * (UDP and TCP) once without SO_REUSEPORT and closing it again: the worker
 * sockets share ports through SO_REUSEPORT, which would otherwise let a
 * second stubborn silently split the traffic with the first.  Returns 0, or
 * -errno with err naming the address.
 */
int listen_probe(const struct config *cfg, char *err, size_t errlen);

/*
 * Starts reading socks (n of them; the fds stay the caller's) on base,
 * feeding p; engine gives the live configuration (TCP limits, query log).
 * The listeners of a process share tcp-max-connections: one that has no
 * idle connection to close at the cap asks another, through base (which
 * needs evthread_use_pthreads()).  Call before any listener's thread runs.
 * NULL on ENOMEM.
 */
struct listen *listen_new(struct event_base *base, struct pipeline *p,
    struct engine *engine, struct metrics_worker *met,
    const struct listen_sock *socks, size_t n);

/*
 * Stops reading new queries and accepting connections; replies still owed
 * go out over the sockets they are owed on, and TCP connections close once
 * theirs are sent.
 */
void listen_stop(struct listen *l);

/* Client TCP connections still open. */
size_t listen_tcp_open(const struct listen *l);

/*
 * Closes the connections and frees l (not the listening fds), once no
 * listener's thread runs any more; NULL is fine.
 */
void listen_free(struct listen *l);

#endif
