//! Per-session attention cache: K and V of every processed position, per layer, in
//! buffers that grow in chunks and can be truncated (a changed history keeps its prefix).
//! The candle forward pass keeps them as tensors, the packed one as plain rows of floats.

use candle_core::Tensor;

/// Tokens of the cache grow in steps of this many positions.
const CACHE_CHUNK: usize = 256;

/// Per-session attention cache: K and V of every processed position, per layer.
pub struct KvCache {
    store: Store,
    len: usize,
}

enum Store {
    /// Per layer `(k, v)` tensors `[1, n_kv_head, capacity, head_dim]`; only the first `len`
    /// positions are meaningful. `capacity` is the positions every layer's buffer holds.
    Tensors {
        layers: Vec<Option<(Tensor, Tensor)>>,
        capacity: usize,
    },
    /// Per layer `(k, v)` rows of `width` floats, position after position (`len` rows each).
    Rows {
        layers: Vec<(Vec<f32>, Vec<f32>)>,
        width: usize,
    },
}

impl KvCache {
    /// An empty cache of tensors for a model with `n_layer` layers (the candle path).
    pub(super) fn new(n_layer: usize) -> Self {
        Self {
            store: Store::Tensors {
                layers: (0..n_layer).map(|_| None).collect(),
                capacity: 0,
            },
            len: 0,
        }
    }

    /// An empty cache of rows `width` floats wide (`n_kv_head * head_dim`), for the packed path.
    pub(super) fn new_rows(n_layer: usize, width: usize) -> Self {
        Self {
            store: Store::Rows {
                layers: (0..n_layer).map(|_| (Vec::new(), Vec::new())).collect(),
                width,
            },
            len: 0,
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
        if let Store::Rows { layers, width } = &mut self.store {
            for (k, v) in layers {
                k.truncate(self.len * *width);
                v.truncate(self.len * *width);
            }
        }
    }

    /// Drops everything, including the buffers' memory.
    pub fn clear(&mut self) {
        match &mut self.store {
            Store::Tensors { layers, capacity } => {
                layers.iter_mut().for_each(|l| *l = None);
                *capacity = 0;
            }
            Store::Rows { layers, .. } => {
                layers
                    .iter_mut()
                    .for_each(|l| *l = (Vec::new(), Vec::new()));
            }
        }
        self.len = 0;
    }

    /// Bytes held by the buffers.
    pub fn memory_bytes(&self) -> usize {
        match &self.store {
            Store::Tensors { layers, .. } => layers
                .iter()
                .flatten()
                .map(|(k, v)| (k.elem_count() + v.elem_count()) * 4)
                .sum(),
            Store::Rows { layers, .. } => layers
                .iter()
                .map(|(k, v)| (k.capacity() + v.capacity()) * 4)
                .sum(),
        }
    }

    /// Appends the rows `k`, `v` (`seq * width` floats each) of layer `li` at positions
    /// `len..len + seq` and returns all the layer's rows so far. `len` itself advances once
    /// all layers ran.
    pub(super) fn append_rows(
        &mut self,
        li: usize,
        k: &[f32],
        v: &[f32],
    ) -> candle_core::Result<(&[f32], &[f32])> {
        let len = self.len;
        let Store::Rows { layers, width } = &mut self.store else {
            candle_core::bail!("this cache holds tensors, not rows");
        };
        let width = *width;
        let Some((kb, vb)) = layers.get_mut(li) else {
            candle_core::bail!("no cache slot for layer {li}");
        };
        if kb.len() != len * width || k.len() != v.len() || !k.len().is_multiple_of(width) {
            candle_core::bail!("cache rows out of step at layer {li}");
        }
        let need = kb.len() + k.len();
        if need > kb.capacity() {
            let rows = (need / width).div_ceil(CACHE_CHUNK) * CACHE_CHUNK;
            kb.reserve_exact(rows * width - kb.len());
            vb.reserve_exact(rows * width - vb.len());
        }
        kb.extend_from_slice(k);
        vb.extend_from_slice(v);
        Ok((kb, vb))
    }

    /// Writes `k`, `v` (`[1, n_kv, seq, hd]`) for layer `li` at positions `len..len+seq` and
    /// returns views of positions `0..len+seq`. `len` itself advances once all layers ran.
    pub(super) fn append(
        &mut self,
        li: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let len = self.len;
        let Store::Tensors { layers, capacity } = &mut self.store else {
            candle_core::bail!("this cache holds rows, not tensors");
        };
        let seq = k.dim(2)?;
        let need = len + seq;
        if li == 0 && need > *capacity {
            *capacity = need.div_ceil(CACHE_CHUNK) * CACHE_CHUNK;
        }
        let Some(slot) = layers.get_mut(li) else {
            candle_core::bail!("no cache slot for layer {li}");
        };
        let cap = *capacity;
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
        kb.slice_set(k, 2, len)?;
        vb.slice_set(v, 2, len)?;
        let out = (kb.narrow(2, 0, need)?, vb.narrow(2, 0, need)?);
        *slot = Some((kb, vb));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_append_truncate_and_clear() {
        let mut c = KvCache::new_rows(2, 3);
        for li in 0..2 {
            let (k, _) = c.append_rows(li, &[1.0; 6], &[2.0; 6]).unwrap();
            assert_eq!(k.len(), 6);
        }
        c.advance(2);
        assert_eq!(c.len(), 2);
        assert!(c.memory_bytes() >= 2 * 2 * CACHE_CHUNK * 3 * 4);
        c.truncate(1);
        let (k, v) = c.append_rows(0, &[3.0; 3], &[4.0; 3]).unwrap();
        assert_eq!(
            (k, v),
            (
                &[1.0, 1.0, 1.0, 3.0, 3.0, 3.0][..],
                &[2.0, 2.0, 2.0, 4.0, 4.0, 4.0][..]
            )
        );
        // Rows of the wrong width, or a layer out of step with the length, are errors.
        assert!(c.append_rows(1, &[0.0; 2], &[0.0; 2]).is_err());
        c.advance(1);
        assert!(c.append_rows(1, &[0.0; 3], &[0.0; 3]).is_err());
        c.clear();
        assert_eq!((c.len(), c.memory_bytes()), (0, 0));
    }
}
