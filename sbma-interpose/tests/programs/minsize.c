/* Prints how many bytes of live blocks sbma holds (mallinfo2().uordblks
 * under the shim) after allocating 10,000 blocks of 100 bytes and 10 of
 * 1 MiB. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    void *small[10000], *large[10];
    for (int i = 0; i < 10000; i++) {
        small[i] = malloc(100);
        memset(small[i], i, 100);
    }
    for (int i = 0; i < 10; i++) {
        large[i] = malloc(1 << 20);
        memset(large[i], i, 1 << 20);
    }
    struct mallinfo2 m = mallinfo2();
    printf("%zu\n", m.uordblks);
    for (int i = 0; i < 10000; i++)
        free(small[i]);
    for (int i = 0; i < 10; i++)
        free(large[i]);
    return 0;
}
