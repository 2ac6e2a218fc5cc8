// CPU_ATTN's plain decode call read straight from the tensors: the CPython function `decode` of the extension
// module `attnsolve_cpu_decode_entry` (built against torch's headers by _cpu_ext.py, about ten seconds, once).
//
// Why: a decode call whose caches were evicted (a model's other layers stream through the L3 between two calls on
// one layer) spent ~120 us of a 4k-token b1 call in Python reading tensor attributes, checking the metadata and
// allocating the output (each step a first call into cold torch or interpreter code), beside ~600 us in the
// kernel; here the same reads are field loads of the TensorImpl.
//
// What it takes: `decode(query, key_cache, value_cache, query_start_loc, seq_lens, block_table, scale)` for the
// one case it answers: plain CPU tensors in the kernel's layout, int32 contiguous metadata, every sequence one
// query row with 1 <= seq_len <= its block-table capacity, every used block id in range, `scale` None, int or
// float.  It returns the output tensor, or None for anything else (then the Python path answers, and raises the
// errors: the wording stays in one place).  Accepting only what cpu.py's _decode_fast accepts, it makes the
// same kernel call with the same arguments, so the result is the same, bit for bit.
//
// The sequence and block-id checks run on every call (one int per block a sequence uses, which the kernel reads
// anyway): no memo keyed on tensor identities, which a freed tensor's successor could take over.
#include <Python.h>

#include <ATen/Parallel.h>
#include <ATen/EmptyTensor.h>
#include <torch/csrc/autograd/python_variable.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {

typedef int (*DecodeFn)(int, int, int, const void*, int64_t, int64_t, const void*, int64_t, int64_t, int64_t,
                        const void*, int64_t, int64_t, int64_t, void*, int64_t, int64_t, const int32_t*,
                        const int32_t*, const int32_t*, int64_t, const int32_t*, int, int, int, int, int, int,
                        float, int, int, float, const float*, float, float, int, int, int64_t, int);

DecodeFn g_kernel = nullptr;     // attnsolve_paged_decode of the cpu_attn build (set by `configure`)
int64_t g_min_parallel = 4096;   // cpu.py's _MIN_PARALLEL_WORK
int64_t g_chunk_lo = 256, g_chunk_hi = 2048;  // cpu.py's _work_split bounds

int code_of(at::ScalarType t, bool cache) {
  switch (t) {
    case at::kFloat: return 0;
    case at::kBFloat16: return 1;
    case at::kHalf: return 2;
    case at::kFloat8_e4m3fn: return cache ? 3 : -1;
    case at::kFloat8_e5m2: return cache ? 4 : -1;
    default: return -1;
  }
}

bool plain(PyObject* o) { return THPVariable_CheckExact(o); }

bool meta_ok(const at::Tensor& t, int dim) {
  return t.scalar_type() == at::kInt && t.device().is_cpu() && t.dim() == dim && t.is_contiguous();
}

// The checks of validate.py's _check_seqs / _check_block_ids for one-row sequences; total keys, or -1 when the
// Python path must answer (a value it refuses, or a case this entry does not take).
int64_t check_values(const at::Tensor& qsl, const at::Tensor& sl, const at::Tensor& bt, int64_t T, int64_t nb,
                     int64_t bs) {
  const int64_t B = sl.size(0), cols = bt.size(1);
  if (B != T || B < 1) return -1;  // (B >= 1: query_start_loc holds two values at least)
  const int32_t* q = qsl.data_ptr<int32_t>();
  const int32_t* s = sl.data_ptr<int32_t>();
  const int32_t* b = bt.data_ptr<int32_t>();
  if (q[0] != 0) return -1;
  int64_t total = 0;
  for (int64_t i = 0; i < B; ++i) {
    const int64_t L = s[i];
    if (q[i + 1] - q[i] != 1 || L < 1 || L > cols * bs) return -1;
    const int64_t used = (L + bs - 1) / bs;
    const int32_t* row = b + i * cols;
    for (int64_t j = 0; j < used; ++j)
      if (row[j] < 0 || row[j] >= nb) return -1;
    total += L;
  }
  return total;
}

PyObject* decode(PyObject* const* args);

PyObject* py_decode(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 7) {
    PyErr_SetString(PyExc_TypeError, "decode() takes 7 arguments");
    return nullptr;
  }
  try {
    return decode(args);
  } catch (...) {  // a torch check that throws (a tensor without storage): the Python path answers, or raises
    PyErr_Clear();
    Py_RETURN_NONE;
  }
}

