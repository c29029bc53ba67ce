#include <errno.h>
#include <stdlib.h>

#include "stubborn/timer.h"

static void sift_up(struct timer_heap *h, size_t i);
static void sift_down(struct timer_heap *h, size_t i);
static void place(struct timer_heap *h, size_t i, struct timer *t);

void
timer_heap_init(struct timer_heap *h)
{
	h->v = NULL;
	h->n = h->cap = 0;
}

void
timer_heap_fini(struct timer_heap *h)
{
	for (size_t i = 0; i < h->n; i++)
		h->v[i]->slot = 0;
	free(h->v);
	timer_heap_init(h);
}

void
timer_init(struct timer *t, timer_fn fn)
{
	t->at = 0;
	t->slot = 0;
	t->fn = fn;
}

static void
place(struct timer_heap *h, size_t i, struct timer *t)
{
	h->v[i] = t;
	t->slot = i + 1;
}

static void
sift_up(struct timer_heap *h, size_t i)
{
	struct timer *t = h->v[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (h->v[parent]->at <= t->at)
			break;
		place(h, i, h->v[parent]);
		i = parent;
	}
	place(h, i, t);
}

static void
sift_down(struct timer_heap *h, size_t i)
{
	struct timer *t = h->v[i];

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && h->v[c + 1]->at < h->v[c]->at)
			c++;
		if (t->at <= h->v[c]->at)
			break;
		place(h, i, h->v[c]);
		i = c;
	}
	place(h, i, t);
}

int
timer_set(struct timer_heap *h, struct timer *t, uint64_t at)
{
	if (timer_armed(t)) {
		size_t i = t->slot - 1;
		uint64_t old = t->at;
		t->at = at;
		if (at < old)
			sift_up(h, i);
		else
			sift_down(h, i);
		return 0;
	}
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		struct timer **v = realloc(h->v, cap * sizeof(*v));
		if (v == NULL)
			return -ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	t->at = at;
	place(h, h->n++, t);
	sift_up(h, h->n - 1);
	return 0;
}

void
timer_stop(struct timer_heap *h, struct timer *t)
{
	size_t i;
	struct timer *last;

	if (!timer_armed(t))
		return;
	i = t->slot - 1;
	t->slot = 0;
	last = h->v[--h->n];
	if (i == h->n)
		return;
	place(h, i, last);
	/* The moved timer may belong above or below the hole. */
	if (i > 0 && h->v[(i - 1) / 2]->at > last->at)
		sift_up(h, i);
	else
		sift_down(h, i);
}

uint64_t
timer_next(const struct timer_heap *h)
{
	return h->n ? h->v[0]->at : TIMER_NONE;
}

size_t
timer_run(struct timer_heap *h, uint64_t now)
{
	size_t ran = 0;

	while (h->n > 0 && h->v[0]->at <= now) {
		struct timer *t = h->v[0];
		timer_stop(h, t);
		ran++;
		t->fn(t, now);
	}
	return ran;
}
