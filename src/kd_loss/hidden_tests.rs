//! The hidden-state loss (hidden.rs) against a naive f64 loop over plain vectors: values,
//! gradients (central finite differences in f64), layer pairing and the recipe section.

use burn::tensor::{Device, Tensor, TensorData};

use super::hidden::*;

/// Plain data for one call: per pair, student states `(b * l, ds)` and teacher states
/// `(b * l, dt)` row-major, projection weights `(ds, dt)` (burn's `[d_in, d_out]` layout; none
/// for equal widths), and token weights.
#[derive(Clone)]
struct Case {
    b: usize,
    l: usize,
    ds: usize,
    dt: usize,
    s: Vec<Vec<f64>>,
    t: Vec<Vec<f64>>,
    w: Option<Vec<Vec<f64>>>,
    mask: Vec<f64>,
}

/// Two pairs, batch 2 x 3 tokens; token 2 is padding (its states are large, so that counting
/// it shows), token 4 has a curriculum weight of 0.5, token 5 is padding too.
const MASK: [f64; 6] = [1.0, 1.0, 0.0, 1.0, 0.5, 0.0];
const PAIRS: usize = 2;

/// `f32`-representable values, so that the tensors and the reference see the same inputs.
fn draw(rng: &mut crate::rng::SplitMix, n: usize) -> Vec<f64> {
    (0..n).map(|_| (rng.uniform() * 4.0 - 2.0) as f32 as f64).collect()
}

/// A case with the projection `proj` (read back from the module: the loss must use its weights).
fn case(ds: usize, dt: usize, proj: &HiddenProjection, seed: u64) -> Case {
    let (b, l) = (2, 3);
    let n = b * l;
    let mut rng = crate::rng::SplitMix(seed);
    let mut s: Vec<Vec<f64>> = (0..PAIRS).map(|_| draw(&mut rng, n * ds)).collect();
    for sk in &mut s {
        sk[2 * ds..3 * ds].iter_mut().for_each(|x| *x *= 50.0);
    }
    let t = (0..PAIRS).map(|_| draw(&mut rng, n * dt)).collect();
    let w = proj.maps.as_ref().map(|maps| maps.iter().map(|m| values(m.weight.val())).collect());
    Case { b, l, ds, dt, s, t, w, mask: MASK.to_vec() }
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().iter::<f32>().map(|x| x as f64).collect()
}

/// The definition, one token at a time in f64.
fn reference(c: &Case, loss: HiddenLoss) -> f64 {
    let (ds, dt) = (c.ds, c.dt);
    let weight: f64 = c.mask.iter().sum();
    let mut total = 0.0;
    for k in 0..c.s.len() {
        let mut sum = 0.0;
        for i in 0..c.b * c.l {
            let s = &c.s[k][i * ds..(i + 1) * ds];
            let t = &c.t[k][i * dt..(i + 1) * dt];
            let p: Vec<f64> = match &c.w {
                None => s.to_vec(),
                Some(w) => (0..dt).map(|j| (0..ds).map(|a| s[a] * w[k][a * dt + j]).sum()).collect(),
            };
            let li = match loss {
                HiddenLoss::Mse => p.iter().zip(t).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / dt as f64,
                HiddenLoss::Cosine => {
                    let dot: f64 = p.iter().zip(t).map(|(x, y)| x * y).sum();
                    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
                    1.0 - dot / (norm(&p) * norm(t)).max(1e-8)
                }
            };
            sum += c.mask[i] * li;
        }
        total += sum / weight;
    }
    total / c.s.len() as f64
}

fn tensor3(v: &[f64], c: &Case, d: usize, dev: &Device) -> Tensor<3> {
    let v: Vec<f32> = v.iter().map(|x| *x as f32).collect();
    Tensor::from_data(TensorData::new(v, [c.b, c.l, d]), dev)
}

fn mask(c: &Case, dev: &Device) -> Tensor<1> {
    let m: Vec<f32> = c.mask.iter().map(|x| *x as f32).collect();
    Tensor::from_data(TensorData::new(m, [c.mask.len()]), dev)
}

const LOSSES: [HiddenLoss; 2] = [HiddenLoss::Mse, HiddenLoss::Cosine];

