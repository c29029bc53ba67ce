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
 * Streams (truncated answers, tcp:// and tls:// servers): the worker's
 * upconn pool, persistent pipelined connections (upconn.h).
 *
 * DNSCrypt (sdns:// servers): the certificate is fetched with a plain TXT
 * query over UDP when first needed, again before it runs out
 * (dnscrypt_cert_refresh_at) and as soon as XNET_DC_MISSES queries in a
 * row went unanswered (a server that dropped the certificate in use answers
 * nothing; fewer than the failures that open a circuit).
 * Queries are sealed (dnscrypt.h) and sent over UDP sockets of their own,
 * where answers are matched by the client nonce; a truncated answer grows
 * the server's minimum query length, and the engine asks again over TCP,
 * one connection per query.  Queries that arrive while the certificate is
 * being fetched wait for it.  Nothing is ever sent in clear text to a
 * tls:// or sdns:// server but the certificate query.
 */
#ifndef STUBBORN_XNET_H
#define STUBBORN_XNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stubborn/xport.h"

struct event_base;
struct metrics_worker;
struct config;
struct config_upstream;
struct xnet;

/* Sockets per server and worker, queries per socket, and their lifetime. */
#define XNET_UDP_SOCKETS 4
#define XNET_UDP_USES 1024
#define XNET_UDP_LIFE_MS 30000

/* DNSCrypt: certificate query timeout, fetch backoff, unanswered queries
 * in a row that make the certificate suspect. */
#define XNET_DC_FETCH_TIMEOUT_MS 3000
#define XNET_DC_BACKOFF_MIN_MS 1000
#define XNET_DC_BACKOFF_MAX_MS 60000
#define XNET_DC_MISSES 2

/*
 * A transport on base; NULL on ENOMEM.  It has no stream pool until
 * xnet_set_config.
 */
struct xnet *xnet_new(struct event_base *base, struct metrics_worker *met);

/*
 * Applies cfg's transport settings (tls-ca-file, dnscrypt-key-lifetime);
 * worker thread.  A changed tls-ca-file makes a new stream pool: queries
 * pending on the old one fail (-ECANCELED).  Returns 0, or -EINVAL with err
 * (errlen) saying why (the CA file is unreadable or holds no certificate);
 * the previous pool, if any, then stays.
 */
int xnet_set_config(
    struct xnet *x, const struct config *cfg, char *err, size_t errlen);

/*
 * Closes every socket.  Requests still pending are dropped without a
 * callback: free the engine (which cancels them) first.  NULL is fine.
 */
void xnet_free(struct xnet *x);

/* The transport to give the engine; valid as long as x. */
struct xport xnet_xport(struct xnet *x);

/* UDP sockets open now (for tests and metrics). */
size_t xnet_udp_sockets(const struct xnet *x);

/* What one worker's transport did with one server, for /metrics. */
struct xnet_stats {
	uint64_t conns_opened;       /* stream connection attempts */
	uint64_t connect_failures;   /* ... that failed to connect */
	uint64_t handshakes;         /* connections established */
	uint64_t handshake_ms_sum;   /* their connect-to-ready time */
	uint64_t handshake_failures; /* TLS handshakes that failed */
	uint64_t resumed;            /* TLS sessions resumed */
	uint64_t stream_queries;     /* queries written on connections */
	uint64_t stream_reused;      /* ... on one that carried another */
	uint64_t cert_fetches;       /* DNSCrypt certificate queries */
	uint64_t cert_failures;      /* ... that gave no valid certificate */
	uint64_t dc_rejected;        /* DNSCrypt answers that did not open */
	int64_t cert_not_after;      /* TLS or DNSCrypt certificate end, epoch
					seconds; 0 = none */
	char last_error[200];        /* the last transport failure logged
					(certificate, handshake, connect);
					"" = none */
};

/*
 * Adds what x knows of srv to *st; cert_not_after and last_error (when x
 * has one) are set, not added.  Any
 * thread (the metrics endpoint).  Returns false when x never used srv.
 */
bool xnet_get_stats(
    struct xnet *x, const struct config_upstream *srv, struct xnet_stats *st);

#endif
