//! Stride-1 convolution as `kh` matrix products over a zero-padded channels-last copy of the
//! input, without an im2col buffer.
//!
//! Why: the im2col buffer of a 3x3 convolution is nine times its input, written once and read
//! back by the product, and col2im makes another pass over its gradient. On large planes with
//! few channels (the first stages of the CIFAR ResNets and WRNs: few flops per value) those
//! passes are a large share of the convolution: forward + backward of ResNet-18's stage-1
//! convolution (batch 128) took 245-295 ms with im2col and 207 ms here, WRN-40-2's 88-93 ms
//! against 62 ms (BENCHMARKS.md, "Convolution without im2col").
//!
//! How: the input is copied channels-last onto a grid of `Hp x Wp` positions per image, where
//! `Wp = W + max(left, right padding)` and `Hp = H + max(top, bottom padding)`: the zero
//! columns after each row serve as the right padding of that row and the left padding of the
//! next, and the zero rows after each image as the bottom padding of that image and the top
//! padding of the next. Output position `q` (on the same grid) reads input position
//! `q + i·Wp + j` for kernel offset `(i, j)`, so for one kernel row `i` the values
//! `x[q + i·Wp + j, c]` over `(j, c)` are `kw·C` consecutive floats starting at
//! `(q + i·Wp)·C`: rows of a matrix with row stride `C`. The convolution is then
//!
//! - forward: `Y[q, o] = Σ_i X_i[q, (j, c)] · W_i[(j, c), o]`
//! - weight gradient: `dW_i[(j, c), o] = Σ_q X_i[q, (j, c)] · dY[q, o]`
//! - input gradient: the same forward product on `dY` (channels-last, on the same grid, zero
//!   outside the outputs) with the kernel flipped and its channel axes swapped.
//!
//! The grid's positions past the outputs of a row or an image are computed and thrown away
//! (6% more products for 32x32 planes with 3x3 kernels, 13% for 16x16, 27% for 8x8), which is
//! why `applies` keeps the small planes, whose im2col is cheap, on the im2col path.
//!
//! The batch runs in chunks of images whose grids fit in `CHUNK_FLOATS`, each product one call
//! of the `gemm` crate per chunk and kernel row. Results are those of the im2col path up to
//! float summation order (tests against a direct convolution in conv.rs).

use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::conv::{Geometry, gemm, gemm_uninit};
use crate::simd::transpose_uninit;
use crate::{uninit, written};

/// The largest share of thrown-away grid positions for which this path is used. Measured with
/// 3x3 kernels: 32x32 and 16x16 planes (6% and 13%) ran faster here, 8x8 planes (27%) as fast
/// or slower than with im2col (BENCHMARKS.md, "Convolution without im2col").
const MAX_WASTE: f64 = 0.2;

/// Whether the convolution runs on the shifted grid: it fits there and its share of
/// thrown-away positions is small.
pub(crate) fn applies(g: &Geometry) -> bool {
    fits(g) && waste(g) <= MAX_WASTE
}

/// Stride 1, no dilation, and outputs that fit on the input's grid.
pub(crate) fn fits(g: &Geometry) -> bool {
    if g.stride != [1, 1] || g.dilation != [1, 1] || g.n == 0 || g.oh == 0 || g.ow == 0 {
        return false;
    }
    let grid = Grid::new(g);
    g.oh <= grid.hp && g.ow <= grid.wp
}

/// Grid positions per output position, less one.
fn waste(g: &Geometry) -> f64 {
    let grid = Grid::new(g);
    (grid.hp * grid.wp) as f64 / (g.oh * g.ow) as f64 - 1.0
}

/// Where images, rows and padding lie on the grid.
#[derive(Debug, Clone, Copy)]
struct Grid {
    /// Positions per grid row and grid rows per image.
    wp: usize,
    hp: usize,
    /// Zero positions before the first image: the top padding of image 0 and the left padding
    /// of its first row, so that output position `q` reads input position `q + i·Wp + j`.
    guard: usize,
    /// Output positions computed: up to the last real output of the last image.
    m: usize,
    /// Input-gradient positions computed: up to the last real input of the last image.
    p: usize,
    /// Zero positions before the first output in the channels-last copy of `dY`, so that the
    /// flipped product's shifted reads stay inside it.
    front: usize,
}

