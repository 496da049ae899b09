// CPU causal grouped-query attention core, forward and backward (kernels/ops.h).
//
// The unit of work is one kv head of one batch row and a tile of consecutive queries: the
// queries of all G = Hq / Hkv heads that share the kv head are packed as the rows of one matrix
// (row (t - t0) * G + i holds query t of head g * G + i), so each tile is two GEMMs of
// rows = tile * G against the keys the tile can see (the causal limit of its last query): the
// scores Q K^T, then P V. Between them a fp32 softmax per row over that row's visible keys, the
// rest of the row zeroed. The backward is flash attention's: P recomputed from the saved
// log-sum-exp, dP = dO V^T, dS = P * (dP - rowsum(dO * O)), then dQ = dS K, dK += dS^T Q and
// dV += P^T dO, five GEMMs per tile. A decode step (T = 1) is a handful of dot products per head,
// where GEMM call overheads would dominate: plain loops.
//
// Threads: units split over up to blas_threads() threads; inside them every GEMM runs on its
// calling thread (OpenBLAS's own threads are set to 1 for the duration: nested, its pool would
// queue the workers' calls). The forward's units are (batch, kv head, query tile); the
// backward's are (batch, kv head), whose tiles and heads add into dK and dV in a fixed order.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "core/check.h"
#include "kernels/cpu/vec.h"  // kLanes, exp_f32, map_f32, parallel_for, kMinParallelWork
#include "kernels/ops.h"

namespace strata {

using cpu::exp_f32;
using cpu::kLanes;

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Packed query rows per tile. Smaller tiles skip more of the causally masked keys but make
// smaller GEMMs; 32 and 64 rows measured best for D = 32..64 on T = 128..256 here (128 rows was
// 5-10% slower, 16 rows slower still).
constexpr int64_t kTileRows = 64;

struct Dims {
  int64_t B, T, S, S_cap, Hq, Hkv, D;
  int64_t G;      // query heads per kv head
  int64_t tq;     // queries per tile
  int64_t tiles;  // query tiles per (batch, kv head)
  float scale;

  int64_t q_ld() const { return Hq * D; }    // floats between consecutive t of q, out, dq, dout
  int64_t kv_ld() const { return Hkv * D; }  // floats between consecutive keys of k, v, dk, dv
  // Offsets of query t of head h in batch b, and of key j of kv head g.
  int64_t q_at(int64_t b, int64_t t, int64_t h) const { return ((b * T + t) * Hq + h) * D; }
  int64_t kv_at(int64_t b, int64_t j, int64_t g) const { return ((b * S_cap + j) * Hkv + g) * D; }
  int64_t lse_at(int64_t b, int64_t h, int64_t t) const { return (b * Hq + h) * T + t; }
};

Dims make_dims(const char* op, int64_t B, int64_t T, int64_t S, int64_t S_cap, int64_t Hq,
               int64_t Hkv, int64_t D, float scale) {
  CHECK(B >= 0 && T >= 0 && S >= 0 && D > 0 && Hkv > 0 && Hq > 0)
      << op << ": B=" << B << " T=" << T << " S=" << S << " Hq=" << Hq << " Hkv=" << Hkv
      << " D=" << D;
  CHECK_LE(S, S_cap) << op << ": more valid keys than the buffer holds";
  CHECK_EQ(Hq % Hkv, 0) << op << ": Hq=" << Hq << " is not a multiple of Hkv=" << Hkv;
  Dims d{B, T, S, S_cap, Hq, Hkv, D, Hq / Hkv, 0, 0, scale};
  d.tq = std::max<int64_t>(1, kTileRows / d.G);
  d.tiles = (T + d.tq - 1) / d.tq;
  return d;
}

int64_t key_begin(const int32_t* key_start, int64_t b) {
  if (key_start == nullptr) return 0;
  CHECK_GE(key_start[b], 0) << "attention: key_start of batch row " << b;
  return key_start[b];
}

// Keys visible to query t among the keys [ks, ks + nk): min(nk, max(0, S - T + t + 1 - ks)).
int64_t visible(const Dims& d, int64_t t, int64_t ks, int64_t nk) {
  return std::clamp<int64_t>(d.S - d.T + t + 1 - ks, 0, nk);
}

// Fixed-order fp32 dot product over 8 lanes.
float dot(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) acc[j] = std::fma(a[i + j], b[i + j], acc[j]);
  }
  for (int64_t j = 0; i + j < n; ++j) acc[j] = std::fma(a[i + j], b[i + j], acc[j]);
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// y += a * x over n floats (inlined here: the decode loop calls it once per key).
void axpy(float* y, float a, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    float t[kLanes];  // loads before stores: vectorised whatever the pointers (vec.h)
    for (int64_t j = 0; j < kLanes; ++j) t[j] = std::fma(a, x[i + j], y[i + j]);
    for (int64_t j = 0; j < kLanes; ++j) y[i + j] = t[j];
  }
  for (; i < n; ++i) y[i] = std::fma(a, x[i], y[i]);
}

