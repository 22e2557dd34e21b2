/* Event waits, socket calls and other syscalls whose arguments sit in
 * evicted storage-backed memory, in a program linked with libsbma (no
 * preload shim): epoll_ctl/epoll_wait/epoll_pwait, poll/ppoll,
 * select/pselect, pipe/pipe2/socketpair, bind/connect/accept/getsockname/
 * getpeername over a Unix socket, getsockopt/setsockopt, statx,
 * getdents64, getrandom. Before each call the memory is evicted; each
 * result is checked. Exits 0 when every check passes. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "sbma.h"
#include "check.h"

/* Evicts everything, so the next kernel access meets evicted pages. */
#define EVICT() CHECK(SBMA_mevictall() >= 0)

int main(void) {
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    size_t budget_pages = (2u << 20) / (size_t)sysconf(_SC_PAGESIZE);
    CHECK(SBMA_init(dir, getpid(), 16384, 1, budget_pages, 0) == 0);

    /* pipe and pipe2 write their descriptors into managed memory. */
    int *fds = SBMA_malloc(4 * sizeof(int));
    CHECK(fds != NULL);
    fds[0] = fds[1] = -1;
    EVICT();
    CHECK(pipe(fds) == 0 && fds[0] >= 0 && fds[1] >= 0);
    EVICT();
    CHECK(pipe2(fds + 2, O_CLOEXEC) == 0 && fds[2] >= 0 && fds[3] >= 0);
    CHECK(write(fds[1], "x", 1) == 1);

    /* epoll: the event to add and the result array are managed. */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    struct epoll_event *ev = SBMA_malloc(300 * sizeof *ev);
    CHECK(ev != NULL);
    ev[0].events = EPOLLIN;
    ev[0].data.u64 = 0x5eed;
    EVICT();
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fds[0], &ev[0]) == 0);
    memset(ev, 0, 300 * sizeof *ev);
    EVICT();
    CHECK(epoll_wait(ep, ev, 300, 1000) == 1);
    CHECK(ev[0].events == EPOLLIN && ev[0].data.u64 == 0x5eed);
    memset(ev, 0, sizeof *ev);
    sigset_t *mask = SBMA_malloc(sizeof *mask);
    CHECK(mask != NULL);
    sigemptyset(mask);
    EVICT();
    CHECK(epoll_pwait(ep, ev, 1, 1000, mask) == 1 && ev[0].data.u64 == 0x5eed);

    /* poll and ppoll: the kernel reads the array and writes revents. */
    struct pollfd *p = SBMA_malloc(2 * sizeof *p);
    CHECK(p != NULL);
    p[0] = (struct pollfd){.fd = fds[0], .events = POLLIN};
    p[1] = (struct pollfd){.fd = fds[3], .events = POLLOUT};
    EVICT();
    CHECK(poll(p, 2, 1000) == 2);
    CHECK(p[0].revents == POLLIN && p[1].revents == POLLOUT && p[0].fd == fds[0]);
    struct timespec *ts = SBMA_malloc(sizeof *ts);
    CHECK(ts != NULL);
    *ts = (struct timespec){.tv_sec = 1};
    p[0].revents = p[1].revents = 0;
    EVICT();
    CHECK(ppoll(p, 2, ts, mask) == 2 && p[0].revents == POLLIN && p[1].revents == POLLOUT);

    /* select and pselect: the sets are read and rewritten. */
    fd_set *sets = SBMA_malloc(2 * sizeof(fd_set));
    struct timeval *tv = SBMA_malloc(sizeof *tv);
    CHECK(sets != NULL && tv != NULL);
    FD_ZERO(&sets[0]);
    FD_ZERO(&sets[1]);
    FD_SET(fds[0], &sets[0]);
    FD_SET(fds[2], &sets[0]); /* nothing to read there */
    FD_SET(fds[3], &sets[1]);
    *tv = (struct timeval){.tv_sec = 1};
    EVICT();
    CHECK(select(fds[3] + 1, &sets[0], &sets[1], NULL, tv) == 2);
    CHECK(FD_ISSET(fds[0], &sets[0]) && !FD_ISSET(fds[2], &sets[0]) && FD_ISSET(fds[3], &sets[1]));
    FD_SET(fds[2], &sets[0]);
    EVICT();
    CHECK(pselect(fds[3] + 1, &sets[0], NULL, NULL, ts, mask) == 1);
    CHECK(FD_ISSET(fds[0], &sets[0]) && !FD_ISSET(fds[2], &sets[0]));

    /* A Unix socket: addresses, lengths and options in managed memory. */
    int *pair = SBMA_malloc(2 * sizeof(int));
    CHECK(pair != NULL);
    EVICT();
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0 && pair[0] >= 0 && pair[1] >= 0);
    struct sockaddr_un *addr = SBMA_malloc(3 * sizeof *addr);
    socklen_t *len = SBMA_malloc(sizeof *len);
    CHECK(addr != NULL && len != NULL);
    memset(addr, 0, 3 * sizeof *addr);
    addr[0].sun_family = AF_UNIX;
    snprintf(addr[0].sun_path, sizeof addr[0].sun_path, "%s/sbma-waits-%d.sock", dir,
             (int)getpid());
    unlink(addr[0].sun_path);
    int server = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(server >= 0);
    EVICT();
    CHECK(bind(server, (struct sockaddr *)&addr[0], sizeof addr[0]) == 0);
    CHECK(listen(server, 1) == 0);
    int client = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(client >= 0);
    EVICT();
    CHECK(connect(client, (struct sockaddr *)&addr[0], sizeof addr[0]) == 0);
    *len = sizeof addr[1];
    EVICT();
    int conn = accept(server, (struct sockaddr *)&addr[1], len);
    CHECK(conn >= 0 && addr[1].sun_family == AF_UNIX);
    *len = sizeof addr[2];
    EVICT();
    CHECK(getsockname(server, (struct sockaddr *)&addr[2], len) == 0);
    CHECK(strcmp(addr[2].sun_path, addr[0].sun_path) == 0);
    *len = sizeof addr[2];
    memset(&addr[2], 0, sizeof addr[2]);
    EVICT();
    CHECK(getpeername(client, (struct sockaddr *)&addr[2], len) == 0);
    CHECK(strcmp(addr[2].sun_path, addr[0].sun_path) == 0);
    int *opt = SBMA_malloc(sizeof *opt);
    CHECK(opt != NULL);
    *opt = 65536;
    EVICT();
    CHECK(setsockopt(client, SOL_SOCKET, SO_SNDBUF, opt, sizeof *opt) == 0);
    *opt = 0;
    *len = sizeof *opt;
    EVICT();
    CHECK(getsockopt(client, SOL_SOCKET, SO_SNDBUF, opt, len) == 0);
    CHECK(*opt >= 65536 && *len == sizeof *opt);
    unlink(addr[0].sun_path);

    /* statx, getdents64 and getrandom write into managed memory. */
    struct statx *stx = SBMA_malloc(sizeof *stx);
    CHECK(stx != NULL);
    EVICT();
    CHECK(statx(AT_FDCWD, dir, 0, STATX_TYPE, stx) == 0 && S_ISDIR(stx->stx_mode));
    char *dents = SBMA_malloc(64 << 10);
    CHECK(dents != NULL);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    CHECK(dfd >= 0);
    EVICT();
    ssize_t got = getdents64(dfd, dents, 64 << 10);
    CHECK(got > 0);
    int dot = 0;
    for (ssize_t off = 0; off < got;) {
        struct dirent64 *d = (struct dirent64 *)(dents + off);
        dot |= strcmp(d->d_name, ".") == 0;
        off += d->d_reclen;
    }
    CHECK(dot);
    unsigned char *rnd = SBMA_malloc(1 << 20);
    CHECK(rnd != NULL);
    memset(rnd, 0, 1 << 20);
    EVICT();
    CHECK(getrandom(rnd, 1 << 20, 0) == 1 << 20);
    size_t zeros = 0;
    for (size_t i = 0; i < 1 << 20; i++)
        zeros += rnd[i] == 0;
    CHECK(zeros < 8192); /* about 4096 expected from random bytes */

    CHECK(SBMA_destroy() == 0);
    printf("waits: ok\n");
    return 0;
}
