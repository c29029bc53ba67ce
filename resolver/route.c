#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stubborn/config.h"
#include "stubborn/route.h"
#include "stubborn/upstream.h"
#include "stubborn/wire.h"

static int name_in(const char *text, struct route_name *out, uint16_t type);
static void params_for(const struct config *cfg, struct upstream_params *p);
static void inherit(struct route_zone *z, const struct route *prev);

static int
name_in(const char *text, struct route_name *out, uint16_t type)
{
	int n = wire_name_from_text(text, out->name);

	if (n < 0)
		return -EINVAL;
	out->len = (size_t)n;
	wire_name_lower(out->name, out->len);
	out->type = type;
	return 0;
}

static void
params_for(const struct config *cfg, struct upstream_params *p)
{
	upstream_params_default(p, cfg->upstream_timeout_ms);
	p->policy = (enum upstream_policy)cfg->policy;
	p->budget_percent = cfg->retry_budget;
	p->open_after = cfg->circuit_failures;
	p->probe_max_ms = cfg->probe_max_interval_ms;
	/*
	 * While stale answers stand in for an upstream, its recovery must be
	 * noticed well within stale-recheck: probe at least twice per recheck.
	 */
	if (cfg->serve_stale && cfg->stale_recheck * 500 < p->probe_max_ms)
		p->probe_max_ms = cfg->stale_recheck * 500;
	if (p->probe_min_ms > p->probe_max_ms)
		p->probe_min_ms = p->probe_max_ms;
	p->qps = cfg->upstream_qps;
	p->max_outstanding = cfg->upstream_max_outstanding;
}

/* Servers that were in the same zone before keep what was learnt of them. */
static void
inherit(struct route_zone *z, const struct route *prev)
{
	const struct route_zone *old = NULL;

	for (size_t i = 0; prev != NULL && i < prev->nzones; i++)
		if (prev->zones[i].len == z->len &&
		    memcmp(prev->zones[i].name, z->name, z->len) == 0)
			old = &prev->zones[i];
	if (old != NULL)
		upstream_inherit(z->pool, old->pool);
}

struct route *
route_new(const struct config *cfg, const struct route *prev, uint64_t gen,
    char *err, size_t errlen)
{
	struct upstream_params p;
	struct route *r = calloc(1, sizeof(*r));

	if (r == NULL)
		goto nomem;
	atomic_init(&r->refs, 1);
	r->gen = gen;
	r->cfg = *cfg;
	params_for(cfg, &p);
	r->zones[0].name[0] = 0;
	r->zones[0].len = 1;
	r->zones[0].pool =
	    upstream_pool_new(".", cfg->upstream, cfg->n_upstream, &p);
	if (r->zones[0].pool == NULL)
		goto nomem;
	inherit(&r->zones[0], prev);
	r->nzones = 1;
	for (size_t i = 0; i < cfg->n_zones; i++) {
		const struct config_zone *cz = &cfg->zones[i];
		struct route_zone *z = &r->zones[r->nzones];
		struct route_name n;
		if (name_in(cz->name, &n, 0) < 0) {
			snprintf(
			    err, errlen, "forward-zone %s: bad name", cz->name);
			route_unref(r);
			return NULL;
		}
		memcpy(z->name, n.name, n.len);
		z->len = n.len;
		z->pool = upstream_pool_new(
		    cz->name, cz->upstream, cz->n_upstream, &p);
		if (z->pool == NULL)
			goto nomem;
		inherit(z, prev);
		r->nzones++;
	}
	if (name_in(cfg->health_check_name, &r->probe, cfg->health_check_type) <
	    0) {
		snprintf(err, errlen, "health-check-name %s: bad name",
		    cfg->health_check_name);
		route_unref(r);
		return NULL;
	}
	/* Config validated these names; one that does not convert is left
	 * out rather than failing the whole configuration. */
	for (size_t i = 0; i < cfg->n_keep_warm; i++)
		if (name_in(cfg->keep_warm[i].name,
			&r->keep_warm[r->n_keep_warm],
			cfg->keep_warm[i].type) == 0)
			r->n_keep_warm++;
	for (size_t i = 0; i < cfg->n_stale_on_negative; i++)
		if (name_in(cfg->stale_on_negative[i],
			&r->neg_zones[r->n_neg_zones], 0) == 0)
			r->n_neg_zones++;
	return r;
nomem:
	snprintf(err, errlen, "out of memory creating upstream pools");
	route_unref(r);
	return NULL;
}

void
route_ref(struct route *r)
{
	atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
}

void
route_unref(struct route *r)
{
	if (r == NULL ||
	    atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (size_t i = 0; i < CONFIG_MAX_ZONES + 1; i++)
		upstream_pool_free(r->zones[i].pool);
	free(r);
}

struct upstream_pool *
route_pool_for(const struct route *r, const uint8_t *qname, size_t len)
{
	size_t best = 0;

	/* Longest suffix wins; zones[0] is the root and matches everything. */
	for (size_t i = 1; i < r->nzones; i++)
		if (r->zones[i].len > r->zones[best].len &&
		    wire_name_in_zone(
			qname, len, r->zones[i].name, r->zones[i].len))
			best = i;
	return r->zones[best].pool;
}

bool
route_negative_guarded(const struct route *r, const uint8_t *qname, size_t len)
{
	for (size_t i = 0; i < r->n_neg_zones; i++)
		if (wire_name_in_zone(
			qname, len, r->neg_zones[i].name, r->neg_zones[i].len))
			return true;
	return false;
}
