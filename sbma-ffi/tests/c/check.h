/* CHECK(cond): on failure, print the condition, file, line and errno, and
 * make the test program exit 1. */
#ifndef SBMA_TEST_CHECK_H
#define SBMA_TEST_CHECK_H
#include <errno.h>
#include <stdio.h>

#define CHECK(c)                                                          \
    do {                                                                  \
        if (!(c)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s (errno %d)\n",       \
                    __FILE__, __LINE__, #c, errno);                       \
            return 1;                                                     \
        }                                                                 \
    } while (0)

#endif
