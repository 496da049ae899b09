// The `strata` command line: train | plan | generate | eval | export | data | config.
// Exit codes: 0 success; 1 a run failed; 2 bad usage or a bad config (one line per problem,
// naming file:line and key); 3 the capability asked for has not landed in this build yet
// (it says which issue brings it; nothing is pretended).
#pragma once

namespace strata {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNotLanded = 3;

int run_cli(int argc, char** argv);

}  // namespace strata
