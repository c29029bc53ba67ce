#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "stubborn/wire.h"

#define WIRE_MAX_JUMPS 128
#define WIRE_RR_FIXED 10 /* type, class, ttl, rdlength */

static int parse_opt(
    const uint8_t *msg, const struct wire_rr *rr, struct wire_query *q);
static void find_opt_lenient(
    const uint8_t *msg, size_t len, struct wire_query *q);
static int name_walk(const uint8_t *msg, size_t len, size_t off, uint8_t *out,
    bool lower, size_t *next);
static int put_question(uint8_t *out, size_t cap, size_t off,
    const uint8_t *qname, size_t qname_len, uint16_t qtype, uint16_t qclass);

static inline uint8_t
lower_byte(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

/*
 * Walks the name at off with every check (pointers only backwards, and
 * what one leads to ends before it: no loops, no overlapping tricks): its
 * wire length, or -EBADMSG.  out, when not NULL, gets the uncompressed
 * name (lower-cased if lower); *next, when not NULL, the offset after the
 * name where it starts (after its first pointer, if any).  Every skipped
 * name runs through here, and most are one pointer to the question, so
 * this is on every hot path.
 */
static int
name_walk(const uint8_t *msg, size_t len, size_t off, uint8_t *out, bool lower,
    size_t *next)
{
	size_t o = 0, end = len, after = 0;
	int jumps = 0;

	for (;;) {
		if (off >= end)
			return -EBADMSG;
		uint8_t l = msg[off];
		if ((l & 0xc0) == 0xc0) {
			if (off + 1 >= end || ++jumps > WIRE_MAX_JUMPS)
				return -EBADMSG;
			size_t target =
			    ((size_t)(l & 0x3f) << 8) | msg[off + 1];
			if (target >= off || target < WIRE_HDR_LEN)
				return -EBADMSG;
			if (after == 0)
				after = off + 2;
			end = off;
			off = target;
			continue;
		}
		if (l & 0xc0)
			return -EBADMSG;
		if (o + (size_t)l + 1 > WIRE_NAME_MAX || off + 1 + l > end)
			return -EBADMSG;
		if (out != NULL) {
			out[o] = l;
			for (size_t i = 0; i < l; i++) {
				uint8_t c = msg[off + 1 + i];
				out[o + 1 + i] = lower ? lower_byte(c) : c;
			}
		}
		o += (size_t)l + 1;
		if (l == 0) {
			if (next != NULL)
				*next = after ? after : off + 1;
			return (int)o;
		}
		off += (size_t)l + 1;
	}
}

int
wire_skip_name(const uint8_t *msg, size_t len, size_t off, size_t *next)
{
	/* Following the pointers proves they lead somewhere sane. */
	return name_walk(msg, len, off, NULL, false, next) < 0 ? -EBADMSG : 0;
}

int
wire_read_name(
    const uint8_t *msg, size_t len, size_t off, uint8_t *out, bool lower)
{
	return name_walk(msg, len, off, out, lower, NULL);
}

bool
wire_name_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	if (alen != blen)
		return false;
	/* Usually the very bytes (an upstream echoing our question). */
	if (memcmp(a, b, alen) == 0)
		return true;
	for (size_t i = 0; i < alen; i++)
		if (lower_byte(a[i]) != lower_byte(b[i]))
			return false;
	return true;
}

void
wire_name_lower(uint8_t *name, size_t len)
{
	size_t off = 0;

	while (off < len && name[off] != 0) {
		size_t l = name[off];
		for (size_t i = 1; i <= l && off + i < len; i++)
			name[off + i] = lower_byte(name[off + i]);
		off += l + 1;
	}
}

char *
wire_name_text(const uint8_t *name, size_t len, char *out, size_t cap)
{
	size_t off = 0, o = 0;

	if (cap < 2) {
		if (cap == 1)
			out[0] = '\0';
		return out;
	}
	if (len == 0 || name[0] == 0) {
		out[0] = '.';
		out[1] = '\0';
		return out;
	}
	while (off < len && name[off] != 0) {
		size_t l = name[off++];
		for (size_t i = 0; i < l && off < len; i++, off++) {
			uint8_t c = name[off];
			if (o + 5 >= cap)
				goto done;
			if (c == '.' || c == '\\' || c == '"') {
				out[o++] = '\\';
				out[o++] = (char)c;
			} else if (c <= 0x20 || c >= 0x7f) {
				o += (size_t)snprintf(
				    out + o, cap - o, "\\%03u", c);
			} else {
				out[o++] = (char)c;
			}
		}
		if (o + 1 >= cap)
			goto done;
		out[o++] = '.';
	}
done:
	out[o] = '\0';
	return out;
}

