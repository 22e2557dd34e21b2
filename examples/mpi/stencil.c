/*
 * stencil: Jacobi relaxation of the 2-D heat equation on a ROWS x COLS grid
 * of doubles, the rows split across the MPI ranks; an out-of-core example
 * for sbma's shared budgets (issue 7, docs/mpi.md).
 *
 *   mpicc -O2 -o stencil examples/mpi/stencil.c -ldl
 *   mpirun -np 4 sbma run --group G --budget 512M -- ./stencil 16384 8192 4
 *
 * Each rank holds its rows plus two halo rows in two arrays (the current
 * and the next grid), allocated with plain malloc: under `sbma run` they are
 * storage-backed, and the ranks of one group share the budget. An
 * iteration exchanges halo rows with the neighbour ranks (MPI_Sendrecv),
 * then computes every interior cell as the mean of its four neighbours:
 * a full sequential read of one array and write of the other.
 *
 * While it waits inside MPI, a rank declares itself blocked with
 * SBMA_sigon/SBMA_sigoff, looked up at run time (dlsym), so the same binary
 * runs without sbma: blocked ranks give memory to running ones first, the
 * BDMPI model of many ranks and few running. STENCIL_NO_BLOCKED=1 skips
 * the declarations (to measure what they bring).
 *
 * The result is a checksum of every cell of the final grid (a 64-bit
 * wrapping sum of a hash of each value and its position): the same for any
 * number of ranks, with or without sbma, so a lost or misplaced page shows.
 * Every rank also checks its halo rows against the boundary values they
 * must hold at the edges of the grid.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int (*sigon)(void);
static int (*sigoff)(void);

static uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9u;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

/* The starting temperature of cell (i, j): in [0, 1). */
static double initial(uint64_t i, uint64_t j, uint64_t cols) {
    return (double)(mix(i * cols + j + 1) >> 11) * 0x1p-53;
}

/* Waiting inside MPI: declare it, so a shared budget takes memory from
 * this rank before the running ones. */
static void blocked(int on) {
    if (on && sigon)
        sigon();
    if (!on && sigoff)
        sigoff();
}

static uint64_t parse(const char *s, const char *what) {
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v == 0) {
        fprintf(stderr, "stencil: %s `%s`: expected a positive integer\n", what, s);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return v;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc != 4) {
        if (rank == 0)
            fprintf(stderr, "usage: stencil ROWS COLS ITERATIONS\n");
        MPI_Finalize();
        return 2;
    }
    uint64_t rows = parse(argv[1], "ROWS"), cols = parse(argv[2], "COLS");
    uint64_t iters = parse(argv[3], "ITERATIONS");
    if (rows < (uint64_t)size || cols < 3) {
        if (rank == 0)
            fprintf(stderr, "stencil: need at least one row per rank and 3 columns\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (!getenv("STENCIL_NO_BLOCKED")) {
        *(void **)&sigon = dlsym(RTLD_DEFAULT, "SBMA_sigon");
        *(void **)&sigoff = dlsym(RTLD_DEFAULT, "SBMA_sigoff");
    }

    /* Rows [first, first + mine) are this rank's; local row 0 and mine + 1
     * are the halos. */
    uint64_t first = rows * (uint64_t)rank / (uint64_t)size;
    uint64_t mine = rows * (uint64_t)(rank + 1) / (uint64_t)size - first;
    size_t bytes = (size_t)(mine + 2) * cols * sizeof(double);
    double *cur = malloc(bytes), *next = malloc(bytes);
    if (!cur || !next) {
        fprintf(stderr, "stencil: rank %d: cannot allocate 2 x %zu bytes\n", rank, bytes);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int up = rank > 0 ? rank - 1 : MPI_PROC_NULL;
    int down = rank < size - 1 ? rank + 1 : MPI_PROC_NULL;

    double t0 = MPI_Wtime();
    for (uint64_t l = 1; l <= mine; l++)
        for (uint64_t j = 0; j < cols; j++)
            cur[l * cols + j] = initial(first + l - 1, j, cols);
    /* Halos outside the grid (first and last rank) stay unused. */
    memset(cur, 0, cols * sizeof(double));
    memset(cur + (mine + 1) * cols, 0, cols * sizeof(double));
    MPI_Barrier(MPI_COMM_WORLD);
    double t1 = MPI_Wtime();

    for (uint64_t it = 0; it < iters; it++) {
        blocked(1);
        MPI_Sendrecv(cur + cols, (int)cols, MPI_DOUBLE, up, 0, cur + (mine + 1) * cols,
                     (int)cols, MPI_DOUBLE, down, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Sendrecv(cur + mine * cols, (int)cols, MPI_DOUBLE, down, 1, cur, (int)cols,
                     MPI_DOUBLE, up, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        blocked(0);
        for (uint64_t l = 1; l <= mine; l++) {
            uint64_t g = first + l - 1;
            const double *c = cur + l * cols;
            double *n = next + l * cols;
            if (g == 0 || g == rows - 1) {
                memcpy(n, c, cols * sizeof(double));
                continue;
            }
            n[0] = c[0];
            for (uint64_t j = 1; j < cols - 1; j++)
                n[j] = 0.25 * (c[j - cols] + c[j + cols] + c[j - 1] + c[j + 1]);
            n[cols - 1] = c[cols - 1];
        }
        double *t = cur;
        cur = next;
        next = t;
    }
    double t2 = MPI_Wtime();

    /* The checksum of every cell this rank owns, and a check of the
     * boundary rows and columns, which never change. */
    uint64_t sum = 0, wrong = 0;
    for (uint64_t l = 1; l <= mine; l++) {
        uint64_t g = first + l - 1;
        for (uint64_t j = 0; j < cols; j++) {
            double v = cur[l * cols + j];
            uint64_t b;
            memcpy(&b, &v, sizeof b);
            sum += mix(b ^ mix(g * cols + j));
            int edge = g == 0 || g == rows - 1 || j == 0 || j == cols - 1;
            if (edge && v != initial(g, j, cols))
                wrong++;
        }
    }
    uint64_t total = 0, total_wrong = 0;
    blocked(1);
    MPI_Reduce(&sum, &total, 1, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Reduce(&wrong, &total_wrong, 1, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
    blocked(0);
    double t3 = MPI_Wtime();
    if (rank == 0) {
        double mib = (double)rows * (double)cols * sizeof(double) / 1048576.0;
        printf("stencil: %d ranks, %" PRIu64 " x %" PRIu64 " grid, %.1f MiB per grid, "
               "%.1f MiB in all, %" PRIu64 " iterations%s\n",
               size, rows, cols, mib, 2 * mib, iters, sigon ? ", sbma present" : "");
        printf("checksum %016" PRIx64 "\n", total);
        printf("boundary cells wrong: %" PRIu64 "\n", total_wrong);
        printf("time: init %.3f s, iterations %.3f s, check %.3f s, total %.3f s\n", t1 - t0,
               t2 - t1, t3 - t2, t3 - t0);
        printf("RESULT %.6f %.6f %.6f\n", t1 - t0, t2 - t1, t3 - t0);
    }
    free(cur);
    free(next);
    MPI_Finalize();
    return total_wrong != 0;
}
