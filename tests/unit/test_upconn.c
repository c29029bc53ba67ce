/*
 * Unit tests for upconn: a real event_base drives the pool against scripted
 * DNS servers running on the same base, on 127.0.0.1 ports bound here (port
 * 0).  The TLS server sees every byte the client sends before OpenSSL does
 * (memory BIOs), so it can tell that nothing but TLS records ever arrives.
 * Certificates are made here with the OpenSSL API.  Loops run one
 * EVLOOP_ONCE at a time until a condition holds, bounded by a count and a
 * watchdog timer; nothing sleeps.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "stubborn/clock.h"
#include "stubborn/config.h"
#include "stubborn/log.h"
#include "stubborn/rng.h"
#include "stubborn/upconn.h"
#include "stubborn/wire.h"
#include "unit.h"

#define TS_MAX_CONNS 32
#define TS_MAX_HELD 256
#define TS_MAX_IDS 1024
#define WATCHDOG_S 10   /* a loop that waits longer has failed */
#define LOOP_MAX 200000 /* EVLOOP_ONCE rounds per wait */
#define TLS_NAME "dns.test"
#define T0 1000000ULL /* fake monotonic start for backoff tests */

/* ---- scripted server ---- */

struct tsrv;

struct ts_conn {
	struct tsrv *t;
	struct bufferevent *bev; /* freed by ts_conn_close */
	SSL *ssl;                /* TLS: owns rbio and wbio */
	BIO *rbio, *wbio;
	struct evbuffer *plain; /* decrypted stream (TLS) */
	uint8_t rec_hdr[5];     /* TLS record parser */
	size_t rec_have, rec_left;
	bool bad_stream; /* bytes that are not TLS records */
	bool hs_done;
	int nq;       /* queries on this connection */
	bool closing; /* close once the answers are written */
	bool closed;
};

struct ts_held {
	struct ts_conn *c;
	uint8_t msg[1024];
	size_t len;
};

struct tsrv {
	struct event_base *base;
	int fd;                     /* the bound socket */
	struct evconnlistener *lis; /* once listening; owns fd */
	int port;
	SSL_CTX *ctx; /* TLS when set; owned */
	/* script */
	bool hold;          /* keep answers until ts_release */
	int reverse_after;  /* > 0: hold this many, answer in reverse */
	int close_after;    /* > 0: answer nothing on a connection and close
			       it at its Nth query */
	int close_conns;    /* ... for this many connections; -1 all */
	int close_answered; /* > 0: close after answering N on a conn */
	int keepalive;      /* >= 0: edns-tcp-keepalive in answers */
	bool mangle_id;     /* answer with the ID inverted */
	bool mute;          /* read and ignore everything */
	/* observations */
	int accepts, queries, eofs, handshakes, resumed, hs_failures;
	int not_tls;      /* connections that got non-TLS bytes */
	size_t app_bytes; /* decrypted application bytes (TLS) */
	int closes_done;  /* connections closed by the script */
	uint16_t ids[TS_MAX_IDS];
	size_t qlens[TS_MAX_IDS];
	bool had_keepalive[TS_MAX_IDS];
	int nids;
	struct ts_conn *conns[TS_MAX_CONNS];
	int nconns;
	struct ts_held held[TS_MAX_HELD];
	int nheld;
};

/* ---- client side ---- */

struct treq {
	struct upconn_req req;
	int ndone;
	int err;
	uint16_t id;
	uint8_t qname[WIRE_NAME_MAX];
	size_t qname_len;
	uint8_t q[512];
	size_t qlen;
	uint8_t ans[1024];
	size_t anslen;
};

static struct event_base *base;
static struct event *watchdog;
static bool wd_fired;
static bool in_call; /* inside upconn_send*, upconn_cancel */
static int total_done;

/* Certificates, made once per process. */
static EVP_PKEY *ca_key, *ca2_key, *srv_key;
static X509 *ca_cert, *ca2_cert, *cert_ok, *cert_wrong_name, *cert_expired,
    *cert_other_ca;
static char ca_file[64];

static void watchdog_cb(evutil_socket_t fd, short what, void *arg);
static void setup(void);
static void teardown(void);
static struct tsrv *ts_new(SSL_CTX *ctx, bool listening);
static void ts_listen(struct tsrv *t);
static void ts_free(struct tsrv *t);
static void ts_release(struct tsrv *t);
static void ts_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int socklen, void *arg);
static void ts_read_cb(struct bufferevent *bev, void *arg);
static void ts_event_cb(struct bufferevent *bev, short what, void *arg);
static void ts_conn_close(struct ts_conn *c);
static void ts_conn_close_flushed(struct ts_conn *c);
static void ts_write_cb(struct bufferevent *bev, void *arg);
static void ts_process(struct ts_conn *c, struct evbuffer *in);
static void ts_query(struct ts_conn *c, const uint8_t *m, size_t len);
static void ts_answer(struct ts_conn *c, const uint8_t *m, size_t len);
static void ts_send(struct ts_conn *c, const uint8_t *m, size_t len);
static void ts_tls_flush(struct ts_conn *c);
static void ts_check_records(struct ts_conn *c, const uint8_t *p, size_t n);
static void treq_init(struct treq *r, const char *name, uint16_t id);
static void treq_done_cb(
    struct upconn_req *req, const uint8_t *msg, size_t len, int err);
static int send_q(
    struct upconn *u, const struct config_upstream *srv, struct treq *r);
static void answered_ok(const struct treq *r);
static struct upconn *pool(const struct upconn_params *p);
static struct config_upstream upstream(const char *fmt, int port);
static EVP_PKEY *make_key(void);
static X509 *make_cert(EVP_PKEY *key, const char *cn, const char *san,
    X509 *issuer, EVP_PKEY *issuer_key, long from_s, long to_s, bool ca);
static void certs_init(void);
static SSL_CTX *server_ctx(X509 *cert);
static int opt_present(const uint8_t *m, size_t len, uint16_t code);

/* Runs the loop until cond holds, at most LOOP_MAX rounds or WATCHDOG_S. */
#define RUN_UNTIL(cond)                                                        \
	do {                                                                   \
		struct timeval wd_tv = {WATCHDOG_S, 0};                        \
		wd_fired = false;                                              \
		evtimer_add(watchdog, &wd_tv);                                 \
		for (int i_ = 0; i_ < LOOP_MAX && !(cond) && !wd_fired; i_++)  \
			event_base_loop(base, EVLOOP_ONCE);                    \
		evtimer_del(watchdog);                                         \
	} while (0)

static void
watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	wd_fired = true;
}

static void
setup(void)
{
	log_set_level(LOG_LEVEL_ERROR);
	ck_assert_int_eq(rng_init(), 0);
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	watchdog = evtimer_new(base, watchdog_cb, NULL);
	total_done = 0;
	certs_init();
}

static void
teardown(void)
{
	event_free(watchdog);
	event_base_free(base);
	base = NULL;
	clock_set_fake_ms(0);
}

/* ---- certificates ---- */

/* Made in main, outside any test, where ck_assert cannot report. */
#define NEED(cond)                                                             \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: %s failed\n", __FILE__,        \
			    __LINE__, #cond);                                  \
			abort();                                               \
		}                                                              \
	} while (0)

