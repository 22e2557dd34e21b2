/* The original API's sharing: three processes call SBMA_init with the same
 * uniq, n_procs = 3 and max_mem, and share one budget, 1.5x over it
 * together, whether or not they call SBMA_sigon (member 0 never does,
 * member 1 declares itself blocked while it waits, member 2 only at the
 * end). Each verifies every word of its data after several passes; the
 * group's figures show in SBMA_mallinfo and sbma_stats_get(sbma_global());
 * a different max_mem for the same uniq is refused. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "sbma.h"
#include "check.h"
#include "members.h"

#define MEMBERS 3
#define BUDGET (8u << 20)
#define WORKING_SET (4u << 20)

static uint64_t value(unsigned member, size_t i) {
    uint64_t x = ((uint64_t)member << 56) ^ ((uint64_t)i * 0x9e3779b97f4a7c15u);
    return x ^ (x >> 31);
}

struct place {
    const char *dir;
    int uniq;
};

static int member(unsigned id, int joined, int go, void *ctx) {
    const char *dir = ((struct place *)ctx)->dir;
    int uniq = ((struct place *)ctx)->uniq;
    size_t max_mem = BUDGET / (size_t)sysconf(_SC_PAGESIZE);
    CHECK(SBMA_init(dir, uniq, 16384, MEMBERS, max_mem, 0) == 0);
    CHECK(write(joined, "j", 1) == 1);
    char b;
    CHECK(read(go, &b, 1) == 1);

    struct sbma_stats s;
    CHECK(sbma_stats_get(sbma_global(), &s) == SBMA_OK);
    CHECK(s.group_members == MEMBERS && s.budget == BUDGET);

    size_t n = WORKING_SET / sizeof(uint64_t);
    uint64_t *x = SBMA_malloc(WORKING_SET);
    CHECK(x != NULL);
    for (size_t i = 0; i < n; i++)
        x[i] = value(id, i);
    for (unsigned pass = 0; pass < 3; pass++) {
        if (id == 1)
            CHECK(SBMA_sigon() == 0);
        usleep(3000);
        if (id == 1)
            CHECK(SBMA_sigoff() == 0);
        for (size_t i = 0; i < n; i++)
            CHECK(x[i] == value(id, i));
    }
    if (id == 2)
        CHECK(SBMA_sigon() == 0 && SBMA_sigoff() == 0);
    struct mallinfo mi = SBMA_mallinfo();
    CHECK(mi.arena == (int)max_mem && mi.fsmblks > 0 && mi.ordblks <= mi.smblks);
    struct sbma_timeinfo t = SBMA_timeinfo();
    CHECK(t.tv_ad >= 0.0 && t.tv_rd >= 0.0);
    CHECK(sbma_stats_get(sbma_global(), &s) == SBMA_OK);
    CHECK(s.peak_resident <= BUDGET);
    printf("member %u: ok, %d requests received, %d honoured, %.3f s waiting for peers\n", id,
           mi.smblks, mi.ordblks, t.tv_ad);
    fflush(stdout);
    CHECK(SBMA_free(x) == 0);
    CHECK(SBMA_destroy() == 0);
    return 0;
}

int main(void) {
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    int uniq = (int)getpid();
    struct place place = {dir, uniq};
    struct members m;
    CHECK(members_start(&m, MEMBERS, member, &place) == 0);
    /* All three are in: a fourth process with another max_mem is refused. */
    size_t other = (BUDGET / 2) / (size_t)sysconf(_SC_PAGESIZE);
    CHECK(SBMA_init(dir, uniq, 16384, MEMBERS, other, 0) == -1);
    char msg[256];
    CHECK(sbma_last_error(msg, sizeof msg) > 0 && strstr(msg, "budget") != NULL);
    CHECK(members_finish(&m) == 0);
    char seg[300];
    snprintf(seg, sizeof seg, "/dev/shm/sbma-group-uniq-%d", uniq);
    CHECK(access(seg, F_OK) != 0);
    printf("original API group: ok\n");
    return 0;
}
