#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "stubborn/clock.h"
#include "stubborn/metrics.h"
#include "stubborn/rng.h"
#include "stubborn/wire.h"
#include "stubborn/xnet.h"
#include "stubborn/xport.h"

#define XNET_BUCKETS 256     /* request chains per socket, a power of two */
#define XNET_PER_SOCKET 1024 /* requests in flight on one socket */
#define XNET_DESTS 64        /* server hash chains, a power of two */
#define XNET_BIND_TRIES 8
#define XNET_READ_BATCH 32

struct udest;

/* A connected UDP socket to one server, reused for many queries. */
struct usock {
	struct xnet *x;
	struct udest *dest; /* NULL once retired */
	int fd;
	struct event *ev; /* read, persistent: added by usock_open, freed by
			     usock_close (from the gc event only) */
	uint64_t born_ms;
	unsigned uses;
	unsigned inflight;
	bool retired;
	struct usock *gc_next;
	struct xport_req *reqs[XNET_BUCKETS]; /* by ID */
};

struct udest {
	struct udest *next;
	struct sockaddr_storage addr;
	socklen_t len;
	struct usock *socks[XNET_UDP_SOCKETS];
};

/* A query over its own TCP connection. */
struct tcpq {
	struct xnet *x;
	struct xport_req *r;
	struct bufferevent *bev; /* freed by tcpq_free */
	struct tcpq *prev, *next;
};

struct xnet {
	struct event_base *base;
	struct metrics_worker *met;
	struct udest *dests[XNET_DESTS];
	size_t n_socks;
	struct usock *gc;    /* retired and idle: closed by ev_gc */
	struct event *ev_gc; /* activated when gc is not empty */
	struct tcpq *tcps;
	uint8_t buf[WIRE_MSG_MAX + 1];
};

static int x_send(
    void *ctx, struct xport_req *r, const uint8_t *msg, size_t len);
static void x_cancel(void *ctx, struct xport_req *r);
static struct udest *dest_get(struct xnet *x, const struct config_addr *a);
static struct usock *usock_open(struct xnet *x, struct udest *d, int *err);
static struct usock *usock_pick(
    struct xnet *x, struct udest *d, uint64_t now, int *err);
static void usock_retire(struct usock *s);
static void usock_close(struct usock *s);
static void usock_put(struct usock *s, struct xport_req *r);
static struct xport_req *usock_take(struct usock *s, uint16_t id);
static void usock_unlink(struct usock *s, struct xport_req *r);
static void usock_fail_all(struct usock *s, int err, uint64_t now);
static void usock_idle(struct usock *s);
static void udp_read_cb(evutil_socket_t fd, short what, void *arg);
static void gc_cb(evutil_socket_t fd, short what, void *arg);
static int tcp_send(
    struct xnet *x, struct xport_req *r, const uint8_t *msg, size_t len);
static void tcpq_free(struct tcpq *t);
static void tcp_read_cb(struct bufferevent *bev, void *arg);
static void tcp_event_cb(struct bufferevent *bev, short what, void *arg);

static const struct xport_ops ops = {x_send, x_cancel};

struct xnet *
xnet_new(struct event_base *base, struct metrics_worker *met)
{
	struct xnet *x = calloc(1, sizeof(*x));

	if (x == NULL)
		return NULL;
	x->base = base;
	x->met = met;
	x->ev_gc = event_new(base, -1, 0, gc_cb, x);
	if (x->ev_gc == NULL) {
		free(x);
		return NULL;
	}
	return x;
}

