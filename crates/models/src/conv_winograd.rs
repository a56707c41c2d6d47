//! 3x3 stride-1 convolutions by Winograd's minimal filtering algorithm F(2x2, 3x3), forward and
//! backward.
//!
//! Why: on flex most of a CNN training step is matrix products (two thirds of a ResNet-18 step
//! in gemm's micro-kernel, BENCHMARKS.md), and those already run near the machine's peak. The
//! one way left to make them faster is fewer of them. F(2x2, 3x3) computes a 2x2 block of
//! outputs from a 4x4 block of inputs with 16 multiplications per (input channel, output
//! channel) pair instead of 36: 2.25x fewer products for each of the forward pass, the input
//! gradient and the weight gradient. cuDNN offers the same algorithm for these layers.
//!
//! How (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016, eq. 7-8
//! and section 4): with the 4x4 input tile `d`, the 3x3 filter `g` and
//!
//! ```text
//!       | 1  0 -1  0 |        | 1    0    0  |        | 1  1  1  0 |
//! Bᵀ =  | 0  1  1  0 |   G =  | 1/2  1/2  1/2|   Aᵀ = | 0  1 -1 -1 |
//!       | 0 -1  1  0 |        | 1/2 -1/2  1/2|
//!       | 0  1  0 -1 |        | 0    0    1  |
//! ```
//!
//! the 2x2 output tile is `Y = Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A`. For each of the 16 positions
//! `ξν` of the 4x4 transformed tiles, the sum over input channels is one matrix product:
//! `M_ξν[tile, o] = V_ξν[tile, c] · U_ξν[c, o]`, with `V = Bᵀ d B` and `U = G g Gᵀ`. The
//! backward pass differentiates those three steps:
//!
//! - `dM = A dY Aᵀ` (the output transform's adjoint),
//! - weight gradient: `dU_ξν = V_ξνᵀ · dM_ξν`, then `dg = Gᵀ dU G`,
//! - input gradient: `dV_ξν = dM_ξν · U_ξνᵀ`, then `dd = B dV Bᵀ`, added into the input
//!   gradient tile by tile (neighbouring tiles overlap by two rows or columns).
//!
//! Tiles are laid channels-last, so each transform is the same few additions on vectors of
//! channels; `Bᵀ`, `Aᵀ` and their adjoints hold only 0 and ±1. The transforms run per image on
//! one thread, the 16 products of a chunk of images on all threads (one product per task).
//!
//! Results are those of a direct convolution up to float rounding: the transforms add and
//! subtract inputs before the products, which loses a little more precision than im2col (tests
//! against a direct convolution in f64, conv.rs).

use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::conv::{Geometry, gemm_uninit, gemm_with};
use crate::simd::{dispatch, transpose};

/// Positions of a transformed tile (4x4).
const TAPS: usize = 16;

/// The fewest input and output channels for which this path is used: with fewer, the
/// transforms (passes over 4x the input and the output) outweigh the saved products. Measured
/// on WRN-40-2 at batch 32: with its 32-channel layers here it evaluated at 65-100 images/s,
/// with them on the shifted path (and its wider layers here) at 110-134, and trained no faster
/// either way; its and ResNet-18's 64-channel and wider layers run faster here (BENCHMARKS.md,
/// "Winograd").
const MIN_CHANNELS: usize = 64;

/// Upper bound of one chunk's transformed tiles, in floats (8 MiB), as for the shifted path
/// (`conv_shifted.rs`): smaller blocks are reused from the heap instead of mapped afresh.
const CHUNK_FLOATS: usize = 2 << 20;

/// Whether the convolution runs here: a 3x3 kernel, stride 1, no dilation, and enough
/// channels.
pub(crate) fn applies(g: &Geometry) -> bool {
    fits(g) && g.c >= MIN_CHANNELS && g.o >= MIN_CHANNELS
}

/// 3x3 kernel, stride 1, no dilation, at least one output.
pub(crate) fn fits(g: &Geometry) -> bool {
    g.kh == 3
        && g.kw == 3
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.n > 0
        && g.oh > 0
        && g.ow > 0
}

