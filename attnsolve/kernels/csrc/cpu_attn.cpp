// attnsolve CPU paged attention (decode / short query rows): one online-softmax pass over
// the paged KV cache, split over (row, key chunk) work items, merged with log-sum-exp.
// Plain C ABI (loaded with ctypes): no torch headers, so it compiles in about a second.
#include <cstdint>
#include <cstring>
#include <cmath>
#include <vector>
#include <algorithm>
#include <omp.h>
#include <cstdlib>
#include "cpu_common.h"
#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace {

enum DType { F32 = 0, BF16 = 1, F16 = 2, E4M3 = 3, E5M2 = 4 };

static float g_lut_e4m3[256];
static float g_lut_e5m2[256];
static bool g_lut_ready = false;

static float e4m3_to_f32(uint8_t x) {
  int s = x >> 7, e = (x >> 3) & 0xF, m = x & 7;
  float v;
  if (e == 0xF && m == 7) return NAN;
  if (e == 0) v = std::ldexp((float)m, -9);          // subnormal: m/8 * 2^-6
  else v = std::ldexp(1.0f + m / 8.0f, e - 7);
  return s ? -v : v;
}
static float e5m2_to_f32(uint8_t x) {
  int s = x >> 7, e = (x >> 2) & 0x1F, m = x & 3;
  float v;
  if (e == 0x1F) v = m ? NAN : INFINITY;
  else if (e == 0) v = std::ldexp((float)m, -16);     // m/4 * 2^-14
  else v = std::ldexp(1.0f + m / 4.0f, e - 15);
  return s ? -v : v;
}
static void init_luts() {
  if (g_lut_ready) return;
  for (int i = 0; i < 256; ++i) { g_lut_e4m3[i] = e4m3_to_f32((uint8_t)i); g_lut_e5m2[i] = e5m2_to_f32((uint8_t)i); }
  g_lut_ready = true;
}

// Load n elements of `type` at p into float dst (with scale).
static inline void load_row(int type, const void* p, float* __restrict dst, int n, float sc) {
  switch (type) {
    case F32: { const float* s = (const float*)p;
      #pragma omp simd
      for (int i = 0; i < n; ++i) dst[i] = s[i] * sc; break; }
    case BF16: { const uint16_t* s = (const uint16_t*)p;
      #pragma omp simd
      for (int i = 0; i < n; ++i) { uint32_t u = ((uint32_t)s[i]) << 16; float f; std::memcpy(&f, &u, 4); dst[i] = f * sc; }
      break; }
    case F16: {
#if defined(__F16C__)
      // F16C's vcvtph2ps: without AVX512-FP16 (AMD Zen 4, Intel before Sapphire Rapids) GCC 12 turns a
      // (float)_Float16 into a call to libgcc's soft-float __extendhfsf2 per element, which made an fp16
      // decode 18x slower than fp32 on a Zen 4 (0.3 GB/s, 43% of its samples in that call)
      const uint16_t* s = (const uint16_t*)p;
      int i = 0;
      const __m256 v8 = _mm256_set1_ps(sc);
      for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(s + i))), v8));
      for (; i < n; ++i) dst[i] = _cvtsh_ss(s[i]) * sc;
#else
      const _Float16* s = (const _Float16*)p;
      #pragma omp simd
      for (int i = 0; i < n; ++i) dst[i] = (float)s[i] * sc;
#endif
      break; }
    case E4M3: { const uint8_t* s = (const uint8_t*)p;
      for (int i = 0; i < n; ++i) dst[i] = g_lut_e4m3[s[i]] * sc; break; }
    case E5M2: { const uint8_t* s = (const uint8_t*)p;
      for (int i = 0; i < n; ++i) dst[i] = g_lut_e5m2[s[i]] * sc; break; }
  }
}

// Row ``off`` (in elements) of a block as float32: in place for an unscaled float32 cache, else converted
// into ``buf``.
static inline const float* row_f32(int type, const char* block, int64_t off, int esz, float* buf, int n, float sc) {
  if (type == F32 && sc == 1.0f) return (const float*)(block + off * 4);
  load_row(type, block + off * esz, buf, n, sc);
  return buf;
}

static inline void store_row(int type, void* p, const float* src, int n) {
  switch (type) {
    case F32: std::memcpy(p, src, sizeof(float) * n); break;
    case BF16: { uint16_t* d = (uint16_t*)p;
      int i = 0;
#if defined(__AVX512F__)
      for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i*)(d + i), bf16_rne16(_mm512_loadu_ps(src + i)));
#endif
      for (; i < n; ++i) {  // round to nearest even, NaN kept
        uint32_t u; std::memcpy(&u, &src[i], 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) d[i] = 0x7fc0;
        else d[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
      } break; }
    case F16: {
#if defined(__F16C__)
      // round to nearest even, as (_Float16) does, without libgcc's per-element __truncsfhf2 (see load_row)
      uint16_t* d = (uint16_t*)p;
      int i = 0;
      for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i*)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
      for (; i < n; ++i) d[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
#else
      _Float16* d = (_Float16*)p;
      for (int i = 0; i < n; ++i) d[i] = (_Float16)src[i];
#endif
      break; }
  }
}

static inline int esize(int type) { return type == F32 ? 4 : (type == BF16 || type == F16) ? 2 : 1; }
// Position r of a 64-value group converted in "lane order" (fp8_to_bf16 with lane = true) holds value:
static inline int fp8_lane_elem(int r) { return r < 32 ? 16 * (r / 8) + r % 8 : 16 * ((r - 32) / 8) + 8 + (r - 32) % 8; }
struct Fp8Lane { int v[64]; Fp8Lane() { for (int r = 0; r < 64; ++r) v[r] = fp8_lane_elem(r); } int operator[](int r) const { return v[r]; } };
static const Fp8Lane g_fp8_lane;  // fp8_lane_elem as a table (the per-item loops use it)



#if defined(__AVX512F__)
#include <immintrin.h>
#define ATTNSOLVE_AVX512 1
#if defined(__AMX_BF16__) && defined(__AMX_TILE__) && defined(__AVX512BF16__) && defined(__linux__)
// AMX for the bf16 QK products: S^T[16 tokens x G heads] = K[16 x 32 dims] . q^T per 32-dim chunk,
// with K tiles loaded straight from the paged block (row stride = token stride) and q^T packed
// once per work item in the pair-interleaved (VNNI) layout the instruction wants.
// And for the PV product (flag 64, up to 16 query heads per KV head): V rows are loaded in place as
// the B tile (16 tokens x 32 dims, no interleave); the pair structure of the instruction is met with
// zeros in the A tile instead: row g = (p[t][g], 0) pairs gives head g's even dims, row G + g =
// (0, p[t][g]) its odd dims, so one 2G x 16 x 32 product covers 16 tokens x 32 dims for all G heads
// (two products of G rows from 9 heads up; half the products are zeros, which AMX has ample room for).  Measured on the AMX box (one
// thread, bf16): 1.1 to 1.4x the vdpbf16ps PV in cache, 1.1 to 1.2x out of cache.
// fp8 caches take both products too, on the per-tile bf16 conversion (X.cbuf).
#define ATTNSOLVE_AMX 1
#include <sys/syscall.h>
#include <unistd.h>
#include <cstdlib>
// fp16 on AMX-BF16 (flag 128): every fp16 value x is exactly hi + lo with hi = x truncated to bf16 and lo =
// x - hi (x has 11 significant bits, lo at most 3; both are normal bf16 values, which matters because AMX
// reads bf16 denormals as zero).  Each K or V element becomes one 32-bit (hi, lo) bf16 pair, so the
// instruction's pair sum gives hi * b + lo * b = x * b when the other operand holds (b, b): the query as
// (qh, qh) and (ql, ql) pairs (exact, two products), the probabilities as three such terms (ph + pl + p3
// holds a float32's 24 bits; three products).  inf keeps lo = 0 (inf - inf would be NaN).
static inline void f16_split(const uint16_t* src, uint32_t* dst, int n) {  // n: a multiple of 16
  // hi = x truncated to bf16 (exact bits), lo = x - hi (exact, at most 3 significant bits); the pair's words are the
  // high halves of x and lo, picked by one word permute
  const __m512i idx = _mm512_set_epi16(63, 31, 61, 29, 59, 27, 57, 25, 55, 23, 53, 21, 51, 19, 49, 17,
                                       47, 15, 45, 13, 43, 11, 41, 9, 39, 7, 37, 5, 35, 3, 33, 1);
  const __m512 hm = _mm512_castsi512_ps(_mm512_set1_epi32((int)0xFFFF0000u));
  for (int i = 0; i < n; i += 16) {
    const __m512 x = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(src + i)));
    const __m512 lo = _mm512_maskz_sub_ps(~_mm512_fpclass_ps_mask(x, 0x18), x, _mm512_and_ps(x, hm));
    _mm512_storeu_si512((void*)(dst + i), _mm512_permutex2var_epi16(_mm512_castps_si512(x), idx, _mm512_castps_si512(lo)));
  }
}
// (hi, hi) and (lo, lo) bf16 pairs of 16 floats (hi = bf16_rne(x), lo = bf16_rne(x - hi)); with p3, the third
// term (x - hi - lo rounded: a float32 x is then held to its 24 bits, the probabilities of the PV product)
static inline void split_pairs(__m512 x, __m512i& ph, __m512i& pl, __m512i* p3 = nullptr) {
  const __m512i hw = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x));
  const __m512 lo = _mm512_maskz_sub_ps(~_mm512_fpclass_ps_mask(x, 0x18), x, _mm512_castsi512_ps(_mm512_slli_epi32(hw, 16)));
  const __m512i lw = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(lo));
  ph = _mm512_or_si512(hw, _mm512_slli_epi32(hw, 16));
  pl = _mm512_or_si512(lw, _mm512_slli_epi32(lw, 16));
  if (p3) {
    const __m512i tw = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(lo, _mm512_castsi512_ps(_mm512_slli_epi32(lw, 16)))));
    *p3 = _mm512_or_si512(tw, _mm512_slli_epi32(tw, 16));
  }
}
#endif
// Convert one row of ND*16 elements to float (scaled) into dst.
template <int ND>
static inline void conv_row(int type, const void* p, float* __restrict dst, float sc) {
  if (sc == 1.0f && type == F16) {  // per-tensor scales are folded out of the loops: no multiply
    const uint16_t* s = (const uint16_t*)p;
    for (int c = 0; c < ND; ++c) _mm512_storeu_ps(dst + 16 * c, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(s + 16 * c))));
    return;
  }
  if (sc == 1.0f && type == BF16) {  // the common case: no multiply
    const uint16_t* s = (const uint16_t*)p;
    for (int c = 0; c < ND; ++c) {
      const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(s + 16 * c)));
      _mm512_storeu_ps(dst + 16 * c, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
    return;
  }
  const __m512 vs = _mm512_set1_ps(sc);
  if (type == F32) {
    const float* s = (const float*)p;
    for (int c = 0; c < ND; ++c) _mm512_storeu_ps(dst + 16 * c, _mm512_mul_ps(_mm512_loadu_ps(s + 16 * c), vs));
  } else if (type == BF16) {
    const uint16_t* s = (const uint16_t*)p;
    for (int c = 0; c < ND; ++c) {
      __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(s + 16 * c)));
      _mm512_storeu_ps(dst + 16 * c, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(w, 16)), vs));
    }
  } else if (type == F16) {
    const uint16_t* s = (const uint16_t*)p;
    for (int c = 0; c < ND; ++c)
      _mm512_storeu_ps(dst + 16 * c, _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(s + 16 * c))), vs));
  } else {
    load_row(type, p, dst, ND * 16, sc);
  }
}



// Software prefetches (hint T1) issued one or two per step of a PV loop instead of in one burst: a
// burst of 64 to 512 prefetches before the loop measured 1.2 to 1.4x slower out of cache here (one
// thread, shuffled 32 KiB blocks; a pure read of such blocks: 13.6 GB/s with a per-block burst,
// 17.4 with prefetches interleaved with the reads).
// A cursor over the lines rows[t] + h * hstride + o (t < n, h < nh, o < len in 64-byte steps), in that
// order; KV heads that are contiguous in a token row (hstride == len) are one run.  It replaced a list of
// up to 640 addresses built per tile and step: building and walking that list cost a third of the
// in-cache decode time (bf16, 32/8 heads of 128, one thread: 25 ns per token and KV head with it, 17
// without prefetches at all).
struct PfList {
  const char* const* rows = nullptr;
  const char* base = nullptr;  // head-major walk (rows == nullptr): run t starts at base + t * bstride
  int64_t bstride = 0;
  const char* cur = nullptr;  // rows[t] + h * hstride
  int n = 0, t = 0, nh = 1, h = 0;
  int64_t hstride = 0, len = 0, o = 0;
  inline void init(const char* const* r, int count, int heads, int64_t hs, int64_t bytes) {
    rows = r; n = count; t = 0; h = 0; o = 0; hstride = hs; len = bytes; nh = heads;
    if (hs == bytes || heads == 1) { len = bytes * heads; nh = 1; }
    else if (count > 1 && heads_apart(r, count, bytes)) {
      // each KV head's rows of these tokens are one run (vLLM's CPU layout, [blocks, Hkv, bs, D], within a
      // block): one run per head, in address order, instead of a token's heads one after another (scattered
      // lines that the hardware prefetchers do not follow: these prefetches gained nothing in that layout)
      base = r[0]; bstride = hs; rows = nullptr; n = heads; nh = 1; len = bytes * count;
    }
    if (len <= 0) n = 0;
    cur = n > 0 ? row(0) : nullptr;
  }
  static inline bool heads_apart(const char* const* r, int count, int64_t bytes) {
    for (int t = 1; t < count; ++t)
      if (r[t] != r[0] + t * bytes) return false;
    return true;
  }
  inline const char* row(int i) const { return rows ? rows[i] : base + i * bstride; }
  inline int lines() const { return n * nh * (int)((len + 63) / 64); }
  inline void next_run() {
    o = 0;
    if (++h == nh) { h = 0; ++t; }
    if (t < n) cur = row(t) + h * hstride;
  }
  inline void step() {
    if (t >= n) return;
    prefetch_l2(cur + o);
    if ((o += 64) >= len) next_run();
  }
  // the next k lines, a tight loop per run of a row (the per-line bookkeeping, not the prefetch
  // instructions, was what the list cost)
  inline void steps(int k) {
    while (k > 0 && t < n) {
      const int64_t end = std::min(len, o + 64 * (int64_t)k);
      k -= (int)((end - o + 63) / 64);
      for (; o < end; o += 64) prefetch_l2(cur + o);
      if (o >= len) next_run();
    }
  }
  inline void rest() { while (t < n) steps(1 << 20); }
};

