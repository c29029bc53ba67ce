/*
 * upconn: one worker's connections to upstream servers over TCP (RFC 7766)
 * and DNS-over-TLS (RFC 7858, strict profile of RFC 8310), on that worker's
 * event_base.  Single-threaded: every function but upconn_get_stats() must
 * be called from the thread that runs the event_base.  Needs rng_init()
 * (message IDs, backoff jitter).
 *
 * Connections are kept open and shared: many queries are in flight on one
 * connection (pipelining) and answers are matched by message ID, out of
 * order.  A server is identified by its address, its transport (TLS for
 * CONFIG_PROTO_TLS, TCP for every other proto) and, for TLS, its
 * authentication name; the config_upstream passed in is only read during
 * the call, so a reloaded config naming the same server reuses its
 * connections.
 *
 * TLS: the certificate chain is verified against the system store or
 * tls_ca_file, the name is checked against the certificate and sent as SNI,
 * TLS 1.2 is the minimum, the last session per server is offered for
 * resumption, queries are padded to 128 octets (RFC 8467).  Nothing is ever
 * sent in clear text to a TLS server: a failed handshake fails the queries.
 */
#ifndef STUBBORN_UPCONN_H
#define STUBBORN_UPCONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct config_upstream;
struct upconn;        /* one worker's connections, opaque */
struct upconn_server; /* private */
struct upconn_conn;   /* private */
struct upconn_req;

/*
 * Called exactly once per accepted request, later: from an event callback
 * on the pool's event_base (never from inside upconn_send* or
 * upconn_cancel), or from upconn_free.  On success err is 0 and msg/len is the
 * answer without its length prefix, its ID set back to the query's ID; msg
 * is valid only during the call.  On failure msg is NULL, len 0 and err a
 * negative errno:
 *   -ECONNREFUSED  the connection could not be opened (refused, unreachable)
 *   -ETIMEDOUT     connect or TLS handshake did not finish in time
 *   -ECONNRESET    the connection broke with the query outstanding, and so
 *                  did the one it was retried on
 *   -EKEYEXPIRED   TLS: the certificate has expired or is not yet valid
 *   -EKEYREJECTED  TLS: the certificate failed verification (wrong name,
 *                  unknown CA, ...)
 *   -EPROTO        TLS handshake failure other than verification, or the
 *                  server sent something that is not DNS over TCP
 *   -ECANCELED     upconn_free() ran while the query was pending
 *   -ENOMEM
 * upconn_last_error() tells the reason in words.  done() may call
 * upconn_send*() and upconn_cancel() (on any request), never upconn_free().
 */
typedef void (*upconn_done_fn)(
    struct upconn_req *req, const uint8_t *msg, size_t len, int err);

/*
 * Embedded in the caller's query state.  The caller sets done; every other
 * field is private to upconn.  From a successful upconn_send*() until done()
 * is called or upconn_cancel() returns the request is pending: it must not
 * move, be freed or be sent again.
 */
struct upconn_req {
	upconn_done_fn done;
	/* private */
	struct upconn_req *prev, *next; /* server queue or failure list */
	struct upconn_server *srv;
	struct upconn_conn *conn; /* while in flight */
	const uint8_t *msg;       /* the caller's query, borrowed */
	size_t len;
	int err;          /* waiting on the failure list */
	uint16_t id;      /* the caller's message ID */
	uint16_t wire_id; /* the ID on the connection */
	uint16_t slot;
	uint8_t state;
	bool retried;
	bool oneshot;
};

struct upconn_params {
	uint32_t idle_timeout_ms;    /* close a connection idle this long;
					lowered by the server's
					edns-tcp-keepalive (RFC 7828) */
	uint32_t connect_timeout_ms; /* TCP connect plus TLS handshake */
	uint32_t max_conns;          /* pooled connections per server */
	uint32_t max_inflight;       /* queries in flight per connection,
					1..1024 */
	uint32_t max_queued;         /* >= 1; per server: queries waiting for a
					connection with room, and one-shot
					connections open */
	uint32_t backoff_min_ms;     /* reconnect backoff after the first
					failed connect, doubling up to max */
	uint32_t backoff_max_ms;
	const char *tls_ca_file; /* PEM file of trusted CAs; NULL or "" =
				    the system store.  Read by upconn_new
				    only. */
};

/* Fills *p with the defaults: idle 10 s, connect 5 s, 4 connections per
 * server, 64 queries per connection, 256 queued, backoff 500 ms..30 s,
 * system CA store. */
void upconn_params_default(struct upconn_params *p);

/*
 * A new, empty pool on base (borrowed; it must outlive the pool).  p is
 * copied (tls_ca_file is read now, when the TLS context is built).  Returns
 * NULL with a message in err (errlen bytes) on bad parameters, an unreadable
 * CA file or no memory.
 */
