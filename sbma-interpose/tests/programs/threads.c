/* Threads created while the heap is being pushed out: glibc allocates a
 * new thread's TLS vector with calloc and reads it while the thread's
 * signals are still blocked, so that memory must never need a fault. Each
 * round evicts everything by writing more than the budget, then starts and
 * joins threads that use the heap. Prints a checksum. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static __thread long tls_counter;

static void *work(void *arg) {
    long *v = arg;
    tls_counter += *v;
    char *p = malloc(4096);
    memset(p, (int)*v, 4096);
    long s = p[100] + tls_counter;
    free(p);
    *v = s;
    return NULL;
}

int main(void) {
    long total = 0;
    for (int round = 0; round < 40; round++) {
        /* 12 MiB of fresh writes: more than the 8 MiB budget. */
        char *junk = malloc(12 << 20);
        memset(junk, round, 12 << 20);
        pthread_t t[4];
        long v[4];
        for (int i = 0; i < 4; i++) {
            v[i] = round + i;
            if (pthread_create(&t[i], NULL, work, &v[i]) != 0)
                return 2;
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(t[i], NULL);
            total += v[i];
        }
        total += junk[(12 << 20) - 1];
        free(junk);
    }
    printf("total %ld\n", total);
    return 0;
}
