#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "stubborn/dnscrypt.h"
#include "stubborn/rng.h"
#include "stubborn/wire.h"

#define CERT_MAGIC "DNSC"
#define RESOLVER_MAGIC "r6fnvWj8"
#define CERT_EDNS_SIZE 1232
#define TYPE_TXT 16

/* Offsets in a certificate. */
#define CERT_ES_OFF 4
#define CERT_MINOR_OFF 6
#define CERT_SIG_OFF 8
#define CERT_SIGNED_OFF (CERT_SIG_OFF + DNSCRYPT_SIG_LEN)
#define CERT_PK_OFF CERT_SIGNED_OFF
#define CERT_MAGIC_OFF (CERT_PK_OFF + DNSCRYPT_PK_LEN)
#define CERT_SERIAL_OFF (CERT_MAGIC_OFF + DNSCRYPT_MAGIC_LEN)
#define CERT_START_OFF (CERT_SERIAL_OFF + 4)
#define CERT_END_OFF (CERT_START_OFF + 4)

/* Where the box starts in a query and in a response. */
#define QUERY_BOX_OFF                                                          \
	(DNSCRYPT_MAGIC_LEN + DNSCRYPT_PK_LEN + DNSCRYPT_HALF_NONCE_LEN)
#define RESPONSE_BOX_OFF (DNSCRYPT_MAGIC_LEN + DNSCRYPT_NONCE_LEN)

_Static_assert(CERT_END_OFF + 4 == DNSCRYPT_CERT_LEN, "certificate layout");
_Static_assert(crypto_box_BEFORENMBYTES == DNSCRYPT_SHARED_LEN &&
	crypto_box_curve25519xchacha20poly1305_BEFORENMBYTES ==
	    DNSCRYPT_SHARED_LEN,
    "shared key size");
_Static_assert(crypto_box_NONCEBYTES == DNSCRYPT_NONCE_LEN &&
	crypto_box_curve25519xchacha20poly1305_NONCEBYTES == DNSCRYPT_NONCE_LEN,
    "nonce size");
_Static_assert(crypto_box_MACBYTES == DNSCRYPT_MAC_LEN &&
	crypto_box_curve25519xchacha20poly1305_MACBYTES == DNSCRYPT_MAC_LEN,
    "MAC size");
_Static_assert(crypto_sign_BYTES == DNSCRYPT_SIG_LEN, "signature size");

static int cert_fail(const char **why, const char *text, int err);
static int cert_stage(int err);
static bool cert_better(
    const struct dnscrypt_cert *a, const struct dnscrypt_cert *b);
static int txt_concat(
    const uint8_t *msg, const struct wire_rr *rr, uint8_t *buf, size_t *n);
static bool owner_is(const uint8_t *msg, size_t len, const struct wire_rr *rr,
    const uint8_t *name, size_t nlen);
static int box_seal(const struct dnscrypt_session *s, uint8_t *c,
    const uint8_t *m, size_t mlen, const uint8_t *n);
static int box_open(const struct dnscrypt_session *s, uint8_t *m,
    const uint8_t *c, size_t clen, const uint8_t *n);
static size_t unpad(const uint8_t *m, size_t mlen);

static int
cert_fail(const char **why, const char *text, int err)
{
	if (why != NULL)
		*why = text;
	return err;
}

/* How far a certificate got through the checks, for the reason to report. */
static int
cert_stage(int err)
{
	switch (err) {
	case -EBADMSG:
		return 1;
	case -EPROTONOSUPPORT:
		return 2;
	case -EKEYREJECTED:
		return 3;
	case -EKEYEXPIRED:
		return 4;
	}
	return 0;
}

int
dnscrypt_cert_query(
    uint8_t *out, size_t cap, uint16_t id, const char *provider_name)
{
	uint8_t name[WIRE_NAME_MAX + 1];
	int nl = wire_name_from_text(provider_name, name);

	if (nl < 0)
		return -EINVAL;
	return wire_build_query(out, cap, id, WIRE_RD, name, (size_t)nl,
	    TYPE_TXT, WIRE_CLASS_IN, CERT_EDNS_SIZE, false);
}

