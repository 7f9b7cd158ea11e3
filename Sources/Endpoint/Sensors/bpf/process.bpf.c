// SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0
// The process sensor in the kernel: a record for each program a process runs (its path, the
// command line, who runs it, the file's identity) and for each process that ends, put in a
// ring buffer as it happens; records lost to a full buffer are counted here, per CPU.
// Compiled by the build for the bpf target (Plugins/BPFPrograms) and loaded with libbpf;
// docs/architecture.md, "Sensors".
#include "common.bpf.h"

static __always_inline void read_change_time(struct inode *inode, struct tether_bpf_exec *event) {
    if (bpf_core_field_exists(struct inode___6_11, i_ctime_sec)) {
        struct inode___6_11 *current = (void *)inode;
        event->ctime_sec = BPF_CORE_READ(current, i_ctime_sec);
        // Multigrain timestamps (6.13 on) keep a flag in the top bit (I_CTIME_QUERIED).
        event->ctime_nsec = BPF_CORE_READ(current, i_ctime_nsec) & ~(1u << 31);
    } else if (bpf_core_field_exists(struct inode___6_6, __i_ctime)) {
        struct inode___6_6 *middle = (void *)inode;
        event->ctime_sec = BPF_CORE_READ(middle, __i_ctime.tv_sec);
        event->ctime_nsec = BPF_CORE_READ(middle, __i_ctime.tv_nsec);
    } else {
        struct inode___until_6_5 *old = (void *)inode;
        event->ctime_sec = BPF_CORE_READ(old, i_ctime.tv_sec);
        event->ctime_nsec = BPF_CORE_READ(old, i_ctime.tv_nsec);
    }
}

/// The file's path as names from the file up to the root, across mounts (as d_path walks it,
/// which tracing programs may not call): `names[0]` is the file's own name; a slot left empty
/// marks where the walk went from a mounted file system's root to where it is mounted. The
/// loop is unrolled, each step with its own slot, so the verifier's paths stay few.
static __always_inline void walk_path(struct file *file, struct tether_bpf_exec *event) {
    struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
    struct vfsmount *vfsmount = BPF_CORE_READ(file, f_path.mnt);
    struct mount *mount = (void *)vfsmount - bpf_core_field_offset(struct mount, mnt);
    event->depth = TETHER_BPF_DEPTH;
    event->flags |= TETHER_BPF_PATH_INCOMPLETE;
#pragma unroll
    for (int step = 0; step < TETHER_BPF_DEPTH; step++) {
        struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
        struct dentry *root = BPF_CORE_READ(mount, mnt.mnt_root);
        if (dentry == root) {
            struct mount *up = BPF_CORE_READ(mount, mnt_parent);
            if (up == mount) {
                event->depth = step;
                event->flags &= ~TETHER_BPF_PATH_INCOMPLETE;
                return;
            }
            // The root of a mounted file system: go on from where it is mounted.
            event->names[step][0] = 0;
            dentry = BPF_CORE_READ(mount, mnt_mountpoint);
            mount = up;
            continue;
        }
        const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
        long length = bpf_probe_read_kernel_str(event->names[step], TETHER_BPF_NAME, name);
        // A name that fills the slot may have been cut.
        if (length <= 1 || length >= TETHER_BPF_NAME) {
            event->depth = step;
            return;
        }
        if (dentry == parent) {
            // Its own parent yet no mount's root: a file of no mounted tree (a memfd, say).
            event->depth = step + 1;
            return;
        }
        dentry = parent;
    }
}

SEC("tp_btf/sched_process_exec")
int tether_process_exec(__u64 *context) {
    struct task_struct *task = (void *)context[0];
    struct linux_binprm *binary = (void *)context[2];
    struct tether_bpf_exec *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
    if (!event) {
        count_drop();
        return 0;
    }
    event->kind = TETHER_BPF_EXEC;
    event->flags = 0;
    event->reserved = 0;
    event->pid = BPF_CORE_READ(task, tgid);
    event->ppid = BPF_CORE_READ(task, real_parent, tgid);
    event->uid = BPF_CORE_READ(task, cred, euid.val);
    event->gid = BPF_CORE_READ(task, cred, egid.val);
    // The process's start: its thread-group leader's (each thread has its own).
    event->start_boottime_ns = BPF_CORE_READ(task, group_leader, start_boottime);
    event->time_ns = bpf_ktime_get_ns();
    event->cgroup_id = bpf_get_current_cgroup_id();
    struct file *file = BPF_CORE_READ(binary, file);
    struct inode *inode = BPF_CORE_READ(file, f_inode);
    event->device = BPF_CORE_READ(inode, i_sb, s_dev);
    event->inode = BPF_CORE_READ(inode, i_ino);
    if (BPF_CORE_READ(inode, __i_nlink) == 0) event->flags |= TETHER_BPF_FILE_DELETED;
    read_change_time(inode, event);
    const char *filename = BPF_CORE_READ(binary, filename);
    if (bpf_probe_read_kernel_str(event->filename, sizeof(event->filename), filename) < 0) event->filename[0] = 0;
    // The arguments, as the new program's stack holds them (each ending with NUL).
    struct mm_struct *mm = BPF_CORE_READ(task, mm);
    unsigned long start = BPF_CORE_READ(mm, arg_start);
    unsigned long length = BPF_CORE_READ(mm, arg_end) - start;
    if (length > TETHER_BPF_ARGS) {
        length = TETHER_BPF_ARGS;
        event->flags |= TETHER_BPF_ARGS_TRUNCATED;
    }
    event->args_length = bpf_probe_read_user(event->args, length, (void *)start) == 0 ? length : 0;
    walk_path(file, event);
    bpf_ringbuf_submit(event, 0);
    return 0;
}

SEC("tp_btf/sched_process_exit")
int tether_process_exit(__u64 *context) {
    struct task_struct *task = (void *)context[0];
    // Every thread exits through here: the process has ended when its last one has.
    if (BPF_CORE_READ(task, signal, live.counter) != 0) return 0;
    struct tether_bpf_exit *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
    if (!event) {
        count_drop();
        return 0;
    }
    event->kind = TETHER_BPF_EXIT;
    event->pid = BPF_CORE_READ(task, tgid);
    event->exit_code = BPF_CORE_READ(task, exit_code);
    event->reserved = 0;
    // The last thread to exit need not be the leader: the process's start is the leader's.
    event->start_boottime_ns = BPF_CORE_READ(task, group_leader, start_boottime);
    event->time_ns = bpf_ktime_get_ns();
    bpf_ringbuf_submit(event, 0);
    return 0;
}
