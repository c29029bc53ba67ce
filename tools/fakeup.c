/*
 * fakeup: a fault-injecting DNS upstream for stubborn's tests.
 *
 * Every name exists: answers are synthesized from the query name (see
 * tools/fakeup.md for the conventions), so tests need no zone files and
 * can predict each answer.  A text control port switches the fault mode
 * while the server runs, so one instance can serve a whole test scenario.
 *
 * Single-threaded on one libevent base.  Anything that does not parse as
 * a query is dropped silently: the point is to misbehave on purpose, not
 * by accident.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <ldns/ldns.h>
#include <sodium.h>

#define EDNS_SIZE 1232
#define BIG_TXT_RRS 11
#define BIG_ADDR_RRS 40
#define CTL_LINE_MAX 1024
#define UDP_BATCH 64

enum mode {
	MODE_NORMAL,
	MODE_DROP,
	MODE_DELAY,
	MODE_SERVFAIL,
	MODE_REFUSED,
	MODE_NXDOMAIN,
	MODE_TRUNCATE,
	MODE_WRONGID,
	MODE_WRONGQUESTION,
	MODE_GARBAGE,
	MODE_FORMERR_EDNS,
	MODE_WRONGPORT,
	MODE_CLOSE,
	MODE_LOWERCASE,
	MODE_COUNT
};

static const char *const mode_names[MODE_COUNT] = {
    [MODE_NORMAL] = "normal",
    [MODE_DROP] = "drop",
    [MODE_DELAY] = "delay",
    [MODE_SERVFAIL] = "servfail",
    [MODE_REFUSED] = "refused",
    [MODE_NXDOMAIN] = "nxdomain",
    [MODE_TRUNCATE] = "truncate",
    [MODE_WRONGID] = "wrongid",
    [MODE_WRONGQUESTION] = "wrongquestion",
    [MODE_GARBAGE] = "garbage",
    [MODE_FORMERR_EDNS] = "formerr-edns",
    [MODE_WRONGPORT] = "wrongport",
    [MODE_CLOSE] = "close",
    [MODE_LOWERCASE] = "lowercase",
};

/* What the transport should do with a query once it has been looked at. */
enum action {
	ACT_NONE,
	ACT_REPLY,
	ACT_CLOSE,
};

struct listener {
	int udp_fd;
	/* Second UDP socket on another port, for the wrongport mode. */
	int alt_fd;
	struct event *udp_ev;
	struct evconnlistener *tcp;
	struct listener *next;
};

struct tcp_conn;

/* A reply held back by the delay mode until its timer fires. */
struct pending {
	struct event *timer;
	uint8_t *wire;
	size_t len;
	int fd;
	struct sockaddr_storage peer;
	socklen_t peerlen;
	struct tcp_conn *conn;
	struct pending *prev, *next;
};

struct tcp_conn {
	struct bufferevent *bev;
	/* Delayed replies still owed; freed with the connection. */
	struct pending *pending;
	/* Peer sent EOF: close once the owed replies have gone out. */
	bool closing;
};

struct ctl_conn {
	struct bufferevent *bev;
	bool quitting;
};

static struct {
	struct event_base *base;
	enum mode mode;
	unsigned delay_ms;
	uint32_t zone_ttl;
	uint32_t neg_ttl;
	FILE *log;
	const char *pidfile;
	unsigned long long n_udp, n_tcp;
	/* Flips per garbage reply so both kinds of garbage get exercised. */
	unsigned garbage_turn;
	struct listener *listeners;
} g = {
    .mode = MODE_NORMAL,
    .zone_ttl = 300,
    .neg_ttl = 60,
};

static void die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("fakeup: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static void warnmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
warnmsg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("fakeup: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- mode parsing ---- */

/*
 * Accepts "NAME" and, for delay, "delay MS", "delay:MS" or "delay=MS" so
 * the same spelling works on the command line and on the control port.
 */
static int
parse_mode(const char *s, enum mode *mode, unsigned *delay_ms)
{
	char name[32];
	size_t n = strcspn(s, " \t:=");
	const char *arg;

	if (n == 0 || n >= sizeof(name))
		return -1;
	memcpy(name, s, n);
	name[n] = '\0';
	arg = s + n;
	arg += strspn(arg, " \t:=");

	for (int m = 0; m < MODE_COUNT; m++) {
		if (strcmp(name, mode_names[m]) != 0)
			continue;
		if (m == MODE_DELAY) {
			char *end;
			unsigned long ms;

			if (*arg == '\0')
				return -1;
			errno = 0;
			ms = strtoul(arg, &end, 10);
			end += strspn(end, " \t");
			if (errno || *end != '\0' || ms > 3600000)
				return -1;
			*delay_ms = (unsigned)ms;
		} else if (*arg != '\0') {
			return -1;
		}
		*mode = (enum mode)m;
		return 0;
	}
	return -1;
}

/* ---- answer synthesis ---- */

static uint32_t
fnv1a(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 16777619u;
	}
	return h;
}

/*
 * Hash over the lower-cased presentation form ("www.example.") because
 * that is what a test script can recompute without a DNS library.
 */
static uint32_t
name_hash(const ldns_rdf *name)
{
	ldns_rdf *lower = ldns_rdf_clone(name);
	char *s;
	uint32_t h;

	ldns_dname2canonical(lower);
	s = ldns_rdf2str(lower);
	h = s ? fnv1a(s) : 0;
	free(s);
	ldns_rdf_deep_free(lower);
	return h;
}

/* Lower-cased first label as a C string; "" for the root. */
static void
first_label(const ldns_rdf *name, char out[64])
{
	const uint8_t *d = ldns_rdf_data(name);
	size_t n = ldns_rdf_size(name) ? d[0] : 0;

	if (n > 63)
		n = 63;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = d[1 + i];

		out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : (char)c;
		/* An embedded NUL would cut the label short in strcmp. */
		if (out[i] == '\0')
			out[i] = '?';
	}
	out[n] = '\0';
}

