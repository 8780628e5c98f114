// GGUF block decoders shared by the CPU kernels (gguf_matmul.cpp, decode_step.cpp): for every GGML type
// with a kernel, chunk i of a block decodes to 32 unsigned codes c and per-half scales with
// w = s_h * c + m_h (see gguf_matmul.cpp). Scalar decoders are the reference; the SIMD ones (AVX2 and
// AVX-512 builds) produce the same codes in one register.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <cstring>

// MAXCLI_SIMD: AVX2 + FMA builds decode chunks in registers; MAXCLI_VNNI: AVX-512 VNNI builds also do the
// u8 x s8 dot products in one instruction and use AVX-512 mask registers for the high bits.
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MAXCLI_SIMD 1
#else
#define MAXCLI_SIMD 0
#endif
#if MAXCLI_SIMD && defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__AVX512BW__)
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

// The scales of every chunk of a block at once (the block's fp16 fields decoded once, not per chunk).
template <int T>
inline void block_scales(const uint8_t* b, Scales* out) {
  if constexpr (T == Q4_K || T == Q5_K) {
    const float d = f16(b), dmin = f16(b + 2);
    for (int j = 0; j < 8; ++j) {
      int sc, mn;
      k4_scale_min(b + 4, j, &sc, &mn);
      const float s = d * sc, m = -dmin * mn;
      out[j] = {s, s, m, m};
    }
  } else if constexpr (T == Q6_K) {
    const float d = f16(b + 208);
    for (int j = 0; j < 8; ++j) {
      const float s0 = d * static_cast<int8_t>(b[192 + 2 * j]), s1 = d * static_cast<int8_t>(b[193 + 2 * j]);
      out[j] = {s0, s1, -32.f * s0, -32.f * s1};
    }
  } else if constexpr (T == Q3_K) {
    const float d = f16(b + 108);
    for (int j = 0; j < 8; ++j) {
      const float s0 = d * k3_scale(b + 96, 2 * j), s1 = d * k3_scale(b + 96, 2 * j + 1);
      out[j] = {s0, s1, -4.f * s0, -4.f * s1};
    }
  } else if constexpr (T == Q2_K) {
    const float d = f16(b + 80), dmin = f16(b + 82);
    for (int j = 0; j < 8; ++j) {
      const uint8_t x = b[2 * j], y = b[2 * j + 1];
      out[j] = {d * (x & 0x0F), d * (y & 0x0F), -dmin * (x >> 4), -dmin * (y >> 4)};
    }
  } else {
    out[0] = chunk_scales<T>(b, 0);
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

#if MAXCLI_SIMD
// value in byte j where bit j of `bits` is set, else 0.
inline __m256i bytes_where_bits(uint32_t bits, char value) {
#if MAXCLI_VNNI
  return _mm256_maskz_set1_epi8(static_cast<__mmask32>(bits), value);
#else
  const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)),
                                             _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                              2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(value));
#endif
}

// value in byte j where byte j of v has bit `bit` set, else 0.
inline __m256i bytes_where_bit(__m256i v, int bit, char value) {
  const __m256i m = _mm256_set1_epi8(static_cast<char>(1 << bit));
#if MAXCLI_VNNI
  return _mm256_maskz_set1_epi8(_mm256_test_epi8_mask(v, m), value);
#else
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, m), m), _mm256_set1_epi8(value));
#endif
}

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
    return _mm256_or_si256(lo, bytes_where_bits(h, 0x10));
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
    return _mm256_or_si256(lo, bytes_where_bit(hm, i, 4));
  } else if constexpr (T == Q4_K) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16 + (i / 2) * 32));
    return _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(4 * (i % 2))), low4);
  } else if constexpr (T == Q5_K) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 48 + (i / 2) * 32));
    const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(4 * (i % 2))), low4);
    const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
    return _mm256_or_si256(lo, bytes_where_bit(hm, i, 0x10));
  } else {  // Q6_K
    const int g = i / 4, r = i % 4;
    const __m256i l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + g * 64 + (r % 2) * 32));
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + g * 32));
    const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(l, _mm_cvtsi32_si128(4 * (r / 2))), low4);
    const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * r)), _mm256_set1_epi8(3));
    return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
  }
}

// Per 32-bit lane j: the sum of codes[4j + t] * a[4j + t], t < 4, exact (codes < 256, |a| <= 127).
template <int T>
inline __m256i dot_u8s8(__m256i codes, __m256i a) {
#if MAXCLI_VNNI
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), codes, a);
#else
  // maddubs adds pairs of products in saturating 16 bits: exact while codes < 128 (2 * 127 * 127). Only
  // Q8_0's codes reach 255; they go in two parts (low 7 bits, then the top bit).
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (T == Q8_0) {
    const __m256i lo = _mm256_maddubs_epi16(_mm256_and_si256(codes, _mm256_set1_epi8(0x7F)), a);
    const __m256i hi = _mm256_maddubs_epi16(_mm256_and_si256(codes, _mm256_set1_epi8(static_cast<char>(0x80))), a);
    return _mm256_add_epi32(_mm256_madd_epi16(lo, ones), _mm256_madd_epi16(hi, ones));
  } else {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(codes, a), ones);
  }
#endif
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
// y [M, sum(rows)] float32 = x [M, K] [W_0; W_1; ...]^T (+ bias); see gguf_matmul.cpp.
at::Tensor gguf_linear(const at::Tensor& x, at::TensorList raws, at::IntArrayRef qtypes, at::IntArrayRef rows,
                       const c10::optional<at::Tensor>& bias);
}  // namespace maxcli_gguf
