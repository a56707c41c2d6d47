//! Run-time AVX2 + FMA copies of our own flex kernels.
//!
//! The release build targets baseline x86-64, so the loops of our kernels compile to 4-wide SSE2
//! (gemm and burn-flex pick their AVX2 / AVX-512 code at run time themselves). A whole build for
//! the machine's own processor (`-C target-cpu=native`) trained the CNNs 3-21% faster, all of it
//! in these loops (BENCHMARKS.md, "What the baseline x86-64 target costs flex"). Each kernel here
//! is therefore compiled twice, once as it is and once with AVX2 + FMA enabled, and the second
//! runs where the processor has both.
//!
//! Both copies compute the same values, bit for bit: Rust never contracts `a * b + c` into a
//! fused multiply-add, nor reorders float arithmetic, so enabling the features changes only the
//! width of the registers the loops are vectorised to. The tests check that.

use std::mem::MaybeUninit;

/// Whether the processor has AVX2 and FMA (`is_x86_feature_detected!` caches the answer).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Declares `$vis fn $name(args) -> ret` running `$body(args)`, compiled for AVX2 + FMA where
/// the processor has them and for the baseline target elsewhere. `$body` must be
/// `#[inline(always)]`, so that its loops are compiled inside each copy; closures it is given
/// are inlined into it (they are small and called from one place).
///
/// The second form, `= $body, avx2: $fast;`, is for kernels whose AVX2 copy is written with
/// intrinsics: `$fast` is a `#[target_feature(enable = "avx2,fma")]` function taking the same
/// arguments, called where the processor has both, `$body` elsewhere.
macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:expr, avx2: $fast:expr;) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if $crate::simd::avx2() {
                // SAFETY: the processor has the features `$fast` is compiled for.
                return unsafe { $fast($($arg),*) };
            }
            $body($($arg),*)
        }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:expr;) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if $crate::simd::avx2() {
                    // SAFETY: the processor has the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use dispatch;

/// `dst[j·dst_rs + i] = src[i·src_rs + j]` for `i < rows`, `j < cols` (see `transpose_uninit`).
pub(crate) fn transpose(
    src: &[f32],
    src_rs: usize,
    dst: &mut [f32],
    dst_rs: usize,
    size: [usize; 2],
) {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and `transpose_uninit` only stores
    // initialised floats through this view, so `dst` stays initialised.
    let dst = unsafe { &mut *(dst as *mut [f32] as *mut [MaybeUninit<f32>]) };
    transpose_uninit(src, src_rs, dst, dst_rs, size)
}

dispatch! {
    /// `dst[j·dst_rs + i] = src[i·src_rs + j]` for `i < rows`, `j < cols`, in 8x8 tiles: each
    /// tile reads and writes 8 consecutive floats per line. With AVX2 a tile is eight 8-float
    /// registers transposed by shuffles (no detour through memory); both copies give the same
    /// result. `dst` need not be initialised: it is only written, so buffers a transpose fills
    /// are not zeroed first.
    pub(crate) fn transpose_uninit(
        src: &[f32],
        src_rs: usize,
        dst: &mut [MaybeUninit<f32>],
        dst_rs: usize,
        size: [usize; 2],
    ) = transpose_portable, avx2: avx2_tiles::transpose;
}

/// The baseline copy of `transpose_uninit`.
fn transpose_portable(
    src: &[f32],
    src_rs: usize,
    dst: &mut [MaybeUninit<f32>],
    dst_rs: usize,
    size: [usize; 2],
) {
    transpose_tiles(src, src_rs, dst, dst_rs, size, tile_portable)
}

const T: usize = 8;

/// The tiled loop; `tile` transposes one full 8x8 tile, the rest of the edges go value by value.
#[inline(always)]
fn transpose_tiles(
    src: &[f32],
    src_rs: usize,
    dst: &mut [MaybeUninit<f32>],
    dst_rs: usize,
    [rows, cols]: [usize; 2],
    tile: impl Fn(&[f32], usize, &mut [MaybeUninit<f32>], usize),
) {
    for i0 in (0..rows).step_by(T) {
        let ih = T.min(rows - i0);
        for j0 in (0..cols).step_by(T) {
            let jw = T.min(cols - j0);
            if ih == T && jw == T {
                let from = i0 * src_rs + j0;
                let to = j0 * dst_rs + i0;
                // The tile's last line ends within each slice: checked here, once per tile.
                let src_tile = &src[from..(T - 1) * src_rs + from + T];
                let dst_tile = &mut dst[to..(T - 1) * dst_rs + to + T];
                tile(src_tile, src_rs, dst_tile, dst_rs);
            } else {
                for i in i0..i0 + ih {
                    for j in j0..j0 + jw {
                        dst[j * dst_rs + i].write(src[i * src_rs + j]);
                    }
                }
            }
        }
    }
}

/// One 8x8 tile through a local array (SSE2 moves 4 floats at a time).
#[inline(always)]
fn tile_portable(src: &[f32], src_rs: usize, dst: &mut [MaybeUninit<f32>], dst_rs: usize) {
    let mut tile = [[0.0f32; T]; T];
    for (i, line) in tile.iter_mut().enumerate() {
        line.copy_from_slice(&src[i * src_rs..][..T]);
    }
    for j in 0..T {
        for (i, v) in dst[j * dst_rs..][..T].iter_mut().enumerate() {
            v.write(tile[i][j]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2_tiles {
    use super::{T, transpose_tiles};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn transpose(
        src: &[f32],
        src_rs: usize,
        dst: &mut [MaybeUninit<f32>],
        dst_rs: usize,
        size: [usize; 2],
    ) {
        transpose_tiles(src, src_rs, dst, dst_rs, size, |s, sr, d, dr| {
            // SAFETY: `transpose_tiles` hands over slices holding the whole tile (8 lines of 8
            // floats, `sr` and `dr` apart), and this closure runs only inside this function,
            // which the caller entered after checking for AVX2.
            unsafe { tile(s, sr, d, dr) }
        })
    }

    /// The classic register transpose: unpack pairs of rows, shuffle pairs of pairs, then swap
    /// 128-bit halves. Lines named by rows a..h of the source, columns 0..7.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile(src: &[f32], src_rs: usize, dst: &mut [MaybeUninit<f32>], dst_rs: usize) {
        debug_assert!(src.len() > (T - 1) * src_rs + T - 1 && dst.len() > (T - 1) * dst_rs + T - 1);
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr().cast::<f32>());
        // SAFETY: line i spans `i·src_rs..i·src_rs + 8`, within `src` (see the caller).
        let r = unsafe {
            [
                _mm256_loadu_ps(s),
                _mm256_loadu_ps(s.add(src_rs)),
                _mm256_loadu_ps(s.add(2 * src_rs)),
                _mm256_loadu_ps(s.add(3 * src_rs)),
                _mm256_loadu_ps(s.add(4 * src_rs)),
                _mm256_loadu_ps(s.add(5 * src_rs)),
                _mm256_loadu_ps(s.add(6 * src_rs)),
                _mm256_loadu_ps(s.add(7 * src_rs)),
            ]
        };
        // a0 b0 a1 b1 | a4 b4 a5 b5, a2 b2 a3 b3 | a6 b6 a7 b7, and likewise c d, e f, g h
        let t = [
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        ];
        // a0 b0 c0 d0 | a4 b4 c4 d4 (columns 0 and 4), then columns 1/5, 2/6, 3/7; same for e..h
        let u = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        for j in 0..4 {
            // Column j: the low halves of the a..d and e..h registers; column j + 4: the high.
            let low = _mm256_permute2f128_ps::<0x20>(u[j], u[j + 4]);
            let high = _mm256_permute2f128_ps::<0x31>(u[j], u[j + 4]);
            // SAFETY: line j spans `j·dst_rs..j·dst_rs + 8`, within `dst` (see the caller).
            unsafe {
                _mm256_storeu_ps(d.add(j * dst_rs), low);
                _mm256_storeu_ps(d.add((j + 4) * dst_rs), high);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape from 1x1 to 19x19 (full tiles, edges, both), with row strides wider than the
    /// rows: the dispatched copy (AVX2 on processors that have it), the portable one and the
    /// initialised-destination wrapper against the definition, the padding between rows left
    /// alone.
    #[test]
    fn transpose_matches_its_definition_for_every_edge() {
        let initialised = |s: &[f32], sr, d: &mut [MaybeUninit<f32>], dr, size| {
            // SAFETY: the test fills `d` with -1 before every call.
            let mut values: Vec<f32> = d.iter().map(|v| unsafe { v.assume_init() }).collect();
            transpose(s, sr, &mut values, dr, size);
            for (slot, v) in d.iter_mut().zip(values) {
                slot.write(v);
            }
        };
        type Transpose<'a> = &'a dyn Fn(&[f32], usize, &mut [MaybeUninit<f32>], usize, [usize; 2]);
        let copies: [(&str, Transpose); 3] = [
            ("dispatched", &transpose_uninit),
            ("portable", &transpose_portable),
            ("initialised", &initialised),
        ];
        for (name, copy) in copies {
            for (rows, cols) in (1..20).flat_map(|r| (1..20).map(move |k| (r, k))) {
                let (src_rs, dst_rs) = (cols + 3, rows + 5);
                let src: Vec<f32> = (0..rows * src_rs).map(|v| v as f32 + 0.5).collect();
                let mut dst = vec![MaybeUninit::new(-1.0f32); cols * dst_rs];
                copy(&src, src_rs, &mut dst, dst_rs, [rows, cols]);
                for j in 0..cols {
                    for i in 0..dst_rs {
                        let want = if i < rows { src[i * src_rs + j] } else { -1.0 };
                        // SAFETY: every value was initialised to -1 before the call.
                        let got = unsafe { dst[j * dst_rs + i].assume_init() };
                        assert_eq!(got, want, "{name} {rows}x{cols} at ({i}, {j})");
                    }
                }
            }
        }
    }
}