// Rows of scores are stored with their length rounded up to whole blocks of kLanes, so that the
// softmax passes over a row's visible prefix run in whole blocks (rows are short, ~T/2 on average
// in training, and a scalar tail of exp costs as much as the vector part):
int64_t round_up(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// masks a row of nk scores of which the first vis are visible: -inf up to the next whole block
// (exp gives 0 there), then 0 up to nk (the P V product runs over all nk). Returns that block
// boundary, round_up(vis), which may pass nk (the padding is there for it).
int64_t mask_row(float* row, int64_t vis, int64_t nk) {
  const int64_t vis8 = round_up(vis);
  for (int64_t j = vis; j < vis8; ++j) row[j] = kNegInf;
  if (nk > vis8) fill_f32(row + vis8, 0.0f, nk - vis8);
  return vis8;
}

// Maximum of n8 floats (a multiple of kLanes). A NaN may be skipped here, but it still turns
// exp(x - max), and the whole row with it, into NaN.
float row_max(const float* x, int64_t n8) {
  float m[kLanes];
  for (int64_t j = 0; j < kLanes; ++j) m[j] = kNegInf;
  for (int64_t i = 0; i < n8; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
  }
  float r = m[0];
  for (int64_t j = 1; j < kLanes; ++j) r = m[j] > r ? m[j] : r;
  return r;
}

// row[i] = exp(row[i] - m) for i < n8 (a multiple of kLanes), returning their sum (double
// lanes, fixed order).
double exp_in_place(float* row, float m, int64_t n8) {
  double acc[kLanes] = {};
  for (int64_t i = 0; i < n8; i += kLanes) {
    float e[kLanes];
    for (int64_t j = 0; j < kLanes; ++j) e[j] = exp_f32(row[i + j] - m);
    for (int64_t j = 0; j < kLanes; ++j) {
      acc[j] += e[j];
      row[i + j] = e[j];
    }
  }
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Runs fn(begin, end) over contiguous chunks of [0, units) on up to blas_threads() threads
// (small jobs inline), with OpenBLAS single-threaded for the duration either way: nested in our
// workers its pool would queue their calls, and on the caller's thread alone it would split some
// GEMMs and not others. `work` is in vec.h's units (elements of a softmax, ~1.2 ns each).
template <typename F>
void for_units(int64_t units, int64_t work, F fn) {
  if (units <= 0) return;
  const int blas = blas_threads();
  if (blas > 1) set_blas_threads(1);
  const int64_t threads = std::min<int64_t>(blas, units);
  if (threads <= 1 || work < cpu::kMinParallelWork) {
    fn(int64_t{0}, units);
  } else {
    std::vector<std::thread> pool;
    const int64_t chunk = (units + threads - 1) / threads;
    for (int64_t begin = chunk; begin < units; begin += chunk) {
      pool.emplace_back([=, &fn] { fn(begin, std::min(begin + chunk, units)); });
    }
    fn(int64_t{0}, std::min(chunk, units));
    for (std::thread& t : pool) t.join();
  }
  if (blas > 1) set_blas_threads(blas);
}

// Scratch of one worker, sized for the largest tile: rows = tq * G packed query rows against up
// to S keys.
struct Scratch {
  std::vector<float> qp, op, dop, scores, dp;
  std::vector<float> row_scale;  // forward: 1 / sum per row; backward: D_i per row
  Scratch(const Dims& d, bool backward) {
    const size_t rows = static_cast<size_t>(d.tq * d.G);
    qp.resize(rows * d.D);
    op.resize(rows * d.D);
    scores.resize(rows * round_up(std::max<int64_t>(d.S, 1)));
    row_scale.resize(rows);
    if (backward) {
      dop.resize(rows * d.D);
      dp.resize(rows * round_up(std::max<int64_t>(d.S, 1)));
    }
  }
};

// Packs the G heads of kv head g for queries [t0, t1) of batch b: row (t - t0) * G + i is query t
// of head g * G + i (the G heads of one t are adjacent in src, so each t is one copy).
void pack_rows(float* dst, const float* src, const Dims& d, int64_t b, int64_t g, int64_t t0,
               int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) {
    std::memcpy(dst + (t - t0) * d.G * d.D, src + d.q_at(b, t, g * d.G),
                static_cast<size_t>(d.G * d.D) * sizeof(float));
  }
}

// ---- forward ----

// Loops for a single query per head: scores, softmax and the weighted sum of values, per
// (batch, query head).
void forward_decode(float* out, float* lse, const float* q, const float* k, const float* v,
                    const int32_t* key_start, const Dims& d) {
  // ~0.25 ns per (key, dimension) of a head, a fifth of a softmax element (measured).
  const int64_t work = d.B * d.Hq * d.S * d.D / 4;
  cpu::parallel_for(d.B * d.Hq, work, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(round_up(std::max<int64_t>(d.S, 1))));
    std::vector<float> acc(static_cast<size_t>(d.D));
    for (int64_t u = begin; u < end; ++u) {
      const int64_t b = u / d.Hq, h = u % d.Hq, g = h / d.G;
      const int64_t ks = key_begin(key_start, b);
      const int64_t nk = visible(d, 0, ks, std::max<int64_t>(d.S - ks, 0));  // all of them
      float* o = out + d.q_at(b, 0, h);
      if (nk == 0) {
        fill_f32(o, 0.0f, d.D);
        lse[d.lse_at(b, h, 0)] = kNegInf;
        continue;
      }
      const float* qr = q + d.q_at(b, 0, h);
      for (int64_t j = 0; j < nk; ++j) {
        scores[j] = dot(qr, k + d.kv_at(b, ks + j, g), d.D) * d.scale;
      }
      const int64_t nk8 = mask_row(scores.data(), nk, nk);
      const float m = row_max(scores.data(), nk8);
      const double sum = exp_in_place(scores.data(), m, nk8);
      fill_f32(acc.data(), 0.0f, d.D);
      for (int64_t j = 0; j < nk; ++j) axpy(acc.data(), scores[j], v + d.kv_at(b, ks + j, g), d.D);
      const float inv = static_cast<float>(1.0 / sum);
      const float* a = acc.data();
      cpu::map_f32(o, d.D, [=](int64_t i) { return a[i] * inv; });
      lse[d.lse_at(b, h, 0)] = static_cast<float>(m + std::log(sum));
    }
  });
}

