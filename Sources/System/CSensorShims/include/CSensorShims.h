#ifndef TETHER_SENSOR_SHIMS_H
#define TETHER_SENSOR_SHIMS_H
#include <stdint.h>
#include <stddef.h>

// The kernel interfaces the sensors read (docs/architecture.md, "Sensors"), with the parsing of
// their binary records kept here, in C, where the kernel's headers describe them.

/// One process-connector record: `what` is 1 for exec, 2 for exit, 3 for the fork of a new
/// process (`parent` is its parent's tgid; threads are skipped); others are skipped.
/// `timestamp_ns` is CLOCK_MONOTONIC when the kernel sent it.
typedef struct {
    uint32_t what;
    int32_t pid;
    int32_t tgid;
    int32_t exit_code;
    int32_t parent;
    uint64_t timestamp_ns;
} tether_proc_event;

enum { TETHER_PROC_EXEC = 1, TETHER_PROC_EXIT = 2, TETHER_PROC_FORK = 3 };

#include "tether_bpf_events.h"

/// BPF programs loaded and attached with libbpf (loaded on first use), and the ring buffer
/// they write to. Freed by tether_bpf_probe_close, which detaches the programs.
typedef struct tether_bpf_probe tether_bpf_probe;

/// Loads the BPF object `object` (an ELF file's bytes), attaches every program in it and opens
/// its ring buffer map `ring_name` and its per-CPU drop counter `drops_name`. NULL, with why in
/// `error`, when libbpf, the kernel's BTF or the privilege is missing or the kernel refuses.
tether_bpf_probe *tether_bpf_probe_open(const void *object, size_t length, const char *ring_name, const char *drops_name,
                                        char *error, size_t error_size);

/// Waits up to `timeout_ms` for records and takes all there are: they are returned back to back,
/// each as a 64-bit length then the record, padded to 8 bytes; `*length` is the total. The
/// memory is the probe's, valid until the next poll. `*result` is 0, or -errno.
const void *tether_bpf_probe_poll(tether_bpf_probe *probe, int timeout_ms, size_t *length, int *result);

/// What was left out when the probe opened (a cgroup program with no cgroup v2 hierarchy to
/// attach to, and why), or NULL. The other programs run.
const char *tether_bpf_probe_note(tether_bpf_probe *probe);

/// Writes `value` under `key` in the probe's map `map_name` (sizes as the map declares them).
/// Returns 0, or -errno.
int tether_bpf_probe_update(tether_bpf_probe *probe, const char *map_name, const void *key, const void *value);

/// Records the programs had no room for in the ring buffer (counted in the kernel, every CPU).
uint64_t tether_bpf_probe_drops(tether_bpf_probe *probe);

void tether_bpf_probe_close(tether_bpf_probe *probe);

/// Opens the netlink process connector and subscribes to it. Returns the descriptor, or -errno
/// (EPERM without CAP_NET_ADMIN; EPROTONOSUPPORT where the kernel lacks it).
int tether_proc_connector_open(void);

/// Waits up to `timeout_ms` for records, then takes every one queued (at most `max`). Returns how
/// many were written to `events`, 0 on timeout, or -errno. Adds to `*overflows` each time the
/// kernel said it dropped records because the socket's buffer was full.
int tether_proc_connector_read(int fd, int timeout_ms, tether_proc_event *events, int max, int *overflows);

/// One fanotify record with the directory's file handle and the entry's name.
typedef struct {
    uint64_t mask;
    int32_t pid;
    uint32_t handle_bytes;
    int32_t handle_type;
    uint32_t fsid[2];
    unsigned char handle[128];
    char name[256];
} tether_file_event;

enum {
    TETHER_FILE_MODIFY = 0x02,
    TETHER_FILE_CLOSE_WRITE = 0x08,
    TETHER_FILE_MOVED_FROM = 0x40,
    TETHER_FILE_MOVED_TO = 0x80,
    TETHER_FILE_CREATE = 0x100,
    TETHER_FILE_DELETE = 0x200,
    TETHER_FILE_ONDIR = 0x40000000,
    TETHER_FILE_OVERFLOW = 0x4000,
};

/// fanotify_init in notification mode reporting directory handles and names (Linux 5.9). Returns
/// the descriptor or -errno (EPERM without CAP_SYS_ADMIN).
int tether_fanotify_open(void);

/// Marks the whole file system holding `path` for writes closed, creations, deletions and renames.
/// Returns 0 or -errno.
int tether_fanotify_mark_filesystem(int fd, const char *path);

/// Marks the folder `folder_fd` is open on for each write to its files as it happens
/// (FAN_MODIFY: writes, truncations), beside the file system's mark, which sees a write only
/// when its file is closed. Returns 0 or -errno.
int tether_fanotify_mark_folder_writes(int fd, int folder_fd);

/// Waits up to `timeout_ms`, then reads what is queued, 8 KiB at a time, while `events` has room
/// for a whole read (`max` should be a few thousand). Returns how many records were written to
/// `events`, 0 on timeout, or -errno.
int tether_fanotify_read(int fd, int timeout_ms, tether_file_event *events, int max);

/// Opens the directory an event names (O_PATH) through a descriptor on the same file system.
/// Returns the descriptor or -errno.
int tether_open_by_handle(int mount_fd, const tether_file_event *event);

/// One socket as the kernel's sock_diag interface describes it: addresses in network order
/// (IPv4 in the first 4 bytes), ports in host order.
typedef struct {
    uint8_t family;
    uint8_t protocol;
    uint8_t state;
    uint8_t local[16];
    uint8_t remote[16];
    uint16_t local_port;
    uint16_t remote_port;
    uint32_t uid;
    uint64_t inode;
} tether_socket;

