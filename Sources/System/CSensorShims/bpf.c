// Loading Tether's BPF programs with libbpf, loaded with dlopen on first use so that a process
// that never starts the sensors never maps it (docs/architecture.md, "What an endpoint pays").
#define _GNU_SOURCE
#include "CSensorShims.h"
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/// The functions Tether calls, looked up once in the loaded libbpf.
static struct {
    struct bpf_object *(*object_open_mem)(const void *, size_t, const struct bpf_object_open_opts *);
    int (*object_load)(struct bpf_object *);
    void (*object_close)(struct bpf_object *);
    struct bpf_program *(*object_next_program)(const struct bpf_object *, struct bpf_program *);
    struct bpf_map *(*object_find_map_by_name)(const struct bpf_object *, const char *);
    int (*map_fd)(const struct bpf_map *);
    struct bpf_link *(*program_attach)(const struct bpf_program *);
    struct bpf_link *(*program_attach_cgroup)(const struct bpf_program *, int);
    const char *(*program_section_name)(const struct bpf_program *);
    int (*program_set_autoload)(struct bpf_program *, bool);
    const char *(*program_name)(const struct bpf_program *);
    int (*link_destroy)(struct bpf_link *);
    struct ring_buffer *(*ring_buffer_new)(int, ring_buffer_sample_fn, void *, const struct ring_buffer_opts *);
    int (*ring_buffer_poll)(struct ring_buffer *, int);
    void (*ring_buffer_free)(struct ring_buffer *);
    int (*map_lookup_elem)(int, const void *, void *);
    int (*map_update_elem)(int, const void *, const void *, __u64);
    int (*num_possible_cpus)(void);
    libbpf_print_fn_t (*set_print)(libbpf_print_fn_t);
} bpf;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static const char *load_error = "libbpf was not loaded";

static void load(void) {
    // The soname of Debian's libbpf1 (1.1); the package depends on it.
    void *library = dlopen("libbpf.so.1", RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        load_error = "libbpf.so.1 cannot be loaded (install libbpf1)";
        return;
    }
#define FIND(field, name) \
    if ((*(void **)&bpf.field = dlsym(library, name)) == NULL) { \
        load_error = "libbpf.so.1 lacks " name " (libbpf 1.0 or later is needed)"; \
        return; \
    }
    FIND(object_open_mem, "bpf_object__open_mem")
    FIND(object_load, "bpf_object__load")
    FIND(object_close, "bpf_object__close")
    FIND(object_next_program, "bpf_object__next_program")
    FIND(object_find_map_by_name, "bpf_object__find_map_by_name")
    FIND(map_fd, "bpf_map__fd")
    FIND(program_attach, "bpf_program__attach")
    FIND(program_attach_cgroup, "bpf_program__attach_cgroup")
    FIND(program_section_name, "bpf_program__section_name")
    FIND(program_set_autoload, "bpf_program__set_autoload")
    FIND(program_name, "bpf_program__name")
    FIND(link_destroy, "bpf_link__destroy")
    FIND(ring_buffer_new, "ring_buffer__new")
    FIND(ring_buffer_poll, "ring_buffer__poll")
    FIND(ring_buffer_free, "ring_buffer__free")
    FIND(map_lookup_elem, "bpf_map_lookup_elem")
    FIND(map_update_elem, "bpf_map_update_elem")
    FIND(num_possible_cpus, "libbpf_num_possible_cpus")
    FIND(set_print, "libbpf_set_print")
#undef FIND
    load_error = NULL;
}

/// libbpf's own messages while a probe loads (the verifier's log among them): the last
/// warning is kept, as the reason a load failed. One load at a time.
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_message[512];

static int keep_message(enum libbpf_print_level level, const char *format, va_list arguments) {
    if (level == LIBBPF_DEBUG) return 0;
    char line[512];
    vsnprintf(line, sizeof line, format, arguments);
    size_t length = strlen(line);
    while (length > 0 && (line[length - 1] == '\n' || line[length - 1] == ' ')) line[--length] = 0;
    // The verifier's log ends with its summary; the line naming the failure comes first.
    if (length > 0 && strncmp(line, "-- END PROG LOAD LOG --", 23) != 0 && strstr(line, "processed ") != line) {
        memcpy(last_message, line, length + 1);
    }
    return 0;
}

#define TETHER_BPF_LINKS 16

struct tether_bpf_probe {
    struct bpf_object *object;
    struct bpf_link *links[TETHER_BPF_LINKS];
    int link_count;
    struct ring_buffer *ring;
    int drops_fd;
    /// The records of one poll, back to back (see tether_bpf_probe_poll).
    unsigned char *records;
    size_t used, capacity;
    uint64_t overflowed;
    /// What was left out (cgroup programs without a cgroup v2 hierarchy), or empty.
    char note[256];
};

