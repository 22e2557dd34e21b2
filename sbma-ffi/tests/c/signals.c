/* A program that installs its own SIGSEGV handler and an alternate signal
 * stack in storage-backed memory after SBMA_init (as Python's faulthandler
 * does) keeps paging: faults on evicted pages still reach sbma, the
 * program's handler sees the faults that are not sbma's (a write to a
 * read-only page it set up), sigaction and sigaltstack report what the
 * program installed, and a signal delivered on the alternate stack works
 * while every managed page is evicted. Exits 0 when every check passes. */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "sbma.h"
#include "check.h"

static sigjmp_buf back;
static volatile sig_atomic_t foreign_faults, usr1_seen;
static void *foreign;

static void on_segv(int sig, siginfo_t *info, void *ctx) {
    (void)sig;
    (void)ctx;
    if (info->si_addr == foreign) {
        foreign_faults++;
        siglongjmp(back, 1);
    }
    abort(); /* a fault sbma should have resolved reached the program */
}

static void on_usr1(int sig) {
    (void)sig;
    usr1_seen++;
}

int main(void) {
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    size_t budget_pages = (2u << 20) / (size_t)sysconf(_SC_PAGESIZE);
    CHECK(SBMA_init(dir, getpid(), 16384, 1, budget_pages, 0) == 0);

    /* The program's alternate stack and handlers, installed after sbma. */
    size_t stack_size = 64 << 10;
    void *stack_mem = SBMA_malloc(stack_size);
    CHECK(stack_mem != NULL);
    stack_t ss = {.ss_sp = stack_mem, .ss_size = stack_size, .ss_flags = 0};
    CHECK(sigaltstack(&ss, NULL) == 0);
    stack_t now;
    CHECK(sigaltstack(NULL, &now) == 0 && now.ss_sp == stack_mem && now.ss_size == stack_size);

    struct sigaction sa, old, seen;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGSEGV, &sa, &old) == 0);
    CHECK(old.sa_handler == SIG_DFL);
    CHECK(sigaction(SIGSEGV, NULL, &seen) == 0 && seen.sa_sigaction == on_segv);
    CHECK(signal(SIGUSR1, on_usr1) != SIG_ERR);
    struct sigaction usr;
    CHECK(sigaction(SIGUSR1, NULL, &usr) == 0);
    usr.sa_flags |= SA_ONSTACK;
    CHECK(sigaction(SIGUSR1, &usr, NULL) == 0);

    /* Paging still works: 8 MiB through a 2 MiB budget, twice. */
    size_t n = (8u << 20) / sizeof(uint64_t);
    uint64_t *x = SBMA_malloc(n * sizeof *x);
    CHECK(x != NULL);
    for (size_t i = 0; i < n; i++)
        x[i] = i * 0x9e3779b97f4a7c15u;
    CHECK(SBMA_mevictall() >= 0);
    /* A signal delivered on the alternate stack while everything is out. */
    CHECK(raise(SIGUSR1) == 0 && usr1_seen == 1);
    for (size_t i = 0; i < n; i++)
        CHECK(x[i] == i * 0x9e3779b97f4a7c15u);

    /* A fault that is not sbma's goes to the program's handler. */
    foreign = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(foreign != MAP_FAILED);
    if (sigsetjmp(back, 1) == 0)
        *(volatile char *)foreign = 1;
    CHECK(foreign_faults == 1);

    /* Handing SIGSEGV back to the default is recorded too. */
    CHECK(sigaction(SIGSEGV, &old, NULL) == 0);
    CHECK(sigaction(SIGSEGV, NULL, &seen) == 0 && seen.sa_handler == SIG_DFL);
    CHECK(SBMA_mevictall() >= 0);
    for (size_t i = 0; i < n; i++)
        CHECK(x[i] == i * 0x9e3779b97f4a7c15u);

    stack_t off = {.ss_flags = SS_DISABLE};
    CHECK(sigaltstack(&off, NULL) == 0);
    CHECK(SBMA_destroy() == 0);
    printf("signals: ok\n");
    return 0;
}
