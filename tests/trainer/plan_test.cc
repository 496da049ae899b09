// `strata plan` against the allocator: the planned parameters are the model's, the planned saved
// activations are exactly what a forward keeps, the replayed timeline gives the peak a real forward
// + backward reaches, and a real training step of the tiny configs (fp32, fp8, fp8 with cached
// activations, recompute) peaks within 5% of MemoryPlan::allocator_peak. Data-parallel figures
// (buckets, ZeRO-1 shards, ring volumes) are checked against their formulas; measuring a dp > 1
// peak needs MPI ranks and is left to a multi-rank test.
#include "trainer/plan.h"

#include <unistd.h>  // getpid

#include <cstdio>
#include <filesystem>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "core/tensor.h"             // tensor_memory_stats, reset_tensor_memory_peak
#include "model/transformer.h"       // the real model, for exact activation checks
#include "trainer/config_yaml.h"     // load_experiment_config
#include "trainer/train.h"           // run_training

namespace strata {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

ExperimentConfig load(const std::string& name, std::vector<std::string> sets = {}) {
  auto c = load_experiment_config((fs::path(STRATA_SOURCE_DIR) / "configs" / name).string(), sets);
  EXPECT_TRUE(c.ok()) << c.status().message();
  return c.ok() ? *c : ExperimentConfig();
}

struct Variant {
  const char* name;
  const char* config;
  std::vector<std::string> sets;
  bool train = false;  // also run a real training step (PlanVsTraining; ~3 s each on a CPU)
};

// Every code path of the memory model: dense and MoE blocks, qk-norm, QKV bias, tied head,
// sigmoid routing with a balancing bias, shared experts (gated or not), recompute, fp8 with and
// without cached activations.
std::vector<Variant> variants() {
  return {
      {"dense_fp32", "tiny_dense.yaml", {}, true},
      {"dense_fp8", "tiny_dense.yaml", {"precision.mode=fp8"}, true},
      {"moe_fp32", "tiny_moe_sft.yaml", {}, true},
      {"moe_fp8", "tiny_moe_sft.yaml", {"precision.mode=fp8"}, true},
      {"moe_fp8_cached", "tiny_moe_sft.yaml", {"precision.mode=fp8", "precision.fp8.cache_activations=true"}, true},
      {"moe_fp8_delayed_cached", "tiny_moe_sft.yaml",
       {"precision.mode=fp8", "precision.fp8.recipe=tensorwise_delayed", "precision.fp8.cache_activations=true"}},
      {"moe_recompute", "tiny_moe_sft.yaml", {"model.recompute=full"}},
      {"glm4_shared_dense_first", "tiny_moe_sft.yaml",
       {"model.arch=glm4_moe", "model.moe.scoring=sigmoid", "model.moe.n_shared_experts=1", "model.moe.first_k_dense=1",
        "model.tie_embeddings=true"}},
      {"qwen2_gated_shared", "tiny_moe_sft.yaml",
       {"model.arch=qwen2_moe", "model.moe.n_shared_experts=1", "model.moe.shared_expert_gate=true",
        "model.qkv_bias=true", "model.qk_norm=false"}},
  };
}

Batch random_batch(int64_t B, int64_t T, int64_t V, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(V - 1));
  Batch b;
  b.B = B;
  b.T = T;
  for (int64_t i = 0; i < B * T; ++i) {
    b.tokens.push_back(tok(rng));
    b.targets.push_back(i % 5 == 0 ? -1 : tok(rng));
  }
  b.finalize(V);
  return b;
}

TEST(PlanParameters, AreTheModelsParametersInOrder) {
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    const ExperimentConfig c = load(v.config, v.sets);
    Transformer model(c.model, c.precision);
    const std::vector<PlannedParam> planned = plan_parameters(c.model);
    ASSERT_EQ(planned.size(), model.params().size());
    for (size_t i = 0; i < planned.size(); ++i) {
      EXPECT_EQ(planned[i].name, model.params()[i].name);
      EXPECT_EQ(planned[i].numel, model.params()[i].param->value.numel()) << planned[i].name;
      EXPECT_EQ(planned[i].trained, model.params()[i].param->grad.defined()) << planned[i].name;
    }
  }
}