/// The root of the whole cgroup v2 hierarchy, opened: cgroup programs attached there see every
/// process. -1, with why in `why`, when there is none, or when this process sees only a part
/// of it (a cgroup namespace of its own, a mount of a sub-tree: a container's view).
static int open_cgroup2_root(char *why, size_t why_size) {
    char mine[64] = "", init[64] = "";
    ssize_t length = readlink("/proc/self/ns/cgroup", mine, sizeof mine - 1);
    ssize_t init_length = readlink("/proc/1/ns/cgroup", init, sizeof init - 1);
    if (length > 0 && init_length > 0 && (length != init_length || memcmp(mine, init, (size_t)length) != 0)) {
        snprintf(why, why_size, "this process is in a cgroup namespace of its own: it sees only its own cgroups");
        return -1;
    }
    FILE *mounts = fopen("/proc/self/mountinfo", "re");
    if (mounts == NULL) {
        snprintf(why, why_size, "/proc/self/mountinfo cannot be read");
        return -1;
    }
    char line[4096];
    int fd = -1;
    while (fd < 0 && fgets(line, sizeof line, mounts) != NULL) {
        if (strstr(line, " - cgroup2 ") == NULL) continue;
        // Fields 4 and 5: the mount's root within the hierarchy, and where it is mounted.
        char root[4096], point[4096];
        if (sscanf(line, "%*s %*s %*s %4095s %4095s", root, point) == 2 && strcmp(root, "/") == 0) {
            fd = open(point, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        }
    }
    fclose(mounts);
    if (fd < 0) snprintf(why, why_size, "no cgroup v2 hierarchy is mounted whole");
    return fd;
}

/// Turns the cgroup programs of `object` on or off before it loads.
static void load_cgroup_programs(struct bpf_object *object, bool on) {
    struct bpf_program *program = NULL;
    while ((program = bpf.object_next_program(object, program)) != NULL) {
        const char *section = bpf.program_section_name(program);
        if (section != NULL && strncmp(section, "cgroup/", 7) == 0) bpf.program_set_autoload(program, on);
    }
}

static int take_record(void *context, void *data, size_t size) {
    struct tether_bpf_probe *probe = context;
    size_t needed = 8 + ((size + 7) & ~(size_t)7);
    if (probe->used + needed > probe->capacity) {
        size_t capacity = probe->capacity ? probe->capacity * 2 : 1 << 20;
        while (capacity < probe->used + needed) capacity *= 2;
        // The ring holds 4 MiB: more than 16 MiB in one poll cannot happen; refuse rather than grow.
        unsigned char *grown = capacity <= (16u << 20) ? realloc(probe->records, capacity) : NULL;
        if (grown == NULL) {
            probe->overflowed++;
            return 0;
        }
        probe->records = grown;
        probe->capacity = capacity;
    }
    uint64_t header = size;
    memcpy(probe->records + probe->used, &header, 8);
    memcpy(probe->records + probe->used + 8, data, size);
    probe->used += needed;
    return 0;
}

tether_bpf_probe *tether_bpf_probe_open(const void *object, size_t length, const char *ring_name, const char *drops_name,
                                        char *error, size_t error_size) {
    pthread_once(&load_once, load);
    if (load_error != NULL) {
        snprintf(error, error_size, "%s", load_error);
        return NULL;
    }
    if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
        snprintf(error, error_size, "the kernel describes no types (no /sys/kernel/btf/vmlinux: built without CONFIG_DEBUG_INFO_BTF)");
        return NULL;
    }
    struct tether_bpf_probe *probe = calloc(1, sizeof *probe);
    if (probe == NULL) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    probe->drops_fd = -1;
    pthread_mutex_lock(&open_lock);
    last_message[0] = 0;
    libbpf_print_fn_t previous = bpf.set_print(keep_message);
    int failure = 0;
    const char *stage = "";
    // cgroup programs are optional: left out where there is no whole cgroup v2 hierarchy to
    // attach them to, or where the kernel refuses them (no CONFIG_CGROUP_BPF); the note says so.
    char why[160] = "";
    int cgroup = open_cgroup2_root(why, sizeof why);
    int loaded = -1;
    probe->object = bpf.object_open_mem(object, length, NULL);
    if (probe->object != NULL) {
        if (cgroup < 0) load_cgroup_programs(probe->object, false);
        loaded = bpf.object_load(probe->object);
        if (loaded != 0 && cgroup >= 0) {
            // Once more without them: an object cannot be loaded twice.
            snprintf(why, sizeof why, "the kernel refused them (%s)", strerror(errno));
            close(cgroup);
            cgroup = -1;
            bpf.object_close(probe->object);
            probe->object = bpf.object_open_mem(object, length, NULL);
            if (probe->object != NULL) {
                load_cgroup_programs(probe->object, false);
                loaded = bpf.object_load(probe->object);
            }
        }
    }
    if (probe->object == NULL) {
        failure = errno;
        stage = "the program could not be read";
    } else if (loaded != 0) {
        failure = errno;
        stage = "the kernel refused the program";
    } else {
        struct bpf_program *program = NULL;
        while ((program = bpf.object_next_program(probe->object, program)) != NULL && probe->link_count < TETHER_BPF_LINKS) {
            const char *section = bpf.program_section_name(program);
            if (section != NULL && strncmp(section, "cgroup/", 7) == 0) {
                struct bpf_link *link = cgroup >= 0 ? bpf.program_attach_cgroup(program, cgroup) : NULL;
                if (link == NULL) {
                    if (probe->note[0] == 0) {
                        snprintf(probe->note, sizeof probe->note, "the cgroup programs were not attached: %s",
                                 cgroup >= 0 ? strerror(errno) : why);
                    }
                    continue;
                }
                probe->links[probe->link_count++] = link;
                continue;
            }
            struct bpf_link *link = bpf.program_attach(program);
            if (link == NULL) {
                failure = errno;
                stage = "a program could not be attached";
                break;
            }
            probe->links[probe->link_count++] = link;
        }
    }
    if (cgroup >= 0) close(cgroup);
    if (failure == 0) {
        struct bpf_map *ring = bpf.object_find_map_by_name(probe->object, ring_name);
        struct bpf_map *drops = bpf.object_find_map_by_name(probe->object, drops_name);
        probe->ring = ring ? bpf.ring_buffer_new(bpf.map_fd(ring), take_record, probe, NULL) : NULL;
        if (probe->ring == NULL) {
            failure = ring ? errno : ENOENT;
            stage = "its ring buffer could not be opened";
        }
        probe->drops_fd = drops ? bpf.map_fd(drops) : -1;
    }
    bpf.set_print(previous);
    if (failure != 0) {
        if (failure == EPERM || failure == EACCES) {
            snprintf(error, error_size, "%s: %s (it needs CAP_BPF and CAP_PERFMON, or root, and a kernel that allows tracing programs)",
                     stage, strerror(failure));
        } else if (last_message[0] != 0) {
            snprintf(error, error_size, "%s: %s (libbpf: %s)", stage, strerror(failure), last_message);
        } else {
            snprintf(error, error_size, "%s: %s", stage, strerror(failure));
        }
        pthread_mutex_unlock(&open_lock);
        tether_bpf_probe_close(probe);
        return NULL;
    }
    pthread_mutex_unlock(&open_lock);
    return probe;
}