int
wire_name_from_text(const char *text, uint8_t *out)
{
	size_t o = 1, lpos = 0;
	const char *p = text;
	bool closed = false;

	if (strcmp(text, ".") == 0) {
		out[0] = 0;
		return 1;
	}
	if (*p == '\0' || *p == '.')
		return -EINVAL;
	out[0] = 0;
	while (*p != '\0') {
		unsigned c = (unsigned char)*p++;
		if (c == '.') {
			size_t l = o - lpos - 1;
			if (l == 0 || l > 63)
				return -EINVAL;
			out[lpos] = (uint8_t)l;
			if (*p == '\0') {
				closed = true;
				break;
			}
			lpos = o++;
			if (o > WIRE_NAME_MAX - 1)
				return -EINVAL;
			continue;
		}
		if (c == '\\') {
			/* Presentation escapes: \X and \DDD (RFC 1035 5.1). */
			if (p[0] >= '0' && p[0] <= '9') {
				if (!(p[1] >= '0' && p[1] <= '9' &&
					p[2] >= '0' && p[2] <= '9'))
					return -EINVAL;
				c = (unsigned)(p[0] - '0') * 100 +
				    (unsigned)(p[1] - '0') * 10 +
				    (unsigned)(p[2] - '0');
				if (c > 255)
					return -EINVAL;
				p += 3;
			} else if (*p != '\0') {
				c = (unsigned char)*p++;
			} else {
				return -EINVAL;
			}
		}
		if (o + 1 > WIRE_NAME_MAX - 1)
			return -EINVAL;
		out[o++] = (uint8_t)c;
	}
	if (!closed) {
		/* No trailing (unescaped) dot: close the last label. */
		size_t l = o - lpos - 1;
		if (l == 0 || l > 63)
			return -EINVAL;
		out[lpos] = (uint8_t)l;
	}
	out[o++] = 0;
	return (int)o;
}

bool
wire_name_in_zone(
    const uint8_t *name, size_t nlen, const uint8_t *zone, size_t zlen)
{
	size_t off = 0;

	if (zlen > nlen)
		return false;
	/* Walk label boundaries so "xexample.com" is not under "example.com".
	 */
	while (off < nlen) {
		if (nlen - off == zlen)
			return wire_name_equal(name + off, zlen, zone, zlen);
		if (name[off] == 0)
			return false;
		off += (size_t)name[off] + 1;
	}
	return false;
}

int
wire_read_question(const uint8_t *msg, size_t len, struct wire_question *q)
{
	size_t off = WIRE_HDR_LEN;

	memset(q, 0, sizeof(*q));
	if (len < WIRE_HDR_LEN || WIRE_QDCOUNT(msg) == 0)
		return -EBADMSG;
	for (;;) {
		if (off >= len)
			return -EBADMSG;
		uint8_t l = msg[off];
		if (l & 0xc0)
			return -EBADMSG;
		if (off + 1 + l > len ||
		    off + 1 + l - WIRE_HDR_LEN > WIRE_NAME_MAX)
			return -EBADMSG;
		off += (size_t)l + 1;
		if (l == 0)
			break;
	}
	if (off + 4 > len)
		return -EBADMSG;
	q->name_off = WIRE_HDR_LEN;
	q->name_len = off - WIRE_HDR_LEN;
	q->qtype = wire_u16(msg + off);
	q->qclass = wire_u16(msg + off + 2);
	q->end = off + 4;
	return 0;
}

int
wire_iter_init(struct wire_iter *it, const uint8_t *msg, size_t len)
{
	size_t off = WIRE_HDR_LEN;

	memset(it, 0, sizeof(*it));
	if (len < WIRE_HDR_LEN)
		return -EBADMSG;
	for (unsigned i = 0; i < WIRE_QDCOUNT(msg); i++) {
		if (wire_skip_name(msg, len, off, &off) < 0 || off + 4 > len)
			return -EBADMSG;
		off += 4;
	}
	it->msg = msg;
	it->len = len;
	it->off = off;
	it->left[0] = WIRE_ANCOUNT(msg);
	it->left[1] = WIRE_NSCOUNT(msg);
	it->left[2] = WIRE_ARCOUNT(msg);
	it->section = 0;
	return 0;
}

