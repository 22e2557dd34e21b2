/* Calls that take paths, with every path (and argument vector) in evicted
 * storage-backed memory, in a program linked with libsbma: open, openat,
 * creat, access, faccessat, rename, renameat, link, symlink, readlinkat,
 * chmod, truncate, utimensat, statfs, mkdir, opendir, fopen, mkstemp,
 * mkdtemp, unlink, unlinkat, rmdir, chdir, system, posix_spawn. Exits 0
 * when every check passes. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include "sbma.h"
#include "check.h"

#define EVICT() CHECK(SBMA_mevictall() >= 0)

extern char **environ;

/* A copy of `s` in SBMA memory. */
static char *managed(const char *s) {
    char *m = SBMA_malloc(strlen(s) + 1);
    if (m)
        strcpy(m, s);
    return m;
}

int main(void) {
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    size_t budget_pages = (2u << 20) / (size_t)sysconf(_SC_PAGESIZE);
    CHECK(SBMA_init(dir, getpid(), 16384, 1, budget_pages, 0) == 0);
    char buf[4096];

    snprintf(buf, sizeof buf, "%s/sbma-paths-%d", dir, (int)getpid());
    char *base = managed(buf);
    CHECK(base != NULL);
    EVICT();
    CHECK(mkdir(base, 0700) == 0);
    snprintf(buf, sizeof buf, "%s/a", base);
    char *a = managed(buf);
    snprintf(buf, sizeof buf, "%s/b", base);
    char *b = managed(buf);
    snprintf(buf, sizeof buf, "%s/c", base);
    char *c = managed(buf);
    snprintf(buf, sizeof buf, "%s/link", base);
    char *l = managed(buf);
    snprintf(buf, sizeof buf, "%s/d", base);
    char *d = managed(buf);
    char *rel = managed("b");
    CHECK(a && b && c && l && d && rel);

    EVICT();
    int fd = open(a, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    CHECK(fd >= 0 && write(fd, "hello", 5) == 5 && close(fd) == 0);
    EVICT();
    CHECK(access(a, R_OK) == 0);
    EVICT();
    CHECK(faccessat(AT_FDCWD, a, R_OK, 0) == 0);
    EVICT();
    CHECK(rename(a, b) == 0 && access(a, F_OK) != 0);
    int dfd = open(base, O_RDONLY | O_DIRECTORY);
    CHECK(dfd >= 0);
    EVICT();
    fd = openat(dfd, rel, O_RDONLY);
    CHECK(fd >= 0 && read(fd, buf, 5) == 5 && memcmp(buf, "hello", 5) == 0 && close(fd) == 0);
    EVICT();
    CHECK(link(b, c) == 0);
    EVICT();
    CHECK(symlink(b, l) == 0);
    char *target = SBMA_malloc(4096);
    CHECK(target != NULL);
    memset(target, 0, 4096);
    EVICT();
    ssize_t n = readlinkat(AT_FDCWD, l, target, 4096);
    CHECK(n == (ssize_t)strlen(b) && memcmp(target, b, (size_t)n) == 0);
    EVICT();
    CHECK(chmod(b, 0640) == 0);
    EVICT();
    CHECK(truncate(b, 3) == 0);
    struct stat st;
    CHECK(stat(c, &st) == 0 && st.st_size == 3 && (st.st_mode & 0777) == 0640);
    struct timespec *times = SBMA_malloc(2 * sizeof *times);
    CHECK(times != NULL);
    times[0] = times[1] = (struct timespec){.tv_sec = 1000000000};
    EVICT();
    CHECK(utimensat(AT_FDCWD, b, times, 0) == 0);
    CHECK(stat(b, &st) == 0 && st.st_mtime == 1000000000);
    struct statfs *fs = SBMA_malloc(sizeof *fs);
    CHECK(fs != NULL);
    EVICT();
    CHECK(statfs(b, fs) == 0 && fs->f_bsize > 0);
    EVICT();
    CHECK(renameat(dfd, rel, AT_FDCWD, a) == 0);

    /* libc's own users of paths. */
    char *mode = managed("r");
    EVICT();
    FILE *f = fopen(a, mode);
    CHECK(f != NULL && fread(buf, 1, 3, f) == 3 && memcmp(buf, "hel", 3) == 0);
    fclose(f);
    EVICT();
    DIR *dp = opendir(base);
    CHECK(dp != NULL);
    int entries = 0;
    while (readdir(dp))
        entries++;
    closedir(dp);
    CHECK(entries == 5); /* ., .., a, c, link */
    snprintf(buf, sizeof buf, "%s/tmpXXXXXX", base);
    char *tmpl = managed(buf);
    EVICT();
    fd = mkstemp(tmpl);
    CHECK(fd >= 0 && strstr(tmpl, "XXXXXX") == NULL && close(fd) == 0);
    EVICT();
    CHECK(unlink(tmpl) == 0);
    snprintf(buf, sizeof buf, "%s/dirXXXXXX", base);
    char *dtmpl = managed(buf);
    EVICT();
    CHECK(mkdtemp(dtmpl) == dtmpl && strstr(dtmpl, "XXXXXX") == NULL);
    EVICT();
    CHECK(rmdir(dtmpl) == 0);

    /* chdir into the directory and back. */
    char cwd[4096];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    EVICT();
    CHECK(chdir(base) == 0 && access("a", F_OK) == 0 && chdir(cwd) == 0);

    /* A command and an argument vector in managed memory. */
    snprintf(buf, sizeof buf, "test -e %s", a);
    char *cmd = managed(buf);
    EVICT();
    CHECK(system(cmd) == 0);
    char **argv = SBMA_malloc(4 * sizeof(char *));
    CHECK(argv != NULL);
    argv[0] = managed("test");
    argv[1] = managed("-e");
    argv[2] = c;
    argv[3] = NULL;
    char *prog = managed("/usr/bin/test");
    pid_t pid;
    EVICT();
    CHECK(posix_spawn(&pid, prog, NULL, NULL, argv, environ) == 0);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* Clean up, paths still managed. */
    EVICT();
    CHECK(unlink(a) == 0 && unlink(c) == 0);
    EVICT();
    CHECK(unlinkat(dfd, managed("link"), 0) == 0);
    close(dfd);
    EVICT();
    CHECK(rmdir(base) == 0);
    EVICT();
    fd = creat(d, 0600);
    CHECK(fd < 0 && errno == ENOENT); /* the directory is gone */

    CHECK(SBMA_destroy() == 0);
    printf("paths: ok\n");
    return 0;
}
