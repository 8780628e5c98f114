// Matmuls on GGUF blocks as they lie in the file: y [M, N] = x [M, K] W^T (+ bias), W given as the raw
// bytes of N rows, K values each, of one GGML type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K).
//
// Every type is read in chunks of 32 values. A chunk decodes to 32 unsigned codes c and, for each half of
// 16, a scale s and an offset m with w = s * c + m (Q4_0: s = d, m = -8 d; Q4_K: s = d sc_j, m = -dmin mn_j;
// Q6_K: s = d sc_j, m = -32 s; ...). Activations are quantized per 16 values to int8 a = round(x / da_h)
// with da_h = max|x| / 127 over the half h, and carry the sums of each half. Then
//     sum(w x) ~= sum_h s_h da_h sum_h(c a) + m_h da_h sum_h(a)
// with the integer dot products done by AVX-512 VNNI (u8 x s8 -> s32) on 32 values at a time. Without
// VNNI the same arithmetic runs as plain loops. Weights are never unpacked to memory: each chunk is
// decoded in registers, once per tile of up to TILE_M activation rows.
//
// Cost: one pass over W per TILE_M rows of x (bandwidth-bound for decode, compute-bound from ~8 rows on),
// M * K bytes of quantized activations. Threads: at::parallel_for over blocks of output rows.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__AVX512BW__)
#include <immintrin.h>
#define MAXCLI_VNNI 1
#else
#define MAXCLI_VNNI 0
#endif
#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace maxcli_gguf {

// GGML type ids (ggml.h); the kernel's own table of block geometry.
enum QType : int { Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14 };

struct Geometry {
  int block_values;  // values per block
  int block_bytes;
};

inline bool geometry(int64_t qtype, Geometry* g) {
  switch (qtype) {
    case Q4_0: *g = {32, 18}; return true;
    case Q4_1: *g = {32, 20}; return true;
    case Q5_0: *g = {32, 22}; return true;
    case Q5_1: *g = {32, 24}; return true;
    case Q8_0: *g = {32, 34}; return true;
    case Q2_K: *g = {256, 84}; return true;
    case Q3_K: *g = {256, 110}; return true;
    case Q4_K: *g = {256, 144}; return true;
    case Q5_K: *g = {256, 176}; return true;
    case Q6_K: *g = {256, 210}; return true;
    default: return false;
  }
}

inline float f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      uint32_t m = man;
      do { ++e; m <<= 1; } while ((m & 0x400) == 0);
      bits = sign | ((127 - 15 - e) << 23) | ((m & 0x3FF) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
#endif
}

