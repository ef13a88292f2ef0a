//! The data pipeline: sources, decoding, augmentation, batching, prefetch.
//! (issue 6 fills this in)
