/*
 * What every fuzz target shares: libFuzzer's entry point and CHECK, an
 * invariant that aborts with file:line in every build (assert would vanish
 * under NDEBUG, and libFuzzer keeps the input that tripped it).
 */
#ifndef STUBBORN_FUZZ_H
#define STUBBORN_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(c)                                                               \
	do {                                                                   \
		if (!(c)) {                                                    \
			fprintf(stderr, "%s:%d: invariant failed: %s\n",       \
			    __FILE__, __LINE__, #c);                           \
			abort();                                               \
		}                                                              \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
