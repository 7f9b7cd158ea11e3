#define _GNU_SOURCE
#include "CSensorShims.h"
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/fanotify.h>
#include <sys/vfs.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <signal.h>
#include <stdio.h>
#include <linux/netlink.h>
#include <linux/openat2.h>
#include <linux/connector.h>
#include <linux/cn_proc.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>
#include <netinet/in.h>

static int wait_readable(int fd, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ready = poll(&p, 1, timeout_ms);
    if (ready < 0) return errno == EINTR ? 0 : -errno;
    return ready;
}

/// Copies the process-connector record a netlink message carries into `event` (aligned), after
/// checking that the message is long enough for the connector header and the record; 0 when
/// it is not such a message.
static int proc_record(const struct nlmsghdr *header, struct proc_event *event) {
    if (header->nlmsg_type == NLMSG_ERROR || header->nlmsg_type == NLMSG_NOOP) return 0;
    if (header->nlmsg_len < NLMSG_LENGTH(sizeof(struct cn_msg))) return 0;
    const struct cn_msg *message = NLMSG_DATA(header);
    size_t available = header->nlmsg_len - NLMSG_LENGTH(sizeof(struct cn_msg));
    if (message->id.idx != CN_IDX_PROC || message->len > available) return 0;
    // The fixed part (what, cpu, timestamp) and the largest member used (fork: four pids).
    size_t needed = offsetof(struct proc_event, event_data) + sizeof(event->event_data.fork);
    if (message->len < needed) return 0;
    memset(event, 0, sizeof *event);
    memcpy(event, message->data, message->len < sizeof *event ? message->len : sizeof *event);
    return 1;
}

int tether_proc_connector_open(void) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
    if (fd < 0) return -errno;
    struct sockaddr_nl address = {.nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC, .nl_pid = 0};
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0) { int e = errno; close(fd); return -e; }
    // A bigger buffer rides out bursts of executions (SO_RCVBUFFORCE needs CAP_NET_ADMIN, which
    // the connector needs anyway).
    int size = 8 * 1024 * 1024;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    // nlmsghdr, then cn_msg, then the operation: built in a byte buffer (cn_msg ends in a
    // flexible array, so it cannot sit inside a struct before another field).
    char request[NLMSG_SPACE(sizeof(struct cn_msg) + sizeof(enum proc_cn_mcast_op))] __attribute__((aligned(NLMSG_ALIGNTO)));
    memset(request, 0, sizeof request);
    struct nlmsghdr *header = (struct nlmsghdr *)request;
    header->nlmsg_len = NLMSG_LENGTH(sizeof(struct cn_msg) + sizeof(enum proc_cn_mcast_op));
    header->nlmsg_type = NLMSG_DONE;
    struct cn_msg *message = NLMSG_DATA(header);
    message->id.idx = CN_IDX_PROC;
    message->id.val = CN_VAL_PROC;
    message->len = sizeof(enum proc_cn_mcast_op);
    enum proc_cn_mcast_op op = PROC_CN_MCAST_LISTEN;
    memcpy(message->data, &op, sizeof op);
    if (send(fd, request, header->nlmsg_len, 0) < 0) { int e = errno; close(fd); return -e; }
    // Anyone may bind; the kernel answers the subscription with an acknowledgement, a
    // PROC_EVENT_NONE record carrying its error (without CAP_NET_ADMIN). It does not answer at all
    // outside the initial pid and user namespaces, where no event would come: no answer within a
    // second is a refusal too.
    for (int tries = 0; tries < 20; tries++) {
        int ready = wait_readable(fd, 50);
        if (ready < 0) { close(fd); return ready; }
        if (ready == 0) continue;
        char answer[4096] __attribute__((aligned(8)));
        int length = (int)recv(fd, answer, sizeof answer, MSG_DONTWAIT);
        if (length < 0) continue;
        for (struct nlmsghdr *reply = (struct nlmsghdr *)answer; NLMSG_OK(reply, length); reply = NLMSG_NEXT(reply, length)) {
            struct proc_event event;
            if (!proc_record(reply, &event)) continue;
            if (event.what != PROC_EVENT_NONE) continue;
            if (event.event_data.ack.err != 0) { close(fd); return -(int)event.event_data.ack.err; }
            return fd;
        }
    }
    close(fd);
    return -ETIMEDOUT;
}

