#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "stubborn/inflight.h"
#include "stubborn/rng.h"

/* Waiters kept for reuse: a miss then allocates nothing for its client. */
#define INFLIGHT_SPARE_MAX 256

void
inflight_init(struct inflight *t)
{
	memset(t->buckets, 0, sizeof(t->buckets));
	t->count = 0;
	t->spare = NULL;
	t->n_spare = 0;
	rng_bytes(t->hash_key, sizeof(t->hash_key));
}

void
inflight_fini(struct inflight *t)
{
	while (t->spare != NULL) {
		struct waiter *w = t->spare;
		t->spare = w->next;
		free(w);
	}
	t->n_spare = 0;
}

uint64_t
inflight_hash(const struct inflight *t, const uint8_t *key, size_t klen)
{
	return rng_hash(t->hash_key, key, klen);
}

struct inflight_entry *
inflight_find(struct inflight *t, uint64_t h, const uint8_t *key, size_t klen)
{
	for (struct inflight_entry *e = t->buckets[h & (INFLIGHT_BUCKETS - 1)];
	     e != NULL; e = e->hnext)
		if (e->hash == h && e->klen == klen &&
		    memcmp(e->key, key, klen) == 0)
			return e;
	return NULL;
}

void
inflight_insert(struct inflight *t, struct inflight_entry *e, uint64_t h,
    const uint8_t *key, size_t klen)
{
	struct inflight_entry **b = &t->buckets[h & (INFLIGHT_BUCKETS - 1)];

	e->hash = h;
	memcpy(e->key, key, klen);
	e->klen = klen;
	e->waiters = NULL;
	e->nwaiters = 0;
	e->hnext = *b;
	*b = e;
	e->linked = true;
	t->count++;
}

void
inflight_remove(struct inflight *t, struct inflight_entry *e)
{
	struct inflight_entry **pp;

	if (!e->linked)
		return;
	for (pp = &t->buckets[e->hash & (INFLIGHT_BUCKETS - 1)]; *pp != NULL;
	     pp = &(*pp)->hnext) {
		if (*pp == e) {
			*pp = e->hnext;
			break;
		}
	}
	e->hnext = NULL;
	e->linked = false;
	t->count--;
}

int
inflight_add_waiter(struct inflight *t, struct inflight_entry *e,
    const uint8_t *query, const struct wire_query *wq, const struct client *cl,
    unsigned max_waiters)
{
	struct waiter *w;

	/*
	 * A client repeating its own query (same transport, address and ID)
	 * is already waiting: the retry costs nothing, and it gets one reply.
	 */
	for (w = e->waiters; w != NULL; w = w->next) {
		if (w->q.id == wq->id && w->cl.tcp == cl->tcp &&
		    w->cl.conn == cl->conn && w->cl.peer_len == cl->peer_len &&
		    memcmp(&w->cl.peer, &cl->peer, cl->peer_len) == 0)
			return -EALREADY;
	}
	if (e->nwaiters >= max_waiters || wq->q.end > INFLIGHT_QBYTES_MAX)
		return -EBUSY;
	if ((w = t->spare) != NULL) {
		t->spare = w->next;
		t->n_spare--;
	} else if ((w = malloc(sizeof(*w))) == NULL) {
		return -ENOMEM;
	}
	w->cl = *cl;
	w->q = *wq;
	w->qlen = wq->q.end;
	memcpy(w->qbytes, query, w->qlen);
	w->next = e->waiters;
	e->waiters = w;
	e->nwaiters++;
	return 0;
}

struct waiter *
inflight_take_waiters(struct inflight_entry *e)
{
	struct waiter *ws = e->waiters;

	e->waiters = NULL;
	e->nwaiters = 0;
	return ws;
}

void
inflight_restore_waiters(struct inflight_entry *e, struct waiter *ws)
{
	e->waiters = ws;
	e->nwaiters = 0;
	for (struct waiter *w = ws; w != NULL; w = w->next)
		e->nwaiters++;
}

void
inflight_free_waiters(struct inflight *t, struct waiter *w)
{
	struct waiter *next;

	for (; w != NULL; w = next) {
		next = w->next;
		/* A waiter never answered is told so, exactly once. */
		if (w->cl.reply != NULL)
			w->cl.reply(&w->cl, NULL, 0, CLIENT_SRC_ERROR);
		if (t->n_spare < INFLIGHT_SPARE_MAX) {
			w->next = t->spare;
			t->spare = w;
			t->n_spare++;
		} else {
			free(w);
		}
	}
}
