#include "trainer/cli.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/log.h"
#include "trainer/config_yaml.h"
#include "trainer/data_cmd.h"
#include "trainer/eval_cmd.h"
#include "trainer/generate_cmd.h"
#include "trainer/hf_export.h"
#include "trainer/plan.h"
#include "trainer/train.h"

namespace strata {
namespace {

constexpr const char* kVersion = "0.1.0";

const std::vector<std::string>& command_names() {
  static const std::vector<std::string> names = {"train", "plan", "generate", "eval", "export", "data", "config"};
  return names;
}

// Loads and validates a config, printing each problem on its own line.
bool load_or_report(const std::string& path, const std::vector<std::string>& sets, ExperimentConfig* out) {
  auto cfg = load_experiment_config(path, sets);
  if (!cfg.ok()) {
    std::fprintf(stderr, "%s\n", std::string(cfg.status().message()).c_str());
    return false;
  }
  *out = *std::move(cfg);
  return true;
}

struct Args {
  std::string config;
  std::vector<std::string> sets;
  bool dry_run = false;
  int world_size = 1;
  std::string checkpoint, out, dtype = "bf16", output_file;
  bool force = false;
  double shard_mb = 5000;
};

void add_config_args(CLI::App* cmd, Args* a) {
  cmd->add_option("config", a->config, "experiment YAML file")->required();
  cmd->add_option("--set", a->sets, "override a key: --set optim.lr=1e-3 (repeatable)")->take_all();
}

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{"Strata: train Mixture-of-Experts reasoning models with SFT and GRPO.", "strata"};
  app.set_version_flag("--version", kVersion);
  app.require_subcommand(1);
  Args a;

  auto* train = app.add_subcommand("train", "train a model from an experiment config (pretrain, SFT or GRPO)");
  add_config_args(train, &a);
  train->add_flag("--dry-run", a.dry_run, "validate the config, print it resolved, and stop");
  TrainOptions topt;
  train->add_option("--resume", topt.resume, "auto | never | a checkpoint path (overrides checkpoint.resume)");
  train->add_option("--stop-after", topt.stop_after, "stop this process after N steps (the run resumes later)")
      ->check(CLI::PositiveNumber);

  auto* plan =
      app.add_subcommand("plan", "show the layout, memory per rank and communication per step, without computing");
  add_config_args(plan, &a);
  auto* world_opt = plan->add_option("--world,--world-size", a.world_size,
                                     "ranks to plan for (default: the config's pp x dp; pp when dp is -1)")
                        ->check(CLI::Range(1, 1000000));

  GenerateArgs g;
  auto* generate = app.add_subcommand("generate", "sample from a trained model or a Hugging Face one");
  generate->add_option("checkpoint", g.checkpoint, "run dir, checkpoint dir or root, or hf:DIR")->required();
  auto* prompt_opt = generate->add_option("--prompt", g.prompt, "prompt text");
  generate->add_option("--tokenizer", g.tokenizer, "char | tokenizer.json (default: the run's)");
  generate->add_flag("--r1-template", g.r1_template, "wrap the prompt in the DeepSeek-R1 template");
  generate->add_option("--prompt-ids", g.prompt_ids, "prompt as token ids, e.g. \"1 2 3\"")->excludes(prompt_opt);
  generate->add_option("--max-new-tokens", g.max_new_tokens, "most tokens to generate; 0 = up to the model's max_seq_len")
      ->check(CLI::NonNegativeNumber);
  generate->add_option("--temperature", g.temperature, "sampling temperature; 0 = greedy")->check(CLI::NonNegativeNumber);
  generate->add_option("--top-k", g.top_k, "sample among the k most likely tokens; 0 = all")->check(CLI::NonNegativeNumber);
  generate->add_option("--top-p", g.top_p, "nucleus mass")->check(CLI::Range(0.0, 1.0));
  generate->add_option("--n", g.samples, "samples of the prompt (decoded as one batch)")->check(CLI::PositiveNumber);
  generate->add_option("--seed", g.seed, "sampling seed")->check(CLI::NonNegativeNumber);
  generate->add_option("--eos-id", g.eos_id, "token id that ends a sample (default: the tokenizer's EOS; -1 = none)");
  generate->add_option("--logits-out", g.logits_out, "also write the prompt's logits at every position as JSON");

