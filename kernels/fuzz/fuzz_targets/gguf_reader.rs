//! Any byte string given to the GGUF reader must give `Ok` or `Err`: never a
//! panic, an out-of-bounds access, an overflow or a runaway allocation
//! (libFuzzer's -rss_limit_mb and -malloc_limit_mb catch the last).

#![no_main]

use libfuzzer_sys::fuzz_target;
use orthrus_kernels::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    // Everything the reader accepted must be usable without a panic.
    let mut sink = 0u64;
    for t in file.tensors() {
        let bytes = file.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.size);
        assert!(t.offset % file.alignment() == 0);
        sink = sink.wrapping_add(bytes.iter().map(|&b| u64::from(b)).sum::<u64>());
        sink = sink.wrapping_add(t.n_elements() ^ t.n_rows() ^ t.row_len());
        // Identity, not equality: lookups must find this very entry.
        assert!(file
            .tensor(&t.name)
            .is_some_and(|found| std::ptr::eq(found, t)));
    }
    for (key, value) in file.metadata() {
        sink = sink.wrapping_add(value.to_string().len() as u64);
        // Identity, not equality: a NaN value is not equal to itself.
        assert!(file
            .get(key)
            .is_some_and(|found| std::ptr::eq(found, value)));
    }
    std::hint::black_box(sink);
});
