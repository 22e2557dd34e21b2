/* The modern API's groups: three processes share one budget through
 * sbma_config.group, 1.5x over it together, each verifying its data;
 * sbma_set_blocked and the group figures of sbma_stats; bad names and a
 * budget that disagrees with the group's are errors; the shared segment is
 * gone once every member has left. The group's name: $SBMA_TEST_GROUP. */
#include <signal.h>
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
#define WORKING_SET (4u << 20) /* each: half the budget, 1.5x in total */

static uint64_t value(unsigned member, size_t i, unsigned pass) {
    uint64_t x = ((uint64_t)member << 56) ^ ((uint64_t)i * 0x9e3779b97f4a7c15u) ^ pass;
    return x ^ (x >> 29);
}

/* One member: joins, waits until all have joined, then random
 * read-modify-write passes over its own data, checking every word. */
static int member(unsigned id, int joined, int go, void *ctx) {
    const char *name = ctx;
    struct sbma_config cfg;
    CHECK(sbma_config_default(&cfg) == SBMA_OK);
    cfg.budget = BUDGET;
    cfg.arena_size = 1u << 30;
    cfg.group = name;
    sbma_t *h = NULL;
    CHECK(sbma_new(&cfg, &h) == SBMA_OK);
    CHECK(write(joined, "j", 1) == 1);
    char b;
    CHECK(read(go, &b, 1) == 1);

    struct sbma_stats s;
    CHECK(sbma_stats_get(h, &s) == SBMA_OK);
    CHECK(s.group_members == MEMBERS && s.budget == BUDGET && s.blocked == 0);

    size_t n = WORKING_SET / sizeof(uint64_t);
    uint64_t *x = sbma_malloc(h, WORKING_SET);
    CHECK(x != NULL);
    for (size_t i = 0; i < n; i++)
        x[i] = value(id, i, 0);
    for (unsigned pass = 1; pass <= 3; pass++) {
        /* Blocked while "waiting" between passes: a preferred victim. */
        CHECK(sbma_set_blocked(h, 1) == SBMA_OK);
        CHECK(sbma_stats_get(h, &s) == SBMA_OK && s.blocked == 1);
        usleep(2000);
        CHECK(sbma_set_blocked(h, 0) == SBMA_OK);
        /* Flip random words, then the same words again: back to the
         * pattern only if no write was lost on the way out and in. */
        for (int twice = 0; twice < 2; twice++) {
            unsigned seed = id * 7 + pass;
            for (size_t k = 0; k < n / 64; k++)
                x[(size_t)rand_r(&seed) % n] ^= 1;
        }
        for (size_t i = 0; i < n; i++)
            CHECK(x[i] == value(id, i, 0));
        CHECK(sbma_stats_get(h, &s) == SBMA_OK);
        CHECK(s.group_resident <= BUDGET && s.resident <= s.group_resident);
    }
    CHECK(sbma_stats_get(h, &s) == SBMA_OK);
    CHECK(s.blocked == 0 && s.pages_written > 0);
    printf("member %u: ok, %llu pages evicted, %llu requests to peers, %llu pages given\n", id,
           (unsigned long long)s.pages_evicted, (unsigned long long)s.peer_requests,
           (unsigned long long)s.pages_given_to_peers);
    fflush(stdout);
    sbma_free(h, x);
    /* Still a member: a different budget for the same group is refused. */
    struct sbma_config other = cfg;
    other.budget = BUDGET / 2;
    sbma_t *h2 = NULL;
    CHECK(sbma_new(&other, &h2) == SBMA_INVALID_CONFIG && h2 == NULL);
    sbma_destroy(h);
    return 0;
}

int main(void) {
    const char *name = getenv("SBMA_TEST_GROUP");
    CHECK(name != NULL);

    struct sbma_config cfg;
    CHECK(sbma_config_default(&cfg) == SBMA_OK && cfg.group == NULL);
    cfg.budget = BUDGET;
    cfg.arena_size = 1u << 30;
    cfg.group = "no/slashes";
    sbma_t *h = NULL;
    CHECK(sbma_new(&cfg, &h) == SBMA_INVALID_CONFIG && h == NULL);
    char msg[256];
    CHECK(sbma_last_error(msg, sizeof msg) > 0 && strstr(msg, "SBMA_GROUP") != NULL);

    struct members m;
    CHECK(members_start(&m, MEMBERS, member, (void *)name) == 0);
    CHECK(members_finish(&m) == 0);
    char seg[300];
    snprintf(seg, sizeof seg, "/dev/shm/sbma-group-%s", name);
    CHECK(access(seg, F_OK) != 0);
    printf("group API: ok\n");
    return 0;
}
