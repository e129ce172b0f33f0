// RoIPool forward and backward -- the CUDA twin of mrcnn_np/ops/roi_pool.py (torchvision's roi_pool).
//
// For RoI [b, x1, y1, x2, y2] (the reference's docstring):
//     x_start = round(x1 * spatial_scale),  x_end = round(x2 * spatial_scale)      # 1st quantisation
//     roi_w = max(x_end - x_start + 1, 1),  bin_w = roi_w / out_w
//     bin q covers columns [floor(q * bin_w), ceil((q + 1) * bin_w)) + x_start      # 2nd quantisation
//     clipped to [0, W];  y likewise;  output = max over the bin (0 for an empty bin)
//
// One thread per output number (r, c, ph, pw). The forward also writes `argmax`: the flat index
// y * W + x, within its (b, c) feature plane, of the cell that held the max (the first one in
// row-major order, as the reference's argmax picks it), or -1 for an empty bin. The backward sends
// each dout to that cell. It needs atomicAdd: bins overlap (floor/ceil widen them), so neighbouring
// bins of one RoI, and bins of other RoIs, can pick the same cell.
#include "mrcnn_common.cuh"

// The reference's _round_half_away: sign(v) * floor(|v| + 0.5), in the features' dtype. Written out
// rather than C's round(): in float32, |v| + 0.5 can itself round up (v = 0.49999997f gives 1, where
// roundf gives 0), and the reference is the specification.
template <typename T>
__device__ __forceinline__ int round_half_away(T v) {
    const T r = mr_floor(mr_abs(v) + T(0.5));
    return (int)(v < T(0) ? -r : r);
}

// [lo, hi) of bin p along one axis; bin_size is computed in double, as in the reference
// (an int64 extent divided by an int gives float64 there, whatever the features' dtype).
__device__ __forceinline__ void pool_bin(int start, int end, int p, int pooled, int size, int* lo,
                                         int* hi) {
    const int extent = end - start + 1 > 1 ? end - start + 1 : 1;
    const double bin_size = (double)extent / (double)pooled;
    int l = (int)floor((double)p * bin_size) + start;
    int h = (int)ceil((double)(p + 1) * bin_size) + start;
    *lo = l < 0 ? 0 : (l > size ? size : l);           // clip to [0, size]
    *hi = h < 0 ? 0 : (h > size ? size : h);
}

template <typename T>
__global__ void roi_pool_forward(const T* __restrict__ features, const T* __restrict__ rois,
                                 int n_rois, int channels, int height, int width, int out_h,
                                 int out_w, T spatial_scale, T* __restrict__ out,
                                 int* __restrict__ argmax) {
    const index_t total = (index_t)n_rois * channels * out_h * out_w;
    MR_GRID_STRIDE_LOOP(idx, total) {
        const int pw = (int)(idx % out_w);
        const int ph = (int)((idx / out_w) % out_h);
        const int c = (int)((idx / ((index_t)out_w * out_h)) % channels);
        const int r = (int)(idx / ((index_t)out_w * out_h * channels));
        const T* roi = rois + 5 * (index_t)r;
        const int b = (int)roi[0];
        const int x_start = round_half_away(roi[1] * spatial_scale);     // 1st quantisation
        const int y_start = round_half_away(roi[2] * spatial_scale);
        const int x_end = round_half_away(roi[3] * spatial_scale);
        const int y_end = round_half_away(roi[4] * spatial_scale);
        int y_lo, y_hi, x_lo, x_hi;
        pool_bin(y_start, y_end, ph, out_h, height, &y_lo, &y_hi);
        pool_bin(x_start, x_end, pw, out_w, width, &x_lo, &x_hi);
        const T* plane = features + ((index_t)b * channels + c) * height * width;
        T best = T(0);                                   // an empty bin gives 0 ...
        int arg = -1;                                    // ... and no gradient
        for (int y = y_lo; y < y_hi; ++y) {
            for (int x = x_lo; x < x_hi; ++x) {
                const T v = plane[y * width + x];
                if (arg < 0 || v > best) {               // strict '>': the first max wins
                    best = v;
                    arg = y * width + x;
                }
            }
        }
        out[idx] = best;
        argmax[idx] = arg;
    }
}

// dfeatures must be zeroed by the caller.
template <typename T>
__global__ void roi_pool_backward(const T* __restrict__ dout, const T* __restrict__ rois,
                                  const int* __restrict__ argmax, int n_rois, int channels,
                                  int height, int width, int out_h, int out_w,
                                  T* __restrict__ dfeatures) {
    const index_t total = (index_t)n_rois * channels * out_h * out_w;
    MR_GRID_STRIDE_LOOP(idx, total) {
        const int arg = argmax[idx];
        if (arg < 0) continue;                           // empty bin
        const int c = (int)((idx / ((index_t)out_w * out_h)) % channels);
        const int r = (int)(idx / ((index_t)out_w * out_h * channels));
        const int b = (int)rois[5 * (index_t)r];
        atomicAdd(dfeatures + ((index_t)b * channels + c) * height * width + arg, dout[idx]);
    }
}

#ifdef MRCNN_CPU_EMU
// Host entry points for the CPU emulation (ctypes): one per kernel and dtype, named
// emu_<kernel>_<f32|f64>, taking the kernel's arguments (scalars of type T widened to double) and
// then the grid (x, y) and block (x) to emulate.
#define MRCNN_EMU_ROI_POOL(T, SUFFIX)                                                             \
    extern "C" void emu_roi_pool_forward_##SUFFIX(                                               \
        const T* features, const T* rois, int n_rois, int channels, int height, int width,       \
        int out_h, int out_w, double spatial_scale, T* out, int* argmax, unsigned gx,            \
        unsigned gy, unsigned bx) {                                                              \
        mrcnn_emu::launch(dim3(gx, gy), dim3(bx), [&] {                                          \
            roi_pool_forward<T>(features, rois, n_rois, channels, height, width, out_h, out_w,   \
                                (T)spatial_scale, out, argmax);                                  \
        });                                                                                      \
    }                                                                                            \
    extern "C" void emu_roi_pool_backward_##SUFFIX(                                              \
        const T* dout, const T* rois, const int* argmax, int n_rois, int channels, int height,   \
        int width, int out_h, int out_w, T* dfeatures, unsigned gx, unsigned gy, unsigned bx) {  \
        mrcnn_emu::launch(dim3(gx, gy), dim3(bx), [&] {                                          \
            roi_pool_backward<T>(dout, rois, argmax, n_rois, channels, height, width, out_h,     \
                                 out_w, dfeatures);                                              \
        });                                                                                      \
    }
MRCNN_EMU_ROI_POOL(float, f32)
MRCNN_EMU_ROI_POOL(double, f64)
#endif
