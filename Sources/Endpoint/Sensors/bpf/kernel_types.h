// The kernel's types, as far as Tether's BPF programs read them. CO-RE (compile once, run
// everywhere): every access is recorded as a relocation that libbpf resolves against the
// running kernel's BTF (/sys/kernel/btf/vmlinux) when the program loads, so field offsets
// come from the kernel, not from these declarations; only names and types must match.
#ifndef TETHER_KERNEL_TYPES_H
#define TETHER_KERNEL_TYPES_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef __u64 u64;
typedef __u32 u32;
typedef __s64 time64_t;
typedef int pid_t;
typedef unsigned int uid_t;
typedef unsigned int gid_t;
typedef unsigned int dev_t;
typedef _Bool bool;

enum bpf_map_type {
    BPF_MAP_TYPE_PERCPU_ARRAY = 6,
    BPF_MAP_TYPE_LRU_HASH = 9,
    BPF_MAP_TYPE_RINGBUF = 27,
};

/// bpf_map_update_elem's flags.
enum { BPF_ANY = 0, BPF_NOEXIST = 1 };

/// The context of cgroup socket-address programs (connect, sendmsg): the kernel's stable
/// interface (linux/bpf.h), read at fixed offsets the verifier rewrites, so not relocated.
struct bpf_sock {
    __u32 bound_dev_if;
    __u32 family;
    __u32 type;
    __u32 protocol;
    __u32 mark;
    __u32 priority;
    __u32 src_ip4;
    __u32 src_ip6[4];
    __u32 src_port;
    __be16 dst_port;
    __u16 :16;
    __u32 dst_ip4;
    __u32 dst_ip6[4];
    __u32 state;
    __s32 rx_queue_mapping;
};

struct bpf_sock_addr {
    __u32 user_family;
    __u32 user_ip4;
    __u32 user_ip6[4];
    __u32 user_port;
    __u32 family;
    __u32 type;
    __u32 protocol;
    __u32 msg_src_ip4;
    __u32 msg_src_ip6[4];
    union {
        struct bpf_sock *sk;
        __u64 :64;
    } __attribute__((aligned(8)));
};

#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)

typedef struct { int counter; } atomic_t;
typedef struct { uid_t val; } kuid_t;
typedef struct { gid_t val; } kgid_t;

struct timespec64 { time64_t tv_sec; long tv_nsec; };

struct qstr { const unsigned char *name; };

struct dentry {
    struct dentry *d_parent;
    struct qstr d_name;
};

struct super_block { dev_t s_dev; };

struct inode {
    unsigned long i_ino;
    struct super_block *i_sb;
    unsigned int __i_nlink;
};
/// The change time moved: `i_ctime` (until 6.5), `__i_ctime` (6.6 to 6.10), seconds and
/// nanoseconds apart (6.11 on). Each flavour is read only where the kernel has it.
struct inode___until_6_5 { struct timespec64 i_ctime; };
struct inode___6_6 { struct timespec64 __i_ctime; };
struct inode___6_11 { time64_t i_ctime_sec; u32 i_ctime_nsec; };

struct vfsmount { struct dentry *mnt_root; };
struct mount {
    struct mount *mnt_parent;
    struct dentry *mnt_mountpoint;
    struct vfsmount mnt;
};

struct path {
    struct vfsmount *mnt;
    struct dentry *dentry;
};

struct file {
    struct path f_path;
    struct inode *f_inode;
};

struct linux_binprm {
    struct file *file;
    const char *filename;
};

struct mm_struct {
    unsigned long arg_start;
    unsigned long arg_end;
};

struct cred {
    kuid_t euid;
    kgid_t egid;
};

struct signal_struct { atomic_t live; };

struct task_struct {
    pid_t pid;
    pid_t tgid;
    int exit_code;
    u64 start_boottime;
    struct task_struct *real_parent;
    struct task_struct *group_leader;
    struct mm_struct *mm;
    struct cred *cred;
    struct signal_struct *signal;
};

struct in6_addr { __u8 u6_addr8[16]; };
struct ns_common { unsigned int inum; };
struct net { struct ns_common ns; };
typedef struct { struct net *net; } possible_net_t;

/// Anonymous unions in the kernel's declaration are matched by field name.
struct sock_common {
    possible_net_t skc_net;
    __be32 skc_daddr;
    __be32 skc_rcv_saddr;
    __be16 skc_dport;
    __u16 skc_num;
    unsigned short skc_family;
    struct in6_addr skc_v6_daddr;
    struct in6_addr skc_v6_rcv_saddr;
};

/// `sk_protocol` is a bitfield before 5.6: read with BPF_CORE_READ_BITFIELD_PROBED.
struct sock {
    struct sock_common __sk_common;
    __u16 sk_protocol;
};

#pragma clang attribute pop

#endif
