// Fused CPU kernels for bf16 on AVX-512 BF16: one decode step of a Llama-family model (icrl_lite.decode.FastDecoder)
// and the LM head's softmax passes in training (icrl_lite.logprobs.HeadLogprobs).
//
// A decode step at 16-32 rows is ~120 matmuls (left to oneDNN) and, through torch, ~1,100 small ops: RMSNorm,
// rotary, the cache write, attention as two batched matmuls with a softmax between, residual adds, SiLU. Each small
// op costs a few microseconds of dispatch for a few microseconds of work, and the attention matmuls run far below
// the memory rate on (3 x 64) x (64 x K) blocks. These kernels do that work in three calls per layer:
//
//   add_rms_norm   h += delta (bf16, in place); x = weight * rms_norm(h)           (transformers' LlamaRMSNorm)
//   attention      rotary on q and k, k and v written into the cache slab, softmax(q k^T * scale + mask) v
//   silu_mul       silu(gate) * up
//
// bf16 in and out, fp32 inside. Rounding to bf16 follows torch's op-by-op rounding where the torch path rounds
// (the residual add, the normalised and scaled RMSNorm output, rotary's two products and their sum, SiLU's output
// and the product), so the keys written to the cache are those transformers' forward writes; the attention scores
// and probabilities stay fp32 (the torch path rounds scores to bf16 after the matmul: this is the more exact one).
// Rows are split over torch's intra-op threads (at::parallel_for).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#if defined(__AVX512F__) && defined(__AVX512BF16__) && !defined(ICRL_LITE_PORTABLE)  // portable: the scalar loops
#include <immintrin.h>
#define ICRL_AVX512_BF16 1
#else
#define ICRL_AVX512_BF16 0
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

inline float bf2f(uint16_t v) {
  uint32_t u = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint16_t f2bf(float f) {  // round to nearest even, as c10::BFloat16
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float round_bf(float f) { return bf2f(f2bf(f)); }

// exp for x <= 0 (softmax after subtracting the max) and SiLU's exp(-x): Cephes' expf polynomial, ~1 ulp,
// branch-free so the loops that call it vectorize.
inline float exp_approx(float x) {
  x = std::fmin(std::fmax(x, -87.0f), 88.0f);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
  float n = (x * 1.44269504088896341f + magic) - magic;
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, sizeof scale);
  return p * scale;
}

#if ICRL_AVX512_BF16
inline __m512 exp512(__m512 x) {  // exp_approx on 16 lanes
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

inline __m512 load16(const uint16_t* p) {  // 16 bf16 -> fp32
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}

inline __m512 round16(__m512 x) {  // to bf16 and back, round to nearest even
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x)), 16));
}
#endif

const uint16_t* bf(const torch::Tensor& t) { return reinterpret_cast<const uint16_t*>(t.data_ptr<at::BFloat16>()); }
uint16_t* bf_mut(torch::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>()); }

void check_bf16(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kBFloat16 && t.is_contiguous(), name,
              " must be a contiguous bf16 CPU tensor");
}

// bf16(bf16(x cos) + bf16(roll(x, dim / 2) sin')) for one head: transformers' q cos + rotate_half(q) sin, op by op.
void rotary(const uint16_t* x, const uint16_t* cos, const uint16_t* sin, int64_t dim, uint16_t* out) {
  const int64_t half = dim / 2;
  for (int64_t i = 0; i < half; ++i)
    out[i] = f2bf(round_bf(bf2f(x[i]) * bf2f(cos[i])) + round_bf(bf2f(x[i + half]) * bf2f(sin[i])));
  for (int64_t i = half; i < dim; ++i)
    out[i] = f2bf(round_bf(bf2f(x[i]) * bf2f(cos[i])) + round_bf(bf2f(x[i - half]) * bf2f(sin[i])));
}