// Per-chunk scales: w = s[h] * c + m[h] for the half h (values 16 h .. 16 h + 15) of the chunk.
struct Scales {
  float s0, s1, m0, m1;
};

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block's 12 packed bytes.
inline void k4_scale_min(const uint8_t* q, int j, int* sc, int* mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// The signed 6-bit scale of group i (0..15) of a Q3_K block's 12 packed bytes.
inline int k3_scale(const uint8_t* q, int i) {
  const int lo = i < 8 ? (q[i] & 0x0F) : (q[i - 8] >> 4);
  const int hi = (q[8 + i % 4] >> (2 * (i / 4))) & 3;
  return (lo | (hi << 4)) - 32;
}

// Chunk `i` of the block at `b` (i = 0 for 32-value types; 0..7 for K types).
template <int T>
inline Scales chunk_scales(const uint8_t* b, int i) {
  if constexpr (T == Q4_0) {
    const float d = f16(b);
    return {d, d, -8.f * d, -8.f * d};
  } else if constexpr (T == Q4_1 || T == Q5_1) {
    const float d = f16(b), m = f16(b + 2);
    return {d, d, m, m};
  } else if constexpr (T == Q5_0) {
    const float d = f16(b);
    return {d, d, -16.f * d, -16.f * d};
  } else if constexpr (T == Q8_0) {
    const float d = f16(b);
    return {d, d, -128.f * d, -128.f * d};
  } else if constexpr (T == Q2_K) {
    const float d = f16(b + 80), dmin = f16(b + 82);
    const uint8_t a = b[2 * i], c = b[2 * i + 1];
    return {d * (a & 0x0F), d * (c & 0x0F), -dmin * (a >> 4), -dmin * (c >> 4)};
  } else if constexpr (T == Q3_K) {
    const float d = f16(b + 108);
    const float s0 = d * k3_scale(b + 96, 2 * i), s1 = d * k3_scale(b + 96, 2 * i + 1);
    return {s0, s1, -4.f * s0, -4.f * s1};
  } else if constexpr (T == Q4_K || T == Q5_K) {
    const float d = f16(b), dmin = f16(b + 2);
    int sc, mn;
    k4_scale_min(b + 4, i, &sc, &mn);
    const float s = d * sc, m = -dmin * mn;
    return {s, s, m, m};
  } else {  // Q6_K
    const float d = f16(b + 208);
    const float s0 = d * static_cast<int8_t>(b[192 + 2 * i]), s1 = d * static_cast<int8_t>(b[192 + 2 * i + 1]);
    return {s0, s1, -32.f * s0, -32.f * s1};
  }
}

// The 32 unsigned codes of chunk i, scalar (reference for the SIMD decoder, and the portable path).
template <int T>
inline void chunk_codes(const uint8_t* b, int i, uint8_t* c) {
  if constexpr (T == Q4_0 || T == Q4_1) {
    const uint8_t* qs = b + (T == Q4_0 ? 2 : 4);
    for (int j = 0; j < 16; ++j) {
      c[j] = qs[j] & 0x0F;
      c[j + 16] = qs[j] >> 4;
    }
  } else if constexpr (T == Q5_0 || T == Q5_1) {
    const uint8_t* qh = b + (T == Q5_0 ? 2 : 4);
    const uint8_t* qs = qh + 4;
    uint32_t h;
    std::memcpy(&h, qh, 4);
    for (int j = 0; j < 16; ++j) {
      c[j] = (qs[j] & 0x0F) | (((h >> j) & 1) << 4);
      c[j + 16] = (qs[j] >> 4) | (((h >> (j + 16)) & 1) << 4);
    }
  } else if constexpr (T == Q8_0) {
    for (int j = 0; j < 32; ++j) c[j] = static_cast<uint8_t>(b[2 + j] ^ 0x80);  // q + 128
  } else if constexpr (T == Q2_K) {
    const uint8_t* qs = b + 16 + (i / 4) * 32;
    const int shift = 2 * (i % 4);
    for (int j = 0; j < 32; ++j) c[j] = (qs[j] >> shift) & 3;
  } else if constexpr (T == Q3_K) {
    const uint8_t* qs = b + 32 + (i / 4) * 32;
    const int shift = 2 * (i % 4);
    for (int j = 0; j < 32; ++j) c[j] = ((qs[j] >> shift) & 3) | (((b[j] >> i) & 1) << 2);
  } else if constexpr (T == Q4_K) {
    const uint8_t* qs = b + 16 + (i / 2) * 32;
    const int shift = 4 * (i % 2);
    for (int j = 0; j < 32; ++j) c[j] = (qs[j] >> shift) & 0x0F;
  } else if constexpr (T == Q5_K) {
    const uint8_t* qs = b + 48 + (i / 2) * 32;
    const int shift = 4 * (i % 2);
    for (int j = 0; j < 32; ++j) c[j] = ((qs[j] >> shift) & 0x0F) | (((b[16 + j] >> i) & 1) << 4);
  } else {  // Q6_K
    const int g = i / 4, r = i % 4;
    const uint8_t* ql = b + g * 64 + (r % 2) * 32;
    const uint8_t* qh = b + 128 + g * 32;
    const int lshift = 4 * (r / 2), hshift = 2 * r;
    for (int j = 0; j < 32; ++j) c[j] = ((ql[j] >> lshift) & 0x0F) | (((qh[j] >> hshift) & 3) << 4);
  }
}

#if MAXCLI_VNNI
// The same codes in one register.
template <int T>
inline __m256i chunk_codes_simd(const uint8_t* b, int i) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  if constexpr (T == Q4_0 || T == Q4_1) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + (T == Q4_0 ? 2 : 4)));
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
    return _mm256_and_si256(both, low4);
  } else if constexpr (T == Q5_0 || T == Q5_1) {
    const uint8_t* qh = b + (T == Q5_0 ? 2 : 4);
    uint32_t h;
    std::memcpy(&h, qh, 4);
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qh + 4));
    const __m256i lo = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), low4);
    return _mm256_or_si256(lo, _mm256_maskz_set1_epi8(static_cast<__mmask32>(h), 0x10));
  } else if constexpr (T == Q8_0) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
    return _mm256_xor_si256(v, _mm256_set1_epi8(static_cast<char>(0x80)));
  } else if constexpr (T == Q2_K) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16 + (i / 4) * 32));
    return _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * (i % 4))), _mm256_set1_epi8(3));
  } else if constexpr (T == Q3_K) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 32 + (i / 4) * 32));
    const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * (i % 4))), _mm256_set1_epi8(3));
    const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
    const __mmask32 hi = _mm256_test_epi8_mask(hm, _mm256_set1_epi8(static_cast<char>(1 << i)));
    return _mm256_or_si256(lo, _mm256_maskz_set1_epi8(hi, 4));
  } else if constexpr (T == Q4_K) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16 + (i / 2) * 32));
    return _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(4 * (i % 2))), low4);
  } else if constexpr (T == Q5_K) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 48 + (i / 2) * 32));
    const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(4 * (i % 2))), low4);
    const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
    const __mmask32 hi = _mm256_test_epi8_mask(hm, _mm256_set1_epi8(static_cast<char>(1 << i)));
    return _mm256_or_si256(lo, _mm256_maskz_set1_epi8(hi, 0x10));
  } else {  // Q6_K
    const int g = i / 4, r = i % 4;
    const __m256i l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + g * 64 + (r % 2) * 32));
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + g * 32));
    const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(l, _mm_cvtsi32_si128(4 * (r / 2))), low4);
    const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * r)), _mm256_set1_epi8(3));
    return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
  }
}

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}
#endif

