// One single-sequence decode step of a Llama-family model on the packed CPU path, all layers in one call.
//
// The Python path runs ~45 eager torch ops per layer; for a 135M model the matmuls take ~2.5 ms of a
// ~10 ms token and the rest is per-op dispatch. This op keeps the same arithmetic (float32 residual
// stream and norms, bf16 activations into torch's int4 kernel, float32 attention over the float32 paged
// cache) and runs the small parts as plain loops, so a token costs the matmuls plus a few microseconds
// per layer. Contract (checked by maxcli.ops.cpu_decode, which falls back to the Python path otherwise):
// RMSNorm without offset, neox rope over the full head dim, no biases, no q/k norms, no sliding window
// or soft-capping, SiLU-gated MLP, int4-packed projections, float32 contiguous caches
// [num_blocks, page_size, Hk, D].

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

namespace {

// a . b with 16 independent partial sums: the lanes map onto one vector register, so the loop vectorizes
// (a single float accumulator is a serial dependency chain the compiler may not reorder).
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {0.f};
  int64_t d = 0;
  for (; d + 16 <= n; d += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[d + j] * b[d + j];
  float s = 0.f;
  for (int j = 0; j < 16; ++j) s += acc[j];
  for (; d < n; ++d) s += a[d] * b[d];
  return s;
}

// y = x / sqrt(mean(x^2) + eps) * w from float32 x into y (float, or bf16: what the int4 kernel reads;
// c10::BFloat16 rounds to nearest even, as Tensor.to(bfloat16) does).
template <typename T>
void rms_norm(const float* x, const float* w, int64_t n, double eps, T* y) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float r = 1.0f / std::sqrt(static_cast<float>(ss / n) + static_cast<float>(eps));
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<T>(x[i] * r * w[i]);
}

void to_bf16(const float* x, int64_t n, at::BFloat16* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<at::BFloat16>(x[i]);
}

// x_bf16 [1, K] @ W^T -> float32 [1, N], contiguous.
at::Tensor int4_mm(const at::Tensor& x_bf16, const at::Tensor& packed, const at::Tensor& scales_zeros) {
  return at::_weight_int4pack_mm_for_cpu(x_bf16, packed, 32, scales_zeros).to(at::kFloat);
}

