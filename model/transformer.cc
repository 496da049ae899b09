#include "model/transformer.h"

#include <cstring>

#include "core/check.h"
#include "kernels/dispatch.h"  // dev:: ops on the compute device

namespace strata {

void Batch::finalize(int64_t vocab_size) {
  const int64_t N = B * T;
  CHECK_EQ(static_cast<int64_t>(tokens.size()), N) << "batch tokens";
  if (targets.empty()) targets.assign(static_cast<size_t>(N), -1);
  CHECK_EQ(static_cast<int64_t>(targets.size()), N) << "batch targets";
  if (positions.empty()) {
    positions.resize(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) positions[i] = static_cast<int32_t>(i % T);
  }
  CHECK_EQ(static_cast<int64_t>(positions.size()), N) << "batch positions";
  if (key_start.empty()) key_start.assign(static_cast<size_t>(B), 0);
  CHECK_EQ(static_cast<int64_t>(key_start.size()), B) << "batch key_start";
  for (int64_t i = 0; i < N; ++i) {
    CHECK(tokens[i] >= 0 && tokens[i] < vocab_size) << "token " << tokens[i] << " at " << i << " outside vocab";
    CHECK(targets[i] < vocab_size) << "target " << targets[i] << " at " << i << " outside vocab";
  }
}

int64_t Batch::n_targets() const {
  int64_t n = 0;
  for (int32_t t : targets) n += t >= 0;
  return n;
}

namespace {

int64_t tensor_bytes(std::initializer_list<const Tensor*> ts) {
  int64_t n = 0;
  for (const Tensor* t : ts) n += t->defined() ? static_cast<int64_t>(t->nbytes()) : 0;
  return n;
}

template <typename T>
int64_t vector_bytes(const std::vector<T>& v) {
  return static_cast<int64_t>(v.size() * sizeof(T));
}

int64_t mlp_bytes(const MlpSaved& s) { return s.x.bytes() + s.act.bytes() + tensor_bytes({&s.gate, &s.up}); }

}  // namespace

int64_t activation_bytes(const Activations& acts) {
  int64_t n = tensor_bytes({&acts.final_in, &acts.final_rstd, &acts.final_out, &acts.logits, &acts.lse, &acts.tokens,
                            &acts.targets, &acts.positions, &acts.key_start});
  for (const BlockSaved& b : acts.blocks) {
    n += tensor_bytes({&b.x, &b.rstd1, &b.h, &b.rstd2});
    const AttentionSaved& a = b.attn;
    n += a.x.bytes() + tensor_bytes({&a.q_raw, &a.k_raw, &a.q_rstd, &a.k_rstd, &a.q, &a.k, &a.v, &a.att, &a.lse,
                                     &a.pos, &a.key_start});
    n += mlp_bytes(b.mlp);
    const MoeSaved& m = b.moe;
    n += tensor_bytes({&m.x, &m.probs, &m.gate, &m.up, &m.ye, &m.shared_y}) + mlp_bytes(m.shared);
    n += vector_bytes(m.topk_idx) + vector_bytes(m.topk_w) + vector_bytes(m.slot_of) + vector_bytes(m.slot_token) +
         vector_bytes(m.shared_g);
    for (const SavedInput& s : m.xe) n += s.bytes();
    for (const SavedInput& s : m.act) n += s.bytes();
  }
  return n;
}

Transformer::Transformer(const ModelConfig& config, const PrecisionConfig& precision, StageSpec stage,
                         ExpertShard experts)
    : config_(config), stage_(stage) {
  if (stage_.chunks.empty()) {
    if (stage_.last_block < 0) stage_.last_block = config.n_layers;
    stage_.chunks.push_back({stage_.first_block, stage_.last_block});
  }
  for (size_t c = 0; c < stage_.chunks.size(); ++c) {
    const BlockRange& r = stage_.chunks[c];
    CHECK(0 <= r.first && r.first < r.last && r.last <= config.n_layers &&
          (c == 0 || stage_.chunks[c - 1].last <= r.first))
        << "stage chunk " << c << ": blocks [" << r.first << ", " << r.last << ") of " << config.n_layers;
  }
  stage_.first_block = stage_.chunks.front().first;
  stage_.last_block = stage_.chunks.back().last;
  const int64_t V = config.vocab_size, C = config.d_model;
  rope_.build(config);
  tied_ = config.tie_embeddings;
  // A tied head on a stage without the embedding keeps its own copy (reduced between stages).
  if (stage_.has_embedding || (tied_ && stage_.has_head)) embed_.allocate({V, C});
  int64_t n_blocks = 0;
  for (const BlockRange& r : stage_.chunks) n_blocks += r.last - r.first;
  blocks_.resize(static_cast<size_t>(n_blocks));
  const LinearPolicy policy{precision, &weights_epoch_};
  size_t at = 0;
  for (const BlockRange& r : stage_.chunks) {
    chunk_blocks_.push_back({at, at + static_cast<size_t>(r.last - r.first)});
    for (int64_t b = r.first; b < r.last; ++b) blocks_[at++].build(config, policy, b, experts);
  }
  if (stage_.has_head) {
    final_norm_.allocate({C});
    if (!tied_) head_.allocate({V, C});
    gemm_head_ = policy.make("head", tied_ ? "embed" : "head");
  }
  if (embed_.defined()) params_.push_back({"embed", &embed_, ParamKind::kEmbedding});
  std::vector<std::vector<Param*>> block_params;
  for (Block& b : blocks_) {
    const size_t first = params_.size();
    b.collect(params_, "layers." + std::to_string(b.index) + ".");
    block_params.emplace_back();
    for (size_t i = first; i < params_.size(); ++i) block_params.back().push_back(params_[i].param);
  }
  if (stage_.has_head) {
    params_.push_back({"final_norm", &final_norm_, ParamKind::kNorm});
    if (!tied_) params_.push_back({"head", &head_, ParamKind::kMatrix});
  }
  // The order each chunk's backward finishes gradients in: head and final norm (last chunk), its
  // blocks last to first, then the embedding (chunk 0; a tied head's gradient is complete only
  // after the embedding's).
  grad_segments_.resize(chunk_blocks_.size());
  for (size_t c = 0; c < chunk_blocks_.size(); ++c) {
    auto& segs = grad_segments_[c];
    if (stage_.has_head && c + 1 == chunk_blocks_.size())
      segs.push_back(tied_ ? std::vector<Param*>{&final_norm_} : std::vector<Param*>{&final_norm_, &head_});
    for (size_t i = chunk_blocks_[c].second; i-- > chunk_blocks_[c].first;) segs.push_back(block_params[i]);
    if (c == 0 && stage_.has_embedding) segs.push_back({&embed_});
  }
}

bool Transformer::whole() const {
  return stage_.chunks.size() == 1 && stage_.first_block == 0 && stage_.last_block == config_.n_layers &&
         stage_.has_embedding && stage_.has_head;
}

void Transformer::set_expert_group(Communicator* ep) {
  for (Block& b : blocks_)
    if (b.is_moe) b.moe.ep = ep;
}

void Transformer::set_dispatch_fp8(bool on) {
  for (Block& b : blocks_)
    if (b.is_moe) b.moe.dispatch_fp8 = on;
}

MoeCommStats Transformer::take_moe_comm_stats() {
  MoeCommStats total;
  for (Block& b : blocks_) {
    if (!b.is_moe) continue;
    const MoeCommStats& s = b.moe.comm;
    total.dispatch_bytes += s.dispatch_bytes;
    total.combine_bytes += s.combine_bytes;
    total.backward_bytes += s.backward_bytes;
    total.slots_sent += s.slots_sent;
    total.seconds += s.seconds;
    b.moe.comm = MoeCommStats{};
  }
  return total;
}

Param* Transformer::find_param(const std::string& name) const {
  for (const ParamRef& p : params_)
    if (p.name == name) return p.param;
  return nullptr;
}

void Transformer::init(uint64_t seed) {
  CHECK(device_.is_cpu()) << "init() writes parameters on the CPU: call it before to_device()";
  init_params(params_, seed, static_cast<float>(config_.init_std));
  mark_weights_changed();
}

void Transformer::to_device(Device device) {
  if (device == device_) return;
  if (device.is_cuda()) {
    CHECK(built_with_cuda()) << "a model on " << device.to_string() << " needs a CUDA build (-DSTRATA_CUDA=ON)";
    for (const Block& b : blocks_)
      CHECK(!b.is_moe) << "layers." << b.index << " is a MoE block: MoE blocks run on the CPU only so far (their "
                       << "routing bookkeeping is host code; #11)";
  }
  for (const ParamRef& p : params_) p.param->to(device);
  rope_.to(device);
  for (LinearGemm* g : linear_gemms()) g->set_device(device);
  device_ = device;
  mark_weights_changed();
}

std::vector<LinearGemm*> Transformer::linear_gemms() {
  std::vector<LinearGemm*> out;
  for (Block& b : blocks_) b.linear_gemms(out);
  if (stage_.has_head) out.push_back(&gemm_head_);
  return out;
}

void Transformer::embed(const int32_t* tokens, int64_t N, float* out) const {
  const int64_t C = config_.d_model;
  dev::gather_rows_f32(out, embed_.v(), tokens, N, C);
}

void Transformer::head_forward(const float* hidden, int64_t N, float* logits, Activations* acts) {
  const int64_t C = config_.d_model, V = config_.vocab_size;
  Tensor normed = f32_matrix(N, C), rstd = f32_vector(N);
  dev::rmsnorm_forward_f32(normed.f32(), rstd.f32(), hidden, final_norm_.v(), N, C, static_cast<float>(config_.norm_eps));
  const float* w = tied_ ? embed_.v() : head_.v();
  gemm_head_.forward(logits, normed.f32(), w, N, C, V);
  if (acts) {
    acts->final_rstd = rstd;
    acts->final_out = normed;
  }
}

double Transformer::forward(const Batch& batch, Activations& acts, double loss_denominator, const float* input,
                            float* output, double aux_weight, int chunk) {
  const int64_t B = batch.B, T = batch.T, N = B * T, C = config_.d_model, V = config_.vocab_size;
  CHECK_EQ(static_cast<int64_t>(batch.positions.size()), N) << "call Batch::finalize() first";
  CHECK(chunk >= 0 && chunk < n_chunks()) << "chunk " << chunk << " of " << n_chunks();
  const auto [first, end] = chunk_blocks_[static_cast<size_t>(chunk)];
  const bool embeds = stage_.has_embedding && chunk == 0, heads = stage_.has_head && chunk == n_chunks() - 1;
  acts.batch = &batch;
  acts.chunk = chunk;
  acts.loss_denominator = loss_denominator;
  acts.blocks.resize(end - first);
  ComputeDeviceScope on(device_);
  acts.tokens = i32_copy(batch.tokens.data(), Device::cpu(), N);
  acts.targets = i32_copy(batch.targets.data(), Device::cpu(), N);
  acts.positions = i32_copy(batch.positions.data(), Device::cpu(), N);
  acts.key_start = i32_copy(batch.key_start.data(), Device::cpu(), B);
  Tensor x = f32_matrix(N, C);
  if (embeds) {
    embed(acts.tokens.data<int32_t>(), N, x.f32());
  } else {
    CHECK(input != nullptr) << "a stage without the embedding needs its input hidden states";
    dev::copy_f32(x.f32(), input, N * C);
  }
  Tensor y = f32_matrix(N, C);
  for (size_t i = 0; i < acts.blocks.size(); ++i) {
    block_forward(blocks_[first + i], acts.blocks[i], y.f32(), x.f32(), acts.positions.data<int32_t>(),
                  acts.key_start.data<int32_t>(), B, T, rope_);
    std::swap(x, y);
    if (progress_) progress_();
  }

  // Auxiliary losses: per-layer (seq) ones are inside each block; the switch loss of
  // transformers is over all MoE layers of the batch at once, so its gradient is set here.
  acts.aux_loss = 0.0;
  int64_t moe_layers = 0;
  std::vector<double> load_total, prob_total;
  for (size_t i = 0; i < acts.blocks.size(); ++i) {
    const Block& block = blocks_[first + i];
    if (!block.is_moe) continue;
    MoeSaved& ms = acts.blocks[i].moe;
    ms.aux_weight = aux_weight;
    acts.aux_loss += aux_weight * ms.aux_loss;
    if (block.moe.aux_loss != AuxLoss::kSwitch) continue;
    if (load_total.empty()) {
      load_total.assign(ms.load.size(), 0.0);
      prob_total.assign(ms.load.size(), 0.0);
    }
    for (size_t e = 0; e < ms.load.size(); ++e) {
      load_total[e] += static_cast<double>(ms.load[e]);
      prob_total[e] += ms.prob_sum[e];
    }
    ++moe_layers;
  }
  if (moe_layers > 0) {
    // transformers' load_balancing_loss_func: E * sum_e (tokens choosing e / tokens) * mean prob_e,
    // both over the tokens of every MoE layer concatenated.
    const double E = static_cast<double>(load_total.size());
    const double tokens = static_cast<double>(N * moe_layers);
    const float coef = blocks_[end - 1].moe.aux_loss_coef;
    double aux = 0.0;
    for (size_t e = 0; e < load_total.size(); ++e) aux += (load_total[e] / tokens) * (prob_total[e] / tokens);
    acts.aux_loss += aux_weight * coef * E * aux;
    std::vector<float> dprob(load_total.size());
    for (size_t e = 0; e < load_total.size(); ++e)
      dprob[e] = static_cast<float>(aux_weight * coef * E * (load_total[e] / tokens) / tokens);
    for (size_t i = 0; i < acts.blocks.size(); ++i) {
      const Block& block = blocks_[first + i];
      if (block.is_moe && block.moe.aux_loss == AuxLoss::kSwitch) acts.blocks[i].moe.aux_dprob = dprob;
    }
  }

  if (!heads) {
    CHECK(output != nullptr) << "a stage without the head must write its output hidden states";
    dev::copy_f32(output, x.f32(), N * C);
    return acts.aux_loss;
  }
  acts.final_in = x;
  acts.logits = f32_matrix(N, V);
  acts.lse = f32_vector(N);
  head_forward(x.f32(), N, acts.logits.f32(), &acts);
  if (batch.logit_scale != 1.0f) dev::scale_f32(acts.logits.f32(), batch.logit_scale, N * V);
  Tensor losses = f32_vector(N);
  acts.loss_sum = dev::cross_entropy_forward_f32(losses.f32(), acts.lse.f32(), acts.logits.f32(),
                                                 acts.targets.data<int32_t>(), N, V);
  const Tensor host_losses = losses.device().is_cpu() ? losses : losses.to(Device::cpu());
  acts.token_logp.resize(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) acts.token_logp[i] = -host_losses.f32()[i];
  acts.token_logp_grad.clear();
  return acts.loss_sum / loss_denominator + acts.aux_loss;
}

void Transformer::backward_input(Activations& acts, const float* d_output, float* d_input, const GradsReadyFn* ready) {
  // With `ready`, the weight gradients of each part run as soon as its input gradient is done, and
  // the part's parameters are reported final; without, they stay queued for backward_weight.
  const int chunk = acts.chunk;
  const auto [first, end] = chunk_blocks_[static_cast<size_t>(chunk)];
  const bool embeds = stage_.has_embedding && chunk == 0, heads = stage_.has_head && chunk == n_chunks() - 1;
  const std::vector<std::vector<Param*>>& segments = grad_segments_[static_cast<size_t>(chunk)];
  size_t segment = 0;
  auto finish_segment = [&] {
    if (ready == nullptr) return;
    acts.weight_grads.run();
    (*ready)(segments[segment++]);
  };
  const Batch& batch = *acts.batch;
  const int64_t N = batch.B * batch.T, C = config_.d_model, V = config_.vocab_size;
  ComputeDeviceScope on(device_);
  Tensor dx = f32_matrix(N, C);
  if (heads) {
    // Loss -> logits -> head and final norm.
    // d loss / d logits = (softmax - onehot) * s per token, through the logit scale: s is
    // 1/denominator for the cross-entropy, -d loss/d logp for a loss on log-probs.
    float* dlogits = acts.logits.f32();
    Tensor row_scale;  // (N,) on the model's device
    float scale = static_cast<float>(batch.logit_scale / acts.loss_denominator);
    if (!acts.token_logp_grad.empty()) {
      CHECK_EQ(static_cast<int64_t>(acts.token_logp_grad.size()), N) << "token_logp_grad per token";
      std::vector<float> rs(static_cast<size_t>(N));
      for (int64_t i = 0; i < N; ++i) rs[i] = -acts.token_logp_grad[i];
      row_scale = Tensor::from_f32({N}, rs);
      if (!device_.is_cpu()) row_scale = row_scale.to(device_);
      scale = batch.logit_scale;
    }
    dev::cross_entropy_backward_f32(dlogits, acts.logits.f32(), acts.targets.data<int32_t>(), acts.lse.f32(), scale,
                                    N, V, row_scale.defined() ? row_scale.f32() : nullptr);
    Tensor dnormed = f32_matrix(N, C);
    const float* w = tied_ ? embed_.v() : head_.v();
    gemm_head_.backward_input(dnormed.f32(), dlogits, w, N, C, V);
    Param* head_param = tied_ ? &embed_ : &head_;
    Tensor final_out = acts.final_out, logits = acts.logits;
    acts.weight_grads.add([this, head_param, logits, final_out, N, C, V] {
      gemm_head_.backward_weight(head_param->g(), logits.f32(), final_out.f32(), N, C, V);
    });
    dev::rmsnorm_backward_f32(dx.f32(), final_norm_.g(), dnormed.f32(), acts.final_in.f32(), final_norm_.v(),
                              acts.final_rstd.f32(), N, C);
    finish_segment();
  } else {
    CHECK(d_output != nullptr) << "a stage without the head needs the gradient of its output";
    dev::copy_f32(dx.f32(), d_output, N * C);
  }
  Tensor dprev = f32_matrix(N, C);
  for (size_t i = acts.blocks.size(); i-- > 0;) {
    block_backward(blocks_[first + i], acts.blocks[i], dprev.f32(), dx.f32(), acts.weight_grads);
    std::swap(dx, dprev);
    finish_segment();
    if (progress_) progress_();
  }
  if (embeds) {
    // Scatter-add into the embedding rows the batch used (deterministic order: token index).
    dev::scatter_add_rows_f32(embed_.g(), dx.f32(), acts.tokens.data<int32_t>(), N, C);
  } else {
    CHECK(d_input != nullptr) << "a stage without the embedding passes its input gradient back";
    dev::copy_f32(d_input, dx.f32(), N * C);
  }
  while (ready != nullptr && segment < segments.size()) finish_segment();  // the embedding
}

void Transformer::backward_weight(Activations& acts) {
  ComputeDeviceScope on(device_);
  acts.weight_grads.run();
}

void Transformer::release_after_backward_input(Activations& acts) const {
  // Kept: attention's input and core output (q/k/v and wo GEMMs), the MLP's and experts' inputs
  // and activations, the MoE input (router GEMM), the head's input and its dlogits.
  for (BlockSaved& b : acts.blocks) {
    b.x = b.rstd1 = b.h = b.rstd2 = Tensor();
    AttentionSaved& a = b.attn;
    a.q_raw = a.k_raw = a.q_rstd = a.k_rstd = a.q = a.k = a.v = a.lse = a.pos = a.key_start = Tensor();
    b.mlp.gate = b.mlp.up = Tensor();
    MoeSaved& m = b.moe;
    m.probs = m.ye = m.gate = m.up = m.shared_y = Tensor();
    m.shared.gate = m.shared.up = Tensor();
  }
  acts.final_in = acts.final_rstd = acts.lse = Tensor();
}

Tensor Transformer::logits(const Batch& batch) {
  CHECK(whole()) << "logits() needs the whole model on one stage";
  Activations acts;
  forward(batch, acts, 1.0);
  return acts.logits;
}

std::vector<MoeStats> Transformer::moe_stats(const Activations& acts) const {
  std::vector<MoeStats> out;
  const size_t first = chunk_blocks_[static_cast<size_t>(acts.chunk)].first;
  for (size_t i = 0; i < acts.blocks.size(); ++i) {
    const Block& b = blocks_[first + i];
    if (!b.is_moe) continue;
    out.push_back({b.index, acts.blocks[i].moe.load, acts.blocks[i].moe.dropped});
  }
  return out;
}

std::vector<MoeStats> Transformer::empty_moe_stats() const {
  std::vector<MoeStats> out;
  for (const Block& b : blocks_)
    if (b.is_moe) out.push_back({b.index, std::vector<int64_t>(static_cast<size_t>(config_.moe.n_experts), 0), 0});
  return out;
}

void Transformer::update_router_biases(const std::vector<MoeStats>& global_stats, float gamma) {
  for (const MoeStats& st : global_stats)
    for (Block& b : blocks_)
      if (b.index == st.block && b.is_moe && b.moe.router_bias.defined()) moe_update_bias(b.moe, st.load, gamma);
}

std::vector<KVCache> Transformer::make_kv_caches(int64_t B, int64_t capacity) const {
  CHECK_LE(capacity, config_.max_seq_len) << "KV cache longer than max_seq_len";
  std::vector<KVCache> caches(blocks_.size());
  for (KVCache& c : caches) c.allocate(B, capacity, config_.n_kv_heads, config_.resolved_head_dim());
  return caches;
}

Tensor Transformer::decode(std::vector<KVCache>& caches, const std::vector<int32_t>& tokens,
                           const std::vector<int32_t>& positions, const std::vector<int32_t>& key_start, int64_t B,
                           int64_t T_new, bool last_only) {
  CHECK(whole()) << "decode() needs the whole model on one stage";
  return decode_chunk(caches, 0, tokens, positions, key_start, B, T_new, last_only, nullptr, nullptr);
}

Tensor Transformer::decode_chunk(std::vector<KVCache>& caches, int chunk, const std::vector<int32_t>& tokens,
                                 const std::vector<int32_t>& positions, const std::vector<int32_t>& key_start,
                                 int64_t B, int64_t T_new, bool last_only, const float* input, float* output) {
  CHECK_EQ(caches.size(), blocks_.size());
  CHECK(device_.is_cpu()) << "decoding on " << device_.to_string() << " is not wired yet (#11): it runs on the CPU";
  CHECK(chunk >= 0 && chunk < n_chunks()) << "chunk " << chunk << " of " << n_chunks();
  const auto [first, end] = chunk_blocks_[static_cast<size_t>(chunk)];
  const bool embeds = stage_.has_embedding && chunk == 0, heads = stage_.has_head && chunk == n_chunks() - 1;
  const int64_t N = B * T_new, C = config_.d_model, V = config_.vocab_size;
  CHECK_EQ(static_cast<int64_t>(positions.size()), N);
  Tensor x = f32_matrix(N, C), y = f32_matrix(N, C);
  if (embeds) {
    CHECK_EQ(static_cast<int64_t>(tokens.size()), N);
    embed(tokens.data(), N, x.f32());
  } else {
    CHECK(input != nullptr) << "a stage without the embedding decodes from its input hidden states";
    dev::copy_f32(x.f32(), input, N * C);
  }
  const int32_t* ks = key_start.empty() ? nullptr : key_start.data();
  for (size_t i = first; i < end; ++i) {
    block_decode(blocks_[i], caches[i], y.f32(), x.f32(), positions.data(), ks, B, T_new, rope_);
    std::swap(x, y);
    if (progress_) progress_();
  }
  if (!heads) {
    CHECK(output != nullptr) << "a stage without the head passes its hidden states on";
    dev::copy_f32(output, x.f32(), N * C);
    return Tensor();
  }
  if (last_only && T_new > 1) {
    Tensor last = f32_matrix(B, C);
    for (int64_t b = 0; b < B; ++b) dev::copy_f32(last.f32() + b * C, x.f32() + ((b + 1) * T_new - 1) * C, C);
    x = last;
  }
  const int64_t rows = last_only ? B : N;
  Tensor logits = f32_matrix(rows, V);
  head_forward(x.f32(), rows, logits.f32(), nullptr);
  return logits;
}

}  // namespace strata