int tether_proc_connector_read(int fd, int timeout_ms, tether_proc_event *events, int max, int *overflows) {
    int ready = wait_readable(fd, timeout_ms);
    if (ready <= 0) return ready;
    // Each record is a datagram of its own: take every one queued now, without waiting again.
    int count = 0;
    char buffer[8192] __attribute__((aligned(8)));
    while (count < max) {
        int length = (int)recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
        if (length < 0) {
            if (errno == ENOBUFS) { (*overflows)++; continue; }
            if (errno == EAGAIN || errno == EINTR) break;
            return count > 0 ? count : -errno;
        }
        for (struct nlmsghdr *header = (struct nlmsghdr *)buffer; NLMSG_OK(header, length) && count < max;
             header = NLMSG_NEXT(header, length)) {
            struct proc_event event;
            if (!proc_record(header, &event)) continue;
            switch (event.what) {
            case PROC_EVENT_FORK:
                if (event.event_data.fork.child_pid != event.event_data.fork.child_tgid) break;  // a thread
                events[count++] = (tether_proc_event){TETHER_PROC_FORK, event.event_data.fork.child_pid, event.event_data.fork.child_tgid, 0,
                                                      event.event_data.fork.parent_tgid, event.timestamp_ns};
                break;
            case PROC_EVENT_EXEC:
                events[count++] = (tether_proc_event){TETHER_PROC_EXEC, event.event_data.exec.process_pid, event.event_data.exec.process_tgid, 0, 0,
                                                      event.timestamp_ns};
                break;
            case PROC_EVENT_EXIT:
                events[count++] = (tether_proc_event){TETHER_PROC_EXIT, event.event_data.exit.process_pid, event.event_data.exit.process_tgid,
                                                      (int32_t)event.event_data.exit.exit_code, 0, event.timestamp_ns};
                break;
            default:
                break;
            }
        }
    }
    return count;
}

int tether_fanotify_open(void) {
    int fd = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME, O_RDONLY | O_LARGEFILE | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int tether_fanotify_mark_filesystem(int fd, const char *path) {
    uint64_t mask = FAN_CLOSE_WRITE | FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_ONDIR;
    return fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, mask, AT_FDCWD, path) < 0 ? -errno : 0;
}

int tether_fanotify_mark_folder_writes(int fd, int folder_fd) {
    return fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_ONLYDIR, FAN_MODIFY | FAN_EVENT_ON_CHILD, folder_fd, NULL) < 0 ? -errno : 0;
}

