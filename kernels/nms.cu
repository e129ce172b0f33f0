// Non-maximum suppression, the bitmask algorithm -- the CUDA twin of mrcnn_np/ops/nms.py.
//
// Greedy NMS (torchvision.ops.nms semantics; the reference's docstring):
//     order boxes by score, highest first (ties: lower index first)
//     for each box b in that order:
//         if no box kept so far has IoU(kept, b) > iou_threshold:  keep b
//
// The launcher (mrcnn_np/backends/cupy/nms.py) sorts on the device with CuPy's stable argsort and
// hands these kernels the boxes already in that order, so "position i" below means "the i-th
// highest score".
//
// Step 1, nms_mask: every pair (i, j), i < j, is tested once, all in parallel. The sorted boxes are
// cut into blocks of 64; CUDA block (row block, column block) compares its 64 row boxes with the 64
// column boxes it first copies into shared memory, and thread t (row i) packs its 64 verdicts
// "IoU(i, j) > t" into ONE 64-bit word: bit k of mask[i][col_block] says box i would suppress box
// col_block * 64 + k. Why 64: it is the widest native integer, so a row's verdicts on a whole
// column block are one store here and one OR in step 2, and the mask is N * N / 8 bytes
// (2 MB for 4,000 boxes) instead of N * N booleans. Only column blocks at or right of the row
// block are computed (later boxes are the only ones a box can suppress).
//
// Step 2, the sequential part: walk the boxes in order, keeping a "removed" bit set of ceil(N / 64)
// words: box i is kept if its bit is clear, and then its mask row is OR-ed into "removed".
// nms_greedy does it on ONE GPU THREAD (a <<<1, 1>>> launch), with no copy of the mask; measured on an
// H100 that made a 4,000-box NMS 6.2 ms against 1.7 ms for copying the 2 MB mask to the host and
// walking it there, as torchvision does. So the launcher (mrcnn_np/backends/cupy/nms.py) walks it on
// the host (mrcnn_np/backends/bitmask_nms.py); nms_greedy stays as the all-device version of the same
// loop, checked by the CPU emulation tests.
//
// Exactness: IoUs are computed in the boxes' dtype in the reference's order of operations, and the
// kernels are compiled without FMA contraction (--fmad=false), so the float rounding is the same as
// NumPy's and ties at the threshold go the same way. The comparison is done in double, as the
// reference compares with a float64 threshold: (double)iou > threshold.
#include "mrcnn_common.cuh"

#define NMS_BLOCK 64
typedef unsigned long long mask_t;

// IoU(a, b) > threshold, the reference's _suppression for one pair:
//     w = max(min(x2a, x2b) - max(x1a, x1b), 0);  h likewise;  inter = w * h
//     union = area_a + area_b - inter;  iou = inter / union      (0 / 0 = NaN never suppresses)
template <typename T>
__device__ __forceinline__ bool suppresses(const T* a, T area_a, const T* b, T area_b,
                                           double threshold) {
    T w = mr_min(a[2], b[2]) - mr_max(a[0], b[0]);
    w = mr_max(w, T(0));
    T h = mr_min(a[3], b[3]) - mr_max(a[1], b[1]);
    h = mr_max(h, T(0));
    const T inter = w * h;
    const T uni = (area_a + area_b) - inter;
    const T iou = inter / uni;
    return (double)iou > threshold;                  // strict '>'; false for NaN
}

