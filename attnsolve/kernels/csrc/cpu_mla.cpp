// attnsolve CPU_MLA: MLA attention over a paged latent cache, float32 throughout.
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <omp.h>
#include <vector>
#include <algorithm>
#include "cpu_common.h"
#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

enum { F32 = 0, BF16 = 1, F16 = 2 };
static const int TILE = 16;

static inline float h2f(uint16_t h) {
#ifdef __F16C__
  return _cvtsh_ss(h);
#else
  uint32_t s = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, b;
  if (e == 0) { if (m == 0) b = s; else { float f = ldexpf((float)m, -24); memcpy(&b, &f, 4); b |= s; } }
  else if (e == 31) b = s | 0x7f800000u | (m << 13);
  else b = s | ((e + 112) << 23) | (m << 13);
  float f; memcpy(&f, &b, 4); return f;
#endif
}

static inline void widen(const void* src, int dtype, int D, float* dst) {
  if (dtype == F32) { memcpy(dst, src, sizeof(float) * D); return; }
  const uint16_t* s = (const uint16_t*)src;
  int i = 0;
#ifdef __AVX512F__
  if (dtype == BF16) {
    for (; i + 16 <= D; i += 16) {
      __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(s + i)));
      _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
  } else {
    for (; i + 16 <= D; i += 16) _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(s + i))));
  }
#endif
  if (dtype == BF16) { for (; i < D; i++) { uint32_t b = (uint32_t)s[i] << 16; memcpy(dst + i, &b, 4); } }
  else { for (; i < D; i++) dst[i] = h2f(s[i]); }
}

static inline void narrow(const float* src, int dtype, int R, void* dst) {
  if (dtype == F32) { memcpy(dst, src, sizeof(float) * R); return; }
  uint16_t* d = (uint16_t*)dst;
  for (int i = 0; i < R; i++) {
    float f = src[i];
    if (dtype == BF16) {
      uint32_t b; memcpy(&b, &f, 4);
      if ((b & 0x7fffffffu) > 0x7f800000u) d[i] = (uint16_t)((b >> 16) | 0x40);  // NaN stays NaN
      else d[i] = (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);  // round to nearest even
    } else {
#ifdef __F16C__
      d[i] = _cvtss_sh(f, 0);
#else
      d[i] = 0;  // unreachable with -march=native on x86-64 (F16C); ARM builds use the torch path
#endif
    }
  }
}

// scores of one head against the tile's rows: s[j] = q . row_j (16 row accumulators in registers)
static inline void qk_tile(const float* q, const float* rows, int nt, int D, float* s) {
#ifdef __AVX512F__
  if (D % 16 == 0) {
    __m512 a[TILE];
    for (int j = 0; j < TILE; j++) a[j] = _mm512_setzero_ps();
    for (int c = 0; c < D; c += 16) {
      __m512 qv = _mm512_loadu_ps(q + c);
      for (int j = 0; j < nt; j++) a[j] = _mm512_fmadd_ps(qv, _mm512_loadu_ps(rows + (size_t)j * D + c), a[j]);
    }
    for (int j = 0; j < nt; j++) s[j] = _mm512_reduce_add_ps(a[j]);
    return;
  }
#endif
  for (int j = 0; j < nt; j++) {
    const float* r = rows + (size_t)j * D;
    float a = 0.f;
#pragma omp simd reduction(+:a)
    for (int d = 0; d < D; d++) a += q[d] * r[d];
    s[j] = a;
  }
}

// Online softmax: a tile's max mt above the running max m rescales the running sum l and accumulator ah.
static inline void raise_max(float mt, float& m, float& l, float* ah, int R) {
  if (mt <= m) return;
  const float alpha = m == -INFINITY ? 0.f : expf(m - mt);
  if (alpha != 1.f) {
#pragma omp simd
    for (int d = 0; d < R; d++) ah[d] *= alpha;
    l *= alpha;
  }
  m = mt;
}

// s[j] <- exp(s[j] - m) for j < nt; returns the sum (exp512: cpu_common.h)
static inline float exp_tile(float* s, int nt, float m) {
#ifdef __AVX512F__
  const __mmask16 k = (__mmask16)((1u << nt) - 1u);
  const __m512 p = _mm512_maskz_mov_ps(k, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s), _mm512_set1_ps(m))));
  _mm512_mask_storeu_ps(s, k, p);  // NaN scores stay NaN (a NaN inside seq_len must reach the output, as the reference)
  return _mm512_reduce_add_ps(p);