int tether_fanotify_read(int fd, int timeout_ms, tether_file_event *events, int max) {
    int ready = wait_readable(fd, timeout_ms);
    if (ready <= 0) return ready;
    // Read what is queued now, buffer after buffer, while `events` has room for a whole one.
    int count = 0;
    char buffer[8192] __attribute__((aligned(8)));
    while (max - count >= (int)(sizeof buffer / sizeof(struct fanotify_event_metadata))) {
    int length = (int)read(fd, buffer, sizeof buffer);
    if (length < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        return count > 0 ? count : -errno;
    }
    for (struct fanotify_event_metadata *metadata = (struct fanotify_event_metadata *)buffer;
         FAN_EVENT_OK(metadata, length) && count < max; metadata = FAN_EVENT_NEXT(metadata, length)) {
        // Records are 4-aligned; the 8-byte mask is read through a copy.
        struct fanotify_event_metadata meta;
        memcpy(&meta, metadata, sizeof meta);
        if (meta.vers != FANOTIFY_METADATA_VERSION) return count > 0 ? count : -EPROTO;
        tether_file_event *out = &events[count];
        memset(out, 0, sizeof *out);
        out->mask = meta.mask;
        out->pid = meta.pid;
        if (meta.fd >= 0) close(meta.fd);
        if (meta.mask & FAN_Q_OVERFLOW) { count++; continue; }
        char *info = (char *)metadata + meta.metadata_len, *end = (char *)metadata + meta.event_len;
        int found = 0;
        while (info + sizeof(struct fanotify_event_info_header) <= end && !found) {
            struct fanotify_event_info_header header;
            memcpy(&header, info, sizeof header);
            if (header.len == 0 || header.len > (size_t)(end - info)) break;
            // The record: header, fsid, then a file_handle (its two fields and handle_bytes of
            // handle), then for DFID_NAME the entry's name, all within header.len.
            size_t fixed = sizeof(struct fanotify_event_info_fid) + sizeof(struct file_handle);
            if ((header.info_type == FAN_EVENT_INFO_TYPE_DFID_NAME || header.info_type == FAN_EVENT_INFO_TYPE_DFID) && header.len >= fixed) {
                struct fanotify_event_info_fid fid;
                memcpy(&fid, info, sizeof fid);
                struct file_handle handle;
                memcpy(&handle, info + sizeof(struct fanotify_event_info_fid), sizeof handle);
                if (handle.handle_bytes > sizeof out->handle || handle.handle_bytes > header.len - fixed) break;
                const char *bytes = info + fixed;
                memcpy(out->fsid, &fid.fsid, sizeof out->fsid);
                out->handle_bytes = handle.handle_bytes;
                out->handle_type = handle.handle_type;
                memcpy(out->handle, bytes, handle.handle_bytes);
                if (header.info_type == FAN_EVENT_INFO_TYPE_DFID_NAME) {
                    size_t room = header.len - fixed - handle.handle_bytes;
                    const char *name = bytes + handle.handle_bytes;
                    size_t size = strnlen(name, room < sizeof out->name - 1 ? room : sizeof out->name - 1);
                    memcpy(out->name, name, size);
                    out->name[size] = 0;
                }
                found = 1;
            }
            info += header.len;
        }
        if (found) count++;
    }
    }
    return count;
}

int tether_open_by_handle(int mount_fd, const tether_file_event *event) {
    struct {
        struct file_handle header;
        unsigned char bytes[128];
    } handle;
    if (event->handle_bytes > sizeof handle.bytes) return -EINVAL;
    handle.header.handle_bytes = event->handle_bytes;
    handle.header.handle_type = event->handle_type;
    memcpy(handle.header.f_handle, event->handle, event->handle_bytes);
    int fd = open_by_handle_at(mount_fd, &handle.header, O_PATH | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int tether_sock_diag(int family, int protocol, tether_socket *sockets, int max) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return -errno;
    struct {
        struct nlmsghdr header;
        struct inet_diag_req_v2 request;
    } message;
    memset(&message, 0, sizeof message);
    message.header.nlmsg_len = sizeof message;
    message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    message.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    message.request.sdiag_family = (uint8_t)family;
    message.request.sdiag_protocol = (uint8_t)protocol;
    // Every state but TIME_WAIT (6): a socket there has no inode and no owner any more.
    message.request.idiag_states = 0xFFFFFFFFu & ~(1u << 6);
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, &message, sizeof message, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) { int e = errno; close(fd); return -e; }
    int count = 0, done = 0;
    char buffer[32768] __attribute__((aligned(NLMSG_ALIGNTO)));
    while (!done) {
        int length = (int)recv(fd, buffer, sizeof buffer, 0);
        if (length < 0) { if (errno == EINTR) continue; int e = errno; close(fd); return -e; }
        if (length == 0) break;
        for (struct nlmsghdr *header = (struct nlmsghdr *)buffer; NLMSG_OK(header, length); header = NLMSG_NEXT(header, length)) {
            if (header->nlmsg_type == NLMSG_DONE) { done = 1; break; }
            if (header->nlmsg_type == NLMSG_ERROR) {
                int error = -EPROTO;
                if (header->nlmsg_len >= NLMSG_LENGTH(sizeof(struct nlmsgerr))) error = ((struct nlmsgerr *)NLMSG_DATA(header))->error;
                close(fd);
                return error < 0 ? error : -EPROTO;
            }
            if (count >= max || header->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) continue;
            struct inet_diag_msg *diag = NLMSG_DATA(header);
            tether_socket *out = &sockets[count++];
            memset(out, 0, sizeof *out);
            out->family = diag->idiag_family;
            out->protocol = (uint8_t)protocol;
            out->state = diag->idiag_state;
            memcpy(out->local, diag->id.idiag_src, family == AF_INET ? 4 : 16);
            memcpy(out->remote, diag->id.idiag_dst, family == AF_INET ? 4 : 16);
            out->local_port = ntohs(diag->id.idiag_sport);
            out->remote_port = ntohs(diag->id.idiag_dport);
            out->uid = diag->idiag_uid;
            out->inode = diag->idiag_inode;
        }
    }
    close(fd);
    return count;
}