impl Grid {
    fn new(g: &Geometry) -> Self {
        let [top, left] = g.pad;
        // stride 1, dilation 1: out = size + before + after - k + 1
        let bottom = (g.oh + g.kh - 1).saturating_sub(g.h + top);
        let right = (g.ow + g.kw - 1).saturating_sub(g.w + left);
        let wp = g.w + left.max(right);
        let hp = g.h + top.max(bottom);
        let image = hp * wp;
        Self {
            wp,
            hp,
            guard: top * wp + left,
            m: (g.n - 1) * image + (g.oh - 1) * wp + g.ow,
            p: (g.n - 1) * image + (g.h - 1) * wp + g.w,
            front: (g.kh - 1) * wp + g.kw - 1,
        }
    }

    /// Offset of kernel row `i`'s first read from output position 0.
    fn row(&self, i: usize) -> usize {
        i * self.wp
    }

    /// Grid positions of the channels-last input copy: every real input (`guard + p`) and
    /// every shifted read of the forward product (`m + front`).
    fn input_positions(&self) -> usize {
        (self.guard + self.p).max(self.m + self.front)
    }

    /// Grid positions of the channels-last `dY` copy: every output (`front + m`) and every
    /// shifted read of the input-gradient product (`guard + p + front`).
    fn output_positions(&self) -> usize {
        (self.front + self.m).max(self.guard + self.p + self.front)
    }
}

/// Upper bound of one channels-last grid buffer, in floats (8 MiB): the batch runs in chunks of
/// images whose grids fit. Large buffers cost a page fault per 4 KiB every time they are
/// allocated (glibc maps blocks of 32 MiB and more afresh, `oodforge_cli::keep_freed_memory`);
/// smaller ones are reused from the heap, and stay closer to the caches.
const CHUNK_FLOATS: usize = 2 << 20;

/// `planes[N, C, H, W]` (row-major) channels-last onto a grid of `positions` positions, image
/// `b`'s `(r, c)` at `offset + b·Hp·Wp + r·Wp + c`, zero everywhere else. Each image's task
/// writes its rows' padding too, so no serial pass zeroes the grid first.
fn to_grid(
    planes: &[f32],
    [n, ch, h, w]: [usize; 4],
    grid: &Grid,
    offset: usize,
    positions: usize,
) -> Vec<f32> {
    let (image, row) = (grid.hp * grid.wp * ch, grid.wp * ch);
    let zero = |s: &mut [MaybeUninit<f32>]| s.fill(MaybeUninit::new(0.0));
    // SAFETY: the positions before the first image, every grid row of every image (its values,
    // then zeros) and the positions after the last image are all written below.
    unsafe {
        written(positions * ch, |out| {
            let (head, rest) = out.split_at_mut(offset * ch);
            zero(head);
            // The callers' `positions` end within the last image's grid or after it.
            let images = (n * image).min(rest.len());
            let (body, tail) = rest.split_at_mut(images);
            zero(tail);
            body.par_chunks_mut(image).enumerate().for_each(|(b, dst)| {
                let src = &planes[b * ch * h * w..][..ch * h * w];
                for (r, line) in dst.chunks_mut(row).enumerate() {
                    let values = if r < h {
                        // [ch, w] with rows h·w apart -> [w, ch]
                        transpose_uninit(&src[r * w..], h * w, line, ch, [ch, w]);
                        w * ch
                    } else {
                        0
                    };
                    zero(&mut line[values..]);
                }
            });
        })
    }
}

/// The input images of a chunk (`x`, geometry `gc`) channels-last on its grid.
fn input_grid(x: &[f32], gc: &Geometry, grid: &Grid) -> Vec<f32> {
    to_grid(
        x,
        [gc.n, gc.c, gc.h, gc.w],
        grid,
        grid.guard,
        grid.input_positions(),
    )
}

