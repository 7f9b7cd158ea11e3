#define _GNU_SOURCE
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include "CProcessShims.h"

int tether_die_with_parent(void) {
    return prctl(PR_SET_PDEATHSIG, SIGKILL);
}

void tether_name_thread(const char *name) {
    prctl(PR_SET_NAME, name, 0, 0, 0);
}

int tether_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
}
