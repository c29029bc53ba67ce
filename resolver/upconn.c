/*
 * upconn: persistent, pipelined TCP and TLS connections to upstream servers.
 *
 * Shape: a pool (struct upconn) per worker holds servers; a server holds its
 * connections and a FIFO of requests waiting for a connection with room; a
 * connection holds max_inflight slots, one per message ID in use on it.  A
 * cancelled request leaves its slot reserved (req NULL) until its answer
 * comes, so a late answer can never match a newer query that reused the ID.
 *
 * Failures are never reported from inside the call that caused them: the
 * request goes on the pool's failure list and reap_cb, a zero-delay event,
 * calls done().  The same event frees closed connections, so no object is
 * freed inside its own callback.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "stubborn/clock.h"
#include "stubborn/config.h"
#include "stubborn/log.h"
#include "stubborn/rng.h"
#include "stubborn/upconn.h"
#include "stubborn/wire.h"

#define UC_MAX_SERVERS 1024
#define UC_MAX_INFLIGHT 1024
#define UC_BUCKETS 256        /* power of two */
#define UC_PAD_BLOCK 128      /* RFC 8467: queries padded to 128 octets */
#define UC_OPT_PADDING 12     /* RFC 7830 */
#define UC_ID_TRIES 32        /* random IDs tried before a linear search */
#define UC_KEEPALIVE_UNIT 100 /* ms per edns-tcp-keepalive unit */

enum uc_req_state {
	UC_REQ_IDLE = 0,
	UC_REQ_QUEUED,   /* on its server's queue */
	UC_REQ_INFLIGHT, /* in a connection's slot */
	UC_REQ_FAILING,  /* on the pool's failure list */
};

enum uc_conn_state {
	UC_CONNECTING, /* TCP connect, then TLS handshake */
	UC_READY,
	UC_DEAD, /* closed, on the pool's dead list until reap_cb */
};

struct uc_slot {
	struct upconn_req *req; /* NULL: cancelled, ID still reserved */
	uint16_t id;
	bool used;
};

struct upconn_conn {
	struct upconn *u;
	struct upconn_server *s;
	struct upconn_conn *prev, *next; /* s->conns; u->dead once closed */
	enum uc_conn_state state;
	bool opening; /* inside conn_open: events are noted, not handled */
	int open_err; /* errno of an event during conn_open */
	bool oneshot;
	bool carried;  /* has carried a query: later ones are "reused" */
	bool draining; /* the server asked to close when idle (keepalive 0) */
	uint32_t idle_ms;
	uint64_t opened_ms;
	unsigned nslots; /* max_inflight, or 1 for a one-shot */
	unsigned nused;  /* slots in use, cancelled ones included */
	unsigned nlive;  /* slots whose request still waits */
	struct uc_slot *slots;
	/*
	 * bev: created by conn_open with its socket (and, for TLS, the SSL,
	 * which it owns); I/O disabled and callbacks cleared by conn_close;
	 * freed by conn_free (from reap_cb or upconn_free), never in its own
	 * callback.
	 * timer: created by conn_open and added there as the connect and
	 * handshake deadline; then added by conn_idle_check as the idle timer
	 * and deleted when a query is written; deleted by conn_close, freed by
	 * conn_free.
	 */
	struct bufferevent *bev;
	struct event *timer;
};

/* Written by the worker, read by any thread (upconn_get_stats). */
struct uc_stats {
	_Atomic uint64_t conns_opened, connect_failures, handshakes,
	    handshake_ms_sum, handshake_failures, resumed, queries,
	    queries_reused, retries;
	_Atomic int64_t cert_not_after;
	_Atomic uint32_t backoff_ms;
	_Atomic(const char *) last_error;
};

struct upconn_server {
	struct upconn *u;
	struct upconn_server *hnext; /* bucket chain */
	/* The key, immutable once published in u->servers. */
	struct config_addr addr;
	bool tls;
	char name[256]; /* TLS authentication name, "" for TCP */
	bool name_is_ip;
	struct upconn_conn *conns; /* pooled and one-shot, not dead */
	unsigned nconns;           /* pooled, connecting or ready */
	unsigned noneshot;
	struct upconn_req *qhead, *qtail; /* waiting for a connection */
	unsigned nqueued;
	uint32_t backoff_ms;
	uint64_t backoff_until; /* clock_now_ms(); 0 = no backoff */
	SSL_SESSION *session;   /* last resumable session; a reference we own */
	char last_error[320];   /* worker thread only */
	struct uc_stats st;
};

struct upconn {
	struct event_base *base;
	struct upconn_params p;
	/* Built by upconn_new for a CA file, else (the system store, a few
	 * MiB) when the first TLS connection needs it; freed by upconn_free. */
	SSL_CTX *ssl_ctx;
	/* Appended only (published with a release store of nservers) and
	 * freed by upconn_free, so other threads may read them. */
	struct upconn_server *servers[UC_MAX_SERVERS];
	_Atomic size_t nservers;
	struct upconn_server *buckets[UC_BUCKETS];
	struct upconn_conn *dead;                 /* closed, to be freed */
	struct upconn_req *fail_head, *fail_tail; /* to be told */
	/*
	 * reap: created by upconn_new, made active by conn_close and
	 * fail_req, freed by upconn_free.
	 */
	struct event *reap;
	bool freeing;
	uint8_t wbuf[2 + WIRE_MSG_MAX]; /* a query being framed */
	uint8_t rbuf[WIRE_MSG_MAX];     /* an answer being delivered */
};

static int submit(struct upconn *u, const struct config_upstream *srv,
    struct upconn_req *req, const uint8_t *msg, size_t len, bool oneshot);
static int server_get(struct upconn *u, const struct config_upstream *srv,
    struct upconn_server **out);
static struct upconn_server *server_find(
    const struct upconn *u, const struct config_upstream *srv, bool own_thread);
static uint32_t server_hash(const struct config_upstream *srv);
static bool server_match(
    const struct upconn_server *s, const struct config_upstream *srv);