#if defined(__AVX512BF16__)
// PV over token pairs with bf16 dot products: acc[j] += p[t][j] v[t] + p[t+1][j] v[t+1]; V rows of a pair
// interleaved with unpacklo/hi_epi16, probabilities rounded to bf16 (as vLLM's CPU kernels do for their
// bf16 PV product), pp[(t/2) * ldp + j] = the (p[t], p[t+1]) bf16 pair of head j.  Accumulator layout
// per 32-wide chunk: [lo 16 | hi 16], lo element e = dim 8(e/4) + e%4, hi element e = dim 8(e/4) + 4 + e%4
// (undone once per work item).
template <int NH, int ND>
static inline void pv_dp(PfList& pf, const char* const* vr, int nt, const uint32_t* pp, int ldp, float* acc) {
  constexpr int D = ND * 16;
  const int full = nt & ~1;  // whole token pairs; an odd last token pairs with zeros
  for (int c = 0; c < ND / 2; ++c) {
    __m512 lo[NH], hi[NH];
    for (int j = 0; j < NH; ++j) {
      lo[j] = _mm512_loadu_ps(acc + (size_t)j * D + 32 * c);
      hi[j] = _mm512_loadu_ps(acc + (size_t)j * D + 32 * c + 16);
    }
    // the chunk's share of prefetches in one burst ahead of its products (one call per token pair kept the
    // cursor's state in memory: about 20 scalar instructions per 8 products on Zen 4, 1.1x in L2 without)
    pf.steps(nt);
    const uint32_t* pt = pp;
    const int64_t off = 64 * c;
    for (int t = 0; t < full; t += 2, pt += ldp) {
      const __m512i x0 = _mm512_loadu_si512((const void*)(vr[t] + off));
      const __m512i x1 = _mm512_loadu_si512((const void*)(vr[t + 1] + off));
      const __m512bh ul = (__m512bh)_mm512_unpacklo_epi16(x0, x1), uh = (__m512bh)_mm512_unpackhi_epi16(x0, x1);
      for (int j = 0; j < NH; ++j) {
        const __m512bh p = (__m512bh)_mm512_set1_epi32((int)pt[j]);
        lo[j] = _mm512_dpbf16_ps(lo[j], ul, p);
        hi[j] = _mm512_dpbf16_ps(hi[j], uh, p);
      }
    }
    if (full < nt) {
      const __m512i x0 = _mm512_loadu_si512((const void*)(vr[full] + off)), x1 = _mm512_setzero_si512();
      const __m512bh ul = (__m512bh)_mm512_unpacklo_epi16(x0, x1), uh = (__m512bh)_mm512_unpackhi_epi16(x0, x1);
      for (int j = 0; j < NH; ++j) {
        const __m512bh p = (__m512bh)_mm512_set1_epi32((int)pt[j]);
        lo[j] = _mm512_dpbf16_ps(lo[j], ul, p);
        hi[j] = _mm512_dpbf16_ps(hi[j], uh, p);
      }
    }
    for (int j = 0; j < NH; ++j) {
      _mm512_storeu_ps(acc + (size_t)j * D + 32 * c, lo[j]);
      _mm512_storeu_ps(acc + (size_t)j * D + 32 * c + 16, hi[j]);
    }
  }
}
#if defined(__AVX512VBMI__)
#define ATTNSOLVE_FP8BF 1
// fp8 (e4m3 / e5m2) -> bf16, exact (every fp8 value, subnormals, NaN and inf included, is a bf16
// value): two byte tables of the 128 magnitudes (vpermi2b), the sign OR-ed in, bytes interleaved.
alignas(64) static uint8_t g_bf_lo[2][128], g_bf_hi[2][128], g_bf_idx[2][64];
static void init_fp8_bf16() {
  for (int k = 0; k < 2; ++k)
    for (int i = 0; i < 128; ++i) {
      const float f = k == 0 ? g_lut_e4m3[i] : g_lut_e5m2[i];
      uint32_t u; std::memcpy(&u, &f, 4);
      const uint16_t b = (uint16_t)(std::isnan(f) ? 0x7fc0 : (u >> 16));  // exact: low 16 bits are zero
      g_bf_lo[k][i] = (uint8_t)(b & 0xff);
      g_bf_hi[k][i] = (uint8_t)(b >> 8);
    }
  for (int i = 0; i < 32; ++i) {  // interleave: out0 = (lo[i], hi[i]) for i < 32, out1 for i in 32..63
    g_bf_idx[0][2 * i] = (uint8_t)i; g_bf_idx[0][2 * i + 1] = (uint8_t)(64 + i);
    g_bf_idx[1][2 * i] = (uint8_t)(32 + i); g_bf_idx[1][2 * i + 1] = (uint8_t)(96 + i);
  }
}
// n fp8 values -> bf16 (the tables loaded once per call: callers convert whole token rows, all KV heads)
//
// lane = true (n a multiple of 64): the bytes are interleaved within 128-bit lanes (vpunpckl/hbw, two cheap
// ops instead of two more vpermt2b), so each 64-value group comes out in "lane order": bf16 position r
// holds fp8 value fp8_lane_elem(r) of its group.  Consumers permute the query (scores) and the output
// dims (PV) to match; this cut the conversion, most of what fp8 costs over bf16, by about 40%.
struct Fp8Tables {  // the byte tables and masks in registers, loaded once per call (or per group of rows)
  __m512i l0, l1, h0, h1, i0, i1, m7f, m80;
  explicit Fp8Tables(int ctype) {
    const int k = ctype == E4M3 ? 0 : 1;
    l0 = _mm512_load_si512((const void*)g_bf_lo[k]); l1 = _mm512_load_si512((const void*)(g_bf_lo[k] + 64));
    h0 = _mm512_load_si512((const void*)g_bf_hi[k]); h1 = _mm512_load_si512((const void*)(g_bf_hi[k] + 64));
    i0 = _mm512_load_si512((const void*)g_bf_idx[0]); i1 = _mm512_load_si512((const void*)g_bf_idx[1]);
    m7f = _mm512_set1_epi8(0x7f); m80 = _mm512_set1_epi8((char)0x80);
  }
};
static inline void fp8_span(const Fp8Tables& T, const uint8_t* src, uint16_t* dst, int n, bool lane) {
  const __m512i l0 = T.l0, l1 = T.l1, h0 = T.h0, h1 = T.h1, i0 = T.i0, i1 = T.i1, m7f = T.m7f, m80 = T.m80;
  for (int c = 0; c < n; c += 64) {
    const __mmask64 mk = (n - c >= 64) ? ~(__mmask64)0 : (((__mmask64)1 << (n - c)) - 1);
    const __m512i x = _mm512_maskz_loadu_epi8(mk, src + c);
    const __m512i t = _mm512_and_si512(x, m7f);
    const __m512i lo = _mm512_permutex2var_epi8(l0, t, l1);
    const __m512i hi = _mm512_or_si512(_mm512_permutex2var_epi8(h0, t, h1), _mm512_and_si512(x, m80));
    if (lane && n - c >= 64) {
      _mm512_storeu_si512((void*)(dst + c), _mm512_unpacklo_epi8(lo, hi));
      _mm512_storeu_si512((void*)(dst + c + 32), _mm512_unpackhi_epi8(lo, hi));
      continue;
    }
    const __m512i o0 = _mm512_permutex2var_epi8(lo, i0, hi);
    if (n - c >= 32) _mm512_storeu_si512((void*)(dst + c), o0);
    else _mm512_mask_storeu_epi16((void*)(dst + c), (__mmask32)((1u << (n - c)) - 1), o0);
    if (n - c > 32) {
      const __m512i o1 = _mm512_permutex2var_epi8(lo, i1, hi);
      if (n - c >= 64) _mm512_storeu_si512((void*)(dst + c + 32), o1);
      else _mm512_mask_storeu_epi16((void*)(dst + c + 32), (__mmask32)((1u << (n - c - 32)) - 1), o1);
    }
  }
}
static inline void fp8_to_bf16(int ctype, const uint8_t* src, uint16_t* dst, int n, bool lane = false) {
  fp8_span(Fp8Tables(ctype), src, dst, n, lane);
}
// n rows (rows[t] + off, n_el values each) -> dst + t * n_el: the tables loaded once for all of them (the pipelined
// path widens 16 rows of one KV head at a time: at head 64 the per-call set-up cost as much as the conversion)
static inline void fp8_rows_to_bf16(int ctype, const char* const* rows, int n, int64_t off, uint16_t* dst, int n_el,
                                    bool lane) {
  const Fp8Tables T(ctype);
  for (int t = 0; t < n; ++t) fp8_span(T, (const uint8_t*)rows[t] + off, dst + (size_t)t * n_el, n_el, lane);
}
#endif
#endif

// acc[j] += sum_t p[t][j] v[t] for NH heads (p[t * ldp + j]), fp16 V widened in registers (one vcvtph2ps
// per 16 columns per token, shared by the NH heads).
template <int NH, int ND>
static inline void pv_f16(PfList& pf, const char* const* vr, int nt, const float* p, int ldp, float* acc) {
  constexpr int D = ND * 16;
  for (int c = 0; c < ND; ++c) {
    __m512 a[NH];
    for (int j = 0; j < NH; ++j) a[j] = _mm512_loadu_ps(acc + (size_t)j * D + 16 * c);
    pf.steps(nt);  // as many prefetches as tokens, ahead of the chunk's FMAs (not one per FMA group)
    for (int t = 0; t < nt; ++t) {
      const __m512 v = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(vr[t] + 32 * c)));
      for (int j = 0; j < NH; ++j) a[j] = _mm512_fmadd_ps(_mm512_set1_ps(p[(size_t)t * ldp + j]), v, a[j]);
    }
    for (int j = 0; j < NH; ++j) _mm512_storeu_ps(acc + (size_t)j * D + 16 * c, a[j]);
  }
}

// The same for float32 V rows.
template <int NH, int ND>
static inline void pv_f32(PfList& pf, const float* const* vr, int nt, const float* p, int ldp, float* acc) {
  constexpr int D = ND * 16;
  for (int c = 0; c < ND; ++c) {
    __m512 a[NH];
    for (int j = 0; j < NH; ++j) a[j] = _mm512_loadu_ps(acc + (size_t)j * D + 16 * c);
    pf.steps(nt);  // as many prefetches as tokens, ahead of the chunk's FMAs (not one per FMA group)
    for (int t = 0; t < nt; ++t) {
      const __m512 v = _mm512_loadu_ps(vr[t] + 16 * c);
      for (int j = 0; j < NH; ++j) a[j] = _mm512_fmadd_ps(_mm512_set1_ps(p[(size_t)t * ldp + j]), v, a[j]);
    }
    for (int j = 0; j < NH; ++j) _mm512_storeu_ps(acc + (size_t)j * D + 16 * c, a[j]);
  }
}

// The same for bf16 V rows widened in registers with a shift and a mask (even / odd bf16 of each 32-bit
// lane): each 32-wide accumulator chunk holds [16 even dims | 16 odd dims] (undone once per work item).
template <int NH, int ND>
static inline void pv_bw(PfList& pf, const char* const* vr, int nt, const float* p, int ldp, float* acc) {
  constexpr int D = ND * 16;
  const __m512i hi_mask = _mm512_set1_epi32((int)0xFFFF0000u);
  for (int c = 0; c < ND / 2; ++c) {
    __m512 e[NH], o[NH];
    for (int j = 0; j < NH; ++j) {
      e[j] = _mm512_loadu_ps(acc + (size_t)j * D + 32 * c);
      o[j] = _mm512_loadu_ps(acc + (size_t)j * D + 32 * c + 16);
    }
    pf.steps(nt);
    for (int t = 0; t < nt; ++t) {
      const __m512i x = _mm512_loadu_si512((const void*)(vr[t] + 64 * c));
      const __m512 ev = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
      const __m512 od = _mm512_castsi512_ps(_mm512_and_si512(x, hi_mask));
      for (int j = 0; j < NH; ++j) {
        const __m512 pj = _mm512_set1_ps(p[(size_t)t * ldp + j]);
        e[j] = _mm512_fmadd_ps(pj, ev, e[j]);
        o[j] = _mm512_fmadd_ps(pj, od, o[j]);
      }
    }
    for (int j = 0; j < NH; ++j) {
      _mm512_storeu_ps(acc + (size_t)j * D + 32 * c, e[j]);
      _mm512_storeu_ps(acc + (size_t)j * D + 32 * c + 16, o[j]);
    }
  }
}

// Partial dot products of two tokens' K rows (k0, k1: one KV head) with NG query heads, two tokens per
// vector (256-bit halves: token t, token t + 1, the same dims).  KIND 0: float32 rows, 1: fp16, 2: bf16
// widened to float32 (q2: the [H][D] float32 query); 4: bf16 dot products (q2: the [H][D] bf16 query).  Each
// 8 (16) query dims are broadcast to both halves as they are loaded: a query stored twice over (32 KiB of
// float32 at 32 heads of 128 dims) crowded the K rows and accumulators out of L1 (one thread, rows in L2:
// fp16 1.19x, float32 1.08 to 1.15x with the broadcast load).
template <int ND, int NG, int KIND>
static inline void qk_pair(const char* k0, const char* k1, const void* q2, int h, __m512* part) {
  __m512 a[NG];
  for (int g = 0; g < NG; ++g) a[g] = _mm512_setzero_ps();
#if defined(__AVX512BF16__)
  if (KIND == 4) {
    const uint16_t* qb = (const uint16_t*)q2 + (size_t)h * ND * 16;
    for (int c = 0; c < ND; ++c) {  // 16 dims of both tokens
      const __m512bh kk = (__m512bh)_mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)(k0 + 32 * c))),
          _mm256_loadu_si256((const __m256i*)(k1 + 32 * c)), 1);
      for (int g = 0; g < NG; ++g)
        a[g] = _mm512_dpbf16_ps(a[g], (__m512bh)_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)(qb + ((size_t)g * ND + c) * 16))), kk);
    }
    for (int g = 0; g < NG; ++g) part[h + g] = a[g];
    return;
  }
#endif
  const float* qf = (const float*)q2 + (size_t)h * ND * 16;
  for (int c = 0; c < 2 * ND; ++c) {  // 8 dims of both tokens
    __m512 kk;
    if (KIND == 0) {
      kk = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps((const float*)k0 + 8 * c)),
                              _mm256_loadu_ps((const float*)k1 + 8 * c), 1);
    } else {
      const __m256i x = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)(k0 + 16 * c))),
                                                _mm_loadu_si128((const __m128i*)(k1 + 16 * c)), 1);
      if (KIND == 1) kk = _mm512_cvtph_ps(x);
      else kk = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(x), 16));
    }
    for (int g = 0; g < NG; ++g)
      a[g] = _mm512_fmadd_ps(_mm512_broadcast_f32x8(_mm256_loadu_ps(qf + (size_t)g * 16 * ND + 8 * c)), kk, a[g]);
  }
  for (int g = 0; g < NG; ++g) part[h + g] = a[g];
}

template <int ND, int KIND>
static inline void qk_pairs(const char* k0, const char* k1, const void* q2, int h, int G, __m512* part) {
  int g = 0;
  for (; g + 8 <= G; g += 8) qk_pair<ND, 8, KIND>(k0, k1, q2, h + g, part);
  for (; g + 4 <= G; g += 4) qk_pair<ND, 4, KIND>(k0, k1, q2, h + g, part);
  for (; g < G; ++g) qk_pair<ND, 1, KIND>(k0, k1, q2, h + g, part);
}

// qk_pair for two token pairs at once, each query broadcast serving both (the same products in the same order per
// score as qk_pair: equal results): part gets (k0, k1), part2 (k2, k3).  KIND 4: bf16 dot products (q2: the bf16
// query); 1: fp16 rows widened, float32 FMAs (q2: the float32 query).
template <int ND, int NG, int KIND>
static inline void qk_quad(const char* k0, const char* k1, const char* k2, const char* k3, const void* q2, int h,
                           __m512* part, __m512* part2) {
  __m512 a[NG], b[NG];
  for (int g = 0; g < NG; ++g) { a[g] = _mm512_setzero_ps(); b[g] = _mm512_setzero_ps(); }
#if defined(__AVX512BF16__)
  if constexpr (KIND == 4) {
    const uint16_t* qb = (const uint16_t*)q2 + (size_t)h * ND * 16;
    for (int c = 0; c < ND; ++c) {  // 16 dims of the four tokens
      const __m512bh kk = (__m512bh)_mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)(k0 + 32 * c))),
          _mm256_loadu_si256((const __m256i*)(k1 + 32 * c)), 1);
      const __m512bh kl = (__m512bh)_mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)(k2 + 32 * c))),
          _mm256_loadu_si256((const __m256i*)(k3 + 32 * c)), 1);
      for (int g = 0; g < NG; ++g) {
        const __m512bh qq = (__m512bh)_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)(qb + ((size_t)g * ND + c) * 16)));
        a[g] = _mm512_dpbf16_ps(a[g], qq, kk);
        b[g] = _mm512_dpbf16_ps(b[g], qq, kl);
      }
    }
  } else
