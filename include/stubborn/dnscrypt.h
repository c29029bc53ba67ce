/*
 * dnscrypt: the client side of DNSCrypt v2 (the protocol text in the
 * DNSCrypt/dnscrypt-protocol repository), as pure functions over buffers.
 *
 * The caller fetches certificates with a plain TXT query for the provider
 * name (dnscrypt_cert_query), picks one from the answer
 * (dnscrypt_cert_choose), makes a session from it and a client key pair
 * (dnscrypt_session_init), then seals each DNS query (dnscrypt_seal) and
 * opens each response with the nonce the query used (dnscrypt_open).
 *
 * Nothing here allocates, logs or reads a clock: wall-clock time (Unix
 * seconds, which certificates are written in) is an argument, randomness
 * comes from rng.  Every length is checked; outside bytes yield a negative
 * errno, never a crash.  A session is read-only once made, so threads may
 * share one.
 *
 * Framing over TCP is the caller's: every implementation in use (dnsdist,
 * dnscrypt-proxy, Unbound) prefixes a packet with the usual DNS-over-TCP
 * two-byte big-endian length, although the protocol text says
 * little-endian.
 */
#ifndef STUBBORN_DNSCRYPT_H
#define STUBBORN_DNSCRYPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNSCRYPT_PK_LEN 32         /* X25519 and Ed25519 public keys */
#define DNSCRYPT_SK_LEN 32         /* X25519 secret key */
#define DNSCRYPT_SHARED_LEN 32     /* precomputed shared key */
#define DNSCRYPT_SIG_LEN 64        /* Ed25519 signature */
#define DNSCRYPT_MAGIC_LEN 8       /* client magic, resolver magic */
#define DNSCRYPT_NONCE_LEN 24      /* both constructions */
#define DNSCRYPT_HALF_NONCE_LEN 12 /* the client's half */
#define DNSCRYPT_MAC_LEN 16        /* Poly1305, before the ciphertext */

/* client magic | client pk | client nonce | MAC */
#define DNSCRYPT_QUERY_OVERHEAD                                                \
	(DNSCRYPT_MAGIC_LEN + DNSCRYPT_PK_LEN + DNSCRYPT_HALF_NONCE_LEN +      \
	    DNSCRYPT_MAC_LEN)
/* resolver magic | nonce | MAC */
#define DNSCRYPT_RESPONSE_OVERHEAD                                             \
	(DNSCRYPT_MAGIC_LEN + DNSCRYPT_NONCE_LEN + DNSCRYPT_MAC_LEN)

/* Certificates: 124 bytes without extensions; longer ones are refused. */
#define DNSCRYPT_CERT_LEN 124
#define DNSCRYPT_CERT_MAX 1024

/* es-version: the construction a certificate asks for. */
#define DNSCRYPT_ES_XSALSA20 1  /* X25519-XSalsa20Poly1305 */
#define DNSCRYPT_ES_XCHACHA20 2 /* X25519-XChaCha20Poly1305 */

/*
 * Padding: the padded plaintext of a query is a multiple of 64 bytes; over
 * UDP at least a minimum length that starts at 256 and grows by 64 (up to
 * DNSCRYPT_MAX_UDP_LEN) after each truncated answer.  The largest UDP
 * packet is then DNSCRYPT_MAX_UDP_LEN + DNSCRYPT_QUERY_OVERHEAD = 1220
 * bytes, under the 1232 that avoids IP fragmentation.  Padding (0x80 and
 * the zeros after it) is 1 to 256 bytes in responses and TCP queries.
 */
#define DNSCRYPT_BLOCK 64
#define DNSCRYPT_MIN_UDP_LEN 256
#define DNSCRYPT_MAX_UDP_LEN 1152
#define DNSCRYPT_MAX_PAD 256

/* Bounds of dnscrypt_cert_refresh_at(), in seconds after now. */
#define DNSCRYPT_REFRESH_MIN 60
#define DNSCRYPT_REFRESH_MAX 3600

/* Room for the certificate query of any provider name. */
#define DNSCRYPT_CERT_QUERY_MAX (12 + 255 + 4 + 11)

/* One verified certificate (the fields after the signature). */
struct dnscrypt_cert {
	uint16_t es_version; /* DNSCRYPT_ES_* */
	uint16_t minor;      /* protocol minor version, as sent */
	uint8_t resolver_pk[DNSCRYPT_PK_LEN];
	uint8_t client_magic[DNSCRYPT_MAGIC_LEN];
	uint32_t serial;
	uint32_t ts_start; /* valid from, Unix seconds */
	uint32_t ts_end;   /* valid until, inclusive */
};

