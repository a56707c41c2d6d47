//! 2-D convolution whose training step on the flex (CPU) backend runs as matrix products over an
//! im2col buffer, forward and backward, through burn's backend-extension mechanism.
//!
//! Why: burn computes a convolution's weight gradient as another convolution whose kernel is
//! the output gradient (`burn-backend` `conv2d_weight_grad_no_groups`: a matrix product with
//! K = batch x H x W and N = 9, a poor shape for the gemm micro-kernel) and its input gradient
//! as a transposed convolution. On flex these two made a ResNet-18 training step about half as
//! fast as PyTorch's (BENCHMARKS.md, "Where the time goes"). oneDNN, and Caffe's im2col
//! convolution before it, do each of the three products as one large gemm; this file does the
//! same:
//!
//! - forward: `Y[O, B·L] = W[O, K] · cols[K, B·L]`
//! - weight gradient: `dW[O, K] = Σ_chunks dY[O, B·L] · cols[K, B·L]ᵀ`
//! - input gradient: `dcols[K, B·L] = W[O, K]ᵀ · dY[O, B·L]`, then col2im adds `dcols` back
//!   into `dX`
//!
//! with K = C_in·kh·kw, L = H_out·W_out, and B images per chunk, so that the im2col buffer
//! stays bounded (`CHUNK_FLOATS`) whatever the batch size.
//!
//! 3x3 stride-1 convolutions with at least 64 input and output channels run as Winograd
//! products instead (`conv_winograd.rs`): F(4x4, 3x3), 4x fewer of them, on planes of 8x8 and
//! larger, F(2x2, 3x3), 2.25x fewer, on smaller ones. Other stride-1
//! convolutions on large planes skip the im2col buffer altogether: they run as shifted products
//! over a channels-last copy of the input (`conv_shifted.rs`).
//!
//! The numbers are those of burn's own convolution up to float rounding: summation order, and
//! on the Winograd path the transforms' additions (the tests compare values and gradients with
//! a direct convolution in f64 and with burn's on random inputs). Other backends (wgpu, CUDA),
//! grouped convolutions and non-f32 tensors keep burn's `Conv2d::forward`; so does inference
//! on flex (flex's own forward) except where the Winograd or the shifted path applies, which
//! are faster there too.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::{ConvOptions, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::simd::transpose;
use crate::{conv_shifted, conv_winograd, floats};

/// Upper bound of one im2col buffer, in floats (32 MiB): the batch is processed in chunks of
/// images whose columns fit. Large enough that every chunk's products have thousands of columns.
const CHUNK_FLOATS: usize = 8 << 20;

/// `conv.forward(x)`, with this file's kernels on flex (see `gemm_options` for which).
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let Some(options) = gemm_options(conv, &x) else {
        return conv.forward(x);
    };
    let weight = conv.weight.val();
    let out = Tensor::<4>::from_dispatch(<burn::backend::Dispatch as ConvGemm>::conv2d_gemm(
        x.into_dispatch(),
        weight.into_dispatch(),
        options,
    ));
    match &conv.bias {
        Some(bias) => {
            let [o] = bias.dims();
            out + bias.val().reshape([1, o, 1, 1])
        }
        None => out,
    }
}

/// The convolution's options when this file's kernels apply to it: f32, one group, explicit
/// padding, and a flex autodiff device (training), or a flex device without autodiff
/// (inference) where the Winograd or the shifted-grid path applies; elsewhere flex's own
/// forward is as fast as im2col (BENCHMARKS.md, "Convolution without im2col"). With the `tch`
/// feature, also a LibTorch autodiff device with symmetric padding (libtorch's backward
/// kernels, `libtorch.rs`).
pub(crate) fn gemm_options(conv: &Conv2d, x: &Tensor<4>) -> Option<ConvOptions<2>> {
    let device = x.device();
    let libtorch = crate::on_libtorch_autodiff(&device);
    if !(crate::on_flex(&device) || libtorch) || x.dtype() != DType::F32 || conv.groups != 1 {
        return None;
    }
    let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding else {
        return None;
    };
    if libtorch && (top != bottom || left != right) {
        return None;
    }
    let options = ConvOptions::new_with_padding(
        conv.stride,
        [(top, bottom), (left, right)],
        conv.dilation,
        1,
    );
    if !libtorch && !crate::on_flex_autodiff(&device) {
        let g = Geometry::new(&x.dims(), &conv.weight.dims(), &options);
        if !conv_winograd::applies(&g) && !conv_shifted::applies(&g) {
            return None;
        }
    }
    Some(options)
}

/// A convolution without bias (bias is a broadcast add the autodiff graph handles) whose
/// autodiff implementation on flex differentiates through the gemm kernels below (and on
/// LibTorch through libtorch's `convolution_backward`, `libtorch.rs`).
#[backend_extension(Autodiff, Flex, LibTorch: cfg(feature = "tch"))]
pub trait ConvGemm: Backend {
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;
}

impl ConvGemm for Flex {
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        forward(x, weight, &options)
    }
}

