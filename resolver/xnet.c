#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "stubborn/clock.h"
#include "stubborn/config.h"
#include "stubborn/dnscrypt.h"
#include "stubborn/log.h"
#include "stubborn/metrics.h"
#include "stubborn/rng.h"
#include "stubborn/upconn.h"
#include "stubborn/wire.h"
#include "stubborn/xnet.h"
#include "stubborn/xport.h"

#define XNET_BUCKETS 256     /* request chains per socket, a power of two */
#define XNET_PER_SOCKET 1024 /* requests in flight on one socket */
#define XNET_DESTS 64        /* server hash chains, a power of two */
#define XNET_BIND_TRIES 8
#define XNET_READ_BATCH 32
#define XNET_RCVBUF (1 << 20)   /* bytes asked for each upstream socket */
#define XNET_LOG_EVERY_MS 60000 /* the same failure logged again after */

struct udest;
struct sreq;

/*
 * A connected UDP socket to one server, reused for many queries.  Plain
 * sockets hold engine requests by message ID; DNSCrypt ones hold sealed
 * queries by the first bytes of their client nonce.
 */
struct usock {
	struct xnet *x;
	struct udest *dest; /* NULL once retired */
	int fd;
	bool dc;
	struct event *ev; /* read, persistent: added by usock_open, freed by
			     usock_close (from the gc event only) */
	uint64_t born_ms;
	unsigned uses;
	unsigned inflight;
	bool retired;
	struct usock *gc_next;
	struct xport_req *reqs[XNET_BUCKETS]; /* plain: by ID */
	struct sreq **dreqs;                  /* DNSCrypt: by nonce */
};

struct udest {
	struct udest *next;
	struct sockaddr_storage addr;
	socklen_t len;
	bool dc;
	struct usock *socks[XNET_UDP_SOCKETS];
};

/*
 * One server as the transport knows it: DNSCrypt state, the last failure
 * logged, counters the metrics endpoint reads from another thread.
 */
struct xsrv {
	struct xsrv *next;
	struct xnet *x;
	struct config_upstream srv; /* a copy: address, proto, name, key */
	/* DNSCrypt */
	bool have_cert, have_kp, fetching;
	struct dnscrypt_cert cert;
	struct dnscrypt_keypair kp;
	uint64_t kp_born_ms;
	struct dnscrypt_session sess; /* cert with kp, when both are there */
	uint64_t refresh_at_s;        /* wall clock */
	uint64_t retry_at_ms;         /* no fetch before */
	uint32_t backoff_ms;
	unsigned misses; /* sealed queries in a row that got no answer */
	size_t min_len;  /* padded UDP query length */
	int err;         /* why the last fetch failed */
	struct sreq *waiting;
	struct xport_req fetch; /* the certificate query */
	struct event *ev_fetch; /* its timeout */
	int fetch_err;          /* failed before it was sent */
	const char *fetch_why;  /* ... because */
	uint8_t fetch_q[DNSCRYPT_CERT_QUERY_MAX];
	size_t fetch_len;
	/* the last failure logged */
	char logged[200];
	uint64_t logged_ms;
	_Atomic uint64_t cert_fetches, cert_failures, dc_rejected;
	_Atomic int64_t cert_not_after;
};

/* Where a stream or DNSCrypt request is. */
enum sreq_state {
	SQ_NEW,
	SQ_STREAM, /* in the upconn pool */
	SQ_WAIT,   /* waiting for a DNSCrypt certificate */
	SQ_UDP,    /* sealed, on a DNSCrypt UDP socket */
	SQ_DONE,   /* answered but not taken: kept until cancelled */
};

/*
 * A request that needs state of its own: a stream (upconn borrows the
 * query until it is done) or DNSCrypt (the nonce and session that open the
 * answer).
 */
struct sreq {
	struct upconn_req ur;
	struct xnet *x;
	struct xport_req *r;
	struct xsrv *xs;     /* DNSCrypt, else NULL */
	struct upconn *uc;   /* SQ_STREAM */
	struct usock *us;    /* SQ_UDP */
	struct sreq **pprev; /* SQ_WAIT, SQ_UDP: the link to this one */
	struct sreq *next;
	enum sreq_state state;
	bool tcp;
	uint8_t nonce[DNSCRYPT_HALF_NONCE_LEN];
	struct dnscrypt_session sess;
	size_t qlen; /* the plain query, at buf */
	size_t len;  /* what goes on the wire, at wire */
	size_t cap;
	uint8_t *wire;
	uint8_t buf[];
};

struct xnet {
	struct event_base *base;
	struct metrics_worker *met;
	struct upconn *uc; /* streams; NULL before xnet_set_config */
	char ca_file[sizeof(((struct config *)0)->tls_ca_file)];
	uint32_t key_lifetime_s;
	struct udest *dests[XNET_DESTS];
	size_t n_socks;
	struct usock *gc;    /* retired and idle: closed by ev_gc */
	struct event *ev_gc; /* activated when gc is not empty */
	struct xsrv *srvs;
	/* Guards uc and srvs against the metrics reader; the worker takes it
	 * only to change them. */
	pthread_mutex_t lock;
	uint8_t buf[WIRE_MSG_MAX + 1];
};

static int x_send(
    void *ctx, struct xport_req *r, const uint8_t *msg, size_t len);
