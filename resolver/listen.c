#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "stubborn/clock.h"
#include "stubborn/config.h"
#include "stubborn/engine.h"
#include "stubborn/listen.h"
#include "stubborn/log.h"
#include "stubborn/metrics.h"
#include "stubborn/pipeline.h"
#include "stubborn/rng.h"
#include "stubborn/route.h"
#include "stubborn/wire.h"

/*
 * Client UDP socket buffers: a burst of queries (or of replies) larger
 * than the default ~200 KiB is dropped by the kernel before we see it.
 * 4 MiB (the kernel doubles it for its bookkeeping) holds tens of
 * thousands of queries, a few hundred milliseconds at full load; memory
 * is only used while queued.
 */
#define UDP_SOCKBUF (4 << 20)
#define UDP_BATCH 32
#define UDP_BUF 4096        /* larger client queries are not DNS we serve */
#define UDP_OUT 4096        /* largest UDP reply (edns-buffer-size max) */
#define TCP_MAX_PIPELINE 64 /* queries in flight per connection */
#define CMSG_SPACE_MAX                                                         \
	(CMSG_SPACE(sizeof(struct in6_pktinfo)) >                              \
		    CMSG_SPACE(sizeof(struct in_pktinfo))                      \
		? CMSG_SPACE(sizeof(struct in6_pktinfo))                       \
		: CMSG_SPACE(sizeof(struct in_pktinfo)))

struct udp_sock {
	struct listen *l;
	int fd;
	bool wildcard;
	struct event *ev; /* read: added by listen_new, deleted by listen_stop,
			     freed by listen_free */
};

struct tcp_conn {
	struct listen *l;
	struct tcp_conn *prev, *next;
	struct bufferevent *bev; /* freed by conn_close; NULL once closed */
	struct event *ev_idle;   /* idle timer: armed at accept, after each
				    whole query and after the last reply;
				    freed by conn_close */
	struct sockaddr_storage peer;
	socklen_t peer_len;
	unsigned inflight;  /* queries whose reply is still owed */
	uint64_t active_ms; /* last whole query or reply */
	bool paused;        /* reading stopped at TCP_MAX_PIPELINE */
	bool closing;       /* close once the owed replies are flushed */
	bool idle; /* on the idle list: open, nothing owed, not closing */
	struct tcp_conn *iprev, *inext; /* the idle list, longest idle first */
};

/*
 * Replies leave together: those made while a batch of datagrams is handled
 * at the end of the batch, those made by upstream answers (a transport
 * reads many in one callback) once the callback is done.
 */
struct out_batch {
	unsigned n;
	int fd[UDP_BATCH]; /* the socket each leaves through */
	struct mmsghdr mm[UDP_BATCH];
	struct iovec iov[UDP_BATCH];
	struct sockaddr_storage peer[UDP_BATCH];
	uint8_t ctl[UDP_BATCH][CMSG_SPACE_MAX];
	uint8_t buf[UDP_BATCH][UDP_OUT];
};

struct listen {
	struct event_base *base;
	struct pipeline *p;
	struct engine *engine;
	struct metrics_worker *met;
	struct udp_sock udp[2 * CONFIG_MAX_LISTEN];
	size_t n_udp;
	struct evconnlistener *tcp[2 * CONFIG_MAX_LISTEN];
	size_t n_tcp;
	struct tcp_conn *conns;
	size_t n_conns;
	struct tcp_conn *idle_head, *idle_tail; /* idle since longest first */
	/*
	 * For the other workers: when idle_head went idle (UINT64_MAX: no
	 * idle connection), and how many of its idle connections they want
	 * closed to make room under tcp-max-connections (ev_room, added by
	 * them with event_active, freed by listen_free, runs room_cb here).
	 */
	_Atomic uint64_t idlest_ms;
	_Atomic unsigned room_wanted;
	struct event *ev_room;
	int slot; /* in listeners[], or -1 */
	bool stopped;
	struct udp_sock *batching; /* the socket whose batch is being read */
	uint64_t now_us;           /* its arrival time */
	/* replies made during the batch, by source: all of them took 0 us
	   (one clock reading), so they are timed together at its end */
	uint64_t batch_replies[CLIENT_SRC_COUNT];
	struct event *ev_flush; /* sends out; activated by udp_reply outside
				   a read batch, freed by listen_free */
	struct out_batch out;
	uint8_t rbuf[UDP_BATCH][UDP_BUF];
	uint8_t rctl[UDP_BATCH][CMSG_SPACE_MAX];
};

/* Connections of all workers together, against tcp-max-connections. */
static _Atomic unsigned tcp_total;

