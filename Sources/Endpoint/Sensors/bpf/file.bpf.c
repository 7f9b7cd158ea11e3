// SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0
// The file sensor's writes in the kernel: a record when a process changes a regular file under
// a watched folder (its first write since it was opened, an open with O_TRUNC, or a shared
// writable mapping), filtered here, so that writes elsewhere never reach user space.
// It runs at the end of every system call (tp_btf/sys_exit: the kernels this runs on refuse
// fentry and LSM programs, and d_path with them) and returns at once for all but the opens and
// writes of x86-64. Which folders are watched is the `folders` map user space fills: a file is
// in scope when the nearest of them above it is included. Creations, deletions and renames are
// fanotify's (they name an entry, which needs no path walk). Compiled by the build
// (Plugins/BPFPrograms); docs/architecture.md, "Sensors".
#define TETHER_RING_BYTES (1 << 20)
#include "common.bpf.h"

enum {
    NR_WRITE = 1, NR_OPEN = 2, NR_MMAP = 9, NR_PWRITE64 = 18, NR_WRITEV = 20, NR_SENDFILE = 40, NR_FTRUNCATE = 77, NR_CREAT = 85,
    NR_OPENAT = 257, NR_SPLICE = 275, NR_FALLOCATE = 285, NR_PWRITEV = 296, NR_OPEN_BY_HANDLE_AT = 304, NR_COPY_FILE_RANGE = 326,
    NR_PWRITEV2 = 328, NR_OPENAT2 = 437,
};
enum { O_TRUNC = 01000, FMODE_WRITE = 0x2, S_IFMT = 0170000, S_IFREG = 0100000, PROT_WRITE = 0x2, MAP_SHARED = 0x1, MAP_SHARED_VALIDATE = 0x3 };

/// The watched folders and those left out of them, by inode number (tether_bpf_events.h).
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, __u64);
    __type(value, struct tether_bpf_folder);
} folders SEC(".maps");

/// Files in scope opened for writing and not yet written, by their `struct file`, with the
/// inode they were opened on (a freed file's memory reused for another is not taken for it).
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u64);
    __type(value, __u64);
} unwritten SEC(".maps");

/// The current process's open file `fd`, or NULL. It runs for every write on the machine: the
/// task's fields are loaded directly (typed pointers, no helper call), only the slot of the
/// descriptor table (a variable offset) through bpf_probe_read_kernel.
static __always_inline struct file *file_of(long fd) {
    if (fd < 0) return NULL;
    struct task_struct *task = bpf_get_current_task_btf();
    struct files_struct *files = task->files;
    if (!files) return NULL;
    struct fdtable *table = files->fdt;
    if (!table || (unsigned long)fd >= table->max_fds) return NULL;
    struct file **descriptors = table->fd;
    struct file *file = NULL;
    bpf_probe_read_kernel(&file, sizeof(file), &descriptors[fd]);
    return file;
}

/// Whether the nearest folder of `folders` above `file` (across mounts) is an included one. A
/// walk that does not end within TETHER_BPF_PATH_DEPTH steps counts as in scope: user space,
/// which checks every path again, decides.
static __always_inline bool in_scope(struct file *file) {
    struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
    struct mount *mount = (void *)BPF_CORE_READ(file, f_path.mnt) - bpf_core_field_offset(struct mount, mnt);
    for (int step = 0; step < TETHER_BPF_PATH_DEPTH; step++) {
        struct inode *inode = BPF_CORE_READ(dentry, d_inode);
        __u64 number = BPF_CORE_READ(inode, i_ino);
        struct tether_bpf_folder *folder = bpf_map_lookup_elem(&folders, &number);
        if (folder && (folder->device == 0 || folder->device == BPF_CORE_READ(inode, i_sb, s_dev))) return folder->scope == TETHER_BPF_INCLUDED;
        if (dentry == BPF_CORE_READ(mount, mnt.mnt_root)) {
            struct mount *up = BPF_CORE_READ(mount, mnt_parent);
            if (up == mount) return false;
            dentry = BPF_CORE_READ(mount, mnt_mountpoint);
            mount = up;
            continue;
        }
        struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
        if (parent == dentry) return false;
        dentry = parent;
    }
    return true;
}