// softmax(q k^T * scale + mask) v for one row and KV head: q (group, dim) bf16 (rotated), keys/values (keys, dim)
// bf16, mask (keys,) additive fp32; writes out (group, dim) fp32. scores: scratch of group * keys floats.
void attend(const uint16_t* q, const uint16_t* kslab, const uint16_t* vslab, const float* mask, int64_t keys,
            int64_t group, int64_t dim, float scale, float* scores, float* out) {
  const float minus_inf = -std::numeric_limits<float>::infinity();
#if ICRL_AVX512_BF16
  if (dim % 32 == 0 && dim <= 256 && group <= 8) {
    __m512bh qv[8][8];
    for (int64_t g = 0; g < group; ++g)
      for (int64_t c = 0; c < dim / 32; ++c) qv[g][c] = (__m512bh)_mm512_loadu_si512(q + g * dim + c * 32);
    for (int64_t t = 0; t < keys; ++t) {
      if (mask[t] == minus_inf) {
        for (int64_t g = 0; g < group; ++g) scores[g * keys + t] = minus_inf;
        continue;
      }
      const uint16_t* k = kslab + t * dim;
      for (int64_t g = 0; g < group; ++g) {
        __m512 a = _mm512_setzero_ps();
        for (int64_t c = 0; c < dim / 32; ++c) a = _mm512_dpbf16_ps(a, qv[g][c], (__m512bh)_mm512_loadu_si512(k + c * 32));
        scores[g * keys + t] = _mm512_reduce_add_ps(a) * scale + mask[t];
      }
    }
  } else
#endif
  {
    std::vector<float> qf(group * dim), kf(dim);
    for (int64_t i = 0; i < group * dim; ++i) qf[i] = bf2f(q[i]);
    for (int64_t t = 0; t < keys; ++t) {
      if (mask[t] == minus_inf) {
        for (int64_t g = 0; g < group; ++g) scores[g * keys + t] = minus_inf;
        continue;
      }
      for (int64_t i = 0; i < dim; ++i) kf[i] = bf2f(kslab[t * dim + i]);
      for (int64_t g = 0; g < group; ++g) {
        float dot = 0.0f;
        for (int64_t i = 0; i < dim; ++i) dot += qf[g * dim + i] * kf[i];
        scores[g * keys + t] = dot * scale + mask[t];
      }
    }
  }
  for (int64_t g = 0; g < group; ++g) {  // softmax, unnormalised: exp(s - max); the sum divides the output
    float* sc = scores + g * keys;
    int64_t t = 0;
    float top = minus_inf;
#if ICRL_AVX512_BF16
    __m512 best = _mm512_set1_ps(minus_inf);
    for (; t + 16 <= keys; t += 16) best = _mm512_max_ps(best, _mm512_loadu_ps(sc + t));
    top = _mm512_reduce_max_ps(best);
#endif
    for (; t < keys; ++t) top = std::fmax(top, sc[t]);
    if (top == minus_inf) top = 0.0f;  // every key masked: the output is 0
    t = 0;
#if ICRL_AVX512_BF16
    const __m512 shift = _mm512_set1_ps(top), floor = _mm512_set1_ps(minus_inf);
    for (; t + 16 <= keys; t += 16) {
      const __m512 x = _mm512_loadu_ps(sc + t);
      const __mmask16 live = _mm512_cmp_ps_mask(x, floor, _CMP_NEQ_OQ);
      _mm512_storeu_ps(sc + t, _mm512_maskz_mov_ps(live, exp512(_mm512_sub_ps(x, shift))));
    }
#endif
    for (; t < keys; ++t) sc[t] = sc[t] == minus_inf ? 0.0f : exp_approx(sc[t] - top);
  }
  std::fill(out, out + group * dim, 0.0f);
#if ICRL_AVX512_BF16
  if (dim % 16 == 0 && dim <= 128 && group <= 4) {
    __m512 acc[4][8];
    for (int64_t g = 0; g < group; ++g)
      for (int64_t c = 0; c < dim / 16; ++c) acc[g][c] = _mm512_setzero_ps();
    for (int64_t t = 0; t < keys; ++t) {
      if (mask[t] == minus_inf) continue;
      const uint16_t* v = vslab + t * dim;
      for (int64_t c = 0; c < dim / 16; ++c) {
        __m512 vf = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + c * 16))), 16));
        for (int64_t g = 0; g < group; ++g)
          acc[g][c] = _mm512_fmadd_ps(_mm512_set1_ps(scores[g * keys + t]), vf, acc[g][c]);
      }
    }
    for (int64_t g = 0; g < group; ++g)
      for (int64_t c = 0; c < dim / 16; ++c) _mm512_storeu_ps(out + g * dim + c * 16, acc[g][c]);
  } else
