// On-the-fly pruning's per-step weight work (mmrecprune.ops.onthefly): the unit filters of all
// hyperspherical convs and the gap penalty as one node (fused_forward / fused_backward; with no
// weight penalised, the normalisation alone), and the penalty alone from given unit filters
// (penalty_forward). Each filter is normalised while it sits in L1 and the penalty's sums run in
// AVX2 lanes: at small widths eager PyTorch's cost is a dispatch per conv and operation, not
// arithmetic. Built by mmrecprune.ops.build (-O3 -mavx2 -mfma -fopenmp-simd). Float32
// contiguous CPU tensors; sums in float32 lanes, so results agree with the eager functions to
// rounding. Filters (and the penalty's layers) are split over torch's intra-op threads; each
// filter's and layer's sums run in one thread in a fixed order, and a layer's row sums are
// added in row order, so results do not depend on the thread count.
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr float kNormEps = 1e-12f;  // NORM_EPS of mmrecprune.sparsity.hyperspherical

void check_weights(const std::vector<torch::Tensor>& weights) {
  for (const auto& w : weights)
    TORCH_CHECK(w.device().is_cpu() && w.scalar_type() == torch::kFloat32 && w.is_contiguous() &&
                    w.dim() >= 2 && w.numel() > 0,
                "the kernels take non-empty contiguous float32 CPU conv weights");
}

// filters per task of at::parallel_for: about 32k elements, torch's own grain
int64_t grain(int64_t cols) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1)); }

// the penalty's four sums over one row of unit filters (scaled |u|: total, on kept, hinge on
// kept, kept count), in 8 float lanes, then the tail
void row_sums(const float* u, int64_t n, float root, float border, float margin, float* out) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f), vroot = _mm256_set1_ps(root);
  const __m256 vborder = _mm256_set1_ps(border), vmargin = _mm256_set1_ps(margin);
  __m256 vtotal = _mm256_setzero_ps(), von_kept = vtotal, vhinge = vtotal, vkept = vtotal;
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 s = _mm256_mul_ps(_mm256_andnot_ps(sign_bit, _mm256_loadu_ps(u + j)), vroot);
    const __m256 k = _mm256_and_ps(_mm256_cmp_ps(s, vborder, _CMP_GT_OQ), one);
    vtotal = _mm256_add_ps(vtotal, s);
    von_kept = _mm256_add_ps(von_kept, _mm256_mul_ps(s, k));
    vhinge = _mm256_add_ps(
        vhinge, _mm256_mul_ps(_mm256_sub_ps(_mm256_min_ps(s, vmargin), vmargin), k));
    vkept = _mm256_add_ps(vkept, k);
  }
  alignas(32) float lanes[4][8];
  _mm256_store_ps(lanes[0], vtotal);
  _mm256_store_ps(lanes[1], von_kept);
  _mm256_store_ps(lanes[2], vhinge);
  _mm256_store_ps(lanes[3], vkept);
  for (int q = 0; q < 4; ++q) {
    out[q] = 0.0f;
    for (int l = 0; l < 8; ++l) out[q] += lanes[q][l];
  }
  for (; j < n; ++j) {
    const float s = std::fabs(u[j]) * root;
    const float k = s > border ? 1.0f : 0.0f;
    out[0] += s;
    out[1] += s * k;
    out[2] += (std::min(s, margin) - margin) * k;
    out[3] += k;
  }
}

// the gap penalty's gradient by one unit-filter entry: sign(u) times to_target in the target
// set, -to_kept where a kept entry's hinge acts, 0 elsewhere
inline float penalty_direction(float u, float root, float border, float margin, float to_target,
                               float to_kept) {
  const float s = std::fabs(u) * root;
  const float magnitude = s > border ? (s < margin ? -to_kept : 0.0f) : to_target;
  return static_cast<float>((u > 0.0f) - (u < 0.0f)) * magnitude;
}

// what the backward needs of one layer's penalty: its gradient by u, times the incoming one
struct Penalty {
  float root, border, margin, to_target, to_kept;
};

// one filter's gradient: with g' = g + dP/du (either may be absent), (g' - u <g', u>) * scale,
// where scale is the inverse norm and live it where the norm is not clamped (0 where it is);
// g' is recomputed in each of the two passes (a few ALU operations on a row in L1) rather than
// written out and read back
template <bool kGrad, bool kPenalty>
void project_row(const float* g, const float* u, float* out, int64_t cols, float scale,
                 float live, const Penalty& p) {
  const auto grad_of = [&](int64_t c) {
    float value = 0.0f;
    if constexpr (kGrad) value = g[c];
    if constexpr (kPenalty)
      value += penalty_direction(u[c], p.root, p.border, p.margin, p.to_target, p.to_kept);
    return value;
  };
  float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
  for (int64_t c = 0; c < cols; ++c) dot += grad_of(c) * u[c];
  const float coefficient = -dot * live;
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) out[c] = grad_of(c) * scale + u[c] * coefficient;
}