static EVP_PKEY *
make_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	NEED(k);
	return k;
}

static void
add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	NEED(ext);
	NEED(X509_add_ext(x, ext, -1) == 1);
	X509_EXTENSION_free(ext);
}

/* A certificate valid from now+from_s to now+to_s; self-signed when issuer
 * is NULL. */
static X509 *
make_cert(EVP_PKEY *key, const char *cn, const char *san, X509 *issuer,
    EVP_PKEY *issuer_key, long from_s, long to_s, bool ca)
{
	X509 *x = X509_new();
	X509_NAME *name;

	NEED(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)rng_uniform(1u << 30));
	X509_gmtime_adj(X509_getm_notBefore(x), from_s);
	X509_gmtime_adj(X509_getm_notAfter(x), to_s);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(
	    name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
	add_ext(x, issuer, NID_basic_constraints,
	    ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	add_ext(x, issuer, NID_key_usage,
	    ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
	add_ext(x, issuer, NID_subject_key_identifier, "hash");
	if (san != NULL)
		add_ext(x, issuer, NID_subject_alt_name, san);
	NEED(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

static void
certs_init(void)
{
	FILE *f;
	int fd;

	if (ca_cert != NULL)
		return;
	ca_key = make_key();
	ca2_key = make_key();
	srv_key = make_key();
	ca_cert = make_cert(ca_key, "upconn test CA", NULL, NULL, NULL, -86400,
	    86400 * 30, true);
	ca2_cert = make_cert(ca2_key, "upconn other CA", NULL, NULL, NULL,
	    -86400, 86400 * 30, true);
	cert_ok = make_cert(srv_key, TLS_NAME, "DNS:" TLS_NAME, ca_cert, ca_key,
	    -3600, 86400 * 7, false);
	cert_wrong_name = make_cert(srv_key, "other.test", "DNS:other.test",
	    ca_cert, ca_key, -3600, 86400 * 7, false);
	cert_expired = make_cert(srv_key, TLS_NAME, "DNS:" TLS_NAME, ca_cert,
	    ca_key, -86400 * 3, -86400, false);
	cert_other_ca = make_cert(srv_key, TLS_NAME, "DNS:" TLS_NAME, ca2_cert,
	    ca2_key, -3600, 86400 * 7, false);
	snprintf(ca_file, sizeof(ca_file), "/tmp/upconn-ca.XXXXXX");
	fd = mkstemp(ca_file);
	NEED(fd >= 0);
	f = fdopen(fd, "w");
	NEED(f);
	NEED(PEM_write_X509(f, ca_cert) == 1);
	fclose(f);
}

/* Forked tests inherit the file; the parent removes it at exit. */
static void
certs_cleanup(void)
{
	if (ca_file[0] != '\0')
		unlink(ca_file);
}

static SSL_CTX *
server_ctx(X509 *cert)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	ck_assert_ptr_nonnull(ctx);
	ck_assert_int_eq(SSL_CTX_use_certificate(ctx, cert), 1);
	ck_assert_int_eq(SSL_CTX_use_PrivateKey(ctx, srv_key), 1);
	return ctx;
}

/* ---- the scripted server ---- */

static struct tsrv *
ts_new(SSL_CTX *ctx, bool listening)
{
	struct tsrv *t = calloc(1, sizeof(*t));
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	int one = 1;

	ck_assert_ptr_nonnull(t);
	t->base = base;
	t->ctx = ctx;
	t->keepalive = -1;
	t->fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(t->fd, 0);
	setsockopt(t->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(t->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(getsockname(t->fd, (struct sockaddr *)&sin, &sl), 0);
	t->port = ntohs(sin.sin_port);
	if (listening)
		ts_listen(t);
	return t;
}

/* Bound but not listening refuses connections; this starts listening. */
static void
ts_listen(struct tsrv *t)
{
	ck_assert_int_eq(listen(t->fd, 64), 0);
	evutil_make_socket_nonblocking(t->fd);
	t->lis = evconnlistener_new(
	    base, ts_accept_cb, t, LEV_OPT_CLOSE_ON_FREE, -1, t->fd);
	ck_assert_ptr_nonnull(t->lis);
}

static void
ts_free(struct tsrv *t)
{
	if (t == NULL)
		return;
	for (int i = 0; i < t->nconns; i++) {
		ts_conn_close(t->conns[i]);
		if (t->conns[i]->plain)
			evbuffer_free(t->conns[i]->plain);
		free(t->conns[i]);
	}
	if (t->lis)
		evconnlistener_free(t->lis);
	else
		close(t->fd);
	SSL_CTX_free(t->ctx);
	free(t);
}

static void
ts_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int socklen, void *arg)
{
	struct tsrv *t = arg;
	struct ts_conn *c = calloc(1, sizeof(*c));

	ck_assert_ptr_nonnull(c);
	ck_assert_int_lt(t->nconns, TS_MAX_CONNS);
	t->conns[t->nconns++] = c;
	t->accepts++;
	c->t = t;
	c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	ck_assert_ptr_nonnull(c->bev);
	if (t->ctx != NULL) {
		c->ssl = SSL_new(t->ctx);
		c->rbio = BIO_new(BIO_s_mem());
		c->wbio = BIO_new(BIO_s_mem());
		SSL_set_bio(c->ssl, c->rbio, c->wbio);
		SSL_set_accept_state(c->ssl);
		c->plain = evbuffer_new();
	}
	bufferevent_setcb(c->bev, ts_read_cb, NULL, ts_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* bufferevent_free drops unwritten output: wait for it to drain. */
static void
ts_conn_close_flushed(struct ts_conn *c)
{
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		ts_conn_close(c);
		return;
	}
	c->closing = true;
	bufferevent_setcb(c->bev, ts_read_cb, ts_write_cb, ts_event_cb, c);
}

static void
ts_write_cb(struct bufferevent *bev, void *arg)
{
	struct ts_conn *c = arg;

	if (c->closing)
		ts_conn_close(c);
}

static void
ts_conn_close(struct ts_conn *c)
{
	if (c->closed)
		return;
	c->closed = true;
	if (c->ssl != NULL) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	bufferevent_free(c->bev);
	c->bev = NULL;
}

/* Every byte from the client must belong to a TLS record: type 20..23,
 * version 3.x, length at most 2^14 + 2048. */
static void
ts_check_records(struct ts_conn *c, const uint8_t *p, size_t n)
{
	while (n > 0 && !c->bad_stream) {
		if (c->rec_left > 0) {
			size_t k = n < c->rec_left ? n : c->rec_left;
			c->rec_left -= k;
			p += k;
			n -= k;
			continue;
		}
		c->rec_hdr[c->rec_have++] = *p++;
		n--;
		if (c->rec_have < 5)
			continue;
		c->rec_have = 0;
		c->rec_left = wire_u16(c->rec_hdr + 3);
		if (c->rec_hdr[0] < 20 || c->rec_hdr[0] > 23 ||
		    c->rec_hdr[1] != 3 || c->rec_left > 16384 + 2048) {
			c->bad_stream = true;
			c->t->not_tls++;
		}
	}
}

static void
ts_tls_flush(struct ts_conn *c)
{
	char buf[4096];
	int n;

	while ((n = BIO_read(c->wbio, buf, sizeof(buf))) > 0)
		bufferevent_write(c->bev, buf, (size_t)n);
}

static void
ts_read_cb(struct bufferevent *bev, void *arg)
{
	struct ts_conn *c = arg;
	struct tsrv *t = c->t;
	struct evbuffer *in = bufferevent_get_input(bev);
	uint8_t buf[4096];
	int n;

	if (t->mute) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	if (c->ssl == NULL) {
		ts_process(c, in);
		return;
	}
	while ((n = evbuffer_remove(in, buf, sizeof(buf))) > 0) {
		ts_check_records(c, buf, (size_t)n);
		BIO_write(c->rbio, buf, n);
	}
	if (!c->hs_done) {
		n = SSL_do_handshake(c->ssl);
		if (n == 1) {
			c->hs_done = true;
			t->handshakes++;
			if (SSL_session_reused(c->ssl))
				t->resumed++;
		} else if (SSL_get_error(c->ssl, n) != SSL_ERROR_WANT_READ) {
			t->hs_failures++;
			ts_tls_flush(c);
			return;
		}
	}
	if (c->hs_done)
		while ((n = SSL_read(c->ssl, buf, sizeof(buf))) > 0) {
			t->app_bytes += (size_t)n;
			evbuffer_add(c->plain, buf, (size_t)n);
		}
	ts_tls_flush(c);
	ts_process(c, c->plain);
}

static void
ts_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct ts_conn *c = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		c->t->eofs++;
		ts_conn_close(c);
	}
}

static void
ts_process(struct ts_conn *c, struct evbuffer *in)
{
	uint8_t lenb[2], m[2048];
	size_t len;

	while (!c->closed && evbuffer_copyout(in, lenb, 2) == 2) {
		len = wire_u16(lenb);
		if (evbuffer_get_length(in) < len + 2)
			return;
		ck_assert_uint_le(len, sizeof(m));
		evbuffer_drain(in, 2);
		evbuffer_remove(in, m, len);
		ts_query(c, m, len);
	}
}

static void
ts_query(struct ts_conn *c, const uint8_t *m, size_t len)
{
	struct tsrv *t = c->t;
	struct ts_held *h;

	ck_assert_uint_ge(len, WIRE_HDR_LEN);
	if (t->nids < TS_MAX_IDS) {
		t->ids[t->nids] = WIRE_ID(m);
		t->qlens[t->nids] = len;
		t->had_keepalive[t->nids] =
		    opt_present(m, len, WIRE_OPT_KEEPALIVE) == 1;
		t->nids++;
	}
	t->queries++;
	c->nq++;
	/* A doomed connection answers nothing and dies at its Nth query. */
	if (t->close_after > 0 &&
	    (t->close_conns < 0 || t->closes_done < t->close_conns)) {
		if (c->nq >= t->close_after) {
			t->closes_done++;
			ts_conn_close(c);
		}
		return;
	}
	if (t->hold || t->reverse_after > 0) {
		ck_assert_int_lt(t->nheld, TS_MAX_HELD);
		h = &t->held[t->nheld++];
		h->c = c;
		ck_assert_uint_le(len, sizeof(h->msg));
		memcpy(h->msg, m, len);
		h->len = len;
		if (t->reverse_after > 0 && t->nheld >= t->reverse_after) {
			for (int i = t->nheld - 1; i >= 0; i--)
				ts_answer(t->held[i].c, t->held[i].msg,
				    t->held[i].len);
			t->nheld = 0;
		}
		return;
	}
	ts_answer(c, m, len);
}

static void
ts_release(struct tsrv *t)
{
	int n = t->nheld;

	t->nheld = 0;
	for (int i = 0; i < n; i++)
		ts_answer(t->held[i].c, t->held[i].msg, t->held[i].len);
}

/* The question echoed with QR and RA set; an OPT of our own (the query's
 * options are not echoed) when the query had one, with a keepalive if the
 * script says so. */
static void
ts_answer(struct ts_conn *c, const uint8_t *m, size_t len)
{
	struct tsrv *t = c->t;
	struct wire_question q;
	uint8_t a[2048];
	int n;
	bool had_opt = opt_present(m, len, 0xffff) >= 0;

	if (c->closed)
		return;
	ck_assert_int_eq(wire_read_question(m, len, &q), 0);
	memcpy(a, m, q.end);
	wire_put16(a + 2, WIRE_FLAGS(m) | WIRE_QR | WIRE_RA);
	wire_put16(a + 10, 0);
	n = (int)q.end;
	if (had_opt) {
		n = wire_append_opt(
		    a, (size_t)n, sizeof(a), 1232, 0, false, -1, NULL);
		ck_assert_int_gt(n, 0);
		if (t->keepalive >= 0) {
			uint8_t ka[2];
			wire_put16(ka, (uint16_t)t->keepalive);
			n = wire_add_option(
			    a, (size_t)n, sizeof(a), WIRE_OPT_KEEPALIVE, ka, 2);
			ck_assert_int_gt(n, 0);
		}
	}
	if (t->mangle_id)
		wire_put16(a, (uint16_t)~WIRE_ID(m));
	ts_send(c, a, (size_t)n);
	if (t->close_answered > 0 && c->nq >= t->close_answered)
		ts_conn_close_flushed(c);
}

static void
ts_send(struct ts_conn *c, const uint8_t *m, size_t len)
{
	uint8_t buf[2 + 2048];

	wire_put16(buf, (uint16_t)len);
	memcpy(buf + 2, m, len);
	if (c->ssl == NULL) {
		bufferevent_write(c->bev, buf, len + 2);
		return;
	}
	ck_assert_int_eq(SSL_write(c->ssl, buf, (int)len + 2), (int)len + 2);
	ts_tls_flush(c);
}

/* 1 if the message's OPT carries option code, 0 if not, -1 without OPT. */
static int
opt_present(const uint8_t *m, size_t len, uint16_t code)
{
	struct wire_iter it;
	struct wire_rr rr;

	if (wire_iter_init(&it, m, len) < 0)
		return -1;
	while (wire_iter_next(&it, &rr) == 1) {
		if (rr.type != WIRE_TYPE_OPT)
			continue;
		for (size_t o = rr.rdata_off; o + 4 <= rr.end;
		     o += 4 + wire_u16(m + o + 2))
			if (wire_u16(m + o) == code)
				return 1;
		return 0;
	}
	return -1;
}

/* ---- client helpers ---- */

static struct config_upstream
upstream(const char *fmt, int port)
{
	struct config_upstream up;
	char text[128], why[128];

	snprintf(text, sizeof(text), fmt, port);
	ck_assert_msg(config_parse_upstream(text, &up, why, sizeof(why)) == 0,
	    "%s: %s", text, why);
	return up;
}

static struct upconn *
pool(const struct upconn_params *p)
{
	struct upconn_params d;
	char err[256];
	struct upconn *u;

	if (p == NULL) {
		upconn_params_default(&d);
		d.tls_ca_file = ca_file;
		p = &d;
	}
	u = upconn_new(base, p, err, sizeof(err));
	ck_assert_msg(u != NULL, "upconn_new: %s", err);
	return u;
}

static struct upconn_params
params(void)
{
	struct upconn_params p;

	upconn_params_default(&p);
	p.tls_ca_file = ca_file;
	return p;
}

static void
treq_init(struct treq *r, const char *name, uint16_t id)
{
	int n;

	memset(r, 0, sizeof(*r));
	r->req.done = treq_done_cb;
	r->id = id;
	n = wire_name_from_text(name, r->qname);
	ck_assert_int_gt(n, 0);
	r->qname_len = (size_t)n;
	n = wire_build_query(r->q, sizeof(r->q), id, WIRE_RD, r->qname,
	    r->qname_len, WIRE_TYPE_A, WIRE_CLASS_IN, 1232, false);
	ck_assert_int_gt(n, 0);
	r->qlen = (size_t)n;
}

static void
treq_done_cb(struct upconn_req *req, const uint8_t *msg, size_t len, int err)
{
	struct treq *r =
	    (struct treq *)((char *)req - offsetof(struct treq, req));

	ck_assert_msg(!in_call, "done() called from inside upconn_send/cancel");
	r->ndone++;
	total_done++;
	r->err = err;
	if (err == 0) {
		ck_assert_ptr_nonnull(msg);
		ck_assert_uint_le(len, sizeof(r->ans));
		memcpy(r->ans, msg, len);
		r->anslen = len;
	} else {
		ck_assert_ptr_null(msg);
		ck_assert_uint_eq(len, 0);
	}
}

static int
send_q(struct upconn *u, const struct config_upstream *srv, struct treq *r)
{
	int rc;

	in_call = true;
	rc = upconn_send(u, srv, &r->req, r->q, r->qlen);
	in_call = false;
	return rc;
}

static void
cancel_q(struct upconn *u, struct treq *r)
{
	in_call = true;
	upconn_cancel(u, &r->req);
	in_call = false;
}

/* Answered once, without error, with the caller's ID and its question. */
static void
answered_ok(const struct treq *r)
{
	struct wire_question q;

	ck_assert_int_eq(r->ndone, 1);
	ck_assert_int_eq(r->err, 0);
	ck_assert_uint_ge(r->anslen, WIRE_HDR_LEN);
	ck_assert_uint_eq(WIRE_ID(r->ans), r->id);
	ck_assert(WIRE_FLAGS(r->ans) & WIRE_QR);
	ck_assert_int_eq(wire_read_question(r->ans, r->anslen, &q), 0);
	ck_assert(wire_name_equal(
	    r->ans + q.name_off, q.name_len, r->qname, r->qname_len));
}

static struct upconn_stats
stats(struct upconn *u, const struct config_upstream *srv)
{
	struct upconn_stats st;

	ck_assert_int_eq(upconn_get_stats(u, srv, &st), 0);
	return st;
}

static bool
all_done(struct treq *r, int n)
{
	for (int i = 0; i < n; i++)
		if (r[i].ndone == 0)
			return false;
	return true;
}

/* ---- TCP ---- */

START_TEST(tcp_pipelined_out_of_order)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn *u = pool(NULL);
	struct treq r[5];
	char name[32];

	t->reverse_after = 5; /* all five in flight at once, answered last
				 first */
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "q%d.test", i);
		treq_init(&r[i], name, (uint16_t)(100 + i));
		ck_assert_int_eq(send_q(u, &up, &r[i]), 0);
	}
	ck_assert_int_eq(total_done, 0);
	RUN_UNTIL(all_done(r, 5));
	for (int i = 0; i < 5; i++)
		answered_ok(&r[i]);
	ck_assert_int_eq(t->accepts, 1);
	ck_assert_int_eq(t->queries, 5);
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(tcp_one_connection_for_many)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("127.0.0.1:%d", t->port);
	struct upconn *u = pool(NULL);
	struct treq r[40];
	struct upconn_stats st;
	char name[32];

	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "n%d.test", i);
		treq_init(&r[i], name, (uint16_t)i);
		ck_assert_int_eq(send_q(u, &up, &r[i]), 0);
	}
	RUN_UNTIL(all_done(r, 20));
	/* A second batch after the first was answered: same connection. */
	for (int i = 20; i < 40; i++) {
		snprintf(name, sizeof(name), "n%d.test", i);
		treq_init(&r[i], name, (uint16_t)i);
		ck_assert_int_eq(send_q(u, &up, &r[i]), 0);
	}
	RUN_UNTIL(all_done(r, 40));
	for (int i = 0; i < 40; i++)
		answered_ok(&r[i]);
	ck_assert_int_eq(t->accepts, 1);
	st = stats(u, &up);
	ck_assert_uint_eq(st.conns_opened, 1);
	ck_assert_uint_eq(st.handshakes, 1);
	ck_assert_uint_eq(st.queries, 40);
	ck_assert_uint_eq(st.queries_reused, 39);
	/* The pool asked for the server's keepalive timeout (RFC 7828). */
	for (int i = 0; i < t->nids; i++)
		ck_assert(t->had_keepalive[i]);
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(tcp_duplicate_ids_rewritten)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn *u = pool(NULL);
	struct treq r[3];

	t->reverse_after = 3;
	treq_init(&r[0], "a.test", 0x1234);
	treq_init(&r[1], "b.test", 0x1234);
	treq_init(&r[2], "c.test", 0x1234);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(send_q(u, &up, &r[i]), 0);
	RUN_UNTIL(all_done(r, 3));
	for (int i = 0; i < 3; i++)
		answered_ok(&r[i]);
	ck_assert_int_eq(t->nids, 3);
	ck_assert_uint_ne(t->ids[0], t->ids[1]);
	ck_assert_uint_ne(t->ids[0], t->ids[2]);
	ck_assert_uint_ne(t->ids[1], t->ids[2]);
	ck_assert_int_eq(t->accepts, 1);
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(tcp_keepalive_closes_idle)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn_params p = params();
	struct upconn *u;
	struct treq r[2];

	p.idle_timeout_ms = 60000; /* the server's 100 ms must win */
	u = pool(&p);
	t->keepalive = 1; /* 100 ms */
	treq_init(&r[0], "ka.test", 7);
	ck_assert_int_eq(send_q(u, &up, &r[0]), 0);
	RUN_UNTIL(r[0].ndone == 1);
	answered_ok(&r[0]);
	/* The client closes the idle connection, long before its own 60 s
	 * and before the watchdog. */
	RUN_UNTIL(t->eofs == 1);
	ck_assert_int_eq(t->eofs, 1);
	ck_assert(!wd_fired);
	/* The next query simply opens a new connection. */
	treq_init(&r[1], "ka2.test", 8);
	ck_assert_int_eq(send_q(u, &up, &r[1]), 0);
	RUN_UNTIL(r[1].ndone == 1);
	answered_ok(&r[1]);
	ck_assert_int_eq(t->accepts, 2);
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(tcp_idle_timeout)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn_params p = params();
	struct upconn *u;
	struct treq r;

	p.idle_timeout_ms = 50;
	u = pool(&p);
	treq_init(&r, "idle.test", 9);
	ck_assert_int_eq(send_q(u, &up, &r), 0);
	RUN_UNTIL(r.ndone == 1);
	answered_ok(&r);
	RUN_UNTIL(t->eofs == 1);
	ck_assert_int_eq(t->eofs, 1);
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(tcp_server_closes_idle_reopened)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn *u = pool(NULL);
	struct treq r[3];

	t->close_answered = 1; /* the server closes after each answer */
	for (int i = 0; i < 3; i++) {
		treq_init(&r[i], "again.test", (uint16_t)(40 + i));
		ck_assert_int_eq(send_q(u, &up, &r[i]), 0);
		RUN_UNTIL(r[i].ndone == 1);
		answered_ok(&r[i]);
	}
	ck_assert_int_eq(t->accepts, 3);
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(tcp_midway_close_retried_once)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn *u = pool(NULL);
	struct treq r[3];
	char name[32];

	t->close_after = 3; /* the first connection dies at its 3rd query */
	t->close_conns = 1;
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "m%d.test", i);
		treq_init(&r[i], name, (uint16_t)(60 + i));
		ck_assert_int_eq(send_q(u, &up, &r[i]), 0);
	}
	RUN_UNTIL(all_done(r, 3));
	for (int i = 0; i < 3; i++)
		answered_ok(&r[i]);
	ck_assert_int_eq(t->accepts, 2);
	ck_assert_int_eq(t->queries, 6);
	ck_assert_uint_eq(stats(u, &up).retries, 3);
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(tcp_midway_close_twice_fails)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn *u = pool(NULL);
	struct treq r[3];
	char name[32];

	t->close_after = 3; /* every connection dies at its 3rd query */
	t->close_conns = -1;
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "x%d.test", i);
		treq_init(&r[i], name, (uint16_t)(70 + i));
		ck_assert_int_eq(send_q(u, &up, &r[i]), 0);
	}
	RUN_UNTIL(all_done(r, 3));
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(r[i].ndone, 1);
		ck_assert_int_eq(r[i].err, -ECONNRESET);
	}
	/* Retried once: two connections, no third. */
	ck_assert_int_eq(t->accepts, 2);
	ck_assert_int_eq(t->queries, 6);
	ck_assert_str_eq(stats(u, &up).last_error,
	    "connection closed with queries outstanding");
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(tcp_backoff_after_refused)
{
	struct tsrv *t = ts_new(NULL, false); /* bound, not listening */
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn_params p = params();
	struct upconn *u;
	struct upconn_stats st;
	struct treq r[5];
	uint64_t now = T0;

	clock_set_fake_ms(now);
	p.backoff_min_ms = 1000;
	p.backoff_max_ms = 4000;
	u = pool(&p);
	treq_init(&r[0], "b0.test", 1);
	ck_assert_int_eq(send_q(u, &up, &r[0]), 0);
	RUN_UNTIL(r[0].ndone == 1);
	ck_assert_int_eq(r[0].err, -ECONNREFUSED);
	st = stats(u, &up);
	ck_assert_uint_eq(st.connect_failures, 1);
	ck_assert_uint_eq(st.backoff_ms, 1000);
	ck_assert_str_eq(st.last_error, "connection refused");
	ck_assert_ptr_nonnull(strstr(upconn_last_error(u, &up), "refused"));
	/* In backoff: fails at once, done() never called. */
	treq_init(&r[1], "b1.test", 2);
	ck_assert_int_eq(send_q(u, &up, &r[1]), -ECONNREFUSED);
	/* Jitter keeps the wait within [backoff/2, backoff]. */
	clock_set_fake_ms(now += 499);
	ck_assert_int_eq(send_q(u, &up, &r[1]), -ECONNREFUSED);
	clock_set_fake_ms(now += 502);
	ck_assert_int_eq(send_q(u, &up, &r[1]), 0);
	RUN_UNTIL(r[1].ndone == 1);
	ck_assert_int_eq(r[1].err, -ECONNREFUSED);
	ck_assert_uint_eq(stats(u, &up).backoff_ms, 2000);
	/* The server comes up; after the backoff a connect succeeds and
	 * resets it. */
	ts_listen(t);
	treq_init(&r[2], "b2.test", 3);
	ck_assert_int_eq(send_q(u, &up, &r[2]), -ECONNREFUSED);
	clock_set_fake_ms(now += 2001);
	ck_assert_int_eq(send_q(u, &up, &r[2]), 0);
	RUN_UNTIL(r[2].ndone == 1);
	answered_ok(&r[2]);
	st = stats(u, &up);
	ck_assert_uint_eq(st.backoff_ms, 0);
	ck_assert_uint_eq(st.connect_failures, 2);
	ck_assert_uint_eq(st.conns_opened, 3);
	ck_assert_int_eq(r[1].ndone, 1);
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(tcp_caps)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn_params p = params();
	struct upconn *u;
	struct upconn_stats st;
	struct treq r[7];
	char name[32];

	p.max_conns = 2;
	p.max_inflight = 2;
	p.max_queued = 2;
	u = pool(&p);
	t->hold = true;
	for (int i = 0; i < 7; i++) {
		snprintf(name, sizeof(name), "c%d.test", i);
		treq_init(&r[i], name, (uint16_t)(200 + i));
	}
	/* Two wait for the first connection; a third finds the queue full. */
	ck_assert_int_eq(send_q(u, &up, &r[0]), 0);
	ck_assert_int_eq(send_q(u, &up, &r[1]), 0);
	ck_assert_int_eq(send_q(u, &up, &r[2]), -EAGAIN);
	RUN_UNTIL(t->queries == 2);
	ck_assert_int_eq(t->accepts, 1);
	/* The first connection is full: a second one opens. */
	ck_assert_int_eq(send_q(u, &up, &r[2]), 0);
	ck_assert_int_eq(send_q(u, &up, &r[3]), 0);
	RUN_UNTIL(t->queries == 4);
	ck_assert_int_eq(t->accepts, 2);
	/* Both full and no third allowed: two wait, the next is refused. */
	ck_assert_int_eq(send_q(u, &up, &r[4]), 0);
	ck_assert_int_eq(send_q(u, &up, &r[5]), 0);
	ck_assert_int_eq(send_q(u, &up, &r[6]), -EAGAIN);
	ts_release(t);
	RUN_UNTIL(t->queries == 6);
	ts_release(t);
	RUN_UNTIL(all_done(r, 6));
	for (int i = 0; i < 6; i++)
		answered_ok(&r[i]);
	ck_assert_int_eq(r[6].ndone, 0);
	ck_assert_int_eq(t->accepts, 2);
	st = stats(u, &up);
	ck_assert_uint_eq(st.conns_opened, 2);
	ck_assert_uint_eq(st.queries, 6);
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(tcp_cancel)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn_params p = params();
	struct upconn *u;
	struct treq r[4];

	p.max_inflight = 2;
	p.max_conns = 1;
	u = pool(&p);
	t->hold = true;
	treq_init(&r[0], "k0.test", 10);
	treq_init(&r[1], "k1.test", 11);
	treq_init(&r[2], "k2.test", 12); /* waits in the queue */
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(send_q(u, &up, &r[i]), 0);
	RUN_UNTIL(t->queries == 2);
	cancel_q(u, &r[0]); /* in flight */
	cancel_q(u, &r[2]); /* queued */
	cancel_q(u, &r[2]); /* twice: harmless */
	ts_release(t);
	RUN_UNTIL(r[1].ndone == 1);
	answered_ok(&r[1]);
	/* The cancelled query's answer came first and was dropped; the
	 * queued one was never sent. */
	ck_assert_int_eq(r[0].ndone, 0);
	ck_assert_int_eq(r[2].ndone, 0);
	ck_assert_int_eq(t->queries, 2);
	/* The connection stays. */
	t->hold = false;
	treq_init(&r[3], "k3.test", 13);
	ck_assert_int_eq(send_q(u, &up, &r[3]), 0);
	RUN_UNTIL(r[3].ndone == 1);
	answered_ok(&r[3]);
	ck_assert_int_eq(t->accepts, 1);
	ck_assert_int_eq(r[0].ndone, 0);
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(tcp_cancel_while_connecting)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn *u = pool(NULL);
	struct treq r[2];

	treq_init(&r[0], "w0.test", 20);
	treq_init(&r[1], "w1.test", 21);
	ck_assert_int_eq(send_q(u, &up, &r[0]), 0);
	cancel_q(u, &r[0]);
	ck_assert_int_eq(send_q(u, &up, &r[1]), 0);
	RUN_UNTIL(r[1].ndone == 1);
	answered_ok(&r[1]);
	ck_assert_int_eq(r[0].ndone, 0);
	ck_assert_int_eq(t->queries, 1);
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(tcp_keepalive_zero_drains)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn *u = pool(NULL);
	struct treq r[2];

	t->keepalive = 0; /* RFC 7828: close once idle, send nothing more */
	treq_init(&r[0], "z0.test", 1);
	ck_assert_int_eq(send_q(u, &up, &r[0]), 0);
	RUN_UNTIL(r[0].ndone == 1);
	answered_ok(&r[0]);
	RUN_UNTIL(t->eofs == 1);
	ck_assert_int_eq(t->eofs, 1);
	treq_init(&r[1], "z1.test", 2);
	ck_assert_int_eq(send_q(u, &up, &r[1]), 0);
	RUN_UNTIL(r[1].ndone == 1);
	answered_ok(&r[1]);
	ck_assert_int_eq(t->accepts, 2);
	upconn_free(u);
	ts_free(t);
}
END_TEST

