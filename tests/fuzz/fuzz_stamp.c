/*
 * libFuzzer target for the DNS stamp parser.  Each input is tried twice: as
 * the stamp text itself, and as the binary payload of a stamp ("sdns://"
 * and its base64url), which random text would rarely reach.  Whatever
 * parses must satisfy stamp.h's contract, write back, and parse again to
 * the same fields; writing that again gives the same text.  Writing into
 * buffers too small must fail cleanly without touching bytes past cap.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "stubborn/stamp.h"

#include "fuzz.h"

#define TEXT_MAX 2048
#define CANARY 0xa5

static bool name_char_ok(char c);
static void check_fields(const struct stamp_dnscrypt *st);
static void check_text(const char *text);

static bool
name_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

/* What stamp_parse_dnscrypt promises about a stamp it accepts. */
static void
check_fields(const struct stamp_dnscrypt *st)
{
	size_t al = strnlen(st->addr, sizeof(st->addr));
	size_t nl = strnlen(st->name, sizeof(st->name));

	CHECK(al >= 1 && al <= STAMP_ADDR_MAX);
	CHECK(nl >= 1 && nl <= STAMP_NAME_MAX);
	CHECK(st->name[0] != '.' && st->name[nl - 1] != '.');
	for (size_t i = 0; i < nl; i++) {
		CHECK(name_char_ok(st->name[i]));
		CHECK(!(st->name[i] == '.' && st->name[i + 1] == '.'));
	}
}

static void
check_text(const char *text)
{
	static char out[TEXT_MAX], out2[TEXT_MAX];
	struct stamp_dnscrypt st, st2;
	const char *why = NULL;
	int r, n, n2;

	r = stamp_parse_dnscrypt(text, &st, &why);
	CHECK(r == 0 || r == -EINVAL);
	if (r != 0) {
		CHECK(why != NULL && why[0] != '\0');
		return;
	}
	CHECK(why == NULL);
	CHECK(strncmp(text, "sdns://", 7) == 0);
	check_fields(&st);

	memset(out, CANARY, sizeof(out));
	n = stamp_write_dnscrypt(&st, out, sizeof(out) - 64);
	CHECK(n > 7 && (size_t)n < sizeof(out) - 64);
	CHECK(strlen(out) == (size_t)n);
	CHECK(strncmp(out, "sdns://", 7) == 0);
	CHECK(stamp_parse_dnscrypt(out, &st2, &why) == 0);
	CHECK(st2.props == st.props);
	CHECK(strcmp(st2.addr, st.addr) == 0);
	CHECK(memcmp(st2.pk, st.pk, STAMP_PK_LEN) == 0);
	CHECK(strcmp(st2.name, st.name) == 0);
	n2 = stamp_write_dnscrypt(&st2, out2, sizeof(out2));
	CHECK(n2 == n && strcmp(out2, out) == 0);

	/* Too small: -ENOSPC and nothing written past cap. */
	for (size_t cap = 0; cap <= (size_t)n; cap += 1 + cap / 3) {
		memset(out2, CANARY, sizeof(out2));
		CHECK(stamp_write_dnscrypt(&st, out2, cap) == -ENOSPC);
		for (size_t i = cap; i < cap + 64; i++)
			CHECK((uint8_t)out2[i] == CANARY);
	}
	memset(out2, CANARY, sizeof(out2));
	CHECK(stamp_write_dnscrypt(&st, out2, (size_t)n + 1) == n);
	CHECK((uint8_t)out2[n + 1] == CANARY);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char text[TEXT_MAX];
	size_t b64;

	if (sodium_init() < 0)
		abort();
	if (size >= 1024)
		return 0;
	/* The input as text (cut at a NUL, as a C string would be). */
	memcpy(text, data, size);
	text[size] = '\0';
	check_text(text);

	/* The input as the stamp's payload. */
	memcpy(text, "sdns://", 7);
	b64 = sodium_base64_ENCODED_LEN(
	    size, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	if (size > 0 && 7 + b64 <= sizeof(text)) {
		sodium_bin2base64(text + 7, sizeof(text) - 7, data, size,
		    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
		check_text(text);
	}
	return 0;
}