/// The inverse, into `out`: the real positions of a channels-last grid `[positions, ch]`
/// (image `b`'s `(r, c)` at `b·Hp·Wp + r·Wp + c`) as `[N, ch, h, w]` planes, every value of
/// `out` written.
fn from_grid(
    grid_values: &[f32],
    [ch, h, w]: [usize; 3],
    grid: &Grid,
    out: &mut [MaybeUninit<f32>],
) {
    out.par_chunks_mut(ch * h * w)
        .enumerate()
        .for_each(|(b, dst)| {
            for r in 0..h {
                let src = &grid_values[(b * grid.hp * grid.wp + r * grid.wp) * ch..];
                // [w, ch] -> [ch, w] with rows h·w apart
                transpose_uninit(src, ch, &mut dst[r * w..], h * w, [w, ch]);
            }
        });
}

/// `dst[q, n] = Σ_i src[q + shift_i, ..] · weights_i`: one product per kernel row, `src`'s
/// rows `src_pitch` apart and `k` long (so consecutive rows overlap). The first product
/// overwrites `dst` (`rows x n`), so it need not be initialised; the result is returned.
fn shifted_product<'d>(
    [rows, n, k]: [usize; 3],
    dst: &'d mut [MaybeUninit<f32>],
    src: &[f32],
    src_pitch: usize,
    shifts: &[usize],
    weights: &[f32],
) -> &'d mut [f32] {
    let dst = &mut dst[..rows * n];
    gemm_uninit(
        ::gemm::Parallelism::Rayon(0),
        [rows, n, k],
        dst,
        [n, 1],
        &src[shifts[0] * src_pitch..],
        [src_pitch, 1],
        &weights[..k * n],
        [n, 1],
    );
    // SAFETY: the product wrote every element of `dst`, `rows x n` row-major.
    let dst = unsafe { dst.assume_init_mut() };
    for (i, shift) in shifts.iter().enumerate().skip(1) {
        gemm(
            [rows, n, k],
            dst,
            [n, 1],
            true,
            &src[shift * src_pitch..],
            [src_pitch, 1],
            &weights[i * k * n..][..k * n],
            [n, 1],
        );
    }
    dst
}

/// Images per chunk: the largest count whose grid of `channels` values per position fits in
/// `CHUNK_FLOATS`, at least one.
fn chunk(g: &Geometry, channels: usize) -> usize {
    let grid = Grid::new(&Geometry { n: 1, ..*g });
    (CHUNK_FLOATS / (grid.hp * grid.wp * channels).max(1)).clamp(1, g.n)
}

/// The convolution of images `first..first + b`: its geometry and the ranges of its input and
/// output values.
fn images(g: &Geometry, first: usize, b: usize) -> (Geometry, [std::ops::Range<usize>; 2]) {
    let (x_len, y_len) = (g.c * g.h * g.w, g.o * g.oh * g.ow);
    (
        Geometry { n: b, ..*g },
        [
            first * x_len..(first + b) * x_len,
            first * y_len..(first + b) * y_len,
        ],
    )
}

/// Where weight `k` (in `C_in·kh·kw` order) of filter `o` lies when the weights are laid out
/// by kernel row, `W_i[(j, c), o]` one row `i` after the other: the forward product's operand
/// and the weight gradient's result.
fn by_kernel_row(g: &Geometry, o: usize, k: usize) -> usize {
    let (c, i, j) = g.tap(k);
    ((i * g.kw + j) * g.c + c) * g.o + o
}

