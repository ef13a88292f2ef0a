//! Progressive label schedule: which label kind applies at training progress p.
//! (issue 4 fills this in)
