// Probe for `bench comm`'s all_reduce gap on two ranks (docs/parallelism.md): times, in one
// process and interleaved, Open MPI's MPI_Allreduce and the two-step ring that parallel/ring_all_reduce.cpp
// runs on two ranks (exchange halves, fold, exchange the folded halves), built directly on
// MPI_Isend/MPI_Irecv with no engine, once with a vectorised fold and once with a scalar one.
// If the vectorised ring matches MPI_Allreduce, the algorithm and the point-to-point path are not
// what costs ours its time.
//
//   mpicc -O3 -march=native bench/mpi_allreduce_probe.c -o /tmp/mpi_allreduce_probe
//   mpirun --oversubscribe --bind-to none -np 2 /tmp/mpi_allreduce_probe
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

enum { kIters = 30, kRounds = 7, kVariants = 3 };

static void fold_vector(float* restrict d, const float* restrict s, int n) {
  for (int i = 0; i < n; ++i) d[i] += s[i];
}

__attribute__((optimize("no-tree-vectorize"))) static void fold_scalar(float* restrict d, const float* restrict s,
                                                                        int n) {
  for (int i = 0; i < n; ++i) d[i] += s[i];
}

static void exchange(float* send, float* recv, int n, int peer, int tag) {
  MPI_Request r[2];
  MPI_Irecv(recv, n, MPI_FLOAT, peer, tag, MPI_COMM_WORLD, &r[0]);
  MPI_Isend(send, n, MPI_FLOAT, peer, tag, MPI_COMM_WORLD, &r[1]);
  MPI_Waitall(2, r, MPI_STATUSES_IGNORE);
}

static void ring(float* t, float* tmp, int n, int rank, int scalar) {
  const int half = n / 2, peer = 1 - rank;
  float* mine = t + (rank == 0 ? 0 : half);  // the half this rank sums
  float* theirs = t + (rank == 0 ? half : 0);
  exchange(theirs, tmp, half, peer, 1);
  (scalar ? fold_scalar : fold_vector)(mine, tmp, half);
  exchange(mine, theirs, half, peer, 2);
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != 2) {
    if (rank == 0) fprintf(stderr, "mpi_allreduce_probe: run it on 2 ranks (got %d)\n", size);
    MPI_Finalize();
    return 2;
  }
  for (int bytes = 1 << 20; bytes <= 16 << 20; bytes *= 4) {
    const int n = bytes / 4;
    float* t = malloc((size_t)bytes);
    float* tmp = malloc((size_t)bytes / 2);
    for (int i = 0; i < n; ++i) t[i] = 0.0f;  // zeros stay zeros: no overflow over the iterations
    double best[kVariants] = {1e30, 1e30, 1e30};
    for (int round = 0; round < kRounds; ++round)
      for (int v = 0; v < kVariants; ++v) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double t0 = MPI_Wtime();
        for (int i = 0; i < kIters; ++i) {
          if (v == 0) MPI_Allreduce(MPI_IN_PLACE, t, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
          else ring(t, tmp, n, rank, v == 2);
        }
        double mine = (MPI_Wtime() - t0) / kIters, worst = 0;
        MPI_Allreduce(&mine, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (worst < best[v]) best[v] = worst;
      }
    if (rank == 0)
      printf("{\"bytes\":%d,\"allreduce_us\":%.1f,\"ring_us\":%.1f,\"ring_ratio\":%.3f,\"ring_scalar_fold_us\":%.1f,"
             "\"ring_scalar_fold_ratio\":%.3f}\n",
             bytes, best[0] * 1e6, best[1] * 1e6, best[0] / best[1], best[2] * 1e6, best[0] / best[2]);
    free(t);
    free(tmp);
  }
  MPI_Finalize();
  return 0;
}