/// Where an image's tiles lie: `th x tw` tiles of 2x2 outputs, read from a zero-padded plane of
/// `hp x wp` positions whose `(top, left)` is input position `(-pad_top, -pad_left)`.
#[derive(Debug, Clone, Copy)]
struct Tiles {
    th: usize,
    tw: usize,
    hp: usize,
    wp: usize,
}

impl Tiles {
    fn new(g: &Geometry) -> Self {
        let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
        Self {
            th,
            tw,
            hp: 2 * th + 2,
            wp: 2 * tw + 2,
        }
    }

    /// Tiles per image.
    fn count(&self) -> usize {
        self.th * self.tw
    }

    /// Positions of the (even-sized) output plane the tiles cover.
    fn outputs(&self) -> usize {
        4 * self.count()
    }
}

/// Images per chunk: as many as keep one chunk's transformed tiles (of the wider of the input
/// and output channels) within `CHUNK_FLOATS`, at least one.
fn chunk(g: &Geometry, tiles: &Tiles) -> usize {
    (CHUNK_FLOATS / (TAPS * tiles.count() * g.c.max(g.o))).clamp(1, g.n)
}

/// Eight channels at a time: the transforms below work on `[f32; W]` lanes, which the AVX2
/// copies keep in one register each; the last `c % 8` channels go one by one.
const W: usize = 8;

#[inline(always)]
fn load<const L: usize>(s: &[f32]) -> [f32; L] {
    let mut v = [0.0f32; L];
    v.copy_from_slice(&s[..L]);
    v
}

#[inline(always)]
fn store<const L: usize>(d: &mut [f32], v: [f32; L]) {
    d[..L].copy_from_slice(&v);
}

/// `store` into a buffer not yet written (the transformed tiles: see `uninit`).
#[inline(always)]
fn store_uninit<const L: usize>(d: &mut [MaybeUninit<f32>], v: [f32; L]) {
    d[..L].write_copy_of_slice(&v);
}

/// A buffer of `n` floats that is written before it is read, so not zeroed first: the
/// transformed tiles and products are 4x the size of a layer's input or output, and zeroing
/// them (glibc reuses freed memory, so calloc writes the zeros) was most of the `memset` that
/// took 5-9% of a ResNet-18 batch-32 training step and 7.5% of its evaluation (perf,
/// BENCHMARKS.md, "Winograd buffers left uninitialised").
fn uninit(n: usize) -> Box<[MaybeUninit<f32>]> {
    Box::new_uninit_slice(n)
}

#[inline(always)]
fn add<const L: usize>(mut a: [f32; L], b: [f32; L]) -> [f32; L] {
    for l in 0..L {
        a[l] += b[l];
    }
    a
}

#[inline(always)]
fn sub<const L: usize>(mut a: [f32; L], b: [f32; L]) -> [f32; L] {
    for l in 0..L {
        a[l] -= b[l];
    }
    a
}

/// Halves each lane (exact, but for subnormal values, which may lose their last bit).
#[inline(always)]
fn half<const L: usize>(mut a: [f32; L]) -> [f32; L] {
    for v in &mut a {
        *v *= 0.5;
    }
    a
}

#[inline(always)]
fn neg<const L: usize>(mut a: [f32; L]) -> [f32; L] {
    for v in &mut a {
        *v = -*v;
    }
    a
}

/// `[f(0), .., f(N - 1)]` (a plain loop: `std::array::from_fn` was left as a call in the AVX2
/// copies).
#[inline(always)]
fn gather<const L: usize, const N: usize>(f: impl Fn(usize) -> [f32; L]) -> [[f32; L]; N] {
    let mut out = [[0.0f32; L]; N];
    for (k, v) in out.iter_mut().enumerate() {
        *v = f(k);
    }
    out
}

