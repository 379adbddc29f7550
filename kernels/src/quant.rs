//! ggml's own quantizers and dequantizers.
//!
//! Quantization is row-wise, so rows are split across rayon's threads; each
//! thread calls `ggml_quantize_chunk` on its own rows and its own slice of the
//! output, which is what makes the parallel calls sound.

use llama_cpp_sys_2 as sys;
use rayon::prelude::*;

use crate::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("{ty} needs rows that are a multiple of {block} elements, got rows of {n_per_row}")]
    RowLength {
        ty: GgmlType,
        block: u64,
        n_per_row: usize,
    },
    #[error("{len} values do not make whole rows of {n_per_row}")]
    PartialRow { len: usize, n_per_row: usize },
    #[error("{ty} data of {len} bytes does not hold {n} values (expected {expected} bytes)")]
    DataLength {
        ty: GgmlType,
        len: usize,
        n: usize,
        expected: u64,
    },
    #[error("ggml cannot convert {0} to f32")]
    NoDequantizer(GgmlType),
    #[error("value {index} (row {row}) is {value}; weights must be finite")]
    NonFinite {
        index: usize,
        row: usize,
        value: f32,
    },
    #[error("ggml rejected the {0} data it produced")]
    Invalid(GgmlType),
}

/// Rows handed to one rayon task: big enough to amortise the call, small
/// enough to balance work across cores.
const ROWS_PER_TASK: usize = 32;

fn sys_type(ty: GgmlType) -> sys::ggml_type {
    ty.id() as sys::ggml_type
}

/// Bytes one row of `n_per_row` values takes in `ty`, checking the row fits
/// the type's block.
pub fn row_bytes(ty: GgmlType, n_per_row: usize) -> Result<usize, QuantError> {
    ty.row_bytes(n_per_row as u64)
        .map(|b| b as usize)
        .ok_or(QuantError::RowLength {
            ty,
            block: ty.block_size(),
            n_per_row,
        })
}

/// Encodes `src` (whole rows of `n_per_row` f32 values) as `ty` and appends
/// the bytes to `out`. Plain types (f32, f16, bf16) round to nearest even;
/// block types use ggml's reference quantizers without an importance matrix.
pub fn quantize_into(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    out: &mut Vec<u8>,
) -> Result<(), QuantError> {
    if n_per_row == 0 || !src.len().is_multiple_of(n_per_row) {
        return Err(QuantError::PartialRow {
            len: src.len(),
            n_per_row,
        });
    }
    let n_rows = src.len() / n_per_row;
    quantize_rows_with(ty, n_per_row, n_rows, out, |first, rows| {
        rows.copy_from_slice(&src[first * n_per_row..][..rows.len()])
    })
}

/// Like [`quantize_into`] for `n_rows` rows that `fill(first_row, buf)`
/// writes as f32 into each task's small buffer (whole rows from `first_row`
/// on), so a source in another format (bf16, f16) is widened where it is
/// quantized, in cache, rather than in a separate pass over memory.
pub fn quantize_rows_with<F>(
    ty: GgmlType,
    n_per_row: usize,
    n_rows: usize,
    out: &mut Vec<u8>,
    fill: F,
) -> Result<(), QuantError>
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let row = row_bytes(ty, n_per_row)?;
    let start = out.len();
    out.resize(start + n_rows * row, 0);
    let dst = &mut out[start..];
    // SAFETY: called once before the threads start, so no thread races to
    // build the (few) types' lookup tables.
    unsafe { sys::ggml_quantize_init(sys_type(ty)) };

    dst.par_chunks_mut(row * ROWS_PER_TASK)
        .enumerate()
        .try_for_each_init(Vec::new, |buf: &mut Vec<f32>, (task, dst)| {
            let rows = dst.len() / row;
            let first = task * ROWS_PER_TASK;
            buf.resize(rows * n_per_row, 0.0);
            fill(first, buf);
            // Block quantizers turn NaN into garbage silently; refuse it.
            if let Some(i) = buf.iter().position(|x| !x.is_finite()) {
                let index = first * n_per_row + i;
                return Err(QuantError::NonFinite {
                    index,
                    row: index / n_per_row,
                    value: buf[i],
                });
            }
            // SAFETY: `buf` holds `rows * n_per_row` f32 values and `dst`
            // exactly `rows` rows of `ty`; no imatrix.
            let written = unsafe {
                sys::ggml_quantize_chunk(
                    sys_type(ty),
                    buf.as_ptr(),
                    dst.as_mut_ptr().cast(),
                    0,
                    rows as i64,
                    n_per_row as i64,
                    std::ptr::null(),
                )
            };
            debug_assert_eq!(written, dst.len());
            // SAFETY: `dst` is `dst.len()` initialised bytes.
            let valid = unsafe {
                sys::ggml_validate_row_data(sys_type(ty), dst.as_ptr().cast(), dst.len())
            };
            if valid {
                Ok(())
            } else {
                Err(QuantError::Invalid(ty))
            }
        })
}

/// [`quantize_into`] into a fresh buffer.
pub fn quantize(ty: GgmlType, src: &[f32], n_per_row: usize) -> Result<Vec<u8>, QuantError> {
    let mut out = Vec::new();
    quantize_into(ty, src, n_per_row, &mut out)?;
    Ok(out)
}

