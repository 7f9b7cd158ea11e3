#ifndef TETHER_VERSION_H
#define TETHER_VERSION_H
/// Tether's release, stamped by `make package` from git (`-Xcc -DTETHER_VERSION=…`); a build
/// from a checkout says VERSION's release with "-dev".
const char *tether_version(void);
/// The commit it was built from, stamped by `make package`; empty in a build from a checkout.
const char *tether_commit(void);
#endif
