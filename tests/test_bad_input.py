"""Bad input gets a ValueError naming the argument, what it got and what was expected."""
import numpy as np
import pytest

from mrcnn_np import functional as F

X = np.zeros((2, 3, 8, 8))


@pytest.mark.parametrize("call,match", [
    (lambda: F.conv2d_forward(np.zeros((3, 8, 8)), np.zeros((4, 3, 3, 3)), None), r"x: expected a 4-D.*\(3, 8, 8\)"),
    (lambda: F.conv2d_forward(X, np.zeros((4, 5, 3, 3)), None), r"w: expected shape\[1\] == 3.*\(4, 5, 3, 3\)"),
    (lambda: F.conv2d_forward(X, np.zeros((4, 3, 3, 3)), np.zeros(5)), r"b: expected shape\[0\] == 4"),
    (lambda: F.conv2d_forward(X, np.zeros((4, 3, 3, 3)), None, stride=0), r"stride: expected a positive"),
    (lambda: F.conv2d_forward(X, np.zeros((4, 3, 3, 3)), None, padding=-1), r"padding: expected a non-negative"),
    (lambda: F.conv2d_forward(X.astype(int), np.zeros((4, 3, 3, 3)), None), r"x: expected a float"),
    (lambda: F.conv2d_forward(X, np.zeros((4, 3, 9, 9)), None), r"smaller than the kernel"),
    (lambda: F.conv_transpose2d_forward(X, np.zeros((4, 2, 2, 2)), None), r"w: expected shape\[0\] == 3"),
    (lambda: F.max_pool2d_forward(X, 0, 1, 0), r"kernel_size: expected a positive"),
    (lambda: F.max_pool2d_forward(X, 3, 2, 2), r"padding: expected at most half"),
    (lambda: F.upsample_nearest2d_forward(X, 0), r"scale: expected a positive"),
    (lambda: F.linear_forward(np.zeros((2, 4)), np.zeros((3, 5)), None), r"w: expected shape\[1\] == 4"),
    (lambda: F.linear_forward(np.zeros((2, 4, 1)), np.zeros((3, 4)), None), r"x: expected a 2-D"),
    (lambda: F.group_norm_forward(X, np.ones(3), np.zeros(3), 2), r"num_groups: 2 does not divide the 3"),
    (lambda: F.group_norm_forward(X, np.ones(4), np.zeros(3), 3), r"gamma: expected shape\[0\] == 3"),
    (lambda: F.roi_align_forward(X, np.zeros((4, 4)), 7, 1.0, 2, True), r"rois: expected shape \(R, 5\)"),
    (lambda: F.roi_align_forward(X, np.array([[2, 0, 0, 4, 4.0]]), 7, 1.0, 2, True),
     r"rois: batch index out of range.*\[0, 1\]"),
    (lambda: F.roi_align_forward(X, np.array([[0.5, 0, 0, 4, 4.0]]), 7, 1.0, 2, True), r"rois: batch indices"),
    (lambda: F.roi_align_forward(X, np.array([[0, 0, 0, np.nan, 4.0]]), 7, 1.0, 2, True), r"rois: contains NaN"),
    (lambda: F.roi_align_forward(X, np.zeros((1, 5)), 0, 1.0, 2, True), r"output_size: expected a positive"),
    (lambda: F.roi_align_forward(X, np.zeros((1, 5)), (7, -1), 1.0, 2, True), r"output_size\[1\]"),
    (lambda: F.roi_align_forward(X, np.zeros((1, 5)), 7, 0.0, 2, True), r"spatial_scale: expected"),
    (lambda: F.roi_align_forward(X, np.zeros((1, 5)), 7, 1.0, 1.5, True), r"sampling_ratio: expected an int"),
    (lambda: F.roi_align_forward(X[0], np.zeros((1, 5)), 7, 1.0, 2, True), r"features: expected a 4-D"),
    (lambda: F.roi_pool_forward(X, np.array([[-1, 0, 0, 4, 4.0]]), 7, 1.0), r"rois: batch index out of range"),
    (lambda: F.softmax_cross_entropy_forward(np.zeros((3, 4)), np.array([0, 1])), r"labels: expected shape \(3,\)"),
    (lambda: F.softmax_cross_entropy_forward(np.zeros((2, 4)), np.array([0, 4])), r"labels: expected values in \[0, 4\)"),
    (lambda: F.softmax_cross_entropy_forward(np.zeros((2, 4)), np.array([0.0, 1.0])), r"labels: expected an integer"),
    (lambda: F.smooth_l1_forward(np.zeros((2, 4)), np.zeros((2, 3))), r"target: expected the shape of pred \(2, 4\)"),
    (lambda: F.smooth_l1_forward(np.zeros(2), np.zeros(2), beta=-1), r"beta: expected"),
    (lambda: F.sigmoid_bce_with_logits_forward(np.zeros((2, 4)), np.zeros(8)), r"targets: expected the shape"),
])
def test_bad_input_is_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
