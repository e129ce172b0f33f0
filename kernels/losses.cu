// The fused loss terms (notes, section 5) -- the CUDA twin of mrcnn_np/ops/losses.py.
//
// Each forward kernel computes every element's loss term and adds them up within the block
// (mr_block_sum, shared memory): it writes one partial sum per block, and the launcher adds the few
// partials with CuPy and divides by the count, so the whole loss costs one kernel launch plus one
// tiny reduction, and no (N, K)-sized temporary is written except what the backward needs.
// Each backward kernel is elementwise: one thread per gradient number.
//
// * softmax cross-entropy, mean over rows:  L = -1/N sum_i log softmax(z_i)[y_i]
//       dL/dz_i = (softmax(z_i) - onehot(y_i)) / N
//   one thread per ROW (K, the number of classes, is small); it also writes log_p (N, K), the
//   reference's cache, which the backward exponentiates.
// * smooth L1, summed:  s(d) = 0.5 d^2 / beta if |d| < beta, |d| - 0.5 beta otherwise; d = pred - target
//       ds/dd = d / beta if |d| < beta, sign(d) otherwise      (beta = 0: |d| < 0 never holds, so
//       the same code gives plain L1 and its gradient sign(d), the reference's special case)
// * sigmoid BCE with logits, mean:  l(x, t) = max(x, 0) - x t + log(1 + exp(-|x|))
//       dl/dx = (sigmoid(x) - t) / count, with sigmoid from exp(-|x|) so nothing overflows for
//       logits of +-1000.
//
// Launch the forward kernels with MR_MAX_BLOCK (256) threads or a smaller power of two; `partial`
// holds gridDim.x numbers.
#include "mrcnn_common.cuh"