/// `Bᵀ d` along one axis of four values.
#[inline(always)]
fn bt_axis<const L: usize>([d0, d1, d2, d3]: [[f32; L]; 4]) -> [[f32; L]; 4] {
    [sub(d0, d2), add(d1, d2), sub(d2, d1), sub(d1, d3)]
}

/// `B v` along one axis (the adjoint of `bt_axis`).
#[inline(always)]
fn b_axis<const L: usize>([v0, v1, v2, v3]: [[f32; L]; 4]) -> [[f32; L]; 4] {
    [v0, add(sub(v1, v2), v3), add(sub(v1, v0), v2), neg(v3)]
}

/// `Aᵀ m` along one axis: four values to two.
#[inline(always)]
fn at_axis<const L: usize>([m0, m1, m2, m3]: [[f32; L]; 4]) -> [[f32; L]; 2] {
    [add(add(m0, m1), m2), sub(sub(m1, m2), m3)]
}

/// `A y` along one axis (the adjoint of `at_axis`): two values to four.
#[inline(always)]
fn a_axis<const L: usize>([y0, y1]: [[f32; L]; 2]) -> [[f32; L]; 4] {
    [y0, add(y0, y1), sub(y0, y1), neg(y1)]
}

/// Applies `cols` down each column of a tile, then `rows` along each row of the result:
/// `R x C` values in, `R2 x C2` out, row-major.
#[inline(always)]
fn separable<const L: usize, const R: usize, const C: usize, const R2: usize, const C2: usize>(
    tile: [[f32; L]; 16],
    cols: impl Fn([[f32; L]; R]) -> [[f32; L]; R2],
    rows: impl Fn([[f32; L]; C]) -> [[f32; L]; C2],
) -> [[f32; L]; 16] {
    // down each column: rows 0..R of column j -> rows 0..R2
    let mut mid = [[0.0f32; L]; 16];
    for j in 0..C {
        let col = cols(gather(|i| tile[i * C + j]));
        for (i, v) in col.into_iter().enumerate() {
            mid[i * C + j] = v;
        }
    }
    let mut out = [[0.0f32; L]; 16];
    for i in 0..R2 {
        let row = rows(gather(|j| mid[i * C + j]));
        for (j, v) in row.into_iter().enumerate() {
            out[i * C2 + j] = v;
        }
    }
    out
}

/// `G g` along one axis of a filter (Lavin & Gray's `G`, eq. 8): three taps to four.
#[inline(always)]
fn g_axis<const L: usize>([g0, g1, g2]: [[f32; L]; 3]) -> [[f32; L]; 4] {
    let outer = add(g0, g2);
    [g0, half(add(outer, g1)), half(sub(outer, g1)), g2]
}

/// `Gᵀ d` along one axis (the adjoint of `g_axis`): four values to three.
#[inline(always)]
fn gt_axis<const L: usize>([d0, d1, d2, d3]: [[f32; L]; 4]) -> [[f32; L]; 3] {
    let mid = half(add(d1, d2));
    [add(d0, mid), half(sub(d1, d2)), add(mid, d3)]
}

/// Calls `lanes::<8>` for each full group of eight channels, then `lanes::<1>` for the rest.
macro_rules! by_lanes {
    ($c:expr, |$ch:ident, $l:ident| $body:block) => {{
        let c = $c;
        let mut $ch = 0;
        while $ch + W <= c {
            {
                const $l: usize = W;
                $body
            }
            $ch += W;
        }
        while $ch < c {
            {
                const $l: usize = 1;
                $body
            }
            $ch += 1;
        }
    }};
}

