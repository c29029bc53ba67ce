/*
 * snapshot: the cache saved to a file and loaded back, so that serve-stale
 * still has answers after a restart, even one during an upstream outage.
 *
 * File format, version 1.  All integers are big-endian.
 *
 *   offset  size  field
 *        0     8  magic "STUBSNAP"
 *        8     4  version, 1
 *       12     4  reserved, 0
 *       16     8  wall-clock time of the save, seconds since the epoch
 *       24     8  number of entries that follow
 *       32        entries, each:
 *                   2  klen: key length, 1..CACHE_KEY_MAX
 *                   2  len: response length
 *                   4  ttl the entry was stored with, seconds
 *                   8  age at save time, milliseconds
 *                klen  key, as cache_make_key() writes it
 *                 len  response (ID 0, TTLs as received, no OPT)
 *  size-32    32  BLAKE2b-256 (libsodium crypto_generichash, no key) of
 *                 every byte before it
 *
 * Ages, not monotonic timestamps, are saved because the monotonic clock
 * restarts with the machine; the wall time of the save tells a later load
 * how long the file lay on disk.  Entries are written least recently used
 * first within each shard, so loading in file order keeps recency.
 *
 * Nothing here logs: both functions return a negative errno, and load also
 * a one-line reason, for the caller to log once.
 */
#ifndef STUBBORN_SNAPSHOT_H
#define STUBBORN_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "stubborn/cache.h"

#define SNAPSHOT_VERSION 1

/*
 * Writes every data entry of c (failure entries are not saved) to path,
 * atomically: path.tmp is written, fsynced and renamed over path, then the
 * directory is fsynced.  Each entry carries its age at now_ms (same scale as
 * the cache's clock) and the file carries wall_s.  Shard locks are held only
 * while that shard's entries are copied to the file.  Returns 0, with the
 * number of entries written in *count (may be NULL), or a negative errno.
 * A failure before the rename leaves path as it was and removes path.tmp;
 * only a failed sync of the directory is reported after path was replaced.
 */
int snapshot_save(struct cache *c, const char *path, uint64_t now_ms,
    uint64_t wall_s, size_t *count);

/*
 * Loads the snapshot at path into c.  The whole file is checked first
 * (magic, version, checksum, every length, the entry count); a file that
 * fails is not used at all and the cache is left untouched: -ENOENT
 * (missing), -EBADMSG (empty, truncated, corrupt, not a snapshot), -EPROTO
 * (another version), or another negative errno from the system, with a
 * one-line reason in err (size errlen; err may be NULL).
 *
 * An entry's age is its saved age plus the wall time since the save
 * (wall_s minus the file's time; a clock that went backwards counts as 0).
 * Entries at least ttl + stale_max_age_s old, older than now_ms itself,
 * with a key that is not their response's question (lower-cased qname,
 * qtype, qclass; any flags byte; qtype 0 for an NXDOMAIN, which is kept
 * for every type of its name), or that cache_store() refuses are
 * skipped; the rest are stored as if stored at now_ms - age, so they come
 * back fresh or stale exactly as they would have been.  Returns 0 with
 * *loaded and *skipped (either may be NULL), or -ENOMEM part way through.
 * The file is mapped, not copied.
 */
int snapshot_load(struct cache *c, const char *path, uint64_t now_ms,
    uint64_t wall_s, uint32_t stale_max_age_s, size_t *loaded, size_t *skipped,
    char *err, size_t errlen);

#endif