// One query tile [t0, t1) of kv head g in batch b.
void forward_tile(float* out, float* lse, const float* q, const float* k, const float* v,
                  int64_t ks, const Dims& d, int64_t b, int64_t g, int64_t t0, int64_t t1,
                  Scratch& s) {
  const int64_t rows = (t1 - t0) * d.G;
  // Keys [ks, S - T + t1): everything the tile's last query sees.
  const int64_t nk = std::max<int64_t>(0, d.S - d.T + t1 - ks);
  const int64_t ld = round_up(nk);
  if (nk > 0) {
    pack_rows(s.qp.data(), q, d, b, g, t0, t1);
    gemm_f32(false, true, rows, nk, d.D, d.scale, s.qp.data(), d.D, k + d.kv_at(b, ks, g),
             d.kv_ld(), 0.0f, s.scores.data(), ld);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = t0 + r / d.G, h = g * d.G + r % d.G;
    const int64_t vis = visible(d, t, ks, nk);
    float* row = s.scores.data() + r * ld;
    const int64_t vis8 = mask_row(row, vis, nk);
    if (vis == 0) {
      s.row_scale[r] = 0.0f;
      lse[d.lse_at(b, h, t)] = kNegInf;
      continue;
    }
    const float m = row_max(row, vis8);
    const double sum = exp_in_place(row, m, vis8);
    s.row_scale[r] = static_cast<float>(1.0 / sum);
    lse[d.lse_at(b, h, t)] = static_cast<float>(m + std::log(sum));
  }
  if (nk > 0) {
    gemm_f32(false, false, rows, d.D, nk, 1.0f, s.scores.data(), ld, v + d.kv_at(b, ks, g),
             d.kv_ld(), 0.0f, s.op.data(), d.D);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = t0 + r / d.G, h = g * d.G + r % d.G;
    const float inv = s.row_scale[r];
    const float* o = s.op.data() + r * d.D;
    // inv == 0 (no visible key) must give 0 even where o was never written (nk == 0).
    if (inv == 0.0f) {
      fill_f32(out + d.q_at(b, t, h), 0.0f, d.D);
    } else {
      cpu::map_f32(out + d.q_at(b, t, h), d.D, [=](int64_t i) { return o[i] * inv; });
    }
  }
}

