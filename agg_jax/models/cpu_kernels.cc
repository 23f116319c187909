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
//
// The batch norm's passes over a channels-last tensor x (rows = all axes but the last, C channels)
// with its activation's derivative f'(z) at z = n * scale + bias, n = (x - mean) * inv:
//   BatchNormMoments:   (2, C) = sum of x, sum of x^2 over the rows (the batch statistics);
//   BatchNormGradSums:  (2, C) = sum of g, sum of g * n, where g = dy * f'(z) (the gradients of
//                       bias and scale);
//   BatchNormGradInput: dx = a * g + b * n + k with per-channel a, b, k (the input gradient).
// Each reads its operands once, where XLA:CPU writes the products out for YNNPACK's reductions
// and recomputes the activation's derivative in another pass. Rows are summed in chunks spread
// over the threads and the chunks' sums added in order, so the sums do not depend on the thread
// count either.
//
// Matmul: a 1x1 convolution and its two gradients as CBLAS sgemm calls (MKL's, set from Python),
// the rows of the result split over the threads (below).

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
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

  Chunks(int64_t count, std::function<void(int64_t)> body) : count_(count), body_(std::move(body)) {}

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


// The rows of a (rows, channels) tensor in chunks of about 32K values, whatever the channels.
struct RowChunks {
  RowChunks(int64_t rows, int64_t channels)
      : rows(rows),
        per_chunk(std::max<int64_t>(1, 32768 / std::max<int64_t>(1, channels))),
        count((rows + per_chunk - 1) / per_chunk) {}
  int64_t First(int64_t chunk) const { return chunk * per_chunk; }
  int64_t Last(int64_t chunk) const { return std::min(rows, (chunk + 1) * per_chunk); }

  const int64_t rows, per_chunk, count;
};

// The activations a BatchNorm applies, numbered as cpu_kernels.ACTIVATIONS numbers them.
enum Activation : int64_t { kLinear = 0, kRelu = 1, kRelu6 = 2, kSilu = 3 };