/*
 * Every worker's listener, so that one at tcp-max-connections with nothing
 * idle of its own can have another close its longest-idle connection.
 * Filled by listen_new and emptied by listen_free, which run while no
 * worker does (before they start, after they are joined).
 */
#define LISTENERS_MAX 256
static _Atomic(struct listen *) listeners[LISTENERS_MAX];

static const struct config *cfg_of(const struct listen *l);
static void udp_buffers(int fd, int *rcv, int *snd);
static void report_buffers(struct listen *l, int fd);
static void udp_read_cb(evutil_socket_t fd, short what, void *arg);
static void read_dst(struct msghdr *mh, struct client *cl);
static void put_dst(
    const struct client *cl, struct msghdr *mh, uint8_t *ctl, size_t cap);
static void udp_reply(const struct client *cl, const uint8_t *msg, size_t len,
    enum client_source src);
static void flush_batch(struct listen *l);
static void flush_cb(evutil_socket_t fd, short what, void *arg);
static void observe(struct listen *l, const struct client *cl,
    const uint8_t *msg, size_t len, enum client_source src, uint64_t now_us);
static void log_query(const struct client *cl, const uint8_t *msg, size_t len,
    enum client_source src, uint64_t us);
static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg);
static void tcp_read_cb(struct bufferevent *bev, void *arg);
static void tcp_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_close(struct tcp_conn *c);
static void conn_arm_idle(struct tcp_conn *c);
static bool make_room_for_client(struct listen *l, const struct sockaddr *sa);
static bool make_room(struct listen *l);
static bool ask_room_elsewhere(struct listen *l);
static void room_cb(evutil_socket_t fd, short what, void *arg);
static void idle_add(struct tcp_conn *c);
static void idle_del(struct tcp_conn *c);
static void publish_idlest(struct listen *l);
static bool same_host(
    const struct sockaddr_storage *a, const struct sockaddr *b);
static void conn_close_when_flushed(struct tcp_conn *c);
static void idle_cb(evutil_socket_t fd, short what, void *arg);
static void flushed_cb(struct bufferevent *bev, void *arg);
static void conn_release(struct tcp_conn *c);
static void tcp_reply(const struct client *cl, const uint8_t *msg, size_t len,
    enum client_source src);

int
listen_open_socket(const struct config_addr *a, int type, bool reuseport,
    char *err, size_t errlen, int *errnum)
{
	int one = 1, fd;
	bool wild = a->ss.ss_family == AF_INET
	    ? ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr ==
		htonl(INADDR_ANY)
	    : IN6_IS_ADDR_UNSPECIFIED(
		  &((const struct sockaddr_in6 *)&a->ss)->sin6_addr);

	fd = socket(a->ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	/* Each worker binds its own socket; the kernel spreads the load. */
	if (reuseport &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	if (type == SOCK_STREAM)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (a->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	/* A reply must leave from the address the query was sent to. */
	if (wild && type == SOCK_DGRAM &&
	    (a->ss.ss_family == AF_INET
		    ? setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one))
		    : setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one,
			  sizeof(one))) < 0)
		goto fail;
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0)
		goto fail;
	if (type == SOCK_STREAM && listen(fd, 256) < 0)
		goto fail;
	if (type == SOCK_DGRAM) {
		int rcv, snd;
		udp_buffers(fd, &rcv, &snd);
	}
	return fd;
fail:
	*errnum = errno;
	snprintf(err, errlen, "cannot listen on %s (%s): %s%s", a->text,
	    type == SOCK_STREAM ? "tcp" : "udp", strerror(*errnum),
	    *errnum == EADDRINUSE
		? " (another DNS server holds it; for 127.0.0.53 that is "
		  "usually systemd-resolved's stub listener: set "
		  "DNSStubListener=no in /etc/systemd/resolved.conf)"
		: "");
	if (fd >= 0)
		close(fd);
	return -1;
}

int
listen_probe(const struct config *cfg, char *err, size_t errlen)
{
	int errnum = 0;

	for (size_t i = 0; i < cfg->n_listen; i++) {
		int fd = listen_open_socket(
		    &cfg->listen[i], SOCK_DGRAM, false, err, errlen, &errnum);
		if (fd < 0)
			return -errnum;
		close(fd);
		fd = listen_open_socket(
		    &cfg->listen[i], SOCK_STREAM, false, err, errlen, &errnum);
		if (fd < 0)
			return -errnum;
		close(fd);
	}
	return 0;
}

/*
 * Raises fd's buffers to UDP_SOCKBUF where they are smaller: past
 * net.core.rmem_max/wmem_max with the privilege to (SO_RCVBUFFORCE, while
 * main is still root), else as far as those allow.  *rcv and *snd get the
 * sizes the kernel reports afterwards.
 */
