// Prototype for issue 22, option (a): the global magnitude prune's two passes over the weights
// as hand-written AVX2 loops, to measure how near compiled code comes to the floor (one read of
// every weight). Not part of the package: mmrecprune.benchmarks.compiled_prototypes builds it
// with torch.utils.cpp_extension (g++ and ninja) and runs it (prototype_prune), which
// tools/benchmarks/bench_global_prune.py --compiled-prototype times and checks against the
// package's masks and pruned weights.
//
// Pass 1 (read only): how many |w| < lo, and the band lo <= |w| <= hi (positions and signed
// values), lo / hi bracketing the k-th smallest magnitude (from the package's strided sample).
// Pass 2: mask = |w| > t, w zeroed where the mask is false; the caller restores the tied
// entries that the exact count keeps (from the band's signed values). prune_band does both in
// one pass (see there).
#include <immintrin.h>
#include <torch/extension.h>

#include <cmath>
#include <vector>

namespace {

void check_weight(const torch::Tensor& w) {
  TORCH_CHECK(w.device().is_cpu() && w.scalar_type() == torch::kFloat32 && w.is_contiguous(),
              "the prototype takes contiguous float32 CPU weights");
}

// One read of w: how many |w| < lo (counted in 32-bit lanes, a compare being -1 or 0, four
// independent accumulators so that the loop runs at the speed of the reads, summed every 2^20
// entries: no overflow), and the band lo <= |w| <= hi (positions and signed values), located
// by a bit scan only in blocks that hold some (about 1 % of entries). With kPrune, the same
// pass also writes mask = |w| >= lo and zeroes w where |w| < lo (the band stays kept).
template <bool kPrune>
std::vector<torch::Tensor> band_scan(torch::Tensor w, uint8_t* m, double lo_, double hi_) {
  float* x = w.data_ptr<float>();
  const int64_t n = w.numel();
  const float lo = static_cast<float>(lo_), hi = static_cast<float>(hi_);
  std::vector<int64_t> index;
  std::vector<float> value;
  int64_t below = 0, i = 0;
  const __m256 sign = _mm256_set1_ps(-0.0f), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  const __m256i one = _mm256_set1_epi8(1);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undo the packs' lanes
  __m256i lanes[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                      _mm256_setzero_si256()};
  alignas(32) int32_t part[8];
  auto drain = [&]() {
    const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(lanes[0], lanes[1]),
                                         _mm256_add_epi32(lanes[2], lanes[3]));
    _mm256_store_si256(reinterpret_cast<__m256i*>(part), sum);
    for (const int32_t c : part) below += c;
    for (auto& lane : lanes) lane = _mm256_setzero_si256();
  };
  for (; i + 32 <= n; i += 32) {
    __m256i keep[4];
    __m256 in_band[4];
    for (int j = 0; j < 4; ++j) {
      const __m256 v = _mm256_loadu_ps(x + i + 8 * j);
      const __m256 a = _mm256_andnot_ps(sign, v);
      const __m256 l = _mm256_cmp_ps(a, vlo, _CMP_LT_OQ);
      lanes[j] = _mm256_sub_epi32(lanes[j], _mm256_castps_si256(l));
      in_band[j] = _mm256_andnot_ps(l, _mm256_cmp_ps(a, vhi, _CMP_LE_OQ));
      if constexpr (kPrune) {
        _mm256_storeu_ps(x + i + 8 * j, _mm256_andnot_ps(l, v));
        keep[j] = _mm256_castps_si256(_mm256_cmp_ps(a, vlo, _CMP_GE_OQ));
      }
    }
    if constexpr (kPrune) {
      const __m256i bytes = _mm256_permutevar8x32_epi32(
          _mm256_packs_epi16(_mm256_packs_epi32(keep[0], keep[1]),
                             _mm256_packs_epi32(keep[2], keep[3])),
          order);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(m + i), _mm256_and_si256(bytes, one));
    }
    const __m256 any = _mm256_or_ps(_mm256_or_ps(in_band[0], in_band[1]),
                                    _mm256_or_ps(in_band[2], in_band[3]));
    if (!_mm256_testz_ps(any, any)) {
      uint32_t band = 0;
      for (int j = 0; j < 4; ++j)
        band |= static_cast<uint32_t>(_mm256_movemask_ps(in_band[j])) << (8 * j);
      while (band) {
        const int j = __builtin_ctz(band);
        index.push_back(i + j);
        value.push_back(x[i + j]);
        band &= band - 1;
      }
    }
    if (((i + 32) & ((1 << 20) - 1)) == 0) drain();
  }
  drain();
  for (; i < n; ++i) {  // the tail of fewer than 32 entries
    const float a = std::fabs(x[i]);
    if constexpr (kPrune) m[i] = a >= lo;
    if (a < lo) {
      ++below;
      if constexpr (kPrune) x[i] = 0.0f;
    } else if (a <= hi) {
      index.push_back(i);
      value.push_back(x[i]);
    }
  }
  const auto n_band = static_cast<int64_t>(index.size());
  return {torch::scalar_tensor(below, torch::kInt64),
          torch::from_blob(index.data(), {n_band}, torch::kInt64).clone(),
          torch::from_blob(value.data(), {n_band}, torch::kFloat32).clone()};
}

