// Matmuls on GGUF blocks as they lie in the file: y [M, N] = x [M, K] W^T (+ bias), W given as the raw
// bytes of N rows, K values each, of one GGML type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K).
//
// Every type is read in chunks of 32 values. A chunk decodes to 32 unsigned codes c and, for each half of
// 16, a scale s and an offset m with w = s * c + m (Q4_0: s = d, m = -8 d; Q4_K: s = d sc_j, m = -dmin mn_j;
// Q6_K: s = d sc_j, m = -32 s; ...). Activations are quantized per 16 values to int8 a = round(x / da_h)
// with da_h = max|x| / 127 over the half h, and carry the sums of each half. Then
//     sum(w x) ~= sum_h s_h da_h sum_h(c a) + m_h da_h sum_h(a)
// with the integer dot products on 32 values at a time: one AVX-512 VNNI dpbusd (u8 x s8 -> s32), or on
// AVX2 maddubs + madd (the same exact integer sums). Without AVX2 the same arithmetic runs as plain loops. Weights are never unpacked to memory: each chunk is
// decoded in registers, once per tile of up to TILE_M activation rows.
//
// Cost: one pass over W per TILE_M rows of x (bandwidth-bound for decode), M * K bytes of quantized
// activations. From DENSE_MIN_ROWS rows on (prefill, big batches) the dense path below runs instead.
// Threads: at::parallel_for over blocks of output rows.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "gguf_blocks.h"

namespace maxcli_gguf {

// Activations of M rows quantized to int8 per half-chunk of 16 values (a scale per 16: outliers, which
// real hidden states have, cost precision only within their 16 values). Per chunk of 32 the kernel needs
// two 8-lane vectors, precomputed here so the inner loop only loads them:
//   scale lanes [da0 x4, da1 x4]         (dpbusd lane j sums values 4j .. 4j + 3, so lanes 0-3 are half 0)
//   sum lanes   [da0 S0 / 4 x4, da1 S1 / 4 x4]   (S = sum of the half's codes; the 8 lanes add up to both)
struct QuantizedRows {
  int64_t rows = 0, k = 0, chunks = 0;
  std::vector<int8_t> q;      // [rows, k]
  std::vector<float> lanes;   // [rows, chunks, 16]: 8 scale lanes, then 8 sum lanes
};

inline void quantize_rows(const float* x, int64_t rows, int64_t k, QuantizedRows* out) {
  out->rows = rows;
  out->k = k;
  out->chunks = k / 32;
  out->q.resize(rows * k);
  out->lanes.resize(rows * out->chunks * 16);
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = 0; c < out->chunks; ++c) {
        float* lanes = out->lanes.data() + (r * out->chunks + c) * 16;
        for (int h = 0; h < 2; ++h) {
          const float* v = x + r * k + c * 32 + h * 16;
          float amax = 0.f;
          for (int j = 0; j < 16; ++j) amax = std::max(amax, std::fabs(v[j]));
          const float d = amax / 127.f;
          const float id = d > 0.f ? 1.f / d : 0.f;
          int8_t* q = out->q.data() + r * k + c * 32 + h * 16;
          int sum = 0;
          for (int j = 0; j < 16; ++j) {
            const int qi = static_cast<int>(std::nearbyint(v[j] * id));
            q[j] = static_cast<int8_t>(qi);
            sum += qi;
          }
          for (int j = 0; j < 4; ++j) {
            lanes[h * 4 + j] = d;
            lanes[8 + h * 4 + j] = d * sum * 0.25f;
          }
        }
      }
    }
  });
}

constexpr int TILE_M = 4;

