/* fork with the heap out of core (an ordinary C program; it knows nothing
 * of sbma). Three children and a grandchild read the whole heap as it was
 * at their fork while the parent rewrites all of it; each child then
 * writes part of it, read(2)s into it, allocates, and runs a shell
 * command before it exits. Prints a checksum; exits non-zero on any
 * mismatch. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(c)                                                          \
    do {                                                                  \
        if (!(c)) {                                                       \
            fprintf(stderr, "%d: %s:%d: check failed: %s\n", getpid(), __FILE__, __LINE__, #c); \
            _exit(2);                                                     \
        }                                                                 \
    } while (0)

#define NBLOCKS 48
#define WORDS (1 << 17) /* 1 MiB blocks */
#define CHILDREN 3

static uint64_t *blocks[NBLOCKS];

static uint64_t value(int b, int w, uint64_t gen) {
    uint64_t x = ((uint64_t)b << 32 | (uint64_t)w) + gen * 0x9E3779B97F4A7C15ull;
    x ^= x >> 31;
    x *= 0xD6E8FEB86659FD93ull;
    return x ^ (x >> 29);
}

static void fill(int from, int to, uint64_t gen) {
    for (int b = from; b < to; b++)
        for (int w = 0; w < WORDS; w++)
            blocks[b][w] = value(b, w, gen);
}

static uint64_t verify(int from, int to, uint64_t gen) {
    uint64_t sum = 0;
    for (int b = from; b < to; b++)
        for (int w = 0; w < WORDS; w++) {
            CHECK(blocks[b][w] == value(b, w, gen));
            sum += blocks[b][w];
        }
    return sum;
}

static void wait_for(int fd) {
    char c;
    CHECK(read(fd, &c, 1) == 1);
}

static int child(int c, int go) {
    pid_t grandchild = -1;
    if (c == 0) {
        grandchild = fork();
        CHECK(grandchild >= 0);
        if (grandchild == 0) {
            wait_for(go);
            verify(0, NBLOCKS, 1);
            _exit(0);
        }
    }
    wait_for(go);
    verify(0, NBLOCKS, 1);
    /* Its own writes, over more than the budget. */
    fill(c * 12, c * 12 + 12, 100 + c);
    verify(c * 12, c * 12 + 12, 100 + c);
    /* A kernel write into inherited heap memory. */
    int p[2];
    CHECK(pipe(p) == 0);
    char msg[4096];
    memset(msg, 'k' + c, sizeof msg);
    CHECK(write(p[1], msg, sizeof msg) == (ssize_t)sizeof msg);
    char *into = (char *)blocks[40] + 100;
    CHECK(read(p[0], into, sizeof msg) == (ssize_t)sizeof msg);
    CHECK(memcmp(into, msg, sizeof msg) == 0);
    CHECK(blocks[40][0] == value(40, 0, 1));
    /* New memory, and a shell. */
    char *m = malloc(3 << 20);
    CHECK(m != NULL);
    memset(m, c, 3 << 20);
    CHECK(m[(3 << 20) - 1] == c);
    free(m);
    pid_t sh = fork();
    CHECK(sh >= 0);
    if (sh == 0) {
        execl("/bin/sh", "sh", "-c", "test \"$(echo 6)\" = 6", (char *)NULL);
        _exit(127);
    }
    int status;
    CHECK(waitpid(sh, &status, 0) == sh && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (grandchild > 0)
        CHECK(waitpid(grandchild, &status, 0) == grandchild && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0);
    return 0;
}

int main(void) {
    for (int b = 0; b < NBLOCKS; b++) {
        blocks[b] = malloc(WORDS * sizeof(uint64_t));
        CHECK(blocks[b] != NULL);
    }
    fill(0, NBLOCKS, 1);
    int go[2];
    CHECK(pipe(go) == 0);
    pid_t pids[CHILDREN];
    for (int c = 0; c < CHILDREN; c++) {
        pids[c] = fork();
        CHECK(pids[c] >= 0);
        if (pids[c] == 0)
            _exit(child(c, go[0]));
    }
    /* Rewrite everything while the children wait, then let them read. */
    fill(0, NBLOCKS, 2);
    CHECK(write(go[1], "gggg", CHILDREN + 1) == CHILDREN + 1);
    for (int c = 0; c < CHILDREN; c++) {
        int status;
        CHECK(waitpid(pids[c], &status, 0) == pids[c]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    printf("checksum %llu\n", (unsigned long long)verify(0, NBLOCKS, 2));
    for (int b = 0; b < NBLOCKS; b++)
        free(blocks[b]);
    return 0;
}