static void
udp_buffers(int fd, int *rcv, int *snd)
{
	static const int opt[2][2] = {
	    {SO_RCVBUFFORCE, SO_RCVBUF}, {SO_SNDBUFFORCE, SO_SNDBUF}};
	int want = UDP_SOCKBUF, *got[2] = {rcv, snd};

	for (int d = 0; d < 2; d++) {
		socklen_t len = sizeof(*got[d]);
		*got[d] = 0;
		(void)getsockopt(fd, SOL_SOCKET, opt[d][1], got[d], &len);
		/* The kernel reports twice what was set. */
		if (*got[d] >= 2 * want)
			continue;
		if (setsockopt(fd, SOL_SOCKET, opt[d][0], &want, sizeof(want)) <
		    0)
			(void)setsockopt(
			    fd, SOL_SOCKET, opt[d][1], &want, sizeof(want));
		len = sizeof(*got[d]);
		(void)getsockopt(fd, SOL_SOCKET, opt[d][1], got[d], &len);
	}
}

/*
 * An inherited socket (systemd, a handover) gets the same buffers as
 * sockets of our own where we still may; the sizes go to the log and to
 * /metrics, and a warning says how to get more when the kernel capped them.
 */
static void
report_buffers(struct listen *l, int fd)
{
	int rcv, snd;

	udp_buffers(fd, &rcv, &snd);
	metrics_udp_buffers(l->met, (uint32_t)rcv, (uint32_t)snd);
	if (rcv < UDP_SOCKBUF || snd < UDP_SOCKBUF)
		log_warn("listen",
		    "client UDP socket buffers below the %d bytes asked for "
		    "fd=%d receive=%d send=%d (raise net.core.rmem_max and "
		    "net.core.wmem_max, or start as root)",
		    UDP_SOCKBUF, fd, rcv, snd);
	else
		log_info("listen",
		    "client UDP socket buffers fd=%d receive=%d send=%d", fd,
		    rcv, snd);
}

struct listen *
listen_new(struct event_base *base, struct pipeline *p, struct engine *engine,
    struct metrics_worker *met, const struct listen_sock *socks, size_t n)
{
	struct listen *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->base = base;
	l->p = p;
	l->engine = engine;
	l->met = met;
	l->slot = -1;
	atomic_init(&l->idlest_ms, UINT64_MAX);
	atomic_init(&l->room_wanted, 0);
	l->ev_room = event_new(base, -1, 0, room_cb, l);
	if (l->ev_room == NULL)
		goto fail;
	for (int i = 0; i < LISTENERS_MAX && l->slot < 0; i++) {
		struct listen *none = NULL;
		if (atomic_compare_exchange_strong(&listeners[i], &none, l))
			l->slot = i;
	}
	l->ev_flush = event_new(base, -1, 0, flush_cb, l);
	if (l->ev_flush == NULL)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		if (socks[i].type == SOCK_DGRAM &&
		    l->n_udp < sizeof(l->udp) / sizeof(l->udp[0])) {
			struct udp_sock *u = &l->udp[l->n_udp];
			u->l = l;
			u->fd = socks[i].fd;
			u->wildcard = socks[i].wildcard;
			report_buffers(l, u->fd);
			u->ev = event_new(
			    base, u->fd, EV_READ | EV_PERSIST, udp_read_cb, u);
			if (u->ev == NULL || event_add(u->ev, NULL) < 0)
				goto fail;
			l->n_udp++;
		} else if (socks[i].type == SOCK_STREAM &&
		    l->n_tcp < sizeof(l->tcp) / sizeof(l->tcp[0])) {
			/* The fd is main's: no LEV_OPT_CLOSE_ON_FREE. */
			l->tcp[l->n_tcp] = evconnlistener_new(
			    base, accept_cb, l, 0, -1, socks[i].fd);
			if (l->tcp[l->n_tcp] == NULL)
				goto fail;
			l->n_tcp++;
		}
	}
	return l;
fail:
	listen_free(l);
	return NULL;
}

static const struct config *
cfg_of(const struct listen *l)
{
	return &engine_route(l->engine)->cfg;
}

void
listen_stop(struct listen *l)
{
	struct tcp_conn *c, *next;

	if (l->stopped)
		return;
	l->stopped = true;
	/* The sockets stay open: owed replies still leave through them. */
	for (size_t i = 0; i < l->n_udp; i++)
		if (l->udp[i].ev)
			event_del(l->udp[i].ev);
	for (size_t i = 0; i < l->n_tcp; i++)
		evconnlistener_disable(l->tcp[i]);
	for (c = l->conns; c != NULL; c = next) {
		next = c->next;
		if (c->inflight == 0) {
			conn_close(c);
		} else {
			c->closing = true;
			bufferevent_disable(c->bev, EV_READ);
		}
	}
}

