// Mask pasting -- a CUDA twin of paste_masks in mrcnn_np/ops/paste.py (equations P1-P4 there); the
// cupy backend's kernel for functional.paste_masks (launcher: mrcnn_np/backends/cupy/paste.py).
//
// A box (x1, y1, x2, y2) of size w x h holds an m_h x m_w probability map; image pixel (px, py) is
// represented by its centre (px + 0.5, py + 0.5):
//     inside(px, py) = x1 <= px + 0.5 < x2  and  y1 <= py + 0.5 < y2
//     u = (px + 0.5 - x1) (m / w) - 0.5,   v likewise         (mask-cell coordinates, in double)
//     value = bilinear(mask, v, u), with u, v clamped to [0, m - 1]
//     M(px, py) = inside and value >= threshold
// A box that is empty, NaN or infinitely large (m / (x2 - x1) == 0: no cell coordinates) is empty.
//
// One thread per output pixel (d, py, px) of the (D, H, W) result. That visits every pixel of the
// image for every detection, where the reference computes only each box's window: simple, fully
// parallel, and D * H * W cheap threads (100 detections on an 800 x 800 image: 64 M threads, about
// a millisecond of an H100's time). The reference computes the two weights per axis in double, casts
// them to the masks' dtype, and blends rows first, then columns:
//     t_b = wy0 M[i0, b] + wy1 M[i1, b]  (b = j0, j1),   value = t_j0 wx0 + t_j1 wx1
// in that order, as below (compiled with --fmad=false, so the same roundings).
#include "mrcnn_common.cuh"

// One axis (the reference's paste_window, for one pixel): the two cells and their weights.
//     u = clip((c - lo) * (m / (hi - lo)) - 0.5, 0, m - 1);  i0 = floor(u);  i1 = min(i0 + 1, m - 1)
//     weights (1 - frac, frac), frac = u - i0, cast to the masks' dtype
template <typename T>
__device__ __forceinline__ void paste_axis(double centre, double lo, double hi, int m, int* i0,
                                           int* i1, T* w0, T* w1) {
    double u = (centre - lo) * ((double)m / (hi - lo)) - 0.5;
    u = u < 0.0 ? 0.0 : (u > (double)(m - 1) ? (double)(m - 1) : u);
    const int a = (int)floor(u);
    const double frac = u - (double)a;
    *i0 = a;
    *i1 = a + 1 < m - 1 ? a + 1 : m - 1;
    *w0 = (T)(1.0 - frac);
    *w1 = (T)frac;
}

// masks: (D, m_h, m_w) probabilities; boxes: (D, 4) in double; out: (D, H, W) as 0/1 bytes.
template <typename T>
__global__ void paste_masks(const T* __restrict__ masks, const double* __restrict__ boxes, int d,
                            int m_h, int m_w, int height, int width, T threshold,
                            unsigned char* __restrict__ out) {
    const index_t total = (index_t)d * height * width;
    MR_GRID_STRIDE_LOOP(idx, total) {
        const int px = (int)(idx % width);
        const int py = (int)((idx / width) % height);
        const int k = (int)(idx / ((index_t)width * height));
        const double x1 = boxes[4 * k], y1 = boxes[4 * k + 1];
        const double x2 = boxes[4 * k + 2], y2 = boxes[4 * k + 3];
        const double cx = px + 0.5, cy = py + 0.5;
        // an empty box (x2 <= x1 or y2 <= y1) contains no pixel centre: the mask is empty; so is an
        // infinitely large one (m / (x2 - x1) == 0), whose cell coordinates would be NaN
        const bool inside = x2 > x1 && y2 > y1 && x1 <= cx && cx < x2 && y1 <= cy && cy < y2
                            && (double)m_w / (x2 - x1) > 0.0 && (double)m_h / (y2 - y1) > 0.0;
        unsigned char result = 0;
        if (inside) {
            int i0, i1, j0, j1;
            T wy0, wy1, wx0, wx1;
            paste_axis(cy, y1, y2, m_h, &i0, &i1, &wy0, &wy1);
            paste_axis(cx, x1, x2, m_w, &j0, &j1, &wx0, &wx1);
            const T* mask = masks + (index_t)k * m_h * m_w;
            // (P3): rows first, t_b for the two columns b = j0, j1, then the columns
            const T t0 = wy0 * mask[i0 * m_w + j0] + wy1 * mask[i1 * m_w + j0];
            const T t1 = wy0 * mask[i0 * m_w + j1] + wy1 * mask[i1 * m_w + j1];
            const T value = t0 * wx0 + t1 * wx1;
            result = value >= threshold ? 1 : 0;
        }
        out[idx] = result;
    }
}

#ifdef MRCNN_CPU_EMU
// Host entry points for the CPU emulation (ctypes): one per kernel and dtype, named
// emu_<kernel>_<f32|f64>, taking the kernel's arguments (scalars of type T widened to double) and
// then the grid (x, y) and block (x) to emulate.
#define MRCNN_EMU_PASTE(T, SUFFIX)                                                               \
    extern "C" void emu_paste_masks_##SUFFIX(const T* masks, const double* boxes, int d,         \
                                             int m_h, int m_w, int height, int width,            \
                                             double threshold, unsigned char* out, unsigned gx,  \
                                             unsigned gy, unsigned bx) {                         \
        mrcnn_emu::launch(dim3(gx, gy), dim3(bx), [&] {                                          \
            paste_masks<T>(masks, boxes, d, m_h, m_w, height, width, (T)threshold, out);         \
        });                                                                                      \
    }
MRCNN_EMU_PASTE(float, f32)
MRCNN_EMU_PASTE(double, f64)
#endif
