//! 3x3 stride-1 convolutions by Winograd's minimal filtering algorithms F(2x2, 3x3) and
//! F(4x4, 3x3), forward and backward.
//!
//! Why: on flex most of a CNN training step is matrix products (two thirds of a ResNet-18 step
//! in gemm's micro-kernel, BENCHMARKS.md), and those already run near the machine's peak. The
//! one way left to make them faster is fewer of them. F(2x2, 3x3) computes a 2x2 block of
//! outputs from a 4x4 block of inputs with 16 multiplications per (input channel, output
//! channel) pair instead of 36: 2.25x fewer products for each of the forward pass, the input
//! gradient and the weight gradient. F(4x4, 3x3) computes a 4x4 block from a 6x6 block with 36
//! instead of 144: 4x fewer. cuDNN and oneDNN offer the same algorithms for these layers.
//!
//! How (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016, eq. 7-8
//! and section 4): with the `T x T` input tile `d` (T = m + 2 for m x m outputs), the 3x3
//! filter `g` and the matrices of `Transform` (`F2`, `F4`: `Bᵀ`, `G`, `Aᵀ`), the output tile
//! is `Y = Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A`. For each of the `T²` positions `ξν` of the
//! transformed tiles, the sum over input channels is one matrix product:
//! `M_ξν[tile, o] = V_ξν[tile, c] · U_ξν[c, o]`, with `V = Bᵀ d B` and `U = G g Gᵀ`. The
//! backward pass differentiates those three steps:
//!
//! - `dM = A dY Aᵀ` (the output transform's adjoint),
//! - weight gradient: `dU_ξν = V_ξνᵀ · dM_ξν`, then `dg = Gᵀ dU G`,
//! - input gradient: `dV_ξν = dM_ξν · U_ξνᵀ`, then `dd = B dV Bᵀ`, added into the input
//!   gradient tile by tile (neighbouring tiles overlap by two rows or columns).
//!
//! Tiles are laid channels-last, so each transform is the same few additions (and, for F4,
//! multiplications by small constants) on vectors of channels. The transforms run per image on
//! one thread, the `T²` products of a chunk of images on all threads (one product per task).
//!
//! Results are those of a direct convolution up to float rounding: the transforms add and
//! subtract inputs before the products, which loses a little more precision than im2col, and
//! F(4x4, 3x3), whose matrices hold 4, 5, 8 and 1/6, more than F(2x2, 3x3) (tests against a
//! direct convolution in f64 and against im2col, conv.rs).

use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::conv::{Geometry, gemm_uninit, gemm_with};
use crate::simd::{dispatch, transpose, transpose_uninit};
use crate::uninit;

/// The fewest input and output channels for which this path is used: with fewer, the
/// transforms (passes over 4x the input and the output) outweigh the saved products. Measured
/// on WRN-40-2 at batch 32: with its 32-channel layers here it evaluated at 65-100 images/s,
/// with them on the shifted path (and its wider layers here) at 110-134, and trained no faster
/// either way; its and ResNet-18's 64-channel and wider layers run faster here (BENCHMARKS.md,
/// "Winograd"). Measured again with F(4x4, 3x3) tiles, whose transforms cost less per output:
/// with the threshold at 32 or 16 WRN-40-2 evaluated at 138-144 images/s, at 64 at 153-180,
/// and trained within noise (BENCHMARKS.md, "Closure-free Winograd tile loops").
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

/// The output tile's side for this convolution: 4 (F(4x4, 3x3)) where the output plane is at
/// least `MIN_SIDE4` on each side, 2 (F(2x2, 3x3)) on smaller planes, where 4x4 tiles would
/// leave too few tiles per product (a 4x4 plane: one per image) or compute too many outputs
/// past the plane's edge.
pub(crate) fn tile_side(g: &Geometry) -> usize {
    if g.oh.min(g.ow) >= MIN_SIDE4 { 4 } else { 2 }
}

/// The smallest output plane side that takes F(4x4, 3x3). 8x8 and larger planes ran 1.2-1.5x
/// faster with it (BENCHMARKS.md, "F(4x4, 3x3) Winograd tiles"). On 4x4 planes (ResNet-18's
/// 512-channel layers) 4x4 tiles were within noise of 2x2 tiles in all four ResNet-18 rows
/// (BENCHMARKS.md, "Closure-free Winograd tile loops"), so those keep the more precise ones.
const MIN_SIDE4: usize = 8;