static ldns_rdf *
parent_name(const ldns_rdf *name)
{
	const uint8_t *d = ldns_rdf_data(name);
	size_t len = ldns_rdf_size(name);
	size_t skip;

	if (len <= 1)
		return ldns_dname_new_frm_str(".");
	skip = 1 + (size_t)d[0];
	if (skip >= len)
		return ldns_dname_new_frm_str(".");
	return ldns_rdf_new_frm_data(LDNS_RDF_TYPE_DNAME, len - skip, d + skip);
}

/* label + "." + name, or NULL when that would exceed 255 octets. */
static ldns_rdf *
prefix_label(const char *label, const ldns_rdf *name)
{
	uint8_t buf[LDNS_MAX_DOMAINLEN + 1];
	size_t ll = strlen(label);
	size_t nl = ldns_rdf_size(name);

	if (ll == 0 || ll > 63 || 1 + ll + nl > LDNS_MAX_DOMAINLEN)
		return NULL;
	buf[0] = (uint8_t)ll;
	memcpy(buf + 1, label, ll);
	memcpy(buf + 1 + ll, ldns_rdf_data(name), nl);
	return ldns_rdf_new_frm_data(LDNS_RDF_TYPE_DNAME, 1 + ll + nl, buf);
}

static ldns_rr *
new_rr(const ldns_rdf *owner, ldns_rr_type type, uint32_t ttl)
{
	ldns_rr *rr = ldns_rr_new();

	ldns_rr_set_owner(rr, ldns_rdf_clone(owner));
	ldns_rr_set_type(rr, type);
	ldns_rr_set_class(rr, LDNS_RR_CLASS_IN);
	ldns_rr_set_ttl(rr, ttl);
	return rr;
}

static ldns_rr *
soa_rr(const ldns_rdf *zone)
{
	ldns_rr *rr = new_rr(zone, LDNS_RR_TYPE_SOA, g.zone_ttl);

	ldns_rr_push_rdf(rr, ldns_dname_new_frm_str("ns.fakeup."));
	ldns_rr_push_rdf(rr, ldns_dname_new_frm_str("hostmaster.fakeup."));
	ldns_rr_push_rdf(rr, ldns_native2rdf_int32(LDNS_RDF_TYPE_INT32, 1));
	ldns_rr_push_rdf(rr, ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, 3600));
	ldns_rr_push_rdf(rr, ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, 600));
	ldns_rr_push_rdf(
	    rr, ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, 86400));
	ldns_rr_push_rdf(
	    rr, ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, g.neg_ttl));
	return rr;
}

/* The SOA a negative answer for `name` carries: owned by its parent. */
static void
push_negative_soa(ldns_pkt *p, const ldns_rdf *name)
{
	ldns_rdf *zone = parent_name(name);

	if (zone == NULL)
		return;
	ldns_pkt_push_rr(p, LDNS_SECTION_AUTHORITY, soa_rr(zone));
	ldns_rdf_deep_free(zone);
}

static void
push_a(ldns_pkt *p, const ldns_rdf *owner, uint32_t ttl, uint32_t h, int last)
{
	uint8_t a[4] = {10, (uint8_t)(h >> 16), (uint8_t)(h >> 8),
	    last < 0 ? (uint8_t)h : (uint8_t)last};
	ldns_rr *rr = new_rr(owner, LDNS_RR_TYPE_A, ttl);

	ldns_rr_push_rdf(rr, ldns_rdf_new_frm_data(LDNS_RDF_TYPE_A, 4, a));
	ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, rr);
}

static void
push_aaaa(
    ldns_pkt *p, const ldns_rdf *owner, uint32_t ttl, uint32_t h, int last)
{
	uint8_t a[16] = {0xfd};
	ldns_rr *rr = new_rr(owner, LDNS_RR_TYPE_AAAA, ttl);

	if (last < 0) {
		a[12] = (uint8_t)(h >> 24);
		a[13] = (uint8_t)(h >> 16);
		a[14] = (uint8_t)(h >> 8);
		a[15] = (uint8_t)h;
	} else {
		a[8] = (uint8_t)(h >> 24);
		a[9] = (uint8_t)(h >> 16);
		a[10] = (uint8_t)(h >> 8);
		a[11] = (uint8_t)h;
		a[15] = (uint8_t)last;
	}
	ldns_rr_push_rdf(rr, ldns_rdf_new_frm_data(LDNS_RDF_TYPE_AAAA, 16, a));
	ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, rr);
}