/* done() of the first answer sends a follow-up and cancels a third query
 * on the same connection. */
static struct upconn *re_u;
static const struct config_upstream *re_up;
static struct treq *re_next, *re_victim;

static void
reentrant_done_cb(
    struct upconn_req *req, const uint8_t *msg, size_t len, int err)
{
	treq_done_cb(req, msg, len, err);
	ck_assert_int_eq(
	    upconn_send(re_u, re_up, &re_next->req, re_next->q, re_next->qlen),
	    0);
	upconn_cancel(re_u, &re_victim->req);
}

START_TEST(tcp_reentrant_done)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn *u = pool(NULL);
	struct treq r[3];

	t->hold = true;
	treq_init(&r[0], "e0.test", 1);
	treq_init(&r[1], "e1.test", 2); /* sent from r[0]'s done() */
	treq_init(&r[2], "e2.test", 3); /* cancelled from r[0]'s done() */
	r[0].req.done = reentrant_done_cb;
	re_u = u;
	re_up = &up;
	re_next = &r[1];
	re_victim = &r[2];
	ck_assert_int_eq(send_q(u, &up, &r[0]), 0);
	ck_assert_int_eq(send_q(u, &up, &r[2]), 0);
	RUN_UNTIL(t->queries == 2);
	t->hold = false;
	ts_release(t);
	RUN_UNTIL(r[1].ndone == 1);
	answered_ok(&r[0]);
	answered_ok(&r[1]);
	ck_assert_int_eq(r[2].ndone, 0);
	ck_assert_int_eq(t->accepts, 1);
	upconn_free(u);
	ts_free(t);
}
END_TEST