int tether_kill_if_running(int pid, uint64_t device, uint64_t inode) {
    // Signalled and not waited for: still there a moment later is no failure here.
    int result = tether_kill_running_file(pid, device, inode, 0);
    return result == -ETIMEDOUT ? 0 : result;
}

int tether_is_remote_filesystem(int fd) {
    struct statfs info;
    if (fstatfs(fd, &info) != 0) return -errno;
    switch ((unsigned long)info.f_type) {
    case 0x65735546: // FUSE
    case 0x6969:     // NFS
    case 0xFF534D42: // CIFS
    case 0xFE534D42: // SMB2
    case 0x517B:     // SMB
    case 0x01021997: // 9p
    case 0x00C36400: // Ceph
    case 0x5346414F: // AFS
    case 0x6B414653: // kAFS
    case 0x47504653: // GPFS
    case 0x0BD00BD0: // Lustre
    case 0x013111A8: // IBRIX
        return 1;
    default:
        return 0;
    }
}

int tether_filesystem_id(int fd, uint32_t id[2]) {
    struct statfs info;
    if (fstatfs(fd, &info) < 0) return -errno;
    memcpy(id, &info.f_fsid, 2 * sizeof(uint32_t));
    return 0;
}

#ifndef FAN_MARK_DONTFOLLOW
#define FAN_MARK_DONTFOLLOW 0x00000004
#endif