static void
push_txt(ldns_pkt *p, const ldns_rdf *owner, uint32_t ttl, const char *text,
    size_t len)
{
	uint8_t buf[256];
	ldns_rr *rr = new_rr(owner, LDNS_RR_TYPE_TXT, ttl);

	if (len > 255)
		len = 255;
	buf[0] = (uint8_t)len;
	memcpy(buf + 1, text, len);
	ldns_rr_push_rdf(
	    rr, ldns_rdf_new_frm_data(LDNS_RDF_TYPE_STR, len + 1, buf));
	ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, rr);
}

/*
 * Positive data for `name` (not a special name apart from big); returns
 * how many answer records were added so the caller can fall back to
 * NODATA.
 */
static size_t
push_data(ldns_pkt *p, const ldns_rdf *name, ldns_rr_type qtype, uint32_t ttl,
    bool big)
{
	uint32_t h = name_hash(name);

	switch (qtype) {
	case LDNS_RR_TYPE_A:
		if (!big) {
			push_a(p, name, ttl, h, -1);
			return 1;
		}
		for (int i = 1; i <= BIG_ADDR_RRS; i++)
			push_a(p, name, ttl, h, i);
		return BIG_ADDR_RRS;
	case LDNS_RR_TYPE_AAAA:
		if (!big) {
			push_aaaa(p, name, ttl, h, -1);
			return 1;
		}
		for (int i = 1; i <= BIG_ADDR_RRS; i++)
			push_aaaa(p, name, ttl, h, i);
		return BIG_ADDR_RRS;
	case LDNS_RR_TYPE_TXT:
		if (big) {
			char s[256];

			for (int i = 0; i < BIG_TXT_RRS; i++) {
				/* Records of an RRset must differ. */
				memset(s, 'a' + i, 255);
				memcpy(s, "big-", 4);
				s[4] = (char)('0' + i / 10);
				s[5] = (char)('0' + i % 10);
				s[6] = '-';
				push_txt(p, name, ttl, s, 255);
			}
			return BIG_TXT_RRS;
		} else {
			ldns_rdf *lower = ldns_rdf_clone(name);
			char *s;

			ldns_dname2canonical(lower);
			s = ldns_rdf2str(lower);
			push_txt(p, name, ttl, s ? s : "", s ? strlen(s) : 0);
			free(s);
			ldns_rdf_deep_free(lower);
			return 1;
		}
	case LDNS_RR_TYPE_MX: {
		ldns_rr *rr = new_rr(name, LDNS_RR_TYPE_MX, ttl);

		ldns_rr_push_rdf(
		    rr, ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, 10));
		ldns_rr_push_rdf(rr, ldns_rdf_clone(name));
		ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, rr);
		return 1;
	}
	default:
		return 0;
	}
}

static bool
has_prefix_label(const char *label, const char *word)
{
	size_t n = strlen(word);

	return strncmp(label, word, n) == 0 &&
	    (label[n] == '\0' || label[n] == '-');
}

/* TTL from a first label "ttlN"; false when the label is not that. */
static bool
label_ttl(const char *label, uint32_t *ttl)
{
	unsigned long v = 0;
	const char *s = label + 3;

	if (strncmp(label, "ttl", 3) != 0 || *s == '\0')
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > INT32_MAX)
			return false;
	}
	*ttl = (uint32_t)v;
	return true;
}

/* Fills answer/authority and the rcode of `p` for the name conventions. */
static void
synthesize(ldns_pkt *p, const ldns_rdf *qname, ldns_rr_type qtype)
{
	char label[64];
	uint32_t ttl = g.zone_ttl;

	first_label(qname, label);
	label_ttl(label, &ttl);

	if (has_prefix_label(label, "nx")) {
		ldns_pkt_set_rcode(p, LDNS_RCODE_NXDOMAIN);
		push_negative_soa(p, qname);
		return;
	}
	if (strcmp(label, "nodata") == 0) {
		push_negative_soa(p, qname);
		return;
	}
	if (strcmp(label, "cname") == 0) {
		ldns_rdf *zone = parent_name(qname);
		ldns_rdf *target = zone ? prefix_label("target", zone) : NULL;
		ldns_rr *rr;

		ldns_rdf_deep_free(zone);
		if (target == NULL) {
			push_negative_soa(p, qname);
			return;
		}
		rr = new_rr(qname, LDNS_RR_TYPE_CNAME, ttl);
		ldns_rr_push_rdf(rr, ldns_rdf_clone(target));
		ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, rr);
		if (qtype != LDNS_RR_TYPE_CNAME &&
		    push_data(p, target, qtype, ttl, false) == 0)
			push_negative_soa(p, target);
		ldns_rdf_deep_free(target);
		return;
	}
	if (push_data(p, qname, qtype, ttl, has_prefix_label(label, "big")) ==
	    0)
		push_negative_soa(p, qname);
}

