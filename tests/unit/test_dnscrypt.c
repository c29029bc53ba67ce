/*
 * Unit tests for dnscrypt.  The test plays the provider (it signs
 * certificates with its own Ed25519 key) and the resolver (it opens the
 * client's queries with its X25519 secret key and seals padded responses),
 * written from the protocol text independently of the module, so a round
 * trip checks the module against the protocol, not against itself.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "stubborn/dnscrypt.h"
#include "stubborn/rng.h"
#include "stubborn/stamp.h"
#include "stubborn/wire.h"
#include "unit.h"

#define NOW 1700000000u
#define DAY 86400u
#define PROVIDER "2.dnscrypt-cert.example.test"
#define TYPE_TXT 16
#define PKT_MAX 8192

struct provider {
	uint8_t pk[crypto_sign_PUBLICKEYBYTES];
	uint8_t sk[crypto_sign_SECRETKEYBYTES];
};

struct resolver {
	uint8_t pk[32];
	uint8_t sk[32];
};

/* What the resolver side learns from a query. */
struct server_query {
	uint8_t magic[8];
	uint8_t client_pk[32];
	uint8_t client_nonce[12];
	uint8_t shared[32];
	uint8_t plain[PKT_MAX]; /* query and padding */
	size_t padded;          /* length of query and padding */
	size_t qlen;            /* the query, padding removed */
};

/* A DNS message under construction. */
struct pkt {
	uint8_t b[PKT_MAX];
	size_t len;
};

static struct provider prov;
static struct resolver res1, res2;

static void setup(void);
static size_t make_cert(uint8_t *out, uint16_t es, uint32_t serial,
    uint32_t start, uint32_t end, const struct resolver *r,
    const struct provider *p, size_t ext_len);
static void pkt_u8(struct pkt *, uint8_t);
static void pkt_u16(struct pkt *, uint16_t);
static void pkt_raw(struct pkt *, const void *, size_t);
static void answer_init(struct pkt *, const char *, uint16_t);
static void answer_txt(
    struct pkt *, bool, const uint8_t *, size_t, size_t, uint16_t);
static void answer_cert(struct pkt *, const uint8_t *, size_t);
static int choose(
    const struct pkt *, uint64_t, struct dnscrypt_cert *, const char **);
static void make_session(struct dnscrypt_session *, struct dnscrypt_keypair *,
    uint16_t, const struct resolver *);
static int server_open(const struct resolver *, uint16_t, const uint8_t *,
    size_t, struct server_query *);
static size_t server_seal(const struct server_query *, uint16_t,
    const uint8_t *, const uint8_t *, size_t, uint8_t *);
static size_t make_query(uint8_t *, uint16_t, const char *, uint16_t);
static size_t make_reply(uint8_t *, size_t, const uint8_t *, size_t);
static void round_trip(uint16_t, bool);
static void refuse(
    const uint8_t *, size_t, const uint8_t *, uint64_t, int, const char *);
struct exchange;
static void exchange_start(struct exchange *, uint16_t, const char *);
static void exchange_answer(
    struct exchange *, uint16_t, const uint8_t *, size_t);
static int exchange_open(struct exchange *);
static uint64_t refresh(uint32_t, uint32_t, uint64_t);
static Suite *make_suite(void);

static void
setup(void)
{
	ck_assert_int_eq(rng_init(), 0);
	crypto_sign_keypair(prov.pk, prov.sk);
	crypto_box_keypair(res1.pk, res1.sk);
	crypto_box_keypair(res2.pk, res2.sk);
}

/*
 * A certificate as the protocol text lays it out, with ext_len bytes of
 * extensions (0x5a), signed by p.  Client magic: the resolver key's first
 * 8 bytes, as dnsdist does.  Returns the length.
 */
static size_t
make_cert(uint8_t *out, uint16_t es, uint32_t serial, uint32_t start,
    uint32_t end, const struct resolver *r, const struct provider *p,
    size_t ext_len)
{
	memcpy(out, "DNSC", 4);
	wire_put16(out + 4, es);
	wire_put16(out + 6, 0);
	memcpy(out + 72, r->pk, 32);
	memcpy(out + 104, r->pk, 8);
	wire_put32(out + 112, serial);
	wire_put32(out + 116, start);
	wire_put32(out + 120, end);
	memset(out + 124, 0x5a, ext_len);
	crypto_sign_detached(out + 8, NULL, out + 72, 52 + ext_len, p->sk);
	return 124 + ext_len;
}

static void
pkt_u8(struct pkt *p, uint8_t v)
{
	ck_assert_uint_lt(p->len, PKT_MAX);
	p->b[p->len++] = v;
}

static void
pkt_u16(struct pkt *p, uint16_t v)
{
	pkt_u8(p, (uint8_t)(v >> 8));
	pkt_u8(p, (uint8_t)v);
}

static void
pkt_raw(struct pkt *p, const void *d, size_t n)
{
	ck_assert_uint_le(p->len + n, PKT_MAX);
	memcpy(p->b + p->len, d, n);
	p->len += n;
}

/* A response header (QR, RD, RA, given flags) and the TXT question. */
static void
answer_init(struct pkt *p, const char *qname, uint16_t flags)
{
	uint8_t name[256];
	int nl = wire_name_from_text(qname, name);

	ck_assert_int_gt(nl, 0);
	p->len = 0;
	pkt_u16(p, 0x1234);
	pkt_u16(p, WIRE_QR | WIRE_RD | WIRE_RA | flags);
	pkt_u16(p, 1);
	pkt_u16(p, 0);
	pkt_u16(p, 0);
	pkt_u16(p, 0);
	pkt_raw(p, name, (size_t)nl);
	pkt_u16(p, TYPE_TXT);
	pkt_u16(p, WIRE_CLASS_IN);
}

/*
 * Appends a TXT record (owner: a pointer to the question's name when
 * at_qname, else "other.example.test") holding data split into
 * character-strings of at most chunk bytes; ANCOUNT is incremented.
 */
static void
answer_txt(struct pkt *p, bool at_qname, const uint8_t *data, size_t len,
    size_t chunk, uint16_t type)
{
	size_t rdlen_off;

	if (at_qname) {
		pkt_u16(p, 0xc00c);
	} else {
		uint8_t name[256];
		int nl = wire_name_from_text("other.example.test", name);
		pkt_raw(p, name, (size_t)nl);
	}
	pkt_u16(p, type);
	pkt_u16(p, WIRE_CLASS_IN);
	pkt_u16(p, 0);
	pkt_u16(p, 3600);
	rdlen_off = p->len;
	pkt_u16(p, 0);
	for (size_t off = 0; off < len; off += chunk) {
		size_t l = len - off < chunk ? len - off : chunk;
		pkt_u8(p, (uint8_t)l);
		pkt_raw(p, data + off, l);
	}
	wire_put16(p->b + rdlen_off, (uint16_t)(p->len - rdlen_off - 2));
	wire_put16(p->b + 6, (uint16_t)(WIRE_ANCOUNT(p->b) + 1));
}