/// Forward convolution without bias: `y[N, O, H_out, W_out]`.
pub(crate) fn forward(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (c, o, kwc) = (g.c, g.o, g.kw * g.c);
    // W_i[(j, c), o] = w[o, c, i, j], kernel rows one after the other
    let mut wt = vec![0.0f32; g.kh * kwc * o];
    for (oi, filter) in w.chunks_exact(c * g.kh * g.kw).enumerate() {
        for (k, v) in filter.iter().enumerate() {
            wt[by_kernel_row(g, oi, k)] = *v;
        }
    }
    let step = chunk(g, c.max(o));
    // SAFETY: the chunks cover every image, and `from_grid` writes all of each image's outputs.
    unsafe {
        written(g.n * o * g.oh * g.ow, |y| {
            for first in (0..g.n).step_by(step) {
                let (gc, [xr, yr]) = images(g, first, step.min(g.n - first));
                let grid = Grid::new(&gc);
                let xg = input_grid(&x[xr], &gc, &grid);
                let shifts: Vec<usize> = (0..g.kh).map(|i| grid.row(i)).collect();
                // Y channels-last on the grid, `[m, O]`
                let mut yg = uninit(grid.m * o);
                let yg = shifted_product([grid.m, o, kwc], &mut yg, &xg, c, &shifts, &wt);
                from_grid(yg, [o, g.oh, g.ow], &grid, &mut y[yr]);
            }
        })
    }
}

/// Input and weight gradients, each only when asked for.
pub(crate) fn backward(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [want_dx, want_dw]: [bool; 2],
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (c, o, kwc, kwo) = (g.c, g.o, g.kw * g.c, g.kw * g.o);
    // the flipped kernel: Wf_i[(j, o), c] = w[o, c, kh-1-i, kw-1-j]
    let wf = want_dx.then(|| {
        let mut wf = vec![0.0f32; g.kh * kwo * c];
        for (oi, filter) in w.chunks_exact(c * g.kh * g.kw).enumerate() {
            for (k, v) in filter.iter().enumerate() {
                let (ci, i, j) = g.tap(k);
                let (fi, fj) = (g.kh - 1 - i, g.kw - 1 - j);
                wf[((fi * g.kw + fj) * o + oi) * c + ci] = *v;
            }
        }
        wf
    });
    // written chunk by chunk below, every image's values
    let mut dx = want_dx.then(|| uninit(x.len()));
    // dW_i[(j, c), o], kernel rows one after the other, summed over the chunks
    let mut dwt = want_dw.then(|| vec![0.0f32; g.kh * kwc * o]);
    let step = chunk(g, c.max(o));
    for (index, first) in (0..g.n).step_by(step).enumerate() {
        let (gc, [xr, yr]) = images(g, first, step.min(g.n - first));
        let grid = Grid::new(&gc);
        // dY channels-last on the grid, zero wherever no output is
        let dyg = to_grid(
            &dy[yr],
            [gc.n, o, g.oh, g.ow],
            &grid,
            grid.front,
            grid.output_positions(),
        );
        if let Some(dwt) = dwt.as_mut() {
            let xg = input_grid(&x[xr.clone()], &gc, &grid);
            // dW_i[(j, c), o] += Σ_q X_i[q, (j, c)] · dY[q, o]
            for (i, dst) in dwt.chunks_exact_mut(kwc * o).enumerate() {
                gemm(
                    [kwc, o, grid.m],
                    dst,
                    [o, 1],
                    index > 0,
                    &xg[grid.row(i) * c..],
                    [1, c],
                    &dyg[grid.front * o..],
                    [o, 1],
                );
            }
        }
        if let (Some(dx), Some(wf)) = (dx.as_mut(), wf.as_ref()) {
            // dX at input position guard + u reads dY at guard + u + i·Wp + j (front-shifted)
            let shifts: Vec<usize> = (0..g.kh).map(|i| grid.guard + grid.row(i)).collect();
            let mut dxg = uninit(grid.p * c);
            let dxg = shifted_product([grid.p, c, kwo], &mut dxg, &dyg, o, &shifts, wf);
            from_grid(dxg, [c, g.h, g.w], &grid, &mut dx[xr]);
        }
    }
    let dw = dwt.map(|dwt| {
        let mut dw = vec![0.0f32; w.len()];
        for (oi, filter) in dw.chunks_exact_mut(c * g.kh * g.kw).enumerate() {
            for (k, v) in filter.iter_mut().enumerate() {
                *v = dwt[by_kernel_row(g, oi, k)];
            }
        }
        dw
    });
    // SAFETY: the chunks covered every image, and `from_grid` wrote all of each one's values.
    let dx = dx.map(|dx| unsafe { dx.assume_init() }.into_vec());
    (dx, dw)
}
