#include <stdatomic.h>
#include <time.h>

#include "stubborn/clock.h"

static _Atomic uint64_t fake_ms;

uint64_t
clock_now_ms(void)
{
	struct timespec ts;
	uint64_t f = atomic_load_explicit(&fake_ms, memory_order_relaxed);

	if (f != 0)
		return f;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	/*
	 * Offset by ~49 days: a snapshot loaded just after boot may carry
	 * entries stored "before" the monotonic clock's zero.
	 */
	return (1ull << 32) + (uint64_t)ts.tv_sec * 1000u +
	    (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t
clock_now_us(void)
{
	struct timespec ts;
	uint64_t f = atomic_load_explicit(&fake_ms, memory_order_relaxed);

	if (f != 0)
		return f * 1000;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((1ull << 32) + (uint64_t)ts.tv_sec * 1000u) * 1000u +
	    (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t
clock_wall_s(void)
{
	return (uint64_t)time(NULL);
}

void
clock_set_fake_ms(uint64_t ms)
{
	atomic_store(&fake_ms, ms);
}
