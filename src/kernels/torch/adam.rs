//! The optimizer's work as PyTorch kernels: AdamW over one flat state of all parameters
//! ([`flat_adamw`]), per parameter ([`adamw_update`], when the flat step does not apply), and the
//! global gradient norm ([`sum_squares`]). Tested against the reference optimizer in
//! train/adamw.rs.

use burn::module::ParamId;
use burn::tensor::Tensor;
use burn_tch::{LibTorch, TchTensor};

/// What one AdamW update of a parameter needs (see train/adamw.rs for the arithmetic).
#[derive(Debug, Clone, Copy)]
pub struct AdamHyper {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Adam's step count, from 1.
    pub t: i32,
    pub lr: f64,
    pub grad_scale: f64,
    pub decay: f64,
}

/// One parameter as the flat optimizer takes it: its value and gradient (plain LibTorch
/// tensors) and whether weight decay applies.
pub struct FlatInput {
    pub id: ParamId,
    pub x: TchTensor,
    pub g: TchTensor,
    pub decayed: bool,
}

/// AdamW's state as three flat f32 buffers, the parameters laid end to end (the decayed ones
/// first): the update of every parameter is a dozen kernels over all of them, where a
/// per-parameter update launches eight per parameter (PyTorch's multi-tensor `_foreach` and
/// fused AdamW do the same thing; tch binds neither). The parameters the step returns are views
/// of the new flat weights, so the next step reads them without a copy.
pub struct FlatAdam {
    ids: Vec<ParamId>,
    decayed: Vec<bool>,
    shapes: Vec<Vec<i64>>,
    offsets: Vec<i64>,
    /// Elements of the decayed parameters (they come first).
    split: i64,
    m: TchTensor,
    v: TchTensor,
    x: TchTensor,
}

/// What a flat step gives back: each parameter's new value, and the moments as per-parameter
/// views when the flat state was (re)built (the optimizer's state file reads those).
pub struct FlatOut {
    pub params: Vec<(ParamId, TchTensor)>,
    pub moments: Option<Vec<(ParamId, TchTensor, TchTensor)>>,
}

impl FlatAdam {
    /// The same parameters in the same layout as this state.
    fn fits(&self, inputs: &[FlatInput]) -> bool {
        inputs.len() == self.ids.len()
            && inputs
                .iter()
                .zip(self.ids.iter().zip(&self.decayed).zip(&self.shapes))
                .all(|(i, ((id, d), s))| i.id == *id && i.decayed == *d && i.x.tensor.size() == *s)
    }

    /// Every parameter is still the view of the flat weights this state handed out.
    fn params_are_views(&self, inputs: &[FlatInput]) -> bool {
        let base = self.x.tensor.data_ptr() as usize;
        inputs
            .iter()
            .zip(&self.offsets)
            .all(|(i, off)| i.x.tensor.data_ptr() as usize == base + 4 * *off as usize && i.x.tensor.is_contiguous())
    }

    fn view(flat: &TchTensor, off: i64, shape: &[i64]) -> TchTensor {
        let n: i64 = shape.iter().product();
        TchTensor::partial(flat.tensor.narrow(0, off, n).view(shape), flat.storage.clone())
    }
}

/// One AdamW step of every parameter on the flat state (built, or rebuilt when the parameters
/// changed, from `moments`: a parameter's current `(m, v)` if it has any). `None` when a
/// tensor is not an f32 LibTorch tensor: the caller's per-parameter path takes over.
pub fn flat_adamw(
    state: &mut Option<FlatAdam>,
    mut inputs: Vec<FlatInput>,
    moments: impl Fn(ParamId) -> Option<(Tensor<1>, Tensor<1>)>,
    h: AdamHyper,
) -> Option<FlatOut> {
    let f32s = |t: &TchTensor| t.tensor.kind() == tch::Kind::Float;
    if inputs.is_empty() || !inputs.iter().all(|i| f32s(&i.x) && f32s(&i.g)) {
        return None;
    }
    inputs.sort_by_key(|i| !i.decayed);
    let flat = |ts: Vec<tch::Tensor>| tch::Tensor::cat(&ts, 0);
    let rebuilt = !state.as_ref().is_some_and(|s| s.fits(&inputs));
    if rebuilt {
        let opts = (tch::Kind::Float, inputs[0].x.tensor.device());
        let (mut ms, mut vs) = (Vec::new(), Vec::new());
        for i in &inputs {
            let n = i.x.tensor.numel() as i64;
            let prim = |t: Tensor<1>| t.try_into_primitive::<LibTorch>().ok().map(|p| p.tensor.reshape([-1]));
            match moments(i.id).map(|(m, v)| (prim(m), prim(v))) {
                Some((Some(m), Some(v))) => (ms.push(m), vs.push(v)),
                _ => (ms.push(tch::Tensor::zeros([n], opts)), vs.push(tch::Tensor::zeros([n], opts))),
            };
        }
        let mut offsets = Vec::with_capacity(inputs.len());
        let mut off = 0i64;
        for i in &inputs {
            offsets.push(off);
            off += i.x.tensor.numel() as i64;
        }
        let split = inputs.iter().zip(&offsets).filter(|(i, _)| i.decayed).map(|(i, o)| o + i.x.tensor.numel() as i64);
        let s = FlatAdam {
            ids: inputs.iter().map(|i| i.id).collect(),
            decayed: inputs.iter().map(|i| i.decayed).collect(),
            shapes: inputs.iter().map(|i| i.x.tensor.size()).collect(),
            split: split.max().unwrap_or(0),
            offsets,
            m: TchTensor::new(flat(ms)),
            v: TchTensor::new(flat(vs)),
            // Never read: `params_are_views` fails against an empty buffer.
            x: TchTensor::new(tch::Tensor::zeros([0], opts)),
        };
        *state = Some(s);
    }
    let s = state.as_mut().expect("built above");
    let x = match s.params_are_views(&inputs) {
        true => s.x.tensor.shallow_clone(),
        false => flat(inputs.iter().map(|i| i.x.tensor.reshape([-1])).collect()),
    };
    let mut g = flat(inputs.iter().map(|i| i.g.tensor.reshape([-1])).collect());
    if h.grad_scale != 1.0 {
        let _ = g.g_mul_scalar_(h.grad_scale);
    }
    // The arithmetic of the per-parameter update below, kernel for kernel.
    let (mut m, mut v) = (s.m.tensor.shallow_clone(), s.v.tensor.shallow_clone());
    let _ = m.lerp_(&g, 1.0 - h.beta1);
    let _ = g.square_();
    let _ = v.lerp_(&g, 1.0 - h.beta2);
    drop(g);
    let (bc1, bc2) = (1.0 - h.beta1.powi(h.t), 1.0 - h.beta2.powi(h.t));
    let mut denom = &v / bc2;
    let _ = denom.sqrt_();
    let _ = denom.g_add_scalar_(h.eps);
    let _ = denom.g_mul_scalar_(-bc1 / h.lr);
    let n = x.size()[0];
    let mut nx = match h.decay != 1.0 {
        true => {
            let nx = &x * h.decay;
            if s.split < n {
                nx.narrow(0, s.split, n - s.split).copy_(&x.narrow(0, s.split, n - s.split));
            }
            nx
        }
        false => x.copy(),
    };
    let _ = nx.addcdiv_(&m, &denom);
    s.x = TchTensor::new(nx);
    let params = s
        .ids
        .iter()
        .zip(s.offsets.iter().zip(&s.shapes))
        .map(|(id, (off, shape))| (*id, FlatAdam::view(&s.x, *off, shape)));
    let views = |t: &TchTensor| {
        s.offsets
            .iter()
            .zip(&s.shapes)
            .map(|(off, shape)| FlatAdam::view(t, *off, &[shape.iter().product()]))
            .collect::<Vec<_>>()
    };
    let moments = rebuilt
        .then(|| s.ids.iter().zip(views(&s.m).into_iter().zip(views(&s.v))).map(|(id, (m, v))| (*id, m, v)).collect());
    Some(FlatOut { params: params.collect(), moments })
}