// out[m] = sum over the row of w * x for rows m0 .. m0 + MT - 1 of `a` (MT <= TILE_M, compile time).
template <int T, int MT>
inline void dot_tile(const uint8_t* wrow, const QuantizedRows& a, int64_t m0, float* out) {
  constexpr int CPB = chunks_per_block<T>(), BB = block_bytes<T>();
  const int64_t chunks = a.chunks, k = a.k;
#if MAXCLI_SIMD
  // Four independent accumulator chains per row (dot and offset terms, even and odd chunks): one chain
  // would serialise on the FMA latency (two dependent FMAs per chunk), not on throughput.
  __m256 dot0[MT], off0[MT], dot1[MT], off1[MT];
  for (int m = 0; m < MT; ++m) dot0[m] = off0[m] = dot1[m] = off1[m] = _mm256_setzero_ps();
  auto step = [&](const uint8_t* b, int i, const Scales& s, int64_t c, __m256* dot, __m256* off)
                  __attribute__((always_inline)) {
    const __m256i codes = chunk_codes_simd<T>(b, i);
    // Types with one scale per 32 values broadcast it; Q2_K, Q3_K, Q6_K have one per 16.
    constexpr bool per16 = T == Q2_K || T == Q3_K || T == Q6_K;
    const __m256 sv = per16 ? _mm256_set_m128(_mm_set1_ps(s.s1), _mm_set1_ps(s.s0)) : _mm256_set1_ps(s.s0);
    const __m256 mv = per16 ? _mm256_set_m128(_mm_set1_ps(s.m1), _mm_set1_ps(s.m0)) : _mm256_set1_ps(s.m0);
    for (int m = 0; m < MT; ++m) {
      const int64_t row = m0 + m;
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q.data() + row * k + c * 32));
      const __m256i dp = dot_u8s8<T>(codes, av);
      const float* lanes = a.lanes.data() + (row * chunks + c) * 16;
      dot[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), _mm256_mul_ps(sv, _mm256_loadu_ps(lanes)), dot[m]);
      off[m] = _mm256_fmadd_ps(mv, _mm256_loadu_ps(lanes + 8), off[m]);
    }
  };
  if constexpr (CPB == 8) {  // K types: a block's scales once, then its 8 chunks in pairs
    Scales sc[8];
    for (int64_t blk = 0; blk < chunks / 8; ++blk) {
      const uint8_t* b = wrow + blk * BB;
      block_scales<T>(b, sc);
      for (int i = 0; i < 8; i += 2) {
        step(b, i, sc[i], blk * 8 + i, dot0, off0);
        step(b, i + 1, sc[i + 1], blk * 8 + i + 1, dot1, off1);
      }
    }
  } else {  // 32-value blocks, in pairs
    int64_t c = 0;
    for (; c + 2 <= chunks; c += 2) {
      const uint8_t* b = wrow + c * BB;
      step(b, 0, chunk_scales<T>(b, 0), c, dot0, off0);
      step(b + BB, 0, chunk_scales<T>(b + BB, 0), c + 1, dot1, off1);
    }
    if (c < chunks) step(wrow + c * BB, 0, chunk_scales<T>(wrow + c * BB, 0), c, dot0, off0);
  }
  for (int m = 0; m < MT; ++m)
    out[m] = hsum(_mm256_add_ps(_mm256_add_ps(dot0[m], dot1[m]), _mm256_add_ps(off0[m], off1[m])));
#else
  float acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = 0.f;
  uint8_t codes[32];
  for (int64_t c = 0; c < chunks; ++c) {
    const uint8_t* b = wrow + (c / CPB) * BB;
    const int i = static_cast<int>(c % CPB);
    chunk_codes<T>(b, i, codes);
    const Scales s = chunk_scales<T>(b, i);
    for (int m = 0; m < MT; ++m) {
      const int64_t row = m0 + m;
      const int8_t* q = a.q.data() + row * k + c * 32;
      int32_t lo = 0, hi = 0;
      for (int j = 0; j < 16; ++j) lo += codes[j] * q[j];
      for (int j = 16; j < 32; ++j) hi += codes[j] * q[j];
      const float* lanes = a.lanes.data() + (row * chunks + c) * 16;
      acc[m] += s.s0 * lanes[0] * lo + s.s1 * lanes[4] * hi + 4.f * (s.m0 * lanes[8] + s.m1 * lanes[12]);
    }
  }
  for (int m = 0; m < MT; ++m) out[m] = acc[m];
#endif
}

// y [M, N] (row stride ldy) = a W^T (+ bias) for output rows n0 .. n1 - 1.
template <int T>
void matmul_rows(const uint8_t* w, int64_t row_bytes, const QuantizedRows& a, const float* bias, float* y,
                 int64_t ldy, int64_t n0, int64_t n1) {
  // Rows of W in blocks that stay in L1/L2 while every tile of x passes over them.
  constexpr int64_t NB = 16;
  float out[TILE_M];
  for (int64_t nb = n0; nb < n1; nb += NB) {
    const int64_t ne = std::min(nb + NB, n1);
    int64_t m = 0;
    for (; m + TILE_M <= a.rows; m += TILE_M)
      for (int64_t n = nb; n < ne; ++n) {
        dot_tile<T, TILE_M>(w + n * row_bytes, a, m, out);
        for (int t = 0; t < TILE_M; ++t) y[(m + t) * ldy + n] = out[t] + (bias ? bias[n] : 0.f);
      }
    // The last 1-3 rows as one narrower tile (each row's arithmetic is the same in any tile width), so a
    // step of 2 or 3 rows decodes each weight chunk once, not once per row.
    const int64_t rest = a.rows - m;
    if (rest > 0)
      for (int64_t n = nb; n < ne; ++n) {
        if (rest == 3) dot_tile<T, 3>(w + n * row_bytes, a, m, out);
        else if (rest == 2) dot_tile<T, 2>(w + n * row_bytes, a, m, out);
        else dot_tile<T, 1>(w + n * row_bytes, a, m, out);
        for (int64_t t = 0; t < rest; ++t) y[(m + t) * ldy + n] = out[t] + (bias ? bias[n] : 0.f);
      }
  }
}

