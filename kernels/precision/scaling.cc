#include "kernels/precision/scaling.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/check.h"

namespace strata {

namespace {

constexpr GemmOperand kOperands[3] = {GemmOperand::kInput, GemmOperand::kWeight, GemmOperand::kGradOutput};

std::string state_name(const LinearGemm& g) { return absl::StrCat("fp8.", g.name(), ".amax_history"); }

}  // namespace

void fp8_reset_step(const std::vector<LinearGemm*>& gemms) {
  for (LinearGemm* g : gemms) g->reset_step();
}

std::vector<float> fp8_pending_amax(const std::vector<LinearGemm*>& gemms) {
  std::vector<float> out;
  for (const LinearGemm* g : gemms) {
    if (!g->delayed()) continue;
    for (GemmOperand op : kOperands) out.push_back(g->history(op).has_pending ? g->history(op).pending : 0.0f);
  }
  return out;
}

void fp8_commit_amax(const std::vector<LinearGemm*>& gemms, const std::vector<float>& reduced) {
  size_t i = 0;
  for (LinearGemm* g : gemms) {
    if (!g->delayed()) continue;
    CHECK_LE(i + 3, reduced.size()) << "fp8 amax vector shorter than the delayed GEMMs";
    g->commit({reduced[i], reduced[i + 1], reduced[i + 2]});
    i += 3;
  }
  CHECK_EQ(i, reduced.size()) << "fp8 amax vector longer than the delayed GEMMs";
}

Fp8Events fp8_events(const std::vector<LinearGemm*>& gemms) {
  Fp8Events all;
  for (const LinearGemm* g : gemms) {
    const Fp8Events& e = g->events();
    all.saturated += e.saturated;
    if (e.nonfinite == 0) continue;
    if (all.nonfinite == 0 || e.first_seq < all.first_seq) {
      all.first = e.first;
      all.first_seq = e.first_seq;
    }
    all.nonfinite += e.nonfinite;
  }
  return all;
}

std::vector<Fp8StateTensor> fp8_state_tensors(const std::vector<LinearGemm*>& gemms) {
  std::vector<Fp8StateTensor> out;
  for (const LinearGemm* g : gemms) {
    if (!g->delayed()) continue;
    const int64_t H = g->history_capacity();
    Tensor t = Tensor::zeros({3, H}, DType::kF32);
    for (int r = 0; r < 3; ++r) {
      const std::vector<float>& v = g->history(kOperands[r]).values;
      std::copy(v.begin(), v.begin() + std::min<int64_t>(static_cast<int64_t>(v.size()), H), t.f32() + r * H);
    }
    out.push_back({state_name(*g), std::move(t)});
  }
  return out;
}

Status fp8_load_state(const std::vector<LinearGemm*>& gemms,
                      const std::function<StatusOr<Tensor>(const std::string& name)>& find) {
  for (LinearGemm* g : gemms) {
    if (!g->delayed()) continue;
    const std::string name = state_name(*g);
    ASSIGN_OR_RETURN(Tensor t, find(name));
    if (!t.defined()) continue;  // not saved (another precision): the history starts empty
    if (t.dtype() != DType::kF32 || t.shape().rank() != 2 || t.shape()[0] != 3 || t.shape()[1] < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " has shape ", t.shape().to_string(), "; expected (3, amax_history_len) f32"));
    }
    // A changed amax_history_len keeps the newest entries that fit.
    const int64_t saved = t.shape()[1], H = std::min(saved, g->history_capacity());
    for (int r = 0; r < 3; ++r) {
      AmaxHistory& h = g->history(kOperands[r]);
      h.values.assign(t.f32() + r * saved, t.f32() + r * saved + H);
      h.pending = 0.0f;
      h.has_pending = false;
    }
    g->invalidate_weight_cache();
  }
  return OkStatus();
}

}  // namespace strata