/// The transformed input tiles of one image: `p` is its zero-padded channels-last plane
/// (`hp x wp` positions of `c` channels), `v` receives `[tile][ξν][c]`.
#[inline(always)]
fn input_tiles_loop(p: &[f32], t: Tiles, c: usize, v: &mut [MaybeUninit<f32>]) {
    let row = t.wp * c;
    for ta in 0..t.th {
        for tb in 0..t.tw {
            let base = (2 * ta * t.wp + 2 * tb) * c;
            let out = &mut v[(ta * t.tw + tb) * TAPS * c..][..TAPS * c];
            by_lanes!(c, |ch, L| {
                let d: [[f32; L]; 16] =
                    gather(|k| load::<L>(&p[base + (k / 4) * row + (k % 4) * c + ch..]));
                let vt = separable::<L, 4, 4, 4, 4>(d, bt_axis, bt_axis);
                for (k, lanes) in vt.into_iter().enumerate() {
                    store_uninit(&mut out[k * c + ch..], lanes);
                }
            });
        }
    }
}

/// The output tiles of one image: `m` is `[ξν][tile][o]` with `tiles_per_tap` rows per `ξν`
/// and this image's tiles from row `first`; `y` receives `[2·th][2·tw][o]`.
#[inline(always)]
fn output_tiles_loop(
    m: &[f32],
    tiles_per_tap: usize,
    first: usize,
    t: Tiles,
    o: usize,
    y: &mut [f32],
) {
    let row = 2 * t.tw * o;
    for ta in 0..t.th {
        for tb in 0..t.tw {
            let tile = first + ta * t.tw + tb;
            let base = (2 * ta * 2 * t.tw + 2 * tb) * o;
            by_lanes!(o, |ch, L| {
                let mt: [[f32; L]; 16] =
                    gather(|k| load::<L>(&m[(k * tiles_per_tap + tile) * o + ch..]));
                let yt = separable::<L, 4, 4, 2, 2>(mt, at_axis, at_axis);
                for r in 0..2 {
                    for q in 0..2 {
                        store(&mut y[base + r * row + q * o + ch..], yt[r * 2 + q]);
                    }
                }
            });
        }
    }
}

/// `dM = A dY Aᵀ` of one image: `dy` is `[2·th][2·tw][o]` (zero past the outputs), `dm`
/// receives `[tile][ξν][o]`.
#[inline(always)]
fn output_grad_tiles_loop(dy: &[f32], t: Tiles, o: usize, dm: &mut [MaybeUninit<f32>]) {
    let row = 2 * t.tw * o;
    for ta in 0..t.th {
        for tb in 0..t.tw {
            let base = (2 * ta * 2 * t.tw + 2 * tb) * o;
            let out = &mut dm[(ta * t.tw + tb) * TAPS * o..][..TAPS * o];
            by_lanes!(o, |ch, L| {
                let mut y = [[0.0f32; L]; 16];
                for r in 0..2 {
                    for q in 0..2 {
                        y[r * 2 + q] = load::<L>(&dy[base + r * row + q * o + ch..]);
                    }
                }
                let mt = separable::<L, 2, 2, 4, 4>(y, a_axis, a_axis);
                for (k, lanes) in mt.into_iter().enumerate() {
                    store_uninit(&mut out[k * o + ch..], lanes);
                }
            });
        }
    }
}

/// `dd = B dV Bᵀ` of one image, added into its zeroed padded channels-last plane `p`
/// (`hp x wp` positions of `c` channels); `dv` is `[ξν][tile][c]` with `tiles_per_tap` rows
/// per `ξν` and this image's tiles from row `first`.
#[inline(always)]
fn input_grad_tiles_loop(
    dv: &[f32],
    tiles_per_tap: usize,
    first: usize,
    t: Tiles,
    c: usize,
    p: &mut [f32],
) {
    let row = t.wp * c;
    for ta in 0..t.th {
        for tb in 0..t.tw {
            let tile = first + ta * t.tw + tb;
            let base = (2 * ta * t.wp + 2 * tb) * c;
            by_lanes!(c, |ch, L| {
                let vt: [[f32; L]; 16] =
                    gather(|k| load::<L>(&dv[(k * tiles_per_tap + tile) * c + ch..]));
                let dd = separable::<L, 4, 4, 4, 4>(vt, b_axis, b_axis);
                for (k, lanes) in dd.into_iter().enumerate() {
                    let pos = base + (k / 4) * row + (k % 4) * c + ch;
                    let sum = add(load::<L>(&p[pos..]), lanes);
                    store(&mut p[pos..], sum);
                }
            });
        }
    }
}