impl<C: CheckpointStrategy> ConvGemm for Autodiff<Flex, C> {
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match ConvGemmBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.primitive().clone();
                let w = weight.primitive().clone();
                let out = forward(x.clone(), w.clone(), &options);
                prep.finish((x, w, options), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(
                x.into_primitive(),
                weight.into_primitive(),
                &options,
            )),
        }
    }
}

#[derive(Debug)]
struct ConvGemmBackward;

impl Backward<Flex, 2> for ConvGemmBackward {
    type State = (FloatTensor<Flex>, FloatTensor<Flex>, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, w, options) = ops.state;
        let device = x.device();
        let g = Geometry::new(&x.shape().to_vec(), &w.shape().to_vec(), &options);
        let (x, w, dy) = (contiguous(&x), contiguous(&w), contiguous(&dy));
        let (dx, dw) = backward_kernels(
            &g,
            floats(&x),
            floats(&w),
            floats(&dy),
            node_x.is_some(),
            node_w.is_some(),
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            let data = TensorData::new(dx, [g.n, g.c, g.h, g.w]);
            grads.register::<Flex>(node.id, Flex::float_from_data(data, &device));
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            let data = TensorData::new(dw, [g.o, g.c, g.kh, g.kw]);
            grads.register::<Flex>(node.id, Flex::float_from_data(data, &device));
        }
    }
}

/// The tensor in row-major order; a copy only when its layout is not contiguous already.
fn contiguous(t: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    t.to_contiguous()
}

fn forward(
    x: FloatTensor<Flex>,
    w: FloatTensor<Flex>,
    options: &ConvOptions<2>,
) -> FloatTensor<Flex> {
    let device = x.device();
    let g = Geometry::new(&x.shape().to_vec(), &w.shape().to_vec(), options);
    let y = forward_kernel(&g, floats(&contiguous(&x)), floats(&contiguous(&w)));
    Flex::float_from_data(TensorData::new(y, [g.n, g.o, g.oh, g.ow]), &device)
}

/// Sizes of one convolution, NCHW input and OIHW weight.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub stride: [usize; 2],
    /// Top and left padding; the bottom and right padding only enter `oh` / `ow`.
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
}

impl Geometry {
    pub fn new(x: &[usize], w: &[usize], options: &ConvOptions<2>) -> Self {
        let [n, c, h, wd] = [x[0], x[1], x[2], x[3]];
        let [o, kh, kw] = [w[0], w[2], w[3]];
        let out = |size: usize, k: usize, (before, after): (usize, usize), s: usize, d: usize| {
            (size + before + after - d * (k - 1) - 1) / s + 1
        };
        let [ph, pw] = options.padding;
        Self {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            oh: out(h, kh, ph, options.stride[0], options.dilation[0]),
            ow: out(wd, kw, pw, options.stride[1], options.dilation[1]),
            stride: options.stride,
            pad: [ph.0, pw.0],
            dilation: options.dilation,
        }
    }

    /// Input channel and kernel offset `(c, i, j)` of index `k` in `C_in·kh·kw` order (a
    /// filter's weights, a row of the im2col matrix).
    pub(crate) fn tap(&self, k: usize) -> (usize, usize, usize) {
        (k / (self.kh * self.kw), k / self.kw % self.kh, k % self.kw)
    }

    /// Rows of the im2col matrix: C_in·kh·kw.
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output positions per image: H_out·W_out.
    fn l(&self) -> usize {
        self.oh * self.ow
    }

    /// Images per chunk when an im2col buffer holds at most `floats` values.
    fn chunk(&self, floats: usize) -> usize {
        (floats / (self.k() * self.l()).max(1)).clamp(1, self.n.max(1))
    }

    /// For kernel offset `k` along an axis of input size `size` and output size `out`: the
    /// output positions whose input position is inside the image, and the input position of
    /// the first of them, `pos * stride + k * dilation - pad`.
    fn valid(
        size: usize,
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dil: usize,
    ) -> (usize, usize) {
        let offset = k * dil;
        // first output position p with p*stride + offset >= pad
        let start = if offset >= pad {
            0
        } else {
            (pad - offset).div_ceil(stride)
        };
        // last: p*stride + offset - pad < size  <=>  p*stride < size + pad - offset
        let end = if size + pad <= offset {
            0
        } else {
            (size + pad - offset).div_ceil(stride).min(out)
        };
        (start.min(end), end)
    }
}