/* ---- replies ---- */

/* Header and question of a reply to `q`, without any records yet. */
static ldns_pkt *
reply_skeleton(
    const ldns_pkt *q, const ldns_rdf *qname, uint8_t rcode, bool with_opt)
{
	const ldns_rr *qrr = ldns_rr_list_rr(ldns_pkt_question(q), 0);
	ldns_pkt *p = ldns_pkt_new();
	ldns_rr *rr = ldns_rr_new();

	ldns_pkt_set_id(p, ldns_pkt_id(q));
	ldns_pkt_set_qr(p, true);
	ldns_pkt_set_opcode(p, ldns_pkt_get_opcode(q));
	ldns_pkt_set_aa(p, true);
	ldns_pkt_set_rd(p, ldns_pkt_rd(q));
	ldns_pkt_set_ra(p, true);
	ldns_pkt_set_cd(p, ldns_pkt_cd(q));
	ldns_pkt_set_rcode(p, rcode);

	ldns_rr_set_question(rr, true);
	ldns_rr_set_owner(rr, ldns_rdf_clone(qname));
	ldns_rr_set_type(rr, ldns_rr_get_type(qrr));
	ldns_rr_set_class(rr, ldns_rr_get_class(qrr));
	ldns_pkt_push_rr(p, LDNS_SECTION_QUESTION, rr);

	if (with_opt) {
		ldns_pkt_set_edns_udp_size(p, EDNS_SIZE);
		ldns_pkt_set_edns_version(p, 0);
		ldns_pkt_set_edns_do(p, ldns_pkt_edns_do(q));
	}
	return p;
}

static uint8_t *
to_wire(const ldns_pkt *p, size_t *len)
{
	uint8_t *wire = NULL;

	if (ldns_pkt2wire(&wire, p, len) != LDNS_STATUS_OK) {
		warnmsg("cannot render a reply");
		free(wire);
		return NULL;
	}
	return wire;
}

static uint8_t *
garbage_reply(const uint8_t *q, size_t *len)
{
	uint8_t *out = malloc(40);

	if (out == NULL)
		return NULL;
	if (g.garbage_turn++ % 2 == 0) {
		randombytes_buf(out, 40);
		*len = 40;
		return out;
	}
	/* Matching ID and QR set so it passes a cheap check, then lies. */
	memset(out, 0, 12);
	out[0] = q[0];
	out[1] = q[1];
	out[2] = 0x80 | (q[2] & 0x01);
	out[3] = 0x80;
	out[5] = 1;
	out[7] = 5;
	*len = 12;
	return out;
}

static void
log_query(bool tcp, const ldns_pkt *q, const ldns_rr *qrr)
{
	char *name, *type;

	if (g.log == NULL)
		return;
	name = ldns_rdf2str(ldns_rr_owner(qrr));
	type = ldns_rr_type2str(ldns_rr_get_type(qrr));
	fprintf(g.log, "%s %s %s %u\n", tcp ? "tcp" : "udp", name ? name : "?",
	    type ? type : "?", ldns_pkt_id(q));
	fflush(g.log);
	free(name);
	free(type);
}

/*
 * Looks at one received message and decides the reply under the current
 * mode.  On ACT_REPLY *out is a malloc'd message of *outlen bytes.
 */