// The timeline replays one micro-batch exactly: what the forward keeps (Tensor bytes and
// activation_bytes()), and the peak of forward + backward in both backward kinds.
TEST(PlanActivations, MatchTheAllocatorForOneMicroBatch) {
  for (const Variant& v : variants()) {
    const ExperimentConfig c = load(v.config, v.sets);
    Transformer model(c.model, c.precision);
    model.init(1);
    const int64_t B = 2, T = 32;
    const Batch batch = random_batch(B, T, c.model.vocab_size, 7);
    for (bool per_segment : {false, true}) {
      SCOPED_TRACE(absl::StrCat(v.name, per_segment ? " per-segment" : " queued"));
      const ActivationPlan plan = plan_activations(c, B, T, per_segment);
      const int64_t base = tensor_memory_stats().current_bytes;
      reset_tensor_memory_peak();
      {
        Activations acts;
        model.forward(batch, acts, static_cast<double>(batch.n_targets()));
        EXPECT_EQ(tensor_memory_stats().current_bytes - base, plan.saved_tensor);
        // Per-tensor cached inputs carry one scale per expert that got tokens: the plan counts
        // every expert (an upper bound by 4 bytes per idle expert and input).
        const bool per_tensor_codes = c.precision.fp8.cache_activations &&
                                      c.precision.fp8.recipe == Fp8Recipe::kTensorwiseDelayed && c.model.is_moe();
        const int64_t slack = per_tensor_codes ? 2 * 4 * c.model.moe.n_experts * c.model.n_layers : 0;
        EXPECT_LE(activation_bytes(acts), plan.saved());
        EXPECT_GE(activation_bytes(acts) + slack, plan.saved());
        const Transformer::GradsReadyFn ready = [](const std::vector<Param*>&) {};
        model.backward(acts, nullptr, nullptr, per_segment ? &ready : nullptr);
      }
      EXPECT_EQ(tensor_memory_stats().peak_bytes - base, plan.peak_tensor);
      EXPECT_EQ(tensor_memory_stats().current_bytes, base);
    }
  }
}

// The acceptance check: one real optimizer step of the tiny configs in fp32 and fp8, single rank,
// the whole allocation history of run_training (model, optimizer, two micro-batches, evaluation,
// checkpoint) against the plan's allocator peak.
TEST(PlanVsTraining, AllocatorPeakWithinFivePercent) {
  const fs::path out = fs::temp_directory_path() / ("strata_plan_" + std::to_string(::getpid()));
  for (const Variant& v : variants()) {
    if (!v.train) continue;  // the others' timelines are checked exactly above
    SCOPED_TRACE(v.name);
    std::vector<std::string> sets = v.sets;
    sets.insert(sets.end(), {"train.steps=1", "train.out_dir=" + out.string(), absl::StrCat("train.name=", v.name),
                             "checkpoint.resume=never", "log.level=warn"});
    const ExperimentConfig c = load(v.config, sets);
    auto plan = make_training_plan(c, 1);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    const int64_t base = tensor_memory_stats().current_bytes;
    reset_tensor_memory_peak();
    const Status st = run_training(c, TrainOptions{});
    ASSERT_TRUE(st.ok()) << st.message();
    const int64_t measured = tensor_memory_stats().peak_bytes - base;
    const int64_t predicted = plan->memory.allocator_peak;
    std::printf("[plan] %-24s predicted %10.4f MB  measured %10.4f MB  (%+.3f%%)\n", v.name, predicted / 1e6,
                measured / 1e6, 100.0 * (predicted - measured) / measured);
    EXPECT_NEAR(static_cast<double>(predicted), static_cast<double>(measured), 0.05 * measured);
  }
  fs::remove_all(out);
}

