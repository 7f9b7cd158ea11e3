// SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0
// The network sensor in the kernel, for UDP: the first datagram from a socket to each peer,
// and each UDP connect, with the sending process, from cgroup programs attached at the root of
// the cgroup v2 hierarchy (they always allow: they only watch). A ring of its own, so that a
// flood of new peers never costs the TCP program's records. Optional: where cgroup programs
// cannot be attached the rest of the sensor runs. Compiled by the build (Plugins/BPFPrograms);
// docs/architecture.md, "Sensors".
#define TETHER_RING_BYTES (256 << 10)
#include "common.bpf.h"

enum { AF_INET = 2, AF_INET6 = 10, IPPROTO_UDP = 17 };

/// UDP peers a socket has sent to (or connected to) already, so only the first datagram to a
/// peer is a record.
struct peer_key {
    __u64 cookie;
    __u32 address[4];
    __u32 port;
    __u32 family;
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, struct peer_key);
    __type(value, __u8);
} udp_peers SEC(".maps");

/// A UDP datagram about to leave for a peer (cgroup sendmsg), or a UDP connect: a record the
/// first time this socket meets this peer. Always allowed: the programs only watch.
static __always_inline int udp_peer(struct bpf_sock_addr *context, __u32 family) {
    if (context->protocol != IPPROTO_UDP) return 1;
    struct peer_key key = { .cookie = bpf_get_socket_cookie(context), .port = context->user_port, .family = family };
    if (family == AF_INET) {
        key.address[0] = context->user_ip4;
    } else {
        key.address[0] = context->user_ip6[0];
        key.address[1] = context->user_ip6[1];
        key.address[2] = context->user_ip6[2];
        key.address[3] = context->user_ip6[3];
    }
    __u8 seen = 1;
    if (bpf_map_update_elem(&udp_peers, &key, &seen, BPF_NOEXIST) != 0) return 1;
    struct tether_bpf_connection *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
    if (!event) {
        count_drop();
        return 1;
    }
    struct owner owner = current_owner();
    event->kind = TETHER_BPF_UDP;
    event->action = TETHER_BPF_OPENED;
    event->pid = owner.pid;
    event->uid = owner.uid;
    event->family = family;
    event->remote_port = __builtin_bswap16((__u16)context->user_port);
    event->reserved = 0;
    __builtin_memset(event->local, 0, sizeof(event->local));
    __builtin_memcpy(event->remote, key.address, sizeof(event->remote));
    struct bpf_sock *sk = context->sk;
    event->local_port = sk ? sk->src_port : 0;
    if (sk && family == AF_INET) {
        __u32 source = sk->src_ip4;
        __builtin_memcpy(event->local, &source, 4);
    } else if (sk) {
        __u32 source[4] = { sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3] };
        __builtin_memcpy(event->local, source, 16);
    }
    event->time_ns = bpf_ktime_get_ns();
    bpf_ringbuf_submit(event, 0);
    return 1;
}

SEC("cgroup/sendmsg4")
int tether_udp_send4(struct bpf_sock_addr *context) { return udp_peer(context, AF_INET); }

SEC("cgroup/sendmsg6")
int tether_udp_send6(struct bpf_sock_addr *context) { return udp_peer(context, AF_INET6); }

SEC("cgroup/connect4")
int tether_udp_connect4(struct bpf_sock_addr *context) { return udp_peer(context, AF_INET); }

SEC("cgroup/connect6")
int tether_udp_connect6(struct bpf_sock_addr *context) { return udp_peer(context, AF_INET6); }