static enum action
handle_query(
    const uint8_t *msg, size_t len, bool tcp, uint8_t **out, size_t *outlen)
{
	ldns_pkt *q = NULL, *p = NULL;
	const ldns_rr *qrr;
	ldns_rdf *qname = NULL;
	bool has_opt;
	enum action act = ACT_NONE;

	*out = NULL;
	if (len < 12 || ldns_wire2pkt(&q, msg, len) != LDNS_STATUS_OK)
		return ACT_NONE;
	if (ldns_pkt_qr(q) || ldns_pkt_qdcount(q) != 1 ||
	    ldns_rr_list_rr_count(ldns_pkt_question(q)) != 1)
		goto out;
	qrr = ldns_rr_list_rr(ldns_pkt_question(q), 0);

	log_query(tcp, q, qrr);
	if (tcp)
		g.n_tcp++;
	else
		g.n_udp++;

	switch (g.mode) {
	case MODE_DROP:
		goto out;
	case MODE_CLOSE:
		act = tcp ? ACT_CLOSE : ACT_NONE;
		goto out;
	case MODE_GARBAGE:
		*out = garbage_reply(msg, outlen);
		act = *out ? ACT_REPLY : ACT_NONE;
		goto out;
	default:
		break;
	}

	has_opt = ldns_pkt_edns(q);
	qname = ldns_rdf_clone(ldns_rr_owner(qrr));
	if (g.mode == MODE_WRONGQUESTION) {
		ldns_rdf *x = prefix_label("x", qname);

		ldns_rdf_deep_free(qname);
		qname = x ? x : ldns_dname_new_frm_str("x.");
	}
	/* Like a server that does not preserve case: breaks 0x20 checks. */
	if (g.mode == MODE_LOWERCASE)
		ldns_dname2canonical(qname);

	if (ldns_pkt_get_opcode(q) != LDNS_PACKET_QUERY) {
		p = reply_skeleton(q, qname, LDNS_RCODE_NOTIMPL, has_opt);
	} else if (g.mode == MODE_FORMERR_EDNS && has_opt) {
		/* Like an old server that chokes on OPT: no OPT back. */
		p = reply_skeleton(q, qname, LDNS_RCODE_FORMERR, false);
	} else if (has_opt && ldns_pkt_edns_version(q) > 0) {
		/* BADVERS is 16: upper bits go in the OPT extended rcode. */
		p = reply_skeleton(q, qname, 0, true);
		ldns_pkt_set_edns_extended_rcode(p, 1);
	} else if (g.mode == MODE_SERVFAIL) {
		p = reply_skeleton(q, qname, LDNS_RCODE_SERVFAIL, has_opt);
	} else if (g.mode == MODE_REFUSED) {
		p = reply_skeleton(q, qname, LDNS_RCODE_REFUSED, has_opt);
	} else if (ldns_rr_get_class(qrr) != LDNS_RR_CLASS_IN) {
		p = reply_skeleton(q, qname, LDNS_RCODE_REFUSED, has_opt);
	} else if (g.mode == MODE_NXDOMAIN) {
		p = reply_skeleton(q, qname, LDNS_RCODE_NXDOMAIN, has_opt);
		push_negative_soa(p, qname);
	} else if (g.mode == MODE_TRUNCATE && !tcp) {
		p = reply_skeleton(q, qname, LDNS_RCODE_NOERROR, has_opt);
		ldns_pkt_set_tc(p, true);
	} else {
		p = reply_skeleton(q, qname, LDNS_RCODE_NOERROR, has_opt);
		synthesize(p, qname, ldns_rr_get_type(qrr));
	}

	*out = to_wire(p, outlen);
	if (*out == NULL)
		goto out;

	if (!tcp) {
		size_t limit = 512;

		if (has_opt && ldns_pkt_edns_udp_size(q) > limit)
			limit = ldns_pkt_edns_udp_size(q);
		if (*outlen > limit) {
			/* What real servers do: keep only header and question.
			 */
			ldns_pkt *t = reply_skeleton(
			    q, qname, ldns_pkt_get_rcode(p), has_opt);

			ldns_pkt_set_tc(t, true);
			free(*out);
			*out = to_wire(t, outlen);
			ldns_pkt_free(t);
			if (*out == NULL)
				goto out;
		}
	}

	if (g.mode == MODE_WRONGID) {
		uint16_t id = (uint16_t)(ldns_pkt_id(q) + 1);

		(*out)[0] = (uint8_t)(id >> 8);
		(*out)[1] = (uint8_t)id;
	}
	act = ACT_REPLY;
out:
	if (p)
		ldns_pkt_free(p);
	if (qname)
		ldns_rdf_deep_free(qname);
	ldns_pkt_free(q);
	return act;
}

/* ---- delayed replies ---- */

static void
tcp_send(struct tcp_conn *c, const uint8_t *wire, size_t len)
{
	uint8_t pfx[2] = {(uint8_t)(len >> 8), (uint8_t)len};
	struct evbuffer *o = bufferevent_get_output(c->bev);

	evbuffer_add(o, pfx, 2);
	evbuffer_add(o, wire, len);
}

static void
udp_send(int fd, const struct sockaddr *peer, socklen_t peerlen,
    const uint8_t *wire, size_t len)
{
	if (sendto(fd, wire, len, 0, peer, peerlen) < 0 && errno != EAGAIN &&
	    errno != EWOULDBLOCK)
		warnmsg("sendto: %s", strerror(errno));
}

static void tcp_conn_free(struct tcp_conn *c);

static void
pending_free(struct pending *pd)
{
	if (pd->conn) {
		if (pd->prev)
			pd->prev->next = pd->next;
		else
			pd->conn->pending = pd->next;
		if (pd->next)
			pd->next->prev = pd->prev;
	}
	event_free(pd->timer);
	free(pd->wire);
	free(pd);
}

static void
pending_fire(evutil_socket_t fd, short what, void *arg)
{
	struct pending *pd = arg;
	struct tcp_conn *c = pd->conn;

	(void)fd;
	(void)what;
	if (c) {
		tcp_send(c, pd->wire, pd->len);
	} else {
		udp_send(pd->fd, (struct sockaddr *)&pd->peer, pd->peerlen,
		    pd->wire, pd->len);
	}
	pending_free(pd);
	/* The write callback closes a half-closed connection when drained. */
}