static __always_inline bool is_regular(struct file *file) {
    return (BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) == S_IFREG;
}

/// A record being made, and room to build its path backwards (names from the file up), per CPU:
/// a whole path does not fit on the BPF stack.
struct scratch {
    struct tether_bpf_file_change change;
    /// Where the path built so far starts in `built`: kept here, not in a register, so that the
    /// verifier sees one state per step of the walk, not one per length.
    long start;
    char built[TETHER_BPF_PATH + 256];
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct scratch);
} scratches SEC(".maps");

/// The file's absolute path (as d_path makes it, across mounts, which tracing programs may not
/// call), built backwards in `built`: returns where it starts there, or -1 when the walk did
/// not reach the root within TETHER_BPF_PATH_DEPTH names and TETHER_BPF_PATH bytes, or the file
/// is in no mounted tree.
static __always_inline long build_path(struct file *file, struct scratch *scratch) {
    struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
    struct mount *mount = (void *)BPF_CORE_READ(file, f_path.mnt) - bpf_core_field_offset(struct mount, mnt);
    scratch->start = TETHER_BPF_PATH;
    for (int step = 0; step < TETHER_BPF_PATH_DEPTH; step++) {
        struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
        if (dentry == BPF_CORE_READ(mount, mnt.mnt_root)) {
            struct mount *up = BPF_CORE_READ(mount, mnt_parent);
            if (up == mount) return scratch->start;
            // The root of a mounted file system: go on from where it is mounted.
            dentry = BPF_CORE_READ(mount, mnt_mountpoint);
            mount = up;
            continue;
        }
        if (dentry == parent) return -1;
        long length = BPF_CORE_READ(dentry, d_name.hash_len) >> 32;
        long start = scratch->start;
        if (length == 0 || length > 255 || start < length + 1 || start > TETHER_BPF_PATH) return -1;
        start -= length;
        if (bpf_probe_read_kernel(scratch->built + (start & (TETHER_BPF_PATH - 1)), length & 255, BPF_CORE_READ(dentry, d_name.name)) != 0) return -1;
        start -= 1;
        scratch->built[start & (TETHER_BPF_PATH - 1)] = '/';
        scratch->start = start;
        dentry = parent;
    }
    return -1;
}

/// Puts a record of `action` on the file in the ring (a function of its own: verified once).
__noinline int emit(__u64 file_address, long fd, __u32 action) {
    struct file *file = (void *)file_address;
    __u32 zero = 0;
    struct scratch *scratch = bpf_map_lookup_elem(&scratches, &zero);
    if (!scratch) return 0;
    struct tether_bpf_file_change *event = &scratch->change;
    struct owner owner = current_owner();
    struct task_struct *task = (void *)bpf_get_current_task();
    struct inode *inode = BPF_CORE_READ(file, f_inode);
    event->kind = TETHER_BPF_FILE;
    event->action = action;
    event->pid = owner.pid;
    event->uid = owner.uid;
    event->flags = 0;
    event->path_length = 0;
    event->fd = fd;
    event->reserved = 0;
    event->start_boottime_ns = BPF_CORE_READ(task, group_leader, start_boottime);
    event->time_ns = bpf_ktime_get_ns();
    event->device = BPF_CORE_READ(inode, i_sb, s_dev);
    event->inode = BPF_CORE_READ(inode, i_ino);
    long start = build_path(file, scratch);
    if (start < 0) {
        event->flags |= TETHER_BPF_PATH_INCOMPLETE;
    } else if (start == TETHER_BPF_PATH) {
        event->path[0] = '/';
        event->path_length = 1;
    } else {
        __u32 length = TETHER_BPF_PATH - start;
        bpf_probe_read_kernel(event->path, length & (TETHER_BPF_PATH - 1), scratch->built + (start & (TETHER_BPF_PATH - 1)));
        event->path_length = length & (TETHER_BPF_PATH - 1);
    }
    __u64 size = __builtin_offsetof(struct tether_bpf_file_change, path) + event->path_length;
    // Bounded for the verifier by a power of two above the largest record (the scratch is larger).
    if (bpf_ringbuf_output(&events, event, size & 8191, 0) != 0) count_drop();
    return 0;
}

