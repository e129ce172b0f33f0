// RoIAlign forward and backward (notes, section 3) -- the CUDA twin of mrcnn_np/ops/roi_align.py.
//
// Read beside the reference's docstring; the equations are quoted where they are computed.
// Semantics: torchvision.ops.roi_align's kernel (half-pixel offset when aligned, RoIs at least one
// cell wide when not, adaptive ceil(roi / out) samples per bin when sampling_ratio <= 0, samples
// beyond [-1, H] give 0, clamping at the far border, the mean over the bin's samples).
//
// Layout: features (N, C, H, W) and the output (R, C, out_h, out_w), both contiguous NCHW.
// One thread per output number (r, c, ph, pw), in a grid-stride loop. The reference gathers whole
// channel vectors from an NHWC copy (fast in NumPy); on the GPU, neighbouring threads are
// neighbouring pw (then ph, then c) and read neighbouring addresses of the same feature plane, which
// is what coalescing wants, so no NHWC copy is made.
//
// The backward recomputes the same samples and weights (cheaper than storing them) and scatters
// dout * weight to the four corners of each sample with atomicAdd. Atomics are needed because the
// writes collide: the samples of one bin share corners, neighbouring bins share corners, and
// overlapping RoIs (the normal case: 512 RoIs on one small map) hit the same feature cells from
// different threads at the same time. (Consequence: float sums in a run-dependent order, so the
// backward is not bit-reproducible; the forward is.)
#include "mrcnn_common.cuh"

// One axis of one sample: the bilinear corners and weights, with 1/g (the bin mean) and the
// in-range test folded into the weights, exactly as _axis_samples() does for a whole array:
//
//     inside = (coord >= -1) & (coord <= size)                  # beyond [-1, size]: contributes 0
//     c = max(coord, 0);  lo = floor(c);  at_edge = lo >= size - 1
//     lo = size - 1 if at_edge;  hi = size - 1 if at_edge else lo + 1
//     frac = 0 if at_edge else c - lo                           # l = x - x_lo
//     w = ((1 - frac) * scale, frac * scale),  scale = inside / g
template <typename T>
__device__ __forceinline__ void axis_sample(T coord, int size, int grid, int* lo, int* hi,
                                            T* w_lo, T* w_hi) {
    const bool inside = (coord >= T(-1)) && (coord <= T(size));
    T c = mr_max(coord, T(0));
    int l = (int)mr_floor(c);
    const bool at_edge = l >= size - 1;
    int h;
    T frac;
    if (at_edge) {
        l = size - 1;
        h = size - 1;
        frac = T(0);
    } else {
        h = l + 1;
        frac = c - T(l);
    }
    const T scale = (inside ? T(1) : T(0)) / T(grid);
    *lo = l;
    *hi = h;
    *w_lo = (T(1) - frac) * scale;
    *w_hi = frac * scale;
}

// The RoI's geometry, as _plan() computes it per RoI:
//     o = 0.5 if aligned else 0
//     x_start = x1 * spatial_scale - o;   roi_w = x2 * spatial_scale - o - x_start
//     roi_w = max(roi_w, 1) if not aligned
//     bin_w = roi_w / out_w;   g_w = sampling_ratio if > 0 else ceil(roi_w / out_w)
template <typename T>
__device__ __forceinline__ void roi_geometry(const T* roi, T spatial_scale, int out_h, int out_w,
                                             int sampling_ratio, bool aligned, int* batch,
                                             T* y_start, T* x_start, T* bin_h, T* bin_w, int* g_h,
                                             int* g_w) {
    *batch = (int)roi[0];
    const T offset = aligned ? T(0.5) : T(0);
    const T x0 = roi[1] * spatial_scale - offset;
    const T y0 = roi[2] * spatial_scale - offset;
    T roi_w = (roi[3] * spatial_scale - offset) - x0;
    T roi_h = (roi[4] * spatial_scale - offset) - y0;
    if (!aligned) {                                   // legacy: force RoIs to >= 1 cell
        roi_w = mr_max(roi_w, T(1));
        roi_h = mr_max(roi_h, T(1));
    }
    *x_start = x0;
    *y_start = y0;
    *bin_w = roi_w / T(out_w);
    *bin_h = roi_h / T(out_h);
    if (sampling_ratio > 0) {
        *g_h = sampling_ratio;
        *g_w = sampling_ratio;
    } else {                                          // adaptive; 0 (or less) for an empty RoI
        *g_h = (int)mr_ceil(roi_h / T(out_h));
        *g_w = (int)mr_ceil(roi_w / T(out_w));
    }
}

