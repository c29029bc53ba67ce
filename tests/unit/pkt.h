/* A DNS message built byte by byte for the unit suites that parse wire
 * format (test_wire, test_msg); each adds its own names and records. */
#ifndef STUBBORN_UNIT_PKT_H
#define STUBBORN_UNIT_PKT_H

#include <check.h>
#include <stdint.h>
#include <string.h>

#include "stubborn/wire.h"

#define PKT_MAX 8192

struct pkt {
	uint8_t b[PKT_MAX];
	size_t len;
};

static inline void
pkt_raw(struct pkt *p, const void *data, size_t n)
{
	ck_assert_uint_le(p->len + n, sizeof(p->b));
	memcpy(p->b + p->len, data, n);
	p->len += n;
}

static inline void
pkt_u8(struct pkt *p, uint8_t v)
{
	pkt_raw(p, &v, 1);
}

static inline void
pkt_u16(struct pkt *p, uint16_t v)
{
	uint8_t b[2];

	wire_put16(b, v);
	pkt_raw(p, b, 2);
}

static inline void
pkt_u32(struct pkt *p, uint32_t v)
{
	uint8_t b[4];

	wire_put32(b, v);
	pkt_raw(p, b, 4);
}

#endif