/// The AdamW update of LibTorch parameter `x` (plain) with gradient `g` as eight PyTorch kernels:
/// the moments `(m, v)` are updated in place, or made (and returned) on the first step. `None`
/// when the tensors live on another backend.
pub fn adamw_update<const D: usize>(
    x: &Tensor<D>,
    g: &Tensor<D>,
    moments: Option<(&Tensor<1>, &Tensor<1>)>,
    h: AdamHyper,
) -> Option<(Tensor<D>, Option<(Tensor<1>, Tensor<1>)>)> {
    let (px, pg) = (x.clone().try_into_primitive::<LibTorch>().ok()?, g.clone().try_into_primitive::<LibTorch>().ok()?);
    let size = px.tensor.size();
    let mut gt = pg.tensor.reshape([-1]);
    if h.grad_scale != 1.0 {
        gt *= h.grad_scale;
    }
    let (f1, f2) = (1.0 - h.beta1, 1.0 - h.beta2);
    let prim =
        |t: &Tensor<1>| t.clone().try_into_primitive::<LibTorch>().expect("moments live with the parameter").tensor;
    let (m, v, fresh) = match moments {
        Some((m, v)) => {
            // m <- m + (1 - b1)(g - m), v <- v + (1 - b2)(g^2 - v): Adam's moments, in place.
            let (mut m, mut v) = (prim(m), prim(v));
            let _ = m.lerp_(&gt, f1);
            let _ = v.lerp_(&gt.square(), f2);
            (m, v, None)
        }
        None => {
            let (m, v) = (&gt * f1, gt.square() * f2);
            let wrap = |t: &tch::Tensor| Tensor::from_primitive::<LibTorch>(TchTensor::new(t.shallow_clone()));
            let fresh = (wrap(&m), wrap(&v));
            (m, v, Some(fresh))
        }
    };
    let (bc1, bc2) = (1.0 - h.beta1.powi(h.t), 1.0 - h.beta2.powi(h.t));
    // x decay - lr / bc1 * m / (sqrt(v / bc2) + eps), as x + m / denom with the sign and the
    // scale folded into denom.
    let mut denom = (v / bc2).sqrt();
    let _ = denom.g_add_scalar_(h.eps);
    let _ = denom.g_mul_scalar_(-bc1 / h.lr);
    let mut base = if h.decay != 1.0 { &px.tensor * h.decay } else { px.tensor.copy() };
    let _ = base.addcdiv_(&m.view(size.as_slice()), &denom.view(size.as_slice()));
    Some((Tensor::from_primitive::<LibTorch>(TchTensor::new(base)), fresh))
}

/// The sum of squares of LibTorch tensors `[1]`, as one concatenation and one dot product (two
/// kernels, not one per tensor); `None` when any tensor lives elsewhere.
pub fn sum_squares(all: &[Tensor<1>]) -> Option<Tensor<1>> {
    let flat = all
        .iter()
        .map(|g| g.clone().try_into_primitive::<LibTorch>().ok().map(|t| t.tensor.to_kind(tch::Kind::Float)))
        .collect::<Option<Vec<tch::Tensor>>>()?;
    if flat.is_empty() {
        return None;
    }
    let g = tch::Tensor::cat(&flat, 0);
    Some(Tensor::from_primitive::<LibTorch>(TchTensor::new(g.dot(&g).reshape([1]))))
}