float root_of(const torch::Tensor& w) {  // sqrt(fan_in), rounded as the eager penalty has it
  return static_cast<float>(std::sqrt(static_cast<double>(w.numel() / w.size(0))));
}


// one layer's term of the gap penalty (without the 1 / count) from its four sums (total, on
// kept, hinge on kept, kept count) over its n entries, and the two factors of its gradient by a
// unit-filter entry (sqrt(fan_in) / count over the target set's and the kept set's sizes)
double layer_term(const float* sums, int64_t n, float root, double count, float* to_target,
                  float* to_kept) {
  const double n_target = std::max(static_cast<double>(n) - sums[3], 1.0);
  const double n_kept = std::max(static_cast<double>(sums[3]), 1.0);
  *to_target = static_cast<float>(root / (count * n_target));
  *to_kept = static_cast<float>(root / (count * n_kept));
  return (sums[0] - sums[1]) / n_target - sums[2] / n_kept;
}

}  // namespace

// one layer of the gap penalty of mmrecprune.sparsity.gap_penalty from its unit filters: its
// term (without the 1 / count) and its gradient by the unit filters, written to `direction` (the
// backward scales it by the incoming gradient); two passes, the second while the layer is still
// in cache
double penalty_layer(const torch::Tensor& unit, float border, float margin, double count,
                     torch::Tensor& direction) {
  const int64_t n = unit.numel();
  const float root = root_of(unit);
  const float* u = unit.data_ptr<float>();
  float sums[4];
  row_sums(u, n, root, border, margin, sums);
  float to_target, to_kept;
  const double term = layer_term(sums, n, root, count, &to_target, &to_kept);
  float* d = direction.data_ptr<float>();
  for (int64_t e = 0; e < n; ++e)
    d[e] = penalty_direction(u[e], root, border, margin, to_target, to_kept);
  return term;
}

// the gap penalty of all layers, then its gradient by each layer's unit filters; the layers are
// split over the intra-op threads and their terms summed in layer order
std::vector<torch::Tensor> penalty_forward(const std::vector<torch::Tensor>& units,
                                           torch::Tensor borders, double margin) {
  check_weights(units);
  TORCH_CHECK(borders.device().is_cpu() && borders.scalar_type() == torch::kFloat32 &&
                  borders.dim() == 1 && borders.size(0) == static_cast<int64_t>(units.size()),
              "one float32 border per unit");
  const auto count = static_cast<double>(units.size());
  const auto border = borders.contiguous();
  const float* b = border.data_ptr<float>();
  std::vector<double> terms(units.size());
  std::vector<torch::Tensor> out(units.size() + 1);
  for (size_t i = 0; i < units.size(); ++i) out[i + 1] = torch::empty_like(units[i]);
  at::parallel_for(0, static_cast<int64_t>(units.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      terms[i] = penalty_layer(units[i], b[i], static_cast<float>(margin), count, out[i + 1]);
  });
  double penalty = 0.0;
  for (double term : terms) penalty += term;
  out[0] = torch::scalar_tensor(penalty / count, torch::kFloat32);
  return out;
}

// ---- one node for the unit filters and the gap penalty (OnTheFlyPruner, compiled_ops=True) ----
// The forward reads each filter once: its norm, its unit filter, and the penalty's four sums
// of the row while it sits in L1. The backward adds the penalty's gradient to the units' and
// projects both in one pass, recomputing the penalty's direction from the unit filter instead
// of storing it. Per layer, the sums of its rows are added in row order, so results do not
// depend on the thread count.