/* Takes ownership of wire. */
static void
schedule_reply(uint8_t *wire, size_t len, struct tcp_conn *c, int fd,
    const struct sockaddr *peer, socklen_t peerlen)
{
	struct pending *pd = calloc(1, sizeof(*pd));
	struct timeval tv = {
	    .tv_sec = g.delay_ms / 1000,
	    .tv_usec = (g.delay_ms % 1000) * 1000,
	};

	if (pd == NULL) {
		free(wire);
		return;
	}
	pd->wire = wire;
	pd->len = len;
	pd->fd = fd;
	if (peer && peerlen <= sizeof(pd->peer)) {
		memcpy(&pd->peer, peer, peerlen);
		pd->peerlen = peerlen;
	}
	pd->conn = c;
	pd->timer = evtimer_new(g.base, pending_fire, pd);
	if (pd->timer == NULL) {
		free(wire);
		free(pd);
		return;
	}
	if (c) {
		pd->next = c->pending;
		if (c->pending)
			c->pending->prev = pd;
		c->pending = pd;
	}
	evtimer_add(pd->timer, &tv);
}

/* ---- UDP ---- */

static void
udp_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	uint8_t buf[65536];

	(void)what;
	for (int i = 0; i < UDP_BATCH; i++) {
		struct sockaddr_storage peer;
		socklen_t peerlen = sizeof(peer);
		ssize_t n = recvfrom(fd, buf, sizeof(buf), 0,
		    (struct sockaddr *)&peer, &peerlen);
		uint8_t *wire;
		size_t len;
		int out_fd;

		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR && errno != ECONNREFUSED)
				warnmsg("recvfrom: %s", strerror(errno));
			return;
		}
		if (handle_query(buf, (size_t)n, false, &wire, &len) !=
		    ACT_REPLY)
			continue;
		out_fd = g.mode == MODE_WRONGPORT ? l->alt_fd : l->udp_fd;
		if (g.mode == MODE_DELAY) {
			schedule_reply(wire, len, NULL, out_fd,
			    (struct sockaddr *)&peer, peerlen);
			continue;
		}
		udp_send(out_fd, (struct sockaddr *)&peer, peerlen, wire, len);
		free(wire);
	}
}

/* ---- TCP ---- */

static void
tcp_conn_free(struct tcp_conn *c)
{
	while (c->pending)
		pending_free(c->pending);
	bufferevent_free(c->bev);
	free(c);
}

static void
tcp_read_cb(struct bufferevent *bev, void *arg)
{
	struct tcp_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	for (;;) {
		uint8_t pfx[2];
		size_t mlen;
		uint8_t *msg, *wire;
		size_t len;
		enum action act;

		if (evbuffer_copyout(in, pfx, 2) < 2)
			return;
		mlen = (size_t)pfx[0] << 8 | pfx[1];
		if (evbuffer_get_length(in) < 2 + mlen)
			return;
		evbuffer_drain(in, 2);
		if (mlen == 0)
			continue;
		msg = evbuffer_pullup(in, (ev_ssize_t)mlen);
		act =
		    msg ? handle_query(msg, mlen, true, &wire, &len) : ACT_NONE;
		evbuffer_drain(in, mlen);
		if (act == ACT_CLOSE) {
			tcp_conn_free(c);
			return;
		}
		if (act != ACT_REPLY)
			continue;
		if (g.mode == MODE_DELAY) {
			schedule_reply(wire, len, c, -1, NULL, 0);
			continue;
		}
		tcp_send(c, wire, len);
		free(wire);
	}
}