int
wire_iter_next(struct wire_iter *it, struct wire_rr *rr)
{
	size_t off;

	while (it->section < 3 && it->left[it->section] == 0)
		it->section++;
	if (it->section >= 3)
		return 0;
	it->left[it->section]--;
	rr->section = it->section + 1;
	rr->off = it->off;
	if (wire_skip_name(it->msg, it->len, it->off, &off) < 0)
		return -EBADMSG;
	if (off + WIRE_RR_FIXED > it->len)
		return -EBADMSG;
	rr->type_off = off;
	rr->type = wire_u16(it->msg + off);
	rr->rclass = wire_u16(it->msg + off + 2);
	rr->ttl = wire_u32(it->msg + off + 4);
	rr->rdlen = wire_u16(it->msg + off + 8);
	rr->rdata_off = off + WIRE_RR_FIXED;
	rr->end = rr->rdata_off + rr->rdlen;
	if (rr->end > it->len)
		return -EBADMSG;
	it->off = rr->end;
	return 1;
}

static int
parse_opt(const uint8_t *msg, const struct wire_rr *rr, struct wire_query *q)
{
	size_t off = rr->rdata_off;

	q->has_opt = true;
	q->udp_size = rr->rclass;
	q->edns_version = (uint8_t)(rr->ttl >> 16);
	q->do_bit = (rr->ttl & WIRE_EDNS_DO) != 0;
	while (off < rr->end) {
		if (off + 4 > rr->end)
			return -EBADMSG;
		uint16_t code = wire_u16(msg + off);
		uint16_t olen = wire_u16(msg + off + 2);
		off += 4;
		if (off + olen > rr->end)
			return -EBADMSG;
		if (code == WIRE_OPT_COOKIE) {
			/* RFC 7873 5.2.2: client cookie 8, server part 8..32.
			 */
			if (olen != 8 && (olen < 16 || olen > 40))
				return -EBADMSG;
			if (q->has_cookie)
				return -EBADMSG;
			q->has_cookie = true;
			q->cookie_len = (uint8_t)olen;
			memcpy(q->cookie, msg + off, olen);
		} else if (code == WIRE_OPT_KEEPALIVE) {
			/* RFC 7828: clients send it empty. */
			if (olen != 0 && olen != 2)
				return -EBADMSG;
			q->keepalive = true;
		}
		off += olen;
	}
	return 0;
}

/*
 * For a query we will not serve (NOTIMP): echo its question and answer with
 * an OPT if it had one (RFC 6891 7), as far as the message parses at all.
 */
static void
find_opt_lenient(const uint8_t *msg, size_t len, struct wire_query *q)
{
	struct wire_iter it;
	struct wire_rr rr;

	if (WIRE_QDCOUNT(msg) != 1 || wire_read_question(msg, len, &q->q) < 0) {
		q->q.end = 0;
		return;
	}
	if (wire_iter_init(&it, msg, len) < 0)
		return;
	while (wire_iter_next(&it, &rr) == 1) {
		if (rr.type == WIRE_TYPE_OPT && rr.section == 3 &&
		    msg[rr.off] == 0) {
			if (parse_opt(msg, &rr, q) < 0)
				q->has_opt = true;
			q->edns_version = 0;
			return;
		}
	}
}

enum wire_verdict
wire_parse_query(const uint8_t *msg, size_t len, struct wire_query *q)
{
	struct wire_iter it;
	struct wire_rr rr;
	int r;

	memset(q, 0, sizeof(*q));
	if (len < WIRE_HDR_LEN)
		return WIRE_DROP;
	q->id = WIRE_ID(msg);
	q->flags = WIRE_FLAGS(msg);
	if (q->flags & WIRE_QR)
		return WIRE_DROP;
	if (WIRE_OPCODE(q->flags) != 0) {
		find_opt_lenient(msg, len, q);
		return WIRE_NOTIMP;
	}
	if (WIRE_QDCOUNT(msg) != 1 || wire_read_question(msg, len, &q->q) < 0) {
		q->q.end = 0;
		return WIRE_FORMERR;
	}
	if (WIRE_ANCOUNT(msg) != 0 || WIRE_NSCOUNT(msg) != 0)
		return WIRE_FORMERR;
	/* The records start where the one question ends. */
	memset(&it, 0, sizeof(it));
	it.msg = msg;
	it.len = len;
	it.off = q->q.end;
	it.left[2] = WIRE_ARCOUNT(msg);
	while ((r = wire_iter_next(&it, &rr)) == 1) {
		if (rr.type != WIRE_TYPE_OPT)
			continue;
		/* One OPT, owned by the root (RFC 6891 6.1.1). */
		if (q->has_opt || msg[rr.off] != 0 ||
		    parse_opt(msg, &rr, q) < 0)
			return WIRE_FORMERR;
	}
	if (r < 0)
		return WIRE_FORMERR;
	/* Trailing bytes after the last record make the message malformed. */
	if (it.off != len)
		return WIRE_FORMERR;
	if (q->has_opt && q->edns_version > 0)
		return WIRE_BADVERS;
	if (q->q.qtype == WIRE_TYPE_AXFR || q->q.qtype == WIRE_TYPE_IXFR)
		return WIRE_REFUSED;
	return WIRE_ACCEPT;
}