/// Lists the sockets of one family (AF_INET, AF_INET6) and protocol (IPPROTO_TCP, IPPROTO_UDP)
/// in this network namespace through NETLINK_SOCK_DIAG, except TCP's TIME_WAIT (no owner left).
/// Returns how many were written to `sockets` (at most `max`; more exist when it returns `max`),
/// or -errno.
int tether_sock_diag(int family, int protocol, tether_socket *sockets, int max);

/// SIGKILL to `pid` through a pidfd, after `still_same` confirms (on the pidfd's process) that it
/// still runs the file with this device and inode: a pid reused or re-executed meanwhile is not
/// signalled. Returns 0, or -errno (-ESTALE when the file differs).
int tether_kill_if_running(int pid, uint64_t device, uint64_t inode);

/// The file system id (statfs's f_fsid) of the file system holding `fd`, as fanotify reports it.
/// Returns 0 or -errno.
int tether_filesystem_id(int fd, uint32_t id[2]);

/// open(2)'s O_PATH (a handle that reads nothing), which Swift's Glibc module does not export.
enum { TETHER_O_PATH = 010000000 };

/// fstatat(2)'s AT_NO_AUTOMOUNT (do not mount what an automount point names), which Swift's Glibc
/// module does not export.
enum { TETHER_AT_NO_AUTOMOUNT = 0x800 };

/// 1 when `fd` lies on a file system whose reads may wait on another machine or a user's
/// daemon (FUSE, NFS, SMB, 9p, Ceph, AFS…), 0 when not, -errno when fstatfs fails.
int tether_is_remote_filesystem(int fd);

/// SIGKILL to `pid` through a pidfd, after confirming on it that the process started at
/// `start_ticks` (clock ticks after boot, /proc/PID/stat field 22): a pid reused meanwhile is
/// never signalled. Then waits up to `wait_ms` for it to end. Returns 0 (ended), -ETIMEDOUT
/// (signalled, still there), -ESTALE (another process has that pid), or -errno.
int tether_kill_started(int pid, uint64_t start_ticks, int wait_ms);

/// SIGKILL to `pid` through a pidfd opened first, after confirming on it that the process
/// still runs the file with this device and inode; then waits up to `wait_ms` for it to end.
/// Returns 0 (ended), -ETIMEDOUT (signalled, still there), -ESTALE (it runs another file now),
/// or -errno.
int tether_kill_running_file(int pid, uint64_t device, uint64_t inode, int wait_ms);

/// Opens the folder `path` (O_PATH) without following a symbolic link anywhere on the way
/// (openat2 with RESOLVE_NO_SYMLINKS and RESOLVE_NO_MAGICLINKS, Linux 5.6): the folder
/// opened is the one the path names, never one a link points to. Returns the descriptor or -errno.
int tether_open_folder_without_links(const char *path);

/// 1 when `fd` is on procfs or sysfs (the kernel's own views), 0 otherwise or on error.
int tether_is_kernel_view(int fd);

/// The start of `pid` in clock ticks after boot (/proc/PID/stat field 22), or 0.
uint64_t tether_process_start_ticks(int pid);

// Execution prevention before a program runs: fanotify permission events (FAN_OPEN_EXEC_PERM).

/// fanotify_init for permission decisions on executions (FAN_CLASS_CONTENT), non-blocking;
/// the event's descriptor opens the file read-only. Returns the descriptor or -errno (EPERM
/// without CAP_SYS_ADMIN; EINVAL where the kernel has no permission events).
int tether_exec_guard_open(void);

/// Asks for a permission event whenever a file is opened to be executed (execve, and the
/// interpreter's script on a #! line) on the whole file system holding `path`; with
/// `children_of_directory`, only for the files directly in the directory `path`.
/// Returns 0 or -errno.
int tether_exec_guard_mark(int fd, const char *path, int children_of_directory);

/// One execution waiting for an answer: the file's descriptor (the reader must answer and
/// close it) and the pid of the process executing it.
typedef struct {
    int32_t fd;
    int32_t pid;
} tether_exec_request;

/// Waits up to `timeout_ms` for requests, or for a change of the mount table when `mounts_fd`
/// (an open /proc/self/mountinfo, or -1) says so (`*mounts_changed` set to 1), then reads the
/// queued requests (at most `max`). Returns how many were written, 0 on timeout, or -errno (a
/// request whose file the kernel could not open: it denied that one; the reader goes on).
/// Requests that are not executions are allowed here.
int tether_exec_guard_read(int fd, int mounts_fd, int timeout_ms, tether_exec_request *requests, int max, int *mounts_changed);

/// pidfd_open(pid): a descriptor that names this process for good, or -errno.
int tether_pidfd_open(int pid);

/// SIGKILL through a pidfd. Returns 0 or -errno (ESRCH: it had ended).
int tether_pidfd_kill(int pidfd);

/// Answers one request (allow or deny) and closes its descriptor. Returns 0 or -errno.
int tether_exec_guard_answer(int fd, int32_t request_fd, int allow);

/// Asks the kernel not to ask again about the file `request_fd` opens, until it is modified
/// (an ignore mark that does not survive a modification). Returns 0 or -errno.
int tether_exec_guard_ignore(int fd, int32_t request_fd);

/// Removes every file's ignore mark (and every inode mark: a directory's watch with it, which
/// the caller marks again). Returns 0 or -errno.
int tether_exec_guard_forget_ignored(int fd);
#endif
