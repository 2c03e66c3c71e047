use super::*;
use crate::kernels::testutil::{rand_vec, skipped};

/// The bf16 kernels on this CPU; prints why each missing one is skipped.
fn kernels_here(test: &str) -> Vec<Kernel> {
    let mut ks = Vec::new();
    for k in [Kernel::Amx, Kernel::Avx512Bf16] {
        match k.unavailable_reason() {
            None => ks.push(k),
            Some(why) => skipped(&format!("{test}: the {} kernel: {why}", k.name())),
        }
    }
    ks
}

/// Checks C against the f64 product of the bf16-rounded operands. Both sides multiply the same bf16 values
/// exactly, so they differ only by f32 summation: |err| ≤ k · 2⁻²⁴ · Σ|a·b| in the worst case; we allow
/// 2⁻¹⁶ · √k · Σ|a·b| + 1e-6, far above f32 summation error yet far below a single bf16 rounding of an
/// operand (2⁻⁹ relative), so a kernel that mis-rounds or drops a term fails.
#[allow(clippy::too_many_arguments)]
fn check(
    what: &str,
    c: &[f32],
    c_rs: usize,
    a: View<'_>,
    b: View<'_>,
    m: usize,
    n: usize,
    k: usize,
    scale: f32,
    old: &[f32],
    acc: bool,
) {
    let mut want = old.to_vec();
    reference(&mut want, c_rs, a, b, m, n, k, scale, acc);
    for i in 0..m {
        for j in 0..n {
            let mag: f64 = (0..k)
                .map(|p| {
                    (round_bf16(a.data[i * a.rs + p * a.cs]) as f64 * round_bf16(b.data[p * b.rs + j * b.cs]) as f64)
                        .abs()
                })
                .sum::<f64>()
                * scale.abs() as f64
                + if acc { old[i * c_rs + j].abs() as f64 } else { 0.0 };
            let tol = mag * (k as f64).sqrt() * 2f64.powi(-16) + 1e-6;
            let (got, exp) = (c[i * c_rs + j] as f64, want[i * c_rs + j] as f64);
            assert!((got - exp).abs() <= tol, "{what}: C[{i},{j}] = {got}, want {exp} (tol {tol})");
        }
    }
    // Entries of C outside the product are untouched.
    for i in 0..m {
        for j in n..c_rs.min(c.len() - i * c_rs) {
            assert_eq!(
                c[i * c_rs + j].to_bits(),
                old[i * c_rs + j].to_bits(),
                "{what}: C[{i},{j}] outside n was written"
            );
        }
    }
}

#[test]
fn rounding_is_nearest_even() {
    assert_eq!(to_bf16(1.0), 0x3f80);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
    assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
    // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even (1 + 2^-6).
    assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
    assert_eq!(to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3f81);
    assert_eq!(to_bf16(-2.5), 0xc020);
    assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
    assert_eq!(to_bf16(f32::MAX), 0x7f80, "rounds up to infinity as torch does");
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    let x = 0.1f32;
    assert!((round_bf16(x) - x).abs() <= x * 2f32.powi(-9));
}

#[test]
fn packed_b_holds_rounded_values() {
    let (k, n) = (37, 21);
    let w = rand_vec(k * n, 9);
    for tr in [false, true] {
        // tr: B is the transpose of a stored [n, k] matrix.
        let v = if tr { View::new(&w, k, true) } else { View::new(&w, n, false) };
        let p = PackedB::pack(v, k, n, Par::Seq);
        for pi in 0..k {
            for j in 0..n {
                assert_eq!(p.get(pi, j), round_bf16(w[pi * v.rs + j * v.cs]));
            }
        }
    }
}