// Sample coordinate of sample i of bin p (same formula on both axes; same order of operations as
// the reference: start + p * bin, then + (i + 0.5) * bin / g):
//     x = x_start + q * bin_w + (ix + 0.5) * bin_w / g_w
template <typename T>
__device__ __forceinline__ T sample_coord(T start, int p, T bin, int i, int grid) {
    return (start + T(p) * bin) + ((T(i) + T(0.5)) * bin) / T(grid);
}

template <typename T>
__global__ void roi_align_forward(const T* __restrict__ features, const T* __restrict__ rois,
                                  int n_rois, int channels, int height, int width, int out_h,
                                  int out_w, T spatial_scale, int sampling_ratio, int aligned,
                                  T* __restrict__ out) {
    const index_t total = (index_t)n_rois * channels * out_h * out_w;
    MR_GRID_STRIDE_LOOP(idx, total) {
        const int pw = (int)(idx % out_w);
        const int ph = (int)((idx / out_w) % out_h);
        const int c = (int)((idx / ((index_t)out_w * out_h)) % channels);
        const int r = (int)(idx / ((index_t)out_w * out_h * channels));
        int b, g_h, g_w;
        T y0, x0, bin_h, bin_w;
        roi_geometry(rois + 5 * (index_t)r, spatial_scale, out_h, out_w, sampling_ratio,
                     aligned != 0, &b, &y0, &x0, &bin_h, &bin_w, &g_h, &g_w);
        const T* plane = features + ((index_t)b * channels + c) * height * width;
        // out = sum over samples of  f(x, y) / (g_h g_w), with
        // f(x, y) = h_y h_x F[y_lo, x_lo] + h_y l_x F[y_lo, x_hi] + l_y h_x F[y_hi, x_lo] + l_y l_x F[y_hi, x_hi]
        // (an empty RoI, g <= 0, has no samples: output 0, as the reference skips it)
        T acc = T(0);
        for (int iy = 0; iy < g_h; ++iy) {
            int y_lo, y_hi;
            T wy_lo, wy_hi;
            axis_sample(sample_coord(y0, ph, bin_h, iy, g_h), height, g_h, &y_lo, &y_hi, &wy_lo,
                        &wy_hi);
            for (int ix = 0; ix < g_w; ++ix) {
                int x_lo, x_hi;
                T wx_lo, wx_hi;
                axis_sample(sample_coord(x0, pw, bin_w, ix, g_w), width, g_w, &x_lo, &x_hi,
                            &wx_lo, &wx_hi);
                acc += (wy_lo * wx_lo) * plane[y_lo * width + x_lo];
                acc += (wy_lo * wx_hi) * plane[y_lo * width + x_hi];
                acc += (wy_hi * wx_lo) * plane[y_hi * width + x_lo];
                acc += (wy_hi * wx_hi) * plane[y_hi * width + x_hi];
            }
        }
        out[idx] = acc;
    }
}

