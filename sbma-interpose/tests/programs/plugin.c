/* A library loaded with dlopen by lifecycle.c: its constructor allocates
 * and fills a table on the heap, its destructor checks and frees it, and
 * it frees at unload a block its loader handed over. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define WORDS (1 << 20) /* 8 MiB */

static uint64_t *table;
static void *adopted;

__attribute__((constructor)) static void load(void) {
    table = malloc(WORDS * sizeof(uint64_t));
    if (!table)
        abort();
    for (uint64_t i = 0; i < WORDS; i++)
        table[i] = i * 0x9E3779B97F4A7C15ull;
}

uint64_t plugin_sum(void) {
    uint64_t s = 0;
    for (uint64_t i = 0; i < WORDS; i++)
        s += table[i] ^ (i << 3);
    return s;
}

void plugin_adopt(void *p) { adopted = p; }

__attribute__((destructor)) static void unload(void) {
    for (uint64_t i = 0; i < WORDS; i++)
        if (table[i] != i * 0x9E3779B97F4A7C15ull) {
            fprintf(stderr, "plugin: word %llu changed\n", (unsigned long long)i);
            abort();
        }
    free(table);
    free(adopted);
}