#else
  float sum = 0.f;
  for (int j = 0; j < nt; j++) { s[j] = expf(s[j] - m); sum += s[j]; }
  return sum;
#endif
}

// acc[0:R] += sum_j p[j] * row_j[0:R] (one register per 16 columns, rows streamed from L1)
static inline void pv_tile(const float* p, const float* rows, int nt, int D, int R, float* acc) {
#ifdef __AVX512F__
  int c = 0;
  for (; c + 64 <= R; c += 64) {
    __m512 a0 = _mm512_loadu_ps(acc + c), a1 = _mm512_loadu_ps(acc + c + 16);
    __m512 a2 = _mm512_loadu_ps(acc + c + 32), a3 = _mm512_loadu_ps(acc + c + 48);
    for (int j = 0; j < nt; j++) {
      const float* r = rows + (size_t)j * D + c;
      __m512 pj = _mm512_set1_ps(p[j]);
      a0 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(r), a0);
      a1 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(r + 16), a1);
      a2 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(r + 32), a2);
      a3 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(r + 48), a3);
    }
    _mm512_storeu_ps(acc + c, a0); _mm512_storeu_ps(acc + c + 16, a1);
    _mm512_storeu_ps(acc + c + 32, a2); _mm512_storeu_ps(acc + c + 48, a3);
  }
  for (; c < R; c++) { float a = acc[c]; for (int j = 0; j < nt; j++) a += p[j] * rows[(size_t)j * D + c]; acc[c] = a; }
#else
  for (int j = 0; j < nt; j++) {
    const float* r = rows + (size_t)j * D;
#pragma omp simd
    for (int d = 0; d < R; d++) acc[d] += p[j] * r[d];
  }
#endif
}


#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define MLA_BF16_FAST 1

// bf16 latent rows read in place (no widening pass): scores with bf16 dot products (each product of two
// bf16 values is exact in float32, sums in float32), P . V in float32 FMAs with each 32-column bf16 chunk
// widened in registers by a shift (even columns) and a mask (odd columns), once per 4 heads.  The
// accumulators hold each 32-column chunk as [16 even | 16 odd] columns, undone at the end of the item.
// Scores of one tile for one head: s[j] = q . row_j for j < nt (nt <= 16).
static inline void qk_bf16(const uint16_t* q, const uint16_t* const* rp, int nt, int D, float* s) {
  __m512 part[16];
  for (int j = 0; j < nt; j++) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int c = 0;
    for (; c + 64 <= D; c += 64) {
      a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512((const void*)(q + c)), (__m512bh)_mm512_loadu_si512((const void*)(rp[j] + c)));
      a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512((const void*)(q + c + 32)), (__m512bh)_mm512_loadu_si512((const void*)(rp[j] + c + 32)));
    }
    if (c < D)  // D % 32 == 0: one 32-column chunk left
      a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512((const void*)(q + c)), (__m512bh)_mm512_loadu_si512((const void*)(rp[j] + c)));
    part[j] = _mm512_add_ps(a0, a1);
  }
  for (int j = nt; j < 16; j++) part[j] = _mm512_setzero_ps();
  _mm512_storeu_ps(s, hsum16(part));
}

template <int NH>
static inline void pv_bf16(const float* p, int ldp, const uint16_t* const* rp, int nt, int R, float* acc) {
  const __m512i hi_mask = _mm512_set1_epi32((int)0xFFFF0000u);
  for (int c = 0; c < R; c += 32) {
    __m512 e[NH], o[NH];
    for (int k = 0; k < NH; k++) { e[k] = _mm512_loadu_ps(acc + (size_t)k * R + c); o[k] = _mm512_loadu_ps(acc + (size_t)k * R + c + 16); }
    for (int j = 0; j < nt; j++) {
      const __m512i x = _mm512_loadu_si512((const void*)(rp[j] + c));
      const __m512 ev = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)), od = _mm512_castsi512_ps(_mm512_and_si512(x, hi_mask));
      for (int k = 0; k < NH; k++) {
        const __m512 pk = _mm512_set1_ps(p[(size_t)k * ldp + j]);
        e[k] = _mm512_fmadd_ps(pk, ev, e[k]);
        o[k] = _mm512_fmadd_ps(pk, od, o[k]);
      }
    }
    for (int k = 0; k < NH; k++) { _mm512_storeu_ps(acc + (size_t)k * R + c, e[k]); _mm512_storeu_ps(acc + (size_t)k * R + c + 16, o[k]); }
  }
}
#endif

