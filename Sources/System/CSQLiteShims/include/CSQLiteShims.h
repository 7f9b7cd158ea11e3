#ifndef TETHER_SQLITE_SHIMS_H
#define TETHER_SQLITE_SHIMS_H
#include <sqlite3.h>

/// SQLite is loaded when a process first calls it (dlopen; loader.c, written by
/// scripts/c-forwarders), not at start. Returns NULL once loaded, else why not (a static
/// string). Safe from any thread; loads once. Every function Tether calls loads it first if
/// need be (a process that cannot load it ends with the reason and status 127).
const char *tether_sqlite_load(void);
/// Whether it is loaded (nothing is loaded by asking).
int tether_sqlite_loaded(void);
/// The loaded library's handle, for dlsym (NULL when it cannot be loaded).
void *tether_sqlite_library(void);
/// Loads it, or ends the process with the reason (status 127).
void tether_sqlite_require(void);
#endif