#endif
  {
    for (int64_t t = 0; t < keys; ++t) {
      if (mask[t] == minus_inf) continue;
      for (int64_t g = 0; g < group; ++g) {
        const float p = scores[g * keys + t];
        for (int64_t i = 0; i < dim; ++i) out[g * dim + i] += p * bf2f(vslab[t * dim + i]);
      }
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    float total = 0.0f;
    for (int64_t t = 0; t < keys; ++t) total += scores[g * keys + t];
    const float inv = total > 0.0f ? 1.0f / total : 0.0f;
    for (int64_t i = 0; i < dim; ++i) out[g * dim + i] *= inv;
  }
}

// out = bf16(bf16(silu(gate)) * up) over n values.
void silu_mul_span(const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n) {
  int64_t i = 0;
#if ICRL_AVX512_BF16
  for (; i + 16 <= n; i += 16) {
    const __m512 x = load16(gate + i);
    const __m512 silu = round16(_mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), exp512(_mm512_sub_ps(_mm512_setzero_ps(), x)))));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(silu, load16(up + i))));
  }
#endif
  for (; i < n; ++i) {
    const float x = bf2f(gate[i]);
    out[i] = f2bf(round_bf(x / (1.0f + exp_approx(-x))) * bf2f(up[i]));
  }
}

// 1 / rms(row) for a bf16 row of `width` values.
float inverse_rms(const uint16_t* row, int64_t width, double eps) {
  float sum = 0.0f;
  int64_t i = 0;
#if ICRL_AVX512_BF16
  __m512 squares = _mm512_setzero_ps();
  for (; i + 16 <= width; i += 16) {
    const __m512 v = load16(row + i);
    squares = _mm512_fmadd_ps(v, v, squares);
  }
  sum = _mm512_reduce_add_ps(squares);
#endif
  for (; i < width; ++i) sum += bf2f(row[i]) * bf2f(row[i]);
  return 1.0f / std::sqrt(sum / static_cast<float>(width) + static_cast<float>(eps));
}

// out = bf16(weight * bf16(row * inv)): transformers' LlamaRMSNorm after the scale is known.
void normalise_row(const uint16_t* row, const uint16_t* weight, float inv, uint16_t* out, int64_t width) {
  int64_t i = 0;
#if ICRL_AVX512_BF16
  for (; i + 16 <= width; i += 16) {
    const __m512 normed = round16(_mm512_mul_ps(load16(row + i), _mm512_set1_ps(inv)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(load16(weight + i), normed)));
  }
#endif
  for (; i < width; ++i) out[i] = f2bf(bf2f(weight[i]) * round_bf(bf2f(row[i]) * inv));
}

}  // namespace

// h (B, H) bf16, updated in place to h + delta when delta is given; returns weight * rms_norm(h) (B, H) bf16.
torch::Tensor add_rms_norm(torch::Tensor h, c10::optional<torch::Tensor> delta, torch::Tensor weight, double eps) {
  check_bf16(h, "h");
  check_bf16(weight, "weight");
  const int64_t rows = h.size(0), width = h.size(1);
  TORCH_CHECK(h.dim() == 2 && weight.numel() == width, "add_rms_norm: h (B, H) and weight (H,)");
  const uint16_t* d = nullptr;
  if (delta.has_value()) {
    check_bf16(*delta, "delta");
    TORCH_CHECK(delta->sizes() == h.sizes(), "add_rms_norm: delta must have h's shape");
    d = bf(*delta);
  }
  auto out = torch::empty_like(h);
  uint16_t* hp = bf_mut(h);
  uint16_t* op = bf_mut(out);
  const uint16_t* w = bf(weight);
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      uint16_t* row = hp + b * width;
      if (d) {  // h += delta, rounded to bf16 as torch's add
        const uint16_t* add = d + b * width;
        int64_t i = 0;
#if ICRL_AVX512_BF16
        for (; i + 16 <= width; i += 16)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + i),
                              (__m256i)_mm512_cvtneps_pbh(_mm512_add_ps(load16(row + i), load16(add + i))));
