//! Per-session attention cache: K and V of every processed position, per layer, in
//! buffers that grow in chunks and can be truncated (a changed history keeps its prefix).

use candle_core::Tensor;

/// Tokens of the cache grow in steps of this many positions.
const CACHE_CHUNK: usize = 256;

/// Per-session attention cache: K and V of every processed position, per layer.
pub struct KvCache {
    /// Per layer `(k, v)` buffers `[1, n_kv_head, capacity, head_dim]`; only the first
    /// `len` positions are meaningful.
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for a model with `n_layer` layers.
    pub(super) fn new(n_layer: usize) -> Self {
        Self {
            layers: (0..n_layer).map(|_| None).collect(),
            len: 0,
            capacity: 0,
        }
    }

    /// Marks `seq` more positions as held, once every layer has appended them.
    pub(super) fn advance(&mut self, seq: usize) {
        self.len += seq;
    }

    /// Positions currently held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Forgets positions `n..` (their buffers are overwritten by later appends).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    /// Drops everything, including the buffers' memory.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
        self.capacity = 0;
    }

    /// Bytes held by the buffers.
    pub fn memory_bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * 4)
            .sum()
    }

    /// Writes `k`, `v` (`[1, n_kv, seq, hd]`) for layer `li` at positions `len..len+seq` and
    /// returns views of positions `0..len+seq`. `len` itself advances once all layers ran.
    pub(super) fn append(
        &mut self,
        li: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let seq = k.dim(2)?;
        let need = self.len + seq;
        if li == 0 && need > self.capacity {
            self.capacity = need.div_ceil(CACHE_CHUNK) * CACHE_CHUNK;
        }
        let Some(slot) = self.layers.get_mut(li) else {
            candle_core::bail!("no cache slot for layer {li}");
        };
        let cap = self.capacity;
        let grow = |old: Option<&Tensor>, like: &Tensor| -> candle_core::Result<Tensor> {
            let (b, h, _, d) = like.dims4()?;
            let fresh = Tensor::zeros((b, h, cap, d), like.dtype(), like.device())?;
            if let Some(old) = old {
                let keep = old.dim(2)?.min(cap);
                fresh.slice_set(&old.narrow(2, 0, keep)?.contiguous()?, 2, 0)?;
            }
            Ok(fresh)
        };
        let (kb, vb) = match slot.take() {
            Some((kb, vb)) if kb.dim(2)? >= cap => (kb, vb),
            Some((kb, vb)) => (grow(Some(&kb), k)?, grow(Some(&vb), v)?),
            None => (grow(None, k)?, grow(None, v)?),
        };
        kb.slice_set(k, 2, self.len)?;
        vb.slice_set(v, 2, self.len)?;
        let out = (kb.narrow(2, 0, need)?, vb.narrow(2, 0, need)?);
        *slot = Some((kb, vb));
        Ok(out)
    }
}
