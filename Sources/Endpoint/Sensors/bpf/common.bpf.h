// What every Tether BPF program shares: its licence, its ring buffer, the per-CPU count of
// records it had no room for (each program is its own object, with its own maps), and who a
// record is about.
#ifndef TETHER_COMMON_BPF_H
#define TETHER_COMMON_BPF_H
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "tether_bpf_events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#ifndef TETHER_RING_BYTES
#define TETHER_RING_BYTES (4 << 20)
#endif

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, TETHER_RING_BYTES);
} events SEC(".maps");

/// Records the ring buffer had no room for.
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} drops SEC(".maps");

static __always_inline void count_drop(void) {
    __u32 zero = 0;
    __u64 *count = bpf_map_lookup_elem(&drops, &zero);
    if (count) *count += 1;
}

/// Who a record is about: the process the kernel runs in now.
struct owner {
    __u32 pid;
    __u32 uid;
};

static __always_inline struct owner current_owner(void) {
    struct owner owner = {
        .pid = bpf_get_current_pid_tgid() >> 32,
        .uid = (__u32)bpf_get_current_uid_gid(),
    };
    return owner;
}

#endif