static void
answer_cert(struct pkt *p, const uint8_t *cert, size_t len)
{
	answer_txt(p, true, cert, len, 255, TYPE_TXT);
}

static int
choose(const struct pkt *p, uint64_t now, struct dnscrypt_cert *c,
    const char **why)
{
	return dnscrypt_cert_choose(
	    p->b, p->len, PROVIDER, prov.pk, now, c, why);
}

/* A session for a fresh client key pair and a certificate for r. */
static void
make_session(struct dnscrypt_session *s, struct dnscrypt_keypair *kp,
    uint16_t es, const struct resolver *r)
{
	uint8_t cert[DNSCRYPT_CERT_MAX];
	struct dnscrypt_cert c;
	size_t n = make_cert(cert, es, 1, NOW - DAY, NOW + DAY, r, &prov, 0);

	ck_assert_int_eq(
	    dnscrypt_cert_parse(cert, n, prov.pk, NOW, &c, NULL), 0);
	ck_assert_int_eq(dnscrypt_keypair_init(kp), 0);
	ck_assert_int_eq(dnscrypt_session_init(s, &c, kp), 0);
}

/* The resolver's side: opens a sealed query.  0, or -1 if it does not. */
static int
server_open(const struct resolver *r, uint16_t es, const uint8_t *q, size_t len,
    struct server_query *sq)
{
	uint8_t nonce[24] = {0};
	size_t i;
	int rc;

	if (len < 68)
		return -1;
	memcpy(sq->magic, q, 8);
	memcpy(sq->client_pk, q + 8, 32);
	memcpy(sq->client_nonce, q + 40, 12);
	memcpy(nonce, q + 40, 12);
	if (es == 1)
		rc = crypto_box_beforenm(sq->shared, sq->client_pk, r->sk);
	else
		rc = crypto_box_curve25519xchacha20poly1305_beforenm(
		    sq->shared, sq->client_pk, r->sk);
	if (rc != 0)
		return -1;
	sq->padded = len - 68;
	if (es == 1)
		rc = crypto_box_open_easy_afternm(
		    sq->plain, q + 52, len - 52, nonce, sq->shared);
	else
		rc = crypto_box_curve25519xchacha20poly1305_open_easy_afternm(
		    sq->plain, q + 52, len - 52, nonce, sq->shared);
	if (rc != 0)
		return -1;
	for (i = sq->padded; i > 0 && sq->plain[i - 1] == 0; i--)
		;
	if (i == 0 || sq->plain[i - 1] != 0x80)
		return -1;
	sq->qlen = i - 1;
	return 0;
}

/*
 * The resolver's side: seals plain (plen bytes, taken as already padded)
 * for the client of sq with the resolver half rhalf.  Returns the length.
 */
static size_t
server_seal(const struct server_query *sq, uint16_t es, const uint8_t *rhalf,
    const uint8_t *plain, size_t plen, uint8_t *out)
{
	uint8_t nonce[24];

	memcpy(nonce, sq->client_nonce, 12);
	memcpy(nonce + 12, rhalf, 12);
	memcpy(out, "r6fnvWj8", 8);
	memcpy(out + 8, nonce, 24);
	if (es == 1)
		crypto_box_easy_afternm(
		    out + 32, plain, plen, nonce, sq->shared);
	else
		crypto_box_curve25519xchacha20poly1305_easy_afternm(
		    out + 32, plain, plen, nonce, sq->shared);
	return 48 + plen;
}

/* A query for name/type, id 0xbeef, RD. */
static size_t
make_query(uint8_t *out, uint16_t id, const char *name, uint16_t type)
{
	uint8_t wn[256];
	int nl = wire_name_from_text(name, wn);
	int n;

	ck_assert_int_gt(nl, 0);
	n = wire_build_query(out, PKT_MAX, id, WIRE_RD, wn, (size_t)nl, type,
	    WIRE_CLASS_IN, 1232, false);
	ck_assert_int_gt(n, 0);
	return (size_t)n;
}

/*
 * A reply to query q (qlen bytes): QR set, then pad_to - qlen - 1 zero
 * bytes after 0x80 so the padded length is pad_to.  Returns pad_to.
 */
static size_t
make_reply(uint8_t *out, size_t pad_to, const uint8_t *q, size_t qlen)
{
	memcpy(out, q, qlen);
	out[2] |= 0x80;
	out[qlen] = 0x80;
	memset(out + qlen + 1, 0, pad_to - qlen - 1);
	return pad_to;
}

START_TEST(test_cert_query)
{
	uint8_t buf[DNSCRYPT_CERT_QUERY_MAX];
	struct wire_query q;
	char text[300];
	int n;

	n = dnscrypt_cert_query(buf, sizeof(buf), 0x4242, PROVIDER);
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(wire_parse_query(buf, (size_t)n, &q), WIRE_ACCEPT);
	ck_assert_uint_eq(q.id, 0x4242);
	ck_assert(q.flags & WIRE_RD);
	ck_assert_uint_eq(q.q.qtype, TYPE_TXT);
	ck_assert_uint_eq(q.q.qclass, WIRE_CLASS_IN);
	ck_assert(q.has_opt);
	ck_assert_uint_eq(q.udp_size, 1232);
	wire_name_text(buf + q.q.name_off, q.q.name_len, text, sizeof(text));
	ck_assert_str_eq(text, PROVIDER ".");
	/* A trailing dot is the same name. */
	ck_assert_int_eq(
	    dnscrypt_cert_query(buf, sizeof(buf), 1, PROVIDER "."), n);
	ck_assert_int_eq(
	    dnscrypt_cert_query(buf, sizeof(buf), 1, "a..b"), -EINVAL);
	ck_assert_int_eq(dnscrypt_cert_query(buf, 20, 1, PROVIDER), -ENOSPC);
}
END_TEST

