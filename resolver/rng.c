#include <errno.h>
#include <sodium.h>

#include "stubborn/rng.h"

int
rng_init(void)
{
	return sodium_init() < 0 ? -EIO : 0;
}

uint32_t
rng_uniform(uint32_t upper)
{
	return upper == 0 ? 0 : randombytes_uniform(upper);
}

uint16_t
rng_id(void)
{
	return (uint16_t)randombytes_uniform(65536);
}

uint16_t
rng_port(void)
{
	return (uint16_t)(1024 + randombytes_uniform(65536 - 1024));
}

void
rng_bytes(void *buf, size_t len)
{
	randombytes_buf(buf, len);
}
