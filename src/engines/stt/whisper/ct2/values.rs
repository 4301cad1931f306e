//! Decoding a parsed variable's bytes into values: rank-0 integer flags, and any weight as
//! `f32` (float32/float16/bfloat16 directly; int8/int16 dequantised with `<name>_scale`).

use super::{Ct2Error, Ct2Model, DType, Variable};

impl Ct2Model {
    /// A rank-0 integer/flag variable (e.g. `encoder/num_heads`), if present and integral.
    pub fn scalar_i64(&self, name: &str) -> Option<i64> {
        let v = self.vars.get(name)?;
        if v.numel() != 1 {
            return None;
        }
        let b = &self.bytes[v.range.clone()];
        match v.dtype {
            DType::I8 => Some(i64::from(b[0] as i8)),
            DType::I16 => Some(i64::from(i16::from_le_bytes([b[0], b[1]]))),
            DType::I32 => Some(i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            _ => None,
        }
    }

    /// The variable as `f32` values in row-major order, dequantising integer weights.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>, Ct2Error> {
        let v = self.require(name)?;
        let b = &self.bytes[v.range.clone()];
        Ok(match v.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::I8 => {
                let q: Vec<f32> = b.iter().map(|&x| f32::from(x as i8)).collect();
                self.dequantize(name, v, q)?
            }
            DType::I16 => {
                let q: Vec<f32> = b
                    .chunks_exact(2)
                    .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])))
                    .collect();
                self.dequantize(name, v, q)?
            }
            DType::I32 => {
                return Err(self.invalid(format!("variable {name:?} is int32, not a weight")))
            }
        })
    }

    /// CTranslate2 quantisation: `x = q / scale`, with one scale per row (int8) or one global
    /// scale (int16), stored as `<name>_scale`.
    fn dequantize(&self, name: &str, v: &Variable, mut q: Vec<f32>) -> Result<Vec<f32>, Ct2Error> {
        let scale_name = format!("{name}_scale");
        let scale = match self.vars.get(&scale_name) {
            Some(s) if matches!(s.dtype, DType::I8 | DType::I16 | DType::I32) => {
                return Err(self.invalid(format!("{scale_name:?} is not a float variable")))
            }
            Some(_) => self.to_f32(&scale_name)?,
            None => {
                return Err(
                    self.invalid(format!("quantised variable {name:?} has no {scale_name:?}"))
                )
            }
        };
        let rows = v.shape.first().copied().unwrap_or(1).max(1);
        let cols = q.len() / rows;
        if scale.len() == 1 {
            let s = scale[0];
            q.iter_mut().for_each(|x| *x /= s);
        } else if scale.len() == rows && cols * rows == q.len() {
            for (row, s) in q.chunks_exact_mut(cols.max(1)).zip(&scale) {
                row.iter_mut().for_each(|x| *x /= s);
            }
        } else {
            return Err(self.invalid(format!(
                "{scale_name:?} has {} values for {rows} rows",
                scale.len()
            )));
        }
        Ok(q)
    }
}
