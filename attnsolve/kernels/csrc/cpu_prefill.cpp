// attnsolve CPU prefill on AMX (bf16 query and bf16 KV cache): the query rows of one sequence against its
// paged K/V, read in place (16-token tiles straight from the blocks), causal work only up to each row's
// diagonal.  Why a kernel of our own: torch's CPU flash kernel, which the other prefill paths call, computes
// every 512-key block it touches whole (a 512-row causal prefill does twice the causal work) and needs the
// sequence's K/V gathered into contiguous memory first.
//
// Work item: one KV head and a block of query rows, whose (row, head) pairs (at most 32) are the columns:
//   S^T [16 tokens x 32 columns] = K tile [16 tokens x 32 dims] . Q^T (pair-interleaved, packed per item),
// two accumulator tiles per 16 tokens; an online softmax per column over chunks of up to 64 tokens (columns
// are vector lanes: no horizontal reductions); then O += P . V with V tiles loaded in place as the B operand
// and the pair structure met with zeros in the A tile (row r: (p, 0) pairs -> even dims of column r; row
// 8 + r: (0, p) -> odd dims), 8 columns x 32 dims per product.  Probabilities are rounded to bf16 for the
// P . V product (as torch's and vLLM's bf16 kernels do); everything else accumulates in float32.
// Tiles sit at absolute multiples of 16 tokens, so the result does not depend on the block size (block
// sizes that are not a multiple of 16 are gathered first by the caller and passed as one block).
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
  const __m512 f = _mm512_sub_ps(t, fi);
  __m512 p = _mm512_set1_ps(1.5353362e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3398874e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504109e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022652e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, fi);
}

struct Geometry {
  const uint16_t* q; int64_t q_s0, q_s1;
  const uint16_t* kc; int64_t k_s0, k_s1, k_s2;
  const uint16_t* vc; int64_t v_s0, v_s1, v_s2;
  const int32_t* blocks; int bs;
  int n, L, H, Hkv, D, G, Gc, R, causal;
  float scale;
  const float* sinks;
  uint16_t* out; int64_t o_s0, o_s1;
};

constexpr int RB = 16;     // row blocks per item (at most): each K/V chunk read from memory serves RB x NQ columns

// One row block's state over the keys: its packed query, positions, running maxima and sums, accumulators.
struct Block {
  int r0, r1, ncol, last, first_masked;  // rows, columns used, last key any column sees, first key one does not
  uint32_t* qv;   // [D/32][2 halves][16 dim pairs][16 columns]: Q^T, pair-interleaved
  float* o;       // [2 column halves][D/16][16 columns][16 dims]: O
  alignas(64) float pos[NQ], m[NQ], l[NQ];
};

struct Scratch {  // per thread, 64-byte aligned pieces of one buffer
  std::vector<uint8_t> raw;
  Block blk[RB];
  float* st;      // [CHUNK tokens][NQ]: S^T, then P^T
  uint16_t* pa;   // [2 column halves][CHUNK/32 units][16 columns][32 tokens]: A tiles of P . V (bf16)
  uint16_t* vv;   // [CHUNK/32 units][D/16][16 token pairs][16 dims][2]: the chunk's V, pair-interleaved
  uint16_t* kz;   // [16][D]: a partial tile's K rows, zeros past L
  uint16_t* vz;   // [16][D]: the same for V
  void ensure(int D) {
    const size_t qv = (size_t)D * NQ * 2, o = (size_t)NQ * D * 4;
    const size_t parts[] = {(size_t)CHUNK * NQ * 4, (size_t)2 * (CHUNK / 32) * 1024, (size_t)CHUNK * D * 2,
                            (size_t)16 * D * 2, (size_t)16 * D * 2};
    size_t total = 64 + RB * (qv + o);
    for (size_t p : parts) total += (p + 63) / 64 * 64;
    if (raw.size() < total) raw.assign(total, 0);
    uint8_t* at = (uint8_t*)(((uintptr_t)raw.data() + 63) & ~(uintptr_t)63);
    for (int b = 0; b < RB; ++b) {
      blk[b].qv = (uint32_t*)at; at += qv;
      blk[b].o = (float*)at; at += o;
    }
    void** dst[] = {(void**)&st, (void**)&pa, (void**)&vv, (void**)&kz, (void**)&vz};
    for (int i = 0; i < 5; ++i) { *dst[i] = at; at += (parts[i] + 63) / 64 * 64; }
  }
};

