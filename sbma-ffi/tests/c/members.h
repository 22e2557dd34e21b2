/* Member processes of a group test: members_start forks `count` children,
 * each running fn(id, joined, go, ctx) (which writes one byte to `joined`
 * once it has joined, then reads one from `go`), and returns once all
 * have joined; members_finish lets them go and waits for every one, 0
 * when all exited 0. Each process has 120 s (alarm) so a member that
 * never joins cannot hang the test. */
#ifndef SBMA_TEST_MEMBERS_H
#define SBMA_TEST_MEMBERS_H
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
#include "check.h"

#define MEMBERS_MAX 16

struct members {
    unsigned count;
    pid_t pids[MEMBERS_MAX];
    int joined[2], go[2];
};

typedef int (*member_fn)(unsigned id, int joined, int go, void *ctx);

static int members_start(struct members *m, unsigned count, member_fn fn, void *ctx) {
    CHECK(count <= MEMBERS_MAX);
    alarm(120);
    m->count = count;
    CHECK(pipe(m->joined) == 0 && pipe(m->go) == 0);
    for (unsigned id = 0; id < count; id++) {
        m->pids[id] = fork();
        CHECK(m->pids[id] >= 0);
        if (m->pids[id] == 0) {
            alarm(120);
            _exit(fn(id, m->joined[1], m->go[0], ctx));
        }
    }
    for (unsigned id = 0; id < count; id++) {
        char b;
        CHECK(read(m->joined[0], &b, 1) == 1);
    }
    return 0;
}

static int members_finish(struct members *m) {
    for (unsigned id = 0; id < m->count; id++)
        CHECK(write(m->go[1], "g", 1) == 1);
    int failed = 0;
    for (unsigned id = 0; id < m->count; id++) {
        int status;
        CHECK(waitpid(m->pids[id], &status, 0) == m->pids[id]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "member %u: status %d\n", id, status);
            failed = 1;
        }
    }
    CHECK(!failed);
    return 0;
}

#endif
