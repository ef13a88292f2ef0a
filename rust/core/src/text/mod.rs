//! Text: CLIP BPE tokenizer, EDA augmentation, MLM masking.
//! (issue 5 fills this in)