#endif
  {
    static_assert(KIND == 1 || KIND == 4, "qk_quad: bf16 (4) or fp16 (1) rows");
    const float* qh = (const float*)q2 + (size_t)h * ND * 16;
    for (int c = 0; c < 2 * ND; ++c) {  // 8 dims of the four tokens
      const __m512 kk = _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)(k0 + 16 * c))),
                                                                _mm_loadu_si128((const __m128i*)(k1 + 16 * c)), 1));
      const __m512 kl = _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)(k2 + 16 * c))),
                                                                _mm_loadu_si128((const __m128i*)(k3 + 16 * c)), 1));
      for (int g = 0; g < NG; ++g) {
        const __m512 qq = _mm512_broadcast_f32x8(_mm256_loadu_ps(qh + (size_t)g * 16 * ND + 8 * c));
        a[g] = _mm512_fmadd_ps(qq, kk, a[g]);
        b[g] = _mm512_fmadd_ps(qq, kl, b[g]);
      }
    }
  }
  for (int g = 0; g < NG; ++g) { part[h + g] = a[g]; part2[h + g] = b[g]; }
}
template <int ND, int KIND>
static inline void qk_quads(const char* k0, const char* k1, const char* k2, const char* k3, const void* q2, int h,
                            int G, __m512* part, __m512* part2) {
  int g = 0;
  for (; g + 8 <= G; g += 8) qk_quad<ND, 8, KIND>(k0, k1, k2, k3, q2, h + g, part, part2);
  for (; g + 4 <= G; g += 4) qk_quad<ND, 4, KIND>(k0, k1, k2, k3, q2, h + g, part, part2);
  for (; g < G; ++g) qk_quad<ND, 1, KIND>(k0, k1, k2, k3, q2, h + g, part, part2);
}
// float32 scores of T tokens (one KV head) for 16 query heads at once, as outer products: lane v of
// out[u] = q_v . k_u, with q^T (16 heads per D-row) in qT and each K element broadcast.  The sum runs in
// exactly qk_pair's order (eight partial sums, dims d = j mod 8, then hsum8x2's tree), so the scores, and
// the outputs, equal the pair path's bit for bit; but with no horizontal sums and one 512-bit q^T load per T
// FMAs (the pair path loads a broadcast query half per FMA).
template <int ND, int T>
static inline void qk_outer(const float* const* kr, const float* qT, int ldq, __m512* out) {
  __m512 a[T][8];
  for (int u = 0; u < T; ++u)
    for (int j = 0; j < 8; ++j) a[u][j] = _mm512_setzero_ps();
  for (int c = 0; c < 2 * ND; ++c)
    for (int j = 0; j < 8; ++j) {
      const int d = 8 * c + j;
      __m512 qv = _mm512_loadu_ps(qT + (size_t)d * ldq);
      // (kept in a register: without this the compiler broadcast each K element into a register and re-read the
      // q^T row from memory per FMA, a 512-bit load per FMA, 0.73x the pair path)
      __asm__("" : "+v"(qv));
      for (int u = 0; u < T; ++u) a[u][j] = _mm512_fmadd_ps(qv, _mm512_set1_ps(kr[u][d]), a[u][j]);
    }
  for (int u = 0; u < T; ++u)
    out[u] = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[u][0], a[u][2]), _mm512_add_ps(a[u][1], a[u][3])),
                           _mm512_add_ps(_mm512_add_ps(a[u][4], a[u][6]), _mm512_add_ps(a[u][5], a[u][7])));
}

// Four tokens per step in the bf16 / fp8 / fp16 scores (qk_quad): one thread, rows in L2, Zen 4 VM
// (session 28): bf16 0.89 to 0.91x the time per token and KV head at GQA 4 head 128 / 256 and GQA 8 head 64, fp16
// 0.92 to 0.93x; cache evicted, two threads, the two alternating in the same rounds: bf16 1.01 to 1.07x, fp16 1.03
// to 1.09x (float32 0.95 to 1.07x: it keeps two tokens per step).  ATTNSOLVE_CPU_QUAD=0 keeps two tokens per step
// everywhere (for comparisons).
static int quad_permitted() {
  static int ok = -1;
  if (ok < 0) ok = env_off("ATTNSOLVE_CPU_QUAD") ? 0 : 1;
  return ok;
}

constexpr int TILE = 16;  // tokens per tile, at absolute multiples of TILE

// Everything a tile needs besides its token rows (one per thread and work item).
struct TileCtx {
  int ctype, Hkv, G, H, Hp, flags;  // Hp: H rounded up to 16 (heads are vector lanes in the softmax)
  int64_t k_s1, k_s2, v_s1, v_s2;   // element strides: between tokens of a block, between KV heads
  float scale, softcap;
  bool prefetch;
  int pce = 2;                      // bytes per element of the raw cache rows (qk_pv_amx: 1 = fp8, converted per KV head)
  uint16_t* k8 = nullptr;           // qk_pv_amx with fp8: [16][D] bf16 K rows of one KV head, then V rows ([16][D])
  bool sbs = false;                 // vector-path scores: prefetch the next tile's K and V side by side (nextv2)
  const char* const* nextv2 = nullptr;
  const float* qf;                  // [H][D] float32 query
  const uint16_t* q2;               // [H][D] bf16 query (flag 1)
  const uint16_t* qvnni;            // AMX: q^T per KV head as [D/2][G][2] bf16
  float* s;                         // [TILE][Hp] scores, then probabilities
  uint32_t* pp;                     // [TILE/2][Hp] bf16 probability pairs (flag 8)
  __m512* part;                     // [2][Hp] per-head partial dot products of two token pairs (lanes >= H stay 0)
  float* buf;                       // [TILE][D] float32 scratch (conversions)
  uint16_t* cbuf;                   // [TILE][Hkv * D] bf16 scratch (fp8 rows, flag 16)
  uint16_t* pa;                     // AMX PV (flag 64): A tiles per KV head, [Hkv][2G][32] bf16
  uint16_t* vz;                     // AMX PV: [TILE][D] bf16 scratch for a tile's V rows that are not equally strided
  uint32_t* hl;                     // fp16 on AMX (flag 128): [TILE][D] (hi, lo) bf16 pairs of one KV head's K or V rows
  // several query rows per item (rows_per_item > 1): row r's head g of KV head kh is the virtual head
  // kh * G + r * g0 + g (G = nr * g0); row r sees the positions [lo_r[r], hi_r[r]); every row sees [all_lo, all_hi)
  int nr = 1, g0 = 1, pos0 = 0, all_lo = 0, all_hi = 0;
  const int* lo_r = nullptr;
  const int* hi_r = nullptr;
  // float32 scores as outer products (qk_outer): q^T per KV head, [Hkv][D][gq] (gq: G rounded up to 16,
  // lanes >= G zero); nullptr: the dot-product pairs
  const float* qT = nullptr;
  int gq = 0;
};

// One tile (nt <= TILE tokens, possibly from several blocks) for all heads: scores, online softmax, PV.
// Memory is read in address order where it matters: the scores go token by token over all KV heads
// (a token's K row for every head is one contiguous run in vLLM's layout), while that token's V row is
// prefetched, and the PV product (per KV head, accumulators in registers) prefetches the next tile's K.
// The softmax keeps heads in vector lanes (no horizontal reductions).  Tiles cover the same absolute
// positions whatever the block size, so the accumulation order, and the result, do not depend on it.
// ktok/vtok: each token's row (KV head 0); nextk: the next tile's K rows (nn of them); acc: [H][D].
template <int ND>
static void tile_avx(const TileCtx& X, const char* const* ktok, const char* const* vtok, int nt,
                     const char* const* nextk, int nn, const char* const* nextv, int nnv, float* acc, float* m, float* l) {
  constexpr int D = ND * 16;
  const int ctype = X.ctype, Hkv = X.Hkv, G = X.G, H = X.H, Hp = X.Hp, fl = X.flags;
  const int ce = esize(ctype);
  const int64_t khb = X.k_s2 * ce, vhb = X.v_s2 * ce;
  float* const s = X.s;
  const __m512 vscale = _mm512_set1_ps(X.scale);
#if defined(ATTNSOLVE_AMX)
  if (fl & 128) {  // fp16: per KV head, K rows as (hi, lo) pairs; S^T += K2 . (qh, qh)^T + K2 . (ql, ql)^T per 16 dims
    PfList pv;
    if (X.prefetch) pv.init(nextv, nnv, Hkv, vhb, (int64_t)D * ce);
    const int per = (pv.lines() + Hkv * ND - 1) / (Hkv * ND);
    const size_t qlo = (size_t)H * D * 2;
    // double-buffered: the next KV head's rows are converted after this head's tile ops are issued (measured
    // no different from one buffer, converted just before use)
    for (int t = 0; t < nt; ++t) f16_split((const uint16_t*)(ktok[t]), X.hl + (size_t)t * D, D);
    for (int kh = 0; kh < Hkv; ++kh) {
      const uint32_t* hb = X.hl + (size_t)(kh & 1) * TILE * D;
      const uint16_t* qv = X.qvnni + (size_t)kh * D * G * 2;  // [D][G][2]
      _tile_zero(0);
      for (int c = 0; c < ND; ++c) {
        _tile_loadd(1, hb + 16 * c, D * 4);
        _tile_loadd(2, qv + (size_t)c * 32 * G, G * 4);
        _tile_loadd(3, qv + qlo + (size_t)c * 32 * G, G * 4);
        _tile_dpbf16ps(0, 1, 2);
        _tile_dpbf16ps(0, 1, 3);
        pv.steps(per);
      }
      _tile_stored(0, s + kh * G, Hp * 4);  // rows past nt: garbage (stale scratch), never read
      if (kh + 1 < Hkv)
        for (int t = 0; t < nt; ++t)
          f16_split((const uint16_t*)(ktok[t] + (kh + 1) * khb), X.hl + ((size_t)((kh + 1) & 1) * TILE + t) * D, D);
    }
    pv.rest();
    for (int t = 0; t < nt; ++t)
      for (int hb = 0; hb < Hp; hb += 16) _mm512_storeu_ps(s + (size_t)t * Hp + hb, _mm512_mul_ps(_mm512_loadu_ps(s + (size_t)t * Hp + hb), vscale));
  } else
  if (fl & 256) {  // scores already in X.s, scaled (qk_pv_amx, the pipelined AMX path)
  } else
  if (fl & 4) {  // 16 tokens x G heads per tile op; rows up to the next multiple of 16 lie in one block (caller checks)
    // fp8: the tile's K rows (all KV heads) are first converted to bf16 rows of X.cbuf, and read from there
    const bool f8 = (fl & 16) != 0;
    const int64_t kstride_b = f8 ? (int64_t)Hkv * D * 2 : X.k_s1 * ce, khs = f8 ? (int64_t)D * 2 : khb;
#if defined(ATTNSOLVE_FP8BF)
    if (f8)
      fp8_rows_to_bf16(ctype, ktok, nt, 0, X.cbuf, Hkv * D, fl & 32);
#endif
    PfList pv;  // this tile's V rows in address order, spread over the tile ops (a burst stalls)
    if (X.prefetch) pv.init(nextv, nnv, Hkv, vhb, (int64_t)D * ce);
    const int per = (pv.lines() + Hkv * (ND / 2) - 1) / (Hkv * (ND / 2));
    for (int kh = 0; kh < Hkv; ++kh) {
      const uint16_t* qv = X.qvnni + (size_t)kh * D * G;  // [D/2][G][2]
      for (int tb = 0; tb < nt; tb += 16) {
        _tile_zero(0);
        for (int c = 0; c < ND / 2; ++c) {
          _tile_loadd(1, (f8 ? (const char*)(X.cbuf + (size_t)tb * Hkv * D) : ktok[tb]) + kh * khs + 64 * c, kstride_b);
          _tile_loadd(2, qv + (size_t)c * 32 * G, G * 4);
          _tile_dpbf16ps(0, 1, 2);
          pv.steps(per);
        }
        _tile_stored(0, s + (size_t)tb * Hp + kh * G, Hp * 4);  // S^T rows = tokens, G heads at kh * G
      }
    }
    for (int t = 0; t < nt; ++t)  // (rows past nt hold garbage, never read)
      for (int hb = 0; hb < Hp; hb += 16) _mm512_storeu_ps(s + (size_t)t * Hp + hb, _mm512_mul_ps(_mm512_loadu_ps(s + (size_t)t * Hp + hb), vscale));
  } else
#endif
  {  // (one statement: the AMX branches above end in "else")
  // the scores' prefetches for tokens t .. t + n - 1 of KV head kh: the next tile's K and V rows side by side
  // (X.sbs), or this tile's V rows, a few lines per step (not a burst per token)
  auto score_prefetch = [&](int t, int n, int kh) {
    if (!X.prefetch) return;
    if (X.sbs) {
      for (int u = t; u < t + n && u < nn; ++u)
        for (int o = 0; o < D * ce; o += 64) {
          prefetch_l2(nextk[u] + kh * khb + o);
          prefetch_l2(X.nextv2[u] + kh * vhb + o);
        }
    } else {
      for (int u = t; u < t + n && u < nnv; ++u)
        for (int o = 0; o < D * ce; o += 64) prefetch_l2(nextv[u] + kh * vhb + o);
    }
  };
  int t_pairs = 0;  // where the pair loop starts
  if (X.qT && ctype == F32 && !(fl & 1)) {  // float32 rows, q^T given: outer products (qk_outer), every token
    for (int kh = 0; kh < Hkv; ++kh) {
      const float* qk = X.qT + (size_t)kh * D * X.gq;
      for (int t = 0; t < nt; t += 3) {
        const int n = std::min(3, nt - t);
        score_prefetch(t, n, kh);
        const float* kr[3];
        for (int u = 0; u < n; ++u) kr[u] = (const float*)(ktok[t + u] + kh * khb);
        for (int vb = 0; vb < G; vb += 16) {
          const __mmask16 lanes = G - vb >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (G - vb)) - 1);
          __m512 r[3];
          if (n == 3) qk_outer<ND, 3>(kr, qk + vb, X.gq, r);
          else if (n == 2) qk_outer<ND, 2>(kr, qk + vb, X.gq, r);
          else qk_outer<ND, 1>(kr, qk + vb, X.gq, r);
          for (int u = 0; u < n; ++u)
            _mm512_mask_storeu_ps(s + (size_t)(t + u) * Hp + kh * G + vb, lanes, _mm512_mul_ps(r[u], vscale));
        }
      }
    }
    t_pairs = nt;
  }
#if defined(ATTNSOLVE_FP8BF)
  const bool quad_f8 = (fl & 16) && X.k_s2 == D;  // fp8 K rows: a token's KV heads in one run, widened four tokens at a time
#else
  const bool quad_f8 = false;
#endif
#if defined(__AVX512BF16__)
  const bool quad_bf = (fl & 1) && (ND % 2) == 0 && ((ctype == BF16 && !(fl & 16)) || quad_f8);
#else
  const bool quad_bf = false;