#endif
        for (; i < width; ++i) row[i] = f2bf(bf2f(row[i]) + bf2f(add[i]));
      }
      normalise_row(row, w, inverse_rms(row, width, eps), op + b * width, width);
    }
  });
  return out;
}

// gate_up (B, 2 I) bf16 = [gate | up] -> silu(gate) * up (B, I) bf16.
torch::Tensor silu_mul(torch::Tensor gate_up) {
  check_bf16(gate_up, "gate_up");
  const int64_t rows = gate_up.size(0), inner = gate_up.size(1) / 2;
  auto out = torch::empty({rows, inner}, gate_up.options());
  const uint16_t* in = bf(gate_up);
  uint16_t* op = bf_mut(out);
  at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) silu_mul_span(in + b * 2 * inner, in + b * 2 * inner + inner, op + b * inner, inner);
  });
  return out;
}

// One decode position per row. qkv (B, (Hq + 2 KV) d) bf16, the projections [q | k | v]; cos, sin (B, d) bf16 with
// sin's first half negated (rotate_half(x) * sin == roll(x, d/2) * sin'); slab_k, slab_v (B, KV, C, d) bf16, where
// positions [0, length) hold the cache and this step's k and v are written at `length`; mask (B, length + 1) fp32
// additive (0 attend, -inf not). Returns the attention output (B, Hq d) bf16, query heads grouped by KV head.
torch::Tensor attention(torch::Tensor qkv, torch::Tensor cos, torch::Tensor sin, torch::Tensor slab_k,
                        torch::Tensor slab_v, int64_t length, torch::Tensor mask, int64_t heads, int64_t kv_heads,
                        double scaling) {
  for (auto* t : {&qkv, &cos, &sin, &slab_k, &slab_v}) check_bf16(*t, "attention's bf16 inputs");
  TORCH_CHECK(mask.scalar_type() == at::kFloat && mask.is_contiguous(), "mask must be contiguous fp32");
  const int64_t rows = qkv.size(0), dim = slab_k.size(3), capacity = slab_k.size(2), keys = length + 1;
  const int64_t group = heads / kv_heads;
  TORCH_CHECK(heads % kv_heads == 0 && dim % 16 == 0, "attention: heads % kv_heads == 0 and head_dim % 16 == 0");
  TORCH_CHECK(qkv.size(1) == (heads + 2 * kv_heads) * dim && slab_k.size(0) == rows && slab_k.size(1) == kv_heads,
              "attention: qkv (B, (Hq + 2 KV) d) and slab (B, KV, C, d) disagree");
  TORCH_CHECK(length < capacity && mask.size(0) == rows && mask.size(1) == keys && cos.size(1) == dim,
              "attention: the slab has no room at `length`, or mask / cos are not (B, length + 1) / (B, d)");
  auto out = torch::empty({rows, heads * dim}, qkv.options());
  const uint16_t* in = bf(qkv);
  const uint16_t* cp = bf(cos);
  const uint16_t* sp = bf(sin);
  uint16_t* kp = bf_mut(slab_k);
  uint16_t* vp = bf_mut(slab_v);
  uint16_t* op = bf_mut(out);
  const float* mp = mask.data_ptr<float>();
  const float scale = static_cast<float>(scaling);

  at::parallel_for(0, rows * kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint16_t> q(group * dim);
    std::vector<float> outf(group * dim), scores(group * keys);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / kv_heads, j = task % kv_heads;
      const uint16_t* row = in + b * qkv.size(1);
      const uint16_t* c = cp + b * dim;
      const uint16_t* s = sp + b * dim;
      uint16_t* kslab = kp + (b * kv_heads + j) * capacity * dim;
      uint16_t* vslab = vp + (b * kv_heads + j) * capacity * dim;
      rotary(row + (heads + j) * dim, c, s, dim, kslab + length * dim);
      std::memcpy(vslab + length * dim, row + (heads + kv_heads + j) * dim, dim * sizeof(uint16_t));
      for (int64_t g = 0; g < group; ++g) rotary(row + (j * group + g) * dim, c, s, dim, q.data() + g * dim);
      const float* m = mp + b * keys;
      float* acc = outf.data();
      attend(q.data(), kslab, vslab, m, keys, group, dim, scale, scores.data(), acc);
      for (int64_t g = 0; g < group; ++g) {
        uint16_t* o = op + b * heads * dim + (j * group + g) * dim;
        for (int64_t i = 0; i < dim; ++i) o[i] = f2bf(acc[g * dim + i]);
      }
    }
  });
  return out;
}