size_t
listen_tcp_open(const struct listen *l)
{
	return l->n_conns;
}

void
listen_free(struct listen *l)
{
	if (l == NULL)
		return;
	listen_stop(l);
	/*
	 * conn_close unlinks each; one still owed replies is freed by its
	 * last reply, and the engine (freed first) has given them all.
	 */
	while (l->conns != NULL)
		conn_close(l->conns);
	for (size_t i = 0; i < l->n_udp; i++)
		if (l->udp[i].ev)
			event_free(l->udp[i].ev);
	for (size_t i = 0; i < l->n_tcp; i++)
		evconnlistener_free(l->tcp[i]);
	if (l->slot >= 0)
		atomic_store(&listeners[l->slot], NULL);
	if (l->ev_room)
		event_free(l->ev_room);
	flush_batch(l);
	if (l->ev_flush)
		event_free(l->ev_flush);
	free(l);
}

/* The address a datagram was sent to (wildcard sockets only). */
static void
read_dst(struct msghdr *mh, struct client *cl)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c != NULL;
	     c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
			struct in_pktinfo pi;
			memcpy(&pi, CMSG_DATA(c), sizeof(pi));
			cl->dst.family = AF_INET;
			cl->dst.ifindex = (unsigned)pi.ipi_ifindex;
			cl->dst.a.v4 = pi.ipi_addr;
		} else if (c->cmsg_level == IPPROTO_IPV6 &&
		    c->cmsg_type == IPV6_PKTINFO) {
			struct in6_pktinfo pi;
			memcpy(&pi, CMSG_DATA(c), sizeof(pi));
			cl->dst.family = AF_INET6;
			cl->dst.ifindex = pi.ipi6_ifindex;
			cl->dst.a.v6 = pi.ipi6_addr;
		}
	}
}

/* Makes the reply leave from the address the query was sent to. */
static void
put_dst(const struct client *cl, struct msghdr *mh, uint8_t *ctl, size_t cap)
{
	struct cmsghdr *c;

	mh->msg_control = NULL;
	mh->msg_controllen = 0;
	if (cl->dst.family == 0)
		return;
	memset(ctl, 0, cap);
	mh->msg_control = ctl;
	mh->msg_controllen = cap;
	c = CMSG_FIRSTHDR(mh);
	if (cl->dst.family == AF_INET) {
		struct in_pktinfo pi;
		memset(&pi, 0, sizeof(pi));
		pi.ipi_spec_dst = cl->dst.a.v4;
		pi.ipi_ifindex = (int)cl->dst.ifindex;
		c->cmsg_level = IPPROTO_IP;
		c->cmsg_type = IP_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		mh->msg_controllen = CMSG_SPACE(sizeof(pi));
	} else {
		struct in6_pktinfo pi;
		memset(&pi, 0, sizeof(pi));
		pi.ipi6_addr = cl->dst.a.v6;
		pi.ipi6_ifindex = cl->dst.ifindex;
		c->cmsg_level = IPPROTO_IPV6;
		c->cmsg_type = IPV6_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		mh->msg_controllen = CMSG_SPACE(sizeof(pi));
	}
}

static void
udp_reply(const struct client *cl, const uint8_t *msg, size_t len,
    enum client_source src)
{
	struct udp_sock *u = cl->conn;
	struct listen *l = u->l;
	struct out_batch *b = &l->out;
	struct msghdr mh;
	struct iovec iov;
	uint8_t ctl[CMSG_SPACE_MAX];
	unsigned i;

	if (msg == NULL)
		return;
	observe(l, cl, msg, len, src,
	    l->batching == u ? l->now_us : clock_now_us());
	if (len <= UDP_OUT) {
		if (b->n == UDP_BATCH)
			flush_batch(l);
		/* Outside a read batch: sent once this callback is done. */
		if (b->n == 0 && l->batching == NULL)
			event_active(l->ev_flush, 0, 0);
		i = b->n++;
		b->fd[i] = cl->fd;
		memcpy(b->buf[i], msg, len);
		memcpy(&b->peer[i], &cl->peer, cl->peer_len);
		b->iov[i].iov_base = b->buf[i];
		b->iov[i].iov_len = len;
		memset(&b->mm[i], 0, sizeof(b->mm[i]));
		b->mm[i].msg_hdr.msg_iov = &b->iov[i];
		b->mm[i].msg_hdr.msg_iovlen = 1;
		b->mm[i].msg_hdr.msg_name = &b->peer[i];
		b->mm[i].msg_hdr.msg_namelen = cl->peer_len;
		put_dst(cl, &b->mm[i].msg_hdr, b->ctl[i], sizeof(b->ctl[i]));
		return;
	}
	memset(&mh, 0, sizeof(mh));
	iov.iov_base = (void *)msg;
	iov.iov_len = len;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_name = (void *)&cl->peer;
	mh.msg_namelen = cl->peer_len;
	put_dst(cl, &mh, ctl, sizeof(ctl));
	/* A full socket buffer loses this reply; the client will retry. */
	(void)sendmsg(cl->fd, &mh, 0);
}

