use super::*;
use burn::tensor::{Device, Distribution};

fn host<const D: usize>(x: Tensor<D>) -> Vec<f64> {
    x.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
}

/// A linear layer's weight `[d_in, d_out]` (burn's layout) as f64 rows.
fn w(l: &Linear) -> (Vec<f64>, usize) {
    let dims = l.weight.dims();
    (host(l.weight.val()), dims[1])
}

fn mat_vec((m, cols): &(Vec<f64>, usize), x: &[f64]) -> Vec<f64> {
    (0..*cols).map(|j| x.iter().enumerate().map(|(i, xi)| xi * m[i * cols + j]).sum()).collect()
}

fn swiglu(e: &[(Vec<f64>, usize); 3], x: &[f64]) -> Vec<f64> {
    let (g, u) = (mat_vec(&e[0], x), mat_vec(&e[1], x));
    let h: Vec<f64> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
    mat_vec(&e[2], &h)
}

/// The layer in plain f64 loops, from its weights: per token the router's softmax, its top-k
/// (largest first), gates renormalized over them, and the gated sum of the chosen experts;
/// then the load-balancing loss `E * sum_i f_i P_i`. Returns (y, aux, chosen experts).
fn naive(
    router: &(Vec<f64>, usize),
    experts: &[[(Vec<f64>, usize); 3]],
    k: usize,
    x: &[f64],
    d: usize,
) -> (Vec<f64>, f64, Vec<usize>) {
    let e = experts.len();
    let n = x.len() / d;
    let (mut y, mut counts, mut mean_p, mut chosen) = (vec![0.0; n * d], vec![0.0; e], vec![0.0; e], Vec::new());
    for t in 0..n {
        let xt = &x[t * d..(t + 1) * d];
        let logits = mat_vec(router, xt);
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
        let p: Vec<f64> = logits.iter().map(|l| (l - m).exp() / z).collect();
        let mut ids: Vec<usize> = (0..e).collect();
        ids.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        ids.truncate(k);
        let gsum: f64 = ids.iter().map(|&i| p[i]).sum();
        for &i in &ids {
            let out = swiglu(&experts[i], xt);
            for c in 0..d {
                y[t * d + c] += p[i] / gsum * out[c];
            }
            counts[i] += 1.0;
        }
        for i in 0..e {
            mean_p[i] += p[i] / n as f64;
        }
        chosen.extend(ids);
    }
    let aux = e as f64 * (0..e).map(|i| counts[i] / (n * k) as f64 * mean_p[i]).sum::<f64>();
    (y, aux, chosen)
}

fn layer(d: usize, e: usize, k: usize, ff: usize, seed: u64, dev: &Device) -> Moe {
    let s = MoeShape { experts: e, active: k, d_ff_expert: ff, every: 1, router_aux_loss: 0.01, upcycle_noise: 0.01 };
    let mut init = Init::new(seed, dev);
    let mut m = Moe::new("mlp", d, &s, &mut init);
    // A sharper router than the default init, so that the top-k choices are well apart.
    m.router.weight = burn::module::Param::from_tensor(m.router.weight.val().mul_scalar(4.0));
    m
}

type Expert = [(Vec<f64>, usize); 3];

fn weights(m: &Moe) -> ((Vec<f64>, usize), Vec<Expert>) {
    (w(&m.router), m.experts.iter().map(|x| [w(&x.w_gate), w(&x.w_up), w(&x.w_down)]).collect())
}

/// Routing, gates, output and the auxiliary loss against the loops above.
#[test]
fn moe_matches_naive_routing_and_aux_loss() {
    let dev = Device::flex();
    let (b, t, d, e, k) = (2, 5, 6, 4, 2);
    let m = layer(d, e, k, 5, 1, &dev);
    let x = Tensor::<3>::random([b, t, d], Distribution::Normal(0.0, 1.0), &dev);
    let (router, experts) = weights(&m);
    let (want_y, want_aux, chosen) = naive(&router, &experts, k, &host(x.clone()), d);
    let (y, r) = m.forward(x);
    let got = host(y);
    let err = got.iter().zip(&want_y).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(err < 1e-5, "max |y - naive| {err}");
    let aux = host(r.aux)[0];
    assert!((aux - want_aux).abs() < 1e-5, "aux {aux} vs {want_aux}");
    let mut counts = vec![0.0; e];
    chosen.iter().for_each(|&c| counts[c] += 1.0 / (b * t * k) as f64);
    assert_eq!(
        r.load.iter().map(|x| (x * 1e9).round()).collect::<Vec<_>>(),
        counts.iter().map(|x| (x * 1e9).round()).collect::<Vec<_>>()
    );
    assert!(counts.iter().filter(|&&c| c > 0.0).count() > 1, "the test should route to several experts");
}