#endif
  // (float32 K rows keep two tokens per step: 0.95 to 1.07x cold, as on the Xeon)
  const int qkind = quad_bf ? 4 : (!(fl & 1) && ctype == F16) ? 1 : -1;
  if (qkind >= 0 && quad_permitted()) {
    // bf16 K rows (or fp8 rows widened to bf16 first) and fp16 rows: four tokens per step, each query broadcast
    // serving two token pairs
    __m512* const part = X.part;
    __m512* const part2 = X.part + Hp;
    for (; t_pairs + 4 <= nt; t_pairs += 4) {
      const int t = t_pairs;
      const char* kq[4];
      int64_t kqh = khb;  // bytes between KV heads of a row
#if defined(ATTNSOLVE_FP8BF)
      if (quad_f8) {
        // (the byte tables loaded once for the four rows: per call they cost as much as a head-64 row's conversion)
        fp8_rows_to_bf16(ctype, ktok + t, 4, 0, X.cbuf, Hkv * D, fl & 32);
        for (int u = 0; u < 4; ++u) kq[u] = (const char*)(X.cbuf + (size_t)u * Hkv * D);
        kqh = (int64_t)D * 2;
      } else
#endif
      for (int u = 0; u < 4; ++u) kq[u] = ktok[t + u];
      for (int kh = 0; kh < Hkv; ++kh) {
        score_prefetch(t, 4, kh);
        const char *k0 = kq[0] + kh * kqh, *k1 = kq[1] + kh * kqh, *k2 = kq[2] + kh * kqh, *k3 = kq[3] + kh * kqh;
#if defined(__AVX512BF16__)
        if (qkind == 4) qk_quads<ND, 4>(k0, k1, k2, k3, X.q2, kh * G, G, part, part2); else
#endif
        qk_quads<ND, 1>(k0, k1, k2, k3, X.qf, kh * G, G, part, part2);
      }
      for (int hb = 0; hb < Hp; hb += 16) {
        __m512 r0, r1;
        hsum8x2(part + hb, r0, r1);
        _mm512_storeu_ps(s + (size_t)t * Hp + hb, _mm512_mul_ps(r0, vscale));
        _mm512_storeu_ps(s + (size_t)(t + 1) * Hp + hb, _mm512_mul_ps(r1, vscale));
        hsum8x2(part2 + hb, r0, r1);
        _mm512_storeu_ps(s + (size_t)(t + 2) * Hp + hb, _mm512_mul_ps(r0, vscale));
        _mm512_storeu_ps(s + (size_t)(t + 3) * Hp + hb, _mm512_mul_ps(r1, vscale));
      }
    }
  }
  for (int t = t_pairs; t < nt; t += 2) {
    // two tokens per vector: 256-bit halves hold token t and t + 1 (the same dims), so that one
    // horizontal-sum tree (hsum8x2) yields both tokens' scores: half the reduction work per score
    __m512* const part = X.part;
#if defined(ATTNSOLVE_FP8BF)
    const bool kconv = (fl & 16) && (fl & 1) && X.k_s2 == D;  // fp8 K rows of both tokens, all heads, at once
    if (kconv) {
      fp8_to_bf16(ctype, (const uint8_t*)ktok[t], X.cbuf, Hkv * D, fl & 32);
      if (t + 1 < nt) fp8_to_bf16(ctype, (const uint8_t*)ktok[t + 1], X.cbuf + (size_t)Hkv * D, Hkv * D, fl & 32);
    }
#else
    const bool kconv = false;
#endif
    for (int kh = 0; kh < Hkv; ++kh) {
      score_prefetch(t, 2, kh);
      const char* k0 = ktok[t] + kh * khb;
      const char* k1 = t + 1 < nt ? ktok[t + 1] + kh * khb : k0;
      if (kconv) {
        k0 = (const char*)(X.cbuf + (size_t)kh * D);
        k1 = t + 1 < nt ? (const char*)(X.cbuf + (size_t)(Hkv + kh) * D) : k0;
      }
      int kind = ctype == F32 ? 0 : ctype == F16 ? 1 : ctype == BF16 ? 2 : 3;
#if defined(__AVX512BF16__)
      if ((fl & 1) && (ND % 2) == 0) {
        kind = 4;
#if defined(ATTNSOLVE_FP8BF)
        if ((fl & 16) && !kconv) {
          fp8_to_bf16(ctype, (const uint8_t*)k0, X.cbuf, D, fl & 32);
          fp8_to_bf16(ctype, (const uint8_t*)k1, X.cbuf + D, D, fl & 32);
          k0 = (const char*)X.cbuf;
          k1 = (const char*)(X.cbuf + D);
        }
#endif
      }
#endif
      if (kind == 3) {  // other caches: both rows to float32 first
        conv_row<ND>(ctype, k0, X.buf, 1.0f);
        conv_row<ND>(ctype, k1, X.buf + D, 1.0f);
        k0 = (const char*)X.buf;
        k1 = (const char*)(X.buf + D);
        kind = 0;
      }
      const int h0 = kh * G;
      switch (kind) {
        case 0: qk_pairs<ND, 0>(k0, k1, X.qf, h0, G, part); break;
        case 1: qk_pairs<ND, 1>(k0, k1, X.qf, h0, G, part); break;
        case 2: qk_pairs<ND, 2>(k0, k1, X.qf, h0, G, part); break;
#if defined(__AVX512BF16__)
        default: qk_pairs<ND, 4>(k0, k1, X.q2, h0, G, part); break;
#else
        default: break;
#endif
      }
    }
    for (int hb = 0; hb < Hp; hb += 16) {
      __m512 r0, r1;
      hsum8x2(part + hb, r0, r1);
      _mm512_storeu_ps(s + (size_t)t * Hp + hb, _mm512_mul_ps(r0, vscale));
      if (t + 1 < nt) _mm512_storeu_ps(s + (size_t)(t + 1) * Hp + hb, _mm512_mul_ps(r1, vscale));
    }
  }
  }
  if (X.softcap > 0.0f) {  // cap * tanh(s / cap), 16 heads at a time: tanh|x| = (1 - e) / (1 + e), e = exp(-2|x|)
    // (a scalar tanh per score cost a soft-capped 2k prefill more than the rest of it; absolute error ~1e-7 of cap)
    const __m512 cap = _mm512_set1_ps(X.softcap), one = _mm512_set1_ps(1.0f), m2 = _mm512_set1_ps(-2.0f);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    for (int t = 0; t < nt; ++t)
      for (int hb = 0; hb < Hp; hb += 16) {
        const __m512 x = _mm512_div_ps(_mm512_loadu_ps(s + (size_t)t * Hp + hb), cap);
        const __m512 ax = _mm512_abs_ps(x);
        const __m512 e = exp512(_mm512_mul_ps(m2, ax));
        const __m512 th = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
        const __m512 sx = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(th),
                                                              _mm512_and_si512(_mm512_castps_si512(x), sign)));
        _mm512_storeu_ps(s + (size_t)t * Hp + hb, _mm512_mul_ps(cap, sx));
      }
  }
  // several rows per item: a tile with positions some row does not see (its diagonal, its window's edge) gets
  // -inf there, and probability exactly 0 below (so the rows' sums equal one row's at a time, bit for bit)
  const bool masked = X.nr > 1 && (X.pos0 < X.all_lo || X.pos0 + nt > X.all_hi);
  if (masked)
    for (int t = 0; t < nt; ++t) {
      const int pos = X.pos0 + t;
      for (int h = 0; h < H; ++h) {
        const int r = (h % G) / X.g0;
        if (pos < X.lo_r[r] || pos >= X.hi_r[r]) s[(size_t)t * Hp + h] = -INFINITY;
      }
    }
  // online softmax, 16 heads per vector
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  for (int hb = 0; hb < Hp; hb += 16) {
    const __mmask16 live = H - hb >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (H - hb)) - 1);
    __m512 mx = ninf;
    for (int t = 0; t < nt; ++t) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + (size_t)t * Hp + hb));
    const __m512 mo = _mm512_loadu_ps(m + hb);
    const __m512 mn = _mm512_max_ps(mo, mx);
    const __mmask16 up = _mm512_cmp_ps_mask(mn, mo, _CMP_GT_OQ) & live;
    if (up) {
      const __mmask16 re = up & _mm512_cmp_ps_mask(mo, ninf, _CMP_NEQ_OQ);  // a previous maximum to correct for
      if (re) {
        alignas(64) float corr[16];
        _mm512_store_ps(corr, exp512(_mm512_sub_ps(mo, mn)));
        _mm512_storeu_ps(l + hb, _mm512_mask_mul_ps(_mm512_loadu_ps(l + hb), re, _mm512_loadu_ps(l + hb), _mm512_load_ps(corr)));
        for (unsigned r = re; r; r &= r - 1) {
          const int i = __builtin_ctz(r);
          const __m512 vc = _mm512_set1_ps(corr[i]);
          if (fl & 128) {  // fp16 AMX PV layout: per KV head [D/16][G][16]
            const int kh = (hb + i) / G, g = (hb + i) % G;
            float* ah = acc + (size_t)kh * G * D + g * 16;
            for (int c = 0; c < ND; ++c) _mm512_storeu_ps(ah + (size_t)c * 16 * G, _mm512_mul_ps(_mm512_loadu_ps(ah + (size_t)c * 16 * G), vc));
            continue;
          }
          if (fl & 64) {  // AMX PV layout: per KV head [D/32][2G][16], head g in rows g and G + g
            const int kh = (hb + i) / G, g = (hb + i) % G;
            float* ah = acc + (size_t)kh * G * D + g * 16;
            for (int c = 0; c < ND / 2; ++c) {
              float* a0 = ah + (size_t)c * 32 * G;
              _mm512_storeu_ps(a0, _mm512_mul_ps(_mm512_loadu_ps(a0), vc));
              _mm512_storeu_ps(a0 + 16 * G, _mm512_mul_ps(_mm512_loadu_ps(a0 + 16 * G), vc));
            }
            continue;
          }
          float* ah = acc + (size_t)(hb + i) * D;
          for (int c = 0; c < ND; ++c) _mm512_storeu_ps(ah + 16 * c, _mm512_mul_ps(_mm512_loadu_ps(ah + 16 * c), vc));
        }
      }
      _mm512_storeu_ps(m + hb, _mm512_mask_mov_ps(mo, up, mn));
    }
    const __m512 mh = _mm512_loadu_ps(m + hb);
    __m512 ls = _mm512_setzero_ps();
    if (masked)  // -inf scores (a head may have no other yet: m = -inf) give exactly 0
      for (int t = 0; t < nt; ++t) {
        const __m512 st = _mm512_loadu_ps(s + (size_t)t * Hp + hb);
        const __m512 p = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(st, ninf, _CMP_NEQ_UQ), exp512(_mm512_sub_ps(st, mh)));
        _mm512_storeu_ps(s + (size_t)t * Hp + hb, p);
        ls = _mm512_add_ps(ls, p);
      }
    else
    for (int t = 0; t < nt; ++t) {
      const __m512 p = exp512(_mm512_sub_ps(_mm512_loadu_ps(s + (size_t)t * Hp + hb), mh));
      _mm512_storeu_ps(s + (size_t)t * Hp + hb, p);
      ls = _mm512_add_ps(ls, p);
    }
    _mm512_storeu_ps(l + hb, _mm512_add_ps(_mm512_loadu_ps(l + hb), ls));
#if defined(ATTNSOLVE_AMX)
    if (fl & 128) {  // fp16: A tiles per KV head, [G][16 tokens x (ph, ph)], then (pl, pl), then (p3, p3)
      __m512 r[16];
      for (int t = 0; t < 16; ++t) r[t] = t < nt ? _mm512_loadu_ps(s + (size_t)t * Hp + hb) : _mm512_setzero_ps();
      transpose16(r);
      for (int i = 0; i < 16 && hb + i < H; ++i) {
        const int kh = (hb + i) / G, g = (hb + i) % G;
        __m512i ph, pl, p3;
        split_pairs(r[i], ph, pl, &p3);
        uint16_t* a = X.pa + (size_t)kh * 3 * G * 32;
        _mm512_store_si512((void*)(a + g * 32), ph);
        _mm512_store_si512((void*)(a + (G + g) * 32), pl);
        _mm512_store_si512((void*)(a + (2 * G + g) * 32), p3);
      }
      continue;
    }
    if (fl & 64) {  // A tiles of the PV product: row g = (p[t][g], 0) pairs, row G + g = (0, p[t][g]) over 16 tokens
      __m512 r[16];
      for (int t = 0; t < 16; ++t) r[t] = t < nt ? _mm512_loadu_ps(s + (size_t)t * Hp + hb) : _mm512_setzero_ps();
      transpose16(r);
      for (int i = 0; i < 16 && hb + i < H; ++i) {
        const int kh = (hb + i) / G, g = (hb + i) % G;
        const __m512i z = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(r[i]));
        uint16_t* a = X.pa + (size_t)kh * 2 * G * 32;
        _mm512_store_si512((void*)(a + g * 32), z);
        _mm512_store_si512((void*)(a + (G + g) * 32), _mm512_slli_epi32(z, 16));
      }
      continue;
    }
#endif
#if defined(__AVX512BF16__)
    if (fl & 8) {  // (p[t], p[t+1]) bf16 pairs per head
      const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                           23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
      for (int t = 0; t < nt; t += 2) {
        const __m512 p0 = _mm512_loadu_ps(s + (size_t)t * Hp + hb);
        const __m512 p1 = t + 1 < nt ? _mm512_loadu_ps(s + (size_t)(t + 1) * Hp + hb) : _mm512_setzero_ps();
        const __m512i b = (__m512i)_mm512_cvtne2ps_pbh(p1, p0);  // [p0 x16 | p1 x16]
        _mm512_storeu_si512((void*)(X.pp + (size_t)(t / 2) * Hp + hb), _mm512_permutexvar_epi16(idx, b));
      }
    }
#endif
  }
  if (fl & 512) return;  // P . V done later, beside the next tile's scores (qk_pv_amx)
  // PV per KV head (accumulators of up to 8 heads in registers over the tile's tokens); the next tile's
  // K rows are prefetched a slice per KV head, spread over the PV loop (PfList)
#if defined(ATTNSOLVE_FP8BF)
  const bool vconv = (fl & 16) && (fl & 8) && X.v_s2 == D && (ND % 2) == 0;  // fp8 V rows of the tile at once
  if (vconv)
    fp8_rows_to_bf16(ctype, vtok, nt, 0, X.cbuf, Hkv * D, fl & 32);
#else
  const bool vconv = false;