/* Sends every queued reply, one sendmmsg per run of the same socket. */
static void
flush_batch(struct listen *l)
{
	struct out_batch *b = &l->out;
	unsigned start = 0;

	while (start < b->n) {
		unsigned end = start + 1, sent = start;
		while (end < b->n && b->fd[end] == b->fd[start])
			end++;
		while (sent < end) {
			int r =
			    sendmmsg(b->fd[start], b->mm + sent, end - sent, 0);
			/* What the socket buffer does not take is lost, as a
			 * single sendto's would be; the clients retry. */
			if (r <= 0)
				break;
			sent += (unsigned)r;
		}
		start = end;
	}
	b->n = 0;
}

static void
flush_cb(evutil_socket_t fd, short what, void *arg)
{
	flush_batch(arg);
}

static void
udp_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct udp_sock *u = arg;
	struct listen *l = u->l;
	struct mmsghdr mm[UDP_BATCH];
	struct iovec iov[UDP_BATCH];
	struct sockaddr_storage peers[UDP_BATCH];
	struct client cl;
	uint64_t now_ms;
	uint32_t now_s;
	int n;

	memset(mm, 0, sizeof(mm));
	for (int i = 0; i < UDP_BATCH; i++) {
		iov[i].iov_base = l->rbuf[i];
		iov[i].iov_len = UDP_BUF;
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
		mm[i].msg_hdr.msg_name = &peers[i];
		mm[i].msg_hdr.msg_namelen = sizeof(peers[i]);
		if (u->wildcard) {
			mm[i].msg_hdr.msg_control = l->rctl[i];
			mm[i].msg_hdr.msg_controllen = sizeof(l->rctl[i]);
		}
	}
	n = recvmmsg(fd, mm, UDP_BATCH, MSG_DONTWAIT, NULL);
	if (n <= 0)
		return;
	/* One clock reading for the batch: its packets arrived together. */
	l->now_us = clock_now_us();
	now_ms = l->now_us / 1000;
	now_s = (uint32_t)clock_wall_s();
	l->batching = u;
	metrics_add(l->met, MET_QUERIES_UDP, (uint64_t)n);
	for (int i = 0; i < n; i++) {
		if (mm[i].msg_hdr.msg_flags & MSG_TRUNC) {
			metrics_inc(l->met, MET_DROPPED);
			continue;
		}
		memset(&cl, 0, sizeof(cl));
		cl.reply = udp_reply;
		cl.fd = fd;
		cl.conn = u;
		cl.start_us = l->now_us;
		memcpy(&cl.peer, &peers[i], mm[i].msg_hdr.msg_namelen);
		cl.peer_len = mm[i].msg_hdr.msg_namelen;
		if (u->wildcard)
			read_dst(&mm[i].msg_hdr, &cl);
		pipeline_process(
		    l->p, l->rbuf[i], mm[i].msg_len, &cl, now_ms, now_s);
	}
	l->batching = NULL;
	for (int src = 0; src < CLIENT_SRC_COUNT; src++) {
		metrics_observe_n(
		    l->met, (enum client_source)src, 0, l->batch_replies[src]);
		l->batch_replies[src] = 0;
	}
	flush_batch(l);
}

/* Every reply is timed; with log-queries, (a sample of) them logged. */
static void
observe(struct listen *l, const struct client *cl, const uint8_t *msg,
    size_t len, enum client_source src, uint64_t now_us)
{
	const struct config *cfg = cfg_of(l);
	uint64_t us = now_us > cl->start_us ? now_us - cl->start_us : 0;

	if (us == 0 && l->batching != NULL && (unsigned)src < CLIENT_SRC_COUNT)
		l->batch_replies[src]++;
	else
		metrics_observe(l->met, src, us);
	if (cfg->log_queries &&
	    (cfg->log_queries_sample >= 100 ||
		rng_uniform(100) < cfg->log_queries_sample))
		log_query(cl, msg, len, src, us);
}

