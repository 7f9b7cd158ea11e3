// The records Tether's BPF programs (Sources/Endpoint/Sensors/bpf) put in their ring buffer,
// shared by the programs and the user-space reader (docs/architecture.md, "Sensors").
// Fixed-size types only: the BPF side is compiled for the bpf target, the reader for the host.
#ifndef TETHER_BPF_EVENTS_H
#define TETHER_BPF_EVENTS_H

#ifdef __bpf__
typedef unsigned int tether_u32;
typedef int tether_s32;
typedef unsigned long long tether_u64;
typedef long long tether_s64;
#else
#include <stdint.h>
typedef uint32_t tether_u32;
typedef int32_t tether_s32;
typedef uint64_t tether_u64;
typedef int64_t tether_s64;
#endif

/// Kinds of record.
enum {
    TETHER_BPF_EXEC = 1,
    TETHER_BPF_EXIT = 2,
};

/// Flags of an exec record.
enum {
    /// The command line was longer than `args` holds.
    TETHER_BPF_ARGS_TRUNCATED = 1,
    /// The executable's path could not be walked whole (too deep, a name too long, a dentry
    /// that could not be read, a file of no mounted file system such as a memfd): `filename`
    /// (as the program asked for it) and the names walked are what there is.
    TETHER_BPF_PATH_INCOMPLETE = 2,
    /// The executable had no name left in any folder (deleted, or never linked: a memfd).
    TETHER_BPF_FILE_DELETED = 4,
};

#define TETHER_BPF_FILENAME 256
#define TETHER_BPF_ARGS 1024
/// Path components walked from the executable up to the root, at most this many, each cut at
/// TETHER_BPF_NAME bytes (with its NUL).
#define TETHER_BPF_DEPTH 32
#define TETHER_BPF_NAME 64

/// A process ran a new program (sched_process_exec), as its new image starts.
struct tether_bpf_exec {
    tether_u32 kind;
    tether_u32 pid;          // the thread-group id: the process
    tether_u32 ppid;         // the real parent's process
    tether_u32 uid;          // effective
    tether_u32 gid;          // effective
    tether_u32 flags;
    tether_u64 start_boottime_ns;   // the process's start, on CLOCK_BOOTTIME (as /proc/PID/stat)
    tether_u64 time_ns;      // when it happened, on CLOCK_MONOTONIC
    tether_u64 cgroup_id;
    tether_u64 device;       // the executable's file system (st_dev, the kernel's encoding)
    tether_u64 inode;
    tether_s64 ctime_sec;    // the executable's change time
    tether_u32 ctime_nsec;
    tether_u32 args_length;  // bytes of `args` used: the arguments, each ending with NUL
    tether_u32 depth;        // entries of `names` used, from the file up
    tether_u32 reserved;
    char filename[TETHER_BPF_FILENAME];
    char args[TETHER_BPF_ARGS];
    char names[TETHER_BPF_DEPTH][TETHER_BPF_NAME];
};

/// A process ended: its last thread exited (sched_process_exit with the group dead).
struct tether_bpf_exit {
    tether_u32 kind;
    tether_u32 pid;
    tether_s32 exit_code;    // as wait(2) reports it
    tether_u32 reserved;
    tether_u64 start_boottime_ns;
    tether_u64 time_ns;
};

/// What happened to a TCP connection, or a UDP socket (TETHER_BPF_UDP: opened is a first
/// datagram to a peer, or a connect to it).
enum {
    TETHER_BPF_TCP = 3,
    TETHER_BPF_UDP = 4,
    /// Established (outgoing after SYN_SENT, incoming after SYN_RECV).
    TETHER_BPF_OPENED = 1,
    /// Left ESTABLISHED (the first FIN or a reset): ended for the user.
    TETHER_BPF_CLOSED = 2,
    TETHER_BPF_LISTENING = 3,
    /// A listening socket closed.
    TETHER_BPF_STOPPED_LISTENING = 4,
};

/// The network program's map of listening ports (`listeners`), which user space seeds at start
/// with the listeners that were there before the program: by network namespace (its inode
/// number), family (high 16 bits) and port.
struct tether_bpf_listener_key {
    tether_u32 ns;
    tether_u32 family_port;
};

/// A listener's owner, and its socket's address in the kernel (0 when seeded from user space).
struct tether_bpf_listener {
    tether_u32 pid;
    tether_u32 uid;
    tether_u64 socket;
};

/// A TCP socket changed state (inet_sock_set_state), with who owns it: the process that
/// connected or listened, as the kernel saw it then; 0 when not seen (the socket is older
/// than the programs).
struct tether_bpf_connection {
    tether_u32 kind;
    tether_u32 action;
    tether_u32 pid;
    tether_u32 uid;
    tether_u32 family;       // AF_INET or AF_INET6
    tether_u32 local_port;   // host order
    tether_u32 remote_port;  // host order
    tether_u32 reserved;
    unsigned char local[16]; // network order; IPv4 in the first 4 bytes
    unsigned char remote[16];
    tether_u64 time_ns;      // when it happened, on CLOCK_MONOTONIC
};

#endif