static int
put_question(uint8_t *out, size_t cap, size_t off, const uint8_t *qname,
    size_t qname_len, uint16_t qtype, uint16_t qclass)
{
	if (off + qname_len + 4 > cap)
		return -ENOSPC;
	memcpy(out + off, qname, qname_len);
	off += qname_len;
	wire_put16(out + off, qtype);
	wire_put16(out + off + 2, qclass);
	return (int)(off + 4);
}

int
wire_build_query(uint8_t *out, size_t cap, uint16_t id, uint16_t flags,
    const uint8_t *qname, size_t qname_len, uint16_t qtype, uint16_t qclass,
    uint16_t edns_size, bool do_bit)
{
	int n;

	if (cap < WIRE_HDR_LEN)
		return -ENOSPC;
	memset(out, 0, WIRE_HDR_LEN);
	wire_put16(out, id);
	wire_put16(out + 2, flags & (WIRE_RD | WIRE_CD | WIRE_AD));
	wire_put16(out + 4, 1);
	n = put_question(
	    out, cap, WIRE_HDR_LEN, qname, qname_len, qtype, qclass);
	if (n < 0 || edns_size == 0)
		return n;
	return wire_append_opt(
	    out, (size_t)n, cap, edns_size, 0, do_bit, -1, NULL);
}

int
wire_put_opt(uint8_t *buf, size_t len, size_t cap, const struct wire_edns *e)
{
	size_t tlen = e->ede_code >= 0 && e->ede_text ? strlen(e->ede_text) : 0;
	size_t ede = e->ede_code >= 0 ? 4 + 2 + tlen : 0;
	size_t ck = e->cookie ? 4 + e->cookie_len : 0;
	uint8_t *p;

	if (len < WIRE_HDR_LEN || tlen > 256 || e->cookie_len > 40 ||
	    len + 11 + ede + ck > cap)
		return -ENOSPC;
	p = buf + len;
	p[0] = 0;
	wire_put16(p + 1, WIRE_TYPE_OPT);
	wire_put16(p + 3, e->udp_size);
	p[5] = e->ext_rcode;
	p[6] = 0; /* version 0 */
	wire_put16(p + 7, e->do_bit ? WIRE_EDNS_DO : 0);
	wire_put16(p + 9, (uint16_t)(ede + ck));
	p += 11;
	if (ede) {
		wire_put16(p, WIRE_OPT_EDE);
		wire_put16(p + 2, (uint16_t)(2 + tlen));
		wire_put16(p + 4, (uint16_t)e->ede_code);
		if (tlen)
			memcpy(p + 6, e->ede_text, tlen);
		p += ede;
	}
	if (ck) {
		wire_put16(p, WIRE_OPT_COOKIE);
		wire_put16(p + 2, (uint16_t)e->cookie_len);
		memcpy(p + 4, e->cookie, e->cookie_len);
	}
	wire_put16(buf + 10, (uint16_t)(WIRE_ARCOUNT(buf) + 1));
	return (int)(len + 11 + ede + ck);
}

int
wire_append_opt(uint8_t *buf, size_t len, size_t cap, uint16_t udp_size,
    uint8_t ext_rcode, bool do_bit, int ede_code, const char *ede_text)
{
	struct wire_edns e = {.udp_size = udp_size,
	    .ext_rcode = ext_rcode,
	    .do_bit = do_bit,
	    .ede_code = ede_code,
	    .ede_text = ede_text};

	return wire_put_opt(buf, len, cap, &e);
}