// Rows r0 .. r1 - 1 of W as values of type O (float, or bf16 for the dense path), row stride k.
template <int T, typename O>
inline void dequantize_range(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, int64_t k, O* y) {
  constexpr int CPB = chunks_per_block<T>(), BB = block_bytes<T>();
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = 0; c < k / 32; ++c) {
      const uint8_t* b = w + r * row_bytes + (c / CPB) * BB;
      const int i = static_cast<int>(c % CPB);
      const Scales s = chunk_scales<T>(b, i);
      O* out = y + (r - r0) * k + c * 32;
#if MAXCLI_VNNI && defined(__AVX512BF16__)
      if constexpr (std::is_same_v<O, at::BFloat16>) {
        const __m256i codes = chunk_codes_simd<T>(b, i);
        const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(codes)));
        const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(codes, 1)));
        const __m512 vlo = _mm512_fmadd_ps(lo, _mm512_set1_ps(s.s0), _mm512_set1_ps(s.m0));
        const __m512 vhi = _mm512_fmadd_ps(hi, _mm512_set1_ps(s.s1), _mm512_set1_ps(s.m1));
        _mm512_storeu_si512(out, (__m512i)_mm512_cvtne2ps_pbh(vhi, vlo));
        continue;
      }
#endif
#if MAXCLI_SIMD
      if constexpr (std::is_same_v<O, float>) {
        const __m256i codes = chunk_codes_simd<T>(b, i);
        const __m128i halves[2] = {_mm256_castsi256_si128(codes), _mm256_extracti128_si256(codes, 1)};
        for (int h = 0; h < 2; ++h) {
          const __m256 sv = _mm256_set1_ps(h ? s.s1 : s.s0), mv = _mm256_set1_ps(h ? s.m1 : s.m0);
          const __m256 c0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(halves[h]));
          const __m256 c1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(halves[h], 8)));
          _mm256_storeu_ps(out + 16 * h, _mm256_fmadd_ps(c0, sv, mv));
          _mm256_storeu_ps(out + 16 * h + 8, _mm256_fmadd_ps(c1, sv, mv));
        }
        continue;
      }
#endif
      uint8_t codes[32];
      chunk_codes<T>(b, i, codes);
      for (int j = 0; j < 16; ++j) out[j] = static_cast<O>(s.s0 * codes[j] + s.m0);
      for (int j = 16; j < 32; ++j) out[j] = static_cast<O>(s.s1 * codes[j] + s.m1);
    }
}

template <int T>
void dequantize_rows_t(const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k, float* y) {
  at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
    dequantize_range<T, float>(w, row_bytes, r0, r1, k, y + r0 * k);
  });
}

// The dense path's element type: bf16 where the CPU has bf16 dot products (AVX-512 BF16), else float32
// (a bf16 GEMM without them is emulated and runs slower than float32's).
#if MAXCLI_VNNI && defined(__AVX512BF16__)
using DenseValue = at::BFloat16;
#else
using DenseValue = float;
#endif

template <int T>
void dequantize_dense_t(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, int64_t k, DenseValue* y) {
  at::parallel_for(r0, r1, 16, [&](int64_t a, int64_t b) {
    dequantize_range<T, DenseValue>(w, row_bytes, a, b, k, y + (a - r0) * k);
  });
}

