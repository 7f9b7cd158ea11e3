#define _GNU_SOURCE
#include "CSensorShims.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/fanotify.h>
#include <sys/vfs.h>
#include <sys/prctl.h>
#include <linux/netlink.h>
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
    // Anyone may bind; the kernel refuses the subscription itself (without CAP_NET_ADMIN) in its
    // acknowledgement, a PROC_EVENT_NONE record carrying the error. Wait for it (a second at most).
    for (int tries = 0; tries < 20; tries++) {
        int ready = wait_readable(fd, 50);
        if (ready < 0) { close(fd); return ready; }
        if (ready == 0) continue;
        char answer[4096] __attribute__((aligned(NLMSG_ALIGNTO)));
        ssize_t length = recv(fd, answer, sizeof answer, MSG_DONTWAIT);
        if (length < 0) continue;
        for (struct nlmsghdr *reply = (struct nlmsghdr *)answer; NLMSG_OK(reply, (size_t)length); reply = NLMSG_NEXT(reply, length)) {
            struct cn_msg *cn = NLMSG_DATA(reply);
            if (cn->id.idx != CN_IDX_PROC) continue;
            struct proc_event *event = (struct proc_event *)cn->data;
            if (event->what != PROC_EVENT_NONE) continue;
            if (event->event_data.ack.err != 0) { close(fd); return -(int)event->event_data.ack.err; }
            return fd;
        }
    }
    return fd;
}

int tether_proc_connector_read(int fd, int timeout_ms, tether_proc_event *events, int max, int *overflows) {
    int ready = wait_readable(fd, timeout_ms);
    if (ready <= 0) return ready;
    // Each record is a datagram of its own: take every one queued now, without waiting again.
    int count = 0;
    char buffer[8192] __attribute__((aligned(NLMSG_ALIGNTO)));
    while (count < max) {
        ssize_t length = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
        if (length < 0) {
            if (errno == ENOBUFS) { (*overflows)++; continue; }
            if (errno == EAGAIN || errno == EINTR) break;
            return count > 0 ? count : -errno;
        }
        for (struct nlmsghdr *header = (struct nlmsghdr *)buffer; NLMSG_OK(header, (size_t)length) && count < max;
             header = NLMSG_NEXT(header, length)) {
            if (header->nlmsg_type == NLMSG_ERROR || header->nlmsg_type == NLMSG_NOOP) continue;
            struct cn_msg *message = NLMSG_DATA(header);
            if (message->id.idx != CN_IDX_PROC || message->len < sizeof(struct proc_event) - sizeof(((struct proc_event *)0)->event_data)) continue;
            struct proc_event *event = (struct proc_event *)message->data;
            switch (event->what) {
            case PROC_EVENT_FORK:
                if (event->event_data.fork.child_pid != event->event_data.fork.child_tgid) break;  // a thread
                events[count++] = (tether_proc_event){TETHER_PROC_FORK, event->event_data.fork.child_pid, event->event_data.fork.child_tgid, 0,
                                                      event->event_data.fork.parent_tgid, event->timestamp_ns};
                break;
            case PROC_EVENT_EXEC:
                events[count++] = (tether_proc_event){TETHER_PROC_EXEC, event->event_data.exec.process_pid, event->event_data.exec.process_tgid, 0, 0,
                                                      event->timestamp_ns};
                break;
            case PROC_EVENT_EXIT:
                events[count++] = (tether_proc_event){TETHER_PROC_EXIT, event->event_data.exit.process_pid, event->event_data.exit.process_tgid,
                                                      (int32_t)event->event_data.exit.exit_code, 0, event->timestamp_ns};
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

int tether_fanotify_read(int fd, int timeout_ms, tether_file_event *events, int max) {
    int ready = wait_readable(fd, timeout_ms);
    if (ready <= 0) return ready;
    // Read what is queued now, buffer after buffer, while `events` has room for a whole one.
    int count = 0;
    char buffer[8192] __attribute__((aligned(8)));
    while (max - count >= (int)(sizeof buffer / sizeof(struct fanotify_event_metadata))) {
    ssize_t length = read(fd, buffer, sizeof buffer);
    if (length < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        return count > 0 ? count : -errno;
    }
    for (struct fanotify_event_metadata *metadata = (struct fanotify_event_metadata *)buffer;
         FAN_EVENT_OK(metadata, length) && count < max; metadata = FAN_EVENT_NEXT(metadata, length)) {
        if (metadata->vers != FANOTIFY_METADATA_VERSION) return -EPROTO;
        tether_file_event *out = &events[count];
        memset(out, 0, sizeof *out);
        out->mask = metadata->mask;
        out->pid = metadata->pid;
        if (metadata->fd >= 0) close(metadata->fd);
        if (metadata->mask & FAN_Q_OVERFLOW) { count++; continue; }
        char *info = (char *)(metadata + 1), *end = (char *)metadata + metadata->event_len;
        int found = 0;
        while (info + sizeof(struct fanotify_event_info_header) <= end && !found) {
            struct fanotify_event_info_header *header = (struct fanotify_event_info_header *)info;
            if (header->len == 0 || info + header->len > end) break;
            if (header->info_type == FAN_EVENT_INFO_TYPE_DFID_NAME || header->info_type == FAN_EVENT_INFO_TYPE_DFID) {
                struct fanotify_event_info_fid *fid = (struct fanotify_event_info_fid *)info;
                struct file_handle *handle = (struct file_handle *)fid->handle;
                if (handle->handle_bytes > sizeof out->handle) break;
                memcpy(out->fsid, &fid->fsid, sizeof out->fsid);
                out->handle_bytes = handle->handle_bytes;
                out->handle_type = handle->handle_type;
                memcpy(out->handle, handle->f_handle, handle->handle_bytes);
                if (header->info_type == FAN_EVENT_INFO_TYPE_DFID_NAME) {
                    const char *name = (const char *)(handle->f_handle + handle->handle_bytes);
                    size_t room = (size_t)(info + header->len - name);
                    size_t size = strnlen(name, room < sizeof out->name - 1 ? room : sizeof out->name - 1);
                    memcpy(out->name, name, size);
                    out->name[size] = 0;
                }
                found = 1;
            }
            info += header->len;
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
        ssize_t length = recv(fd, buffer, sizeof buffer, 0);
        if (length < 0) { if (errno == EINTR) continue; int e = errno; close(fd); return -e; }
        if (length == 0) break;
        for (struct nlmsghdr *header = (struct nlmsghdr *)buffer; NLMSG_OK(header, (size_t)length); header = NLMSG_NEXT(header, length)) {
            if (header->nlmsg_type == NLMSG_DONE) { done = 1; break; }
            if (header->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *error = NLMSG_DATA(header);
                close(fd);
                return error->error < 0 ? error->error : -EPROTO;
            }
            if (count >= max) continue;
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

void tether_name_thread(const char *name) {
    prctl(PR_SET_NAME, name, 0, 0, 0);
}

int tether_filesystem_id(int fd, uint32_t id[2]) {
    struct statfs info;
    if (fstatfs(fd, &info) < 0) return -errno;
    memcpy(id, &info.f_fsid, 2 * sizeof(uint32_t));
    return 0;
}