/// im2col of images `first..first + b` into `cols[K, b·L]` (row `(c, i, j)`, column
/// `image·L + oh·W_out + ow`), zero where the kernel reads padding.
fn im2col(g: &Geometry, x: &[f32], first: usize, b: usize, cols: &mut [f32]) {
    let (l, plane) = (g.l(), g.h * g.w);
    cols.par_chunks_mut(b * l)
        .enumerate()
        .for_each(|(row, out)| {
            let (c, i, j) = g.tap(row);
            let (r0, r1) = Geometry::valid(g.h, g.oh, i, g.stride[0], g.pad[0], g.dilation[0]);
            let (c0, c1) = Geometry::valid(g.w, g.ow, j, g.stride[1], g.pad[1], g.dilation[1]);
            for image in 0..b {
                let src = &x[((first + image) * g.c + c) * plane..][..plane];
                let dst = &mut out[image * l..][..l];
                for r in 0..g.oh {
                    let line = &mut dst[r * g.ow..][..g.ow];
                    if r < r0 || r >= r1 || c0 >= c1 {
                        line.fill(0.0);
                        continue;
                    }
                    let ih = r * g.stride[0] + i * g.dilation[0] - g.pad[0];
                    let iw0 = c0 * g.stride[1] + j * g.dilation[1] - g.pad[1];
                    let src_line = &src[ih * g.w..][..g.w];
                    line[..c0].fill(0.0);
                    line[c1..].fill(0.0);
                    if g.stride[1] == 1 {
                        line[c0..c1].copy_from_slice(&src_line[iw0..iw0 + (c1 - c0)]);
                    } else {
                        for (q, v) in line[c0..c1].iter_mut().enumerate() {
                            *v = src_line[iw0 + q * g.stride[1]];
                        }
                    }
                }
            }
        });
}

/// col2im: adds `dcols[K, b·L]` into the input gradient of images `first..first + b`.
fn col2im(g: &Geometry, dcols: &[f32], first: usize, b: usize, dx: &mut [f32]) {
    let (l, plane, bl) = (g.l(), g.h * g.w, b * g.l());
    let planes = &mut dx[first * g.c * plane..(first + b) * g.c * plane];
    planes
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(p, dst)| {
            let (image, c) = (p / g.c, p % g.c);
            for i in 0..g.kh {
                let (r0, r1) = Geometry::valid(g.h, g.oh, i, g.stride[0], g.pad[0], g.dilation[0]);
                for j in 0..g.kw {
                    let (c0, c1) =
                        Geometry::valid(g.w, g.ow, j, g.stride[1], g.pad[1], g.dilation[1]);
                    if c0 >= c1 {
                        continue;
                    }
                    let row = (c * g.kh + i) * g.kw + j;
                    let src = &dcols[row * bl + image * l..][..l];
                    for r in r0..r1 {
                        let ih = r * g.stride[0] + i * g.dilation[0] - g.pad[0];
                        let iw0 = c0 * g.stride[1] + j * g.dilation[1] - g.pad[1];
                        let line = &mut dst[ih * g.w..][..g.w];
                        let from = &src[r * g.ow + c0..r * g.ow + c1];
                        if g.stride[1] == 1 {
                            for (d, s) in line[iw0..iw0 + from.len()].iter_mut().zip(from) {
                                *d += s;
                            }
                        } else {
                            for (q, s) in from.iter().enumerate() {
                                line[iw0 + q * g.stride[1]] += s;
                            }
                        }
                    }
                }
            }
        });
}

/// `dst[m, n] (= or +=) lhs[m, k] · rhs[k, n]`, each operand given by its row and column
/// strides, on all of rayon's threads.
///
/// The destination's layout is the caller's choice because it decides how `gemm` blocks the
/// product. With gemm's AVX-512 kernels, a column-major destination runs the forward 1.1-1.4x
/// and the weight gradient (long K) 2-4x faster than a row-major one; the column gradient is
/// faster row-major (BENCHMARKS.md, "Flex on AVX-512").
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    size: [usize; 3],
    dst: &mut [f32],
    dst_strides: [usize; 2],
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: [usize; 2],
    rhs: &[f32],
    rhs_strides: [usize; 2],
) {
    gemm_with(
        gemm::Parallelism::Rayon(0),
        size,
        dst,
        dst_strides,
        accumulate,
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
    );
}

/// `gemm` with the parallelism the caller chooses: `Parallelism::None` for callers that run
/// several products at once, one per task (`conv_winograd.rs`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_with(
    parallelism: gemm::Parallelism,
    size: [usize; 3],
    dst: &mut [f32],
    dst_strides: [usize; 2],
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: [usize; 2],
    rhs: &[f32],
    rhs_strides: [usize; 2],
) {
    // SAFETY: `dst` is initialised, so accumulating into it reads defined values.
    unsafe {
        gemm_raw(
            parallelism,
            size,
            (dst.as_mut_ptr(), dst.len()),
            dst_strides,
            accumulate,
            (lhs, lhs_strides),
            (rhs, rhs_strides),
        )
    }
}

/// `gemm_with` into uninitialised memory, overwriting every element the product covers: a
/// buffer that is written before it is read need not be zeroed first (a pass of its own over
/// the largest buffers of the Winograd path, `conv_winograd.rs`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_uninit(
    parallelism: gemm::Parallelism,
    size: [usize; 3],
    dst: &mut [MaybeUninit<f32>],
    dst_strides: [usize; 2],
    lhs: &[f32],
    lhs_strides: [usize; 2],
    rhs: &[f32],
    rhs_strides: [usize; 2],
) {
    // SAFETY: without `accumulate` the kernel writes `dst` and never reads it.
    unsafe {
        gemm_raw(
            parallelism,
            size,
            (dst.as_mut_ptr().cast(), dst.len()),
            dst_strides,
            false,
            (lhs, lhs_strides),
            (rhs, rhs_strides),
        )
    }
}