#if defined(MLA_BF16_FAST) && defined(__AMX_BF16__) && defined(__AMX_TILE__) && defined(__linux__)
// AMX tiles for both products (bf16 query and cache), float32 everywhere else:
//   scores  S^T[16 rows x 16 heads] += rows[16 x 32 dims] . q^T[32 dims x 16 heads]   (rows loaded in place)
//   P . V   O[16 heads x 16 dims]   += P[16 heads x 32 rows] . V[32 rows x 16 dims]    (V pair-interleaved)
// in two passes over at most 256 rows (scores of all of them, then one exact max per head, so P . V needs no
// rescaling inside the step; steps are joined by the usual online-softmax rescale).  P is split into two
// bf16 terms (hi + lo: 16 significant bits), so its rounding stays far below float32 tolerances; a product
// of two bf16 values is exact in float32.  Heads go in groups of 16 (padded with zero queries).
#define MLA_AMX 1
#include <sys/syscall.h>
#include <unistd.h>
#include <stdlib.h>


static const int AMX_STEP = 256;  // rows per two-pass step

// One work item (rows r0..r1 of one query token) with AMX.  acc_out [H][R] (natural column order), m/l [H].
// Returns 1 when a block id is out of range (the caller reports it), else 0.
static int mla_item_amx(const uint16_t* const* qp, int H, int D, int R, float scale,
                        const char* kvb, int64_t skv_b, int64_t skv_s, int32_t num_blocks, int bs,
                        const int32_t* btrow, const int32_t* topk_row, int r0, int r1,
                        float* acc_out, float* m_out, float* l_out) {
  const int G = (H + 15) / 16, HP = G * 16, NC = D / 32, RC = R / 32;
  thread_local std::vector<uint16_t> qv, vbuf, pbuf, rowbuf, zero;
  thread_local std::vector<float> sc, acc, ph, mm, ll;
  thread_local std::vector<const uint16_t*> rp;
  TileCfg cfg;
  memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int i = 0; i < 8; i++) { cfg.rows[i] = 16; cfg.colsb[i] = 64; }  // every tile 16 x 64 bytes
  _tile_loadconfig(&cfg);
  // q^T per group of 16 heads, pair-interleaved: [G][D/2][16 heads][2], moved as 32-bit (dim pair) words, 16 x 16
  // of them per in-register transpose (an element at a time it profiled at a tenth of a 256-row item, and at a
  // third of a short decode item's time; padded heads are zeros)
  qv.resize((size_t)G * D * 16);
  uint32_t* qw = (uint32_t*)qv.data();
  for (int g = 0; g < G; g++)
    for (int p0 = 0; p0 < D / 2; p0 += 16) {
      __m512 r[16];
      for (int k = 0; k < 16; k++)
        r[k] = 16 * g + k < H ? _mm512_loadu_ps((const void*)(qp[16 * g + k] + 2 * p0)) : _mm512_setzero_ps();
      transpose16(r);
      uint32_t* dst = qw + ((size_t)g * (D / 2) + p0) * 16;
      for (int j = 0; j < 16; j++) _mm512_storeu_ps((void*)(dst + (size_t)j * 16), r[j]);
    }
  if ((int)zero.size() < D) zero.assign(D, 0);
  rowbuf.resize((size_t)32 * D);
  acc.assign((size_t)HP * R, 0.f);
  mm.assign(HP, -INFINITY);
  ll.assign(HP, 0.f);
  rp.resize(AMX_STEP);
  const int max_steps = AMX_STEP / 32;
  vbuf.resize((size_t)max_steps * RC * 2 * 16 * 32);
  pbuf.resize((size_t)G * max_steps * 2 * 16 * 32);
  sc.resize((size_t)AMX_STEP * HP);
  ph.resize((size_t)AMX_STEP * 16);
  const int esz = 2;
  int bad = 0;
  const __m512 vscale = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-INFINITY);
  for (int sb = r0; sb < r1; sb += AMX_STEP) {
    int n = 0;
    for (int j = sb; j < std::min(sb + AMX_STEP, r1); j++) {
      int pos = topk_row ? topk_row[j] : j;
      if (pos < 0) continue;  // sparse padding
      int blk = btrow[pos / bs];
      if (blk < 0 || blk >= num_blocks) { bad = 1; continue; }
      rp[n++] = (const uint16_t*)(kvb + (blk * skv_b + (int64_t)(pos % bs) * skv_s) * esz);
    }
    if (n == 0) continue;
    const int ns = (n + 31) / 32;
    for (int j = n; j < ns * 32; j++) rp[j] = zero.data();  // zero rows: no score, no value
    // pass 1a: V pair-interleaved per 32 rows, 32 columns at a time: [step][c][lo | hi][16 pairs][32]; the next
    // 32 rows (whole rows: the scores read the rope columns too) prefetched two per pair of rows copied (this loop
    // waited on every row, half the kernel's time; with the prefetches one core reads 6.5 GB/s from the L3
    // instead of 5.9, and two threads with the cache evicted 1.00 to 1.06x: session 16)
    const int64_t row_bytes = (int64_t)D * esz;
    for (int st = 0; st < ns; st++)
      for (int i = 0; i < 16; i++) {
        const uint16_t* a = rp[st * 32 + 2 * i];
        const uint16_t* b = rp[st * 32 + 2 * i + 1];
        if (st + 1 < ns)
          for (int u = 0; u < 2; u++) {
            const char* nx = (const char*)rp[(st + 1) * 32 + 2 * i + u];
            for (int64_t o = 0; o < row_bytes; o += 64) prefetch_l2(nx + o);
          }
        for (int c = 0; c < RC; c++) {
          const __m512i x0 = _mm512_loadu_si512((const void*)(a + 32 * c)), x1 = _mm512_loadu_si512((const void*)(b + 32 * c));
          uint16_t* o = &vbuf[(((size_t)st * RC + c) * 2) * 512 + (size_t)i * 32];
          _mm512_storeu_si512((void*)o, _mm512_unpacklo_epi16(x0, x1));
          _mm512_storeu_si512((void*)(o + 512), _mm512_unpackhi_epi16(x0, x1));
        }
      }
    // pass 1b: scores [row][HP], 32 rows at a time in two accumulator tiles (two independent chains of NC products
    // instead of one: 18 dependent products per 16 rows at head 576); rows of one stride are read in place
    for (int r = 0; r < ns * 32; r += 32) {
      const uint16_t* base[2];
      int64_t stride[2];
      for (int u = 0; u < 2; u++) {
        const uint16_t* const* r16 = &rp[(size_t)r + 16 * u];
        base[u] = r16[0];
        stride[u] = r16[1] - r16[0];
        bool uniform = stride[u] > 0 && stride[u] <= (int64_t)1 << 20;
        for (int k = 2; uniform && k < 16; k++) uniform = r16[k] - r16[0] == k * stride[u];
        if (!uniform) {
          for (int k = 0; k < 16; k++) memcpy(&rowbuf[((size_t)u * 16 + k) * D], r16[k], sizeof(uint16_t) * D);
          base[u] = &rowbuf[(size_t)u * 16 * D];
          stride[u] = D;
        }
      }
      for (int g = 0; g < G; g++) {
        _tile_zero(0);
        _tile_zero(3);
        for (int c = 0; c < NC; c++) {
          _tile_loadd(2, &qv[((size_t)g * (D / 2) + 16 * c) * 32], 64);
          _tile_loadd(1, base[0] + 32 * c, stride[0] * 2);
          _tile_loadd(4, base[1] + 32 * c, stride[1] * 2);
          _tile_dpbf16ps(0, 1, 2);
          _tile_dpbf16ps(3, 4, 2);
        }
        _tile_stored(0, &sc[(size_t)r * HP + g * 16], HP * 4);
        _tile_stored(3, &sc[(size_t)(r + 16) * HP + g * 16], HP * 4);
      }
    }
    // softmax per group of 16 heads (heads in lanes): one max over the step, rescale what came before
    for (int g = 0; g < G; g++) {
      __m512 mx = ninf;
      for (int j = 0; j < n; j++) mx = _mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(&sc[(size_t)j * HP + g * 16]), vscale), mx);
      const __m512 mo = _mm512_loadu_ps(&mm[g * 16]);
      const __m512 mn = _mm512_max_ps(mx, mo);
      const __mmask16 up = _mm512_cmp_ps_mask(mn, mo, _CMP_GT_OQ) & _mm512_cmp_ps_mask(mo, ninf, _CMP_NEQ_OQ);
      if (up) {
        alignas(64) float corr[16];
        _mm512_store_ps(corr, exp512(_mm512_sub_ps(mo, mn)));
        for (unsigned u = up; u; u &= u - 1) {
          const int i = __builtin_ctz(u);
          float* ah = &acc[(size_t)(g * 16 + i) * R];
          const __m512 vc = _mm512_set1_ps(corr[i]);
          for (int c = 0; c < R; c += 16) _mm512_storeu_ps(ah + c, _mm512_mul_ps(_mm512_loadu_ps(ah + c), vc));
          ll[g * 16 + i] *= corr[i];
        }
      }
      _mm512_storeu_ps(&mm[g * 16], mn);
      __m512 ls = _mm512_setzero_ps();
      for (int j = 0; j < ns * 32; j++) {
        __m512 p = _mm512_setzero_ps();
        if (j < n) {
          p = exp512(_mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(&sc[(size_t)j * HP + g * 16]), vscale), mn));
          ls = _mm512_add_ps(ls, p);
        }
        _mm512_storeu_ps(&ph[(size_t)j * 16], p);  // [row][16 heads] float32
      }
      _mm512_storeu_ps(&ll[g * 16], _mm512_add_ps(_mm512_loadu_ps(&ll[g * 16]), ls));
      // P tiles [step][hi | lo][16 heads][32 rows]: a head's 32 rows gathered (stride 16 floats), rounded to
      // bf16 (hi) and the remainder rounded again (lo)
      const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32(16));
      for (int st = 0; st < ns; st++) {
        uint16_t* o = &pbuf[(((size_t)g * max_steps + st) * 2) * 512];
        const float* base = &ph[(size_t)st * 32 * 16];
        for (int h = 0; h < 16; h++) {
          const __m512 a = _mm512_i32gather_ps(idx, base + h, 4), b = _mm512_i32gather_ps(idx, base + 256 + h, 4);
          const __m512i hi = (__m512i)_mm512_cvtne2ps_pbh(b, a);  // rows 0..15 low, 16..31 high
          const __m512 ha = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(hi)), 16));
          const __m512 hb = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(hi, 1)), 16));
          _mm512_storeu_si512((void*)(o + h * 32), hi);
          _mm512_storeu_si512((void*)(o + 512 + h * 32), (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(b, hb), _mm512_sub_ps(a, ha)));
        }
      }
    }
    // pass 2: P . V, 16 heads x 16 columns per accumulator tile; four accumulators (tmm0, tmm3, tmm6, tmm7)
    // stay in tiles over the step's rows, so each P tile is loaded once per 64 columns
    for (int g = 0; g < G; g++)
      for (int k = 0; k < 2 * RC; k += 4) {
        float* a = &acc[(size_t)g * 16 * R + (size_t)k * 16];
        _tile_loadd(0, a, R * 4);
        _tile_loadd(3, a + 16, R * 4);
        _tile_loadd(6, a + 32, R * 4);
        _tile_loadd(7, a + 48, R * 4);
        for (int st = 0; st < ns; st++) {
          const uint16_t* pp = &pbuf[(((size_t)g * max_steps + st) * 2) * 512];
          const uint16_t* vb = &vbuf[((size_t)st * RC + k / 2) * 2 * 512];  // chunks k..k+3: (c, lo), (c, hi), (c+1, lo), (c+1, hi)
          _tile_loadd(4, pp, 64);
          _tile_loadd(5, pp + 512, 64);
          _tile_loadd(1, vb, 64);
          _tile_loadd(2, vb + 512, 64);
          _tile_dpbf16ps(0, 4, 1);
          _tile_dpbf16ps(0, 5, 1);
          _tile_dpbf16ps(3, 4, 2);
          _tile_dpbf16ps(3, 5, 2);
          _tile_loadd(1, vb + 1024, 64);
          _tile_loadd(2, vb + 1536, 64);
          _tile_dpbf16ps(6, 4, 1);
          _tile_dpbf16ps(6, 5, 1);
          _tile_dpbf16ps(7, 4, 2);
          _tile_dpbf16ps(7, 5, 2);
        }
        _tile_stored(0, a, R * 4);
        _tile_stored(3, a + 16, R * 4);
        _tile_stored(6, a + 32, R * 4);
        _tile_stored(7, a + 48, R * 4);
      }
  }
  // columns back in natural order: tile column n of (chunk c, half q) is column 32c + 8(n/4) + 4q + n%4
  // (two permutes per 32 columns: output column 8j + 4q + i takes tile column 4j + i of half q)
  const __m512i lo_idx = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i hi_idx = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  for (int h = 0; h < H; h++) {
    const float* ah = &acc[(size_t)h * R];
    float* o = acc_out + (size_t)h * R;
    for (int c = 0; c < RC; c++) {
      const __m512 a = _mm512_loadu_ps(ah + 32 * c), b = _mm512_loadu_ps(ah + 32 * c + 16);
      _mm512_storeu_ps(o + 32 * c, _mm512_permutex2var_ps(a, lo_idx, b));
      _mm512_storeu_ps(o + 32 * c + 16, _mm512_permutex2var_ps(a, hi_idx, b));
    }
    m_out[h] = mm[h];
    l_out[h] = ll[h];
  }
  return bad;
}
#endif

