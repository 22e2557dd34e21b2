/* Plain libc I/O on storage-backed memory, in a program linked with
 * libsbma (no preload shim): read, pread, fread, fgets, write, pwrite,
 * fwrite, stat and fstat into or out of evicted buffers, a pipe (whose bytes
 * would be lost on EFAULT), a short read that must keep the bytes beyond it,
 * and a transfer larger than the budget. Exits 0 when every check passes. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include "sbma.h"
#include "check.h"

static unsigned char pattern(size_t i) { return (unsigned char)(i * 7 + 3); }

int main(void) {
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    size_t budget_pages = (2u << 20) / (size_t)sysconf(_SC_PAGESIZE); /* 2 MiB */
    CHECK(SBMA_init(dir, getpid(), 16384, 1, budget_pages, 0) == 0);

    /* A file of 8 MiB (4x the budget) written from a plain buffer. */
    size_t n = 8u << 20;
    unsigned char *plain = malloc(n);
    for (size_t i = 0; i < n; i++)
        plain[i] = pattern(i);
    char path[4096];
    snprintf(path, sizeof path, "%s/sbma-io-%d", dir, (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK(write(fd, plain, n) == (ssize_t)n);

    /* read(2) into an evicted SBMA buffer larger than the budget. */
    unsigned char *buf = SBMA_malloc(n);
    memset(buf, 0, n);
    CHECK(SBMA_mevictall() > 0);
    CHECK(lseek(fd, 0, SEEK_SET) == 0);
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        CHECK(r > 0);
        got += (size_t)r;
    }
    CHECK(memcmp(buf, plain, n) == 0);

    /* Which backend runs: a raw syscall (no wrapper) into an evicted page
     * meets EFAULT under the signal backend and just works under uffd. */
    SBMA_mevictall();
    long raw = syscall(SYS_pread64, fd, buf, 16, 0);
    if (raw == -1 && errno == EFAULT) {
        printf("backend signal\n");
    } else {
        CHECK(raw == 16 && memcmp(buf, plain, 16) == 0);
        printf("backend uffd\n");
    }

    /* readv/preadv into two evicted pieces, writev/pwritev out of them. */
    memset(buf, 0x11, 200000);
    SBMA_mevictall();
    struct iovec iov[2] = {{buf + 10, 50000}, {buf + 100000, 70000}};
    CHECK(lseek(fd, 777, SEEK_SET) == 777);
    CHECK(readv(fd, iov, 2) == 120000);
    CHECK(memcmp(buf + 10, plain + 777, 50000) == 0);
    CHECK(memcmp(buf + 100000, plain + 777 + 50000, 70000) == 0);
    CHECK(buf[9] == 0x11 && buf[50010] == 0x11 && buf[170000] == 0x11);
    SBMA_mevictall();
    CHECK(preadv(fd, iov, 2, 4096) == 120000);
    CHECK(memcmp(buf + 100000, plain + 4096 + 50000, 70000) == 0);
    SBMA_mevictall();
    char vpath[4096];
    snprintf(vpath, sizeof vpath, "%s/sbma-iov-%d", dir, (int)getpid());
    int vfd = open(vpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(vfd >= 0);
    unlink(vpath);
    CHECK(writev(vfd, iov, 2) == 120000);
    SBMA_mevictall();
    CHECK(pwritev(vfd, iov, 2, 120000) == 120000);
    unsigned char *vback = malloc(240000);
    CHECK(pread(vfd, vback, 240000, 0) == 240000);
    CHECK(memcmp(vback, plain + 4096, 120000) == 0 && memcmp(vback + 120000, plain + 4096, 120000) == 0);
    free(vback);
    close(vfd);

    /* recvmsg/sendmsg and recvfrom/sendto on a socket pair. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(send(sv[0], plain, 30000, 0) == 30000);
    memset(buf, 0, 200000);
    SBMA_mevictall();
    struct iovec riov[2] = {{buf + 5, 10000}, {buf + 150000, 20000}};
    struct msghdr mh = {0};
    mh.msg_iov = riov;
    mh.msg_iovlen = 2;
    CHECK(recvmsg(sv[1], &mh, MSG_WAITALL) == 30000);
    CHECK(memcmp(buf + 5, plain, 10000) == 0 && memcmp(buf + 150000, plain + 10000, 20000) == 0);
    SBMA_mevictall();
    CHECK(sendmsg(sv[1], &mh, 0) == 30000);
    unsigned char *echo = malloc(30000);
    CHECK(recv(sv[0], echo, 30000, MSG_WAITALL) == 30000);
    CHECK(memcmp(echo, plain, 30000) == 0);
    SBMA_mevictall();
    CHECK(sendto(sv[1], buf + 150000, 20000, 0, NULL, 0) == 20000);
    CHECK(recvfrom(sv[0], echo, 20000, MSG_WAITALL, NULL, NULL) == 20000);
    CHECK(memcmp(echo, plain + 10000, 20000) == 0);
    CHECK(send(sv[0], plain, 5000, 0) == 5000);
    SBMA_mevictall();
    CHECK(recvfrom(sv[1], buf + 7, 5000, MSG_WAITALL, NULL, NULL) == 5000);
    CHECK(memcmp(buf + 7, plain, 5000) == 0);
    free(echo);
    close(sv[0]);
    close(sv[1]);

    /* pread of 1 MiB at an offset, into evicted memory. */
    CHECK(SBMA_mevictall() >= 0);
    memset(buf, 0x55, 1 << 20);
    SBMA_mevictall();
    CHECK(pread(fd, buf, 1 << 20, 12345) == (1 << 20));
    CHECK(memcmp(buf, plain + 12345, 1 << 20) == 0);

    /* A short read keeps the bytes beyond it. */
    memset(buf, 0xEE, 100000);
    SBMA_mevictall();
    CHECK(pread(fd, buf, 100000, (off_t)n - 1000) == 1000);
    CHECK(memcmp(buf, plain + n - 1000, 1000) == 0);
    for (size_t i = 1000; i < 100000; i++)
        CHECK(buf[i] == 0xEE);

    /* write(2) and pwrite(2) from evicted SBMA memory. */
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)~pattern(i);
    SBMA_mevictall();
    CHECK(pwrite(fd, buf, n, 0) == (ssize_t)n);
    CHECK(pread(fd, plain, n, 0) == (ssize_t)n);
    for (size_t i = 0; i < n; i++)
        CHECK(plain[i] == (unsigned char)~pattern(i));

    /* A pipe: bytes read into evicted memory must not be lost. */
    int p[2];
    CHECK(pipe(p) == 0);
    const char msg[] = "through the pipe into storage-backed memory";
    CHECK(write(p[1], msg, sizeof msg) == (ssize_t)sizeof msg);
    SBMA_mevictall();
    CHECK(read(p[0], buf, 4096) == (ssize_t)sizeof msg);
    CHECK(memcmp(buf, msg, sizeof msg) == 0);
    close(p[0]);
    close(p[1]);

    /* stdio: fwrite from and fread/fgets into evicted memory. */
    FILE *f = fopen(path, "w+");
    CHECK(f != NULL);
    for (size_t i = 0; i < n; i++)
        buf[i] = pattern(i);
    SBMA_mevictall();
    CHECK(fwrite(buf, 1024, n / 1024, f) == n / 1024);
    CHECK(fflush(f) == 0 && fseek(f, 0, SEEK_SET) == 0);
    memset(buf, 0, n);
    SBMA_mevictall();
    CHECK(fread(buf, 4096, n / 4096, f) == n / 4096);
    for (size_t i = 0; i < n; i++)
        CHECK(buf[i] == pattern(i));
    CHECK(fseek(f, 0, SEEK_SET) == 0 && fputs("first line\nsecond\n", f) >= 0);
    CHECK(fflush(f) == 0 && fseek(f, 0, SEEK_SET) == 0);
    char *line = SBMA_malloc(64 << 10);
    SBMA_mevictall();
    CHECK(fgets(line, 64 << 10, f) == line && strcmp(line, "first line\n") == 0);
    fclose(f);

    /* stat into evicted memory, with the path in SBMA memory too. */
    struct stat *st = SBMA_malloc(sizeof *st);
    char *spath = SBMA_malloc(strlen(path) + 1);
    strcpy(spath, path);
    memset(st, 0, sizeof *st);
    SBMA_mevictall();
    CHECK(stat(spath, st) == 0 && st->st_size == (off_t)n);
    memset(st, 0, sizeof *st);
    SBMA_mevictall();
    CHECK(fstat(fd, st) == 0 && st->st_size == (off_t)n);
    SBMA_mevictall();
    CHECK(lstat(spath, st) == 0 && S_ISREG(st->st_mode));

    close(fd);
    unlink(path);
    struct mallinfo mi = SBMA_mallinfo();
    CHECK((size_t)mi.hblkhd <= budget_pages);
    SBMA_free(buf);
    SBMA_free(line);
    SBMA_free(st);
    SBMA_free(spath);
    free(plain);
    CHECK(SBMA_destroy() == 0);
    printf("libc I/O: ok\n");
    return 0;
}
