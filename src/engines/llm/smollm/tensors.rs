//! Checked access to a GGUF file's tensors: a header is only a claim, so every tensor's size
//! is computed with overflow checks and must fit in the file, and its shape must be the one the
//! model's hyper-parameters give it, before candle reads a byte of it. Third-party reading code
//! runs behind [`guarded`], so a panic there on a hostile file is an error, not a crash.

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::Device;

/// Runs third-party code that reads the model file (candle's GGUF and tensor readers): a panic
/// there on a hostile file becomes an error naming `what`, and the process goes on.
pub(super) fn guarded<T>(
    what: &str,
    f: impl FnOnce() -> candle_core::Result<T>,
) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!("{what} failed on this file: {msg}"))
        }
    }
}

/// The tensors a GGUF declares, checked before any is read: every shape is what the
/// hyper-parameters say, and every tensor fits in the file, so no header claim sizes an
/// allocation the file's bytes do not back.
pub(super) struct TensorTable<'a> {
    pub ct: &'a gguf_file::Content,
    pub file_len: u64,
}

impl TensorTable<'_> {
    /// The tensor's shape, if it is declared and its bytes fit in the file.
    pub fn shape(&self, name: &str) -> Result<Option<Vec<usize>>, String> {
        let Some(info) = self.ct.tensor_infos.get(name) else {
            return Ok(None);
        };
        let dims = info.shape.dims().to_vec();
        let bytes = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .map(|n| n / info.ggml_dtype.block_size())
            .and_then(|blocks| blocks.checked_mul(info.ggml_dtype.type_size()));
        match bytes {
            Some(b) if b as u64 <= self.file_len => Ok(Some(dims)),
            _ => Err(format!(
                "tensor {name} of shape {dims:?} does not fit in the {}-byte file",
                self.file_len
            )),
        }
    }

    /// The tensor's shape, which must be declared.
    pub fn required(&self, name: &str) -> Result<Vec<usize>, String> {
        self.shape(name)?
            .ok_or_else(|| format!("tensor {name}: not in the file"))
    }

    /// Reads the tensor after checking its shape is `want`.
    pub fn read<R: std::io::Read + std::io::Seek>(
        &self,
        reader: &mut R,
        name: &str,
        want: &[usize],
    ) -> Result<QTensor, String> {
        let dims = self.required(name)?;
        if dims != want {
            return Err(format!(
                "tensor {name} has shape {dims:?}, the hyper-parameters need {want:?}"
            ));
        }
        guarded("the GGUF tensor reader", || {
            self.ct.tensor(reader, name, &Device::Cpu)
        })
        .map_err(|e| format!("tensor {name}: {e}"))
    }
}
