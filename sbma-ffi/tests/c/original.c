/* The original SBMA API, used as SBMA/BDMPI code used it: init, allocate,
 * write, evict all, read back, touch, clear, free, destroy; plus the error
 * conventions (0/-1 with errno). Exits 0 when every check passes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sbma.h"
#include "check.h"

int main(void) {
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    long sys_page = sysconf(_SC_PAGESIZE);
    char errbuf[256];

    /* Before init: nothing is ours, the malloc family is libc's. */
    CHECK(SBMA_mexist(&dir) == 0);
    CHECK(SBMA_mtouch(&dir, 1) == -1);
    void *early = SBMA_malloc(100);
    CHECK(early != NULL && SBMA_mexist(early) == 0);
    CHECK(SBMA_free(early) == 0);

    /* Options as BDMPI passes them. */
    int opts = SBMA_parse_optstr("lzyrd,ghost,merge");
    CHECK(opts == (VMM_LZYRD | VMM_GHOST | VMM_MERGE));
    CHECK(SBMA_parse_optstr("default") == (VMM_LZYRD | VMM_MERGE));
    CHECK(SBMA_parse_optstr("ghost,ghost") == VMM_INVLD);
    CHECK(SBMA_parse_optstr("bogus") == VMM_INVLD);
    CHECK(SBMA_parse_optstr("osvmm,ghost") == VMM_INVLD);

    /* A bad budget: -1, EINVAL, and a message. */
    errno = 0;
    CHECK(SBMA_init(dir, getpid(), 16384, 1, 1, opts) == -1);
    CHECK(errno == EINVAL);
    CHECK(sbma_last_error(errbuf, sizeof errbuf) > 0);
    CHECK(strstr(errbuf, "budget") != NULL);

    /* 4 MiB of memory (in system pages), 16 KiB SBMA pages. */
    size_t max_mem = (4u << 20) / (size_t)sys_page;
    CHECK(SBMA_init(dir, getpid(), 16384, 1, max_mem, opts) == 0);
    errno = 0;
    CHECK(SBMA_init(dir, getpid(), 16384, 1, max_mem, opts) == -1 && errno == EEXIST);

    /* 16 MiB of data through 4 MiB. */
    size_t n = (16u << 20) / sizeof(unsigned);
    unsigned *a = SBMA_malloc(n * sizeof(unsigned));
    CHECK(a != NULL && SBMA_mexist(a) == 1 && SBMA_mexist(a + n - 1) == 1);
    for (size_t i = 0; i < n; i++)
        a[i] = (unsigned)(i * 2654435761u);
    CHECK(SBMA_mevictall() > 0);
    struct mallinfo mi = SBMA_mallinfo();
    CHECK(mi.hblks == 0);            /* nothing resident after evict-all */
    CHECK(mi.fsmblks > 0);           /* pages were written */
    CHECK(mi.fordblks > 0);          /* write faults */
    for (size_t i = 0; i < n; i++)
        CHECK(a[i] == (unsigned)(i * 2654435761u));
    mi = SBMA_mallinfo();
    CHECK(mi.usmblks > 0 && mi.uordblks > 0);      /* read back from disk */
    CHECK((size_t)mi.hblkhd <= max_mem);           /* never over the budget */

    /* Explicit touch, and touching several ranges together. */
    SBMA_mevictall();
    CHECK(SBMA_mtouch(a, 64 << 10) >= (64 << 10) / sys_page);
    CHECK(SBMA_mtouch_atomic(a + 100000, 4096, a + 2000000, 4096) > 0);
    CHECK(SBMA_mtouch((char *)a - 4096, 10) == -1 && errno == EINVAL);

    /* Evict one range: its pages are released. */
    CHECK(SBMA_mevict(a, 1 << 20) >= 0);

    /* Clear: whole pages inside the range read zero, never written back. */
    unsigned *b = SBMA_calloc(1 << 18, sizeof(unsigned)); /* 1 MiB */
    CHECK(b != NULL);
    for (size_t i = 0; i < (1u << 18); i++)
        CHECK(b[i] == 0);
    memset(b, 0xAB, 1 << 20);
    CHECK(SBMA_mclear(b, 1 << 20) == 0);
    long nonzero = 0;
    for (size_t i = 0; i < (1u << 18); i++)
        nonzero += b[i] != 0;
    CHECK(nonzero == 0);

    /* realloc keeps contents; free; options at run time. */
    unsigned *c = SBMA_malloc(1000 * sizeof(unsigned));
    for (unsigned i = 0; i < 1000; i++)
        c[i] = i;
    c = SBMA_realloc(c, 100000 * sizeof(unsigned));
    CHECK(c != NULL);
    for (unsigned i = 0; i < 1000; i++)
        CHECK(c[i] == i);
    CHECK(SBMA_mallopt(M_VMMOPTS, VMM_LZYRD) == 0);
    CHECK(SBMA_mallopt(42, 0) == -1);
    CHECK(SBMA_sigon() == 0 && SBMA_sigoff() == 0);

    struct sbma_timeinfo t = SBMA_timeinfo();
    CHECK(t.tv_rd > 0.0 && t.tv_wr > 0.0);

    CHECK(SBMA_free(a) == 0 && SBMA_free(b) == 0 && SBMA_free(c) == 0);
    CHECK(SBMA_mclearall() == 0 && SBMA_mtouchall() >= 0);
    CHECK(SBMA_destroy() == 0);
    CHECK(SBMA_destroy() == -1);
    printf("original API: ok\n");
    return 0;
}