void check_mask(const torch::Tensor& w, const torch::Tensor& mask) {
  TORCH_CHECK(mask.scalar_type() == torch::kBool && mask.numel() == w.numel() &&
                  mask.is_contiguous(), "mask must be a contiguous bool tensor of w's size");
}

}  // namespace

// Pass 1 (read only): how many |w| < lo, and the band, lo / hi bracketing the k-th smallest
// magnitude (from the package's strided sample)
std::vector<torch::Tensor> count_band(torch::Tensor w, double lo, double hi) {
  check_weight(w);
  return band_scan<false>(w, nullptr, lo, hi);
}

// Pass 2: mask = |w| > t, w zeroed where the mask is false
void prune_at(torch::Tensor w, torch::Tensor mask, double t_) {
  check_weight(w);
  check_mask(w, mask);
  float* x = w.data_ptr<float>();
  auto* m = reinterpret_cast<uint8_t*>(mask.data_ptr<bool>());
  const int64_t n = w.numel();
  const float t = static_cast<float>(t_);
  const __m256 sign = _mm256_set1_ps(-0.0f), vt = _mm256_set1_ps(t);
  const __m256i one = _mm256_set1_epi8(1);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undo the packs' lanes
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i keep[4];
    for (int j = 0; j < 4; ++j) {
      const __m256 v = _mm256_loadu_ps(x + i + 8 * j);
      const __m256 k = _mm256_cmp_ps(_mm256_andnot_ps(sign, v), vt, _CMP_GT_OQ);
      _mm256_storeu_ps(x + i + 8 * j, _mm256_and_ps(v, k));
      keep[j] = _mm256_castps_si256(k);
    }
    const __m256i bytes = _mm256_permutevar8x32_epi32(
        _mm256_packs_epi16(_mm256_packs_epi32(keep[0], keep[1]),
                           _mm256_packs_epi32(keep[2], keep[3])),
        order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(m + i), _mm256_and_si256(bytes, one));
  }
  for (; i < n; ++i) {
    const bool k = std::fabs(x[i]) > t;
    m[i] = k;
    if (!k) x[i] = 0.0f;
  }
}

// One pass instead of two: what lies below the sample's bracket is pruned whatever the exact
// threshold, and the band stays kept; the caller selects the exact threshold in the band and
// prunes the band's entries at or below it (about 1 % of the weights, by index)
std::vector<torch::Tensor> prune_band(torch::Tensor w, torch::Tensor mask, double lo,
                                      double hi) {
  check_weight(w);
  check_mask(w, mask);
  return band_scan<true>(w, reinterpret_cast<uint8_t*>(mask.data_ptr<bool>()), lo, hi);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("count_band", &count_band, "pass 1: count below lo, collect the band");
  module.def("prune_at", &prune_at, "pass 2: mask = |w| > t, zero the rest");
  module.def("prune_band", &prune_band, "one pass: prune below lo, keep and collect the band");
}
