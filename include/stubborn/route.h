/*
 * route: one generation of the configuration as the query engine uses it:
 * the config itself (an owned copy), the upstream pool of every zone
 * (longest suffix wins, "." the default), and the names it works with in
 * wire form (health probe, keep-warm, stale-on-negative zones).
 *
 * A reload builds a new route while the old one serves: servers that stay
 * (same zone, same server) keep their health.  Routes are reference
 * counted: every worker holds its current one, every query and upstream
 * attempt holds the one it started under, and the last unref frees it, so
 * in-flight work finishes on the configuration it began with.
 */
#ifndef STUBBORN_ROUTE_H
#define STUBBORN_ROUTE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stubborn/config.h"
#include "stubborn/wire.h"

struct upstream_pool;

struct route_zone {
	uint8_t name[WIRE_NAME_MAX]; /* wire form, lower case; "\0" = root */
	size_t len;
	struct upstream_pool *pool;
};

struct route_name {
	uint8_t name[WIRE_NAME_MAX]; /* wire form, lower case */
	size_t len;
	uint16_t type;
};

struct route {
	_Atomic unsigned refs;
	uint64_t gen;      /* 1, 2, ...: which reload made it */
	struct config cfg; /* this generation's settings */
	struct route_zone zones[CONFIG_MAX_ZONES + 1]; /* zones[0]: root */
	size_t nzones;
	struct route_name probe; /* health probes */
	struct route_name keep_warm[CONFIG_MAX_KEEP_WARM];
	size_t n_keep_warm;
	struct route_name neg_zones[CONFIG_MAX_ZONES]; /* stale-on-negative */
	size_t n_neg_zones;
};

/*
 * A route for cfg (copied) with one reference held by the caller.  When
 * prev is given, every server that prev's pool for the same zone also had
 * starts with its health (RTT, circuit, budget).  NULL with a reason in
 * err on ENOMEM or a name that does not convert.
 */
struct route *route_new(const struct config *cfg, const struct route *prev,
    uint64_t gen, char *err, size_t errlen);

/* Takes a reference (any thread). */
void route_ref(struct route *r);

/* Drops one; the last frees the route and its pools.  NULL is fine. */
void route_unref(struct route *r);

/* The pool for qname (wire form, any case): longest zone suffix wins. */
struct upstream_pool *route_pool_for(
    const struct route *r, const uint8_t *qname, size_t len);

/* True when qname lies in a stale-on-negative zone. */
bool route_negative_guarded(
    const struct route *r, const uint8_t *qname, size_t len);

#endif