PyObject* decode(PyObject* const* args) {
  if (g_kernel == nullptr) Py_RETURN_NONE;
  for (int i = 0; i < 6; ++i)
    if (!plain(args[i])) Py_RETURN_NONE;
  const at::Tensor& q = THPVariable_Unpack(args[0]);
  const at::Tensor& kc = THPVariable_Unpack(args[1]);
  const at::Tensor& vc = THPVariable_Unpack(args[2]);
  const at::Tensor& qsl = THPVariable_Unpack(args[3]);
  const at::Tensor& sl = THPVariable_Unpack(args[4]);
  const at::Tensor& bt = THPVariable_Unpack(args[5]);
  const int qcode = code_of(q.scalar_type(), false), ccode = code_of(kc.scalar_type(), true);
  if (qcode < 0 || ccode < 0 || vc.scalar_type() != kc.scalar_type()) Py_RETURN_NONE;
  if (q.dim() != 3 || kc.dim() != 4 || vc.dim() != 4) Py_RETURN_NONE;
  if (!q.device().is_cpu() || !kc.device().is_cpu() || !vc.device().is_cpu()) Py_RETURN_NONE;
  if (q.layout() != at::kStrided || kc.layout() != at::kStrided || vc.layout() != at::kStrided) Py_RETURN_NONE;
  const int64_t T = q.size(0), H = q.size(1), D = q.size(2);
  const int64_t nb = kc.size(0), bs = kc.size(1), hkv = kc.size(2), dk = kc.size(3), dv = vc.size(3);
  if (dk != D || vc.size(0) != nb || vc.size(1) != bs || vc.size(2) != hkv) Py_RETURN_NONE;
  if (!(T && H && D && dv && bs && hkv) || H % hkv) Py_RETURN_NONE;
  if (q.stride(2) != 1 || kc.stride(3) != 1 || vc.stride(3) != 1) Py_RETURN_NONE;
  if (!meta_ok(qsl, 1) || !meta_ok(sl, 1) || !meta_ok(bt, 2)) Py_RETURN_NONE;
  const int64_t B = sl.size(0);
  if (qsl.size(0) != B + 1 || bt.size(0) != B) Py_RETURN_NONE;
  // the largest int32 ranges the kernel's int arguments hold
  if (H > INT32_MAX || D > INT32_MAX || dv > INT32_MAX || bs > INT32_MAX || B > INT32_MAX) Py_RETURN_NONE;
  double sc;
  PyObject* s = args[6];
  if (s == Py_None) sc = std::pow((double)D, -0.5);
  else if (PyFloat_CheckExact(s)) sc = PyFloat_AS_DOUBLE(s);
  else if (PyLong_CheckExact(s)) {
    sc = PyLong_AsDouble(s);
    if (sc == -1.0 && PyErr_Occurred()) {  // too large for a float: the Python path raises its own error
      PyErr_Clear();
      Py_RETURN_NONE;
    }
  } else Py_RETURN_NONE;
  const int64_t total = check_values(qsl, sl, bt, T, nb, bs);
  if (total < 0) Py_RETURN_NONE;
  // cpu.py's _work_split for a decode: one thread below the parallel threshold, chunks of whole blocks
  const int threads = total * H >= g_min_parallel ? at::get_num_threads() : 1;
  int64_t chunk = (total + 4 * threads - 1) / (4 * threads);
  chunk = std::min(g_chunk_hi, std::max(g_chunk_lo, chunk));
  chunk = (chunk + bs - 1) / bs * bs;
  // straight to the CPU allocator (torch.empty's dispatcher walk was most of this entry's cold cost); the tensor is
  // torch.empty's: inference mode decides its keys and version counter the same way (in the TensorImpl)
  at::Tensor out(at::detail::empty_cpu({T, H, dv}, q.scalar_type()));
  int bad;
  {
    const float scf = (float)sc;
    Py_BEGIN_ALLOW_THREADS
    bad = g_kernel(qcode, ccode, qcode, q.data_ptr(), q.stride(0), q.stride(1), kc.data_ptr(), kc.stride(0),
                   kc.stride(1), kc.stride(2), vc.data_ptr(), vc.stride(0), vc.stride(1), vc.stride(2), out.data_ptr(),
                   out.stride(0), out.stride(1), qsl.data_ptr<int32_t>(), sl.data_ptr<int32_t>(),
                   bt.data_ptr<int32_t>(), bt.stride(0), nullptr, (int)B, (int)H, (int)hkv, (int)D, (int)dv, (int)bs,
                   scf, 1, 0, 0.0f, nullptr, 1.0f, 1.0f, threads, (int)chunk, nb, 1);
    Py_END_ALLOW_THREADS
  }
  if (bad) Py_RETURN_NONE;
  return THPVariable_Wrap(std::move(out));
}

// configure(kernel address, _MIN_PARALLEL_WORK, chunk low, chunk high)
PyObject* py_configure(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError, "configure() takes 4 arguments");
    return nullptr;
  }
  void* fn = PyLong_AsVoidPtr(args[0]);
  const long long mp = PyLong_AsLongLong(args[1]), lo = PyLong_AsLongLong(args[2]), hi = PyLong_AsLongLong(args[3]);
  if (PyErr_Occurred()) return nullptr;
  g_kernel = (DecodeFn)fn;
  g_min_parallel = mp;
  g_chunk_lo = lo;
  g_chunk_hi = hi;
  Py_RETURN_NONE;
}

PyMethodDef g_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))py_decode, METH_FASTCALL,
     "decode(query, key_cache, value_cache, query_start_loc, seq_lens, block_table, scale): the output, or None"},
    {"configure", (PyCFunction)(void (*)(void))py_configure, METH_FASTCALL,
     "configure(kernel address, min parallel work, chunk low, chunk high)"},
    {nullptr, nullptr, 0, nullptr}};
PyModuleDef g_module = {PyModuleDef_HEAD_INIT, "attnsolve_cpu_decode_entry", nullptr, -1, g_methods,
                        nullptr, nullptr, nullptr, nullptr};
}  // namespace

PyMODINIT_FUNC PyInit_attnsolve_cpu_decode_entry(void) { return PyModule_Create(&g_module); }