struct reader {
	struct upconn *u;
	struct config_upstream up;
	atomic_bool stop;
	_Atomic uint64_t max_queries;
	_Atomic long reads;
};

static void *
reader_main(void *arg)
{
	struct reader *rd = arg;
	struct upconn_stats st;

	while (!atomic_load(&rd->stop)) {
		if (upconn_get_stats(rd->u, &rd->up, &st) == 0 &&
		    st.queries > atomic_load(&rd->max_queries))
			atomic_store(&rd->max_queries, st.queries);
		atomic_fetch_add(&rd->reads, 1);
	}
	return NULL;
}

START_TEST(stats_from_another_thread)
{
	struct tsrv *t = ts_new(NULL, true);
	struct reader rd;
	struct treq r[30];
	pthread_t th;
	char name[32];

	memset(&rd, 0, sizeof(rd));
	rd.u = pool(NULL);
	rd.up = upstream("tcp://127.0.0.1:%d", t->port);
	atomic_init(&rd.stop, false);
	ck_assert_int_eq(pthread_create(&th, NULL, reader_main, &rd), 0);
	for (int i = 0; i < 30; i++) {
		snprintf(name, sizeof(name), "s%d.test", i);
		treq_init(&r[i], name, (uint16_t)i);
		ck_assert_int_eq(send_q(rd.u, &rd.up, &r[i]), 0);
		/* Queries one at a time, so the reader sees counts move. */
		RUN_UNTIL(r[i].ndone == 1);
		answered_ok(&r[i]);
	}
	/* The reader may not have run yet: let it catch up (bounded). */
	for (long i = 0; i < 100000000 && atomic_load(&rd.max_queries) < 30;
	     i++)
		sched_yield();
	atomic_store(&rd.stop, true);
	pthread_join(th, NULL);
	ck_assert_uint_eq(atomic_load(&rd.max_queries), 30);
	ck_assert_int_gt(atomic_load(&rd.reads), 0);
	upconn_free(rd.u);
	ts_free(t);
}
END_TEST