int
dnscrypt_cert_parse(const uint8_t *cert, size_t len,
    const uint8_t provider_pk[DNSCRYPT_PK_LEN], uint64_t now,
    struct dnscrypt_cert *out, const char **why)
{
	if (len < DNSCRYPT_CERT_LEN || len > DNSCRYPT_CERT_MAX ||
	    memcmp(cert, CERT_MAGIC, 4) != 0)
		return cert_fail(why, "malformed certificate", -EBADMSG);
	out->es_version = wire_u16(cert + CERT_ES_OFF);
	if (out->es_version != DNSCRYPT_ES_XSALSA20 &&
	    out->es_version != DNSCRYPT_ES_XCHACHA20)
		return cert_fail(
		    why, "unsupported es-version", -EPROTONOSUPPORT);
	if (crypto_sign_verify_detached(cert + CERT_SIG_OFF,
		cert + CERT_SIGNED_OFF, len - CERT_SIGNED_OFF,
		provider_pk) != 0)
		return cert_fail(
		    why, "signature does not verify", -EKEYREJECTED);
	out->minor = wire_u16(cert + CERT_MINOR_OFF);
	memcpy(out->resolver_pk, cert + CERT_PK_OFF, DNSCRYPT_PK_LEN);
	memcpy(out->client_magic, cert + CERT_MAGIC_OFF, DNSCRYPT_MAGIC_LEN);
	out->serial = wire_u32(cert + CERT_SERIAL_OFF);
	out->ts_start = wire_u32(cert + CERT_START_OFF);
	out->ts_end = wire_u32(cert + CERT_END_OFF);
	if (out->ts_start > out->ts_end)
		return cert_fail(
		    why, "validity ends before it starts", -EKEYEXPIRED);
	if (now < out->ts_start)
		return cert_fail(why, "not yet valid", -EKEYEXPIRED);
	if (now > out->ts_end)
		return cert_fail(why, "expired", -EKEYEXPIRED);
	if (why != NULL)
		*why = NULL;
	return 0;
}

/* True if a is to be preferred to b: higher serial, then es-version. */
static bool
cert_better(const struct dnscrypt_cert *a, const struct dnscrypt_cert *b)
{
	if (a->serial != b->serial)
		return a->serial > b->serial;
	return a->es_version > b->es_version;
}

/*
 * Concatenates the character-strings of a TXT record into buf (at least
 * DNSCRYPT_CERT_MAX + 255 bytes).  0, or -EBADMSG for a string that runs
 * past the RDATA or a total over DNSCRYPT_CERT_MAX.
 */
static int
txt_concat(
    const uint8_t *msg, const struct wire_rr *rr, uint8_t *buf, size_t *n)
{
	size_t off = rr->rdata_off;

	*n = 0;
	while (off < rr->end) {
		size_t l = msg[off++];

		if (l > rr->end - off || *n > DNSCRYPT_CERT_MAX)
			return -EBADMSG;
		memcpy(buf + *n, msg + off, l);
		*n += l;
		off += l;
	}
	return *n > DNSCRYPT_CERT_MAX ? -EBADMSG : 0;
}

static bool
owner_is(const uint8_t *msg, size_t len, const struct wire_rr *rr,
    const uint8_t *name, size_t nlen)
{
	uint8_t owner[WIRE_NAME_MAX + 1];
	int ol = wire_read_name(msg, len, rr->off, owner, false);

	return ol > 0 && wire_name_equal(owner, (size_t)ol, name, nlen);
}

