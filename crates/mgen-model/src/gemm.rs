//! Matrix products for the float engine, on the `gemm` crate (the kernel
//! under candle: packed, cache-blocked, AVX2/AVX-512 chosen at run time).
//!
//! Invariants:
//! - every product goes through [`matmul_into`], so the reference
//!   executor, the simulator's digital units and the branch trainer's
//!   forward round the same sums the same way;
//! - a product's bits depend on the shapes and on the CPU's instruction
//!   set, never on the number of threads: `gemm` splits the output among
//!   threads and reduces each element's `k` products in one fixed order
//!   (`tests` checks 1 thread against several);
//! - operands are any ndarray views (transposed, sliced): their strides
//!   are passed to the kernel, nothing is copied first.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// Products with fewer multiply-adds than this run on the calling thread:
/// below it, waking another thread costs more than it saves.
const PARALLEL_WORK: usize = 1 << 21;

/// `c = a · b` (`accumulate = false`) or `c += a · b` (`accumulate = true`).
///
/// # Panics
/// If the shapes do not chain: `a` is `[m, k]`, `b` is `[k, n]`, `c` is
/// `[m, n]` (a caller's bug; the IR's verifier checks every shape first).
pub fn matmul_into<T: Elem>(
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    mut c: ArrayViewMut2<T>,
    accumulate: bool,
) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert!(
        k == k2 && c.dim() == (m, n),
        "matmul shapes [{m}, {k}] x [{k2}, {n}] -> {:?}",
        c.dim()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(T::ZERO);
        }
        return;
    }
    let par = if m * n * k >= PARALLEL_WORK {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let (as_, bs, cs) = (a.strides(), b.strides(), c.strides());
    let (c_rs, c_cs) = (cs[0], cs[1]);
    let dst = c.as_mut_ptr();
    // SAFETY: the three pointers and their strides come from live ndarray
    // views of the shapes checked above, so every element the kernel reads
    // or writes lies inside its view; `c` is borrowed mutably, so it
    // aliases neither `a` nor `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            c_cs,
            c_rs,
            accumulate,
            a.as_ptr(),
            as_[1],
            as_[0],
            b.as_ptr(),
            bs[1],
            bs[0],
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            par,
        );
    }
}

/// `a · b` as a new array.
pub fn matmul<T: Elem>(a: ArrayView2<T>, b: ArrayView2<T>) -> Array2<T> {
    let mut c = Array2::<T>::from_elem((a.nrows(), b.ncols()), T::ZERO);
    matmul_into(a, b, c.view_mut(), false);
    c
}

/// The element types the float engine multiplies.
pub trait Elem: Copy + 'static + Send + Sync {
    const ZERO: Self;
    const ONE: Self;
}
impl Elem for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
}
impl Elem for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, s};

    fn det(rows: usize, cols: usize, seed: u32) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            let h = (i as u32 * 7919 + j as u32 * 104729 + seed).wrapping_mul(2654435761);
            (h >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
    }

    fn naive(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f64> {
        Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| {
            (0..a.ncols())
                .map(|p| a[[i, p]] as f64 * b[[p, j]] as f64)
                .sum()
        })
    }

    #[test]
    fn agrees_with_a_naive_product_on_strided_views() {
        let a = det(37, 300, 1);
        let w = det(50, 300, 2);
        // b is a transposed view and c a column slice of a wider array.
        let mut wide = Array2::<f32>::zeros((37, 80));
        matmul_into(a.view(), w.t(), wide.slice_mut(s![.., 10..60]), false);
        let want = naive(a.view(), w.t());
        for (got, want) in wide.slice(s![.., 10..60]).iter().zip(want.iter()) {
            assert!((*got as f64 - want).abs() < 1e-4, "{got} vs {want}");
        }
        assert!(wide.slice(s![.., ..10]).iter().all(|&v| v == 0.0));
        assert!(wide.slice(s![.., 60..]).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn accumulate_adds_to_what_is_there() {
        let (a, b) = (det(4, 8, 3), det(8, 5, 4));
        let mut c = Array2::<f32>::from_elem((4, 5), 1.0);
        matmul_into(a.view(), b.view(), c.view_mut(), true);
        let want = naive(a.view(), b.view());
        for (got, want) in c.iter().zip(want.iter()) {
            assert!((*got as f64 - (want + 1.0)).abs() < 1e-5);
        }
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        let a = Array2::<f32>::zeros((3, 0));
        let b = Array2::<f32>::zeros((0, 2));
        assert_eq!(matmul(a.view(), b.view()), Array2::<f32>::zeros((3, 2)));
    }

    #[test]
    fn bits_do_not_depend_on_the_thread_count() {
        // Large enough to be split among threads.
        let (a, b) = (det(128, 768, 5), det(3072, 768, 6));
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let four = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let x = one.install(|| matmul(a.view(), b.t()));
        let y = four.install(|| matmul(a.view(), b.t()));
        assert!(
            x.iter()
                .zip(y.iter())
                .all(|(p, q)| p.to_bits() == q.to_bits())
        );
    }

    #[test]
    fn integer_valued_f32_products_are_exact() {
        // The simulator relies on this: small integers multiply and sum
        // exactly in f32 below 2^24, whatever order the kernel uses.
        let a = Array2::from_shape_fn((16, 256), |(i, j)| ((i * 31 + j * 7) % 256) as f32);
        let b = Array2::from_shape_fn((256, 64), |(i, j)| ((i * 13 + j * 5) % 2) as f32);
        let got = matmul(a.view(), b.view());
        let want = naive(a.view(), b.view());
        assert!(got.iter().zip(want.iter()).all(|(g, w)| *g as f64 == *w));
    }
}
