// attnsolve CPU prefill on AMX: bf16 query rows of one sequence against its paged bf16 or fp8 K/V, read in
// place (16-token tiles straight from the blocks), causal work only up to each row's diagonal (and from its
// sliding window's start).  Why a kernel of our own: torch's CPU flash kernel, which the other prefill paths
// call, needs the sequence's K/V gathered into contiguous memory and computes each query block's keys up to
// the block's last row (docs/kernels.md, CPU_ATTN "bf16 prefill on AMX").
//
// Work item: one KV head and up to RB row blocks; a row block's (row, head) pairs of that KV head (at most
// NQ = 32) are its columns.  The keys go in chunks of CHUNK in the outer loop, so a chunk read from memory
// (and prefetched while the previous one is computed) serves every row block of the item:
//   S^T [16 tokens x 32 columns] = K tile [16 tokens x 32 dims] . Q^T (pair-interleaved, packed per block),
// two tiles at a time into four accumulator tiles; an online softmax per column (columns are vector lanes:
// no horizontal reductions; the scale folded into a base-2 exponent; soft-capping, masks for the diagonal,
// the window and L); then O^T [dims x columns] += V^T . P^T with V transposed once per chunk for all the
// blocks and P^T pair-interleaved straight from the score rows.  Probabilities are rounded to bf16 for that
// product (as torch's and vLLM's bf16 kernels do); everything else accumulates in float32.  fp8 values are
// widened to bf16 exactly.  Tiles and chunks sit at absolute multiples of 16 and CHUNK tokens, so the result
// does not depend on the block size (block sizes that are not a multiple of 16 are gathered by the caller
// and passed as one block).
#include <cstdint>
#include <cstring>
#include <cmath>
#include <vector>
#include <algorithm>
#include <omp.h>
#include "cpu_common.h"

#if defined(__AVX512F__) && defined(__AMX_BF16__) && defined(__AMX_TILE__) && defined(__AVX512BF16__) && defined(__linux__)
#define ATTNSOLVE_PREFILL_AMX 1
#endif

#if defined(ATTNSOLVE_PREFILL_AMX)
namespace {

constexpr int NQ = 32;     // columns (query row, head) per item
constexpr int CHUNK = 128;  // tokens per softmax step (8 tiles)

// 2^t for t <= 0 with exp512's polynomial (cpu_common.h) and vscalefps for the power of two; t is clamped at
// -126 (callers zero the masked entries themselves); NaN in, NaN out.
static inline __m512 exp2_512(__m512 t) {
  t = _mm512_max_ps(_mm512_set1_ps(-126.0f), t);
  const __m512 fi = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  return _mm512_scalef_ps(pow2_frac512(_mm512_sub_ps(t, fi)), fi);
}

// 2^t for t <= 0 to float32 accuracy (the float32 mode): t = i + f with i the nearest integer, f in [-1/2, 1/2],
// 2^f by its degree-7 Taylor polynomial (truncation error below 2e-9 relative; exp2_512's degree-6 polynomial on
// [0, 1) is off by up to ~1e-6, invisible in bf16, 10x a float32 ulp).  Clamped at -126; NaN in, NaN out.
static inline __m512 exp2_acc512(__m512 t) {
  t = _mm512_max_ps(_mm512_set1_ps(-126.0f), t);
  const __m512 fi = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, fi);
  __m512 p = _mm512_set1_ps(1.5252734e-5f);                   // ln2^7 / 7!
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.5403530e-4f));  // ln2^6 / 6!
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504109e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022651e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
  return _mm512_scalef_ps(_mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f)), fi);
}

// cap * tanh(x / cap) for 16 scores (soft-capping, Gemma 2): tanh(|y|) = (1 - e^(-2|y|)) / (1 + e^(-2|y|)), the
// exponential's argument never positive; the sign put back. NaN in, NaN out.
static inline __m512 softcap512(__m512 x, __m512 cap, __m512 inv_cap) {
  const __m512 ay = _mm512_abs_ps(_mm512_mul_ps(x, inv_cap));
  const __m512 e = exp512(_mm512_mul_ps(ay, _mm512_set1_ps(-2.0f)));
  const __m512 th = _mm512_div_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), e), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u));
  return _mm512_mul_ps(cap, _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(th), sign)));
}

struct Geometry {
  const uint16_t* q; int64_t q_s0, q_s1;
  const uint8_t* kc; int64_t k_s0, k_s1, k_s2;  // caches as bytes; strides in elements
  const uint8_t* vc; int64_t v_s0, v_s1, v_s2;
  int ctype, esz;  // 1: bf16, 2: float32 (query, cache and output), 3: fp8 e4m3, 4: fp8 e5m2 (converted to bf16
                   // as they are read, exactly), 5: fp16 (query, cache and output)
  int np;          // bf16 parts per value: 1; 3 for float32, 2 for fp16 (split3_32: products as part products)
  const float* qf; float* outf;  // float32: the query and the output
  const int32_t* blocks; int bs;
  int n, L, H, Hkv, D, G, Gc, R, causal, window;  // window: a causal row at p sees keys t > p - window (0: all)
  float scale, vmul, softcap;  // scale: the score scale (times k_scale); vmul: v_scale; softcap: 0 = none
  const float* sinks;
  const float* alibi;                  // per head: slope * (t - p) added to the (capped) logit, or null
  uint16_t* out; int64_t o_s0, o_s1;
  float* lse; int64_t lse_s0, lse_s1;  // per row and head: log of the softmax denominator (float32), or null
};

constexpr int RB = 16;     // row blocks per item (at most): each K/V chunk read from memory serves RB x NQ columns

// One row block's state over the keys: its packed query, positions, running maxima and sums, accumulators.
struct Block {
  int r0, r1, ncol, last, first_masked;  // rows, columns used, last key any column sees, first key one does not
  int first, lo_max;  // first key any column sees; keys below lo_max are out of some column's window
  uint32_t* qv;   // [part][D/32][2 halves][16 dim pairs][16 columns]: Q^T, pair-interleaved (float32: 3 parts)
  float* o;       // [D/16][2 column halves][16 dims][16 columns]: O^T (columns are lanes)
  alignas(64) float pos[NQ], lo[NQ], m[NQ], l[NQ];  // lo: a column's first key in its window
  alignas(64) float row_pos[NQ], slope[NQ];         // ALiBi: the row's position (also without causality), slope
};