int
dnscrypt_cert_choose(const uint8_t *msg, size_t len, const char *provider_name,
    const uint8_t provider_pk[DNSCRYPT_PK_LEN], uint64_t now,
    struct dnscrypt_cert *out, const char **why)
{
	uint8_t name[WIRE_NAME_MAX + 1];
	uint8_t buf[DNSCRYPT_CERT_MAX + 256];
	struct dnscrypt_cert c;
	struct wire_iter it;
	struct wire_rr rr;
	const char *fail_why = "no certificate";
	int nl, r, fail = -ENOENT, fail_stage = 0;
	bool found = false;

	nl = wire_name_from_text(provider_name, name);
	if (nl < 0)
		return cert_fail(
		    why, "provider name is not a DNS name", -EINVAL);
	if (len < WIRE_HDR_LEN || !(WIRE_FLAGS(msg) & WIRE_QR) ||
	    wire_iter_init(&it, msg, len) < 0)
		return cert_fail(
		    why, "certificate response is malformed", -EBADMSG);
	if (WIRE_FLAGS(msg) & WIRE_TC)
		return cert_fail(
		    why, "certificate response is truncated", -EMSGSIZE);
	if (WIRE_RCODE(WIRE_FLAGS(msg)) != WIRE_RCODE_NOERROR)
		return cert_fail(why, "no certificate", -ENOENT);
	while ((r = wire_iter_next(&it, &rr)) == 1 && rr.section == 1) {
		const char *w;
		size_t n;
		int err;

		if (rr.type != TYPE_TXT || rr.rclass != WIRE_CLASS_IN ||
		    !owner_is(msg, len, &rr, name, (size_t)nl))
			continue;
		if (txt_concat(msg, &rr, buf, &n) < 0) {
			err = -EBADMSG;
			w = "malformed certificate";
		} else {
			err = dnscrypt_cert_parse(
			    buf, n, provider_pk, now, &c, &w);
		}
		if (err == 0) {
			if (!found || cert_better(&c, out))
				*out = c;
			found = true;
		} else if (cert_stage(err) > fail_stage) {
			fail = err;
			fail_why = w;
			fail_stage = cert_stage(err);
		}
	}
	if (r < 0)
		return cert_fail(
		    why, "certificate response is malformed", -EBADMSG);
	if (!found)
		return cert_fail(why, fail_why, fail);
	if (why != NULL)
		*why = NULL;
	return 0;
}

bool
dnscrypt_cert_valid(const struct dnscrypt_cert *c, uint64_t now)
{
	return now >= c->ts_start && now <= c->ts_end;
}

uint64_t
dnscrypt_cert_refresh_at(const struct dnscrypt_cert *c, uint64_t now)
{
	uint64_t left = c->ts_end > now ? c->ts_end - now : 0;
	uint64_t margin = left / 4 < 3600 ? left / 4 : 3600;
	uint64_t wait = left - margin;

	if (wait > DNSCRYPT_REFRESH_MAX)
		wait = DNSCRYPT_REFRESH_MAX;
	if (wait < DNSCRYPT_REFRESH_MIN)
		wait = DNSCRYPT_REFRESH_MIN;
	return now + wait;
}

int
dnscrypt_keypair_init(struct dnscrypt_keypair *kp)
{
	return crypto_box_keypair(kp->pk, kp->sk) == 0 ? 0 : -EIO;
}

void
dnscrypt_keypair_fini(struct dnscrypt_keypair *kp)
{
	if (kp != NULL)
		sodium_memzero(kp, sizeof(*kp));
}

int
dnscrypt_session_init(struct dnscrypt_session *s, const struct dnscrypt_cert *c,
    const struct dnscrypt_keypair *kp)
{
	int r;

	memset(s, 0, sizeof(*s));
	switch (c->es_version) {
	case DNSCRYPT_ES_XSALSA20:
		r = crypto_box_beforenm(s->shared, c->resolver_pk, kp->sk);
		break;
	case DNSCRYPT_ES_XCHACHA20:
		r = crypto_box_curve25519xchacha20poly1305_beforenm(
		    s->shared, c->resolver_pk, kp->sk);
		break;
	default:
		return -EPROTONOSUPPORT;
	}
	if (r != 0) {
		sodium_memzero(s, sizeof(*s));
		return -EKEYREJECTED;
	}
	s->cert = *c;
	memcpy(s->client_pk, kp->pk, DNSCRYPT_PK_LEN);
	return 0;
}

