// The read-only twin of a paged decode, for the benchmark's ceiling column: every K and V row the
// decode kernel reads (each sequence's blocks through its block table, tokens split into the same
// kind of (sequence, key chunk) work items over the threads), read and summed with no attention
// math.  K and V are read side by side, 64 bytes of each in turn, in address order within a token:
// two sequential streams measured the fastest way to read shuffled blocks here (one stream, or
// the kernel's per-KV-head order with software prefetches, read 10-25% slower).  What it reaches
// is what the cache layout allows on the machine; the kernel's rate is compared with it.
#include <cstdint>
#include <vector>
#include <algorithm>
#include <omp.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

extern "C" int64_t attnsolve_read_paged(
    const char* kc, const char* vc, int64_t block_bytes, int64_t row_bytes,
    const int32_t* bt, int64_t bt_s0, const int32_t* seq_lens, int nseqs, int BS, int chunk, int nthreads) {
  struct Item { int seq, lo, hi; };
  std::vector<Item> items;
  for (int i = 0; i < nseqs; ++i)
    for (int a = 0; a < seq_lens[i]; a += chunk) items.push_back(Item{i, a, std::min(a + chunk, (int)seq_lens[i])});
  int64_t total = 0;
  #pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) reduction(+:total)
  for (int it = 0; it < (int)items.size(); ++it) {
    const Item& I = items[it];
    const int32_t* row = bt + (int64_t)I.seq * bt_s0;
#if defined(__AVX512F__)
    __m512i a = _mm512_setzero_si512(), b = _mm512_setzero_si512();
    for (int t = I.lo; t < I.hi; ++t) {
      const int64_t off = (int64_t)row[t / BS] * block_bytes + (int64_t)(t % BS) * row_bytes;
      const char* k = kc + off;
      const char* v = vc + off;
      for (int64_t o = 0; o + 64 <= row_bytes; o += 64) {
        a = _mm512_add_epi64(a, _mm512_loadu_si512((const void*)(k + o)));
        b = _mm512_add_epi64(b, _mm512_loadu_si512((const void*)(v + o)));
      }
    }
    total += _mm512_reduce_add_epi64(_mm512_add_epi64(a, b));
#else
    int64_t s = 0;
    for (int t = I.lo; t < I.hi; ++t) {
      const int64_t off = (int64_t)row[t / BS] * block_bytes + (int64_t)(t % BS) * row_bytes;
      const int64_t* k = (const int64_t*)(kc + off);
      const int64_t* v = (const int64_t*)(vc + off);
      for (int64_t o = 0; o < row_bytes / 8; ++o) s += k[o] + v[o];
    }
    total += s;
#endif
  }
  return total;
}
