/* Exit paths and dlopen with the heap out of core (an ordinary C program).
 * A library is dlopen'd, used, dlclose'd and loaded again (its
 * constructor and destructor allocate and free); a thread exits with
 * blocks still allocated, which others free; at exit an atexit handler and
 * a destructor read and free heap memory that was pushed out long before.
 * The process ends by returning from main ("return") or by exit() called
 * on another thread while main waits ("thread-exit"). Prints checksums;
 * any mismatch aborts. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(c)                                                          \
    do {                                                                  \
        if (!(c)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                      \
        }                                                                 \
    } while (0)

#define NBLOCKS 64
#define WORDS (1 << 17) /* 1 MiB */

static uint64_t *blocks[NBLOCKS];
static uint64_t *late_block;

static uint64_t value(int b, int w) { return ((uint64_t)b << 32 | (uint64_t)w) * 0xD6E8FEB86659FD93ull; }

static uint64_t check_and_free(int from, int to) {
    uint64_t s = 0;
    for (int b = from; b < to; b++) {
        for (int w = 0; w < WORDS; w++) {
            CHECK(blocks[b][w] == value(b, w));
            s += blocks[b][w];
        }
        free(blocks[b]);
        blocks[b] = NULL;
    }
    return s;
}

static void at_exit(void) {
    printf("at exit: %llu\n", (unsigned long long)check_and_free(0, NBLOCKS / 2));
    fflush(stdout);
}

__attribute__((destructor)) static void destructor(void) {
    for (int w = 0; w < WORDS; w++)
        CHECK(late_block[w] == value(999, w));
    free(late_block);
    /* stdout may be gone by now: write(2) directly. */
    char line[] = "destructor: ok\n";
    CHECK(write(1, line, strlen(line)) == (ssize_t)strlen(line));
}

static void *leaver(void *arg) {
    (void)arg;
    /* Exits with 10,000 blocks allocated; main frees them. */
    char **mine = malloc(10000 * sizeof(char *));
    for (int i = 0; i < 10000; i++) {
        mine[i] = malloc(24 + i % 200);
        memset(mine[i], i & 0xFF, 24 + i % 200);
    }
    pthread_exit(mine);
}

static void *exiter(void *arg) {
    (void)arg;
    exit(0);
}

static uint64_t use_plugin(const char *path, void *adopt) {
    void *h = dlopen(path, RTLD_NOW);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        abort();
    }
    uint64_t (*sum)(void) = (uint64_t (*)(void))dlsym(h, "plugin_sum");
    void (*adopt_fn)(void *) = (void (*)(void *))dlsym(h, "plugin_adopt");
    CHECK(sum && adopt_fn);
    uint64_t s = sum();
    if (adopt) {
        adopt_fn(adopt);
        return s; /* stays loaded: unloaded at exit */
    }
    CHECK(dlclose(h) == 0);
    return s;
}

int main(int argc, char **argv) {
    CHECK(argc == 3);
    const char *plugin = argv[1];
    int thread_exit = strcmp(argv[2], "thread-exit") == 0;
    late_block = malloc(WORDS * sizeof(uint64_t));
    for (int w = 0; w < WORDS; w++)
        late_block[w] = value(999, w);
    for (int b = 0; b < NBLOCKS; b++) {
        blocks[b] = malloc(WORDS * sizeof(uint64_t));
        CHECK(blocks[b]);
        for (int w = 0; w < WORDS; w++)
            blocks[b][w] = value(b, w);
    }
    CHECK(atexit(at_exit) == 0);
    uint64_t first = use_plugin(plugin, NULL);
    uint64_t second = use_plugin(plugin, malloc(1 << 20));
    CHECK(first == second);
    printf("plugin: %llu\n", (unsigned long long)first);
    pthread_t t;
    void *left;
    CHECK(pthread_create(&t, NULL, leaver, NULL) == 0);
    CHECK(pthread_join(t, &left) == 0);
    char **mine = left;
    for (int i = 0; i < 10000; i++) {
        CHECK(mine[i][0] == (char)(i & 0xFF) && mine[i][23 + i % 200] == (char)(i & 0xFF));
        free(mine[i]);
    }
    free(mine);
    printf("in main: %llu\n", (unsigned long long)check_and_free(NBLOCKS / 2, NBLOCKS));
    fflush(stdout);
    if (thread_exit) {
        CHECK(pthread_create(&t, NULL, exiter, NULL) == 0);
        pthread_join(t, NULL);
        abort(); /* not reached: exit() ends the process */
    }
    return 0;
}
