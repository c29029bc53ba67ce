/*
 * clock: monotonic milliseconds for TTLs and timers, wall time for snapshots
 * and logs only.  Tests may freeze the monotonic clock.
 */
#ifndef STUBBORN_CLOCK_H
#define STUBBORN_CLOCK_H

#include <stdint.h>

/* Milliseconds since an arbitrary start; never goes backwards. */
uint64_t clock_now_ms(void);

/* Microseconds on the same clock as clock_now_ms (response times). */
uint64_t clock_now_us(void);

/* Seconds since the epoch (wall clock). */
uint64_t clock_wall_s(void);

/* Test override: while set (non-zero), clock_now_ms() returns it. */
void clock_set_fake_ms(uint64_t ms);

#endif
