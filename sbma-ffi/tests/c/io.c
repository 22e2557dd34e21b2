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
#include <sys/stat.h>
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
