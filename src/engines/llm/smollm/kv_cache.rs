//! Per-session attention cache: K and V of every processed position, per layer, in
//! buffers that grow in chunks and can be truncated (a changed history keeps its prefix).
//! The candle forward pass keeps them as tensors, the packed one as plain floats, head by
//! head.

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
    /// Per layer, K and V head by head (see [`HeadLayer`]).
    Heads {
        layers: Vec<HeadLayer>,
        heads: usize,
        head_dim: usize,
    },
}

/// One layer's K and V for the packed path, head by head: each KV head has `capacity` rows
/// of `head_dim` floats, one per position, so that attention reads a head's keys (and
/// values) as one run of memory, which the CPU streams about twice as fast as rows
/// interleaved with the other heads'.
#[derive(Default)]
struct HeadLayer {
    k: Vec<f32>,
    v: Vec<f32>,
    capacity: usize,
    /// Positions written.
    filled: usize,
}

/// A layer's cached K and V, head by head: head `h`'s row for position `j` starts at
/// `h * head_stride + j * head_dim`.
pub(super) struct HeadsView<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub head_stride: usize,
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

    /// An empty cache for the packed path: `n_kv_head` heads of `head_dim` per layer.
    pub(super) fn new_heads(n_layer: usize, n_kv_head: usize, head_dim: usize) -> Self {
        Self {
            store: Store::Heads {
                layers: (0..n_layer).map(|_| HeadLayer::default()).collect(),
                heads: n_kv_head,
                head_dim,
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
        if let Store::Heads { layers, .. } = &mut self.store {
            for l in layers {
                l.filled = l.filled.min(self.len);
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
            Store::Heads { layers, .. } => {
                layers.iter_mut().for_each(|l| *l = HeadLayer::default());
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
            Store::Heads { layers, .. } => layers.iter().map(|l| (l.k.len() + l.v.len()) * 4).sum(),
        }
    }

    /// Appends the rows `k`, `v` (`seq` rows of `n_kv_head * head_dim` floats each) of layer
    /// `li` at positions `len..len + seq` and returns all the layer's K and V so far, head by
    /// head. `len` itself advances once all layers ran.
    pub(super) fn append_heads(
        &mut self,
        li: usize,
        k: &[f32],
        v: &[f32],
    ) -> candle_core::Result<HeadsView<'_>> {
        let len = self.len;
        let Store::Heads {
            layers,
            heads,
            head_dim,
        } = &mut self.store
        else {
            candle_core::bail!("this cache holds tensors, not rows");
        };
        let (heads, hd) = (*heads, *head_dim);
        let width = heads * hd;
        let Some(l) = layers.get_mut(li) else {
            candle_core::bail!("no cache slot for layer {li}");
        };
        if l.filled != len || k.len() != v.len() || !k.len().is_multiple_of(width) {
            candle_core::bail!("cache rows out of step at layer {li}");
        }
        let need = len + k.len() / width;
        if need > l.capacity {
            let cap = need.div_ceil(CACHE_CHUNK) * CACHE_CHUNK;
            let old = l.capacity;
            let grow = |buf: &[f32]| {
                let mut new = vec![0f32; heads * cap * hd];
                for h in 0..heads {
                    new[h * cap * hd..][..len * hd]
                        .copy_from_slice(&buf[h * old * hd..][..len * hd]);
                }
                new
            };
            l.k = grow(&l.k);
            l.v = grow(&l.v);
            l.capacity = cap;
        }
        let stride = l.capacity * hd;
        for (t, (kr, vr)) in k.chunks_exact(width).zip(v.chunks_exact(width)).enumerate() {
            for h in 0..heads {
                let at = h * stride + (len + t) * hd;
                l.k[at..at + hd].copy_from_slice(&kr[h * hd..(h + 1) * hd]);
                l.v[at..at + hd].copy_from_slice(&vr[h * hd..(h + 1) * hd]);
            }
        }
        l.filled = need;
        Ok(HeadsView {
            k: &l.k,
            v: &l.v,
            head_stride: stride,
        })
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
    fn heads_append_truncate_and_clear() {
        // Two layers, two heads of two floats: a row is `[h0a, h0b, h1a, h1b]`.
        let mut c = KvCache::new_heads(2, 2, 2);
        for li in 0..2 {
            let view = c
                .append_heads(li, &[1.0, 2.0, 3.0, 4.0], &[5.0; 4])
                .unwrap();
            assert_eq!(view.head_stride, CACHE_CHUNK * 2);
        }
        c.advance(1);
        assert_eq!(c.len(), 1);
        assert_eq!(c.memory_bytes(), 2 * 2 * 2 * CACHE_CHUNK * 2 * 4);
        let rows: Vec<f32> = (0..4 * CACHE_CHUNK).map(|i| i as f32).collect();
        let view = c.append_heads(0, &rows, &rows).unwrap();
        // Grown to two chunks, the first position kept, head by head.
        let s = view.head_stride;
        assert_eq!(s, 2 * CACHE_CHUNK * 2);
        assert_eq!(&view.k[..4], &[1.0, 2.0, 0.0, 1.0]);
        assert_eq!(&view.k[s..s + 4], &[3.0, 4.0, 2.0, 3.0]);
        assert_eq!(view.v[s + 2 * CACHE_CHUNK], 4.0 * CACHE_CHUNK as f32 - 2.0);
        // Layer 1 is behind: out of step until it catches up.
        c.advance(CACHE_CHUNK);
        assert!(c.append_heads(1, &[0.0; 4], &[0.0; 4]).is_err());
        c.truncate(1);
        let view = c.append_heads(1, &[6.0, 7.0, 8.0, 9.0], &[0.0; 4]).unwrap();
        let s = view.head_stride;
        assert_eq!(
            (&view.k[..4], &view.k[s..s + 4]),
            (&[1.0, 2.0, 6.0, 7.0][..], &[3.0, 4.0, 8.0, 9.0][..])
        );
        // Rows of the wrong width are errors.
        assert!(c.append_heads(0, &[0.0; 3], &[0.0; 3]).is_err());
        c.clear();
        assert_eq!((c.len(), c.memory_bytes()), (0, 0));
    }
}