START_TEST(test_cert_parse_valid)
{
	uint8_t cert[DNSCRYPT_CERT_MAX];
	struct dnscrypt_cert c;
	const char *why = "unset";
	size_t n;

	for (uint16_t es = 1; es <= 2; es++) {
		n = make_cert(
		    cert, es, 77, NOW - 10, NOW + 10, &res1, &prov, 0);
		ck_assert_uint_eq(n, DNSCRYPT_CERT_LEN);
		ck_assert_int_eq(
		    dnscrypt_cert_parse(cert, n, prov.pk, NOW, &c, &why), 0);
		ck_assert_ptr_null(why);
		ck_assert_uint_eq(c.es_version, es);
		ck_assert_uint_eq(c.minor, 0);
		ck_assert_uint_eq(c.serial, 77);
		ck_assert_uint_eq(c.ts_start, NOW - 10);
		ck_assert_uint_eq(c.ts_end, NOW + 10);
		ck_assert_mem_eq(c.resolver_pk, res1.pk, 32);
		ck_assert_mem_eq(c.client_magic, res1.pk, 8);
	}
	/* The window is inclusive at both ends. */
	ck_assert_int_eq(
	    dnscrypt_cert_parse(cert, n, prov.pk, NOW - 10, &c, NULL), 0);
	ck_assert_int_eq(
	    dnscrypt_cert_parse(cert, n, prov.pk, NOW + 10, &c, NULL), 0);
	/* Extensions are signed and otherwise ignored. */
	n = make_cert(cert, 2, 5, NOW, NOW, &res1, &prov, 40);
	ck_assert_int_eq(
	    dnscrypt_cert_parse(cert, n, prov.pk, NOW, &c, NULL), 0);
	ck_assert_uint_eq(c.serial, 5);
}
END_TEST

/* Expects dnscrypt_cert_parse to refuse cert with err and the reason. */
static void
refuse(const uint8_t *cert, size_t n, const uint8_t *pk, uint64_t now, int err,
    const char *reason)
{
	struct dnscrypt_cert c;
	const char *why = NULL;

	ck_assert_int_eq(dnscrypt_cert_parse(cert, n, pk, now, &c, &why), err);
	ck_assert_ptr_nonnull(why);
	ck_assert_str_eq(why, reason);
}

START_TEST(test_cert_parse_refusals)
{
	uint8_t cert[DNSCRYPT_CERT_MAX + 8];
	struct provider other;
	size_t n;

	crypto_sign_keypair(other.pk, other.sk);
	n = make_cert(cert, 2, 1, NOW - 10, NOW + 10, &res1, &prov, 0);
	refuse(cert, n, prov.pk, NOW + 11, -EKEYEXPIRED, "expired");
	refuse(cert, n, prov.pk, NOW - 11, -EKEYEXPIRED, "not yet valid");
	refuse(
	    cert, n, other.pk, NOW, -EKEYREJECTED, "signature does not verify");
	refuse(cert, n - 1, prov.pk, NOW, -EBADMSG, "malformed certificate");
	refuse(cert, 0, prov.pk, NOW, -EBADMSG, "malformed certificate");

	/* A certificate signed by another provider. */
	n = make_cert(cert, 2, 1, NOW - 10, NOW + 10, &res1, &other, 0);
	refuse(
	    cert, n, prov.pk, NOW, -EKEYREJECTED, "signature does not verify");

	/* Any byte of the signature or of the signed part, flipped. */
	for (size_t i = 8; i < DNSCRYPT_CERT_LEN; i += 7) {
		n = make_cert(cert, 1, 1, NOW - 10, NOW + 10, &res1, &prov, 0);
		cert[i] ^= 0x01;
		refuse(cert, n, prov.pk, NOW, -EKEYREJECTED,
		    "signature does not verify");
	}
	/* A flipped extension byte, and a dropped one. */
	n = make_cert(cert, 1, 1, NOW - 10, NOW + 10, &res1, &prov, 16);
	cert[130] ^= 0x80;
	refuse(
	    cert, n, prov.pk, NOW, -EKEYREJECTED, "signature does not verify");
	n = make_cert(cert, 1, 1, NOW - 10, NOW + 10, &res1, &prov, 16);
	refuse(cert, n - 1, prov.pk, NOW, -EKEYREJECTED,
	    "signature does not verify");

	n = make_cert(cert, 1, 1, NOW - 10, NOW + 10, &res1, &prov, 0);
	cert[0] = 'd';
	refuse(cert, n, prov.pk, NOW, -EBADMSG, "malformed certificate");

	for (uint16_t es = 0; es < 6; es += 3) {
		n = make_cert(cert, es, 1, NOW - 10, NOW + 10, &res1, &prov, 0);
		refuse(cert, n, prov.pk, NOW, -EPROTONOSUPPORT,
		    "unsupported es-version");
	}
	n = make_cert(cert, 0x0102, 1, NOW - 10, NOW + 10, &res1, &prov, 0);
	refuse(
	    cert, n, prov.pk, NOW, -EPROTONOSUPPORT, "unsupported es-version");

	n = make_cert(cert, 2, 1, NOW + 10, NOW - 10, &res1, &prov, 0);
	refuse(cert, n, prov.pk, NOW, -EKEYEXPIRED,
	    "validity ends before it starts");

	/* The largest accepted, and one byte more. */
	n = make_cert(cert, 2, 1, NOW, NOW, &res1, &prov,
	    DNSCRYPT_CERT_MAX - DNSCRYPT_CERT_LEN);
	ck_assert_uint_eq(n, DNSCRYPT_CERT_MAX);
	{
		struct dnscrypt_cert c;
		ck_assert_int_eq(
		    dnscrypt_cert_parse(cert, n, prov.pk, NOW, &c, NULL), 0);
	}
	n = make_cert(cert, 2, 1, NOW, NOW, &res1, &prov,
	    DNSCRYPT_CERT_MAX - DNSCRYPT_CERT_LEN + 1);
	refuse(cert, n, prov.pk, NOW, -EBADMSG, "malformed certificate");
}
END_TEST

