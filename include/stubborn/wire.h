/*
 * wire: bounds-checked reads and in-place patches of DNS messages.
 *
 * Nothing here allocates or keeps state; every function takes the message
 * and its length and never reads past it.  Offsets are size_t into the
 * message.  Malformed input yields -EBADMSG, never a crash.
 */
#ifndef STUBBORN_WIRE_H
#define STUBBORN_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_HDR_LEN 12
#define WIRE_NAME_MAX 255
#define WIRE_MSG_MAX 65535

/* Header flag bits in the 16-bit flags word (bytes 2..3). */
#define WIRE_QR 0x8000
#define WIRE_AA 0x0400
#define WIRE_TC 0x0200
#define WIRE_RD 0x0100
#define WIRE_RA 0x0080
#define WIRE_Z 0x0040
#define WIRE_AD 0x0020
#define WIRE_CD 0x0010
#define WIRE_OPCODE(flags) (((flags) >> 11) & 0xf)
#define WIRE_RCODE(flags) ((flags)&0xf)

#define WIRE_RCODE_NOERROR 0
#define WIRE_RCODE_FORMERR 1
#define WIRE_RCODE_SERVFAIL 2
#define WIRE_RCODE_NXDOMAIN 3
#define WIRE_RCODE_NOTIMP 4
#define WIRE_RCODE_REFUSED 5
#define WIRE_RCODE_BADVERS 16 /* extended: needs OPT */

#define WIRE_TYPE_A 1
#define WIRE_TYPE_NS 2
#define WIRE_TYPE_CNAME 5
#define WIRE_TYPE_SOA 6
#define WIRE_TYPE_AAAA 28
#define WIRE_TYPE_OPT 41
#define WIRE_TYPE_IXFR 251
#define WIRE_TYPE_AXFR 252
#define WIRE_TYPE_ANY 255
#define WIRE_CLASS_IN 1

#define WIRE_OPT_COOKIE 10
#define WIRE_OPT_KEEPALIVE 11
#define WIRE_OPT_EDE 15
#define WIRE_EDNS_DO 0x8000

/* Extended DNS Error codes (RFC 8914) that stubborn sends. */
#define WIRE_EDE_OTHER 0
#define WIRE_EDE_STALE 3
#define WIRE_EDE_CACHED_ERROR 13
#define WIRE_EDE_NOT_READY 14
#define WIRE_EDE_PROHIBITED 18
#define WIRE_EDE_STALE_NXDOMAIN 19
#define WIRE_EDE_NOT_SUPPORTED 21
#define WIRE_EDE_NO_REACHABLE_AUTHORITY 22
#define WIRE_EDE_NETWORK_ERROR 23

static inline uint16_t
wire_u16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t
wire_u32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	    ((uint32_t)p[2] << 8) | p[3];
}

static inline void
wire_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void
wire_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Header accessors; the caller guarantees len >= WIRE_HDR_LEN. */
#define WIRE_ID(m) wire_u16((m) + 0)
#define WIRE_FLAGS(m) wire_u16((m) + 2)
#define WIRE_QDCOUNT(m) wire_u16((m) + 4)
#define WIRE_ANCOUNT(m) wire_u16((m) + 6)
#define WIRE_NSCOUNT(m) wire_u16((m) + 8)
#define WIRE_ARCOUNT(m) wire_u16((m) + 10)

/* The one question of a message.  Its name is never compressed here. */
struct wire_question {
	size_t name_off; /* offset of the first label length byte */
	size_t name_len; /* wire length including the root byte */
	uint16_t qtype;
	uint16_t qclass;
	size_t end; /* offset just past QCLASS */
};

/* What a client query asked for, as far as the listener cares. */
struct wire_query {
	uint16_t id;
	uint16_t flags;
	struct wire_question q;
	bool has_opt;
	uint16_t udp_size; /* the client's advertised size, as sent */
	uint8_t edns_version;
	bool do_bit;
	bool has_cookie;
	uint8_t cookie[40]; /* client cookie (8) + server cookie, as sent */
	uint8_t cookie_len;
	bool keepalive; /* an edns-tcp-keepalive option was present */
};

/* Outcome of wire_parse_query(), an instruction to the listener. */
enum wire_verdict {
	WIRE_ACCEPT = 0, /* answer normally */
	WIRE_DROP,       /* no reply at all: too short, QR=1 */
	WIRE_FORMERR,    /* reply FORMERR (question echoed if it parsed) */
	WIRE_NOTIMP,     /* reply NOTIMP: opcode other than QUERY */
	WIRE_BADVERS,    /* reply BADVERS: EDNS version > 0 */
	WIRE_REFUSED,    /* reply REFUSED: zone transfers and the like */
};

