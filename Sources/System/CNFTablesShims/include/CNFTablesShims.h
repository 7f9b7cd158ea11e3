#ifndef TETHER_NFTABLES_SHIMS_H
#define TETHER_NFTABLES_SHIMS_H

/// Runs `commands`, in nft's own syntax, through libnftables as one transaction: all of it
/// applies or none does. libnftables is loaded on the first call (dlopen of
/// libnftables.so.1), so a process that never isolates never loads it
/// (docs/architecture.md, "Network isolation").
///
/// `network_namespace` is NULL for the caller's network namespace, or the path of one
/// (/run/netns/NAME) to act in instead, from a thread of its own that enters it (the caller's
/// threads never change namespace). With `json` set, listings come back as nftables' JSON.
///
/// Returns 0 when done, 1 when nft refused (nothing changed), or -1 when libnftables cannot be
/// loaded or the namespace cannot be entered. `*output` and `*error` receive what nft printed (malloc'd, or NULL);
/// free them with tether_nft_free.
int tether_nft_run(const char *network_namespace, const char *commands, int json, char **output, char **error);

/// Frees a string tether_nft_run returned.
void tether_nft_free(char *text);

#endif
