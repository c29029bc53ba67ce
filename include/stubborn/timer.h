/*
 * timer: a min-heap of deadlines embedded in their owners' structs, so a
 * query's timers cost no allocation and no event registration each.  One
 * heap per worker; the worker keeps a single libevent timer at the earliest
 * deadline, and tests drive the heap with a clock of their own.
 *
 * Not thread-safe: a heap and its timers belong to one thread.
 */
#ifndef STUBBORN_TIMER_H
#define STUBBORN_TIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TIMER_NONE UINT64_MAX

struct timer;
typedef void (*timer_fn)(struct timer *t, uint64_t now);

/* Embedded in its owner; zeroed memory (or timer_init) is a stopped timer. */
struct timer {
	uint64_t at; /* deadline, ms on the caller's clock */
	size_t slot; /* index in the heap + 1; 0 when not armed */
	timer_fn fn; /* called once when due, with the heap's "now" */
};

struct timer_heap {
	struct timer **v;
	size_t n, cap;
};

void timer_heap_init(struct timer_heap *h);

/* Frees the heap's array; armed timers are simply forgotten. */
void timer_heap_fini(struct timer_heap *h);

/* A stopped timer that will call fn. */
void timer_init(struct timer *t, timer_fn fn);

/*
 * Arms t for at (re-arming moves it).  Returns 0 or -ENOMEM (the heap could
 * not grow; t is left stopped).
 */
int timer_set(struct timer_heap *h, struct timer *t, uint64_t at);

/* Stops t; stopping a stopped timer is fine. */
void timer_stop(struct timer_heap *h, struct timer *t);

static inline bool
timer_armed(const struct timer *t)
{
	return t->slot != 0;
}

/* The earliest deadline, or TIMER_NONE when nothing is armed. */
uint64_t timer_next(const struct timer_heap *h);

/*
 * Calls every timer due at now (at <= now), earliest first, each stopped
 * before its fn runs; fns may arm and stop timers, and ones they arm due at
 * now run in this call too.  Returns how many ran.
 */
size_t timer_run(struct timer_heap *h, uint64_t now);

#endif