struct Scratch {  // per thread, 64-byte aligned pieces of one buffer
  std::vector<uint8_t> raw;
  Block blk[RB];
  // (float32: pb, vt, kp and vp hold three parts each, one after the other: the plane sizes below)
  float* st;      // [CHUNK tokens][NQ]: S^T, then P^T
  uint16_t* pb;   // [2 column halves][CHUNK/32 units][16 token pairs][16 columns][2]: P^T, the B tiles of O^T
  uint16_t* vt;   // [CHUNK/32 units][D/16][16 dims][32 tokens]: the chunk's V^T, the A tiles of O^T
  uint16_t* kp;   // [CHUNK][D]: an fp8 or float32 cache's K rows of the chunk, as bf16
  uint16_t* vp;   // [CHUNK][D]: a float32 cache's V rows of the chunk, as bf16 parts (transposed into vt)
  uint16_t* kz;   // [16][D]: a partial tile's K rows, zeros past L
  uint16_t* vz;   // [16][D]: the same for V
  size_t kplane, pplane, qplane;  // elements between parts: kp / vp / vt, pb, qv (words)
  void ensure(int D) {
    const size_t qv = (size_t)D * NQ * 2 * 3, o = (size_t)NQ * D * 4;
    const size_t parts[] = {(size_t)CHUNK * NQ * 4, (size_t)2 * (CHUNK / 32) * 1024 * 3, (size_t)CHUNK * D * 2 * 3,
                            (size_t)CHUNK * D * 2 * 3, (size_t)CHUNK * D * 2 * 3, (size_t)16 * D * 2, (size_t)16 * D * 2};
    kplane = (size_t)CHUNK * D; pplane = (size_t)2 * (CHUNK / 32) * 512; qplane = (size_t)16 * D;
    size_t total = 64 + RB * (qv + o);
    for (size_t p : parts) total += (p + 63) / 64 * 64;
    if (raw.size() < total) raw.assign(total, 0);
    uint8_t* at = (uint8_t*)(((uintptr_t)raw.data() + 63) & ~(uintptr_t)63);
    for (int b = 0; b < RB; ++b) {
      blk[b].qv = (uint32_t*)at; at += qv;
      blk[b].o = (float*)at; at += o;
    }
    void** dst[] = {(void**)&st, (void**)&pb, (void**)&vt, (void**)&kp, (void**)&vp, (void**)&kz, (void**)&vz};
    for (int i = 0; i < 7; ++i) { *dst[i] = at; at += (parts[i] + 63) / 64 * 64; }
  }
};

// float32 on AMX-BF16 (np = 3): every float32 x is exactly x0 + x1 + x2, three bf16 values (x0 = x rounded to
// bf16, x1 = the rest rounded, x2 = what is left: 8 + 8 + 8 significant bits hold a float32's 24).  A product
// x . y is then the sum of the nine part products; the six with i + j <= 2 are kept and the three below
// 2^-24 |x y| (x1 y2, x2 y1, x2 y2) dropped, so each product carries about the float32 rounding error, and AMX
// adds them in float32.  K, V and the query are split once per chunk / item; the probabilities per chunk.
// fp16 (np = 2): an fp16 value's 11 bits are exactly x0 + x1 (x2 = 0); the three products x0 y0, x0 y1, x1 y0 are
// kept and x1 y1 (below 2^-16 |x y|, 1/32 of an fp16 ulp) dropped; the probabilities as two parts (16 bits).
// Limits: inf keeps its other parts 0; magnitudes above bf16's largest (3.39e38) round to inf in x0 (the
// scores overflow there anyway); parts below 1.2e-38 are flushed (the instruction's rule) - absolute errors
// under 1e-38.
// The 32 values [a | b] as three parts of 32 bf16 each, in order.
static inline void split3_32(__m512 a, __m512 b, __m512i* part) {
  for (int i = 0; i < 3; ++i) {
    const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(b, a);
    part[i] = h;
    if (i == 2) break;
    const __m512 wa = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16));
    const __m512 wb = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16));
    a = _mm512_maskz_sub_ps(_mm512_cmp_ps_mask(a, wa, _CMP_NEQ_UQ), a, wa);  // x == part (inf too): rest 0
    b = _mm512_maskz_sub_ps(_mm512_cmp_ps_mask(b, wb, _CMP_NEQ_UQ), b, wb);
  }
}

// 32 values of a float32 (np = 3) or fp16 (np = 2) row as float32.
static inline void load32(const Geometry& g, const void* src, __m512& a, __m512& b) {
  if (g.np == 3) {
    a = _mm512_loadu_ps(src);
    b = _mm512_loadu_ps((const float*)src + 16);
  } else {
    a = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)src));
    b = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)src + 1));
  }
}

// Rows t0 .. t0 + 16 ntile - 1 of KV head kh of a float32 or fp16 cache as np bf16 parts [CHUNK][D] each (zeros
// past L).
static void split_rows(const Geometry& g, const uint8_t* cache, int64_t s0, int64_t s1, int64_t s2, int kh, int t0,
                       int ntile, uint16_t* dst, size_t plane) {
  const int D = g.D;
  for (int t = 0; t < 16 * ntile; ++t) {
    uint16_t* row = dst + (size_t)t * D;
    if (t0 + t >= g.L) {
      for (int p = 0; p < g.np; ++p) std::memset(row + p * plane, 0, (size_t)D * 2);
      continue;
    }
    const int64_t blk = g.blocks[(t0 + t) / g.bs];
    const uint8_t* src = cache + (blk * s0 + (int64_t)((t0 + t) % g.bs) * s1 + (int64_t)kh * s2) * g.esz;
    for (int d = 0; d < D; d += 32) {
      __m512i part[3];
      __m512 a, b;
      load32(g, src + (size_t)d * g.esz, a, b);
      split3_32(a, b, part);
      for (int p = 0; p < g.np; ++p) _mm512_storeu_si512((void*)(row + p * plane + d), part[p]);
    }
  }
}

