#define _GNU_SOURCE
#include "CNFTablesShims.h"
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <nftables/libnftables.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/// The functions Tether calls, looked up once in the loaded libnftables.
static struct {
    struct nft_ctx *(*ctx_new)(uint32_t);
    void (*ctx_free)(struct nft_ctx *);
    void (*output_set_flags)(struct nft_ctx *, unsigned int);
    int (*buffer_output)(struct nft_ctx *);
    int (*buffer_error)(struct nft_ctx *);
    const char *(*get_output_buffer)(struct nft_ctx *);
    const char *(*get_error_buffer)(struct nft_ctx *);
    int (*run_cmd_from_buffer)(struct nft_ctx *, const char *);
} nft;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static const char *load_error = "libnftables was not loaded";
/// libnftables keeps some state per process (its caches, the realm tables): one call at a time.
static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;

static void load(void) {
    // The soname Debian's libnftables1 installs; the package depends on it.
    void *library = dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        load_error = "libnftables.so.1 cannot be loaded (install libnftables1)";
        return;
    }
#define FIND(field, name) \
    if ((*(void **)&nft.field = dlsym(library, name)) == NULL) { \
        load_error = "libnftables.so.1 lacks " name; \
        dlclose(library); \
        return; \
    }
    FIND(ctx_new, "nft_ctx_new")
    FIND(ctx_free, "nft_ctx_free")
    FIND(output_set_flags, "nft_ctx_output_set_flags")
    FIND(buffer_output, "nft_ctx_buffer_output")
    FIND(buffer_error, "nft_ctx_buffer_error")
    FIND(get_output_buffer, "nft_ctx_get_output_buffer")
    FIND(get_error_buffer, "nft_ctx_get_error_buffer")
    FIND(run_cmd_from_buffer, "nft_run_cmd_from_buffer")
#undef FIND
    load_error = NULL;
}

struct job {
    const char *network_namespace;
    const char *commands;
    int json;
    int status;
    char *output;
    char *error;
};

static char *copy(const char *text) {
    return text != NULL && text[0] != '\0' ? strdup(text) : NULL;
}

static char *describe(const char *what, const char *path) {
    char *text = NULL;
    if (asprintf(&text, "%s %s: %s", what, path, strerror(errno)) < 0) return NULL;
    return text;
}

static void run(struct job *job) {
    if (job->network_namespace != NULL) {
        int fd = open(job->network_namespace, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            job->status = -1;
            job->error = describe("cannot open the network namespace", job->network_namespace);
            return;
        }
        int entered = setns(fd, CLONE_NEWNET);
        int saved = errno;
        close(fd);
        if (entered != 0) {
            errno = saved;
            job->status = -1;
            job->error = describe("cannot enter the network namespace", job->network_namespace);
            return;
        }
    }
    pthread_mutex_lock(&run_lock);
    struct nft_ctx *context = nft.ctx_new(NFT_CTX_DEFAULT);
    if (context == NULL) {
        pthread_mutex_unlock(&run_lock);
        job->status = -1;
        job->error = strdup("libnftables could not create a context");
        return;
    }
    if (job->json) nft.output_set_flags(context, NFT_CTX_OUTPUT_JSON);
    // Unbuffered, nft would print to the process's own output: never run without both buffers.
    if (nft.buffer_output(context) != 0 || nft.buffer_error(context) != 0) {
        nft.ctx_free(context);
        pthread_mutex_unlock(&run_lock);
        job->status = -1;
        job->error = strdup("libnftables could not buffer its output");
        return;
    }
    job->status = nft.run_cmd_from_buffer(context, job->commands) == 0 ? 0 : 1;
    job->output = copy(nft.get_output_buffer(context));
    job->error = copy(nft.get_error_buffer(context));
    nft.ctx_free(context);
    pthread_mutex_unlock(&run_lock);
}

static void *run_in_thread(void *argument) {
    run(argument);
    return NULL;
}

int tether_nft_run(const char *network_namespace, const char *commands, int json, char **output, char **error) {
    *output = NULL;
    *error = NULL;
    pthread_once(&load_once, load);
    if (load_error != NULL) {
        *error = strdup(load_error);
        return -1;
    }
    struct job job = { network_namespace, commands, json, 0, NULL, NULL };
    if (network_namespace == NULL) {
        run(&job);
    } else {
        // setns changes only the calling thread: a thread of its own enters the namespace and ends.
        pthread_t thread;
        int created = pthread_create(&thread, NULL, run_in_thread, &job);
        if (created != 0) {
            errno = created;
            *error = describe("cannot start a thread for", network_namespace);
            return -1;
        }
        pthread_join(thread, NULL);
    }
    *output = job.output;
    *error = job.error;
    return job.status;
}

void tether_nft_free(char *text) {
    free(text);
}
