// Max pooling forward and backward -- the CUDA twin of max_pool2d_* in mrcnn_np/ops/pool.py.
//
//     y[n, c, i, j] = max_{u, v} x_pad[n, c, sh*i + u, sw*j + v]      (padding is -inf)
//     dx receives dout at the position of that max (the FIRST one, in row-major kernel order)
//
// Forward: one thread per output number. It starts from offset (0, 0) and moves to offset
// k = u * kw + v only when that value is strictly greater (the reference's running max with
// `greater`), so on ties the first offset in row-major order wins, as in PyTorch. It saves that k
// (int32), exactly the reference's `arg`.
//
// Backward as a GATHER: one thread per input pixel sums the dout of every output whose window
// contains the pixel and whose saved k points at it, looping (u, v) in the reference's order. Each
// dx number has one writer: no atomics, a fixed summation order.
#include "mrcnn_common.cuh"

template <typename T>
__global__ void max_pool2d_forward(const T* __restrict__ x, int batch, int channels, int height,
                                   int width, int kh, int kw, int sh, int sw, int pad, int out_h,
                                   int out_w, T* __restrict__ out, int* __restrict__ arg) {
    const index_t total = (index_t)batch * channels * out_h * out_w;
    MR_GRID_STRIDE_LOOP(idx, total) {
        const int j = (int)(idx % out_w);
        const int i = (int)((idx / out_w) % out_h);
        const index_t nc = idx / ((index_t)out_w * out_h);          // n * C + c
        const T* plane = x + nc * height * width;
        T best = -mr_inf<T>();
        int best_k = 0;
        for (int u = 0; u < kh; ++u) {
            for (int v = 0; v < kw; ++v) {
                const int y = sh * i + u - pad;                      // x_pad row -> x row
                const int xx = sw * j + v - pad;
                const T value = (y >= 0 && y < height && xx >= 0 && xx < width)
                                    ? plane[y * width + xx] : -mr_inf<T>();
                const int k = u * kw + v;
                if (k == 0 || value > best) {                        // strict: the first max wins
                    best = value;
                    best_k = k;
                }
            }
        }
        out[idx] = best;
        arg[idx] = best_k;
    }
}

template <typename T>
__global__ void max_pool2d_backward(const T* __restrict__ dout, const int* __restrict__ arg,
                                    int batch, int channels, int height, int width, int kh, int kw,
                                    int sh, int sw, int pad, int out_h, int out_w,
                                    T* __restrict__ dx) {
    const index_t total = (index_t)batch * channels * height * width;
    MR_GRID_STRIDE_LOOP(idx, total) {
        const int xx = (int)(idx % width);
        const int y = (int)((idx / width) % height);
        const index_t nc = idx / ((index_t)width * height);
        const index_t out_base = nc * out_h * out_w;
        T acc = T(0);
        for (int u = 0; u < kh; ++u) {
            const int sy = y + pad - u;                              // = sh * i
            if (sy < 0 || sy % sh != 0) continue;
            const int i = sy / sh;
            if (i >= out_h) continue;
            for (int v = 0; v < kw; ++v) {
                const int sx = xx + pad - v;
                if (sx < 0 || sx % sw != 0) continue;
                const int j = sx / sw;
                if (j >= out_w) continue;
                const index_t o = out_base + (index_t)i * out_w + j;
                if (arg[o] == u * kw + v) acc += dout[o];            // this output's max is here
            }
        }
        dx[idx] = acc;
    }
}

#ifdef MRCNN_CPU_EMU
// Host entry points for the CPU emulation (ctypes): one per kernel and dtype, named
// emu_<kernel>_<f32|f64>, taking the kernel's arguments (scalars of type T widened to double) and
// then the grid (x, y) and block (x) to emulate.
#define MRCNN_EMU_POOL(T, SUFFIX)                                                                \
    extern "C" void emu_max_pool2d_forward_##SUFFIX(                                             \
        const T* x, int batch, int channels, int height, int width, int kh, int kw, int sh,      \
        int sw, int pad, int out_h, int out_w, T* out, int* arg, unsigned gx, unsigned gy,       \
        unsigned bx) {                                                                           \
        mrcnn_emu::launch(dim3(gx, gy), dim3(bx), [&] {                                          \
            max_pool2d_forward<T>(x, batch, channels, height, width, kh, kw, sh, sw, pad, out_h, \
                                  out_w, out, arg);                                              \
        });                                                                                      \
    }                                                                                            \
    extern "C" void emu_max_pool2d_backward_##SUFFIX(                                            \
        const T* dout, const int* arg, int batch, int channels, int height, int width, int kh,   \
        int kw, int sh, int sw, int pad, int out_h, int out_w, T* dx, unsigned gx, unsigned gy,  \
        unsigned bx) {                                                                           \
        mrcnn_emu::launch(dim3(gx, gy), dim3(bx), [&] {                                          \
            max_pool2d_backward<T>(dout, arg, batch, channels, height, width, kh, kw, sh, sw,    \
                                   pad, out_h, out_w, dx);                                       \
        });                                                                                      \
    }
MRCNN_EMU_POOL(float, f32)
MRCNN_EMU_POOL(double, f64)
#endif