extern "C" int mla_attend(
    const void* q, int64_t sq_t, int64_t sq_h,
    const void* kv, int64_t skv_b, int64_t skv_s, int32_t num_blocks,
    int32_t dtype, int32_t bs, int32_t D, int32_t R, int32_t H, int32_t T,
    const int32_t* tok_seq, const int32_t* tok_limit, const int32_t* bt, int64_t sbt,
    const int32_t* topk, int32_t K, int64_t stopk,
    float scale,
    void* out, int64_t so_t, int64_t so_h,
    float* scratch, int32_t* items, int32_t max_items, int64_t chunk) {
  const int esz = dtype == F32 ? 4 : 2;
  // rows per token, then items (token, row range of at most `chunk` rows)
  std::vector<int64_t> nrows(T);
  for (int t = 0; t < T; t++) nrows[t] = topk ? K : tok_limit[t];
  int n_items = 0;
  for (int t = 0; t < T; t++) {
    int64_t n = nrows[t];
    int64_t r = 0;
    do {
      if (n_items >= max_items) return -1;
      items[3 * n_items] = t; items[3 * n_items + 1] = (int32_t)r; items[3 * n_items + 2] = (int32_t)std::min(n, r + chunk);
      n_items++; r += chunk;
    } while (r < n);
  }
  const int64_t part = (int64_t)H * (R + 2);  // per item: acc [H][R], m [H], l [H]
  int bad = 0;
#if defined(MLA_AMX)
  const bool use_amx = dtype == BF16 && D % 32 == 0 && R % 64 == 0 && R <= D && (sq_h % 2) == 0 && amx_permitted();
#endif
#pragma omp parallel reduction(|:bad)
  {
#pragma omp for schedule(dynamic, 1)
  for (int it = 0; it < n_items; it++) {
    const int t = items[3 * it], r0 = items[3 * it + 1], r1 = items[3 * it + 2];
    const int seq = tok_seq[t];
    const char* kvb = (const char*)kv;
    float* acc = scratch + it * part;
    float* m = acc + (int64_t)H * R;
    float* l = m + H;
#if defined(MLA_AMX)
    if (use_amx) {
      std::vector<const uint16_t*> qp(H);
      for (int h = 0; h < H; h++) qp[h] = (const uint16_t*)q + (t * sq_t + h * sq_h);
      if (mla_item_amx(qp.data(), H, D, R, scale, kvb, skv_b, skv_s, num_blocks, bs, bt + seq * sbt,
                       topk ? topk + t * stopk : nullptr, r0, r1, acc, m, l))
        bad = 1;
      continue;
    }
#endif
    // the other paths' per-item buffers (not allocated for the AMX path above, which keeps its own)
    std::vector<float> qs((size_t)H * D), rows((size_t)TILE * D), s((size_t)H * TILE);
#if defined(MLA_BF16_FAST)
    if (dtype == BF16 && D % 32 == 0 && R % 32 == 0 && R <= D && (sq_h % 2) == 0) {
      // q rows as bf16 (the query is bf16: exact), scale applied to the float32 scores
      std::vector<const uint16_t*> qp(H);
      for (int h = 0; h < H; h++) { qp[h] = (const uint16_t*)q + (t * sq_t + h * sq_h); m[h] = -INFINITY; l[h] = 0.f; }
      memset(acc, 0, sizeof(float) * H * R);
      const uint16_t* rp[TILE];
      for (int base = r0; base < r1; base += TILE) {
        int nt = 0;
        for (int j = base; j < std::min(base + TILE, r1); j++) {
          int pos = topk ? topk[t * stopk + j] : j;
          if (pos < 0) continue;  // sparse padding
          int blk = bt[seq * sbt + pos / bs];
          if (blk < 0 || blk >= num_blocks) { bad = 1; continue; }
          rp[nt++] = (const uint16_t*)(kvb + (blk * skv_b + (int64_t)(pos % bs) * skv_s) * esz);
        }
        if (nt == 0) continue;
        for (int h = 0; h < H; h++) {
          float* sh = &s[(size_t)h * TILE];
          qk_bf16(qp[h], rp, nt, D, sh);
          float mt = m[h];
          for (int j = 0; j < nt; j++) { sh[j] *= scale; mt = std::max(mt, sh[j]); }
          raise_max(mt, m[h], l[h], acc + (int64_t)h * R, R);
          l[h] += exp_tile(sh, nt, mt);
        }
        int h = 0;
        for (; h + 8 <= H; h += 8) pv_bf16<8>(&s[(size_t)h * TILE], TILE, rp, nt, R, acc + (int64_t)h * R);
        for (; h + 4 <= H; h += 4) pv_bf16<4>(&s[(size_t)h * TILE], TILE, rp, nt, R, acc + (int64_t)h * R);
        for (; h < H; h++) pv_bf16<1>(&s[(size_t)h * TILE], TILE, rp, nt, R, acc + (int64_t)h * R);
      }
      std::vector<float> tmp(R);  // [16 even | 16 odd] per 32 columns -> natural order
      for (int h = 0; h < H; h++) {
        float* ah = acc + (int64_t)h * R;
        for (int c = 0; c < R; c += 32)
          for (int i = 0; i < 16; i++) { tmp[c + 2 * i] = ah[c + i]; tmp[c + 2 * i + 1] = ah[c + 16 + i]; }
        memcpy(ah, tmp.data(), sizeof(float) * R);
      }
      continue;
    }
#endif
    for (int h = 0; h < H; h++) {
      widen((const char*)q + (t * sq_t + h * sq_h) * esz, dtype, D, &qs[(size_t)h * D]);
      for (int d = 0; d < D; d++) qs[(size_t)h * D + d] *= scale;
      m[h] = -INFINITY; l[h] = 0.f;
    }
    memset(acc, 0, sizeof(float) * H * R);
    for (int base = r0; base < r1; base += TILE) {
      int nt = 0;
      for (int j = base; j < std::min(base + TILE, r1); j++) {
        int pos = topk ? topk[t * stopk + j] : j;
        if (pos < 0) continue;  // sparse padding
        int blk = bt[seq * sbt + pos / bs];
        if (blk < 0 || blk >= num_blocks) { bad = 1; continue; }
        widen(kvb + (blk * skv_b + (int64_t)(pos % bs) * skv_s) * esz, dtype, D, &rows[(size_t)nt * D]);
        nt++;
      }
      if (nt == 0) continue;
      for (int h = 0; h < H; h++) {
        const float* qh = &qs[(size_t)h * D];
        float* sh = &s[(size_t)h * TILE];
        qk_tile(qh, rows.data(), nt, D, sh);
        float mt = m[h];
        for (int j = 0; j < nt; j++) mt = std::max(mt, sh[j]);
        raise_max(mt, m[h], l[h], acc + (int64_t)h * R, R);
        l[h] += exp_tile(sh, nt, mt);
        pv_tile(sh, rows.data(), nt, D, R, acc + (int64_t)h * R);
      }
    }
  }
#if defined(MLA_AMX)
  // no tile state left in torch's pool threads (it would be saved on every context switch)
  if (use_amx) _tile_release();
#endif
  }
  if (bad) return -2;
  // merge the items of every token (consecutive in the table) and write the output
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; t++) {
    int first = 0;
    // items are in token order: find this token's first item by binary search
    int lo = 0, hi = n_items;
    while (lo < hi) { int mid = (lo + hi) / 2; if (items[3 * mid] < t) lo = mid + 1; else hi = mid; }
    first = lo;
    int last = first;
    while (last < n_items && items[3 * last] == t) last++;
    std::vector<float> o(R);
    for (int h = 0; h < H; h++) {
      float M = -INFINITY;
      for (int it = first; it < last; it++) M = std::max(M, scratch[it * part + (int64_t)H * R + h]);
      std::fill(o.begin(), o.end(), 0.f);
      float L = 0.f;
      if (M != -INFINITY) {
        for (int it = first; it < last; it++) {
          const float* a = scratch + it * part;
          float mi = a[(int64_t)H * R + h], li = a[(int64_t)H * R + H + h];
          if (mi == -INFINITY) continue;
          float w = expf(mi - M);
          L += w * li;
          const float* ah = a + (int64_t)h * R;
#pragma omp simd
          for (int d = 0; d < R; d++) o[d] += w * ah[d];
        }
      }
      const float inv = L > 0.f ? 1.f / L : 0.f;  // a token that sees nothing gets zeros
      for (int d = 0; d < R; d++) o[d] *= inv;
      narrow(o.data(), dtype, R, (char*)out + (t * so_t + h * so_h) * esz);
    }
  }
  return 0;
}

