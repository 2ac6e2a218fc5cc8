"""Lazily built C++/OpenMP MLA kernel for CPU_MLA, loaded with ctypes (the ``_cpu_ext`` approach).

One pass over each query token's latent rows (dense: the first ``pos + 1`` tokens of its
sequence; sparse: its listed ``topk`` positions), reading every row once for all heads:
rows are widened to float32 in tiles of 16, scores for all heads, an online softmax in
float32, and ``P · V`` over the first ``kv_lora_rank`` columns.  Long row lists are split
among work items whose float32 partial results (max, sum, accumulator) are merged exactly,
so one sequence keeps every thread busy and nothing is rounded before the end.

Same build rules as ``_cpu_ext``: ``g++ -O3 -march=native -fopenmp``, cached under
``$ATTNSOLVE_CACHE_DIR``; ``ATTNSOLVE_CPU_EXT=0`` disables it; ``load()`` never raises and
``reason()`` says why it is unavailable.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from attnsolve.kernels._cpu_ext import _cache_dir, _cpu_signature

__all__ = ["load", "reason", "DTYPE_CODES"]

_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno", "-std=c++17"]
DTYPE_CODES = {"float32": 0, "bfloat16": 1, "float16": 2}

_lock = threading.Lock()
_state: dict = {}


def _build() -> ctypes.CDLL:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (g++/c++ not on PATH, CXX unset)")
    key = hashlib.sha256("\0".join([_SOURCE, " ".join(_FLAGS), cxx, _cpu_signature()]).encode()).hexdigest()[:16]
    out = _cache_dir() / f"cpu_mla_{key}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            src = Path(tmp) / "cpu_mla.cpp"
            src.write_text(_SOURCE)
            so = Path(tmp) / "cpu_mla.so"
            proc = subprocess.run([cxx, *_FLAGS, "-o", str(so), str(src)], capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"compiling the CPU_MLA extension failed: {proc.stderr.strip()[-2000:]}")
            os.replace(so, out)
    lib = ctypes.CDLL(str(out))
    p, i32, i64, f32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float
    lib.mla_attend.restype = i32
    lib.mla_attend.argtypes = [
        p, i64, i64,  # query, strides (token, head), elements
        p, i64, i64, i32,  # kv cache, strides (block, slot), num_blocks
        i32, i32, i32, i32, i32, i32,  # dtype, block_size, D, R (kv_lora_rank), H, T
        p, p, p, i64,  # tok_seq, tok_limit (dense rows / -1 sparse), block_table, its row stride
        p, i32, i64,  # topk (int32, or null), topk, its row stride
        f32,  # scale
        p, i64, i64,  # out, strides (token, head)
        p, p, i32, i64,  # scratch float32, item table int32, max items, rows per item
    ]
    return lib


def load():
    """The loaded library, or ``None`` (see ``reason()``)."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        lib = None
        if os.environ.get("ATTNSOLVE_CPU_EXT", "1") == "0":
            _state["reason"] = "disabled by ATTNSOLVE_CPU_EXT=0"
        else:
            try:
                lib = _build()
            except Exception as e:  # no compiler, failed build: the torch path runs instead
                _state["reason"] = str(e)
        _state["lib"] = lib
        return lib


def reason() -> str | None:
    """Why the extension is not loaded (``None`` when it is, or was not tried yet)."""
    return _state.get("reason")


def _reset_for_tests() -> None:
    with _lock:
        _state.clear()


_SOURCE = r'''// attnsolve CPU_MLA: MLA attention over a paged latent cache, float32 throughout.
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <omp.h>
#include <vector>
#include <algorithm>
#ifdef __AVX512F__
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

// s[j] <- exp(s[j] - m) for j < nt; returns the sum
static inline float exp_tile(float* s, int nt, float m) {
#ifdef __AVX512F__
  const __mmask16 k = (__mmask16)((1u << nt) - 1u);
  __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, s), _mm512_set1_ps(m));
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  p = _mm512_scalef_ps(p, n);
  __m512 in = _mm512_maskz_loadu_ps(k, s);
  // NaN scores stay NaN (a NaN inside seq_len must reach the output, as the reference)
  p = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(in, in, _CMP_UNORD_Q), p, in);
  p = _mm512_maskz_mov_ps(k, p);
  _mm512_mask_storeu_ps(s, k, p);
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
// Horizontal sums of 16 vectors: r[i] = sum(v[i]) (transpose-and-add tree).
static inline __m512 hsum16(const __m512* v) {
  __m512 w[8], x[4], y[2];
  for (int i = 0; i < 8; ++i)
    w[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(w[2 * i]), b = _mm512_castps_pd(w[2 * i + 1]);
    x[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  for (int i = 0; i < 2; ++i)
    y[i] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(y[0], y[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(y[0], y[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

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
#pragma omp parallel for schedule(dynamic, 1) reduction(|:bad)
  for (int it = 0; it < n_items; it++) {
    const int t = items[3 * it], r0 = items[3 * it + 1], r1 = items[3 * it + 2];
    const int seq = tok_seq[t];
    const char* kvb = (const char*)kv;
    std::vector<float> qs((size_t)H * D), rows((size_t)TILE * D), s((size_t)H * TILE);
    float* acc = scratch + it * part;
    float* m = acc + (int64_t)H * R;
    float* l = m + H;
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
          if (mt > m[h]) {
            float alpha = m[h] == -INFINITY ? 0.f : expf(m[h] - mt);
            if (alpha != 1.f) {
              float* ah = acc + (int64_t)h * R;
#pragma omp simd
              for (int d = 0; d < R; d++) ah[d] *= alpha;
              l[h] *= alpha;
            }
            m[h] = mt;
          }
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
        if (mt > m[h]) {
          float alpha = m[h] == -INFINITY ? 0.f : expf(m[h] - mt);
          if (alpha != 1.f) {
            float* ah = acc + (int64_t)h * R;
#pragma omp simd
            for (int d = 0; d < R; d++) ah[d] *= alpha;
            l[h] *= alpha;
          }
          m[h] = mt;
        }
        l[h] += exp_tile(sh, nt, mt);
        pv_tile(sh, rows.data(), nt, D, R, acc + (int64_t)h * R);
      }
    }
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
'''