static void x_cancel(void *ctx, struct xport_req *r);
static struct udest *dest_get(
    struct xnet *x, const struct config_addr *a, bool dc);
static struct usock *usock_open(struct xnet *x, struct udest *d, int *err);
static struct usock *usock_pick(
    struct xnet *x, struct udest *d, uint64_t now, int *err);
static void usock_retire(struct usock *s);
static void usock_close(struct usock *s);
static void usock_put(struct usock *s, struct xport_req *r);
static struct xport_req *usock_take(struct usock *s, uint16_t id);
static void usock_unlink(struct usock *s, struct xport_req *r);
static int usock_send(
    struct usock *s, struct xport_req *r, const uint8_t *msg, size_t len);
static void usock_fail_all(struct usock *s, int err, uint64_t now);
static void usock_idle(struct usock *s);
static void udp_read_cb(evutil_socket_t fd, short what, void *arg);
static void dc_read(struct usock *s, size_t n, uint64_t now);
static void gc_cb(evutil_socket_t fd, short what, void *arg);
static struct xsrv *xsrv_get(struct xnet *x, const struct config_upstream *u);
static void xsrv_free(struct xsrv *xs);
static void xsrv_log(struct xsrv *xs, uint64_t now, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static struct sreq *sreq_new(struct xnet *x, struct xport_req *r,
    const uint8_t *msg, size_t len, struct xsrv *xs);
static void sreq_detach(struct sreq *q);
static void sreq_link(struct sreq **head, struct sreq *q);
static void sreq_unlink(struct sreq *q);
static int stream_send(struct xnet *x, struct sreq *q);
static void stream_done_cb(
    struct upconn_req *ur, const uint8_t *msg, size_t len, int err);
static int dc_send(struct xnet *x, struct sreq *q, uint64_t now);
static int dc_session(
    struct xnet *x, struct xsrv *xs, struct sreq *q, uint64_t now);
static bool dc_usable(const struct xsrv *xs, uint64_t wall);
static void dc_maybe_fetch(struct xnet *x, struct xsrv *xs, uint64_t now);
static bool dc_fetch_done_cb(
    struct xport_req *r, uint8_t *msg, size_t len, int err, uint64_t now);
static void dc_fetch_timeout_cb(evutil_socket_t fd, short what, void *arg);
static void dc_fetch_fail_soon(struct xsrv *xs, int err, const char *why);
static void dc_fetched(
    struct xnet *x, struct xsrv *xs, int err, const char *why, uint64_t now);
static void finish(
    struct sreq *q, const uint8_t *msg, size_t len, int err, uint64_t now);

static const struct xport_ops ops = {x_send, x_cancel};

#define SREQ_OF(u) ((struct sreq *)((char *)(u)-offsetof(struct sreq, ur)))
#define XSRV_OF_FETCH(r)                                                       \
	((struct xsrv *)((char *)(r)-offsetof(struct xsrv, fetch)))

struct xnet *
xnet_new(struct event_base *base, struct metrics_worker *met)
{
	struct xnet *x = calloc(1, sizeof(*x));

	if (x == NULL)
		return NULL;
	x->base = base;
	x->met = met;
	x->key_lifetime_s = 600;
	pthread_mutex_init(&x->lock, NULL);
	x->ev_gc = event_new(base, -1, 0, gc_cb, x);
	if (x->ev_gc == NULL) {
		pthread_mutex_destroy(&x->lock);
		free(x);
		return NULL;
	}
	return x;
}

int
xnet_set_config(
    struct xnet *x, const struct config *cfg, char *err, size_t errlen)
{
	struct upconn_params p;
	struct upconn *uc, *old;

	x->key_lifetime_s = cfg->dnscrypt_key_lifetime;
	if (x->uc != NULL && strcmp(x->ca_file, cfg->tls_ca_file) == 0)
		return 0;
	upconn_params_default(&p);
	p.tls_ca_file = cfg->tls_ca_file;
	uc = upconn_new(x->base, &p, err, errlen);
	if (uc == NULL)
		return -EINVAL;
	pthread_mutex_lock(&x->lock);
	old = x->uc;
	x->uc = uc;
	snprintf(x->ca_file, sizeof(x->ca_file), "%s", cfg->tls_ca_file);
	pthread_mutex_unlock(&x->lock);
	/* Its pending queries fail now and may be sent again on the new one. */
	upconn_free(old);
	return 0;
}

void
xnet_free(struct xnet *x)
{
	if (x == NULL)
		return;
	upconn_free(x->uc);
	for (size_t i = 0; i < XNET_DESTS; i++) {
		while (x->dests[i] != NULL) {
			struct udest *d = x->dests[i];
			x->dests[i] = d->next;
			for (size_t k = 0; k < XNET_UDP_SOCKETS; k++)
				if (d->socks[k] != NULL)
					usock_close(d->socks[k]);
			free(d);
		}
	}
	while (x->gc != NULL) {
		struct usock *s = x->gc;
		x->gc = s->gc_next;
		usock_close(s);
	}
	while (x->srvs != NULL) {
		struct xsrv *xs = x->srvs;
		x->srvs = xs->next;
		xsrv_free(xs);
	}
	event_free(x->ev_gc);
	pthread_mutex_destroy(&x->lock);
	free(x);
}

struct xport
xnet_xport(struct xnet *x)
{
	struct xport xp = {&ops, x};

	return xp;
}

size_t
xnet_udp_sockets(const struct xnet *x)
{
	return x->n_socks;
}

static bool
same_server(const struct config_upstream *a, const struct config_upstream *b)
{
	return a->proto == b->proto && a->addr.len == b->addr.len &&
	    memcmp(&a->addr.ss, &b->addr.ss, a->addr.len) == 0 &&
	    strcmp(a->name, b->name) == 0 && memcmp(a->pk, b->pk, 32) == 0;
}

bool
xnet_get_stats(
    struct xnet *x, const struct config_upstream *srv, struct xnet_stats *st)
{
	struct upconn_stats us;
	bool used = false;

	pthread_mutex_lock(&x->lock);
	if (x->uc != NULL && upconn_get_stats(x->uc, srv, &us) == 0) {
		used = true;
		st->conns_opened += us.conns_opened;
		st->connect_failures += us.connect_failures;
		st->handshakes += us.handshakes;
		st->handshake_ms_sum += us.handshake_ms_sum;
		st->handshake_failures += us.handshake_failures;
		st->resumed += us.resumed;
		st->stream_queries += us.queries;
		st->stream_reused += us.queries_reused;
		if (us.cert_not_after != 0)
			st->cert_not_after = us.cert_not_after;
	}
	for (struct xsrv *xs = x->srvs; xs != NULL; xs = xs->next) {
		int64_t end;
		if (!same_server(&xs->srv, srv))
			continue;
		used = true;
		st->cert_fetches += atomic_load_explicit(
		    &xs->cert_fetches, memory_order_relaxed);
		st->cert_failures += atomic_load_explicit(
		    &xs->cert_failures, memory_order_relaxed);
		st->dc_rejected += atomic_load_explicit(
		    &xs->dc_rejected, memory_order_relaxed);
		end = atomic_load_explicit(
		    &xs->cert_not_after, memory_order_relaxed);
		if (end != 0)
			st->cert_not_after = end;
		if (xs->logged[0] != '\0')
			memcpy(
			    st->last_error, xs->logged, sizeof(st->last_error));
	}
	pthread_mutex_unlock(&x->lock);
	return used;
}

/* ---- UDP sockets ---- */

static struct udest *
dest_get(struct xnet *x, const struct config_addr *a, bool dc)
{
	uint32_t h = 2166136261u ^ (dc ? 1u : 0u);
	const uint8_t *p = (const uint8_t *)&a->ss;
	struct udest *d;

	for (socklen_t i = 0; i < a->len; i++)
		h = (h ^ p[i]) * 16777619u;
	for (d = x->dests[h & (XNET_DESTS - 1)]; d != NULL; d = d->next)
		if (d->dc == dc && d->len == a->len &&
		    memcmp(&d->addr, &a->ss, a->len) == 0)
			return d;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	memcpy(&d->addr, &a->ss, a->len);
	d->len = a->len;
	d->dc = dc;
	d->next = x->dests[h & (XNET_DESTS - 1)];
	x->dests[h & (XNET_DESTS - 1)] = d;
	return d;
}

static struct usock *
usock_open(struct xnet *x, struct udest *d, int *err)
{
	struct usock *s = calloc(1, sizeof(*s));
	int fd, r = -1;

	if (s == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	if (d->dc &&
	    (s->dreqs = calloc(XNET_BUCKETS, sizeof(*s->dreqs))) == NULL) {
		free(s);
		*err = -ENOMEM;
		return NULL;
	}
	fd = socket(
	    d->addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = -errno;
		free(s->dreqs);
		free(s);
		return NULL;
	}
	/*
	 * Room for the answers that arrive while the worker is busy (or
	 * throttled by a CPU quota): a full buffer drops them, and dropped
	 * answers are timeouts that open the server's circuit.  The kernel
	 * caps it at net.core.rmem_max.
	 */
	(void)setsockopt(
	    fd, SOL_SOCKET, SO_RCVBUF, &(int){XNET_RCVBUF}, sizeof(int));
	/* A random source port (RFC 5452 9.2); the kernel's pick if busy. */
	for (int i = 0; i < XNET_BIND_TRIES && r < 0; i++) {
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof(ss));
		ss.ss_family = d->addr.ss_family;
		if (ss.ss_family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port =
			    htons(rng_port());
		else
			((struct sockaddr_in6 *)&ss)->sin6_port =
			    htons(rng_port());
		r = bind(fd, (struct sockaddr *)&ss, d->len);
	}
	/* connect() makes the kernel drop datagrams from anyone else. */
	if (connect(fd, (const struct sockaddr *)&d->addr, d->len) < 0) {
		*err = -errno;
		goto fail;
	}
	s->ev = event_new(x->base, fd, EV_READ | EV_PERSIST, udp_read_cb, s);
	if (s->ev == NULL || event_add(s->ev, NULL) < 0) {
		*err = -ENOMEM;
		goto fail;
	}
	s->x = x;
	s->dest = d;
	s->dc = d->dc;
	s->fd = fd;
	s->born_ms = clock_now_ms();
	x->n_socks++;
	return s;
fail:
	if (s->ev)
		event_free(s->ev);
	close(fd);
	free(s->dreqs);
	free(s);
	return NULL;
}

/*
 * One of the server's sockets, chosen at random so the source port of the
 * next query is not the last one's; sockets past their uses or life are
 * retired and replaced.
 */
static struct usock *
usock_pick(struct xnet *x, struct udest *d, uint64_t now, int *err)
{
	unsigned k = rng_uniform(XNET_UDP_SOCKETS);

	for (unsigned i = 0; i < XNET_UDP_SOCKETS; i++) {
		unsigned j = (k + i) % XNET_UDP_SOCKETS;
		struct usock *s = d->socks[j];
		if (s != NULL &&
		    (s->uses >= XNET_UDP_USES ||
			now >= s->born_ms + XNET_UDP_LIFE_MS)) {
			usock_retire(s);
			s = NULL;
		}
		if (s == NULL) {
			s = d->socks[j] = usock_open(x, d, err);
			if (s == NULL)
				return NULL;
		}
		if (s->inflight < XNET_PER_SOCKET)
			return s;
	}
	*err = -ENOBUFS;
	return NULL;
}

/* No new queries; closed once its last one is answered or cancelled. */
static void
usock_retire(struct usock *s)
{
	struct udest *d = s->dest;

	for (unsigned i = 0; d != NULL && i < XNET_UDP_SOCKETS; i++)
		if (d->socks[i] == s)
			d->socks[i] = NULL;
	s->dest = NULL;
	s->retired = true;
	usock_idle(s);
}

static void
usock_idle(struct usock *s)
{
	if (!s->retired || s->inflight > 0 || s->gc_next != NULL ||
	    s->x->gc == s)
		return;
	s->gc_next = s->x->gc;
	s->x->gc = s;
	event_active(s->x->ev_gc, 0, 0);
}

static void
usock_close(struct usock *s)
{
	event_free(s->ev);
	close(s->fd);
	s->x->n_socks--;
	free(s->dreqs);
	free(s);
}

static void
gc_cb(evutil_socket_t fd, short what, void *arg)
{
	struct xnet *x = arg;

	while (x->gc != NULL) {
		struct usock *s = x->gc;
		x->gc = s->gc_next;
		usock_close(s);
	}
}

static void
usock_put(struct usock *s, struct xport_req *r)
{
	struct xport_req **b = &s->reqs[r->id & (XNET_BUCKETS - 1)];

	r->next = *b;
	*b = r;
	r->owner = s;
	s->inflight++;
}

static void
usock_unlink(struct usock *s, struct xport_req *r)
{
	struct xport_req **pp = &s->reqs[r->id & (XNET_BUCKETS - 1)];

	for (; *pp != NULL; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	r->next = NULL;
	r->owner = NULL;
	s->inflight--;
}

static struct xport_req *
usock_take(struct usock *s, uint16_t id)
{
	for (struct xport_req *r = s->reqs[id & (XNET_BUCKETS - 1)]; r != NULL;
	     r = r->next)
		if (r->id == id) {
			usock_unlink(s, r);
			return r;
		}
	return NULL;
}

/* Sends a plain query on s and files r under its ID (made unique). */
static int
usock_send(struct usock *s, struct xport_req *r, const uint8_t *msg, size_t len)
{
	uint8_t pkt[512];
	const uint8_t *out = msg;

	/* IDs are unique per socket: a clash gets a fresh one. */
	for (int i = 0; i < 8; i++) {
		struct xport_req *o = s->reqs[r->id & (XNET_BUCKETS - 1)];
		while (o != NULL && o->id != r->id)
			o = o->next;
		if (o == NULL)
			break;
		r->id = rng_id();
	}
	if (WIRE_ID(msg) != r->id) {
		if (len > sizeof(pkt))
			return -EMSGSIZE;
		memcpy(pkt, msg, len);
		wire_put16(pkt, r->id);
		out = pkt;
	}
	if (send(s->fd, out, len, 0) != (ssize_t)len)
		return errno ? -errno : -EIO;
	s->uses++;
	usock_put(s, r);
	return 0;
}

static int
x_send(void *ctx, struct xport_req *r, const uint8_t *msg, size_t len)
{
	struct xnet *x = ctx;
	const struct config_upstream *srv = r->srv;
	struct udest *d;
	struct usock *s;
	struct sreq *q;
	int err = -EIO;

	r->owner = NULL;
	r->stream = NULL;
	r->next = NULL;
	if (srv->proto == CONFIG_PROTO_DNSCRYPT) {
		struct xsrv *xs = xsrv_get(x, srv);
		uint64_t now = clock_now_ms();
		if (xs == NULL || (q = sreq_new(x, r, msg, len, xs)) == NULL)
			return -ENOMEM;
		dc_maybe_fetch(x, xs, now);
		if (dc_usable(xs, clock_wall_s()))
			err = dc_send(x, q, now);
		else if (xs->fetching) {
			sreq_link(&xs->waiting, q);
			q->state = SQ_WAIT;
			err = 0;
		} else {
			/* In backoff after a failed fetch: fail fast. */
			err = xs->err < 0 ? xs->err : -EKEYREJECTED;
		}
		if (err < 0)
			free(q);
		else
			r->stream = q;
		return err;
	}
	if (r->tcp || srv->proto != CONFIG_PROTO_UDP) {
		if ((q = sreq_new(x, r, msg, len, NULL)) == NULL)
			return -ENOMEM;
		if ((err = stream_send(x, q)) < 0) {
			free(q);
			return err;
		}
		r->stream = q;
		return 0;
	}
	if ((d = dest_get(x, &srv->addr, false)) == NULL)
		return -ENOMEM;
	if ((s = usock_pick(x, d, clock_now_ms(), &err)) == NULL)
		return err;
	return usock_send(s, r, msg, len);
}

static void
x_cancel(void *ctx, struct xport_req *r)
{
	(void)ctx;
	if (r->stream != NULL) {
		struct sreq *q = r->stream;
		r->stream = NULL;
		struct xsrv *xs = q->xs;
		bool sent = q->state == SQ_UDP || q->state == SQ_STREAM;
		sreq_detach(q);
		free(q);
		/* A sealed query given up on: most likely unanswered, and
		 * enough of them make the certificate suspect at once. */
		if (xs != NULL && sent && ++xs->misses >= XNET_DC_MISSES)
			dc_maybe_fetch(xs->x, xs, clock_now_ms());
		return;
	}
	if (r->owner != NULL) {
		struct usock *s = r->owner;
		usock_unlink(s, r);
		usock_idle(s);
	}
}

/* An ICMP error: every query on the socket went to that server. */
static void
usock_fail_all(struct usock *s, int err, uint64_t now)
{
	struct xport_req *all = NULL;
	struct sreq *dall = NULL;

	for (size_t b = 0; b < XNET_BUCKETS; b++) {
		while (s->reqs[b] != NULL) {
			struct xport_req *r = s->reqs[b];
			usock_unlink(s, r);
			r->next = all;
			all = r;
		}
		while (s->dreqs != NULL && s->dreqs[b] != NULL) {
			struct sreq *q = s->dreqs[b];
			sreq_detach(q);
			q->next = dall;
			dall = q;
		}
	}
	/* Detached first: a retry may pick this very socket again. */
	while (all != NULL) {
		struct xport_req *r = all;
		all = r->next;
		r->next = NULL;
		r->done(r, NULL, 0, err, now);
	}
	while (dall != NULL) {
		struct sreq *q = dall;
		dall = q->next;
		finish(q, NULL, 0, err, now);
	}
	usock_idle(s);
}

static void
udp_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct usock *s = arg;
	struct xnet *x = s->x;
	uint64_t now = clock_now_ms();

	for (int i = 0; i < XNET_READ_BATCH; i++) {
		ssize_t n = recv(fd, x->buf, WIRE_MSG_MAX, 0);
		struct xport_req *r;
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			/* ICMP port or host unreachable: fail now, not at RTO.
			 */
			usock_fail_all(s, -errno, now);
			break;
		}
		if (s->dc) {
			dc_read(s, (size_t)n, now);
			continue;
		}
		r = n >= WIRE_HDR_LEN ? usock_take(s, WIRE_ID(x->buf)) : NULL;
		if (r == NULL) {
			metrics_inc(x->met, MET_UPSTREAM_MISMATCHED);
			continue;
		}
		if (!r->done(r, x->buf, (size_t)n, 0, now))
			usock_put(s, r); /* not its answer: it waits on */
	}
	usock_idle(s);
}

/* ---- requests with state of their own ---- */

static struct sreq *
sreq_new(struct xnet *x, struct xport_req *r, const uint8_t *msg, size_t len,
    struct xsrv *xs)
{
	/* Room for the query and, for DNSCrypt, its sealed form. */
	size_t cap = xs == NULL ? 0
				: (len + DNSCRYPT_MAX_PAD > DNSCRYPT_MAX_UDP_LEN
					  ? len + DNSCRYPT_MAX_PAD
					  : DNSCRYPT_MAX_UDP_LEN) +
		DNSCRYPT_BLOCK + DNSCRYPT_QUERY_OVERHEAD;
	struct sreq *q = malloc(sizeof(*q) + len + cap);

	if (q == NULL)
		return NULL;
	memset(q, 0, sizeof(*q));
	q->ur.done = stream_done_cb;
	q->x = x;
	q->r = r;
	q->xs = xs;
	q->tcp = r->tcp;
	q->state = SQ_NEW;
	memcpy(q->buf, msg, len);
	q->qlen = len;
	q->len = len;
	q->wire = q->buf;
	q->cap = cap;
	return q;
}

static void
sreq_link(struct sreq **head, struct sreq *q)
{
	q->next = *head;
	if (*head != NULL)
		(*head)->pprev = &q->next;
	*head = q;
	q->pprev = head;
}

static void
sreq_unlink(struct sreq *q)
{
	if (q->pprev == NULL)
		return;
	*q->pprev = q->next;
	if (q->next != NULL)
		q->next->pprev = q->pprev;
	q->pprev = NULL;
	q->next = NULL;
}

/* Takes q out of wherever it waits; it can then be freed. */
static void
sreq_detach(struct sreq *q)
{
	switch (q->state) {
	case SQ_STREAM:
		upconn_cancel(q->uc, &q->ur);
		break;
	case SQ_WAIT:
		sreq_unlink(q);
		break;
	case SQ_UDP:
		sreq_unlink(q);
		q->us->inflight--;
		usock_idle(q->us);
		break;
	default:
		break;
	}
	q->state = SQ_DONE;
}

/*
 * q is over: its request learns the answer (msg, in x->buf or a buffer
 * that stays valid during the call) or the error.  q is freed unless the
 * engine says the answer is not its own, and then it stays with the
 * request until cancelled.
 */
static void
finish(struct sreq *q, const uint8_t *msg, size_t len, int err, uint64_t now)
{
	struct xnet *x = q->x;
	struct xport_req *r = q->r;

	q->state = SQ_DONE;
	r->stream = NULL;
	if (msg == NULL) {
		free(q);
		r->done(r, NULL, 0, err, now);
		return;
	}
	if (msg != x->buf)
		memcpy(x->buf, msg, len);
	/* The engine may send r again from inside done (TC, FORMERR). */
	if (r->done(r, x->buf, len, 0, now))
		free(q);
	else
		r->stream = q;
}

static int
stream_send(struct xnet *x, struct sreq *q)
{
	int err;

	if (x->uc == NULL)
		return -ENOTCONN;
	err = q->xs != NULL
	    ? upconn_send_oneshot(x->uc, q->r->srv, &q->ur, q->wire, q->len)
	    : upconn_send(x->uc, q->r->srv, &q->ur, q->wire, q->len);
	if (err < 0)
		return err;
	q->uc = x->uc;
	q->state = SQ_STREAM;
	return 0;
}

static void
stream_done_cb(struct upconn_req *ur, const uint8_t *msg, size_t len, int err)
{
	struct sreq *q = SREQ_OF(ur);
	struct xnet *x = q->x;
	const struct config_upstream *srv = q->r->srv;
	uint64_t now = clock_now_ms();
	int n;

	q->state = SQ_DONE;
	if (err < 0) {
		if (err != -ECANCELED) {
			struct xsrv *xs = q->xs ? q->xs : xsrv_get(x, srv);
			const char *why = upconn_last_error(q->uc, srv);
			if (xs != NULL)
				xsrv_log(xs, now, "upstream %s: %s", srv->text,
				    *why ? why : strerror(-err));
		}
		finish(q, NULL, 0, err, now);
		return;
	}
	if (q->xs == NULL) {
		finish(q, msg, len, 0, now);
		return;
	}
	n = dnscrypt_open(&q->sess, q->nonce, msg, len, x->buf, sizeof(x->buf));
	if (n < 0) {
		atomic_fetch_add_explicit(
		    &q->xs->dc_rejected, 1, memory_order_relaxed);
		xsrv_log(q->xs, now,
		    "upstream %s: DNSCrypt answer over TCP: %s", srv->text,
		    dnscrypt_strerror(n));
		finish(q, NULL, 0, -EPROTO, now);
		return;
	}
	q->xs->misses = 0;
	finish(q, x->buf, (size_t)n, 0, now);
}

/* ---- servers ---- */

static struct xsrv *
xsrv_get(struct xnet *x, const struct config_upstream *u)
{
	struct xsrv *xs;

	for (xs = x->srvs; xs != NULL; xs = xs->next)
		if (same_server(&xs->srv, u))
			return xs;
	xs = calloc(1, sizeof(*xs));
	if (xs == NULL)
		return NULL;
	xs->srv = *u;
	xs->x = x;
	xs->min_len = DNSCRYPT_MIN_UDP_LEN;
	xs->fetch.done = dc_fetch_done_cb;
	xs->fetch.srv = &xs->srv;
	if (u->proto == CONFIG_PROTO_DNSCRYPT) {
		xs->ev_fetch = evtimer_new(x->base, dc_fetch_timeout_cb, xs);
		if (xs->ev_fetch == NULL) {
			free(xs);
			return NULL;
		}
	}
	pthread_mutex_lock(&x->lock);
	xs->next = x->srvs;
	x->srvs = xs;
	pthread_mutex_unlock(&x->lock);
	return xs;
}

static void
xsrv_free(struct xsrv *xs)
{
	if (xs->ev_fetch != NULL)
		event_free(xs->ev_fetch);
	dnscrypt_keypair_fini(&xs->kp);
	dnscrypt_session_fini(&xs->sess);
	free(xs);
}

/*
 * A failure worth an operator's attention, once per change of text and
 * then at most once a minute: a broken server must not flood the log.
 */
static void
xsrv_log(struct xsrv *xs, uint64_t now, const char *fmt, ...)
{
	char text[sizeof(xs->logged)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (strcmp(text, xs->logged) == 0 && xs->logged_ms != 0 &&
	    now < xs->logged_ms + XNET_LOG_EVERY_MS)
		return;
	pthread_mutex_lock(&xs->x->lock); /* xnet_get_stats reads it */
	memcpy(xs->logged, text, sizeof(text));
	pthread_mutex_unlock(&xs->x->lock);
	xs->logged_ms = now;
	log_warn("xnet", "%s", text);
}

/* ---- DNSCrypt ---- */

static bool
dc_usable(const struct xsrv *xs, uint64_t wall)
{
	return xs->have_cert && dnscrypt_cert_valid(&xs->cert, wall);
}

/*
 * The session q is sealed with: the server's, whose key pair lives
 * dnscrypt-key-lifetime, or with a lifetime of 0 a fresh pair for q alone.
 */
static int
dc_session(struct xnet *x, struct xsrv *xs, struct sreq *q, uint64_t now)
{
	struct dnscrypt_keypair kp;
	int r;

	if (x->key_lifetime_s == 0) {
		if (dnscrypt_keypair_init(&kp) < 0)
			return -EIO;
		r = dnscrypt_session_init(&q->sess, &xs->cert, &kp);
		dnscrypt_keypair_fini(&kp);
		return r;
	}
	if (!xs->have_kp ||
	    now >= xs->kp_born_ms + (uint64_t)x->key_lifetime_s * 1000) {
		if (dnscrypt_keypair_init(&xs->kp) < 0)
			return -EIO;
		xs->have_kp = true;
		xs->kp_born_ms = now;
		if ((r = dnscrypt_session_init(&xs->sess, &xs->cert, &xs->kp)) <
		    0) {
			xs->have_kp = false;
			return r;
		}
	}
	q->sess = xs->sess;
	return 0;
}

/* Seals q and sends it: over UDP, or over a connection of its own. */
static int
dc_send(struct xnet *x, struct sreq *q, uint64_t now)
{
	struct xsrv *xs = q->xs;
	struct udest *d;
	struct usock *s;
	int n, err = -EIO;

	if ((err = dc_session(x, xs, q, now)) < 0)
		return err;
	q->wire = q->buf + q->qlen;
	n = dnscrypt_seal(&q->sess, q->buf, q->qlen, q->tcp,
	    q->tcp ? 0 : xs->min_len, q->wire, q->cap, q->nonce);
	if (n < 0)
		return n;
	q->len = (size_t)n;
	if (q->tcp)
		return stream_send(x, q);
	if ((d = dest_get(x, &xs->srv.addr, true)) == NULL)
		return -ENOMEM;
	if ((s = usock_pick(x, d, now, &err)) == NULL)
		return err;
	if (send(s->fd, q->wire, q->len, 0) != (ssize_t)q->len)
		return errno ? -errno : -EIO;
	s->uses++;
	s->inflight++;
	q->us = s;
	q->state = SQ_UDP;
	sreq_link(&s->dreqs[q->nonce[0]], q);
	return 0;
}

/* A datagram on a DNSCrypt socket: the answer of the query with its nonce. */
static void
dc_read(struct usock *s, size_t n, uint64_t now)
{
	struct xnet *x = s->x;
	struct sreq *q;
	int m;

	if (n < DNSCRYPT_RESPONSE_OVERHEAD) {
		metrics_inc(x->met, MET_UPSTREAM_MISMATCHED);
		return;
	}
	for (q = s->dreqs[x->buf[DNSCRYPT_MAGIC_LEN]]; q != NULL; q = q->next)
		if (memcmp(q->nonce, x->buf + DNSCRYPT_MAGIC_LEN,
			DNSCRYPT_HALF_NONCE_LEN) == 0)
			break;
	if (q == NULL) {
		/* A late, replayed or stray answer. */
		metrics_inc(x->met, MET_UPSTREAM_MISMATCHED);
		return;
	}
	m = dnscrypt_open(
	    &q->sess, q->nonce, x->buf, n, x->buf, sizeof(x->buf));
	if (m < 0) {
		/* Forged or corrupt: the real answer may still come. */
		atomic_fetch_add_explicit(
		    &q->xs->dc_rejected, 1, memory_order_relaxed);
		xsrv_log(q->xs, now, "upstream %s: DNSCrypt answer dropped: %s",
		    q->xs->srv.text, dnscrypt_strerror(m));
		return;
	}
	sreq_detach(q);
	q->xs->misses = 0;
	/* The server truncates answers longer than the padded query. */
	if (WIRE_FLAGS(x->buf) & WIRE_TC)
		q->xs->min_len = dnscrypt_grow_min_len(q->xs->min_len);
	finish(q, x->buf, (size_t)m, 0, now);
}

/*
 * Starts a certificate query when none is in use or valid, when the one in
 * use is due for a refresh, or when queries sealed with it go unanswered;
 * never during the backoff after a failed one.
 */
static void
dc_maybe_fetch(struct xnet *x, struct xsrv *xs, uint64_t now)
{
	uint64_t wall = clock_wall_s();
	struct udest *d;
	struct usock *s;
	struct timeval tv = {XNET_DC_FETCH_TIMEOUT_MS / 1000,
	    (XNET_DC_FETCH_TIMEOUT_MS % 1000) * 1000};
	int n, err = -EIO;

	if (xs->fetching || now < xs->retry_at_ms)
		return;
	if (dc_usable(xs, wall) && wall < xs->refresh_at_s &&
	    xs->misses < XNET_DC_MISSES)
		return;
	xs->fetch.id = rng_id();
	n = dnscrypt_cert_query(
	    xs->fetch_q, sizeof(xs->fetch_q), xs->fetch.id, xs->srv.name);
	if (n < 0) {
		dc_fetch_fail_soon(
		    xs, n, "the provider name is not a DNS name");
		return;
	}
	xs->fetch_len = (size_t)n;
	atomic_fetch_add_explicit(&xs->cert_fetches, 1, memory_order_relaxed);
	/*
	 * In the clear, as the protocol has it: the certificate is signed, and
	 * the name asked is the provider's, not a client's.
	 */
	if ((d = dest_get(x, &xs->srv.addr, false)) == NULL ||
	    (s = usock_pick(x, d, now, &err)) == NULL ||
	    (err = usock_send(s, &xs->fetch, xs->fetch_q, xs->fetch_len)) < 0) {
		dc_fetch_fail_soon(
		    xs, err, "the certificate query was not sent");
		return;
	}
	xs->fetching = true;
	evtimer_add(xs->ev_fetch, &tv);
}

static bool
dc_fetch_done_cb(
    struct xport_req *r, uint8_t *msg, size_t len, int err, uint64_t now)
{
	struct xsrv *xs = XSRV_OF_FETCH(r);
	struct dnscrypt_cert c;
	const char *why = NULL;

	if (msg == NULL) {
		dc_fetched(xs->x, xs, err, "the certificate query failed", now);
		return true;
	}
	/* A stray answer to another ID was already left on the socket. */
	if (!(WIRE_FLAGS(msg) & WIRE_QR))
		return false;
	err = dnscrypt_cert_choose(
	    msg, len, xs->srv.name, xs->srv.pk, clock_wall_s(), &c, &why);
	if (err == 0) {
		if (!xs->have_cert || c.serial != xs->cert.serial ||
		    memcmp(c.resolver_pk, xs->cert.resolver_pk,
			DNSCRYPT_PK_LEN) != 0) {
			char until[32];
			time_t t = (time_t)c.ts_end;
			struct tm tm;
			gmtime_r(&t, &tm);
			strftime(
			    until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
			log_info("xnet",
			    "upstream %s: DNSCrypt certificate serial %u, "
			    "es-version %u, valid until %s",
			    xs->srv.text, (unsigned)c.serial,
			    (unsigned)c.es_version, until);
			/* A new resolver key: sessions are made again. */
			xs->have_kp = false;
		}
		xs->cert = c;
		xs->have_cert = true;
		atomic_store_explicit(&xs->cert_not_after, (int64_t)c.ts_end,
		    memory_order_relaxed);
	}
	dc_fetched(xs->x, xs, err, why, now);
	return true;
}

/*
 * A fetch that failed before it started ends from the event loop, not
 * inside the x_send that wanted it: the queries waiting for it learn the
 * failure through their done callbacks, which must not run inside a send.
 */
static void
dc_fetch_fail_soon(struct xsrv *xs, int err, const char *why)
{
	struct timeval tv = {0, 0};

	xs->fetching = true;
	xs->fetch_err = err;
	xs->fetch_why = why;
	evtimer_add(xs->ev_fetch, &tv);
}

static void
dc_fetch_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct xsrv *xs = arg;
	struct usock *s = xs->fetch.owner;
	int err = xs->fetch_err ? xs->fetch_err : -ETIMEDOUT;
	const char *why =
	    xs->fetch_err ? xs->fetch_why : "the certificate query timed out";

	if (!xs->fetching)
		return;
	xs->fetch_err = 0;
	if (s != NULL) {
		usock_unlink(s, &xs->fetch);
		usock_idle(s);
	}
	dc_fetched(xs->x, xs, err, why, clock_now_ms());
}

/*
 * A certificate query ended (err 0: xs->cert is the one to use): the
 * queries waiting for it go out sealed, or fail when no certificate is
 * usable.
 */
static void
dc_fetched(
    struct xnet *x, struct xsrv *xs, int err, const char *why, uint64_t now)
{
	struct sreq *wait;
	bool usable;

	xs->fetching = false;
	if (xs->ev_fetch != NULL)
		evtimer_del(xs->ev_fetch);
	if (err == 0) {
		xs->err = 0;
		xs->backoff_ms = 0;
		xs->retry_at_ms = 0;
		xs->misses = 0;
		xs->refresh_at_s =
		    dnscrypt_cert_refresh_at(&xs->cert, clock_wall_s());
		pthread_mutex_lock(&x->lock);
		xs->logged[0] = '\0';
		pthread_mutex_unlock(&x->lock);
	} else {
		atomic_fetch_add_explicit(
		    &xs->cert_failures, 1, memory_order_relaxed);
		/* A certificate that fails verification is refused, not
		 * unreachable: the engine counts it as a bad answer. */
		xs->err = err == -ETIMEDOUT || err == -ECONNREFUSED ||
			err == -EHOSTUNREACH || err == -ENETUNREACH
		    ? err
		    : -EPROTO;
		xs->backoff_ms = xs->backoff_ms == 0 ? XNET_DC_BACKOFF_MIN_MS
						     : xs->backoff_ms * 2;
		if (xs->backoff_ms > XNET_DC_BACKOFF_MAX_MS)
			xs->backoff_ms = XNET_DC_BACKOFF_MAX_MS;
		xs->retry_at_ms = now + xs->backoff_ms;
		/* Unanswered queries stop counting until the next fetch. */
		xs->misses = 0;
		xsrv_log(xs, now,
		    "upstream %s: no usable DNSCrypt certificate: %s",
		    xs->srv.text, why != NULL ? why : strerror(-err));
	}
	usable = dc_usable(xs, clock_wall_s());
	/* Detached first: a failure may bring a retry to this very list. */
	wait = xs->waiting;
	xs->waiting = NULL;
	if (wait != NULL)
		wait->pprev = &wait;
	while (wait != NULL) {
		struct sreq *q = wait;
		int e;
		sreq_unlink(q);
		q->state = SQ_NEW;
		e = usable ? dc_send(x, q, now) : xs->err;
		if (e < 0)
			finish(q, NULL, 0, e, now);
	}
}
