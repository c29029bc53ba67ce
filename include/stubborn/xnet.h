/*
 * xnet: the daemon's upstream transport (xport.h) for one worker, on its
 * event base.
 *
 * UDP: for each server, a few connected sockets bound to random source
 * ports, each reused for many queries and then replaced, so a query costs
 * a send and a receive, not a socket's life cycle.  A reply is matched by
 * socket (the kernel drops datagrams from any other address or port) and
 * message ID (unique per socket); RFC 5452's defence is the ID's 16 bits
 * times the unknown source port's ~16, and a socket's port changes after
 * XNET_UDP_USES queries or XNET_UDP_LIFE_MS.  An ICMP error fails the
 * socket's queries: they all went to the same unreachable server.
 *
 * TCP (truncated answers, tcp:// servers): one connection per query.
 */
#ifndef STUBBORN_XNET_H
#define STUBBORN_XNET_H

#include <stddef.h>
#include <stdint.h>

#include "stubborn/xport.h"

struct event_base;
struct metrics_worker;
struct xnet;

/* Sockets per server and worker, queries per socket, and their lifetime. */
#define XNET_UDP_SOCKETS 4
#define XNET_UDP_USES 1024
#define XNET_UDP_LIFE_MS 30000

/* A transport on base; NULL on ENOMEM. */
struct xnet *xnet_new(struct event_base *base, struct metrics_worker *met);

/*
 * Closes every socket.  Requests still pending are dropped without a
 * callback: free the engine (which cancels them) first.  NULL is fine.
 */
void xnet_free(struct xnet *x);

/* The transport to give the engine; valid as long as x. */
struct xport xnet_xport(struct xnet *x);

/* UDP sockets open now (for tests and metrics). */
size_t xnet_udp_sockets(const struct xnet *x);

#endif
