/* An ordinary C program (it knows nothing of sbma) whose heap is several
 * times the budget it runs under: many small and large blocks, realloc,
 * calloc, the alignment family, malloc_usable_size, threads freeing each
 * other's blocks, read(2) into heap memory, fork. Prints a checksum; exits
 * non-zero on any mismatch. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(c)                                                          \
    do {                                                                  \
        if (!(c)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
            exit(1);                                                      \
        }                                                                 \
    } while (0)

#define NSMALL 400000
#define NLARGE 64

static uint64_t mix(uint64_t x) { x ^= x >> 31; x *= 0x9E3779B97F4A7C15ull; return x ^ (x >> 29); }

static void *worker(void *arg) {
    /* Frees the blocks handed over and allocates its own. */
    char **blocks = arg;
    for (int i = 0; i < 1000; i++) {
        CHECK(blocks[i][0] == (char)i);
        free(blocks[i]);
    }
    void *mine[1000];
    for (int i = 0; i < 1000; i++) {
        mine[i] = malloc(64 + i);
        memset(mine[i], i, 64 + i);
    }
    return mine[0] != NULL ? blocks : NULL; /* leak `mine` on purpose: exit frees all */
}

int main(void) {
    uint64_t sum = 0;
    /* Small blocks: 400k of 16-200 bytes (~40 MB with headers). */
    char **small = malloc(NSMALL * sizeof *small);
    for (int i = 0; i < NSMALL; i++) {
        size_t n = 16 + (size_t)(mix((uint64_t)i) % 185);
        small[i] = malloc(n);
        CHECK(small[i] != NULL && malloc_usable_size(small[i]) >= n);
        memset(small[i], (int)(i & 0xFF), n);
    }
    /* Large blocks: 64 of 1 MiB, half by calloc. */
    unsigned char *large[NLARGE];
    for (int i = 0; i < NLARGE; i++) {
        large[i] = (i & 1) ? calloc(1, 1 << 20) : malloc(1 << 20);
        CHECK(large[i] != NULL);
        if (i & 1)
            for (int j = 0; j < (1 << 20); j += 4096)
                CHECK(large[i][j] == 0);
        for (int j = 0; j < (1 << 20); j++)
            large[i][j] = (unsigned char)(j * 31 + i);
    }
    /* Check everything after the rest pushed it out. */
    for (int i = 0; i < NSMALL; i++) {
        CHECK(small[i][0] == (char)(i & 0xFF));
        sum += (unsigned char)small[i][0];
    }
    for (int i = 0; i < NLARGE; i++)
        for (int j = 0; j < (1 << 20); j += 997) {
            CHECK(large[i][j] == (unsigned char)(j * 31 + i));
            sum += large[i][j];
        }
    /* realloc keeps contents, growing and shrinking. */
    large[0] = realloc(large[0], 3 << 20);
    CHECK(large[0] != NULL && large[0][12345] == (unsigned char)(12345 * 31));
    small[0] = realloc(small[0], 5000);
    CHECK(small[0][0] == 0);
    /* Alignment family. */
    void *p = NULL;
    CHECK(posix_memalign(&p, 4096, 100) == 0 && ((uintptr_t)p & 4095) == 0);
    free(p);
    p = aligned_alloc(64, 640);
    CHECK(p != NULL && ((uintptr_t)p & 63) == 0);
    free(p);
    p = memalign(256, 10);
    CHECK(p != NULL && ((uintptr_t)p & 255) == 0);
    free(p);
    /* read(2) into heap memory that may be evicted. */
    int fd = open("/proc/self/exe", O_RDONLY);
    CHECK(fd >= 0);
    unsigned char *buf = malloc(4 << 20);
    ssize_t got = read(fd, buf, 4 << 20);
    CHECK(got > 1000 && buf[0] == 0x7f && buf[1] == 'E');
    close(fd);
    /* Threads free each other's blocks. */
    pthread_t t[2];
    char **handed[2];
    for (int k = 0; k < 2; k++) {
        handed[k] = malloc(1000 * sizeof(char *));
        for (int i = 0; i < 1000; i++) {
            handed[k][i] = malloc(32);
            handed[k][i][0] = (char)i;
        }
        CHECK(pthread_create(&t[k], NULL, worker, handed[k]) == 0);
    }
    for (int k = 0; k < 2; k++)
        CHECK(pthread_join(t[k], NULL) == 0);
    /* fork: the child allocates and works with new memory and exits
     * cleanly (fork.c has children reading the inherited heap). */
    pid_t pid = fork();
    if (pid == 0) {
        char *c = malloc(1 << 20);
        memset(c, 7, 1 << 20);
        char *d = strdup("child");
        _exit(c[12345] == 7 && strcmp(d, "child") == 0 ? 0 : 3);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (int i = 0; i < NSMALL; i++)
        free(small[i]);
    free(small);
    for (int i = 0; i < NLARGE; i++)
        free(large[i]);
    free(buf);
    printf("checksum %llu\n", (unsigned long long)sum);
    return 0;
}
