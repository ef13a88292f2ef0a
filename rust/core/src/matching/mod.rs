//! Batched exact linear-sum-assignment (Hungarian) matching of image patches and words.
//! (issue 3 fills this in)