// n fp8 values -> bf16, exactly (every e4m3 / e5m2 value, subnormals, NaN and inf included, is a bf16 value).
// e4m3: a normal s.eeee.mmm is s | (eeee.mmm << 4) + 120 << 7 in bf16 bits; the 8 subnormals (and zero) come
// from a word table; s.1111.111 is NaN.  e5m2: the byte is the high half of an fp16, widened exactly.
static inline void fp8_row_to_bf16(int ctype, const uint8_t* src, uint16_t* dst, int n) {
  if (ctype == 3) {
    const __m512i sub = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                         0x3c60, 0x3c40, 0x3c20, 0x3c00, 0x3bc0, 0x3b80, 0x3b00, 0);  // m * 2^-9
    for (int i = 0; i < n; i += 32) {
      const __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(src + i)));
      const __m512i em = _mm512_and_si512(w, _mm512_set1_epi16(0x7f));
      __m512i b = _mm512_add_epi16(_mm512_slli_epi16(em, 4), _mm512_set1_epi16(0x3c00));
      b = _mm512_mask_mov_epi16(b, _mm512_cmplt_epu16_mask(em, _mm512_set1_epi16(8)), _mm512_permutexvar_epi16(em, sub));
      b = _mm512_or_si512(b, _mm512_slli_epi16(_mm512_and_si512(w, _mm512_set1_epi16(0x80)), 8));
      b = _mm512_mask_mov_epi16(b, _mm512_cmpeq_epi16_mask(em, _mm512_set1_epi16(0x7f)), _mm512_set1_epi16(0x7fc0));
      _mm512_storeu_si512((void*)(dst + i), b);
    }
  } else {
    for (int i = 0; i < n; i += 16) {
      const __m256i h = _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(src + i))), 8);
      _mm256_storeu_si256((__m256i*)(dst + i), _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(_mm512_cvtph_ps(h)), 16)));
    }
  }
}

// The 16 rows of tokens t0 .. t0 + 15 of KV head kh as bf16: a pointer and a row stride in bytes.  bf16 rows
// are read in place; fp8 rows, and a tile that runs past L (zeros after L: unused slots may hold anything, NaN
// included), are converted or copied into `zbuf`.
static inline const uint16_t* tile_rows(const Geometry& g, const uint8_t* cache, int64_t s0, int64_t s1, int64_t s2,
                                        int t0, int kh, uint16_t* zbuf, int64_t& stride) {
  const int64_t blk = g.blocks[t0 / g.bs];
  const uint8_t* base = cache + (blk * s0 + (int64_t)(t0 % g.bs) * s1 + (int64_t)kh * s2) * g.esz;
  if (t0 + 16 <= g.L && g.esz == 2) { stride = s1 * 2; return (const uint16_t*)base; }
  for (int t = 0; t < 16; ++t) {
    uint16_t* row = zbuf + (size_t)t * g.D;
    const uint8_t* src = base + (int64_t)t * s1 * g.esz;
    if (t0 + t >= g.L) std::memset(row, 0, (size_t)g.D * 2);
    else if (g.esz == 2) std::memcpy(row, src, (size_t)g.D * 2);
    else fp8_row_to_bf16(g.ctype, src, row, g.D);
  }
  stride = (int64_t)g.D * 2;
  return zbuf;
}

// Row block B of KV head kh, heads kh * G + h0 .. + Gc, query rows B.r0 .. B.r1: packed query, positions,
// maxima and sums (a sink's logit is in the denominator from the start), zero accumulators.
static void prepare(const Geometry& g, Block& B, int kh, int h0, size_t qplane) {
  const int D = g.D, NC = D / 32, Gc = g.Gc;
  const int p_base = g.L - g.n;  // position of query row 0 (rows end-aligned with the keys)
  B.ncol = (B.r1 - B.r0) * Gc;
  B.last = g.causal ? std::min(g.L - 1, p_base + B.r1 - 1) : g.L - 1;
  B.first_masked = g.causal ? p_base + B.r0 + 1 : g.L;
  B.first = g.window ? std::max(0, p_base + B.r0 - g.window + 1) : 0;
  B.lo_max = g.window ? p_base + B.r1 - 1 - g.window + 1 : 0;
  // Q^T: column j = (row r0 + j / Gc, head kh * G + h0 + j % Gc); per 32 dims and 16 columns, a 16 x 16
  // transpose of 32-bit (dim pair) words; columns past ncol are zeros
  for (int h = 0; h < 2; ++h)
    for (int c = 0; c < NC; ++c) {
      if (g.np > 1) {  // float32 / fp16: the 32 dims of each column split into bf16 parts, each transposed
        __m512 r[3][16];
        for (int k = 0; k < 16; ++k) {
          const int j = 16 * h + k;
          __m512i part[3] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
          if (j < B.ncol) {
            const int64_t at = (int64_t)(B.r0 + j / Gc) * g.q_s0 + (int64_t)(kh * g.G + h0 + j % Gc) * g.q_s1 + 32 * c;
            __m512 a, b;
            load32(g, g.np == 3 ? (const void*)(g.qf + at) : (const void*)(g.q + at), a, b);
            split3_32(a, b, part);
          }
          for (int p = 0; p < 3; ++p) r[p][k] = _mm512_castsi512_ps(part[p]);
        }
        for (int p = 0; p < g.np; ++p) {
          transpose16(r[p]);
          for (int w = 0; w < 16; ++w) _mm512_store_ps((float*)(B.qv + p * qplane + (size_t)c * 512 + h * 256 + w * 16), r[p][w]);
        }
        continue;
      }
      __m512 r[16];
      for (int k = 0; k < 16; ++k) {
        const int j = 16 * h + k;
        r[k] = j < B.ncol ? _mm512_loadu_ps((const void*)(g.q + (int64_t)(B.r0 + j / Gc) * g.q_s0 +
                                                           (int64_t)(kh * g.G + h0 + j % Gc) * g.q_s1 + 32 * c))
                          : _mm512_setzero_ps();
      }
      transpose16(r);  // r[p]: dim pair p of the 16 columns
      for (int p = 0; p < 16; ++p) _mm512_store_ps((float*)(B.qv + (size_t)c * 512 + h * 256 + p * 16), r[p]);
    }
  for (int j = 0; j < NQ; ++j) {
    const int r = B.r0 + (j < B.ncol ? j / Gc : 0);
    B.pos[j] = g.causal ? (float)(p_base + r) : (float)(g.L - 1);
    B.lo[j] = g.window ? (float)(p_base + r - g.window + 1) : -1.0f;
    B.row_pos[j] = (float)(p_base + r);
    B.slope[j] = g.alibi && j < B.ncol ? g.alibi[kh * g.G + h0 + j % Gc] : 0.0f;
    const float sk = g.sinks && j < B.ncol ? g.sinks[kh * g.G + h0 + j % Gc] : -INFINITY;
    B.m[j] = sk;  // e^(sink - m) = 1 at m = sink
    B.l[j] = std::isinf(sk) ? 0.0f : 1.0f;
  }
  std::memset(B.o, 0, (size_t)NQ * D * 4);
}

