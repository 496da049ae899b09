// Run under mpirun: rank 1 fails a CHECK while every other rank waits in a barrier that can never
// complete. The job must end promptly with rank 1's message, not hang (tests/parallel/*.sh).
#include <mpi.h>

#include "core/check.h"
#include "parallel/mpi_env.h"

int main(int argc, char** argv) {
  strata::MpiEnv env(&argc, &argv);
  if (env.rank() == 1) {
    int got = 3;
    CHECK_EQ(got, 4) << "probe failure on purpose";
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return 0;
}