START_TEST(test_choose_highest_serial)
{
	uint8_t cert[DNSCRYPT_CERT_MAX];
	struct dnscrypt_cert c;
	const char *why = "unset";
	struct pkt p;

	answer_init(&p, PROVIDER, 0);
	answer_cert(
	    &p, cert, make_cert(cert, 2, 3, NOW - 9, NOW + 9, &res1, &prov, 0));
	answer_cert(
	    &p, cert, make_cert(cert, 1, 9, NOW - 9, NOW + 9, &res2, &prov, 0));
	answer_cert(
	    &p, cert, make_cert(cert, 2, 5, NOW - 9, NOW + 9, &res1, &prov, 0));
	/* Higher serials that are not valid do not count. */
	answer_cert(&p, cert,
	    make_cert(cert, 2, 20, NOW - 9, NOW - 1, &res1, &prov, 0));
	answer_cert(&p, cert,
	    make_cert(cert, 2, 21, NOW + 1, NOW + 9, &res1, &prov, 0));
	answer_cert(&p, cert,
	    make_cert(cert, 2, 22, NOW - 9, NOW + 9, &res1, &prov, 0));
	p.b[p.len - 1] ^= 1; /* breaks serial 22's signature */
	ck_assert_int_eq(choose(&p, NOW, &c, &why), 0);
	ck_assert_ptr_null(why);
	ck_assert_uint_eq(c.serial, 9);
	ck_assert_uint_eq(c.es_version, 1);
	ck_assert_mem_eq(c.resolver_pk, res2.pk, 32);
	/* Later, only serial 21 is valid. */
	ck_assert_int_eq(choose(&p, NOW + 5, &c, NULL), 0);
	ck_assert_uint_eq(c.serial, 21);
}
END_TEST

START_TEST(test_choose_prefers_es2_on_tie)
{
	uint8_t cert[DNSCRYPT_CERT_MAX];
	struct dnscrypt_cert c;
	struct pkt p;

	for (int order = 0; order < 2; order++) {
		answer_init(&p, PROVIDER, 0);
		for (int i = 0; i < 2; i++) {
			uint16_t es = (uint16_t)((i ^ order) + 1);
			answer_cert(&p, cert,
			    make_cert(cert, es, 7, NOW - 9, NOW + 9,
				es == 1 ? &res1 : &res2, &prov, 0));
		}
		ck_assert_int_eq(choose(&p, NOW, &c, NULL), 0);
		ck_assert_uint_eq(c.es_version, 2);
		ck_assert_mem_eq(c.resolver_pk, res2.pk, 32);
	}
	/* A full tie: the first one. */
	answer_init(&p, PROVIDER, 0);
	answer_cert(
	    &p, cert, make_cert(cert, 1, 7, NOW - 9, NOW + 9, &res1, &prov, 0));
	answer_cert(
	    &p, cert, make_cert(cert, 1, 7, NOW - 9, NOW + 9, &res2, &prov, 0));
	ck_assert_int_eq(choose(&p, NOW, &c, NULL), 0);
	ck_assert_mem_eq(c.resolver_pk, res1.pk, 32);
}
END_TEST

START_TEST(test_choose_records)
{
	uint8_t cert[DNSCRYPT_CERT_MAX];
	struct dnscrypt_cert c;
	const char *why;
	struct pkt p;
	size_t n;

	/* A certificate split over several character-strings. */
	answer_init(&p, PROVIDER, 0);
	n = make_cert(cert, 2, 4, NOW - 9, NOW + 9, &res1, &prov, 0);
	answer_txt(&p, true, cert, n, 50, TYPE_TXT);
	ck_assert_int_eq(choose(&p, NOW, &c, NULL), 0);
	ck_assert_uint_eq(c.serial, 4);

	/* Another owner, another type: not certificates. */
	answer_init(&p, PROVIDER, 0);
	answer_txt(&p, false, cert, n, 255, TYPE_TXT);
	answer_txt(&p, true, cert, n, 255, 99);
	why = NULL;
	ck_assert_int_eq(choose(&p, NOW, &c, &why), -ENOENT);
	ck_assert_str_eq(why, "no certificate");

	/* The owner is matched without regard to case. */
	answer_init(&p, "2.DNSCrypt-Cert.Example.TEST", 0);
	answer_cert(&p, cert, n);
	ck_assert_int_eq(choose(&p, NOW, &c, NULL), 0);

	/* No answer at all, and an NXDOMAIN. */
	answer_init(&p, PROVIDER, 0);
	ck_assert_int_eq(choose(&p, NOW, &c, &why), -ENOENT);
	ck_assert_str_eq(why, "no certificate");
	answer_init(&p, PROVIDER, WIRE_RCODE_NXDOMAIN);
	answer_cert(&p, cert, n);
	ck_assert_int_eq(choose(&p, NOW, &c, &why), -ENOENT);

	/* Truncated: ask again over TCP. */
	answer_init(&p, PROVIDER, WIRE_TC);
	ck_assert_int_eq(choose(&p, NOW, &c, &why), -EMSGSIZE);
	ck_assert_str_eq(why, "certificate response is truncated");

	/* Not a response; cut short; a string past its RDATA. */
	answer_init(&p, PROVIDER, 0);
	answer_cert(&p, cert, n);
	p.b[2] &= 0x7f;
	ck_assert_int_eq(choose(&p, NOW, &c, &why), -EBADMSG);
	ck_assert_str_eq(why, "certificate response is malformed");
	p.b[2] |= 0x80;
	ck_assert_int_eq(choose(&p, NOW, &c, NULL), 0);
	for (size_t cut = 0; cut < p.len; cut++) {
		struct pkt q = p;
		q.len = cut;
		ck_assert_int_lt(choose(&q, NOW, &c, NULL), 0);
	}
	p.b[p.len - n - 1] = 200; /* the string's length byte */
	ck_assert_int_eq(choose(&p, NOW, &c, &why), -EBADMSG);
	ck_assert_str_eq(why, "malformed certificate");

	ck_assert_int_eq(
	    dnscrypt_cert_choose(p.b, p.len, "", prov.pk, NOW, &c, &why),
	    -EINVAL);
}
END_TEST