template <typename T>
__global__ void softmax_cross_entropy_forward(const T* __restrict__ logits,
                                              const long long* __restrict__ labels, int n, int k,
                                              T* __restrict__ log_p, T* __restrict__ partial) {
    __shared__ T smem[MR_MAX_BLOCK];
    T part = T(0);
    MR_GRID_STRIDE_LOOP(row, n) {
        const T* z = logits + row * k;
        T* lp = log_p + row * k;
        T zmax = z[0];
        for (int j = 1; j < k; ++j) zmax = mr_max(zmax, z[j]);
        T sum_exp = T(0);
        for (int j = 0; j < k; ++j) sum_exp += mr_exp(z[j] - zmax);   // shifted: no overflow
        const T log_z = mr_log(sum_exp);
        for (int j = 0; j < k; ++j) lp[j] = (z[j] - zmax) - log_z;      // log-softmax
        part -= lp[labels[row]];                                        // -log p[label]
    }
    const T total = mr_block_sum(part, smem);
    if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// dlogits = (exp(log_p) - onehot(label)) * scale,  scale = dloss / max(N, 1)
template <typename T>
__global__ void softmax_cross_entropy_backward(const T* __restrict__ log_p,
                                               const long long* __restrict__ labels, int n, int k,
                                               T scale, T* __restrict__ dlogits) {
    MR_GRID_STRIDE_LOOP(idx, (index_t)n * k) {
        const index_t row = idx / k;
        const int j = (int)(idx % k);
        T g = mr_exp(log_p[idx]);
        if (j == labels[row]) g -= T(1);
        dlogits[idx] = g * scale;
    }
}

// Writes d = pred - target (the reference's cache) and the block sums of s(d).
template <typename T>
__global__ void smooth_l1_forward(const T* __restrict__ pred, const T* __restrict__ target,
                                  index_t count, T beta, T* __restrict__ diff,
                                  T* __restrict__ partial) {
    __shared__ T smem[MR_MAX_BLOCK];
    const T half_beta = T(0.5) * beta;
    T part = T(0);
    MR_GRID_STRIDE_LOOP(idx, count) {
        const T d = pred[idx] - target[idx];
        const T ad = mr_abs(d);
        diff[idx] = d;
        part += (ad < beta) ? (T(0.5) * d * d) / beta : ad - half_beta;
    }
    const T total = mr_block_sum(part, smem);
    if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// dpred = dloss * (d / beta if |d| < beta else sign(d))
template <typename T>
__global__ void smooth_l1_backward(const T* __restrict__ diff, index_t count, T beta, T dloss,
                                   T* __restrict__ dpred) {
    MR_GRID_STRIDE_LOOP(idx, count) {
        const T d = diff[idx];
        const T sign = d > T(0) ? T(1) : (d < T(0) ? T(-1) : T(0));
        dpred[idx] = dloss * ((mr_abs(d) < beta) ? d / beta : sign);
    }
}

template <typename T>
__global__ void sigmoid_bce_forward(const T* __restrict__ x, const T* __restrict__ t, index_t count,
                                    T* __restrict__ partial) {
    __shared__ T smem[MR_MAX_BLOCK];
    T part = T(0);
    MR_GRID_STRIDE_LOOP(idx, count) {
        const T xi = x[idx];
        // max(x, 0) - x t + log(1 + exp(-|x|)): exp never sees a positive argument
        part += (mr_max(xi, T(0)) - xi * t[idx]) + mr_log1p(mr_exp(-mr_abs(xi)));
    }
    const T total = mr_block_sum(part, smem);
    if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// dlogits = (sigmoid(x) - t) * scale,  scale = dloss / max(count, 1)
template <typename T>
__global__ void sigmoid_bce_backward(const T* __restrict__ x, const T* __restrict__ t,
                                     index_t count, T scale, T* __restrict__ dlogits) {
    MR_GRID_STRIDE_LOOP(idx, count) {
        const T xi = x[idx];
        const T e = mr_exp(-mr_abs(xi));                             // in (0, 1]: never overflows
        const T sig = xi >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
        dlogits[idx] = (sig - t[idx]) * scale;
    }
}

#ifdef MRCNN_CPU_EMU
// Host entry points for the CPU emulation (ctypes): one per kernel and dtype, named
// emu_<kernel>_<f32|f64>, taking the kernel's arguments (scalars of type T widened to double) and
// then the grid (x, y) and block (x) to emulate.
#define MRCNN_EMU_LOSSES(T, SUFFIX)                                                              \
    extern "C" void emu_softmax_cross_entropy_forward_##SUFFIX(                                  \
        const T* logits, const long long* labels, int n, int k, T* log_p, T* partial,            \
        unsigned gx, unsigned gy, unsigned bx) {                                                 \
        mrcnn_emu::launch_with_barriers(dim3(gx, gy), dim3(bx), [&] {                            \
            softmax_cross_entropy_forward<T>(logits, labels, n, k, log_p, partial);              \
        });                                                                                      \
    }                                                                                            \
    extern "C" void emu_softmax_cross_entropy_backward_##SUFFIX(                                 \
        const T* log_p, const long long* labels, int n, int k, double scale, T* dlogits,         \
        unsigned gx, unsigned gy, unsigned bx) {                                                 \
        mrcnn_emu::launch(dim3(gx, gy), dim3(bx), [&] {                                          \
            softmax_cross_entropy_backward<T>(log_p, labels, n, k, (T)scale, dlogits);           \
        });                                                                                      \
    }                                                                                            \
    extern "C" void emu_smooth_l1_forward_##SUFFIX(const T* pred, const T* target,               \
                                                   long long count, double beta, T* diff,        \
                                                   T* partial, unsigned gx, unsigned gy,         \
                                                   unsigned bx) {                                \
        mrcnn_emu::launch_with_barriers(dim3(gx, gy), dim3(bx), [&] {                            \
            smooth_l1_forward<T>(pred, target, count, (T)beta, diff, partial);                   \
        });                                                                                      \
    }                                                                                            \
    extern "C" void emu_smooth_l1_backward_##SUFFIX(const T* diff, long long count, double beta, \
                                                    double dloss, T* dpred, unsigned gx,         \
                                                    unsigned gy, unsigned bx) {                  \
        mrcnn_emu::launch(dim3(gx, gy), dim3(bx), [&] {                                          \
            smooth_l1_backward<T>(diff, count, (T)beta, (T)dloss, dpred);                        \
        });                                                                                      \
    }                                                                                            \
    extern "C" void emu_sigmoid_bce_forward_##SUFFIX(const T* x, const T* t, long long count,    \
                                                     T* partial, unsigned gx, unsigned gy,       \
                                                     unsigned bx) {                              \
        mrcnn_emu::launch_with_barriers(dim3(gx, gy), dim3(bx), [&] {                            \
            sigmoid_bce_forward<T>(x, t, count, partial);                                        \
        });                                                                                      \
    }                                                                                            \
    extern "C" void emu_sigmoid_bce_backward_##SUFFIX(const T* x, const T* t, long long count,   \
                                                      double scale, T* dlogits, unsigned gx,     \
                                                      unsigned gy, unsigned bx) {                \
        mrcnn_emu::launch(dim3(gx, gy), dim3(bx), [&] {                                          \
            sigmoid_bce_backward<T>(x, t, count, (T)scale, dlogits);                             \
        });                                                                                      \
    }
MRCNN_EMU_LOSSES(float, f32)
MRCNN_EMU_LOSSES(double, f64)
#endif