// Neox rotation of `heads` vectors of dim d in place: pairs (i, i + d/2).
void rope(float* x, int64_t heads, int64_t d, const float* cos, const float* sin) {
  const int64_t half = d / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* v = x + h * d;
    for (int64_t i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

}  // namespace

// h: [1, hidden] float32 embedding of the token. Per layer i: the two norm weights, the four packed
// projections (codes, scales_zeros), the layer's (k, v) caches. cos_sin: [D] row of the rope table for
// this position. block_table: [max_blocks] int32 pages of the sequence. The token sits at position
// seq_len - 1 and its K/V go to cache slot `slot`. Returns the final-normed hidden state [1, hidden].
at::Tensor decode_step(
    const at::Tensor& h,
    at::TensorList input_norms, at::TensorList post_norms,
    at::TensorList qkv_w, at::TensorList qkv_sz, at::TensorList o_w, at::TensorList o_sz,
    at::TensorList gate_up_w, at::TensorList gate_up_sz, at::TensorList down_w, at::TensorList down_sz,
    at::TensorList k_caches, at::TensorList v_caches,
    const at::Tensor& final_norm, const at::Tensor& cos_sin, const at::Tensor& block_table,
    int64_t seq_len, int64_t slot, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
    double scale, double eps) {
  const int64_t hidden = h.size(1), H = num_heads, Hk = num_kv_heads, D = head_dim, G = H / Hk;
  const int64_t layers = static_cast<int64_t>(input_norms.size());
  TORCH_CHECK(h.scalar_type() == at::kFloat && h.is_contiguous(), "h must be contiguous float32");
  TORCH_CHECK(cos_sin.numel() == D, "cos_sin must hold one rope row of head_dim values");
  TORCH_CHECK(block_table.scalar_type() == at::kInt && block_table.is_contiguous(), "block_table must be int32");
  for (const auto* list : {&post_norms, &qkv_w, &qkv_sz, &o_w, &o_sz, &gate_up_w, &gate_up_sz, &down_w, &down_sz,
                           &k_caches, &v_caches})
    TORCH_CHECK(static_cast<int64_t>(list->size()) == layers, "one tensor per layer in every list");
  TORCH_CHECK(seq_len >= 1 && seq_len <= block_table.numel() * k_caches[0].size(1), "seq_len outside the block table");
  const float* cs = cos_sin.data_ptr<float>();
  const int32_t* bt = block_table.data_ptr<int32_t>();
  // Every page this step touches must exist: a bad table is an error, never a stray read or write.
  const int64_t num_blocks = k_caches[0].size(0), page = k_caches[0].size(1);
  TORCH_CHECK(slot >= 0 && slot < num_blocks * page, "KV slot outside the cache");
  for (int64_t i = 0; i < (seq_len + page - 1) / page; ++i)
    TORCH_CHECK(bt[i] >= 0 && bt[i] < num_blocks, "block table names a page outside the cache");
  for (size_t l = 0; l < k_caches.size(); ++l)
    TORCH_CHECK(k_caches[l].sizes() == k_caches[0].sizes() && v_caches[l].sizes() == k_caches[0].sizes(),
                "every layer's K and V cache must have the same shape");

  // Buffers reused by every layer: the residual stream, the bf16 inputs of the four matmuls (the gated
  // MLP's width is known after the first gate/up product), attention scores and output.
  at::Tensor residual = h.clone();
  float* res = residual.data_ptr<float>();
  at::Tensor x_bf = at::empty({1, hidden}, at::kBFloat16);
  at::Tensor attn_bf = at::empty({1, H * D}, at::kBFloat16);
  at::Tensor act_bf;
  std::vector<float> scores(seq_len), attn(H * D);
  at::Tensor layer_out;  // the previous layer's MLP output, added to the residual by the next norm
  const float sc = static_cast<float>(scale);

  for (int64_t l = 0; l < layers; ++l) {
    if (layer_out.defined()) {
      const float* o = layer_out.data_ptr<float>();
      for (int64_t i = 0; i < hidden; ++i) res[i] += o[i];
    }
    rms_norm(res, input_norms[l].data_ptr<float>(), hidden, eps, x_bf.data_ptr<at::BFloat16>());
    at::Tensor qkv = int4_mm(x_bf, qkv_w[l], qkv_sz[l]);
    float* q = qkv.data_ptr<float>();
    float* k = q + H * D;
    float* v = k + Hk * D;
    rope(q, H, D, cs, cs + D / 2);
    rope(k, Hk, D, cs, cs + D / 2);

    const at::Tensor& kc = k_caches[l];
    const at::Tensor& vc = v_caches[l];
    const int64_t bs = kc.size(1), page_stride = kc.stride(0), row_stride = kc.stride(1);
    float* kcp = kc.data_ptr<float>();
    float* vcp = vc.data_ptr<float>();
    {
      const int64_t off = (slot / bs) * page_stride + (slot % bs) * row_stride;
      std::copy(k, k + Hk * D, kcp + off);
      std::copy(v, v + Hk * D, vcp + off);
    }
    for (int64_t hq = 0; hq < H; ++hq) {
      const int64_t kvh = hq / G;
      const float* qh = q + hq * D;
      float mx = -INFINITY;
      for (int64_t p = 0; p < seq_len; ++p) {
        const float* kp = kcp + bt[p / bs] * page_stride + (p % bs) * row_stride + kvh * D;
        scores[p] = dot(qh, kp, D) * sc;
        mx = std::max(mx, scores[p]);
      }
      float sum = 0.f;
      for (int64_t p = 0; p < seq_len; ++p) {
        scores[p] = std::exp(scores[p] - mx);
        sum += scores[p];
      }
      float* out = attn.data() + hq * D;
      std::fill(out, out + D, 0.f);
      for (int64_t p = 0; p < seq_len; ++p) {
        const float* vp = vcp + bt[p / bs] * page_stride + (p % bs) * row_stride + kvh * D;
        const float wgt = scores[p] / sum;
        for (int64_t d = 0; d < D; ++d) out[d] += wgt * vp[d];
      }
    }
    to_bf16(attn.data(), H * D, attn_bf.data_ptr<at::BFloat16>());
    at::Tensor o = int4_mm(attn_bf, o_w[l], o_sz[l]);
    const float* op = o.data_ptr<float>();
    for (int64_t i = 0; i < hidden; ++i) res[i] += op[i];

    rms_norm(res, post_norms[l].data_ptr<float>(), hidden, eps, x_bf.data_ptr<at::BFloat16>());
    at::Tensor gu = int4_mm(x_bf, gate_up_w[l], gate_up_sz[l]);
    const int64_t F = gu.size(1) / 2;
    if (!act_bf.defined()) act_bf = at::empty({1, F}, at::kBFloat16);
    TORCH_CHECK(act_bf.size(1) == F, "every layer's MLP must have the same width");
    const float* g = gu.data_ptr<float>();
    at::BFloat16* a = act_bf.data_ptr<at::BFloat16>();
    for (int64_t i = 0; i < F; ++i) a[i] = static_cast<at::BFloat16>(g[i] / (1.f + std::exp(-g[i])) * g[F + i]);
    layer_out = int4_mm(act_bf, down_w[l], down_sz[l]);
  }
  const float* o = layer_out.data_ptr<float>();
  for (int64_t i = 0; i < hidden; ++i) res[i] += o[i];
  at::Tensor out = at::empty({1, hidden}, at::kFloat);
  rms_norm(res, final_norm.data_ptr<float>(), hidden, eps, out.data_ptr<float>());
  return out;
}

TORCH_LIBRARY_FRAGMENT(maxcli_cpu, m) {
  m.def(
      "decode_step(Tensor h, Tensor[] input_norms, Tensor[] post_norms, Tensor[] qkv_w, Tensor[] qkv_sz, "
      "Tensor[] o_w, Tensor[] o_sz, Tensor[] gate_up_w, Tensor[] gate_up_sz, Tensor[] down_w, "
      "Tensor[] down_sz, Tensor[] k_caches, Tensor[] v_caches, Tensor final_norm, Tensor cos_sin, "
      "Tensor block_table, int seq_len, int slot, int num_heads, int num_kv_heads, int head_dim, "
      "float scale, float eps) -> Tensor",
      &decode_step);
}
