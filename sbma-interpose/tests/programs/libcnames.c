/* glibc's own allocator names under the shim: __libc_malloc, calloc,
 * realloc, memalign, valloc, pvalloc give sbma's memory (mallinfo2, which
 * the shim answers for sbma, counts it), work as malloc's do, and
 * __libc_free returns it. Prints "libc names: ok <bytes held>". */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void *__libc_memalign(size_t, size_t);
void *__libc_valloc(size_t);
void *__libc_pvalloc(size_t);
void __libc_free(void *);

#define CHECK(c)                                                          \
    do {                                                                  \
        if (!(c)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,        \
                    __LINE__, #c);                                        \
            return 1;                                                     \
        }                                                                 \
    } while (0)

int main(void) {
    size_t before = mallinfo2().uordblks;
    size_t n = 8u << 20;
    unsigned char *a = __libc_malloc(n);
    CHECK(a != NULL);
    memset(a, 0x5a, n);
    unsigned char *b = __libc_calloc(n / 8, 8);
    CHECK(b != NULL);
    for (size_t i = 0; i < n; i += 4096)
        CHECK(b[i] == 0);
    void *c = __libc_memalign(1 << 16, 4096);
    CHECK(c != NULL && (uintptr_t)c % (1 << 16) == 0);
    void *d = __libc_valloc(100);
    void *e = __libc_pvalloc(100);
    CHECK(d != NULL && e != NULL && (uintptr_t)d % 4096 == 0 && (uintptr_t)e % 4096 == 0);
    size_t held = mallinfo2().uordblks - before;
    CHECK(held >= 2 * n);
    a = __libc_realloc(a, 2 * n);
    CHECK(a != NULL && a[0] == 0x5a && a[n - 1] == 0x5a);
    /* Blocks from the __libc_ names and from malloc are one heap. */
    free(b);
    __libc_free(a);
    __libc_free(c);
    free(d);
    __libc_free(e);
    void *f = malloc(1000);
    __libc_free(f);
    CHECK(mallinfo2().uordblks <= before + 4096);
    printf("libc names: ok %zu\n", held);
    return 0;
}