/// # Safety
/// `dst` points to `len` floats that nothing else accesses during the call; with `accumulate`
/// they are initialised.
unsafe fn gemm_raw(
    parallelism: gemm::Parallelism,
    [m, n, k]: [usize; 3],
    (dst, len): (*mut f32, usize),
    [dst_rs, dst_cs]: [usize; 2],
    accumulate: bool,
    (lhs, [lhs_rs, lhs_cs]): (&[f32], [usize; 2]),
    (rhs, [rhs_rs, rhs_cs]): (&[f32], [usize; 2]),
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs
    };
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        last(m, n, dst_rs, dst_cs) < len,
        "gemm destination too small"
    );
    assert!(
        k == 0 || last(m, k, lhs_rs, lhs_cs) < lhs.len(),
        "gemm lhs too small"
    );
    assert!(
        k == 0 || last(k, n, rhs_rs, rhs_cs) < rhs.len(),
        "gemm rhs too small"
    );
    // SAFETY: the asserts above keep every element the kernel reads or writes inside its
    // slice; `dst` is accessed by nothing else (the caller's contract), so it aliases neither
    // input, and callers give it strides under which distinct (row, column) pairs are distinct
    // elements. Without `accumulate` (gemm's `read_dst`) the kernel only writes `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Gathers images `first..first + b` of an NCHW tensor `[N, O, L]` into `chunk[O, b·L]`.
fn gather(g: &Geometry, nchw: &[f32], chunk: &mut [f32], first: usize, b: usize) {
    let l = g.l();
    for image in 0..b {
        for o in 0..g.o {
            chunk[(o * b + image) * l..][..l]
                .copy_from_slice(&nchw[((first + image) * g.o + o) * l..][..l]);
        }
    }
}

/// Images `first..first + b` of the product `out[b·L, O]` (each image's `[L, O]` block, the
/// forward gemm's column-major destination) into the NCHW output, transposed to `[O, L]`.
fn scatter_transposed(g: &Geometry, out: &[f32], nchw: &mut [f32], first: usize, b: usize) {
    let (l, image_len) = (g.l(), g.o * g.l());
    nchw[first * image_len..(first + b) * image_len]
        .par_chunks_mut(image_len)
        .zip(out.par_chunks(image_len))
        .for_each(|(dst, src)| transpose(src, g.o, dst, l, [l, g.o]));
}

/// Forward convolution without bias: `y[N, O, H_out, W_out]`.
pub fn forward_kernel(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    if conv_winograd::applies(g) {
        return conv_winograd::forward(g, x, w);
    }
    if conv_shifted::applies(g) {
        return conv_shifted::forward(g, x, w);
    }
    forward_chunked(g, x, w, g.chunk(CHUNK_FLOATS))
}

fn forward_chunked(g: &Geometry, x: &[f32], w: &[f32], step: usize) -> Vec<f32> {
    let (k, l) = (g.k(), g.l());
    let mut y = vec![0.0; g.n * g.o * l];
    let mut cols = vec![0.0; k * step * l];
    let mut out = vec![0.0; g.o * step * l];
    for first in (0..g.n).step_by(step) {
        let b = step.min(g.n - first);
        let bl = b * l;
        im2col(g, x, first, b, &mut cols[..k * bl]);
        // Y[O, bL] into a column-major destination, i.e. `out[bL, O]`
        gemm(
            [g.o, bl, k],
            &mut out[..g.o * bl],
            [1, g.o],
            false,
            w,
            [k, 1],
            &cols,
            [bl, 1],
        );
        scatter_transposed(g, &out[..g.o * bl], &mut y, first, b);
    }
    y
}

/// Input and weight gradients of the convolution, each only when asked for.
pub fn backward_kernels(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    if conv_winograd::applies(g) {
        return conv_winograd::backward(g, x, w, dy, [want_dx, want_dw]);
    }
    if conv_shifted::applies(g) {
        return conv_shifted::backward(g, x, w, dy, [want_dx, want_dw]);
    }
    let step = g.chunk(CHUNK_FLOATS);
    backward_chunked(g, x, w, dy, [want_dx, want_dw], step)
}