// ---- the LM head's log-probs in training (icrl_lite.logprobs.HeadLogprobs) ---------------------------------------
//
// For a block of positions the head's bf16 logits (b, V) (as F.linear returns them) go through one pass each way
// instead of torch's ~4 forward and ~6 backward passes over fp32 copies: forward, the log-sum-exp of scale * logits
// and the target's logit; backward, the logits' gradient -g p (+ g at the target) in bf16, ready for the matmul
// with W. The target's entry is formed as -g expm1(log p_t) in fp32: g (1 - p_t) would cancel for p_t near 1.

void check_targets(const int64_t* targets, int64_t rows, int64_t vocab) {
  for (int64_t r = 0; r < rows; ++r)
    TORCH_CHECK(targets[r] >= 0 && targets[r] < vocab, "a target id (", targets[r], ") outside the vocabulary (", vocab, ")");
}

// logits (b, V) bf16, targets (b,) int64 -> (b, 2) fp32: [log-sum-exp, target logit], both of scale * logits.
torch::Tensor head_lse(torch::Tensor logits, torch::Tensor targets, double scaling) {
  check_bf16(logits, "logits");
  TORCH_CHECK(targets.scalar_type() == at::kLong && targets.is_contiguous() && targets.numel() == logits.size(0),
              "targets: (b,) int64");
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  auto out = torch::empty({rows, 2}, logits.options().dtype(at::kFloat));
  const uint16_t* lp = bf(logits);
  const int64_t* tp = targets.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  const float scale = static_cast<float>(scaling);
  check_targets(tp, rows, vocab);
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const uint16_t* row = lp + r * vocab;
      float top = -std::numeric_limits<float>::infinity();
      int64_t i = 0;
#if ICRL_AVX512_BF16
      __m512 best = _mm512_set1_ps(top);
      for (; i + 16 <= vocab; i += 16) best = _mm512_max_ps(best, load16(row + i));
      top = _mm512_reduce_max_ps(best);
#endif
      for (; i < vocab; ++i) top = std::fmax(top, bf2f(row[i]));
      top *= scale;  // scale > 0
      float sum = 0.0f;
      i = 0;
#if ICRL_AVX512_BF16
      __m512 total = _mm512_setzero_ps();
      const __m512 factor = _mm512_set1_ps(scale), shift = _mm512_set1_ps(top);
      for (; i + 16 <= vocab; i += 16)
        total = _mm512_add_ps(total, exp512(_mm512_fmsub_ps(load16(row + i), factor, shift)));
      sum = _mm512_reduce_add_ps(total);
#endif
      for (; i < vocab; ++i) sum += exp_approx(bf2f(row[i]) * scale - top);
      op[2 * r] = top + std::log(sum);
      op[2 * r + 1] = bf2f(row[tp[r]]) * scale;
    }
  });
  return out;
}