TEST(PlanDataParallel, ZeroOneShardsTheOptimizerState) {
  const std::vector<std::string> sets = {"data.global_batch_size=16"};
  ExperimentConfig z0 = load("tiny_dense.yaml", sets), z1 = z0;
  z1.parallel.zero = 1;
  auto p0 = make_training_plan(z0, 4), p1 = make_training_plan(z1, 4);
  ASSERT_TRUE(p0.ok() && p1.ok());
  EXPECT_EQ(p0->zero, 0);
  EXPECT_EQ(p1->zero, 1);
  int64_t padded = 0;
  for (int64_t n : p1->bucket_elements) {
    EXPECT_EQ(n % (4 * 16), 0) << "a bucket pads to a multiple of dp x 16 elements";
    padded += n;
  }
  EXPECT_GE(padded, p1->trained_params);
  EXPECT_EQ(p0->memory.gradients, padded * 4);
  EXPECT_EQ(p1->memory.grad_shards, padded * 4 / 4);
  // The largest shard holds at least a quarter of the moments and at most a quarter of the padded
  // buckets' worth.
  EXPECT_EQ(p0->memory.optimizer, 2 * 4 * p0->trained_params);
  EXPECT_GE(4 * p1->memory.optimizer, p0->memory.optimizer);
  EXPECT_LE(4 * p1->memory.optimizer, 2 * 4 * padded);
  EXPECT_LT(p1->memory.allocator_peak, p0->memory.allocator_peak);
  // bf16 moments halve the state.
  z1.optim.moments_dtype = MomentDType::kBF16;
  auto pb = make_training_plan(z1, 4);
  ASSERT_TRUE(pb.ok());
  EXPECT_EQ(2 * pb->memory.optimizer, p1->memory.optimizer);
}

TEST(PlanDataParallel, RingVolumesForTwoRanks) {
  ExperimentConfig c = load("tiny_moe_sft.yaml");
  for (int64_t zero : {0, 1}) {
    c.parallel.zero = zero;
    auto p = make_training_plan(c, 2);
    ASSERT_TRUE(p.ok()) << p.status().message();
    int64_t padded = 0;
    for (int64_t n : p->bucket_elements) padded += n;
    const int64_t grads = padded * 4;  // fp32 buckets
    // Scalars: loss, aux, fp8 events + 8 expert loads x 4 MoE blocks (doubles), skip flag + norm.
    const int64_t scalars = 8 * (3 + 8 * 4) + 16;
    std::vector<std::pair<std::string, int64_t>> want;
    if (zero == 0) {
      want = {{"gradient all-reduce", grads}, {"scalar all-reduces", scalars}};  // 2 (dp-1)/dp = 1
    } else {
      want = {{"gradient reduce-scatter", grads / 2},  // (dp-1)/dp = 1/2 each
              {"parameter all-gather", grads / 2},
              {"scalar all-reduces", scalars}};
    }
    ASSERT_EQ(p->comm.size(), want.size());
    int64_t total = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(p->comm[i].what, want[i].first);
      EXPECT_EQ(p->comm[i].bytes, want[i].second) << want[i].first;
      total += want[i].second;
    }
    EXPECT_EQ(p->comm_bytes, total);
  }
  auto single = make_training_plan(c, 1);
  ASSERT_TRUE(single.ok());
  EXPECT_TRUE(single->comm.empty());
  EXPECT_EQ(single->comm_bytes, 0);
}

TEST(PlanErrors, LayoutAndBatchSplitAreRefusedByName) {
  ExperimentConfig c = load("tiny_dense.yaml");
  c.parallel.dp = 2;
  auto p = make_training_plan(c, 3);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("parallel.dp"));
  c.parallel.dp = -1;
  p = make_training_plan(c, 4);  // 8 sequences do not split into 4 ranks x 4 rows
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("data.global_batch_size"));
}