template <int T>
constexpr int chunks_per_block() {
  return (T == Q2_K || T == Q3_K || T == Q4_K || T == Q5_K || T == Q6_K) ? 8 : 1;
}

template <int T>
constexpr int block_bytes() {
  return T == Q4_0 ? 18 : T == Q4_1 ? 20 : T == Q5_0 ? 22 : T == Q5_1 ? 24 : T == Q8_0 ? 34
       : T == Q2_K ? 84 : T == Q3_K ? 110 : T == Q4_K ? 144 : T == Q5_K ? 176 : 210;
}

}  // namespace maxcli_gguf

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
#if MAXCLI_VNNI
  __m256 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm256_setzero_ps();
  for (int64_t c = 0; c < chunks; ++c) {
    const uint8_t* b = wrow + (c / CPB) * BB;
    const int i = static_cast<int>(c % CPB);
    const __m256i codes = chunk_codes_simd<T>(b, i);
    const Scales s = chunk_scales<T>(b, i);
    const __m256 sv = _mm256_set_m128(_mm_set1_ps(s.s1), _mm_set1_ps(s.s0));
    const __m256 mv = _mm256_set_m128(_mm_set1_ps(s.m1), _mm_set1_ps(s.m0));
    for (int m = 0; m < MT; ++m) {
      const int64_t row = m0 + m;
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q.data() + row * k + c * 32));
      const __m256i dp = _mm256_dpbusd_epi32(_mm256_setzero_si256(), codes, av);
      const float* lanes = a.lanes.data() + (row * chunks + c) * 16;
      const __m256 scale = _mm256_mul_ps(sv, _mm256_loadu_ps(lanes));
      acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), scale, acc[m]);
      acc[m] = _mm256_fmadd_ps(mv, _mm256_loadu_ps(lanes + 8), acc[m]);
    }
  }
  for (int m = 0; m < MT; ++m) out[m] = hsum(acc[m]);
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
    for (; m < a.rows; ++m)
      for (int64_t n = nb; n < ne; ++n) {
        dot_tile<T, 1>(w + n * row_bytes, a, m, out);
        y[m * ldy + n] = out[0] + (bias ? bias[n] : 0.f);
      }
  }
}

template <int T>
void dequantize_rows_t(const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k, float* y) {
  constexpr int CPB = chunks_per_block<T>(), BB = block_bytes<T>();
  at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
    uint8_t codes[32];
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < k / 32; ++c) {
        const uint8_t* b = w + r * row_bytes + (c / CPB) * BB;
        const int i = static_cast<int>(c % CPB);
        chunk_codes<T>(b, i, codes);
        const Scales s = chunk_scales<T>(b, i);
        float* out = y + r * k + c * 32;
        for (int j = 0; j < 16; ++j) out[j] = s.s0 * codes[j] + s.m0;
        for (int j = 16; j < 32; ++j) out[j] = s.s1 * codes[j] + s.m1;
      }
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
  QuantizedRows a;
  quantize_rows(xc.data_ptr<float>(), x.size(0), x.size(1), &a);
  int64_t col = 0;
  for (size_t i = 0; i < raws.size(); ++i) {
    matmul_quantized(a, raws[i], qtypes[i], rows[i], b ? b + col : nullptr, y.data_ptr<float>() + col, n);
    col += rows[i];
  }
  return y;
}

at::Tensor gguf_matmul(const at::Tensor& x, const at::Tensor& raw, int64_t qtype, int64_t n,
                       const c10::optional<at::Tensor>& bias) {
  return gguf_linear(x, {raw}, {qtype}, {n}, bias);
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

bool has_vnni() { return MAXCLI_VNNI; }

}  // namespace maxcli_gguf

TORCH_LIBRARY_FRAGMENT(maxcli_cpu, m) {
  m.def("gguf_matmul(Tensor x, Tensor raw, int qtype, int n, Tensor? bias=None) -> Tensor", &maxcli_gguf::gguf_matmul);
  m.def("gguf_linear(Tensor x, Tensor[] raws, int[] qtypes, int[] rows, Tensor? bias=None) -> Tensor",
        &maxcli_gguf::gguf_linear);
  m.def("gguf_dequantize(Tensor raw, int qtype, int k) -> Tensor", &maxcli_gguf::gguf_dequantize);
  m.def("gguf_simd() -> bool", []() { return maxcli_gguf::has_vnni(); });
}