// logits (b, V) bf16, lse (b,) fp32 from head_lse, targets (b,), grad (b,) fp32 (dLoss/dlogp, times scale) ->
// (b, V) bf16: grad * (onehot(target) - softmax), in place of the logits (they are used once).
torch::Tensor head_grad(torch::Tensor logits, torch::Tensor lse, torch::Tensor targets, torch::Tensor grad,
                        double scaling) {
  check_bf16(logits, "logits");
  TORCH_CHECK(lse.scalar_type() == at::kFloat && grad.scalar_type() == at::kFloat && lse.is_contiguous() &&
              grad.is_contiguous() && targets.scalar_type() == at::kLong && targets.is_contiguous(),
              "head_grad: lse, grad fp32 and targets int64, contiguous");
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  uint16_t* lp = bf_mut(logits);
  const float* sp = lse.data_ptr<float>();
  const float* gp = grad.data_ptr<float>();
  const int64_t* tp = targets.data_ptr<int64_t>();
  const float scale = static_cast<float>(scaling);
  TORCH_CHECK(lse.numel() == rows && grad.numel() == rows && targets.numel() == rows, "head_grad: (b,) lse, grad, targets");
  check_targets(tp, rows, vocab);
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      uint16_t* row = lp + r * vocab;
      const float g = gp[r], top = sp[r];
      const float target = -g * std::expm1(bf2f(row[tp[r]]) * scale - top);  // g (1 - p_t), without cancelling
      int64_t i = 0;
#if ICRL_AVX512_BF16
      const __m512 factor = _mm512_set1_ps(scale), shift = _mm512_set1_ps(top), minus_g = _mm512_set1_ps(-g);
      for (; i + 16 <= vocab; i += 16) {
        const __m512 p = exp512(_mm512_fmsub_ps(load16(row + i), factor, shift));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + i), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(p, minus_g)));
      }
#endif
      for (; i < vocab; ++i) row[i] = f2bf(-g * exp_approx(bf2f(row[i]) * scale - top));
      row[tp[r]] = f2bf(target);
    }
  });
  return logits;
}


// ---- RMSNorm and SiLU x up with gradients, for the update (icrl_lite.fused) ---------------------------------
//
// torch runs each as ~8 ops forward and ~12 backward over fp32 copies; here one pass each way, fp32 inside and one
// rounding to bf16 per output (torch rounds after each op: the results agree to bf16 rounding).

// x (N, H) bf16, weight (H,) bf16 -> [weight * bf16(x * inv) (N, H) bf16, inv (N,) fp32], inv = 1 / rms(x).
std::vector<torch::Tensor> rms_norm_forward(torch::Tensor x, torch::Tensor weight, double eps) {
  check_bf16(x, "x");
  check_bf16(weight, "weight");
  const int64_t rows = x.size(0), width = x.size(1);
  TORCH_CHECK(x.dim() == 2 && weight.numel() == width, "rms_norm_forward: x (N, H), weight (H,)");
  auto y = torch::empty_like(x);
  auto inv = torch::empty({rows}, x.options().dtype(at::kFloat));
  const uint16_t* xp = bf(x);
  const uint16_t* w = bf(weight);
  uint16_t* yp = bf_mut(y);
  float* ip = inv.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      ip[r] = inverse_rms(xp + r * width, width, eps);
      normalise_row(xp + r * width, w, ip[r], yp + r * width, width);
    }
  });
  return {y, inv};
}

// d/dx of weight * x * inv(x): inv * (w dy - xhat mean(w dy xhat)), xhat = x * inv. -> (N, H) bf16.
torch::Tensor rms_norm_backward(torch::Tensor grad, torch::Tensor x, torch::Tensor weight, torch::Tensor inv) {
  check_bf16(grad, "grad");
  check_bf16(x, "x");
  check_bf16(weight, "weight");
  const int64_t rows = x.size(0), width = x.size(1);
  TORCH_CHECK(grad.sizes() == x.sizes() && inv.scalar_type() == at::kFloat && inv.numel() == rows,
              "rms_norm_backward: grad and x (N, H), inv (N,) fp32");
  auto dx = torch::empty_like(x);
  const uint16_t* gp = bf(grad);
  const uint16_t* xp = bf(x);
  const uint16_t* w = bf(weight);
  const float* ip = inv.data_ptr<float>();
  uint16_t* dp = bf_mut(dx);
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const uint16_t* g = gp + r * width;
      const uint16_t* row = xp + r * width;
      const float scale = ip[r];
      float dot = 0.0f;
      for (int64_t i = 0; i < width; ++i) dot += bf2f(w[i]) * bf2f(g[i]) * bf2f(row[i]);
      const float mean = dot * scale / static_cast<float>(width);  // mean(w dy xhat)
      for (int64_t i = 0; i < width; ++i)
        dp[r * width + i] = f2bf(scale * (bf2f(w[i]) * bf2f(g[i]) - bf2f(row[i]) * scale * mean));
    }
  });
  return dx;
}