int tether_exec_guard_open(void) {
    int fd = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int tether_exec_guard_mark(int fd, const char *path, int children_of_directory) {
    unsigned int flags = FAN_MARK_ADD | FAN_MARK_DONTFOLLOW | (children_of_directory ? 0 : FAN_MARK_FILESYSTEM);
    uint64_t mask = FAN_OPEN_EXEC_PERM | (children_of_directory ? FAN_EVENT_ON_CHILD : 0);
    return fanotify_mark(fd, flags, mask, AT_FDCWD, path) < 0 ? -errno : 0;
}

int tether_exec_guard_answer(int fd, int32_t request_fd, int allow) {
    struct fanotify_response response = { .fd = request_fd, .response = allow ? FAN_ALLOW : FAN_DENY };
    ssize_t written;
    do {
        written = write(fd, &response, sizeof response);
    } while (written < 0 && errno == EINTR);
    int e = errno;
    close(request_fd);
    return written == (ssize_t)sizeof response ? 0 : -e;
}

int tether_exec_guard_read(int fd, int mounts_fd, int timeout_ms, tether_exec_request *requests, int max, int *mounts_changed) {
    // Either descriptor may be -1 (poll skips it): the guard waits for requests, the mount
    // watcher for the mount table.
    struct pollfd waiting[2] = { { .fd = fd, .events = POLLIN }, { .fd = mounts_fd, .events = POLLPRI } };
    *mounts_changed = 0;
    int ready = poll(waiting, 2, timeout_ms);
    if (ready < 0) return errno == EINTR ? 0 : -errno;
    if (mounts_fd >= 0 && (waiting[1].revents & (POLLPRI | POLLERR))) *mounts_changed = 1;
    if (!(waiting[0].revents & POLLIN)) return 0;
    // Room for `max` metadata records at most, so no request is read that cannot be kept.
    char buffer[64 * sizeof(struct fanotify_event_metadata)];
    size_t room = (size_t)max * sizeof(struct fanotify_event_metadata);
    if (room > sizeof buffer) room = sizeof buffer;
    ssize_t length = read(fd, buffer, room);
    if (length < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -errno;
    int count = 0;
    struct fanotify_event_metadata *event = (struct fanotify_event_metadata *)buffer;
    while (FAN_EVENT_OK(event, length)) {
        if (event->fd >= 0) {
            if (event->vers == FANOTIFY_METADATA_VERSION && (event->mask & FAN_OPEN_EXEC_PERM) && count < max) {
                requests[count].fd = event->fd;
                requests[count].pid = event->pid;
                count++;
            } else {
                tether_exec_guard_answer(fd, event->fd, 1);
            }
        }
        event = FAN_EVENT_NEXT(event, length);
    }
    return count;
}

uint64_t tether_process_start_ticks(int pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buffer[1024];
    ssize_t length = read(fd, buffer, sizeof buffer - 1);
    close(fd);
    if (length <= 0) return 0;
    buffer[length] = '\0';
    // The command name may hold spaces and parentheses: fields count from its last ')'.
    char *field = strrchr(buffer, ')');
    if (field == NULL) return 0;
    for (int index = 2; index < 22; index++) {
        field = strchr(field + 1, ' ');
        if (field == NULL) return 0;
    }
    return strtoull(field + 1, NULL, 10);
}

int tether_kill_started(int pid, uint64_t start_ticks, int wait_ms) {
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) return -errno;
    // The pidfd pins this process: if the pid was reused before it was opened, /proc now
    // describes the new process and its start differs.
    if (tether_process_start_ticks(pid) != start_ticks) { close(pidfd); return -ESTALE; }
    if (syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) < 0) { int e = errno; close(pidfd); return -e; }
    struct pollfd ended = { .fd = pidfd, .events = POLLIN };
    int ready = poll(&ended, 1, wait_ms);
    close(pidfd);
    return ready == 1 ? 0 : -ETIMEDOUT;
}

int tether_exec_guard_ignore(int fd, int32_t request_fd) {
    return fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK, FAN_OPEN_EXEC_PERM, request_fd, NULL) < 0 ? -errno : 0;
}

int tether_exec_guard_forget_ignored(int fd) {
    return fanotify_mark(fd, FAN_MARK_FLUSH, 0, AT_FDCWD, NULL) < 0 ? -errno : 0;
}

int tether_pidfd_open(int pid) {
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    return pidfd < 0 ? -errno : pidfd;
}

int tether_pidfd_kill(int pidfd) {
    return syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) < 0 ? -errno : 0;
}

int tether_kill_running_file(int pid, uint64_t device, uint64_t inode, int wait_ms) {
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) return -errno;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    struct stat info;
    if (stat(path, &info) < 0) { int e = errno; close(pidfd); return -e; }
    if ((uint64_t)info.st_dev != device || (uint64_t)info.st_ino != inode) { close(pidfd); return -ESTALE; }
    if (syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) < 0) { int e = errno; close(pidfd); return -e; }
    struct pollfd ended = { .fd = pidfd, .events = POLLIN };
    int ready = poll(&ended, 1, wait_ms);
    close(pidfd);
    return ready == 1 ? 0 : -ETIMEDOUT;
}

int tether_open_folder_without_links(const char *path) {
    struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC, .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
    return fd < 0 ? -errno : fd;
}

int tether_is_kernel_view(int fd) {
    struct statfs info;
    if (fstatfs(fd, &info) != 0) return 0;
    return info.f_type == 0x9fa0 /* PROC_SUPER_MAGIC */ || info.f_type == 0x62656572 /* SYSFS_MAGIC */;
}