// The 16 rows of tokens t0 .. t0 + 15 of KV head kh: a pointer and a row stride in bytes.  A tile that runs
// past L is copied into `zbuf` with zeros after L (unused slots may hold anything, NaN included).
static inline const uint16_t* tile_rows(const Geometry& g, const uint16_t* cache, int64_t s0, int64_t s1, int64_t s2,
                                        int t0, int kh, uint16_t* zbuf, int64_t& stride) {
  const int64_t blk = g.blocks[t0 / g.bs];
  const uint16_t* base = cache + blk * s0 + (int64_t)(t0 % g.bs) * s1 + (int64_t)kh * s2;
  if (t0 + 16 <= g.L) { stride = s1 * 2; return base; }
  for (int t = 0; t < 16; ++t) {
    if (t0 + t < g.L) std::memcpy(zbuf + (size_t)t * g.D, base + (int64_t)t * s1, (size_t)g.D * 2);
    else std::memset(zbuf + (size_t)t * g.D, 0, (size_t)g.D * 2);
  }
  stride = (int64_t)g.D * 2;
  return zbuf;
}

// Row block B of KV head kh, heads kh * G + h0 .. + Gc, query rows B.r0 .. B.r1: packed query, positions,
// maxima and sums (a sink's logit is in the denominator from the start), zero accumulators.
static void prepare(const Geometry& g, Block& B, int kh, int h0) {
  const int D = g.D, NC = D / 32, Gc = g.Gc;
  const int p_base = g.L - g.n;  // position of query row 0 (rows end-aligned with the keys)
  B.ncol = (B.r1 - B.r0) * Gc;
  B.last = g.causal ? std::min(g.L - 1, p_base + B.r1 - 1) : g.L - 1;
  B.first_masked = g.causal ? p_base + B.r0 + 1 : g.L;
  // Q^T: column j = (row r0 + j / Gc, head kh * G + h0 + j % Gc); dim pairs moved as 32-bit words
  std::memset(B.qv, 0, (size_t)D * NQ * 2);
  for (int j = 0; j < B.ncol; ++j) {
    const uint32_t* src = (const uint32_t*)(g.q + (int64_t)(B.r0 + j / Gc) * g.q_s0 + (int64_t)(kh * g.G + h0 + j % Gc) * g.q_s1);
    uint32_t* dst = B.qv + (size_t)(j / 16) * 256 + (j % 16);
    for (int c = 0; c < NC; ++c)
      for (int p = 0; p < 16; ++p) dst[(size_t)c * 512 + p * 16] = src[c * 16 + p];
  }
  for (int j = 0; j < NQ; ++j) {
    const int r = B.r0 + (j < B.ncol ? j / Gc : 0);
    B.pos[j] = g.causal ? (float)(p_base + r) : (float)(g.L - 1);
    const float sk = g.sinks && j < B.ncol ? g.sinks[kh * g.G + h0 + j % Gc] : -INFINITY;
    B.m[j] = sk;  // e^(sink - m) = 1 at m = sink
    B.l[j] = std::isinf(sk) ? 0.0f : 1.0f;
  }
  std::memset(B.o, 0, (size_t)NQ * D * 4);
}

// O[16 columns x 16 K dims] += P . V for dim groups dg .. dg + K - 1 (K independent accumulators, tiles
// 0 .. K-1) over the chunk's 32-token units: one A tile (tile 6) per unit serves the K products.
template <int K>
static inline void pv_dims(float* o, const uint16_t* aq, const uint16_t* vv, int nunit, int NDG, int dg) {
  _tile_loadd(0, o, 64);
  if (K > 1) _tile_loadd(1, o + 256, 64);
  if (K > 2) { _tile_loadd(2, o + 512, 64); _tile_loadd(3, o + 768, 64); }
  for (int u = 0; u < nunit; ++u) {
    const uint16_t* v = vv + ((size_t)u * NDG + dg) * 512;
    _tile_loadd(6, aq + (size_t)u * 512, 64);
    _tile_loadd(4, v, 64);
    _tile_dpbf16ps(0, 6, 4);
    if (K > 1) { _tile_loadd(7, v + 512, 64); _tile_dpbf16ps(1, 6, 7); }
    if (K > 2) {
      _tile_loadd(4, v + 1024, 64); _tile_dpbf16ps(2, 6, 4);
      _tile_loadd(7, v + 1536, 64); _tile_dpbf16ps(3, 6, 7);
    }
  }
  _tile_stored(0, o, 64);
  if (K > 1) _tile_stored(1, o + 256, 64);
  if (K > 2) { _tile_stored(2, o + 512, 64); _tile_stored(3, o + 768, 64); }
}

