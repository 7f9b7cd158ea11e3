#ifndef TETHER_PROCESS_SHIMS_H
#define TETHER_PROCESS_SHIMS_H
#include <spawn.h>

/// prctl(PR_SET_PDEATHSIG, SIGKILL) (prctl is variadic): the kernel kills this process when
/// the thread that started it ends. Returns 0 on success.
int tether_die_with_parent(void);

/// Names the calling thread (at most 15 bytes show) for top, ps -L and /proc/PID/task/TID/comm.
void tether_name_thread(const char *name);

/// posix_spawn_file_actions_addclosefrom_np(actions, lowest) (a GNU extension): the child
/// starts with no descriptor from `lowest` up. Returns 0 on success.
int tether_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest);

/// setns(open(path), CLONE_NEWNET): moves the calling thread (only) into the network namespace
/// at `path`. Returns 0, or -1 with errno set.
int tether_enter_network_namespace(const char *path);
#endif