static void
log_query(const struct client *cl, const uint8_t *msg, size_t len,
    enum client_source src, uint64_t us)
{
	static const char *const srcs[] = {
	    "cache", "upstream", "stale", "error"};
	static const char *const rcodes[] = {
	    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"};
	char addr[INET6_ADDRSTRLEN] = "?", name[WIRE_NAME_MAX * 4 + 8] = "";
	struct wire_question q;
	unsigned rcode = len >= WIRE_HDR_LEN ? WIRE_RCODE(WIRE_FLAGS(msg)) : 0;
	char rc[16];

	if (cl->peer.ss_family == AF_INET6)
		inet_ntop(AF_INET6,
		    &((const struct sockaddr_in6 *)&cl->peer)->sin6_addr, addr,
		    sizeof(addr));
	else
		inet_ntop(AF_INET,
		    &((const struct sockaddr_in *)&cl->peer)->sin_addr, addr,
		    sizeof(addr));
	memset(&q, 0, sizeof(q));
	if (wire_read_question(msg, len, &q) == 0)
		wire_name_text(
		    msg + q.name_off, q.name_len, name, sizeof(name));
	if (rcode < sizeof(rcodes) / sizeof(rcodes[0]))
		snprintf(rc, sizeof(rc), "%s", rcodes[rcode]);
	else
		snprintf(rc, sizeof(rc), "RCODE%u", rcode);
	log_info("query",
	    "reply client=%s proto=%s name=\"%s\" type=%u rcode=%s%s "
	    "source=%s duration_us=%llu",
	    addr, cl->tcp ? "tcp" : "udp", name, (unsigned)q.qtype, rc,
	    len >= WIRE_HDR_LEN && (WIRE_FLAGS(msg) & WIRE_TC) ? " tc=1" : "",
	    srcs[src < CLIENT_SRC_COUNT ? src : CLIENT_SRC_ERROR],
	    (unsigned long long)us);
}

static bool
same_host(const struct sockaddr_storage *a, const struct sockaddr *b)
{
	if (a->ss_family != b->sa_family)
		return false;
	if (b->sa_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			   &((const struct sockaddr_in6 *)b)->sin6_addr,
			   16) == 0;
	return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
	    ((const struct sockaddr_in *)b)->sin_addr.s_addr;
}

/*
 * At tcp-max-per-client, the client's longest-idle connection with nothing
 * in flight is closed to admit its new one (RFC 7766 6.2.3), so idle
 * connections cannot lock it out.  Per client, each worker allows its
 * share of tcp-max-per-client.  False when nothing could be closed: the
 * new connection is refused.
 */
static bool
make_room_for_client(struct listen *l, const struct sockaddr *sa)
{
	const struct config *cfg = cfg_of(l);
	unsigned workers = cfg->workers ? cfg->workers : 1;
	unsigned share = (cfg->tcp_max_per_client + workers - 1) / workers;
	struct tcp_conn *idlest_own = NULL;
	unsigned own = 0;

	for (struct tcp_conn *c = l->conns; c != NULL; c = c->next) {
		if (!same_host(&c->peer, sa))
			continue;
		own++;
		if (c->idle &&
		    (idlest_own == NULL ||
			c->active_ms < idlest_own->active_ms))
			idlest_own = c;
	}
	if (own < (share ? share : 1))
		return true;
	if (idlest_own == NULL)
		return false;
	metrics_inc(l->met, MET_TCP_IDLE_CLOSED);
	conn_close(idlest_own);
	return true;
}

/*
 * Over tcp-max-connections (all workers together): the longest-idle
 * connection of this worker is closed to admit the new one, or, when this
 * worker has none idle, another worker is asked to close its longest-idle
 * one (the new connection is admitted meanwhile, one over the cap for a
 * moment).  False when no worker has an idle connection.
 */
static bool
make_room(struct listen *l)
{
	if (l->idle_head != NULL) {
		metrics_inc(l->met, MET_TCP_IDLE_CLOSED);
		conn_close(l->idle_head);
		return true;
	}
	return ask_room_elsewhere(l);
}

/* The worker whose idle connection has been idle longest is asked. */
static bool
ask_room_elsewhere(struct listen *l)
{
	struct listen *best = NULL;
	uint64_t best_ms = UINT64_MAX;

	for (int i = 0; i < LISTENERS_MAX; i++) {
		struct listen *o = atomic_load(&listeners[i]);
		uint64_t ms;
		if (o == NULL || o == l)
			continue;
		ms = atomic_load_explicit(&o->idlest_ms, memory_order_relaxed);
		if (ms < best_ms) {
			best = o;
			best_ms = ms;
		}
	}
	if (best == NULL)
		return false;
	atomic_fetch_add(&best->room_wanted, 1);
	/* event_active is thread-safe once evthread_use_pthreads() ran. */
	event_active(best->ev_room, 0, 0);
	return true;
}

/* Another worker admitted a connection over the cap: close one idle here. */
static void
room_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listen *l = arg;
	unsigned n = atomic_exchange(&l->room_wanted, 0);