START_TEST(test_choose_reasons)
{
	uint8_t cert[DNSCRYPT_CERT_MAX];
	struct dnscrypt_cert c;
	const char *why;
	struct provider other;
	struct pkt p;

	crypto_sign_keypair(other.pk, other.sk);
	/* The reason of the record that got furthest, whatever the order. */
	answer_init(&p, PROVIDER, 0);
	answer_txt(&p, true, (const uint8_t *)"v=spf1 -all", 11, 255, TYPE_TXT);
	answer_cert(
	    &p, cert, make_cert(cert, 9, 1, NOW - 9, NOW + 9, &res1, &prov, 0));
	why = NULL;
	ck_assert_int_eq(choose(&p, NOW, &c, &why), -EPROTONOSUPPORT);
	ck_assert_str_eq(why, "unsupported es-version");
	answer_cert(&p, cert,
	    make_cert(cert, 2, 1, NOW - 9, NOW + 9, &res1, &other, 0));
	ck_assert_int_eq(choose(&p, NOW, &c, &why), -EKEYREJECTED);
	ck_assert_str_eq(why, "signature does not verify");
	answer_cert(
	    &p, cert, make_cert(cert, 2, 1, NOW - 9, NOW - 1, &res1, &prov, 0));
	answer_cert(
	    &p, cert, make_cert(cert, 2, 1, NOW + 1, NOW + 9, &res1, &prov, 0));
	ck_assert_int_eq(choose(&p, NOW, &c, &why), -EKEYEXPIRED);
	ck_assert_str_eq(why, "expired");
	answer_cert(&p, cert,
	    make_cert(cert, 2, 1, NOW - 9, NOW + 9, &res1, &other, 0));
	ck_assert_int_eq(choose(&p, NOW, &c, &why), -EKEYEXPIRED);
	ck_assert_str_eq(why, "expired");

	answer_init(&p, PROVIDER, 0);
	answer_cert(
	    &p, cert, make_cert(cert, 2, 1, NOW + 1, NOW + 9, &res1, &prov, 0));
	ck_assert_int_eq(choose(&p, NOW, &c, &why), -EKEYEXPIRED);
	ck_assert_str_eq(why, "not yet valid");

	answer_init(&p, PROVIDER, 0);
	answer_txt(&p, true, (const uint8_t *)"v=spf1 -all", 11, 255, TYPE_TXT);
	ck_assert_int_eq(choose(&p, NOW, &c, &why), -EBADMSG);
	ck_assert_str_eq(why, "malformed certificate");
}
END_TEST

START_TEST(test_session_init)
{
	struct dnscrypt_keypair kp, kp2;
	struct dnscrypt_session s;
	struct dnscrypt_cert c;
	uint8_t zero[sizeof(s)] = {0};

	ck_assert_int_eq(dnscrypt_keypair_init(&kp), 0);
	ck_assert_int_eq(dnscrypt_keypair_init(&kp2), 0);
	ck_assert_mem_ne(kp.pk, kp2.pk, 32);
	memset(&c, 0, sizeof(c));
	memcpy(c.resolver_pk, res1.pk, 32);
	c.es_version = 3;
	ck_assert_int_eq(dnscrypt_session_init(&s, &c, &kp), -EPROTONOSUPPORT);
	/* A low-order point gives no shared key. */
	memset(c.resolver_pk, 0, 32);
	for (uint16_t es = 1; es <= 2; es++) {
		c.es_version = es;
		ck_assert_int_eq(
		    dnscrypt_session_init(&s, &c, &kp), -EKEYREJECTED);
	}
	memcpy(c.resolver_pk, res1.pk, 32);
	ck_assert_int_eq(dnscrypt_session_init(&s, &c, &kp), 0);
	ck_assert_mem_eq(s.client_pk, kp.pk, 32);
	ck_assert_uint_eq(s.cert.es_version, 2);
	dnscrypt_session_fini(&s);
	ck_assert_mem_eq(&s, zero, sizeof(s));
	dnscrypt_session_fini(NULL);
	dnscrypt_keypair_fini(&kp);
	ck_assert_mem_eq(kp.sk, zero, 32);
	dnscrypt_keypair_fini(NULL);
}
END_TEST

/* Seal a query, open it as the resolver, answer, open the answer. */
static void
round_trip(uint16_t es, bool tcp)
{
	static uint8_t q[PKT_MAX], sealed[PKT_MAX], plain[PKT_MAX],
	    resp[PKT_MAX], out[PKT_MAX];
	static struct server_query sq;
	struct dnscrypt_keypair kp;
	struct dnscrypt_session s;
	uint8_t nonce[12], rhalf[12];
	size_t qlen, plen, rlen;
	int n;

	make_session(&s, &kp, es, &res1);
	qlen = make_query(q, 0xbeef, "www.example.com", WIRE_TYPE_AAAA);
	n = dnscrypt_seal(&s, q, qlen, tcp, DNSCRYPT_MIN_UDP_LEN, sealed,
	    sizeof(sealed), nonce);
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(server_open(&res1, es, sealed, (size_t)n, &sq), 0);
	ck_assert_mem_eq(sq.magic, res1.pk, 8);
	ck_assert_mem_eq(sq.client_pk, kp.pk, 32);
	ck_assert_mem_eq(sq.client_nonce, nonce, 12);
	ck_assert_uint_eq(sq.qlen, qlen);
	ck_assert_mem_eq(sq.plain, q, qlen);
	ck_assert_uint_eq(sq.padded % 64, 0);
	if (!tcp)
		ck_assert_uint_eq(sq.padded, DNSCRYPT_MIN_UDP_LEN);

	/* Answers with 1 and with 256 bytes of padding. */
	for (size_t pad = 1; pad <= 256; pad += 255) {
		plen = make_reply(plain, qlen + pad, q, qlen);
		rng_bytes(rhalf, sizeof(rhalf));
		rlen = server_seal(&sq, es, rhalf, plain, plen, resp);
		n = dnscrypt_open(&s, nonce, resp, rlen, out, sizeof(out));
		ck_assert_int_eq(n, (int)qlen);
		ck_assert_mem_eq(out, plain, qlen);
		/* In place. */
		n = dnscrypt_open(&s, nonce, resp, rlen, resp, rlen);
		ck_assert_int_eq(n, (int)qlen);
		ck_assert_mem_eq(resp, plain, qlen);
	}
	dnscrypt_session_fini(&s);
	dnscrypt_keypair_fini(&kp);
}

START_TEST(test_round_trip_v1_udp)
{
	round_trip(1, false);
}
END_TEST

START_TEST(test_round_trip_v2_udp)
{
	round_trip(2, false);
}
END_TEST

START_TEST(test_round_trip_v1_tcp)
{
	round_trip(1, true);
}
END_TEST

START_TEST(test_round_trip_v2_tcp)
{
	round_trip(2, true);
}
END_TEST