static void
tcp_write_cb(struct bufferevent *bev, void *arg)
{
	struct tcp_conn *c = arg;

	if (c->closing && c->pending == NULL &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		tcp_conn_free(c);
}

static void
tcp_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct tcp_conn *c = arg;

	if (what & BEV_EVENT_ERROR) {
		tcp_conn_free(c);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		/* A client may half-close after its query; still owe replies.
		 */
		c->closing = true;
		if (c->pending == NULL &&
		    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			tcp_conn_free(c);
	}
}

static void
tcp_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct tcp_conn *c;

	(void)lev;
	(void)sa;
	(void)salen;
	(void)arg;
	if (g.mode == MODE_CLOSE) {
		evutil_closesocket(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		evutil_closesocket(fd);
		return;
	}
	c->bev = bufferevent_socket_new(g.base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		evutil_closesocket(fd);
		free(c);
		return;
	}
	bufferevent_setcb(c->bev, tcp_read_cb, tcp_write_cb, tcp_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* ---- control port ---- */

static void
ctl_free(struct ctl_conn *cc)
{
	bufferevent_free(cc->bev);
	free(cc);
}

static void
ctl_command(struct ctl_conn *cc, char *line)
{
	struct evbuffer *o = bufferevent_get_output(cc->bev);
	char *cmd = line + strspn(line, " \t");
	size_t n = strlen(cmd);

	while (n > 0 && (cmd[n - 1] == ' ' || cmd[n - 1] == '\t'))
		cmd[--n] = '\0';

	if (strncmp(cmd, "mode", 4) == 0 &&
	    (cmd[4] == '\0' || cmd[4] == ' ' || cmd[4] == '\t')) {
		char *arg = cmd + 4 + strspn(cmd + 4, " \t");
		enum mode m;
		unsigned ms = g.delay_ms;

		if (*arg == '\0') {
			if (g.mode == MODE_DELAY)
				evbuffer_add_printf(
				    o, "delay %u\n", g.delay_ms);
			else
				evbuffer_add_printf(
				    o, "%s\n", mode_names[g.mode]);
		} else if (parse_mode(arg, &m, &ms) == 0) {
			g.mode = m;
			g.delay_ms = ms;
			evbuffer_add_printf(o, "ok\n");
		} else {
			evbuffer_add_printf(o, "error bad mode\n");
		}
	} else if (strcmp(cmd, "stats") == 0) {
		evbuffer_add_printf(o, "queries %llu udp %llu tcp %llu\n",
		    g.n_udp + g.n_tcp, g.n_udp, g.n_tcp);
	} else if (strcmp(cmd, "reset") == 0) {
		g.n_udp = g.n_tcp = 0;
		evbuffer_add_printf(o, "ok\n");
	} else if (strcmp(cmd, "ping") == 0) {
		evbuffer_add_printf(o, "pong\n");
	} else if (strcmp(cmd, "quit") == 0) {
		evbuffer_add_printf(o, "ok\n");
		cc->quitting = true;
	} else {
		evbuffer_add_printf(o, "error unknown command\n");
	}
}

static void
ctl_read_cb(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *cc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t n;

	while (!cc->quitting &&
	    (line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) != NULL) {
		ctl_command(cc, line);
		free(line);
	}
	if (!cc->quitting && evbuffer_get_length(in) > CTL_LINE_MAX)
		ctl_free(cc);
}

static void
ctl_write_cb(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *cc = arg;

	(void)bev;
	/* Exit only once "ok" has left, so the client sees the answer. */
	if (cc->quitting)
		event_base_loopbreak(g.base);
}

static void
ctl_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_conn *cc = arg;

	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if (cc->quitting)
			event_base_loopbreak(g.base);
		else
			ctl_free(cc);
	}
}

static void
ctl_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct ctl_conn *cc = calloc(1, sizeof(*cc));

	(void)lev;
	(void)sa;
	(void)salen;
	(void)arg;
	if (cc == NULL) {
		evutil_closesocket(fd);
		return;
	}
	cc->bev = bufferevent_socket_new(g.base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (cc->bev == NULL) {
		evutil_closesocket(fd);
		free(cc);
		return;
	}
	bufferevent_setcb(cc->bev, ctl_read_cb, ctl_write_cb, ctl_event_cb, cc);
	bufferevent_enable(cc->bev, EV_READ | EV_WRITE);
}

/* ---- setup ---- */

static void
parse_addr(const char *s, struct sockaddr_storage *ss, int *sslen)
{
	*sslen = sizeof(*ss);
	memset(ss, 0, sizeof(*ss));
	if (evutil_parse_sockaddr_port(s, (struct sockaddr *)ss, sslen) != 0)
		die("bad address '%s' (want 127.0.0.1:5300 or [::1]:5300)", s);
	/* UDP and TCP must share one port, so no ephemeral port 0. */
	if ((ss->ss_family == AF_INET &&
		((struct sockaddr_in *)ss)->sin_port == 0) ||
	    (ss->ss_family == AF_INET6 &&
		((struct sockaddr_in6 *)ss)->sin6_port == 0))
		die("address '%s' needs a non-zero port", s);
}

static int
bound_socket(
    const struct sockaddr *sa, socklen_t salen, int type, const char *what)
{
	int one = 1;
	int fd = socket(sa->sa_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		die("%s socket: %s", what, strerror(errno));
	/* So [::]:P and 0.0.0.0:P can both be listened on. */
	if (sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (type == SOCK_STREAM)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, sa, salen) != 0)
		die("%s bind: %s", what, strerror(errno));
	return fd;
}

static struct evconnlistener *
tcp_listen(const struct sockaddr *sa, socklen_t salen, evconnlistener_cb cb,
    const char *what)
{
	int fd = bound_socket(sa, salen, SOCK_STREAM, what);
	struct evconnlistener *lev;

	lev = evconnlistener_new(g.base, cb, NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 128, fd);
	if (lev == NULL)
		die("%s listen: %s", what, strerror(errno));
	return lev;
}

static void
add_listener(const char *spec)
{
	struct sockaddr_storage ss, alt;
	int sslen;
	struct listener *l = calloc(1, sizeof(*l));

	if (l == NULL)
		die("out of memory");
	parse_addr(spec, &ss, &sslen);
	l->udp_fd = bound_socket(
	    (struct sockaddr *)&ss, (socklen_t)sslen, SOCK_DGRAM, spec);
	/* Same address, any other port: for wrongport. */
	alt = ss;
	if (alt.ss_family == AF_INET)
		((struct sockaddr_in *)&alt)->sin_port = 0;
	else
		((struct sockaddr_in6 *)&alt)->sin6_port = 0;
	l->alt_fd = bound_socket(
	    (struct sockaddr *)&alt, (socklen_t)sslen, SOCK_DGRAM, spec);
	l->udp_ev =
	    event_new(g.base, l->udp_fd, EV_READ | EV_PERSIST, udp_read_cb, l);
	if (l->udp_ev == NULL || event_add(l->udp_ev, NULL) != 0)
		die("cannot watch UDP socket");
	l->tcp = tcp_listen(
	    (struct sockaddr *)&ss, (socklen_t)sslen, tcp_accept_cb, spec);
	l->next = g.listeners;
	g.listeners = l;
}

static void
write_pidfile(const char *path)
{
	char tmp[PATH_MAX];
	FILE *f;

	/* Rename into place so a test polling for the file never reads half. */
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		die("pidfile path too long");
	f = fopen(tmp, "w");
	if (f == NULL)
		die("pidfile %s: %s", tmp, strerror(errno));
	fprintf(f, "%ld\n", (long)getpid());
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		die("pidfile %s: %s", path, strerror(errno));
}

static uint32_t
parse_ttl(const char *s, const char *opt)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v > INT32_MAX)
		die("%s: bad value '%s'", opt, s);
	return (uint32_t)v;
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	(void)arg;
	event_base_loopbreak(g.base);
}

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: fakeup --listen ADDR:PORT [--listen ADDR:PORT ...]\n"
	    "              [--control ADDR:PORT] [--zone-ttl N] "
	    "[--neg-ttl N]\n"
	    "              [--mode MODE] [--pidfile FILE] [--log FILE]\n"
	    "ADDR:PORT is 127.0.0.1:5300 or [::1]:5300.  "
	    "See tools/fakeup.md.\n");
}

