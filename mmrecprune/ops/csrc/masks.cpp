// Unstructured masks' weight work (mmrecprune.ops.masks): zeroing the pruned entries of many
// tensors in one call (zero_pruned_, what WeightMasks runs twice per training step), and the
// pass of the global magnitude selection (magnitude_scan, mmrecprune.sparsity.
// magnitude_selection's _scan): one read of a weight writes its new mask, counts what it keeps
// and collects the narrow band around the threshold. Eager PyTorch runs each as a handful of
// passes over L2-sized chunks; these read every entry once, in AVX2 lanes. Built by
// mmrecprune.ops.build (-O3 -mavx2 -mfma -fopenmp-simd). Contiguous float32 (zero_pruned_: any
// 4-byte dtype) CPU tensors and contiguous bool masks. The work is split in fixed blocks of
// kBlock entries over torch's intra-op threads; each block's band is collected alone and the
// blocks are joined in order, so results do not depend on the thread count.
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kBlock = 1 << 16;

// the 8 keep bytes (0 / 1) at m as 8 lanes of all-one or all-zero bits
inline __m256 keep_lanes(const uint8_t* m) {
  int64_t bytes;
  std::memcpy(&bytes, m, 8);
  const __m256i wide = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(wide, _mm256_setzero_si256()));
}

void check_mask(const torch::Tensor& mask, const torch::Tensor& like, const char* what) {
  TORCH_CHECK(mask.device().is_cpu() && mask.scalar_type() == torch::kBool &&
                  mask.is_contiguous() && mask.numel() == like.numel(),
              what, " must be a contiguous bool CPU tensor of the weight's size");
}

// entries [begin, end) of x: x = +0 where keep is false (nan and inf too: the bits are ANDed)
void zero_range(float* x, const uint8_t* keep, int64_t begin, int64_t end) {
  int64_t i = begin;
  for (; i + 8 <= end; i += 8)
    _mm256_storeu_ps(x + i, _mm256_and_ps(_mm256_loadu_ps(x + i), keep_lanes(keep + i)));
  for (; i < end; ++i)
    if (!keep[i]) x[i] = 0.0f;
}

struct Band {
  std::vector<int64_t> index;
  std::vector<float> magnitude;
  int64_t kept = 0;
};

// the band's entries among the 32 at x + i whose bits are set (a candidate is in the band
// where out kept it), in position order
inline void collect(const float* x, const uint8_t* out, int64_t i, uint32_t candidates,
                    Band& band) {
  while (candidates) {
    const int j = __builtin_ctz(candidates);
    if (out[i + j]) {
      band.index.push_back(i + j);
      band.magnitude.push_back(std::fabs(x[i + j]));
    }
    candidates &= candidates - 1;
  }
}

// entries [begin, end): out = keep & (|w| >= lo) (no lo: keep), and the band out & (|w| <= hi)
// (no hi: out); comparisons are ordered, so a nan is pruned where there is a lo and outside
// the band where there is a hi, as NumPy's. 32 entries per iteration: four lanes of 8 packed
// into 32 mask bytes; the band (about 1 % of entries) is located by a bit scan only in the
// iterations that hold some.
template <bool kHasLo, bool kHasHi, bool kHasKeep>
void scan_range(const float* x, const uint8_t* keep, uint8_t* out, float lo, float hi,
                int64_t begin, int64_t end, Band& band) {
  const __m256 sign = _mm256_set1_ps(-0.0f), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  const __m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  const __m256i one = _mm256_set1_epi8(1);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undo the packs' lanes
  int64_t i = begin, kept = 0;  // (a local count: out's bytes may alias band's members)
  for (; i + 32 <= end; i += 32) {
    __m256i m[4];
    uint32_t candidates = 0;
    for (int j = 0; j < 4; ++j) {
      const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i + 8 * j));
      const __m256 k = kHasLo ? _mm256_cmp_ps(a, vlo, _CMP_GE_OQ) : all;
      m[j] = _mm256_castps_si256(k);
      const __m256 c = kHasHi ? _mm256_and_ps(k, _mm256_cmp_ps(a, vhi, _CMP_LE_OQ)) : k;
      candidates |= static_cast<uint32_t>(_mm256_movemask_ps(c)) << (8 * j);
    }
    __m256i bytes = _mm256_and_si256(
        _mm256_permutevar8x32_epi32(_mm256_packs_epi16(_mm256_packs_epi32(m[0], m[1]),
                                                       _mm256_packs_epi32(m[2], m[3])),
                                    order),
        one);
    if constexpr (kHasKeep)  // (min with 1: any nonzero keep byte counts as true)
      bytes = _mm256_and_si256(
          bytes, _mm256_min_epu8(
                     _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keep + i)), one));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), bytes);
    kept += __builtin_popcount(
        static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(bytes, 7))));
    if (candidates) collect(x, out, i, candidates, band);
  }
  for (; i < end; ++i) {
    const float a = std::fabs(x[i]);
    bool m = kHasLo ? a >= lo : true;
    if constexpr (kHasKeep) m = m && keep[i];
    out[i] = m;
    kept += m;
    if (m && (!kHasHi || a <= hi)) {
      band.index.push_back(i);
      band.magnitude.push_back(a);
    }
  }
  band.kept += kept;
}

