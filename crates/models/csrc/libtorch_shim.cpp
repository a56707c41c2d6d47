// The libtorch backward kernels that oodforge's `tch` backend calls and the tch crate does not
// bind (its generator skips functions taking a `bool[3]` output mask): those PyTorch's autograd
// runs for `ConvolutionBackward0`, `NativeBatchNormBackward0` and `NativeLayerNormBackward0`
// (tools/autograd/derivatives.yaml). Rust side: crates/models/src/libtorch.rs.
//
// Tensors cross as `at::Tensor*`, as in torch-sys (`typedef torch::Tensor *tensor`): inputs are
// borrowed, outputs are new heap tensors that tch's `Tensor::from_ptr` takes ownership of. No C++
// exception crosses the boundary: each function returns nullptr on success, or a malloc'd
// message the caller frees.
#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <tuple>

namespace {
at::Tensor *out_or_null(bool wanted, const at::Tensor &t) {
  return wanted ? new at::Tensor(t) : nullptr;
}

// Runs `body`; nullptr when it returns, the exception's message (malloc'd) when it throws,
// `name` for a throw that is not a std::exception.
template <class Body>
char *guarded(const char *name, Body body) {
  try {
    body();
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  } catch (...) {
    return strdup(name);
  }
}
}  // namespace

extern "C" {

// at::convolution_backward of a non-transposed 2-D convolution without bias: `dx` (when
// `want_dx`) and `dw` (when `want_dw`), as PyTorch's autograd computes them.
char *oodforge_conv2d_backward(const at::Tensor *dy, const at::Tensor *x, const at::Tensor *w,
                               const int64_t *stride, const int64_t *padding,
                               const int64_t *dilation, int64_t groups, int want_dx,
                               int want_dw, at::Tensor **dx, at::Tensor **dw) {
  *dx = nullptr;
  *dw = nullptr;
  return guarded("unknown C++ exception in at::convolution_backward", [&] {
    const int64_t no_output_padding[2] = {0, 0};
    auto grads = at::convolution_backward(
        *dy, *x, *w, std::nullopt, at::IntArrayRef(stride, 2), at::IntArrayRef(padding, 2),
        at::IntArrayRef(dilation, 2), /*transposed=*/false,
        at::IntArrayRef(no_output_padding, 2), groups,
        {want_dx != 0, want_dw != 0, /*bias=*/false});
    *dx = out_or_null(want_dx != 0, std::get<0>(grads));
    *dw = out_or_null(want_dw != 0, std::get<1>(grads));
  });
}

// at::native_batch_norm_backward in training mode, from the batch statistics the forward
// (`at::native_batch_norm`) saved: `dx`, `dgamma`, `dbeta`.
char *oodforge_batch_norm_backward(const at::Tensor *dy, const at::Tensor *x,
                                   const at::Tensor *gamma, const at::Tensor *save_mean,
                                   const at::Tensor *save_invstd, double eps, int want_dx,
                                   int want_dgamma, int want_dbeta, at::Tensor **dx,
                                   at::Tensor **dgamma, at::Tensor **dbeta) {
  *dx = nullptr;
  *dgamma = nullptr;
  *dbeta = nullptr;
  return guarded("unknown C++ exception in at::native_batch_norm_backward", [&] {
    auto grads = at::native_batch_norm_backward(
        *dy, *x, *gamma, std::nullopt, std::nullopt, *save_mean, *save_invstd,
        /*train=*/true, eps, {want_dx != 0, want_dgamma != 0, want_dbeta != 0});
    *dx = out_or_null(want_dx != 0, std::get<0>(grads));
    *dgamma = out_or_null(want_dgamma != 0, std::get<1>(grads));
    *dbeta = out_or_null(want_dbeta != 0, std::get<2>(grads));
  });
}

// at::native_layer_norm_backward over the last axis (`d` values), from the row statistics the
// forward (`at::native_layer_norm`) saved: `dx`, `dgamma`, `dbeta`.
char *oodforge_layer_norm_backward(const at::Tensor *dy, const at::Tensor *x, int64_t d,
                                   const at::Tensor *mean, const at::Tensor *rstd,
                                   const at::Tensor *gamma, const at::Tensor *beta, int want_dx,
                                   int want_dgamma, int want_dbeta, at::Tensor **dx,
                                   at::Tensor **dgamma, at::Tensor **dbeta) {
  *dx = nullptr;
  *dgamma = nullptr;
  *dbeta = nullptr;
  return guarded("unknown C++ exception in at::native_layer_norm_backward", [&] {
    auto grads = at::native_layer_norm_backward(
        *dy, *x, at::IntArrayRef(&d, 1), *mean, *rstd, *gamma, *beta,
        {want_dx != 0, want_dgamma != 0, want_dbeta != 0});
    *dx = out_or_null(want_dx != 0, std::get<0>(grads));
    *dgamma = out_or_null(want_dgamma != 0, std::get<1>(grads));
    *dbeta = out_or_null(want_dbeta != 0, std::get<2>(grads));
  });
}

}  // extern "C"
