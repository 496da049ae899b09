// strata: the single executable. Everything lives in the libraries; see trainer/cli.h.
#include "trainer/cli.h"

int main(int argc, char** argv) { return strata::run_cli(argc, argv); }