#endif
#if defined(ATTNSOLVE_AMX)
  if (fl & 128) {  // fp16 PV: C[G x 16 dims] += (ph, ph)[G x 16 tokens] . V2 + (pl, pl) . V2 + (p3, p3) . V2, V2 = (hi, lo) pairs of V
    if (nt < 16)  // 0 * stale NaN: rows past nt are zeros in both buffers
      for (int b = 0; b < 2; ++b) std::memset(X.hl + ((size_t)b * TILE + nt) * D, 0, (size_t)(16 - nt) * D * 4);
    for (int t = 0; t < nt; ++t) f16_split((const uint16_t*)(vtok[t]), X.hl + (size_t)t * D, D);
    for (int kh = 0; kh < Hkv; ++kh) {
      PfList pf;  // a slice of the next tile's K rows (tokens kh * nn / Hkv ..), all KV heads
      if (X.prefetch && nn)
        pf.init(nextk + kh * nn / Hkv, (kh + 1) * nn / Hkv - kh * nn / Hkv, Hkv, khb, (int64_t)D * ce);
      const uint32_t* hb = X.hl + (size_t)(kh & 1) * TILE * D;
      float* ak = acc + (size_t)kh * G * D;
      const int per = (pf.lines() + ND - 1) / ND;
      _tile_loadd(4, X.pa + (size_t)kh * 3 * G * 32, 64);
      _tile_loadd(5, X.pa + (size_t)kh * 3 * G * 32 + (size_t)G * 32, 64);
      _tile_loadd(6, X.pa + (size_t)kh * 3 * G * 32 + (size_t)2 * G * 32, 64);
      for (int c = 0; c < ND; ++c) {
        _tile_loadd(1, hb + 16 * c, D * 4);
        _tile_loadd(7, ak + (size_t)c * 16 * G, 64);
        _tile_dpbf16ps(7, 4, 1);
        _tile_dpbf16ps(7, 5, 1);
        _tile_dpbf16ps(7, 6, 1);
        _tile_stored(7, ak + (size_t)c * 16 * G, 64);
        pf.steps(per);
      }
      if (kh + 1 < Hkv)
        for (int t = 0; t < nt; ++t)
          f16_split((const uint16_t*)(vtok[t] + (kh + 1) * vhb), X.hl + ((size_t)((kh + 1) & 1) * TILE + t) * D, D);
      pf.rest();
    }
    return;
  }
  if (fl & 64) {  // PV with AMX: C[2G x 16 dims] += A[2G x (16 tokens x 2)] . V[16 tokens x 32 dims] per 32 dims
    const int64_t vs_b = X.v_s1 * ce;
    bool direct = nt == 16;  // the tile's 16 V rows equally strided (one block, or adjacent ones): loaded in place
    if ((fl & 16) && nt < 16) std::memset(X.cbuf + (size_t)nt * Hkv * D, 0, (size_t)(16 - nt) * Hkv * D * 2);
    for (int t = 1; direct && t < 16; ++t) direct = vtok[t] == vtok[0] + t * vs_b;
    for (int kh = 0; kh < Hkv; ++kh) {
      PfList pf;  // a slice of the next tile's K rows (tokens kh * nn / Hkv ..), all KV heads
      if (X.prefetch && nn)
        pf.init(nextk + kh * nn / Hkv, (kh + 1) * nn / Hkv - kh * nn / Hkv, Hkv, khb, (int64_t)D * ce);
      const char* vb;
      int64_t vstride;
      if (fl & 16) {  // fp8: rows converted to bf16 above (vconv, rows past nt zeroed)
        vb = (const char*)(X.cbuf + (size_t)kh * D); vstride = (int64_t)Hkv * D * 2;
      } else if (direct) { vb = vtok[0] + kh * vhb; vstride = vs_b; }
      else {  // odd tile: rows copied, zeros past nt (0 * garbage could be NaN)
        for (int t = 0; t < 16; ++t)
          if (t < nt) std::memcpy(X.vz + (size_t)t * D, vtok[t] + kh * vhb, (size_t)D * 2);
          else std::memset(X.vz + (size_t)t * D, 0, (size_t)D * 2);
        vb = (const char*)X.vz; vstride = D * 2;
      }
      float* ak = acc + (size_t)kh * G * D;
      const int per = (pf.lines() + ND / 2 - 1) / (ND / 2);
      _tile_loadd(3, X.pa + (size_t)kh * 2 * G * 32, 64);
      if (G <= 8) {  // one product of 2G rows per 32 dims
        for (int c = 0; c < ND / 2; ++c) {
          _tile_loadd(5, ak + (size_t)c * 32 * G, 64);
          _tile_loadd(4, vb + 64 * c, vstride);
          _tile_dpbf16ps(5, 3, 4);
          _tile_stored(5, ak + (size_t)c * 32 * G, 64);
          pf.steps(per);
        }
      } else {  // 9 to 16 heads: the even-dim rows (tiles 3, 5) and the odd-dim rows (tiles 6, 7), G rows each
        _tile_loadd(6, X.pa + (size_t)kh * 2 * G * 32 + (size_t)G * 32, 64);
        for (int c = 0; c < ND / 2; ++c) {
          _tile_loadd(4, vb + 64 * c, vstride);
          _tile_loadd(5, ak + (size_t)c * 32 * G, 64);
          _tile_dpbf16ps(5, 3, 4);
          _tile_stored(5, ak + (size_t)c * 32 * G, 64);
          _tile_loadd(7, ak + (size_t)c * 32 * G + 16 * G, 64);
          _tile_dpbf16ps(7, 6, 4);
          _tile_stored(7, ak + (size_t)c * 32 * G + 16 * G, 64);
          pf.steps(per);
        }
      }
      pf.rest();
    }
    return;
  }
#endif
  for (int kh = 0; kh < Hkv; ++kh) {
    PfList pf;  // a slice of the next tile's K rows (tokens kh * nn / Hkv ..), all KV heads
    if (X.prefetch && nn && !X.sbs)
      pf.init(nextk + kh * nn / Hkv, (kh + 1) * nn / Hkv - kh * nn / Hkv, Hkv, khb, (int64_t)D * ce);
    const char* vr[TILE + 1];
    for (int t = 0; t < nt; ++t) vr[t] = vconv ? (const char*)(X.cbuf + ((size_t)t * Hkv + kh) * D) : vtok[t] + kh * vhb;
    vr[nt] = nullptr;  // an odd last token pairs with zeros (pv_dp)
    const int h0 = kh * G;
#if defined(__AVX512BF16__)
    if ((fl & 8) && (ND % 2) == 0) {
#if defined(ATTNSOLVE_FP8BF)
      if ((fl & 16) && !vconv) {
        fp8_rows_to_bf16(ctype, vr, nt, 0, X.cbuf, D, fl & 32);
        for (int t = 0; t < nt; ++t) vr[t] = (const char*)(X.cbuf + (size_t)t * D);
      }
#endif
      int g = 0;
      for (; g + 8 <= G; g += 8) pv_dp<8, ND>(pf, vr, nt, X.pp + h0 + g, Hp, acc + (size_t)(h0 + g) * D);
      for (; g + 4 <= G; g += 4) pv_dp<4, ND>(pf, vr, nt, X.pp + h0 + g, Hp, acc + (size_t)(h0 + g) * D);
      for (; g < G; ++g) pv_dp<1, ND>(pf, vr, nt, X.pp + h0 + g, Hp, acc + (size_t)(h0 + g) * D);
      pf.rest();
      continue;
    }
#endif
    if ((fl & 2) && (ND % 2) == 0) {
      int g = 0;
      for (; g + 8 <= G; g += 8) pv_bw<8, ND>(pf, vr, nt, s + h0 + g, Hp, acc + (size_t)(h0 + g) * D);
      for (; g + 4 <= G; g += 4) pv_bw<4, ND>(pf, vr, nt, s + h0 + g, Hp, acc + (size_t)(h0 + g) * D);
      for (; g < G; ++g) pv_bw<1, ND>(pf, vr, nt, s + h0 + g, Hp, acc + (size_t)(h0 + g) * D);
      pf.rest();
      continue;
    }
    if (ctype == F16) {
      int g = 0;
      for (; g + 8 <= G; g += 8) pv_f16<8, ND>(pf, vr, nt, s + h0 + g, Hp, acc + (size_t)(h0 + g) * D);
      for (; g + 4 <= G; g += 4) pv_f16<4, ND>(pf, vr, nt, s + h0 + g, Hp, acc + (size_t)(h0 + g) * D);
      for (; g < G; ++g) pv_f16<1, ND>(pf, vr, nt, s + h0 + g, Hp, acc + (size_t)(h0 + g) * D);
      pf.rest();
      continue;
    }
    const float* vf[TILE];
    for (int t = 0; t < nt; ++t) {
      if (ctype == F32) vf[t] = (const float*)vr[t];
      else { conv_row<ND>(ctype, vr[t], X.buf + (size_t)t * D, 1.0f); vf[t] = X.buf + (size_t)t * D; }
    }
    int g = 0;
    for (; g + 8 <= G; g += 8) pv_f32<8, ND>(pf, vf, nt, s + h0 + g, Hp, acc + (size_t)(h0 + g) * D);
    for (; g + 4 <= G; g += 4) pv_f32<4, ND>(pf, vf, nt, s + h0 + g, Hp, acc + (size_t)(h0 + g) * D);
    for (; g < G; ++g) pv_f32<1, ND>(pf, vf, nt, s + h0 + g, Hp, acc + (size_t)(h0 + g) * D);
    pf.rest();
  }
}

#if defined(ATTNSOLVE_AMX)
// The pipelined AMX path (bf16 cache with 16-token groups inside one block, or an fp8 cache at any block size
// and strides; bf16 output, up to 8 heads per KV head): tile i's scores and tile i-1's P . V in one loop per KV
// head, K rows of one tile and V rows of the one before read side by side, and the next tile's K and V rows prefetched side by side over the
// loop.  In a microbenchmark of shuffled 32 KiB blocks with the same arithmetic per line, one core read
// 10.1 to 10.3 GB/s interleaving K and V against 7.7 to 8.7 reading them one after the other; in the
// kernel (cache evicted before each call, two threads) 1.02 to 1.08x at heads 128 and 256 and 1.21x at
// GQA 8 head 64 over one tile at a time (without the prefetches: 0.93 to 0.95x).  The operations on the
// accumulators are the same, in the same order: results are identical to the one-tile path (wherever that path
// uses AMX too: for fp8 it needs a token's KV heads in one run).
// kt: tile i's K rows (nullptr: no scores, the last P . V); vp: tile i-1's V rows (nullptr: none), ntp
// its token count; the A tiles of tile i-1 are in X.pa.  Scores go to X.s, scaled.  nk/nv: the next
// tile's rows (nn of them) to prefetch.  fp8 (X.pce == 1): the rows given are fp8, and each KV head's rows are
// widened to bf16 (X.k8) just before their tile loads: the conversion's output stays in L1 (converting whole
// token rows of all KV heads first, as the one-tile path does, wrote up to 64 KiB per tile).
template <int ND>
static void qk_pv_amx(const TileCtx& X, const char* const* kt, int nt, const char* const* vp, int ntp, float* acc,
                      const char* const* nk, const char* const* nv, int nn) {
  constexpr int D = ND * 16;
  const int Hkv = X.Hkv, G = X.G, Hp = X.Hp;
  const int64_t khb = X.k_s2 * 2, vhb = X.v_s2 * 2, kstride = X.k_s1 * 2, vs_b = X.v_s1 * 2;
  PfList pk, pv;  // the next tile's K and V rows, side by side, spread over the loop
  const bool pf = X.prefetch && nn > 0;
  if (pf) {  // the raw rows (an fp8 cache's rows are widened below, one KV head at a time)
    pk.init(nk, nn, Hkv, X.k_s2 * X.pce, (int64_t)D * X.pce);
    pv.init(nv, nn, Hkv, X.v_s2 * X.pce, (int64_t)D * X.pce);
  }
  const int per = pf ? (pk.lines() + Hkv * (ND / 2) - 1) / (Hkv * (ND / 2)) : 0;
#if defined(ATTNSOLVE_FP8BF)
  const bool f8 = X.pce == 1;
#else
  const bool f8 = false;
#endif
  bool direct = vp && ntp == 16;
  for (int t = 1; direct && t < 16; ++t) direct = vp[t] == vp[0] + t * vs_b;
  for (int kh = 0; kh < Hkv; ++kh) {
    const uint16_t* qv = X.qvnni + (size_t)kh * D * G;  // [D/2][G][2]
    const char* vb = nullptr;
    int64_t vstride = 0;
    float* ak = acc + (size_t)kh * G * D;
    if (vp && f8) {  // fp8: this KV head's V rows widened to bf16 (zeros past ntp: 0 * garbage could be NaN)
      uint16_t* v8 = X.k8 + 16 * D;
#if defined(ATTNSOLVE_FP8BF)
      fp8_rows_to_bf16(X.ctype, vp, ntp, kh * X.v_s2, v8, D, X.flags & 32);
#endif
      if (ntp < 16) std::memset(v8 + (size_t)ntp * D, 0, (size_t)(16 - ntp) * D * 2);
      vb = (const char*)v8; vstride = D * 2;
      _tile_loadd(3, X.pa + (size_t)kh * 2 * G * 32, 64);
    } else
    if (vp) {
      if (direct) { vb = vp[0] + kh * vhb; vstride = vs_b; }
      else {  // a partial group: rows copied, zeros past ntp (0 * garbage could be NaN)
        for (int t = 0; t < 16; ++t)
          if (t < ntp) std::memcpy(X.vz + (size_t)t * D, vp[t] + kh * vhb, (size_t)D * 2);
          else std::memset(X.vz + (size_t)t * D, 0, (size_t)D * 2);
        vb = (const char*)X.vz; vstride = D * 2;
      }
      _tile_loadd(3, X.pa + (size_t)kh * 2 * G * 32, 64);
    }
    const char* kb = kt ? kt[0] + kh * khb : nullptr;
    int64_t ks = kstride;
    if (kt && f8) {  // fp8: this KV head's K rows widened to bf16 (rows past nt: garbage scores, never read)
#if defined(ATTNSOLVE_FP8BF)
      fp8_rows_to_bf16(X.ctype, kt, nt, kh * X.k_s2, X.k8, D, X.flags & 32);
#endif
      kb = (const char*)X.k8; ks = D * 2;
    }
    if (kt) _tile_zero(0);
    for (int c = 0; c < ND / 2; ++c) {
      if (kt) {
        _tile_loadd(1, kb + 64 * c, ks);
        _tile_loadd(2, qv + (size_t)c * 32 * G, G * 4);
        _tile_dpbf16ps(0, 1, 2);
      }
      if (vp) {
        _tile_loadd(5, ak + (size_t)c * 32 * G, 64);
        _tile_loadd(4, vb + 64 * c, vstride);
        _tile_dpbf16ps(5, 3, 4);
        _tile_stored(5, ak + (size_t)c * 32 * G, 64);
      }
      if (per) { pk.steps(per); pv.steps(per); }
    }
    if (kt) _tile_stored(0, X.s + kh * G, Hp * 4);  // S^T rows = tokens (rows past nt: garbage, never read)
  }
  if (pf) { pk.rest(); pv.rest(); }
  if (kt) {
    const __m512 vscale = _mm512_set1_ps(X.scale);
    for (int t = 0; t < nt; ++t)
      for (int hb = 0; hb < Hp; hb += 16) _mm512_storeu_ps(X.s + (size_t)t * Hp + hb, _mm512_mul_ps(_mm512_loadu_ps(X.s + (size_t)t * Hp + hb), vscale));
  }
}
typedef void (*QkPvFn)(const TileCtx&, const char* const*, int, const char* const*, int, float*,
                       const char* const*, const char* const*, int);
static QkPvFn pick_qk_pv(int D) {
  switch (D) {
    case 32: return qk_pv_amx<2>;
    case 64: return qk_pv_amx<4>;
    case 96: return qk_pv_amx<6>;
    case 128: return qk_pv_amx<8>;
    case 160: return qk_pv_amx<10>;
    case 192: return qk_pv_amx<12>;
    case 224: return qk_pv_amx<14>;
    case 256: return qk_pv_amx<16>;
    default: return nullptr;
  }
}
#endif

typedef void (*TileFn)(const TileCtx&, const char* const*, const char* const*, int, const char* const*, int,
                       const char* const*, int, float*, float*, float*);
static TileFn pick_tile(int D) {
  switch (D) {
    case 32: return tile_avx<2>;
    case 64: return tile_avx<4>;
    case 80: return tile_avx<5>;
    case 96: return tile_avx<6>;
    case 112: return tile_avx<7>;
    case 128: return tile_avx<8>;
    case 160: return tile_avx<10>;
    case 192: return tile_avx<12>;
    case 224: return tile_avx<14>;
    case 256: return tile_avx<16>;
    default: return nullptr;
  }
}
#else
typedef void (*TileFn)(int);
static TileFn pick_tile(int) { return nullptr; }
#endif

struct Item { int row; int seq; int lo; int hi; int nr; int64_t off; };  // nr rows from `row`; partial slots from `off` (per head)

}  // namespace

// Whether this build has the vector tile for head size D (AVX-512): the path that takes several query rows per work
// item (rows_per_item > 1).  Without it the rows run one per item on the portable loops, so the caller keeps long
// prefills on torch's flash kernel.
extern "C" int attnsolve_tile_ok(int D) { return pick_tile(D) != nullptr ? 1 : 0; }