/// A file opened: with O_TRUNC a change now; otherwise, opened for writing, one to report at
/// its first write.
static __always_inline void opened(long fd, __u64 flags) {
    struct file *file = file_of(fd);
    if (!file || !(BPF_CORE_READ(file, f_mode) & FMODE_WRITE) || !is_regular(file) || !in_scope(file)) return;
    if (flags & O_TRUNC) {
        emit((__u64)file, fd, TETHER_BPF_TRUNCATED);
        return;
    }
    __u64 key = (__u64)file;
    __u64 inode = (__u64)BPF_CORE_READ(file, f_inode);
    bpf_map_update_elem(&unwritten, &key, &inode, BPF_ANY);
}

/// A write to `fd`: reported when it is the first to a file in scope since it was opened.
static __always_inline void written(long fd, __u32 action) {
    struct file *file = file_of(fd);
    if (!file) return;
    __u64 key = (__u64)file;
    __u64 *inode = bpf_map_lookup_elem(&unwritten, &key);
    if (!inode) return;
    bool same = *inode == (__u64)BPF_CORE_READ(file, f_inode);
    bpf_map_delete_elem(&unwritten, &key);
    if (same) emit((__u64)file, fd, action);
}

SEC("tp_btf/sys_exit")
int tether_file_syscall(__u64 *context) {
    struct pt_regs *registers = (void *)context[0];
    long result = (long)context[1];
    if (result < 0) return 0;
    long number = registers->orig_ax;
    // Opens: the descriptor is the result; writes: an argument. One call of each below, so
    // that each is verified once.
    __u64 flags = 0;
    long written_fd = -1;
    __u32 action = TETHER_BPF_WRITTEN;
    switch (number) {
    case NR_OPEN:
        flags = BPF_CORE_READ(registers, si);
        break;
    case NR_OPENAT:
    case NR_OPEN_BY_HANDLE_AT:
        flags = BPF_CORE_READ(registers, dx);
        break;
    case NR_CREAT:
        flags = O_TRUNC;
        break;
    case NR_OPENAT2:
        // struct open_how, in the caller's memory: its flags come first.
        bpf_probe_read_user(&flags, sizeof(flags), (void *)BPF_CORE_READ(registers, dx));
        break;
    case NR_WRITE:
    case NR_PWRITE64:
    case NR_WRITEV:
    case NR_PWRITEV:
    case NR_PWRITEV2:
    case NR_SENDFILE:
        if (result == 0) return 0;
        written_fd = BPF_CORE_READ(registers, di);
        break;
    case NR_FTRUNCATE:
    case NR_FALLOCATE:
        written_fd = BPF_CORE_READ(registers, di);
        break;
    case NR_SPLICE:
    case NR_COPY_FILE_RANGE:
        // The file written to is the third argument.
        if (result == 0) return 0;
        written_fd = BPF_CORE_READ(registers, dx);
        break;
    case NR_MMAP: {
        unsigned long protection = BPF_CORE_READ(registers, dx), sharing = BPF_CORE_READ(registers, r10) & 0x3;
        if (!(protection & PROT_WRITE) || (sharing != MAP_SHARED && sharing != MAP_SHARED_VALIDATE)) return 0;
        written_fd = BPF_CORE_READ(registers, r8);
        if (written_fd < 0) return 0;
        action = TETHER_BPF_MAPPED;
        break;
    }
    default:
        return 0;
    }
    if (written_fd >= 0) {
        written(written_fd, action);
    } else {
        opened(result, flags);
    }
    return 0;
}