int
wire_add_option(uint8_t *buf, size_t len, size_t cap, uint16_t code,
    const uint8_t *data, size_t dlen)
{
	struct wire_iter it;
	struct wire_rr rr, last;
	bool any = false;
	int r;

	memset(&last, 0, sizeof(last));
	if (wire_iter_init(&it, buf, len) < 0)
		return -EBADMSG;
	while ((r = wire_iter_next(&it, &rr)) == 1) {
		last = rr;
		any = true;
	}
	if (r < 0)
		return -EBADMSG;
	if (!any || last.type != WIRE_TYPE_OPT || last.section != 3 ||
	    last.end != len)
		return -ENOENT;
	if (len + 4 + dlen > cap || (size_t)last.rdlen + 4 + dlen > 0xffff)
		return -ENOSPC;
	wire_put16(buf + len, code);
	wire_put16(buf + len + 2, (uint16_t)dlen);
	if (dlen > 0)
		memcpy(buf + len + 4, data, dlen);
	wire_put16(buf + last.type_off + 8, (uint16_t)(last.rdlen + 4 + dlen));
	return (int)(len + 4 + dlen);
}

/*
 * Strips the OPT (see wire_strip_opt) and, with clamp, clamps the TTLs of
 * the records that stay: one walk for what an upstream answer needs.
 */
static int
strip_walk(uint8_t *msg, size_t len, uint8_t *opt_ext_rcode, bool clamp,
    uint32_t lo, uint32_t hi)
{
	struct wire_iter it;
	struct wire_rr rr;
	unsigned kept = 0;
	int r;

	*opt_ext_rcode = 0;
	if (wire_iter_init(&it, msg, len) < 0)
		return -EBADMSG;
	while ((r = wire_iter_next(&it, &rr)) == 1) {
		if (rr.section == 3 && rr.type == WIRE_TYPE_OPT) {
			*opt_ext_rcode = (uint8_t)(rr.ttl >> 24);
			/*
			 * Dropping the records after the OPT as well keeps
			 * every compression pointer valid; additional data is
			 * optional.
			 */
			wire_put16(msg + 10, (uint16_t)kept);
			return (int)rr.off;
		}
		if (clamp && rr.type != WIRE_TYPE_OPT) {
			uint32_t t = rr.ttl;
			t = (t & 0x80000000u) || t > hi ? hi : t < lo ? lo : t;
			wire_put32(msg + rr.type_off + 4, t);
		}
		if (rr.section == 3)
			kept++;
	}
	if (r < 0)
		return -EBADMSG;
	/* Anything past the last record is junk we do not pass on. */
	return (int)it.off;
}

int
wire_strip_opt(uint8_t *msg, size_t len, uint8_t *opt_ext_rcode)
{
	return strip_walk(msg, len, opt_ext_rcode, false, 0, 0);
}

int
wire_strip_opt_clamp(
    uint8_t *msg, size_t len, uint8_t *opt_ext_rcode, uint32_t lo, uint32_t hi)
{
	return strip_walk(msg, len, opt_ext_rcode, true, lo, hi);
}

int
wire_set_ttls(uint8_t *msg, size_t len, uint32_t ttl)
{
	struct wire_iter it;
	struct wire_rr rr;
	int r;

	if (wire_iter_init(&it, msg, len) < 0)
		return -EBADMSG;
	while ((r = wire_iter_next(&it, &rr)) == 1)
		if (rr.type != WIRE_TYPE_OPT)
			wire_put32(msg + rr.type_off + 4, ttl);
	return r < 0 ? -EBADMSG : 0;
}

int
wire_clamp_ttls(uint8_t *msg, size_t len, uint32_t lo, uint32_t hi)
{
	struct wire_iter it;
	struct wire_rr rr;
	int r;

	if (wire_iter_init(&it, msg, len) < 0)
		return -EBADMSG;
	while ((r = wire_iter_next(&it, &rr)) == 1) {
		uint32_t t = rr.ttl;
		if (rr.type == WIRE_TYPE_OPT)
			continue;
		t = (t & 0x80000000u) || t > hi ? hi : t < lo ? lo : t;
		wire_put32(msg + rr.type_off + 4, t);
	}
	return r < 0 ? -EBADMSG : 0;
}