void
dnscrypt_session_fini(struct dnscrypt_session *s)
{
	if (s != NULL)
		sodium_memzero(s, sizeof(*s));
}

/* c and m may overlap (libsodium's easy interface allows it). */
static int
box_seal(const struct dnscrypt_session *s, uint8_t *c, const uint8_t *m,
    size_t mlen, const uint8_t *n)
{
	if (s->cert.es_version == DNSCRYPT_ES_XCHACHA20)
		return crypto_box_curve25519xchacha20poly1305_easy_afternm(
		    c, m, mlen, n, s->shared);
	if (s->cert.es_version == DNSCRYPT_ES_XSALSA20)
		return crypto_box_easy_afternm(c, m, mlen, n, s->shared);
	return -1;
}

static int
box_open(const struct dnscrypt_session *s, uint8_t *m, const uint8_t *c,
    size_t clen, const uint8_t *n)
{
	if (s->cert.es_version == DNSCRYPT_ES_XCHACHA20)
		return crypto_box_curve25519xchacha20poly1305_open_easy_afternm(
		    m, c, clen, n, s->shared);
	if (s->cert.es_version == DNSCRYPT_ES_XSALSA20)
		return crypto_box_open_easy_afternm(m, c, clen, n, s->shared);
	return -1;
}

int
dnscrypt_seal(const struct dnscrypt_session *s, const uint8_t *query,
    size_t qlen, bool tcp, size_t min_len, uint8_t *out, size_t cap,
    uint8_t nonce[DNSCRYPT_HALF_NONCE_LEN])
{
	uint8_t full[DNSCRYPT_NONCE_LEN] = {0};
	size_t base, padded;
	uint8_t *m;

	if (qlen < WIRE_HDR_LEN || qlen > WIRE_MSG_MAX)
		return -EINVAL;
	/* The smallest multiple of the block with room for 0x80. */
	base = (qlen / DNSCRYPT_BLOCK + 1) * DNSCRYPT_BLOCK;
	if (!tcp) {
		if (min_len % DNSCRYPT_BLOCK != 0 ||
		    min_len < DNSCRYPT_MIN_UDP_LEN ||
		    min_len > DNSCRYPT_MAX_UDP_LEN)
			return -EINVAL;
		padded = base > min_len ? base : min_len;
	} else {
		/* base - qlen is 1..64, so 4 choices when cap allows. */
		size_t choices =
		    (qlen + DNSCRYPT_MAX_PAD - base) / DNSCRYPT_BLOCK + 1;
		size_t room = cap > DNSCRYPT_QUERY_OVERHEAD
		    ? cap - DNSCRYPT_QUERY_OVERHEAD
		    : 0;

		if (room >= base &&
		    (room - base) / DNSCRYPT_BLOCK + 1 < choices)
			choices = (room - base) / DNSCRYPT_BLOCK + 1;
		padded = base + DNSCRYPT_BLOCK * rng_uniform((uint32_t)choices);
	}
	if (cap < DNSCRYPT_QUERY_OVERHEAD ||
	    padded > cap - DNSCRYPT_QUERY_OVERHEAD)
		return -ENOSPC;
	memcpy(out, s->cert.client_magic, DNSCRYPT_MAGIC_LEN);
	memcpy(out + DNSCRYPT_MAGIC_LEN, s->client_pk, DNSCRYPT_PK_LEN);
	rng_bytes(nonce, DNSCRYPT_HALF_NONCE_LEN);
	memcpy(out + DNSCRYPT_MAGIC_LEN + DNSCRYPT_PK_LEN, nonce,
	    DNSCRYPT_HALF_NONCE_LEN);
	memcpy(full, nonce, DNSCRYPT_HALF_NONCE_LEN);
	m = out + QUERY_BOX_OFF + DNSCRYPT_MAC_LEN;
	memcpy(m, query, qlen);
	m[qlen] = 0x80;
	memset(m + qlen + 1, 0, padded - qlen - 1);
	if (box_seal(s, out + QUERY_BOX_OFF, m, padded, full) != 0)
		return -EINVAL;
	return (int)(DNSCRYPT_QUERY_OVERHEAD + padded);
}