// the unit filters of all weights, w / max(||w_f||, eps) per filter f, and the gap penalty of
// those whose border is not NaN (`count` of them; 0 if none): [*units, per filter of all weights
// in order the inverse norm and the inverse norm where the norm is not clamped (0 where it is),
// per layer (to_target, to_kept), penalty]
std::vector<torch::Tensor> fused_forward(const std::vector<torch::Tensor>& weights,
                                         torch::Tensor borders, double margin_) {
  check_weights(weights);
  const auto layers = static_cast<int64_t>(weights.size());
  TORCH_CHECK(borders.device().is_cpu() && borders.scalar_type() == torch::kFloat32 &&
                  borders.dim() == 1 && borders.size(0) == layers,
              "one float32 border per weight (NaN: not penalised)");
  const auto border_c = borders.contiguous();
  const float* b = border_c.data_ptr<float>();
  const float margin = static_cast<float>(margin_);
  int64_t filters = 0, count = 0;
  for (int64_t i = 0; i < layers; ++i) {
    filters += weights[i].size(0);
    count += std::isnan(b[i]) ? 0 : 1;
  }
  auto inverse = torch::empty({filters}, torch::kFloat32);
  auto live = torch::empty({filters}, torch::kFloat32);
  auto factors = torch::zeros({layers, 2}, torch::kFloat32);
  float* inv = inverse.data_ptr<float>();
  float* lv = live.data_ptr<float>();
  float* fac = factors.data_ptr<float>();
  std::vector<torch::Tensor> out;
  double penalty = 0.0;
  int64_t first = 0;
  for (int64_t i = 0; i < layers; ++i) {
    const auto& w = weights[i];
    auto unit = torch::empty_like(w);
    const int64_t rows = w.size(0), cols = w.numel() / rows;
    const bool penalised = !std::isnan(b[i]);
    const float root = root_of(w);
    std::vector<float> partial(penalised ? rows * 4 : 0);
    const float* x = w.data_ptr<float>();
    float* u = unit.data_ptr<float>();
    at::parallel_for(0, rows, grain(cols), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const float* xr = x + r * cols;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int64_t c = 0; c < cols; ++c) ss += xr[c] * xr[c];
        const float norm = std::sqrt(ss);
        const float scale = 1.0f / std::max(norm, kNormEps);
        inv[first + r] = scale;
        lv[first + r] = norm >= kNormEps ? scale : 0.0f;
        float* ur = u + r * cols;
        for (int64_t c = 0; c < cols; ++c) ur[c] = xr[c] * scale;
        if (penalised) row_sums(ur, cols, root, b[i], margin, partial.data() + 4 * r);
      }
    });
    if (penalised) {
      float sums[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t r = 0; r < rows; ++r)
        for (int q = 0; q < 4; ++q) sums[q] += partial[4 * r + q];
      penalty += layer_term(sums, w.numel(), root, count, fac + 2 * i, fac + 2 * i + 1);
    }
    first += rows;
    out.push_back(unit);
  }
  out.push_back(inverse);
  out.push_back(live);
  out.push_back(factors);
  out.push_back(torch::scalar_tensor(count > 0 ? penalty / count : 0.0, torch::kFloat32));
  return out;
}

// the weights' gradients from the units' (undefined: none) and the penalty's (undefined: none):
// with g' = g + grad_penalty * dP/du, (g' - u <g', u>_f) / ||w_f|| per filter (g' / eps where
// the norm is clamped); undefined for a weight that gets neither
std::vector<torch::Tensor> fused_backward(const std::vector<c10::optional<torch::Tensor>>& grads,
                                          const c10::optional<torch::Tensor>& grad_penalty,
                                          const std::vector<torch::Tensor>& units,
                                          torch::Tensor inverse, torch::Tensor live,
                                          torch::Tensor factors, torch::Tensor borders,
                                          double margin_) {
  const float* inv = inverse.data_ptr<float>();
  const float* lv = live.data_ptr<float>();
  const float* fac = factors.data_ptr<float>();
  const float* b = borders.data_ptr<float>();
  const float margin = static_cast<float>(margin_);
  const bool with_penalty = grad_penalty.has_value() && grad_penalty->defined();
  const float gp = with_penalty ? grad_penalty->item<float>() : 0.0f;
  std::vector<torch::Tensor> out;
  int64_t first = 0;
  for (size_t i = 0; i < units.size(); ++i) {
    const auto& unit = units[i];
    const int64_t rows = unit.size(0), cols = unit.numel() / rows;
    const bool has_grad = grads[i].has_value() && grads[i]->defined();
    const bool penalised = with_penalty && !std::isnan(b[i]);
    if (!has_grad && !penalised) {
      out.emplace_back();
      first += rows;
      continue;
    }
    torch::Tensor g;
    if (has_grad) g = grads[i]->contiguous();
    const float* gp_data = has_grad ? g.data_ptr<float>() : nullptr;
    auto result = torch::empty_like(unit);
    const float* u = unit.data_ptr<float>();
    float* o = result.data_ptr<float>();
    const float root = root_of(unit), border = penalised ? b[i] : 0.0f;
    // the penalty's gradient by u, times the incoming gradient, folded into the factors
    const float to_target = penalised ? gp * fac[2 * i] : 0.0f;
    const float to_kept = penalised ? gp * fac[2 * i + 1] : 0.0f;
    const Penalty penalty{root, border, margin, to_target, to_kept};
    const int64_t start = first;
    at::parallel_for(0, rows, grain(cols), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const float* gr = gp_data != nullptr ? gp_data + r * cols : nullptr;
        const float* ur = u + r * cols;
        float* orow = o + r * cols;
        // one specialisation per case, so that no branch is left inside the loops
        if (gr != nullptr && penalised)
          project_row<true, true>(gr, ur, orow, cols, inv[start + r], lv[start + r], penalty);
        else if (gr != nullptr)
          project_row<true, false>(gr, ur, orow, cols, inv[start + r], lv[start + r], penalty);
        else
          project_row<false, true>(gr, ur, orow, cols, inv[start + r], lv[start + r], penalty);
      }
    });
    first += rows;
    out.push_back(result);
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("penalty_forward", &penalty_forward, "the gap penalty and its gradient");
  module.def("fused_forward", &fused_forward, "unit filters and gap penalty, one node");
  module.def("fused_backward", &fused_backward, "the weights' gradients of the fused node");
}
