//! Reader for CTranslate2 `model.bin` files: the binary variable table (names, shapes, dtypes, raw
//! bytes) and aliases, plus conversion of a variable to `f32` (float16, bfloat16, float32, and
//! int8/int16 weights dequantised with their `<name>_scale`). Never panics on a corrupt file: every
//! read is bounds-checked and reported as a [`Ct2Error`] naming the file and the reason.
//!
//! Layout (see CTranslate2 `src/models/model.cc`): u32 binary version; (version >= 2) spec name and
//! u32 spec revision; u32 variable count; per variable: name, u8 rank, rank x u32 dims, then
//! (version >= 4) u8 dtype + u32 byte count, or (older) u8 item size + u32 element count; raw data.
//! Then (version >= 3) u32 alias count and (alias, target) string pairs. Strings are u16
//! length-prefixed and the length includes a trailing NUL. All integers are little-endian.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

mod values;

/// Newest binary version this reader understands (CTranslate2 4.x writes 6).
const MAX_BINARY_VERSION: u32 = 6;

/// Errors while reading a CTranslate2 model file.
#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is truncated: needed {needed} bytes for {what} at offset {offset}, file has {len}"
    )]
    Truncated {
        path: PathBuf,
        what: &'static str,
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error("{path} is not a valid CTranslate2 model: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path} has no variable {name:?}")]
    Missing { path: PathBuf, name: String },
}