	/* Connections that closed meanwhile may have made the room already. */
	while (n-- > 0 && l->idle_head != NULL &&
	    atomic_load(&tcp_total) > cfg_of(l)->tcp_max_connections) {
		metrics_inc(l->met, MET_TCP_IDLE_CLOSED);
		conn_close(l->idle_head);
	}
}

/* c has nothing owed and is not closing: it joins the idle list's end. */
static void
idle_add(struct tcp_conn *c)
{
	struct listen *l = c->l;

	if (c->idle)
		return;
	c->idle = true;
	c->inext = NULL;
	c->iprev = l->idle_tail;
	if (l->idle_tail != NULL)
		l->idle_tail->inext = c;
	else
		l->idle_head = c;
	l->idle_tail = c;
	if (l->idle_head == c)
		publish_idlest(l);
}

static void
idle_del(struct tcp_conn *c)
{
	struct listen *l = c->l;
	bool head = l->idle_head == c;

	if (!c->idle)
		return;
	c->idle = false;
	if (c->iprev != NULL)
		c->iprev->inext = c->inext;
	else
		l->idle_head = c->inext;
	if (c->inext != NULL)
		c->inext->iprev = c->iprev;
	else
		l->idle_tail = c->iprev;
	c->iprev = c->inext = NULL;
	if (head)
		publish_idlest(l);
}

/* Relaxed: a worker that reads it a moment late asks a worker that may
 * have nothing idle any more, which then closes nothing. */
static void
publish_idlest(struct listen *l)
{
	atomic_store_explicit(&l->idlest_ms,
	    l->idle_head != NULL ? l->idle_head->active_ms : UINT64_MAX,
	    memory_order_relaxed);
}

static void
accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct listen *l = arg;
	const struct config *cfg = cfg_of(l);
	struct tcp_conn *c;
	struct timeval idle;

	/*
	 * The place is taken first, so that two workers admitting at once
	 * both see the cap, and a worker asked to make room sees the total
	 * over it.  A connection of this client closed to make room for it
	 * makes room under the total too.
	 */
	atomic_fetch_add(&tcp_total, 1);
	if (l->stopped || !make_room_for_client(l, sa) ||
	    (atomic_load(&tcp_total) > cfg->tcp_max_connections &&
		!make_room(l))) {
		atomic_fetch_sub(&tcp_total, 1);
		metrics_inc(l->met, MET_TCP_REJECTED);
		close(fd);
		return;
	}
	/*
	 * Answers to pipelined queries go out as they are ready: Nagle would
	 * hold one back until the previous one is acknowledged.
	 */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	c = calloc(1, sizeof(*c));
	if (c != NULL) {
		c->bev =
		    bufferevent_socket_new(l->base, fd, BEV_OPT_CLOSE_ON_FREE);
		c->ev_idle = evtimer_new(l->base, idle_cb, c);
	}
	if (c == NULL || c->bev == NULL || c->ev_idle == NULL) {
		atomic_fetch_sub(&tcp_total, 1);
		if (c == NULL || c->bev == NULL)
			close(fd);
		if (c != NULL) {
			if (c->bev)
				bufferevent_free(c->bev);
			if (c->ev_idle)
				event_free(c->ev_idle);
			free(c);
		}
		return;
	}
	c->l = l;
	c->active_ms = clock_now_ms();
	memcpy(&c->peer, sa, (size_t)salen);
	c->peer_len = (socklen_t)salen;
	metrics_inc(l->met, MET_TCP_ACCEPTED);
	c->next = l->conns;
	if (l->conns)
		l->conns->prev = c;
	l->conns = c;
	l->n_conns++;
	idle_add(c);
	idle.tv_sec = cfg->tcp_idle_timeout_ms / 1000;
	idle.tv_usec = (cfg->tcp_idle_timeout_ms % 1000) * 1000;
	/*
	 * A reader too slow to take its answers within the idle time is cut
	 * off; the idle timer itself is ours, because only whole messages
	 * count as activity (RFC 7766 6.2.3), not a byte trickled now and then.
	 */
	bufferevent_set_timeouts(c->bev, NULL, &idle);
	bufferevent_setcb(c->bev, tcp_read_cb, NULL, tcp_event_cb, c);
	bufferevent_enable(c->bev, EV_READ);
	conn_arm_idle(c);
}

static void
conn_arm_idle(struct tcp_conn *c)
{
	struct timeval idle;
	uint32_t ms = cfg_of(c->l)->tcp_idle_timeout_ms;

	idle.tv_sec = ms / 1000;
	idle.tv_usec = (ms % 1000) * 1000;
	evtimer_add(c->ev_idle, &idle);
}

