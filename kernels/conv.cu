// im2col and col2im for conv2d and conv_transpose2d -- the CUDA twin of im2col_nhwc / col2im_nhwc in
// mrcnn_np/ops/conv.py. The GEMMs around them are cupy.matmul (cuBLAS) in the launcher
// (mrcnn_np/backends/cupy/conv.py); these two kernels are only the data movement.
//
//     conv2d:  y[k, i, j] = b[k] + sum_{c, u, v} w[k, c, u, v] * x_pad[c, s*i + u, s*j + v]
//
// Layout: x is NCHW (as the model passes it), and the padding is done on the fly (a read outside
// the image is 0), so no padded copy is made. cols is a row-major matrix with
//     one row per output pixel (n, i, j)    and    one column per (c, u, v),
// i.e. cols[(n*out_h + i)*out_w + j, (c*kh + u)*kw + v] = x_pad[n, c, s*i + u, s*j + v].
// Columns ordered (c, u, v) are the order of w.reshape(C_out, C*kh*kw), so the forward GEMM is
// cols @ w2d.T with no transpose copy of w. (The reference orders its columns (u, v, c) because its
// data is NHWC; the matrix is the same up to a permutation of columns.)
//
// col2im is the adjoint (transpose) of im2col: every cols entry is added back to the pixel it was
// read from. Written as a GATHER: one thread per pixel (n, c, y, x) loops over the kernel offsets
// (u, v) whose receptive fields contain it and sums those entries. Each pixel is written by exactly
// one thread, so no atomics are needed and the sum is in a fixed order (deterministic); the
// reference gets the same "no two writes collide" property by looping over kernel offsets.
#include "mrcnn_common.cuh"

template <typename T>
__global__ void im2col(const T* __restrict__ x, int batch, int channels, int height, int width,
                       int kh, int kw, int stride, int pad, int out_h, int out_w,
                       T* __restrict__ cols) {
    const index_t n_cols = (index_t)channels * kh * kw;
    const index_t total = (index_t)batch * out_h * out_w * n_cols;
    MR_GRID_STRIDE_LOOP(idx, total) {
        // idx = row * n_cols + col: consecutive threads write consecutive columns of one row
        const index_t col = idx % n_cols;
        const index_t row = idx / n_cols;
        const int v = (int)(col % kw);
        const int u = (int)((col / kw) % kh);
        const int c = (int)(col / ((index_t)kw * kh));
        const int j = (int)(row % out_w);
        const int i = (int)((row / out_w) % out_h);
        const int n = (int)(row / ((index_t)out_w * out_h));
        const int y = stride * i + u - pad;          // x_pad[s*i + u] is x[s*i + u - pad]
        const int xx = stride * j + v - pad;
        T value = T(0);                              // the zero border of x_pad
        if (y >= 0 && y < height && xx >= 0 && xx < width)
            value = x[(((index_t)n * channels + c) * height + y) * width + xx];
        cols[idx] = value;
    }
}

// x (N, C, H, W) = col2im(cols): x[n, c, y, x] = sum over (u, v, i, j) with s*i + u - pad == y and
// s*j + v - pad == x of cols[(n, i, j), (c, u, v)].
template <typename T>
__global__ void col2im(const T* __restrict__ cols, int batch, int channels, int height, int width,
                       int kh, int kw, int stride, int pad, int out_h, int out_w,
                       T* __restrict__ x) {
    const index_t n_cols = (index_t)channels * kh * kw;
    const index_t total = (index_t)batch * channels * height * width;
    MR_GRID_STRIDE_LOOP(idx, total) {
        const int xx = (int)(idx % width);
        const int y = (int)((idx / width) % height);
        const int c = (int)((idx / ((index_t)width * height)) % channels);
        const int n = (int)(idx / ((index_t)width * height * channels));
        T acc = T(0);
        for (int u = 0; u < kh; ++u) {
            const int sy = y + pad - u;              // = s*i for the output row i that read it
            if (sy < 0 || sy % stride != 0) continue;
            const int i = sy / stride;
            if (i >= out_h) continue;
            for (int v = 0; v < kw; ++v) {
                const int sx = xx + pad - v;
                if (sx < 0 || sx % stride != 0) continue;
                const int j = sx / stride;
                if (j >= out_w) continue;
                const index_t row = ((index_t)n * out_h + i) * out_w + j;
                acc += cols[row * n_cols + ((index_t)c * kh + u) * kw + v];
            }
        }
        x[idx] = acc;
    }
}

#ifdef MRCNN_CPU_EMU
// Host entry points for the CPU emulation (ctypes): one per kernel and dtype, named
// emu_<kernel>_<f32|f64>, taking the kernel's arguments (scalars of type T widened to double) and
// then the grid (x, y) and block (x) to emulate.
#define MRCNN_EMU_CONV(T, SUFFIX)                                                                \
    extern "C" void emu_im2col_##SUFFIX(const T* x, int batch, int channels, int height,         \
                                        int width, int kh, int kw, int stride, int pad,          \
                                        int out_h, int out_w, T* cols, unsigned gx, unsigned gy, \
                                        unsigned bx) {                                           \
        mrcnn_emu::launch(dim3(gx, gy), dim3(bx), [&] {                                          \
            im2col<T>(x, batch, channels, height, width, kh, kw, stride, pad, out_h, out_w,      \
                      cols);                                                                     \
        });                                                                                      \
    }                                                                                            \
    extern "C" void emu_col2im_##SUFFIX(const T* cols, int batch, int channels, int height,      \
                                        int width, int kh, int kw, int stride, int pad,          \
                                        int out_h, int out_w, T* x, unsigned gx, unsigned gy,    \
                                        unsigned bx) {                                           \
        mrcnn_emu::launch(dim3(gx, gy), dim3(bx), [&] {                                          \
            col2im<T>(cols, batch, channels, height, width, kh, kw, stride, pad, out_h, out_w,   \
                      x);                                                                        \
        });                                                                                      \
    }
MRCNN_EMU_CONV(float, f32)
MRCNN_EMU_CONV(double, f64)
#endif
