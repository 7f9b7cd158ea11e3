// SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0
// The network sensor in the kernel, for TCP (UDP peers: udp.bpf.c, with a ring of its own so
// that a flood of datagrams never costs TCP records): each connection as it is established and as it
// ends, each socket that starts or stops listening, with the process that owns it, put in a
// ring buffer as it happens (a connection of a millisecond is seen). The owner is taken where
// the kernel runs in that process (connect, listen) and kept by socket until the connection is
// established, which happens later, outside it; an incoming connection belongs to its
// listener's owner. Compiled by the build (Plugins/BPFPrograms); docs/architecture.md, "Sensors".
#define TETHER_RING_BYTES (1 << 20)
#include "common.bpf.h"

enum { AF_INET = 2, AF_INET6 = 10, IPPROTO_TCP = 6 };
enum {
    TCP_ESTABLISHED = 1, TCP_SYN_SENT = 2, TCP_SYN_RECV = 3, TCP_FIN_WAIT1 = 4, TCP_CLOSE = 7, TCP_CLOSE_WAIT = 8, TCP_LISTEN = 10,
};


/// Connecting sockets, by address, until they are established and then until they end.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, __u64);
    __type(value, struct owner);
} connections SEC(".maps");

/// The socket listening last on a port (of a network namespace: another namespace's port is
/// another port), and its owner (tether_bpf_events.h; user space seeds it at start).
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, struct tether_bpf_listener_key);
    __type(value, struct tether_bpf_listener);
} listeners SEC(".maps");

/// Listening sockets' ports, by socket: a closing listener has lost its port.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u64);
    __type(value, struct tether_bpf_listener_key);
} listening_ports SEC(".maps");

static __always_inline struct tether_bpf_listener_key port_of(struct sock *sk, __u32 family) {
    struct tether_bpf_listener_key port_key = {
        // Kernels built without network namespaces have no skc_net: all is one namespace (0).
        .ns = bpf_core_field_exists(sk->__sk_common.skc_net) ? BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) : 0,
        .family_port = (family << 16) | BPF_CORE_READ(sk, __sk_common.skc_num),
    };
    return port_key;
}

static __always_inline void emit(struct sock *sk, __u32 family, __u32 action, struct owner *owner, __u32 port) {
    struct tether_bpf_connection *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
    if (!event) {
        count_drop();
        return;
    }
    event->kind = TETHER_BPF_TCP;
    event->action = action;
    event->pid = owner ? owner->pid : 0;
    event->uid = owner ? owner->uid : 0;
    event->family = family;
    event->local_port = port ? port : BPF_CORE_READ(sk, __sk_common.skc_num);
    __u16 remote_port = BPF_CORE_READ(sk, __sk_common.skc_dport);
    event->remote_port = __builtin_bswap16(remote_port);
    event->reserved = 0;
    __builtin_memset(event->local, 0, sizeof(event->local));
    __builtin_memset(event->remote, 0, sizeof(event->remote));
    if (family == AF_INET) {
        bpf_core_read(event->local, 4, &sk->__sk_common.skc_rcv_saddr);
        bpf_core_read(event->remote, 4, &sk->__sk_common.skc_daddr);
    } else {
        bpf_core_read(event->local, 16, &sk->__sk_common.skc_v6_rcv_saddr);
        bpf_core_read(event->remote, 16, &sk->__sk_common.skc_v6_daddr);
    }
    event->time_ns = bpf_ktime_get_ns();
    bpf_ringbuf_submit(event, 0);
}

SEC("tp_btf/inet_sock_set_state")
int tether_tcp_state(__u64 *context) {
    struct sock *sk = (void *)context[0];
    int old = (int)context[1];
    int new = (int)context[2];
    if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP) return 0;
    __u32 family = BPF_CORE_READ(sk, __sk_common.skc_family);
    if (family != AF_INET && family != AF_INET6) return 0;
    __u64 key = (__u64)sk;
    if (new == TCP_SYN_SENT) {
        // connect(2), in the connecting process.
        struct owner owner = current_owner();
        bpf_map_update_elem(&connections, &key, &owner, BPF_ANY);
    } else if (new == TCP_LISTEN) {
        // listen(2), in the listening process.
        struct owner owner = current_owner();
        struct tether_bpf_listener listener = { .pid = owner.pid, .uid = owner.uid, .socket = key };
        struct tether_bpf_listener_key port_key = port_of(sk, family);
        bpf_map_update_elem(&listeners, &port_key, &listener, BPF_ANY);
        bpf_map_update_elem(&listening_ports, &key, &port_key, BPF_ANY);
        emit(sk, family, TETHER_BPF_LISTENING, &owner, 0);
    } else if (old == TCP_LISTEN && new == TCP_CLOSE) {
        struct tether_bpf_listener_key *known = bpf_map_lookup_elem(&listening_ports, &key);
        if (!known) return 0;
        struct tether_bpf_listener_key port_key = *known;
        struct tether_bpf_listener *listener = bpf_map_lookup_elem(&listeners, &port_key);
        // Only this socket's entry goes: another may listen on the port now (SO_REUSEPORT).
        int mine = listener && listener->socket == key;
        struct owner owner = { .pid = mine ? listener->pid : 0, .uid = mine ? listener->uid : 0 };
        emit(sk, family, TETHER_BPF_STOPPED_LISTENING, mine ? &owner : 0, port_key.family_port & 0xFFFF);
        if (mine) bpf_map_delete_elem(&listeners, &port_key);
        bpf_map_delete_elem(&listening_ports, &key);
    } else if (new == TCP_ESTABLISHED && old == TCP_SYN_SENT) {
        struct owner *owner = bpf_map_lookup_elem(&connections, &key);
        emit(sk, family, TETHER_BPF_OPENED, owner, 0);
    } else if (new == TCP_ESTABLISHED && old == TCP_SYN_RECV) {
        struct tether_bpf_listener_key port_key = port_of(sk, family);
        struct tether_bpf_listener *listener = bpf_map_lookup_elem(&listeners, &port_key);
        struct owner owner = { .pid = listener ? listener->pid : 0, .uid = listener ? listener->uid : 0 };
        bpf_map_update_elem(&connections, &key, &owner, BPF_ANY);
        emit(sk, family, TETHER_BPF_OPENED, &owner, 0);
    } else if (old == TCP_ESTABLISHED) {
        // The first FIN either way, or a reset: the connection has ended for its user.
        struct owner *owner = bpf_map_lookup_elem(&connections, &key);
        emit(sk, family, TETHER_BPF_CLOSED, owner, 0);
        bpf_map_delete_elem(&connections, &key);
    } else if (new == TCP_CLOSE) {
        // A connection that never was established (refused, timed out).
        bpf_map_delete_elem(&connections, &key);
    }
    return 0;
}
