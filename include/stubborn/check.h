/*
 * check: invariants of the engine's state, checked in the sanitizer and
 * test builds (STUBBORN_CHECKS) and compiled out of the daemon's release
 * build.  A failed check aborts with the condition and its place: it is a
 * bug in stubborn, never a reaction to outside input (that gets FORMERR, a
 * drop or "ignored").
 */
#ifndef STUBBORN_CHECK_H
#define STUBBORN_CHECK_H

#ifdef STUBBORN_CHECKS
#include <stdio.h>
#include <stdlib.h>
#define CHECK_STATE(c)                                                         \
	do {                                                                   \
		if (!(c)) {                                                    \
			fprintf(stderr, "%s:%d: invariant failed: %s\n",       \
			    __FILE__, __LINE__, #c);                           \
			abort();                                               \
		}                                                              \
	} while (0)
#else
#define CHECK_STATE(c) ((void)0)
#endif

#endif