/*
 * Parses and validates a client query: exactly one question with an
 * uncompressed name of at most 255 bytes and labels of at most 63, no
 * records in answer or authority, at most one OPT (owner root, only in the
 * additional section) with well-formed options (cookie lengths per RFC 7873).
 * Fills *q as far as parsing got (q->q.end is 0 if the question did not
 * parse).  Never reads past len.
 */
enum wire_verdict wire_parse_query(
    const uint8_t *msg, size_t len, struct wire_query *q);

/*
 * Reads the question at offset 12 (the first one).  Returns 0 or -EBADMSG
 * (QDCOUNT 0, compressed or overlong name, bad label type, truncated).
 */
int wire_read_question(const uint8_t *msg, size_t len, struct wire_question *q);

/*
 * Skips the possibly compressed name at off; *next is the offset after it
 * in the message (not after pointer targets).  Pointers must point to an
 * earlier offset than the one being read; at most 128 jumps.  Returns 0 or
 * -EBADMSG.
 */
int wire_skip_name(const uint8_t *msg, size_t len, size_t off, size_t *next);

/*
 * Expands the (possibly compressed) name at off into out (>= 255 bytes,
 * uncompressed wire form, lower-cased when lower is true).  Returns the
 * name's wire length or -EBADMSG.
 */
int wire_read_name(
    const uint8_t *msg, size_t len, size_t off, uint8_t *out, bool lower);

/* Case-insensitive equality of two uncompressed wire names. */
bool wire_name_equal(
    const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);

/* Lower-cases an uncompressed wire name in place (labels only). */
void wire_name_lower(uint8_t *name, size_t len);

/*
 * Writes the presentation form of an uncompressed wire name ("www.example.",
 * "." for the root) into out, escaping unprintable bytes.  Returns out.
 */
char *wire_name_text(const uint8_t *name, size_t len, char *out, size_t cap);

/*
 * Converts presentation form ("www.example.com" or with a trailing dot) to
 * uncompressed wire form in out (>= 255 bytes).  Returns the wire length or
 * -EINVAL.
 */
int wire_name_from_text(const char *text, uint8_t *out);

/* True if name is equal to zone or below it (case-insensitive, wire form). */
bool wire_name_in_zone(
    const uint8_t *name, size_t nlen, const uint8_t *zone, size_t zlen);

/* One resource record seen by the iterator. */
struct wire_rr {
	int section;     /* 1 answer, 2 authority, 3 additional */
	size_t off;      /* start of the owner name */
	size_t type_off; /* offset of TYPE; TTL is at type_off + 4 */
	uint16_t type;
	uint16_t rclass;
	uint32_t ttl;
	uint16_t rdlen;
	size_t rdata_off;
	size_t end; /* offset just past the RDATA */
};

/* Iterates over every RR after the question section(s). */
struct wire_iter {
	const uint8_t *msg;
	size_t len;
	size_t off;
	unsigned left[3]; /* RRs left in answer, authority, additional */
	int section;
};

/* Positions the iterator after the question section.  0 or -EBADMSG. */
int wire_iter_init(struct wire_iter *it, const uint8_t *msg, size_t len);

/* Reads the next RR into *rr: 1 if one was read, 0 at the end, -EBADMSG. */
int wire_iter_next(struct wire_iter *it, struct wire_rr *rr);

/*
 * Builds a query: header (given ID, RD, CD and AD from flags), one question
 * (name copied as given), and, when edns_size > 0, an OPT with that UDP size
 * and the DO bit when do_bit.  Returns the length or -ENOSPC.
 */
int wire_build_query(uint8_t *out, size_t cap, uint16_t id, uint16_t flags,
    const uint8_t *qname, size_t qname_len, uint16_t qtype, uint16_t qclass,
    uint16_t edns_size, bool do_bit);

/* What the OPT of a reply carries (RFC 6891, RFC 8914, RFC 7873). */
struct wire_edns {
	uint16_t udp_size;     /* our buffer size */
	uint8_t ext_rcode;     /* upper 8 bits of a 12-bit RCODE */
	bool do_bit;           /* wire_put_opt only: the reply builders
				  echo the query's */
	int ede_code;          /* Extended DNS Error, < 0 for none */
	const char *ede_text;  /* its EXTRA-TEXT, may be NULL */
	const uint8_t *cookie; /* COOKIE option data (client + server), or
				  NULL */
	size_t cookie_len;
};