// ---- backward ----

// All query tiles of kv head g in batch b, in order; dk and dv of the group's first S keys are
// zeroed first and accumulated tile by tile.
void backward_group(float* dq, float* dk, float* dv, const float* dout, const float* out,
                    const float* lse, const float* q, const float* k, const float* v, int64_t ks,
                    const Dims& d, int64_t b, int64_t g, Scratch& s) {
  for (int64_t j = 0; j < d.S; ++j) {
    fill_f32(dk + d.kv_at(b, j, g), 0.0f, d.D);
    fill_f32(dv + d.kv_at(b, j, g), 0.0f, d.D);
  }
  for (int64_t tile = 0; tile < d.tiles; ++tile) {
    const int64_t t0 = tile * d.tq, t1 = std::min(t0 + d.tq, d.T);
    const int64_t rows = (t1 - t0) * d.G;
    const int64_t nk = std::max<int64_t>(0, d.S - d.T + t1 - ks);
    if (nk == 0) {  // no query of the tile sees a key: dq = 0, nothing flows to dk, dv
      for (int64_t t = t0; t < t1; ++t) fill_f32(dq + d.q_at(b, t, g * d.G), 0.0f, d.G * d.D);
      continue;
    }
    const int64_t ld = round_up(nk);
    float* P = s.scores.data();
    float* dS = s.dp.data();
    const float* kb = k + d.kv_at(b, ks, g);
    const float* vb = v + d.kv_at(b, ks, g);
    pack_rows(s.qp.data(), q, d, b, g, t0, t1);
    pack_rows(s.dop.data(), dout, d, b, g, t0, t1);
    gemm_f32(false, true, rows, nk, d.D, d.scale, s.qp.data(), d.D, kb, d.kv_ld(), 0.0f, P, ld);
    gemm_f32(false, true, rows, nk, d.D, 1.0f, s.dop.data(), d.D, vb, d.kv_ld(), 0.0f, dS, ld);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = t0 + r / d.G, h = g * d.G + r % d.G;
      const int64_t vis = visible(d, t, ks, nk);
      float* p = P + r * ld;
      float* ds = dS + r * ld;
      const int64_t vis8 = mask_row(p, vis, nk);  // P = 0 beyond vis: so is dS = P (dP - D_i)
      if (nk > vis8) fill_f32(ds + vis8, 0.0f, nk - vis8);
      if (vis == 0) continue;
      const float l = lse[d.lse_at(b, h, t)];
      const float di = dot(dout + d.q_at(b, t, h), out + d.q_at(b, t, h), d.D);
      for (int64_t i = 0; i < vis8; i += kLanes) {  // P = exp(S - lse), dS = P (dP - D_i)
        float pe[kLanes], de[kLanes];
        for (int64_t j = 0; j < kLanes; ++j) pe[j] = exp_f32(p[i + j] - l);
        for (int64_t j = 0; j < kLanes; ++j) de[j] = pe[j] * (ds[i + j] - di);
        for (int64_t j = 0; j < kLanes; ++j) p[i + j] = pe[j];
        for (int64_t j = 0; j < kLanes; ++j) ds[i + j] = de[j];
      }
    }
    // dQ = scale dS K (packed, then scattered); dK += scale dS^T Q; dV += P^T dO.
    gemm_f32(false, false, rows, d.D, nk, d.scale, dS, ld, kb, d.kv_ld(), 0.0f, s.op.data(), d.D);
    for (int64_t t = t0; t < t1; ++t) {
      std::memcpy(dq + d.q_at(b, t, g * d.G), s.op.data() + (t - t0) * d.G * d.D,
                  static_cast<size_t>(d.G * d.D) * sizeof(float));
    }
    gemm_f32(true, false, nk, d.D, rows, d.scale, dS, ld, s.qp.data(), d.D, 1.0f,
             dk + d.kv_at(b, ks, g), d.kv_ld());
    gemm_f32(true, false, nk, d.D, rows, 1.0f, P, ld, s.dop.data(), d.D, 1.0f,
             dv + d.kv_at(b, ks, g), d.kv_ld());
  }
}

}  // namespace

