//! Size- and count-aware chunking, measured on **encoded** bytes.
//!
//! One function serves every batching decision of the pipeline: PutRecords (≤ 500 records,
//! ≤ 5 MiB), PutRecordBatch (≤ 500 records, ≤ 4 MiB) and packing many small events into one
//! Firehose record (≤ ~1,000 KiB, no count limit). Items keep their order; chunks are contiguous.

use std::ops::Range;

/// The bounds of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Maximum number of items in a chunk.
    pub max_items: usize,
    /// Maximum sum of item sizes in a chunk.
    pub max_bytes: usize,
}

/// An item larger than a whole chunk may be.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("item {index} is {size} bytes, more than the {max} bytes a chunk may hold")]
pub struct ItemTooLarge {
    /// Index of the item.
    pub index: usize,
    /// Its size.
    pub size: usize,
    /// The chunk byte limit.
    pub max: usize,
}

/// Split items of the given sizes into contiguous ranges within `limits`, greedily (each chunk is
/// filled as far as it goes). An item over `max_bytes` is an error: callers validate item sizes
/// earlier and turn them into per-item rejections.
pub fn chunk(sizes: &[usize], limits: ChunkLimits) -> Result<Vec<Range<usize>>, ItemTooLarge> {
    let max_items = limits.max_items.max(1);
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (index, &size) in sizes.iter().enumerate() {
        if size > limits.max_bytes {
            return Err(ItemTooLarge {
                index,
                size,
                max: limits.max_bytes,
            });
        }
        let count = index - start;
        if count > 0 && (count == max_items || bytes + size > limits.max_bytes) {
            chunks.push(start..index);
            start = index;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        chunks.push(start..sizes.len());
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: ChunkLimits = ChunkLimits {
        max_items: 3,
        max_bytes: 10,
    };

    #[test]
    fn empty_gives_no_chunks() {
        assert_eq!(chunk(&[], L).unwrap(), Vec::<Range<usize>>::new());
    }

    #[test]
    fn splits_on_count() {
        assert_eq!(chunk(&[1; 7], L).unwrap(), vec![0..3, 3..6, 6..7]);
    }

    #[test]
    fn splits_on_bytes_with_exact_fit() {
        // 4+6 = 10 fits exactly; the next 1 starts a new chunk.
        assert_eq!(
            chunk(&[4, 6, 1, 10, 9, 1], L).unwrap(),
            vec![0..2, 2..3, 3..4, 4..6]
        );
    }

    #[test]
    fn one_item_at_the_limit_is_fine_over_is_an_error() {
        assert_eq!(chunk(&[10], L).unwrap(), vec![0..1]);
        assert_eq!(
            chunk(&[1, 11], L),
            Err(ItemTooLarge {
                index: 1,
                size: 11,
                max: 10
            })
        );
    }

    #[test]
    fn every_item_lands_in_exactly_one_chunk_in_order() {
        let sizes: Vec<usize> = (0..1000).map(|i| (i * 7919) % 10 + 1).collect();
        let chunks = chunk(&sizes, L).unwrap();
        let mut next = 0;
        for c in &chunks {
            assert_eq!(c.start, next);
            assert!(!c.is_empty() && c.len() <= 3);
            assert!(sizes[c.clone()].iter().sum::<usize>() <= 10);
            next = c.end;
        }
        assert_eq!(next, sizes.len());
    }
}
