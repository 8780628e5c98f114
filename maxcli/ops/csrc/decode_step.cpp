// One decode step (B sequences, one new token each) of a decoder-only model on GGUF blocks, every layer
// in one call.
//
// The Python path runs ~40 eager torch ops per layer; for a 135M-0.5B model most of a token's time is
// their dispatch, not the matmuls. This op runs the same arithmetic with plain loops between the block
// matmuls (maxcli_gguf::gguf_linear): float32 residual stream, norms and attention over the float32 paged
// cache. The layer shapes it covers (checked by maxcli.nn.fused_decode, which keeps the Python path for
// anything else): RMSNorms (optional +1 offset), optional per-head q/k RMSNorms, "pre-norm" layers
// (Llama, Mistral, Qwen 2/3, Phi-3) or "sandwich" layers (Gemma 3: post-attention and pre/post-MLP norms),
// rope over the first R dims (neox or interleaved pairs), optional sliding window and soft-capping per
// layer, SiLU- or tanh-GELU-gated MLP, optional biases on any projection.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "gguf_blocks.h"

namespace {

inline float dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {0.f};  // 16 independent partial sums: one vector register, so the loop vectorizes
  int64_t d = 0;
  for (; d + 16 <= n; d += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[d + j] * b[d + j];
  float s = 0.f;
  for (int j = 0; j < 16; ++j) s += acc[j];
  for (; d < n; ++d) s += a[d] * b[d];
  return s;
}

// y = x / sqrt(mean(x^2) + eps) * (w + offset); y may alias x.
inline void rms_norm(const float* x, const float* w, int64_t n, float eps, float offset, float* y) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float r = 1.0f / std::sqrt(static_cast<float>(ss / n) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * r * (w[i] + offset);
}

// Rotate the first 2 * half dims of `heads` vectors of dim d: neox pairs (i, i + half), else (2i, 2i + 1).
inline void rope(float* x, int64_t heads, int64_t d, int64_t half, const float* cos, const float* sin, bool neox) {
  for (int64_t h = 0; h < heads; ++h) {
    float* v = x + h * d;
    for (int64_t i = 0; i < half; ++i) {
      float* a = neox ? v + i : v + 2 * i;
      float* b = neox ? v + i + half : v + 2 * i + 1;
      const float x1 = *a, x2 = *b;
      *a = x1 * cos[i] - x2 * sin[i];
      *b = x2 * cos[i] + x1 * sin[i];
    }
  }
}

inline float gelu_tanh(float x) {
  return 0.5f * x * (1.f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

// One projection: x [1, K] -> float32 [1, N] through its block parts (and bias).
struct Projection {
  std::vector<at::Tensor> raws;
  std::vector<int64_t> qtypes, rows;
  c10::optional<at::Tensor> bias;

  at::Tensor operator()(const at::Tensor& x) const { return maxcli_gguf::gguf_linear(x, raws, qtypes, rows, bias); }
};

const float* data_or_null(const at::Tensor& t) { return t.numel() ? t.data_ptr<float>() : nullptr; }

// One projection's LoRA adapters, one per slot: a [S, J * r0, K] (each fused part j's A in rows
// j * r0 ..), bt [S, J * r0, N] (B^T, part j's block in columns offsets[j] .. + widths[j], the scaling
// folded in), ranks [S, J] int32 (0: slot s does not touch part j).
struct LoRAProjection {
  const float* a = nullptr;
  const float* bt = nullptr;
  const int32_t* ranks = nullptr;
  int64_t slots = 0, parts = 0, r0 = 0, in = 0, out = 0;
  std::vector<int64_t> offsets, widths;

  // y[b] += B_s (A_s x[b]) for each row b of slot s = rows[b] >= 0. Each row's arithmetic is the same
  // whatever the other rows are (rows run one at a time), so a request's tokens do not depend on its batch.
  // Cost per row: sum over touched parts of r * (K + width_j) multiply-adds, A and B^T read from cache.
  void add(const float* x, float* y, int64_t B, const int64_t* rows) const {
    if (a == nullptr) return;
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<float> t(r0);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t s = rows[b];
        if (s < 0) continue;
        const float* xb = x + b * in;
        float* yb = y + b * out;
        for (int64_t j = 0; j < parts; ++j) {
          const int64_t r = ranks[s * parts + j];
          const float* as = a + (s * parts * r0 + j * r0) * in;
          const float* bs = bt + (s * parts * r0 + j * r0) * out + offsets[j];
          for (int64_t w = 0; w < r; ++w) t[w] = dot(as + w * in, xb, in);
          float* yj = yb + offsets[j];
          for (int64_t w = 0; w < r; ++w) {
            const float tw = t[w];
            const float* bw = bs + w * out;
            for (int64_t n = 0; n < widths[j]; ++n) yj[n] += tw * bw[n];
          }
        }
      }
    });
  }
};

}  // namespace