/// Element type of a stored variable (CTranslate2 `DataType` numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl DType {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    /// Pre-v4 files stored only the item width.
    fn from_item_size(size: u8) -> Option<Self> {
        Some(match size {
            4 => Self::F32,
            2 => Self::I16,
            1 => Self::I8,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One variable's metadata; its bytes live in the owning [`Ct2Model`].
#[derive(Debug, Clone)]
pub struct Variable {
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// Byte range inside the file; its length is `shape.product() * dtype.size()`.
    range: Range<usize>,
}

impl Variable {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed `model.bin`: variable table plus the file's bytes.
pub struct Ct2Model {
    path: PathBuf,
    pub binary_version: u32,
    pub spec: String,
    pub spec_revision: u32,
    vars: HashMap<String, Variable>,
    bytes: Vec<u8>,
}

/// Bounds-checked little-endian cursor.
struct Reader<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Ct2Error> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(Ct2Error::Truncated {
                path: self.path.to_path_buf(),
                what,
                offset: self.pos,
                needed: n,
                len: self.buf.len(),
            });
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Ct2Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Ct2Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Ct2Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &'static str) -> Result<String, Ct2Error> {
        let len = usize::from(self.u16(what)?);
        let raw = self.take(len, what)?;
        let raw = raw.split(|&b| b == 0).next().unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| self.invalid(format!("{what} is not UTF-8")))
    }

    fn invalid(&self, reason: String) -> Ct2Error {
        Ct2Error::Invalid {
            path: self.path.to_path_buf(),
            reason,
        }
    }
}

impl Ct2Model {
    /// Reads and parses `path` (a CTranslate2 `model.bin`).
    pub fn load(path: &Path) -> Result<Self, Ct2Error> {
        let bytes = std::fs::read(path).map_err(|source| Ct2Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, bytes)
    }

    /// Parses the bytes of a model file; `path` is only used in error messages.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, Ct2Error> {
        let mut r = Reader {
            path,
            buf: &bytes,
            pos: 0,
        };
        let binary_version = r.u32("the binary version")?;
        if binary_version == 0 || binary_version > MAX_BINARY_VERSION {
            return Err(r.invalid(format!(
                "unsupported binary version {binary_version} (expected 1..={MAX_BINARY_VERSION})"
            )));
        }
        let (spec, spec_revision) = if binary_version >= 2 {
            (r.string("the spec name")?, r.u32("the spec revision")?)
        } else {
            (String::new(), 1)
        };
        let count = r.u32("the variable count")? as usize;
        let mut vars = HashMap::with_capacity(count.min(1 << 16));
        for index in 0..count {
            let name = r.string("a variable name")?;
            let rank = usize::from(r.u8("a variable rank")?);
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(r.u32("a variable dimension")? as usize);
            }
            let (dtype, num_bytes) = if binary_version >= 4 {
                let id = r.u8("a variable dtype")?;
                let dtype = DType::from_id(id).ok_or_else(|| {
                    r.invalid(format!("variable {name:?} has unknown dtype {id}"))
                })?;
                (dtype, r.u32("a variable byte count")? as usize)
            } else {
                let size = r.u8("a variable item size")?;
                let dtype = DType::from_item_size(size).ok_or_else(|| {
                    r.invalid(format!("variable {name:?} has unknown item size {size}"))
                })?;
                (
                    dtype,
                    (r.u32("a variable element count")? as usize).saturating_mul(size.into()),
                )
            };
            let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
            if numel.and_then(|n| n.checked_mul(dtype.size())) != Some(num_bytes) {
                return Err(r.invalid(format!(
                    "variable #{index} {name:?}: shape {shape:?} of {dtype:?} does not match {num_bytes} bytes"
                )));
            }
            let start = r.pos;
            r.take(num_bytes, "variable data")?;
            vars.insert(
                name,
                Variable {
                    shape,
                    dtype,
                    range: start..start + num_bytes,
                },
            );
        }
        if binary_version >= 3 {
            let aliases = r.u32("the alias count")?;
            for _ in 0..aliases {
                let alias = r.string("an alias name")?;
                let target = r.string("an alias target")?;
                if let Some(v) = vars.get(&target).cloned() {
                    vars.insert(alias.clone(), v);
                }
                if let Some(v) = vars.get(&format!("{target}_scale")).cloned() {
                    vars.insert(format!("{alias}_scale"), v);
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            binary_version,
            spec,
            spec_revision,
            vars,
            bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, name: &str) -> Option<&Variable> {
        self.vars.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }

    /// The variable's shape, or a `Missing` error.
    pub fn shape(&self, name: &str) -> Result<&[usize], Ct2Error> {
        self.require(name).map(|v| v.shape.as_slice())
    }

    fn require(&self, name: &str) -> Result<&Variable, Ct2Error> {
        self.vars.get(name).ok_or_else(|| Ct2Error::Missing {
            path: self.path.clone(),
            name: name.to_string(),
        })
    }

    fn invalid(&self, reason: String) -> Ct2Error {
        Ct2Error::Invalid {
            path: self.path.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny v6 model with one f16 matrix, one int8 matrix + scale, and an alias.
    fn sample() -> Vec<u8> {
        fn s(out: &mut Vec<u8>, text: &str) {
            out.extend_from_slice(&((text.len() + 1) as u16).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
            out.push(0);
        }
        fn var(out: &mut Vec<u8>, name: &str, shape: &[u32], dtype: u8, data: &[u8]) {
            s(out, name);
            out.push(shape.len() as u8);
            shape
                .iter()
                .for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
            out.push(dtype);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        let mut b = 6u32.to_le_bytes().to_vec();
        s(&mut b, "WhisperSpec");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&4u32.to_le_bytes());
        let halfs: Vec<u8> = [1.0f32, -2.0, 0.5, 4.0]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        var(&mut b, "a/weight", &[2, 2], 4, &halfs);
        var(&mut b, "q/weight", &[2, 2], 1, &[10u8, 20, 246, 4]);
        let scales: Vec<u8> = [10.0f32, 2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        var(&mut b, "q/weight_scale", &[2], 0, &scales);
        var(&mut b, "num_heads", &[], 2, &6i16.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        s(&mut b, "b/weight");
        s(&mut b, "a/weight");
        b
    }

    #[test]
    fn parses_float16_int8_scalars_and_aliases() {
        let m = Ct2Model::parse(Path::new("mem.bin"), sample()).unwrap();
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.spec_revision, 3);
        assert_eq!(m.to_f32("a/weight").unwrap(), vec![1.0, -2.0, 0.5, 4.0]);
        assert_eq!(m.to_f32("b/weight").unwrap(), vec![1.0, -2.0, 0.5, 4.0]);
        assert_eq!(m.to_f32("q/weight").unwrap(), vec![1.0, 2.0, -5.0, 2.0]);
        assert_eq!(m.scalar_i64("num_heads"), Some(6));
        assert_eq!(m.shape("q/weight").unwrap(), &[2, 2]);
        assert!(matches!(m.to_f32("nope"), Err(Ct2Error::Missing { .. })));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = sample();
        for len in 0..full.len() {
            let err = Ct2Model::parse(Path::new("cut.bin"), full[..len].to_vec());
            let err = err
                .err()
                .unwrap_or_else(|| panic!("prefix of {len} bytes parsed"));
            assert!(err.to_string().contains("cut.bin"), "{err}");
        }
    }

    #[test]
    fn garbage_is_rejected() {
        let err = Ct2Model::parse(Path::new("junk.bin"), b"RIFF\x00\x00\x00\x00WAVE".to_vec());
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("junk.bin") && msg.contains("binary version"),
            "{msg}"
        );
    }
}
