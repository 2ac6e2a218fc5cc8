// Shared by the kernels (cpu_attn.cpp, cpu_mla.cpp, cpu_prefill.cpp): environment switches, the exp polynomial, the AMX tile
// configuration and permission.  Both loaders write this header beside the source and hash it with it.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <algorithm>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

// Whether an environment switch says "off" (0, no, false): the kernel's A/B switches, each read once.
static inline bool env_off(const char* name) {
  const char* e = std::getenv(name);
  return e && (e[0] == '0' || e[0] == 'n' || e[0] == 'N' || e[0] == 'f' || e[0] == 'F');
}
// Whether it says "on" (set, and not off): the switches whose default is off.
static inline bool env_on(const char* name) {
  const char* e = std::getenv(name);
  return e && e[0] && !env_off(name);
}

// A prefetch into L2 (prefetcht1) that the compiler keeps.  GCC 12 (-O3, Zen 4 host) deleted _mm_prefetch in
// most of the decode tile's instantiations: the scores' prefetch of the tile's V rows existed in the source and in
// no binary for head sizes 64, 128 or 256 (two of 18 prefetcht1 left in cpu_attn's object; 176 in tile_avx<8>
// alone with this form).  One thread, bf16 b1 16k 32/8 heads of 128, cache evicted before each call: 12 -> 15.5
// GB/s with the prefetches actually issued.  An asm statement the compiler must emit, in place; elsewhere the
// builtin.
static inline void prefetch_l2(const void* p) {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
  __asm__ volatile("prefetcht1 %0" : : "m"(*(const char*)p));
#else
  __builtin_prefetch(p, 0, 2);
#endif
}

// exp for x <= 0 (arguments are s - max), vectorisable: 2^(x log2 e) via a degree-6 polynomial.
static inline float fast_exp(float x) {
  x = std::max(x, -87.0f);
  float t = x * 1.44269504088896341f;
  float fi = std::floor(t);
  float f = t - fi;  // [0,1)
  float p = 1.5353362e-4f;
  p = p * f + 1.3398874e-3f;
  p = p * f + 9.6181291e-3f;
  p = p * f + 5.5504109e-2f;
  p = p * f + 2.4022652e-1f;
  p = p * f + 6.9314718e-1f;
  p = p * f + 1.0f;
  int32_t e = (int32_t)fi + 127;
  uint32_t bits = (uint32_t)e << 23;
  float sc; std::memcpy(&sc, &bits, 4);
  return p * sc;
}

#if defined(__AVX512F__)
// 2^f for f in [0, 1): fast_exp's degree-6 polynomial (exp512 and cpu_prefill's base-2 exponential share it)
static inline __m512 pow2_frac512(__m512 f) {
  __m512 p = _mm512_set1_ps(1.5353362e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3398874e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504109e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022652e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
  return _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
}
static inline __m512 exp512(__m512 x) {  // same polynomial as fast_exp, x <= 0
  x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x);  // this operand order keeps a NaN x (NaN in, NaN out)
  const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  const __m512 fi = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, fi);
  const __m512 p = pow2_frac512(f);
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fi), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}
// Sums of two 8-lane halves of 16 vectors: r0[i] = sum of v[i]'s lanes 0-7, r1[i] = of lanes 8-15 (a
// transpose-and-add tree: ~2.6 instructions per vector, i.e. 1.3 per sum).
static inline void hsum8x2(const __m512* v, __m512& r0, __m512& r1) {
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
  r0 = _mm512_shuffle_f32x4(y[0], y[1], _MM_SHUFFLE(2, 0, 2, 0));
  r1 = _mm512_shuffle_f32x4(y[0], y[1], _MM_SHUFFLE(3, 1, 3, 1));
}

// 16 floats to bf16, rounded to nearest even with every input exact (denormals included, unlike
// vcvtneps2bf16, which reads them as zero), NaN -> 0x7fc0: the scalar rule of store_row, 16 at a time.
static inline __m256i bf16_rne16(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7fc0));
  return _mm512_cvtepi32_epi16(r);
}

// In-register 16 x 16 float32 transpose (64 shuffles).
static inline void transpose16(__m512* r) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 4; ++g) {  // u[4g + k], lane j: column 4j + k of rows 4g .. 4g + 3
    const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int k = 0; k < 4; ++k) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x44), v1 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xEE);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x44), v3 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xEE);
    r[k] = _mm512_shuffle_f32x4(v0, v2, 0x88);
    r[4 + k] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
    r[8 + k] = _mm512_shuffle_f32x4(v1, v3, 0x88);
    r[12 + k] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
  }
}

// Horizontal sums of 16 vectors: r[i] = sum(v[i]) (the two halves of hsum8x2 added).
static inline __m512 hsum16(const __m512* v) {
  __m512 r0, r1;
  hsum8x2(v, r0, r1);
  return _mm512_add_ps(r0, r1);
}
#endif

#if defined(__AMX_TILE__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
struct alignas(64) TileCfg { uint8_t palette_id; uint8_t start_row; uint8_t reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; };
static inline int amx_permitted() {  // the kernel must grant the tile data state to this process once
  static int ok = -1;
  if (ok < 0) {
    if (env_off("ATTNSOLVE_CPU_AMX")) ok = 0;
    else ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0 ? 1 : 0;
  }
  return ok;
}
#endif

#if defined(ATTNSOLVE_PYEXT)
// The CPython entries' argument parsing (METH_FASTCALL; built with -DATTNSOLVE_PYEXT and the interpreter's
// headers): ctypes converts its arguments through generic machinery, several µs per call warm and tens when
// a decode step finds its caches evicted.  One kind per argument: 'i' a C int (range-checked), 'l' int64,
// 'p' a pointer (an int, or None for null), 'f' a float.  Values land in iv / pv / fv at the argument's index.
// Returns false with a Python exception set.
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static inline bool parse_fastcall(const char* name, const char* kinds, PyObject* const* args, Py_ssize_t nargs,
                                  long long* iv, void** pv, double* fv) {
  const Py_ssize_t n = (Py_ssize_t)strlen(kinds);
  if (nargs != n) {
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, n, nargs);
    return false;
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* a = args[i];
    const char k = kinds[i];
    if (k == 'p') {
      pv[i] = a == Py_None ? nullptr : PyLong_AsVoidPtr(a);
    } else if (k == 'f') {
      fv[i] = PyFloat_AsDouble(a);
    } else {
      iv[i] = PyLong_AsLongLong(a);
      if (k == 'i' && !PyErr_Occurred() && (iv[i] < INT32_MIN || iv[i] > INT32_MAX)) {
        PyErr_Format(PyExc_OverflowError, "%s() argument %zd out of int range", name, i);
        return false;
      }
    }
    if (PyErr_Occurred()) return false;
  }
  return true;
}
#endif