void
xnet_free(struct xnet *x)
{
	if (x == NULL)
		return;
	while (x->tcps != NULL)
		tcpq_free(x->tcps);
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
	event_free(x->ev_gc);
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

static struct udest *
dest_get(struct xnet *x, const struct config_addr *a)
{
	uint32_t h = 2166136261u;
	const uint8_t *p = (const uint8_t *)&a->ss;
	struct udest *d;

	for (socklen_t i = 0; i < a->len; i++)
		h = (h ^ p[i]) * 16777619u;
	for (d = x->dests[h & (XNET_DESTS - 1)]; d != NULL; d = d->next)
		if (d->len == a->len && memcmp(&d->addr, &a->ss, a->len) == 0)
			return d;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	memcpy(&d->addr, &a->ss, a->len);
	d->len = a->len;
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
	fd = socket(
	    d->addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = -errno;
		free(s);
		return NULL;
	}
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
	s->fd = fd;
	s->born_ms = clock_now_ms();
	x->n_socks++;
	return s;
fail:
	if (s->ev)
		event_free(s->ev);
	close(fd);
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

static int
x_send(void *ctx, struct xport_req *r, const uint8_t *msg, size_t len)
{
	struct xnet *x = ctx;
	struct udest *d;
	struct usock *s;
	int err = -EIO;

	r->owner = NULL;
	r->stream = NULL;
	r->next = NULL;
	/* Never plain text to a server that must be spoken to encrypted. */
	if (r->srv->proto == CONFIG_PROTO_TLS ||
	    r->srv->proto == CONFIG_PROTO_DNSCRYPT)
		return -EPROTONOSUPPORT;
	if (r->tcp || r->srv->proto != CONFIG_PROTO_UDP)
		return tcp_send(x, r, msg, len);
	if ((d = dest_get(x, &r->srv->addr)) == NULL)
		return -ENOMEM;
	if ((s = usock_pick(x, d, clock_now_ms(), &err)) == NULL)
		return err;
	/* IDs are unique per socket: a clash gets a fresh one. */
	for (int i = 0; i < 8; i++) {
		struct xport_req *o = s->reqs[r->id & (XNET_BUCKETS - 1)];
		while (o != NULL && o->id != r->id)
			o = o->next;
		if (o == NULL)
			break;
		r->id = rng_id();
	}
	{
		uint8_t pkt[512];
		const uint8_t *out = msg;
		if (WIRE_ID(msg) != r->id && len <= sizeof(pkt)) {
			memcpy(pkt, msg, len);
			wire_put16(pkt, r->id);
			out = pkt;
		}
		if (send(s->fd, out, len, 0) != (ssize_t)len)
			return errno ? -errno : -EIO;
	}
	s->uses++;
	usock_put(s, r);
	return 0;
}

static void
x_cancel(void *ctx, struct xport_req *r)
{
	(void)ctx;
	if (r->stream != NULL) {
		tcpq_free(r->stream);
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

	for (size_t b = 0; b < XNET_BUCKETS; b++)
		while (s->reqs[b] != NULL) {
			struct xport_req *r = s->reqs[b];
			usock_unlink(s, r);
			r->next = all;
			all = r;
		}
	/* Detached first: a retry may pick this very socket again. */
	while (all != NULL) {
		struct xport_req *r = all;
		all = r->next;
		r->next = NULL;
		metrics_inc(s->x->met, MET_UPSTREAM_ERRORS);
		r->done(r, NULL, 0, err, now);
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

static int
tcp_send(struct xnet *x, struct xport_req *r, const uint8_t *msg, size_t len)
{
	const struct config_addr *up = &r->srv->addr;
	struct tcpq *t = calloc(1, sizeof(*t));
	uint8_t lenb[2];

	if (t == NULL)
		return -ENOMEM;
	t->bev = bufferevent_socket_new(x->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (t->bev == NULL) {
		free(t);
		return -ENOMEM;
	}
	t->x = x;
	t->r = r;
	r->stream = t;
	t->next = x->tcps;
	if (x->tcps)
		x->tcps->prev = t;
	x->tcps = t;
	wire_put16(lenb, (uint16_t)len);
	bufferevent_setcb(t->bev, tcp_read_cb, NULL, tcp_event_cb, t);
	/* Length and message in one write (RFC 7766 8). */
	if (bufferevent_write(t->bev, lenb, 2) < 0 ||
	    bufferevent_write(t->bev, msg, len) < 0 ||
	    bufferevent_socket_connect(
		t->bev, (const struct sockaddr *)&up->ss, (int)up->len) < 0) {
		tcpq_free(t);
		return -ECONNREFUSED;
	}
	bufferevent_enable(t->bev, EV_READ | EV_WRITE);
	return 0;
}

static void
tcpq_free(struct tcpq *t)
{
	struct xnet *x = t->x;

	if (t->r != NULL)
		t->r->stream = NULL;
	bufferevent_free(t->bev);
	if (t->prev)
		t->prev->next = t->next;
	else
		x->tcps = t->next;
	if (t->next)
		t->next->prev = t->prev;
	free(t);
}

static void
tcp_read_cb(struct bufferevent *bev, void *arg)
{
	struct tcpq *t = arg;
	struct xnet *x = t->x;
	struct evbuffer *in = bufferevent_get_input(bev);
	uint8_t lenb[2];
	size_t mlen;

	for (;;) {
		struct xport_req *r = t->r;
		if (evbuffer_copyout(in, lenb, 2) < 2)
			return;
		mlen = wire_u16(lenb);
		if (evbuffer_get_length(in) < mlen + 2)
			return;
		evbuffer_drain(in, 2);
		evbuffer_remove(in, x->buf, mlen);
		if (mlen < WIRE_HDR_LEN || WIRE_ID(x->buf) != r->id) {
			metrics_inc(x->met, MET_UPSTREAM_MISMATCHED);
			continue;
		}
		/* The connection served its one query: done with it. */
		t->r = NULL;
		r->stream = NULL;
		if (r->done(r, x->buf, mlen, 0, clock_now_ms())) {
			tcpq_free(t);
			return;
		}
		t->r = r;
		r->stream = t;
	}
}

static void
tcp_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct tcpq *t = arg;
	struct xport_req *r = t->r;

	if (!(what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)))
		return;
	metrics_inc(t->x->met, MET_UPSTREAM_ERRORS);
	t->r = NULL;
	r->stream = NULL;
	tcpq_free(t);
	r->done(r, NULL, 0, -ECONNRESET, clock_now_ms());
}