// exp(x) to about 2 ulp in a form compilers vectorise (the C library's expf is a call per
// value): 2^n * e^r with n = round(x / ln 2) (adding and taking away 1.5 * 2^23 rounds) and e^r,
// |r| <= ln 2 / 2, from its Taylor series.
inline float VectorExp(float x) {
  x = std::min(88.0f, std::max(-87.0f, x));
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

template <Activation kActivation>
inline float Derivative(float z) {
  if constexpr (kActivation == kLinear) return 1.0f;
  if constexpr (kActivation == kRelu) return z > 0.0f ? 1.0f : 0.0f;
  if constexpr (kActivation == kRelu6) return (z > 0.0f && z < 6.0f) ? 1.0f : 0.0f;
  if constexpr (kActivation == kSilu) {
    const float sigmoid = 1.0f / (1.0f + VectorExp(-z));
    return sigmoid * (1.0f + z * (1.0f - sigmoid));
  }
}

// A batch norm's tensors and its per-channel statistics and parameters; `coefficients` holds
// a, b and k of the input gradient (3 x C), where it is computed.
struct BatchNorm {
  const float *x, *dy, *mean, *inv, *scale, *bias, *coefficients;
  int64_t rows, channels;
};

constexpr int64_t kBlock = 16;  // channels summed together: one AVX-512 vector of floats

// Adds the rows [first, last) of the two per-channel sums (of x and x^2, or with kGradient of g
// and g * n) into sums (2 x C). Channels go in blocks of kBlock, rows inside, so that the
// block's sums stay in registers.
template <Activation kActivation, bool kGradient>
void AddSums(const BatchNorm& bn, int64_t first, int64_t last, float* __restrict sums) {
  const int64_t channels = bn.channels;
  for (int64_t c0 = 0; c0 < channels; c0 += kBlock) {
    const int64_t width = std::min(kBlock, channels - c0);
    float mean[kBlock] = {}, inv[kBlock] = {}, scale[kBlock] = {}, bias[kBlock] = {};
    if constexpr (kGradient) {
      for (int64_t c = 0; c < width; ++c) {
        mean[c] = bn.mean[c0 + c], inv[c] = bn.inv[c0 + c];
        scale[c] = bn.scale[c0 + c], bias[c] = bn.bias[c0 + c];
      }
    }
    float first_sum[kBlock] = {}, second_sum[kBlock] = {};
    auto add_rows = [&](auto width) {
      for (int64_t r = first; r < last; ++r) {
        const float* __restrict x = bn.x + r * channels + c0;
        const float* __restrict dy = kGradient ? bn.dy + r * channels + c0 : nullptr;
        for (int64_t c = 0; c < width; ++c) {
          if constexpr (kGradient) {
            const float n = (x[c] - mean[c]) * inv[c];
            const float g = dy[c] * Derivative<kActivation>(n * scale[c] + bias[c]);
            first_sum[c] += g;
            second_sum[c] += g * n;
          } else {
            first_sum[c] += x[c];
            second_sum[c] += x[c] * x[c];
          }
        }
      }
    };
    // A whole block has a width known at compile time, so the compiler unrolls it into vectors.
    width == kBlock ? add_rows(std::integral_constant<int64_t, kBlock>()) : add_rows(width);
    for (int64_t c = 0; c < width; ++c) {
      sums[c0 + c] += first_sum[c];
      sums[channels + c0 + c] += second_sum[c];
    }
  }
}

template <Activation kActivation>
void GradInputRows(const BatchNorm& bn, int64_t first, int64_t last, float* __restrict dx) {
  const int64_t channels = bn.channels;
  const float* __restrict mean = bn.mean;
  const float* __restrict inv = bn.inv;
  const float* __restrict scale = bn.scale;
  const float* __restrict bias = bn.bias;
  const float* __restrict a = bn.coefficients;
  const float* __restrict b = a + channels;
  const float* __restrict k = b + channels;
  for (int64_t r = first; r < last; ++r) {
    const float* __restrict x = bn.x + r * channels;
    const float* __restrict dy = bn.dy + r * channels;
    float* __restrict out = dx + r * channels;
    for (int64_t c = 0; c < channels; ++c) {
      const float n = (x[c] - mean[c]) * inv[c];
      out[c] = a[c] * (dy[c] * Derivative<kActivation>(n * scale[c] + bias[c])) + b[c] * n + k[c];
    }
  }
}

// (rows, channels) of a channels-last tensor: all axes but the last are rows.
std::pair<int64_t, int64_t> RowsAndChannels(ffi::AnyBuffer::Dimensions dims) {
  int64_t rows = 1;
  for (size_t axis = 0; axis + 1 < dims.size(); ++axis) rows *= dims[axis];
  return {rows, dims.size() == 0 ? 1 : dims.back()};
}

// Sums (2 x C) of the rows, chunk by chunk over the threads, the chunks added in order.
template <Activation kActivation, bool kGradient>
void ChunkedSums(ffi::ThreadPool& pool, const BatchNorm& bn, float* out) {
  const RowChunks chunks(bn.rows, bn.channels);
  const int64_t width = 2 * bn.channels;
  std::vector<float> partials(chunks.count * width, 0.0f);
  Chunks::Run(pool, chunks.count, [&](int64_t chunk) {
    AddSums<kActivation, kGradient>(bn, chunks.First(chunk), chunks.Last(chunk),
                                    partials.data() + chunk * width);
  });
  for (int64_t i = 0; i < width; ++i) {
    double total = 0.0;
    for (int64_t chunk = 0; chunk < chunks.count; ++chunk) total += partials[chunk * width + i];
    out[i] = static_cast<float>(total);
  }
}

template <Activation kActivation>
void GradInput(ffi::ThreadPool& pool, const BatchNorm& bn, float* dx) {
  const RowChunks chunks(bn.rows, bn.channels);
  Chunks::Run(pool, chunks.count, [&](int64_t chunk) {
    GradInputRows<kActivation>(bn, chunks.First(chunk), chunks.Last(chunk), dx);
  });
}

using Tensor = ffi::Buffer<ffi::F32>;
using Vector = ffi::Buffer<ffi::F32, 1>;
using Matrix = ffi::Buffer<ffi::F32, 2>;

// The passes for each activation, indexed by its number.
using Pass = void (*)(ffi::ThreadPool&, const BatchNorm&, float*);
constexpr Pass kGradSums[] = {ChunkedSums<kLinear, true>, ChunkedSums<kRelu, true>,
                              ChunkedSums<kRelu6, true>, ChunkedSums<kSilu, true>};
constexpr Pass kGradInput[] = {GradInput<kLinear>, GradInput<kRelu>, GradInput<kRelu6>,
                               GradInput<kSilu>};

// The operands of a gradient pass, checked: x and dy of one size, the vectors one per channel.
ffi::ErrorOr<BatchNorm> GradientOperands(const Tensor& x, const Tensor& dy, const Vector& mean,
                                         const Vector& inv, const Vector& scale,
                                         const Vector& bias, int64_t activation) {
  const auto [rows, channels] = RowsAndChannels(x.dimensions());
  bool agree = dy.element_count() == x.element_count();
  for (const Vector* v : {&mean, &inv, &scale, &bias}) {
    agree = agree && static_cast<int64_t>(v->element_count()) == channels;
  }
  if (!agree) {
    return ffi::Unexpected(ffi::Error::InvalidArgument(
        "batch norm: x, its gradient and the per-channel vectors disagree in size"));
  }
  if (activation < 0 || activation > kSilu) {
    return ffi::Unexpected(ffi::Error::InvalidArgument("batch norm: unknown activation " +
                                                       std::to_string(activation)));
  }
  return BatchNorm{x.typed_data(),     dy.typed_data(),   mean.typed_data(), inv.typed_data(),
                   scale.typed_data(), bias.typed_data(), nullptr,           rows,
                   channels};
}

ffi::Error BatchNormMomentsImpl(ffi::ThreadPool pool, Tensor x, ffi::ResultBuffer<ffi::F32> sums) {
  const auto [rows, channels] = RowsAndChannels(x.dimensions());
  const BatchNorm bn{x.typed_data(), nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                     rows, channels};
  ChunkedSums<kLinear, false>(pool, bn, sums->typed_data());
  return ffi::Error::Success();
}

ffi::Error BatchNormGradSumsImpl(ffi::ThreadPool pool, Tensor x, Tensor dy, Vector mean,
                                 Vector inv, Vector scale, Vector bias,
                                 ffi::ResultBuffer<ffi::F32> sums, int64_t activation) {
  const auto bn = GradientOperands(x, dy, mean, inv, scale, bias, activation);
  if (bn.has_error()) return bn.error();
  kGradSums[activation](pool, bn.value(), sums->typed_data());
  return ffi::Error::Success();
}

ffi::Error BatchNormGradInputImpl(ffi::ThreadPool pool, Tensor x, Tensor dy, Vector mean,
                                  Vector inv, Vector scale, Vector bias, Matrix coefficients,
                                  ffi::ResultBuffer<ffi::F32> dx, int64_t activation) {
  auto bn = GradientOperands(x, dy, mean, inv, scale, bias, activation);
  if (bn.has_error()) return bn.error();
  if (static_cast<int64_t>(coefficients.element_count()) != 3 * bn.value().channels) {
    return ffi::Error::InvalidArgument("batch norm: the input gradient's coefficients are not 3 x C");
  }
  BatchNorm with_coefficients = bn.value();
  with_coefficients.coefficients = coefficients.typed_data();
  kGradInput[activation](pool, with_coefficients, dx->typed_data());
  return ffi::Error::Success();
}

// What both gradient passes take: XLA's threads, x, dy, and mean, inv, scale and bias.
auto BindGradientOperands() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<Tensor>()
      .Arg<Tensor>()
      .Arg<Vector>()
      .Arg<Vector>()
      .Arg<Vector>()
      .Arg<Vector>();
}