/* A done() run by upconn_free cancels another pending request. */
static struct treq *fc_victim;
static struct upconn *fc_u;

static void
free_cancel_done_cb(
    struct upconn_req *req, const uint8_t *msg, size_t len, int err)
{
	treq_done_cb(req, msg, len, err);
	upconn_cancel(fc_u, &fc_victim->req);
}

START_TEST(free_done_cancels_another)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn *u = pool(NULL);
	struct treq r[3];

	t->hold = true;
	for (int i = 0; i < 3; i++) {
		treq_init(&r[i], "fc.test", (uint16_t)(50 + i));
		r[i].req.done = free_cancel_done_cb;
		ck_assert_int_eq(send_q(u, &up, &r[i]), 0);
	}
	RUN_UNTIL(t->queries == 3);
	fc_u = u;
	fc_victim = &r[1];
	r[1].req.done = treq_done_cb;
	r[2].req.done = treq_done_cb;
	upconn_free(u);
	ck_assert_int_eq(r[0].ndone, 1);
	ck_assert_int_eq(r[0].err, -ECANCELED);
	ck_assert_int_eq(r[1].ndone, 0); /* cancelled from r[0]'s done() */
	ck_assert_int_eq(r[2].ndone, 1);
	ck_assert_int_eq(r[2].err, -ECANCELED);
	ts_free(t);
}
END_TEST

