/* The modern API: instances, result codes, paging control, statistics. */
#include <stdio.h>
#include <string.h>
#include "sbma.h"
#include "check.h"

int main(void) {
    struct sbma_config cfg;
    CHECK(sbma_config_default(NULL) == SBMA_NULL_PARAMETER);
    CHECK(sbma_config_default(&cfg) == SBMA_OK);
    cfg.budget = 2 << 20;
    cfg.arena_size = 1u << 30;

    sbma_t *h = NULL;
    CHECK(sbma_new(&cfg, NULL) == SBMA_NULL_PARAMETER);
    struct sbma_config bad = cfg;
    bad.page_size = 12345;
    CHECK(sbma_new(&bad, &h) == SBMA_INVALID_CONFIG && h == NULL);
    char msg[256];
    CHECK(sbma_last_error(msg, sizeof msg) > 0 && strstr(msg, "page size") != NULL);
    bad = cfg;
    bad.dir = "/nonexistent/sbma";
    CHECK(sbma_new(&bad, &h) == SBMA_STORE);
    CHECK(strcmp(sbma_strerror(SBMA_STORE), "no backing file can be created in the directory") == 0);

    CHECK(sbma_new(&cfg, &h) == SBMA_OK && h != NULL);
    size_t n = (8u << 20) / sizeof(double);
    double *x = sbma_malloc(h, n * sizeof(double));
    CHECK(x != NULL && sbma_exists(h, x) && !sbma_exists(h, &n));
    for (size_t i = 0; i < n; i++)
        x[i] = (double)i * 0.5;
    size_t evicted = 0;
    CHECK(sbma_evict_all(h, &evicted) == SBMA_OK && evicted > 0);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += x[i];
    CHECK(sum == 0.5 * (double)n * (double)(n - 1) / 2.0);

    CHECK(sbma_touch(h, x, 1 << 20, SBMA_WRITE) == SBMA_OK);
    CHECK(sbma_touch(h, &n, 1, SBMA_READ) == SBMA_INVALID_RANGE);
    CHECK(sbma_evict(h, x, 1 << 20, &evicted) == SBMA_OK);
    CHECK(sbma_clear(h, x, 1 << 20) == SBMA_OK);
    CHECK(x[0] == 0.0 && x[(1 << 20) / sizeof(double) - 1] == 0.0);
    CHECK(x[(1 << 20) / sizeof(double)] == (double)((1 << 20) / sizeof(double)) * 0.5);

    struct sbma_stats s;
    CHECK(sbma_stats_get(h, NULL) == SBMA_NULL_PARAMETER);
    CHECK(sbma_stats_get(h, &s) == SBMA_OK);
    CHECK(s.budget == 2u << 20 && s.peak_resident <= s.budget);
    CHECK(s.pages_written > 0 && s.pages_read > 0 && s.large_bytes >= n * sizeof(double));
    CHECK(s.backend == SBMA_BACKEND_SIGNAL || s.backend == SBMA_BACKEND_UFFD);

    /* An explicit signal backend is honoured. */
    struct sbma_config sig = cfg;
    sig.backend = SBMA_BACKEND_SIGNAL;
    sbma_t *hs = NULL;
    CHECK(sbma_new(&sig, &hs) == SBMA_OK);
    double *y = sbma_malloc(hs, 4 << 20);
    CHECK(y != NULL);
    for (size_t i = 0; i < (4u << 20) / sizeof(double); i++)
        y[i] = (double)i;
    CHECK(sbma_evict_all(hs, &evicted) == SBMA_OK && evicted > 0);
    CHECK(y[12345] == 12345.0);
    CHECK(sbma_stats_get(hs, &s) == SBMA_OK && s.backend == SBMA_BACKEND_SIGNAL);
    sbma_free(hs, y);
    sbma_destroy(hs);

    void *small = sbma_calloc(h, 10, 10);
    CHECK(small != NULL && sbma_usable_size(h, small) >= 100);
    void *al = sbma_aligned_alloc(h, 4096, 100);
    CHECK(al != NULL && ((uintptr_t)al & 4095) == 0);
    small = sbma_realloc(h, small, 5000);
    CHECK(small != NULL);
    sbma_free(h, small);
    sbma_free(h, al);
    sbma_free(h, x);
    sbma_free(h, NULL);
    sbma_destroy(h);
    sbma_destroy(NULL);
    printf("modern API: ok\n");
    return 0;
}