#define MAXCLI_DISPATCH(qtype, FN, ...)                                        \
  switch (qtype) {                                                             \
    case Q4_0: FN<Q4_0>(__VA_ARGS__); break;                                   \
    case Q4_1: FN<Q4_1>(__VA_ARGS__); break;                                   \
    case Q5_0: FN<Q5_0>(__VA_ARGS__); break;                                   \
    case Q5_1: FN<Q5_1>(__VA_ARGS__); break;                                   \
    case Q8_0: FN<Q8_0>(__VA_ARGS__); break;                                   \
    case Q2_K: FN<Q2_K>(__VA_ARGS__); break;                                   \
    case Q3_K: FN<Q3_K>(__VA_ARGS__); break;                                   \
    case Q4_K: FN<Q4_K>(__VA_ARGS__); break;                                   \
    case Q5_K: FN<Q5_K>(__VA_ARGS__); break;                                   \
    case Q6_K: FN<Q6_K>(__VA_ARGS__); break;                                   \
    default: TORCH_CHECK(false, "no GGUF kernel for GGML type ", qtype);      \
  }

// Checks shared by every entry point; returns the bytes of one row.
inline int64_t check_weight(const at::Tensor& raw, int64_t qtype, int64_t n, int64_t k) {
  Geometry g;
  TORCH_CHECK(geometry(qtype, &g), "no GGUF kernel for GGML type ", qtype);
  TORCH_CHECK(k > 0 && k % g.block_values == 0, "rows of ", k, " values do not fill whole blocks of ",
              g.block_values, " for GGML type ", qtype);
  const int64_t row_bytes = k / g.block_values * g.block_bytes;
  TORCH_CHECK(raw.scalar_type() == at::kByte && raw.is_contiguous() && raw.device().is_cpu(),
              "GGUF weights must be contiguous uint8 CPU bytes");
  TORCH_CHECK(raw.numel() == n * row_bytes, "GGUF weight holds ", raw.numel(), " bytes, ", n, " rows of ", k,
              " values of GGML type ", qtype, " need ", n * row_bytes);
  return row_bytes;
}

// y [M, N] (row stride ldy) = a W^T (+ bias) for one weight whose activations are already quantized.
void matmul_quantized(const QuantizedRows& a, const at::Tensor& raw, int64_t qtype, int64_t n, const float* bias,
                      float* y, int64_t ldy) {
  const int64_t row_bytes = check_weight(raw, qtype, n, a.k);
  const uint8_t* w = raw.data_ptr<uint8_t>();
  // Small products stay on one thread (a fork costs a few microseconds); others split by output rows.
  const int64_t grain = n * a.k * a.rows < (1 << 16) ? n : 16;
  at::parallel_for(0, n, grain, [&](int64_t n0, int64_t n1) {
    MAXCLI_DISPATCH(qtype, matmul_rows, w, row_bytes, a, bias, y, ldy, n0, n1);
  });
}

// From this many activation rows on, a part is multiplied densely: blocks of its rows are dequantized to
// DenseValue (transient scratch, DENSE_BLOCK rows at a time; never a whole copy of W) and fed to torch's
// GEMM (bf16: oneDNN, fp32 accumulation). Compute-bound there, where that GEMM runs ~5x faster than
// integer tiles; activations go in as DenseValue instead of int8.
constexpr int64_t DENSE_MIN_ROWS = 16;
constexpr int64_t DENSE_BLOCK = 1024;

// y[:, col : col + n] = x W^T for one part.
void matmul_dense(const at::Tensor& x_dense, const at::Tensor& raw, int64_t qtype, int64_t n, at::Tensor& y, int64_t col) {
  const int64_t k = x_dense.size(1);
  const int64_t row_bytes = check_weight(raw, qtype, n, k);
  const uint8_t* w = raw.data_ptr<uint8_t>();
  at::Tensor scratch = at::empty({std::min(DENSE_BLOCK, n), k}, x_dense.scalar_type());
  DenseValue* buf = scratch.data_ptr<DenseValue>();
  for (int64_t r0 = 0; r0 < n; r0 += DENSE_BLOCK) {
    const int64_t r1 = std::min(r0 + DENSE_BLOCK, n);
    MAXCLI_DISPATCH(qtype, dequantize_dense_t, w, row_bytes, r0, r1, k, buf);
    y.narrow(1, col + r0, r1 - r0).copy_(at::mm(x_dense, scratch.narrow(0, 0, r1 - r0).t()));
  }
}

