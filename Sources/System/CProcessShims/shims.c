#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>
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

int tether_enter_network_namespace(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int entered = setns(fd, CLONE_NEWNET);
    int saved = errno;
    close(fd);
    errno = saved;
    return entered;
}