static void
idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tcp_conn *c = arg;

	/* Waiting for our own upstream is not the client being idle. */
	if (c->inflight > 0) {
		conn_arm_idle(c);
		return;
	}
	metrics_inc(c->l->met, MET_TCP_IDLE_CLOSED);
	conn_close(c);
}

static void
tcp_read_cb(struct bufferevent *bev, void *arg)
{
	struct tcp_conn *c = arg;
	struct listen *l = c->l;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct client cl;
	uint8_t lenb[2];
	uint8_t *msg;
	size_t mlen;

	while (c->bev != NULL && !l->stopped && !c->closing) {
		if (c->inflight >= TCP_MAX_PIPELINE) {
			/* Back-pressure: the rest waits in the socket buffer.
			 */
			bufferevent_disable(bev, EV_READ);
			c->paused = true;
			return;
		}
		if (evbuffer_copyout(in, lenb, 2) < 2)
			return;
		mlen = wire_u16(lenb);
		if (evbuffer_get_length(in) < mlen + 2)
			return;
		evbuffer_drain(in, 2);
		msg = evbuffer_pullup(in, (ssize_t)mlen);
		if (msg == NULL && mlen > 0) {
			conn_close(c);
			return;
		}
		metrics_inc(l->met, MET_QUERIES_TCP);
		c->active_ms = clock_now_ms();
		conn_arm_idle(c);
		memset(&cl, 0, sizeof(cl));
		cl.reply = tcp_reply;
		cl.tcp = true;
		cl.conn = c;
		cl.fd = -1;
		cl.start_us = clock_now_us();
		memcpy(&cl.peer, &c->peer, c->peer_len);
		cl.peer_len = c->peer_len;
		idle_del(c);
		c->inflight++;
		pipeline_process(l->p, msg ? msg : lenb, mlen, &cl,
		    cl.start_us / 1000, (uint32_t)clock_wall_s());
		if (c->bev != NULL)
			evbuffer_drain(in, mlen);
	}
}

static void
tcp_reply(const struct client *cl, const uint8_t *msg, size_t len,
    enum client_source src)
{
	struct tcp_conn *c = cl->conn;
	uint8_t lenb[2];

	if (msg != NULL && c->bev != NULL) {
		struct evbuffer *out = bufferevent_get_output(c->bev);
		observe(c->l, cl, msg, len, src, clock_now_us());
		wire_put16(lenb, (uint16_t)len);
		evbuffer_add(out, lenb, 2);
		evbuffer_add(out, msg, len);
	}
	conn_release(c);
}

/* One owed reply was sent (or will never come). */
static void
conn_release(struct tcp_conn *c)
{
	struct listen *l = c->l;

	c->inflight--;
	if (c->bev == NULL) {
		if (c->inflight == 0)
			free(c);
		return;
	}
	if ((l->stopped || c->closing) && c->inflight == 0) {
		conn_close_when_flushed(c);
		return;
	}
	if (c->inflight == 0) {
		c->active_ms = clock_now_ms();
		idle_add(c);
		conn_arm_idle(c);
	}
	if (c->paused && c->inflight < TCP_MAX_PIPELINE / 2) {
		c->paused = false;
		bufferevent_enable(c->bev, EV_READ);
		/*
		 * Queries already buffered raise no new read event; deferred,
		 * so the engine is not re-entered from inside a reply.
		 */
		bufferevent_trigger(c->bev, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	}
}

/* Stops reading and closes as soon as everything written has left. */
static void
conn_close_when_flushed(struct tcp_conn *c)
{
	c->closing = true;
	bufferevent_disable(c->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		conn_close(c);
		return;
	}
	bufferevent_setcb(c->bev, NULL, flushed_cb, tcp_event_cb, c);
}

static void
flushed_cb(struct bufferevent *bev, void *arg)
{
	struct tcp_conn *c = arg;

	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_close(c);
}

static void
tcp_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct tcp_conn *c = arg;

	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
	    c->inflight > 0) {
		/* A half-closed client still gets the answers it asked for. */
		c->closing = true;
		bufferevent_disable(bev, EV_READ);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT)
		metrics_inc(c->l->met, MET_TCP_IDLE_CLOSED);
	conn_close(c);
}

/*
 * Closes the socket at once; the struct lives on while the engine still
 * owes it replies (conn_release frees it then).
 */
static void
conn_close(struct tcp_conn *c)
{
	struct listen *l = c->l;

	if (c->bev == NULL)
		return;
	idle_del(c);
	bufferevent_free(c->bev);
	c->bev = NULL;
	event_free(c->ev_idle);
	c->ev_idle = NULL;
	atomic_fetch_sub(&tcp_total, 1);
	if (c->prev)
		c->prev->next = c->next;
	else
		l->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	l->n_conns--;
	if (c->inflight == 0)
		free(c);
}