// The chunk's V rows (tokens c0 .. c0 + 16 ntile - 1 of KV head kh) pair-interleaved for the B operand:
// vv[unit][dim group][pair p][dim][2] = (V[32 unit + 2p][dim], V[32 unit + 2p + 1][dim]); zeros past the
// tiles and past L.  Built once per chunk for all the row blocks of an item.
static void interleave_v(const Geometry& g, Scratch& S, int kh, int c0, int ntile) {
  const int D = g.D, NDG = D / 16, nunit = (ntile + 1) / 2;
  const __m512i lo_idx = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                          39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __m512i hi_idx = _mm512_set_epi16(63, 31, 62, 30, 61, 29, 60, 28, 59, 27, 58, 26, 57, 25, 56, 24,
                                          55, 23, 54, 22, 53, 21, 52, 20, 51, 19, 50, 18, 49, 17, 48, 16);
  for (int i = 0; i < 2 * nunit; ++i) {
    int64_t vs = 0;
    const uint16_t* vt = i < ntile ? tile_rows(g, g.vc, g.v_s0, g.v_s1, g.v_s2, c0 + 16 * i, kh, S.vz, vs) : nullptr;
    const int u = i / 2;
    for (int p = 0; p < 8; ++p) {  // token pairs (16 i + 2p, + 1)
      const uint16_t* a = vt ? (const uint16_t*)((const char*)vt + (2 * p) * vs) : nullptr;
      const uint16_t* b = vt ? (const uint16_t*)((const char*)vt + (2 * p + 1) * vs) : nullptr;
      const int pr = 8 * (i % 2) + p;  // pair row within the unit
      for (int d = 0; d < D; d += 32) {
        __m512i x = _mm512_setzero_si512(), y = _mm512_setzero_si512();
        if (vt) { x = _mm512_loadu_si512((const void*)(a + d)); y = _mm512_loadu_si512((const void*)(b + d)); }
        // dims d .. d + 15 and d + 16 .. d + 31: groups d / 16 and d / 16 + 1
        _mm512_store_si512((void*)(S.vv + (((size_t)u * NDG + d / 16) * 16 + pr) * 32), _mm512_permutex2var_epi16(x, lo_idx, y));
        _mm512_store_si512((void*)(S.vv + (((size_t)u * NDG + d / 16 + 1) * 16 + pr) * 32), _mm512_permutex2var_epi16(x, hi_idx, y));
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
  const int ntile = std::min(CHUNK / 16, (B.last - c0) / 16 + 1);
  // scores of the chunk's tiles, two tiles at a time: four independent accumulators (a tile product waits
  // for the previous one into the same accumulator, several times its issue interval)
  for (int i = 0; i < ntile; i += 2) {
    int64_t ks0, ks1 = 0;
    const uint16_t* k0 = tile_rows(g, g.kc, g.k_s0, g.k_s1, g.k_s2, c0 + 16 * i, kh, S.kz, ks0);
    float* s0 = S.st + (size_t)16 * i * NQ;
    if (i + 1 < ntile) {
      const uint16_t* k1 = tile_rows(g, g.kc, g.k_s0, g.k_s1, g.k_s2, c0 + 16 * (i + 1), kh, S.kz, ks1);
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
  __m512 mx0 = ninf, mx1 = ninf;
  for (int t = 0; t < nt; ++t) {
    float* row = S.st + (size_t)t * NQ;
    __m512 a = _mm512_load_ps(row), b = _mm512_load_ps(row + 16);
    const int tt = c0 + t;
    if (tt >= B.first_masked || tt >= g.L) {
      const __m512 tv = _mm512_set1_ps((float)tt);
      const __mmask16 all = tt >= g.L ? (__mmask16)0xFFFF : (__mmask16)0;
      a = _mm512_mask_mov_ps(a, _mm512_cmp_ps_mask(tv, pos0, _CMP_GT_OQ) | all, ninf);
      b = _mm512_mask_mov_ps(b, _mm512_cmp_ps_mask(tv, pos1, _CMP_GT_OQ) | all, ninf);
      _mm512_store_ps(row, a);
      _mm512_store_ps(row + 16, b);
    }
    mx0 = _mm512_max_ps(mx0, a);
    mx1 = _mm512_max_ps(mx1, b);
  }
  mx0 = _mm512_mul_ps(mx0, vscale);
  mx1 = _mm512_mul_ps(mx1, vscale);
  // new maxima; the accumulators of columns whose maximum rose are scaled by e^(old - new)
  __m512 mh[2];
  const __m512 mxs[2] = {mx0, mx1};
  for (int h = 0; h < 2; ++h) {
    const __m512 mo = _mm512_load_ps(m + 16 * h);
    const __m512 mn = _mm512_max_ps(mo, mxs[h]);
    const __mmask16 up = _mm512_cmp_ps_mask(mn, mo, _CMP_GT_OQ) & _mm512_cmp_ps_mask(mo, ninf, _CMP_NEQ_OQ);
    if (up) {
      alignas(64) float corr[16];
      _mm512_store_ps(corr, exp512(_mm512_sub_ps(mo, mn)));
      _mm512_store_ps(l + 16 * h, _mm512_mask_mul_ps(_mm512_load_ps(l + 16 * h), up, _mm512_load_ps(l + 16 * h), _mm512_load_ps(corr)));
      for (unsigned r = up; r; r &= r - 1) {
        const int j = 16 * h + __builtin_ctz(r);
        if (j >= ncol) continue;
        const __m512 vc = _mm512_set1_ps(corr[j - 16 * h]);
        float* oj = B.o + (size_t)(j / 16) * (D / 16) * 256 + (j % 16) * 16;
        for (int dg = 0; dg < D / 16; ++dg) _mm512_store_ps(oj + (size_t)dg * 256, _mm512_mul_ps(_mm512_load_ps(oj + (size_t)dg * 256), vc));
      }
    }
    _mm512_store_ps(m + 16 * h, mn);
    // a column that has seen only masked keys keeps -inf: its probabilities are 0, never NaN
    mh[h] = _mm512_mask_mov_ps(mn, _mm512_cmp_ps_mask(mn, ninf, _CMP_EQ_OQ), _mm512_setzero_ps());
  }
  // probabilities, their column sums, and the A tiles of P . V (transposed 16 x 16 blocks, bf16)
  const __m512 vc1 = _mm512_set1_ps(g.scale * 1.44269504088896341f), nlog2e = _mm512_set1_ps(-1.44269504088896341f);
  const __m512 mh2[2] = {_mm512_mul_ps(mh[0], nlog2e), _mm512_mul_ps(mh[1], nlog2e)};
  __m512 ls[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  const int nunit = (ntile + 1) / 2;
  for (int i = 0; i < ntile; ++i) {
    for (int h = 0; h < 2 && 16 * h < ncol; ++h) {
      __m512 r[16];
      for (int t = 0; t < 16; ++t) {
        const __m512 sv = _mm512_load_ps(S.st + (size_t)(16 * i + t) * NQ + 16 * h);
        // e^(scale s - m) as 2^(s scale log2(e) - m log2(e)): one FMA; a masked key (-inf) gets exactly 0
        // (exp2_512 clamps its argument), NaN stays NaN
        r[t] = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(sv, ninf, _CMP_NEQ_UQ), exp2_512(_mm512_fmadd_ps(sv, vc1, mh2[h])));
        ls[h] = _mm512_add_ps(ls[h], r[t]);
      }
      transpose16(r);  // r[k]: column 16 h + k over the tile's 16 tokens
      uint16_t* a = S.pa + ((size_t)h * (CHUNK / 32) + i / 2) * 512 + 16 * (i % 2);
      for (int k = 0; k < 16; ++k) _mm256_store_si256((__m256i*)(a + 32 * k), (__m256i)_mm512_cvtneps_pbh(r[k]));
      if (i + 1 == ntile && (i % 2) == 0)  // an odd last tile: its unit's second half is zeros
        for (int k = 0; k < 16; ++k) _mm256_store_si256((__m256i*)(a + 32 * k + 16), _mm256_setzero_si256());
    }
  }
  _mm512_store_ps(l, _mm512_add_ps(_mm512_load_ps(l), ls[0]));
  _mm512_store_ps(l + 16, _mm512_add_ps(_mm512_load_ps(l + 16), ls[1]));
  // O += P . V: per column half and 16 dims, the chunk's units accumulate in one C tile
  const int NDG = D / 16;
  for (int h = 0; h < 2 && 16 * h < ncol; ++h) {
    const uint16_t* aq = S.pa + (size_t)h * (CHUNK / 32) * 512;
    float* oh = B.o + (size_t)h * NDG * 256;
    int dg = 0;
    for (; dg + 4 <= NDG; dg += 4) pv_dims<4>(oh + (size_t)dg * 256, aq, S.vv, nunit, NDG, dg);
    for (; dg + 2 <= NDG; dg += 2) pv_dims<2>(oh + (size_t)dg * 256, aq, S.vv, nunit, NDG, dg);
    for (; dg < NDG; ++dg) pv_dims<1>(oh + (size_t)dg * 256, aq, S.vv, nunit, NDG, dg);
  }
}

// out = O / l for row block B, rounded to bf16.
static void finish(const Geometry& g, const Block& B, int kh, int h0) {
  const int NDG = g.D / 16, Gc = g.Gc;
  for (int j = 0; j < B.ncol; ++j) {
    const __m512 vi = _mm512_set1_ps(B.l[j] > 0.0f ? 1.0f / B.l[j] : 0.0f);
    uint16_t* dst = g.out + (int64_t)(B.r0 + j / Gc) * g.o_s0 + (int64_t)(kh * g.G + h0 + j % Gc) * g.o_s1;
    const float* oj = B.o + (size_t)(j / 16) * NDG * 256 + (j % 16) * 16;
    for (int dg = 0; dg < NDG; ++dg)
      _mm256_storeu_si256((__m256i*)(dst + 16 * dg), bf16_rne16(_mm512_mul_ps(_mm512_load_ps(oj + (size_t)dg * 256), vi)));
  }
}

// Prefetches (to L2) of K and V rows t0 .. t1 - 1 of KV head kh that lie below L: the next chunk's rows are
// fetched while the current one is computed (a chunk serves every row block of the item: plenty of time).
static inline void prefetch_rows(const Geometry& g, int kh, int t0, int t1) {
  t1 = std::min(t1, g.L);
  for (int t = t0; t < t1; ++t) {
    const int64_t blk = g.blocks[t / g.bs], off = t % g.bs;
    const char* k = (const char*)(g.kc + blk * g.k_s0 + off * g.k_s1 + (int64_t)kh * g.k_s2);
    const char* v = (const char*)(g.vc + blk * g.v_s0 + off * g.v_s1 + (int64_t)kh * g.v_s2);
    for (int o = 0; o < g.D * 2; o += 64) {
      _mm_prefetch(k + o, _MM_HINT_T1);
      _mm_prefetch(v + o, _MM_HINT_T1);
    }
  }
}

// One item: KV head kh, heads kh * G + h0 .. + Gc, rows r0 .. r1 as up to RB row blocks of R rows.  The keys
// go chunk by chunk in the outer loop, so a chunk's K/V rows come from memory once for all the blocks.
static void item(const Geometry& g, Scratch& S, int kh, int h0, int r0, int r1) {
  int nb = 0;
  for (int r = r0; r < r1; r += g.R, ++nb) {
    S.blk[nb].r0 = r;
    S.blk[nb].r1 = std::min(r1, r + g.R);
    prepare(g, S.blk[nb], kh, h0);
  }
  const int last = S.blk[nb - 1].last;  // the last block's rows see the most keys
  for (int c0 = 0; c0 <= last; c0 += CHUNK) {
    interleave_v(g, S, kh, c0, std::min(CHUNK / 16, (last - c0) / 16 + 1));
    const int nxt = c0 + CHUNK, per = (CHUNK + nb - 1) / nb;  // the next chunk's rows, a slice per block
    for (int b = 0; b < nb; ++b) {
      if (nxt <= last) prefetch_rows(g, kh, nxt + b * per, std::min(nxt + (b + 1) * per, last + 1));
      if (c0 <= S.blk[b].last) chunk(g, S, S.blk[b], kh, c0);
    }
  }
  for (int b = 0; b < nb; ++b) finish(g, S.blk[b], kh, h0);
}

}  // namespace
#endif

// Causal (end-aligned: query row r sits at position L - n + r) or full attention of n bf16 query rows
// [n, H, D] over the first L tokens of one sequence's paged bf16 K/V ([blocks, bs, Hkv, D] with any
// strides; `blocks` the sequence's block-table row), optional per-head sink logits, into out [n, H, D].
// Strides are in elements.  Returns 0; -1 when this build or CPU has no AMX (nothing written); -2 for an
// unsupported shape; 1 + i when blocks[i] is out of range (nothing written).
extern "C" int attnsolve_prefill_bf16(
    const void* q, int64_t q_s0, int64_t q_s1,
    const void* kc, int64_t k_s0, int64_t k_s1, int64_t k_s2,
    const void* vc, int64_t v_s0, int64_t v_s1, int64_t v_s2,
    const int32_t* blocks, int bs, int64_t num_blocks,
    int n, int L, int H, int Hkv, int D, int causal, float scale, const float* sinks,
    void* out, int64_t o_s0, int64_t o_s1, int nthreads) {
#if defined(ATTNSOLVE_PREFILL_AMX)
  if (!amx_permitted()) return -1;
  if (D % 32 != 0 || D > 256 || Hkv <= 0 || H % Hkv != 0 || bs % 16 != 0 || n <= 0 || L < n) return -2;
  const int nblk = (L + bs - 1) / bs;
  for (int b = 0; b < nblk; ++b)
    if (blocks[b] < 0 || blocks[b] >= num_blocks) return 1 + b;
  Geometry g;
  g.q = (const uint16_t*)q; g.q_s0 = q_s0; g.q_s1 = q_s1;
  g.kc = (const uint16_t*)kc; g.k_s0 = k_s0; g.k_s1 = k_s1; g.k_s2 = k_s2;
  g.vc = (const uint16_t*)vc; g.v_s0 = v_s0; g.v_s1 = v_s1; g.v_s2 = v_s2;
  g.blocks = blocks; g.bs = bs;
  g.n = n; g.L = L; g.H = H; g.Hkv = Hkv; g.D = D; g.G = H / Hkv; g.causal = causal;
  g.Gc = std::min(g.G, NQ); g.R = NQ / g.Gc;
  g.scale = scale; g.sinks = sinks;
  g.out = (uint16_t*)out; g.o_s0 = o_s0; g.o_s1 = o_s1;
  // up to RB row blocks per item, fewer where that leaves under four items per thread
  const int hgroups = (g.G + g.Gc - 1) / g.Gc, blocks_per_head = (n + g.R - 1) / g.R;
  const int threads = std::max(1, nthreads);
  const int rbe = std::max(1, std::min(RB, Hkv * hgroups * blocks_per_head / (4 * threads)));
  const int rows_per_item = g.R * rbe, rblocks = (n + rows_per_item - 1) / rows_per_item;
  const int nitems = Hkv * hgroups * rblocks;
  // the costliest items (the last rows see the most keys) first, for the dynamic schedule
  #pragma omp parallel num_threads(threads)
  {
    thread_local Scratch S;
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
  (void)v_s2; (void)blocks; (void)bs; (void)num_blocks; (void)n; (void)L; (void)H; (void)Hkv; (void)D; (void)causal;
  (void)scale; (void)sinks; (void)out; (void)o_s0; (void)o_s1; (void)nthreads;
  return -1;
#endif
}