/// The transformed filters of a block of input channels: `taps` is `[block][3][3][o]` (the
/// block's filters, output channels last), `u` receives `[block][ξν][o]`. Eight output
/// channels at a time, on contiguous lanes.
#[inline(always)]
fn filter_tiles_loop(taps: &[f32], o: usize, u: &mut [f32]) {
    for (taps, u) in taps.chunks_exact(9 * o).zip(u.chunks_exact_mut(TAPS * o)) {
        by_lanes!(o, |oi, L| {
            let mut f = [[0.0f32; L]; 16];
            for (k, lanes) in f.iter_mut().take(9).enumerate() {
                *lanes = load::<L>(&taps[k * o + oi..]);
            }
            let ut = separable::<L, 3, 3, 4, 4>(f, g_axis, g_axis);
            for (k, lanes) in ut.into_iter().enumerate() {
                store(&mut u[k * o + oi..], lanes);
            }
        });
    }
}

/// The filter gradients of output channel `oi`: `du` is `[ξν][o][c]`, `dw` receives
/// `[c][3][3]`. Eight input channels at a time, read as rows of `du`.
#[inline(always)]
fn filter_grad_tiles_loop(du: &[f32], c: usize, o: usize, oi: usize, dw: &mut [f32]) {
    by_lanes!(c, |ci, L| {
        let d: [[f32; L]; 16] = gather(|k| load::<L>(&du[(k * o + oi) * c + ci..]));
        let gt = separable::<L, 4, 4, 3, 3>(d, gt_axis, gt_axis);
        for j in 0..L {
            let taps = &mut dw[(ci + j) * 9..][..9];
            for (k, tap) in taps.iter_mut().enumerate() {
                *tap = gt[k][j];
            }
        }
    });
}

dispatch! {
    fn filter_tiles(taps: &[f32], o: usize, u: &mut [f32]) = filter_tiles_loop;
}

dispatch! {
    fn filter_grad_tiles(du: &[f32], c: usize, o: usize, oi: usize, dw: &mut [f32])
        = filter_grad_tiles_loop;
}

dispatch! {
    fn input_tiles(p: &[f32], t: Tiles, c: usize, v: &mut [MaybeUninit<f32>]) = input_tiles_loop;
}

dispatch! {
    fn output_tiles(
        m: &[f32],
        tiles_per_tap: usize,
        first: usize,
        t: Tiles,
        o: usize,
        y: &mut [f32],
    ) = output_tiles_loop;
}

dispatch! {
    fn output_grad_tiles(dy: &[f32], t: Tiles, o: usize, dm: &mut [MaybeUninit<f32>])
        = output_grad_tiles_loop;
}

dispatch! {
    fn input_grad_tiles(
        dv: &[f32],
        tiles_per_tap: usize,
        first: usize,
        t: Tiles,
        c: usize,
        p: &mut [f32],
    ) = input_grad_tiles_loop;
}

/// Input channels per task of `filter_transform`. Each task first transposes its block of
/// filters to output channels last, so that the transform reads contiguous lanes: gathering
/// the taps of eight filters `9·c` floats apart instead cost more than the transform (perf).
const FILTER_BLOCK: usize = 8;

/// `U_ξν[c, o] = (G g Gᵀ)[ξ, ν]` for filter `g = w[o, c]`, laid `[c][ξν][o]` so that each
/// block of input channels' rows is written by one task (the products read `U_ξν` with row
/// stride `16·o`).
fn filter_transform(g: &Geometry, w: &[f32]) -> Vec<f32> {
    let (c, o) = (g.c, g.o);
    let mut u = vec![0.0f32; c * TAPS * o];
    u.par_chunks_mut(FILTER_BLOCK * TAPS * o)
        .enumerate()
        .for_each_init(
            || vec![0.0f32; FILTER_BLOCK * 9 * o],
            |taps, (b, u)| {
                let block = u.len() / (TAPS * o);
                let taps = &mut taps[..block * 9 * o];
                // w[o][block][3][3] -> taps[block][3][3][o]
                transpose(&w[b * FILTER_BLOCK * 9..], c * 9, taps, o, [o, block * 9]);
                filter_tiles(taps, o, u);
            },
        );
    u
}