START_TEST(test_udp_padding)
{
	static uint8_t q[PKT_MAX], sealed[PKT_MAX];
	static struct server_query sq;
	struct dnscrypt_keypair kp;
	struct dnscrypt_session s;
	uint8_t nonce[12];
	int n;

	make_session(&s, &kp, 2, &res1);
	for (size_t qlen = 12; qlen <= 1300; qlen++) {
		for (size_t min = DNSCRYPT_MIN_UDP_LEN;
		     min <= DNSCRYPT_MAX_UDP_LEN; min += 448) {
			/* The smallest multiple of 64 above qlen and >= min. */
			size_t want = (qlen / 64 + 1) * 64;
			if (want < min)
				want = min;
			memset(q, 0x33, qlen);
			n = dnscrypt_seal(&s, q, qlen, false, min, sealed,
			    sizeof(sealed), nonce);
			ck_assert_int_eq(n, (int)(want + 68));
			ck_assert_int_eq(
			    server_open(&res1, 2, sealed, (size_t)n, &sq), 0);
			ck_assert_uint_eq(sq.qlen, qlen);
			ck_assert_uint_eq(sq.padded, want);
		}
	}
	/* Exactly enough room, and one byte less. */
	n = dnscrypt_seal(&s, q, 100, false, 256, sealed, 256 + 68, nonce);
	ck_assert_int_eq(n, 256 + 68);
	n = dnscrypt_seal(&s, q, 100, false, 256, sealed, 256 + 67, nonce);
	ck_assert_int_eq(n, -ENOSPC);
	n = dnscrypt_seal(&s, q, 100, false, 256, sealed, 10, nonce);
	ck_assert_int_eq(n, -ENOSPC);
	/* Bad minimum lengths and query lengths. */
	ck_assert_int_eq(
	    dnscrypt_seal(&s, q, 100, false, 0, sealed, sizeof(sealed), nonce),
	    -EINVAL);
	ck_assert_int_eq(dnscrypt_seal(&s, q, 100, false, 300, sealed,
			     sizeof(sealed), nonce),
	    -EINVAL);
	ck_assert_int_eq(dnscrypt_seal(&s, q, 100, false, 192, sealed,
			     sizeof(sealed), nonce),
	    -EINVAL);
	ck_assert_int_eq(
	    dnscrypt_seal(&s, q, 100, false, DNSCRYPT_MAX_UDP_LEN + 64, sealed,
		sizeof(sealed), nonce),
	    -EINVAL);
	ck_assert_int_eq(
	    dnscrypt_seal(&s, q, 11, false, 256, sealed, sizeof(sealed), nonce),
	    -EINVAL);
}
END_TEST

START_TEST(test_tcp_padding)
{
	static uint8_t q[PKT_MAX], sealed[PKT_MAX];
	static struct server_query sq;
	struct dnscrypt_keypair kp;
	struct dnscrypt_session s;
	uint8_t nonce[12];
	int n;

	make_session(&s, &kp, 1, &res1);
	for (size_t qlen = 12; qlen <= 300; qlen += 17) {
		unsigned seen = 0;
		size_t base = (qlen / 64 + 1) * 64;

		memset(q, 0x44, qlen);
		/* Four lengths are allowed; 200 draws miss one with
		 * probability 4 * (3/4)^200, about 1e-24. */
		for (int i = 0; i < 200; i++) {
			size_t pad;

			n = dnscrypt_seal(&s, q, qlen, true, 0, sealed,
			    sizeof(sealed), nonce);
			ck_assert_int_gt(n, 0);
			ck_assert_int_eq(
			    server_open(&res1, 1, sealed, (size_t)n, &sq), 0);
			ck_assert_uint_eq(sq.qlen, qlen);
			ck_assert_uint_eq(sq.padded % 64, 0);
			pad = sq.padded - qlen;
			ck_assert_uint_ge(pad, 1);
			ck_assert_uint_le(pad, 256);
			seen |= 1u << ((sq.padded - base) / 64);
		}
		ck_assert_uint_eq(seen, 0xf);
	}
	/* Room for the least padding only: that one. */
	n = dnscrypt_seal(&s, q, 100, true, 0, sealed, 128 + 68, nonce);
	ck_assert_int_eq(n, 128 + 68);
	n = dnscrypt_seal(&s, q, 100, true, 0, sealed, 127 + 68, nonce);
	ck_assert_int_eq(n, -ENOSPC);
}
END_TEST

START_TEST(test_grow_min_len)
{
	size_t m = DNSCRYPT_MIN_UDP_LEN;
	int steps = 0;

	while (m < DNSCRYPT_MAX_UDP_LEN) {
		size_t next = dnscrypt_grow_min_len(m);
		ck_assert_uint_eq(next, m + 64);
		m = next;
		steps++;
	}
	ck_assert_int_eq(steps, (DNSCRYPT_MAX_UDP_LEN - 256) / 64);
	ck_assert_uint_eq(
	    dnscrypt_grow_min_len(DNSCRYPT_MAX_UDP_LEN), DNSCRYPT_MAX_UDP_LEN);
	ck_assert_uint_eq(dnscrypt_grow_min_len(0), DNSCRYPT_MIN_UDP_LEN);
	ck_assert_uint_eq(dnscrypt_grow_min_len(300), 320);
	ck_assert_uint_eq(dnscrypt_grow_min_len(100000), DNSCRYPT_MAX_UDP_LEN);
}
END_TEST

/* A session, a query sealed for it, and what the resolver saw. */
struct exchange {
	struct dnscrypt_keypair kp;
	struct dnscrypt_session s;
	struct server_query sq;
	uint8_t q[512];
	size_t qlen;
	uint8_t nonce[12];
	uint8_t resp[PKT_MAX];
	size_t rlen;
	uint8_t out[PKT_MAX];
};

static void
exchange_start(struct exchange *x, uint16_t es, const char *name)
{
	uint8_t sealed[PKT_MAX];
	int n;

	make_session(&x->s, &x->kp, es, &res1);
	x->qlen = make_query(x->q, 7, name, WIRE_TYPE_A);
	n = dnscrypt_seal(
	    &x->s, x->q, x->qlen, false, 256, sealed, sizeof(sealed), x->nonce);
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(server_open(&res1, es, sealed, (size_t)n, &x->sq), 0);
}

/* The resolver answers with plain (already padded) as the plaintext. */
static void
exchange_answer(
    struct exchange *x, uint16_t es, const uint8_t *plain, size_t plen)
{
	uint8_t rhalf[12];

	rng_bytes(rhalf, sizeof(rhalf));
	x->rlen = server_seal(&x->sq, es, rhalf, plain, plen, x->resp);
}

static int
exchange_open(struct exchange *x)
{
	return dnscrypt_open(
	    &x->s, x->nonce, x->resp, x->rlen, x->out, sizeof(x->out));
}