/// Decodes `n` values of `ty` from `data` (whole blocks) to f32.
pub fn dequantize(ty: GgmlType, data: &[u8], n: usize) -> Result<Vec<f32>, QuantError> {
    let expected = ty.row_bytes(n as u64).ok_or(QuantError::RowLength {
        ty,
        block: ty.block_size(),
        n_per_row: n,
    })?;
    if data.len() as u64 != expected {
        return Err(QuantError::DataLength {
            ty,
            len: data.len(),
            n,
            expected,
        });
    }
    if ty == GgmlType::F32 {
        return Ok(data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect());
    }
    // SAFETY: ggml returns a pointer to a static table entry for every known type.
    let traits = unsafe { &*sys::ggml_get_type_traits(sys_type(ty)) };
    let to_float = traits.to_float.ok_or(QuantError::NoDequantizer(ty))?;
    let mut out = vec![0f32; n];
    let block = ty.block_size() as usize;
    let block_bytes = ty.block_bytes() as usize;
    // Split on block boundaries so the parallel calls see whole blocks.
    let per_task = block * 4096;
    out.par_chunks_mut(per_task)
        .zip(data.par_chunks(per_task / block * block_bytes))
        .for_each(|(dst, src)| {
            // SAFETY: `src` holds exactly the blocks encoding `dst.len()` values.
            unsafe { to_float(src.as_ptr().cast(), dst.as_mut_ptr(), dst.len() as i64) }
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rust type table must agree with the ggml it is used with.
    #[test]
    fn type_table_matches_ggml() {
        for &ty in GgmlType::ALL {
            let t = sys_type(ty);
            // SAFETY: table lookups for valid type ids.
            let (block, bytes, name) = unsafe {
                (
                    sys::ggml_blck_size(t) as u64,
                    sys::ggml_type_size(t) as u64,
                    std::ffi::CStr::from_ptr(sys::ggml_type_name(t))
                        .to_str()
                        .unwrap(),
                )
            };
            assert_eq!(
                (block, bytes, name),
                (ty.block_size(), ty.block_bytes(), ty.name()),
                "{ty:?}"
            );
        }
    }

    fn sample(n: usize, seed: u64) -> Vec<f32> {
        // xorshift + Box-Muller: Gaussian data without a rand dependency.
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (next().max(1e-12), next());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect()
    }

    fn rel_rms(a: &[f32], b: &[f32]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
        (num / den).sqrt()
    }

    /// Each type round-trips Gaussian data within its known error, and the
    /// parallel split gives the same bytes as one serial call.
    #[test]
    fn round_trip_error_bounds() {
        let n_per_row = 512;
        let src = sample(n_per_row * 70, 7);
        let cases = [
            (GgmlType::F32, 0.0),
            (GgmlType::F16, 5e-4),
            (GgmlType::BF16, 3e-3),
            (GgmlType::Q8_0, 6e-3),
            (GgmlType::Q6_K, 2e-2),
            (GgmlType::Q5_K, 4.2e-2),
            (GgmlType::Q5_0, 5e-2),
            (GgmlType::Q5_1, 5e-2),
            (GgmlType::Q4_K, 8e-2),
            (GgmlType::Q4_0, 1e-1),
            (GgmlType::Q4_1, 1e-1),
        ];
        for (ty, bound) in cases {
            let q = quantize(ty, &src, n_per_row).unwrap();
            assert_eq!(
                q.len() as u64,
                ty.tensor_bytes(&[n_per_row as u64, 70]).unwrap()
            );
            let serial = unsafe {
                let mut buf = vec![0u8; q.len()];
                sys::ggml_quantize_chunk(
                    sys_type(ty),
                    src.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    0,
                    70,
                    n_per_row as i64,
                    std::ptr::null(),
                );
                buf
            };
            assert!(
                q == serial,
                "{ty}: parallel quantization differs from serial"
            );
            let back = dequantize(ty, &q, src.len()).unwrap();
            let err = rel_rms(&src, &back);
            eprintln!("{ty}: relative RMS error {err:.5}");
            assert!(err <= bound, "{ty}: relative RMS error {err} > {bound}");
            if ty.is_quantized() {
                assert!(err > 0.0, "{ty}: lossy type returned exact data");
            }
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        let src = sample(300, 1);
        assert!(matches!(
            quantize(GgmlType::Q4_K, &src, 300),
            Err(QuantError::RowLength { .. })
        ));
        assert!(matches!(
            quantize(GgmlType::Q8_0, &src, 64),
            Err(QuantError::PartialRow { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::Q8_0, &[0u8; 33], 32),
            Err(QuantError::DataLength { .. })
        ));
    }

    #[test]
    fn rejects_non_finite_input() {
        let mut src = sample(256, 2);
        src[5] = f32::NAN;
        for ty in [GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::F16] {
            let err = quantize(ty, &src, 256).unwrap_err();
            assert!(
                matches!(
                    err,
                    QuantError::NonFinite {
                        index: 5,
                        row: 0,
                        ..
                    }
                ),
                "{ty}: {err}"
            );
        }
    }
}