// y [M, sum N_i] = x [W_0; W_1; ...]^T (+ bias): the parts of a fused projection (q, k, v or gate, up),
// each of its own GGML type, side by side in the output columns; x is quantized once.
at::Tensor gguf_linear(const at::Tensor& x, at::TensorList raws, at::IntArrayRef qtypes, at::IntArrayRef rows,
                       const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.device().is_cpu(), "x must be float32 [M, K] on the CPU");
  TORCH_CHECK(raws.size() == qtypes.size() && raws.size() == rows.size() && !raws.empty(),
              "one GGML type and one row count per weight part");
  TORCH_CHECK(x.size(1) > 0 && x.size(1) % 32 == 0, "x rows of ", x.size(1), " values do not fill whole blocks of 32");
  int64_t n = 0;
  for (int64_t r : rows) n += r;
  const at::Tensor xc = x.contiguous();
  const float* b = nullptr;
  at::Tensor bc;
  if (bias.has_value() && bias->defined()) {
    bc = bias->to(at::kFloat).contiguous();
    TORCH_CHECK(bc.numel() == n, "bias has ", bc.numel(), " values, the weight has ", n, " rows");
    b = bc.data_ptr<float>();
  }
  at::Tensor y = at::empty({x.size(0), n}, at::kFloat);
  if (x.size(0) == 0) return y;
  int64_t col = 0;
  if (x.size(0) >= DENSE_MIN_ROWS) {
    const at::Tensor xb = xc.to(c10::CppTypeToScalarType<DenseValue>::value).contiguous();
    for (size_t i = 0; i < raws.size(); ++i) {
      matmul_dense(xb, raws[i], qtypes[i], rows[i], y, col);
      col += rows[i];
    }
    if (b != nullptr) y.add_(bc);
    return y;
  }
  // Reused across calls on this thread (a decode step makes ~4 calls a layer): no per-call allocation.
  static thread_local QuantizedRows a;
  quantize_rows(xc.data_ptr<float>(), x.size(0), x.size(1), &a);
  for (size_t i = 0; i < raws.size(); ++i) {
    matmul_quantized(a, raws[i], qtypes[i], rows[i], b ? b + col : nullptr, y.data_ptr<float>() + col, n);
    col += rows[i];
  }
  return y;
}

at::Tensor gguf_dequantize(const at::Tensor& raw, int64_t qtype, int64_t k) {
  TORCH_CHECK(raw.dim() == 2, "GGUF rows must be uint8 [rows, bytes_per_row]");
  const int64_t rows = raw.size(0);
  const at::Tensor rc = raw.contiguous();
  const int64_t row_bytes = check_weight(rc, qtype, rows, k);
  at::Tensor y = at::empty({rows, k}, at::kFloat);
  MAXCLI_DISPATCH(qtype, dequantize_rows_t, rc.data_ptr<uint8_t>(), row_bytes, rows, k, y.data_ptr<float>());
  return y;
}

// Index of the first block whose fp16 scale fields are Inf or NaN (a corrupt file), or -1.
int64_t gguf_first_bad_block(const at::Tensor& raw, int64_t qtype) {
  Geometry g;
  TORCH_CHECK(geometry(qtype, &g), "no GGUF kernel for GGML type ", qtype);
  TORCH_CHECK(raw.scalar_type() == at::kByte && raw.is_contiguous() && raw.numel() % g.block_bytes == 0,
              "GGUF bytes must be contiguous uint8 whole blocks");
  int offsets[2] = {0, -1};
  switch (qtype) {
    case Q4_1: case Q5_1: case Q4_K: case Q5_K: offsets[1] = 2; break;
    case Q2_K: offsets[0] = 80; offsets[1] = 82; break;
    case Q3_K: offsets[0] = 108; break;
    case Q6_K: offsets[0] = 208; break;
    default: break;
  }
  const uint8_t* p = raw.data_ptr<uint8_t>();
  const int64_t blocks = raw.numel() / g.block_bytes;
  for (int64_t i = 0; i < blocks; ++i)
    for (int o : offsets) {
      if (o < 0) continue;
      uint16_t h;
      std::memcpy(&h, p + i * g.block_bytes + o, 2);
      if ((h & 0x7C00) == 0x7C00) return i;
    }
  return -1;
}

}  // namespace maxcli_gguf

TORCH_LIBRARY_FRAGMENT(maxcli_cpu, m) {
  m.def("gguf_linear(Tensor x, Tensor[] raws, int[] qtypes, int[] rows, Tensor? bias=None) -> Tensor",
        &maxcli_gguf::gguf_linear);
  m.def("gguf_dequantize(Tensor raw, int qtype, int k) -> Tensor", &maxcli_gguf::gguf_dequantize);
  m.def("gguf_first_bad_block(Tensor raw, int qtype) -> int", &maxcli_gguf::gguf_first_bad_block);
}