#if defined(ATTNSOLVE_PYEXT)
// A CPython entry to mla_attend (loaded as the extension module `attnsolve_cpu_mla` by _cpu_mla_ext.py; ctypes stays
// the fallback), for the reason CPU_ATTN's decode has one (cpu_attn.cpp, parse_fastcall in cpu_common.h): every
// layer of a decode step pays the argument conversion.  The arguments are mla_attend's, in its order; the
// interpreter lock is released around the call, as ctypes does.
namespace {
constexpr int kMlaArgs = 28;
constexpr char kMlaKinds[kMlaArgs + 1] = "pllplliiiiiiippplpilfpllppil";
static_assert(sizeof(kMlaKinds) == kMlaArgs + 1, "one kind per argument");

PyObject* py_mla_attend(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  long long iv[kMlaArgs];
  void* pv[kMlaArgs];
  double fv[kMlaArgs];
  if (!parse_fastcall("mla_attend", kMlaKinds, args, nargs, iv, pv, fv)) return nullptr;
  int r;
  Py_BEGIN_ALLOW_THREADS
  r = mla_attend(pv[0], iv[1], iv[2], pv[3], iv[4], iv[5], (int32_t)iv[6], (int32_t)iv[7], (int32_t)iv[8],
                 (int32_t)iv[9], (int32_t)iv[10], (int32_t)iv[11], (int32_t)iv[12], (const int32_t*)pv[13],
                 (const int32_t*)pv[14], (const int32_t*)pv[15], iv[16], (const int32_t*)pv[17], (int32_t)iv[18],
                 iv[19], (float)fv[20], pv[21], iv[22], iv[23], (float*)pv[24], (int32_t*)pv[25], (int32_t)iv[26],
                 iv[27]);
  Py_END_ALLOW_THREADS
  return PyLong_FromLong(r);
}

PyMethodDef g_methods[] = {
    {"mla_attend", (PyCFunction)(void (*)(void))py_mla_attend, METH_FASTCALL,
     "mla_attend's 28 arguments (see _cpu_mla_ext.py); returns its int result"},
    {nullptr, nullptr, 0, nullptr}};
PyModuleDef g_module = {PyModuleDef_HEAD_INIT, "attnsolve_cpu_mla", nullptr, -1, g_methods,
                        nullptr, nullptr, nullptr, nullptr};
}  // namespace

PyMODINIT_FUNC PyInit_attnsolve_cpu_mla(void) { return PyModule_Create(&g_module); }
#endif