// boxes: (n, 4) sorted by score; labels: (n,) sorted the same way, or unused when use_labels == 0
// (batched_nms: boxes of different labels never suppress each other).
// mask: (n, col_blocks) words; grid (col_blocks, col_blocks), block NMS_BLOCK threads.
template <typename T>
__global__ void nms_mask(const T* __restrict__ boxes, const long long* __restrict__ labels,
                         int use_labels, int n, double threshold, mask_t* __restrict__ mask) {
    const int row_block = blockIdx.y;
    const int col_block = blockIdx.x;
    if (row_block > col_block) return;               // a box only suppresses later boxes
    const int col_blocks = (n + NMS_BLOCK - 1) / NMS_BLOCK;
    const int row_size = mr_min(n - row_block * NMS_BLOCK, NMS_BLOCK);
    const int col_size = mr_min(n - col_block * NMS_BLOCK, NMS_BLOCK);

    // The column boxes are read by all 64 threads: load them once into shared memory.
    __shared__ T col_boxes[NMS_BLOCK * 4];
    __shared__ T col_area[NMS_BLOCK];
    __shared__ long long col_label[NMS_BLOCK];
    const int t = threadIdx.x;
    if (t < col_size) {
        const T* bx = boxes + 4 * ((index_t)col_block * NMS_BLOCK + t);
        for (int k = 0; k < 4; ++k) col_boxes[4 * t + k] = bx[k];
        col_area[t] = (bx[2] - bx[0]) * (bx[3] - bx[1]);    // area = (x2 - x1) (y2 - y1)
        col_label[t] = use_labels ? labels[col_block * NMS_BLOCK + t] : 0;
    }
    __syncthreads();                                 // every column box is loaded before use

    if (t < row_size) {
        const int i = row_block * NMS_BLOCK + t;
        const T* a = boxes + 4 * (index_t)i;
        const T area_a = (a[2] - a[0]) * (a[3] - a[1]);
        const long long label_a = use_labels ? labels[i] : 0;
        mask_t bits = 0;
        // on the diagonal block only the boxes after i (the upper triangle)
        const int start = (row_block == col_block) ? t + 1 : 0;
        for (int k = start; k < col_size; ++k) {
            if (col_label[k] == label_a &&
                suppresses(a, area_a, col_boxes + 4 * k, col_area[k], threshold)) {
                bits |= 1ULL << k;
            }
        }
        mask[(index_t)i * col_blocks + col_block] = bits;
    }
}

// The greedy pass (launch <<<1, 1>>>). removed: scratch of col_blocks words; keep: (n,) positions
// into the sorted order, the first *num_keep of them filled, in order. extern "C": it has no type
// parameter, so it needs no C++ name expression to be found by CuPy's get_function.
extern "C" __global__ void nms_greedy(const mask_t* __restrict__ mask, int n, mask_t* __restrict__ removed,
                           long long* __restrict__ keep, int* __restrict__ num_keep) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const int col_blocks = (n + NMS_BLOCK - 1) / NMS_BLOCK;
    for (int b = 0; b < col_blocks; ++b) removed[b] = 0;
    int count = 0;
    for (int i = 0; i < n; ++i) {
        const int block = i / NMS_BLOCK;
        const int bit = i % NMS_BLOCK;
        if (removed[block] & (1ULL << bit)) continue;          // a kept box suppressed it
        keep[count++] = i;                                     // no kept box suppresses it: keep
        const mask_t* row = mask + (index_t)i * col_blocks;
        for (int b = block; b < col_blocks; ++b) removed[b] |= row[b];   // it suppresses these
    }
    *num_keep = count;
}

#ifdef MRCNN_CPU_EMU
// Host entry points for the CPU emulation (ctypes): one per kernel and dtype, named
// emu_<kernel>_<f32|f64>, taking the kernel's arguments (scalars of type T widened to double) and
// then the grid (x, y) and block (x) to emulate.
#define MRCNN_EMU_NMS(T, SUFFIX)                                                                 \
    extern "C" void emu_nms_mask_##SUFFIX(const T* boxes, const long long* labels,              \
                                          int use_labels, int n, double threshold, mask_t* mask, \
                                          unsigned gx, unsigned gy, unsigned bx) {               \
        mrcnn_emu::launch_with_barriers(dim3(gx, gy), dim3(bx), [&] {                            \
            nms_mask<T>(boxes, labels, use_labels, n, threshold, mask);                          \
        });                                                                                      \
    }
MRCNN_EMU_NMS(float, f32)
MRCNN_EMU_NMS(double, f64)

extern "C" void emu_nms_greedy(const mask_t* mask, int n, mask_t* removed, long long* keep,
                               int* num_keep, unsigned gx, unsigned gy, unsigned bx) {
    mrcnn_emu::launch(dim3(gx, gy), dim3(bx), [&] { nms_greedy(mask, n, removed, keep, num_keep); });
}
#endif