// dfeatures must be zeroed by the caller. RoIAlign is linear in the features, so its gradient sends
// dout back to the very same corners with the very same weights (the reference's backward).
template <typename T>
__global__ void roi_align_backward(const T* __restrict__ dout, const T* __restrict__ rois,
                                   int n_rois, int channels, int height, int width, int out_h,
                                   int out_w, T spatial_scale, int sampling_ratio, int aligned,
                                   T* __restrict__ dfeatures) {
    const index_t total = (index_t)n_rois * channels * out_h * out_w;
    MR_GRID_STRIDE_LOOP(idx, total) {
        const int pw = (int)(idx % out_w);
        const int ph = (int)((idx / out_w) % out_h);
        const int c = (int)((idx / ((index_t)out_w * out_h)) % channels);
        const int r = (int)(idx / ((index_t)out_w * out_h * channels));
        int b, g_h, g_w;
        T y0, x0, bin_h, bin_w;
        roi_geometry(rois + 5 * (index_t)r, spatial_scale, out_h, out_w, sampling_ratio,
                     aligned != 0, &b, &y0, &x0, &bin_h, &bin_w, &g_h, &g_w);
        T* plane = dfeatures + ((index_t)b * channels + c) * height * width;
        const T d = dout[idx];
        for (int iy = 0; iy < g_h; ++iy) {
            int y_lo, y_hi;
            T wy_lo, wy_hi;
            axis_sample(sample_coord(y0, ph, bin_h, iy, g_h), height, g_h, &y_lo, &y_hi, &wy_lo,
                        &wy_hi);
            if (wy_lo == T(0) && wy_hi == T(0)) continue;     // out of range: nothing to add
            for (int ix = 0; ix < g_w; ++ix) {
                int x_lo, x_hi;
                T wx_lo, wx_hi;
                axis_sample(sample_coord(x0, pw, bin_w, ix, g_w), width, g_w, &x_lo, &x_hi,
                            &wx_lo, &wx_hi);
                if (wx_lo == T(0) && wx_hi == T(0)) continue;
                atomicAdd(plane + y_lo * width + x_lo, (wy_lo * wx_lo) * d);
                atomicAdd(plane + y_lo * width + x_hi, (wy_lo * wx_hi) * d);
                atomicAdd(plane + y_hi * width + x_lo, (wy_hi * wx_lo) * d);
                atomicAdd(plane + y_hi * width + x_hi, (wy_hi * wx_hi) * d);
            }
        }
    }
}

#ifdef MRCNN_CPU_EMU
// Host entry points for the CPU emulation (ctypes): one per kernel and dtype, named
// emu_<kernel>_<f32|f64>, taking the kernel's arguments (scalars of type T widened to double) and
// then the grid (x, y) and block (x) to emulate.
#define MRCNN_EMU_ROI_ALIGN(T, SUFFIX)                                                            \
    extern "C" void emu_roi_align_forward_##SUFFIX(                                              \
        const T* features, const T* rois, int n_rois, int channels, int height, int width,       \
        int out_h, int out_w, double spatial_scale, int sampling_ratio, int aligned, T* out,     \
        unsigned gx, unsigned gy, unsigned bx) {                                                 \
        mrcnn_emu::launch(dim3(gx, gy), dim3(bx), [&] {                                          \
            roi_align_forward<T>(features, rois, n_rois, channels, height, width, out_h, out_w,  \
                                 (T)spatial_scale, sampling_ratio, aligned, out);                \
        });                                                                                      \
    }                                                                                            \
    extern "C" void emu_roi_align_backward_##SUFFIX(                                             \
        const T* dout, const T* rois, int n_rois, int channels, int height, int width,           \
        int out_h, int out_w, double spatial_scale, int sampling_ratio, int aligned,             \
        T* dfeatures, unsigned gx, unsigned gy, unsigned bx) {                                   \
        mrcnn_emu::launch(dim3(gx, gy), dim3(bx), [&] {                                          \
            roi_align_backward<T>(dout, rois, n_rois, channels, height, width, out_h, out_w,     \
                                  (T)spatial_scale, sampling_ratio, aligned, dfeatures);         \
        });                                                                                      \
    }
MRCNN_EMU_ROI_ALIGN(float, f32)
MRCNN_EMU_ROI_ALIGN(double, f64)
#endif
