//! Any bytes given to the converter's checkpoint readers must give `Ok` or
//! `Err`: never a panic, an overflow or a runaway allocation. An input that
//! starts with `{` is a `config.json` (read with itself as
//! `generation_config.json`), anything else a safetensors file (header
//! length, JSON header, data).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use orthrus_convert::hf::config::ModelConfig;
use orthrus_convert::hf::safetensors::{header_len, parse_header};

fuzz_target!(|data: &[u8]| {
    if data.first() == Some(&b'{') {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
            return;
        };
        let gen = Path::new("generation_config.json");
        for gen in [None, Some((gen, &json))] {
            if let Ok(cfg) = ModelConfig::from_json(Path::new("config.json"), &json, gen) {
                // Accepted values are within what a GGUF key holds.
                assert!(cfg.num_layers <= u64::from(u32::MAX));
                assert!(cfg.context_length <= u64::from(u32::MAX));
                assert!(cfg.rms_norm_eps > 0.0 && cfg.rope_theta.is_finite());
            }
        }
        return;
    }
    let file_len = data.len() as u64;
    let Some(len_bytes) = data.get(..8) else {
        return;
    };
    let Ok(n) = header_len(len_bytes.try_into().unwrap(), file_len) else {
        return;
    };
    let Ok(tensors) = parse_header(&data[8..8 + n as usize], file_len) else {
        return;
    };
    for (_, t) in &tensors {
        // Within the file, so these cannot overflow.
        assert!(t.n_elements() * t.dtype.size() <= file_len);
        std::hint::black_box((t.n_rows(), t.row_len()));
    }
});