size_t
dnscrypt_grow_min_len(size_t cur)
{
	size_t next = cur > DNSCRYPT_MAX_UDP_LEN ? DNSCRYPT_MAX_UDP_LEN : cur;

	next = next / DNSCRYPT_BLOCK * DNSCRYPT_BLOCK + DNSCRYPT_BLOCK;
	if (next < DNSCRYPT_MIN_UDP_LEN)
		next = DNSCRYPT_MIN_UDP_LEN;
	return next > DNSCRYPT_MAX_UDP_LEN ? DNSCRYPT_MAX_UDP_LEN : next;
}

/*
 * The length of the message in the padded plaintext m, or 0 when the
 * padding is not 0x80 then zeros, 1 to DNSCRYPT_MAX_PAD bytes in all, or
 * leaves less than a DNS header.
 */
static size_t
unpad(const uint8_t *m, size_t mlen)
{
	size_t i = mlen;

	/* At most DNSCRYPT_MAX_PAD - 1 zeros before the 0x80. */
	while (i > 0 && mlen - i < DNSCRYPT_MAX_PAD - 1 && m[i - 1] == 0)
		i--;
	if (i == 0 || m[i - 1] != 0x80)
		return 0;
	i--;
	return i < WIRE_HDR_LEN ? 0 : i;
}

int
dnscrypt_open(const struct dnscrypt_session *s,
    const uint8_t nonce[DNSCRYPT_HALF_NONCE_LEN], const uint8_t *pkt,
    size_t len, uint8_t *out, size_t cap)
{
	uint8_t full[DNSCRYPT_NONCE_LEN];
	size_t mlen, n;

	if (len < DNSCRYPT_MAGIC_LEN ||
	    memcmp(pkt, RESOLVER_MAGIC, DNSCRYPT_MAGIC_LEN) != 0)
		return -EPROTO;
	if (len < DNSCRYPT_RESPONSE_OVERHEAD)
		return -EBADMSG;
	if (memcmp(pkt + DNSCRYPT_MAGIC_LEN, nonce, DNSCRYPT_HALF_NONCE_LEN) !=
	    0)
		return -ENOMSG;
	mlen = len - DNSCRYPT_RESPONSE_OVERHEAD;
	if (mlen > cap)
		return -ENOSPC;
	/* Copied first: decrypting in place overwrites the packet. */
	memcpy(full, pkt + DNSCRYPT_MAGIC_LEN, DNSCRYPT_NONCE_LEN);
	if (box_open(s, out, pkt + RESPONSE_BOX_OFF, len - RESPONSE_BOX_OFF,
		full) != 0)
		return -EKEYREJECTED;
	n = unpad(out, mlen);
	if (n == 0) {
		sodium_memzero(out, mlen);
		return -EBADMSG;
	}
	return (int)n;
}

const char *
dnscrypt_strerror(int err)
{
	switch (err) {
	case -EPROTO:
		return "not a DNSCrypt response";
	case -ENOMSG:
		return "response to another query";
	case -EBADMSG:
		return "malformed response";
	case -EKEYREJECTED:
		return "response does not authenticate";
	case -ENOSPC:
		return "buffer too small";
	case -EINVAL:
		return "invalid argument";
	}
	return "unknown error";
}