void attention_forward_f32(float* out, float* lse, const float* q, const float* k, const float* v,
                           const int32_t* key_start, int64_t B, int64_t T, int64_t S, int64_t S_cap,
                           int64_t Hq, int64_t Hkv, int64_t D, float scale) {
  const Dims d = make_dims("attention_forward", B, T, S, S_cap, Hq, Hkv, D, scale);
  if (B == 0 || T == 0) return;
  if (T == 1) {
    forward_decode(out, lse, q, k, v, key_start, d);
    return;
  }
  const int64_t units = B * Hkv * d.tiles;
  // Measured ~0.05 ns per (query, key, dimension) of a head, a twentieth of a softmax element.
  for_units(units, B * Hq * T * S * D / 16, [&](int64_t begin, int64_t end) {
    Scratch s(d, /*backward=*/false);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t b = u / (Hkv * d.tiles), g = (u / d.tiles) % Hkv, tile = u % d.tiles;
      const int64_t t0 = tile * d.tq, t1 = std::min(t0 + d.tq, T);
      forward_tile(out, lse, q, k, v, key_begin(key_start, b), d, b, g, t0, t1, s);
    }
  });
}

void attention_backward_f32(float* dq, float* dk, float* dv, const float* dout, const float* out,
                            const float* lse, const float* q, const float* k, const float* v,
                            const int32_t* key_start, int64_t B, int64_t T, int64_t S,
                            int64_t S_cap, int64_t Hq, int64_t Hkv, int64_t D, float scale) {
  const Dims d = make_dims("attention_backward", B, T, S, S_cap, Hq, Hkv, D, scale);
  if (B == 0) return;
  for_units(B * Hkv, B * Hq * T * S * D / 8, [&](int64_t begin, int64_t end) {  // 2x forward
    Scratch s(d, /*backward=*/true);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t b = u / Hkv, g = u % Hkv;
      backward_group(dq, dk, dv, dout, out, lse, q, k, v, key_begin(key_start, b), d, b, g, s);
    }
  });
}

}  // namespace strata