START_TEST(free_with_pending)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct config_upstream down = upstream("tcp://127.0.0.1:%d", 1);
	struct upconn_params p = params();
	struct upconn *u;
	struct treq r[4];

	p.max_inflight = 2;
	p.max_conns = 1;
	u = pool(&p);
	t->hold = true;
	for (int i = 0; i < 3; i++) {
		treq_init(&r[i], "f.test", (uint16_t)(30 + i));
		ck_assert_int_eq(send_q(u, &up, &r[i]), 0);
	}
	RUN_UNTIL(t->queries == 2);
	/* One more still connecting. */
	treq_init(&r[3], "f.test", 33);
	ck_assert_int_eq(send_q(u, &down, &r[3]), 0);
	upconn_free(u);
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(r[i].ndone, 1);
		ck_assert_int_eq(r[i].err, -ECANCELED);
	}
	RUN_UNTIL(t->eofs == 1);
	ck_assert_int_eq(t->eofs, 1);
	ts_free(t);
}
END_TEST

START_TEST(oneshot_no_matching)
{
	struct tsrv *t = ts_new(NULL, true);
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn *u = pool(NULL);
	struct treq r[2];

	t->mangle_id = true; /* answers do not carry the query's ID */
	treq_init(&r[0], "o0.test", 0x0101);
	treq_init(&r[1], "o1.test", 0x0202);
	for (int i = 0; i < 2; i++) {
		in_call = true;
		ck_assert_int_eq(
		    upconn_send_oneshot(u, &up, &r[i].req, r[i].q, r[i].qlen),
		    0);
		in_call = false;
	}
	RUN_UNTIL(all_done(r, 2));
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(r[i].err, 0);
		/* Handed over as received. */
		ck_assert_uint_eq(WIRE_ID(r[i].ans), (uint16_t)~r[i].id);
	}
	ck_assert_int_eq(t->accepts, 2);
	/* Sent as given: no keepalive added. */
	for (int i = 0; i < t->nids; i++) {
		ck_assert_uint_eq(t->qlens[i], r[0].qlen);
		ck_assert(!t->had_keepalive[i]);
	}
	RUN_UNTIL(t->eofs == 2);
	ck_assert_int_eq(t->eofs, 2);
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(bad_arguments)
{
	struct config_upstream up = upstream("tcp://127.0.0.1:%d", 9);
	struct config_upstream tls = upstream("tls://127.0.0.1:%d#x.test", 9);
	struct upconn_params p = params();
	struct upconn *u = pool(NULL);
	struct upconn_stats st;
	struct treq r;
	char err[256];

	treq_init(&r, "a.test", 1);
	ck_assert_int_eq(upconn_send(u, &up, &r.req, r.q, 11), -EINVAL);
	tls.name[0] = '\0';
	ck_assert_int_eq(send_q(u, &tls, &r), -EINVAL);
	ck_assert_int_eq(upconn_get_stats(u, &up, &st), -ENOENT);
	ck_assert_str_eq(upconn_last_error(u, &up), "");
	upconn_free(u);
	upconn_free(NULL);
	p.tls_ca_file = "/nonexistent/ca.pem";
	ck_assert_ptr_null(upconn_new(base, &p, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "/nonexistent/ca.pem"));
	p = params();
	p.max_inflight = 0;
	ck_assert_ptr_null(upconn_new(base, &p, err, sizeof(err)));
}
END_TEST

