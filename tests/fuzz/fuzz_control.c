/*
 * libFuzzer target for the control socket's request parser.  Each input is
 * one request line, exactly as many bytes as given (no NUL after them, so
 * a read past the end is caught).  Whatever control_parse accepts must
 * satisfy control.h's contract: a known command, its name in lower-case
 * wire form that writes out and reads back to the same bytes, a level and
 * a version in range; whatever it refuses has a reason.  Parsing is pure:
 * the same line gives the same result twice.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stubborn/control.h"
#include "stubborn/log.h"
#include "stubborn/wire.h"

#include "fuzz.h"

static void check_accepted(
    const char *line, size_t len, const struct control_req *req);

static void
check_accepted(const char *line, size_t len, const struct control_req *req)
{
	char text[WIRE_NAME_MAX * 4 + 8];
	uint8_t again[WIRE_NAME_MAX];
	int n;

	CHECK(len <= CONTROL_LINE_MAX);
	CHECK(req->cmd >= CONTROL_FLUSH && req->cmd <= CONTROL_HANDOVER);
	CHECK(req->json ==
	    (len > 4 && memcmp(line, "json", 4) == 0 &&
		(line[4] == ' ' || line[4] == '\t')));
	for (size_t i = 0; i < len; i++)
		CHECK(((unsigned char)line[i] >= 0x20 && line[i] != 0x7f) ||
		    line[i] == '\t' || (line[i] == '\r' && i == len - 1));
	switch (req->cmd) {
	case CONTROL_FLUSH:
	case CONTROL_FLUSH_ZONE:
		CHECK(req->name_len > 0);
		break;
	case CONTROL_DUMP:
		break;
	default:
		CHECK(req->name_len == 0);
	}
	if (req->cmd != CONTROL_FLUSH)
		CHECK(req->qtype == 0);
	if (req->name_len > 0) {
		CHECK(req->name_len <= WIRE_NAME_MAX);
		/* Lower case, and it survives presentation form. */
		memcpy(again, req->name, req->name_len);
		wire_name_lower(again, req->name_len);
		CHECK(memcmp(again, req->name, req->name_len) == 0);
		wire_name_text(req->name, req->name_len, text, sizeof(text));
		n = wire_name_from_text(text, again);
		CHECK(n == (int)req->name_len);
		CHECK(memcmp(again, req->name, req->name_len) == 0);
	}
	if (req->cmd == CONTROL_LOG_LEVEL)
		CHECK(req->level >= LOG_LEVEL_ERROR &&
		    req->level <= LOG_LEVEL_DEBUG);
	if (req->cmd == CONTROL_HANDOVER)
		CHECK(req->version >= 0 && req->version <= 999999);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct control_req req, req2;
	char *line = malloc(size ? size : 1);
	int rc, rc2;

	if (line == NULL)
		return 0;
	memcpy(line, data, size);
	rc = control_parse(line, size, &req);
	CHECK(rc == 0 || rc == -EINVAL || rc == -E2BIG);
	CHECK(memchr(req.error, '\0', sizeof(req.error)) != NULL);
	if (size > CONTROL_LINE_MAX)
		CHECK(rc == -E2BIG);
	if (rc < 0)
		CHECK(req.error[0] != '\0');
	else
		check_accepted(line, size, &req);
	rc2 = control_parse(line, size, &req2);
	CHECK(rc2 == rc);
	CHECK(memcmp(&req, &req2, sizeof(req)) == 0);
	free(line);
	return 0;
}