static void server_pump(struct upconn_server *s);
static int server_grow(struct upconn_server *s);
static void server_fail_queue(struct upconn_server *s, int err);
static void server_settle(struct upconn_server *s, int err);
static bool backoff_active(const struct upconn_server *s);
static void backoff_bump(struct upconn_server *s);
static void set_error(struct upconn_server *s, const char *what,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void queue_push(struct upconn_server *s, struct upconn_req *req);
static void queue_unlink(struct upconn_server *s, struct upconn_req *req);
static void fail_req(struct upconn *u, struct upconn_req *req, int err);
static int conn_open(
    struct upconn_server *s, bool oneshot, struct upconn_conn **out);
static SSL *conn_ssl_new(struct upconn_server *s);
static struct upconn_conn *conn_with_room(struct upconn_server *s);
static int conn_write(struct upconn_conn *c, struct upconn_req *req);
static size_t frame_query(
    struct upconn_conn *c, const struct upconn_req *req, uint16_t id);
static uint16_t pick_id(const struct upconn_conn *c, uint16_t want);
static bool id_used(const struct upconn_conn *c, uint16_t id);
static void conn_ready(struct upconn_conn *c);
static void conn_connect_failed(
    struct upconn_conn *c, int sockerr, bool timeout);
static int tls_failure(struct upconn_conn *c, bool *handshake);
static void conn_broken(struct upconn_conn *c, int err);
static void conn_close(struct upconn_conn *c, int err);
static void conn_idle_check(struct upconn_conn *c);
static void conn_deliver(struct upconn_conn *c, uint8_t *m, size_t len);
static void conn_free(struct upconn_conn *c);
static void keepalive_apply(
    struct upconn_conn *c, const uint8_t *m, size_t len);
static int opt_find(const uint8_t *m, size_t len, uint16_t code,
    size_t *data_off, uint16_t *dlen);
static void stat_add(_Atomic uint64_t *v, uint64_t n);
static void read_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);
static void timer_cb(evutil_socket_t fd, short what, void *arg);
static void reap_cb(evutil_socket_t fd, short what, void *arg);
static int new_session_cb(SSL *ssl, SSL_SESSION *sess);
static SSL_CTX *ssl_ctx_new(const char *ca_file, char *err, size_t errlen);

void
upconn_params_default(struct upconn_params *p)
{
	memset(p, 0, sizeof(*p));
	p->idle_timeout_ms = 10000; /* RFC 9210 4.5 */
	p->connect_timeout_ms = 5000;
	p->max_conns = 4;
	p->max_inflight = 64;
	p->max_queued = 256;
	p->backoff_min_ms = 500;
	p->backoff_max_ms = 30000;
	p->tls_ca_file = NULL;
}

struct upconn *
upconn_new(struct event_base *base, const struct upconn_params *p, char *err,
    size_t errlen)
{
	struct upconn *u;

	if (base == NULL || p == NULL || p->max_conns == 0 ||
	    p->max_inflight == 0 || p->max_inflight > UC_MAX_INFLIGHT ||
	    p->max_queued == 0 || p->connect_timeout_ms == 0 ||
	    p->backoff_min_ms == 0 || p->backoff_min_ms > p->backoff_max_ms) {
		snprintf(err, errlen, "upconn: bad parameters");
		return NULL;
	}
	u = calloc(1, sizeof(*u));
	if (u == NULL) {
		snprintf(err, errlen, "upconn: out of memory");
		return NULL;
	}
	u->base = base;
	u->p = *p;
	u->p.tls_ca_file = NULL; /* read now, not kept */
	u->reap = event_new(base, -1, 0, reap_cb, u);
	if (u->reap == NULL) {
		snprintf(err, errlen, "upconn: out of memory");
		free(u);
		return NULL;
	}
	/* A CA file is checked now; the system store waits for a TLS server:
	 * most nodes have none. */
	if (p->tls_ca_file != NULL && p->tls_ca_file[0] != '\0' &&
	    (u->ssl_ctx = ssl_ctx_new(p->tls_ca_file, err, errlen)) == NULL) {
		event_free(u->reap);
		free(u);
		return NULL;
	}
	return u;
}

/*
 * Strict profile (RFC 8310): peer verification always on, no clear-text
 * fallback anywhere.  The session cache is ours (per server), so OpenSSL's
 * internal store is off.  An EOF without close_notify is a normal close for
 * DNS, whose messages carry their own length.
 */
