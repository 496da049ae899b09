// PrecisionConfig: the number formats of the linear-layer GEMMs (REFERENCE.md section 3).
// fp32 everywhere; bf16 rounds GEMM inputs and saved activations; fp8 runs the GEMMs of the
// linear layers in E4M3 with DeepSeek-V3's blockwise scales or Transformer Engine's per-tensor
// delayed scales. Master weights, gradients, loss and optimizer state stay fp32 in every mode.
// The GEMM entry point that obeys this policy is LinearGemm (precision/linear.h).
#pragma once

#include <string>
#include <vector>

#include "core/config_schema.h"

namespace strata {

enum class PrecisionMode { kFp32, kBf16, kFp8 };
enum class Fp8Recipe { kBlockwise, kTensorwiseDelayed };
enum class Fp8ScaleFormat { kFp32, kPow2 };
enum class Fp8Format { kE4M3, kHybrid };

// Module kinds that can be kept out of fp8 (high_precision_modules).
inline const std::vector<std::string>& precision_module_kinds() {
  static const std::vector<std::string> kinds = {"embedding", "head",    "router",        "norm",
                                                 "attention_core", "attention_proj", "mlp",
                                                 "experts",   "shared_experts"};
  return kinds;
}

struct Fp8Config {
  Fp8Recipe recipe = Fp8Recipe::kBlockwise;
  Fp8ScaleFormat scale_format = Fp8ScaleFormat::kFp32;
  Fp8Format format = Fp8Format::kE4M3;
  int64_t amax_history_len = 16;
  int64_t margin = 0;
  std::vector<std::string> high_precision_modules = {"embedding", "head", "router", "norm",
                                                     "attention_core"};
  bool cache_activations = false;

  template <class V>
  void visit(V& v) {
    v.choice("recipe", recipe, "scaling recipe: DeepSeek-V3 blockwise (1x128 / 128x128 tiles) or per-tensor delayed",
             Choices<Fp8Recipe>{{"blockwise", Fp8Recipe::kBlockwise},
                                {"tensorwise_delayed", Fp8Recipe::kTensorwiseDelayed}});
    v.choice("scale_format", scale_format, "scale values as any fp32 or rounded up to a power of two (exact dequantisation)",
             Choices<Fp8ScaleFormat>{{"fp32", Fp8ScaleFormat::kFp32}, {"pow2", Fp8ScaleFormat::kPow2}});
    v.choice("format", format, "tensorwise_delayed only: E4M3 everywhere, or hybrid (E4M3 forward, E5M2 gradients)",
             Choices<Fp8Format>{{"e4m3", Fp8Format::kE4M3}, {"hybrid", Fp8Format::kHybrid}});
    v.field("amax_history_len", amax_history_len, "tensorwise_delayed: length of the amax history",
            Range::between(1, 1024));
    v.field("margin", margin, "tensorwise_delayed: scale = amax / fp8_max * 2^margin", Range::between(-8, 8));
    v.field("high_precision_modules", high_precision_modules,
            "module kinds kept out of fp8 (their GEMMs run in bf16, the router's in fp32); embedding, norm and "
            "attention_core have no fp8 path and must be listed; attention_proj, mlp, experts, shared_experts, head "
            "and router run in fp8 unless listed");
    v.field("cache_activations", cache_activations, "keep linear-layer inputs in fp8 for backward (saves memory)");
  }
  void validate(ConfigChecker& c) const;
};

struct PrecisionConfig {
  PrecisionMode mode = PrecisionMode::kFp32;
  Fp8Config fp8;

  template <class V>
  void visit(V& v) {
    v.choice("mode", mode, "number format of the linear-layer GEMMs",
             Choices<PrecisionMode>{{"fp32", PrecisionMode::kFp32},
                                    {"bf16", PrecisionMode::kBf16},
                                    {"fp8", PrecisionMode::kFp8}});
    v.section("fp8", fp8, "FP8 recipe (used when mode is fp8)");
  }
};

}  // namespace strata
