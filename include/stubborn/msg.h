/*
 * msg: what an upstream answer is: is the message well formed, what kind of
 * answer is it, and for how long may it be cached (RFC 2308, RFC 2181, RFC
 * 8767 TTL rules).  Classifying is on every miss's path: one walk with wire,
 * no allocation.  The only daemon module that uses ldns, for presentation
 * format only (msg_records_text).
 */
#ifndef STUBBORN_MSG_H
#define STUBBORN_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct msg_policy {
	uint32_t min_ttl;          /* floor for positive answers */
	uint32_t max_ttl;          /* cap for every TTL, <= 604800 */
	uint32_t max_negative_ttl; /* cap for NXDOMAIN/NODATA */
};

enum msg_kind {
	MSG_ANSWER = 0, /* NOERROR with records in the answer section */
	MSG_NODATA,     /* NOERROR, empty answer */
	MSG_NXDOMAIN,
	MSG_SERVFAIL,
	MSG_REFUSED,
	MSG_FORMERR,
	MSG_NOTIMP,
	MSG_OTHER,     /* any other RCODE */
	MSG_MALFORMED, /* does not parse: garbage, counts overrun the data */
};

struct msg_info {
	enum msg_kind kind;
	uint16_t rcode; /* 12-bit RCODE (OPT extended bits included) */
	bool tc;
	bool cacheable; /* a TTL could be derived and is > 0 */
	uint32_t ttl;   /* seconds to cache, valid when cacheable */
};

/*
 * Classifies the upstream response resp (len bytes, OPT included).  Answers
 * are cached for the lowest TTL of the answer and authority sections,
 * clamped to [min_ttl, max_ttl] (a TTL with the high bit set counts as
 * max_ttl, RFC 8767 4); NXDOMAIN and NODATA for min(SOA TTL, SOA MINIMUM)
 * capped by max_negative_ttl, and not at all without an SOA (RFC 2308 5).
 * Truncated answers and error RCODEs are never cacheable here.  Well formed
 * means: every record parses to the end of its RDATA, compression pointers
 * point backwards, and the RDATA of A, AAAA, NS, CNAME, PTR, DNAME, MX, SRV,
 * SOA and TXT holds exactly what the type says (clients parse those), and
 * there is at most one OPT, in the additional section: its extended RCODE
 * bits count.
 * Returns 0 (out filled) or -EBADMSG (out->kind = MSG_MALFORMED).
 */
int msg_classify(const uint8_t *resp, size_t len, const struct msg_policy *pol,
    struct msg_info *out);

/* A short name for a kind ("answer", "nxdomain", ...), for logs. */
const char *msg_kind_name(enum msg_kind kind);

/*
 * Writes the answer and authority records of resp in presentation format,
 * one per line (each line ends with a newline), into out (cap bytes,
 * NUL-terminated; records that do not fit are left out).  Returns the
 * length or -EBADMSG.  Off the query path only (stubborn-ctl dump).
 */
int msg_records_text(const uint8_t *resp, size_t len, char *out, size_t cap);

#endif