START_TEST(test_open_refusals)
{
	static struct exchange x;
	uint8_t plain[PKT_MAX], good[PKT_MAX];
	size_t plen;
	uint16_t es = (uint16_t)(_i + 1);

	exchange_start(&x, es, "www.example.org");
	plen = make_reply(plain, 128, x.q, x.qlen);
	exchange_answer(&x, es, plain, plen);
	memcpy(good, x.resp, x.rlen);
	ck_assert_int_eq(exchange_open(&x), (int)x.qlen);

	/* Another magic. */
	x.resp[0] = 'R';
	ck_assert_int_eq(exchange_open(&x), -EPROTO);
	memcpy(x.resp, good, x.rlen);

	/* Another query's nonce (the client half). */
	x.resp[8 + 11] ^= 1;
	ck_assert_int_eq(exchange_open(&x), -ENOMSG);
	memcpy(x.resp, good, x.rlen);

	/* Any byte changed after the client half of the nonce. */
	for (size_t i = 20; i < x.rlen; i++) {
		x.resp[i] ^= 0x20;
		ck_assert_int_eq(exchange_open(&x), -EKEYREJECTED);
		x.resp[i] ^= 0x20;
	}
	ck_assert_int_eq(exchange_open(&x), (int)x.qlen);

	/* Every truncation. */
	for (size_t cut = 0; cut < x.rlen; cut++) {
		int want = cut < 8 ? -EPROTO
		    : cut < 48     ? -EBADMSG
				   : -EKEYREJECTED;
		ck_assert_int_eq(dnscrypt_open(&x.s, x.nonce, x.resp, cut,
				     x.out, sizeof(x.out)),
		    want);
	}
	/* Bytes appended. */
	x.resp[x.rlen] = 0;
	ck_assert_int_eq(dnscrypt_open(&x.s, x.nonce, x.resp, x.rlen + 1, x.out,
			     sizeof(x.out)),
	    -EKEYREJECTED);

	/* Room for the padded plaintext only, and one byte less. */
	ck_assert_int_eq(
	    dnscrypt_open(&x.s, x.nonce, x.resp, x.rlen, x.out, x.rlen - 48),
	    (int)x.qlen);
	ck_assert_int_eq(
	    dnscrypt_open(&x.s, x.nonce, x.resp, x.rlen, x.out, x.rlen - 49),
	    -ENOSPC);
}
END_TEST

START_TEST(test_open_bad_padding)
{
	static struct exchange x;
	uint8_t plain[PKT_MAX];
	size_t plen;
	uint16_t es = (uint16_t)(_i + 1);
	int n;

	exchange_start(&x, es, "pad.example.org");

	/* No 0x80: the message alone. */
	memcpy(plain, x.q, x.qlen);
	exchange_answer(&x, es, plain, x.qlen);
	ck_assert_int_eq(exchange_open(&x), -EBADMSG);
	ck_assert(sodium_is_zero(x.out, x.rlen - 48));

	/* Not zeros after 0x80. */
	plen = make_reply(plain, 128, x.q, x.qlen);
	plain[plen - 1] = 1;
	exchange_answer(&x, es, plain, plen);
	ck_assert_int_eq(exchange_open(&x), -EBADMSG);
	ck_assert(sodium_is_zero(x.out, x.rlen - 48));

	/* Another marker. */
	plen = make_reply(plain, 128, x.q, x.qlen);
	plain[x.qlen] = 0x81;
	exchange_answer(&x, es, plain, plen);
	ck_assert_int_eq(exchange_open(&x), -EBADMSG);

	/* 257 bytes of padding, then 256. */
	plen = make_reply(plain, x.qlen + 257, x.q, x.qlen);
	exchange_answer(&x, es, plain, plen);
	ck_assert_int_eq(exchange_open(&x), -EBADMSG);
	plen = make_reply(plain, x.qlen + 256, x.q, x.qlen);
	exchange_answer(&x, es, plain, plen);
	ck_assert_int_eq(exchange_open(&x), (int)x.qlen);

	/* Nothing but padding; a message shorter than a header. */
	memset(plain, 0, 64);
	plain[0] = 0x80;
	exchange_answer(&x, es, plain, 64);
	ck_assert_int_eq(exchange_open(&x), -EBADMSG);
	exchange_answer(&x, es, plain, 0);
	ck_assert_int_eq(exchange_open(&x), -EBADMSG);
	plen = make_reply(plain, 64, x.q, 11);
	exchange_answer(&x, es, plain, plen);
	ck_assert_int_eq(exchange_open(&x), -EBADMSG);
	plen = make_reply(plain, 64, x.q, 12);
	exchange_answer(&x, es, plain, plen);
	n = exchange_open(&x);
	ck_assert_int_eq(n, 12);
}
END_TEST

START_TEST(test_open_replayed_nonce)
{
	static struct exchange a, b;
	uint8_t plain[PKT_MAX];
	size_t plen;
	uint16_t es = (uint16_t)(_i + 1);

	/* Two queries on one session: the answer to one does not open with
	 * the other's nonce, even though it authenticates. */
	exchange_start(&a, es, "a.example.org");
	b = a;
	{
		uint8_t sealed[PKT_MAX];
		int n;

		b.qlen = make_query(b.q, 8, "b.example.org", WIRE_TYPE_A);
		n = dnscrypt_seal(&b.s, b.q, b.qlen, false, 256, sealed,
		    sizeof(sealed), b.nonce);
		ck_assert_int_gt(n, 0);
		ck_assert_int_eq(
		    server_open(&res1, es, sealed, (size_t)n, &b.sq), 0);
	}
	ck_assert_mem_ne(a.nonce, b.nonce, 12);
	plen = make_reply(plain, 128, a.q, a.qlen);
	exchange_answer(&a, es, plain, plen);
	ck_assert_int_eq(
	    dnscrypt_open(&a.s, b.nonce, a.resp, a.rlen, a.out, sizeof(a.out)),
	    -ENOMSG);
	ck_assert_int_eq(
	    dnscrypt_open(&a.s, a.nonce, a.resp, a.rlen, a.out, sizeof(a.out)),
	    (int)a.qlen);
	ck_assert_mem_eq(a.out, plain, a.qlen);

	/* An answer sealed for another client's key. */
	{
		static struct exchange c;
		exchange_start(&c, es, "a.example.org");
		memcpy(c.nonce, a.nonce, 12);
		ck_assert_int_eq(dnscrypt_open(&c.s, a.nonce, a.resp, a.rlen,
				     c.out, sizeof(c.out)),
		    -EKEYREJECTED);
	}
}
END_TEST

START_TEST(test_cross_construction)
{
	static struct exchange x;
	uint8_t plain[PKT_MAX];
	size_t plen;

	/* A v2 answer does not open in a v1 session. */
	exchange_start(&x, 1, "x.example.org");
	plen = make_reply(plain, 128, x.q, x.qlen);
	exchange_answer(&x, 2, plain, plen);
	ck_assert_int_eq(exchange_open(&x), -EKEYREJECTED);
	exchange_answer(&x, 1, plain, plen);
	ck_assert_int_eq(exchange_open(&x), (int)x.qlen);
}
END_TEST

