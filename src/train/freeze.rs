//! `student.freeze`: parameter groups of a loaded student that keep their loaded values. A
//! frozen parameter is on the autodiff device without `require_grad`: no gradient is formed
//! for it, the optimizer neither moves nor decays it, and checkpoints still carry it (so a
//! resume restores it exactly as any other).

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor};

use crate::model::Decoder;

/// The groups `student.freeze` names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Freeze {
    pub embedding: bool,
    pub lm_head: bool,
    pub norms: bool,
    /// Half-open ranges of block indices, as written: "layers 0..4" is blocks 0, 1, 2, 3.
    pub layers: Vec<std::ops::Range<usize>>,
}

impl Freeze {
    /// Parse the recipe's list; an unknown item is an error naming it and the accepted forms.
    pub fn parse(items: &[String]) -> std::result::Result<Freeze, String> {
        let mut f = Freeze::default();
        for item in items {
            match item.trim() {
                "embedding" => f.embedding = true,
                "lm_head" => f.lm_head = true,
                "norms" => f.norms = true,
                other => {
                    let range = other.strip_prefix("layers").map(str::trim).and_then(|r| {
                        let (a, b) = r.split_once("..")?;
                        Some(a.trim().parse::<usize>().ok()?..b.trim().parse::<usize>().ok()?)
                    });
                    match range {
                        Some(r) if r.start < r.end => f.layers.push(r),
                        _ => {
                            return Err(format!(
                                "{other:?}: expected \"embedding\", \"lm_head\", \"norms\" or \"layers i..j\" (blocks i to j-1, i < j)"
                            ));
                        }
                    }
                }
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        *self == Freeze::default()
    }

    /// The largest block index named plus one (0 if none): must not exceed the model's depth.
    pub fn layers_end(&self) -> usize {
        self.layers.iter().map(|r| r.end).max().unwrap_or(0)
    }

    /// Whether the parameter at `path` (module names from the root: "embed", "blocks", "3",
    /// "mixer_norm", ...) is frozen.
    fn frozen(&self, path: &[String]) -> bool {
        // A Performer's random features are drawn, never trained.
        if path.last().is_some_and(|p| p == "omega") {
            return true;
        }
        let top = path.first().map(String::as_str);
        match top {
            Some("embed") => self.embedding,
            Some("lm_head") => self.lm_head,
            Some("norm") => self.norms,
            Some("blocks") => {
                let i = path.get(1).and_then(|s| s.parse::<usize>().ok());
                let in_layers = i.is_some_and(|i| self.layers.iter().any(|r| r.contains(&i)));
                let is_norm = path.iter().any(|p| p == "mixer_norm" || p == "mlp_norm");
                in_layers || (self.norms && is_norm)
            }
            _ => false,
        }
    }
}

/// `model` on the autodiff `device`, ready to train: every parameter tracked except the
/// frozen ones.
pub fn trainable(model: Decoder, freeze: &Freeze, device: &Device) -> Decoder {
    struct Mark<'a> {
        path: Vec<String>,
        freeze: &'a Freeze,
        device: &'a Device,
    }
    impl ModuleMapper for Mark<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let train = !self.freeze.frozen(&self.path);
            let device = self.device;
            // A parameter made on the autodiff device is a leaf already: moving it would make
            // it an op's output, which cannot be tracked.
            p.map(|t| if t.is_autodiff() { t } else { t.to_device(device).autodiff() }).set_require_grad(train)
        }
    }
    model.map(&mut Mark { path: Vec::new(), freeze, device })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DecoderConfig;
    use crate::model::config::ModelShape;
    use burn::module::ModuleVisitor;

    #[test]
    fn groups_parse_and_bad_items_are_named() {
        let f = Freeze::parse(&["embedding".into(), "norms".into(), "layers 1..3".into()]).unwrap();
        assert_eq!(f, Freeze { embedding: true, lm_head: false, norms: true, layers: vec![1..3] });
        assert_eq!(f.layers_end(), 3);
        for bad in ["layer 1..2", "layers 3..3", "layers a..2", "heads"] {
            let e = Freeze::parse(&[bad.into()]).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    /// After a backward pass exactly the unfrozen parameters have gradients: the embedding,
    /// every norm gain and blocks 1..2 have none; the head and block 0's matrices do.
    #[test]
    fn frozen_parameters_get_no_gradient() {
        let dev = Device::flex();
        let ad = dev.clone().autodiff();
        let cfg = DecoderConfig { vocab_size: 32, shape: ModelShape::for_tests(16, 3, 4, 2, 32) };
        let model = cfg.init(3, &dev);
        let f = Freeze::parse(&["embedding".into(), "norms".into(), "layers 1..3".into()]).unwrap();
        let m = trainable(model, &f, &ad);
        let ids = crate::model::token_tensor(&[1, 5, 7, 2], &ad);
        let grads = burn::optim::GradientsParams::from_grads(m.forward(ids).sum().backward(), &m);
        struct Seen<'a> {
            path: Vec<String>,
            grads: &'a burn::optim::GradientsParams,
            with: Vec<String>,
            without: Vec<String>,
        }
        impl ModuleVisitor for Seen<'_> {
            fn enter_module(&mut self, name: &str, _c: &str) {
                self.path.push(name.to_string());
            }
            fn exit_module(&mut self, _n: &str, _c: &str) {
                self.path.pop();
            }
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                let name = self.path.join(".");
                match self.grads.get::<D>(p.id) {
                    Some(_) => self.with.push(name),
                    None => self.without.push(name),
                }
            }
        }
        let mut s = Seen { path: vec![], grads: &grads, with: vec![], without: vec![] };
        m.visit(&mut s);
        assert!(s.without.iter().any(|n| n.starts_with("embed")), "{:?}", s.without);
        assert!(s.without.iter().any(|n| n.starts_with("norm")), "{:?}", s.without);
        assert!(s.without.iter().all(|n| !n.starts_with("lm_head")), "{:?}", s.without);
        for n in &s.with {
            assert!(!n.starts_with("embed") && !n.contains("norm"), "{n} should be frozen");
            assert!(n.starts_with("lm_head") || n.starts_with("blocks.0."), "{n} should be frozen");
        }
        assert!(s.with.iter().any(|n| n.starts_with("blocks.0.mlp")), "{:?}", s.with);
    }
}
