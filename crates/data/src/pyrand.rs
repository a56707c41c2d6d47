//! The two Mersenne-Twister draws a protocol needs to pick the *same* items as its official
//! code: NumPy's legacy `RandomState(seed).choice(n, k, replace=False)` and Python's
//! `random.seed(seed); random.sample(population, k)`.
//!
//! MixOE (`train/train_mixoe.py`, `eval/eval.py`) draws its ID classes with the first and
//! subsamples its coarse-grained OOD set and the WebVision validation set with the second;
//! with any other generator the fine-grained OOD classes would not be the paper's. Everything
//! else in oodforge uses the ChaCha streams of `oodforge_core::rng`.
//!
//! Checked against NumPy 2.x and CPython 3 (`tests/fixtures/make_pyrand.py`,
//! `tests/pyrand.rs`). Both generators are frozen upstream (NumPy keeps `RandomState` stable
//! for reproducibility; CPython's `random.sample` has used the same draws since 3.2).

/// MT19937 (Matsumoto & Nishimura 1998), 32-bit output.
pub struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    /// `init_genrand(seed)`: NumPy's `RandomState(int)` (`_legacy_seeding` -> `mt19937_seed`).
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self { state, index: 624 }
    }

    /// `init_by_array(key)`: CPython's `random.seed(int)` with the key being the absolute value
    /// in 32-bit words, least significant first (`[0]` for 0).
    pub fn by_array(key: &[u32]) -> Self {
        let mut mt = Self::new(19_650_218);
        let s = &mut mt.state;
        let n = 624usize;
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..n.max(key.len()) {
            let prev = s[i - 1];
            s[i] = (s[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= n {
                s[0] = s[n - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..n - 1 {
            let prev = s[i - 1];
            s[i] =
                (s[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= n {
                s[0] = s[n - 1];
                i = 1;
            }
        }
        s[0] = 0x8000_0000;
        mt
    }

    /// CPython's `random.seed(seed)` for a non-negative integer seed.
    pub fn python(seed: u64) -> Self {
        let (lo, hi) = (seed as u32, (seed >> 32) as u32);
        if hi == 0 {
            Self::by_array(&[lo])
        } else {
            Self::by_array(&[lo, hi])
        }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % 624] & LOWER);
            let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 == 1 {
                v ^= 0x9908_b0df;
            }
            self.state[i] = v;
        }
        self.index = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// NumPy's `random_interval(max)`: uniform in `0..=max` by masked rejection (the draw of
    /// the legacy shuffle and of `randint` below 2^32).
    fn numpy_interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16] {
            mask |= mask >> shift;
        }
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// CPython's `_randbelow_with_getrandbits(n)` for `1 <= n < 2^32`: `getrandbits(k)` with
    /// `k = n.bit_length()` (the top k bits of one word), redrawn while `>= n`.
    fn python_below(&mut self, n: u32) -> u32 {
        let k = 32 - n.leading_zeros();
        loop {
            let r = self.next_u32() >> (32 - k);
            if r < n {
                return r;
            }
        }
    }
}

/// `np.random.RandomState(seed).permutation(n)`: the legacy Fisher-Yates shuffle of `arange(n)`
/// from the back, `j = random_interval(i)`.
pub fn numpy_permutation(seed: u32, n: usize) -> Vec<usize> {
    assert!(n <= u32::MAX as usize, "numpy_permutation: n too large");
    let mut rng = Mt19937::new(seed);
    let mut out: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.numpy_interval(i as u32) as usize;
        out.swap(i, j);
    }
    out
}

/// `np.random.RandomState(seed).choice(n, k, replace=False)` (or `choice(a, k, ...)` with
/// `a[idx]`): the first `k` of the permutation. Callers check `k <= n`.
pub fn numpy_choice(seed: u32, n: usize, k: usize) -> Vec<usize> {
    let mut p = numpy_permutation(seed, n);
    p.truncate(k);
    p
}

/// The indices `random.seed(seed); random.sample(range(n), k)` picks, in draw order (so
/// `random.sample(population, k)` is `population[i]` for each). CPython `Lib/random.py`: a
/// partial Fisher-Yates on a pool when the pool is smaller than the set of picks would be,
/// else rejection of repeats with a set. Callers check `k <= n`.
pub fn python_sample(seed: u64, n: usize, k: usize) -> Vec<usize> {
    assert!(
        n < u32::MAX as usize && k <= n,
        "python_sample: k <= n < 2^32"
    );
    let mut rng = Mt19937::python(seed);
    let mut setsize = 21usize;
    if k > 5 {
        // `4 ** _ceil(_log(k * 3, 4))`, in the same floating point as CPython's math.log.
        let e = ((k * 3) as f64).ln() / 4f64.ln();
        setsize += 4usize.pow(e.ceil() as u32);
    }
    let mut out = Vec::with_capacity(k);
    if n <= setsize {
        let mut pool: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = rng.python_below((n - i) as u32) as usize;
            out.push(pool[j]);
            pool[j] = pool[n - i - 1];
        }
    } else {
        let mut selected = std::collections::HashSet::with_capacity(k);
        for _ in 0..k {
            let mut j = rng.python_below(n as u32) as usize;
            while !selected.insert(j) {
                j = rng.python_below(n as u32) as usize;
            }
            out.push(j);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_outputs_of_mt19937() {
        // The reference implementation's default seed 5489: its first outputs.
        let mut mt = Mt19937::new(5489);
        assert_eq!(mt.next_u32(), 3_499_211_612);
        assert_eq!(mt.next_u32(), 581_869_302);
    }
}
