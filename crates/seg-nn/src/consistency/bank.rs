//! A memory bank of past negatives.

use candle_core::{DType, Device, Result, Tensor};

/// A ring buffer of past features `[capacity, dim]` and their pseudo-labels: the newest rows
/// overwrite the oldest once full.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBank {
    capacity: usize,
    dim: usize,
    feats: Vec<f32>,
    labels: Vec<u32>,
    next: usize,
    len: usize,
}

impl MemoryBank {
    /// An empty bank of `capacity` rows of `dim` features.
    pub fn new(capacity: usize, dim: usize) -> Self {
        Self {
            capacity,
            dim,
            feats: vec![0.0; capacity * dim],
            labels: vec![0; capacity],
            next: 0,
            len: 0,
        }
    }

    /// Rows held (at most the capacity).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was pushed yet (or the capacity is 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The capacity in rows.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends `feats: [n, dim]` and `labels: [n]` (detached), overwriting the oldest rows;
    /// when `n` exceeds the capacity only the last `capacity` rows are kept.
    pub fn push(&mut self, feats: &Tensor, labels: &Tensor) -> Result<()> {
        if self.capacity == 0 {
            return Ok(());
        }
        let (n, d) = feats.dims2()?;
        if d != self.dim {
            candle_core::bail!("MemoryBank: features have {d} channels, the bank {}", self.dim);
        }
        let f = feats.detach().flatten_all()?.to_vec1::<f32>()?;
        let l = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let skip = n.saturating_sub(self.capacity);
        for i in skip..n {
            let row = self.next;
            self.feats[row * d..(row + 1) * d].copy_from_slice(&f[i * d..(i + 1) * d]);
            self.labels[row] = l[i];
            self.next = (self.next + 1) % self.capacity;
            self.len = (self.len + 1).min(self.capacity);
        }
        Ok(())
    }

    /// The held rows as `([len, dim] f32, [len] u32)` tensors on `dev` (`None` when empty).
    pub fn tensors(&self, dev: &Device) -> Result<Option<(Tensor, Tensor)>> {
        if self.len == 0 {
            return Ok(None);
        }
        let f = Tensor::from_slice(&self.feats[..self.len * self.dim], (self.len, self.dim), dev)?;
        let l = Tensor::from_slice(&self.labels[..self.len], self.len, dev)?;
        Ok(Some((f, l)))
    }

    /// The bank as tensors for a checkpoint: `feats [capacity, dim]`, `labels [capacity]`,
    /// `meta [next, len]` (u32).
    pub fn state(&self) -> Result<[(&'static str, Tensor); 3]> {
        let dev = Device::Cpu;
        Ok([
            (
                "feats",
                Tensor::from_slice(&self.feats, (self.capacity, self.dim), &dev)?,
            ),
            ("labels", Tensor::from_slice(&self.labels, self.capacity, &dev)?),
            ("meta", Tensor::new(&[self.next as u32, self.len as u32], &dev)?),
        ])
    }

    /// Restores a bank saved by [`Self::state`]; shapes must match this bank's.
    pub fn load_state(&mut self, feats: &Tensor, labels: &Tensor, meta: &Tensor) -> Result<()> {
        if feats.dims() != [self.capacity, self.dim] || labels.dims() != [self.capacity] {
            candle_core::bail!(
                "MemoryBank: saved bank is {:?}, this one [{}, {}]",
                feats.dims(),
                self.capacity,
                self.dim
            );
        }
        self.feats = feats.flatten_all()?.to_vec1::<f32>()?;
        self.labels = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let m = meta.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        if m.len() != 2 || m[0] as usize >= self.capacity.max(1) || m[1] as usize > self.capacity {
            candle_core::bail!("MemoryBank: bad saved position {m:?}");
        }
        (self.next, self.len) = (m[0] as usize, m[1] as usize);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_bank_wraps_and_bounds_its_size() {
        let dev = Device::Cpu;
        let mut bank = MemoryBank::new(5, 2);
        assert!(bank.tensors(&dev).unwrap().is_none());
        let rows = |from: u32, n: usize| {
            let f: Vec<f32> = (0..n * 2).map(|i| (from * 2) as f32 + i as f32).collect();
            let l: Vec<u32> = (0..n as u32).map(|i| from + i).collect();
            (
                Tensor::from_vec(f, (n, 2), &dev).unwrap(),
                Tensor::from_vec(l, n, &dev).unwrap(),
            )
        };
        let (f, l) = rows(0, 3);
        bank.push(&f, &l).unwrap();
        assert_eq!(bank.len(), 3);
        let (f, l) = rows(3, 4); // labels 3..7: wraps, 0 and 1 are overwritten
        bank.push(&f, &l).unwrap();
        assert_eq!(bank.len(), 5);
        let (bf, bl) = bank.tensors(&dev).unwrap().unwrap();
        assert_eq!(bf.dims(), [5, 2]);
        let mut labels = bl.to_vec1::<u32>().unwrap();
        assert_eq!(labels, [5, 6, 2, 3, 4]);
        // features follow their labels
        let fv = bf.to_vec2::<f32>().unwrap();
        for (row, lab) in fv.iter().zip(&labels) {
            assert_eq!(row[0], (lab * 2) as f32);
        }
        // more rows than the capacity: only the last 5 stay
        let (f, l) = rows(100, 12);
        bank.push(&f, &l).unwrap();
        assert_eq!(bank.len(), 5);
        labels = bank.tensors(&dev).unwrap().unwrap().1.to_vec1::<u32>().unwrap();
        labels.sort();
        assert_eq!(labels, [107, 108, 109, 110, 111]);
        // state round trip
        let [(_, sf), (_, sl), (_, sm)] = bank.state().unwrap();
        let mut other = MemoryBank::new(5, 2);
        other.load_state(&sf, &sl, &sm).unwrap();
        assert_eq!(other, bank);
        assert!(MemoryBank::new(4, 2).load_state(&sf, &sl, &sm).is_err());
    }
}