/* ---- TLS ---- */

static int64_t
not_after(X509 *x)
{
	struct tm tm;

	ck_assert_int_eq(ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm), 1);
	return (int64_t)timegm(&tm);
}

START_TEST(tls_answers_one_handshake)
{
	struct tsrv *t = ts_new(server_ctx(cert_ok), true);
	struct config_upstream up =
	    upstream("tls://127.0.0.1:%d#" TLS_NAME, t->port);
	struct upconn *u = pool(NULL);
	struct upconn_stats st;
	struct treq r[10];
	char name[32];

	for (int i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "t%d.test", i);
		treq_init(&r[i], name, (uint16_t)(300 + i));
		ck_assert_int_eq(send_q(u, &up, &r[i]), 0);
	}
	RUN_UNTIL(all_done(r, 10));
	for (int i = 0; i < 10; i++)
		answered_ok(&r[i]);
	ck_assert_int_eq(t->accepts, 1);
	ck_assert_int_eq(t->handshakes, 1);
	ck_assert_int_eq(t->not_tls, 0);
	st = stats(u, &up);
	ck_assert_uint_eq(st.handshakes, 1);
	ck_assert_uint_eq(st.handshake_failures, 0);
	ck_assert_uint_eq(st.queries_reused, 9);
	ck_assert_int_eq(st.cert_not_after, not_after(cert_ok));
	/* Padded to 128-octet blocks (RFC 8467). */
	for (int i = 0; i < t->nids; i++)
		ck_assert_uint_eq(t->qlens[i] % 128, 0);
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(tls_resumption)
{
	struct tsrv *t = ts_new(server_ctx(cert_ok), true);
	struct config_upstream up =
	    upstream("tls://127.0.0.1:%d#" TLS_NAME, t->port);
	struct upconn_params p = params();
	struct upconn *u;
	struct treq r[2];

	p.idle_timeout_ms = 20; /* so the second query needs a new connection */
	u = pool(&p);
	treq_init(&r[0], "r0.test", 1);
	ck_assert_int_eq(send_q(u, &up, &r[0]), 0);
	RUN_UNTIL(r[0].ndone == 1);
	answered_ok(&r[0]);
	RUN_UNTIL(t->eofs == 1);
	ck_assert_int_eq(t->eofs, 1);
	treq_init(&r[1], "r1.test", 2);
	ck_assert_int_eq(send_q(u, &up, &r[1]), 0);
	RUN_UNTIL(r[1].ndone == 1);
	answered_ok(&r[1]);
	ck_assert_int_eq(t->accepts, 2);
	ck_assert_int_eq(t->handshakes, 2);
	ck_assert_int_eq(t->resumed, 1); /* SSL_session_reused, server side */
	ck_assert_uint_eq(stats(u, &up).resumed, 1);
	ck_assert_int_eq(t->not_tls, 0);
	upconn_free(u);
	ts_free(t);
}
END_TEST

/* A handshake that must fail: err and reason, nothing but TLS records on
 * the wire, no application data, and again after the backoff. */
