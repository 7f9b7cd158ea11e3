#include "CTetherVersion.h"

// VersionTests checks this default against the VERSION file.
#ifndef TETHER_VERSION
#define TETHER_VERSION "0.9.0-dev"
#endif
#ifndef TETHER_COMMIT
#define TETHER_COMMIT ""
#endif

const char *tether_version(void) { return TETHER_VERSION; }
const char *tether_commit(void) { return TETHER_COMMIT; }