// Prefill's bounded gather: the first L tokens of one sequence's paged K and V, written as
// contiguous [Hkv, L, D] / [Hkv, L, Dv] (the layout torch's flash kernel reads fastest) with one
// memcpy per (head, token) row, split over (head, block) items for both threads.  Returns 1 + the
// index of the first bad block-table entry (nothing written), else 0.  Strides are in elements.
extern "C" int attnsolve_gather_kv(
    int esz, const void* kc, int64_t k_s0, int64_t k_s1, int64_t k_s2,
    const void* vc, int64_t v_s0, int64_t v_s1, int64_t v_s2,
    const int32_t* blocks, int L, int BS, int Hkv, int D, int Dv, int nthreads, int64_t num_blocks,
    void* ok, void* ov, int do_v) {
  const int nblk = (L + BS - 1) / BS;
  for (int b = 0; b < nblk; ++b)
    if (blocks[b] < 0 || blocks[b] >= num_blocks) return 1 + b;
  // one work item per block, all its KV heads: the block is read in address order (token rows are
  // contiguous across KV heads in vLLM's layout) and each row lands in its head's run; the earlier
  // (head, block) items read every block once per head, 256-byte pieces 2 KiB apart (bf16, 8 heads
  // of 128, two threads: a 512-token gather right after a flash call 0.35 -> 0.25 ms; 0.125 ms warm)
  #pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int b = 0; b < nblk; ++b) {
    const int64_t blk = blocks[b];
    const int t0 = b * BS, t1 = std::min(L, t0 + BS);
    for (int t = t0; t < t1; ++t) {
      const char* sk = (const char*)kc + (blk * k_s0 + (int64_t)(t - t0) * k_s1) * esz;
      for (int h = 0; h < Hkv; ++h)
        std::memcpy((char*)ok + ((int64_t)h * L + t) * D * esz, sk + (int64_t)h * k_s2 * esz, (size_t)D * esz);
      if (do_v) {
        const char* sv = (const char*)vc + (blk * v_s0 + (int64_t)(t - t0) * v_s1) * esz;
        for (int h = 0; h < Hkv; ++h)
          std::memcpy((char*)ov + ((int64_t)h * L + t) * Dv * esz, sv + (int64_t)h * v_s2 * esz, (size_t)Dv * esz);
      }
    }
  }
  return 0;
}

// The vector-path scores' side-by-side prefetch (next tile's K and V during the scores, nothing during P . V) or
// the split one (this tile's V during the scores, the next tile's K during P . V).  Side by side measured 1.10 to
// 1.17x at GQA 8 head 64 on the AMX Xeon (sessions before 28) but 0.70 to 0.94x on the AMD Zen 4 VM (cache
// evicted before each call, two threads, the two orders alternating in the same rounds: bf16 b1 32/8 d128 16k 71
// -> 83% of the read rate with the split order, fp32 GQA 8 head 64 47 -> 62%): there the scores outrun the memory
// while the P . V phase issues no prefetch at all.  On the AMX Xeon measured again in session 34 (prefetches in the
// binary, whole decode table twice per order, orders alternating by process): the split order gained fp16 6 to 10
// points of the read rate at heads 128 and 256 (b1 16k 62-63 -> 71-72%), fp8 and bf16 0 to 5, others level; so it
// is the default on every CPU.  ATTNSOLVE_CPU_PREFETCH_SBS=1 takes the side-by-side order (for comparisons).
static int sbs_permitted() {
  static int ok = -1;
  if (ok < 0) ok = env_on("ATTNSOLVE_CPU_PREFETCH_SBS") ? 1 : 0;
  return ok;
}

static int prefetch_on() {  // experiment switch: ATTNSOLVE_CPU_PREFETCH=0
  static int ok = -1;
  if (ok < 0) ok = env_off("ATTNSOLVE_CPU_PREFETCH") ? 0 : 1;
  return ok;
}
#if defined(__AVX512BF16__)
static int bf16_pv_permitted() {  // ATTNSOLVE_CPU_BF16_PV=0 keeps the float32 PV product (for comparisons)
  static int ok = -1;
  if (ok < 0) ok = env_off("ATTNSOLVE_CPU_BF16_PV") ? 0 : 1;
  return ok;
}
#endif

#if defined(ATTNSOLVE_AMX)
static int amx_pv_permitted() {  // ATTNSOLVE_CPU_AMX_PV=0 keeps the vdpbf16ps PV product (ATTNSOLVE_CPU_AMX=0: both off)
  static int ok = -1;
  if (ok < 0) ok = env_off("ATTNSOLVE_CPU_AMX_PV") ? 0 : 1;
  return ok;
}
#endif

#if defined(ATTNSOLVE_AMX)
// fp16 caches on AMX (flag 128) from this many query heads per KV head: below it the per-element split
// (about 6 vector uops per 16 values on the two 512-bit ports, about as much as the tile products and the
// softmax together) costs more than the FMAs it replaces.  Measured on the AMX box (one thread, KV GB/s,
// forced on vs the FMA path): G 4 0.75 to 0.8x, G 8 0.82 to 0.96x, G 9 0.94 to 1.07x, G 10 1.02 to 1.2x,
// G 12 1.0 to 1.45x, G 16 1.1 to 1.5x.  ATTNSOLVE_CPU_AMX_F16=0 keeps the FMA path, =1 takes AMX at every
// G (for tests and comparisons); ATTNSOLVE_CPU_AMX=0 turns it off as well.
constexpr int F16_AMX_MIN_G = 10;
static int amx_f16_mode() {  // 0 off, 1 from F16_AMX_MIN_G heads per KV head, 2 always
  static int ok = -1;
  if (ok < 0) { const char* e = std::getenv("ATTNSOLVE_CPU_AMX_F16"); ok = env_off("ATTNSOLVE_CPU_AMX_F16") ? 0 : (e && e[0] == '1') ? 2 : 1; }
  return ok;
}
#endif
#if defined(ATTNSOLVE_AMX)
static int pipe_permitted() {  // ATTNSOLVE_CPU_PIPE=0 keeps one tile at a time on the AMX path (for comparisons)
  static int ok = -1;
  if (ok < 0) ok = env_off("ATTNSOLVE_CPU_PIPE") ? 0 : 1;
  return ok;
}
#endif
// float32 scores as outer products (qk_outer) from 16 query heads per KV head (an item's virtual heads
// included); ATTNSOLVE_CPU_OUTER=0 keeps the dot-product pairs (for comparisons; the results are the same).
constexpr int OUTER_MIN_HEADS = 16;
static int outer_permitted() {
  static int ok = -1;
  if (ok < 0) ok = env_off("ATTNSOLVE_CPU_OUTER") ? 0 : 1;
  return ok;
}
static int fp8_lane_permitted() {  // ATTNSOLVE_CPU_FP8_LANE=0 keeps the natural order (for comparisons)
  static int ok = -1;
  if (ok < 0) ok = env_off("ATTNSOLVE_CPU_FP8_LANE") ? 0 : 1;
  return ok;
}