size_t
wire_udp_limit(const struct wire_query *q, size_t max)
{
	size_t sz;

	if (!q->has_opt)
		return 512;
	sz = q->udp_size < 512 ? 512 : q->udp_size;
	return sz > max ? max : sz;
}

int
wire_make_reply(uint8_t *buf, size_t len, size_t cap, size_t limit,
    const uint8_t *query, const struct wire_query *q, bool keep_ad,
    const struct wire_edns *e)
{
	struct wire_question sq;
	struct wire_edns plain = *e;
	uint16_t flags;
	size_t qlen = q->q.end;
	int n = -ENOSPC;

	if (qlen < WIRE_HDR_LEN || cap < qlen)
		return -EBADMSG;
	/* The same bytes as the client's question (usual: lower case) are
	 * the same question; else it must parse to the same length. */
	if ((len < qlen || WIRE_QDCOUNT(buf) != 1 ||
		memcmp(buf + WIRE_HDR_LEN, query + WIRE_HDR_LEN,
		    qlen - WIRE_HDR_LEN) != 0) &&
	    (wire_read_question(buf, len, &sq) < 0 || sq.end != qlen))
		return -EBADMSG;
	/* The stored question equals the client's but for letter case. */
	memcpy(buf + WIRE_HDR_LEN, query + WIRE_HDR_LEN, qlen - WIRE_HDR_LEN);
	wire_put16(buf, q->id);
	flags = WIRE_FLAGS(buf);
	flags &= (uint16_t) ~(WIRE_AA | (keep_ad ? 0 : WIRE_AD) | WIRE_RD |
	    WIRE_CD | WIRE_TC | WIRE_Z);
	flags |= WIRE_QR | WIRE_RA | (q->flags & (WIRE_RD | WIRE_CD));
	wire_put16(buf + 2, flags);
	wire_put16(buf + 4, 1);
	plain.ext_rcode = 0;
	plain.ede_code = -1;
	plain.do_bit = q->do_bit;
	if (!q->has_opt) {
		if (len <= limit)
			return (int)len;
	} else {
		uint16_t arcount = WIRE_ARCOUNT(buf);
		if (e->ede_code >= 0) {
			struct wire_edns with = plain;
			with.ede_code = e->ede_code;
			with.ede_text = e->ede_text;
			n = wire_put_opt(buf, len, cap, &with);
		}
		/* Over the client's size, EDE goes first (RFC 8914 3). */
		if (n < 0 || (size_t)n > limit) {
			wire_put16(buf + 10, arcount);
			n = wire_put_opt(buf, len, cap, &plain);
		}
		if (n >= 0 && (size_t)n <= limit)
			return n;
	}
	/*
	 * Still too big for the client's UDP size: an empty TC=1 reply makes
	 * it retry over TCP (RFC 7766, RFC 2181 9).
	 */
	wire_put16(buf + 2, (uint16_t)(flags | WIRE_TC));
	memset(buf + 6, 0, 6);
	n = (int)qlen;
	if (q->has_opt)
		n = wire_put_opt(buf, qlen, cap, &plain);
	return n;
}

int
wire_build_error(uint8_t *out, size_t cap, const uint8_t *query, size_t qlen,
    const struct wire_query *q, int rcode, const struct wire_edns *e)
{
	size_t n = WIRE_HDR_LEN;
	uint16_t flags;

	if (cap < WIRE_HDR_LEN || qlen < 4)
		return -ENOSPC;
	memset(out, 0, WIRE_HDR_LEN);
	memcpy(out, query, 2);
	flags = (uint16_t)(WIRE_QR | WIRE_RA |
	    (wire_u16(query + 2) & (WIRE_RD | WIRE_CD | 0x7800)) |
	    (rcode & 0xf));
	wire_put16(out + 2, flags);
	if (q->q.end > WIRE_HDR_LEN && q->q.end <= qlen && q->q.end <= cap) {
		memcpy(out + WIRE_HDR_LEN, query + WIRE_HDR_LEN,
		    q->q.end - WIRE_HDR_LEN);
		wire_put16(out + 4, 1);
		n = q->q.end;
	}
	if (q->has_opt || rcode > 15) {
		struct wire_edns o = *e;
		int r;
		o.ext_rcode = (uint8_t)(rcode >> 4);
		o.do_bit = q->do_bit;
		r = wire_put_opt(out, n, cap, &o);
		if (r < 0)
			return r;
		n = (size_t)r;
	}
	return (int)n;
}
