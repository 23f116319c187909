// CPU kernels for XLA's FFI, built by agg_jax/models/cpu_kernels.py on first use.
//
// DepthwiseKernelGrad: the kernel gradient of a depthwise convolution,
//   dW[i, j, 0, c] = sum over n, oh, ow of x[n, oh * s + i - pad_top, ow * s + j - pad_left, c]
//                                          * g[n, oh, ow, c]   (x is zero outside its bounds)
// for x (N, H, W, C), g (N, OH, OW, C) and dW (KH, KW, 1, C), all float32 and channels last.
// One pass over x and g: each image's k*k sums stay in cache while its rows go by, where XLA's
// form reads x and g once per tap. Images are summed one by one into their own partial sums,
// spread over XLA's intra-op threads, then added in image order: the result does not depend on
// the number of threads.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// (N, H, W, C) tensors and the (KH, KW, 1, C) kernel, float32.
using Tensor4 = ffi::Buffer<ffi::F32, 4>;
using Result4 = ffi::ResultBuffer<ffi::F32, 4>;

namespace {

struct Geometry {
  int64_t height, width, channels, out_height, out_width, kernel_height, kernel_width, stride,
      pad_top, pad_left;
};

// Adds image `n`'s k*k products to `sums` (KH * KW * C floats).
void AddImage(const Geometry& geo, const float* x, const float* g, int64_t n, float* sums) {
  const int64_t c = geo.channels;
  for (int64_t oh = 0; oh < geo.out_height; ++oh) {
    const float* grad_row = g + (n * geo.out_height + oh) * geo.out_width * c;
    for (int64_t i = 0; i < geo.kernel_height; ++i) {
      const int64_t ih = oh * geo.stride + i - geo.pad_top;
      if (ih < 0 || ih >= geo.height) continue;
      const float* input_row = x + (n * geo.height + ih) * geo.width * c;
      for (int64_t ow = 0; ow < geo.out_width; ++ow) {
        const float* __restrict grad = grad_row + ow * c;
        for (int64_t j = 0; j < geo.kernel_width; ++j) {
          const int64_t iw = ow * geo.stride + j - geo.pad_left;
          if (iw < 0 || iw >= geo.width) continue;
          const float* __restrict input = input_row + iw * c;
          float* __restrict sum = sums + (i * geo.kernel_width + j) * c;
          for (int64_t k = 0; k < c; ++k) sum[k] += input[k] * grad[k];
        }
      }
    }
  }
}

// Runs body(chunk) for every chunk in [0, count) on the calling thread and on up to
// pool.num_threads() - 1 tasks of XLA's thread pool, each taking the next chunk until none is
// left. The caller waits only for chunks already taken, so it never waits on a task that has not
// started (the pool may be busy, or the caller one of its threads).
class Chunks {
 public:
  static void Run(ffi::ThreadPool& pool, int64_t count, std::function<void(int64_t)> body) {
    auto chunks = std::make_shared<Chunks>(count, std::move(body));
    const int64_t helpers = std::min<int64_t>(pool.num_threads(), count) - 1;
    for (int64_t t = 0; t < helpers; ++t) pool.Schedule([chunks] { chunks->RunRemaining(); });
    chunks->RunRemaining();
    std::unique_lock<std::mutex> lock(chunks->mutex_);
    chunks->all_done_.wait(lock, [&] { return chunks->done_ == chunks->count_; });
  }

  Chunks(int64_t count, std::function<void(int64_t)> body) : count_(count), body_(body) {}

 private:
  void RunRemaining() {
    for (int64_t chunk; (chunk = next_.fetch_add(1)) < count_;) {
      body_(chunk);
      std::lock_guard<std::mutex> lock(mutex_);
      if (++done_ == count_) all_done_.notify_all();
    }
  }

  const int64_t count_;
  const std::function<void(int64_t)> body_;
  std::atomic<int64_t> next_{0};
  std::mutex mutex_;
  std::condition_variable all_done_;
  int64_t done_ = 0;
};

ffi::Error DepthwiseKernelGradImpl(ffi::ThreadPool pool, Tensor4 x, Tensor4 g, Result4 grad_kernel,
                                   int64_t stride, int64_t pad_top, int64_t pad_left) {
  const auto xd = x.dimensions(), gd = g.dimensions(), kd = grad_kernel->dimensions();
  const Geometry geo{xd[1], xd[2], xd[3], gd[1], gd[2], kd[0], kd[1], stride, pad_top, pad_left};
  if (gd[0] != xd[0] || gd[3] != xd[3] || kd[2] != 1 || kd[3] != xd[3]) {
    return ffi::Error::InvalidArgument(
        "depthwise kernel gradient: x (N, H, W, C), gradient (N, OH, OW, C) and kernel "
        "(KH, KW, 1, C) disagree");
  }
  if (stride < 1 || pad_top < 0 || pad_left < 0) {
    return ffi::Error::InvalidArgument(
        "depthwise kernel gradient: stride " + std::to_string(stride) + ", padding " +
        std::to_string(pad_top) + ", " + std::to_string(pad_left));
  }
  const int64_t taps = geo.kernel_height * geo.kernel_width * geo.channels;
  float* out = grad_kernel->typed_data();
  std::fill(out, out + taps, 0.0f);
  const float* xs = x.typed_data();
  const float* gs = g.typed_data();
  const int64_t images = xd[0];
  std::vector<float> partial_sums(images * taps, 0.0f);
  Chunks::Run(pool, images,
              [&](int64_t n) { AddImage(geo, xs, gs, n, partial_sums.data() + n * taps); });
  for (int64_t n = 0; n < images; ++n) {
    const float* partial = partial_sums.data() + n * taps;
    for (int64_t t = 0; t < taps; ++t) out[t] += partial[t];
  }
  return ffi::Error::Success();
}


}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DepthwiseKernelGrad, DepthwiseKernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Tensor4>()
                                  .Arg<Tensor4>()
                                  .Ret<Tensor4>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));