/// Where an image's tiles lie: `th x tw` tiles of `m x m` outputs (`m` = 2 or 4), each read as
/// a `(m + 2) x (m + 2)` block of a zero-padded plane of `hp x wp` positions whose `(top,
/// left)` is input position `(-pad_top, -pad_left)`.
#[derive(Debug, Clone, Copy)]
struct Tiles {
    m: usize,
    th: usize,
    tw: usize,
    hp: usize,
    wp: usize,
}

impl Tiles {
    fn new(g: &Geometry, m: usize) -> Self {
        assert!(m == 2 || m == 4, "Winograd tiles of 2x2 or 4x4 outputs");
        let (th, tw) = (g.oh.div_ceil(m), g.ow.div_ceil(m));
        Self {
            m,
            th,
            tw,
            hp: m * th + 2,
            wp: m * tw + 2,
        }
    }

    /// Tiles per image.
    fn count(&self) -> usize {
        self.th * self.tw
    }

    /// Positions of a transformed tile: `(m + 2)²`.
    fn taps(&self) -> usize {
        (self.m + 2) * (self.m + 2)
    }

    /// Positions of the output plane the tiles cover (a multiple of `m` on each side).
    fn outputs(&self) -> usize {
        self.m * self.m * self.count()
    }
}

/// Images per chunk: as many as keep one chunk's transformed tiles (of the wider of the input
/// and output channels) within `CHUNK_FLOATS`, at least one.
fn chunk(g: &Geometry, tiles: &Tiles) -> usize {
    (CHUNK_FLOATS / (tiles.taps() * tiles.count() * g.c.max(g.o))).clamp(1, g.n)
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

/// A float slot lanes are stored into: `f32`, or `MaybeUninit<f32>` in a buffer not yet
/// written (the transformed tiles: see `crate::uninit`).
trait Slot: Sized {
    fn store<const L: usize>(d: &mut [Self], v: [f32; L]);
}

impl Slot for f32 {
    #[inline(always)]
    fn store<const L: usize>(d: &mut [f32], v: [f32; L]) {
        d[..L].copy_from_slice(&v);
    }
}

impl Slot for MaybeUninit<f32> {
    #[inline(always)]
    fn store<const L: usize>(d: &mut [MaybeUninit<f32>], v: [f32; L]) {
        d[..L].write_copy_of_slice(&v);
    }
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

/// Multiplies each lane by `k`.
#[inline(always)]
fn scale<const L: usize>(mut a: [f32; L], k: f32) -> [f32; L] {
    for v in &mut a {
        *v *= k;
    }
    a
}

/// The matrices of one Winograd algorithm F(m x m, 3x3), each applied along one axis of a tile
/// of `[f32; L]` lanes (`T = m + 2`): `bt` is `Bᵀ` (input transform), `at` is `Aᵀ` (output
/// transform), `g` is `G` (filter transform), and `b`, `a`, `gt` their adjoints, which the
/// backward pass applies. Plain multiplications and additions, no fused multiply-add, so the
/// AVX2 and baseline copies give the same bits.
trait Transform<const M: usize, const T: usize> {
    fn bt<const L: usize>(d: [[f32; L]; T]) -> [[f32; L]; T];
    fn b<const L: usize>(v: [[f32; L]; T]) -> [[f32; L]; T];
    fn at<const L: usize>(m: [[f32; L]; T]) -> [[f32; L]; M];
    fn a<const L: usize>(y: [[f32; L]; M]) -> [[f32; L]; T];
    fn g<const L: usize>(g: [[f32; L]; 3]) -> [[f32; L]; T];
    fn gt<const L: usize>(d: [[f32; L]; T]) -> [[f32; L]; 3];
}

/// F(2x2, 3x3) (Lavin & Gray, eq. 7-8):
///
/// ```text
///       | 1  0 -1  0 |        | 1    0    0  |        | 1  1  1  0 |
/// Bᵀ =  | 0  1  1  0 |   G =  | 1/2  1/2  1/2|   Aᵀ = | 0  1 -1 -1 |
///       | 0 -1  1  0 |        | 1/2 -1/2  1/2|
///       | 0  1  0 -1 |        | 0    0    1  |
/// ```
struct F2;

impl Transform<2, 4> for F2 {
    #[inline(always)]
    fn bt<const L: usize>([d0, d1, d2, d3]: [[f32; L]; 4]) -> [[f32; L]; 4] {
        [sub(d0, d2), add(d1, d2), sub(d2, d1), sub(d1, d3)]
    }

    #[inline(always)]
    fn b<const L: usize>([v0, v1, v2, v3]: [[f32; L]; 4]) -> [[f32; L]; 4] {
        [v0, add(sub(v1, v2), v3), add(sub(v1, v0), v2), neg(v3)]
    }

    #[inline(always)]
    fn at<const L: usize>([m0, m1, m2, m3]: [[f32; L]; 4]) -> [[f32; L]; 2] {
        [add(add(m0, m1), m2), sub(sub(m1, m2), m3)]
    }

    #[inline(always)]
    fn a<const L: usize>([y0, y1]: [[f32; L]; 2]) -> [[f32; L]; 4] {
        [y0, add(y0, y1), sub(y0, y1), neg(y1)]
    }

    #[inline(always)]
    fn g<const L: usize>([g0, g1, g2]: [[f32; L]; 3]) -> [[f32; L]; 4] {
        let outer = add(g0, g2);
        [g0, half(add(outer, g1)), half(sub(outer, g1)), g2]
    }

    #[inline(always)]
    fn gt<const L: usize>([d0, d1, d2, d3]: [[f32; L]; 4]) -> [[f32; L]; 3] {
        let mid = half(add(d1, d2));
        [add(d0, mid), half(sub(d1, d2)), add(mid, d3)]
    }
}

/// F(4x4, 3x3) with the interpolation points 0, ±1, ±2 (Lavin & Gray, section 4; the matrices
/// of oneDNN's and NNPACK's F(4x4, 3x3)):
///
/// ```text
///       | 4  0 -5  0  1  0 |        |  1/4    0     0   |
///       | 0 -4 -4  1  1  0 |        | -1/6  -1/6  -1/6  |        | 1  1  1  1  1  0 |
/// Bᵀ =  | 0  4 -4 -1  1  0 |   G =  | -1/6   1/6  -1/6  |   Aᵀ = | 0  1 -1  2 -2  0 |
///       | 0 -2 -1  2  1  0 |        |  1/24  1/12  1/6  |        | 0  1  1  4  4  0 |
///       | 0  2 -1 -2  1  0 |        |  1/24 -1/12  1/6  |        | 0  1 -1  8 -8  1 |
///       | 0  4  0 -5  0  1 |        |  0     0     1    |
/// ```
struct F4;

impl Transform<4, 6> for F4 {
    #[inline(always)]
    fn bt<const L: usize>([d0, d1, d2, d3, d4, d5]: [[f32; L]; 6]) -> [[f32; L]; 6] {
        let (s12, d21, s34, d43) = (add(d1, d2), sub(d2, d1), add(d3, d4), sub(d4, d3));
        let (d42, d31) = (sub(d4, d2), scale(sub(d3, d1), 2.0));
        [
            add(sub(scale(d0, 4.0), scale(d2, 5.0)), d4),
            sub(s34, scale(s12, 4.0)),
            sub(d43, scale(d21, 4.0)),
            add(d42, d31),
            sub(d42, d31),
            add(sub(scale(d1, 4.0), scale(d3, 5.0)), d5),
        ]
    }

    #[inline(always)]
    fn b<const L: usize>([v0, v1, v2, v3, v4, v5]: [[f32; L]; 6]) -> [[f32; L]; 6] {
        [
            scale(v0, 4.0),
            add(
                add(scale(sub(v2, v1), 4.0), scale(sub(v4, v3), 2.0)),
                scale(v5, 4.0),
            ),
            sub(sub(scale(v0, -5.0), scale(add(v1, v2), 4.0)), add(v3, v4)),
            sub(add(sub(v1, v2), scale(sub(v3, v4), 2.0)), scale(v5, 5.0)),
            add(add(add(v0, v1), add(v2, v3)), v4),
            v5,
        ]
    }

    #[inline(always)]
    fn at<const L: usize>([m0, m1, m2, m3, m4, m5]: [[f32; L]; 6]) -> [[f32; L]; 4] {
        let (s12, d12, s34, d34) = (add(m1, m2), sub(m1, m2), add(m3, m4), sub(m3, m4));
        [
            add(add(m0, s12), s34),
            add(d12, scale(d34, 2.0)),
            add(s12, scale(s34, 4.0)),
            add(add(d12, scale(d34, 8.0)), m5),
        ]
    }

    #[inline(always)]
    fn a<const L: usize>([y0, y1, y2, y3]: [[f32; L]; 4]) -> [[f32; L]; 6] {
        let (e, o) = (add(y0, y2), add(y1, y3));
        let (e2, o2) = (add(y0, scale(y2, 4.0)), add(scale(y1, 2.0), scale(y3, 8.0)));
        [y0, add(e, o), sub(e, o), add(e2, o2), sub(e2, o2), y3]
    }

    #[inline(always)]
    fn g<const L: usize>([g0, g1, g2]: [[f32; L]; 3]) -> [[f32; L]; 6] {
        let outer = add(g0, g2);
        let (p, q) = (
            add(scale(g0, 1.0 / 24.0), scale(g2, 1.0 / 6.0)),
            scale(g1, 1.0 / 12.0),
        );
        [
            scale(g0, 0.25),
            scale(add(outer, g1), -1.0 / 6.0),
            scale(sub(outer, g1), -1.0 / 6.0),
            add(p, q),
            sub(p, q),
            g2,
        ]
    }

    #[inline(always)]
    fn gt<const L: usize>([d0, d1, d2, d3, d4, d5]: [[f32; L]; 6]) -> [[f32; L]; 3] {
        let (s12, s34) = (scale(add(d1, d2), 1.0 / 6.0), add(d3, d4));
        [
            add(sub(scale(d0, 0.25), s12), scale(s34, 1.0 / 24.0)),
            add(
                scale(sub(d2, d1), 1.0 / 6.0),
                scale(sub(d3, d4), 1.0 / 12.0),
            ),
            add(sub(scale(s34, 1.0 / 6.0), s12), d5),
        ]
    }
}

/// Applies `cols` down each column of an `R x C` tile, then `rows` along each row of the
/// result: `R2 x C2` values out.
#[inline(always)]
fn separable<const L: usize, const R: usize, const C: usize, const R2: usize, const C2: usize>(
    tile: [[[f32; L]; C]; R],
    cols: impl Fn([[f32; L]; R]) -> [[f32; L]; R2],
    rows: impl Fn([[f32; L]; C]) -> [[f32; L]; C2],
) -> [[[f32; L]; C2]; R2] {
    let mut mid = [[[0.0f32; L]; C]; R2];
    for j in 0..C {
        let mut col = [[0.0f32; L]; R];
        for (v, row) in col.iter_mut().zip(&tile) {
            *v = row[j];
        }
        let col = cols(col);
        for (i, v) in col.into_iter().enumerate() {
            mid[i][j] = v;
        }
    }
    let mut out = [[[0.0f32; L]; C2]; R2];
    for (o, m) in out.iter_mut().zip(mid) {
        *o = rows(m);
    }
    out
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

// The block helpers below take an offset and row and column strides rather than an index
// closure: closures in the tile loops were left as calls, compiled without AVX2 (perf: 6-7% of
// a WRN-40-2 evaluation step in `{{closure}}` symbols of these loops, SSE copies through the
// stack).

/// An `R x C` block of `[f32; L]` lanes, lanes `(i, j)` read from `src[at + i·rs + j·cs..]`.
#[inline(always)]
fn load_block<const L: usize, const R: usize, const C: usize>(
    src: &[f32],
    at: usize,
    [rs, cs]: [usize; 2],
) -> [[[f32; L]; C]; R] {
    let mut out = [[[0.0f32; L]; C]; R];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, lanes) in row.iter_mut().enumerate() {
            *lanes = load::<L>(&src[at + i * rs + j * cs..]);
        }
    }
    out
}

/// Stores an `R x C` block of lanes, lanes `(i, j)` at `dst[at + i·rs + j·cs..]`.
#[inline(always)]
fn store_block<S: Slot, const L: usize, const R: usize, const C: usize>(
    dst: &mut [S],
    block: [[[f32; L]; C]; R],
    at: usize,
    [rs, cs]: [usize; 2],
) {
    for (i, row) in block.into_iter().enumerate() {
        for (j, lanes) in row.into_iter().enumerate() {
            S::store(&mut dst[at + i * rs + j * cs..], lanes);
        }
    }
}

/// The transformed input tiles of one image: `p` is its zero-padded channels-last plane
/// (`hp x wp` positions of `c` channels), `v` receives `[tile][ξν][c]`.
#[inline(always)]
fn input_tiles_loop<X: Transform<M, T>, const M: usize, const T: usize>(
    p: &[f32],
    t: Tiles,
    c: usize,
    v: &mut [MaybeUninit<f32>],
) {
    let row = t.wp * c;
    for ta in 0..t.th {
        for tb in 0..t.tw {
            let base = (M * ta * t.wp + M * tb) * c;
            let out = &mut v[(ta * t.tw + tb) * T * T * c..][..T * T * c];
            by_lanes!(c, |ch, L| {
                let d = load_block::<L, T, T>(p, base + ch, [row, c]);
                store_block(out, separable(d, X::bt, X::bt), ch, [T * c, c]);
            });
        }
    }
}

/// The output tiles of one image: `m` is `[ξν][tile][o]` with `tiles_per_tap` rows per `ξν`
/// and this image's tiles from row `first`; `y` receives `[m·th][m·tw][o]`.
#[inline(always)]
fn output_tiles_loop<X: Transform<M, T>, const M: usize, const T: usize>(
    m: &[f32],
    tiles_per_tap: usize,
    first: usize,
    t: Tiles,
    o: usize,
    y: &mut [f32],
) {
    let (row, per_tap) = (M * t.tw * o, tiles_per_tap * o);
    for ta in 0..t.th {
        for tb in 0..t.tw {
            let tile = first + ta * t.tw + tb;
            let base = (M * ta * M * t.tw + M * tb) * o;
            by_lanes!(o, |ch, L| {
                let mt = load_block::<L, T, T>(m, tile * o + ch, [T * per_tap, per_tap]);
                store_block(y, separable(mt, X::at, X::at), base + ch, [row, o]);
            });
        }
    }
}

/// `dM = A dY Aᵀ` of one image: `dy` is `[m·th][m·tw][o]` (zero past the outputs), `dm`
/// receives `[tile][ξν][o]`.
#[inline(always)]
fn output_grad_tiles_loop<X: Transform<M, T>, const M: usize, const T: usize>(
    dy: &[f32],
    t: Tiles,
    o: usize,
    dm: &mut [MaybeUninit<f32>],
) {
    let row = M * t.tw * o;
    for ta in 0..t.th {
        for tb in 0..t.tw {
            let base = (M * ta * M * t.tw + M * tb) * o;
            let out = &mut dm[(ta * t.tw + tb) * T * T * o..][..T * T * o];
            by_lanes!(o, |ch, L| {
                let y = load_block::<L, M, M>(dy, base + ch, [row, o]);
                store_block(out, separable(y, X::a, X::a), ch, [T * o, o]);
            });
        }
    }
}

/// `dd = B dV Bᵀ` of one image, added into its zeroed padded channels-last plane `p`
/// (`hp x wp` positions of `c` channels); `dv` is `[ξν][tile][c]` with `tiles_per_tap` rows
/// per `ξν` and this image's tiles from row `first`.
#[inline(always)]
fn input_grad_tiles_loop<X: Transform<M, T>, const M: usize, const T: usize>(
    dv: &[f32],
    tiles_per_tap: usize,
    first: usize,
    t: Tiles,
    c: usize,
    p: &mut [f32],
) {
    let (row, per_tap) = (t.wp * c, tiles_per_tap * c);
    for ta in 0..t.th {
        for tb in 0..t.tw {
            let tile = first + ta * t.tw + tb;
            let base = (M * ta * t.wp + M * tb) * c;
            by_lanes!(c, |ch, L| {
                let vt = load_block::<L, T, T>(dv, tile * c + ch, [T * per_tap, per_tap]);
                let mut dd = separable(vt, X::b, X::b);
                let old = load_block::<L, T, T>(p, base + ch, [row, c]);
                for (dd, old) in dd.iter_mut().zip(old) {
                    for (dd, old) in dd.iter_mut().zip(old) {
                        *dd = add(*dd, old);
                    }
                }
                store_block(p, dd, base + ch, [row, c]);
            });
        }
    }
}

/// The transformed filters of a block of input channels: `taps` is `[block][3][3][o]` (the
/// block's filters, output channels last), `u` receives `[block][ξν][o]`. Eight output
/// channels at a time, on contiguous lanes.
#[inline(always)]
fn filter_tiles_loop<X: Transform<M, T>, const M: usize, const T: usize>(
    taps: &[f32],
    o: usize,
    u: &mut [MaybeUninit<f32>],
) {
    for (taps, u) in taps.chunks_exact(9 * o).zip(u.chunks_exact_mut(T * T * o)) {
        by_lanes!(o, |oi, L| {
            let f = load_block::<L, 3, 3>(taps, oi, [3 * o, o]);
            store_block(u, separable(f, X::g, X::g), oi, [T * o, o]);
        });
    }
}

/// The filter gradients of output channel `oi`: `du` is `[ξν][o][c]`, `dw` receives
/// `[c][3][3]`. Eight input channels at a time, read as rows of `du`.
#[inline(always)]
fn filter_grad_tiles_loop<X: Transform<M, T>, const M: usize, const T: usize>(
    du: &[f32],
    c: usize,
    o: usize,
    oi: usize,
    dw: &mut [f32],
) {
    by_lanes!(c, |ci, L| {
        let d = load_block::<L, T, T>(du, oi * c + ci, [T * o * c, o * c]);
        let gt = separable(d, X::gt, X::gt);
        for l in 0..L {
            let taps = &mut dw[(ci + l) * 9..][..9];
            for (k, tap) in taps.iter_mut().enumerate() {
                *tap = gt[k / 3][k % 3][l];
            }
        }
    });
}

/// One dispatched copy (AVX2, or the baseline) of each loop per algorithm, and a function that
/// picks the algorithm from the tiles' side: `t.m` of its `Tiles` argument `t`, or a leading
/// `side` argument for the filter loops, which take no `Tiles`.
macro_rules! per_side {
    (@copies $two:ident, $four:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        dispatch! {
            fn $two($($arg: $ty),*) = $body::<F2, 2, 4>;
        }
        dispatch! {
            fn $four($($arg: $ty),*) = $body::<F4, 4, 6>;
        }
    };
    ($name:ident, $two:ident, $four:ident, $body:ident, tiles $t:ident,
        ($($arg:ident: $ty:ty),* $(,)?)) => {
        per_side!(@copies $two, $four, $body, ($($arg: $ty),*));
        fn $name($($arg: $ty),*) {
            if $t.m == 4 { $four($($arg),*) } else { $two($($arg),*) }
        }
    };
    ($name:ident, $two:ident, $four:ident, $body:ident, side, ($($arg:ident: $ty:ty),* $(,)?)) => {
        per_side!(@copies $two, $four, $body, ($($arg: $ty),*));
        fn $name(side: usize, $($arg: $ty),*) {
            if side == 4 { $four($($arg),*) } else { $two($($arg),*) }
        }
    };
}

per_side!(input_tiles, input_tiles2, input_tiles4, input_tiles_loop, tiles t,
    (p: &[f32], t: Tiles, c: usize, v: &mut [MaybeUninit<f32>]));
per_side!(output_tiles, output_tiles2, output_tiles4, output_tiles_loop, tiles t,
    (m: &[f32], tiles_per_tap: usize, first: usize, t: Tiles, o: usize, y: &mut [f32]));
per_side!(output_grad_tiles, output_grad_tiles2, output_grad_tiles4, output_grad_tiles_loop, tiles t,
    (dy: &[f32], t: Tiles, o: usize, dm: &mut [MaybeUninit<f32>]));
per_side!(input_grad_tiles, input_grad_tiles2, input_grad_tiles4, input_grad_tiles_loop, tiles t,
    (dv: &[f32], tiles_per_tap: usize, first: usize, t: Tiles, c: usize, p: &mut [f32]));
per_side!(filter_tiles, filter_tiles2, filter_tiles4, filter_tiles_loop, side,
    (taps: &[f32], o: usize, u: &mut [MaybeUninit<f32>]));
per_side!(filter_grad_tiles, filter_grad_tiles2, filter_grad_tiles4, filter_grad_tiles_loop, side,
    (du: &[f32], c: usize, o: usize, oi: usize, dw: &mut [f32]));

/// Input channels per task of `filter_transform`. Each task first transposes its block of
/// filters to output channels last, so that the transform reads contiguous lanes: gathering
/// the taps of eight filters `9·c` floats apart instead cost more than the transform (perf).
const FILTER_BLOCK: usize = 8;

/// `U_ξν[c, o] = (G g Gᵀ)[ξ, ν]` for filter `g = w[o, c]`, laid `[c][ξν][o]` so that each
/// block of input channels' rows is written by one task (the products read `U_ξν` with row
/// stride `T²·o`).
fn filter_transform(g: &Geometry, t: Tiles, w: &[f32]) -> Vec<f32> {
    let (c, o, taps) = (g.c, g.o, t.taps());
    // SAFETY: the blocks cover `u`, and `filter_tiles` writes all `T²·o` values of each of
    // its block's input channels.
    unsafe {
        crate::written(c * taps * o, |u| {
            u.par_chunks_mut(FILTER_BLOCK * taps * o)
                .enumerate()
                .for_each_init(
                    || vec![0.0f32; FILTER_BLOCK * 9 * o],
                    |filters, (b, u)| {
                        let block = u.len() / (taps * o);
                        let filters = &mut filters[..block * 9 * o];
                        // w[o][block][3][3] -> filters[block][3][3][o]
                        transpose(
                            &w[b * FILTER_BLOCK * 9..],
                            c * 9,
                            filters,
                            o,
                            [o, block * 9],
                        );
                        filter_tiles(t.m, filters, o, u);
                    },
                )
        })
    }
}

/// `dw[o, c] = Gᵀ dU[o, c] G`, the adjoint of `filter_transform` (`du` laid `[ξν][o][c]`, as
/// the weight-gradient products write it, so that each filter's task reads its `T²` rows of `c`
/// values in order: read across `o` instead, 512-channel layers spent longer here than in
/// their products).
fn filter_gradient(g: &Geometry, t: Tiles, du: &[f32]) -> Vec<f32> {
    let (c, o) = (g.c, g.o);
    let mut dw = vec![0.0f32; o * c * 9];
    dw.par_chunks_mut(c * 9)
        .enumerate()
        .for_each(|(oi, dw)| filter_grad_tiles(t.m, du, c, o, oi, dw));
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

/// `[o, oh, ow]` planes channels-last onto `[m·th][m·tw][o]` (zero past the outputs, which
/// only output sizes that are not multiples of `m` leave).
fn outputs_channels_last(g: &Geometry, t: Tiles, planes: &[f32], cl: &mut [f32]) {
    if !g.oh.is_multiple_of(t.m) || !g.ow.is_multiple_of(t.m) {
        cl.fill(0.0);
    }
    for r in 0..g.oh {
        transpose(
            &planes[r * g.ow..],
            g.oh * g.ow,
            &mut cl[r * t.m * t.tw * g.o..],
            g.o,
            [g.o, g.ow],
        );
    }
}

/// The inverse of `outputs_channels_last`: the real outputs of `[m·th][m·tw][o]` as planes,
/// every value of `planes` written.
fn outputs_planar(g: &Geometry, t: Tiles, cl: &[f32], planes: &mut [MaybeUninit<f32>]) {
    for r in 0..g.oh {
        transpose_uninit(
            &cl[r * t.m * t.tw * g.o..],
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
    v.par_chunks_mut(t.count() * t.taps() * g.c)
        .enumerate()
        .for_each_init(
            || vec![0.0f32; t.hp * t.wp * g.c],
            |p, (i, v)| {
                pad_image(g, t, &x[(first + i) * x_len..][..x_len], p);
                input_tiles(p, t, g.c, v);
            },
        );
}

/// The `taps` products of a chunk, one task each: `dst_ξν[m, n] (+)= lhs_ξν · rhs_ξν`, each
/// destination `[m, n]` row-major and contiguous, one after the other; `lhs(ξν)` and `rhs(ξν)`
/// give each operand and its row and column strides. Without `accumulate`,
/// `dst[..taps·m·n]` is overwritten, initialised or not; the returned slice is those values.
///
/// # Safety
/// With `accumulate`, `dst[..taps·m·n]` is initialised (an earlier call wrote it).
#[allow(clippy::type_complexity)]
unsafe fn products<'a, 'd>(
    taps: usize,
    [m, n, k]: [usize; 3],
    dst: &'d mut [MaybeUninit<f32>],
    accumulate: bool,
    lhs: impl Fn(usize) -> (&'a [f32], [usize; 2]) + Sync,
    rhs: impl Fn(usize) -> (&'a [f32], [usize; 2]) + Sync,
) -> &'d [f32] {
    let dst = &mut dst[..taps * m * n];
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
    let side = tile_side(g);
    forward_chunked(g, x, w, side, chunk(g, &Tiles::new(g, side)))
}

/// `forward` with `side x side` output tiles, `step` images per chunk.
pub(crate) fn forward_chunked(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    side: usize,
    step: usize,
) -> Vec<f32> {
    let t = Tiles::new(g, side);
    let (c, o, per, taps) = (g.c, g.o, t.count(), t.taps());
    let y_len = o * g.oh * g.ow;
    let u = filter_transform(g, t, w);
    let mut y = uninit(g.n * y_len);
    let mut v = uninit(step * per * taps * c);
    let mut m = uninit(taps * step * per * o);
    for first in (0..g.n).step_by(step) {
        let b = step.min(g.n - first);
        let rows = b * per;
        let v = &mut v[..rows * taps * c];
        input_transform(g, t, x, first, v);
        // SAFETY: `input_transform` wrote every value.
        let (v, u) = (unsafe { v.assume_init_ref() }, &u);
        // M_ξν[tile, o] = V_ξν[tile, c] · U_ξν[c, o]
        // SAFETY: not accumulating.
        let m = unsafe {
            products(
                taps,
                [rows, o, c],
                &mut m,
                false,
                |tap| (&v[tap * c..], [taps * c, 1]),
                |tap| (&u[tap * o..], [taps * o, 1]),
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
    // SAFETY: the chunks cover every image, and `outputs_planar` writes each one's outputs.
    unsafe { y.assume_init() }.into_vec()
}

/// Input and weight gradients, each only when asked for.
pub(crate) fn backward(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want: [bool; 2],
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let side = tile_side(g);
    backward_chunked(g, x, w, dy, want, side, chunk(g, &Tiles::new(g, side)))
}

pub(crate) fn backward_chunked(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [want_dx, want_dw]: [bool; 2],
    side: usize,
    step: usize,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let t = Tiles::new(g, side);
    let (c, o, per, taps) = (g.c, g.o, t.count(), t.taps());
    let (x_len, y_len) = (c * g.h * g.w, o * g.oh * g.ow);
    let u = want_dx.then(|| filter_transform(g, t, w));
    let mut dx = want_dx.then(|| vec![0.0f32; g.n * x_len]);
    // dU_ξν[o, c], summed over the chunks (the first writes it: `g.n > 0`)
    let mut du = want_dw.then(|| uninit(taps * o * c));
    let mut dm = uninit(step * per * taps * o);
    let mut v = want_dw.then(|| uninit(step * per * taps * c));
    let mut dv = want_dx.then(|| uninit(taps * step * per * c));
    for (index, first) in (0..g.n).step_by(step).enumerate() {
        let b = step.min(g.n - first);
        let rows = b * per;
        let dm = &mut dm[..rows * taps * o];
        // dM: [tile][ξν][o], one image per task
        dm.par_chunks_mut(per * taps * o).enumerate().for_each_init(
            || vec![0.0f32; t.outputs() * o],
            |cl, (i, dm)| {
                outputs_channels_last(g, t, &dy[(first + i) * y_len..][..y_len], cl);
                output_grad_tiles(cl, t, o, dm);
            },
        );
        // SAFETY: `output_grad_tiles` wrote every value (one image's tiles per task).
        let dm = unsafe { dm.assume_init_ref() };
        if let (Some(du), Some(v)) = (du.as_mut(), v.as_mut()) {
            let v = &mut v[..rows * taps * c];
            input_transform(g, t, x, first, v);
            // SAFETY: `input_transform` wrote every value.
            let v = unsafe { v.assume_init_ref() };
            // dU_ξν[o, c] += dM_ξνᵀ[o, tile] · V_ξν[tile, c]
            // SAFETY: the first chunk (index 0) writes all of `du`, the later ones add to it.
            unsafe {
                products(
                    taps,
                    [o, c, rows],
                    du,
                    index > 0,
                    |tap| (&dm[tap * o..], [1, taps * o]),
                    |tap| (&v[tap * c..], [taps * c, 1]),
                )
            };
        }
        if let (Some(dx), Some(dv), Some(u)) = (dx.as_mut(), dv.as_mut(), u.as_ref()) {
            // dV_ξν[tile, c] = dM_ξν[tile, o] · U_ξνᵀ[o, c]
            // SAFETY: not accumulating.
            let dv = unsafe {
                products(
                    taps,
                    [rows, c, o],
                    dv,
                    false,
                    |tap| (&dm[tap * o..], [taps * o, 1]),
                    |tap| (&u[tap * o..], [1, taps * o]),
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
    let dw = du.map(|du| filter_gradient(g, t, unsafe { du.assume_init_ref() }));
    (dx, dw)
}