/// Gradients of `sum(y * R) + aux` with respect to the router, an expert and the input,
/// against central differences of the naive layer (the choices stay put at this step size).
#[test]
fn moe_gradients_match_finite_differences() {
    let dev = Device::flex().autodiff();
    let (b, t, d, e, k) = (1, 4, 4, 3, 2);
    let m = layer(d, e, k, 3, 5, &Device::flex());
    struct Ad<'a>(&'a Device);
    impl burn::module::ModuleMapper for Ad<'_> {
        fn map_float<const D: usize>(&mut self, p: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
            let d = self.0;
            p.map(|t| t.to_device(d).autodiff()).set_require_grad(true)
        }
    }
    let m = m.map(&mut Ad(&dev));
    let x0 = Tensor::<3>::random([b, t, d], Distribution::Normal(0.0, 1.0), &Device::flex());
    let r0 = Tensor::<3>::random([b, t, d], Distribution::Normal(0.0, 1.0), &Device::flex());
    let x = x0.clone().to_device(&dev).autodiff().require_grad();
    let (y, r) = m.forward(x.clone());
    let loss = (y * r0.clone().to_device(&dev)).sum() + r.aux;
    let grads = loss.backward();
    let g_router = host(m.router.weight.grad(&grads).unwrap());
    let g_up = host(m.experts[1].w_up.weight.grad(&grads).unwrap());
    let g_x = host(x.grad(&grads).unwrap());
    let (router, experts) = weights(&m);
    let (xs, rs) = (host(x0), host(r0));
    let f = |router: &(Vec<f64>, usize), experts: &[[(Vec<f64>, usize); 3]], x: &[f64]| {
        let (y, aux, _) = naive(router, experts, k, x, d);
        y.iter().zip(&rs).map(|(a, b)| a * b).sum::<f64>() + aux
    };
    let h = 1e-4;
    let check = |what: &str, got: &[f64], n: usize, at: &dyn Fn(usize, f64) -> f64| {
        for (i, g) in got.iter().enumerate().take(n) {
            let want = (at(i, h) - at(i, -h)) / (2.0 * h);
            assert!((g - want).abs() < 2e-3 * (1.0 + want.abs()), "{what}[{i}]: {g} vs {want}");
        }
    };
    check("router", &g_router, router.0.len(), &|i, dh| {
        let mut r = router.clone();
        r.0[i] += dh;
        f(&r, &experts, &xs)
    });
    check("expert 1 up", &g_up, experts[1][1].0.len(), &|i, dh| {
        let mut ex = experts.clone();
        ex[1][1].0[i] += dh;
        f(&router, &ex, &xs)
    });
    check("x", &g_x, xs.len(), &|i, dh| {
        let mut xx = xs.clone();
        xx[i] += dh;
        f(&router, &experts, &xx)
    });
    assert!(g_router.iter().any(|g| g.abs() > 1e-4), "the router must get a gradient");
}

/// One expert chosen by k = 1 is the dense FFN it holds: gate 1, every token through it.
#[test]
fn one_expert_with_k_1_is_the_dense_ffn() {
    let dev = Device::flex();
    let d = 8;
    let mut m = layer(d, 1, 1, 12, 2, &dev);
    let dense = SwiGlu::new("mlp", d, 12, &mut Init::new(9, &dev));
    m.experts[0] = dense.clone();
    let x = Tensor::<3>::random([2, 3, d], Distribution::Normal(0.0, 1.0), &dev);
    let (y, r) = m.forward(x.clone());
    let (a, b) = (host(y), host(dense.forward(x)));
    let err = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
    assert!(err < 1e-6, "{err}");
    assert_eq!(r.load, vec![1.0]);
    assert!((host(r.aux)[0] - 1.0).abs() < 1e-6, "one expert is perfectly balanced");
}

/// Upcycled experts start as the dense FFN plus a little noise: each close to it, no two alike.
#[test]
fn upcycled_experts_copy_the_dense_ffn_with_noise() {
    let dev = Device::flex();
    let dense = SwiGlu::new("mlp", 8, 16, &mut Init::new(3, &dev));
    let s = MoeShape { experts: 3, active: 2, d_ff_expert: 16, every: 1, router_aux_loss: 0.01, upcycle_noise: 0.01 };
    let m = upcycle("mlp", &dense, 8, &s, &mut Init::new(4, &dev));
    let base = host(dense.w_up.weight.val());
    let rms = (base.iter().map(|x| x * x).sum::<f64>() / base.len() as f64).sqrt();
    let ups: Vec<Vec<f64>> = m.experts.iter().map(|x| host(x.w_up.weight.val())).collect();
    for u in &ups {
        let dev_rms = (u.iter().zip(&base).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / base.len() as f64).sqrt();
        assert!(dev_rms > 0.005 * rms && dev_rms < 0.02 * rms, "noise {dev_rms} vs weight rms {rms}");
    }
    assert_ne!(ups[0], ups[1]);
}

/// Upcycling a dense decoder without noise keeps its function exactly (every expert the same
/// FFN, gates summing to 1), in the layers `every` names only.
#[test]
fn upcycled_decoder_without_noise_computes_the_dense_model() {
    use crate::model::{DecoderConfig, ModelShape};
    use burn::tensor::Int;
    let dev = Device::flex();
    let dense = DecoderConfig { vocab_size: 30, shape: ModelShape::for_tests(16, 4, 2, 1, 24) }.init(5, &dev);
    let ids =
        Tensor::<2, Int>::from_data(TensorData::new((0..12i64).map(|i| i * 7 % 30).collect::<Vec<_>>(), [2, 6]), &dev);
    let want = host(dense.forward(ids.clone()));
    let s = MoeShape { experts: 3, active: 2, d_ff_expert: 24, every: 2, router_aux_loss: 0.01, upcycle_noise: 0.0 };
    let m = upcycle_decoder(dense, &s, 1);
    let kinds: Vec<bool> = m.blocks.iter().map(|b| b.mlp.is_none()).collect();
    assert_eq!(kinds, vec![false, true, false, true]);
    let got = host(m.forward(ids));
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(err < 1e-5, "{err}");
}