/// `dw[o, c] = Gᵀ dU[o, c] G`, the adjoint of `filter_transform` (`du` laid `[ξν][o][c]`, as
/// the weight-gradient products write it, so that each filter's task reads its 16 rows of `c`
/// values in order: read across `o` instead, 512-channel layers spent longer here than in
/// their products).
fn filter_gradient(g: &Geometry, du: &[f32]) -> Vec<f32> {
    let (c, o) = (g.c, g.o);
    let mut dw = vec![0.0f32; o * c * 9];
    dw.par_chunks_mut(c * 9)
        .enumerate()
        .for_each(|(oi, dw)| filter_grad_tiles(du, c, o, oi, dw));
    dw
}

/// Image `x` (`[c, h, w]`) channels-last into its padded plane `p`: input `(r, q)` at
/// `(r + pad_top, q + pad_left)`, what falls past the plane left out (no output reads it), and
/// zeros around it. Only the border is zeroed: the image overwrites the rest.
fn pad_image(g: &Geometry, t: Tiles, x: &[f32], p: &mut [f32]) {
    let [top, left] = g.pad;
    let rows = g.h.min(t.hp.saturating_sub(top));
    let cols = g.w.min(t.wp.saturating_sub(left));
    if rows == 0 || cols == 0 {
        p.fill(0.0);
        return;
    }
    let line = t.wp * g.c;
    p[..top * line].fill(0.0);
    p[(top + rows) * line..].fill(0.0);
    for line in p[top * line..(top + rows) * line].chunks_exact_mut(line) {
        line[..left * g.c].fill(0.0);
        line[(left + cols) * g.c..].fill(0.0);
    }
    for r in 0..rows {
        // [c, cols] with rows h·w apart -> [cols, c]
        transpose(
            &x[r * g.w..],
            g.h * g.w,
            &mut p[((r + top) * t.wp + left) * g.c..],
            g.c,
            [g.c, cols],
        );
    }
}

/// The inverse of `pad_image` for the input gradient: the real positions of `p` into `dx`
/// (`[c, h, w]`); inputs past the plane keep their zero gradient.
fn unpad_image(g: &Geometry, t: Tiles, p: &[f32], dx: &mut [f32]) {
    let [top, left] = g.pad;
    let cols = g.w.min(t.wp.saturating_sub(left));
    if cols == 0 {
        return;
    }
    for r in 0..g.h.min(t.hp.saturating_sub(top)) {
        transpose(
            &p[((r + top) * t.wp + left) * g.c..],
            g.c,
            &mut dx[r * g.w..],
            g.h * g.w,
            [cols, g.c],
        );
    }
}

/// `[o, oh, ow]` planes channels-last onto `[2·th][2·tw][o]` (zero past the outputs, which
/// only odd output sizes leave).
fn outputs_channels_last(g: &Geometry, t: Tiles, planes: &[f32], cl: &mut [f32]) {
    if g.oh % 2 == 1 || g.ow % 2 == 1 {
        cl.fill(0.0);
    }
    for r in 0..g.oh {
        transpose(
            &planes[r * g.ow..],
            g.oh * g.ow,
            &mut cl[r * 2 * t.tw * g.o..],
            g.o,
            [g.o, g.ow],
        );
    }
}

/// The inverse of `outputs_channels_last`: the real outputs of `[2·th][2·tw][o]` as planes.
fn outputs_planar(g: &Geometry, t: Tiles, cl: &[f32], planes: &mut [f32]) {
    for r in 0..g.oh {
        transpose(
            &cl[r * 2 * t.tw * g.o..],
            g.o,
            &mut planes[r * g.ow..],
            g.oh * g.ow,
            [g.ow, g.o],
        );
    }
}