// pp = 2: each stage's blocks and parameters, the schedule, the persistent memory of the largest
// stage (half the blocks: fewer parameters than one process holds) and the pipeline's messages;
// activation memory is not modelled for pipelines yet and the plan says so.
TEST(PlanLayouts, PipelinePrintsStagesAndSchedule) {
  auto one = make_training_plan(load("tiny_dense.yaml", {"parallel.dp=1"}), 1);
  auto p = make_training_plan(load("tiny_dense.yaml", {"parallel.pp=2", "parallel.dp=1"}), 2);
  ASSERT_TRUE(p.ok() && one.ok()) << p.status().message();
  EXPECT_TRUE(p->refused.empty()) << p->refused;
  EXPECT_FALSE(p->activations_modelled);
  EXPECT_GT(p->memory.parameters, 0);
  EXPECT_LT(p->memory.parameters, one->memory.parameters);
  ASSERT_EQ(p->comm.size(), 1u);
  EXPECT_EQ(p->comm[0].what, "pipeline messages");
  // 1F1B, m = 2: every rank sends 2 messages of one micro-batch's hidden state (4 x 64 x 64 fp32).
  EXPECT_EQ(p->comm[0].bytes, 2 * 4 * 64 * 64 * 4);
  const std::string text = format_training_plan(*p);
  EXPECT_THAT(text, HasSubstr("activations        not modelled"));
  EXPECT_THAT(text, HasSubstr("stage 0: blocks [0,1) + embedding"));
  EXPECT_THAT(text, HasSubstr("stage 1: blocks [1,2) + head"));
  // The schedule is data already: its ops, timeline and simulated bubble (1F1B, p 2, m 2).
  EXPECT_THAT(text, HasSubstr("1f1b: p 2, m 2, v 1"));
  EXPECT_THAT(text, HasSubstr("rank 0: F0 F1 B0 B1"));
  EXPECT_THAT(text, HasSubstr("bubble 3.00"));
}

// ep = 2: each rank holds half the routed experts (parameters, gradients, moments), shows where
// they live, and sends the MoE all-to-all on top of the dense gradient all-reduce.
TEST(PlanLayouts, ExpertParallelismSplitsTheExperts) {
  auto one = make_training_plan(load("tiny_moe_sft.yaml", {"parallel.dp=2"}), 2);
  auto ep2 = make_training_plan(load("tiny_moe_sft.yaml", {"parallel.dp=2", "parallel.ep=2"}), 2);
  ASSERT_TRUE(one.ok() && ep2.ok()) << ep2.status().message();
  int64_t experts = 0;
  for (const PlannedParam& q : plan_parameters(load("tiny_moe_sft.yaml").model))
    if (q.expert) experts += q.numel;
  ASSERT_GT(experts, 0);
  EXPECT_EQ(one->memory.parameters - ep2->memory.parameters, experts / 2 * 4);
  EXPECT_EQ(one->memory.optimizer - ep2->memory.optimizer, experts / 2 * 8);
  const std::string text = format_training_plan(*ep2);
  EXPECT_THAT(text, HasSubstr("world 2 = pp 1 x dp 2 (ep 2 x edp 1)"));
  EXPECT_THAT(text, HasSubstr("experts: ep rank q holds experts [4q, 4(q+1))"));
  EXPECT_THAT(text, HasSubstr("MoE all-to-all"));
}

TEST(PlanFormat, PrintsLayoutMemoryAndCommunication) {
  auto p = make_training_plan(load("tiny_dense.yaml", {"parallel.dp=2"}), 2);
  ASSERT_TRUE(p.ok());
  const std::string text = format_training_plan(*p);
  for (const char* want : {"world 2 = pp 1 x dp 2", "parameters", "gradients", "optimizer", "activations peak",
                           "allocator peak", "gradient all-reduce"}) {
    EXPECT_THAT(text, HasSubstr(want));
  }
  EXPECT_EQ(format_bytes(812), "812 B");
  EXPECT_EQ(format_bytes(12'345), "12.3 KB");
  EXPECT_EQ(format_bytes(81'720'000), "81.72 MB");
  EXPECT_EQ(format_bytes(1'500'000'000), "1.50 GB");
}

}  // namespace
}  // namespace strata
