/* An nbdkit filter for the NBD tests: while the file named by flush-error-file= exists, every
 * NBD_CMD_FLUSH fails with EIO (nbdkit's own error filter, as of 1.32, injects errors into reads,
 * writes, trims and zeroes but not into flushes). Everything else passes through untouched.
 *
 *   nbdkit -U SOCK --filter=/path/nbdkit-flusherror-filter.so file IMG flush-error-file=TRIGGER
 *
 * The trigger file lets a test turn failures on at the moment it chooses (touch) and off again
 * (rm), like the error filter's error-file=. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

static char *trigger;

static int flusherror_config(nbdkit_next_config *next, nbdkit_backend *nxdata, const char *key, const char *value) {
  if (strcmp(key, "flush-error-file") == 0) {
    free(trigger);
    trigger = nbdkit_absolute_path(value);
    return trigger ? 0 : -1;
  }
  return next(nxdata, key, value);
}

static void flusherror_unload(void) { free(trigger); }

static int flusherror_flush(nbdkit_next *next, void *handle, uint32_t flags, int *err) {
  (void)handle;
  if (trigger && access(trigger, F_OK) == 0) {
    nbdkit_error("flusherror: injecting EIO into flush (%s exists)", trigger);
    *err = EIO;
    return -1;
  }
  return next->flush(next, flags, err);
}

static struct nbdkit_filter filter = {
    .name = "flusherror",
    .longname = "ubtrfs test filter: flush fails while a trigger file exists",
    .unload = flusherror_unload,
    .config = flusherror_config,
    .config_help = "flush-error-file=<FILENAME>  While FILENAME exists, flush fails with EIO.",
    .flush = flusherror_flush,
};

NBDKIT_REGISTER_FILTER(filter)