/* A client's X25519 key pair; the same pair serves both constructions. */
struct dnscrypt_keypair {
	uint8_t pk[DNSCRYPT_PK_LEN];
	uint8_t sk[DNSCRYPT_SK_LEN];
};

/*
 * What sealing and opening need: the chosen certificate, the client's
 * public key (sent in every query) and the shared key precomputed for the
 * certificate's construction.  The client's secret key is not kept: after
 * precomputation nothing needs it.
 */
struct dnscrypt_session {
	struct dnscrypt_cert cert;
	uint8_t client_pk[DNSCRYPT_PK_LEN];
	uint8_t shared[DNSCRYPT_SHARED_LEN];
};

/*
 * Writes into out (cap bytes; DNSCRYPT_CERT_QUERY_MAX is always enough) the
 * TXT query, class IN, with RD set and an OPT of size 1232 so that several
 * certificates fit over UDP, for provider_name (presentation form, with or
 * without the trailing dot).  Returns the length, -EINVAL for a name that
 * is not a DNS name, or -ENOSPC.
 */
int dnscrypt_cert_query(
    uint8_t *out, size_t cap, uint16_t id, const char *provider_name);

/*
 * Parses one certificate (cert, len bytes: a TXT record's character-strings
 * concatenated) and verifies it against the provider's Ed25519 public key
 * and the wall-clock time now: magic "DNSC", es-version 1 or 2, a signature
 * over everything after it (extensions included, which are otherwise
 * ignored), and ts_start <= now <= ts_end.  On success fills *out and
 * returns 0.  Otherwise *out is unspecified, *why (when why is not NULL)
 * gets a static reason a log line can show, and the result is
 *   -EBADMSG          "malformed certificate" (under 124 or over
 *                     DNSCRYPT_CERT_MAX bytes, or no "DNSC")
 *   -EPROTONOSUPPORT  "unsupported es-version"
 *   -EKEYREJECTED     "signature does not verify"
 *   -EKEYEXPIRED      "expired", "not yet valid", or "validity ends before
 *                     it starts"
 * The checks run in that order: the es-version is not covered by the
 * signature.
 */
int dnscrypt_cert_parse(const uint8_t *cert, size_t len,
    const uint8_t provider_pk[DNSCRYPT_PK_LEN], uint64_t now,
    struct dnscrypt_cert *out, const char **why);

/*
 * Chooses the certificate to use from msg (len bytes), the response to
 * dnscrypt_cert_query(); the caller has matched its ID.  Every TXT record
 * of class IN in the answer section whose owner is provider_name (compared
 * without regard to case) is parsed and verified as above; among the valid
 * ones the highest serial wins, on equal serials es-version 2 over 1, and
 * on a full tie the first in the answer.  Returns 0 and fills *out, or an
 * error with a static reason in *why (when why is not NULL):
 *   -EBADMSG      "certificate response is malformed" (does not parse, or
 *                 QR is not set)
 *   -EMSGSIZE     "certificate response is truncated" (TC set: ask again
 *                 over TCP)
 *   -ENOENT       "no certificate" (no such TXT record, or an RCODE other
 *                 than NOERROR)
 *   or, when records were there but none was valid, the error and reason
 *   of dnscrypt_cert_parse() for the record that got furthest through its
 *   checks (a bad signature says more than a bad magic, a time window
 *   more than a bad signature), the first such record on a tie.
 * provider_name is in presentation form; -EINVAL if it is not a DNS name.
 */
int dnscrypt_cert_choose(const uint8_t *msg, size_t len,
    const char *provider_name, const uint8_t provider_pk[DNSCRYPT_PK_LEN],
    uint64_t now, struct dnscrypt_cert *out, const char **why);

/* True if now lies in [ts_start, ts_end]. */
bool dnscrypt_cert_valid(const struct dnscrypt_cert *c, uint64_t now);

/*
 * When to fetch certificates again, given the one in use and the
 * wall-clock time now (of the fetch that chose it, or of the last check).
 * The answer is the moment when a quarter of the validity remaining at now,
 * or one hour, whichever is less, is left before ts_end; but never later
 * than now + DNSCRYPT_REFRESH_MAX (the protocol asks clients to look for
 * new certificates every hour) and never earlier than now +
 * DNSCRYPT_REFRESH_MIN (so a resolver that keeps serving an expiring or
 * expired certificate is not asked in a loop).  The smaller margin is
 * chosen over the larger so that a certificate valid for minutes is not
 * refetched at once; with rechecks it is refetched after 3/4, then 15/16 of
 * its life, and so on.  Pure.
 */