static SSL_CTX *
ssl_ctx_new(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char why[256];
	int ok;

	if (ctx == NULL) {
		snprintf(err, errlen, "upconn: cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_options(ctx,
	    SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION |
		SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_session_cache_mode(
	    ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
	if (ca_file != NULL && ca_file[0] != '\0')
		ok = SSL_CTX_load_verify_locations(ctx, ca_file, NULL);
	else
		ok = SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		ERR_error_string_n(ERR_get_error(), why, sizeof(why));
		snprintf(err, errlen, "tls-ca-file %s: cannot load: %s",
		    ca_file ? ca_file : "(system)", why);
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

int
upconn_check_ca(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = ssl_ctx_new(ca_file, err, errlen);

	if (ctx == NULL)
		return -EINVAL;
	SSL_CTX_free(ctx);
	return 0;
}

void
upconn_free(struct upconn *u)
{
	struct upconn_req *req;
	size_t n;

	if (u == NULL)
		return;
	u->freeing = true;
	n = atomic_load_explicit(&u->nservers, memory_order_relaxed);
	/*
	 * Every pending request joins the failure list first, so that a
	 * done() cancelling another one still works (it unlinks it).
	 */
	for (req = u->fail_head; req != NULL; req = req->next)
		req->err = -ECANCELED;
	for (size_t i = 0; i < n; i++) {
		struct upconn_server *s = u->servers[i];
		for (struct upconn_conn *c = s->conns; c; c = c->next)
			for (unsigned k = 0; k < c->nslots; k++) {
				req = c->slots[k].req;
				c->slots[k].req = NULL;
				if (req != NULL)
					fail_req(u, req, -ECANCELED);
			}
		while ((req = s->qhead) != NULL) {
			queue_unlink(s, req);
			fail_req(u, req, -ECANCELED);
		}
	}
	while ((req = u->fail_head) != NULL) {
		u->fail_head = req->next;
		if (u->fail_head)
			u->fail_head->prev = NULL;
		else
			u->fail_tail = NULL;
		req->prev = req->next = NULL;
		req->state = UC_REQ_IDLE;
		req->done(req, NULL, 0, -ECANCELED);
	}
	for (size_t i = 0; i < n; i++) {
		struct upconn_server *s = u->servers[i];
		struct upconn_conn *c;
		while ((c = s->conns) != NULL) {
			s->conns = c->next;
			conn_free(c);
		}
		if (s->session != NULL)
			SSL_SESSION_free(s->session);
		free(s);
	}
	while (u->dead != NULL) {
		struct upconn_conn *c = u->dead;
		u->dead = c->next;
		conn_free(c);
	}
	event_free(u->reap);
	SSL_CTX_free(u->ssl_ctx);
	free(u);
}

int
upconn_send(struct upconn *u, const struct config_upstream *srv,
    struct upconn_req *req, const uint8_t *msg, size_t len)
{
	return submit(u, srv, req, msg, len, false);
}

int
upconn_send_oneshot(struct upconn *u, const struct config_upstream *srv,
    struct upconn_req *req, const uint8_t *msg, size_t len)
{
	return submit(u, srv, req, msg, len, true);
}

static int
submit(struct upconn *u, const struct config_upstream *srv,
    struct upconn_req *req, const uint8_t *msg, size_t len, bool oneshot)
{
	struct upconn_server *s;
	struct upconn_conn *c;
	int r;

	if (u->freeing)
		return -ESHUTDOWN;
	if (srv == NULL || req == NULL || req->done == NULL || msg == NULL ||
	    len < WIRE_HDR_LEN || len > WIRE_MSG_MAX)
		return -EINVAL;
	if (srv->proto == CONFIG_PROTO_TLS && srv->name[0] == '\0')
		return -EINVAL;
	r = server_get(u, srv, &s);
	if (r < 0)
		return r;
	req->prev = req->next = NULL;
	req->srv = s;
	req->conn = NULL;
	req->msg = msg;
	req->len = len;
	req->err = 0;
	req->id = WIRE_ID(msg);
	req->wire_id = req->id;
	req->slot = 0;
	req->state = UC_REQ_IDLE;
	req->retried = false;
	req->oneshot = oneshot;
	if (oneshot) {
		if (s->noneshot >= u->p.max_queued)
			return -EAGAIN;
		if (backoff_active(s))
			return -ECONNREFUSED;
		r = conn_open(s, true, &c);
		if (r < 0)
			return r;
		/* Written once the connection is ready. */
		c->slots[0].used = true;
		c->slots[0].req = req;
		c->slots[0].id = req->id;
		c->nused = c->nlive = 1;
		req->conn = c;
		req->state = UC_REQ_INFLIGHT;
		return 0;
	}
	if (s->qhead == NULL && (c = conn_with_room(s)) != NULL)
		return conn_write(c, req);
	if (s->nqueued >= u->p.max_queued)
		return -EAGAIN;
	if (s->nconns == 0 && backoff_active(s))
		return -ECONNREFUSED;
	queue_push(s, req);
	r = server_grow(s);
	if (r < 0 && s->nconns == 0) {
		queue_unlink(s, req);
		req->state = UC_REQ_IDLE;
		return r;
	}
	return 0;
}

void
upconn_cancel(struct upconn *u, struct upconn_req *req)
{
	struct upconn_conn *c;

	if (u == NULL || req == NULL)
		return;
	switch ((enum uc_req_state)req->state) {
	case UC_REQ_QUEUED:
		queue_unlink(req->srv, req);
		break;
	case UC_REQ_INFLIGHT:
		c = req->conn;
		c->slots[req->slot].req = NULL;
		c->nlive--;
		req->conn = NULL;
		if (c->oneshot)
			conn_close(c, 0);
		else
			conn_idle_check(c);
		break;
	case UC_REQ_FAILING:
		if (req->prev)
			req->prev->next = req->next;
		else
			u->fail_head = req->next;
		if (req->next)
			req->next->prev = req->prev;
		else
			u->fail_tail = req->prev;
		break;
	case UC_REQ_IDLE:
		/* Not ours (done, never sent, or on upconn_free's list):
		 * its links are not ours to touch either. */
		return;
	}
	req->prev = req->next = NULL;
	req->state = UC_REQ_IDLE;
}

int
upconn_get_stats(const struct upconn *u, const struct config_upstream *srv,
    struct upconn_stats *st)
{
	const struct upconn_server *s = server_find(u, srv, false);
	const struct uc_stats *a;

	if (s == NULL)
		return -ENOENT;
	a = &s->st;
#define LD(f) atomic_load_explicit(&a->f, memory_order_relaxed)
	st->conns_opened = LD(conns_opened);
	st->connect_failures = LD(connect_failures);
	st->handshakes = LD(handshakes);
	st->handshake_ms_sum = LD(handshake_ms_sum);
	st->handshake_failures = LD(handshake_failures);
	st->resumed = LD(resumed);
	st->queries = LD(queries);
	st->queries_reused = LD(queries_reused);
	st->retries = LD(retries);
	st->cert_not_after = LD(cert_not_after);
	st->backoff_ms = LD(backoff_ms);
	st->last_error = LD(last_error);
#undef LD
	if (st->last_error == NULL)
		st->last_error = "";
	return 0;
}

const char *
upconn_last_error(const struct upconn *u, const struct config_upstream *srv)
{
	const struct upconn_server *s = server_find(u, srv, true);

	return s != NULL ? s->last_error : "";
}

/* ---- servers ---- */

static uint32_t
server_hash(const struct config_upstream *srv)
{
	const struct sockaddr_storage *ss = &srv->addr.ss;
	uint32_t h = 2166136261u; /* FNV-1a */
	const uint8_t *p;
	size_t n;

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		p = a->sin6_addr.s6_addr;
		n = 16;
		h = (h ^ a->sin6_port) * 16777619u;
	} else {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		p = (const uint8_t *)&a->sin_addr;
		n = 4;
		h = (h ^ a->sin_port) * 16777619u;
	}
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static bool
server_match(const struct upconn_server *s, const struct config_upstream *srv)
{
	const struct sockaddr_storage *a = &s->addr.ss, *b = &srv->addr.ss;
	bool tls = srv->proto == CONFIG_PROTO_TLS;

	if (s->tls != tls || a->ss_family != b->ss_family)
		return false;
	if (tls && strcmp(s->name, srv->name) != 0)
		return false;
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
		const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
		return x->sin6_port == y->sin6_port &&
		    memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
	}
	const struct sockaddr_in *x = (const struct sockaddr_in *)a;
	const struct sockaddr_in *y = (const struct sockaddr_in *)b;
	return x->sin_port == y->sin_port &&
	    x->sin_addr.s_addr == y->sin_addr.s_addr;
}

/*
 * own_thread: called on the worker's thread, which may use the hash table;
 * other threads read only the published array.
 */
static struct upconn_server *
server_find(
    const struct upconn *u, const struct config_upstream *srv, bool own_thread)
{
	size_t n;

	if (u == NULL || srv == NULL)
		return NULL;
	if (own_thread) {
		struct upconn_server *s =
		    u->buckets[server_hash(srv) & (UC_BUCKETS - 1)];
		for (; s != NULL; s = s->hnext)
			if (server_match(s, srv))
				return s;
		return NULL;
	}
	n = atomic_load_explicit(&u->nservers, memory_order_acquire);
	for (size_t i = 0; i < n; i++)
		if (server_match(u->servers[i], srv))
			return u->servers[i];
	return NULL;
}

static int
server_get(struct upconn *u, const struct config_upstream *srv,
    struct upconn_server **out)
{
	struct upconn_server *s = server_find(u, srv, true);
	size_t n = atomic_load_explicit(&u->nservers, memory_order_relaxed);
	struct in6_addr tmp;
	uint32_t b;

	if (s != NULL) {
		*out = s;
		return 0;
	}
	if (n >= UC_MAX_SERVERS)
		return -ENOSPC;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->u = u;
	s->addr = srv->addr;
	s->tls = srv->proto == CONFIG_PROTO_TLS;
	if (s->tls) {
		snprintf(s->name, sizeof(s->name), "%s", srv->name);
		s->name_is_ip = inet_pton(AF_INET, s->name, &tmp) == 1 ||
		    inet_pton(AF_INET6, s->name, &tmp) == 1;
	}
	atomic_store_explicit(&s->st.last_error, "", memory_order_relaxed);
	b = server_hash(srv) & (UC_BUCKETS - 1);
	s->hnext = u->buckets[b];
	u->buckets[b] = s;
	u->servers[n] = s;
	atomic_store_explicit(&u->nservers, n + 1, memory_order_release);
	*out = s;
	return 0;
}

static bool
backoff_active(const struct upconn_server *s)
{
	return s->backoff_until != 0 && clock_now_ms() < s->backoff_until;
}

/* Exponential, with the wait drawn from [backoff/2, backoff] so that the
 * workers do not all come back at once. */
static void
backoff_bump(struct upconn_server *s)
{
	const struct upconn_params *p = &s->u->p;
	uint32_t b = s->backoff_ms;

	b = b == 0 ? p->backoff_min_ms
		   : (b > p->backoff_max_ms / 2 ? p->backoff_max_ms : b * 2);
	s->backoff_ms = b;
	s->backoff_until = clock_now_ms() + b / 2 + rng_uniform(b / 2 + 1);
	atomic_store_explicit(&s->st.backoff_ms, b, memory_order_relaxed);
}

static void
set_error(struct upconn_server *s, const char *what, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->last_error, sizeof(s->last_error), fmt, ap);
	va_end(ap);
	atomic_store_explicit(&s->st.last_error, what, memory_order_relaxed);
	log_debug("upconn", "upstream connection failed up=%s reason=\"%s\"",
	    s->addr.text, s->last_error);
}

static void
stat_add(_Atomic uint64_t *v, uint64_t n)
{
	atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

static void
queue_push(struct upconn_server *s, struct upconn_req *req)
{
	req->next = NULL;
	req->prev = s->qtail;
	if (s->qtail)
		s->qtail->next = req;
	else
		s->qhead = req;
	s->qtail = req;
	s->nqueued++;
	req->state = UC_REQ_QUEUED;
}

static void
queue_unlink(struct upconn_server *s, struct upconn_req *req)
{
	if (req->prev)
		req->prev->next = req->next;
	else
		s->qhead = req->next;
	if (req->next)
		req->next->prev = req->prev;
	else
		s->qtail = req->prev;
	req->prev = req->next = NULL;
	s->nqueued--;
	req->state = UC_REQ_IDLE;
}

/* done() runs from reap_cb, never inside the caller's call. */
static void
fail_req(struct upconn *u, struct upconn_req *req, int err)
{
	req->err = err;
	req->conn = NULL;
	req->state = UC_REQ_FAILING;
	req->next = NULL;
	req->prev = u->fail_tail;
	if (u->fail_tail)
		u->fail_tail->next = req;
	else
		u->fail_head = req;
	u->fail_tail = req;
	event_active(u->reap, EV_TIMEOUT, 0);
}

/* Moves queued requests onto ready connections with room, in order. */
static void
server_pump(struct upconn_server *s)
{
	struct upconn_req *req;
	struct upconn_conn *c;
	int r;

	while ((req = s->qhead) != NULL && (c = conn_with_room(s)) != NULL) {
		queue_unlink(s, req);
		r = conn_write(c, req);
		if (r < 0)
			fail_req(s->u, req, r);
	}
}

/*
 * Opens connections while the queue is longer than what the connections
 * still connecting will take (each takes max_inflight), within max_conns
 * and outside backoff.  Returns 0 or the error of the last failed open.
 */
static int
server_grow(struct upconn_server *s)
{
	const struct upconn_params *p = &s->u->p;
	struct upconn_conn *c;
	uint64_t room = 0;
	int r = 0;

	for (c = s->conns; c != NULL; c = c->next)
		if (!c->oneshot && c->state == UC_CONNECTING)
			room += p->max_inflight;
	while (s->nqueued > room && s->nconns < p->max_conns &&
	    !backoff_active(s)) {
		r = conn_open(s, false, &c);
		if (r < 0)
			return r;
		room += p->max_inflight;
	}
	return 0;
}

static void
server_fail_queue(struct upconn_server *s, int err)
{
	struct upconn_req *req;

	while ((req = s->qhead) != NULL) {
		queue_unlink(s, req);
		fail_req(s->u, req, err);
	}
}

/*
 * After a connection went away: the queue (retries included) goes to
 * connections with room, new ones are opened for the rest, and when the
 * server has no connection left to wait for, the queue fails with err.
 */
static void
server_settle(struct upconn_server *s, int err)
{
	int r;

	server_pump(s);
	if (s->qhead == NULL)
		return;
	r = server_grow(s);
	if (s->nconns == 0)
		server_fail_queue(s, r < 0 ? r : err);
}

/* ---- connections ---- */

static struct upconn_conn *
conn_with_room(struct upconn_server *s)
{
	/* The first ready connection with room: RFC 7766 6.2.2 prefers one
	 * connection per server, so fill it before using another. */
	for (struct upconn_conn *c = s->conns; c != NULL; c = c->next)
		if (c->state == UC_READY && !c->oneshot && !c->draining &&
		    c->nused < c->nslots)
			return c;
	return NULL;
}

static SSL *
conn_ssl_new(struct upconn_server *s)
{
	struct upconn *u = s->u;
	SSL *ssl;
	char why[256];

	if (u->ssl_ctx == NULL &&
	    (u->ssl_ctx = ssl_ctx_new(NULL, why, sizeof(why))) == NULL) {
		set_error(s, "no TLS context", "%s", why);
		return NULL;
	}
	ssl = SSL_new(u->ssl_ctx);

	if (ssl == NULL)
		return NULL;
	SSL_set_app_data(ssl, s);
	if (s->name_is_ip) {
		/* An address is checked against the IP SANs; RFC 6066 3 forbids
		 * it as SNI. */
		if (X509_VERIFY_PARAM_set1_ip_asc(
			SSL_get0_param(ssl), s->name) != 1)
			goto fail;
	} else {
		if (SSL_set_tlsext_host_name(ssl, s->name) != 1 ||
		    SSL_set1_host(ssl, s->name) != 1)
			goto fail;
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	}
	if (s->session != NULL && SSL_set_session(ssl, s->session) != 1)
		goto fail;
	return ssl;
fail:
	SSL_free(ssl);
	return NULL;
}

static int
conn_open(struct upconn_server *s, bool oneshot, struct upconn_conn **out)
{
	struct upconn *u = s->u;
	struct upconn_conn *c = calloc(1, sizeof(*c));
	struct timeval tv;
	SSL *ssl;
	int r;

	if (c == NULL)
		return -ENOMEM;
	c->u = u;
	c->s = s;
	c->state = UC_CONNECTING;
	c->oneshot = oneshot;
	c->idle_ms = u->p.idle_timeout_ms;
	c->nslots = oneshot ? 1 : u->p.max_inflight;
	c->slots = calloc(c->nslots, sizeof(*c->slots));
	c->timer = evtimer_new(u->base, timer_cb, c);
	if (c->slots == NULL || c->timer == NULL)
		goto nomem;
	if (s->tls) {
		ssl = conn_ssl_new(s);
		if (ssl == NULL)
			goto nomem;
		/* BEV_OPT_CLOSE_ON_FREE: the bufferevent frees the SSL. */
		c->bev = bufferevent_openssl_socket_new(u->base, -1, ssl,
		    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
		if (c->bev != NULL)
			bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	} else {
		c->bev =
		    bufferevent_socket_new(u->base, -1, BEV_OPT_CLOSE_ON_FREE);
	}
	if (c->bev == NULL)
		goto nomem;
	bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
	/* A connect() that fails at once runs event_cb from inside this
	 * call: c->opening makes it note the error only. */
	c->opening = true;
	errno = 0;
	if (bufferevent_socket_connect(c->bev,
		(const struct sockaddr *)&s->addr.ss, (int)s->addr.len) < 0) {
		r = c->open_err ? -c->open_err : errno ? -errno : -ECONNREFUSED;
		conn_free(c);
		if (r != -ENOMEM && r != -EMFILE && r != -ENFILE) {
			stat_add(&s->st.connect_failures, 1);
			set_error(s, "connect failed",
			    "connect to %s failed: %s", s->addr.text,
			    strerror(-r));
			backoff_bump(s);
		}
		return r;
	}
	c->opening = false;
	/* Pipelined queries leave as they come, not after the last one's ACK
	 * (Nagle), which would add a round trip, or a delayed ACK's 40 ms. */
	(void)setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY,
	    &(int){1}, sizeof(int));
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	tv.tv_sec = u->p.connect_timeout_ms / 1000;
	tv.tv_usec = (u->p.connect_timeout_ms % 1000) * 1000;
	evtimer_add(c->timer, &tv);
	c->opened_ms = clock_now_ms();
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	if (oneshot)
		s->noneshot++;
	else
		s->nconns++;
	stat_add(&s->st.conns_opened, 1);
	*out = c;
	return 0;
nomem:
	conn_free(c);
	return -ENOMEM;
}

static bool
id_used(const struct upconn_conn *c, uint16_t id)
{
	for (unsigned i = 0; i < c->nslots; i++)
		if (c->slots[i].used && c->slots[i].id == id)
			return true;
	return false;
}

/* The caller's ID when it is free on c, else a random free one (at most
 * 1024 of 65536 are taken, so a few tries suffice). */
static uint16_t
pick_id(const struct upconn_conn *c, uint16_t want)
{
	uint16_t id;

	if (!id_used(c, want))
		return want;
	for (int i = 0; i < UC_ID_TRIES; i++) {
		id = rng_id();
		if (!id_used(c, id))
			return id;
	}
	for (id = (uint16_t)(want + 1); id != want; id++)
		if (!id_used(c, id))
			break;
	return id;
}

/*
 * Frames req into u->wbuf: length, then the query with the wire ID.  On
 * pooled connections an empty edns-tcp-keepalive asks the server for its
 * idle timeout (RFC 7828 3.2.1); over TLS the query is padded to a multiple
 * of 128 octets (RFC 8467 4.1).  Both only when the query ends with an OPT
 * that lacks them; otherwise the query goes as it is.  Returns the frame's
 * length.
 */
static size_t
frame_query(struct upconn_conn *c, const struct upconn_req *req, uint16_t id)
{
	static const uint8_t zeros[UC_PAD_BLOCK];
	uint8_t *m = c->u->wbuf + 2;
	size_t cap = WIRE_MSG_MAX, off;
	uint16_t dlen;
	int n = (int)req->len;
	int r;

	memcpy(m, req->msg, req->len);
	wire_put16(m, id);
	if (!c->oneshot &&
	    opt_find(m, (size_t)n, WIRE_OPT_KEEPALIVE, &off, &dlen) == 0) {
		r = wire_add_option(
		    m, (size_t)n, cap, WIRE_OPT_KEEPALIVE, NULL, 0);
		if (r > 0)
			n = r;
	}
	if (!c->oneshot && c->s->tls &&
	    opt_find(m, (size_t)n, UC_OPT_PADDING, &off, &dlen) == 0) {
		size_t pad = (UC_PAD_BLOCK - ((size_t)n + 4) % UC_PAD_BLOCK) %
		    UC_PAD_BLOCK;
		r = wire_add_option(
		    m, (size_t)n, cap, UC_OPT_PADDING, zeros, pad);
		if (r > 0)
			n = r;
	}
	wire_put16(c->u->wbuf, (uint16_t)n);
	return (size_t)n + 2;
}

/* Writes req on c (ready, with a free slot). */
static int
conn_write(struct upconn_conn *c, struct upconn_req *req)
{
	struct upconn_server *s = c->s;
	unsigned k;
	uint16_t id;
	size_t n;

	for (k = 0; k < c->nslots && c->slots[k].used; k++)
		;
	if (k == c->nslots) {
		if (!c->oneshot)
			return -EAGAIN;
		k = 0; /* a one-shot's request sits in slot 0 already */
	}
	id = c->oneshot ? req->id : pick_id(c, req->id);
	n = frame_query(c, req, id);
	/* Length and message in one write (RFC 7766 8). */
	if (bufferevent_write(c->bev, c->u->wbuf, n) < 0)
		return -ENOMEM;
	if (!c->oneshot) {
		c->slots[k].used = true;
		c->slots[k].id = id;
		c->slots[k].req = req;
		c->nused++;
		c->nlive++;
	}
	req->conn = c;
	req->slot = (uint16_t)k;
	req->wire_id = id;
	req->state = UC_REQ_INFLIGHT;
	stat_add(&s->st.queries, 1);
	if (c->carried)
		stat_add(&s->st.queries_reused, 1);
	c->carried = true;
	evtimer_del(c->timer); /* not idle */
	return 0;
}

static void
conn_ready(struct upconn_conn *c)
{
	struct upconn_server *s = c->s;
	uint64_t now = clock_now_ms();
	struct upconn_req *req;
	int r;

	c->state = UC_READY;
	evtimer_del(c->timer);
	stat_add(&s->st.handshakes, 1);
	stat_add(&s->st.handshake_ms_sum, now - c->opened_ms);
	if (s->tls) {
		SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
		X509 *cert = SSL_get0_peer_certificate(ssl);
		struct tm tm;
		if (SSL_session_reused(ssl))
			stat_add(&s->st.resumed, 1);
		if (cert != NULL &&
		    ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) == 1)
			atomic_store_explicit(&s->st.cert_not_after,
			    (int64_t)timegm(&tm), memory_order_relaxed);
	}
	s->backoff_ms = 0;
	s->backoff_until = 0;
	atomic_store_explicit(&s->st.backoff_ms, 0, memory_order_relaxed);
	if (c->oneshot) {
		req = c->slots[0].req;
		if (req == NULL)
			return; /* cancelled: conn_close already ran */
		r = conn_write(c, req);
		if (r < 0) {
			c->slots[0].req = NULL;
			fail_req(c->u, req, r);
			conn_close(c, 0);
		}
		return;
	}
	server_pump(s);
	conn_idle_check(c);
}

/*
 * Why the TLS connection failed, as a done() error, and whether it got as
 * far as the handshake (else the TCP connect failed).
 */
static int
tls_failure(struct upconn_conn *c, bool *handshake)
{
	struct upconn_server *s = c->s;
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
	long vr = SSL_get_verify_result(ssl);
	unsigned long e, first = 0;
	char why[256];

	/*
	 * A stack: the last popped came first.  libevent also records
	 * SSL_get_error()'s code (SSL_ERROR_SYSCALL: the socket failed, e.g.
	 * refused) there; those small values name no library and are the
	 * caller's to explain, so only OpenSSL's packed errors count.
	 */
	while ((e = bufferevent_get_openssl_error(c->bev)) != 0)
		if (ERR_GET_LIB(e) != 0)
			first = e;
	ERR_clear_error();
	*handshake = true;
	switch (vr) {
	case X509_V_OK:
		break;
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		set_error(s,
		    vr == X509_V_ERR_CERT_HAS_EXPIRED
			? "certificate expired"
			: "certificate not yet valid",
		    "TLS certificate verification failed for %s: %s", s->name,
		    X509_verify_cert_error_string(vr));
		return -EKEYEXPIRED;
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		set_error(s, "certificate name mismatch",
		    "TLS certificate verification failed for %s: %s "
		    "(the certificate does not name %s)",
		    s->name, X509_verify_cert_error_string(vr), s->name);
		return -EKEYREJECTED;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
		set_error(s, "certificate signed by an unknown CA",
		    "TLS certificate verification failed for %s: %s "
		    "(unknown CA)",
		    s->name, X509_verify_cert_error_string(vr));
		return -EKEYREJECTED;
	default:
		set_error(s, "certificate verification failed",
		    "TLS certificate verification failed for %s: %s", s->name,
		    X509_verify_cert_error_string(vr));
		return -EKEYREJECTED;
	}
	if (first != 0) {
		ERR_error_string_n(first, why, sizeof(why));
		set_error(s, "TLS handshake failed",
		    "TLS handshake with %s failed: %s", s->name, why);
		return -EPROTO;
	}
	*handshake = false;
	return 0;
}

/*
 * The connect or the TLS handshake failed (sockerr: errno at the event) or
 * did not finish in time.
 */
static void
conn_connect_failed(struct upconn_conn *c, int sockerr, bool timeout)
{
	struct upconn_server *s = c->s;
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	evutil_socket_t fd = bufferevent_getfd(c->bev);
	bool handshake = false;
	int err = 0;

	if (s->tls && !timeout)
		err = tls_failure(c, &handshake);
	if (err == 0) {
		/* Connected (so the handshake failed), or never connected. */
		handshake = s->tls && fd >= 0 &&
		    getpeername(fd, (struct sockaddr *)&peer, &plen) == 0;
		if (timeout) {
			err = -ETIMEDOUT;
			set_error(s,
			    handshake ? "TLS handshake timed out"
				      : "connect timed out",
			    "%s to %s timed out after %u ms",
			    handshake ? "TLS handshake" : "connect",
			    s->addr.text, s->u->p.connect_timeout_ms);
		} else if (handshake) {
			err = -ECONNRESET;
			set_error(s, "connection closed during TLS handshake",
			    "TLS handshake with %s failed: connection closed "
			    "by %s",
			    s->name, s->addr.text);
		} else {
			if (sockerr == ETIMEDOUT || sockerr == ENETUNREACH ||
			    sockerr == EHOSTUNREACH || sockerr == ECONNRESET)
				err = -sockerr;
			else
				err = -ECONNREFUSED;
			set_error(s,
			    err == -ECONNREFUSED ? "connection refused"
						 : "connect failed",
			    "connect to %s failed: %s", s->addr.text,
			    strerror(-err));
		}
	}
	stat_add(
	    handshake ? &s->st.handshake_failures : &s->st.connect_failures, 1);
	backoff_bump(s);
	conn_close(c, err);
	/* In backoff now: whatever no other connection will carry fails. */
	if (s->nconns == 0)
		server_fail_queue(s, err);
}

/* A ready connection was closed by the server or broke. */
static void
conn_broken(struct upconn_conn *c, int err)
{
	struct upconn_server *s = c->s;

	if (c->nlive > 0)
		set_error(s, "connection closed with queries outstanding",
		    "connection to %s closed with %u queries outstanding%s%s",
		    s->addr.text, c->nlive, err == -EPROTO ? ": " : "",
		    err == -EPROTO ? "malformed answer" : "");
	conn_close(c, err);
	server_settle(s, err);
}

/*
 * Takes c out of service: live requests are retried once (pooled
 * connections that were ready) or failed with err; the connection is freed
 * by reap_cb.  Calls no done() itself.
 */
static void
conn_close(struct upconn_conn *c, int err)
{
	struct upconn_server *s = c->s;
	struct upconn *u = c->u;
	struct upconn_req *rhead = NULL, *rtail = NULL, *req;
	unsigned nretry = 0;
	bool may_retry = c->state == UC_READY && !c->oneshot;

	if (c->state == UC_DEAD)
		return;
	/*
	 * OpenSSL makes the session unresumable when an SSL is freed without
	 * a shutdown: a close_notify when we close an idle connection, and
	 * the flags alone when the server closed it or TCP broke, which
	 * says nothing against the session.
	 */
	if (s->tls && c->state == UC_READY) {
		SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
		if (err == 0)
			(void)SSL_shutdown(ssl);
		else
			SSL_set_shutdown(
			    ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
		ERR_clear_error();
	}
	c->state = UC_DEAD;
	evtimer_del(c->timer);
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->oneshot)
		s->noneshot--;
	else
		s->nconns--;
	c->prev = NULL;
	c->next = u->dead;
	u->dead = c;
	event_active(u->reap, EV_TIMEOUT, 0);
	for (unsigned k = 0; k < c->nslots; k++) {
		req = c->slots[k].req;
		if (req == NULL)
			continue;
		c->slots[k].req = NULL;
		req->conn = NULL;
		if (may_retry && !req->retried) {
			req->retried = true;
			stat_add(&s->st.retries, 1);
			req->state = UC_REQ_QUEUED;
			req->next = NULL;
			req->prev = rtail;
			if (rtail)
				rtail->next = req;
			else
				rhead = req;
			rtail = req;
			nretry++;
		} else {
			fail_req(u, req, err ? err : -ECONNRESET);
		}
	}
	c->nlive = 0;
	/* Retries go to the head of the queue, past max_queued: they have
	 * waited longest. */
	if (rhead != NULL) {
		rtail->next = s->qhead;
		if (s->qhead)
			s->qhead->prev = rtail;
		else
			s->qtail = rtail;
		s->qhead = rhead;
		s->nqueued += nretry;
	}
}

static void
conn_idle_check(struct upconn_conn *c)
{
	struct timeval tv;

	if (c->state != UC_READY || c->oneshot || c->nlive > 0)
		return;
	tv.tv_sec = c->idle_ms / 1000;
	tv.tv_usec = (c->idle_ms % 1000) * 1000;
	evtimer_add(c->timer, &tv);
}

static void
conn_free(struct upconn_conn *c)
{
	if (c == NULL)
		return;
	if (c->bev != NULL)
		bufferevent_free(c->bev);
	if (c->timer != NULL)
		event_free(c->timer);
	free(c->slots);
	free(c);
}

/*
 * Finds an EDNS option in the message's OPT record.  Returns 1 and the
 * option's data offset and length, 0 when there is no such option (or no
 * OPT), -EBADMSG.
 */
static int
opt_find(const uint8_t *m, size_t len, uint16_t code, size_t *data_off,
    uint16_t *dlen)
{
	struct wire_iter it;
	struct wire_rr rr;
	int r;

	if (wire_iter_init(&it, m, len) < 0)
		return -EBADMSG;
	while ((r = wire_iter_next(&it, &rr)) == 1) {
		if (rr.section != 3 || rr.type != WIRE_TYPE_OPT)
			continue;
		for (size_t o = rr.rdata_off; o + 4 <= rr.end;) {
			uint16_t oc = wire_u16(m + o), ol = wire_u16(m + o + 2);
			if (o + 4 + ol > rr.end)
				return -EBADMSG;
			if (oc == code) {
				*data_off = o + 4;
				*dlen = ol;
				return 1;
			}
			o += 4 + (size_t)ol;
		}
		return 0;
	}
	return r < 0 ? -EBADMSG : 0;
}

/* RFC 7828: the server's idle timeout, in 100 ms units, lowers ours; 0
 * asks us to close once idle and send nothing more. */
static void
keepalive_apply(struct upconn_conn *c, const uint8_t *m, size_t len)
{
	size_t off;
	uint16_t dlen;
	uint32_t ms;

	if (opt_find(m, len, WIRE_OPT_KEEPALIVE, &off, &dlen) != 1 || dlen != 2)
		return;
	ms = (uint32_t)wire_u16(m + off) * UC_KEEPALIVE_UNIT;
	if (ms < c->idle_ms)
		c->idle_ms = ms;
	if (ms == 0)
		c->draining = true;
}

static void
conn_deliver(struct upconn_conn *c, uint8_t *m, size_t len)
{
	struct upconn_req *req;
	unsigned k;

	if (c->oneshot) {
		req = c->slots[0].req;
		c->slots[0].req = NULL;
		c->nlive = 0;
		conn_close(c, 0);
	} else {
		uint16_t id = WIRE_ID(m);
		for (k = 0; k < c->nslots; k++)
			if (c->slots[k].used && c->slots[k].id == id)
				break;
		if (k == c->nslots)
			return; /* nothing asked with that ID: ignore */
		keepalive_apply(c, m, len);
		req = c->slots[k].req;
		c->slots[k].used = false;
		c->slots[k].req = NULL;
		c->nused--;
		if (req == NULL)
			return; /* cancelled */
		c->nlive--;
	}
	if (req == NULL)
		return;
	/* A one-shot's answer is handed over untouched (it may be
	 * ciphertext). */
	if (!req->oneshot)
		wire_put16(m, req->id);
	req->conn = NULL;
	req->state = UC_REQ_IDLE;
	req->done(req, m, len, 0);
}

/* ---- callbacks ---- */

static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct upconn_conn *c = arg;
	struct upconn_server *s = c->s;
	struct evbuffer *in = bufferevent_get_input(bev);
	uint8_t lenb[2];
	size_t mlen;

	/*
	 * Acknowledge at once: a server with Nagle's algorithm on holds its
	 * next pipelined answer until this one is acknowledged, and a
	 * delayed ACK would wait for our next query.  Linux leaves quick-ACK
	 * mode by itself, so it is asked for again after every read.
	 */
	(void)setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_QUICKACK,
	    &(int){1}, sizeof(int));
	while (c->state == UC_READY) {
		if (evbuffer_copyout(in, lenb, 2) < 2)
			break;
		mlen = wire_u16(lenb);
		if (evbuffer_get_length(in) < mlen + 2)
			break;
		evbuffer_drain(in, 2);
		if (evbuffer_remove(in, c->u->rbuf, mlen) != (int)mlen ||
		    mlen < WIRE_HDR_LEN) {
			conn_broken(c, -EPROTO);
			return;
		}
		conn_deliver(c, c->u->rbuf, mlen);
	}
	if (c->state != UC_READY)
		return;
	server_pump(s);
	if (s->qhead != NULL)
		(void)server_grow(s); /* c may be draining now */
	conn_idle_check(c);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct upconn_conn *c = arg;
	int sockerr = EVUTIL_SOCKET_ERROR();

	if (c->opening) {
		c->open_err = sockerr;
		return;
	}
	if (c->state == UC_DEAD)
		return;
	if (what & BEV_EVENT_CONNECTED) {
		conn_ready(c);
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)))
		return;
	if (c->state == UC_CONNECTING)
		conn_connect_failed(c, sockerr, false);
	else
		conn_broken(c, -ECONNRESET);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upconn_conn *c = arg;
	struct upconn_server *s = c->s;

	if (c->state == UC_CONNECTING) {
		conn_connect_failed(c, ETIMEDOUT, true);
		return;
	}
	/* Idle: nobody waits (cancelled answers may still be due). */
	if (c->state == UC_READY && c->nlive == 0) {
		conn_close(c, 0);
		server_settle(s, -ECONNRESET);
	}
}

static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upconn *u = arg;
	struct upconn_req *req;
	struct upconn_conn *c;
	int err;

	while ((c = u->dead) != NULL) {
		u->dead = c->next;
		conn_free(c);
	}
	while ((req = u->fail_head) != NULL) {
		u->fail_head = req->next;
		if (u->fail_head)
			u->fail_head->prev = NULL;
		else
			u->fail_tail = NULL;
		req->prev = req->next = NULL;
		req->state = UC_REQ_IDLE;
		err = req->err;
		req->done(req, NULL, 0, err);
	}
}

/*
 * TLS 1.3 sends its tickets after the handshake, so sessions are taken here
 * rather than at handshake end.  The server lives as long as the pool, and
 * so longer than any of its SSLs.
 */
static int
new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct upconn_server *s = SSL_get_app_data(ssl);

	if (s == NULL || !SSL_SESSION_is_resumable(sess))
		return 0;
	if (s->session != NULL)
		SSL_SESSION_free(s->session);
	s->session = sess; /* returning 1 hands us the reference */
	return 1;
}