// gate, up (N, I) bf16 -> bf16(silu(gate)) * up (N, I) bf16.
torch::Tensor silu_mul_forward(torch::Tensor gate, torch::Tensor up) {
  check_bf16(gate, "gate");
  check_bf16(up, "up");
  TORCH_CHECK(gate.sizes() == up.sizes(), "silu_mul_forward: gate and up of one shape");
  auto out = torch::empty_like(gate);
  const uint16_t* gp = bf(gate);
  const uint16_t* upp = bf(up);
  uint16_t* op = bf_mut(out);
  at::parallel_for(0, gate.numel(), 4096, [&](int64_t begin, int64_t end) {
    silu_mul_span(gp + begin, upp + begin, op + begin, end - begin);
  });
  return out;
}

// The gradients of silu_mul_forward: [d gate, d up] (N, I) bf16, with silu'(x) = s (1 + x (1 - s)), s = sigmoid(x).
std::vector<torch::Tensor> silu_mul_backward(torch::Tensor grad, torch::Tensor gate, torch::Tensor up) {
  check_bf16(grad, "grad");
  check_bf16(gate, "gate");
  check_bf16(up, "up");
  TORCH_CHECK(grad.sizes() == gate.sizes() && gate.sizes() == up.sizes(), "silu_mul_backward: one shape");
  auto d_gate = torch::empty_like(gate), d_up = torch::empty_like(up);
  const uint16_t* dy = bf(grad);
  const uint16_t* gp = bf(gate);
  const uint16_t* upp = bf(up);
  uint16_t* dg = bf_mut(d_gate);
  uint16_t* du = bf_mut(d_up);
  at::parallel_for(0, gate.numel(), 4096, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
#if ICRL_AVX512_BF16
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= end; i += 16) {
      const __m512 x = load16(gp + i), g = load16(dy + i);
      const __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
      const __m512 silu = round16(_mm512_mul_ps(x, sig));
      const __m512 slope = _mm512_mul_ps(sig, _mm512_fmadd_ps(x, _mm512_sub_ps(one, sig), one));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(du + i), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(g, silu)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dg + i),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_mul_ps(g, load16(upp + i)), slope)));
    }
#endif
    for (; i < end; ++i) {
      const float x = bf2f(gp[i]), g = bf2f(dy[i]);
      const float sig = 1.0f / (1.0f + exp_approx(-x));
      du[i] = f2bf(g * round_bf(x * sig));
      dg[i] = f2bf(g * bf2f(upp[i]) * sig * (1.0f + x * (1.0f - sig)));
    }
  });
  return {d_gate, d_up};
}

// Whether the attention's inner loops were built with AVX-512 BF16 (its portable loops are slower than torch's).
bool vectorized() { return ICRL_AVX512_BF16; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("vectorized", &vectorized, "whether the attention was built with AVX-512 BF16");
  m.def("add_rms_norm", &add_rms_norm, "h += delta (in place); weight * rms_norm(h)");
  m.def("silu_mul", &silu_mul, "silu(gate) * up");
  m.def("attention", &attention, "one decode position: rotary, cache write, softmax attention");
  m.def("head_lse", &head_lse, "log-sum-exp and target logit of a block of the LM head's logits");
  m.def("head_grad", &head_grad, "the LM head's logit gradient for a block, in place");
  m.def("rms_norm_forward", &rms_norm_forward, "weight * rms_norm(x) and 1 / rms(x)");
  m.def("rms_norm_backward", &rms_norm_backward, "the gradient of rms_norm_forward for x");
  m.def("silu_mul_forward", &silu_mul_forward, "silu(gate) * up");
  m.def("silu_mul_backward", &silu_mul_backward, "the gradients of silu_mul_forward");
}