struct upconn *upconn_new(struct event_base *base,
    const struct upconn_params *p, char *err, size_t errlen);

/*
 * Loads ca_file (NULL or "": the system store) as upconn_new would, so that
 * a bad file is found before a pool needs it.  Returns 0, or -EINVAL with
 * err (errlen) saying why.
 */
int upconn_check_ca(const char *ca_file, char *err, size_t errlen);

/*
 * Calls done(req, NULL, 0, -ECANCELED) for every pending request, first (a
 * done() may upconn_cancel() requests not told yet; upconn_send* returns
 * -ESHUTDOWN), then closes every connection and frees everything.  Must not
 * be called from a done() callback or while another thread reads stats.
 * NULL is a no-op.
 */
void upconn_free(struct upconn *u);

/*
 * Sends the DNS query msg (len bytes, no length prefix, 12..65535 bytes) to
 * srv over TLS if srv->proto is CONFIG_PROTO_TLS, else over TCP: on a ready
 * connection to that server with room, else it waits in the server's queue
 * for one (a new connection is opened when the ones connecting cannot take
 * the queue, up to max_conns).  msg is borrowed: it must stay valid and
 * unchanged until done() or upconn_cancel(), because the query is written
 * when a connection has room and again if its connection breaks (it is then
 * retried once, on another connection).  The pool may give the query another
 * message ID on the wire, so that IDs are unique per connection, and adds an
 * empty edns-tcp-keepalive option (and, over TLS, padding) when the query
 * ends with an OPT record.
 *
 * Returns 0, and done() is called exactly once, later; or a negative errno
 * at once, and done() is never called: -EINVAL (bad arguments, TLS without
 * a name), -ECONNREFUSED (the server is in reconnect backoff and has no open
 * connection), -EAGAIN (max_queued queries already wait for this server),
 * -ENOSPC (more than 1024 distinct servers), -ESHUTDOWN (inside
 * upconn_free), -ENOMEM.
 */
int upconn_send(struct upconn *u, const struct config_upstream *srv,
    struct upconn_req *req, const uint8_t *msg, size_t len);

/*
 * Like upconn_send, for answers that cannot be matched by ID (DNSCrypt over
 * TCP, encrypted): a fresh connection carrying only this query, written as
 * given (no ID change, no options added); the first length-prefixed message
 * back is its answer, and the connection is then closed.  It is not retried
 * if the connection breaks (-ECONNRESET).  One-shot connections count
 * against max_queued, not max_conns.  Same returns as upconn_send.
 */
int upconn_send_oneshot(struct upconn *u, const struct config_upstream *srv,
    struct upconn_req *req, const uint8_t *msg, size_t len);

/*
 * The caller gives up on req (its own timeout): done() will not be called.
 * The connection stays open; its answer, if it comes, is dropped (its ID
 * stays reserved on that connection until then).  A one-shot request's
 * connection is closed.  A request that is not pending is left alone.
 */
void upconn_cancel(struct upconn *u, struct upconn_req *req);

/* Per-server counters, a snapshot. */
struct upconn_stats {
	uint64_t conns_opened;       /* connection attempts started */
	uint64_t connect_failures;   /* TCP connect refused, failed or timed
					out */
	uint64_t handshakes;         /* connections established (TCP
					connected and, for TLS, handshake
					completed) */
	uint64_t handshake_ms_sum;   /* their time from connect() to ready */
	uint64_t handshake_failures; /* TLS handshakes that failed
					(verification included) */
	uint64_t resumed;            /* TLS handshakes that resumed a session */
	uint64_t queries;            /* queries written */
	uint64_t queries_reused;     /* ... on a connection that had carried
					an earlier one */
	uint64_t retries;            /* queries re-sent after their
					connection broke */
	int64_t cert_not_after;      /* notAfter of the last verified
					certificate, epoch seconds; 0 = none */
	uint32_t backoff_ms;         /* current reconnect backoff, 0 = none */
	const char *last_error;      /* the last failure in a few words
					(static text), "" = none */
};

/*
 * Copies the counters of srv into *st.  Lock-free: may be called from any
 * thread while the pool runs (e.g. a metrics scraper), not concurrently with
 * upconn_free.  Returns 0, or -ENOENT when the pool has never used srv.
 */
int upconn_get_stats(const struct upconn *u, const struct config_upstream *srv,
    struct upconn_stats *st);

/*
 * The last failure for srv with its details, for a log line ("TLS
 * certificate verification failed for dns.example: certificate has
 * expired"); "" when none.  The text belongs to the pool and may change at
 * the next event; worker thread only.
 */
const char *upconn_last_error(
    const struct upconn *u, const struct config_upstream *srv);

#endif