static uint64_t
refresh(uint32_t start, uint32_t end, uint64_t now)
{
	struct dnscrypt_cert c;

	memset(&c, 0, sizeof(c));
	c.ts_start = start;
	c.ts_end = end;
	return dnscrypt_cert_refresh_at(&c, now) - now;
}

START_TEST(test_refresh_at)
{
	/* Long validity: the hourly check. */
	ck_assert_uint_eq(refresh(NOW, NOW + DAY, NOW), 3600);
	ck_assert_uint_eq(refresh(NOW - DAY, NOW + 365 * DAY, NOW), 3600);
	/* Four hours or less: when a quarter (at most an hour) is left. */
	ck_assert_uint_eq(refresh(NOW, NOW + 4 * 3600, NOW), 3600);
	/* Two hours: half an hour before the end, but the hourly check
	 * comes first. */
	ck_assert_uint_eq(refresh(NOW, NOW + 7200, NOW), 3600);
	ck_assert_uint_eq(refresh(NOW, NOW + 4000, NOW), 3000);
	ck_assert_uint_eq(refresh(NOW, NOW + 600, NOW), 450);
	ck_assert_uint_eq(refresh(NOW - 600, NOW + 600, NOW), 450);
	/* Never sooner than a minute, also past the end. */
	ck_assert_uint_eq(refresh(NOW, NOW + 80, NOW), 60);
	ck_assert_uint_eq(refresh(NOW, NOW + 10, NOW), 60);
	ck_assert_uint_eq(refresh(NOW, NOW, NOW), 60);
	ck_assert_uint_eq(refresh(NOW - DAY, NOW - 1, NOW), 60);
	/* Always before the end while more than a minute is left. */
	for (uint32_t left = 61; left < 3 * DAY; left = left * 3 / 2) {
		uint64_t at = refresh(NOW - 5, NOW + left, NOW) + NOW;
		ck_assert_uint_lt(at, (uint64_t)NOW + left);
		ck_assert_uint_ge(at, (uint64_t)NOW + 60);
		ck_assert_uint_le(at, (uint64_t)NOW + 3600);
	}
	{
		struct dnscrypt_cert c = {.ts_start = NOW, .ts_end = NOW + 5};
		ck_assert(!dnscrypt_cert_valid(&c, NOW - 1));
		ck_assert(dnscrypt_cert_valid(&c, NOW));
		ck_assert(dnscrypt_cert_valid(&c, NOW + 5));
		ck_assert(!dnscrypt_cert_valid(&c, NOW + 6));
	}
}
END_TEST

/*
 * A stamp names the server a session talks to: an address with a NUL in
 * it would reach the config layer cut short, so the parser refuses it (a
 * case the stamp fuzzer found).
 */
START_TEST(test_stamp_address_bytes)
{
	static const char *const bad[] = {"127.0.0.1\0:443", "\0", "1.2.3.4 ",
	    "1.2.3.4\n", "1.2.3.4\x7f", "1.2.3.4\xc3\xa9"};
	static const size_t bad_len[] = {14, 1, 8, 8, 8, 9};
	struct stamp_dnscrypt st, back;
	char text[512];
	const char *why;

	memset(&st, 0, sizeof(st));
	memcpy(st.pk, prov.pk, 32);
	strcpy(st.name, PROVIDER);
	strcpy(st.addr, "[::1]:5443");
	ck_assert_int_gt(stamp_write_dnscrypt(&st, text, sizeof(text)), 0);
	ck_assert_int_eq(stamp_parse_dnscrypt(text, &back, &why), 0);
	ck_assert_str_eq(back.addr, "[::1]:5443");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t bin[128];
		size_t n = 0;

		/* The writer takes C strings, so the payload is built here. */
		bin[n++] = 1;
		memset(bin + n, 0, 8);
		n += 8;
		bin[n++] = (uint8_t)bad_len[i];
		memcpy(bin + n, bad[i], bad_len[i]);
		n += bad_len[i];
		bin[n++] = 32;
		memcpy(bin + n, prov.pk, 32);
		n += 32;
		bin[n++] = (uint8_t)strlen(PROVIDER);
		memcpy(bin + n, PROVIDER, strlen(PROVIDER));
		n += strlen(PROVIDER);
		strcpy(text, "sdns://");
		sodium_bin2base64(text + 7, sizeof(text) - 7, bin, n,
		    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
		why = NULL;
		ck_assert_int_eq(
		    stamp_parse_dnscrypt(text, &back, &why), -EINVAL);
		ck_assert_str_eq(
		    why, "stamp address has characters an address cannot hold");
	}
}
END_TEST

START_TEST(test_strerror)
{
	ck_assert_str_eq(
	    dnscrypt_strerror(-ENOMSG), "response to another query");
	ck_assert_str_eq(
	    dnscrypt_strerror(-EKEYREJECTED), "response does not authenticate");
	ck_assert_str_eq(dnscrypt_strerror(12345), "unknown error");
}
END_TEST

static Suite *
make_suite(void)
{
	Suite *s = suite_create("dnscrypt");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, test_cert_query);
	tcase_add_test(tc, test_cert_parse_valid);
	tcase_add_test(tc, test_cert_parse_refusals);
	tcase_add_test(tc, test_choose_highest_serial);
	tcase_add_test(tc, test_choose_prefers_es2_on_tie);
	tcase_add_test(tc, test_choose_records);
	tcase_add_test(tc, test_choose_reasons);
	tcase_add_test(tc, test_session_init);
	tcase_add_test(tc, test_round_trip_v1_udp);
	tcase_add_test(tc, test_round_trip_v2_udp);
	tcase_add_test(tc, test_round_trip_v1_tcp);
	tcase_add_test(tc, test_round_trip_v2_tcp);
	tcase_add_test(tc, test_udp_padding);
	tcase_add_test(tc, test_tcp_padding);
	tcase_add_test(tc, test_grow_min_len);
	tcase_add_loop_test(tc, test_open_refusals, 0, 2);
	tcase_add_loop_test(tc, test_open_bad_padding, 0, 2);
	tcase_add_loop_test(tc, test_open_replayed_nonce, 0, 2);
	tcase_add_test(tc, test_cross_construction);
	tcase_add_test(tc, test_refresh_at);
	tcase_add_test(tc, test_stamp_address_bytes);
	tcase_add_test(tc, test_strerror);
	suite_add_tcase(s, tc);
	return s;
}

UNIT_MAIN(make_suite)