// Matmul: c = op(a) op(b) for operands viewed as matrices, each axis but the last one of rows
// (a 1x1 convolution's pixels), float32 and row-major, where op transposes the operand whose flag
// is set: a pointwise convolution (x @ kernel), its input gradient (g @ kernel^T) and its kernel
// gradient (x^T @ g, summed over every pixel). The rows of c (or its columns, where it has more)
// are split into one chunk per thread of XLA's pool and each chunk is one call of the
// single-threaded sgemm that agg_jax_set_sgemm set (CBLAS's cblas_sgemm): every element of c is
// one dot product in the library's order, so c does not depend on the number of threads.
using Sgemm = void (*)(int layout, int transpose_a, int transpose_b, int m, int n, int k,
                       float alpha, const float* a, int lda, const float* b, int ldb, float beta,
                       float* c, int ldc);
std::atomic<Sgemm> sgemm{nullptr};
constexpr int kRowMajor = 101, kNoTranspose = 111, kTranspose = 112;

// The columns of a tensor viewed as a matrix: its last axis.
int64_t Columns(const Tensor& t) { return t.dimensions().back(); }

ffi::Error MatmulImpl(ffi::ThreadPool pool, Tensor a, Tensor b, ffi::ResultBuffer<ffi::F32> c,
                      bool transpose_a, bool transpose_b) {
  const Sgemm gemm = sgemm.load();
  if (gemm == nullptr) return ffi::Error::InvalidArgument("agg_jax_matmul: no sgemm was set");
  const int64_t lda = Columns(a), ldb = Columns(b);
  const int64_t n = c->dimensions().back(), m = c->element_count() / n;
  const int64_t k = transpose_a ? a.element_count() / lda : lda;
  // One chunk per thread, of rows or, where c has fewer rows than columns (a kernel gradient with
  // few input channels), of columns.
  const bool by_rows = m >= n;
  const int64_t extent = by_rows ? m : n;
  const int64_t chunks = std::clamp<int64_t>(extent / 16, 1, pool.num_threads());
  const int64_t size = (extent + chunks - 1) / chunks;
  Chunks::Run(pool, chunks, [&](int64_t chunk) {
    const int64_t first = chunk * size, count = std::min(size, extent - first);
    if (count <= 0) return;
    // Row `first` of op(a) is row `first` of a, or its column `first` when a is transposed;
    // column `first` of op(b) is column `first` of b, or its row `first` when b is transposed.
    const float* a_part = a.typed_data();
    const float* b_part = b.typed_data();
    float* c_part = c->typed_data();
    if (by_rows) {
      a_part += transpose_a ? first : first * lda;
      c_part += first * n;
    } else {
      b_part += transpose_b ? first * ldb : first;
      c_part += first;
    }
    gemm(kRowMajor, transpose_a ? kTranspose : kNoTranspose,
         transpose_b ? kTranspose : kNoTranspose, by_rows ? count : m, by_rows ? n : count, k,
         1.0f, a_part, lda, b_part, ldb, 0.0f, c_part, n);
  });
  return ffi::Error::Success();
}

}  // namespace

extern "C" void agg_jax_set_sgemm(void* function) { sgemm.store(reinterpret_cast<Sgemm>(function)); }

XLA_FFI_DEFINE_HANDLER_SYMBOL(Matmul, MatmulImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Tensor>()
                                  .Arg<Tensor>()
                                  .Ret<Tensor>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DepthwiseKernelGrad, DepthwiseKernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Tensor4>()
                                  .Arg<Tensor4>()
                                  .Ret<Tensor4>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(BatchNormMoments, BatchNormMomentsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Tensor>()
                                  .Ret<Tensor>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(BatchNormGradSums, BatchNormGradSumsImpl,
                              BindGradientOperands().Ret<Tensor>().Attr<int64_t>("activation"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(BatchNormGradInput, BatchNormGradInputImpl,
                              BindGradientOperands()
                                  .Arg<Matrix>()
                                  .Ret<Tensor>()
                                  .Attr<int64_t>("activation"));