fn backward_chunked(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [want_dx, want_dw]: [bool; 2],
    step: usize,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (k, l) = (g.k(), g.l());
    let mut dx = want_dx.then(|| vec![0.0; g.n * g.c * g.h * g.w]);
    // dW accumulates column-major, as `[K, O]`, and is transposed once at the end.
    let mut dw_t = want_dw.then(|| vec![0.0; g.o * k]);
    let mut cols = vec![0.0; k * step * l];
    let mut dyc = vec![0.0; g.o * step * l];
    for (index, first) in (0..g.n).step_by(step).enumerate() {
        let b = step.min(g.n - first);
        let bl = b * l;
        gather(g, dy, &mut dyc[..g.o * bl], first, b);
        let dyc = &dyc[..g.o * bl];
        if let Some(dw_t) = dw_t.as_mut() {
            im2col(g, x, first, b, &mut cols[..k * bl]);
            // dW[O, K] += dY[O, bL] · cols[K, bL]ᵀ
            gemm(
                [g.o, k, bl],
                dw_t,
                [1, g.o],
                index > 0,
                dyc,
                [bl, 1],
                &cols,
                [1, bl],
            );
        }
        if let Some(dx) = dx.as_mut() {
            // dcols[K, bL] = Wᵀ[K, O] · dY[O, bL]
            gemm(
                [k, bl, g.o],
                &mut cols[..k * bl],
                [bl, 1],
                false,
                w,
                [1, k],
                dyc,
                [bl, 1],
            );
            col2im(g, &cols[..k * bl], first, b, dx);
        }
    }
    let dw = dw_t.map(|dw_t| {
        let mut dw = vec![0.0; g.o * k];
        transpose(&dw_t, g.o, &mut dw, k, [k, g.o]);
        dw
    });
    (dx, dw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Device, Distribution};
    use oodforge_core::rng::uniform_noise;

    /// Naive direct convolution in f64: the reference for the kernels.
    fn direct(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f64> {
        let mut y = vec![0.0f64; g.n * g.o * g.l()];
        for n in 0..g.n {
            for o in 0..g.o {
                for r in 0..g.oh {
                    for q in 0..g.ow {
                        let mut acc = 0.0f64;
                        for c in 0..g.c {
                            for i in 0..g.kh {
                                for j in 0..g.kw {
                                    let ih = (r * g.stride[0] + i * g.dilation[0]) as isize
                                        - g.pad[0] as isize;
                                    let iw = (q * g.stride[1] + j * g.dilation[1]) as isize
                                        - g.pad[1] as isize;
                                    if ih < 0 || iw < 0 || ih >= g.h as isize || iw >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv =
                                        x[((n * g.c + c) * g.h + ih as usize) * g.w + iw as usize];
                                    let wv = w[((o * g.c + c) * g.kh + i) * g.kw + j];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y[((n * g.o + o) * g.oh + r) * g.ow + q] = acc;
                    }
                }
            }
        }
        y
    }

    /// `dX` and `dW` of `<dy, conv(x, w)>` by the adjoint identities: the product is bilinear,
    /// so dW[o,c,i,j] = <dy, conv(x, e_ocij)> and dX[n,c,h,w] = <dy, conv(e_nchw, w)>.
    fn adjoint_gradients(g: &Geometry, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let dot = |y: &[f64]| y.iter().zip(dy).map(|(a, b)| a * *b as f64).sum::<f64>();
        let unit = |len: usize, at: usize| {
            let mut e = vec![0.0f32; len];
            e[at] = 1.0;
            e
        };
        let dx = (0..x.len())
            .map(|i| dot(&direct(g, &unit(x.len(), i), w)))
            .collect();
        let dw = (0..w.len())
            .map(|i| dot(&direct(g, x, &unit(w.len(), i))))
            .collect();
        (dx, dw)
    }

    fn close(what: &str, got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= tol * (1.0 + w.abs()),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// `close` for F(4x4, 3x3), whose transforms hold 4, 5 and 8 and lose more precision:
    /// errors within `tol` of the reference values' root mean square. Seen: up to 6.3e-6 of it
    /// (2x2 tiles: 9e-7, im2col: 1.1e-6), on the cases of the test below.
    fn close_rms(what: &str, got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let rms = (want.iter().map(|w| w * w).sum::<f64>() / want.len().max(1) as f64).sqrt();
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= tol * rms,
                "{what}[{i}]: {g} vs {w} (values' rms {rms})"
            );
        }
    }

    /// `close` with `tol2` for 2x2 Winograd tiles, `close_rms` within 3e-5 for 4x4 tiles.
    fn close_for_side(side: usize, tol2: f64, what: &str, got: &[f32], want: &[f64]) {
        match side {
            2 => close(what, got, want, tol2),
            _ => close_rms(what, got, want, 3e-5),
        }
    }

    /// (x shape, w shape, stride, padding pairs, dilation)
    type Case = (
        [usize; 4],
        [usize; 4],
        [usize; 2],
        [(usize, usize); 2],
        [usize; 2],
    );

    const CASES: [Case; 6] = [
        // ResNet 3x3, stride 1 and 2
        ([3, 4, 7, 6], [5, 4, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1]),
        ([3, 4, 7, 6], [5, 4, 3, 3], [2, 2], [(1, 1), (1, 1)], [1, 1]),
        // 1x1 projection shortcut, stride 2
        ([2, 6, 5, 5], [3, 6, 1, 1], [2, 2], [(0, 0), (0, 0)], [1, 1]),
        // ImageNet stem 7x7 / 2, pad 3
        (
            [2, 3, 11, 9],
            [4, 3, 7, 7],
            [2, 2],
            [(3, 3), (3, 3)],
            [1, 1],
        ),
        // dilation, asymmetric padding and stride, non-square kernel
        ([2, 3, 9, 8], [4, 3, 3, 2], [1, 2], [(2, 0), (1, 2)], [2, 1]),
        // kernel larger than the padded input along one axis for some offsets
        ([1, 2, 3, 3], [2, 2, 3, 3], [1, 1], [(0, 0), (2, 2)], [1, 1]),
    ];

    #[test]
    fn kernels_match_a_direct_convolution_in_every_chunking() {
        for (case, (xs, ws, stride, padding, dilation)) in CASES.into_iter().enumerate() {
            let options = ConvOptions::new_with_padding(stride, padding, dilation, 1);
            let g = Geometry::new(&xs, &ws, &options);
            let x = uniform_noise(xs.iter().product(), 1 + case as u64);
            let w = uniform_noise(ws.iter().product(), 100 + case as u64);
            let dy = uniform_noise(g.n * g.o * g.l(), 200 + case as u64);
            let y = direct(&g, &x, &w);
            let (want_dx, want_dw) = adjoint_gradients(&g, &x, &w, &dy);
            for step in [1, 2, g.n] {
                let what = format!("case {case}, {step} image(s) per chunk");
                close(
                    &format!("{what}: y"),
                    &forward_chunked(&g, &x, &w, step),
                    &y,
                    1e-5,
                );
                let (dx, dw) = backward_chunked(&g, &x, &w, &dy, [true, true], step);
                close(&format!("{what}: dx"), &dx.unwrap(), &want_dx, 1e-5);
                close(&format!("{what}: dw"), &dw.unwrap(), &want_dw, 1e-5);
            }
            let (dx, dw) = backward_chunked(&g, &x, &w, &dy, [false, true], 1);
            assert!(
                dx.is_none() && dw.is_some(),
                "case {case}: only dW was asked for"
            );
        }
    }

    /// The shifted-grid kernels (conv_shifted.rs) against the same direct convolution, on
    /// every stride-1 case they accept whatever their waste, plus shapes of their own:
    /// asymmetric and one-sided padding, non-square kernels and planes, 1x1, and one image.
    #[test]
    fn shifted_kernels_match_a_direct_convolution() {
        let mut cases: Vec<Case> = CASES.to_vec();
        cases.extend([
            ([2, 3, 6, 9], [4, 3, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1]),
            ([3, 2, 5, 4], [3, 2, 2, 3], [1, 1], [(0, 1), (2, 0)], [1, 1]),
            ([2, 5, 4, 4], [3, 5, 1, 1], [1, 1], [(0, 0), (0, 0)], [1, 1]),
            ([1, 3, 6, 5], [2, 3, 5, 5], [1, 1], [(2, 2), (2, 2)], [1, 1]),
            ([2, 2, 5, 6], [3, 2, 3, 3], [1, 1], [(0, 0), (0, 0)], [1, 1]),
        ]);
        let mut tested = 0;
        for (case, (xs, ws, stride, padding, dilation)) in cases.into_iter().enumerate() {
            let options = ConvOptions::new_with_padding(stride, padding, dilation, 1);
            let g = Geometry::new(&xs, &ws, &options);
            if !conv_shifted::fits(&g) {
                continue;
            }
            tested += 1;
            let x = uniform_noise(xs.iter().product(), 11 + case as u64);
            let w = uniform_noise(ws.iter().product(), 110 + case as u64);
            let dy = uniform_noise(g.n * g.o * g.l(), 210 + case as u64);
            let (want_dx, want_dw) = adjoint_gradients(&g, &x, &w, &dy);
            let what = format!("case {case} {xs:?} * {ws:?} pad {padding:?}");
            close(
                &format!("{what}: y"),
                &conv_shifted::forward(&g, &x, &w),
                &direct(&g, &x, &w),
                1e-5,
            );
            let (dx, dw) = conv_shifted::backward(&g, &x, &w, &dy, [true, true]);
            close(&format!("{what}: dx"), &dx.unwrap(), &want_dx, 1e-5);
            close(&format!("{what}: dw"), &dw.unwrap(), &want_dw, 1e-5);
            let (dx, dw) = conv_shifted::backward(&g, &x, &w, &dy, [true, false]);
            assert!(
                dx.is_some() && dw.is_none(),
                "{what}: only dX was asked for"
            );
        }
        assert_eq!(tested, 7, "stride-1 cases that fit on the grid");
    }

    /// The Winograd kernels (conv_winograd.rs) against the same direct convolution, on every
    /// 3x3 stride-1 case above plus shapes of their own: odd and even output sizes (partial
    /// tiles), no padding, one-sided and two-sided padding, a 1x1 plane, one image and many,
    /// in every chunking.
    #[test]
    fn winograd_kernels_match_a_direct_convolution() {
        let mut cases: Vec<Case> = CASES.to_vec();
        cases.extend([
            ([2, 3, 6, 9], [4, 3, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1]),
            ([2, 2, 5, 6], [3, 2, 3, 3], [1, 1], [(0, 0), (0, 0)], [1, 1]),
            ([3, 5, 4, 4], [6, 5, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1]),
            (
                [2, 9, 7, 5],
                [10, 9, 3, 3],
                [1, 1],
                [(2, 0), (0, 1)],
                [1, 1],
            ),
            ([1, 4, 1, 1], [3, 4, 3, 3], [1, 1], [(1, 1), (1, 1)], [1, 1]),
            ([4, 3, 8, 8], [2, 3, 3, 3], [1, 1], [(2, 2), (2, 2)], [1, 1]),
        ]);
        let mut tested = 0;
        for (case, (xs, ws, stride, padding, dilation)) in cases.into_iter().enumerate() {
            let options = ConvOptions::new_with_padding(stride, padding, dilation, 1);
            let g = Geometry::new(&xs, &ws, &options);
            if !conv_winograd::fits(&g) {
                continue;
            }
            tested += 1;
            let x = uniform_noise(xs.iter().product(), 21 + case as u64);
            let w = uniform_noise(ws.iter().product(), 120 + case as u64);
            let dy = uniform_noise(g.n * g.o * g.l(), 220 + case as u64);
            let y = direct(&g, &x, &w);
            let (want_dx, want_dw) = adjoint_gradients(&g, &x, &w, &dy);
            for (side, step) in [2, 4].into_iter().flat_map(|s| [(s, 1), (s, 3), (s, g.n)]) {
                let what = format!(
                    "case {case} {xs:?} * {ws:?} pad {padding:?}, {side}x{side} tiles, \
                     {step} per chunk"
                );
                let step = step.min(g.n);
                let check = |what: &str, got: &[f32], want: &[f64]| {
                    close_for_side(side, 1e-5, what, got, want)
                };
                check(
                    &format!("{what}: y"),
                    &conv_winograd::forward_chunked(&g, &x, &w, side, step),
                    &y,
                );
                let (dx, dw) =
                    conv_winograd::backward_chunked(&g, &x, &w, &dy, [true, true], side, step);
                check(&format!("{what}: dx"), &dx.unwrap(), &want_dx);
                check(&format!("{what}: dw"), &dw.unwrap(), &want_dw);
            }
            let (dx, dw) = conv_winograd::backward(&g, &x, &w, &dy, [false, true]);
            assert!(dx.is_none(), "case {case}: only dW was asked for");
            close(
                &format!("case {case}: dw alone"),
                &dw.unwrap(),
                &want_dw,
                1e-5,
            );
            let (dx, dw) = conv_winograd::backward(&g, &x, &w, &dy, [true, false]);
            assert!(dw.is_none(), "case {case}: only dX was asked for");
            close(
                &format!("case {case}: dx alone"),
                &dx.unwrap(),
                &want_dx,
                1e-5,
            );
        }
        assert_eq!(tested, 8, "3x3 stride-1 cases");
    }

    /// A layer as wide as a ResNet's (every channel in full 8-lane groups, several chunks):
    /// the Winograd kernels against the im2col ones, values and both gradients, within the
    /// rounding of f32 sums of 576 products: about 1e-6 of their typical size (8), so 5e-5 of
    /// `1 + |value|` (seen: 1.2e-5 on a value of 0.22); with 4x4 tiles within 3e-5 of their
    /// root mean square (`close_rms`; seen: 5.7e-5 on a value of 0.08).
    #[test]
    fn winograd_matches_im2col_on_a_wide_layer() {
        let options = ConvOptions::new_with_padding([1, 1], [(1, 1), (1, 1)], [1, 1], 1);
        let g = Geometry::new(&[5, 64, 10, 12], &[72, 64, 3, 3], &options);
        assert!(conv_winograd::applies(&g));
        assert_eq!(conv_winograd::tile_side(&g), 4, "10x12 outputs: 4x4 tiles");
        let small = Geometry::new(&[5, 64, 4, 8], &[72, 64, 3, 3], &options);
        assert_eq!(
            conv_winograd::tile_side(&small),
            2,
            "4x8 outputs: 2x2 tiles"
        );
        let x = uniform_noise(5 * 64 * 10 * 12, 31);
        let w = uniform_noise(72 * 64 * 9, 32);
        let dy = uniform_noise(g.n * g.o * g.l(), 33);
        let f64s = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
        let step = g.chunk(CHUNK_FLOATS);
        let y = f64s(forward_chunked(&g, &x, &w, step));
        let (want_dx, want_dw) = backward_chunked(&g, &x, &w, &dy, [true, true], step);
        let (want_dx, want_dw) = (f64s(want_dx.unwrap()), f64s(want_dw.unwrap()));
        for side in [2, 4] {
            let what = format!("{side}x{side} tiles");
            let check =
                |what: &str, got: &[f32], want: &[f64]| close_for_side(side, 5e-5, what, got, want);
            check(
                &format!("{what}: y"),
                &conv_winograd::forward_chunked(&g, &x, &w, side, 2),
                &y,
            );
            let (dx, dw) = conv_winograd::backward_chunked(&g, &x, &w, &dy, [true, true], side, 2);
            check(&format!("{what}: dx"), &dx.unwrap(), &want_dx);
            check(&format!("{what}: dw"), &dw.unwrap(), &want_dw);
        }
    }

    /// Which path a ResNet / WRN convolution takes: the shifted grid for large planes, im2col
    /// for small ones (waste) and strided ones.
    #[test]
    fn large_stride_1_planes_take_the_shifted_path() {
        let geometry = |hw: usize, k: usize, stride: usize, pad: usize| {
            let options = ConvOptions::new_with_padding([stride; 2], [(pad, pad); 2], [1, 1], 1);
            Geometry::new(&[2, 16, hw, hw], &[16, 16, k, k], &options)
        };
        assert!(conv_shifted::applies(&geometry(32, 3, 1, 1)));
        assert!(conv_shifted::applies(&geometry(16, 3, 1, 1)));
        assert!(
            conv_shifted::applies(&geometry(8, 1, 1, 0)),
            "1x1: no waste"
        );
        assert!(
            !conv_shifted::applies(&geometry(4, 3, 1, 1)),
            "4x4: 56% waste"
        );
        assert!(!conv_shifted::applies(&geometry(32, 3, 2, 1)), "stride 2");
    }

    /// Through burn: `conv2d` on a flex autodiff device (the extension, with bias) against
    /// burn's own `Conv2d::forward`, values and all three gradients.
    #[test]
    fn extension_matches_burns_convolution_with_gradients() {
        let _rng = crate::tests::device_rng();
        let device = Device::flex().autodiff();
        for (stride, pad, bias) in [(1, 1, false), (2, 1, true), (2, 0, false)] {
            let k = if pad == 0 { 1 } else { 3 };
            let conv = Conv2dConfig::new([4, 6], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(bias)
                .init(&device);
            let x = Tensor::<4>::zeros([1, 4, 12, 12], &device);
            let options = gemm_options(&conv, &x).expect("the extension's path");
            let g = Geometry::new(&[3, 4, 12, 12], &[6, 4, k, k], &options);
            assert_eq!(conv_shifted::applies(&g), stride == 1, "stride {stride}");
            let x =
                Tensor::<4>::random([3, 4, 12, 12], Distribution::Default, &device).require_grad();
            let target = Tensor::<4>::random(
                [3, 6, 12 / stride, 12 / stride],
                Distribution::Default,
                &device,
            );
            let run = |f: &dyn Fn(&Conv2d, Tensor<4>) -> Tensor<4>| {
                let conv = Conv2d {
                    weight: Param::from_tensor(conv.weight.val().detach().require_grad()),
                    bias: conv
                        .bias
                        .as_ref()
                        .map(|b| Param::from_tensor(b.val().detach().require_grad())),
                    ..conv.clone()
                };
                let x = x.clone().detach().require_grad();
                let y = f(&conv, x.clone());
                let grads = (y.clone() * target.clone()).sum().backward();
                let mut out = vec![y.into_data().try_to_vec::<f32>().unwrap()];
                out.push(
                    x.grad(&grads)
                        .unwrap()
                        .into_data()
                        .try_to_vec::<f32>()
                        .unwrap(),
                );
                out.push(
                    conv.weight
                        .val()
                        .grad(&grads)
                        .unwrap()
                        .into_data()
                        .try_to_vec()
                        .unwrap(),
                );
                if let Some(b) = &conv.bias {
                    out.push(
                        b.val()
                            .grad(&grads)
                            .unwrap()
                            .into_data()
                            .try_to_vec()
                            .unwrap(),
                    );
                }
                out
            };
            let ours = run(&|c, x| conv2d(c, x));
            let burns = run(&|c, x| c.forward(x));
            for (what, (a, b)) in ["y", "dx", "dw", "dbias"]
                .iter()
                .zip(ours.iter().zip(&burns))
            {
                let b: Vec<f64> = b.iter().map(|v| *v as f64).collect();
                close(&format!("stride {stride}, pad {pad}: {what}"), a, &b, 1e-4);
            }
            assert_eq!(ours.len(), 3 + bias as usize);
        }
    }

    #[test]
    fn other_devices_and_small_planes_in_inference_keep_burns_convolution() {
        let _rng = crate::tests::device_rng();
        let conv = Conv2dConfig::new([2, 2], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&Device::flex());
        let x = Tensor::<4>::zeros([1, 2, 4, 4], &Device::flex());
        assert!(
            gemm_options(&conv, &x).is_none(),
            "inference on flex, 4x4 planes: flex's own forward"
        );
        let same = Conv2dConfig::new([2, 2], [3, 3])
            .with_padding(PaddingConfig2d::Same)
            .init(&Device::flex().autodiff());
        let x = Tensor::<4>::zeros([1, 2, 4, 4], &Device::flex().autodiff());
        assert!(
            gemm_options(&same, &x).is_none(),
            "`Same` padding: burn's path"
        );
    }

    /// Inference on flex (no autodiff) on planes the shifted grid takes: the same values as
    /// burn's convolution, bias included.
    #[test]
    fn inference_on_large_planes_matches_burns_convolution() {
        let _rng = crate::tests::device_rng();
        let device = Device::flex();
        let conv = Conv2dConfig::new([5, 7], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        let x = Tensor::<4>::random([3, 5, 16, 16], Distribution::Default, &device);
        assert!(
            gemm_options(&conv, &x).is_some(),
            "16x16, stride 1: the shifted grid"
        );
        let ours = conv2d(&conv, x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let burns: Vec<f64> = conv
            .forward(x)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| *v as f64)
            .collect();
        close("inference", &ours, &burns, 1e-5);
    }
}