uint64_t dnscrypt_cert_refresh_at(const struct dnscrypt_cert *c, uint64_t now);

/*
 * Makes a fresh client key pair (crypto_box_keypair, from libsodium's
 * CSPRNG; rng_init() must have run).  Returns 0 or -EIO.
 */
int dnscrypt_keypair_init(struct dnscrypt_keypair *kp);

/* Wipes a key pair.  NULL is accepted. */
void dnscrypt_keypair_fini(struct dnscrypt_keypair *kp);

/*
 * Makes a session for certificate c (as chosen above) and client key pair
 * kp: copies the certificate and kp->pk and precomputes the shared key for
 * c's construction.  kp is not kept.  Returns 0, -EPROTONOSUPPORT for an
 * es-version other than 1 or 2, or -EKEYREJECTED when the resolver's key
 * yields no usable shared key (a low-order point).
 */
int dnscrypt_session_init(struct dnscrypt_session *s,
    const struct dnscrypt_cert *c, const struct dnscrypt_keypair *kp);

/* Wipes a session.  NULL is accepted. */
void dnscrypt_session_fini(struct dnscrypt_session *s);

/*
 * Seals the DNS query (qlen bytes, at least a header) for session s into out
 * (cap bytes, not overlapping query):
 *   client magic | client pk | client nonce | box(query | 0x80 | zeros)
 * where the client nonce is 12 random bytes, returned in nonce for
 * matching the response, and the box nonce is that followed by 12 zero
 * bytes.  The padded plaintext is a multiple of 64 bytes; over UDP (tcp
 * false) the smallest such length that is at least min_len, which must be a
 * multiple of 64 in [DNSCRYPT_MIN_UDP_LEN, DNSCRYPT_MAX_UDP_LEN]; over TCP
 * min_len is ignored and the padding is 1 to 256 bytes, its length chosen
 * at random among those allowed and that fit in cap.  Returns the
 * packet's length, -EINVAL (bad min_len, or qlen under 12 or over 65535),
 * or -ENOSPC (cap too small even for the least padding; max(min_len, qlen +
 * 64) + DNSCRYPT_QUERY_OVERHEAD is always enough over UDP, qlen +
 * DNSCRYPT_MAX_PAD + DNSCRYPT_QUERY_OVERHEAD leaves every choice open over
 * TCP).  Out is then unspecified.
 */
int dnscrypt_seal(const struct dnscrypt_session *s, const uint8_t *query,
    size_t qlen, bool tcp, size_t min_len, uint8_t *out, size_t cap,
    uint8_t nonce[DNSCRYPT_HALF_NONCE_LEN]);

/*
 * The UDP minimum length after an answer came back truncated: cur + 64, at
 * most DNSCRYPT_MAX_UDP_LEN.  A cur that is not a valid minimum is first
 * rounded down to a multiple of 64; the result is always valid.
 */
size_t dnscrypt_grow_min_len(size_t cur);

/*
 * Opens pkt (len bytes), a response to the query sealed with nonce, for
 * session s:
 *   resolver magic "r6fnvWj8" | nonce (client half | resolver half) | box
 * and writes the DNS message into out (cap bytes; len -
 * DNSCRYPT_RESPONSE_OVERHEAD is always enough).  out may be pkt itself (the
 * message then starts at pkt[0]); pkt is otherwise not written.  The
 * padding must be 0x80 then zeros, 1 to 256 bytes, and the message at least
 * a DNS header.  Returns the message's length, or
 *   -EPROTO        not a DNSCrypt response (too short for the resolver
 *                  magic, or another magic)
 *   -ENOMSG        the nonce is another query's (a late or replayed answer)
 *   -EBADMSG       too short for nonce and MAC, or, once decrypted, bad
 *                  padding or a message shorter than a DNS header
 *   -EKEYREJECTED  the box does not open: forged, corrupted, or sealed for
 *                  another key
 *   -ENOSPC        out is too small
 * On error the contents of out are unspecified, but never a message: a
 * decrypted one that fails the padding checks is wiped.
 */
int dnscrypt_open(const struct dnscrypt_session *s,
    const uint8_t nonce[DNSCRYPT_HALF_NONCE_LEN], const uint8_t *pkt,
    size_t len, uint8_t *out, size_t cap);

/* A short static text for an error of dnscrypt_seal() or dnscrypt_open(). */
const char *dnscrypt_strerror(int err);

#endif
