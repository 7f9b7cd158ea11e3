#ifndef TETHER_YAML_SHIMS_H
#define TETHER_YAML_SHIMS_H
#include <yaml.h>

/// libyaml is loaded when a process first calls it (dlopen; loader.c, written by
/// scripts/c-forwarders), not at start. Returns NULL once loaded, else why not (a static
/// string). Safe from any thread; loads once. Every function Tether calls loads it first if
/// need be (a process that cannot load it ends with the reason and status 127).
const char *tether_yaml_load(void);
/// Whether it is loaded (nothing is loaded by asking).
int tether_yaml_loaded(void);
/// The loaded library's handle, for dlsym (NULL when it cannot be loaded).
void *tether_yaml_library(void);
/// Loads it, or ends the process with the reason (status 127).
void tether_yaml_require(void);
#endif
