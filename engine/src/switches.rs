//! The environment switches the engine reads: every one of them is here,
//! read once, and a malformed value is an error.
//!
//! - `ORTHRUS_CUDA_KERNELS=off`: ggml-cuda's own kernels instead of ours
//!   (`kernels/cuda/`) for every product and attention, to compare or to
//!   rule ours out when something looks wrong (`on`, the default).
//! - `ORTHRUS_ATTN=plain`: attention as matmul, softmax, matmul instead of
//!   ggml's fused kernel, a diagnostic for a backend whose fused kernel
//!   misbehaves (`fused`, the default).
//! - `ORTHRUS_STEP=apart`: a greedy decoding step runs its diffusion and
//!   verify passes as two graphs, the drafts going through the host between
//!   them, instead of one graph (`one`, the default): to compare the two.
//!
//! Two build-time settings of the `cuda` feature are read by CMake, not
//! here: `ORTHRUS_CUDA_NATIVE` and `ORTHRUS_GGML_CUDA_MODULE` (see
//! `docs/cuda-build.md`).

use std::sync::OnceLock;

use crate::EngineError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switches {
    /// Whether our CUDA kernels may run (where ggml-cuda was built with them).
    pub cuda_kernels: bool,
    /// Whether attention avoids ggml's fused kernel.
    pub plain_attention: bool,
    /// Whether a greedy step's two passes run as two graphs.
    pub steps_apart: bool,
}

pub const CUDA_KERNELS: &str = "ORTHRUS_CUDA_KERNELS";
pub const ATTN: &str = "ORTHRUS_ATTN";
pub const STEP: &str = "ORTHRUS_STEP";

impl Switches {
    /// The switches of this process, read from the environment on the first
    /// call.
    pub fn get() -> Result<Switches, EngineError> {
        static READ: OnceLock<Result<Switches, String>> = OnceLock::new();
        READ.get_or_init(|| Switches::parse(|k| std::env::var(k).ok()))
            .clone()
            .map_err(EngineError::Usage)
    }

    /// The switches from `var` (the environment, or a test's).
    pub fn parse(var: impl Fn(&str) -> Option<String>) -> Result<Switches, String> {
        let pick = |name: &str, values: [&str; 2]| -> Result<bool, String> {
            match var(name) {
                None => Ok(false),
                Some(v) if v.is_empty() || v == values[0] => Ok(false),
                Some(v) if v == values[1] => Ok(true),
                Some(v) => Err(format!(
                    "{name}={v:?} is not a setting: use {} (the default) or {}",
                    values[0], values[1]
                )),
            }
        };
        Ok(Switches {
            cuda_kernels: !pick(CUDA_KERNELS, ["on", "off"])?,
            plain_attention: pick(ATTN, ["fused", "plain"])?,
            steps_apart: pick(STEP, ["one", "apart"])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Switches, String> {
        Switches::parse(|k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_settings_and_malformed_values() {
        let default = Switches {
            cuda_kernels: true,
            plain_attention: false,
            steps_apart: false,
        };
        assert_eq!(parse(&[]), Ok(default));
        assert_eq!(
            parse(&[(CUDA_KERNELS, ""), (ATTN, "fused"), (STEP, "one")]),
            Ok(default)
        );
        let off = parse(&[(CUDA_KERNELS, "off"), (ATTN, "plain"), (STEP, "apart")]).unwrap();
        assert!(!off.cuda_kernels && off.plain_attention && off.steps_apart);
        for bad in ["0", "1", "OFF", "of"] {
            let e = parse(&[(CUDA_KERNELS, bad)]).unwrap_err();
            assert!(
                e.contains("ORTHRUS_CUDA_KERNELS") && e.contains("off"),
                "{e}"
            );
        }
        assert!(parse(&[(ATTN, "flash")]).is_err());
        assert!(parse(&[(STEP, "two")]).is_err());
    }
}