const void *tether_bpf_probe_poll(tether_bpf_probe *probe, int timeout_ms, size_t *length, int *result) {
    probe->used = 0;
    int polled = bpf.ring_buffer_poll(probe->ring, timeout_ms);
    *result = polled < 0 && polled != -EINTR ? polled : 0;
    *length = probe->used;
    return probe->records;
}

int tether_bpf_probe_update(tether_bpf_probe *probe, const char *map_name, const void *key, const void *value) {
    struct bpf_map *map = bpf.object_find_map_by_name(probe->object, map_name);
    if (map == NULL) return -ENOENT;
    return bpf.map_update_elem(bpf.map_fd(map), key, value, 0) == 0 ? 0 : -errno;
}

const char *tether_bpf_probe_note(tether_bpf_probe *probe) {
    return probe->note[0] != 0 ? probe->note : NULL;
}

uint64_t tether_bpf_probe_drops(tether_bpf_probe *probe) {
    uint64_t total = probe->overflowed;
    int cpus = bpf.num_possible_cpus != NULL ? bpf.num_possible_cpus() : -1;
    if (probe->drops_fd < 0 || cpus <= 0 || cpus > 4096) return total;
    uint64_t *counts = calloc((size_t)cpus, sizeof *counts);
    uint32_t key = 0;
    if (counts != NULL && bpf.map_lookup_elem(probe->drops_fd, &key, counts) == 0) {
        for (int cpu = 0; cpu < cpus; cpu++) total += counts[cpu];
    }
    free(counts);
    return total;
}

void tether_bpf_probe_close(tether_bpf_probe *probe) {
    if (probe == NULL) return;
    if (probe->ring != NULL) bpf.ring_buffer_free(probe->ring);
    for (int index = 0; index < probe->link_count; index++) bpf.link_destroy(probe->links[index]);
    if (probe->object != NULL) bpf.object_close(probe->object);
    free(probe->records);
    free(probe);
}