/// Both losses equal the f64 loop, widths equal, growing and shrinking. Token 1's student
/// states are tiny, so that cosine's `|p| |t|` falls below its epsilon there.
#[test]
fn hidden_loss_matches_the_naive_loop() {
    let dev = Device::flex();
    for (ds, dt) in [(5, 5), (4, 6), (6, 4)] {
        let proj = HiddenProjection::new(PAIRS, ds, dt, 17, &dev);
        assert_eq!(proj.maps.is_none(), ds == dt);
        let mut c = case(ds, dt, &proj, 3);
        for sk in &mut c.s {
            sk[ds..2 * ds].iter_mut().for_each(|x| *x = (*x * 1e-10) as f32 as f64);
        }
        let s: Vec<Tensor<3>> = c.s.iter().map(|v| tensor3(v, &c, ds, &dev)).collect();
        let t: Vec<Tensor<3>> = c.t.iter().map(|v| tensor3(v, &c, dt, &dev)).collect();
        for loss in LOSSES {
            let got = hidden_loss(&s, &t, &proj, mask(&c, &dev), loss).into_scalar::<f32>() as f64;
            let want = reference(&c, loss);
            assert!((got - want).abs() <= 1e-5 * want.abs(), "{loss:?} {ds}->{dt}: {got} vs {want}");
        }
    }
}

/// Central finite difference of the reference in `x[idx]`.
fn finite_difference(c: &Case, loss: HiddenLoss, at: impl Fn(&mut Case) -> &mut f64) -> f64 {
    let eps = 1e-3;
    let (mut plus, mut minus) = (c.clone(), c.clone());
    *at(&mut plus) += eps;
    *at(&mut minus) -= eps;
    (reference(&plus, loss) - reference(&minus, loss)) / (2.0 * eps)
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 2e-5 * want.abs() + 1e-8
}

/// On the autodiff backend, the gradients with respect to the student states and to the
/// projection's weights equal central finite differences of the f64 definition; padding and
/// the teacher's states get none.
#[test]
fn hidden_loss_gradients_match_finite_differences() {
    let dev = Device::flex().autodiff();
    for (ds, dt) in [(5, 5), (4, 6)] {
        for loss in LOSSES {
            let proj = HiddenProjection::new(PAIRS, ds, dt, 23, &dev);
            let c = case(ds, dt, &proj, 5);
            let s: Vec<Tensor<3>> = c.s.iter().map(|v| tensor3(v, &c, ds, &dev).require_grad()).collect();
            let t: Vec<Tensor<3>> = c.t.iter().map(|v| tensor3(v, &c, dt, &dev).require_grad()).collect();
            let grads = hidden_loss(&s, &t, &proj, mask(&c, &dev), loss).backward();
            let n = c.b * c.l;
            for k in 0..PAIRS {
                let gs = values(s[k].grad(&grads).expect("student states get a gradient"));
                // Entries of tokens 0, 1, 3 and 4 (weight 0.5); token 2 is padding.
                for idx in [0, ds + 3, 3 * ds + 1, 4 * ds + 2, n * ds - ds - 1] {
                    let fd = finite_difference(&c, loss, |c| &mut c.s[k][idx]);
                    assert!(close(gs[idx], fd), "{loss:?} {ds}->{dt} d/ds[{k}][{idx}]: {} vs {fd}", gs[idx]);
                }
                assert!(gs[2 * ds..3 * ds].iter().chain(&gs[5 * ds..]).all(|g| *g == 0.0), "padding");
                assert!(t[k].grad(&grads).is_none_or(|g| values(g).iter().all(|x| *x == 0.0)), "teacher");
                if let Some(maps) = &proj.maps {
                    let gw = values(maps[k].weight.grad(&grads).expect("projection weights get a gradient"));
                    for idx in [0, 7, dt + 2, 2 * dt + 5, ds * dt - 1] {
                        let fd = finite_difference(&c, loss, |c| &mut c.w.as_mut().unwrap()[k][idx]);
                        assert!(close(gw[idx], fd), "{loss:?} {ds}->{dt} d/dW[{k}][{idx}]: {} vs {fd}", gw[idx]);
                    }
                }
            }
        }
    }
}

/// The projection: seeded, Xavier-uniform bounded, one map per pair, none for equal widths.
#[test]
fn projection_is_seeded_and_xavier_uniform() {
    let dev = Device::flex();
    let w = |seed: u64| -> Vec<Vec<f64>> {
        let p = HiddenProjection::new(3, 8, 24, seed, &dev);
        p.maps.unwrap().iter().map(|m| values(m.weight.val())).collect()
    };
    let (a, b) = (w(1), w(1));
    assert_eq!(a, b);
    assert_ne!(a, w(2));
    assert_eq!(a.len(), 3);
    assert_ne!(a[0], a[1], "each pair has its own map");
    let bound = (6.0f64 / 32.0).sqrt();
    let all: Vec<f64> = a.concat();
    assert_eq!(all.len(), 3 * 8 * 24);
    assert!(all.iter().all(|x| x.abs() <= bound) && all.iter().any(|x| x.abs() > 0.9 * bound));
    assert!(HiddenProjection::new(3, 16, 16, 1, &dev).maps.is_none());
}