int
main(int argc, char **argv)
{
	enum {
		O_LISTEN = 256,
		O_CONTROL,
		O_ZONE_TTL,
		O_NEG_TTL,
		O_PIDFILE,
		O_LOG,
		O_MODE,
		O_HELP
	};
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, O_LISTEN},
	    {"control", required_argument, NULL, O_CONTROL},
	    {"zone-ttl", required_argument, NULL, O_ZONE_TTL},
	    {"neg-ttl", required_argument, NULL, O_NEG_TTL},
	    {"pidfile", required_argument, NULL, O_PIDFILE},
	    {"log", required_argument, NULL, O_LOG},
	    {"mode", required_argument, NULL, O_MODE},
	    {"help", no_argument, NULL, O_HELP},
	    {NULL, 0, NULL, 0},
	};
	const char *listen_specs[64];
	int n_listen = 0;
	const char *control = NULL, *logpath = NULL;
	struct event *sigterm, *sigint;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case O_LISTEN:
			if (n_listen ==
			    (int)(sizeof(listen_specs) /
				sizeof(listen_specs[0])))
				die("too many --listen");
			listen_specs[n_listen++] = optarg;
			break;
		case O_CONTROL:
			control = optarg;
			break;
		case O_ZONE_TTL:
			g.zone_ttl = parse_ttl(optarg, "--zone-ttl");
			break;
		case O_NEG_TTL:
			g.neg_ttl = parse_ttl(optarg, "--neg-ttl");
			break;
		case O_PIDFILE:
			g.pidfile = optarg;
			break;
		case O_LOG:
			logpath = optarg;
			break;
		case O_MODE:
			if (parse_mode(optarg, &g.mode, &g.delay_ms) != 0)
				die("bad --mode '%s'", optarg);
			break;
		case 'h':
		case O_HELP:
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || n_listen == 0) {
		usage(stderr);
		return 2;
	}

	if (sodium_init() < 0)
		die("libsodium init failed");
	signal(SIGPIPE, SIG_IGN);
	if (logpath) {
		g.log = fopen(logpath, "a");
		if (g.log == NULL)
			die("log %s: %s", logpath, strerror(errno));
	}

	g.base = event_base_new();
	if (g.base == NULL)
		die("event_base_new failed");
	for (int i = 0; i < n_listen; i++)
		add_listener(listen_specs[i]);
	if (control) {
		struct sockaddr_storage ss;
		int sslen;

		parse_addr(control, &ss, &sslen);
		tcp_listen((struct sockaddr *)&ss, (socklen_t)sslen,
		    ctl_accept_cb, control);
	}
	sigterm = evsignal_new(g.base, SIGTERM, on_signal, NULL);
	sigint = evsignal_new(g.base, SIGINT, on_signal, NULL);
	if (!sigterm || !sigint || evsignal_add(sigterm, NULL) != 0 ||
	    evsignal_add(sigint, NULL) != 0)
		die("cannot install signal handlers");

	/* Last, so the pidfile existing means every socket is ready. */
	if (g.pidfile)
		write_pidfile(g.pidfile);

	event_base_dispatch(g.base);

	if (g.pidfile)
		unlink(g.pidfile);
	if (g.log)
		fclose(g.log);
	return 0;
}