static void
tls_rejected(X509 *cert, SSL_CTX *ctx, int want_err, const char *want_stat,
    const char *want_text)
{
	struct tsrv *t = ts_new(ctx ? ctx : server_ctx(cert), true);
	struct config_upstream up =
	    upstream("tls://127.0.0.1:%d#" TLS_NAME, t->port);
	struct upconn *u;
	struct upconn_stats st;
	struct treq r[4];
	uint64_t now = T0;

	clock_set_fake_ms(now);
	u = pool(NULL);
	treq_init(&r[0], "bad0.test", 1);
	treq_init(&r[1], "bad1.test", 2);
	ck_assert_int_eq(send_q(u, &up, &r[0]), 0);
	ck_assert_int_eq(send_q(u, &up, &r[1]), 0);
	RUN_UNTIL(all_done(r, 2));
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(r[i].ndone, 1);
		ck_assert_int_eq(r[i].err, want_err);
	}
	st = stats(u, &up);
	ck_assert_str_eq(st.last_error, want_stat);
	ck_assert_msg(strstr(upconn_last_error(u, &up), want_text) != NULL,
	    "last error \"%s\" lacks \"%s\"", upconn_last_error(u, &up),
	    want_text);
	ck_assert_uint_eq(st.handshake_failures, 1);
	ck_assert_uint_eq(st.handshakes, 0);
	/* Fast failure in backoff, then TLS again, never clear text. */
	treq_init(&r[2], "bad2.test", 3);
	ck_assert_int_eq(send_q(u, &up, &r[2]), -ECONNREFUSED);
	clock_set_fake_ms(now + 600000);
	treq_init(&r[3], "bad3.test", 4);
	ck_assert_int_eq(send_q(u, &up, &r[3]), 0);
	RUN_UNTIL(r[3].ndone == 1);
	ck_assert_int_eq(r[3].err, want_err);
	RUN_UNTIL(t->eofs == 2);
	ck_assert_int_eq(t->accepts, 2);
	ck_assert_int_eq(t->not_tls, 0);
	ck_assert_uint_eq(t->app_bytes, 0);
	ck_assert_int_eq(t->queries, 0);
	ck_assert_uint_eq(stats(u, &up).handshake_failures, 2);
	upconn_free(u);
	ts_free(t);
}

START_TEST(tls_wrong_name)
{
	tls_rejected(cert_wrong_name, NULL, -EKEYREJECTED,
	    "certificate name mismatch", "does not name " TLS_NAME);
}
END_TEST

START_TEST(tls_expired)
{
	tls_rejected(
	    cert_expired, NULL, -EKEYEXPIRED, "certificate expired", "expired");
}
END_TEST

START_TEST(tls_unknown_ca)
{
	tls_rejected(cert_other_ca, NULL, -EKEYREJECTED,
	    "certificate signed by an unknown CA", "unknown CA");
}
END_TEST

START_TEST(tls_old_version_refused)
{
	SSL_CTX *ctx = server_ctx(cert_ok);

	SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_1_VERSION);
	SSL_CTX_set_security_level(ctx, 0);
	tls_rejected(NULL, ctx, -EPROTO, "TLS handshake failed", "TLS");
}
END_TEST

START_TEST(tls_handshake_timeout)
{
	struct tsrv *t = ts_new(server_ctx(cert_ok), true);
	struct config_upstream up =
	    upstream("tls://127.0.0.1:%d#" TLS_NAME, t->port);
	struct upconn_params p = params();
	struct upconn *u;
	struct treq r;

	t->mute = true; /* accepts, never answers the ClientHello */
	p.connect_timeout_ms = 100;
	u = pool(&p);
	treq_init(&r, "slow.test", 5);
	ck_assert_int_eq(send_q(u, &up, &r), 0);
	RUN_UNTIL(r.ndone == 1);
	ck_assert_int_eq(r.ndone, 1);
	ck_assert_int_eq(r.err, -ETIMEDOUT);
	ck_assert_uint_eq(stats(u, &up).backoff_ms, p.backoff_min_ms);
	upconn_free(u);
	ts_free(t);
}
END_TEST

START_TEST(tls_and_tcp_are_separate)
{
	/* The same address as tcp:// and tls://: two servers, and the TLS
	 * one never gets clear text. */
	struct tsrv *t = ts_new(server_ctx(cert_ok), true);
	struct config_upstream tls =
	    upstream("tls://127.0.0.1:%d#" TLS_NAME, t->port);
	struct config_upstream tcp = upstream("tcp://127.0.0.1:%d", t->port);
	struct upconn *u = pool(NULL);
	struct treq r[2];

	treq_init(&r[0], "s0.test", 1);
	ck_assert_int_eq(send_q(u, &tls, &r[0]), 0);
	RUN_UNTIL(r[0].ndone == 1);
	answered_ok(&r[0]);
	ck_assert_int_eq(t->not_tls, 0);
	/* A tcp:// query to the same port is clear text, on its own
	 * connection: the TLS server sees it as garbage. */
	treq_init(&r[1], "s1.test", 2);
	ck_assert_int_eq(send_q(u, &tcp, &r[1]), 0);
	RUN_UNTIL(t->not_tls == 1);
	ck_assert_int_eq(t->not_tls, 1);
	ck_assert_int_eq(t->accepts, 2);
	ck_assert_uint_eq(stats(u, &tls).queries, 1);
	ck_assert_uint_eq(stats(u, &tcp).queries, 1);
	upconn_free(u);
	ts_free(t);
}
END_TEST

static Suite *
make_suite(void)
{
	Suite *s = suite_create("upconn");
	TCase *tcp = tcase_create("tcp");
	TCase *tls = tcase_create("tls");

	tcase_add_checked_fixture(tcp, setup, teardown);
	tcase_add_checked_fixture(tls, setup, teardown);
	tcase_set_timeout(tcp, 30);
	tcase_set_timeout(tls, 30);
	tcase_add_test(tcp, tcp_pipelined_out_of_order);
	tcase_add_test(tcp, tcp_one_connection_for_many);
	tcase_add_test(tcp, tcp_duplicate_ids_rewritten);
	tcase_add_test(tcp, tcp_keepalive_closes_idle);
	tcase_add_test(tcp, tcp_idle_timeout);
	tcase_add_test(tcp, tcp_server_closes_idle_reopened);
	tcase_add_test(tcp, tcp_midway_close_retried_once);
	tcase_add_test(tcp, tcp_midway_close_twice_fails);
	tcase_add_test(tcp, tcp_backoff_after_refused);
	tcase_add_test(tcp, tcp_caps);
	tcase_add_test(tcp, tcp_cancel);
	tcase_add_test(tcp, tcp_cancel_while_connecting);
	tcase_add_test(tcp, tcp_keepalive_zero_drains);
	tcase_add_test(tcp, tcp_reentrant_done);
	tcase_add_test(tcp, stats_from_another_thread);
	tcase_add_test(tcp, free_with_pending);
	tcase_add_test(tcp, free_done_cancels_another);
	tcase_add_test(tcp, oneshot_no_matching);
	tcase_add_test(tcp, bad_arguments);
	tcase_add_test(tls, tls_answers_one_handshake);
	tcase_add_test(tls, tls_resumption);
	tcase_add_test(tls, tls_wrong_name);
	tcase_add_test(tls, tls_expired);
	tcase_add_test(tls, tls_unknown_ca);
	tcase_add_test(tls, tls_old_version_refused);
	tcase_add_test(tls, tls_handshake_timeout);
	tcase_add_test(tls, tls_and_tcp_are_separate);
	suite_add_tcase(s, tcp);
	suite_add_tcase(s, tls);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	/* Made once here, inherited by the forked tests. */
	if (rng_init() != 0)
		return EXIT_FAILURE;
	/* As the daemon does: a peer that closed is an error, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	certs_init();
	sr = srunner_create(make_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	certs_cleanup();
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
