//! Upper bounds on every size a caller can ask for, and fallible allocation of big buffers.
//!
//! A size that is only checked for being positive can still ask for more memory than any
//! machine has, and Rust's allocator then aborts the whole process (a Python user sees the
//! interpreter die, not an exception). So each size has a documented bound, checked before
//! anything is allocated, and the buffers whose size follows from user input are reserved
//! with `try_reserve`, so that a request the machine cannot meet becomes an error naming the
//! parameter to lower. The bounds are far above any real use; they exist to turn typos
//! (`10**12`) and hostile inputs into messages.

use crate::error::{CoreError, Result};

/// Tokens per caption: CLIP uses 77, long-context text towers a few hundred.
pub const MAX_CONTEXT_LENGTH: usize = 1 << 16;
/// Captions one sample gives a training step (Flickr8k and COCO store five per image).
pub const MAX_CAPTIONS_PER_SAMPLE: usize = 64;
/// Bytes of one batch's buffers (images, token rows). 16 GiB: a batch of 8192 float32
/// pictures at 224 px is 4.9 GB.
pub const MAX_BATCH_BYTES: u64 = 16 << 30;
/// Batches produced ahead of the consumer.
pub const MAX_PREFETCH: usize = 64;
/// Worker threads of one pipeline.
pub const MAX_THREADS: usize = 1024;
/// Samples held by the shard shuffle buffer (webdataset pipelines use 1000 to 10000).
pub const MAX_SHUFFLE_BUFFER: usize = 1_000_000;
/// Shard names a source spec (all its brace patterns and `::` parts together) may expand to.
pub const MAX_SHARD_NAMES: usize = 1_000_000;
/// Scenes of the procedural dataset per epoch (its order alone takes 8 bytes each).
pub const MAX_SYNTHETIC_SAMPLES: usize = 100_000_000;
/// Default bound on the bytes of one encoded picture (a file or a shard member). 64 MiB is
/// several times the largest photo a camera writes; a bigger file is counted as `too_large`.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 64 << 20;
/// Scans of one JPEG decoded for evaluation. Encoders write one (baseline) or about ten
/// (progressive); a file repeating scans by the thousand costs a pass over the picture each.
pub const MAX_JPEG_SCANS: u32 = 1000;
/// Default bound on the bytes of pictures held by the shard shuffle buffer.
pub const DEFAULT_SHUFFLE_BUFFER_BYTES: u64 = 1 << 30;

/// `Ok(value)` when `1 <= value <= max`, else an error naming `argument` and the bound.
pub fn check_range(argument: &str, value: usize, max: usize) -> Result<usize> {
    if value == 0 {
        return Err(CoreError::invalid(argument, "must be at least 1"));
    }
    if value > max {
        return Err(CoreError::invalid(
            argument,
            format!("must be at most {max}, got {value}"),
        ));
    }
    Ok(value)
}

/// An empty vector with room for `len` values, or an error naming `argument` when the memory
/// cannot be had. `what` says what the buffer is for ("a batch of 512 images of 3x224x224").
/// The room is reserved, not touched: pages the caller never fills cost nothing.
pub fn reserved<T>(len: usize, argument: &str, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    let bytes = (len as u128) * std::mem::size_of::<T>() as u128;
    v.try_reserve_exact(len).map_err(|_| {
        CoreError::invalid(
            argument,
            format!("{what} needs {bytes} bytes, which cannot be allocated on this machine"),
        )
    })?;
    Ok(v)
}

/// [`reserved`], filled with `len` default values.
pub fn zeroed<T: Clone + Default>(len: usize, argument: &str, what: &str) -> Result<Vec<T>> {
    let mut v = reserved(len, argument, what)?;
    v.resize(len, T::default());
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_name_the_argument_and_the_bound() {
        assert_eq!(check_range("prefetch", 3, 64).unwrap(), 3);
        let e = check_range("prefetch", 1_000_000_000_000, 64).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid `prefetch`: must be at most 64, got 1000000000000"
        );
        assert!(check_range("threads", 0, 8)
            .unwrap_err()
            .to_string()
            .contains("at least 1"));
    }

    #[test]
    fn an_impossible_buffer_is_an_error_not_an_abort() {
        let e = zeroed::<i64>(usize::MAX / 4, "batch_size", "the text rows").unwrap_err();
        let message = e.to_string();
        assert!(
            message.starts_with("invalid `batch_size`: the text rows needs"),
            "{message}"
        );
        assert_eq!(zeroed::<f32>(3, "x", "y").unwrap(), vec![0.0; 3]);
        let room = reserved::<u8>(1 << 20, "x", "y").unwrap();
        assert!(room.is_empty() && room.capacity() >= 1 << 20);
    }
}