/// `V = Bᵀ d B` of images `first..` of `x` (`[N, c, h, w]`), as many as `v` holds, laid
/// `[tile][ξν][c]`: one image per task, each through its own padded channels-last plane.
/// Every value of `v` is written.
fn input_transform(g: &Geometry, t: Tiles, x: &[f32], first: usize, v: &mut [MaybeUninit<f32>]) {
    let x_len = g.c * g.h * g.w;
    v.par_chunks_mut(t.count() * TAPS * g.c)
        .enumerate()
        .for_each_init(
            || vec![0.0f32; t.hp * t.wp * g.c],
            |p, (i, v)| {
                pad_image(g, t, &x[(first + i) * x_len..][..x_len], p);
                input_tiles(p, t, g.c, v);
            },
        );
}

/// The 16 products of a chunk, one task each: `dst_ξν[m, n] (+)= lhs_ξν · rhs_ξν`, each
/// destination `[m, n]` row-major and contiguous, one after the other; `lhs(ξν)` and `rhs(ξν)`
/// give each operand and its row and column strides. Without `accumulate`, `dst[..16·m·n]` is
/// overwritten, initialised or not; the returned slice is those values.
///
/// # Safety
/// With `accumulate`, `dst[..16·m·n]` is initialised (an earlier call wrote it).
#[allow(clippy::type_complexity)]
unsafe fn products<'a, 'd>(
    [m, n, k]: [usize; 3],
    dst: &'d mut [MaybeUninit<f32>],
    accumulate: bool,
    lhs: impl Fn(usize) -> (&'a [f32], [usize; 2]) + Sync,
    rhs: impl Fn(usize) -> (&'a [f32], [usize; 2]) + Sync,
) -> &'d [f32] {
    let dst = &mut dst[..TAPS * m * n];
    dst.par_chunks_mut(m * n)
        .enumerate()
        .for_each(|(tap, dst)| {
            let (l, ls) = lhs(tap);
            let (r, rs) = rhs(tap);
            let p = gemm::Parallelism::None;
            if accumulate {
                // SAFETY: initialised, by the caller's contract.
                let dst = unsafe { dst.assume_init_mut() };
                gemm_with(p, [m, n, k], dst, [n, 1], true, l, ls, r, rs);
            } else {
                gemm_uninit(p, [m, n, k], dst, [n, 1], l, ls, r, rs);
            }
        });
    // SAFETY: every task wrote its whole `[m, n]` destination (or added to it).
    unsafe { dst.assume_init_ref() }
}

/// Forward convolution without bias: `y[N, O, H_out, W_out]`.
pub(crate) fn forward(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    forward_chunked(g, x, w, chunk(g, &Tiles::new(g)))
}

pub(crate) fn forward_chunked(g: &Geometry, x: &[f32], w: &[f32], step: usize) -> Vec<f32> {
    let t = Tiles::new(g);
    let (c, o, per) = (g.c, g.o, t.count());
    let y_len = o * g.oh * g.ow;
    let u = filter_transform(g, w);
    let mut y = vec![0.0f32; g.n * y_len];
    let mut v = uninit(step * per * TAPS * c);
    let mut m = uninit(TAPS * step * per * o);
    for first in (0..g.n).step_by(step) {
        let b = step.min(g.n - first);
        let rows = b * per;
        let v = &mut v[..rows * TAPS * c];
        input_transform(g, t, x, first, v);
        // SAFETY: `input_transform` wrote every value.
        let (v, u) = (unsafe { v.assume_init_ref() }, &u);
        // M_ξν[tile, o] = V_ξν[tile, c] · U_ξν[c, o]
        // SAFETY: not accumulating.
        let m = unsafe {
            products(
                [rows, o, c],
                &mut m,
                false,
                |tap| (&v[tap * c..], [TAPS * c, 1]),
                |tap| (&u[tap * o..], [TAPS * o, 1]),
            )
        };
        y[first * y_len..(first + b) * y_len]
            .par_chunks_mut(y_len)
            .enumerate()
            .for_each_init(
                || vec![0.0f32; t.outputs() * o],
                |cl, (i, y)| {
                    output_tiles(m, rows, i * per, t, o, cl);
                    outputs_planar(g, t, cl, y);
                },
            );
    }
    y
}

/// Input and weight gradients, each only when asked for.
pub(crate) fn backward(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want: [bool; 2],
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    backward_chunked(g, x, w, dy, want, chunk(g, &Tiles::new(g)))
}

pub(crate) fn backward_chunked(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [want_dx, want_dw]: [bool; 2],
    step: usize,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let t = Tiles::new(g);
    let (c, o, per) = (g.c, g.o, t.count());
    let (x_len, y_len) = (c * g.h * g.w, o * g.oh * g.ow);
    let u = want_dx.then(|| filter_transform(g, w));
    let mut dx = want_dx.then(|| vec![0.0f32; g.n * x_len]);
    // dU_ξν[o, c], summed over the chunks (the first writes it: `g.n > 0`)
    let mut du = want_dw.then(|| uninit(TAPS * o * c));
    let mut dm = uninit(step * per * TAPS * o);
    let mut v = want_dw.then(|| uninit(step * per * TAPS * c));
    let mut dv = want_dx.then(|| uninit(TAPS * step * per * c));
    for (index, first) in (0..g.n).step_by(step).enumerate() {
        let b = step.min(g.n - first);
        let rows = b * per;
        let dm = &mut dm[..rows * TAPS * o];
        // dM: [tile][ξν][o], one image per task
        dm.par_chunks_mut(per * TAPS * o).enumerate().for_each_init(
            || vec![0.0f32; t.outputs() * o],
            |cl, (i, dm)| {
                outputs_channels_last(g, t, &dy[(first + i) * y_len..][..y_len], cl);
                output_grad_tiles(cl, t, o, dm);
            },
        );
        // SAFETY: `output_grad_tiles` wrote every value (one image's tiles per task).
        let dm = unsafe { dm.assume_init_ref() };
        if let (Some(du), Some(v)) = (du.as_mut(), v.as_mut()) {
            let v = &mut v[..rows * TAPS * c];
            input_transform(g, t, x, first, v);
            // SAFETY: `input_transform` wrote every value.
            let v = unsafe { v.assume_init_ref() };
            // dU_ξν[o, c] += dM_ξνᵀ[o, tile] · V_ξν[tile, c]
            // SAFETY: the first chunk (index 0) writes all of `du`, the later ones add to it.
            unsafe {
                products(
                    [o, c, rows],
                    du,
                    index > 0,
                    |tap| (&dm[tap * o..], [1, TAPS * o]),
                    |tap| (&v[tap * c..], [TAPS * c, 1]),
                )
            };
        }
        if let (Some(dx), Some(dv), Some(u)) = (dx.as_mut(), dv.as_mut(), u.as_ref()) {
            // dV_ξν[tile, c] = dM_ξν[tile, o] · U_ξνᵀ[o, c]
            // SAFETY: not accumulating.
            let dv = unsafe {
                products(
                    [rows, c, o],
                    dv,
                    false,
                    |tap| (&dm[tap * o..], [TAPS * o, 1]),
                    |tap| (&u[tap * o..], [1, TAPS * o]),
                )
            };
            dx[first * x_len..(first + b) * x_len]
                .par_chunks_mut(x_len)
                .enumerate()
                .for_each_init(
                    || vec![0.0f32; t.hp * t.wp * c],
                    |p, (i, dx)| {
                        p.fill(0.0);
                        input_grad_tiles(dv, rows, i * per, t, c, p);
                        unpad_image(g, t, p, dx);
                    },
                );
        }
    }
    // SAFETY: the first chunk wrote all of `du` (`fits` requires `g.n > 0`).
    let dw = du.map(|du| filter_gradient(g, unsafe { du.assume_init_ref() }));
    (dx, dw)
}