/*
 * Appends an OPT RR with the options of *e (EDE first, then the cookie) to
 * the message in buf (length len, capacity cap) and increments ARCOUNT.
 * Returns the new length or -ENOSPC (buf unchanged).
 */
int wire_put_opt(
    uint8_t *buf, size_t len, size_t cap, const struct wire_edns *e);

/* wire_put_opt without a cookie. */
int wire_append_opt(uint8_t *buf, size_t len, size_t cap, uint16_t udp_size,
    uint8_t ext_rcode, bool do_bit, int ede_code, const char *ede_text);

/*
 * Appends one EDNS option (code, data, dlen bytes) to the OPT RR that ends
 * the message in buf (the last RR, as wire_append_opt leaves it), fixing its
 * RDLENGTH.  Returns the new length, -ENOENT if the message does not end in
 * an OPT, -ENOSPC or -EBADMSG.  On error buf is unchanged.
 */
int wire_add_option(uint8_t *buf, size_t len, size_t cap, uint16_t code,
    const uint8_t *data, size_t dlen);

/*
 * Removes the message's OPT RR (the first one found in the additional
 * section) and every additional RR after it, fixing ARCOUNT.  OPT is per hop
 * (RFC 6891): an upstream's must never reach a client.  On success *opt_rcode
 * gets the OPT's extended RCODE bits (0 if none) and the new length is
 * returned; -EBADMSG if the message does not parse.
 */
int wire_strip_opt(uint8_t *msg, size_t len, uint8_t *opt_ext_rcode);

/*
 * wire_strip_opt and, in the same walk, wire_clamp_ttls(lo, hi) on the
 * records that stay (those before the OPT may be changed even when the
 * message turns out malformed further on).  Returns the new length or
 * -EBADMSG.
 */
int wire_strip_opt_clamp(
    uint8_t *msg, size_t len, uint8_t *opt_ext_rcode, uint32_t lo, uint32_t hi);

/*
 * Sets the TTL of every RR but OPT to at least lo and at most hi, in place;
 * a TTL with the high bit set counts as hi (RFC 8767 4).  Returns 0 or
 * -EBADMSG.
 */
int wire_clamp_ttls(uint8_t *msg, size_t len, uint32_t lo, uint32_t hi);

/*
 * Sets the TTL of every RR but OPT to ttl, in place.  A forwarder applies
 * one TTL per RRset (RFC 2181 5.2); stubborn uses the cache TTL for the
 * whole message so a miss and a later hit tell the client the same.
 * Returns 0 or -EBADMSG.
 */
int wire_set_ttls(uint8_t *msg, size_t len, uint32_t ttl);

/*
 * Makes a stored or upstream response (OPT already stripped) into the reply
 * for one client, in place in buf (length len, capacity cap >= 12 + question):
 * ID and question bytes (exact letter case) from the client's query, QR=1,
 * RA=1, AA=0, RD and CD as the client sent them, AD cleared unless keep_ad;
 * an OPT with the options of *e (DO echoed) when the query had one.  Over
 * limit bytes, the EDE is dropped first (RFC 8914 3); still over, the reply
 * becomes header + question + OPT (cookie kept) with TC=1 and no records.
 * Returns the new length or -ENOSPC/-EBADMSG.
 */
int wire_make_reply(uint8_t *buf, size_t len, size_t cap, size_t limit,
    const uint8_t *query, const struct wire_query *q, bool keep_ad,
    const struct wire_edns *e);

/*
 * Builds a reply carrying only a header and, if it parsed, the question
 * (rcode given, QR=1, RA=1, the client's ID/RD/CD), plus an OPT with the
 * options of *e if the query had one (or always for BADVERS, which needs
 * it; e->ext_rcode is ignored, the rcode's upper bits are used).  Returns
 * the length or -ENOSPC.
 */
int wire_build_error(uint8_t *out, size_t cap, const uint8_t *query,
    size_t qlen, const struct wire_query *q, int rcode,
    const struct wire_edns *e);

/* Size limit for a UDP reply to q: 512 without EDNS, else clamp(size, 512,
 * max). */
size_t wire_udp_limit(const struct wire_query *q, size_t max);

#endif