#[test]
fn uniform_pairs_keep_the_relative_depth() {
    let u = |s, t| resolve_pairs(&LayerPairs::Uniform, s, t).unwrap();
    let teacher_of = |s, t| u(s, t).into_iter().map(|(_, b)| b).collect::<Vec<_>>();
    assert_eq!(u(15, 30).iter().map(|p| p.0).collect::<Vec<_>>(), (0..15).collect::<Vec<_>>());
    assert_eq!(teacher_of(15, 30), [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29]);
    assert_eq!(u(30, 30), (0..30).map(|i| (i, i)).collect::<Vec<_>>());
    assert_eq!(u(2, 4), [(0, 1), (1, 3)]);
    // 8/3 = 2.67, 16/3 = 5.33, 8; halves round up (1.5, 4.5); a deeper student repeats blocks.
    assert_eq!(teacher_of(3, 8), [2, 4, 7]);
    assert_eq!(teacher_of(4, 6), [1, 2, 4, 5]);
    assert_eq!(teacher_of(3, 2), [0, 0, 1]);
    assert_eq!(teacher_of(4, 1), [0, 0, 0, 0]);
}

#[test]
fn explicit_pairs_are_checked() {
    let e = |p: Vec<[usize; 2]>, s, t| resolve_pairs(&LayerPairs::Explicit(p), s, t);
    assert_eq!(e(vec![[14, 29], [0, 3]], 15, 30).unwrap(), [(14, 29), (0, 3)]);
    let err = e(vec![[0, 1], [15, 2]], 15, 30).unwrap_err();
    assert!(err.contains("[15, 2]") && err.contains("student has 15 layers"), "{err}");
    let err = e(vec![[3, 30]], 15, 30).unwrap_err();
    assert!(err.contains("[3, 30]") && err.contains("teacher has 30 layers"), "{err}");
    let err = e(vec![[1, 2], [1, 2]], 15, 30).unwrap_err();
    assert!(err.contains("[1, 2] is listed twice"), "{err}");
    assert!(e(vec![], 15, 30).unwrap_err().contains("empty"));
    assert!(resolve_pairs(&LayerPairs::Uniform, 0, 30).unwrap_err().contains("student has 0"));
}

#[test]
fn section_reads_both_forms_of_pairs() {
    let read = |s: &str| toml::from_str::<HiddenSection>(s);
    assert_eq!(read("").unwrap(), HiddenSection::default());
    assert_eq!(
        HiddenSection::default(),
        HiddenSection { weight: 0.0, pairs: LayerPairs::Uniform, loss: HiddenLoss::Mse }
    );
    let u = read("weight = 0.5\npairs = \"uniform\"\nloss = \"cosine\"").unwrap();
    assert_eq!(u, HiddenSection { weight: 0.5, pairs: LayerPairs::Uniform, loss: HiddenLoss::Cosine });
    let x = read("weight = 1.0\npairs = [[0, 1], [3, 7]]").unwrap();
    assert_eq!(x.pairs, LayerPairs::Explicit(vec![[0, 1], [3, 7]]));
    assert_eq!(x.loss, HiddenLoss::Mse);
    for section in [u, x] {
        assert_eq!(read(&toml::to_string(&section).unwrap()).unwrap(), section);
    }
    for bad in [
        "pairs = \"all\"",
        "pairs = [[1, 2, 3]]",
        "pairs = [[1]]",
        "pairs = [[-1, 2]]",
        "pairs = 3",
        "loss = \"l1\"",
        "weigth = 1.0",
    ] {
        assert!(read(bad).is_err(), "{bad}");
    }
    let err = read("pairs = [[0, 1], [1, 2, 3]]").unwrap_err().to_string();
    assert!(err.contains("pair [1, 2, 3]: expected [student_layer, teacher_layer]"), "{err}");
    let err = read("pairs = \"all\"").unwrap_err().to_string();
    assert!(err.contains("\"uniform\" or an array of [student_layer, teacher_layer] pairs"), "{err}");
}