  EvalArgs ev;
  auto* eval = app.add_subcommand("eval", "score a checkpoint on held-out problems of a verifiable task");
  eval->add_option("checkpoint", ev.checkpoint, "run dir, checkpoint dir or root, or hf:DIR")->required();
  eval->add_option("--task", ev.task, "countdown | arithmetic")->check(CLI::IsMember({"countdown", "arithmetic"}));
  eval->add_option("--n", ev.n, "held-out problems to score")->check(CLI::PositiveNumber);
  eval->add_option("--samples", ev.samples, "completions per problem (pass@k for k = samples)")->check(CLI::PositiveNumber);
  eval->add_option("--temperature", ev.temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  eval->add_option("--max-new-tokens", ev.max_new_tokens, "0 = as long as the model allows")->check(CLI::NonNegativeNumber);
  eval->add_option("--batch", ev.batch, "completions decoded together")->check(CLI::PositiveNumber);
  eval->add_option("--tokenizer", ev.tokenizer, "char | tokenizer.json (default: the run's)");
  eval->add_option("--out", ev.out, "write every completion with its reward as JSONL");
  eval->add_option("--seed", ev.seed, "sampling seed")->check(CLI::NonNegativeNumber);

  auto* exp = app.add_subcommand("export", "write a checkpoint in Hugging Face format");
  exp->add_option("checkpoint", a.checkpoint, "run dir, checkpoint root (its latest) or step directory")->required();
  exp->add_option("--out", a.out, "the Hugging Face model directory to write")->required();
  exp->add_option("--dtype", a.dtype, "bf16 | fp32")->check(CLI::IsMember({"bf16", "fp32"}));
  exp->add_flag("--force", a.force, "replace an existing output directory");
  exp->add_option("--shard-mb", a.shard_mb, "largest safetensors shard, MB (transformers' default: 5000)")
      ->check(CLI::PositiveNumber);

  auto* data = app.add_subcommand("data", "prepare datasets: tokenize files, generate synthetic tasks");
  data->require_subcommand(1);
  DataTokenizeArgs dt;
  auto* tokenize = data->add_subcommand("tokenize", "tokenize text or JSONL into binary token shards");
  tokenize->add_option("--tokenizer", dt.tokenizer, "char | path to tokenizer.json");
  tokenize->add_option("--input", dt.input, "a .txt file (one document) or .jsonl (prompt + completion per line)")->required();
  tokenize->add_option("--out", dt.out, "output directory of shards")->required();
  tokenize->add_option("--shard-tokens", dt.shard_tokens, "tokens per shard file")->check(CLI::PositiveNumber);
  DataGenArgs dg;
  auto* gen = data->add_subcommand("gen", "generate a synthetic reasoning task as JSONL (prompt, completion, answer)");
  gen->add_option("task", dg.task, "countdown | arithmetic")->required()->check(CLI::IsMember({"countdown", "arithmetic"}));
  gen->add_option("--n", dg.n, "examples")->check(CLI::PositiveNumber);
  gen->add_option("--seed", dg.seed, "seed (the same one a config's train.seed names)")->check(CLI::NonNegativeNumber);
  gen->add_option("--split", dg.split, "train | eval (disjoint problem sets)")->check(CLI::IsMember({"train", "eval"}));
  gen->add_option("--out", dg.out, "output .jsonl file")->required();

  auto* config = app.add_subcommand("config", "check, print or document experiment configs");
  config->require_subcommand(1);
  auto* check = config->add_subcommand("check", "validate a config (exit 0 when valid)");
  add_config_args(check, &a);
  auto* print = config->add_subcommand("print", "print the resolved config as YAML (every key, with docs)");
  add_config_args(print, &a);
  print->add_option("--out", a.output_file, "write to this file instead of stdout");
  auto* docs = config->add_subcommand("docs", "print the reference of every config key as Markdown");

  // An unknown command gets a one-line answer with a suggestion, not CLI11's generic one.
  if (argc >= 2 && argv[1][0] != '-') {
    std::string cmd = argv[1];
    const auto& names = command_names();
    if (std::find(names.begin(), names.end(), cmd) == names.end()) {
      std::string hint = closest_match(cmd, names);
      std::fprintf(stderr, "strata: unknown command \"%s\"%s (commands: %s; see strata --help)\n", cmd.c_str(),
                   hint.empty() ? "" : absl::StrCat("; did you mean ", hint, "?").c_str(),
                   absl::StrJoin(names, ", ").c_str());
      return kExitUsage;
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    std::fprintf(stderr, "strata: %s (see strata --help)\n", msg.c_str());
    return kExitUsage;
  }

  ExperimentConfig cfg;
  if (*train) {
    if (!load_or_report(a.config, a.sets, &cfg)) return kExitUsage;
    if (a.dry_run) {
      std::printf("%s", experiment_config_to_yaml(cfg).c_str());
      return kExitOk;
    }
    topt.config_path = a.config;
    Status st = run_training(cfg, topt);
    if (!st.ok()) {
      const std::string line = absl::StrCat("strata train: ", std::string(st.message()), "\n");
      write_fatal(line.data(), line.size());  // stderr, and the rank's log when the run opened one
      return st.code() == absl::StatusCode::kUnimplemented ? kExitNotLanded
             : st.code() == absl::StatusCode::kInvalidArgument || st.code() == absl::StatusCode::kNotFound
                 ? kExitUsage
                 : kExitFailure;
    }
    return kExitOk;
  }
  if (*plan) {
    if (!load_or_report(a.config, a.sets, &cfg)) return kExitUsage;
    const int64_t world =
        world_opt->count() > 0 ? a.world_size : cfg.parallel.pp * std::max<int64_t>(cfg.parallel.dp, 1);
    StatusOr<TrainingPlan> p = make_training_plan(cfg, world);
    if (!p.ok()) {
      std::fprintf(stderr, "strata plan: %s\n", std::string(p.status().message()).c_str());
      return kExitUsage;
    }
    std::printf("%s", format_training_plan(*p).c_str());
    return kExitOk;
  }
  if (*generate) return run_generate(g);
  if (*eval) return run_eval_command(ev);
  if (*exp) {
    ExportOptions o;
    o.out = a.out;
    o.bf16 = a.dtype == "bf16";
    o.force = a.force;
    o.max_shard_bytes = static_cast<int64_t>(a.shard_mb * 1e6);
    StatusOr<ExportResult> r = export_hf(a.checkpoint, o);
    if (!r.ok()) {
      std::fprintf(stderr, "strata export: %s\n", std::string(r.status().message()).c_str());
      const absl::StatusCode code = r.status().code();
      return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ||
                     code == absl::StatusCode::kAlreadyExists
                 ? kExitUsage
                 : kExitFailure;
    }
    std::printf("%s: %ld tensors, %ld shard%s, %.2f MB (%s)\n", a.out.c_str(), static_cast<long>(r->tensors),
                static_cast<long>(r->shards), r->shards == 1 ? "" : "s", r->bytes / 1e6, a.dtype.c_str());
    return kExitOk;
  }
  if (*tokenize) return run_data_tokenize(dt);
  if (*gen) return run_data_gen(dg);
  if (*check) {
    if (!load_or_report(a.config, a.sets, &cfg)) return kExitUsage;
    std::printf("%s: OK\n", a.config.c_str());
    return kExitOk;
  }
  if (*print) {
    if (!load_or_report(a.config, a.sets, &cfg)) return kExitUsage;
    std::string yaml = experiment_config_to_yaml(cfg);
    if (a.output_file.empty()) {
      std::printf("%s", yaml.c_str());
      return kExitOk;
    }
    std::ofstream out(a.output_file);
    out << yaml;
    if (!out.good()) {
      std::fprintf(stderr, "strata: cannot write %s\n", a.output_file.c_str());
      return kExitFailure;
    }
    return kExitOk;
  }
  if (*docs) {
    std::printf("%s", config_reference_markdown().c_str());
    return kExitOk;
  }
  return kExitUsage;
}

}  // namespace strata
