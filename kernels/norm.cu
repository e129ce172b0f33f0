// Group normalisation forward and backward -- the CUDA twin of mrcnn_np/ops/norm.py.
//
//     mu_ng = mean_{c in g, h, w} x          var_ng = mean_{c in g, h, w} (x - mu_ng)^2
//     x_hat = (x - mu_ng) / sqrt(var_ng + eps)          y = gamma_c * x_hat + beta_c
//
// In NCHW memory the D = (C / G) * H * W numbers of one (image n, group g) are contiguous, starting
// at (n * G + g) * D. So one CUDA block handles one (n, g): its threads stride through the D numbers,
// each keeps a private partial sum, and mr_block_sum (shared memory + __syncthreads, in
// mrcnn_common.cuh) adds the partials. Two passes, as the reference: the mean first, then the
// mean of squared deviations (more accurate than E[x^2] - E[x]^2, which cancels badly).
//
// Backward (g = dout * gamma):
//     dx = (g - mean_group(g) - x_hat * mean_group(g * x_hat)) / sqrt(var_ng + eps)
//     dgamma = sum_{n, h, w} dout * x_hat          dbeta = sum_{n, h, w} dout
// dx: again one block per (n, g), two block sums. dgamma and dbeta reduce over n and the pixels of
// ONE channel: one block per channel, so there are no atomics and the sum order is fixed.
//
// Launch every kernel here with MR_MAX_BLOCK (256) threads or a smaller power of two.
#include "mrcnn_common.cuh"

// x: (N, C, H, W); gamma, beta: (C,); group_size D = (C / G) * H * W; grid: N * G blocks.
// Writes y, x_hat (the reference's cache) and inv_std (N * G,).
template <typename T>
__global__ void group_norm_forward(const T* __restrict__ x, const T* __restrict__ gamma,
                                   const T* __restrict__ beta, int batch, int channels,
                                   int groups, int hw, T eps, T* __restrict__ y,
                                   T* __restrict__ x_hat, T* __restrict__ inv_std) {
    __shared__ T smem[MR_MAX_BLOCK];
    const int channels_per_group = channels / groups;
    const index_t group_size = (index_t)channels_per_group * hw;
    for (int ng = blockIdx.x; ng < batch * groups; ng += gridDim.x) {   // block-stride over (n, g)
        const index_t base = (index_t)ng * group_size;
        const int g = ng % groups;
        T part = T(0);
        for (index_t k = threadIdx.x; k < group_size; k += blockDim.x) part += x[base + k];
        const T mu = mr_block_sum(part, smem) / T(group_size);           // mu = mean x
        part = T(0);
        for (index_t k = threadIdx.x; k < group_size; k += blockDim.x) {
            const T xc = x[base + k] - mu;
            part += xc * xc;
        }
        const T var = mr_block_sum(part, smem) / T(group_size);          // var = mean (x - mu)^2
        const T istd = T(1) / mr_sqrt(var + eps);                        // 1 / sqrt(var + eps)
        if (threadIdx.x == 0) inv_std[ng] = istd;
        for (index_t k = threadIdx.x; k < group_size; k += blockDim.x) {
            const int c = g * channels_per_group + (int)(k / hw);
            const T xh = (x[base + k] - mu) * istd;                      // x_hat
            x_hat[base + k] = xh;
            y[base + k] = xh * gamma[c] + beta[c];                       // y = gamma x_hat + beta
        }
    }
}

// dgamma[c] = sum_{n, h, w} dout * x_hat,  dbeta[c] = sum_{n, h, w} dout.  grid: C blocks.
template <typename T>
__global__ void group_norm_backward_params(const T* __restrict__ dout, const T* __restrict__ x_hat,
                                           int batch, int channels, int hw,
                                           T* __restrict__ dgamma, T* __restrict__ dbeta) {
    __shared__ T smem[MR_MAX_BLOCK];
    const index_t per_channel = (index_t)batch * hw;
    for (int c = blockIdx.x; c < channels; c += gridDim.x) {
        T sum_d = T(0), sum_dx = T(0);
        for (index_t k = threadIdx.x; k < per_channel; k += blockDim.x) {
            const int n = (int)(k / hw);
            const index_t at = ((index_t)n * channels + c) * hw + k % hw;
            sum_d += dout[at];
            sum_dx += dout[at] * x_hat[at];
        }
        const T db = mr_block_sum(sum_d, smem);
        const T dg = mr_block_sum(sum_dx, smem);
        if (threadIdx.x == 0) {
            dbeta[c] = db;
            dgamma[c] = dg;
        }
    }
}