// One decode step of B sequences, one new token each. h [B, hidden]: the embedded tokens. Per layer l, in
// the lists: norms[6l .. 6l + 5] = input, post-attention, pre-MLP, post-MLP, q, k norm weights (empty:
// absent); the projections qkv, o, gate_up, down take parts[4l ..] consecutive entries of raws / qtypes /
// rows each, and biases[4l ..] (empty: none); k/v caches [num_blocks, page, Hk, D]; cos_sin [tables, B, R]:
// each row's rope row (R values: cos then sin) in every rope table, layer l using table layer_tables[l];
// windows[l] (0: full). Sequence b's token sits at
// position seq_lens[b] - 1 of block_tables[b] and its K/V go to cache slot slots[b]. Returns the
// final-normed hidden states [B, hidden].
//
// LoRA (optional): projection p has adapters when lora_a[p] is not empty, with lora_b[p], lora_ranks[p]
// (LoRAProjection) and its J = lora_ranks[p].size(1) fused output widths next in lora_widths; row b takes
// slot lora_rows[b] (-1: base model). An empty lora_rows: no adapters this step.
at::Tensor decode_step(const at::Tensor& h, at::TensorList norms, at::TensorList raws, at::IntArrayRef qtypes,
                       at::IntArrayRef rows, at::IntArrayRef parts, at::TensorList biases, at::TensorList k_caches,
                       at::TensorList v_caches, const at::Tensor& final_norm, const at::Tensor& cos_sin,
                       const at::Tensor& block_tables, const at::Tensor& seq_lens, const at::Tensor& slots,
                       at::IntArrayRef layer_tables, at::IntArrayRef windows, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, bool neox,
                       bool sandwich, int64_t act, double norm_offset, double scale, double softcap, double eps,
                       at::TensorList lora_a, at::TensorList lora_b, at::TensorList lora_ranks, at::IntArrayRef lora_widths,
                       const at::Tensor& lora_rows) {
  const int64_t B = h.size(0), hidden = h.size(1), H = num_heads, Hk = num_kv_heads, D = head_dim;
  const int64_t layers = static_cast<int64_t>(k_caches.size());
  TORCH_CHECK(h.scalar_type() == at::kFloat && h.is_contiguous() && h.dim() == 2, "h must be float32 [B, hidden]");
  TORCH_CHECK(static_cast<int64_t>(norms.size()) == 6 * layers && static_cast<int64_t>(parts.size()) == 4 * layers &&
                  static_cast<int64_t>(biases.size()) == 4 * layers && static_cast<int64_t>(v_caches.size()) == layers &&
                  static_cast<int64_t>(windows.size()) == layers && static_cast<int64_t>(layer_tables.size()) == layers,
              "6 norms, 4 projections, 4 biases, 2 caches, a rope table and a window per layer");
  TORCH_CHECK(raws.size() == qtypes.size() && raws.size() == rows.size(), "one type and row count per part");
  TORCH_CHECK(cos_sin.scalar_type() == at::kFloat && cos_sin.is_contiguous() && cos_sin.dim() == 3 &&
                  cos_sin.size(1) == B && cos_sin.size(2) <= D && cos_sin.size(2) % 2 == 0,
              "cos_sin must be float32 [tables, B, R] with R <= head_dim");
  for (int64_t t : layer_tables) TORCH_CHECK(t >= 0 && t < cos_sin.size(0), "a layer names a rope table that is not there");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && block_tables.is_contiguous() && block_tables.dim() == 2 &&
                  block_tables.size(0) == B, "block_tables must be int32 [B, max_blocks]");
  TORCH_CHECK(seq_lens.scalar_type() == at::kInt && seq_lens.numel() == B && slots.scalar_type() == at::kLong &&
                  slots.numel() == B, "seq_lens int32 [B] and slots int64 [B]");
  TORCH_CHECK(H % Hk == 0, "query heads must be a multiple of KV heads");
  const int64_t G = H / Hk;
  const int64_t num_blocks = k_caches[0].size(0), page = k_caches[0].size(1), max_blocks = block_tables.size(1);
  const int32_t* bts = block_tables.data_ptr<int32_t>();
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  const int64_t* slot = slots.data_ptr<int64_t>();
  int64_t longest = 0;
  // Every page this step touches must exist: a bad table is an error, never a stray read or write.
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(lens[b] >= 1 && lens[b] <= max_blocks * page, "seq_len outside the block table");
    TORCH_CHECK(slot[b] >= 0 && slot[b] < num_blocks * page, "KV slot outside the cache");
    for (int64_t i = 0; i < (lens[b] + page - 1) / page; ++i)
      TORCH_CHECK(bts[b * max_blocks + i] >= 0 && bts[b * max_blocks + i] < num_blocks,
                  "block table names a page outside the cache");
    longest = std::max<int64_t>(longest, lens[b]);
  }
  for (int64_t l = 0; l < layers; ++l)
    TORCH_CHECK(k_caches[l].scalar_type() == at::kFloat && v_caches[l].scalar_type() == at::kFloat &&
                    k_caches[l].is_contiguous() && v_caches[l].is_contiguous() &&
                    k_caches[l].sizes() == k_caches[0].sizes() && v_caches[l].sizes() == k_caches[0].sizes() &&
                    k_caches[l].size(2) == Hk && k_caches[l].size(3) == D,
                "every layer's K and V cache must be float32 contiguous [blocks, page, Hk, D]");

  // The projections, in layer order.
  std::vector<Projection> proj(4 * layers);
  int64_t next = 0;
  for (int64_t p = 0; p < 4 * layers; ++p) {
    TORCH_CHECK(parts[p] >= 1 && next + parts[p] <= static_cast<int64_t>(raws.size()), "part counts exceed the parts");
    for (int64_t j = 0; j < parts[p]; ++j, ++next) {
      proj[p].raws.push_back(raws[next]);
      proj[p].qtypes.push_back(qtypes[next]);
      proj[p].rows.push_back(rows[next]);
    }
    if (biases[p].numel()) proj[p].bias = biases[p];
  }
  // The LoRA adapters, per projection (none when this step has no adapter rows).
  std::vector<LoRAProjection> lora(4 * layers);
  const int64_t* lrows = nullptr;
  if (lora_rows.numel()) {
    TORCH_CHECK(lora_rows.scalar_type() == at::kLong && lora_rows.is_contiguous() && lora_rows.numel() == B,
                "lora_rows must be int64 [B]");
    TORCH_CHECK(static_cast<int64_t>(lora_a.size()) == 4 * layers && lora_b.size() == lora_a.size() &&
                    lora_ranks.size() == lora_a.size(), "one LoRA A, B^T and rank table per projection");
    lrows = lora_rows.data_ptr<int64_t>();
    int64_t next_width = 0;
    for (int64_t p = 0; p < 4 * layers; ++p) {
      if (!lora_a[p].numel()) continue;
      const at::Tensor &a = lora_a[p], &bt = lora_b[p], &rk = lora_ranks[p];
      TORCH_CHECK(a.scalar_type() == at::kFloat && bt.scalar_type() == at::kFloat && rk.scalar_type() == at::kInt &&
                      a.is_contiguous() && bt.is_contiguous() && rk.is_contiguous() && a.dim() == 3 && bt.dim() == 3 &&
                      rk.dim() == 2 && bt.size(0) == a.size(0) && bt.size(1) == a.size(1) && rk.size(0) == a.size(0) &&
                      rk.size(1) >= 1 && a.size(1) % rk.size(1) == 0,
                  "LoRA tensors must be float32 A [S, J*r, K], B^T [S, J*r, N] and int32 ranks [S, J]");
      LoRAProjection& lp = lora[p];
      lp.a = a.data_ptr<float>();
      lp.bt = bt.data_ptr<float>();
      lp.ranks = rk.data_ptr<int32_t>();
      lp.slots = a.size(0), lp.parts = rk.size(1), lp.r0 = a.size(1) / lp.parts, lp.in = a.size(2), lp.out = bt.size(2);
      int64_t offset = 0;
      for (int64_t j = 0; j < lp.parts; ++j, ++next_width) {
        TORCH_CHECK(next_width < static_cast<int64_t>(lora_widths.size()), "too few LoRA part widths");
        lp.offsets.push_back(offset);
        lp.widths.push_back(lora_widths[next_width]);
        offset += lora_widths[next_width];
      }
      TORCH_CHECK(offset == lp.out, "LoRA part widths must add up to the projection's outputs");
      const int32_t* rp = lp.ranks;
      for (int64_t i = 0; i < lp.slots * lp.parts; ++i) TORCH_CHECK(rp[i] >= 0 && rp[i] <= lp.r0, "LoRA rank out of range");
    }
    for (int64_t b = 0; b < B; ++b) {
      TORCH_CHECK(lrows[b] < 0 || std::all_of(lora.begin(), lora.end(), [&](const LoRAProjection& lp) {
                    return lp.a == nullptr || lrows[b] < lp.slots;
                  }), "a row names a LoRA slot that is not there");
    }
  }
  auto project = [&](int64_t p, const at::Tensor& in) {
    at::Tensor y = proj[p](in);
    const LoRAProjection& lp = lora[p];
    if (lrows != nullptr && lp.a != nullptr) {
      TORCH_CHECK(lp.in == in.size(1) && lp.out == y.size(1), "LoRA shapes do not match the projection");
      lp.add(in.data_ptr<float>(), y.data_ptr<float>(), B, lrows);
    }
    return y;
  };
  const float off = static_cast<float>(norm_offset), ep = static_cast<float>(eps);
  const float sc = static_cast<float>(scale), cap = static_cast<float>(softcap);
  const int64_t half = cos_sin.size(2) / 2;
  const int64_t row_grain = B * hidden < (1 << 14) ? B : 1;  // small steps stay on one thread

  at::Tensor residual = h.clone();
  float* res = residual.data_ptr<float>();
  at::Tensor x = at::empty({B, hidden}, at::kFloat);
  at::Tensor attn = at::empty({B, H * D}, at::kFloat);
  float* xp = x.data_ptr<float>();
  float* ap = attn.data_ptr<float>();
  at::Tensor act_out;  // the gated activation [B, F], allocated at the first layer
  auto norm_rows = [&](const float* in, const at::Tensor& w, float* out) {
    at::parallel_for(0, B, row_grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) rms_norm(in + b * hidden, w.data_ptr<float>(), hidden, ep, off, out + b * hidden);
    });
  };

  for (int64_t l = 0; l < layers; ++l) {
    const at::Tensor* nw = &norms[6 * l];
    norm_rows(res, nw[0], xp);
    at::Tensor qkv = project(4 * l, x);
    const int64_t width = (H + 2 * Hk) * D;
    TORCH_CHECK(qkv.size(1) == width, "qkv projection width does not match the heads");
    const at::Tensor& kc = k_caches[l];
    const at::Tensor& vc = v_caches[l];
    const int64_t page_stride = kc.stride(0), row_stride = kc.stride(1);
    float* kcp = kc.data_ptr<float>();
    float* vcp = vc.data_ptr<float>();
    float* qkvp = qkv.data_ptr<float>();
    // Per row: q/k norms, rope, the K/V write.
    at::parallel_for(0, B, row_grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        float* q = qkvp + b * width;
        float* k = q + H * D;
        float* v = k + Hk * D;
        if (nw[4].numel()) {
          for (int64_t i = 0; i < H; ++i) rms_norm(q + i * D, nw[4].data_ptr<float>(), D, ep, off, q + i * D);
          for (int64_t i = 0; i < Hk; ++i) rms_norm(k + i * D, nw[5].data_ptr<float>(), D, ep, off, k + i * D);
        }
        const float* cs = cos_sin.data_ptr<float>() + (layer_tables[l] * B + b) * 2 * half;
        rope(q, H, D, half, cs, cs + half, neox);
        rope(k, Hk, D, half, cs, cs + half, neox);
        const int64_t where = (slot[b] / page) * page_stride + (slot[b] % page) * row_stride;
        std::copy(k, k + Hk * D, kcp + where);
        std::copy(v, v + Hk * D, vcp + where);
      }
    });
    // Attention, one (sequence, query head) per task.
    at::parallel_for(0, B * H, longest * D * B * H < (1 << 15) ? B * H : 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> scores(longest);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / H, hq = t % H, kvh = hq / G, len = lens[b];
        const int32_t* bt = bts + b * max_blocks;
        const float* qh = qkvp + b * width + hq * D;
        const int64_t first = windows[l] > 0 ? std::max<int64_t>(0, len - windows[l]) : 0;
        float mx = -INFINITY;
        for (int64_t p = first; p < len; ++p) {
          const float* kp = kcp + bt[p / page] * page_stride + (p % page) * row_stride + kvh * D;
          float s = dot(qh, kp, D) * sc;
          if (cap > 0.f) s = std::tanh(s / cap) * cap;
          scores[p] = s;
          mx = std::max(mx, s);
        }
        float sum = 0.f;
        for (int64_t p = first; p < len; ++p) {
          scores[p] = std::exp(scores[p] - mx);
          sum += scores[p];
        }
        float* out = ap + b * H * D + hq * D;
        std::fill(out, out + D, 0.f);
        for (int64_t p = first; p < len; ++p) {
          const float* vp = vcp + bt[p / page] * page_stride + (p % page) * row_stride + kvh * D;
          const float wgt = scores[p] / sum;
          for (int64_t d = 0; d < D; ++d) out[d] += wgt * vp[d];
        }
      }
    });
    at::Tensor o = project(4 * l + 1, attn);
    float* op = o.data_ptr<float>();
    if (sandwich) norm_rows(op, nw[1], op);
    for (int64_t i = 0; i < B * hidden; ++i) res[i] += op[i];

    norm_rows(res, nw[sandwich ? 2 : 1], xp);
    at::Tensor gu = project(4 * l + 2, x);
    const int64_t F = gu.size(1) / 2;
    if (!act_out.defined() || act_out.size(1) != F) act_out = at::empty({B, F}, at::kFloat);
    const float* g = gu.data_ptr<float>();
    float* ac = act_out.data_ptr<float>();
    at::parallel_for(0, B, row_grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t i = 0; i < F; ++i) {
          const float gi = g[b * 2 * F + i];
          ac[b * F + i] = (act == 0 ? gi / (1.f + std::exp(-gi)) : gelu_tanh(gi)) * g[b * 2 * F + F + i];
        }
    });
    at::Tensor d = project(4 * l + 3, act_out);
    float* dp = d.data_ptr<float>();
    if (sandwich) norm_rows(dp, nw[3], dp);
    for (int64_t i = 0; i < B * hidden; ++i) res[i] += dp[i];
  }
  at::Tensor out = at::empty({B, hidden}, at::kFloat);
  norm_rows(res, final_norm, out.data_ptr<float>());
  return out;
}

TORCH_LIBRARY_FRAGMENT(maxcli_cpu, m) {
  m.def(
      "decode_step(Tensor h, Tensor[] norms, Tensor[] raws, int[] qtypes, int[] rows, int[] parts, Tensor[] biases, "
      "Tensor[] k_caches, Tensor[] v_caches, Tensor final_norm, Tensor cos_sin, Tensor block_tables, "
      "Tensor seq_lens, Tensor slots, int[] layer_tables, int[] windows, int num_heads, int num_kv_heads, int head_dim, bool neox, "
      "bool sandwich, int act, float norm_offset, float scale, float softcap, float eps, Tensor[] lora_a, "
      "Tensor[] lora_b, Tensor[] lora_ranks, int[] lora_widths, Tensor lora_rows) -> Tensor",
      &decode_step);
}
