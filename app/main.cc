// strata: the single executable. Everything lives in the libraries; see trainer/cli.h. Under
// mpirun or srun the process joins MPI first; a rank that fails (a CHECK, an uncaught exception,
// a fatal signal, or a command that returns an error) then ends the whole job with its reason
// instead of leaving the others waiting in a collective. A plain run does not touch MPI, but
// reports an exception or a signal the same way (parallel/mpi_env.h).
#include <optional>

#include "parallel/mpi_env.h"
#include "trainer/cli.h"

int main(int argc, char** argv) {
  std::optional<strata::MpiEnv> mpi;
  if (strata::MpiEnv::launched_by_mpi()) {
    mpi.emplace(&argc, &argv);
  } else {
    strata::install_fatal_handlers();
  }
  const int code = strata::run_cli(argc, argv);
  if (code != 0 && mpi && mpi->world_size() > 1) mpi->abort_all(code);
  return code;
}