// dx = (g - mean(g) - x_hat * mean(g * x_hat)) * inv_std,  g = dout * gamma_c.  grid: N * G blocks.
template <typename T>
__global__ void group_norm_backward_input(const T* __restrict__ dout, const T* __restrict__ x_hat,
                                          const T* __restrict__ gamma,
                                          const T* __restrict__ inv_std, int batch, int channels,
                                          int groups, int hw, T* __restrict__ dx) {
    __shared__ T smem[MR_MAX_BLOCK];
    const int channels_per_group = channels / groups;
    const index_t group_size = (index_t)channels_per_group * hw;
    for (int ng = blockIdx.x; ng < batch * groups; ng += gridDim.x) {
        const index_t base = (index_t)ng * group_size;
        const int g = ng % groups;
        T sum_g = T(0), sum_gx = T(0);
        for (index_t k = threadIdx.x; k < group_size; k += blockDim.x) {
            const T dxhat = dout[base + k] * gamma[g * channels_per_group + (int)(k / hw)];
            sum_g += dxhat;
            sum_gx += dxhat * x_hat[base + k];
        }
        const T mean_g = mr_block_sum(sum_g, smem) / T(group_size);
        const T mean_gx = mr_block_sum(sum_gx, smem) / T(group_size);
        const T istd = inv_std[ng];
        for (index_t k = threadIdx.x; k < group_size; k += blockDim.x) {
            const T dxhat = dout[base + k] * gamma[g * channels_per_group + (int)(k / hw)];
            dx[base + k] = (dxhat - mean_g - x_hat[base + k] * mean_gx) * istd;
        }
    }
}

#ifdef MRCNN_CPU_EMU
// Host entry points for the CPU emulation (ctypes): one per kernel and dtype, named
// emu_<kernel>_<f32|f64>, taking the kernel's arguments (scalars of type T widened to double) and
// then the grid (x, y) and block (x) to emulate.
#define MRCNN_EMU_NORM(T, SUFFIX)                                                                \
    extern "C" void emu_group_norm_forward_##SUFFIX(                                             \
        const T* x, const T* gamma, const T* beta, int batch, int channels, int groups, int hw,  \
        double eps, T* y, T* x_hat, T* inv_std, unsigned gx, unsigned gy, unsigned bx) {         \
        mrcnn_emu::launch_with_barriers(dim3(gx, gy), dim3(bx), [&] {                            \
            group_norm_forward<T>(x, gamma, beta, batch, channels, groups, hw, (T)eps, y, x_hat, \
                                  inv_std);                                                      \
        });                                                                                      \
    }                                                                                            \
    extern "C" void emu_group_norm_backward_params_##SUFFIX(                                     \
        const T* dout, const T* x_hat, int batch, int channels, int hw, T* dgamma, T* dbeta,     \
        unsigned gx, unsigned gy, unsigned bx) {                                                 \
        mrcnn_emu::launch_with_barriers(dim3(gx, gy), dim3(bx), [&] {                            \
            group_norm_backward_params<T>(dout, x_hat, batch, channels, hw, dgamma, dbeta);      \
        });                                                                                      \
    }                                                                                            \
    extern "C" void emu_group_norm_backward_input_##SUFFIX(                                      \
        const T* dout, const T* x_hat, const T* gamma, const T* inv_std, int batch,              \
        int channels, int groups, int hw, T* dx, unsigned gx, unsigned gy, unsigned bx) {        \
        mrcnn_emu::launch_with_barriers(dim3(gx, gy), dim3(bx), [&] {                            \
            group_norm_backward_input<T>(dout, x_hat, gamma, inv_std, batch, channels, groups,   \
                                         hw, dx);                                                \
        });                                                                                      \
    }
MRCNN_EMU_NORM(float, f32)
MRCNN_EMU_NORM(double, f64)
#endif