template <bool kHasLo, bool kHasHi>
void scan_blocks(const float* x, const uint8_t* keep, uint8_t* out, float lo, float hi,
                 int64_t n, std::vector<Band>& bands) {
  at::parallel_for(0, static_cast<int64_t>(bands.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      const int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
      if (keep != nullptr)
        scan_range<kHasLo, kHasHi, true>(x, keep, out, lo, hi, begin, end, bands[b]);
      else
        scan_range<kHasLo, kHasHi, false>(x, keep, out, lo, hi, begin, end, bands[b]);
    }
  });
}

}  // namespace

// tensors[i] = +0 where keeps[i] is false, for every i (any 4-byte dtype: the bits are ANDed)
void zero_pruned_(std::vector<torch::Tensor> tensors, std::vector<torch::Tensor> keeps) {
  TORCH_CHECK(tensors.size() == keeps.size(), "one mask per tensor");
  std::vector<std::tuple<float*, const uint8_t*, int64_t, int64_t>> blocks;
  for (size_t t = 0; t < tensors.size(); ++t) {
    const auto& x = tensors[t];
    TORCH_CHECK(x.device().is_cpu() && x.element_size() == 4 && x.is_contiguous(),
                "zero_pruned_ takes contiguous CPU tensors of a 4-byte dtype");
    check_mask(keeps[t], x, "each mask");
    auto* data = static_cast<float*>(x.data_ptr());
    const auto* keep = reinterpret_cast<const uint8_t*>(keeps[t].data_ptr<bool>());
    for (int64_t begin = 0; begin < x.numel(); begin += kBlock)
      blocks.emplace_back(data, keep, begin, std::min(x.numel(), begin + kBlock));
  }
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      const auto& [data, keep, begin, end] = blocks[b];
      zero_range(data, keep, begin, end);
    }
  });
}

// out = keep & (|w| >= lo) (keep None: all kept; no lo: has_lo false);
// returns how many entries out keeps, and the positions and magnitudes of those also <= hi
// (no hi: all of them), in position order
std::tuple<int64_t, torch::Tensor, torch::Tensor> magnitude_scan(
    torch::Tensor weight, std::optional<torch::Tensor> keep, torch::Tensor out, bool has_lo,
    double lo, bool has_hi, double hi) {
  TORCH_CHECK(weight.device().is_cpu() && weight.scalar_type() == torch::kFloat32 &&
                  weight.is_contiguous(),
              "magnitude_scan takes a contiguous float32 CPU weight");
  check_mask(out, weight, "out");
  if (keep) check_mask(*keep, weight, "keep");
  const int64_t n = weight.numel();
  const float* x = weight.data_ptr<float>();
  const auto* k = keep ? reinterpret_cast<const uint8_t*>(keep->data_ptr<bool>()) : nullptr;
  auto* o = reinterpret_cast<uint8_t*>(out.data_ptr<bool>());
  std::vector<Band> bands((n + kBlock - 1) / kBlock);
  const auto flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
  if (has_lo && has_hi)
    scan_blocks<true, true>(x, k, o, flo, fhi, n, bands);
  else if (has_lo)
    scan_blocks<true, false>(x, k, o, flo, fhi, n, bands);
  else if (has_hi)
    scan_blocks<false, true>(x, k, o, flo, fhi, n, bands);
  else
    scan_blocks<false, false>(x, k, o, flo, fhi, n, bands);
  int64_t kept = 0, size = 0;
  for (const auto& band : bands) {
    kept += band.kept;
    size += static_cast<int64_t>(band.index.size());
  }
  auto index = torch::empty({size}, torch::kInt64);
  auto magnitude = torch::empty({size}, torch::kFloat32);
  int64_t at = 0;
  for (const auto& band : bands) {
    const auto m = static_cast<int64_t>(band.index.size());
    std::memcpy(index.data_ptr<int64_t>() + at, band.index.data(), m * sizeof(int64_t));
    std::memcpy(magnitude.data_ptr<float>() + at, band.magnitude.data(), m * sizeof(float));
    at += m;
  }
  return {kept, index, magnitude};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("zero_pruned_", &zero_pruned_, "tensors[i] = +0 where keeps[i] is false");
  module.def("magnitude_scan", &magnitude_scan,
             "out = keep & (|w| >= lo); (kept count, band positions, band magnitudes)");
}