// O^T[32 dims x 32 columns] += V^T . P^T for dim groups dg, dg + 1 and both column halves (four independent
// accumulators, tiles 0-3) over the chunk's 32-token units; K = 1: one dim group (D / 16 odd).
template <int K>
static inline void pv_dims(float* o, const uint16_t* pb, const uint16_t* vt, int nunit, int NDG, int dg, bool two) {
  _tile_loadd(0, o, 64);
  if (two) _tile_loadd(1, o + 256, 64);
  if (K > 1) { _tile_loadd(2, o + 512, 64); if (two) _tile_loadd(3, o + 768, 64); }
  for (int u = 0; u < nunit; ++u) {
    const uint16_t* a = vt + ((size_t)u * NDG + dg) * 512;
    _tile_loadd(4, a, 64);
    _tile_loadd(6, pb + (size_t)u * 512, 64);
    _tile_dpbf16ps(0, 4, 6);
    if (two) { _tile_loadd(7, pb + (size_t)(CHUNK / 32 + u) * 512, 64); _tile_dpbf16ps(1, 4, 7); }
    if (K > 1) {
      _tile_loadd(5, a + 512, 64);
      _tile_dpbf16ps(2, 5, 6);
      if (two) _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, o, 64);
  if (two) _tile_stored(1, o + 256, 64);
  if (K > 1) { _tile_stored(2, o + 512, 64); if (two) _tile_stored(3, o + 768, 64); }
}

// The same for np parts: O^T += sum over the part pairs (a, b), a + b < np, of V_a^T . P_b^T (vt / pb planes
// `vplane` / `pplane` elements apart).
template <int K>
static inline void pv_dims_np(float* o, const uint16_t* pb, const uint16_t* vt, int nunit, int NDG, int dg, bool two,
                              size_t vplane, size_t pplane, int np) {
  _tile_loadd(0, o, 64);
  if (two) _tile_loadd(1, o + 256, 64);
  if (K > 1) { _tile_loadd(2, o + 512, 64); if (two) _tile_loadd(3, o + 768, 64); }
  for (int u = 0; u < nunit; ++u)
    for (int a = 0; a < np; ++a) {
      const uint16_t* va = vt + a * vplane + ((size_t)u * NDG + dg) * 512;
      _tile_loadd(4, va, 64);
      if (K > 1) _tile_loadd(5, va + 512, 64);
      for (int b = 0; a + b < np; ++b) {
        const uint16_t* pv = pb + b * pplane + (size_t)u * 512;
        _tile_loadd(6, pv, 64);
        _tile_dpbf16ps(0, 4, 6);
        if (K > 1) _tile_dpbf16ps(2, 5, 6);
        if (two) {
          _tile_loadd(7, pv + (size_t)(CHUNK / 32) * 512, 64);
          _tile_dpbf16ps(1, 4, 7);
          if (K > 1) _tile_dpbf16ps(3, 5, 7);
        }
      }
    }
  _tile_stored(0, o, 64);
  if (two) _tile_stored(1, o + 256, 64);
  if (K > 1) { _tile_stored(2, o + 512, 64); if (two) _tile_stored(3, o + 768, 64); }
}

// float32 / fp16: S^T of one or two K tiles (k0, k1: part 0 of each; parts `kplane` elements apart, rows D apart)
// as the part-pair products (a + b < np), into s0 (rows NQ apart).  The small products go first, over all the dims, and the
// main one (x0 y0) last: the small ones are summed while the accumulator is still small, so their rounding
// errors stay small (256 random 128-dim dot products of magnitude up to 40: largest error 9.9e-6 with the
// products in pair order, 8.2e-6 in this one; torch's float32 sum 3.7e-6, the six products summed exactly 1.8e-7).
template <bool TWO>
static inline void qk_np(const uint32_t* qv, size_t qplane, const uint16_t* k0, const uint16_t* k1, size_t kplane, int D,
                         float* s0, int np) {
  _tile_zero(0); _tile_zero(1);
  if (TWO) { _tile_zero(2); _tile_zero(3); }
  for (int pass = 0; pass < 2; ++pass)
    for (int c = 0; c < D / 32; ++c)
      for (int a = 0; a < np; ++a) {
        if (pass == 1 && a > 0) break;
        _tile_loadd(4, k0 + a * kplane + 32 * c, D * 2);
        if (TWO) _tile_loadd(5, k1 + a * kplane + 32 * c, D * 2);
        for (int b = 0; a + b < np; ++b) {
          if ((pass == 0) == (a + b == 0)) continue;  // pass 0: the small products; pass 1: x0 y0
          _tile_loadd(6, qv + b * qplane + (size_t)c * 512, 64);
          _tile_loadd(7, qv + b * qplane + (size_t)c * 512 + 256, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          if (TWO) { _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7); }
        }
      }
  _tile_stored(0, s0, NQ * 4);
  _tile_stored(1, s0 + 16, NQ * 4);
  if (TWO) { _tile_stored(2, s0 + 16 * NQ, NQ * 4); _tile_stored(3, s0 + 16 * NQ + 16, NQ * 4); }
}

// fp8 caches: the chunk's K tiles converted once for every row block of the item (into S.kp); bf16: nothing.
static void convert_k(const Geometry& g, Scratch& S, int kh, int c0, int ntile) {
  if (g.np > 1) { split_rows(g, g.kc, g.k_s0, g.k_s1, g.k_s2, kh, c0, ntile, S.kp, S.kplane); return; }
  if (g.esz == 2) return;
  for (int i = 0; i < ntile; ++i) {
    int64_t ks;
    tile_rows(g, g.kc, g.k_s0, g.k_s1, g.k_s2, c0 + 16 * i, kh, S.kp + (size_t)16 * i * g.D, ks);
  }
}

// The chunk's V rows (tokens c0 .. c0 + 16 ntile - 1 of KV head kh) transposed for the A operand:
// vt[unit][dim group][dim][token] = V[32 unit + token][16 group + dim]; zeros past the tiles and past L.
// Built once per chunk for all the row blocks of an item: 16 x 16 transposes of 32-bit (dim pair) words,
// each word's two dims then split into their rows.
static void transpose_v_part(const Geometry& g, Scratch& S, int kh, int c0, int ntile, int part);

// (float32 / fp16: the rows split into parts first, each part transposed into its plane of vt.)
static void transpose_v(const Geometry& g, Scratch& S, int kh, int c0, int ntile) {
  if (g.np > 1) split_rows(g, g.vc, g.v_s0, g.v_s1, g.v_s2, kh, c0, ntile, S.vp, S.kplane);
  for (int p = 0; p < g.np; ++p) transpose_v_part(g, S, kh, c0, ntile, p);
}

static void transpose_v_part(const Geometry& g, Scratch& S, int kh, int c0, int ntile, int part) {
  const int D = g.D, NDG = D / 16, nunit = (ntile + 1) / 2;
  uint16_t* const vt = S.vt + part * S.kplane;
  for (int i = 0; i < 2 * nunit; ++i) {
    int64_t vs = (int64_t)D * 2;
    const uint16_t* v = i >= ntile ? nullptr
                        : g.np > 1 ? S.vp + part * S.kplane + (size_t)16 * i * D
                                    : tile_rows(g, g.vc, g.v_s0, g.v_s1, g.v_s2, c0 + 16 * i, kh, S.vz, vs);
    const int u = i / 2, half = 16 * (i % 2);
    for (int d = 0; d < D; d += 32) {  // 16 tokens x 32 dims = 16 x 16 words
      __m512 r[16];
      for (int t = 0; t < 16; ++t)
        r[t] = v ? _mm512_loadu_ps((const void*)((const char*)v + t * vs + 2 * d)) : _mm512_setzero_ps();
      transpose16(r);  // r[w]: word w (dims d + 2w, d + 2w + 1) of the 16 tokens
      for (int w = 0; w < 16; ++w) {
        const __m512i x = _mm512_castps_si512(r[w]);
        const int dim = d + 2 * w;  // rows dim and dim + 1 of group dim / 16
        uint16_t* row = vt + (((size_t)u * NDG + dim / 16) * 16 + dim % 16) * 32 + half;
        _mm256_store_si256((__m256i*)row, _mm512_cvtepi32_epi16(x));
        _mm256_store_si256((__m256i*)(row + 32), _mm512_cvtepi32_epi16(_mm512_srli_epi32(x, 16)));
      }
    }
  }
}

// Keys c0 .. c0 + CHUNK - 1 (up to B.last) for row block B: scores, online softmax, O += P . V.
static void chunk(const Geometry& g, Scratch& S, Block& B, int kh, int c0) {
  const int D = g.D, NC = D / 32, ncol = B.ncol;
  float* const m = B.m;
  float* const l = B.l;
  const __m512 ninf = _mm512_set1_ps(-INFINITY), vscale = _mm512_set1_ps(g.scale);
  const __m512 pos0 = _mm512_load_ps(B.pos), pos1 = _mm512_load_ps(B.pos + 16);
  const __m512 lo0 = _mm512_load_ps(B.lo), lo1 = _mm512_load_ps(B.lo + 16);
  const int ntile = std::min(CHUNK / 16, (B.last - c0) / 16 + 1);
  // scores of the chunk's tiles, two tiles at a time: four independent accumulators (a tile product waits
  // for the previous one into the same accumulator, several times its issue interval)
  for (int i = 0; i < ntile && g.np > 1; i += 2) {
    const uint16_t* k0 = S.kp + (size_t)16 * i * D;
    if (i + 1 < ntile) qk_np<true>(B.qv, S.qplane, k0, k0 + (size_t)16 * D, S.kplane, D, S.st + (size_t)16 * i * NQ, g.np);
    else qk_np<false>(B.qv, S.qplane, k0, nullptr, S.kplane, D, S.st + (size_t)16 * i * NQ, g.np);
  }
  for (int i = 0; i < ntile && g.np == 1; i += 2) {
    int64_t ks0, ks1 = (int64_t)D * 2;
    const uint16_t* k0 = g.esz == 2 ? tile_rows(g, g.kc, g.k_s0, g.k_s1, g.k_s2, c0 + 16 * i, kh, S.kz, ks0)
                                    : (ks0 = (int64_t)D * 2, S.kp + (size_t)16 * i * D);
    float* s0 = S.st + (size_t)16 * i * NQ;
    if (i + 1 < ntile) {
      const uint16_t* k1 = g.esz == 2 ? tile_rows(g, g.kc, g.k_s0, g.k_s1, g.k_s2, c0 + 16 * (i + 1), kh, S.kz, ks1)
                                      : S.kp + (size_t)16 * (i + 1) * D;
      _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
      for (int c = 0; c < NC; ++c) {
        _tile_loadd(6, B.qv + (size_t)c * 512, 64);
        _tile_loadd(7, B.qv + (size_t)c * 512 + 256, 64);
        _tile_loadd(4, k0 + 32 * c, ks0);
        _tile_loadd(5, k1 + 32 * c, ks1);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, s0, NQ * 4);
      _tile_stored(1, s0 + 16, NQ * 4);
      _tile_stored(2, s0 + 16 * NQ, NQ * 4);
      _tile_stored(3, s0 + 16 * NQ + 16, NQ * 4);
    } else {
      _tile_zero(0); _tile_zero(1);
      for (int c = 0; c < NC; ++c) {
        _tile_loadd(6, B.qv + (size_t)c * 512, 64);
        _tile_loadd(7, B.qv + (size_t)c * 512 + 256, 64);
        _tile_loadd(4, k0 + 32 * c, ks0);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
      }
      _tile_stored(0, s0, NQ * 4);
      _tile_stored(1, s0 + 16, NQ * 4);
    }
  }
  const int nt = 16 * ntile;
  // mask (keys past a column's position or past L: -inf, stored only in the rows that have one) and column
  // maxima of the raw scores; scaled once per chunk (scale > 0: the maximum of the scaled scores, exactly)
  // (soft-capping: every score becomes cap * tanh(scale s / cap), stored, and the scale below is 1)
  __m512 mx0 = ninf, mx1 = ninf;
  // (ALiBi: slope * (t - p) added after the scale and the cap, stored too)
  const bool capped = g.softcap > 0.0f, alibi = g.alibi != nullptr, transformed = capped || alibi;
  const __m512 vcap = _mm512_set1_ps(g.softcap), vinv = _mm512_set1_ps(capped ? 1.0f / g.softcap : 0.0f);
  const __m512 sl0 = _mm512_load_ps(B.slope), sl1 = _mm512_load_ps(B.slope + 16);
  const __m512 rp0 = _mm512_load_ps(B.row_pos), rp1 = _mm512_load_ps(B.row_pos + 16);
  for (int t = 0; t < nt; ++t) {
    float* row = S.st + (size_t)t * NQ;
    __m512 a = _mm512_load_ps(row), b = _mm512_load_ps(row + 16);
    const int tt = c0 + t;
    if (transformed) {
      a = _mm512_mul_ps(a, vscale);
      b = _mm512_mul_ps(b, vscale);
      if (capped) {
        a = softcap512(a, vcap, vinv);
        b = softcap512(b, vcap, vinv);
      }
      if (alibi) {
        const __m512 tv = _mm512_set1_ps((float)tt);
        a = _mm512_fmadd_ps(sl0, _mm512_sub_ps(tv, rp0), a);
        b = _mm512_fmadd_ps(sl1, _mm512_sub_ps(tv, rp1), b);
      }
      _mm512_store_ps(row, a);
      _mm512_store_ps(row + 16, b);
    }
    if (tt >= B.first_masked || tt >= g.L || tt < B.lo_max) {
      const __m512 tv = _mm512_set1_ps((float)tt);
      const __mmask16 all = tt >= g.L ? (__mmask16)0xFFFF : (__mmask16)0;
      a = _mm512_mask_mov_ps(a, _mm512_cmp_ps_mask(tv, pos0, _CMP_GT_OQ) | _mm512_cmp_ps_mask(tv, lo0, _CMP_LT_OQ) | all, ninf);
      b = _mm512_mask_mov_ps(b, _mm512_cmp_ps_mask(tv, pos1, _CMP_GT_OQ) | _mm512_cmp_ps_mask(tv, lo1, _CMP_LT_OQ) | all, ninf);
      _mm512_store_ps(row, a);
      _mm512_store_ps(row + 16, b);
    }
    mx0 = _mm512_max_ps(mx0, a);
    mx1 = _mm512_max_ps(mx1, b);
  }
  const float sc = transformed ? 1.0f : g.scale;  // the scale still to apply to the stored scores
  mx0 = _mm512_mul_ps(mx0, _mm512_set1_ps(sc));
  mx1 = _mm512_mul_ps(mx1, _mm512_set1_ps(sc));
  // new maxima; the accumulators of columns whose maximum rose are scaled by e^(old - new)
  __m512 mh[2];
  const __m512 mxs[2] = {mx0, mx1};
  for (int h = 0; h < 2; ++h) {
    const __m512 mo = _mm512_load_ps(m + 16 * h);
    const __m512 mn = _mm512_max_ps(mo, mxs[h]);
    const __mmask16 up = _mm512_cmp_ps_mask(mn, mo, _CMP_GT_OQ) & _mm512_cmp_ps_mask(mo, ninf, _CMP_NEQ_OQ);
    if (up && 16 * h < ncol) {  // O^T rows of this half: columns are lanes, one multiply per dim
      const __m512 d = _mm512_sub_ps(mo, mn);
      const __m512 corr = _mm512_mask_mov_ps(_mm512_set1_ps(1.0f), up,
          g.np == 3 ? exp2_acc512(_mm512_mul_ps(d, _mm512_set1_ps(1.44269504088896341f))) : exp512(d));
      _mm512_store_ps(l + 16 * h, _mm512_mul_ps(_mm512_load_ps(l + 16 * h), corr));
      for (int dg = 0; dg < D / 16; ++dg) {
        float* oh = B.o + ((size_t)dg * 2 + h) * 256;
        for (int r = 0; r < 16; ++r) _mm512_store_ps(oh + 16 * r, _mm512_mul_ps(_mm512_load_ps(oh + 16 * r), corr));
      }
    }
    _mm512_store_ps(m + 16 * h, mn);
    // a column that has seen only masked keys keeps -inf: its probabilities are 0, never NaN
    mh[h] = _mm512_mask_mov_ps(mn, _mm512_cmp_ps_mask(mn, ninf, _CMP_EQ_OQ), _mm512_setzero_ps());
  }
  // probabilities, their column sums, and P^T as the B tiles of O^T: token pairs interleaved (bf16)
  const __m512 vc1 = _mm512_set1_ps(sc * 1.44269504088896341f), nlog2e = _mm512_set1_ps(-1.44269504088896341f);
  const __m512 mh2[2] = {_mm512_mul_ps(mh[0], nlog2e), _mm512_mul_ps(mh[1], nlog2e)};
  const __m512i pair_idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                            23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  __m512 ls[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  const int nunit = (ntile + 1) / 2;
  for (int h = 0; h < 2 && 16 * h < ncol; ++h) {
    uint16_t* bh = S.pb + (size_t)h * (CHUNK / 32) * 512;
    __m512 lsum = _mm512_setzero_ps();  // (a local: ls[h] itself lived in memory, a store-to-load chain per token)
    for (int t = 0; t < 32 * nunit; t += 2) {  // token pairs; rows past the tiles are zeros
      __m512 p[2];
      for (int e = 0; e < 2; ++e) {
        if (t + e >= nt) { p[e] = _mm512_setzero_ps(); continue; }
        const __m512 sv = _mm512_load_ps(S.st + (size_t)(t + e) * NQ + 16 * h);
        // e^(scale s - m) as 2^(s scale log2(e) - m log2(e)): one FMA; a masked key (-inf) gets exactly 0
        // (exp2_512 clamps its argument), NaN stays NaN
        const __m512 arg = _mm512_fmadd_ps(sv, vc1, mh2[h]);
        p[e] = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(sv, ninf, _CMP_NEQ_UQ), g.np == 3 ? exp2_acc512(arg) : exp2_512(arg));
        lsum = _mm512_add_ps(lsum, p[e]);
      }
      uint16_t* dst = bh + (size_t)(t / 32) * 512 + (t % 32) / 2 * 32;
      if (g.np > 1) {  // float32 / fp16: the probabilities' parts, one plane each
        __m512i part[3];
        split3_32(p[0], p[1], part);
        for (int q = 0; q < g.np; ++q) _mm512_store_si512((void*)(dst + q * S.pplane), _mm512_permutexvar_epi16(pair_idx, part[q]));
        continue;
      }
      const __m512i x = (__m512i)_mm512_cvtne2ps_pbh(p[1], p[0]);  // [p0 x 16 | p1 x 16]
      _mm512_store_si512((void*)dst, _mm512_permutexvar_epi16(pair_idx, x));
    }
    ls[h] = lsum;
  }
  _mm512_store_ps(l, _mm512_add_ps(_mm512_load_ps(l), ls[0]));
  _mm512_store_ps(l + 16, _mm512_add_ps(_mm512_load_ps(l + 16), ls[1]));
  // O^T += V^T . P^T: per pair of dim groups, both column halves, the chunk's units in four accumulators
  const int NDG = D / 16;
  const bool two = ncol > 16;
  int dg = 0;
  if (g.np > 1) {
    for (; dg + 2 <= NDG; dg += 2) pv_dims_np<2>(B.o + (size_t)dg * 512, S.pb, S.vt, nunit, NDG, dg, two, S.kplane, S.pplane, g.np);
    for (; dg < NDG; ++dg) pv_dims_np<1>(B.o + (size_t)dg * 512, S.pb, S.vt, nunit, NDG, dg, two, S.kplane, S.pplane, g.np);
    return;
  }
  for (; dg + 2 <= NDG; dg += 2) pv_dims<2>(B.o + (size_t)dg * 512, S.pb, S.vt, nunit, NDG, dg, two);
  for (; dg < NDG; ++dg) pv_dims<1>(B.o + (size_t)dg * 512, S.pb, S.vt, nunit, NDG, dg, two);
}

// out = O / l for row block B (O^T transposed back 16 x 16 at a time), rounded to bf16 (fp16: to fp16; float32: as
// it is).
static void finish(const Geometry& g, const Block& B, int kh, int h0) {
  const int NDG = g.D / 16, Gc = g.Gc;
  for (int h = 0; h < 2 && 16 * h < B.ncol; ++h) {
    const __m512 inv = _mm512_div_ps(_mm512_set1_ps(g.vmul), _mm512_load_ps(B.l + 16 * h));  // v_scale / l
    const __m512 vi = _mm512_mask_mov_ps(_mm512_setzero_ps(), _mm512_cmp_ps_mask(_mm512_load_ps(B.l + 16 * h), _mm512_setzero_ps(), _CMP_GT_OQ), inv);
    alignas(64) float iv[16];
    _mm512_store_ps(iv, vi);
    for (int dg = 0; dg < NDG; ++dg) {
      __m512 r[16];
      const float* oh = B.o + ((size_t)dg * 2 + h) * 256;
      for (int d = 0; d < 16; ++d) r[d] = _mm512_load_ps(oh + 16 * d);
      transpose16(r);  // r[k]: column 16 h + k's 16 dims
      for (int k = 0; k < 16 && 16 * h + k < B.ncol; ++k) {
        const int j = 16 * h + k;
        const int64_t at = (int64_t)(B.r0 + j / Gc) * g.o_s0 + (int64_t)(kh * g.G + h0 + j % Gc) * g.o_s1 + 16 * dg;
        const __m512 x = _mm512_mul_ps(r[k], _mm512_set1_ps(iv[k]));
        if (g.outf) _mm512_storeu_ps(g.outf + at, x);
        else if (g.ctype == 5) _mm256_storeu_si256((__m256i*)(g.out + at), _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        else _mm256_storeu_si256((__m256i*)(g.out + at), bf16_rne16(x));
      }
    }
  }
  if (g.lse)  // log of the denominator: m + log(l) (the sink's term included); -inf where nothing was seen
    for (int j = 0; j < B.ncol; ++j)
      g.lse[(int64_t)(B.r0 + j / Gc) * g.lse_s0 + (int64_t)(kh * g.G + h0 + j % Gc) * g.lse_s1] =
          B.l[j] > 0.0f ? B.m[j] + std::log(B.l[j]) : -INFINITY;
}

// Prefetches (to L2) of K and V rows t0 .. t1 - 1 of KV head kh that lie below L: the next chunk's rows are
// fetched while the current one is computed (a chunk serves every row block of the item: plenty of time).
static inline void prefetch_rows(const Geometry& g, int kh, int t0, int t1) {
  t1 = std::min(t1, g.L);
  for (int t = t0; t < t1; ++t) {
    const int64_t blk = g.blocks[t / g.bs], off = t % g.bs;
    const char* k = (const char*)(g.kc + (blk * g.k_s0 + off * g.k_s1 + (int64_t)kh * g.k_s2) * g.esz);
    const char* v = (const char*)(g.vc + (blk * g.v_s0 + off * g.v_s1 + (int64_t)kh * g.v_s2) * g.esz);
    for (int o = 0; o < g.D * g.esz; o += 64) {
      prefetch_l2(k + o);
      prefetch_l2(v + o);
    }
  }
}

// This thread's scratch (grow-only, kept between calls).  Behind a function that is not inlined, so the hot loops
// hold a plain reference: a thread_local named in the parallel region made its uses __tls_get_addr calls (34 call
// sites in the inlined loops), and every call costs the loop its vector registers (all are caller-saved).  Same
// outputs, two builds alternating (session 20): bf16 8k 1.23-1.28x, 2k 1.21x, 512 1.09x; fp32 1.07-1.10x, fp16 1.14-1.16x.
__attribute__((noinline)) static Scratch& thread_scratch() {
  static thread_local Scratch S;
  return S;
}

// One item: KV head kh, heads kh * G + h0 .. + Gc, rows r0 .. r1 as up to RB row blocks of R rows.  The keys
// go chunk by chunk in the outer loop, so a chunk's K/V rows come from memory once for all the blocks.
static void item(const Geometry& g, Scratch& S, int kh, int h0, int r0, int r1) {
  int nb = 0;
  for (int r = r0; r < r1; r += g.R, ++nb) {
    S.blk[nb].r0 = r;
    S.blk[nb].r1 = std::min(r1, r + g.R);
    prepare(g, S.blk[nb], kh, h0, S.qplane);
  }
  const int last = S.blk[nb - 1].last;  // the last block's rows see the most keys
  // a window: chunks below every column's window are skipped (chunks stay at multiples of CHUNK, so the
  // result does not depend on the block size either)
  for (int c0 = S.blk[0].first / CHUNK * CHUNK; c0 <= last; c0 += CHUNK) {
    const int ntile = std::min(CHUNK / 16, (last - c0) / 16 + 1);
    convert_k(g, S, kh, c0, ntile);
    transpose_v(g, S, kh, c0, ntile);
    const int nxt = c0 + CHUNK, per = (CHUNK + nb - 1) / nb;  // the next chunk's rows, a slice per block
    for (int b = 0; b < nb; ++b) {
      if (nxt <= last) prefetch_rows(g, kh, nxt + b * per, std::min(nxt + (b + 1) * per, last + 1));
      if (c0 <= S.blk[b].last && c0 + CHUNK > S.blk[b].first) chunk(g, S, S.blk[b], kh, c0);
    }
  }
  for (int b = 0; b < nb; ++b) finish(g, S.blk[b], kh, h0);
}

}  // namespace
#endif

// The kernel's fp8 -> bf16 widening of n values (n a multiple of 32; ctype 3 e4m3, 4 e5m2), exported so that
// tests check it value by value against torch's conversion (a wrong subnormal hardly moves an attention output).
// Returns -1 where the kernel is not built.
extern "C" int attnsolve_fp8_to_bf16(int ctype, const uint8_t* src, uint16_t* dst, int n) {
#if defined(ATTNSOLVE_PREFILL_AMX)
  if ((ctype != 3 && ctype != 4) || n % 32) return -2;
  fp8_row_to_bf16(ctype, src, dst, n);
  return 0;
#else
  (void)ctype; (void)src; (void)dst; (void)n;
  return -1;
#endif
}

// 1 when this build has the AMX kernel and the CPU grants AMX to this process (the switch ATTNSOLVE_CPU_AMX=0
// says no), else 0: callers route work here only when it will run.
extern "C" int attnsolve_prefill_amx_ok() {
#if defined(ATTNSOLVE_PREFILL_AMX)
  return amx_permitted();
#else
  return 0;
#endif
}

// Causal (end-aligned: query row r sits at position L - n + r; with window > 0 it sees keys t > p - window) or
// full attention, scores soft-capped when softcap > 0 (cap * tanh(scale s / cap)), ALiBi slopes (slope[h] *
// (t - p) added, p the row's position) when alibi is given, of n bf16 query rows
// [n, H, D] over the first L tokens of one sequence's paged bf16 K/V ([blocks, bs, Hkv, D] with any
// strides; `blocks` the sequence's block-table row), optional per-head sink logits, into out [n, H, D] (and the
// log-sum-exp of each row and head into lse, float32, when given).  ctype says the cache type: 1 bf16, 3 / 4 fp8
// e4m3 / e5m2 (with k_scale, v_scale), all with a bf16 query and output; 2 float32 and 5 fp16: query, cache and
// output all of that type.
// Strides are in elements.  Returns 0; -1 when this build or CPU has no AMX (nothing written); -2 for an
// unsupported shape; 1 + i when blocks[i] is out of range (nothing written).
extern "C" int attnsolve_prefill_bf16(
    const void* q, int64_t q_s0, int64_t q_s1,
    const void* kc, int64_t k_s0, int64_t k_s1, int64_t k_s2,
    const void* vc, int64_t v_s0, int64_t v_s1, int64_t v_s2,
    const int32_t* blocks, int bs, int64_t num_blocks, int ctype, float k_scale, float v_scale,
    int n, int L, int H, int Hkv, int D, int causal, int window, float scale, float softcap, const float* sinks,
    const float* alibi, void* out, int64_t o_s0, int64_t o_s1, float* lse, int64_t lse_s0, int64_t lse_s1,
    int nthreads) {
#if defined(ATTNSOLVE_PREFILL_AMX)
  if (!amx_permitted()) return -1;
  if ((ctype < 1 || ctype > 5) || !(k_scale > 0.0f) || !std::isfinite(k_scale) || !std::isfinite(v_scale))
    return -2;
  if (D % 32 != 0 || D > 256 || Hkv <= 0 || H % Hkv != 0 || bs % 16 != 0 || n <= 0 || L < n || !(scale > 0.0f) ||
      window < 0 || (window > 0 && !causal) || !(softcap >= 0.0f) || std::isinf(softcap))
    return -2;
  const int nblk = (L + bs - 1) / bs;
  for (int b = 0; b < nblk; ++b)
    if (blocks[b] < 0 || blocks[b] >= num_blocks) return 1 + b;
  Geometry g;
  g.q = (const uint16_t*)q; g.q_s0 = q_s0; g.q_s1 = q_s1;
  g.kc = (const uint8_t*)kc; g.k_s0 = k_s0; g.k_s1 = k_s1; g.k_s2 = k_s2;
  g.vc = (const uint8_t*)vc; g.v_s0 = v_s0; g.v_s1 = v_s1; g.v_s2 = v_s2;
  g.ctype = ctype; g.esz = ctype == 1 || ctype == 5 ? 2 : ctype == 2 ? 4 : 1; g.vmul = v_scale;
  g.np = ctype == 2 ? 3 : ctype == 5 ? 2 : 1;
  g.qf = ctype == 2 ? (const float*)q : nullptr;
  g.outf = ctype == 2 ? (float*)out : nullptr;
  g.blocks = blocks; g.bs = bs;
  g.n = n; g.L = L; g.H = H; g.Hkv = Hkv; g.D = D; g.G = H / Hkv; g.causal = causal; g.window = window;
  g.Gc = std::min(g.G, NQ); g.R = NQ / g.Gc;
  g.scale = scale * k_scale; g.sinks = sinks; g.softcap = softcap;  // k_scale scales every score, v_scale every output
  g.out = (uint16_t*)out; g.o_s0 = o_s0; g.o_s1 = o_s1;
  g.alibi = alibi; g.lse = lse; g.lse_s0 = lse_s0; g.lse_s1 = lse_s1;
  // up to RB row blocks per item, fewer where that leaves under four items per thread
  const int hgroups = (g.G + g.Gc - 1) / g.Gc, blocks_per_head = (n + g.R - 1) / g.R;
  const int threads = std::max(1, nthreads);
  const int rbe = std::max(1, std::min(RB, Hkv * hgroups * blocks_per_head / (4 * threads)));
  const int rows_per_item = g.R * rbe, rblocks = (n + rows_per_item - 1) / rows_per_item;
  const int nitems = Hkv * hgroups * rblocks;
  // the costliest items (the last rows see the most keys) first, for the dynamic schedule
  #pragma omp parallel num_threads(threads)
  {
    Scratch& S = thread_scratch();  // a plain reference: a thread_local named in the loop costs a TLS lookup per use
    S.ensure(D);
    TileCfg cfg;
    std::memset(&cfg, 0, sizeof(cfg));
    cfg.palette_id = 1;
    for (int i = 0; i < 8; ++i) { cfg.rows[i] = 16; cfg.colsb[i] = 64; }  // every tile 16 x 64 bytes
    _tile_loadconfig(&cfg);
    #pragma omp for schedule(dynamic, 1)
    for (int it = 0; it < nitems; ++it) {
      const int rb = rblocks - 1 - it / (Hkv * hgroups), rest = it % (Hkv * hgroups);
      const int kh = rest / hgroups, hg = rest % hgroups;
      const int h0 = hg * g.Gc;
      Geometry gi = g;
      gi.Gc = std::min(g.Gc, g.G - h0);
      const int r0 = rb * rows_per_item;
      item(gi, S, kh, h0, r0, std::min(n, r0 + rows_per_item));
    }
    _tile_release();
  }
  return 0;
#else
  (void)q; (void)q_s0; (void)q_s1; (void)kc; (void)k_s0; (void)k_s1; (void)k_s2; (void)vc; (void)v_s0; (void)v_s1;
  (void)v_s2; (void)blocks; (void)bs; (void)num_blocks; (void)ctype; (void)k_scale; (void)v_scale; (void)n; (void)L; (void)H; (void)Hkv; (void)D; (void)causal; (void)window;
  (void)scale; (void)softcap; (void)sinks; (void)out; (void)o_s0; (void)o_s1; (void)nthreads; (void)alibi; (void)lse; (void)lse_s0; (void)lse_s1;
  return -1;
#endif
}