#[test]
fn every_kernel_matches_the_bf16_reference() {
    // (300, 40, 64): a transposed A spans two packing groups; (70, 40, 600): k past 512 (the other AMX loop order).
    let shapes = [
        (16, 16, 16),
        (32, 32, 32),
        (33, 47, 65),
        (64, 96, 100),
        (100, 17, 31),
        (129, 70, 257),
        (300, 40, 64),
        (70, 40, 600),
    ];
    for kernel in kernels_here("every_kernel_matches_the_bf16_reference") {
        for &(m, n, k) in &shapes {
            for ta in [false, true] {
                for tb in [false, true] {
                    for acc in [false, true] {
                        let a = rand_vec(m * k, 1);
                        let b = rand_vec(k * n, 2);
                        let av = if ta { View::new(&a, m, true) } else { View::new(&a, k, false) };
                        let bv = if tb { View::new(&b, k, true) } else { View::new(&b, n, false) };
                        // C rows padded by 3 columns that must stay untouched.
                        let c_rs = n + 3;
                        let old = rand_vec(m * c_rs, 3);
                        for par in [Par::Seq, Par::Rayon] {
                            let mut c = old.clone();
                            gemm_view_with(kernel, &mut c, c_rs, av, bv, m, n, k, 0.75, acc, par);
                            let what = format!("{} {m}x{n}x{k} ta={ta} tb={tb} acc={acc} {par:?}", kernel.name());
                            check(&what, &c, c_rs, av, bv, m, n, k, 0.75, &old, acc);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn packed_weights_give_the_same_product() {
    let (m, n, k) = (70, 48, 96);
    let a = rand_vec(m * k, 4);
    let w = rand_vec(n * k, 5); // a linear weight [n, k]
    for kernel in kernels_here("packed_weights_give_the_same_product") {
        let mut cache = WeightCache::default();
        let pb = cache.get(0, &w, n, k, true);
        let mut c1 = vec![0.0; m * n];
        gemm_packed_with(kernel, &mut c1, n, View::new(&a, k, false), pb, m, 1.0, false, Par::Rayon);
        let mut c2 = vec![0.0; m * n];
        gemm_view_with(
            kernel,
            &mut c2,
            n,
            View::new(&a, k, false),
            View::new(&w, k, true),
            m,
            n,
            k,
            1.0,
            false,
            Par::Rayon,
        );
        assert_eq!(c1, c2, "{}", kernel.name());
        // A new version repacks: scale the weight and the product follows.
        let w2: Vec<f32> = w.iter().map(|x| 2.0 * x).collect();
        let mut cache2 = WeightCache::default();
        let _ = cache2.get(0, &w2, n, k, true);
        let pb_same = cache2.get(0, &w2, n, k, true);
        let mut c3 = vec![0.0; m * n];
        gemm_packed_with(kernel, &mut c3, n, View::new(&a, k, false), pb_same, m, 1.0, false, Par::Seq);
        for (x, y) in c3.iter().zip(&c1) {
            assert_eq!(*x, 2.0 * y);
        }
    }
}

#[test]
fn cache_repacks_when_the_version_changes() {
    let (n, k) = (32, 32);
    let mut w = rand_vec(n * k, 6);
    let mut cache = WeightCache::default();
    let before = cache.get(1, &w, n, k, false).get(3, 5);
    w[3 * k + 5] = 7.0;
    assert_eq!(cache.get(1, &w, n, k, false).get(3, 5), before, "same version: the packed copy is reused");
    assert_eq!(cache.get(2, &w, n, k, false).get(3, 5), 7.0, "new version: repacked");
    assert!(cache.bytes() >= n * k * 2);
}

#[test]
fn error_against_the_f32_product_follows_bf16_rounding() {
    // Versus the exact f32-input product, the bf16 result's error is that of rounding both operands:
    // each product is off by at most 2·2⁻⁹ relative, and random signs make the sum's error grow as √k.
    let (m, n, k) = (64, 64, 384);
    let a = rand_vec(m * k, 7);
    let b = rand_vec(k * n, 8);
    for kernel in kernels_here("error_against_the_f32_product_follows_bf16_rounding") {
        let mut c = vec![0.0; m * n];
        gemm_view_with(
            kernel,
            &mut c,
            n,
            View::new(&a, k, false),
            View::new(&b, n, false),
            m,
            n,
            k,
            1.0,
            false,
            Par::Seq,
        );
        let mut worst = 0.0f64;
        for i in 0..m {
            for j in 0..n {
                let exact: f64 = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
                let mag: f64 = (0..k).map(|p| (a[i * k + p] as f64 * b[p * n + j] as f64).abs()).sum();
                let rel = (c[i * n + j] as f64 - exact).abs() / (mag / (k as f64).sqrt());
                worst = worst.max(rel);
            }
        }
        // 2⁻⁸ per product, a few standard deviations of a √k random walk.
        assert!(worst < 4.0 * 2f64.powi(-8), "{}: worst scaled error {worst}", kernel.name());
        // And the rounding really happened (a kernel silently in f32 would be far more accurate).
        assert!(worst > 2f64.powi(-14), "{}: suspiciously exact ({worst})", kernel.name());
    }
}

#[test]
fn kernel_names_parse() {
    assert_eq!(Kernel::parse("f32"), Ok(Kernel::F32));
    assert!(Kernel::parse("tpu").unwrap_err().contains("FINETUNE_BF16_KERNEL"));
    for k in [Kernel::Amx, Kernel::Avx512Bf16] {
        match k.unavailable_reason() {
            None => assert_eq!(Kernel::parse(k.name()), Ok(k)),
            Some(_) => assert!(Kernel::parse(k.name()).is_err()),
        }
    }
    eprintln!("bf16 kernel detected on this CPU: {}", Kernel::detect().name());
}

/// Worst case of rounding both factors of every product to bf16: |Σ x·w − Σ bf16(x)·bf16(w)| ≤ 2⁻⁸ Σ |x·w|
/// (each product is off by at most (1 + 2⁻⁹)² − 1), plus f32 summation slack.
fn bf16_bound(terms: impl Iterator<Item = f64>) -> f64 {
    terms.map(f64::abs).sum::<f64>() * (2f64.powi(-8) + 1e-6) + 1e-6
}

#[test]
fn linear_in_bf16_matches_f32_within_rounding() {
    use crate::kernels::linear as f32lin;
    let (n, ci, co) = (40, 64, 48);
    let x = rand_vec(n * ci, 11);
    let w = rand_vec(co * ci, 12);
    let b = rand_vec(co, 13);
    let dout = rand_vec(n * co, 14);
    let shared = linear::SharedWeights::new();
    let ctx = Some((&shared, 1));
    let name = Kernel::current().name();
    if Kernel::current() == Kernel::F32 {
        skipped("linear_in_bf16_matches_f32_within_rounding: the bf16 rounding check (no bf16 kernel on this CPU); the f32 fallback is checked instead");
    }
    let mut out = vec![0.0; n * co];
    linear::forward(ctx, &mut out, &x, &w, Some(&b), n, ci, co);
    let mut want = vec![0.0; n * co];
    f32lin::reference::forward(&mut want, &x, &w, Some(&b), n, ci, co);
    let mut rounded = false;
    for i in 0..n {
        for o in 0..co {
            let bound = bf16_bound((0..ci).map(|p| x[i * ci + p] as f64 * w[o * ci + p] as f64));
            let err = (out[i * co + o] - want[i * co + o]).abs() as f64;
            assert!(err <= bound, "{name} forward[{i},{o}]: error {err} > {bound}");
            rounded |= err > 1e-5;
        }
    }
    assert_eq!(rounded, Kernel::current() != Kernel::F32, "{name}: bf16 rounding visible iff a bf16 kernel runs");

    let (mut dx, mut dw, mut db) = (vec![0.0; n * ci], vec![0.5; co * ci], vec![0.0; co]);
    linear::backward(ctx, Some(&mut dx), Some(&mut dw), Some(&mut db), &dout, &x, &w, n, ci, co, false);
    let (mut rdx, mut rdw, mut rdb) = (vec![0.0; n * ci], vec![0.5; co * ci], vec![0.0; co]);
    f32lin::reference::backward(&mut rdx, &mut rdw, &mut rdb, &dout, &x, &w, n, ci, co);
    for i in 0..n {
        for p in 0..ci {
            let bound = bf16_bound((0..co).map(|o| dout[i * co + o] as f64 * w[o * ci + p] as f64));
            assert!((dx[i * ci + p] - rdx[i * ci + p]).abs() as f64 <= bound, "{name} dinp[{i},{p}]");
        }
    }
    for o in 0..co {
        for p in 0..ci {
            let bound = bf16_bound((0..n).map(|i| dout[i * co + o] as f64 * x[i * ci + p] as f64)) + 1e-6;
            assert!((dw[o * ci + p] - rdw[o * ci + p]).abs() as f64 <= bound, "{name} dweight[{o},{p}]");
        }
        assert!((db[o] - rdb[o]).abs() <= 1e-5, "{name} dbias[{o}] is f32");
    }

    // The cached weight copy is reused within a version and rebuilt at the next.
    let w2: Vec<f32> = w.iter().map(|v| -v).collect();
    let mut same = vec![0.0; n * co];
    // Same address and version, new contents: still the old copy (by design: the version says when to repack).
    let mut w_mut = w.clone();
    linear::forward(Some((&shared, 7)), &mut same, &x, &w_mut, None, n, ci, co);
    w_mut.copy_from_slice(&w2);
    let mut stale = vec![0.0; n * co];
    linear::forward(Some((&shared, 7)), &mut stale, &x, &w_mut, None, n, ci, co);
    let mut fresh = vec![0.0; n * co];
    linear::forward(Some((&shared, 8)), &mut fresh, &x, &w_mut, None, n, ci, co);
    for ((s, t), f) in same.iter().zip(&stale).zip(&fresh) {
        if Kernel::current() != Kernel::F32 {
            assert_eq!(s, t);
        }
        assert_eq!(*f, -*s);
    }
}

/// The fused epilogue (bias, residual, GELU on each block in cache) gives exactly the separate passes' values
/// for C (the same sums, then the same additions per element), and GELU within erf_f32's error of the f32
/// kernel's. Shapes cover partial blocks and the in-place tiles.
#[test]
fn fused_epilogue_equals_separate_passes() {
    for kernel in kernels_here("fused_epilogue_equals_separate_passes") {
        for &(m, n, k) in &[(64, 64, 96), (70, 45, 33), (96, 160, 600)] {
            let a = rand_vec(m * k, 21);
            let w = rand_vec(n * k, 22);
            let bias = rand_vec(n, 23);
            let res = rand_vec(m * n, 24);
            let pb = PackedB::pack(View::new(&w, k, true), k, n, Par::Seq);
            let av = View::new(&a, k, false);
            for par in [Par::Seq, Par::Rayon] {
                let mut want = vec![0.0; m * n];
                gemm_packed_with(kernel, &mut want, n, av, &pb, m, 1.0, false, par);
                for (i, v) in want.iter_mut().enumerate() {
                    *v = *v + bias[i % n] + res[i];
                }
                let mut want_act = vec![0.0; m * n];
                crate::kernels::gelu::forward(&mut want_act, &want);
                let (mut got, mut act) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
                let epi = Epilogue { bias: Some(&bias), residual: Some(&res) };
                gemm_packed_fused_with(kernel, &mut got, n, av, &pb, m, epi, Some(&mut act), par);
                let what = format!("{} {m}x{n}x{k} {par:?}", kernel.name());
                for i in 0..m * n {
                    assert_eq!(got[i].to_bits(), want[i].to_bits(), "{what}: C[{i}] {} vs {}", got[i], want[i]);
                    let tol = 2.5e-7 * (1.0 + want[i].abs());
                    assert!((act[i] - want_act[i]).abs() <= tol, "{what}: gelu[{i}] {} vs {}", act[i], want_act[i]);
                }
            }
        }
    }
}

/// An FFN with the GELU output packed straight as the next matmul's bf16 operand gives bitwise the output of
/// the path through f32 buffers (fused GELU output, then the second matmul packing it), for partial blocks in
/// every dimension and on one or all threads; the packed values are that path's activations rounded to bf16.
#[test]
fn gelu_packed_operand_equals_the_f32_buffer_path() {
    for kernel in kernels_here("gelu_packed_operand_equals_the_f32_buffer_path") {
        for &(m, c, f) in &[(64, 64, 128), (70, 45, 97), (33, 96, 600)] {
            let x = rand_vec(m * c, 31);
            let (w1, b1) = (rand_vec(f * c, 32), rand_vec(f, 33));
            let (w2, b2) = (rand_vec(c * f, 34), rand_vec(c, 35));
            let res = rand_vec(m * c, 36);
            let p1 = PackedB::pack(View::new(&w1, c, true), c, f, Par::Seq);
            let p2 = PackedB::pack(View::new(&w2, f, true), f, c, Par::Seq);
            for par in [Par::Seq, Par::Rayon] {
                let (mut pre, mut act) = (vec![0.0; m * f], vec![0.0; m * f]);
                let epi1 = Epilogue { bias: Some(&b1), residual: None };
                gemm_packed_fused_with(kernel, &mut pre, f, View::new(&x, c, false), &p1, m, epi1, Some(&mut act), par);
                let mut want = vec![0.0; m * c];
                let epi2 = Epilogue { bias: Some(&b2), residual: Some(&res) };
                gemm_packed_fused_with(kernel, &mut want, c, View::new(&act, f, false), &p2, m, epi2, None, par);

                let packed = gemm_gelu_packed_with(kernel, View::new(&x, c, false), &p1, m, &b1, par);
                assert_eq!((packed.m(), packed.k()), (m, f));
                let what = format!("{} {m}x{c}x{f} {par:?}", kernel.name());
                for i in 0..m {
                    for p in 0..f {
                        let v = round_bf16(act[i * f + p]);
                        assert_eq!(packed.get(i, p).to_bits(), v.to_bits(), "{what}: act[{i}, {p}]");
                    }
                }
                let mut got = vec![f32::NAN; m * c];
                gemm_prepacked_fused_with(kernel, &mut got, c, &packed, &p2, epi2, par);
                for i in 0..m * c {
                    assert_eq!(got[i].to_bits(), want[i].to_bits(), "{what}: out[{i}] {} vs {}", got[i], want[i]);
                }
            }
        }
    }
}