// Per-thread scratch of attnsolve_paged_decode, kept across calls (see there).
struct DecodeScratch {
  std::vector<float> qf, acc, m, l, s, kf, vf, ts, tbuf, qlane, partbuf, qT;
  std::vector<uint16_t> qvnni, q2, cbuf, pabuf, vzbuf, p8buf;
  std::vector<uint32_t> pp, hlbuf;
};
template <class T> static inline T* grown(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

extern "C" int attnsolve_paged_decode(
    int qtype, int ctype, int otype,
    const void* q, int64_t q_s0, int64_t q_s1,
    const void* kc, int64_t k_s0, int64_t k_s1, int64_t k_s2,
    const void* vc, int64_t v_s0, int64_t v_s1, int64_t v_s2,
    void* out, int64_t o_s0, int64_t o_s1,
    const int32_t* qsl, const int32_t* sl, const int32_t* bt, int64_t bt_s0,
    const int32_t* seqs, int nseqs,
    int H, int Hkv, int D, int Dv, int BS,
    float scale, int causal, int window, float softcap, const float* sinks,
    float k_scale, float v_scale, int nthreads, int chunk, int64_t num_blocks, int rows_per_item) {
  init_luts();
#if defined(ATTNSOLVE_FP8BF)
  { static bool fp8bf_ready = false; if (!fp8bf_ready) { init_fp8_bf16(); fp8bf_ready = true; } }
#endif
  // Per-tensor dequantisation scales fold out of the inner loops: q.(k*ks)*scale = (q.k)*(scale*ks), and
  // sum p*(v*vs) = vs * sum p*v, applied once to each output row in the merge.
  const float out_scale = v_scale;
  scale *= k_scale;
  k_scale = 1.0f;
  v_scale = 1.0f;
  // every block the rows will read must exist: a bad table is an error, not a wild read
  for (int k = 0; k < nseqs; ++k) {
    const int i = seqs ? seqs[k] : k;
    const int32_t* row = bt + (int64_t)i * bt_s0;
    for (int b = 0; b * BS < sl[i]; ++b)
      if (row[b] < 0 || row[b] >= num_blocks) return 1 + i;
  }
  const int G = H / Hkv;
  const int qe = esize(qtype), ce = esize(ctype), oe = esize(otype);
  {  // chunks: multiples of lcm(BS, 32) (32: the portable span, two 16-token tiles), so that page sizes dividing 32 split a row identically
    int a = BS, b = 32;
    while (b) { const int r = a % b; a = b; b = r; }
    const int unit = BS / a * 32;
    chunk = std::max(unit, (chunk + unit - 1) / unit * unit);
  }
  const TileFn tile = (D == Dv) ? pick_tile(D) : nullptr;
  // flags for the tile: bit 0 = bf16 dot products for QK, bit 1 = bf16 V widened in the PV loop,
  // bit 3 = bf16 dot products for PV (probabilities rounded to bf16; bf16 output only), bit 4 = fp8
  // K/V converted to bf16 per tile (exact) so that an fp8 cache takes the bf16 paths
  const bool is_fp8 = ctype == E4M3 || ctype == E5M2;
#if defined(ATTNSOLVE_FP8BF)
  const bool fp8bf = tile && is_fp8 && qtype == BF16 && otype == BF16 && (D % 32) == 0;
#else
  const bool fp8bf = false;
#endif
#if defined(__AVX512BF16__)
  const bool pvdp = tile && (D % 32) == 0 && otype == BF16 && (ctype == BF16 || fp8bf) && bf16_pv_permitted();
#else
  const bool pvdp = false;
#endif
  (void)is_fp8;
  const int use_dp = ((qtype == BF16 && (ctype == BF16 || fp8bf) && k_scale == 1.0f) ? 1 : 0) |
                     ((tile && ctype == BF16 && D == Dv && (D % 32) == 0) ? 2 : 0) | (pvdp ? 8 : 0) | (fp8bf ? 16 : 0) |
                     ((fp8bf && pvdp && (D % 64) == 0 && fp8_lane_permitted()) ? 32 : 0);
#if defined(ATTNSOLVE_AMX)
  // (fp8: K and V rows are converted to contiguous bf16 rows first, so any block size: whole token rows on the
  // one-tile path, so the KV heads of a token must be one run there; the pipelined path (up to 8 heads per KV
  // head) widens one KV head's rows at a time and takes any strides, vLLM's CPU layout [blocks, Hkv, bs, D] too)
  // (every condition of the pipelined path: the one-tile path must never see such a cache, whatever the switches)
  const bool f8_pipe_able = fp8bf && tile && G <= 8 && D == Dv && (D % 32) == 0 && (use_dp & 1) && (use_dp & 8) &&
                            pipe_permitted() && amx_pv_permitted() && amx_permitted();
  const bool amx_src = (ctype == BF16 && BS >= 16) || (fp8bf && ((k_s2 == D && v_s2 == D) || f8_pipe_able));
  const int use_amx = (tile && amx_src && (use_dp & 1) && (D % 32) == 0 && G <= 16 && amx_permitted()) ? 4 : 0;
  // AMX for the PV product as well (bf16 cache and output, up to 16 query heads per KV head): flag 64
  const int use_amx_pv = (tile && (ctype == BF16 || (fp8bf && (v_s2 == D || f8_pipe_able))) && (use_dp & 8) && (D % 32) == 0 && G <= 16 &&
                          amx_pv_permitted() && amx_permitted()) ? 64 : 0;
#else
  const int use_amx = 0, use_amx_pv = 0;
#endif
#if defined(ATTNSOLVE_AMX)
  // fp16 cache with an fp16 or bf16 query on AMX-BF16 (two-term split, flag 128): any block size and strides
  const int f16_mode = amx_f16_mode();
  const int use_f16 = (tile && ctype == F16 && (qtype == F16 || qtype == BF16) && G <= 16 && f16_mode &&
                       (f16_mode == 2 || G >= F16_AMX_MIN_G) && amx_permitted()) ? 128 : 0;
#else
  const int use_f16 = 0;
#endif
#if defined(ATTNSOLVE_AMX)
  // the pipelined AMX path (qk_pv_amx): bf16 cache, both products on tiles, up to 8 heads per KV head,
  // whole 16-token groups per block; ATTNSOLVE_CPU_PIPE=0 keeps one tile at a time (for comparisons)
  // fp8 caches take it too (session 20), at any block size: each KV head's 16 K rows (this tile) and V rows (the
  // previous one) are widened to bf16 right before their tile loads, into two [16][D] buffers that stay in L1.
  // Same operations in the same order as the one-tile path (equal outputs); cache evicted before each call, two
  // threads, the old and new builds alternating: fp8 1.04 to 1.24x (b1 32/8 d128 16k 1.18 to 1.24x)
  const QkPvFn qkpv = (use_amx && use_amx_pv && G <= 8 && D == Dv && pipe_permitted() &&
                       ((ctype == BF16 && BS % 16 == 0) || fp8bf)) ? pick_qk_pv(D) : nullptr;
#endif
  // Several query rows of a sequence per work item (prefill, speculative decode) on the vector tile path: the
  // rows' heads become virtual heads of one item, so every K and V row read serves them all (a prefill read
  // its keys once per row).  Rows whose visible keys differ (the diagonal, a window's edge) are masked in
  // the tile; outputs equal one row per item's bit for bit.  Not with the AMX paths (their layouts are per G).
  const int RW = (tile && !use_amx && !use_amx_pv && !use_f16 && rows_per_item > 1) ? std::min(rows_per_item, 16) : 1;  // rows per item
  // Work items: (rows, key chunk), chunks aligned to absolute multiples of `chunk`.
  std::vector<Item> items;
  std::vector<int> row_first, row_count, rows, row_sub;
  std::vector<int> item_lo, item_hi;  // per item, RW entries: each row's visible positions [lo, hi)
  int64_t slots = 0;                  // partial-result slots (one per item, row and head)
  for (int k = 0; k < nseqs; ++k) {
    int i = seqs ? seqs[k] : k;
    int q0 = qsl[i], q1 = qsl[i + 1], L = sl[i], n = q1 - q0;
    for (int j0 = 0; j0 < n; j0 += RW) {
      const int nr = std::min(RW, n - j0);
      int lo_all = INT32_MAX, hi_all = 0;
      int lo_r[16], hi_r[16];
      for (int r = 0; r < nr; ++r) {
        const int p = L - n + j0 + r;
        hi_r[r] = causal ? p + 1 : L;
        lo_r[r] = window > 0 ? std::max(0, p - window + 1) : 0;
        lo_all = std::min(lo_all, lo_r[r]);
        hi_all = std::max(hi_all, hi_r[r]);
      }
      const int first = (int)items.size();
      for (int a = (lo_all / chunk) * chunk; a < hi_all; a += chunk) {
        items.push_back(Item{q0 + j0, i, std::max(a, lo_all), std::min(a + chunk, hi_all), nr, slots});
        slots += (int64_t)nr * H;
        for (int r = 0; r < RW; ++r) {
          item_lo.push_back(r < nr ? lo_r[r] : 0);
          item_hi.push_back(r < nr ? hi_r[r] : 0);
        }
      }
      for (int r = 0; r < nr; ++r) {
        row_first.push_back(first);
        row_count.push_back((int)items.size() - first);
        rows.push_back(q0 + j0 + r);
        row_sub.push_back(r);
      }
    }
  }
  const int nitems = (int)items.size();
  // per-item partial results: grow-only buffers of the calling thread (every item writes its own slots),
  // so a decode step does not first-touch fresh pages (a large vector is a fresh mmap every call)
  static thread_local std::vector<float> pacc_buf, pm_buf, pl_buf;
  if (pacc_buf.size() < (size_t)slots * Dv) pacc_buf.resize((size_t)slots * Dv);
  if (pm_buf.size() < (size_t)slots) { pm_buf.resize((size_t)slots); pl_buf.resize((size_t)slots); }
  float* const pacc = pacc_buf.data();
  float* const pm = pm_buf.data();
  float* const pl = pl_buf.data();

  #pragma omp parallel num_threads(nthreads)
  {
    const int Hmax = H * RW;                 // heads of an item: its rows' heads (virtual heads, RW > 1)
    const int Hp = (Hmax + 15) / 16 * 16;    // the scratch's; an item's own is X.Hp
    // per-thread scratch kept across calls and grown as needed, contents undefined on entry (every buffer
    // is written before it is read; the partial-product vectors are cleared below): allocating and
    // zero-filling ~100 KB per call cost about as much as a 16-token decode
    static thread_local DecodeScratch S;
    float* const qf = grown(S.qf, (size_t)Hmax * D);
    float* const acc = grown(S.acc, (size_t)Hmax * Dv);
    float* const m = grown(S.m, (size_t)Hp);
    float* const l = grown(S.l, (size_t)Hp);
    float* const s = grown(S.s, (size_t)32 * H);
    float* const kf = grown(S.kf, (size_t)D);
    float* const vf = grown(S.vf, (size_t)Dv);
    uint16_t* const qvnni = grown(S.qvnni, use_f16 ? (size_t)H * D * 4 : use_amx ? (size_t)H * D : 0);
#if defined(ATTNSOLVE_AVX512)
    float* const ts = grown(S.ts, (size_t)TILE * Hp);
    float* const tbuf = grown(S.tbuf, (size_t)TILE * D);
    uint16_t* const q2 = grown(S.q2, (use_dp & 1) ? (size_t)Hmax * D : 0);
    uint16_t* const cbuf = grown(S.cbuf, (use_dp & 16) ? (size_t)TILE * Hkv * D : 0);
    float* const qlane = grown(S.qlane, (use_dp & 32) ? (size_t)Hmax * D : 0);
    uint32_t* const pp = grown(S.pp, (use_dp & 8) ? (size_t)(TILE / 2) * Hp : 0);
    float* const partbuf = grown(S.partbuf, (size_t)2 * Hp * 16 + 16);  // [2][Hp] vectors, 64-byte aligned below
    std::memset(partbuf, 0, sizeof(float) * ((size_t)2 * Hp * 16 + 16));  // lanes >= H stay 0
    uint16_t* const pabuf = grown(S.pabuf, (use_amx_pv || use_f16) ? (size_t)Hkv * 3 * G * 32 + 32 : 0);
    uint16_t* const vzbuf = grown(S.vzbuf, use_amx_pv ? (size_t)TILE * D : 0);
    uint32_t* const hlbuf = grown(S.hlbuf, use_f16 ? (size_t)2 * TILE * D + 16 : 0);
    const bool outer = tile && ctype == F32 && !(use_dp & 1) && outer_permitted();
    const int gq_max = (G * RW + 15) / 16 * 16;
    float* const qT = grown(S.qT, outer ? (size_t)Hkv * D * gq_max : 0);
    TileCtx X;
    X.ctype = ctype; X.Hkv = Hkv; X.G = G; X.H = H; X.Hp = Hp; X.flags = use_dp | use_amx_pv | use_f16;
    X.pa = (uint16_t*)(((uintptr_t)pabuf + 63) & ~(uintptr_t)63); X.vz = vzbuf;
    X.hl = (uint32_t*)(((uintptr_t)hlbuf + 63) & ~(uintptr_t)63);
    X.k_s1 = k_s1; X.k_s2 = k_s2; X.v_s1 = v_s1; X.v_s2 = v_s2; X.scale = scale; X.softcap = softcap; X.prefetch = prefetch_on() != 0;
    X.qf = qf; X.q2 = q2; X.qvnni = qvnni; X.s = ts; X.pp = pp; X.part = (__m512*)(((uintptr_t)partbuf + 63) & ~(uintptr_t)63);
    X.buf = tbuf; X.cbuf = cbuf;
#endif
#if defined(ATTNSOLVE_AMX)
    if (use_f16) {
      TileCfg cfg;
      std::memset(&cfg, 0, sizeof(cfg));
      cfg.palette_id = 1;
      const uint8_t Gr = (uint8_t)G;
      cfg.rows[0] = 16; cfg.colsb[0] = (uint16_t)(G * 4);   // QK C: 16 tokens x G fp32 scores
      cfg.rows[1] = 16; cfg.colsb[1] = 64;                  // QK A: 16 tokens x 16 dims of (hi, lo) K pairs
      cfg.rows[2] = 16; cfg.colsb[2] = (uint16_t)(G * 4);   // QK B: 16 dims x G heads x (qh, qh)
      cfg.rows[3] = 16; cfg.colsb[3] = (uint16_t)(G * 4);   // QK B: 16 dims x G heads x (ql, ql)
      cfg.rows[4] = Gr; cfg.colsb[4] = 64;                  // PV A: G heads x 16 tokens x (ph, ph)
      cfg.rows[5] = Gr; cfg.colsb[5] = 64;                  // PV A: G heads x 16 tokens x (pl, pl)
      cfg.rows[6] = Gr; cfg.colsb[6] = 64;                  // PV A: G heads x 16 tokens x (p3, p3); PV B: tile 1
      cfg.rows[7] = Gr; cfg.colsb[7] = 64;                  // PV C: G heads x 16 fp32 dims
      _tile_loadconfig(&cfg);
    } else
    if (use_amx || use_amx_pv) {
      TileCfg cfg;
      std::memset(&cfg, 0, sizeof(cfg));
      cfg.palette_id = 1;
      cfg.rows[0] = 16; cfg.colsb[0] = (uint16_t)(G * 4);   // C: 16 tokens x G fp32 scores
      cfg.rows[1] = 16; cfg.colsb[1] = 64;                  // A: 16 tokens x 32 bf16 dims of K
      cfg.rows[2] = 16; cfg.colsb[2] = (uint16_t)(G * 4);   // B: 16 dim pairs x G heads x 2 bf16 of q
      if (use_amx_pv) {
        const uint8_t R = (uint8_t)(G <= 8 ? 2 * G : G);    // rows per product (G > 8: even and odd dims apart)
        cfg.rows[3] = R; cfg.colsb[3] = 64;                 // PV A: 2G rows (even / odd dims) x 16 tokens x 2 bf16
        cfg.rows[4] = 16; cfg.colsb[4] = 64;                // PV B: 16 tokens x 32 bf16 dims of V, in place
        cfg.rows[5] = R; cfg.colsb[5] = 64;                 // PV C: 2G rows x 16 fp32 dims
        if (G > 8) { cfg.rows[6] = R; cfg.colsb[6] = 64; cfg.rows[7] = R; cfg.colsb[7] = 64; }  // odd-dim A and C
      }
      _tile_loadconfig(&cfg);
    }
#endif
    int prepped_row = -1, prepped_nr = 0;  // the query rows whose converted copies (qf, q2, qlane, qvnni) this thread holds
    int zeroed_hv = H;  // the heads the partial-product lanes were last cleared for
    #pragma omp for schedule(dynamic, 1) nowait
    for (int it = 0; it < nitems; ++it) {
      const Item& I = items[it];
      // a row's chunks are consecutive items: its query is converted once per thread, not once per chunk
      // (about 10 us for 32 heads of 128 dims: a 1k-key bf16 row on one thread, four chunks, 0.353 -> 0.322 ms)
      const int nr = I.nr, Hv = H * nr;  // this item's heads (virtual heads of its rows: kh * G * nr + r * G + g)
      if (I.row != prepped_row || nr != prepped_nr) {
      prepped_row = I.row;
      prepped_nr = nr;
      for (int vh = 0; vh < Hv; ++vh) {
        const int kh = vh / (G * nr), r = vh % (G * nr) / G, h = kh * G + vh % G;
        load_row(qtype, (const char*)q + ((int64_t)(I.row + r) * q_s0 + (int64_t)h * q_s1) * qe, &qf[(size_t)vh * D], D, 1.0f);
      }
#if defined(ATTNSOLVE_AVX512)
      if (outer && G * nr >= OUTER_MIN_HEADS) {  // q^T per KV head for qk_outer: [Hkv][D][gq], zero lanes past G * nr
        const int Gv = G * nr, gq = (Gv + 15) / 16 * 16;
        for (int kh = 0; kh < Hkv; ++kh)
          for (int d = 0; d < D; ++d) {
            float* dst = qT + ((size_t)kh * D + d) * gq;
            for (int v = 0; v < gq; ++v) dst[v] = v < Gv ? qf[((size_t)kh * Gv + v) * D + d] : 0.0f;
          }
      }
      if (tile) {  // the query in bf16 (rounded to nearest even) for the bf16 dot products
#if defined(__AVX512BF16__)
        if (use_dp & 32)  // fp8 K rows come in lane order (fp8_to_bf16): the query's dims follow it
          for (size_t i = 0; i < (size_t)Hv * D; i += 64)
            for (int r = 0; r < 64; ++r) qlane[i + r] = qf[i + g_fp8_lane[r]];
        const float* qsrc = (use_dp & 32) ? qlane : qf;
        if (use_dp & 1)
          for (size_t i = 0; i < (size_t)Hv * D; i += 16) {
            _mm256_storeu_si256((__m256i*)&q2[i], (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(&qsrc[i])));
          }
#if defined(ATTNSOLVE_AMX)  // (split_pairs exists only there; without AMX use_f16 is 0)
        if (use_f16) {  // q^T per KV head as [D][G] (qh, qh) pairs, then the same with (ql, ql)
          uint32_t* qh = (uint32_t*)qvnni;
          uint32_t* ql = qh + (size_t)H * D;
          alignas(64) uint32_t th[16], tl[16];
          for (int h = 0; h < H; ++h)
            for (int d = 0; d < D; d += 16) {
              __m512i a, b;
              split_pairs(_mm512_loadu_ps(&qf[(size_t)h * D + d]), a, b);
              _mm512_store_si512((void*)th, a);
              _mm512_store_si512((void*)tl, b);
              const int kh = h / G, g = h % G;
              for (int j = 0; j < 16; ++j) {
                qh[(size_t)kh * D * G + (size_t)(d + j) * G + g] = th[j];
                ql[(size_t)kh * D * G + (size_t)(d + j) * G + g] = tl[j];
              }
            }
        }
#endif
        if (use_amx) {  // q^T per KV head as [D/2][G][2] bf16 (round to nearest even; fp8: lane order).  A head's
          // dim pair is one 32-bit word, so the layout is a [G][D/2] -> [D/2][G] transpose of words per KV head
          uint32_t* qw = (uint32_t*)qvnni;
          alignas(64) uint16_t hb16[256];  // one head's D bf16 values (AMX: D is a multiple of 32, at most 256)
          const uint32_t* hw = (const uint32_t*)hb16;
          for (int h = 0; h < H; ++h) {
            for (int d = 0; d < D; d += 16)
              _mm256_store_si256((__m256i*)(hb16 + d), bf16_rne16(_mm512_loadu_ps(&qsrc[(size_t)h * D + d])));
            uint32_t* dst = qw + (size_t)(h / G) * (D / 2) * G + (h % G);
            for (int p = 0; p < D / 2; ++p) dst[(size_t)p * G] = hw[p];
          }
        }
#endif
      }
#endif
      }  // query conversions
      const int Hpv = (Hv + 15) / 16 * 16;
#if defined(ATTNSOLVE_AVX512)
      X.G = G * nr; X.H = Hv; X.Hp = Hpv; X.nr = nr; X.g0 = G;
      const bool outer_item = outer && G * nr >= OUTER_MIN_HEADS;
      X.qT = outer_item ? qT : nullptr;
      X.gq = (G * nr + 15) / 16 * 16;
      X.lo_r = &item_lo[(size_t)it * RW];
      X.hi_r = &item_hi[(size_t)it * RW];
      X.all_lo = *std::max_element(X.lo_r, X.lo_r + nr);
      X.all_hi = *std::min_element(X.hi_r, X.hi_r + nr);
      if (Hv != zeroed_hv) {  // lanes Hv .. Hpv of the partial products read as zeros
        std::memset(partbuf, 0, sizeof(float) * ((size_t)2 * Hp * 16 + 16));
        zeroed_hv = Hv;
      }
#endif
      std::fill(acc, acc + (size_t)Hv * Dv, 0.0f);
      std::fill(m, m + Hpv, -INFINITY);
      std::fill(l, l + Hpv, 0.0f);
      const int32_t* btr = bt + (int64_t)I.seq * bt_s0;
#if defined(ATTNSOLVE_AVX512)
      if (tile) {
        // tiles at absolute multiples of TILE (page-size independent), rows gathered by pointer
        const char* ktok[TILE];
        const char* vtok[TILE];
        const char* nk[TILE];
        const char* nv_sbs[TILE];
        // the vector-path scores prefetch the next tile's K and V rows side by side (two streams at once)
        // where a token row (all KV heads) is at most 2 KiB; one cache read at a time otherwise (this tile's V
        // during the scores, the next tile's K during P . V).  Cache evicted before each call, two threads:
        // GQA 8 head 64 1.10 to 1.17x (fp32, fp16, bf16 without AMX), fp16 at heads 128/256 1.04 to 1.05x,
        // fp32 with 4 KiB rows 0.96 to 0.98x (hence the bound).  Those figures are the AMX Xeon's from before the
        // prefetches were emitted at all (prefetch_l2, session 31); with them the side-by-side order lost on the Zen 4
        // VM (GQA 8 head 64 fp32 0.68x, fp16 0.86 to 0.97x, bf16 1.03x; fp16 b8 head 128 0.85x) and on the Xeon
        // (session 34: fp16 6 to 10 points of the read rate behind), so it is off by default (sbs_permitted)
        const bool sbs_rows = X.prefetch && sbs_permitted() && (int64_t)Hkv * D * ce <= 2048;
        // rows of positions pos .. pos + n - 1 (one block-table lookup per block, no division per token)
        auto rows = [&](const void* base, int64_t s0, int64_t s1, int pos, int n, const char** out) {
          int b = pos / BS, sl = pos - b * BS;
          const char* p = (const char*)base + ((int64_t)btr[b] * s0 + (int64_t)sl * s1) * ce;
          for (int t = 0; t < n; ++t) {
            out[t] = p;
            if (++sl == BS) {
              sl = 0;
              if (t + 1 < n) p = (const char*)base + (int64_t)btr[++b] * s0 * ce;
            } else {
              p += s1 * ce;
            }
          }
        };
#if defined(ATTNSOLVE_AMX)
        if (qkpv) {  // scores of tile i beside P . V of tile i - 1 (qk_pv_amx), then tile i's softmax
          const char* vprev[TILE];
          const char* nvv[TILE];
          int ntp = 0;
          // fp8: qk_pv_amx widens each KV head's K rows (this tile) and V rows (the previous one) to bf16 as it
          // goes (X.k8: two [16][D] buffers; X.pce = 1 says the rows it is given are fp8)
          const bool f8 = fp8bf;
          X.k8 = f8 ? grown(S.p8buf, (size_t)32 * D) : nullptr;
          X.pce = ce;
          for (int t0 = I.lo; t0 < I.hi;) {
            const int t1 = std::min(I.hi, (t0 / TILE + 1) * TILE), nt = t1 - t0;
            const int nn = std::min(I.hi, t1 + TILE) - t1;
            rows(kc, k_s0, k_s1, t0, nt, ktok);
            rows(vc, v_s0, v_s1, t0, nt, vtok);
            if (nn > 0) { rows(kc, k_s0, k_s1, t1, nn, nk); rows(vc, v_s0, v_s1, t1, nn, nvv); }
            const bool amx_rows = f8 || (t0 % BS) + 16 <= BS;  // the 16-row group lies in one block
            if (amx_rows) {
              qkpv(X, ktok, nt, ntp ? vprev : nullptr, ntp, acc, nk, nvv, std::max(nn, 0));
              X.flags = use_dp | use_amx_pv | 256 | 512;  // the softmax (and the A tiles) only
            } else {  // scores on the vector path: finish the previous tile's P . V first
              if (ntp) qkpv(X, nullptr, 0, vprev, ntp, acc, nullptr, nullptr, 0);
              X.flags = use_dp | use_amx_pv | 512;
            }
            tile(X, ktok, vtok, nt, nullptr, 0, vtok, 0, acc, m, l);
            std::memcpy(vprev, vtok, sizeof(const char*) * nt);
            ntp = nt;
            t0 = t1;
          }
          if (ntp) qkpv(X, nullptr, 0, vprev, ntp, acc, nullptr, nullptr, 0);
          X.pce = 2;
        } else
#endif
        for (int t0 = I.lo; t0 < I.hi;) {
          const int t1 = std::min(I.hi, (t0 / TILE + 1) * TILE), nt = t1 - t0;
          // prefetch (hint T1: measured ~1.5x over T0 here): this tile's V rows while its scores are
          // computed, the next tile's K rows during its PV product (a longer distance, tried for
          // 4 KiB blocks, measured no better)
          const int nn = std::min(I.hi, t1 + TILE) - t1;
          rows(kc, k_s0, k_s1, t0, nt, ktok);
          rows(vc, v_s0, v_s1, t0, nt, vtok);
          if (nn > 0) rows(kc, k_s0, k_s1, t1, nn, nk);
          // an item's first tile: no earlier tile prefetched its K rows, so they are asked for all at once here
          // rather than met one demand miss at a time (cache evicted before each call, two threads, bf16 b1 32/8
          // heads of 128: 4k and 8k keys 1.03 to 1.08x)
          if (t0 == I.lo && X.prefetch) {
            PfList first;
            first.init(ktok, nt, Hkv, k_s2 * ce, (int64_t)D * ce);
            first.rest();
          }
          int fl = use_dp | use_amx_pv | use_f16;
          if (use_amx) {  // AMX loads 16 rows with one stride: each 16-row group must lie in one block
            bool ok = true;
            for (int tb = 0; tb < nt && !fp8bf; tb += 16) ok = ok && ((t0 + tb) % BS) + 16 <= BS;
            if (ok) fl |= 4;
          }
          X.flags = fl;
          X.sbs = nn > 0 && sbs_rows && !(fl & (4 | 128));  // only the vector-path scores take it
          if (X.sbs) { rows(vc, v_s0, v_s1, t1, nn, nv_sbs); X.nextv2 = nv_sbs; }
          X.pos0 = t0;
          tile(X, ktok, vtok, nt, nk, std::max(nn, 0), vtok, nt, acc, m, l);
          t0 = t1;
        }
      } else
#endif
      // spans of 32 tokens at absolute multiples of 32 (page-size independent, like the tiles)
      for (int t0 = I.lo, t1 = 0; t0 < I.hi; t0 = t1) {
        t1 = std::min(I.hi, (t0 / 32 + 1) * 32);
        const int nt = t1 - t0;
        // scores s[t][h]
        for (int t = 0; t < nt; ++t) {
          const int slot = (t0 + t) % BS;
          const char* kb = (const char*)kc + (int64_t)btr[(t0 + t) / BS] * k_s0 * ce;
          for (int kh = 0; kh < Hkv; ++kh) {
            const float* kr = row_f32(ctype, kb, (int64_t)slot * k_s1 + (int64_t)kh * k_s2, ce, kf, D, k_scale);
            for (int g = 0; g < G; ++g) {
              const int h = kh * G + g;
              const float* qh = &qf[(size_t)h * D];
              float a = 0.0f;
              #pragma omp simd reduction(+:a)
              for (int d = 0; d < D; ++d) a += qh[d] * kr[d];
              s[(size_t)h * 32 + t] = a * scale;
            }
          }
        }
        // online softmax per head over this span
        for (int h = 0; h < H; ++h) {
          float* sh = &s[(size_t)h * 32];
          if (softcap > 0.0f) for (int t = 0; t < nt; ++t) sh[t] = softcap * std::tanh(sh[t] / softcap);
          float bm = -INFINITY;
          for (int t = 0; t < nt; ++t) bm = std::max(bm, sh[t]);
          if (bm > m[h]) {
            const float corr = (m[h] == -INFINITY) ? 0.0f : fast_exp(m[h] - bm);
            if (corr != 1.0f) {
              l[h] *= corr;
              float* ah = &acc[(size_t)h * Dv];
              #pragma omp simd
              for (int d = 0; d < Dv; ++d) ah[d] *= corr;
            }
            m[h] = bm;
          }
          const float mh = m[h];
          float ls = 0.0f;
          #pragma omp simd reduction(+:ls)
          for (int t = 0; t < nt; ++t) { const float p = fast_exp(sh[t] - mh); sh[t] = p; ls += p; }
          l[h] += ls;
        }
        // acc[h] += p[h][t] * v[t]
        for (int t = 0; t < nt; ++t) {
          const int slot = (t0 + t) % BS;
          const char* vb = (const char*)vc + (int64_t)btr[(t0 + t) / BS] * v_s0 * ce;
          for (int kh = 0; kh < Hkv; ++kh) {
            const float* vr = row_f32(ctype, vb, (int64_t)slot * v_s1 + (int64_t)kh * v_s2, ce, vf, Dv, v_scale);
            for (int g = 0; g < G; ++g) {
              const int h = kh * G + g;
              const float p = s[(size_t)h * 32 + t];
              float* ah = &acc[(size_t)h * Dv];
              #pragma omp simd
              for (int d = 0; d < Dv; ++d) ah[d] += p * vr[d];
            }
          }
        }
      }
      if (use_f16) {  // undo the fp16 AMX PV layout: per KV head [D/16][G][16]
        float* dst = &pacc[(size_t)I.off * Dv];
        for (int h = 0; h < H; ++h) {
          const float* a = &acc[(size_t)(h / G) * G * Dv + (h % G) * 16];
          for (int c = 0; c < Dv / 16; ++c) std::memcpy(dst + (size_t)h * Dv + 16 * c, a + (size_t)c * 16 * G, 64);
        }
      }
#if defined(ATTNSOLVE_AMX)
      else if (use_amx_pv) {  // undo the AMX PV layout: per KV head [D/32][2G][16], head g's even dims in row g, odd in G + g
        float* dst = &pacc[(size_t)I.off * Dv];
        const __m512i ilo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        const __m512i ihi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
        alignas(64) float pos[32];
        for (int h = 0; h < H; ++h) {
          const float* a = &acc[(size_t)(h / G) * G * Dv + (h % G) * 16];
          float* dh = dst + (size_t)h * Dv;
          for (int c = 0; c < Dv / 32; ++c) {
            const __m512 ev = _mm512_loadu_ps(a + (size_t)c * 32 * G), od = _mm512_loadu_ps(a + (size_t)c * 32 * G + 16 * G);
            const __m512 lo = _mm512_permutex2var_ps(ev, ilo, od), hi = _mm512_permutex2var_ps(ev, ihi, od);
            if (!(use_dp & 32)) {  // V row positions 32c .. 32c + 31 are the dims
              _mm512_storeu_ps(dh + 32 * c, lo);
              _mm512_storeu_ps(dh + 32 * c + 16, hi);
            } else {  // lane order (fp8_to_bf16): position p of a 64-dim group holds dim g_fp8_lane[p]
              _mm512_store_ps(pos, lo);
              _mm512_store_ps(pos + 16, hi);
              const int base = 32 * c - (32 * c) % 64, off = (32 * c) % 64;
              for (int r = 0; r < 32; ++r) dh[base + g_fp8_lane[off + r]] = pos[r];
            }
          }
        }
      }
#endif
      else if (use_dp & 8) {  // undo the unpacklo/hi order of each 32-wide chunk (see pv_dp)
        float* dst = &pacc[(size_t)I.off * Dv];
        for (int h = 0; h < Hv; ++h)
          for (int c = 0; c < Dv; c += 32)
            for (int e = 0; e < 16; ++e) {
              const int p0 = c + 8 * (e / 4) + (e % 4), p1 = p0 + 4;  // V row positions (lane order: fp8_to_bf16)
              const int d0 = (use_dp & 32) ? p0 - p0 % 64 + fp8_lane_elem(p0 % 64) : p0;
              const int d1 = (use_dp & 32) ? p1 - p1 % 64 + fp8_lane_elem(p1 % 64) : p1;
              dst[(size_t)h * Dv + d0] = acc[(size_t)h * Dv + c + e];
              dst[(size_t)h * Dv + d1] = acc[(size_t)h * Dv + c + 16 + e];
            }
      } else if (use_dp & 2) {  // undo the [even, odd] order of each 32-wide chunk (see the tile's bf16 PV)
        float* dst = &pacc[(size_t)I.off * Dv];
        for (int h = 0; h < Hv; ++h)
          for (int c = 0; c < Dv; c += 32)
            for (int i = 0; i < 16; ++i) {
              dst[(size_t)h * Dv + c + 2 * i] = acc[(size_t)h * Dv + c + i];
              dst[(size_t)h * Dv + c + 2 * i + 1] = acc[(size_t)h * Dv + c + 16 + i];
            }
      } else
      std::memcpy(&pacc[(size_t)I.off * Dv], acc, sizeof(float) * Hv * Dv);
      std::memcpy(&pm[(size_t)I.off], m, sizeof(float) * Hv);
      std::memcpy(&pl[(size_t)I.off], l, sizeof(float) * Hv);
    }
#if defined(ATTNSOLVE_AMX)
    if (use_amx || use_amx_pv || use_f16) _tile_release();
#endif
  }
  // Merge the chunks of each row (log-sum-exp; sinks join the denominator) on the calling thread: it is
  // cheap for decode rows, and one barrier fewer matters on an oversubscribed machine; a prefill's rows (from
  // a million output values) are merged by the team
  const int nrows = (int)rows.size();
  #pragma omp parallel num_threads(nthreads) if ((int64_t)nrows * H * Dv >= (1 << 20))
  {
    std::vector<float> o(Dv);
    #pragma omp for schedule(static)
    for (int r = 0; r < nrows; ++r) {
      const int f = row_first[r], c = row_count[r], sub = row_sub[r];
      const int nr = items[f].nr;  // the rows of an item are its virtual heads: kh * G * nr + sub * G + g
      for (int h = 0; h < H; ++h) {
        const size_t vh = (size_t)(h / G) * G * nr + (size_t)sub * G + h % G;
        float M = sinks ? sinks[h] : -INFINITY;
        bool nan_row = std::isnan(M);
        for (int k = 0; k < c; ++k) {
          const size_t at = (size_t)items[f + k].off + vh;
          M = std::max(M, pm[at]);
          nan_row |= std::isnan(pl[at]) || std::isnan(pm[at]);
        }
        if (nan_row) {  // a NaN score (query, scale, key) or value: the row is NaN, as on the torch paths
          std::fill(o.begin(), o.end(), NAN);
          store_row(otype, (char*)out + ((int64_t)rows[r] * o_s0 + (int64_t)h * o_s1) * oe, o.data(), Dv);
          continue;
        }
        std::fill(o.begin(), o.end(), 0.0f);
        float den = 0.0f;
        if (M != -INFINITY) {
          if (sinks) den += std::exp(sinks[h] - M);
          for (int k = 0; k < c; ++k) {
            const size_t at = (size_t)items[f + k].off + vh;
            const float mk = pm[at];
            if (mk == -INFINITY) continue;
            const float w = std::exp(mk - M);
            den += w * pl[at];
            const float* a = &pacc[at * Dv];
            #pragma omp simd
            for (int d = 0; d < Dv; ++d) o[d] += w * a[d];
          }
        }
        const float inv = den > 0.0f ? out_scale / den : 0.0f;
        for (int d = 0; d < Dv; ++d) o[d] *= inv;
        store_row(otype, (char*)out + ((int64_t)rows[r] * o_s0 + (int64_t)h * o_s1) * oe, o.data(), Dv);
      }
    }
  }
  // a long prefill's partial results (one slot per row and head) are not kept past 512 MiB, as the prefill's gather
  // buffers are not (a 32k-row prefill of 32 heads of 128 holds 512 MiB here): the next such call maps them afresh
  if (pacc_buf.size() * sizeof(float) > ((size_t)512 << 20)) {
    std::vector<float>().swap(pacc_buf);
    std::vector<float>().swap(pm_buf);
    std::vector<float>().swap(pl_buf);
  }
  return 0;
}

#if defined(ATTNSOLVE_PYEXT)
// A CPython entry to attnsolve_paged_decode (built with -DATTNSOLVE_PYEXT and the interpreter's headers, loaded as
// the extension module `attnsolve_cpu_attn` by _cpu_ext.py; ctypes stays the fallback).  Why: ctypes converts
// the 39 arguments per call through its generic machinery, 4.4 us warm and 55 us when a decode step finds its
// caches evicted; this METH_FASTCALL function measured 0.24 and 13 us (2-vCPU Xeon VM, session 16).  The
// arguments are attnsolve_paged_decode's, in its order: ints, floats, and pointers as ints (None: null); the
// interpreter lock is released around the call, as ctypes does.
namespace {
constexpr int kDecodeArgs = 39;
// per argument: 'i' int, 'l' int64, 'p' pointer (int or None), 'f' float (parse_fastcall, cpu_common.h)
constexpr char kDecodeKinds[kDecodeArgs + 1] = "iiipllplllplllpllppplpiiiiiifiifpffiili";
static_assert(sizeof(kDecodeKinds) == kDecodeArgs + 1, "one kind per argument");

PyObject* py_paged_decode(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  long long iv[kDecodeArgs];
  void* pv[kDecodeArgs];
  double fv[kDecodeArgs];
  if (!parse_fastcall("paged_decode", kDecodeKinds, args, nargs, iv, pv, fv)) return nullptr;
  int r;
  Py_BEGIN_ALLOW_THREADS
  r = attnsolve_paged_decode(
      (int)iv[0], (int)iv[1], (int)iv[2], pv[3], iv[4], iv[5], pv[6], iv[7], iv[8], iv[9], pv[10], iv[11], iv[12],
      iv[13], pv[14], iv[15], iv[16], (const int32_t*)pv[17], (const int32_t*)pv[18], (const int32_t*)pv[19], iv[20],
      (const int32_t*)pv[21], (int)iv[22], (int)iv[23], (int)iv[24], (int)iv[25], (int)iv[26], (int)iv[27],
      (float)fv[28], (int)iv[29], (int)iv[30], (float)fv[31], (const float*)pv[32], (float)fv[33], (float)fv[34],
      (int)iv[35], (int)iv[36], iv[37], (int)iv[38]);
  Py_END_ALLOW_THREADS
  return PyLong_FromLong(r);
}

PyMethodDef g_methods[] = {
    {"paged_decode", (PyCFunction)(void (*)(void))py_paged_decode, METH_FASTCALL,
     "attnsolve_paged_decode's 39 arguments (see _cpu_ext.py); returns its int result"},
    {nullptr, nullptr, 0, nullptr}};
PyModuleDef g_module = {PyModuleDef_HEAD_INIT, "attnsolve_cpu_attn", nullptr, -1, g_methods,
                        nullptr, nullptr, nullptr, nullptr};
}  // namespace

PyMODINIT_FUNC PyInit_attnsolve_cpu_attn(void) { return PyModule_Create(&g_module); }
#endif
