/*
 * libFuzzer target for the config file parser.  The input becomes the config
 * file (config_load reads files, so it goes through a temp file named for
 * this process); a fixed --upstream keeps /etc/resolv.conf out of it.
 *
 * Beyond "no crash", it checks the print-back contract: whatever loads must
 * print a file that loads again and prints the same text.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stubborn/config.h"

#include "fuzz.h"

static char path[64], path2[64];
static struct config cfg, cfg2;

static void cleanup(void);
static void write_file(const char *p, const void *data, size_t size);
static char *print_to_string(const struct config *c, size_t *len);

static void
cleanup(void)
{
	unlink(path);
	unlink(path2);
}

static void
write_file(const char *p, const void *data, size_t size)
{
	FILE *f = fopen(p, "w");

	if (f == NULL) {
		perror(p);
		abort();
	}
	if (size > 0 && fwrite(data, 1, size, f) != size)
		abort();
	if (fclose(f) != 0)
		abort();
}

static char *
print_to_string(const struct config *c, size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);

	if (f == NULL)
		abort();
	config_print(c, f);
	fclose(f);
	return buf;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *argv[] = {
	    "stubborn", "--config", path, "--upstream", "127.0.0.1", NULL};
	char *argv2[] = {"stubborn", "--config", path2, NULL};
	char err[1200], *text, *text2;
	size_t len, len2;

	if (path[0] == '\0') {
		snprintf(
		    path, sizeof(path), "/tmp/fuzz_config.%d", (int)getpid());
		snprintf(path2, sizeof(path2), "/tmp/fuzz_config.%d.back",
		    (int)getpid());
		atexit(cleanup);
	}
	write_file(path, data, size);
	if (config_load(&cfg, 5, argv, err, sizeof(err)) != CONFIG_RUN)
		return 0;

	text = print_to_string(&cfg, &len);
	write_file(path2, text, len);
	if (config_load(&cfg2, 3, argv2, err, sizeof(err)) != CONFIG_RUN) {
		fprintf(stderr, "print-back does not load: %s\n%s", err, text);
		abort();
	}
	text2 = print_to_string(&cfg2, &len2);
	if (len != len2 || memcmp(text, text2, len) != 0) {
		fprintf(stderr, "print-back differs:\n%s---\n%s", text, text2);
		abort();
	}
	free(text);
	free(text2);
	return 0;
}
