#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "stubborn/ratelimit.h"

#define RL_STRIPES 64 /* power of two */
#define RL_PROBE 8    /* slots looked at per client */
#define RL_MILLI 1000 /* tokens are counted in thousandths */

struct slot {
	uint64_t hash;    /* 0: empty */
	uint64_t last_ms; /* last refill, and last seen */
	uint64_t tokens;  /* thousandths of a token */
	bool over;        /* limited at the last check */
};

struct ratelimit {
	size_t mask; /* slots - 1 */
	struct slot *slots;
	pthread_mutex_t locks[RL_STRIPES];
	unsigned char key[crypto_shorthash_KEYBYTES];
};

static struct slot *find_slot(struct ratelimit *rl, uint64_t hash, bool *fresh);

struct ratelimit *
ratelimit_new(size_t nclients, const uint8_t *hash_key)
{
	struct ratelimit *rl;
	size_t n = RL_STRIPES * RL_PROBE;

	if (nclients == 0)
		return NULL;
	while (n < nclients)
		n <<= 1;
	rl = calloc(1, sizeof(*rl));
	if (rl == NULL)
		return NULL;
	rl->slots = calloc(n, sizeof(*rl->slots));
	if (rl->slots == NULL) {
		free(rl);
		return NULL;
	}
	rl->mask = n - 1;
	memcpy(rl->key, hash_key, sizeof(rl->key));
	for (int i = 0; i < RL_STRIPES; i++)
		pthread_mutex_init(&rl->locks[i], NULL);
	return rl;
}

void
ratelimit_free(struct ratelimit *rl)
{
	if (rl == NULL)
		return;
	for (int i = 0; i < RL_STRIPES; i++)
		pthread_mutex_destroy(&rl->locks[i]);
	free(rl->slots);
	free(rl);
}

size_t
ratelimit_prefix(const struct sockaddr *addr, unsigned v4_bits,
    unsigned v6_bits, uint8_t *out)
{
	const uint8_t *a;
	size_t alen;
	unsigned bits;

	memset(out, 0, 17);
	if (addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 =
		    (const struct sockaddr_in6 *)addr;
		a = s6->sin6_addr.s6_addr;
		alen = 16;
		bits = v6_bits > 128 ? 128 : v6_bits;
		out[0] = 6;
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)addr;
		a = (const uint8_t *)&s4->sin_addr.s_addr;
		alen = 4;
		bits = v4_bits > 32 ? 32 : v4_bits;
		out[0] = 4;
	}
	for (size_t i = 0; i < alen && bits > 0; i++) {
		unsigned take = bits >= 8 ? 8 : bits;
		out[1 + i] = (uint8_t)(a[i] & (0xff00u >> take));
		bits -= take;
	}
	return 1 + alen;
}

/*
 * The slot for hash among the RL_PROBE slots of its group: its own, else
 * an empty one, else the least recently seen (that client is forgotten).
 */
static struct slot *
find_slot(struct ratelimit *rl, uint64_t hash, bool *fresh)
{
	size_t base = (size_t)(hash >> 16) & rl->mask & ~(size_t)(RL_PROBE - 1);
	struct slot *victim = NULL;

	*fresh = false;
	for (size_t i = 0; i < RL_PROBE; i++) {
		struct slot *s = &rl->slots[base + i];
		if (s->hash == hash)
			return s;
		if (victim == NULL || s->hash == 0 ||
		    (victim->hash != 0 && s->last_ms < victim->last_ms))
			victim = s;
	}
	*fresh = true;
	return victim;
}

enum ratelimit_verdict
ratelimit_check(struct ratelimit *rl, const uint8_t *prefix, size_t len,
    uint32_t rate, uint32_t burst, uint64_t now_ms)
{
	uint64_t hash, cap;
	struct slot *s;
	pthread_mutex_t *lock;
	enum ratelimit_verdict v;
	bool fresh;

	if (rate == 0)
		return RATELIMIT_PASS;
	if (burst == 0)
		burst = 1;
	crypto_shorthash((unsigned char *)&hash, prefix, len, rl->key);
	hash |= 1; /* 0 marks an empty slot */
	cap = (uint64_t)burst * RL_MILLI;
	/* Slot groups never span stripes: group index picks the lock. */
	lock = &rl->locks[((hash >> 16) / RL_PROBE) & (RL_STRIPES - 1)];
	pthread_mutex_lock(lock);
	s = find_slot(rl, hash, &fresh);
	if (fresh) {
		s->hash = hash;
		s->tokens = cap;
		s->last_ms = now_ms;
		s->over = false;
	} else if (now_ms > s->last_ms) {
		s->tokens += (now_ms - s->last_ms) * rate;
		if (s->tokens > cap)
			s->tokens = cap;
		s->last_ms = now_ms;
	}
	if (s->tokens >= RL_MILLI) {
		s->tokens -= RL_MILLI;
		s->over = false;
		v = RATELIMIT_PASS;
	} else {
		v = s->over ? RATELIMIT_LIMITED : RATELIMIT_LIMITED_FIRST;
		s->over = true;
	}
	pthread_mutex_unlock(lock);
	return v;
}

size_t
ratelimit_tracked(struct ratelimit *rl)
{
	size_t n = 0;

	for (size_t i = 0; i <= rl->mask; i++) {
		pthread_mutex_t *lock =
		    &rl->locks[(i / RL_PROBE) & (RL_STRIPES - 1)];
		pthread_mutex_lock(lock);
		if (rl->slots[i].hash != 0)
			n++;
		pthread_mutex_unlock(lock);
	}
	return n;
}
